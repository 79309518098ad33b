//! Every connection makes progress or goes: clients that stop reading a
//! response or stop sending a body are closed after the send and body
//! timeouts, while slow clients that keep going are served.

use stackway_test_support as support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use http::StatusCode;
use stackway::{IntoResponse, Request};
use stackway_middleware::SharedData;
use support::http::Conn;
use support::{Running, server};

const BIG: u64 = 20 << 20;

/// A directory with `big.bin` (20 MiB) and `small.bin` (640 KiB), and the
/// tree's owner, which removes it when dropped.
fn files() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let big = std::fs::File::create(dir.path().join("big.bin")).unwrap();
    big.set_len(BIG).unwrap();
    let small: Vec<u8> = (0..640 * 1024).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("small.bin"), small).unwrap();
    dir
}

fn files_app(dir: &tempfile::TempDir) -> SharedData<fn(Request) -> Hello> {
    SharedData::new(hello as fn(Request) -> Hello).export("/files", dir.path())
}

type Hello = std::future::Ready<stackway::Response>;

fn hello(_req: Request) -> Hello {
    std::future::ready("hello".into_response())
}

/// A connection with a small receive buffer, so that a response it does not
/// read fills the path quickly.
fn small_window(addr: SocketAddr) -> TcpStream {
    support::run(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(16 * 1024).unwrap();
        socket.connect(addr).await.unwrap().into_std().unwrap()
    })
}

/// Sends a GET and then reads nothing.
fn stalled_download(addr: SocketAddr) -> TcpStream {
    let mut stream = small_window(addr);
    stream.set_nonblocking(false).unwrap();
    stream
        .write_all(b"GET /files/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    stream
}

/// Reads what is left until the server's end closes; the bytes read.
fn drain(stream: &mut TcpStream) -> u64 {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = vec![0; 64 * 1024];
    let mut total = 0;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return total,
            Err(e) => panic!("the connection stayed open: {e}"),
        }
    }
}

