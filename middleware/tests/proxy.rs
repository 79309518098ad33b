//! The proxy over real sockets: real upstream servers on loopback (stackway's
//! own, and raw sockets for misbehaving ones), a real client in front.

use stackway_test_support as support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use stackway::{Body, IntoResponse, Request, RequestExt};
use stackway_middleware::proxy::{Balance, HashKey};
use stackway_middleware::{Dispatcher, Lint, Proxy};
use support::http::Conn;
use support::{Running, server};

/// An upstream that describes the request it got: its target, then its
/// headers, one `name: value` a line, sorted.
async fn describe(req: Request) -> stackway::Response {
    let mut lines: Vec<String> = req
        .headers()
        .iter()
        .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap_or("?")))
        .collect();
    lines.sort();
    format!("{}\n{}\n", req.uri(), lines.join("\n")).into_response()
}

fn header<'a>(described: &'a str, name: &str) -> Option<&'a str> {
    described
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
}

/// A stackway upstream running `app`.
fn upstream(app: impl stackway::App) -> Running {
    Running::start(server(), app)
}

/// The proxy stack, served on a free port, checked by Lint (a finding panics,
/// which fails the request).
fn front(app: impl stackway::App) -> Running {
    Running::start(server().workers(2), Lint::strict(app))
}

#[test]
fn the_upstream_sees_its_base_then_path_info_raw_with_the_query() {
    let up = upstream(describe);
    let url = format!("http://{}/v1", up.addr);
    let inner = Dispatcher::default().mount("/api", Proxy::to(&url));
    let proxy = front(Dispatcher::default().mount("/outer", inner));
    let mut conn = Conn::open(proxy.addr);
    let cases = [
        ("/outer/api/users?page=2", "/v1/users?page=2"),
        (
            "/outer/api/a%2Fb/%E2%82%AC?q=%20",
            "/v1/a%2Fb/%E2%82%AC?q=%20",
        ),
        ("/outer/api", "/v1"),
        ("/outer/api/", "/v1/"),
        ("/outer/api?x", "/v1?x"),
        ("/outer/api//x", "/v1//x"),
    ];
    for (path, seen) in cases {
        let res = conn.get(path);
        assert_eq!(res.status, 200, "{path}");
        assert_eq!(res.text().lines().next(), Some(seen), "{path}");
        assert_eq!(
            header(&res.text(), "x-forwarded-prefix"),
            Some("/outer/api")
        );
    }
    // At the root, with no base: the path as it came, and no prefix header.
    let at_root = front(Proxy::to(&format!("http://{}", up.addr)));
    let res = Conn::open(at_root.addr).get("/");
    assert_eq!(res.text().lines().next(), Some("/"));
    assert_eq!(header(&res.text(), "x-forwarded-prefix"), None);
    // `OPTIONS *` asks about the server as a whole, and the upstream is asked
    // the same, under a base too (`/v1/*` would be a resource of its own).
    let with_base = front(Proxy::to(&url));
    for proxy in [&at_root, &with_base] {
        let mut conn = Conn::open(proxy.addr);
        conn.send(b"OPTIONS * HTTP/1.1\r\nHost: shop.example\r\n\r\n");
        let res = conn.read_response();
        assert_eq!(res.status, 200);
        assert_eq!(res.text().lines().next(), Some("*"));
    }
}

