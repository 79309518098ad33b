//! `stackway serve --processes N` and the limits that replace a process, with
//! real Python apps (`wsgi/tests/python/process_apps.py`) over real sockets:
//! each app answers with the pid of the process that served it.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stackway_test_support::http::{Conn, RawResponse};
use support::{Server, children, stackway};

const PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../wsgi/tests/python");

/// `stackway serve` with the process apps mounted: `/pid`, `/burn`,
/// `/crash`, `/leak`, and `flags`.
fn serve(flags: &[&str]) -> Server {
    let mut args = vec!["--bind", "127.0.0.1:0", "--pythonpath", PYTHON];
    for app in [
        "pid",
        "burn",
        "crash",
        "leak",
        "spin",
        "nap",
        "stall",
        "upload",
        "eight_mib",
        "fails_late",
    ] {
        args.push("--mount");
        args.push(Box::leak(
            format!("/{app}=wsgi:process_apps:{app}").into_boxed_str(),
        ));
    }
    args.extend(["--mount", "/aspin=asgi:asgi_apps:spin"]);
    args.extend(["--mount", "/describe=wsgi:wsgi_apps:describe"]);
    args.extend(flags);
    Server::start(stackway(&args), 1)
}

/// The pid that answered a fresh connection's GET `path`.
fn pid_of(addr: SocketAddr, path: &str) -> u32 {
    let res = Conn::open(addr).get(path);
    assert_eq!(res.status, 200, "{}", res.text());
    res.text().parse().unwrap()
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// Waits up to `limit` for `done`.
fn eventually(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A keep-alive client as HTTP libraries are: it retries an idempotent
/// request once on a fresh connection when a reused one was closed before any
/// byte of the response came (the server closed it as idle, or draining).
struct Client {
    addr: SocketAddr,
    conn: Option<Conn>,
    retries: usize,
}

impl Client {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            conn: None,
            retries: 0,
        }
    }

    fn get(&mut self, path: &str) -> RawResponse {
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        if let Some(mut conn) = self.conn.take() {
            use std::io::Write;
            let sent = conn.reader.get_mut().write_all(request.as_bytes());
            let answered = sent.is_ok() && matches!(conn.reader.fill_buf(), Ok(b) if !b.is_empty());
            if answered {
                return self.keep(conn);
            }
            self.retries += 1;
        }
        let mut conn = Conn::open(self.addr);
        conn.send(request.as_bytes());
        self.keep(conn)
    }

    fn keep(&mut self, mut conn: Conn) -> RawResponse {
        let res = conn.read_response();
        if res.header("connection") != Some("close") {
            self.conn = Some(conn);
        }
        res
    }
}

#[test]
fn the_app_is_told_it_runs_in_several_processes_and_whether_in_threads() {
    // (flags, wsgi.multithread and wsgi.multiprocess), as gunicorn and
    // uWSGI say them: one call at a time a process with one worker and no
    // Python threads.
    let table = [
        (&["--processes", "2"][..], "thread:True process:True"),
        (
            &["--processes", "2", "--wsgi-threads", "0", "--workers", "1"],
            "thread:False process:True",
        ),
        (&["--wsgi-threads", "1"], "thread:False process:False"),
    ];
    for (flags, said) in table {
        let server = serve(flags);
        let text = Conn::open(server.tcp(0)).get("/describe/").text();
        let line = text.lines().find(|l| l.starts_with("concurrency="));
        assert_eq!(
            line,
            Some(format!("concurrency={said}").as_str()),
            "{flags:?}"
        );
    }
}

#[test]
fn two_processes_share_the_listener_and_a_burst_of_connections() {
    let server = serve(&["--processes", "2"]);
    let addr = server.tcp(0);
    let children = children(server.child.id());
    assert_eq!(children.len(), 2, "{children:?}");
    // A client's pool opening 64 keep-alive connections at once, then
    // using each: the kernel spreads them over the processes.
    let mut pool: Vec<Conn> = (0..64).map(|_| Conn::open(addr)).collect();
    let mut served: BTreeMap<u32, usize> = BTreeMap::new();
    for conn in &mut pool {
        let res = conn.get("/pid");
        *served.entry(res.text().parse().unwrap()).or_default() += 1;
    }
    assert_eq!(served.keys().copied().collect::<BTreeSet<_>>(), children);
    for (pid, n) in &served {
        assert!(
            *n >= 16,
            "process {pid} took {n} of 64 connections: {served:?}"
        );
    }
    // And new connections one after another.
    let mut one_by_one: BTreeMap<u32, usize> = BTreeMap::new();
    for _ in 0..64 {
        *one_by_one.entry(pid_of(addr, "/pid")).or_default() += 1;
    }
    assert_eq!(one_by_one.len(), 2, "{one_by_one:?}");
}

