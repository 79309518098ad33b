//! The `stackway` binary, started on port 0 and spoken to over real sockets.

mod support;

use stackway_test_support::external;
use stackway_test_support::http;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use http::Conn;
use support::children;

/// A running `stackway serve`, killed when dropped.
struct Stackway {
    child: Child,
    addr: SocketAddr,
}

impl Stackway {
    fn serve(args: &[&str]) -> Self {
        Self::serve_with_env(args, [])
    }

    fn serve_with_env<'a>(
        args: &[&str],
        env: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_stackway"))
            .args(["serve", "--bind", "127.0.0.1:0", "--workers", "2"])
            .args(args)
            .envs(env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start stackway");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .trim_end()
            .parse()
            .unwrap();
        Self { child, addr }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([name, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit on its own, for at most 20 s.
    fn wait(&mut self) -> ExitStatus {
        for _ in 0..400 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("stackway did not exit");
    }

    fn stderr(&mut self) -> String {
        let mut err = String::new();
        std::io::Read::read_to_string(self.child.stderr.as_mut().unwrap(), &mut err).unwrap();
        err
    }
}

impl Drop for Stackway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stackway"))
        .args(args)
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (
        out.status.code().unwrap_or(-1),
        text(out.stdout),
        text(out.stderr),
    )
}

#[test]
fn mounts_keep_alive_pipelining_and_404() {
    let server = Stackway::serve(&[
        "--mount",
        "/=hello",
        "--mount",
        "/env/=demo",
        "--mount",
        "/hi=hello",
    ]);
    let mut conn = Conn::open(server.addr);
    assert_eq!(conn.get("/").text(), "<h1>Hello, web!</h1>");
    assert_eq!(conn.get("/hi/there").text(), "<h1>Hello, there!</h1>");
    assert_eq!(conn.get("/hi").text(), "<h1>Hello, web!</h1>");
    assert_eq!(
        conn.get("/hix").text(),
        "<h1>Hello, hix!</h1>",
        "/hi does not match /hix"
    );
    let env = conn.get("/env/a%2Fb").text();
    assert!(
        env.contains("SCRIPT_NAME=/env\n") && env.contains("PATH_INFO=/a/b\n"),
        "{env}"
    );

    conn.send(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(conn.read_response().text(), "<h1>Hello, one!</h1>");
    assert_eq!(conn.read_response().text(), "<h1>Hello, two!</h1>");

    let bare = Stackway::serve(&["--mount", "/hello=hello"]);
    let res = Conn::open(bare.addr).get("/elsewhere");
    assert_eq!((res.status, res.text()), (404, "404 Not Found".to_owned()));
}

#[test]
fn cache_keeps_what_http_lets_it_and_counts_it_in_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("page.txt");
    std::fs::write(&page, "old news").unwrap();
    // Modified long ago: fresh for a day by the heuristic (RFC 9111 §4.2.2).
    let touched = Command::new("touch")
        .args(["-d", "2020-01-01", page.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(touched.success());
    let root = format!("/s={}", dir.path().display());
    let server = Stackway::serve(&[
        "--static",
        &root,
        "--cache",
        "1MiB",
        "--metrics",
        "/metrics",
    ]);
    let mut conn = Conn::open(server.addr);
    let first = conn.get("/s/page.txt");
    assert_eq!(first.text(), "old news");
    assert_eq!(
        first.header("cache-status"),
        Some("stackway; fwd=uri-miss; stored")
    );
    let again = conn.get("/s/page.txt");
    assert_eq!(again.text(), "old news");
    assert!(
        again
            .header("cache-status")
            .unwrap()
            .starts_with("stackway; hit; ttl=")
    );
    let metrics = conn.get("/metrics").text();
    for line in [
        "stackway_cache_hits_total{cache=\"serve\"} 1",
        "stackway_cache_stored_total{cache=\"serve\"} 1",
        "stackway_cache_responses{cache=\"serve\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

/// Reads a response of `len` bytes of body slowly: 64 KiB at a time, with a pause.
fn read_slowly(addr: SocketAddr, path: &str, len: usize) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    let mut chunk = vec![0; 64 << 10];
    loop {
        let n = stream.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        all.extend_from_slice(&chunk[..n]);
        std::thread::sleep(Duration::from_millis(2));
    }
    let head_end = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(all.len() - head_end, len);
    all.split_off(head_end)
}

#[test]
fn a_64_mib_response_streams_through_the_disk_cache_in_constant_memory_and_outlives_a_restart() {
    let site = tempfile::tempdir().unwrap();
    let body: Vec<u8> = (0..64u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(site.path().join("big.bin"), &body).unwrap();
    // Modified long ago: fresh for a day by the heuristic (RFC 9111 §4.2.2).
    let big = site.path().join("big.bin");
    let touched = Command::new("touch")
        .args(["-d", "2020-01-01", big.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(touched.success());
    let upstream = Stackway::serve(&["--static", &format!("/={}", site.path().display())]);
    let cache = tempfile::tempdir().unwrap();
    let args = [
        "--mount",
        &format!("/=http://{}", upstream.addr),
        "--cache",
        "256MiB",
        "--cache-dir",
        cache.path().to_str().unwrap(),
    ];
    let front = Stackway::serve(&args);
    let before = stackway_test_support::peak_rss_kib_of(front.child.id());
    let addr = front.addr;
    let slow = std::thread::spawn(move || read_slowly(addr, "/big.bin", 64 << 20));
    std::thread::sleep(Duration::from_millis(100));
    let fast = Conn::open(front.addr).get("/big.bin");
    // It waited for the slow one's response, stored as it went (proxy_cache_lock).
    assert!(
        fast.header("cache-status")
            .unwrap()
            .starts_with("stackway; hit"),
        "{:?}",
        fast.headers
    );
    assert!(fast.body == body, "the fast client's body");
    assert!(slow.join().unwrap() == body, "the slow client's body");
    let grown = stackway_test_support::peak_rss_kib_of(front.child.id()) - before;
    assert!(grown < 16 << 10, "the server grew by {grown} KiB");
    // Its file synced and in place (a moment after the body ended), then a crash.
    let in_place = || {
        let levels = std::fs::read_dir(cache.path()).unwrap().flatten();
        let targets = levels.filter(|l| l.file_name() != "tmp");
        let targets = targets.flat_map(|l| std::fs::read_dir(l.path()).unwrap().flatten());
        targets
            .flat_map(|t| std::fs::read_dir(t.path()).unwrap().flatten())
            .count()
    };
    for _ in 0..100 {
        if in_place() > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(in_place(), 1);
    drop(front);

    let front = Stackway::serve(&args);
    let again = Conn::open(front.addr).get("/big.bin");
    assert!(
        again
            .header("cache-status")
            .unwrap()
            .starts_with("stackway; hit"),
        "{:?}",
        again.headers
    );
    assert!(again.body == body, "served from the disk after the restart");
}

#[test]
fn policies_from_flags_limit_the_rate_refuse_by_address_and_trust_named_proxies() {
    let server = Stackway::serve(&[
        "--mount",
        "/=demo",
        "--proxy-fix",
        "--trusted-proxy",
        "127.0.0.1",
        "--access",
        "deny 192.0.2.0/24",
        "--access",
        "allow all",
        "--rate-limit",
        "1r/m burst=2 nodelay",
    ]);
    let mut conn = Conn::open(server.addr);
    let mut get_as = |client: &str| {
        conn.send(
            format!("GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {client}\r\n\r\n").as_bytes(),
        );
        conn.read_response()
    };
    // The address the trusted proxy names is the one refused, and the one limited.
    assert_eq!(get_as("192.0.2.5").status, 403);
    let statuses: Vec<u16> = (0..4).map(|_| get_as("198.51.100.7").status).collect();
    assert_eq!(statuses, [200, 200, 200, 429]);
    let refused = get_as("198.51.100.7");
    assert_eq!(refused.header("retry-after"), Some("60"));
    assert_eq!(
        get_as("198.51.100.8").status,
        200,
        "another client has its own bucket"
    );

    // From a peer that is not trusted, the header is the client's own words.
    let server = Stackway::serve(&[
        "--mount",
        "/=demo",
        "--proxy-fix",
        "--trusted-proxy",
        "10.0.0.0/8",
        "--access",
        "deny 192.0.2.0/24",
    ]);
    let mut conn = Conn::open(server.addr);
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 192.0.2.5\r\n\r\n");
    assert_eq!(conn.read_response().status, 200);
}

#[test]
fn basic_auth_lets_in_the_htpasswd_users_curl_names_and_sighup_reads_the_file_again() {
    if !external::command("htpasswd", "apache2-utils") || !external::command("curl", "curl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users");
    let add = |flags: &str, user: &str, password: &str| {
        let status = Command::new("htpasswd")
            .args([flags, file.to_str().unwrap(), user, password])
            .status()
            .unwrap();
        assert!(status.success());
    };
    add("-cbB", "alice", "wonderland");
    let server = Stackway::serve(&[
        "--mount",
        "/=hello",
        "--basic-auth",
        file.to_str().unwrap(),
        "--basic-auth-realm",
        "Staff",
    ]);
    let url = format!("http://{}/", server.addr);
    let curl = |user: Option<&str>| {
        let mut command = Command::new("curl");
        command.args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %header{www-authenticate}",
        ]);
        if let Some(user) = user {
            command.args(["-u", user]);
        }
        let out = command.arg(&url).output().unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(curl(Some("alice:wonderland")), "200 ");
    assert_eq!(
        curl(Some("alice:guess")),
        "401 Basic realm=\"Staff\", charset=\"UTF-8\""
    );
    assert_eq!(curl(None), "401 Basic realm=\"Staff\", charset=\"UTF-8\"");
    add("-bm", "bob", "builder");
    assert!(curl(Some("bob:builder")).starts_with("401"), "not read yet");
    server.signal("-HUP");
    for _ in 0..50 {
        if curl(Some("bob:builder")).starts_with("200") {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("SIGHUP did not read the file again");
}

#[test]
fn a_dead_upstream_and_the_servers_own_413_get_pages_and_the_maintenance_file_turns_everything_503()
{
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("50x.html");
    std::fs::write(&page, "<h1>Back soon</h1>").unwrap();
    let large = dir.path().join("413.html");
    std::fs::write(&large, "<h1>Too large</h1>").unwrap();
    let flag = dir.path().join("maintenance");
    let server = Stackway::serve(&[
        "--mount",
        "/down=http://127.0.0.1:1",
        "--mount",
        "/=hello",
        "--max-body-size",
        "10",
        "--error-page",
        &format!("502-504={}", page.display()),
        "--error-page",
        &format!("413={}", large.display()),
        "--maintenance",
        flag.to_str().unwrap(),
    ]);
    let mut conn = Conn::open(server.addr);
    let down = conn.get("/down/x");
    assert_eq!(
        (down.status, down.text().as_str()),
        (502, "<h1>Back soon</h1>")
    );
    // The server refuses this body before any app sees it, with the page.
    let mut refused = Conn::open(server.addr);
    refused.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world");
    let res = refused.read_response();
    assert_eq!(
        (res.status, res.text().as_str()),
        (413, "<h1>Too large</h1>")
    );
    assert_eq!(res.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(conn.get("/").status, 200);
    std::fs::write(&flag, "").unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let res = conn.get("/");
    assert_eq!(
        (res.status, res.text().as_str()),
        (503, "<h1>Back soon</h1>")
    );
    assert_eq!(res.header("retry-after"), Some("60"));
}

/// An auth service in Python's http.server: `Bearer alice` is alice, anyone else 401.
const AUTH_SERVICE: &str = r#"
import http.server, sys
class Auth(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.headers.get("Authorization") == "Bearer alice" and self.path == "/verify"
        self.send_response(200 if ok else 401)
        if ok:
            self.send_header("X-User", "alice")
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Auth)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

#[test]
fn forward_auth_asks_a_python_auth_service_and_a_dead_one_means_503() {
    let mut service = Command::new("python3")
        .args(["-c", AUTH_SERVICE])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    BufReader::new(service.stdout.as_mut().unwrap())
        .read_line(&mut port)
        .unwrap();
    let url = format!("http://127.0.0.1:{}/verify", port.trim());
    let server = Stackway::serve(&[
        "--mount",
        "/=demo",
        "--forward-auth",
        &url,
        "--forward-auth-copy",
        "X-User",
    ]);
    // The same, remembering a yes for a minute.
    let remembering = Stackway::serve(&[
        "--mount",
        "/=demo",
        "--forward-auth",
        &url,
        "--forward-auth-copy",
        "X-User",
        "--forward-auth-remember",
        "60",
    ]);
    let ask = |server: &Stackway, path: &str, authorization: &str| {
        let mut conn = Conn::open(server.addr);
        conn.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {authorization}\r\nX-User: mallory\r\n\r\n").as_bytes());
        conn.read_response()
    };
    let env = ask(&server, "/x", "Bearer alice");
    assert_eq!(env.status, 200);
    assert!(env.text().contains("HTTP_X_USER=alice\n"), "{}", env.text());
    assert_eq!(ask(&server, "/x", "Bearer mallory").status, 401);
    assert_eq!(ask(&remembering, "/x", "Bearer alice").status, 200);
    service.kill().unwrap();
    service.wait().unwrap();
    assert_eq!(ask(&server, "/x", "Bearer alice").status, 503);
    // A yes remembered goes on without the service, fields and all; nothing else does.
    let env = ask(&remembering, "/x", "Bearer alice");
    assert_eq!(env.status, 200);
    assert!(env.text().contains("HTTP_X_USER=alice\n"), "{}", env.text());
    assert_eq!(ask(&remembering, "/y", "Bearer alice").status, 503);
    assert_eq!(ask(&remembering, "/x", "Bearer mallory").status, 503);
}

/// A Flask app that lets staff download from the internal export.
const ACCEL_APP: &str = r#"
from flask import Flask, Response, abort, request
app = Flask(__name__)
@app.route("/download/<name>")
def download(name):
    if request.headers.get("X-Staff") != "yes":
        abort(403)
    return Response(headers={"X-Accel-Redirect": "/protected/" + name,
                             "Content-Type": "application/octet-stream"})
"#;

#[test]
fn a_flask_app_hands_a_1_gib_file_to_x_accel_redirect_and_a_range_of_it_costs_no_memory() {
    if !external::python_modules(&["flask"], "Debian's python3-flask") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let big = std::fs::File::create(files.join("big.bin")).unwrap();
    big.set_len(1 << 30).unwrap();
    std::io::Write::write_all(&mut &big, b"head").unwrap();
    std::fs::write(dir.path().join("accel_app.py"), ACCEL_APP).unwrap();
    let config = dir.path().join("s.toml");
    let static_table = format!(
        "[[static]]\nprefix = \"/protected\"\npath = \"{}\"\ninternal = true\n",
        files.display()
    );
    std::fs::write(&config, static_table).unwrap();
    let server = Stackway::serve(&[
        "--config",
        config.to_str().unwrap(),
        "--pythonpath",
        dir.path().to_str().unwrap(),
        "--mount",
        "/=wsgi:accel_app:app",
    ]);
    let before = stackway_test_support::peak_rss_kib_of(server.child.id());
    let mut conn = Conn::open(server.addr);
    let range = |conn: &mut Conn, range: &str| {
        conn.send(format!("GET /download/big.bin HTTP/1.1\r\nHost: x\r\nX-Staff: yes\r\nRange: bytes={range}\r\n\r\n").as_bytes());
        conn.read_response()
    };
    let first = range(&mut conn, "0-3");
    assert_eq!((first.status, first.text().as_str()), (206, "head"));
    let last = range(&mut conn, "-16777216");
    assert_eq!(last.status, 206);
    assert_eq!(
        last.header("content-range"),
        Some("bytes 1056964608-1073741823/1073741824")
    );
    assert_eq!(last.body.len(), 16 << 20);
    let grown = stackway_test_support::peak_rss_kib_of(server.child.id()) - before;
    assert!(
        grown < 8 << 10,
        "the server grew by {grown} KiB for 16 MiB of the file"
    );
    assert_eq!(conn.get("/protected/big.bin").status, 404);
    assert_eq!(conn.get("/download/big.bin").status, 403);
}

#[test]
fn a_wsgi_app_sees_the_client_certificate_curl_showed_on_mutual_tls() {
    if !external::command("curl", "curl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = stackway_test_support::tls::Ca::new(dir.path(), "clients");
    let (cert, key) = ca.server("localhost", &["localhost"]);
    let (alice_cert, alice_key) = ca.client("alice");
    let mut child = Command::new(env!("CARGO_BIN_EXE_stackway"))
        .args(["serve", "--bind", "127.0.0.1:0", "--workers", "1"])
        .args([
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ])
        .args(["--tls-client-ca", ca.cert.to_str().unwrap()])
        .args([
            "--pythonpath",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../wsgi/tests/python"),
        ])
        .args(["--mount", "/=wsgi:wsgi_apps:client_cert"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim_end().rsplit(':').next().unwrap().to_owned();
    let curl = |client: bool| {
        let mut command = Command::new("curl");
        command.args(["-s", "--cacert", ca.cert.to_str().unwrap()]);
        command.args(["--resolve", &format!("localhost:{port}:127.0.0.1")]);
        if client {
            command.args([
                "--cert",
                alice_cert.to_str().unwrap(),
                "--key",
                alice_key.to_str().unwrap(),
            ]);
        }
        let out = command
            .arg(format!("https://localhost:{port}/"))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, environ) = curl(true);
    let (refused, _) = curl(false);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(code, Some(0), "{line}");
    assert_ne!(refused, Some(0), "no certificate, no connection");
    assert!(
        environ.starts_with("SSL_CLIENT_VERIFY=SUCCESS\nSSL_CLIENT_S_DN=CN=alice\n"),
        "{environ}"
    );
}

#[test]
fn mounts_proxy_to_upstreams_one_or_a_pool() {
    // Two stackway processes as upstreams, a third in front of them.
    let a = Stackway::serve(&["--mount", "/=demo"]);
    let b = Stackway::serve(&["--mount", "/=demo"]);
    let front = Stackway::serve(&[
        "--mount",
        &format!("/api=http://{}/base", a.addr),
        "--mount",
        &format!("/pool=http://{},http://{}", a.addr, b.addr),
        "--mount",
        "/down=http://127.0.0.1:1",
        "--proxy-connect-timeout",
        "2",
    ]);
    let mut conn = Conn::open(front.addr);
    let env = conn.get("/api/a%2Fb?x=1").text();
    for line in [
        "REQUEST_URI=/base/a%2Fb?x=1\n",
        "HTTP_X_FORWARDED_PREFIX=/api\n",
        "HTTP_X_FORWARDED_FOR=127.0.0.1\n",
    ] {
        assert!(env.contains(line), "{line} missing from:\n{env}");
    }
    let ports: std::collections::BTreeSet<String> = (0..4)
        .map(|_| {
            let env = conn.get("/pool/").text();
            env.lines()
                .find_map(|l| l.strip_prefix("SERVER_PORT="))
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ports.len(), 2, "both upstreams answer: {ports:?}");
    assert_eq!(conn.get("/down/x").status, 502);
}

#[test]
fn a_proxy_mount_to_an_https_upstream_trusts_the_ca_given_and_names_a_refused_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = stackway_test_support::tls::Ca::new(dir.path(), "internal");
    let (cert, key) = ca.server("upstream", &["localhost"]);
    let tls = stackway::server::Tls::from_pem_files(cert, key).unwrap();
    let listener = stackway::server::Listener::bind("127.0.0.1:0")
        .unwrap()
        .tls(tls);
    let upstream = stackway_test_support::Running::start(
        stackway::Server::new([listener]).unwrap().workers(1),
        stackway::apps::demo,
    );
    let port = upstream.addr.port();
    let mut front = Stackway::serve(&[
        "--mount",
        &format!("/api=https://localhost:{port}"),
        // The certificate names localhost, not this address.
        "--mount",
        &format!("/ip=https://127.0.0.1:{port}"),
        "--proxy-ca",
        ca.cert.to_str().unwrap(),
    ]);
    let mut conn = Conn::open(front.addr);
    let env = conn.get("/api/").text();
    for line in ["REQUEST_SCHEME=https\n", "SERVER_PROTOCOL=HTTP/2\n"] {
        assert!(env.contains(line), "{line} missing from:\n{env}");
    }
    assert_eq!(conn.get("/ip/").status, 502);
    front.signal("-TERM");
    front.wait();
    let err = front.stderr();
    assert!(
        err.contains("https://127.0.0.1") && err.contains("certificate not valid for name"),
        "{err}"
    );
}

#[test]
fn unusable_proxy_tls_files_stop_serve_with_exit_2() {
    let api = "/api=https://localhost:9";
    for (args, says) in [
        (
            &["--mount", api, "--proxy-ca", "/no/such.pem"][..],
            "stackway: mount /api: proxy TLS: /no/such.pem: ",
        ),
        (
            &["--mount", api, "--proxy-client-cert", "proxy.crt"][..],
            "stackway: mount /api: give --proxy-client-cert and --proxy-client-key together",
        ),
    ] {
        let (code, _, err) = run(&[&["serve", "--check"][..], args].concat());
        assert_eq!(code, 2, "{err}");
        assert!(err.starts_with(says), "{err}");
    }
}

/// `stackway serve ARGS` with the test Python apps on its path, when the
/// system's Python has Flask (else the test is skipped, saying so).
fn with_flask(args: &[&str]) -> Option<Stackway> {
    if !external::python_modules(&["flask"], "Debian's python3-flask") {
        return None;
    }
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/../wsgi/tests/python");
    let args: Vec<&str> = ["--pythonpath", python]
        .iter()
        .chain(args)
        .copied()
        .collect();
    Some(Stackway::serve(&args))
}

/// `body` gunzipped, by Python's gzip.
fn gunzip(body: &[u8]) -> String {
    use std::io::Write;
    let mut python = Command::new("python3")
        .args([
            "-c",
            "import gzip, sys; sys.stdout.buffer.write(gzip.decompress(sys.stdin.buffer.read()))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    python.stdin.take().unwrap().write_all(body).unwrap();
    String::from_utf8(python.wait_with_output().unwrap().stdout).unwrap()
}

#[test]
fn a_flask_page_behind_the_cache_is_computed_once_per_variant_and_compressed_outside_it() {
    let Some(server) = with_flask(&[
        "--mount",
        "/=wsgi:flask_app:app",
        "--cache",
        "1MiB",
        "--compress",
        "--wsgi-threads",
        "1",
    ]) else {
        return;
    };
    let mut conn = Conn::open(server.addr);
    let mut get = |encoding: &str| {
        conn.send(format!("GET /cached HTTP/1.1\r\nHost: x\r\n{encoding}\r\n").as_bytes());
        conn.read_response()
    };
    let gzip = "Accept-Encoding: gzip\r\n";
    let first = get(gzip);
    assert_eq!(first.header("content-encoding"), Some("gzip"));
    assert_eq!(
        first.header("cache-status"),
        Some("stackway; fwd=uri-miss; stored")
    );
    assert!(gunzip(&first.body).starts_with("computed 1 times\n"));
    let again = get(gzip);
    assert!(
        again
            .header("cache-status")
            .unwrap()
            .starts_with("stackway; hit")
    );
    assert!(gunzip(&again.body).starts_with("computed 1 times\n"));
    // Another Accept-Encoding is another variant (Vary), computed once too.
    let plain = get("");
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(
        plain.header("cache-status"),
        Some("stackway; fwd=vary-miss; stored")
    );
    assert!(plain.text().starts_with("computed 2 times\n"));
    assert!(get("").text().starts_with("computed 2 times\n"));
    assert!(gunzip(&get(gzip).body).starts_with("computed 1 times\n"));
}

#[test]
fn mounts_python_wsgi_apps() {
    let Some(server) = with_flask(&[
        "--mount",
        "/=wsgi:wsgi_apps:hello",
        "--mount",
        "/app=wsgi:flask_app:app",
        "--wsgi-threads",
        "2",
    ]) else {
        return;
    };
    let mut conn = Conn::open(server.addr);
    assert_eq!(conn.get("/you").text(), "Hello, you!");
    assert_eq!(conn.get("/app/").text(), "index links to /app/hello/x");
}

#[test]
fn a_wsgi_app_an_asgi_app_a_proxy_and_static_files_under_one_dispatcher() {
    let upstream = Stackway::serve(&["--mount", "/=hello"]);
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("site.css"), "body{}").unwrap();
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/../wsgi/tests/python");
    let proxy = format!("/proxy=http://{}", upstream.addr);
    let statics = format!("/static={}", files.path().display());
    let server = Stackway::serve(&[
        "--pythonpath",
        python,
        "--mount",
        "/wsgi=wsgi:wsgi_apps:hello",
        "--mount",
        "/asgi=asgi:asgi_apps:scope",
        "--mount",
        &proxy,
        "--static",
        &statics,
    ]);
    let mut conn = Conn::open(server.addr);
    assert_eq!(conn.get("/wsgi/you").text(), "Hello, you!");
    let scope = conn.get("/asgi/items/7?full=1").text();
    assert!(scope.contains(r#""root_path": "/asgi""#), "{scope}");
    assert!(scope.contains(r#""path": "/asgi/items/7""#), "{scope}");
    assert!(scope.contains(r#""query_string": "full=1""#), "{scope}");
    assert_eq!(conn.get("/proxy/there").text(), "<h1>Hello, there!</h1>");
    assert_eq!(conn.get("/static/site.css").text(), "body{}");
}

#[test]
fn an_asgi_lifespan_starts_before_serving_and_shuts_down_at_sigterm() {
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/../wsgi/tests/python");
    let (code, _, err) = run(&[
        "serve",
        "--pythonpath",
        python,
        "--mount",
        "/=asgi:asgi_apps:broken_startup",
    ]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("the database is not there"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("shutdown");
    let mut server = Stackway::serve_with_env(
        &[
            "--pythonpath",
            python,
            "--mount",
            "/=asgi:asgi_apps:lifespan",
        ],
        [("ASGI_SHUTDOWN_FILE", marker.to_str().unwrap())],
    );
    assert_eq!(Conn::open(server.addr).get("/").text(), "started");
    assert!(!marker.exists());
    server.signal("-TERM");
    assert!(server.wait().success());
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "shut down");
    // A shutdown that raises is logged as a failure, with its traceback.
    let mut server = Stackway::serve_with_env(
        &[
            "--pythonpath",
            python,
            "--mount",
            "/=asgi:asgi_apps:lifespan",
        ],
        [("ASGI_SHUTDOWN_RAISES", "1")],
    );
    assert_eq!(Conn::open(server.addr).get("/").text(), "started");
    server.signal("-TERM");
    assert!(server.wait().success());
    let err = server.stderr();
    assert!(err.contains("failed to shut down"), "{err}");
    assert!(
        err.contains("RuntimeError: the cache would not flush"),
        "{err}"
    );
}

#[test]
fn an_asgi_app_whose_client_left_first_may_return_without_a_response_unlogged() {
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/../wsgi/tests/python");
    let mount = |at: &str, app: &str| ["--mount".to_owned(), format!("{at}=asgi:asgi_apps:{app}")];
    let mut args = vec!["--pythonpath".to_owned(), python.to_owned()];
    for (at, app) in [
        ("/poll", "long_poll"),
        ("/silent", "silent"),
        ("/report", "report"),
    ] {
        args.extend(mount(at, app));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = Stackway::serve(&args);
    let mut poll = Conn::open(server.addr);
    poll.send(b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n");
    std::thread::sleep(Duration::from_millis(300));
    drop(poll);
    let given_up = |conn: &mut Conn| {
        conn.get("/report")
            .text()
            .contains(r#""long_polls_given_up": 1"#)
    };
    let mut conn = Conn::open(server.addr);
    let started = std::time::Instant::now();
    while !given_up(&mut conn) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the app never saw its client go"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // With its client still there, the same is an error: a 500, and logged.
    assert_eq!(conn.get("/silent").status, 500);
    drop(conn);
    server.signal("-TERM");
    assert!(server.wait().success());
    let err = server.stderr();
    assert_eq!(
        err.matches("the app returned without starting a response")
            .count(),
        1,
        "{err}"
    );
}

#[test]
fn a_flask_app_behind_proxy_fix_builds_external_urls_for_the_forwarded_host() {
    let Some(server) = with_flask(&[
        "--mount",
        "/app=wsgi:flask_app:app",
        "--proxy-fix",
        "for=1,proto=1,host=1",
    ]) else {
        return;
    };
    let mut conn = Conn::open(server.addr);
    let forwarded = "X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: shop.example\r\n";
    let mut get = |path: &str| {
        let head = format!("GET {path} HTTP/1.1\r\nHost: 10.0.0.5:8000\r\n{forwarded}\r\n");
        conn.send(head.as_bytes());
        conn.read_response()
    };
    assert_eq!(
        get("/app/external").text(),
        "https://shop.example/app/hello/x"
    );
    let res = get("/app/go-external");
    assert_eq!(res.status, 302);
    assert_eq!(
        res.header("location"),
        Some("https://shop.example/app/hello/there")
    );
    assert_eq!(
        get("/app/host").text(),
        "shop.example shop.example https://shop.example/app/"
    );
    // Without the forwarded headers, the host the client named.
    assert_eq!(
        conn.get("/app/external").text(),
        "http://localhost/app/hello/x"
    );
}

/// Writes a WSGI module at `path` whose app answers `version`.
fn write_versioned_app(path: &std::path::Path, version: &str) {
    // Each write a byte longer: Python takes the `.pyc` of the version before
    // for its source when the two agree in size and in mtime's second, and
    // a test writes its versions within one.
    static WRITES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let pad = "#".repeat(WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let app = format!(
        "def application(environ, start_response):\n    start_response('200 OK', [])\n    return [b'{version}']\n{pad}\n"
    );
    std::fs::write(path, app).unwrap();
}

#[test]
fn sighup_replaces_the_processes_with_the_new_code_once_it_loads() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("hupme.py");
    let write = |version: &str| write_versioned_app(&module, version);
    write("v1");
    let python = dir.path().to_str().unwrap();
    let mut server = Stackway::serve(&[
        "--processes",
        "2",
        "--pythonpath",
        python,
        "--mount",
        "/=wsgi:hupme:application",
    ]);
    // A connection each: a replaced process closes the ones it kept alive.
    let addr = server.addr;
    let get = || {
        let res = Conn::open(addr).get("/");
        assert_eq!(res.status, 200, "answered during a reload");
        res.text()
    };
    assert_eq!(get(), "v1");
    // A new version on disk is not served until SIGHUP, as under gunicorn.
    write("v2");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get(), "v1");
    let old = children(server.child.id());
    server.signal("-HUP");
    // Both processes replaced, the old ones gone: a process still starting
    // would read the code written next.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let now = children(server.child.id());
        if now.len() == 2 && now.is_disjoint(&old) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not replaced: {now:?} after {old:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(get(), "v2");
    // Code that does not load is reported, and the old code goes on serving.
    std::fs::write(&module, "def application(:\n").unwrap();
    server.signal("-HUP");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(get(), "v2");
    server.signal("-TERM");
    assert!(server.wait().success());
    let err = server.stderr();
    assert!(err.contains("SyntaxError"), "{err}");
    assert!(err.contains("still serving the old code"), "{err}");
}

#[test]
fn reload_restarts_on_a_change_and_keeps_serving_through_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("reloadme.py");
    let write = |version: &str| write_versioned_app(&module, version);
    write("v1");
    let python = dir.path().to_str().unwrap();
    let mut server = Stackway::serve(&[
        "--reload",
        "--pythonpath",
        python,
        "--mount",
        "/=wsgi:reloadme:application",
    ]);
    // One GET on a connection of its own; `None` when no server answers it.
    let get = |addr| -> Option<String> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream
            // HTTP/1.0: the body ends with the connection, not chunked.
            .write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.0 200").then(|| body.to_owned())
    };
    let addr = server.addr;
    assert_eq!(get(addr).as_deref(), Some("v1"));
    // Every request is answered while the processes are replaced: the
    // supervisor keeps the port. Whether `want` was served within 15 s.
    let served = |want: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let got = get(addr).expect("answered during a reload");
            if got == want {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // What the supervisor said, when a version never came.
    let mut until = |want: &str| {
        if !served(want) {
            server.signal("-TERM");
            server.wait();
            panic!("never served {want}; stackway said:\n{}", server.stderr());
        }
    };
    write("v2");
    until("v2");
    // Broken code is reported, and the old code goes on serving.
    std::fs::write(&module, "def application(:\n").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(get(addr).as_deref(), Some("v2"));
    write("v3");
    until("v3");
    server.signal("-TERM");
    assert!(server.wait().success());
    let err = server.stderr();
    assert!(err.contains("SyntaxError"), "{err}");
    assert!(err.contains("still serving the old code"), "{err}");
    // The server the supervisor ran is gone with it.
    assert!(std::net::TcpStream::connect(server.addr).is_err());
}

#[test]
fn proxy_fix_trusts_the_proxy_in_front() {
    let server = Stackway::serve(&[
        "--mount",
        "/env=demo",
        "--proxy-fix",
        "for=1,proto=1,host=1,prefix=1",
        "--access-log",
    ]);
    let mut conn = Conn::open(server.addr);
    conn.send(b"GET /env/x HTTP/1.1\r\nHost: internal:8000\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: shop.example\r\nX-Forwarded-Prefix: /store\r\n\r\n");
    let env = conn.read_response().text();
    for line in [
        "REMOTE_ADDR=203.0.113.7\n",
        "REQUEST_SCHEME=https\n",
        "SERVER_NAME=shop.example\n",
        "HTTP_HOST=shop.example\n",
        "SCRIPT_NAME=/store/env\n",
        "PATH_INFO=/x\n",
    ] {
        assert!(env.contains(line), "{line} missing from:\n{env}");
    }
    // Bare: Werkzeug's defaults, For and Proto only.
    let bare = Stackway::serve(&["--mount", "/=demo", "--proxy-fix"]);
    let mut conn = Conn::open(bare.addr);
    conn.send(b"GET / HTTP/1.1\r\nHost: internal\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Host: shop.example\r\n\r\n");
    let env = conn.read_response().text();
    assert!(env.contains("REMOTE_ADDR=203.0.113.7\n"), "{env}");
    assert!(env.contains("SERVER_NAME=internal\n"), "{env}");
}

#[test]
fn log_format_json_prints_one_object_a_line() {
    let mut server = Stackway::serve(&[
        "--mount",
        "/=hello",
        "--mount",
        "/down=http://127.0.0.1:1",
        "--access-log",
        "--log-format",
        "json",
    ]);
    let mut conn = Conn::open(server.addr);
    assert_eq!(conn.get("/you").status, 200);
    assert_eq!(conn.get("/down/x").status, 502); // logs a warning from the proxy
    server.signal("-TERM");
    server.wait();
    let log = server.stderr();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 3, "{log}");
    for line in &lines {
        assert!(
            line.starts_with('{') && line.ends_with('}'),
            "not one JSON object: {line}"
        );
    }
    assert!(
        log.contains(r#"\"request\":\"GET /you HTTP/1.1\""#) || log.contains("GET /you HTTP/1.1"),
        "{log}"
    );
    assert!(log.contains(r#""level":"WARN""#), "{log}");
}

#[test]
fn everyday_layers_from_flags() {
    let server = Stackway::serve(&[
        "--mount",
        "/=hello",
        "--cors",
        "https://app.example",
        "--request-id",
        "--secure-headers",
        "--timeout",
        "5",
        "--compress",
    ]);
    let mut conn = Conn::open(server.addr);
    conn.send(b"GET /you HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n\r\n");
    let res = conn.read_response();
    assert_eq!(res.text(), "<h1>Hello, you!</h1>");
    assert_eq!(
        res.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(res.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(res.header("x-request-id").map(str::len), Some(32));
    conn.send(b"OPTIONS /you HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\nAccess-Control-Request-Method: GET\r\n\r\n");
    assert_eq!(conn.read_head().status, 204);
    // A page's JSON PUT: the method and the headers it asks for are allowed.
    conn.send(b"OPTIONS /you HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\nAccess-Control-Request-Method: PUT\r\nAccess-Control-Request-Headers: content-type, x-csrf-token\r\n\r\n");
    let pre = conn.read_head();
    assert_eq!(pre.status, 204);
    assert_eq!(
        pre.header("access-control-allow-methods"),
        Some("GET, HEAD, POST, PUT, PATCH, DELETE")
    );
    assert_eq!(
        pre.header("access-control-allow-headers"),
        Some("content-type, x-csrf-token")
    );
    // The demo page is large enough to compress.
    let public = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/static");
    let with_static = Stackway::serve(&["--compress", "--static", &format!("/s={public}")]);
    let mut conn = Conn::open(with_static.addr);
    conn.send(b"GET /s/ HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n");
    let res = conn.read_response();
    assert_eq!(res.header("content-encoding"), Some("gzip"));
    assert_eq!(res.header("vary"), Some("accept-encoding"));
}

#[test]
fn static_folders_are_served_in_front_of_the_mounts() {
    let public = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/static");
    let server = Stackway::serve(&[
        "--mount",
        "/=hello",
        "--static",
        &format!("/static={public}"),
    ]);
    let mut conn = Conn::open(server.addr);
    let css = conn.get("/static/css/site.css");
    assert_eq!(css.status, 200);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    let expected = std::fs::read(format!("{public}/css/site.css")).unwrap();
    assert_eq!(css.body, expected);
    let etag = css.header("etag").unwrap().to_owned();

    conn.send(
        format!("GET /static/css/site.css HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n")
            .as_bytes(),
    );
    let not_modified = conn.read_response();
    assert_eq!((not_modified.status, not_modified.body.len()), (304, 0));
    conn.send(b"GET /static/css/site.css HTTP/1.1\r\nHost: x\r\nRange: bytes=0-3\r\n\r\n");
    let range = conn.read_response();
    assert_eq!((range.status, range.text()), (206, "body".to_owned()));

    let redirect = conn.get("/static");
    assert_eq!(
        (redirect.status, redirect.header("location")),
        (308, Some("/static/"))
    );
    assert!(conn.get("/static/").text().contains("Served by SharedData"));
    // Misses, hostile paths included, go on to the mounted app.
    assert_eq!(
        conn.get("/static/missing.css").text(),
        "<h1>Hello, static/missing.css!</h1>"
    );
    let hostile = conn.get("/static/..%2f..%2fCargo.toml");
    assert_eq!(hostile.status, 200);
    assert!(
        hostile.text().starts_with("<h1>Hello, "),
        "{}",
        hostile.text()
    );
    assert!(!hostile.text().contains("[package]"));
    assert_eq!(conn.get("/hi").text(), "<h1>Hello, hi!</h1>");
}

#[test]
fn h2c_prior_knowledge() {
    let server = Stackway::serve(&["--mount", "/=hello"]);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
            let (mut sender, conn) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(stream),
            )
            .await
            .unwrap();
            tokio::spawn(conn);
            let req = stackway::http::Request::get("http://localhost/h2")
                .body(String::new())
                .unwrap();
            let res = sender.send_request(req).await.unwrap();
            assert_eq!(res.version(), stackway::http::Version::HTTP_2);
            let body = http_body_util::BodyExt::collect(res.into_body())
                .await
                .unwrap()
                .to_bytes();
            assert_eq!(body, "<h1>Hello, h2!</h1>");
        });
}

#[test]
fn body_limit_gives_413() {
    let server = Stackway::serve(&["--mount", "/=hello", "--max-body-size", "4"]);
    let mut conn = Conn::open(server.addr);
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(conn.read_response().status, 413);
}

#[test]
fn a_slow_client_is_cut_off_while_others_are_served() {
    let server = Stackway::serve(&["--mount", "/=hello", "--header-timeout", "0.5"]);
    let mut slow = Conn::open(server.addr);
    slow.send(b"GET / HTTP/1.1\r\nHo");
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(100));
        slow.send(b"s");
        assert_eq!(Conn::open(server.addr).get("/fast").status, 200);
    }
    assert!(
        slow.is_closed(),
        "the slow client still holds its connection"
    );
}

#[test]
fn sigterm_shuts_down_gracefully_and_exits_0() {
    let mut server = Stackway::serve(&["--mount", "/=hello", "--access-log"]);
    let mut conn = Conn::open(server.addr);
    assert_eq!(conn.get("/before").status, 200);
    server.signal("-TERM");
    assert!(server.wait().success());
    assert!(conn.is_closed());
    let log = server.stderr();
    assert!(log.contains(r#""GET /before HTTP/1.1" 200 23"#), "{log}");
}

#[test]
fn sigterm_lets_the_response_in_flight_finish() {
    let mut server = Stackway::serve(&["--mount", "/=demo"]);
    let stream = std::net::TcpStream::connect(server.addr).unwrap();
    // Pipeline more responses than the socket buffers hold, and read none yet:
    // the server is then blocked in the middle of writing one.
    let request = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "x".repeat(32 * 1024)
    );
    let mut writer = stream.try_clone().unwrap();
    let sending = std::thread::spawn(move || {
        for _ in 0..400 {
            if std::io::Write::write_all(&mut writer, request.as_bytes()).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    server.signal("-TERM");
    let mut conn = Conn {
        reader: BufReader::new(stream),
    };
    let mut complete = 0;
    while let Some(res) = conn.next_response() {
        assert_eq!(res.status, 200);
        assert!(res.text().contains("HTTP_X_BIG=xxxx"), "a whole demo page");
        complete += 1;
    }
    assert!(
        (1..400).contains(&complete),
        "{complete} responses: shutdown should end the pipeline early"
    );
    drop(conn);
    assert!(server.wait().success());
    sending.join().unwrap();
}

#[test]
fn sigint_exits_0_too() {
    let mut server = Stackway::serve(&["--mount", "/=hello"]);
    server.signal("-INT");
    assert_eq!(server.wait().code(), Some(0));
}

#[test]
fn access_log_writes_common_log_format() {
    let mut server = Stackway::serve(&["--mount", "/=hello", "--access-log"]);
    Conn::open(server.addr).get("/x%20y?q=1");
    let mut head = Conn::open(server.addr);
    head.send(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(head.read_head().header("content-length"), Some("18"));
    server.signal("-TERM");
    server.wait();
    let log = server.stderr();
    let lines: Vec<_> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    // 127.0.0.1 - - [21/Nov/2026:10:04:59 +0000] "GET /x%20y?q=1 HTTP/1.1" 200 20
    let first = lines.iter().find(|l| l.contains("GET")).unwrap();
    assert!(first.starts_with("127.0.0.1 - - ["), "{first}");
    assert!(first.contains(" +0000] "), "{first}");
    assert!(
        first.ends_with(r#""GET /x%20y?q=1 HTTP/1.1" 200 20"#),
        "{first}"
    );
    let head = lines.iter().find(|l| l.contains("HEAD")).unwrap();
    assert!(head.ends_with(r#""HEAD /h HTTP/1.1" 200 -"#), "{head}");
}

#[test]
fn help_lists_every_flag_with_its_default() {
    let (code, help, _) = run(&["serve", "--help"]);
    assert_eq!(code, 0);
    for (flag, default) in [
        ("--bind", "[default: 127.0.0.1:8000]"),
        ("--mount", "repeatable"),
        ("--static", "repeatable"),
        ("--workers", "[default: one per core]"),
        ("--processes", "[default: none, this process serves alone]"),
        ("--max-requests", "[default: never]"),
        ("--access-log", "[default: off]"),
        ("--header-timeout", "[default: 30]"),
        ("--idle-timeout", "[default: 60]"),
        ("--grace-period", "[default: 30]"),
        ("--max-body-size", "[default: 1073741824]"),
        ("--max-header-size", "[default: 65536]"),
        ("--max-connections", "[default: 10000]"),
    ] {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(flag))
            .unwrap_or_else(|| panic!("{flag} missing\n{help}"));
        assert!(line.contains(default), "{flag}: {line}");
    }
}

#[test]
fn bad_flags_exit_2_with_a_clear_message() {
    // These run on the default address; holding it proves that every flag is
    // checked before the port is taken (if another process holds it, so much the better).
    let _port_8000 = std::net::TcpListener::bind("127.0.0.1:8000");
    let cases = [
        (vec!["serve", "--mount", "hello"], "expected PREFIX=SPEC"),
        (
            vec!["serve", "--mount", "x=hello"],
            "a prefix starts with /",
        ),
        (
            vec!["serve", "--mount", "/a=hello", "--mount", "/a/=demo"],
            r#"cannot mount at "/a/": something is mounted there already"#,
        ),
        (vec!["serve", "--mount", "/files/*=hello"], "literal"),
        (vec!["serve", "--mount", "/x=nope"], "unknown app \"nope\""),
        (
            vec!["serve", "--rate-limit", "10/s"],
            "\"10/s\": expected a rate (10r/s, 30r/m)",
        ),
        (
            vec!["serve", "--access", "allow everyone"],
            "\"everyone\": expected an address",
        ),
        (
            vec!["serve", "--forward-auth", "auth:9000/verify"],
            "\"auth:9000/verify\": expected http://HOST:PORT/PATH",
        ),
        (
            vec!["serve", "--error-page", "200=/x.html"],
            "\"200\": expected a status from 300 to 599",
        ),
        (
            vec!["serve", "--error-page", "502=/no/such/page.html"],
            "error page /no/such/page.html: No such file",
        ),
        (
            vec!["serve", "--basic-auth", "/no/such/file"],
            "/no/such/file: No such file",
        ),
        (
            vec!["serve", "--trusted-proxy", "10.0.0.0/8"],
            "trusted_proxies needs proxy_fix",
        ),
        (
            vec!["serve", "--cache-dir", "/tmp"],
            "cache_dir needs cache, the size to keep there",
        ),
        (
            vec!["serve", "--cache", "1MiB", "--cache-dir", "/proc/no"],
            "cache directory /proc/no:",
        ),
        (
            vec!["serve", "--mount", "/x=http://127.0.0.1"],
            r#"cannot proxy to "http://127.0.0.1": say the port"#,
        ),
        (
            vec![
                "serve",
                "--mount",
                "/x=http+srv://_http._tcp.api.internal:80",
            ],
            "an SRV record gives the port",
        ),
        (
            vec!["serve", "--mount", "/x=http://127.0.0.1:1,unix:run.sock"],
            "a unix socket path must be absolute",
        ),
        (
            vec!["serve", "--mount", "/=wsgi:no_such_module:app"],
            "No module named 'no_such_module'",
        ),
        (
            vec!["serve", "--mount", "/=wsgi:"],
            "expected wsgi:MODULE:CALLABLE",
        ),
        (
            vec![
                "serve",
                "--pythonpath",
                "/no/such/dir",
                "--mount",
                "/=hello",
            ],
            "/no/such/dir",
        ),
        (
            vec!["serve", "--proxy-read-timeout", "0"],
            "positive number of seconds",
        ),
        (vec!["serve", "--static", "public"], "expected PREFIX=PATH"),
        (
            vec!["serve", "--static", "/s=/no/such/dir"],
            r#"cannot export at "/s": /no/such/dir: No such file or directory"#,
        ),
        (vec!["serve", "--static", "s=."], "a prefix starts with /"),
        (vec!["serve", "--static", "/files/*=."], "literal"),
        (
            vec!["serve", "--static", "/s=.", "--static", "/s/=."],
            r#"cannot export at "/s/": something is exported there already"#,
        ),
        (vec!["serve", "--bind", "nonsense"], "expected HOST:PORT"),
        (vec!["serve", "--workers", "0"], "--workers"),
        (
            vec!["serve", "--header-timeout", "0"],
            "positive number of seconds",
        ),
        (
            vec!["serve", "--max-header-size", "100"],
            "--max-header-size",
        ),
        (vec!["serve", "--max-connections", "0"], "--max-connections"),
        (
            vec!["serve", "--send-timeout", "0"],
            "positive number of seconds",
        ),
        (
            vec!["serve", "--body-timeout", "soon"],
            "positive number of seconds",
        ),
        (vec!["serve", "--frobnicate"], "unexpected argument"),
        (vec!["launch"], "unrecognized subcommand"),
    ];
    for (args, message) in cases {
        let (code, _, err) = run(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
    }
}

#[test]
fn a_port_in_use_exits_1_with_a_clear_message() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, out, err) = run(&["serve", "--bind", &addr, "--mount", "/=hello"]);
    assert_eq!(code, 1);
    assert_eq!(out, "", "nothing claims to be listening");
    assert!(
        err.starts_with(&format!("stackway: cannot listen on {addr}: ")),
        "{err}"
    );
    assert!(err.to_lowercase().contains("in use"), "{err}");
}