#[test]
fn the_client_is_named_in_forwarded_headers() {
    let up = upstream(describe);
    let url = format!("http://{}", up.addr);
    let proxy = front(Dispatcher::default().mount("/api", Proxy::to(&url)));
    let mut conn = Conn::open(proxy.addr);
    conn.send(b"GET /api/x HTTP/1.1\r\nHost: shop.example:8443\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Host: evil.example\r\n\r\n");
    let text = conn.read_response().text();
    assert_eq!(
        header(&text, "x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(header(&text, "x-forwarded-proto"), Some("http"));
    assert_eq!(header(&text, "x-forwarded-host"), Some("shop.example:8443"));
    assert_eq!(
        header(&text, "x-forwarded-port"),
        Some(proxy.addr.port().to_string().as_str())
    );
    assert_eq!(header(&text, "x-forwarded-prefix"), Some("/api"));
    assert_eq!(header(&text, "host"), Some(up.addr.to_string().as_str()));
    assert_eq!(header(&text, "forwarded"), None);

    let proxy = front(Proxy::to(&url).preserve_host(true).forwarded(true));
    let mut conn = Conn::open(proxy.addr);
    conn.send(b"GET / HTTP/1.1\r\nHost: shop.example\r\nForwarded: for=192.0.2.1\r\n\r\n");
    let text = conn.read_response().text();
    assert_eq!(header(&text, "host"), Some("shop.example"));
    assert_eq!(
        header(&text, "forwarded"),
        Some("for=192.0.2.1, for=127.0.0.1;host=\"shop.example\";proto=http")
    );
}

#[test]
fn a_list_header_sent_in_several_lines_keeps_every_entry() {
    // Two fronts, each adding its line: the chain the upstream is told has
    // both, then this client (nginx's `$proxy_add_x_forwarded_for`); with
    // the first line alone, an app trusting its last two hops would take the
    // client's own first entry for them.
    let up = upstream(describe);
    let proxy = front(Proxy::to(&format!("http://{}", up.addr)).forwarded(true));
    let mut conn = Conn::open(proxy.addr);
    conn.send(
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 10.0.0.2\r\n\
          Forwarded: for=6.6.6.6\r\nForwarded: for=10.0.0.2\r\n\r\n",
    );
    let text = conn.read_response().text();
    assert_eq!(
        header(&text, "x-forwarded-for"),
        Some("6.6.6.6, 10.0.0.2, 127.0.0.1"),
        "{text}"
    );
    assert_eq!(
        header(&text, "forwarded"),
        Some("for=6.6.6.6, for=10.0.0.2, for=127.0.0.1;host=\"x\";proto=http"),
        "{text}"
    );
}

#[test]
fn hop_by_hop_headers_stay_on_their_hop() {
    let up = upstream(describe);
    let proxy = front(Proxy::to(&format!("http://{}", up.addr)));
    let mut conn = Conn::open(proxy.addr);
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: gzip\r\nProxy-Authorization: Basic eDp5\r\nUpgrade: h2c\r\nProxy: http://evil.example\r\nX_Forwarded_For: 6.6.6.6\r\nX_Kept: no\r\nX-Kept: yes\r\n\r\n");
    let text = conn.read_response().text();
    // `Proxy` is no hop's, but a CGI host behind the upstream would make it
    // HTTP_PROXY (httpoxy): it never passes either. Nor a name with `_`,
    // which a WSGI gateway behind the upstream would spell as it spells
    // the proxy's own `X-Forwarded-For` (nginx leaves them out too).
    for gone in [
        "x_forwarded_for",
        "x_kept",
        "x-secret",
        "keep-alive",
        "te",
        "proxy-authorization",
        "upgrade",
        "proxy",
    ] {
        assert_eq!(header(&text, gone), None, "{gone} was forwarded:\n{text}");
    }
    assert_eq!(header(&text, "x-kept"), Some("yes"));

    // And on the way back, from an upstream that sends some.
    let raw = raw_upstream(|_| {
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nX-Kept: yes\r\n\r\nok".to_vec()
    });
    let proxy = front(Proxy::to(&format!("http://{raw}")));
    let res = Conn::open(proxy.addr).get("/");
    assert_eq!(res.text(), "ok");
    for gone in ["x-hop", "keep-alive", "proxy-authenticate"] {
        assert_eq!(res.header(gone), None, "{gone} came back");
    }
    assert_eq!(res.header("x-kept"), Some("yes"));
}

#[test]
fn redirects_and_cookie_paths_into_the_base_come_back_into_the_mount() {
    let redirecting = |req: Request| async move {
        let mut res = http::StatusCode::FOUND.into_response();
        let upstream_origin = format!("http://{}", req.headers()["host"].to_str().unwrap());
        let location = match req.environ().path_info() {
            "/v1/absolute" => format!("{upstream_origin}/v1/login?next=%2F"),
            "/v1/relative" => "/v1/login".to_owned(),
            _ => "https://elsewhere.example/v1/x".to_owned(),
        };
        res.headers_mut()
            .insert("location", location.parse().unwrap());
        let refresh = format!("3; url={upstream_origin}/v1/next");
        res.headers_mut()
            .insert("refresh", refresh.parse().unwrap());
        res.headers_mut()
            .append("set-cookie", "a=1; Path=/v1/x; HttpOnly".parse().unwrap());
        res.headers_mut()
            .append("set-cookie", "b=2; Path=/".parse().unwrap());
        res
    };
    let up = upstream(redirecting);
    let url = format!("http://{}/v1", up.addr);
    let proxy =
        front(Dispatcher::default().mount("/api", Proxy::to(&url).rewrite_cookie_paths(true)));
    let mut conn = Conn::open(proxy.addr);
    let res = conn.get("/api/absolute");
    assert_eq!(res.header("location"), Some("/api/login?next=%2F"));
    // nginx's proxy_redirect rewrites Refresh's URL too.
    assert_eq!(res.header("refresh"), Some("3; url=/api/next"));
    let cookies: Vec<&str> = res
        .headers
        .iter()
        .filter(|(n, _)| n == "set-cookie")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(cookies, ["a=1; Path=/api/x; HttpOnly", "b=2; Path=/"]);
    assert_eq!(
        conn.get("/api/relative").header("location"),
        Some("/api/login")
    );
    assert_eq!(
        conn.get("/api/other").header("location"),
        Some("https://elsewhere.example/v1/x")
    );
}

#[test]
fn a_redirect_the_app_made_into_the_mount_is_left_as_it_is() {
    // An app behind Werkzeug's ProxyFix(x_prefix=1) builds its URLs under
    // X-Forwarded-Prefix; one that does not, under its own root.
    let redirecting = |req: Request| async move {
        let prefix = (req.headers().get("x-forwarded-prefix"))
            .map_or("", |p| p.to_str().unwrap())
            .to_owned();
        let location = match req.uri().path() {
            "/aware" => format!("{prefix}/login"),
            _ => "/login".to_owned(),
        };
        let mut res = http::StatusCode::FOUND.into_response();
        res.headers_mut()
            .insert("location", location.parse().unwrap());
        res.headers_mut()
            .insert("set-cookie", format!("s=1; Path={prefix}").parse().unwrap());
        res
    };
    let up = upstream(redirecting);
    let proxy = Proxy::to(&format!("http://{}", up.addr)).rewrite_cookie_paths(true);
    let front = front(Dispatcher::default().mount("/app", proxy));
    let mut conn = Conn::open(front.addr);
    let aware = conn.get("/app/aware");
    assert_eq!(
        aware.header("location"),
        Some("/app/login"),
        "not /app/app/login"
    );
    assert_eq!(aware.header("set-cookie"), Some("s=1; Path=/app"));
    assert_eq!(
        conn.get("/app/unaware").header("location"),
        Some("/app/login")
    );
}

/// Echoes the request body, and says how long it was in a header.
async fn echo_body(req: Request) -> stackway::Response {
    Body::new(req.into_body()).into_response()
}

#[test]
fn bodies_stream_both_ways_with_expect_100_continue() {
    let up = upstream(echo_body);
    let proxy = front(Proxy::to(&format!("http://{}", up.addr)));
    let mut conn = Conn::open(proxy.addr);
    let body: Vec<u8> = (0..3 << 20).map(|i| (i % 253) as u8).collect();
    conn.send(
        format!(
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let interim = conn.read_head();
    assert_eq!(interim.status, 100);
    conn.send(&body);
    let res = conn.read_response();
    assert_eq!(res.status, 200);
    assert!(res.body == body, "the echoed body differs");
    // Chunked uploads stream as well.
    conn.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    assert_eq!(conn.read_response().text(), "hello world");
}

#[test]
fn expect_stays_between_the_client_and_the_proxy() {
    // The upstream answers with the head it was sent.
    let raw = raw_upstream(|head| {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{head}",
            head.len()
        )
        .into_bytes()
    });
    let proxy = front(Proxy::to(&format!("http://{raw}")));
    let mut conn = Conn::open(proxy.addr);
    conn.send(b"GET /x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nX-Kept: 1\r\n\r\n");
    let sent = conn.read_response().text().to_ascii_lowercase();
    assert!(sent.contains("x-kept: 1\r\n"), "{sent}");
    assert!(!sent.contains("expect"), "{sent}");
}

/// A raw upstream on a free port: for each connection, reads a request head
/// and writes what `respond` returns for it, then closes.
fn raw_upstream(respond: impl Fn(&str) -> Vec<u8> + Send + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream);
            let mut head = String::new();
            while reader.read_line(&mut head).is_ok_and(|n| n > 2) {}
            let _ = reader.get_mut().write_all(&respond(&head));
        }
    });
    addr
}

