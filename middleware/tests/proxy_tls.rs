//! The proxy to `https://` upstreams over real sockets: stackway's own TLS
//! listener (which offers HTTP/2 by ALPN) and Python's `ssl` server (which
//! asks for a client certificate), with certificates from a test CA.

use stackway_test_support as support;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use stackway::server::{Listener, Tls};
use stackway::{Body, IntoResponse, Request, Server};
use stackway_middleware::proxy::UpstreamTls;
use stackway_middleware::{Lint, Proxy};
use support::http::Conn;
use support::tls::Ca;
use support::{Running, server};

/// An upstream that says how it was asked: its HTTP version and target, or
/// for a WebSocket upgrade, 101 and then an echo of what it is sent.
async fn upstream_app(mut req: Request) -> stackway::Response {
    if req.headers().contains_key("upgrade") {
        let upgraded = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = upgraded.await else { return };
            let (mut read, mut write) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
            let _ = tokio::io::copy(&mut read, &mut write).await;
        });
        let mut res = stackway::Response::new(Body::empty());
        *res.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
        res.headers_mut()
            .insert("upgrade", "websocket".parse().unwrap());
        res.headers_mut()
            .insert("connection", "upgrade".parse().unwrap());
        return res;
    }
    format!("{:?} {}", req.version(), req.uri()).into_response()
}

/// A stackway upstream over TLS with the certificate `name` from `ca`.
fn tls_upstream(ca: &Ca, name: &str, names: &[&str]) -> Running {
    let (cert, key) = ca.server(name, names);
    let tls = Tls::from_pem_files(cert, key).unwrap();
    let listener = Listener::bind("127.0.0.1:0").unwrap().tls(tls);
    Running::start(Server::new([listener]).unwrap().workers(1), upstream_app)
}

fn front(proxy: Proxy) -> Running {
    Running::start(server(), Lint::strict(proxy))
}

#[test]
fn an_https_upstream_is_checked_against_the_ca_and_speaks_h2_by_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "internal");
    let up = tls_upstream(&ca, "upstream", &["localhost"]);
    let port = up.addr.port();
    let trusted = UpstreamTls::from_ca_file(&ca.cert).unwrap();
    let front = front(Proxy::to(&format!("https://localhost:{port}/v1")).tls(trusted));
    let mut conn = Conn::open(front.addr);
    let res = conn.get("/users?page=2");
    assert_eq!(res.status, 200);
    // The upstream offered h2 and got it; the client's HTTP/1.1 is its own hop's.
    assert_eq!(
        res.text(),
        format!("HTTP/2.0 https://localhost:{port}/v1/users?page=2")
    );
    // Kept: a second request on the pooled connection.
    assert_eq!(conn.get("/again").status, 200);
}

#[test]
fn an_upstream_certificate_for_another_name_or_from_an_unknown_ca_is_a_502() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "internal");
    let up = tls_upstream(&ca, "elsewhere", &["elsewhere.example"]);
    let port = up.addr.port();
    let trusted = UpstreamTls::from_ca_file(&ca.cert).unwrap();
    let wrong_name = front(Proxy::to(&format!("https://localhost:{port}")).tls(trusted));
    assert_eq!(Conn::open(wrong_name.addr).get("/").status, 502);
    // The system's roots by default: the test CA is not among them.
    let up = tls_upstream(&ca, "upstream", &["localhost"]);
    let port = up.addr.port();
    let unknown_ca = front(Proxy::to(&format!("https://localhost:{port}")));
    assert_eq!(Conn::open(unknown_ca.addr).get("/").status, 502);
}