#[test]
fn a_client_that_stops_reading_is_closed_after_the_send_timeout() {
    let dir = files();
    let running = Running::start(
        server()
            .send_timeout(Duration::from_secs(1))
            .idle_timeout(Duration::from_secs(60)),
        files_app(&dir),
    );
    let started = Instant::now();
    let mut stalled = stalled_download(running.addr);
    std::thread::sleep(Duration::from_millis(2500));
    // The server gave up: what it had written is there, then the end, well
    // short of the 20 MiB promised.
    let read = drain(&mut stalled);
    assert!(read < BIG / 2, "read {read} bytes");
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[test]
fn stalled_downloads_free_their_slots_for_the_next_client() {
    let dir = files();
    let running = Running::start(
        server()
            .max_connections(4)
            .send_timeout(Duration::from_secs(1))
            .idle_timeout(Duration::from_secs(60))
            .header_read_timeout(Duration::from_secs(60)),
        files_app(&dir),
    );
    let started = Instant::now();
    let _stalled: Vec<TcpStream> = (0..4).map(|_| stalled_download(running.addr)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut fifth = Conn::open(running.addr);
    fifth.send(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    // All four slots are held: no answer yet...
    let stream = fifth.reader.get_ref();
    stream
        .set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    let early = stream.peek(&mut [0; 1]);
    assert!(
        early
            .as_ref()
            .is_err_and(|e| matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "answered while every slot was held: {early:?}"
    );
    // ...until the send timeout frees them.
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let res = fifth.read_response();
    assert_eq!((res.status, res.text()), (200, "hello".to_owned()));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "served after {waited:?}"
    );
    assert!(waited < Duration::from_secs(10), "served after {waited:?}");
}

#[test]
fn a_slow_but_steady_download_completes_while_stalled_ones_are_closed() {
    let dir = files();
    let running = Running::start(
        server().send_timeout(Duration::from_secs(2)),
        files_app(&dir),
    );
    let mut stalled = stalled_download(running.addr);
    let mut slow = small_window(running.addr);
    slow.set_nonblocking(false).unwrap();
    slow.write_all(b"GET /files/small.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    // 64 KiB/s, in 4 KiB reads every 62.5 ms, for about ten seconds.
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0; 4096];
    loop {
        let n = slow.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        received.extend_from_slice(&buf[..n]);
        std::thread::sleep(Duration::from_micros(62_500));
    }
    let took = started.elapsed();
    let body_at = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(received.starts_with(b"HTTP/1.1 200 OK\r\n"));
    let body = &received[body_at..];
    assert_eq!(body.len(), 640 * 1024);
    assert!(body.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    assert!(took > Duration::from_secs(6), "not slow: {took:?}");
    // Meanwhile, the client that read nothing was closed.
    assert!(drain(&mut stalled) < BIG / 2);
}

/// Reads the request body; a timeout gets 408, as an app would answer.
async fn read_body(req: Request) -> stackway::Response {
    match req.into_body().collect(usize::MAX).await {
        Ok(body) => format!("{} bytes", body.len()).into_response(),
        Err(e) if e.is_timeout() => StatusCode::REQUEST_TIMEOUT.into_response(),
        Err(e) => format!("error: {e}").into_response(),
    }
}

#[test]
fn a_stalled_upload_fails_the_read_after_the_body_timeout_and_closes() {
    let running = Running::start(server().body_timeout(Duration::from_secs(1)), read_body);
    let mut conn = Conn::open(running.addr);
    let started = Instant::now();
    conn.send(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n0123456789");
    let res = conn.read_response();
    let waited = started.elapsed();
    assert_eq!(res.status, 408);
    assert_eq!(res.header("connection"), Some("close"));
    assert!(
        waited >= Duration::from_millis(900),
        "timed out after {waited:?}"
    );
    assert!(waited < Duration::from_secs(10));
    assert!(conn.is_closed());
}

#[test]
fn a_slow_but_steady_upload_completes() {
    let running = Running::start(server().body_timeout(Duration::from_secs(1)), read_body);
    let mut conn = Conn::open(running.addr);
    conn.send(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n");
    // Four bytes every 300 ms: three seconds in all, never a second without a byte.
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(300));
        conn.send(b"abcd");
    }
    let res = conn.read_response();
    assert_eq!((res.status, res.text()), (200, "40 bytes".to_owned()));
}

#[test]
fn a_stalled_http2_stream_is_reset_and_its_connection_goes_on() {
    let dir = files();
    let running = Running::start(
        server().send_timeout(Duration::from_secs(1)),
        files_app(&dir),
    );
    support::run(async {
        let stream = tokio::net::TcpStream::connect(running.addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .initial_stream_window_size(64 * 1024)
                .initial_connection_window_size(64 << 20)
                .handshake::<_, String>(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let get = |path: &str| {
            http::Request::get(format!("http://localhost{path}"))
                .body(String::new())
                .unwrap()
        };
        // Stream 1 asks for 20 MiB and reads none of it: its window stays shut.
        let stalled = sender.send_request(get("/files/big.bin")).await.unwrap();
        assert_eq!(stalled.status(), 200);
        let started = Instant::now();
        // The connection's other streams are served meanwhile, and after.
        for _ in 0..3 {
            let res = sender.send_request(get("/hello")).await.unwrap();
            let body = http_body_util::BodyExt::collect(res.into_body())
                .await
                .unwrap()
                .to_bytes();
            assert_eq!(body, "hello");
            tokio::time::sleep(Duration::from_millis(800)).await;
        }
        // Stream 1 was reset by the server: reading it now ends in an error.
        let read = http_body_util::BodyExt::collect(stalled.into_body()).await;
        assert!(read.is_err(), "the stalled stream was not reset");
        assert!(started.elapsed() >= Duration::from_secs(1));
        let res = sender.send_request(get("/hello")).await.unwrap();
        assert_eq!(res.status(), 200);
    });
}