#[test]
fn failures_are_responses() {
    // Nothing listens: 502.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cases: Vec<(SocketAddr, u16)> = vec![
        (closed, 502),
        // Garbage instead of a status line: 502.
        (raw_upstream(|_| b"NOT HTTP AT ALL\r\n\r\n".to_vec()), 502),
        // A response head of 1 MiB: 502.
        (
            raw_upstream(|_| {
                let mut res = b"HTTP/1.1 200 OK\r\n".to_vec();
                for i in 0..16_384 {
                    res.extend_from_slice(format!("X-Big-{i}: {}\r\n", "a".repeat(50)).as_bytes());
                }
                res.extend_from_slice(b"Content-Length: 0\r\n\r\n");
                res
            }),
            502,
        ),
        // No response head within the read timeout: 504.
        (
            raw_upstream(|_| {
                std::thread::sleep(Duration::from_secs(3));
                Vec::new()
            }),
            504,
        ),
    ];
    for (addr, status) in cases {
        let proxy = front(
            Proxy::to(&format!("http://{addr}"))
                .read_timeout(Duration::from_millis(500))
                .connect_timeout(Duration::from_secs(2)),
        );
        let started = Instant::now();
        let res = Conn::open(proxy.addr).get("/x");
        assert_eq!(res.status, status, "upstream {addr}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}

#[test]
fn an_answers_content_type_sent_twice_is_its_last() {
    // One type a client reads, as nginx passes it: not two, each client
    // choosing its own (a browser may sniff a page out of `text/plain`).
    let raw = raw_upstream(|_| {
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Type: text/html\r\nContent-Length: 2\r\n\r\nok".to_vec()
    });
    let proxy = front(Proxy::to(&format!("http://{raw}")));
    let res = Conn::open(proxy.addr).get("/");
    let types: Vec<_> = (res.headers.iter())
        .filter(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| value.as_str())
        .collect();
    assert_eq!(types, ["text/html"]);
}

#[test]
fn a_transfer_encoding_beside_a_content_length_frames_the_body_alone() {
    // The chunked body says "abc"; the Content-Length beside it says one
    // byte, or ten. Forwarded, it would end the client's body early, or
    // never.
    for length in [1, 10] {
        let raw = raw_upstream(move |_| {
            format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: {length}\r\n\r\n\
                 3\r\nabc\r\n0\r\n\r\n"
            )
            .into_bytes()
        });
        let proxy = front(Proxy::to(&format!("http://{raw}")));
        let mut conn = Conn::open(proxy.addr);
        for _ in 0..2 {
            let res = conn.get("/x");
            assert_eq!((res.status, res.text()), (200, "abc".to_owned()));
            assert_eq!(res.header("content-length"), None, "{length}");
        }
    }
}

#[test]
fn an_upstream_that_breaks_off_mid_body_aborts_the_client_connection() {
    // Its head always reaches the client, as nginx sends it, even when the
    // upstream closes before the body's first byte.
    for (sent, stalls) in [(1000, false), (1000, true), (0, false)] {
        let raw = raw_upstream(move |_| {
            let mut res = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".to_vec();
            res.extend_from_slice(&vec![b'x'; sent]);
            if stalls {
                std::thread::sleep(Duration::from_secs(3));
            }
            res // then the connection closes, 99,000 bytes short
        });
        let proxy =
            front(Proxy::to(&format!("http://{raw}")).body_timeout(Duration::from_millis(500)));
        let mut stream = TcpStream::connect(proxy.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        let _ = stream.read_to_end(&mut got); // EOF or reset: either way, not complete
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text:.100}");
        let body = got.len() - (text.find("\r\n\r\n").unwrap() + 4);
        assert!(body < 100_000, "stalls={stalls}: a body of {body} bytes");
    }
}

#[test]
fn a_websocket_is_spliced_through() {
    // A raw upstream that accepts the upgrade and then echoes every byte.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        while reader.read_line(&mut head).is_ok_and(|n| n > 2) {}
        assert!(
            head.to_ascii_lowercase().contains("upgrade: websocket"),
            "{head}"
        );
        let mut stream = reader.into_inner();
        stream
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
            .unwrap();
        let mut buf = [0; 1024];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 || stream.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let proxy = front(Dispatcher::default().mount("/ws", Proxy::to(&format!("http://{addr}"))));
    let mut conn = Conn::open(proxy.addr);
    conn.send(b"GET /ws/chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    let res = conn.read_head();
    assert_eq!(res.status, 101);
    assert_eq!(res.header("upgrade"), Some("websocket"));
    assert_eq!(
        res.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    for message in [&b"hello"[..], b"\x81\x05frame", &[0u8; 5000]] {
        conn.send(message);
        let mut echoed = vec![0; message.len()];
        conn.reader.read_exact(&mut echoed).unwrap();
        assert_eq!(echoed, message);
    }
}

#[test]
fn a_unix_socket_upstream_with_a_base() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream);
            let mut head = String::new();
            while reader.read_line(&mut head).is_ok_and(|n| n > 2) {}
            let target = head.split(' ').nth(1).unwrap_or("").to_owned();
            let host = head
                .lines()
                .find_map(|l| l.strip_prefix("host: "))
                .unwrap_or("")
                .to_owned();
            let body = format!("{target} {host}");
            let res = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = reader.get_mut().write_all(res.as_bytes());
        }
    });
    let spec = format!("unix:{}:/base", path.display());
    let proxy = front(Dispatcher::default().mount("/app", Proxy::to(&spec)));
    let mut conn = Conn::open(proxy.addr);
    assert_eq!(conn.get("/app/x?y=1").text(), "/base/x?y=1 localhost");
    assert_eq!(conn.get("/app/again").text(), "/base/again localhost");
}

/// Answers with the port it listens on.
fn whoami(port: u16) -> impl stackway::App {
    move |_req: Request| async move { port.to_string().into_response() }
}

/// `n` upstreams, each answering with its port.
fn whoamis(n: usize) -> Vec<Running> {
    (0..n)
        .map(|_| {
            let server = server();
            let port = server.local_addr().port();
            Running::start(server, whoami(port))
        })
        .collect()
}

/// `METHOD /` with `body` on a new connection, and the answer.
fn send(addr: SocketAddr, method: &str, body: &str) -> support::http::RawResponse {
    let mut conn = Conn::open(addr);
    let length = body.len();
    conn.send(
        format!("{method} / HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n{body}")
            .as_bytes(),
    );
    conn.read_response()
}

#[test]
fn a_pool_loses_one_upstream_mid_run_and_no_get_fails() {
    let ups = whoamis(3);
    let specs: Vec<String> = ups.iter().map(|u| format!("http://{}", u.addr)).collect();
    let proxy = front(Proxy::balance(specs.iter().map(String::as_str)));
    let mut ups = ups.into_iter();
    let doomed = ups.next().unwrap();
    let doomed_port = doomed.addr.port().to_string();
    let mut doomed = Some(doomed);
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..300 {
        if i == 60 {
            doomed.take().unwrap().stop().unwrap();
        }
        // A new connection each time, as many clients would.
        let res = Conn::open(proxy.addr).get("/");
        assert_eq!(res.status, 200, "request {i} failed");
        *seen.entry(res.text()).or_default() += 1;
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen[&doomed_port] <= 30, "{seen:?}");
}

#[test]
fn a_request_goes_on_to_the_next_upstream_when_one_is_down_or_closes_unanswered() {
    // Nothing listens on the first member: a failed connection sent
    // nothing, so the request goes to the next, whatever its method and with
    // its body, as nginx's `proxy_next_upstream error` sends it.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let up = upstream(echo_body);
    let pool = [format!("http://{dead}"), format!("http://{}", up.addr)];
    for (method, body) in [
        ("POST", "a body"),
        ("PUT", "x"),
        ("DELETE", ""),
        ("POST", ""),
    ] {
        // A pool of its own each time: its first request goes to the dead one.
        let proxy = front(Proxy::balance(pool.iter().map(String::as_str)));
        let res = send(proxy.addr, method, body);
        assert_eq!((res.status, res.text()), (200, body.to_owned()), "{method}");
    }
    // A first member that takes each request and closes without an answer:
    // an idempotent request is asked again of the next (RFC 9110 §9.2.2); a
    // POST may have been acted on, and is the client's 502 to decide about.
    let closer = TcpListener::bind("127.0.0.1:0").unwrap();
    let closing = closer.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in closer.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = stream.read(&mut [0; 4096]);
        }
    });
    let pool = [format!("http://{closing}"), format!("http://{}", up.addr)];
    for (method, status) in [("GET", 200), ("DELETE", 200), ("POST", 502)] {
        let proxy = front(Proxy::balance(pool.iter().map(String::as_str)));
        assert_eq!(send(proxy.addr, method, "").status, status, "{method}");
    }
}

