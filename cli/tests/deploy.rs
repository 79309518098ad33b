//! `stackway serve` as deployments run it: unix sockets, sockets passed by
//! systemd, readiness notifications, restarts on SIGUSR2 that drop nothing,
//! TLS reloaded on SIGHUP, the PROXY protocol, and draining on SIGTERM.

use stackway_test_support::http;
mod support;
use stackway_test_support::tls;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::Conn;
use support::{Server, activated, stackway};

fn get(addr: SocketAddr, path: &str) -> http::RawResponse {
    Conn::open(addr).get(path)
}

fn unix_get(path: &Path, target: &str) -> String {
    let mut stream = UnixStream::connect(path).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out);
    out
}

#[test]
fn a_unix_socket_with_its_mode_is_removed_on_exit() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("app.sock");
    let bind = format!("unix:{}", sock.display());
    let server = Server::start(
        stackway(&[
            "--bind",
            &bind,
            "--bind",
            "127.0.0.1:0",
            "--socket-mode",
            "600",
            "--mount",
            "/=demo",
        ]),
        2,
    );
    assert_eq!(server.listening[0], bind);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let page = unix_get(&sock, "/");
    assert!(
        page.starts_with("HTTP/1.1 200") && !page.contains("REMOTE_ADDR"),
        "{page}"
    );
    assert_eq!(get(server.tcp(1), "/").status, 200);
    server.signal("-TERM");
    assert_eq!(server.finish().0, 0);
    assert!(!sock.exists(), "the socket file is removed on exit");
}

#[test]
fn sockets_passed_by_systemd_are_served_and_readiness_is_notified() {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify");
    let systemd = UnixDatagram::bind(&notify).unwrap();
    systemd
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap();
    let sock = dir.path().join("passed.sock");
    let unix = UnixListener::bind(&sock).unwrap();

    let mut command = activated(vec![tcp.into(), unix.into()], &["--mount", "/=hello"]);
    command.env("NOTIFY_SOCKET", &notify);
    let server = Server::start(command, 2);
    assert_eq!(
        server.listening,
        [format!("http://{addr}"), format!("unix:{}", sock.display())]
    );
    let mut message = [0; 64];
    let n = systemd.recv(&mut message).unwrap();
    assert_eq!(&message[..n], b"READY=1");
    assert_eq!(get(addr, "/").text(), "<h1>Hello, web!</h1>");
    assert!(unix_get(&sock, "/").ends_with("<h1>Hello, web!</h1>"));

    server.signal("-TERM");
    let n = systemd.recv(&mut message).unwrap();
    assert_eq!(&message[..n], b"STOPPING=1");
    assert_eq!(server.finish().0, 0);
    assert!(
        sock.exists(),
        "systemd's socket file is systemd's to remove"
    );
}

#[test]
fn bind_fd_takes_a_passed_socket_and_refuses_a_missing_one() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap();
    let server = Server::start(
        activated(vec![tcp.into()], &["--bind", "fd:3", "--mount", "/=hello"]),
        1,
    );
    assert_eq!(server.listening, [format!("http://{addr}")]);
    assert_eq!(get(addr, "/").status, 200);

    let out = stackway(&["--bind", "fd:4", "--mount", "/=hello"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("fd:4: no such socket was passed"), "{err}");
}

