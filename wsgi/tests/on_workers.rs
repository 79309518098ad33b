//! A WSGI app run on the server's own workers (`Wsgi::threads(0)`), over
//! real sockets.

use stackway_test_support as support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use stackway_middleware::Lint;
use stackway_wsgi::Wsgi;
use support::http::Conn;
use support::{Running, server};

/// Answers which thread ran it, and how many requests that thread's
/// `threading.local` has seen; POST bodies are read whole and summed up.
const APP: &str = r#"
import hashlib, threading

seen = threading.local()

def app(environ, start_response):
    seen.count = getattr(seen, "count", 0) + 1
    body = environ["wsgi.input"].read()
    text = "tid=%d\ncount=%d\nlen=%d\nsha=%s\n" % (
        threading.get_native_id(), seen.count, len(body), hashlib.sha256(body).hexdigest())
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(text)))])
    return [text.encode()]
"#;

/// One line of the app's answer.
fn field(text: &str, name: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .to_owned()
}

fn sha256(data: &[u8]) -> String {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(data)?;
            child.wait_with_output()
        })
        .expect("python3");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn python_runs_on_the_worker_which_stays_attached_between_requests() {
    let wsgi = Wsgi::from_source("on_workers", APP, "app")
        .unwrap()
        .threads(0);
    let stats = wsgi.stats();
    let running = Running::start(
        server().worker_context(stackway_wsgi::worker_context),
        Lint::strict(wsgi),
    );
    let mut conn = Conn::open(running.addr);
    let first = conn.get("/").text();
    let tid = field(&first, "tid");
    // The thread that ran Python is the server's worker: no thread of its own.
    let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).unwrap();
    // (`stackway-worker-0`, cut to the kernel's 15 bytes)
    assert_eq!(comm.trim(), "stackway-worker");
    // The same Python thread state each time: its threading.local lives on.
    for n in 2..=5 {
        let text = Conn::open(running.addr).get("/").text();
        assert_eq!(
            (field(&text, "tid"), field(&text, "count")),
            (tid.clone(), n.to_string())
        );
    }
    // A body past the first MiB is kept in a file, and read whole all the same.
    let big: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 251) as u8).collect();
    let head = format!(
        "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        big.len()
    );
    conn.send(head.as_bytes());
    conn.send(&big);
    let text = conn.read_response().text();
    assert_eq!(field(&text, "len"), big.len().to_string());
    assert_eq!(field(&text, "sha"), sha256(&big));
    conn.send(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\na small body");
    let small = conn.read_response().text();
    assert_eq!(field(&small, "len"), "12");
    assert_eq!(field(&small, "sha"), sha256(b"a small body"));
    // No pool: nothing queues, and every request was counted.
    assert_eq!((stats.threads(), stats.queued(), stats.busy()), (0, 0, 0));
    assert_eq!(stats.jobs(), 7);
    assert!(
        !std::fs::read_dir("/proc/self/task").unwrap().any(|task| {
            let comm = task.unwrap().path().join("comm");
            std::fs::read_to_string(comm).is_ok_and(|c| c.starts_with("stackway-python"))
        }),
        "a Python thread was started"
    );
}

#[test]
fn an_exception_on_the_worker_is_a_500_and_the_worker_goes_on() {
    let wsgi = Wsgi::from_source(
        "raises_on_workers",
        "def app(environ, start_response):\n\
         \x20   if environ['PATH_INFO'] == '/boom':\n\
         \x20       raise RuntimeError('boom')\n\
         \x20   start_response('200 OK', [('Content-Type', 'text/plain')])\n\
         \x20   return [b'fine']\n",
        "app",
    )
    .unwrap()
    .threads(0);
    let running = Running::start(
        server().worker_context(stackway_wsgi::worker_context),
        Lint::strict(wsgi),
    );
    let mut conn = Conn::open(running.addr);
    assert_eq!(conn.get("/boom").status, 500);
    assert_eq!(Conn::open(running.addr).get("/").text(), "fine");
}

#[test]
fn harakiri_on_the_workers_calls_its_hook_at_the_limit_and_answers_504_when_python_returns() {
    let called = Arc::new(AtomicUsize::new(0));
    let seen = called.clone();
    stackway_wsgi::python_path("tests/python").unwrap();
    // `napper` sleeps as many seconds as the query string says.
    let wsgi = Wsgi::import("wsgi_apps:napper")
        .unwrap()
        .threads(0)
        .harakiri(Duration::from_millis(600), move || {
            seen.fetch_add(1, Ordering::Relaxed);
        });
    let stats = wsgi.stats();
    let running = Running::start(
        server().worker_context(stackway_wsgi::worker_context),
        Lint::strict(wsgi),
    );
    assert_eq!(Conn::open(running.addr).get("/?0.3").status, 200);
    let asked = Instant::now();
    let addr = running.addr;
    let slow = std::thread::spawn(move || Conn::open(addr).get("/?2.5"));
    // The worker is held by Python: the hook comes from the watching thread.
    while called.load(Ordering::Relaxed) == 0 && asked.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let hooked = asked.elapsed();
    assert_eq!(called.load(Ordering::Relaxed), 1);
    assert!(
        hooked >= Duration::from_millis(550) && hooked < Duration::from_secs(2),
        "{hooked:?}"
    );
    assert_eq!(stats.harakiri(), 1);
    // Python gives the worker back: the request cut off is a 504.
    assert_eq!(slow.join().unwrap().status, 504);
    assert!(asked.elapsed() >= Duration::from_millis(2400));
    assert_eq!(Conn::open(running.addr).get("/?0").status, 200);
    assert_eq!(called.load(Ordering::Relaxed), 1);
}