#[test]
fn a_pool_member_takes_nginx_s_server_parameters() {
    let ups = whoamis(3);
    let [a, b, c] = [0, 1, 2].map(|i| ups[i].addr);
    let [na, nb, nc] = [a, b, c].map(|addr| addr.port().to_string());
    let seen = |pool: &[String], n: usize| -> Vec<String> {
        let proxy = front(Proxy::balance(pool.iter().map(String::as_str)));
        (0..n)
            .map(|_| Conn::open(proxy.addr).get("/").text())
            .collect()
    };
    // `weight=`: shared as nginx's smooth weighted round robin shares it.
    let pool = [format!("http://{a} weight=3"), format!("http://{b}")];
    let order = [&na, &na, &nb, &na, &na, &na, &nb, &na].map(String::as_str);
    assert_eq!(seen(&pool, 8), order);
    // least_conn shares its ties (here every request: one at a time) the same way.
    let least = front(
        Proxy::balance(pool.iter().map(String::as_str)).balance_by(Balance::LeastOutstanding),
    );
    let asked: Vec<String> = (0..8)
        .map(|_| Conn::open(least.addr).get("/").text())
        .collect();
    assert_eq!(asked, order);
    // `backup` stands by while another is live; `down` is never asked.
    let pool = [
        format!("http://{a} down"),
        format!("http://{b}"),
        format!("http://{c} backup"),
    ];
    assert!(seen(&pool, 6).iter().all(|name| *name == nb));
    // With the live member gone, the backup answers, the request that found
    // it gone among them.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let pool = [format!("http://{dead}"), format!("http://{c} backup")];
    assert!(seen(&pool, 4).iter().all(|name| *name == nc));
    // `max_conns=1`: while the slow member has a request in flight, the
    // others go to the other member; with none left, 502 (nginx's "no live
    // upstreams").
    let slow = upstream(|_req: Request| async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        "slow"
    });
    for (pool, during) in [
        (
            vec![
                format!("http://{} max_conns=1", slow.addr),
                format!("http://{a}"),
            ],
            na.as_str(),
        ),
        (
            vec![format!("http://{} max_conns=1", slow.addr)],
            "502 Bad Gateway",
        ),
    ] {
        let proxy = front(Proxy::balance(pool.iter().map(String::as_str)));
        let addr = proxy.addr;
        let first = std::thread::spawn(move || Conn::open(addr).get("/").text());
        std::thread::sleep(Duration::from_millis(150));
        for _ in 0..3 {
            assert_eq!(Conn::open(proxy.addr).get("/").text(), during, "{pool:?}");
        }
        assert_eq!(first.join().unwrap(), "slow");
    }
    // `max_fails=2`: the member that fails is left out only after its second
    // failure in a row (the pool's default is the first).
    for (max_fails, failed) in [("", 1), (" max_fails=2", 2)] {
        let pool = [format!("http://{dead}{max_fails}"), format!("http://{a}")];
        let proxy = Proxy::balance(pool.iter().map(String::as_str));
        let stats = proxy.stats();
        let proxy = front(proxy);
        for _ in 0..6 {
            assert_eq!(Conn::open(proxy.addr).get("/").text(), na);
        }
        assert_eq!(stats.upstreams()[0].failed, failed, "{max_fails:?}");
    }
}

#[test]
fn a_hash_sends_each_key_to_one_upstream_as_nginx_does() {
    let ups = whoamis(4);
    let names: Vec<String> = ups.iter().map(|u| u.addr.port().to_string()).collect();
    let pool = |n: usize| -> Vec<String> {
        ups[..n]
            .iter()
            .map(|u| format!("http://{}", u.addr))
            .collect()
    };
    let asked = |proxy: &Running, user: &str| {
        let mut conn = Conn::open(proxy.addr);
        conn.send(format!("GET / HTTP/1.1\r\nHost: x\r\nX-User: {user}\r\n\r\n").as_bytes());
        conn.read_response().text()
    };
    let users: Vec<String> = (0..40).map(|i| format!("user-{i}")).collect();
    let hash = |consistent| Balance::Hash {
        key: HashKey::parse("$http_x_user").unwrap(),
        consistent,
    };
    for consistent in [false, true] {
        let proxy =
            front(Proxy::balance(pool(3).iter().map(String::as_str)).balance_by(hash(consistent)));
        let first: Vec<String> = users.iter().map(|u| asked(&proxy, u)).collect();
        // The same user, the same upstream, every time; the users spread over all.
        let again: Vec<String> = users.iter().map(|u| asked(&proxy, u)).collect();
        assert_eq!(first, again, "consistent {consistent}");
        for name in &names[..3] {
            assert!(
                first.contains(name),
                "consistent {consistent}: {name} got no user: {first:?}"
            );
        }
        if consistent {
            // A fourth upstream takes its share of the users; no other moves.
            let proxy =
                front(Proxy::balance(pool(4).iter().map(String::as_str)).balance_by(hash(true)));
            let after: Vec<String> = users.iter().map(|u| asked(&proxy, u)).collect();
            let moved: Vec<&String> = (first.iter().zip(&after))
                .filter(|(a, b)| a != b)
                .map(|(_, b)| b)
                .collect();
            assert!(
                !moved.is_empty() && moved.iter().all(|to| **to == names[3]),
                "{moved:?}"
            );
        }
    }
    // ip_hash: by the client's /24, as nginx's sums it, 127.0.0.x lands on
    // the third of three; with it down, on the second, the same every time.
    let proxy =
        front(Proxy::balance(pool(3).iter().map(String::as_str)).balance_by(Balance::IpHash));
    assert!((0..6).all(|_| Conn::open(proxy.addr).get("/").text() == names[2]));
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let with_dead = [pool(2), vec![format!("http://{dead}")]].concat();
    let proxy =
        front(Proxy::balance(with_dead.iter().map(String::as_str)).balance_by(Balance::IpHash));
    assert!((0..6).all(|_| Conn::open(proxy.addr).get("/").text() == names[1]));
}