#[test]
fn a_process_that_dies_is_replaced_and_sigterm_leaves_none() {
    // `--processes 1` too: one process under a supervisor, as gunicorn's
    // master runs one worker.
    for n in [1, 2] {
        let server = serve(&["--processes", &n.to_string()]);
        let addr = server.tcp(0);
        let before = children(server.child.id());
        // The app ends its process in the middle of a request: that request
        // gets no response, the next ones do.
        let mut conn = Conn::open(addr);
        conn.send(b"GET /crash HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert!(conn.is_closed());
        eventually(Duration::from_secs(10), "a replacement", || {
            let now = children(server.child.id());
            now.len() == n && now != before
        });
        for _ in 0..20 {
            pid_of(addr, "/pid");
        }
        let all = children(server.child.id());
        server.signal("-TERM");
        let (code, err) = server.finish();
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("exited"), "the supervisor says why: {err}");
        for pid in all {
            assert!(!alive(pid), "process {pid} outlived its supervisor");
        }
    }
}

#[test]
fn no_process_outlives_a_killed_supervisor() {
    let server = serve(&["--processes", "2"]);
    let all = children(server.child.id());
    server.signal("-KILL");
    eventually(Duration::from_secs(10), "every process gone", || {
        all.iter().all(|pid| !alive(*pid))
    });
}

