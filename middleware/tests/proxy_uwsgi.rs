//! The proxy to a real uWSGI (from PyPI, in a virtualenv the test makes)
//! over the uwsgi protocol, TCP and unix: as nginx's `uwsgi_pass`, for
//! keeping a uWSGI backend while moving its front to stackway.

use stackway_test_support as support;

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use stackway_middleware::{Dispatcher, Lint, Proxy};
use support::http::Conn;
use support::{Running, external, server};

const VENV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/test-venvs/uwsgi");

/// uWSGI serving `tests/python/uwsgi_app.py` on `socket`, killed when dropped.
struct Uwsgi(Child);

impl Drop for Uwsgi {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// uWSGI on `socket` (`HOST:PORT` or a path); `None` when it cannot be installed here.
fn uwsgi(socket: &str) -> Option<Uwsgi> {
    external::python_venv(VENV.as_ref(), &["uwsgi"])?;
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python");
    let child = Command::new(Path::new(VENV).join("bin/uwsgi"))
        .args([
            "--socket",
            socket,
            "--chdir",
            python,
            "--module",
            "uwsgi_app:application",
        ])
        .args([
            "--master",
            "--processes",
            "2",
            "--disable-logging",
            "--die-on-term",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start uwsgi");
    let started = Instant::now();
    let up = || match socket.starts_with('/') {
        true => std::os::unix::net::UnixStream::connect(socket).is_ok(),
        false => TcpStream::connect(socket).is_ok(),
    };
    while !up() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "uwsgi did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(Uwsgi(child))
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn a_uwsgi_backend_behind_the_proxy_over_tcp_and_unix() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tcp = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("uwsgi.sock");
    let Some(_tcp) = uwsgi(&tcp) else { return };
    let Some(_unix) = uwsgi(sock.to_str().unwrap()) else {
        return;
    };
    let apps = Dispatcher::default()
        .mount("/app", Proxy::to(&format!("uwsgi://{tcp}")))
        .mount(
            "/unix",
            Proxy::to(&format!("uwsgi+unix:{}:/base", sock.display())),
        );
    let front = Running::start(server().workers(2), Lint::strict(apps));
    let mut conn = Conn::open(front.addr);

    // The variables as nginx's uwsgi_params gives them: the mount as SCRIPT_NAME.
    conn.send(b"GET /app/caf%C3%A9?q=%20 HTTP/1.1\r\nHost: shop.example\r\nX-Trace: t1\r\n\r\n");
    let res = conn.read_response();
    assert_eq!(res.status, 200, "{}", res.text());
    let env = json(&res.text());
    assert_eq!(env["REQUEST_METHOD"], "GET");
    assert_eq!(env["SCRIPT_NAME"], "/app");
    assert_eq!(env["PATH_INFO"], "/café");
    assert_eq!(env["QUERY_STRING"], "q=%20");
    assert_eq!(env["REQUEST_URI"], "/app/caf%C3%A9?q=%20");
    assert_eq!(env["REMOTE_ADDR"], "127.0.0.1");
    assert_eq!(env["HTTP_HOST"], "shop.example");
    assert_eq!(env["SERVER_NAME"], "shop.example");
    assert_eq!(
        env["SERVER_PORT"],
        front.addr.port().to_string(),
        "where the client connected"
    );
    assert_eq!(env["HTTP_X_TRACE"], "t1");
    assert_eq!(env["wsgi.url_scheme"], "http");
    // uWSGI's status passes.
    let missing = conn.get("/app/missing");
    assert_eq!(missing.status, 404);
    // A NUL decoded from the path never reaches a variable: 400, as nginx.
    assert_eq!(conn.get("/app/a%00b").status, 400);
    // Nor a `%` that escapes nothing, which no decoding can tell (nginx: 400).
    for stray in ["/app/a%zzb", "/app/a%2", "/app/a%"] {
        assert_eq!(conn.get(stray).status, 400, "{stray}");
    }
    // Nor a dot segment a `%2F` makes once decoded (nginx's `$document_uri`
    // has none): PATH_INFO `/../x`, for an app that joins it to a root.
    assert_eq!(conn.get("/app/..%2Fx").status, 400);
    assert_eq!(conn.get("/app/a/.%2F..%2fx").status, 400);
    // Nor `OPTIONS *`, whose `*` is no path (nginx answers 400 to it too).
    let at_root = Running::start(server(), Lint::strict(Proxy::to(&format!("uwsgi://{tcp}"))));
    let mut options = Conn::open(at_root.addr);
    options.send(b"OPTIONS * HTTP/1.1\r\nHost: shop.example\r\n\r\n");
    assert_eq!(options.read_response().status, 400);
    // Slashes merged, as in nginx's `$document_uri`.
    let merged = json(&conn.get("/app//x%2F%2Fy").text());
    assert_eq!(merged["PATH_INFO"], "/x/y", "{merged}");
    // A client that names no host (HTTP/1.0): the app is not told the
    // upstream's address for it, but the one the client reached.
    let old = support::http::exchange(front.addr, b"GET /app/old HTTP/1.0\r\n\r\n");
    let env = json(old.split_once("\r\n\r\n").unwrap().1);
    assert_eq!(env["HTTP_HOST"], "", "{env}");
    assert_eq!(env["SERVER_NAME"], "127.0.0.1");
    assert_eq!(env["SERVER_PORT"], front.addr.port().to_string());

    // A POST body, and one of unknown length (read whole first).
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 256) as u8).collect();
    let sum = body.iter().map(|b| u64::from(*b)).sum::<u64>() % 251;
    conn.send(format!("POST /app/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
    conn.send(&body);
    let env = json(&conn.read_response().text());
    assert_eq!(env["body"], body.len());
    assert_eq!(env["body_sum"], sum);
    assert_eq!(env["CONTENT_TYPE"], "application/octet-stream");
    conn.send(b"POST /app/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    assert_eq!(json(&conn.read_response().text())["body"], 11);

    // Over the unix socket, with the upstream's base path.
    let env = json(&conn.get("/unix/x").text());
    assert_eq!(env["PATH_INFO"], "/base/x");
    assert_eq!(env["SCRIPT_NAME"], "/unix");

    // 10 MiB down, and a streamed answer of unknown length.
    let big = conn.get("/app/big");
    assert_eq!(big.status, 200);
    assert_eq!(big.body.len(), 10 << 20);
    assert!(big.body.iter().all(|b| *b == b'b'));
    assert_eq!(
        conn.get("/app/stream").text(),
        "chunk 0\nchunk 1\nchunk 2\n"
    );
    // A Transfer-Encoding the app names frames nothing: the answer runs to
    // the connection's close, as nginx's uwsgi_pass reads it.
    let coded = conn.get("/app/coded");
    assert_eq!(
        (coded.status, coded.text()),
        (200, "not chunked".to_owned())
    );
    // Many requests, each on a connection of its own to uWSGI.
    for _ in 0..50 {
        assert_eq!(conn.get("/app/again").status, 200);
    }
}

#[test]
fn a_uwsgi_backend_that_is_down_is_a_502() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let apps = Dispatcher::default().mount("/app", Proxy::to(&format!("uwsgi://127.0.0.1:{port}")));
    let front = Running::start(server(), Lint::strict(apps));
    let mut conn = Conn::open(front.addr);
    assert_eq!(conn.get("/app/x").status, 502);
    let mut raw = TcpStream::connect(front.addr).unwrap();
    std::io::Write::write_all(
        &mut raw,
        b"GET /app/y HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
}

/// A raw uwsgi server that reads each request's packet and answers `answer`,
/// then closes, as a uwsgi app's connection ends.
fn raw_uwsgi(answer: &'static [u8]) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut head = [0; 4];
            if conn.read_exact(&mut head).is_err() {
                continue;
            }
            let mut vars = vec![0; usize::from(u16::from_le_bytes([head[1], head[2]]))];
            let _ = conn.read_exact(&mut vars);
            let _ = std::io::Write::write_all(&mut conn, answer);
        }
    });
    addr
}

#[test]
fn a_cgi_answer_from_a_uwsgi_backend_is_taken_as_nginx_takes_it() {
    let cases: [(&'static [u8], u16, &str); 3] = [
        // uWSGI's CGI plugin answers with a `Status:` field, not a status line.
        (
            b"Status: 201 Created\r\nContent-Type: text/plain\r\n\r\nmade",
            201,
            "made",
        ),
        (b"Content-Type: text/plain\r\n\r\nplain", 200, "plain"),
        // Neither a status line nor a field: no answer.
        (b"FOO BAR\r\nContent-Type: text/plain\r\n\r\nx", 502, ""),
    ];
    for (answer, status, body) in cases {
        let upstream = raw_uwsgi(answer);
        let apps = Dispatcher::default().mount("/app", Proxy::to(&format!("uwsgi://{upstream}")));
        let front = Running::start(server(), Lint::strict(apps));
        let res = Conn::open(front.addr).get("/app/x");
        assert_eq!(res.status, status, "{}", String::from_utf8_lossy(answer));
        if status != 502 {
            assert_eq!(res.text(), body);
            assert_eq!(res.header("status"), None);
        }
    }
}