#[test]
fn trace_is_answered_405_and_never_echoed_by_the_upstream() {
    // An upstream that echoes TRACE (as Apache does by default) would show the
    // client the fields the proxy adds, a secret among them.
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = asked.clone();
    let up = upstream(move |req: Request| {
        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        describe(req)
    });
    let key = stackway::from_fn(|mut req: Request, next: stackway::Next| async move {
        req.headers_mut()
            .insert("x-api-key", "secret".parse().unwrap());
        next.run(req).await
    });
    let proxy = front(
        stackway::Builder::new()
            .wrap(key)
            .run(Proxy::to(&format!("http://{}", up.addr))),
    );
    let mut conn = Conn::open(proxy.addr);
    conn.send(b"TRACE / HTTP/1.1\r\nHost: x\r\nMax-Forwards: 3\r\n\r\n");
    let res = conn.read_response();
    assert_eq!(res.status, 405);
    assert!(!res.text().contains("secret"), "{}", res.text());
    assert_eq!(conn.get("/").status, 200, "the connection goes on");
    assert_eq!(asked.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn a_request_goes_through_the_pool_trying_each_upstream_once() {
    // Two of three members are down, and the turn puts a fresh pool's first
    // request on the first, then the third: it goes on to the one left, with
    // its body, as nginx's `proxy_next_upstream` goes through its servers.
    let listeners = [(); 2].map(|()| TcpListener::bind("127.0.0.1:0").unwrap());
    let [first, third] = listeners.map(|l| l.local_addr().unwrap());
    let up = upstream(echo_body);
    let pool = [
        format!("http://{first}"),
        format!("http://{}", up.addr),
        format!("http://{third}"),
    ];
    for (method, body) in [("POST", "a body"), ("GET", "")] {
        let proxy = front(Proxy::balance(pool.iter().map(String::as_str)));
        let res = send(proxy.addr, method, body);
        assert_eq!((res.status, res.text()), (200, body.to_owned()), "{method}");
    }
    // With every member down, each is tried once and the answer is 502.
    let proxy = front(Proxy::balance([
        format!("http://{first}").as_str(),
        &format!("http://{third}"),
    ]));
    assert_eq!(Conn::open(proxy.addr).get("/").status, 502);
}

#[test]
fn an_idempotent_request_goes_on_when_an_upstream_gives_no_answer_in_time() {
    // A first member that takes each request and never answers: after the
    // read timeout an idempotent request goes to the next, as nginx's default
    // `proxy_next_upstream error timeout` sends it; a POST may have been acted
    // on, and is the client's 504. The silent member is then left out.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = stream.read(&mut [0; 4096]);
            held.push(stream);
        }
    });
    let up = upstream(echo_body);
    let pool = [
        format!("http://{silent_addr}"),
        format!("http://{}", up.addr),
    ];
    let timeout = Duration::from_millis(300);
    for (method, status) in [("GET", 200), ("PUT", 200), ("POST", 504)] {
        let proxy = front(Proxy::balance(pool.iter().map(String::as_str)).read_timeout(timeout));
        let mut conn = Conn::open(proxy.addr);
        let started = Instant::now();
        conn.send(
            format!("{method} / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").as_bytes(),
        );
        assert_eq!(conn.read_response().status, status, "{method}");
        assert!(
            started.elapsed() >= timeout,
            "{method}: {:?}",
            started.elapsed()
        );
        let started = Instant::now();
        assert_eq!(conn.get("/").status, 200, "{method}: the next request");
        assert!(
            started.elapsed() < timeout,
            "{method}: {:?}",
            started.elapsed()
        );
    }
}

/// A member that reads each request to the end of its body (which ends in
/// `END`), then closes without an answer, or, `silent`, keeps it unanswered.
fn reads_the_body_then(silent: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut seen = Vec::new();
            let mut buf = [0; 65536];
            while !seen.ends_with(b"END") && !seen.ends_with(b"END\r\n0\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            if silent {
                held.push(stream);
            }
        }
    });
    addr
}

#[test]
fn a_request_body_goes_on_whole_to_the_next_upstream() {
    // The first member takes a PUT's whole body, then closes or stays silent:
    // the next gets the body whole, as nginx, which reads a body before it
    // asks an upstream, sends it on. Past the 1 MiB kept, the request is not
    // asked again.
    let up = upstream(echo_body);
    let body = |len: usize| {
        let mut body: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
        body.extend_from_slice(b"END");
        body
    };
    for silent in [false, true] {
        let pool = [
            format!("http://{}", reads_the_body_then(silent)),
            format!("http://{}", up.addr),
        ];
        let proxy = || {
            let pool = Proxy::balance(pool.iter().map(String::as_str));
            front(pool.read_timeout(Duration::from_millis(300)))
        };
        for (len, chunked, status) in [
            (300 << 10, false, 200),
            (300 << 10, true, 200),
            (2 << 20, false, if silent { 504 } else { 502 }),
        ] {
            let what = format!("silent {silent}, {len} bytes, chunked {chunked}");
            let body = body(len);
            let proxy = proxy();
            let mut conn = Conn::open(proxy.addr);
            match chunked {
                false => {
                    let head = format!(
                        "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    conn.send(head.as_bytes());
                    conn.send(&body);
                }
                true => {
                    conn.send(b"PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
                    for part in body.chunks(10_000) {
                        conn.send(format!("{:x}\r\n", part.len()).as_bytes());
                        conn.send(part);
                        conn.send(b"\r\n");
                    }
                    conn.send(b"0\r\n\r\n");
                }
            }
            let res = conn.read_response();
            assert_eq!(res.status, status, "{what}");
            if status == 200 {
                assert!(
                    res.body == body,
                    "{what}: {} bytes came back",
                    res.body.len()
                );
            }
        }
    }
}

#[test]
fn a_connection_the_upstream_closes_after_its_answer_is_not_used_again() {
    // Each answer keeps the connection alive by HTTP/1.1's default, and the
    // upstream closes it: at once, or a moment later, after the proxy has sent
    // the next request on it, which the upstream never reads. That request is
    // asked again on a new connection, as nginx asks again after a cached
    // connection fails, an idempotent one with its body; no request fails.
    for linger in [Duration::ZERO, Duration::from_millis(30)] {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let raw = listener.local_addr().unwrap();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut reader = BufReader::new(stream);
                let mut head = String::new();
                while reader.read_line(&mut head).is_ok_and(|n| n > 2) {}
                let length = head.lines().find_map(|l| {
                    let value = l
                        .to_ascii_lowercase()
                        .strip_prefix("content-length: ")?
                        .to_owned();
                    value.trim().parse().ok()
                });
                let mut body = vec![0; length.unwrap_or(0)];
                let _ = reader.read_exact(&mut body);
                if body.is_empty() {
                    body = b"ok".to_vec();
                }
                let mut answer =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                answer.push_str(std::str::from_utf8(&body).unwrap());
                let _ = reader.get_mut().write_all(answer.as_bytes());
                std::thread::sleep(linger);
            }
        });
        let proxy = front(Proxy::to(&format!("http://{raw}")));
        let mut conn = Conn::open(proxy.addr);
        for i in 0..30 {
            let (res, body) = match i % 2 {
                0 => (conn.get("/"), "ok".to_owned()),
                _ => {
                    let body = format!("put {i}");
                    let head = format!(
                        "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    conn.send(format!("{head}{body}").as_bytes());
                    (conn.read_response(), body)
                }
            };
            assert_eq!(
                (res.status, res.text()),
                (200, body),
                "linger {linger:?}, request {i}"
            );
        }
        let accepted = accepted.load(std::sync::atomic::Ordering::Relaxed);
        assert!(accepted >= 30, "{accepted} connections for 30 answers");
    }
}