#[test]
fn a_second_server_on_the_same_port_is_refused_not_given_a_share() {
    let server = serve(&["--processes", "2"]);
    let addr = server.tcp(0).to_string();
    let mut second = stackway(&["--bind", &addr, "--processes", "2"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let asked = Instant::now();
    while second.try_wait().unwrap().is_none() && asked.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = second.kill();
    let out = second.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("Address already in use"), "{err}");
    // The first keeps every connection.
    let pids: BTreeSet<u32> = (0..20).map(|_| pid_of(server.tcp(0), "/pid")).collect();
    assert!(
        pids.iter()
            .all(|pid| children(server.child.id()).contains(pid))
    );
    server.signal("-TERM");
    assert_eq!(server.finish().0, 0);
}

#[test]
fn a_process_that_cannot_boot_stops_the_server_with_why() {
    // The app imports in `--check` but raises in a server process.
    let mut command = stackway(&[
        "--bind",
        "127.0.0.1:0",
        "--processes",
        "2",
        "--pythonpath",
        PYTHON,
        "--mount",
        "/=wsgi:process_apps:pid",
    ]);
    let out = command
        .env("FAIL_TO_BOOT_IN_WORKERS", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("this app does not start in a server process"),
        "Python's own reason: {err}"
    );
    assert!(err.contains("failed to boot"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening on"));
}

#[test]
fn max_requests_replaces_processes_without_a_failed_request() {
    let server = serve(&[
        "--processes",
        "2",
        "--max-requests",
        "25",
        "--max-requests-jitter",
        "5",
    ]);
    let addr = server.tcp(0);
    let (served, retries): (BTreeMap<u32, usize>, usize) = std::thread::scope(|s| {
        let clients: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(move || {
                    let mut client = Client::new(addr);
                    let mut pids = Vec::new();
                    for _ in 0..60 {
                        let res = client.get("/burn");
                        assert_eq!(res.status, 200, "{}", res.text());
                        pids.push(res.text().parse::<u32>().unwrap());
                    }
                    (pids, client.retries)
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).fold(
            (BTreeMap::new(), 0),
            |(mut served, retries), (pids, r)| {
                for pid in pids {
                    *served.entry(pid).or_default() += 1;
                }
                (served, retries + r)
            },
        )
    });
    // A process drains once it has served 25 to 30 requests: past that, only
    // those already in flight then (one a client at most) are its, so 480
    // take 13 processes at least.
    assert!(
        served.len() >= 13,
        "{} processes served 480 requests: {served:?}",
        served.len()
    );
    assert!(
        served.values().all(|&n| n <= 30 + 7),
        "a process served past its limit: {served:?}"
    );
    eprintln!("{} processes, {retries} retried requests", served.len());
    eventually(Duration::from_secs(10), "the replaced ones gone", || {
        children(server.child.id()).len() == 2
    });
}

#[test]
fn max_requests_is_exact_and_the_last_response_closes_its_connection_as_gunicorns() {
    let server = serve(&["--max-requests", "5", "--metrics", "/metrics"]);
    let addr = server.tcp(0);
    // Twelve on connections of their own, each after a scrape of --metrics
    // (no request of the app's), then thirteen on one kept connection: the
    // process's fifth response closes it, and the next connection opened
    // waits for the replacement.
    let mut pids: Vec<u32> = (0..12)
        .map(|_| {
            assert_eq!(Conn::open(addr).get("/metrics").status, 200);
            pid_of(addr, "/pid")
        })
        .collect();
    let mut client = Client::new(addr);
    let mut closed = Vec::new();
    for n in 13..=25 {
        let res = client.get("/pid");
        assert_eq!(res.status, 200, "{}", res.text());
        if res.header("connection") == Some("close") {
            closed.push(n);
        }
        pids.push(res.text().parse().unwrap());
    }
    let runs: Vec<usize> = pids.chunk_by(|a, b| a == b).map(<[u32]>::len).collect();
    assert_eq!(runs, [5; 5], "{pids:?}");
    let distinct: BTreeSet<_> = pids.iter().collect();
    assert_eq!(distinct.len(), 5, "a process came back: {pids:?}");
    assert_eq!(closed, [15, 20, 25]);
    assert_eq!(client.retries, 0, "a request found its connection closed");
}

#[test]
fn a_websocket_that_is_the_last_request_switches_and_echoes() {
    use std::io::{Read, Write};
    let server = serve(&["--max-requests", "1", "--mount", "/ws=asgi:asgi_apps:echo"]);
    let mut tcp = std::net::TcpStream::connect(server.tcp(0)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("connection: upgrade"), "{head}");
    // A text frame `hi`, masked as a client's are, comes back.
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | 2];
    frame.extend(mask);
    frame.extend(b"hi".iter().zip(mask).map(|(b, m)| b ^ m));
    tcp.write_all(&frame).unwrap();
    let mut echo = [0u8; 4];
    tcp.read_exact(&mut echo).unwrap();
    assert_eq!(echo, [0x81, 2, b'h', b'i']);
}

#[test]
fn a_replacement_that_cannot_boot_while_none_serves_stops_the_server() {
    // The app starts, then no longer does once the marker is there.
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("broken");
    let mut command = stackway(&[
        "--bind",
        "127.0.0.1:0",
        "--max-requests",
        "2",
        "--pythonpath",
        PYTHON,
        "--mount",
        "/=wsgi:process_apps:pid",
    ]);
    command.env("FAIL_TO_BOOT_ONCE_THERE", &marker);
    let server = Server::start(command, 1);
    let addr = server.tcp(0);
    pid_of(addr, "/");
    std::fs::write(&marker, "").unwrap();
    // The second request drains the process; no replacement boots.
    pid_of(addr, "/");
    let waiting = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).map_err(|e| e.kind())
    });
    let (code, err) = server.finish();
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("this app no longer starts"), "{err}");
    assert!(err.contains("failed to start 3 times in a row"), "{err}");
    // A client that came meanwhile is not left waiting.
    let answered = waiting.join().unwrap();
    assert!(
        matches!(answered, Ok(0) | Err(std::io::ErrorKind::ConnectionReset)),
        "{answered:?}"
    );
}

#[test]
fn max_rss_replaces_a_leaking_process_and_bounds_the_tree() {
    let server = serve(&["--processes", "1", "--max-rss", "120"]);
    let addr = server.tcp(0);
    let mut client = Client::new(addr);
    let mut pids = BTreeSet::new();
    let mut most = 0;
    // 4 MiB a request: 200 requests keep 800 MiB in a process never replaced.
    for _ in 0..200 {
        let res = client.get("/leak");
        assert_eq!(res.status, 200);
        pids.insert(res.text().parse::<u32>().unwrap());
        let tree: u64 = children(server.child.id())
            .into_iter()
            .filter_map(rss_mib)
            .sum();
        most = most.max(tree);
        // Two processes at most (the one leaking and its replacement), each
        // replaced within a second or two of passing 120 MiB.
        assert!(tree < 2 * 400, "the tree holds {tree} MiB");
    }
    eprintln!("the tree held {most} MiB at most");
    assert!(pids.len() >= 3, "replaced {} times", pids.len() - 1);
}

fn rss_mib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? >> 10)
}

