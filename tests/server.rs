//! The server over real sockets: keep-alive, pipelining, h2c, limits, timeouts,
//! panics and graceful shutdown.

use stackway_test_support as support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use stackway::{IntoResponse, Request, RequestExt};
use support::http::Conn;
use support::{Running, external, server};
use tokio::sync::Notify;

/// Echoes the request's path and query.
async fn echo_path(req: Request) -> stackway::Response {
    req.uri().to_string().into_response()
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let running = Running::start(server(), echo_path);
    let mut conn = Conn::open(running.addr);
    for path in ["/one", "/two?x=1", "/three"] {
        let res = conn.get(path);
        assert_eq!((res.status, res.text()), (200, path.to_owned()));
        assert_ne!(res.header("connection"), Some("close"));
    }
    running.stop().unwrap();
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let running = Running::start(server(), echo_path);
    let mut conn = Conn::open(running.addr);
    let batch: String = (0..10)
        .map(|i| format!("GET /{i} HTTP/1.1\r\nHost: localhost\r\n\r\n"))
        .collect();
    conn.send(batch.as_bytes());
    for i in 0..10 {
        assert_eq!(conn.read_response().text(), format!("/{i}"));
    }
}

#[test]
fn h2c_with_prior_knowledge() {
    let running = Running::start(server(), stackway::apps::demo);
    support::run(async {
        let stream = tokio::net::TcpStream::connect(running.addr).await.unwrap();
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .unwrap();
        tokio::spawn(conn);
        for path in ["/a%2Fb", "/c"] {
            let req = http::Request::get(format!("http://localhost{path}"))
                .body(String::new())
                .unwrap();
            let res = sender.send_request(req).await.unwrap();
            assert_eq!(res.status(), 200);
            assert_eq!(res.version(), http::Version::HTTP_2);
            let body = http_body_util::BodyExt::collect(res.into_body())
                .await
                .unwrap()
                .to_bytes();
            let body = String::from_utf8(body.to_vec()).unwrap();
            assert!(body.contains("SERVER_PROTOCOL=HTTP/2\n"), "{body}");
            assert!(body.contains("HTTP_HOST=localhost\n"), "{body}");
            assert!(body.contains(&format!("REQUEST_URI={path}\n")), "{body}");
        }
        // `:authority` is the host, and holds no userinfo (RFC 9113 §8.3.1).
        let req = http::Request::get("http://evil.example@localhost/")
            .body(String::new())
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        assert_eq!(res.status(), 400);
        // A `Host` beside it names the same host, in any case, and port (the
        // scheme's when none is said), or the request is refused.
        let hosts = [
            ("other.example", 400),
            ("localhost:8080", 400),
            ("LOCALHOST:80", 200),
            ("Localhost", 200),
        ];
        for (host, status) in hosts {
            let req = http::Request::get("http://localhost/")
                .header("host", host)
                .body(String::new())
                .unwrap();
            let res = sender.send_request(req).await.unwrap();
            assert_eq!(res.status(), status, "{host}");
        }
    });
}

/// The server looks at a plain connection's first bytes to tell HTTP/1 from
/// HTTP/2's preface; bytes that arrive a few at a time are waited for, not
/// taken for one or the other too soon.
#[test]
fn first_bytes_that_arrive_in_pieces_still_tell_http1_from_http2() {
    use std::io::{Read, Write};
    let running = Running::start(server(), echo_path);
    let pause = || std::thread::sleep(Duration::from_millis(100));

    // "P" could begin the preface; "POST" is HTTP/1.
    let mut conn = Conn::open(running.addr);
    conn.send(b"P");
    pause();
    conn.send(b"OST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n");
    let res = conn.read_response();
    assert_eq!((res.status, res.text()), (200, "/x".to_owned()));

    // The preface in three pieces, then an empty SETTINGS frame: the
    // server's first frame is its own SETTINGS (type 4), not HTTP/1's 400.
    let mut h2 = std::net::TcpStream::connect(running.addr).unwrap();
    h2.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for piece in [
        &b"PR"[..],
        b"I * HTTP/2.0\r\n",
        b"\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0",
    ] {
        h2.write_all(piece).unwrap();
        pause();
    }
    let mut frame_head = [0u8; 9];
    h2.read_exact(&mut frame_head).unwrap();
    assert_eq!(frame_head[3], 4, "{frame_head:?}");
    drop((conn, h2));
    running.stop().unwrap();
}