#[test]
fn sigusr2_restarts_without_failing_a_request() {
    let server = Server::start(
        stackway(&[
            "--bind",
            "127.0.0.1:0",
            "--mount",
            "/=demo",
            "--workers",
            "1",
        ]),
        1,
    );
    let addr = server.tcp(0);
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, served, failed) = (stop.clone(), served.clone(), failed.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // A new connection for each request, as a balancer without pooling.
                    let ok = TcpStream::connect(addr).ok().and_then(|mut s| {
                        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
                        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                            .ok()?;
                        let mut page = String::new();
                        s.read_to_string(&mut page).ok()?;
                        page.starts_with("HTTP/1.1 200").then_some(())
                    });
                    match ok {
                        Some(()) => served.fetch_add(1, Ordering::Relaxed),
                        None => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    server.signal("-USR2");
    let (code, err) = server.finish();
    assert_eq!(code, 0, "{err}");
    let new: u32 = err
        .split("the new process is ready")
        .nth(1)
        .and_then(|rest| rest.split("pid=").nth(1))
        .and_then(|pid| {
            pid.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no new pid in {err}"));
    // The old process has exited; the new one serves on the same socket.
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    let (served, failed) = (
        served.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    assert!(served > 20, "{served} requests served");
    assert_eq!(failed, 0, "{failed} of {} requests failed", served + failed);
    assert_eq!(get(addr, "/").status, 200);
    assert!(
        Command::new("kill")
            .arg(new.to_string())
            .status()
            .unwrap()
            .success()
    );
}

/// The unix sockets of process `pid` that have a name (a path, or `@name`
/// for an abstract one): what any local user reads in `/proc/net/unix`.
fn named_unix_sockets(pid: u32) -> Vec<String> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| fds.flatten().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let table = std::fs::read_to_string("/proc/net/unix").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (inode, name) = (fields.get(6)?, fields.get(7)?);
            inodes
                .contains(&inode.to_string())
                .then(|| name.to_string())
        })
        .collect()
}

#[test]
fn during_a_restart_no_other_process_can_say_the_new_one_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    // Answers with its process id; once `slow` exists, it takes 3 s to import.
    std::fs::write(
        dir.path().join("slow_start.py"),
        "import os, time\n\
         if os.path.exists(os.path.join(os.path.dirname(__file__), 'slow')):\n    time.sleep(3)\n\
         def app(environ, start_response):\n\
         \x20   start_response('200 OK', [('Content-Type', 'text/plain')])\n\
         \x20   return [str(os.getpid()).encode()]\n",
    )
    .unwrap();
    let python = dir.path().to_str().unwrap();
    let server = Server::start(
        stackway(&[
            "--bind",
            "127.0.0.1:0",
            "--pythonpath",
            python,
            "--mount",
            "/=wsgi:slow_start:app",
        ]),
        1,
    );
    let (addr, old) = (server.tcp(0), server.child.id());
    assert_eq!(get(addr, "/").text(), old.to_string());
    std::fs::write(dir.path().join("slow"), "").unwrap();
    server.signal("-USR2");
    // What any local user can do while the new process starts: say READY=1
    // to every unix socket of the old process that has a name.
    let started = Instant::now();
    let mut named = Vec::new();
    while started.elapsed() < Duration::from_millis(1000) {
        for name in named_unix_sockets(old) {
            let to = match name.strip_prefix('@') {
                Some(abstract_name) => {
                    use std::os::linux::net::SocketAddrExt;
                    std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)
                }
                None => std::os::unix::net::SocketAddr::from_pathname(&name),
            };
            if let Ok(to) = to {
                let sender = UnixDatagram::unbound().unwrap();
                let _ = sender.send_to_addr(b"READY=1", &to);
            }
            named.push(name);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        named.is_empty(),
        "the old process has named sockets: {named:?}"
    );
    // The old process still serves: nothing made it drain before the new
    // one is up.
    assert_eq!(get(addr, "/").text(), old.to_string());
    let (code, err) = server.finish();
    assert_eq!(code, 0, "{err}");
    assert!(started.elapsed() >= Duration::from_secs(2), "{err}");
    let new = get(addr, "/").text();
    assert_ne!(new, old.to_string());
    assert!(Command::new("kill").arg(&new).status().unwrap().success());
}

#[test]
fn sigterm_with_a_drain_delay_fails_the_health_check_and_goes_on_serving() {
    let server = Server::start(
        stackway(&[
            "--bind",
            "127.0.0.1:0",
            "--mount",
            "/=hello",
            "--health",
            "/healthz",
            "--drain-delay",
            "1.5",
        ]),
        1,
    );
    let addr = server.tcp(0);
    assert_eq!(get(addr, "/healthz").status, 200);
    let before = Instant::now();
    server.signal("-TERM");
    std::thread::sleep(Duration::from_millis(300));
    let health = get(addr, "/healthz");
    assert_eq!((health.status, health.text().as_str()), (503, "draining\n"));
    let page = get(addr, "/");
    assert_eq!(page.status, 200);
    assert_eq!(page.header("connection"), Some("close"));
    let (code, err) = server.finish();
    assert_eq!(code, 0, "{err}");
    assert!(before.elapsed() >= Duration::from_millis(1500));
    assert!(TcpStream::connect(addr).is_err());
}

/// A self-signed certificate for `localhost` written to `dir`; its PEM is
/// what curl's --cacert trusts.
fn certificate(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key, _) = tls::certificate(dir, name);
    (cert, key)
}

fn curl(ca: &Path, url: &str, extra: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(ca)
        .args(extra)
        .arg(url)
        .output()
        .unwrap()
}