#[test]
fn max_lifetime_replaces_a_process_that_serves_on_until_then() {
    let server = serve(&["--processes", "1", "--max-lifetime", "1.5"]);
    let addr = server.tcp(0);
    let mut client = Client::new(addr);
    let mut pids = BTreeSet::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        let res = client.get("/pid");
        assert_eq!(res.status, 200);
        pids.insert(res.text().parse::<u32>().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(pids.len() >= 2, "{pids:?}");
}

#[test]
fn harakiri_cuts_off_a_stuck_request_and_replaces_its_process() {
    // A busy loop holds the GIL between switches; a sleep does not; a
    // coroutine computing without an await stops the whole asyncio loop.
    let stuck_apps = [
        ("/spin", 504, "spin"),
        ("/nap", 504, "nap"),
        ("/aspin", 500, "spin"),
    ];
    for (app, status, function) in stuck_apps {
        let server = serve(&["--processes", "1", "--harakiri", "1", "--grace-period", "1"]);
        let addr = server.tcp(0);
        let stuck = pid_of(addr, "/pid");
        let asked = Instant::now();
        let res = Conn::open(addr).get(app);
        let took = asked.elapsed();
        assert_eq!(res.status, status, "{app}");
        assert!(
            took < Duration::from_secs(4),
            "{app}: answered after {took:?}"
        );
        // The mount serves again, from a new process; the stuck one is gone
        // (killed at the end of its grace period if its thread still runs).
        eventually(Duration::from_secs(10), "a new process serving", || {
            pid_of(addr, "/pid") != stuck
        });
        eventually(Duration::from_secs(10), "the stuck process gone", || {
            !alive(stuck)
        });
        server.signal("-TERM");
        let (code, err) = server.finish();
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("harakiri"), "{err}");
        assert!(
            err.contains(&format!("in {function}")),
            "{app}: the stuck thread's Python stack is logged: {err}"
        );
        assert!(err.contains("replaced (harakiri)"), "{err}");
    }
}

#[test]
fn harakiri_aborts_a_response_whose_head_is_out() {
    let server = serve(&["--processes", "1", "--harakiri", "1", "--grace-period", "1"]);
    let mut conn = Conn::open(server.tcp(0));
    conn.send(b"GET /stall HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let head = conn.read_head();
    assert_eq!(head.status, 200);
    // The first chunk, then the connection ends without the last chunk.
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut conn.reader, &mut rest);
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("first"), "{rest:?}");
    assert!(
        !rest.ends_with("0\r\n\r\n"),
        "ended as if complete: {rest:?}"
    );
}