#[test]
fn curl_sees_its_host_in_the_cgi_view_over_http1_and_h2c() {
    if !external::command("curl", "Debian's curl") {
        return;
    }
    let running = Running::start(
        server(),
        stackway_middleware::Lint::strict(stackway::apps::demo),
    );
    let port = running.addr.port();
    let resolve = format!("shop.example:{port}:127.0.0.1");
    for (flag, protocol) in [
        ("--http1.1", "HTTP/1.1"),
        ("--http2-prior-knowledge", "HTTP/2"),
    ] {
        let out = std::process::Command::new("curl")
            .args(["-sS", flag, "--resolve", &resolve])
            .arg(format!("http://shop.example:{port}/x"))
            .output()
            .unwrap();
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{body}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in [
            format!("HTTP_HOST=shop.example:{port}\n"),
            "SERVER_NAME=shop.example\n".to_owned(),
            format!("SERVER_PORT={port}\n"),
            format!("SERVER_PROTOCOL={protocol}\n"),
        ] {
            assert!(
                body.contains(&line),
                "{flag}: {line:?} missing from\n{body}"
            );
        }
    }
}

#[test]
fn the_environ_comes_from_the_connection() {
    let running = Running::start(server(), stackway::apps::demo);
    let mut conn = Conn::open(running.addr);
    let local_port = conn.reader.get_ref().local_addr().unwrap().port();
    let body = conn.get("/x").text();
    assert!(body.contains("REMOTE_ADDR=127.0.0.1\n"), "{body}");
    assert!(
        body.contains(&format!("REMOTE_PORT={local_port}\n")),
        "{body}"
    );
    assert!(
        body.contains(&format!("SERVER_PORT={}\n", running.addr.port())),
        "{body}"
    );
    assert!(body.contains("REQUEST_SCHEME=http\n"), "{body}");
}

#[test]
fn a_panicking_app_gives_500_and_the_server_goes_on() {
    let app = |req: Request| async move {
        if req.uri().path() == "/panic" {
            panic!("deliberate panic for the test");
        }
        "alive".into_response()
    };
    let running = Running::start(server(), app);
    let mut conn = Conn::open(running.addr);
    assert_eq!(conn.get("/panic").status, 500);
    let mut other = Conn::open(running.addr);
    assert_eq!(other.get("/").text(), "alive");
    running.stop().unwrap();
}

/// Panics in `call` itself, before its future exists, as a middleware that
/// routes or checks in a plain `fn call` may.
struct PanicsWhenCalled;

impl stackway::App for PanicsWhenCalled {
    fn call(&self, req: Request) -> impl Future<Output = stackway::Response> + Send {
        assert_ne!(req.uri().path(), "/panic", "deliberate panic for the test");
        std::future::ready("alive".into_response())
    }
}

#[test]
fn an_app_that_panics_before_its_future_gives_500_too() {
    // Not inside `Lint`: its own future would call the app in a poll, the
    // case the test above covers.
    let running = Running::start(server(), PanicsWhenCalled);
    let mut conn = Conn::open(running.addr);
    let res = conn.get("/panic");
    assert_eq!(res.status, 500);
    assert_eq!(res.header("connection"), Some("close"));
    let mut other = Conn::open(running.addr);
    assert_eq!(other.get("/").text(), "alive");
    running.stop().unwrap();
}

/// Answers `hello` with the `Content-Length` values its path names
/// (`/len/5/6`: two of them), over a body that knows its length or, under
/// `/stream/`, one that does not; under `/head/` over no body at all.
async fn declares_a_length(req: Request) -> stackway::Response {
    let path = req.uri().path().to_owned();
    let mut parts = path.split('/').skip(1);
    let mut res = match parts.next() {
        Some("stream") => stackway::Body::from_chunks([&b"hello"[..]]).into_response(),
        Some("head") => stackway::Body::empty().into_response(),
        _ => "hello".into_response(),
    };
    for length in parts {
        let value = http::HeaderValue::from_str(length).unwrap();
        res.headers_mut()
            .append(http::header::CONTENT_LENGTH, value);
    }
    res
}

