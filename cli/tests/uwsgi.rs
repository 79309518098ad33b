//! nginx in front, speaking uwsgi (`uwsgi_pass`, TCP and unix) to `stackway
//! serve --bind uwsgi://…`: the deployment uWSGI users run, with stackway in
//! uWSGI's place and nginx's configuration as it was.

mod support;

use stackway_test_support::http::{Conn, exchange, uwsgi_packet};
use stackway_test_support::{external, peak_rss_kib_of};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Server, stackway};

/// nginx, killed when dropped.
struct Nginx {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Nginx {
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
fn nginx(dir: &std::path::Path, locations: &str) -> Option<Nginx> {
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
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nginx did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(Nginx { child, addr })
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