#[test]
fn slow_uploads_and_clients_that_never_read_hold_no_python_thread() {
    let server = serve(&["--wsgi-threads", "2"]);
    let addr = server.tcp(0);
    // Six uploads that send a little of their megabyte, then stall.
    let uploads: Vec<Conn> = (0..6)
        .map(|_| {
            let mut conn = Conn::open(addr);
            conn.send(
                b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1048576\r\n\r\n",
            );
            conn.send(&[b'u'; 1024]);
            conn
        })
        .collect();
    // Four clients that ask for 8 MiB and never read it.
    let readers: Vec<Conn> = (0..4)
        .map(|_| {
            let mut conn = Conn::open(addr);
            conn.send(b"GET /eight_mib HTTP/1.1\r\nHost: localhost\r\n\r\n");
            conn
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        let asked = Instant::now();
        let mut conn = Conn::open(addr);
        conn.send(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello");
        let res = conn.read_response();
        assert_eq!((res.status, res.text().as_str()), (200, "5"));
        let took = asked.elapsed();
        assert!(
            took < Duration::from_millis(500),
            "a normal request took {took:?}"
        );
    }
    // The stalled ones finish once their clients go on.
    let mut upload = uploads.into_iter().next().unwrap();
    upload.send(&vec![b'u'; 1048576 - 1024]);
    assert_eq!(upload.read_response().text(), "1048576");
    let mut reader = readers.into_iter().next().unwrap();
    assert_eq!(reader.read_response().body.len(), 8 << 20);
}

#[test]
fn a_body_that_fails_late_ends_aborted_however_slow_the_client() {
    let server = serve(&[]);
    let mut conn = Conn::open(server.tcp(0));
    conn.send(b"GET /fails_late HTTP/1.1\r\nHost: localhost\r\n\r\n");
    // Python has sent it all, and raised, long before the client reads.
    std::thread::sleep(Duration::from_millis(500));
    let head = conn.read_head();
    assert_eq!(head.status, 200);
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut conn.reader, &mut rest);
    assert!(
        rest.len() > 1 << 20,
        "the megabyte came first: {}",
        rest.len()
    );
    assert!(!rest.ends_with(b"0\r\n\r\n"), "ended as if complete");
}

#[test]
fn sigusr2_replaces_every_process_without_a_failed_request() {
    let server = serve(&["--processes", "2"]);
    let addr = server.tcp(0);
    let before = children(server.child.id());
    let mut client = Client::new(addr);
    let started = Instant::now();
    server.signal("-USR2");
    let mut pids = BTreeSet::new();
    // Requests all along, until both processes are new ones.
    while started.elapsed() < Duration::from_secs(15) {
        let res = client.get("/pid");
        assert_eq!(res.status, 200, "{}", res.text());
        pids.insert(res.text().parse::<u32>().unwrap());
        let now = children(server.child.id());
        if now.len() == 2 && now.is_disjoint(&before) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let now = children(server.child.id());
    assert!(now.is_disjoint(&before), "before {before:?}, now {now:?}");
    assert!(
        pids.iter().any(|pid| now.contains(pid)),
        "the new ones serve"
    );
}

/// The sum of a scrape's samples named `name`, whatever their labels.
fn total(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[test]
fn metrics_and_status_count_every_request_of_the_tree_across_replacements() {
    let server = serve(&[
        "--processes",
        "2",
        "--max-requests",
        "25",
        "--metrics",
        "/metrics",
        "--status",
        "/status",
    ]);
    let addr = server.tcp(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(move || {
                let mut client = Client::new(addr);
                for _ in 0..30 {
                    assert_eq!(client.get("/burn").status, 200);
                }
            });
        }
    });
    // The replaced processes have drained, and the others written their share.
    eventually(Duration::from_secs(10), "the replaced ones gone", || {
        children(server.child.id()).len() == 2
    });
    std::thread::sleep(Duration::from_millis(1500));
    // Whichever process answers, the sum is the tree's.
    for _ in 0..4 {
        let scrape = Conn::open(addr).get("/metrics").text();
        assert_eq!(total(&scrape, "stackway_requests_total"), 240.0, "{scrape}");
        assert!(
            total(&scrape, "stackway_process_replacements_total") >= 2.0,
            "{scrape}"
        );
        for row in [
            "stackway_process_resident_bytes{",
            "stackway_process_requests_total{",
            "stackway_process_busy_threads{",
        ] {
            let rows = scrape.lines().filter(|l| l.starts_with(row)).count();
            assert_eq!(rows, 2, "a row per process: {scrape}");
        }
        // Processes were replaced, so those alive served fewer than all
        // (perhaps none: a replacement can start as the load ends).
        let live = total(&scrape, "stackway_process_requests_total");
        assert!(live < 240.0, "{live}");
        let json = Conn::open(addr).get("/status.json").text();
        let data: serde_json::Value = serde_json::from_str(&json).unwrap();
        let burn = data["mounts"]
            .as_array()
            .and_then(|mounts| mounts.iter().find(|m| m["mount"] == "/burn"))
            .unwrap_or_else(|| panic!("{json}"));
        assert_eq!(burn["requests"], 240, "{json}");
        let pool = data["pools"]
            .as_array()
            .and_then(|pools| pools.iter().find(|p| p["mount"] == "/burn"))
            .unwrap_or_else(|| panic!("{json}"));
        assert_eq!(pool["jobs"], 240, "{json}");
        assert_eq!(pool["busy"], 0, "{json}");
        assert_eq!(
            pool["threads"], 16,
            "the live processes' threads only: {json}"
        );
    }
    server.signal("-TERM");
    assert_eq!(server.finish().0, 0);
}

#[test]
fn the_status_page_shows_the_tree_with_a_row_per_process() {
    let server = serve(&["--processes", "2", "--status", "/status"]);
    let addr = server.tcp(0);
    let pids: BTreeSet<u32> = (0..60).map(|_| pid_of(addr, "/pid")).collect();
    assert_eq!(pids.len(), 2);
    std::thread::sleep(Duration::from_millis(1500));
    let json = Conn::open(addr).get("/status.json").text();
    let data: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mount = data["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mount"] == "/pid")
        .unwrap_or_else(|| panic!("{json}"));
    assert_eq!(mount["requests"], 60, "{json}");
    let buckets: u64 = mount["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n.as_u64())
        .sum();
    assert_eq!(buckets, 60, "the latency buckets of both, summed");
    let rows: BTreeSet<u64> = data["processes"]
        .as_array()
        .unwrap_or_else(|| panic!("{json}"))
        .iter()
        .filter_map(|p| p["pid"].as_u64())
        .collect();
    assert_eq!(rows, pids.iter().map(|p| u64::from(*p)).collect(), "{json}");
    let page = Conn::open(addr).get("/status").text();
    assert!(page.contains("<table id=processes>"), "{page}");
    server.signal("-TERM");
    assert_eq!(server.finish().0, 0);
}
