//! nginx in front, speaking uwsgi (`uwsgi_pass`, TCP and unix) to `stackway
//! serve --bind uwsgi://…`: the deployment uWSGI users run, with stackway in
//! uWSGI's place and nginx's configuration as it was.

mod support;

use stackway_test_support::http::{Conn, exchange, nginx_uwsgi_vars, uwsgi_packet};
use stackway_test_support::{external, peak_rss_kib_of};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Server, stackway};

/// A peer's process (nginx, uWSGI), killed when dropped, and where it listens.
struct Peer {
    child: Child,
    addr: SocketAddr,
}

impl Peer {
    /// Waits until it takes connections, for at most `secs` seconds.
    fn listening(&self, name: &str, secs: u64) {
        let started = Instant::now();
        while TcpStream::connect(self.addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(secs),
                "{name} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// nginx on a free port with `locations`, its files in `dir`; `None` when
/// there is no nginx here (the test is then skipped, saying so).
fn nginx(dir: &std::path::Path, locations: &str) -> Option<Peer> {
    let bin = external::file(&["/usr/sbin/nginx"], "Debian's nginx-light")?;
    let port = free_port();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "user root; daemon off; master_process off; worker_processes 1;\n\
             pid {dir}/nginx.pid; error_log stderr warn;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_max_body_size 0;\n\
               client_body_temp_path {dir}/body; uwsgi_temp_path {dir}/uwsgi;\n\
               proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fastcgi; scgi_temp_path {dir}/scgi;\n\
               server {{\n    listen 127.0.0.1:{port};\n{locations}\n  }}\n}}\n",
            dir = dir.display()
        ),
    )
    .unwrap();
    let child = Command::new(bin)
        .args(["-e", "stderr", "-p"])
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let nginx = Peer {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    };
    nginx.listening("nginx", 10);
    Some(nginx)
}

/// `stackway serve` with the test Flask app at `/app` and at `/`, over uwsgi
/// on TCP and on the unix socket `sock`, with two workers or `how`.
fn stackway_uwsgi(sock: &std::path::Path, how: &[&str]) -> Option<Server> {
    if !external::python_modules(&["flask"], "Debian's python3-flask") {
        return None;
    }
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/../wsgi/tests/python");
    let unix = format!("uwsgi+unix:{}", sock.display());
    let args = [
        "--pythonpath",
        python,
        "--bind",
        "uwsgi://127.0.0.1:0",
        "--bind",
        &unix,
        "--mount",
        "/app=wsgi:flask_app:app",
        "--mount",
        "/=wsgi:flask_app:app",
    ];
    let how = if how.is_empty() {
        &["--workers", "2"]
    } else {
        how
    };
    Some(Server::start(stackway(&[&args, how].concat()), 2))
}

/// uWSGI's own model: processes of one thread that reads, runs Python and writes.
const ON_WORKERS: [&str; 6] = ["--processes", "2", "--workers", "1", "--wsgi-threads", "0"];

/// Where `server` takes uwsgi over TCP.
fn uwsgi_tcp(server: &Server) -> SocketAddr {
    let tcp = server.listening[0].strip_prefix("uwsgi://").unwrap();
    tcp.parse().unwrap()
}

#[test]
fn nginx_uwsgi_pass_reaches_a_flask_mount_over_tcp_and_unix() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("app.sock");
    let Some(server) = stackway_uwsgi(&sock, &[]) else {
        return;
    };
    let tcp = &server.listening[0];
    assert!(tcp.starts_with("uwsgi://127.0.0.1:"), "{tcp}");
    assert_eq!(
        server.listening[1],
        format!("uwsgi+unix:{}", sock.display())
    );
    let tcp = tcp.strip_prefix("uwsgi://").unwrap();
    let locations = format!(
        "    server_name front.example;\n\
         location /app {{ include /etc/nginx/uwsgi_params; uwsgi_param REMOTE_USER alice; uwsgi_pass {tcp}; }}\n\
         location /unix/ {{ rewrite ^/unix(/.*)$ $1 break; include /etc/nginx/uwsgi_params; uwsgi_pass unix:{sock}; }}\n\
         location /legacy {{ include /etc/nginx/uwsgi_params; uwsgi_param SCRIPT_NAME /legacy; uwsgi_modifier1 30; uwsgi_pass {tcp}; }}\n",
        sock = sock.display()
    );
    let Some(nginx) = nginx(dir.path(), &locations) else {
        return;
    };
    // One client connection, kept alive by nginx across the requests.
    let mut conn = Conn::open(nginx.addr);
    let index = conn.get("/app/");
    assert_eq!(index.status, 200);
    assert_eq!(
        index.text(),
        "index links to /app/hello/x",
        "url_for under the mount"
    );
    assert_eq!(
        conn.get("/app/hello/you").text(),
        "hello you at /app/hello/you"
    );
    let go = conn.get("/app/go");
    assert_eq!(go.status, 302);
    assert_eq!(go.header("location"), Some("/app/hello/there"));
    assert_eq!(conn.get("/app/whoami").text(), "127.0.0.1 http HTTP/1.1");
    // Over the unix socket: REMOTE_ADDR is nginx's word, not the socket's.
    assert_eq!(
        conn.get("/unix/app/whoami").text(),
        "127.0.0.1 http HTTP/1.1"
    );
    assert_eq!(
        conn.get("/unix/app/hello/u").text(),
        "hello u at /app/hello/u"
    );
    // SERVER_NAME and SERVER_PORT are nginx's (its server_name, the port the
    // client connected to), as uWSGI passes them: not the uwsgi listener's,
    // and no socket's at all over unix. URLs keep the client's host.
    let front = format!(
        "front.example {} http://localhost/app/hello/x",
        nginx.addr.port()
    );
    assert_eq!(conn.get("/app/server").text(), front);
    assert_eq!(conn.get("/unix/app/server").text(), front);
    // The front's other variables reach the app, as under uWSGI: a
    // uwsgi_param of the deployment's, and uwsgi_params' DOCUMENT_ROOT.
    let vars = conn.get("/app/front").text();
    assert!(
        vars.starts_with("alice /") && vars.ends_with("/html"),
        "{vars}"
    );
    // Two Cookie fields are two variables from this nginx (before 1.23):
    // the app sees both cookies, where uWSGI keeps the last.
    conn.send(
        b"GET /app/cookies HTTP/1.1\r\nHost: localhost\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n",
    );
    assert_eq!(conn.read_response().text(), "a=1 b=2");
    // uWSGI's convention: SCRIPT_NAME set by nginx, modifier1 30.
    assert_eq!(
        conn.get("/legacy/hello/old").text(),
        "hello old at /legacy/hello/old"
    );
    assert_eq!(
        conn.get("/legacy/").text(),
        "index links to /legacy/hello/x"
    );
    assert_eq!(conn.get("/app/nowhere").status, 404);
    // REQUEST_URI is what the client sent, as uWSGI passes nginx's: with the
    // mount SCRIPT_NAME took off, and before nginx merged the slashes.
    assert_eq!(conn.get("/legacy/uri?x=%20").text(), "/legacy/uri?x=%20");
    assert_eq!(conn.get("/app//uri?x").text(), "/app//uri?x");
    // A chunked upload: nginx reads it whole and sends its length, with the
    // client's Transfer-Encoding beside it as a variable.
    conn.send(b"POST /app/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    assert_eq!(conn.read_response().text(), "11 bytes");

    // 64 MiB up and 64 MiB down in constant memory.
    const MIB: usize = 64;
    let pid = server.child.id();
    let before = peak_rss_kib_of(pid);
    let mut stream = TcpStream::connect(nginx.addr).unwrap();
    let len = MIB << 20;
    stream
        .write_all(
            format!("POST /app/upload HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    let chunk = vec![b'u'; 1 << 20];
    for _ in 0..MIB {
        stream.write_all(&chunk).unwrap();
    }
    let mut conn = Conn {
        reader: std::io::BufReader::new(stream),
    };
    let uploaded = conn.read_response();
    assert_eq!(uploaded.text(), format!("{len} bytes"));
    let mut stream = conn.reader.into_inner();
    stream
        .write_all(
            format!("GET /app/download/{MIB} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    let mut received = 0;
    let mut buf = vec![0; 1 << 16];
    loop {
        let n = stream.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        received += n;
    }
    assert!(received > len, "{received} bytes");
    let grown = peak_rss_kib_of(pid).saturating_sub(before);
    eprintln!("stackway's peak RSS grew by {grown} KiB for {MIB} MiB each way");
    assert!(grown < 32 * 1024, "peak RSS grew by {grown} KiB");
}

#[test]
fn nginx_uwsgi_pass_to_processes_that_run_python_on_their_workers() {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = stackway_uwsgi(&dir.path().join("app.sock"), &ON_WORKERS) else {
        return;
    };
    let tcp = uwsgi_tcp(&server);
    let locations =
        format!("    location /app {{ include /etc/nginx/uwsgi_params; uwsgi_pass {tcp}; }}\n");
    let Some(nginx) = nginx(dir.path(), &locations) else {
        return;
    };
    let addr = nginx.addr;
    let answers: Vec<_> = (0..16)
        .map(|n| {
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr);
                (0..10)
                    .map(|i| conn.get(&format!("/app/hello/{n}-{i}")).text())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for (n, answer) in answers.into_iter().enumerate() {
        let expected: Vec<_> = (0..10)
            .map(|i| format!("hello {n}-{i} at /app/hello/{n}-{i}"))
            .collect();
        assert_eq!(answer.join().unwrap(), expected);
    }
    // A body past the first MiB, read whole on the worker before Python.
    let len = 8 << 20;
    let mut conn = Conn::open(addr);
    conn.send(
        format!("POST /app/upload HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n").as_bytes(),
    );
    conn.send(&vec![b'u'; len]);
    assert_eq!(conn.read_response().text(), format!("{len} bytes"));
}

#[test]
fn over_uwsgi_max_requests_and_the_access_log_count_each_request_once() {
    // uWSGI's `max-requests` and its request log, on its own model: one
    // process of one thread. A request without a body reaches the app as the
    // packet; one with a body, or one the Dispatcher hands back (no mount),
    // as the request made of it. Each counts once toward the limit and is
    // logged once, whichever way it came. The status page, answered around
    // the app, is neither.
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/../wsgi/tests/python");
    let server = Server::start(
        stackway(&[
            "--pythonpath",
            python,
            "--bind",
            "uwsgi://127.0.0.1:0",
            "--processes",
            "1",
            "--workers",
            "1",
            "--wsgi-threads",
            "0",
            "--max-requests",
            "3",
            "--access-log",
            "--status",
            "/status",
            "--mount",
            "/p=wsgi:process_apps:pid",
        ]),
        1,
    );
    let addr = uwsgi_tcp(&server);
    // The fifth has no mount.
    let path = |n: usize| match n {
        4 => format!("/none/{n}"),
        _ => format!("/p/{n}"),
    };
    let packet = |path: String, body: &str| {
        let mut vars = nginx_uwsgi_vars(&path, &path);
        for (name, value) in &mut vars {
            match *name {
                "REQUEST_METHOD" if !body.is_empty() => *value = "POST".to_owned(),
                "CONTENT_LENGTH" if !body.is_empty() => *value = body.len().to_string(),
                _ => {}
            }
        }
        vars.push(("HTTP_HOST", "example.org".to_owned()));
        let mut bytes = uwsgi_packet(&vars);
        bytes.extend_from_slice(body.as_bytes());
        bytes
    };
    let bodies = ["", "", "hello", "", "", "hello", "", "", ""];
    let answers: Vec<(String, String)> = (bodies.iter().enumerate())
        .map(|(n, body)| {
            if n == 4 {
                let page = exchange(addr, &packet("/status".to_owned(), ""));
                assert!(page.starts_with("HTTP/1.0 200 OK\r\n"), "{page}");
                assert!(page.contains("content-type: text/html"), "{page}");
            }
            let answer = exchange(addr, &packet(path(n), body));
            let (head, body) = answer.split_once("\r\n\r\n").unwrap();
            (head.lines().next().unwrap().to_owned(), body.to_owned())
        })
        .collect();
    let status = |n: usize| if n == 4 { "404 Not Found" } else { "200 OK" };
    for (n, (line, _)) in answers.iter().enumerate() {
        assert_eq!(*line, format!("HTTP/1.0 {}", status(n)), "{answers:?}");
    }
    // Three processes in turn, three requests each, the one with no mount
    // among the second's.
    let pid = |n: usize| &answers[if n == 4 { 3 } else { n }].1;
    for n in 0..9 {
        assert_eq!(pid(n), pid(n - n % 3), "{answers:?}");
    }
    assert!(pid(0) != pid(3) && pid(3) != pid(6), "{answers:?}");
    // One line a request, in order, the same whichever way it came.
    let logged = || {
        let err = server.stderr();
        (err.lines())
            .filter(|line| line.starts_with("203.0.113.7 - - ["))
            .map(|line| line.split_once("] ").unwrap().1.to_owned())
            .collect::<Vec<_>>()
    };
    let expected: Vec<String> = (bodies.iter().enumerate())
        .map(|(n, body)| {
            let method = if body.is_empty() { "GET" } else { "POST" };
            let code = &status(n)[..3];
            let bytes = answers[n].1.len();
            format!("\"{method} {} HTTP/1.1\" {code} {bytes}", path(n))
        })
        .collect();
    let started = Instant::now();
    while logged().len() < expected.len() && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(logged(), expected);
}

#[test]
fn a_process_free_takes_what_waits_while_another_runs_a_long_request() {
    // uWSGI's processes take turns at one socket; a connection the kernel put
    // in the queue of a process busy in Python would wait for it.
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = stackway_uwsgi(&dir.path().join("app.sock"), &ON_WORKERS) else {
        return;
    };
    let addr = uwsgi_tcp(&server);
    // The body of the answer to `query`, on a connection of its own.
    let get = move |query: &str| {
        let packet = uwsgi_packet(&[
            ("REQUEST_METHOD", "GET"),
            ("PATH_INFO", "/app/pid"),
            ("QUERY_STRING", query),
            ("HTTP_HOST", "x"),
        ]);
        let answer = exchange(addr, &packet);
        answer.split_once("\r\n\r\n").unwrap().1.to_owned()
    };
    let long = std::thread::spawn(move || get("wait=2"));
    std::thread::sleep(Duration::from_millis(300));
    // Each of these, on a new connection (a new port, so a new place in an
    // address hash), answered by the process that is free.
    let quick: Vec<String> = (0..8).map(|_| get("wait=0")).collect();
    let busy = long.join().unwrap();
    assert!(
        quick.iter().all(|pid| *pid != busy),
        "answered by {quick:?} while {busy} ran the long one"
    );
}

#[test]
fn a_uwsgi_packet_from_a_client_that_is_not_wsgi_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = stackway_uwsgi(&dir.path().join("app.sock"), &[]) else {
        return;
    };
    let addr = uwsgi_tcp(&server);
    // The whole answer to `bytes` on a connection of their own.
    let exchange = |bytes: &[u8]| exchange(addr, bytes);
    // modifier1 5 (PSGI): 501, said in the body.
    let answer = exchange(&[5, 0, 0, 0]);
    assert!(answer.starts_with("HTTP/1.0 501 "), "{answer}");
    assert!(answer.contains("modifier1 5"), "{answer}");
    // A header smuggled in a variable: 400.
    let answer = exchange(&uwsgi_packet(&[
        ("PATH_INFO", "/app/"),
        ("HTTP_X_A", "a\r\nX-Injected: 1"),
    ]));
    assert!(answer.starts_with("HTTP/1.0 400 "), "{answer}");
    // The server goes on: a well-formed packet is answered.
    let answer = exchange(&uwsgi_packet(&[
        ("REQUEST_METHOD", "GET"),
        ("PATH_INFO", "/app/hello/raw"),
        ("HTTP_HOST", "example.org"),
    ]));
    assert!(answer.starts_with("HTTP/1.0 200 "), "{answer}");
    assert!(answer.ends_with("hello raw at /app/hello/raw"), "{answer}");
    // A client's `Connection: keep-alive` passed on as a variable: the
    // connection still carries one request and closes once it is answered
    // (a front reads the answer to its end), not at the idle timeout.
    let started = std::time::Instant::now();
    let answer = exchange(&uwsgi_packet(&[
        ("REQUEST_METHOD", "GET"),
        ("PATH_INFO", "/app/hello/kept"),
        ("HTTP_HOST", "example.org"),
        ("HTTP_CONNECTION", "keep-alive"),
    ]));
    assert!(
        answer.ends_with("hello kept at /app/hello/kept"),
        "{answer}"
    );
    assert!(
        !answer.to_ascii_lowercase().contains("keep-alive"),
        "{answer}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // Flask's 404 keeps Werkzeug's reason, as under uWSGI.
    let answer = exchange(&uwsgi_packet(&[
        ("REQUEST_METHOD", "GET"),
        ("PATH_INFO", "/app/no/such/page"),
        ("HTTP_HOST", "example.org"),
    ]));
    assert!(answer.starts_with("HTTP/1.0 404 NOT FOUND\r\n"), "{answer}");
}

/// A WSGI app that answers with the environ it was given, a line
/// `NAME=repr(value)` each, sorted (the server's own objects, `wsgi.input`
/// and the like, left out), and the body it read.
const ENVIRON_APP: &str = r#"
def application(environ, start_response):
    body = environ["wsgi.input"].read()
    lines = [f"{name}={value!r}" for name, value in environ.items()
             if isinstance(value, (str, bytes, int, tuple))]
    lines.append(f"body={body!r}")
    answer = "\n".join(sorted(lines)).encode("utf-8", "backslashreplace")
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"),
                              ("Content-Length", str(len(answer)))])
    return [answer]
"#;

/// uWSGI from PyPI (the virtualenv `middleware/tests/proxy_uwsgi.rs` makes
/// too), one process of one thread, serving `module:application` from `dir`
/// on a free port, killed when dropped.
fn real_uwsgi(dir: &std::path::Path, module: &str) -> Option<Peer> {
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/test-venvs/uwsgi");
    external::python_venv(venv.as_ref(), &["uwsgi"])?;
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut command = Command::new(std::path::Path::new(venv).join("bin/uwsgi"));
    command
        .args(["--socket", &addr.to_string(), "--chdir"])
        .arg(dir)
        .args(["--module", &format!("{module}:application")])
        .args([
            "--master",
            "--processes",
            "1",
            "--disable-logging",
            "--die-on-term",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let uwsgi = Peer {
        child: command.spawn().expect("start uwsgi"),
        addr,
    };
    uwsgi.listening("uwsgi", 20);
    Some(uwsgi)
}

/// The environ lines of an answer from [`ENVIRON_APP`].
fn environ_of(answer: &str) -> std::collections::BTreeMap<String, String> {
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or(("", answer));
    assert!(head.starts_with("HTTP/1.1 200 "), "{answer}");
    (body.lines())
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

#[test]
fn behind_nginx_the_app_sees_the_environ_uwsgi_gives_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("environ_app.py"), ENVIRON_APP).unwrap();
    let Some(uwsgi) = real_uwsgi(dir.path(), "environ_app") else {
        return;
    };
    let theirs = uwsgi.addr;
    let python = dir.path().to_str().unwrap();
    let server = Server::start(
        stackway(&[
            "--pythonpath",
            python,
            "--bind",
            "uwsgi://127.0.0.1:0",
            "--mount",
            "/=wsgi:environ_app",
            "--wsgi-threads",
            "1",
        ]),
        1,
    );
    let ours = uwsgi_tcp(&server);
    // One nginx, its uwsgi_params as shipped; X-To picks the server.
    let locations = format!(
        "    server_name front.example;\n\
         set $to {theirs};\n\
         if ($http_x_to = stackway) {{ set $to {ours}; }}\n\
         location / {{ include /etc/nginx/uwsgi_params; uwsgi_pass $to; }}\n"
    );
    let Some(nginx) = nginx(dir.path(), &locations) else {
        return;
    };
    // Each a head (its lines) and a body.
    let requests = [
        ("GET /x?y=1&z=%20&e=%E9 HTTP/1.1\r\nHost: localhost\r\n", ""),
        (
            "GET /a%2Fb/caf%C3%A9/%FF/sp%20ace/%252F HTTP/1.1\r\nHost: h\r\n",
            "",
        ),
        ("GET //a//b/../c/./d HTTP/1.1\r\nHost: h\r\n", ""),
        (
            "GET http://other.example/absolute?x HTTP/1.1\r\nHost: h\r\n",
            "",
        ),
        ("GET /empty-query? HTTP/1.1\r\nHost: h\r\n", ""),
        (
            "GET /headers HTTP/1.1\r\nHost: Example.COM:8080\r\nUser-Agent: t/1\r\n\
             Cookie: a=1; b=2\r\nAuthorization: Basic dXNlcjpwYXNz\r\nAccept-Language: fr\r\n\
             X-Empty:\r\nX-Trace-Id: abc\r\nContent-Type: text/plain\r\n",
            "",
        ),
        ("GET /v6 HTTP/1.1\r\nHost: [::1]:8080\r\n", ""),
        (
            "POST /form HTTP/1.1\r\nHost: h\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 7\r\n",
            "x=1&y=2",
        ),
        (
            "POST /chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n",
            "3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
        ),
        (
            "PUT /nothing HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n",
            "",
        ),
        ("DELETE /thing?id=7 HTTP/1.1\r\nHost: h\r\n", ""),
        ("GET /old HTTP/1.0\r\n", ""),
    ];
    // What differs, and why: REMOTE_PORT is each request's own; uWSGI adds
    // its `uwsgi.*`; it passes nginx's HTTP_CONTENT_TYPE and _LENGTH, which
    // a WSGI environ leaves to CONTENT_TYPE and CONTENT_LENGTH (Werkzeug's
    // server, the CGI spec), and a chunked upload's HTTP_TRANSFER_ENCODING
    // beside the CONTENT_LENGTH nginx set, where Werkzeug then reads no body
    // at all (stackway's app gets the length alone, and the 7 bytes, which
    // `body` compares); X-To is this test's.
    let not_compared = |name: &str| {
        name.starts_with("uwsgi.")
            || [
                "REMOTE_PORT",
                "HTTP_X_TO",
                "HTTP_CONTENT_TYPE",
                "HTTP_CONTENT_LENGTH",
                "HTTP_TRANSFER_ENCODING",
            ]
            .contains(&name)
    };
    // stackway's additions: gunicorn's RAW_URI, SERVER_SOFTWARE, PEP 3333's
    // SCRIPT_NAME (empty at the root, where uWSGI leaves it out), and
    // wsgi.input_terminated.
    let ours_only = [
        "RAW_URI",
        "SERVER_SOFTWARE",
        "SCRIPT_NAME",
        "wsgi.input_terminated",
    ];
    for (head, body) in requests {
        let [theirs, ours] = ["uwsgi", "stackway"].map(|to| {
            let sent = format!("{head}X-To: {to}\r\nConnection: close\r\n\r\n{body}");
            environ_of(&exchange(nginx.addr, sent.as_bytes()))
        });
        let line = head.lines().next().unwrap();
        assert!(theirs.contains_key("REQUEST_METHOD"), "{line}: {theirs:?}");
        for (name, value) in &theirs {
            if !not_compared(name) {
                assert_eq!(ours.get(name), Some(value), "{line}: {name}");
            }
        }
        for name in ours.keys().filter(|name| !theirs.contains_key(*name)) {
            assert!(
                ours_only.contains(&name.as_str()),
                "{line}: {name} is ours only"
            );
        }
        assert_eq!(ours["SCRIPT_NAME"], "''", "{line}");
    }
}