/// Bodies of every shape: one chunk, several, with and without a length,
/// empty chunks, and past the first MiB (which the worker spools to a file).
const SHAPES: &str = r#"
def app(environ, start_response):
    path = environ["PATH_INFO"]
    big = [bytes([i % 251]) * 65536 for i in range(48)]
    chunks = {
        "/one": [b"hello"],
        "/many": [b"he", b"", b"llo", b" world"],
        "/empty": [],
        "/big": big,
    }.get(path, big if path == "/big-unsized" else [b"no", b"length"])
    headers = [("Content-Type", "text/plain")]
    if path != "/unsized" and path != "/big-unsized":
        headers.append(("Content-Length", str(sum(map(len, chunks)))))
    start_response("200 OK", headers)
    return chunks
"#;

/// Apps that break their word: a body shorter than its length, and an
/// exception after the first chunk.
const BROKEN: &str = r#"
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "10")])
    yield b"four"
    if environ["PATH_INFO"] == "/raises":
        raise RuntimeError("after the head")
"#;

/// What `path` answers on a connection of its own, raw, as far as the
/// server sent it, without its `date` field.
fn raw(addr: std::net::SocketAddr, path: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    // A broken body ends in a reset, not an orderly close.
    let _ = stream.read_to_end(&mut answer);
    let head_end = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8(answer[..head_end].to_vec()).unwrap();
    let mut without_date: Vec<u8> = head
        .split_inclusive("\r\n")
        .filter(|line| !line.to_ascii_lowercase().starts_with("date:"))
        .collect::<String>()
        .into_bytes();
    without_date.extend_from_slice(&answer[head_end..]);
    without_date
}

#[test]
fn a_response_made_on_the_worker_is_framed_as_one_from_a_python_thread() {
    let cases = [
        (
            true,
            SHAPES,
            &[
                "/one",
                "/many",
                "/empty",
                "/unsized",
                "/big",
                "/big-unsized",
            ][..],
        ),
        (false, BROKEN, &["/short", "/raises"][..]),
    ];
    for (lint, source, paths) in cases {
        let answers = [1, 0].map(|threads| {
            let wsgi = Wsgi::from_source("shapes", source, "app")
                .unwrap()
                .threads(threads);
            let server = server().worker_context(stackway_wsgi::worker_context);
            let running = match lint {
                true => Running::start(server, Lint::strict(wsgi)),
                false => Running::start(server, wsgi),
            };
            paths
                .iter()
                .map(|path| raw(running.addr, path))
                .collect::<Vec<_>>()
        });
        let [threads, on_worker] = answers;
        for (path, (threads, on_worker)) in paths.iter().zip(threads.iter().zip(&on_worker)) {
            assert!(
                threads == on_worker,
                "{path}: a thread's answer\n{}\nthe worker's\n{}",
                String::from_utf8_lossy(&threads[..threads.len().min(300)]),
                String::from_utf8_lossy(&on_worker[..on_worker.len().min(300)]),
            );
        }
        // What the answers are, beside their being the same.
        let text = |path: &str| {
            let at = paths.iter().position(|p| *p == path).unwrap();
            String::from_utf8_lossy(&on_worker[at]).into_owned()
        };
        if lint {
            assert!(text("/one").contains("\r\ncontent-length: 5\r\n"));
            assert!(text("/one").ends_with("\r\n\r\nhello"));
            assert!(text("/many").ends_with("\r\n\r\nhello world"));
            assert!(text("/unsized").contains("transfer-encoding: chunked\r\n"));
            assert!(text("/unsized").ends_with("\r\n\r\n2\r\nno\r\n6\r\nlength\r\n0\r\n\r\n"));
            let big = &on_worker[paths.iter().position(|p| *p == "/big").unwrap()];
            assert!(big.ends_with(&[47; 65536])); // the 48th chunk
            assert!(big.len() > 48 * 65536);
        } else {
            // Cut off after what was sent, never passed for whole.
            assert!(
                text("/short").ends_with("\r\n\r\nfour"),
                "{}",
                text("/short")
            );
            assert!(
                text("/raises").ends_with("\r\n\r\nfour"),
                "{}",
                text("/raises")
            );
        }
    }
}