#[test]
fn a_connection_whose_answer_was_not_read_to_its_end_is_not_used_again() {
    let up = upstream(|req: Request| async move {
        match req.uri().path() {
            "/big" => vec![b'x'; 4 << 20].into_response(),
            path => path.to_owned().into_response(),
        }
    });
    let proxy = front(Proxy::to(&format!("http://{}", up.addr)));
    for i in 0..5 {
        // The client reads the head and a little, then goes away.
        let mut conn = Conn::open(proxy.addr);
        conn.send(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(conn.read_head().status, 200);
        drop(conn);
        std::thread::sleep(Duration::from_millis(20));
        let res = Conn::open(proxy.addr).get(&format!("/small-{i}"));
        assert_eq!((res.status, res.text()), (200, format!("/small-{i}")));
    }
}

#[test]
fn concurrent_requests_each_get_their_own_answer_on_pooled_connections() {
    let up = upstream(|req: Request| async move {
        let (head, body) = req.into_parts();
        let body = body.collect(1 << 20).await.unwrap_or_default();
        format!("{} {}", head.uri, String::from_utf8_lossy(&body)).into_response()
    });
    let proxy = front(Proxy::to(&format!("http://{}", up.addr)));
    let addr = proxy.addr;
    let clients: Vec<_> = (0..8)
        .map(|client| {
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr);
                for i in 0..100 {
                    let res = if i % 3 == 0 {
                        let body = format!("body-{client}-{i}");
                        conn.send(
                            format!(
                                "POST /p/{client}/{i} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            )
                            .as_bytes(),
                        );
                        let res = conn.read_response();
                        assert_eq!(res.text(), format!("/p/{client}/{i} {body}"));
                        res
                    } else {
                        let res = conn.get(&format!("/g/{client}/{i}"));
                        assert_eq!(res.text(), format!("/g/{client}/{i} "));
                        res
                    };
                    assert_eq!(res.status, 200);
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
}

#[test]
fn least_outstanding_sends_to_the_idle_upstream() {
    let slow = |_req: Request| async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        "slow".into_response()
    };
    let slow = upstream(slow);
    let fast = upstream(|_req: Request| async { "fast".into_response() });
    let specs = [
        format!("http://{}", slow.addr),
        format!("http://{}", fast.addr),
    ];
    let proxy = front(
        Proxy::balance(specs.iter().map(String::as_str)).balance_by(Balance::LeastOutstanding),
    );
    let addr = proxy.addr;
    // Two requests go out together; whichever is on the slow upstream holds it.
    let held: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || Conn::open(addr).get("/").text()))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        assert_eq!(Conn::open(addr).get("/").text(), "fast");
    }
    let mut answers: Vec<String> = held.into_iter().map(|t| t.join().unwrap()).collect();
    answers.sort();
    assert_eq!(answers, ["fast", "slow"]);
}

#[test]
fn h2c_to_the_upstream_when_asked() {
    let up = upstream(|req: Request| async move {
        format!("{:?} {}", req.version(), req.environ().path_info()).into_response()
    });
    let proxy = front(Proxy::to(&format!("http://{}/b", up.addr)).http2(true));
    let mut conn = Conn::open(proxy.addr);
    assert_eq!(conn.get("/x").text(), "HTTP/2.0 /b/x");
    assert_eq!(conn.get("/y").text(), "HTTP/2.0 /b/y");
}

#[test]
fn an_upload_that_keeps_moving_outlasts_the_read_timeout() {
    let up = upstream(echo_body);
    let proxy =
        front(Proxy::to(&format!("http://{}", up.addr)).read_timeout(Duration::from_millis(500)));
    let mut conn = Conn::open(proxy.addr);
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n");
    // Two seconds in all, never half a second without a byte.
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(200));
        conn.send(&[b'u'; 100]);
    }
    let res = conn.read_response();
    assert_eq!(res.status, 200);
    assert_eq!(res.body, vec![b'u'; 1000]);
    // An upload the upstream stops taking is a gateway timeout once nothing
    // has moved for that long; one the client stops sending is the client's 408.
    let slow_reader = raw_upstream(|_| {
        std::thread::sleep(Duration::from_secs(3));
        Vec::new()
    });
    let proxy =
        front(Proxy::to(&format!("http://{slow_reader}")).read_timeout(Duration::from_millis(500)));
    let mut conn = Conn::open(proxy.addr);
    let big = vec![b'u'; 16 << 20];
    conn.send(
        format!(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            big.len()
        )
        .as_bytes(),
    );
    let mut sender = conn.reader.get_ref().try_clone().unwrap();
    std::thread::spawn(move || sender.write_all(&big));
    assert_eq!(conn.read_response().status, 504);

    let reads_all = |req: Request| async move {
        let body = req.into_body().collect(usize::MAX).await;
        format!("{:?}", body.map(|b| b.len())).into_response()
    };
    let up = upstream(reads_all);
    let proxy =
        front(Proxy::to(&format!("http://{}", up.addr)).read_timeout(Duration::from_millis(500)));
    let mut conn = Conn::open(proxy.addr);
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\npartial");
    assert_eq!(conn.read_response().status, 408);
    // The same when the server's body timeout, not the proxy's, sees the client stop.
    let proxy = Running::start(
        server().workers(2).body_timeout(Duration::from_millis(500)),
        Lint::strict(Proxy::to(&format!("http://{}", up.addr))),
    );
    let mut conn = Conn::open(proxy.addr);
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\npartial");
    assert_eq!(conn.read_response().status, 408);
}

#[test]
fn trailers_pass_both_ways() {
    // The upstream reports the request's trailers, and sends one of its own.
    let trailers = |req: Request| async move {
        let mut body = req.into_body();
        let mut seen = String::new();
        while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
            if let Ok(trailers) = frame.unwrap().into_trailers() {
                for (name, value) in &trailers {
                    seen.push_str(&format!("{name}={}", value.to_str().unwrap()));
                }
            }
        }
        let mut out = http::HeaderMap::new();
        out.insert("x-upstream-sum", "42".parse().unwrap());
        let frames = [
            Ok::<_, std::convert::Infallible>(http_body::Frame::data(bytes::Bytes::from(seen))),
            Ok(http_body::Frame::trailers(out)),
        ];
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        let mut res = Body::new(body).into_response();
        res.headers_mut()
            .insert("trailer", "x-upstream-sum".parse().unwrap());
        res
    };
    let up = upstream(trailers);
    let proxy = front(Proxy::to(&format!("http://{}", up.addr)));
    let mut stream = TcpStream::connect(proxy.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\nTrailer: x-checksum\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-checksum: abc\r\n\r\n")
        .unwrap();
    let mut got = String::new();
    stream.read_to_string(&mut got).unwrap();
    assert!(
        got.contains("x-checksum=abc"),
        "the request's trailer: {got}"
    );
    assert!(
        got.contains("\r\n0\r\nx-upstream-sum: 42\r\n"),
        "the response's trailer: {got}"
    );
}

