//! Real ASGI 3 apps (`tests/python/asgi_apps.py`, plain asyncio) served over
//! real sockets, beside the server's other apps.

use stackway_test_support as support;

use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::Value;
use stackway_middleware::{Dispatcher, Lint};
use stackway_wsgi::Asgi;
use support::http::Conn;
use support::{Running, server};

/// The app `name` of `tests/python/asgi_apps.py`.
fn app(name: &str) -> Lint<Asgi> {
    stackway_wsgi::python_path("tests/python").unwrap();
    Lint::strict(Asgi::import(&format!("asgi_apps:{name}")).unwrap())
}

fn serve() -> Running {
    let apps = Dispatcher::default()
        .mount("/api", app("scope"))
        .mount("/stream", app("stream"))
        .mount("/upload", app("upload"))
        .mount("/nap", app("nap"))
        .mount("/fails", app("fails"))
        .mount("/fails_late", app("fails_late"))
        .mount("/silent", app("silent"))
        .mount("/endless", app("endless"))
        .mount("/report", app("report"))
        .mount("/events", app("events"))
        .mount("/ws", app("echo"))
        .mount("/push", app("push"))
        .mount("/refuse", app("refuse"))
        .mount("/trailers", app("trailers"))
        .mount("/pathsend", app("pathsend"))
        .mount("/held", app("held"))
        .mount("/fails_after_start", app("fails_after_start"))
        .mount("/shapes", app("shapes"));
    Running::start(server().workers(2), apps)
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn the_scope_is_asgi_3_with_the_mount_as_root_path() {
    let running = serve();
    let mut conn = Conn::open(running.addr);
    conn.send(
        b"POST /api/caf%C3%A9/x?q=%20&r=1 HTTP/1.1\r\nHost: example.org\r\n\
          X-Custom: One\r\nContent-Length: 5\r\n\r\nhello",
    );
    let res = conn.read_response();
    assert_eq!(res.status, 200, "{}", res.text());
    let scope = json(&res.text());
    assert_eq!(scope["type"], "http");
    assert_eq!(scope["asgi"]["version"], "3.0");
    assert_eq!(scope["http_version"], "1.1");
    assert_eq!(scope["method"], "POST");
    assert_eq!(scope["scheme"], "http");
    assert_eq!(scope["root_path"], "/api");
    assert_eq!(scope["path"], "/api/café/x", "decoded, with the root path");
    assert_eq!(scope["raw_path"], "/api/caf%C3%A9/x", "as sent");
    assert_eq!(scope["query_string"], "q=%20&r=1");
    let headers = scope["headers"].as_array().unwrap();
    assert!(
        headers.contains(&serde_json::json!(["x-custom", "One"])),
        "{headers:?}"
    );
    assert!(
        headers.contains(&serde_json::json!(["host", "example.org"])),
        "{headers:?}"
    );
    assert_eq!(scope["client"][0], "127.0.0.1");
    // The listening address, not the Host (the spec's word, and uvicorn's).
    let server = serde_json::json!(["127.0.0.1", running.addr.port()]);
    assert_eq!(scope["server"], server);
    assert_eq!(scope["body"][1], 5);
    let extensions = scope["extensions"].as_object().unwrap();
    assert!(
        extensions.contains_key("http.response.trailers"),
        "{extensions:?}"
    );
    assert!(
        extensions.contains_key("http.response.pathsend"),
        "{extensions:?}"
    );
}

#[test]
fn behind_a_front_that_mounts_the_server_the_prefix_starts_every_path() {
    // uvicorn --root-path /shop: root_path, path and raw_path all start with it.
    let apps = Dispatcher::default().mount("/api", app("scope"));
    let fixed = stackway_middleware::ProxyFix::new(apps).x_prefix(1);
    let running = Running::start(server().workers(1), fixed);
    let mut conn = Conn::open(running.addr);
    conn.send(b"GET /api/caf%C3%A9 HTTP/1.1\r\nHost: x\r\nX-Forwarded-Prefix: /shop\r\n\r\n");
    let res = conn.read_response();
    assert_eq!(res.status, 200, "{}", res.text());
    let scope = json(&res.text());
    assert_eq!(scope["root_path"], "/shop/api");
    assert_eq!(scope["path"], "/shop/api/café");
    assert_eq!(scope["raw_path"], "/shop/api/caf%C3%A9");
}

#[test]
fn a_streamed_response_sends_its_first_chunk_before_the_app_makes_the_last() {
    let running = serve();
    let mut conn = Conn::open(running.addr);
    let asked = Instant::now();
    conn.send(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(conn.read_head().status, 200);
    assert_eq!(conn.read_chunk(), b"first\n");
    assert!(
        asked.elapsed() < Duration::from_millis(800),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(conn.read_chunk(), b"second\n");
    assert!(asked.elapsed() >= Duration::from_millis(900));
}

#[test]
fn the_head_waits_for_the_next_message_only_while_the_app_does_not_wait() {
    let running = serve();
    // Started, then a wait: the head goes out meanwhile.
    let mut conn = Conn::open(running.addr);
    let asked = Instant::now();
    conn.send(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(conn.read_head().status, 200);
    let head_took = asked.elapsed();
    assert!(head_took < Duration::from_millis(500), "{head_took:?}");
    assert_eq!(conn.read_chunk(), b"late");
    assert!(asked.elapsed() >= Duration::from_millis(550));
    // Started, then failed before anything went out: a clean 500.
    let mut conn = Conn::open(running.addr);
    assert_eq!(conn.get("/fails_after_start").status, 500);
}

#[test]
fn trailers_end_the_body_for_a_client_that_asks() {
    let running = serve();
    let mut conn = Conn::open(running.addr);
    conn.send(b"GET /trailers HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n");
    let mut raw = Vec::new();
    conn.reader.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    // The declared trailers, in order; the undeclared one left out.
    assert!(
        body.ends_with("0\r\nx-checksum: abc\r\nx-count: 2\r\n\r\n"),
        "{body:?}"
    );
    assert!(body.contains("one ") && body.contains("two"), "{body:?}");
    // A client that does not ask gets the body alone.
    let res = Conn::open(running.addr).get("/trailers");
    assert_eq!(res.text(), "one two");

    // HTTP/2 sends them all.
    if !support::external::command("curl", "Debian's curl") {
        return;
    }
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "--http2-prior-knowledge",
            "-D",
            "-",
        ])
        .arg(format!("http://{}/trailers", running.addr))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    for trailer in ["x-checksum: abc", "x-count: 2", "x-undeclared: 1"] {
        assert!(out.contains(trailer), "{trailer} missing: {out}");
    }
}

#[test]
fn pathsend_serves_the_file_by_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.bin");
    let data: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let running = serve();
    let mut conn = Conn::open(running.addr);
    let res = conn.get(&format!("/pathsend?{}", path.display()));
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-length"), Some("3145728"));
    assert!(res.body == data, "the body is not the file's bytes");
    // Nothing is out when the path fails: a clean 500, the server goes on.
    for bad in [
        "data.bin",
        "/nonexistent/file",
        &dir.path().display().to_string(),
    ] {
        assert_eq!(conn.get(&format!("/pathsend?{bad}")).status, 500, "{bad}");
    }
    assert_eq!(conn.get("/api").status, 200);
}

#[test]
fn an_upload_reaches_the_app_in_chunks_as_it_asks() {
    let running = serve();
    let mut conn = Conn::open(running.addr);
    let len = 8 << 20;
    conn.send(
        format!("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n").as_bytes(),
    );
    conn.send(&vec![b'u'; len]);
    let res = conn.read_response();
    let text = res.text();
    let (chunks, total) = text.split_once(' ').unwrap();
    assert_eq!(total, len.to_string());
    assert!(chunks.parse::<u32>().unwrap() > 2, "{text}");
    // A small body of known length comes whole, its one message saying it
    // is the last (`more_body` false), as uvicorn sends it.
    conn.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(conn.read_response().text(), "1 5");
}

#[test]
fn five_hundred_requests_sleep_at_once_on_one_loop() {
    let running = serve();
    let addr = running.addr;
    let started = Instant::now();
    let clients: Vec<_> = (0..500)
        .map(|_| std::thread::spawn(move || Conn::open(addr).get("/nap").text()))
        .collect();
    for client in clients {
        assert_eq!(client.join().unwrap(), "rested");
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn a_failing_app_is_a_500_or_an_aborted_body_and_the_server_goes_on() {
    let running = serve();
    let mut conn = Conn::open(running.addr);
    assert_eq!(conn.get("/fails").status, 500);
    assert_eq!(conn.get("/silent").status, 500);
    // A content-length that is no length: the app's mistake, not an
    // answerless connection. Served bare: `Lint::strict` would make the
    // 500 itself.
    let bare = Running::start(server(), Asgi::import("asgi_apps:bad_length").unwrap());
    assert_eq!(Conn::open(bare.addr).get("/").status, 500);
    // Once the head is out, the body ends without its last chunk.
    let mut late = Conn::open(running.addr);
    late.send(b"GET /fails_late HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(late.read_head().status, 200);
    let mut rest = Vec::new();
    let _ = late.reader.read_to_end(&mut rest);
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("partial"), "{rest:?}");
    assert!(
        !rest.ends_with("0\r\n\r\n"),
        "ended as if complete: {rest:?}"
    );
    assert_eq!(Conn::open(running.addr).get("/api").status, 200);
}

#[test]
fn headers_as_lists_and_a_bytearray_body_are_taken_and_a_text_body_is_a_500() {
    let running = serve();
    let mut conn = Conn::open(running.addr);
    // The spec's headers are an iterable of `[name, value]`: lists were a 500.
    let res = conn.get("/shapes/lists");
    assert_eq!(res.status, 200);
    assert_eq!(res.header("x-listed"), Some("yes"));
    assert_eq!(res.text(), "from a bytearray");
    // A body that is no bytes fails before the head goes: a 500, not a 200
    // whose body is cut off.
    assert_eq!(conn.get("/shapes/text").status, 500);
}

#[test]
fn send_waits_for_a_slow_client_and_the_app_hears_it_go() {
    let running = serve();
    let mut reader = Conn::open(running.addr);
    reader.send(b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(reader.read_head().status, 200);
    // The client reads nothing: what the app could send stays bounded.
    std::thread::sleep(Duration::from_millis(1000));
    let report = |addr| json(&Conn::open(addr).get("/report").text());
    let sent = report(running.addr)["sent"].as_u64().unwrap();
    assert!(
        sent < 32 << 20,
        "{sent} bytes sent to a client that reads nothing"
    );
    std::thread::sleep(Duration::from_millis(300));
    let later = report(running.addr)["sent"].as_u64().unwrap();
    assert_eq!(later, sent, "the app kept sending");
    drop(reader);
    let gone = Instant::now();
    while report(running.addr)["disconnects"] != 1 {
        assert!(
            gone.elapsed() < Duration::from_secs(5),
            "no http.disconnect"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn lifespan_startup_fills_the_state_and_shutdown_is_heard() {
    stackway_wsgi::python_path("tests/python").unwrap();
    let asgi = Asgi::import("asgi_apps:lifespan").unwrap();
    // Apps without lifespan support serve all the same.
    Asgi::import("asgi_apps:nap").unwrap().startup().unwrap();
    asgi.startup().unwrap();
    let apps = Dispatcher::default()
        .mount("/life", Lint::strict(asgi.clone()))
        .mount("/report", app("report"));
    let running = Running::start(server().workers(2), apps);
    assert_eq!(Conn::open(running.addr).get("/life").text(), "started");
    asgi.shutdown();
    let report = json(&Conn::open(running.addr).get("/report").text());
    assert_eq!(report["shutdowns"], 1, "{report}");
    let failed = Asgi::import("asgi_apps:broken_startup")
        .unwrap()
        .startup()
        .unwrap_err();
    assert!(
        failed.to_string().contains("the database is not there"),
        "{failed}"
    );
}

#[test]
fn server_sent_events_and_http2() {
    if !support::external::command("curl", "Debian's curl") {
        return;
    }
    let running = serve();
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let base = format!("http://{}", running.addr);
    let events = curl(&["-N", &format!("{base}/events")]);
    assert_eq!(
        events,
        "id: 0\ndata: tick 0\n\nid: 1\ndata: tick 1\n\nid: 2\ndata: tick 2\n\n"
    );
    let scope = json(&curl(&[
        "--http2-prior-knowledge",
        &format!("{base}/api/x"),
    ]));
    assert_eq!(scope["http_version"], "2");
    assert_eq!(scope["path"], "/api/x");
}

#[test]
fn a_websocket_echoes_text_and_bytes_and_closes_with_codes_both_ways() {
    use tungstenite::client::IntoClientRequest;
    use tungstenite::protocol::CloseFrame;
    use tungstenite::protocol::frame::coding::CloseCode;
    use tungstenite::{Message, connect};

    let running = serve();
    let url = format!("ws://{}/ws/room", running.addr);
    let mut request = url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "chat, other".parse().unwrap());
    let (mut socket, res) = connect(request).unwrap();
    assert_eq!(res.status(), 101);
    assert_eq!(res.headers()["sec-websocket-protocol"], "chat");
    assert_eq!(res.headers()["x-echo"], "/ws/room");
    socket.send(Message::text("hello")).unwrap();
    assert_eq!(socket.read().unwrap(), Message::text("hello"));
    socket.send(Message::binary(vec![0, 1, 2, 255])).unwrap();
    assert_eq!(socket.read().unwrap(), Message::binary(vec![0, 1, 2, 255]));
    // The server answers pings.
    socket
        .send(Message::Ping(b"are you there".to_vec().into()))
        .unwrap();
    assert_eq!(
        socket.read().unwrap(),
        Message::Pong(b"are you there".to_vec().into())
    );
    // The app closes with its code and reason.
    socket.send(Message::text("close-me")).unwrap();
    match socket.read().unwrap() {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 4001);
            assert_eq!(frame.reason, "asked");
        }
        other => panic!("expected the app's close, got {other:?}"),
    }
    // The client closes with its code, the server answers with it (RFC 6455
    // §5.5.1), and the app hears it with its reason.
    let (mut socket, _) = connect(url.as_str()).unwrap();
    socket
        .close(Some(CloseFrame {
            code: CloseCode::from(4000),
            reason: "bye".into(),
        }))
        .unwrap();
    match socket.read() {
        Ok(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 4000),
        other => panic!("expected the close answered, got {other:?}"),
    }
    let heard = Instant::now();
    loop {
        let report = json(&Conn::open(running.addr).get("/report").text());
        if report["closed"]
            .as_array()
            .is_some_and(|codes| codes.contains(&4000.into()))
        {
            assert!(
                report["reasons"]
                    .as_array()
                    .unwrap()
                    .contains(&"bye".into()),
                "{report}"
            );
            break;
        }
        assert!(heard.elapsed() < Duration::from_secs(5), "{report}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Closed before accepting: the handshake is refused.
    let refused = connect(format!("ws://{}/refuse", running.addr).as_str());
    match refused {
        Err(tungstenite::Error::Http(res)) => assert_eq!(res.status(), 403),
        other => panic!("expected 403, got {other:?}"),
    }
}

/// An app that only sends never asks for a message: the client's ping and
/// close are answered all the same, as uvicorn answers them, and its next
/// `send` raises an `OSError` (ASGI 2.4), which ends its loop.
#[test]
fn a_websocket_app_that_only_sends_still_answers_pings_and_a_close() {
    use tungstenite::protocol::CloseFrame;
    use tungstenite::protocol::frame::coding::CloseCode;
    use tungstenite::stream::MaybeTlsStream;
    use tungstenite::{Message, connect};

    let running = serve();
    let (mut socket, _) = connect(format!("ws://{}/push", running.addr)).unwrap();
    if let MaybeTlsStream::Plain(tcp) = socket.get_ref() {
        tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    }
    assert_eq!(socket.read().unwrap(), Message::text("tick"));
    socket
        .send(Message::Ping(b"there?".to_vec().into()))
        .unwrap();
    let answer = loop {
        match socket.read() {
            Ok(Message::Text(_)) => continue,
            other => break other,
        }
    };
    assert_eq!(answer.unwrap(), Message::Pong(b"there?".to_vec().into()));
    socket
        .close(Some(CloseFrame {
            code: CloseCode::from(4002),
            reason: "done".into(),
        }))
        .unwrap();
    let answer = loop {
        match socket.read() {
            Ok(Message::Text(_)) => continue,
            other => break other,
        }
    };
    match answer {
        Ok(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 4002),
        other => panic!("expected the close answered, got {other:?}"),
    }
    let closed = Instant::now();
    loop {
        let report = json(&Conn::open(running.addr).get("/report").text());
        if let Some(ended) = report["push"].as_str() {
            assert_eq!(ended, "OSError: the client has gone (code 4002)");
            break;
        }
        assert!(closed.elapsed() < Duration::from_secs(3), "{report}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_over_http2_extended_connect() {
    use futures_util::{SinkExt, StreamExt};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::{Message, protocol::Role};

    let running = serve();
    let tcp = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    let connect = || {
        http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(format!("http://{}/ws/over-h2", running.addr))
            .header("sec-websocket-version", "13")
            .header("sec-websocket-protocol", "chat")
            .extension(hyper::ext::Protocol::from_static("websocket"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    // The server's SETTINGS (extended CONNECT enabled) come first.
    let mut tries = 0;
    let res = loop {
        match sender.send_request(connect()).await {
            Ok(res) => break res,
            Err(_) if tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["sec-websocket-protocol"], "chat");
    assert_eq!(res.headers()["x-echo"], "/ws/over-h2");
    let upgraded = hyper::upgrade::on(res).await.unwrap();
    let mut socket =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    socket.send(Message::text("over h2")).await.unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::text("over h2")
    );
    socket
        .send(Message::binary(vec![7; 100_000]))
        .await
        .unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::binary(vec![7; 100_000])
    );
    socket.send(Message::text("close-me")).await.unwrap();
    match socket.next().await.unwrap().unwrap() {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 4001),
        other => panic!("expected the app's close, got {other:?}"),
    }
}
