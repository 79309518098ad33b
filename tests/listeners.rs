//! Listeners: unix sockets, the PROXY protocol, TLS (ALPN, reloads, the
//! handshake timeout), and draining with a health check, over real sockets.

use stackway_test_support as support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use stackway::server::{ListenAddr, Listener, Tls};
use stackway::{Body, Server};
use stackway_middleware::Lint;
use support::Running;
use support::http::Conn;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// Sends `request` on a new connection and reads until the server closes.
fn exchange(mut stream: impl Read + Write, request: &[u8]) -> String {
    stream.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

const GET_CLOSE: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

fn unix_stream(path: &Path) -> UnixStream {
    let stream = UnixStream::connect(path).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

fn tcp_stream(addr: std::net::SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

#[test]
fn a_unix_socket_serves_beside_tcp_with_remote_addr_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.sock");
    let unix = Listener::bind_unix(&path).unwrap().mode(0o660).unwrap();
    assert_eq!(unix.local_addr(), &ListenAddr::Unix(path.clone()));
    let server = Server::new([Listener::bind("127.0.0.1:0").unwrap(), unix])
        .unwrap()
        .workers(1);
    assert_eq!(
        server.local_addrs()[1].to_string(),
        format!("unix:{}", path.display())
    );
    let running = Running::start(server, Lint::strict(stackway::apps::demo));

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660);
    let page = exchange(unix_stream(&path), GET_CLOSE);
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        !page.contains("REMOTE_ADDR="),
        "gunicorn leaves it empty: {page}"
    );
    let page = exchange(tcp_stream(running.addr), GET_CLOSE);
    assert!(page.contains("REMOTE_ADDR=127.0.0.1"), "{page}");

    // Another server cannot take a socket someone listens on...
    let taken = Listener::bind_unix(&path).unwrap_err();
    assert!(taken.is_bind(), "{taken}");
    running.stop().unwrap();
    // ...but replaces one nobody listens on any more.
    assert!(path.exists(), "the file stays; the next bind replaces it");
    let again = Listener::bind_unix(&path).unwrap();
    drop(again);
    // A path that is not a socket is not removed.
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "data").unwrap();
    assert!(Listener::bind_unix(&file).unwrap_err().is_bind());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "data");
}

