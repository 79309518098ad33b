//! 256 MiB each way through the proxy in constant memory: a body buffered
//! anywhere on the way would grow the peak by all of it.
//!
//! This file is its own test binary, so the process's peak RSS (VmHWM) speaks
//! of this test alone; the upstream, the proxy and the client all run in it.

use stackway_test_support as support;

use std::io::{Read, Write};
use std::net::TcpStream;

use bytes::Bytes;
use http_body_util::BodyExt;
use stackway::{Body, IntoResponse, Request};
use stackway_middleware::Proxy;
use support::{Running, peak_rss_kib, server};

const LEN: u64 = 256 << 20;
const CHUNK: usize = 64 * 1024;
static ZEROS: [u8; CHUNK] = [0; CHUNK];

/// `GET` streams 256 MiB of zeros; `POST` counts what it is sent.
async fn upstream(req: Request) -> stackway::Response {
    if req.method() == http::Method::GET {
        let chunks = (0..LEN / CHUNK as u64).map(|_| Bytes::from_static(&ZEROS));
        return Body::from_chunks(chunks).exact_size(LEN).into_response();
    }
    let mut body = req.into_body();
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        total += frame.unwrap().into_data().map_or(0, |d| d.len() as u64);
    }
    total.to_string().into_response()
}

#[test]
fn proxied_bodies_stream_in_constant_memory() {
    let up = Running::start(server(), upstream);
    let proxy = Running::start(server(), Proxy::to(&format!("http://{}", up.addr)));
    // Warm up both servers and the pool, so their buffers are counted before.
    let mut stream = TcpStream::connect(proxy.addr).unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx")
        .unwrap();
    let mut warm = [0; 512];
    let _ = stream.read(&mut warm).unwrap();

    let before = peak_rss_kib();

    // Up: 256 MiB sent from a static buffer, counted by the upstream.
    stream
        .write_all(
            format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {LEN}\r\n\r\n").as_bytes(),
        )
        .unwrap();
    for _ in 0..LEN / CHUNK as u64 {
        stream.write_all(&ZEROS).unwrap();
    }
    let mut res = vec![0; 512];
    let n = stream.read(&mut res).unwrap();
    let res = String::from_utf8_lossy(&res[..n]);
    assert!(res.ends_with(&format!("\r\n\r\n{LEN}")), "{res}");

    // Down: 256 MiB counted as it arrives.
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = vec![0; CHUNK];
    let mut received = 0u64;
    let mut head_end = None;
    let mut head = Vec::new();
    while head_end.is_none() || received < LEN {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {received} bytes");
        match head_end {
            Some(_) => received += n as u64,
            None => {
                head.extend_from_slice(&buf[..n]);
                if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                    head_end = Some(at + 4);
                    received = (head.len() - at - 4) as u64;
                }
            }
        }
    }
    assert_eq!(received, LEN);
    assert!(head.starts_with(b"HTTP/1.1 200 OK\r\n"));

    let grown = peak_rss_kib().saturating_sub(before);
    eprintln!("peak RSS grew by {grown} KiB for 256 MiB each way");
    assert!(
        grown < 16 * 1024,
        "peak RSS grew by {grown} KiB while proxying 256 MiB each way"
    );
}