#[test]
fn active_health_checks_leave_out_an_upstream_that_answers_badly() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    // Both answer every request with 200; one says on /health that it is not well.
    let healthy = |name: &'static str, well: Arc<AtomicBool>| {
        move |req: Request| {
            let well = well.clone();
            async move {
                match (req.environ().path_info(), well.load(Ordering::Relaxed)) {
                    ("/health", false) => http::StatusCode::SERVICE_UNAVAILABLE.into_response(),
                    _ => name.into_response(),
                }
            }
        }
    };
    let sick = Arc::new(AtomicBool::new(false));
    let a = upstream(healthy("a", Arc::new(AtomicBool::new(true))));
    let b = upstream(healthy("b", sick.clone()));
    let specs = [format!("http://{}", a.addr), format!("http://{}", b.addr)];
    let proxy = front(
        Proxy::balance(specs.iter().map(String::as_str))
            .health_check("/health", Duration::from_millis(100)),
    );
    let answers = |n| -> Vec<String> {
        (0..n)
            .map(|_| Conn::open(proxy.addr).get("/").text())
            .collect()
    };
    answers(1); // the checks start with the first request
    std::thread::sleep(Duration::from_millis(400));
    assert!(answers(10).iter().all(|a| a == "a"), "b is left out");
    sick.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(400));
    assert!(answers(10).iter().any(|a| a == "b"), "b is back");
}

#[test]
fn a_health_check_path_a_uri_cannot_hold_is_asked_for_encoded() {
    use std::sync::{Arc, Mutex};
    let asked = Arc::new(Mutex::new(Vec::new()));
    let noted = asked.clone();
    let up = upstream(move |req: Request| {
        let noted = noted.clone();
        async move {
            noted.lock().unwrap().push(req.uri().to_string());
            "ok".into_response()
        }
    });
    let proxy = front(
        Proxy::to(&format!("http://{}", up.addr))
            .health_check("health check|é?full=1", Duration::from_millis(50)),
    );
    assert_eq!(Conn::open(proxy.addr).get("/").text(), "ok"); // the checks start
    std::thread::sleep(Duration::from_millis(300));
    let asked = asked.lock().unwrap();
    let checks = asked.iter().filter(|uri| *uri != "/").count();
    assert!(checks >= 2, "{asked:?}");
    assert!(
        (asked.iter().filter(|uri| *uri != "/"))
            .all(|uri| uri == "/health%20check%7C%C3%A9?full=1"),
        "{asked:?}"
    );
}

#[test]
fn a_failing_upstream_is_left_out_for_the_fail_timeout() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let asked = Arc::new(AtomicUsize::new(0));
    let counted = asked.clone();
    let broken = raw_upstream(move |_| {
        counted.fetch_add(1, Ordering::Relaxed);
        b"NOT HTTP\r\n\r\n".to_vec()
    });
    let good = upstream(|_req: Request| async { "good".into_response() });
    let specs = [format!("http://{broken}"), format!("http://{}", good.addr)];
    let proxy = front(
        Proxy::balance(specs.iter().map(String::as_str))
            .max_fails(1)
            .fail_timeout(Duration::from_secs(30)),
    );
    let statuses: Vec<u16> = (0..12)
        .map(|_| Conn::open(proxy.addr).get("/").status)
        .collect();
    // Round-robin sends one request to the broken upstream (502), which is then left out.
    assert_eq!(
        statuses.iter().filter(|s| **s == 502).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(asked.load(Ordering::Relaxed), 1);
}

#[test]
fn buffer_response_frees_the_upstream_from_a_client_that_does_not_read() {
    const LEN: usize = 8 << 20;
    let up = upstream(|_req: Request| async { vec![b'z'; LEN] });
    let proxy = Proxy::to(&format!("http://{}", up.addr)).buffer_response(true);
    let stats = proxy.stats();
    let front = front(proxy);
    let mut conn = Conn::open(front.addr);
    conn.send(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n");
    // The client reads nothing; the upstream is done all the same.
    let deadline = Instant::now() + Duration::from_secs(5);
    while stats.upstreams()[0].in_flight != 0 || stats.upstreams()[0].answered != 1 {
        assert!(
            Instant::now() < deadline,
            "the upstream is still held: {:?}",
            stats.upstreams()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let res = conn.read_response();
    assert_eq!(res.status, 200);
    assert_eq!(res.body.len(), LEN);
    assert!(res.body.iter().all(|b| *b == b'z'));
}

#[test]
fn buffer_request_asks_the_upstream_only_once_the_body_is_whole() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let asked = Arc::new(AtomicUsize::new(0));
    let seen = asked.clone();
    let up = upstream(move |req: Request| {
        seen.fetch_add(1, Ordering::Relaxed);
        echo_body(req)
    });
    let front = front(Proxy::to(&format!("http://{}", up.addr)).buffer_request(true));
    let mut conn = Conn::open(front.addr);
    conn.send(b"POST /up HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2000000\r\n\r\n");
    conn.send(&[b'a'; 1_000_000]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        asked.load(Ordering::Relaxed),
        0,
        "asked before the body was whole"
    );
    conn.send(&[b'b'; 1_000_000]);
    let res = conn.read_response();
    assert_eq!(res.status, 200);
    assert_eq!(res.body.len(), 2_000_000);
    assert_eq!(asked.load(Ordering::Relaxed), 1);
}

#[test]
fn a_request_whose_client_gives_up_is_no_longer_in_flight() {
    // An upstream that takes connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let held: Vec<TcpStream> = listener.incoming().map_while(Result::ok).collect();
        drop(held);
    });
    let proxy = Proxy::to(&format!("http://{addr}"));
    let stats = proxy.stats();
    let front = front(proxy);
    for _ in 0..10 {
        let mut conn = Conn::open(front.addr);
        conn.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Every client is gone: none of their requests is in flight any more.
    let deadline = Instant::now() + Duration::from_secs(5);
    while stats.upstreams()[0].in_flight != 0 {
        assert!(Instant::now() < deadline, "{:?}", stats.upstreams());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_upstream_redirect_never_becomes_one_to_another_site() {
    let up = upstream(|req: Request| async move {
        let to = req.uri().path().trim_start_matches("/app/go").to_owned();
        let mut res = stackway::Response::new(Body::empty());
        *res.status_mut() = http::StatusCode::MOVED_PERMANENTLY;
        res.headers_mut()
            .insert("location", format!("/app{to}").parse().unwrap());
        res
    });
    let proxy = front(Proxy::to(&format!("http://{}/app", up.addr)));
    let mut conn = Conn::open(proxy.addr);
    // Django's APPEND_SLASH under a base path, asked for `//evil.example`.
    let res = conn.get("/go//evil.example/");
    assert_eq!(
        res.header("location"),
        Some("/app//evil.example/"),
        "left alone"
    );
    let res = conn.get("/go/\\evil.example/");
    assert_eq!(
        res.header("location"),
        Some("/app/\\evil.example/"),
        "left alone"
    );
    let res = conn.get("/go/fine/");
    assert_eq!(res.header("location"), Some("/fine/"), "into the mount");
}

#[test]
fn forwarded_names_no_client_the_clients_host_makes_up() {
    let up = upstream(describe);
    let proxy = || Proxy::to(&format!("http://{}", up.addr)).forwarded(true);
    let host = "x\", for=6.6.6.6;host=\"x";
    // The server refuses a Host that is no host before any app sees it.
    let front = front(proxy());
    let mut conn = Conn::open(front.addr);
    conn.send(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
    assert_eq!(conn.read_response().status, 400);
    // Called by anything else, the proxy leaves it out of `Forwarded` (a
    // valid one is a quoted-string, escaped).
    let client = stackway::testing::Client::new(Lint::strict(proxy()));
    let text = support::run(async { client.get("/").header("host", host).await }).text();
    assert_eq!(
        header(&text, "forwarded"),
        Some("for=127.0.0.1;proto=http"),
        "{text}"
    );
}

#[test]
fn only_websocket_upgrades_pass_and_http2_settings_never() {
    let up = upstream(describe);
    let proxy = front(Proxy::to(&format!("http://{}", up.addr)));
    let mut conn = Conn::open(proxy.addr);
    conn.send(
        b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
    );
    let res = conn.read_response();
    assert_eq!(res.status, 200, "answered as a plain request");
    let text = res.text();
    for gone in ["upgrade", "http2-settings", "connection"] {
        assert_eq!(header(&text, gone), None, "{gone} passed: {text}");
    }
}

/// A raw upstream that answers every WebSocket upgrade with 101, then echoes
/// what it is sent if `echo`, or holds the connection in silence.
fn websocket_upstream(echo: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                let mut head = String::new();
                while reader.read_line(&mut head).is_ok_and(|n| n > 2) {}
                let mut stream = reader.into_inner();
                let _ = stream.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
                let mut buf = [0; 1024];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || (echo && stream.write_all(&buf[..n]).is_err()) {
                        break;
                    }
                }
            });
        }
    });
    addr
}

const UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

#[test]
fn upgraded_connections_stay_inside_the_connection_limit_and_close_when_idle() {
    let upstream = websocket_upstream(false);
    let server = server()
        .max_connections(5)
        .idle_timeout(Duration::from_secs(1));
    let stats = server.stats();
    let front = Running::start(
        server,
        Lint::strict(Proxy::to(&format!("http://{upstream}"))),
    );
    let start = Instant::now();
    // 20 clients at once, each upgrading and then silent: when it got its
    // 101, and when the server closed it.
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let addr = front.addr;
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr);
                conn.reader
                    .get_ref()
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                conn.send(UPGRADE);
                assert_eq!(conn.read_head().status, 101);
                let upgraded = start.elapsed();
                assert!(conn.is_closed(), "not closed");
                (upgraded, start.elapsed())
            })
        })
        .collect();
    let mut most_open = 0;
    while !clients.iter().all(std::thread::JoinHandle::is_finished) {
        most_open = most_open.max(stats.connections_open());
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "clients left waiting"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let times: Vec<(Duration, Duration)> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(most_open <= 5, "{most_open} connections open at once");
    let first_closed = times.iter().map(|t| t.1).min().unwrap();
    let early = times.iter().filter(|t| t.0 < first_closed).count();
    assert_eq!(
        early, 5,
        "the sixth waits for one of the five to close: {times:?}"
    );
    for (upgraded, closed) in &times {
        let idle = *closed - *upgraded;
        assert!(
            idle >= Duration::from_millis(900) && idle < Duration::from_secs(4),
            "closed {idle:?} after its upgrade"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while stats.connections_open() != 0 {
        assert!(
            Instant::now() < deadline,
            "{} still counted open",
            stats.connections_open()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_upgraded_connection_in_use_outlives_the_idle_timeout_and_not_the_grace_period() {
    let upstream = websocket_upstream(true);
    let server = server()
        .idle_timeout(Duration::from_secs(1))
        .grace_period(Duration::from_secs(1));
    let mut front = Running::start(
        server,
        Lint::strict(Proxy::to(&format!("http://{upstream}"))),
    );
    let mut conn = Conn::open(front.addr);
    conn.send(UPGRADE);
    assert_eq!(conn.read_head().status, 101);
    // A message every 300 ms for 2.5 s: in use, never idle for a second.
    for n in 0..8u8 {
        conn.send(&[n; 3]);
        let mut echoed = [0; 3];
        conn.reader.read_exact(&mut echoed).unwrap();
        assert_eq!(echoed, [n; 3]);
        std::thread::sleep(Duration::from_millis(300));
    }
    // Shutdown waits for it through the grace period, then cuts it off.
    let stopping = Instant::now();
    front.begin_shutdown();
    conn.send(b"still here");
    let mut echoed = [0; 10];
    conn.reader.read_exact(&mut echoed).unwrap();
    conn.reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert!(conn.is_closed(), "open after the grace period");
    let closed = stopping.elapsed();
    assert!(
        closed >= Duration::from_millis(900) && closed < Duration::from_secs(5),
        "closed {closed:?} into the shutdown"
    );
    front.stop().unwrap();
}

#[test]
fn a_silent_upgraded_connection_closes_after_the_proxys_read_timeout() {
    let upstream = websocket_upstream(false);
    let front =
        front(Proxy::to(&format!("http://{upstream}")).read_timeout(Duration::from_secs(1)));
    let mut conn = Conn::open(front.addr);
    conn.send(UPGRADE);
    assert_eq!(conn.read_head().status, 101);
    conn.assert_closed_after(Instant::now(), Duration::from_secs(1));
}

#[test]
fn an_upstream_that_ends_an_upgraded_connection_ends_the_clients() {
    // A WebSocket app that returns without a close frame (uvicorn then
    // closes the connection): the client hears the end at once, as behind
    // nginx, not after the read timeout.
    let upstream = raw_upstream(|_| {
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nbye"
            .to_vec()
    });
    let front = front(Proxy::to(&format!("http://{upstream}")));
    let mut conn = Conn::open(front.addr);
    conn.send(UPGRADE);
    assert_eq!(conn.read_head().status, 101);
    let mut bye = [0; 3];
    conn.reader.read_exact(&mut bye).unwrap();
    assert_eq!(&bye, b"bye");
    // The read timeout is 60 s: an end heard within 5 s is the upstream's.
    (conn.reader.get_ref())
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert!(conn.is_closed(), "open 5 s after the upstream ended");
}

#[test]
fn an_http2_clients_cookie_crumbs_reach_an_http1_upstream_as_one_cookie() {
    let up = raw_upstream(|head| {
        let cookies: Vec<&str> = (head.lines())
            .filter(|line| line.to_ascii_lowercase().starts_with("cookie:"))
            .collect();
        let body = cookies.join("\n");
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    });
    let proxy = front(Proxy::to(&format!("http://{up}")));
    support::run(async {
        let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .unwrap();
        tokio::spawn(conn);
        // A browser over HTTP/2 sends a field a cookie (RFC 9113 §8.2.3).
        let req = http::Request::get(format!("http://{}/x", proxy.addr))
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .body(String::new())
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        let body = http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(String::from_utf8_lossy(&body), "cookie: a=1; b=2");
    });
}
