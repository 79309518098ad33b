//! A FastAPI app, installed from PyPI into a virtualenv the test makes
//! (`target/test-venvs/fastapi`, with uvloop, which the loop then runs on),
//! mounted under a prefix as a user mounts theirs: `site-packages` on the
//! path, `Asgi::import`, `startup`.

use stackway_test_support as support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use stackway_middleware::{Dispatcher, Lint};
use stackway_wsgi::Asgi;
use support::http::{Conn, read_head_raw};
use support::{Running, external, peak_rss_kib, server};

const VENV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/test-venvs/fastapi");

/// The tests one after another: the memory one reads the process's peak.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The FastAPI app mounted at `/api`, its lifespan started; `None` when the
/// venv cannot be made here (the test is then skipped, saying so).
fn serve() -> Option<Running> {
    // uvloop too: the loop runs on it when it is there, as uvicorn's does.
    let site = external::python_venv(VENV.as_ref(), &["fastapi>=0.115,<1", "uvloop"])?;
    stackway_wsgi::python_path(site).unwrap();
    stackway_wsgi::python_path("tests/python").unwrap();
    let app = Asgi::import("fastapi_app:app").unwrap();
    app.startup().unwrap();
    let apps = Dispatcher::default().mount("/api", Lint::strict(app));
    Some(Running::start(server().workers(2), apps))
}

#[test]
fn fastapi_routes_url_for_docs_and_streaming_under_a_mount() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(running) = serve() else { return };
    let mut conn = Conn::open(running.addr);
    let item = conn.get("/api/items/7").text();
    assert_eq!(
        item,
        r#"{"id":7,"url":"http://localhost/api/items/7","greeting":"hello from the lifespan"}"#
    );
    assert_eq!(conn.get("/api/items/seven").status, 422);
    assert_eq!(conn.get("/items/7").status, 404, "only under the mount");
    let docs = conn.get("/api/docs");
    assert_eq!(docs.status, 200);
    assert!(docs.text().contains("/api/openapi.json"), "{}", docs.text());
    let openapi = conn.get("/api/openapi.json").text();
    assert!(openapi.contains(r#""/items/{item_id}""#), "{openapi}");

    // A FileResponse, sent by its path (`http.response.pathsend`).
    let source = conn.get("/api/source");
    assert_eq!(source.status, 200);
    assert_eq!(
        source.header("content-type"),
        Some("text/x-python; charset=utf-8")
    );
    assert!(source.body == std::fs::read("tests/python/fastapi_app.py").unwrap());

    // The first chunk of a StreamingResponse before the app makes the last.
    let asked = Instant::now();
    conn.send(b"GET /api/stream HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(conn.read_head().status, 200);
    let first = conn.read_chunk();
    assert_eq!(first, b"first\n");
    assert!(
        asked.elapsed() < Duration::from_millis(800),
        "{:?}",
        asked.elapsed()
    );
}

#[test]
fn a_fastapi_websocket_echoes_and_hears_the_close() {
    use tungstenite::client::IntoClientRequest;
    use tungstenite::protocol::CloseFrame;
    use tungstenite::{Message, connect};

    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(running) = serve() else { return };
    let url = format!("ws://{}/api/echo", running.addr);
    let mut request = url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "chat".parse().unwrap());
    let (mut socket, res) = connect(request).unwrap();
    assert_eq!(res.headers()["sec-websocket-protocol"], "chat");
    socket.send(Message::text("héllo")).unwrap();
    assert_eq!(socket.read().unwrap(), Message::text("héllo"));
    socket.send(Message::binary(vec![1, 2, 3])).unwrap();
    assert_eq!(socket.read().unwrap(), Message::binary(vec![1, 2, 3]));
    socket.send(Message::text("close-me")).unwrap();
    match socket.read().unwrap() {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 4001),
        other => panic!("expected the app's close, got {other:?}"),
    }
    let (mut socket, _) = connect(url.as_str()).unwrap();
    socket
        .close(Some(CloseFrame {
            code: 4000.into(),
            reason: "bye".into(),
        }))
        .unwrap();
    while socket.read().is_ok() {}
    let asked = Instant::now();
    while !Conn::open(running.addr)
        .get("/api/heard")
        .text()
        .contains("4000")
    {
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "the app did not hear the close"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Refused before accepting (WebSocketException): the handshake gets 403.
    match connect(format!("{url}?deny=1").as_str()) {
        Err(tungstenite::Error::Http(res)) => assert_eq!(res.status(), 403),
        other => panic!("expected 403, got {other:?}"),
    }
}

#[test]
fn fastapi_streams_256_mib_each_way_in_bounded_memory() {
    const LEN: usize = 256 << 20;
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(running) = serve() else { return };
    let mut stream = TcpStream::connect(running.addr).unwrap();
    let upload = |stream: &mut TcpStream, len: usize| {
        let head = format!("POST /api/upload HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        let chunk = vec![b'u'; 64 << 10];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            stream.write_all(&chunk[..n]).unwrap();
            left -= n;
        }
        let (head, body) = read_head_raw(stream);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let want = format!(r#"{{"bytes":{len}}}"#);
        let mut body = body;
        let mut buf = [0; 256];
        while body.len() < want.len() {
            let n = stream.read(&mut buf).unwrap();
            body.extend_from_slice(&buf[..n]);
        }
        assert_eq!(String::from_utf8_lossy(&body), want);
    };
    // Warm up the app, the loop and the buffers before measuring.
    upload(&mut stream, 1 << 20);
    let before = peak_rss_kib();
    upload(&mut stream, LEN);
    stream
        .write_all(
            format!(
                "GET /api/download/{} HTTP/1.1\r\nHost: x\r\n\r\n",
                LEN >> 20
            )
            .as_bytes(),
        )
        .unwrap();
    let (head, first) = read_head_raw(&mut stream);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Chunked: count until the last chunk, roughly (sizes and CRLFs add a little).
    let mut received = first.len();
    let mut tail = first;
    let mut buf = vec![0; 64 << 10];
    while !tail.ends_with(b"\r\n0\r\n\r\n") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {received} bytes");
        received += n;
        // The last bytes so far, for the terminator that may span two reads.
        tail.extend_from_slice(&buf[..n]);
        tail.drain(..tail.len().saturating_sub(8));
    }
    assert!(received > LEN, "{received}");
    let grown = peak_rss_kib().saturating_sub(before);
    eprintln!("peak RSS grew by {grown} KiB for 256 MiB each way through FastAPI");
    assert!(grown < 32 * 1024, "peak RSS grew by {grown} KiB");
}