#[test]
fn a_self_signed_certificate_that_says_it_is_a_ca_is_trusted_as_it_is_by_name() {
    // What `openssl req -x509` makes, and nginx accepts when trusted so.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = support::tls::self_signed_ca(dir.path(), "upstream", &["localhost"]);
    let tls = Tls::from_pem_files(&cert, &key).unwrap();
    let listener = Listener::bind("127.0.0.1:0").unwrap().tls(tls);
    let up = Running::start(Server::new([listener]).unwrap().workers(1), upstream_app);
    let port = up.addr.port();
    let trusted = || UpstreamTls::from_ca_file(&cert).unwrap();
    let by_name = front(Proxy::to(&format!("https://localhost:{port}")).tls(trusted()));
    assert_eq!(Conn::open(by_name.addr).get("/").status, 200);
    // Trusted as it is, still only for the names it holds.
    let by_address = front(Proxy::to(&format!("https://127.0.0.1:{port}")).tls(trusted()));
    assert_eq!(Conn::open(by_address.addr).get("/").status, 502);
    // Not trusted at all: the system's roots.
    let unknown = front(Proxy::to(&format!("https://localhost:{port}")));
    assert_eq!(Conn::open(unknown.addr).get("/").status, 502);
}

#[test]
fn a_websocket_to_an_https_upstream_goes_over_http11() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "internal");
    let up = tls_upstream(&ca, "upstream", &["localhost"]);
    let trusted = UpstreamTls::from_ca_file(&ca.cert).unwrap();
    let url = format!("https://localhost:{}", up.addr.port());
    let front = front(Proxy::to(&url).tls(trusted));
    let mut conn = Conn::open(front.addr);
    // An ordinary request first: the pool's connection to the upstream is h2.
    assert!(conn.get("/").text().starts_with("HTTP/2.0"));
    conn.send(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    assert_eq!(conn.read_head().status, 101);
    conn.send(b"\x81\x05hello");
    let mut echoed = [0; 7];
    conn.reader.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"\x81\x05hello");
}

/// Python's HTTPS server asking for a client certificate signed by `ca`,
/// answering with the client's common name; its port.
fn python_mtls_upstream(dir: &Path, ca: &Ca) -> Option<(Child, SocketAddr)> {
    if !support::external::command("python3", "Debian's python3") {
        return None;
    }
    let (cert, key) = ca.server("python", &["localhost"]);
    let script = r#"
import http.server, ssl, sys
cert, key, ca = sys.argv[1:4]
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        subject = dict(item[0] for item in self.connection.getpeercert()["subject"])
        body = ("client " + subject["commonName"]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
context.load_verify_locations(ca)
context.verify_mode = ssl.CERT_REQUIRED
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .arg(&cert)
        .arg(&key)
        .arg(&ca.cert)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    let port: u16 = port.trim().parse().expect("the server's port");
    Some((child, SocketAddr::from(([127, 0, 0, 1], port))))
}

#[test]
fn mutual_tls_shows_the_client_certificate_to_an_upstream_that_asks() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "internal");
    let Some((mut python, addr)) = python_mtls_upstream(dir.path(), &ca) else {
        return;
    };
    let url = format!("https://localhost:{}", addr.port());
    let (cert, key) = ca.client("stackway-proxy");
    let with_cert = UpstreamTls::from_ca_file(&ca.cert)
        .unwrap()
        .client_certificate(&cert, &key)
        .unwrap();
    let front_with = front(Proxy::to(&url).tls(with_cert));
    let res = Conn::open(front_with.addr).get("/");
    assert_eq!(res.status, 200);
    assert_eq!(res.text(), "client stackway-proxy");
    // Without one, the upstream ends the handshake: 502.
    let without = UpstreamTls::from_ca_file(&ca.cert).unwrap();
    let front_without = front(Proxy::to(&url).tls(without));
    assert_eq!(Conn::open(front_without.addr).get("/").status, 502);
    python.kill().unwrap();
    python.wait().unwrap();
}

#[test]
fn unusable_certificate_files_are_refused_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let e = UpstreamTls::from_ca_file(&missing).unwrap_err();
    assert!(
        e.to_string().starts_with(&missing.display().to_string()),
        "{e}"
    );
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let e = UpstreamTls::from_ca_file(&empty).unwrap_err();
    assert!(e.to_string().contains("no certificate"), "{e}");
    let ca = Ca::new(dir.path(), "internal");
    let (cert, _) = ca.client("proxy");
    let (_, other_key) = ca.client("other");
    let e = UpstreamTls::system_roots()
        .client_certificate(&cert, &other_key)
        .unwrap_err();
    assert!(e.to_string().contains("other.key"), "{e}");
}