#[test]
fn tls_over_curl_with_a_sighup_reload_during_a_download() {
    if !stackway_test_support::external::command("curl", "Debian's curl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path(), "live");
    let first_ca = dir.path().join("first-ca.pem");
    std::fs::copy(&cert, &first_ca).unwrap();
    let public = dir.path().join("public");
    std::fs::create_dir(&public).unwrap();
    let big: Vec<u8> = (0..8u32 << 20).map(|i| (i % 253) as u8).collect();
    std::fs::write(public.join("big.bin"), &big).unwrap();
    let static_dir = format!("/static={}", public.display());
    let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());
    let server = Server::start(
        stackway(&[
            "--bind",
            "127.0.0.1:0",
            "--tls-cert",
            &cert_arg,
            "--tls-key",
            &key_arg,
            "--mount",
            "/=demo",
            "--static",
            &static_dir,
        ]),
        1,
    );
    assert!(
        server.listening[0].starts_with("https://"),
        "{:?}",
        server.listening
    );
    let port = server.tcp(0).port();
    let url = |path: &str| format!("https://localhost:{port}{path}");
    let resolve = format!("localhost:{port}:127.0.0.1");

    for version in ["--http2", "--http1.1"] {
        let out = curl(
            &first_ca,
            &url("/"),
            &["--resolve", &resolve, version, "-w", "%{http_version}"],
        );
        let page = String::from_utf8_lossy(&out.stdout);
        assert!(page.contains("REQUEST_SCHEME=https\n"), "{page}");
        assert!(
            page.ends_with(if version == "--http2" { "2" } else { "1.1" }),
            "{page}"
        );
    }

    // A slow download, then new files and SIGHUP while it runs.
    let out_file = dir.path().join("downloaded");
    let download = Command::new("curl")
        .args([
            "-sS",
            "--limit-rate",
            "2M",
            "--resolve",
            &resolve,
            "--cacert",
        ])
        .arg(&first_ca)
        .arg("-o")
        .arg(&out_file)
        .arg(url("/static/big.bin"))
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let (next_cert, next_key) = certificate(dir.path(), "next");
    std::fs::rename(&next_cert, &cert).unwrap();
    std::fs::rename(&next_key, &key).unwrap();
    server.signal("-HUP");
    std::thread::sleep(Duration::from_millis(300));
    let out = curl(
        &cert,
        &url("/"),
        &[
            "--resolve",
            &resolve,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200",
        "the new certificate is served"
    );
    let out = curl(&first_ca, &url("/"), &["--resolve", &resolve]);
    assert!(
        !out.status.success(),
        "the old certificate is no longer served"
    );
    let finished = download.wait_with_output().unwrap();
    assert!(finished.status.success());
    assert!(
        std::fs::read(&out_file).unwrap() == big,
        "the download begun before the reload is intact"
    );

    server.signal("-TERM");
    let (code, err) = server.finish();
    assert_eq!(code, 0);
    assert!(err.contains("reloaded the TLS certificate"), "{err}");
}

#[test]
fn the_proxy_protocol_flag_reads_the_client_address() {
    let server = Server::start(
        stackway(&[
            "--bind",
            "127.0.0.1:0",
            "--proxy-protocol",
            "--mount",
            "/=demo",
        ]),
        1,
    );
    let mut conn = Conn::open(server.tcp(0));
    conn.send(b"PROXY TCP4 192.0.2.44 10.0.0.1 40000 80\r\n");
    let page = conn.get("/");
    assert!(
        page.text().contains("REMOTE_ADDR=192.0.2.44\n"),
        "{}",
        page.text()
    );
    // Without the header, the connection is closed unanswered.
    let mut conn = Conn::open(server.tcp(0));
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(conn.is_closed());
}

#[test]
fn listener_flags_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    for (args, code, says) in [
        (&["--bind", "unix:"][..], 2, "expected unix:PATH"),
        (&["--bind", "fd:1"], 2, "from 3 up"),
        (&["--socket-mode", "999"], 2, "octal"),
        (&["--tls-cert", "a.pem"], 2, "--tls-key"),
        (&["--health", "healthz"], 2, "/healthz"),
        (
            &["--tls-cert", missing, "--tls-key", missing],
            1,
            "missing.pem",
        ),
    ] {
        let out = stackway(&[&["--bind", "127.0.0.1:0", "--mount", "/=hello"], args].concat())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn a_restart_reads_the_config_again_and_keeps_every_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("app.sock");
    let file = dir.path().join("stackway.toml");
    let listen = format!("[[listen]]\nbind = \"unix:{}\"\n", sock.display());
    let config = |app: &str, unix_first: bool| {
        let tcp = "[[listen]]\nbind = \"127.0.0.1:0\"\n";
        let mount = format!("[[mount]]\nprefix = \"/\"\napp = \"{app}\"\n");
        match unix_first {
            true => format!("{listen}{tcp}{mount}"),
            false => format!("{tcp}{listen}{mount}"),
        }
    };
    std::fs::write(&file, config("hello", false)).unwrap();
    let server = Server::start(stackway(&["--config", file.to_str().unwrap()]), 2);
    let addr = server.tcp(0);
    assert_eq!(get(addr, "/").text(), "<h1>Hello, web!</h1>");

    // New settings, the listeners in another order: SIGUSR2 applies them.
    std::fs::write(&file, config("demo", true)).unwrap();
    server.signal("-USR2");
    let (code, err) = server.finish();
    assert_eq!(code, 0, "{err}");
    assert!(
        get(addr, "/").text().contains("PATH_INFO=/\n"),
        "the new process serves the port"
    );
    assert!(
        unix_get(&sock, "/").contains("PATH_INFO=/\n"),
        "and the socket file"
    );
    let new: i32 = err
        .rsplit("pid=")
        .next()
        .and_then(|pid| {
            pid.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no new pid in {err}"));
    assert!(
        Command::new("kill")
            .arg(new.to_string())
            .status()
            .unwrap()
            .success()
    );
    let started = Instant::now();
    while sock.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the new process removes the file it took over"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