#[test]
fn a_content_length_that_does_not_frame_the_response_is_a_500() {
    // Not inside `Lint`, which would make the 500s itself: this is the server's
    // own check, for apps that are not linted. hyper sent no answer at all for
    // a length that is none, and for one that the body did not keep the
    // length with fewer or more bytes after it.
    let running = Running::start(server(), declares_a_length);
    for path in [
        "/len/abc",
        "/len/+5",
        "/len/-1",
        "/len/5/6",
        "/len/3",
        "/len/9",
        "/stream/abc",
        "/len/99999999999999999999",
    ] {
        let mut conn = Conn::open(running.addr);
        let res = conn.get(path);
        assert_eq!(res.status, 500, "{path}");
        assert_eq!(res.header("connection"), Some("close"), "{path}");
        assert!(conn.is_closed(), "{path}");
    }
    // What frames the response stays as the app said, on one connection.
    let mut conn = Conn::open(running.addr);
    for path in ["/len/5", "/len/5/5", "/stream/5", "/len"] {
        let res = conn.get(path);
        assert_eq!((res.status, res.text().as_str()), (200, "hello"), "{path}");
        assert_eq!(res.header("content-length"), Some("5"), "{path}");
    }
    // A streamed body that ends short of its length: what there was, then
    // the connection closed (hyper sent nothing at all).
    let mut short = Conn::open(running.addr);
    short.send(b"GET /stream/9 HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let res = short.read_head();
    assert_eq!((res.status, res.header("content-length")), (200, Some("9")));
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut short.reader, &mut body).expect("closed");
    assert_eq!(body, b"hello");
    // A HEAD's answer may declare the length of the body it leaves out.
    conn.send(b"HEAD /head/5 HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let res = conn.read_head();
    assert_eq!((res.status, res.header("content-length")), (200, Some("5")));
    assert_eq!(conn.get("/len/5").text(), "hello");
    running.stop().unwrap();
}

#[test]
fn bodies_over_the_limit_get_413() {
    let app = |req: Request| async move {
        match req.into_body().collect(usize::MAX).await {
            Ok(body) => format!("read {}", body.len()).into_response(),
            Err(e) => (if e.is_too_large() {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            })
            .into_response(),
        }
    };
    let running = Running::start(server().max_body_size(Some(10)), app);

    // Declared too large: refused before the app runs, and the connection closed.
    let mut conn = Conn::open(running.addr);
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world");
    let res = conn.read_response();
    assert_eq!(res.status, 413);
    assert_eq!(res.header("connection"), Some("close"));
    assert!(conn.is_closed());

    // Chunked, passing the limit as it streams: 413 whatever the app made of it.
    let mut conn = Conn::open(running.addr);
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n");
    assert_eq!(conn.read_response().status, 413);

    // At the limit: accepted.
    let mut conn = Conn::open(running.addr);
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhelloworld");
    assert_eq!(conn.read_response().text(), "read 10");
}

#[test]
fn the_servers_own_errors_carry_its_pages() {
    let app = |req: Request| async move {
        match req.uri().path() {
            "/panic" => panic!("deliberate panic for the test"),
            "/refuse" => return StatusCode::BAD_REQUEST.into_response(),
            _ => {}
        }
        match req.into_body().collect(usize::MAX).await {
            Ok(body) => format!("read {}", body.len()).into_response(),
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    };
    let html = http::HeaderValue::from_static("text/html; charset=utf-8");
    let server = server()
        .max_body_size(Some(10))
        .error_page(StatusCode::BAD_REQUEST, html.clone(), "<h1>bad</h1>")
        .error_page(
            StatusCode::PAYLOAD_TOO_LARGE,
            html.clone(),
            "<h1>large</h1>",
        )
        .error_page(StatusCode::INTERNAL_SERVER_ERROR, html, "<h1>oops</h1>");
    let running = Running::start(server, app);

    let cases: [(&[u8], u16, &str); 4] = [
        (b"GET / HTTP/1.1\r\n\r\n", 400, "<h1>bad</h1>"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world", 413, "<h1>large</h1>"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n", 413, "<h1>large</h1>"),
        (b"GET /panic HTTP/1.1\r\nHost: x\r\n\r\n", 500, "<h1>oops</h1>"),
    ];
    for (request, status, page) in cases {
        let mut conn = Conn::open(running.addr);
        conn.send(request);
        let res = conn.read_response();
        assert_eq!(res.status, status, "{}", String::from_utf8_lossy(request));
        assert_eq!(res.text(), page);
        assert_eq!(res.header("content-type"), Some("text/html; charset=utf-8"));
        assert_eq!(res.header("connection"), Some("close"));
    }
    // The app's own 400 is the app's: the server's pages are for its own errors.
    let mut conn = Conn::open(running.addr);
    let res = conn.get("/refuse");
    assert_eq!(res.status, 400);
    assert_ne!(res.text(), "<h1>bad</h1>");
    running.stop().unwrap();
}

#[test]
fn a_413_reaches_a_client_that_keeps_sending_its_body() {
    let running = Running::start(server().max_body_size(Some(1000)), echo_path);
    let stream = std::net::TcpStream::connect(running.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sending = std::thread::spawn(move || {
        let _ = writer.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 8000000\r\n\r\n");
        for _ in 0..125 {
            if writer.write_all(&[b'x'; 64 * 1024]).is_err() {
                break;
            }
        }
    });
    // The server answers before the body is in and closes; lingering keeps the
    // kernel from resetting the connection under the unread response.
    let mut conn = Conn {
        reader: std::io::BufReader::new(stream),
    };
    assert_eq!(conn.read_response().status, 413);
    sending.join().unwrap();
}

#[test]
fn request_heads_over_the_limit_get_431() {
    let running = Running::start(server().max_header_size(8192), echo_path);
    let mut conn = Conn::open(running.addr);
    let big = "a".repeat(10_000);
    conn.send(format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes());
    assert_eq!(conn.read_response().status, 431);
}

#[test]
fn malformed_requests_get_400_and_a_closed_connection() {
    let running = Running::start(server(), echo_path);
    let cases: [&[u8]; 19] = [
        b"GET / HTTP/1.1\r\n\r\n",                       // no Host
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", // two Hosts
        b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", // two, in any version
        // A Host that is no host (RFC 9110 §7.2): userinfo, a path, a space,
        // a quote, a port that is none or without a name, raw UTF-8.
        b"GET / HTTP/1.1\r\nHost: evil.example@a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\"><b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a:b:c\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: :80\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: \xc3\xa9.example\r\n\r\n",
        // The authority form is CONNECT's alone.
        b"GET a.example:80 HTTP/1.1\r\nHost: a\r\n\r\n",
        // `chunked` twice, or beside a length (RFC 9112 §6.3).
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",           // space before colon
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", // conflicting lengths
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", // invalid length
        b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", // the asterisk form is OPTIONS's alone
        b"POST * HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nab",
        // Two credentials: a check in front and an app behind could each
        // read another (nginx refuses them too).
        b"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Basic YTpi\r\nAuthorization: Basic Yzpk\r\n\r\n",
    ];
    for case in cases {
        let mut conn = Conn::open(running.addr);
        conn.send(case);
        let res = conn.read_response();
        assert_eq!(res.status, 400, "{}", String::from_utf8_lossy(case));
        assert!(conn.is_closed(), "{}", String::from_utf8_lossy(case));
    }
    // HTTP/1.0 does not require Host.
    let mut conn = Conn::open(running.addr);
    conn.send(b"GET /old HTTP/1.0\r\n\r\n");
    assert_eq!(conn.read_response().text(), "/old");
    // Hosts of every valid shape: a name, an address, a port, percent-encoded
    // bytes, and empty (a target without an authority).
    for host in [
        "a.example",
        "127.0.0.1:8000",
        "[::1]:80",
        "ex%41mple",
        "a:",
        "",
    ] {
        let mut conn = Conn::open(running.addr);
        conn.send(format!("GET /ok HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        assert_eq!(conn.read_response().text(), "/ok", "{host}");
    }
    // What the server does not do: a coding it does not know would reach the
    // app still coded, and a tunnel is a forward proxy's (RFC 9112 §6.1,
    // RFC 9110 §9.3.6): 501.
    let cases: [&[u8]; 2] = [
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
    ];
    for case in cases {
        let mut conn = Conn::open(running.addr);
        conn.send(case);
        assert_eq!(
            conn.read_response().status,
            501,
            "{}",
            String::from_utf8_lossy(case)
        );
        assert!(conn.is_closed(), "{}", String::from_utf8_lossy(case));
    }
    // `OPTIONS *` asks about the server as a whole: the app answers it.
    let mut conn = Conn::open(running.addr);
    conn.send(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(conn.read_response().text(), "*");
}

#[test]
fn a_slow_client_is_cut_off_while_others_are_served() {
    let running = Running::start(
        server().header_read_timeout(Duration::from_millis(600)),
        echo_path,
    );
    let mut slow = Conn::open(running.addr);
    let started = Instant::now();
    let mut cut_off = false;
    // One byte every 100 ms of a head that never ends: a slowloris.
    for byte in b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: "
        .iter()
        .chain(b"a".repeat(200).iter())
    {
        if slow.reader.get_mut().write_all(&[*byte]).is_err() {
            cut_off = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        // Meanwhile, another client is served.
        if started.elapsed() < Duration::from_millis(300) {
            assert_eq!(Conn::open(running.addr).get("/other").text(), "/other");
        }
        if slow
            .reader
            .get_ref()
            .peek(&mut [0; 1])
            .is_ok_and(|n| n == 0)
        {
            cut_off = true;
            break;
        }
    }
    assert!(cut_off, "the slow client was never cut off");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(Conn::open(running.addr).get("/after").text(), "/after");
}

use std::io::Write as _;

#[test]
fn a_head_begun_on_a_kept_alive_connection_has_the_header_timeout_not_the_idle_one() {
    let running = Running::start(
        server()
            .header_read_timeout(Duration::from_millis(600))
            .idle_timeout(Duration::from_secs(60)),
        echo_path,
    );
    let mut conn = Conn::open(running.addr);
    assert_eq!(conn.get("/first").text(), "/first");
    std::thread::sleep(Duration::from_millis(400));
    // Half a head, then nothing: cut off 600 ms after its first byte,
    // though the connection's idle clock has 60 s to go.
    conn.send(b"GET /second HTTP/1.1\r\nHost: x\r\n");
    let first_byte = Instant::now();
    conn.assert_closed_after(first_byte, Duration::from_millis(600));
    assert!(first_byte.elapsed() < Duration::from_millis(2_000));
}

#[test]
fn an_idle_keep_alive_connection_is_closed() {
    let running = Running::start(server().idle_timeout(Duration::from_millis(600)), echo_path);
    let mut conn = Conn::open(running.addr);
    assert_eq!(conn.get("/").status, 200);
    // Still open well before the idle timeout, closed by the server after it.
    conn.assert_closed_after(Instant::now(), Duration::from_millis(600));
}

#[test]
fn graceful_shutdown_finishes_the_request_in_flight() {
    shutdown_stops_accepting_and_finishes_a_request_in_flight(server());
}

/// The accept loop waits for a free connection, not a new one, while the one
/// connection allowed is in flight: shutdown stops it there too.
#[test]
fn graceful_shutdown_stops_accepting_while_every_connection_is_taken() {
    shutdown_stops_accepting_and_finishes_a_request_in_flight(server().max_connections(1));
}

fn shutdown_stops_accepting_and_finishes_a_request_in_flight(server: stackway::Server) {
    let arrived = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let app = {
        let (arrived, release) = (arrived.clone(), release.clone());
        move |req: Request| {
            let (arrived, release) = (arrived.clone(), release.clone());
            async move {
                arrived.notify_one();
                release.notified().await;
                format!("finished {}", req.environ().path_info()).into_response()
            }
        }
    };
    let mut running = Running::start(server, app);
    let addr = running.addr;
    let client = std::thread::spawn(move || Conn::open(addr).get("/slow"));
    support::run(arrived.notified());
    running.begin_shutdown();
    // Shutdown has begun: new connections are no longer accepted...
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(addr).is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting after shutdown began"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // ...but the request in flight completes.
    release.notify_one();
    let res = client.join().unwrap();
    assert_eq!((res.status, res.text()), (200, "finished /slow".to_owned()));
    running.stop().unwrap();
}

#[test]
fn a_shutdown_handle_stops_accepting_before_it_returns() {
    let server = server().workers(2);
    let shutdown = server.shutdown_handle();
    let addr = server.local_addr();
    // `/stop` stops the server, then sends a request of its own from another
    // thread while it holds its worker: the other worker must not take it.
    let app = move |req: Request| {
        let late = (req.uri().path() == "/stop").then(|| {
            shutdown.begin();
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let Ok(mut tcp) = std::net::TcpStream::connect(addr) else {
                    return Vec::new();
                };
                tcp.set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                let _ = tcp.write_all(b"GET /late HTTP/1.1\r\nHost: x\r\n\r\n");
                let mut answer = Vec::new();
                let _ = tcp.read_to_end(&mut answer);
                answer
            })
            .join()
            .unwrap()
        });
        let body = match late {
            Some(answer) => format!("late: {}", String::from_utf8_lossy(&answer)),
            None => "served".to_owned(),
        };
        std::future::ready(body.into_response())
    };
    let running = Running::start(server, stackway_middleware::Lint::strict(app));
    assert_eq!(Conn::open(addr).get("/").text(), "served");
    let res = Conn::open(addr).get("/stop");
    assert_eq!((res.status, res.text().as_str()), (200, "late: "));
    running.stop().unwrap();
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[test]
fn shutdown_closes_an_idle_keep_alive_connection_at_once() {
    let running = Running::start(server(), echo_path);
    let mut conn = Conn::open(running.addr);
    assert_eq!(conn.get("/a").text(), "/a");
    let began = Instant::now();
    running.stop().unwrap();
    // Not held for the linger (5 s) that a client still sending gets.
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        began.elapsed()
    );
    assert!(conn.is_closed());
}

#[test]
fn shutdown_drops_requests_still_running_after_the_grace_period() {
    let app = |_req: Request| async { std::future::pending::<stackway::Response>().await };
    let mut running = Running::start(server().grace_period(Duration::from_millis(600)), app);
    let mut conn = Conn::open(running.addr);
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    std::thread::sleep(Duration::from_millis(100));
    let shutdown_at = Instant::now();
    running.begin_shutdown();
    // The request gets its grace period, and is dropped once it is over.
    conn.assert_closed_after(shutdown_at, Duration::from_millis(600));
    running.stop().unwrap();
}

/// Answers with the name of the worker thread that served it, after holding
/// that thread, so that a second connection must be accepted by another worker.
fn which_worker(_req: Request) -> std::future::Ready<stackway::Response> {
    std::thread::sleep(Duration::from_millis(300));
    let name = std::thread::current().name().unwrap_or("").to_owned();
    std::future::ready(name.into_response())
}

/// Two requests, the second sent while the first holds its worker's thread:
/// the names of the workers that answered, sorted.
fn workers_answering(addr: std::net::SocketAddr) -> Vec<String> {
    let first = std::thread::spawn(move || Conn::open(addr).get("/").text());
    std::thread::sleep(Duration::from_millis(100));
    let second = Conn::open(addr).get("/").text();
    let mut names = vec![first.join().unwrap(), second];
    names.sort();
    names
}

#[test]
fn workers_share_the_listener() {
    let running = Running::start(server().workers(2), which_worker);
    assert_eq!(
        workers_answering(running.addr),
        ["stackway-worker-0", "stackway-worker-1"]
    );
    running.stop().unwrap();
}

#[test]
fn uwsgi_connections_queued_while_every_worker_is_busy_are_shared_out() {
    let listener = stackway::server::Listener::bind("127.0.0.1:0")
        .unwrap()
        .uwsgi(true);
    let server = stackway::Server::new([listener]).unwrap().workers(2);
    let running = Running::start(server, stackway_middleware::Lint::strict(which_worker));
    let addr = running.addr;
    // One request a connection, as nginx's uwsgi_pass sends them: the worker
    // that answered, from the body after the response's head.
    let packet = support::http::uwsgi_packet(&[
        ("REQUEST_METHOD", "GET"),
        ("PATH_INFO", "/"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("HTTP_HOST", "x"),
    ]);
    let get = move || {
        let packet = packet.clone();
        std::thread::spawn(move || {
            let answer = support::http::exchange(addr, &packet);
            answer.split_once("\r\n\r\n").unwrap().1.to_owned()
        })
    };
    // Both workers held by a request each...
    let busy = [get(), get()];
    std::thread::sleep(Duration::from_millis(100));
    // ...while four more connections wait in the listener's queue. Each worker
    // serves the connection it accepted before it accepts another, so the
    // first one free does not take all four.
    let queued: Vec<_> = (0..4).map(|_| get()).collect();
    let mut names: Vec<String> = queued.into_iter().map(|q| q.join().unwrap()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names, ["stackway-worker-0", "stackway-worker-1"]);
    for held in busy {
        held.join().unwrap();
    }
    running.stop().unwrap();
}

#[test]
fn a_status_without_a_reason_of_its_own_has_an_empty_one() {
    // hyper wrote `599 <none>`; nginx writes `599 `. A reason the app gave stays.
    let app = |req: Request| async move {
        let mut res = "x".into_response();
        *res.status_mut() = StatusCode::from_u16(599).unwrap();
        if req.uri().path() == "/reason" {
            let reason = hyper::ext::ReasonPhrase::from_static(b"Network Odd");
            res.extensions_mut().insert(reason);
        }
        res
    };
    let running = Running::start(server(), app);
    let uwsgi = stackway::server::Listener::bind("127.0.0.1:0")
        .unwrap()
        .uwsgi(true);
    let behind_nginx = Running::start(stackway::Server::new([uwsgi]).unwrap(), app);
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let answer = support::http::exchange(running.addr, get("/").as_bytes());
    assert!(answer.starts_with("HTTP/1.1 599 \r\n"), "{answer}");
    let answer = support::http::exchange(running.addr, get("/reason").as_bytes());
    assert!(
        answer.starts_with("HTTP/1.1 599 Network Odd\r\n"),
        "{answer}"
    );
    let packet = support::http::uwsgi_packet(&[
        ("REQUEST_METHOD", "GET"),
        ("PATH_INFO", "/"),
        ("HTTP_HOST", "x"),
    ]);
    let answer = support::http::exchange(behind_nginx.addr, &packet);
    assert!(answer.starts_with("HTTP/1.0 599 \r\n"), "{answer}");
}

/// A server stopped by a oneshot, for the async entry points.
fn stoppable() -> (stackway::Server, tokio::sync::oneshot::Sender<()>) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = server().shutdown_on(async move {
        let _ = stopped.await;
    });
    (server, stop)
}

#[test]
fn serve_runs_on_the_callers_multi_threaded_runtime() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (server, stop) = stoppable();
    let addr = server.local_addr();
    let served = runtime.spawn(server.serve(echo_path));
    let clients: Vec<_> = (0..8)
        .map(|i| std::thread::spawn(move || Conn::open(addr).get(&format!("/{i}")).text()))
        .collect();
    for (i, client) in clients.into_iter().enumerate() {
        assert_eq!(client.join().unwrap(), format!("/{i}"));
    }
    stop.send(()).unwrap();
    runtime.block_on(served).unwrap().unwrap();
}

#[test]
fn run_inside_a_runtime_serves_with_its_workers() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (server, stop) = stoppable();
    let addr = server.local_addr();
    let clients = std::thread::spawn(move || {
        let names = workers_answering(addr);
        stop.send(()).unwrap();
        names
    });
    // Called from async code: it must not panic, and blocks until shutdown.
    runtime
        .block_on(async { server.workers(2).run(which_worker) })
        .unwrap();
    assert_eq!(
        clients.join().unwrap(),
        ["stackway-worker-0", "stackway-worker-1"]
    );
}

#[test]
fn binding_a_port_in_use_is_a_bind_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = stackway::Server::bind(taken.local_addr().unwrap()).unwrap_err();
    assert!(err.is_bind(), "{err}");
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.to_lowercase().contains("in use"), "{source}");
}