#[test]
fn the_proxy_protocol_names_the_client_and_refuses_garbage() {
    let listener = Listener::bind("127.0.0.1:0").unwrap().proxy_protocol(true);
    let server = Server::new([listener]).unwrap().workers(1);
    let running = Running::start(server, Lint::strict(stackway::apps::demo));
    let with = |header: &[u8]| exchange(tcp_stream(running.addr), &[header, GET_CLOSE].concat());

    let page = with(b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 80\r\n");
    assert!(page.contains("REMOTE_ADDR=203.0.113.7\n"), "{page}");
    assert!(page.contains("REMOTE_PORT=51234\n"), "{page}");
    let page = with(b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 80\r\n");
    assert!(page.contains("REMOTE_ADDR=2001:db8::7\n"), "{page}");

    let v2 = |command: u8, family: u8, addresses: &[u8]| {
        let len = u16::try_from(addresses.len()).unwrap().to_be_bytes();
        [
            b"\r\n\r\n\0\r\nQUIT\n",
            &[command, family][..],
            &len,
            addresses,
        ]
        .concat()
    };
    let ipv4 = [198, 51, 100, 9, 10, 0, 0, 1, 0x1F, 0x90, 0, 80];
    let page = with(&v2(0x21, 0x11, &ipv4));
    assert!(page.contains("REMOTE_ADDR=198.51.100.9\n"), "{page}");
    assert!(page.contains("REMOTE_PORT=8080\n"), "{page}");
    // HTTP/2 with prior knowledge, its preface sent with the header: the
    // server answers with its SETTINGS frame.
    let mut stream = tcp_stream(running.addr);
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
    stream
        .write_all(&[&v2(0x21, 0x11, &ipv4), &preface[..]].concat())
        .unwrap();
    let mut frame = [0; 9];
    stream.read_exact(&mut frame).unwrap();
    assert_eq!(frame[3], 0x04, "a SETTINGS frame: {frame:?}");
    drop(stream);
    // LOCAL (a balancer's health check): the connection's own peer stands.
    let page = with(&v2(0x20, 0x00, &[]));
    assert!(page.contains("REMOTE_ADDR=127.0.0.1\n"), "{page}");
    let page = with(b"PROXY UNKNOWN\r\n");
    assert!(page.contains("REMOTE_ADDR=127.0.0.1\n"), "{page}");

    // No header, or a broken one: closed without a byte of HTTP.
    for bad in [
        &b""[..],
        b"PROXY TCP4 1.2.3.4\r\n",
        b"PROXY SOMETHING ELSE\r\n",
    ] {
        assert_eq!(with(bad), "", "{:?}", String::from_utf8_lossy(bad));
    }
    running.stop().unwrap();
}

#[test]
fn a_proxy_protocol_header_sent_with_a_uwsgi_packet_and_its_body_loses_no_byte() {
    // The header, the packet and its body in one write: the header's reading
    // takes more than the header, and hands the rest to the packet's.
    let listener = (Listener::bind("127.0.0.1:0").unwrap())
        .proxy_protocol(true)
        .uwsgi(true);
    let app = |req: stackway::Request| async move {
        let client = stackway::RequestExt::remote_addr(&req);
        let body = req.into_body().collect(usize::MAX).await.unwrap();
        format!("{client:?} read {}", body.len())
    };
    let server = Server::new([listener]).unwrap().workers(1);
    let running = Running::start(server, Lint::strict(app));
    let body = vec![b'x'; 20_000];
    let packet = support::http::uwsgi_packet(&[
        ("REQUEST_METHOD", "POST"),
        ("PATH_INFO", "/"),
        ("HTTP_HOST", "x"),
        ("CONTENT_LENGTH", "20000"),
    ]);
    let header = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 80\r\n";
    let answer = exchange(
        tcp_stream(running.addr),
        &[&header[..], &packet, &body].concat(),
    );
    assert!(
        answer.ends_with("Some(203.0.113.7:51234) read 20000"),
        "{answer}"
    );
    running.stop().unwrap();
}

/// A certificate for `localhost`: its PEM files and its DER, to trust.
fn certificate(
    dir: &Path,
    name: &str,
) -> (
    std::path::PathBuf,
    std::path::PathBuf,
    CertificateDer<'static>,
) {
    let (cert, key, der) = support::tls::certificate(dir, name);
    (cert, key, CertificateDer::from(der))
}

/// A TLS client trusting `roots`, offering `alpn`.
fn client(roots: &[&CertificateDer<'static>], alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add((*root).clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

type Tls13Stream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(
    connector: &tokio_rustls::TlsConnector,
    addr: std::net::SocketAddr,
) -> std::io::Result<Tls13Stream> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// GET `path` over `stream` with the protocol ALPN chose; the response.
async fn get(
    stream: Tls13Stream,
    path: &str,
) -> (http::Version, http::Response<hyper::body::Incoming>) {
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let req = http::Request::get(format!("https://localhost{path}"))
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let io = TokioIo::new(stream);
    let res = if h2 {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    };
    (res.version(), res)
}

#[test]
fn tls_offers_h2_and_http11_by_alpn_with_the_https_scheme() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, der) = certificate(dir.path(), "a");
    let tls = Tls::from_pem_files(&cert, &key).unwrap();
    let listener = Listener::bind("127.0.0.1:0").unwrap().tls(tls);
    assert!(
        listener
            .local_addr()
            .to_string()
            .starts_with("https://127.0.0.1:")
    );
    let running = Running::start(
        Server::new([listener]).unwrap().workers(1),
        Lint::strict(stackway::apps::demo),
    );
    let addr = running.addr;
    support::run(async move {
        for (alpn, version) in [
            (&[&b"h2"[..], b"http/1.1"][..], http::Version::HTTP_2),
            (&[&b"http/1.1"[..]][..], http::Version::HTTP_11),
            (&[][..], http::Version::HTTP_11),
        ] {
            let stream = connect(&client(&[&der], alpn), addr).await.unwrap();
            let (got, res) = get(stream, "/").await;
            assert_eq!((got, res.status().as_u16()), (version, 200), "{alpn:?}");
            let page = res.into_body().collect().await.unwrap().to_bytes();
            let page = String::from_utf8_lossy(&page);
            assert!(page.contains("REQUEST_SCHEME=https\n"), "{page}");
        }
        // A client that does not trust the certificate gets no response.
        let stranger = certificate(dir.path(), "stranger").2;
        assert!(connect(&client(&[&stranger], &[]), addr).await.is_err());
    });
    running.stop().unwrap();
}

/// `curl` over TLS to `localhost` at `addr`, trusting `ca`, showing `client`
/// (a certificate and key) if given: its exit code and body.
fn curl_tls(
    addr: std::net::SocketAddr,
    ca: &Path,
    client: Option<&(std::path::PathBuf, std::path::PathBuf)>,
) -> (i32, String) {
    let mut command = std::process::Command::new("curl");
    command
        .args(["-s", "--cacert", ca.to_str().unwrap()])
        .arg("--resolve")
        .arg(format!("localhost:{}:127.0.0.1", addr.port()));
    if let Some((cert, key)) = client {
        command.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let out = command
        .arg(format!("https://localhost:{}/", addr.port()))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn mutual_tls_asks_curl_for_a_certificate_and_apps_see_whose_it_is() {
    if !support::external::command("curl", "curl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = support::tls::Ca::new(dir.path(), "clients");
    let server_files = ca.server("localhost", &["localhost"]);
    let alice = ca.client("alice");
    let elsewhere = tempfile::tempdir().unwrap();
    let mallory = support::tls::Ca::new(elsewhere.path(), "other").client("mallory");
    let serve = |required: bool| {
        let tls = Tls::from_pem_files(&server_files.0, &server_files.1)
            .unwrap()
            .client_ca(&ca.cert, required)
            .unwrap();
        let listener = Listener::bind("127.0.0.1:0").unwrap().tls(tls);
        Running::start(
            Server::new([listener]).unwrap().workers(1),
            Lint::strict(stackway::apps::demo),
        )
    };

    let required = serve(true);
    let (code, env) = curl_tls(required.addr, &ca.cert, Some(&alice));
    assert_eq!(code, 0, "{env}");
    for line in [
        "SSL_CLIENT_VERIFY=SUCCESS\n",
        "SSL_CLIENT_S_DN=CN=alice\n",
        "SSL_CLIENT_I_DN=CN=clients test CA\n",
    ] {
        assert!(env.contains(line), "{line} in {env}");
    }
    let fingerprint = env
        .lines()
        .find_map(|l| l.strip_prefix("SSL_CLIENT_FINGERPRINT="))
        .unwrap();
    assert!(fingerprint.len() == 40 && fingerprint.bytes().all(|b| b.is_ascii_hexdigit()));
    // Without a certificate, or with one another CA signed: no connection.
    assert_ne!(curl_tls(required.addr, &ca.cert, None).0, 0);
    assert_ne!(curl_tls(required.addr, &ca.cert, Some(&mallory)).0, 0);

    let optional = serve(false);
    let (code, env) = curl_tls(optional.addr, &ca.cert, None);
    assert_eq!(code, 0);
    assert!(
        env.contains("SSL_CLIENT_VERIFY=NONE\n") && !env.contains("SSL_CLIENT_S_DN"),
        "{env}"
    );
    assert!(
        curl_tls(optional.addr, &ca.cert, Some(&alice))
            .1
            .contains("SSL_CLIENT_S_DN=CN=alice\n")
    );
}

#[test]
fn a_certificate_reload_serves_new_connections_and_keeps_open_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, old) = certificate(dir.path(), "live");
    let tls = Tls::from_pem_files(&cert, &key).unwrap();
    let listener = Listener::bind("127.0.0.1:0").unwrap().tls(tls.clone());
    // 16 MiB in 256 chunks: far more than the socket buffers hold.
    let download = |_req: stackway::Request| async {
        let chunks =
            (0..256u32).map(|n| Ok::<_, std::io::Error>(Bytes::from(vec![(n % 251) as u8; 65536])));
        stackway::Response::new(Body::from_stream(futures_util::stream::iter(chunks)))
    };
    let running = Running::start(
        Server::new([listener]).unwrap().workers(1),
        Lint::strict(download),
    );
    let addr = running.addr;
    support::run(async move {
        let stream = connect(&client(&[&old], &[b"http/1.1"]), addr)
            .await
            .unwrap();
        let (_, res) = get(stream, "/").await;
        let mut body = res.into_body();
        let mut received = 0usize;
        while received < 1 << 20 {
            received += body
                .frame()
                .await
                .unwrap()
                .unwrap()
                .into_data()
                .unwrap()
                .len();
        }

        // Mid-download, the files change and the server reloads them.
        let (new_cert, new_key, new) = certificate(dir.path(), "next");
        std::fs::rename(&new_cert, &cert).unwrap();
        std::fs::rename(&new_key, &key).unwrap();
        tls.reload().unwrap();

        let fresh = connect(&client(&[&new], &[]), addr).await.unwrap();
        assert_eq!(fresh.get_ref().1.peer_certificates().unwrap()[0], new);
        assert!(
            connect(&client(&[&old], &[]), addr).await.is_err(),
            "the old certificate is gone"
        );
        let (_, res) = get(fresh, "/").await;
        assert_eq!(res.status(), 200);

        // The download begun before the reload finishes, every byte intact.
        let mut chunk_no = received / 65536;
        let mut rest = Vec::new();
        while let Some(frame) = body.frame().await {
            rest.extend_from_slice(&frame.unwrap().into_data().unwrap());
        }
        received += rest.len();
        assert_eq!(received, 256 * 65536);
        assert!(rest.chunks(65536).all(|c| {
            chunk_no += 1;
            c.iter().all(|&b| usize::from(b) == (chunk_no - 1) % 251)
        }));

        // A bad file keeps the certificate in use.
        std::fs::write(&key, "not a key").unwrap();
        let failed = tls.reload().unwrap_err();
        assert!(failed.is_tls(), "{failed}");
        assert!(connect(&client(&[&new], &[]), addr).await.is_ok());
    });
    running.stop().unwrap();
}

#[test]
fn loading_names_the_file_that_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = certificate(dir.path(), "a");
    let (_, other_key, _) = certificate(dir.path(), "b");
    let missing = dir.path().join("missing.pem");
    for (chain, key, says) in [
        (&missing, &key, "missing.pem"),
        (&key, &key, "a.key: no certificate"),
        (&cert, &cert, "a.crt"),
        (&cert, &other_key, "b.key"),
    ] {
        let e = Tls::from_pem_files(chain, key).unwrap_err();
        let cause = std::error::Error::source(&e).unwrap().to_string();
        assert!(e.is_tls() && cause.contains(says), "{says}: {cause}");
    }
}

#[test]
fn a_connection_that_says_nothing_is_closed_after_the_handshake_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = certificate(dir.path(), "a");
    let tls = Tls::from_pem_files(&cert, &key).unwrap();
    let server = Server::new([
        Listener::bind("127.0.0.1:0").unwrap().tls(tls),
        Listener::bind("127.0.0.1:0").unwrap().proxy_protocol(true),
    ])
    .unwrap()
    .workers(1)
    .handshake_timeout(Duration::from_millis(300));
    let ListenAddr::Tcp { addr: proxied, .. } = server.local_addrs()[1] else {
        unreachable!()
    };
    let running = Running::start(server, stackway::apps::hello);
    for addr in [running.addr, proxied] {
        let started = Instant::now();
        let mut conn = Conn::open(addr);
        // Half a PROXY header, then silence.
        if addr == proxied {
            conn.send(b"PROXY TCP4 ");
        }
        conn.assert_closed_after(started, Duration::from_millis(250));
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    running.stop().unwrap();
}

#[test]
fn draining_says_503_on_the_health_path_and_serves_with_connection_close() {
    let server = support::server()
        .health_path("/healthz")
        .drain_delay(Duration::from_millis(1500));
    let mut running = Running::start(server, Lint::strict(stackway::apps::hello));
    let addr = running.addr;
    let mut kept = Conn::open(addr);
    let res = kept.get("/healthz");
    assert_eq!((res.status, res.text().as_str()), (200, "ok\n"));
    assert_eq!(res.header("connection"), None);

    running.begin_shutdown();
    std::thread::sleep(Duration::from_millis(200));
    // The open connection is served, and told it is not kept.
    let res = kept.get("/healthz");
    assert_eq!((res.status, res.text().as_str()), (503, "draining\n"));
    assert_eq!(res.header("connection"), Some("close"));
    assert!(kept.is_closed());
    // New connections are still accepted and served.
    let res = Conn::open(addr).get("/");
    assert_eq!(res.status, 200);
    assert_eq!(res.header("connection"), Some("close"));
    // Once the delay has passed, the server stops accepting.
    running.stop().unwrap();
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn draining_sends_http2_clients_a_goaway_and_serves_new_connections() {
    let server = support::server().drain_delay(Duration::from_millis(1500));
    let mut running = Running::start(server, Lint::strict(stackway::apps::hello));
    let addr = running.addr;
    let h2c = |addr| async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(tcp),
        )
        .await
        .unwrap();
        (send, tokio::spawn(conn))
    };
    let request = || {
        http::Request::get(format!("http://{addr}/"))
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let running = support::run(async move {
        let (mut send, conn) = h2c(addr).await;
        assert_eq!(send.send_request(request()).await.unwrap().status(), 200);
        running.begin_shutdown();
        // GOAWAY: the client's connection ends without an error...
        let ended = tokio::time::timeout(Duration::from_secs(1), conn).await;
        assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
        // ...and a new one is served while the drain lasts.
        let (mut send, _conn) = h2c(addr).await;
        assert_eq!(send.send_request(request()).await.unwrap().status(), 200);
        running
    });
    let stopping = Instant::now();
    running.stop().unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "{:?}",
        stopping.elapsed()
    );
}

#[test]
fn reuse_port_lets_two_servers_share_a_port() {
    let first = Listener::bind_reuse_port("127.0.0.1:0").unwrap();
    let ListenAddr::Tcp { addr, .. } = *first.local_addr() else {
        unreachable!()
    };
    let second = Listener::bind_reuse_port(addr).unwrap();
    let taken = Listener::bind(addr).unwrap_err();
    assert!(
        taken.is_bind(),
        "without SO_REUSEPORT the port is taken: {taken}"
    );
    let named = |name: &'static str| move |_req: stackway::Request| async move { name };
    let a = Running::start(Server::new([first]).unwrap().workers(1), named("a"));
    let b = Running::start(Server::new([second]).unwrap().workers(1), named("b"));

    // The kernel spreads new connections over both.
    let seen: std::collections::BTreeSet<String> =
        (0..64).map(|_| Conn::open(addr).get("/").text()).collect();
    assert_eq!(seen, ["a", "b"].map(String::from).into());
    // One goes; the other goes on serving the port.
    a.stop().unwrap();
    for _ in 0..16 {
        assert_eq!(Conn::open(addr).get("/").text(), "b");
    }
    b.stop().unwrap();
}
