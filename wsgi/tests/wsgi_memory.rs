//! 256 MiB up and 256 MiB down through a Python WSGI app in constant memory:
//! the app reads its upload in 64 KiB chunks and yields its download from a
//! generator; neither may sit whole in memory anywhere on the way.
//!
//! This file is its own test binary, so the process's peak RSS (VmHWM) speaks
//! of this test alone; the server, the interpreter and the client all run in it.

use stackway_test_support as support;

use std::io::{Read, Write};
use std::net::TcpStream;

use stackway_wsgi::Wsgi;
use support::http::read_head_raw;
use support::{Running, peak_rss_kib, server};

const LEN: u64 = 256 << 20;
const CHUNK: usize = 64 * 1024;

/// Reads a small chunked response whole.
fn read_chunked(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    while !got.ends_with(b"\r\n0\r\n\r\n") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed mid-response");
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn python_bodies_stream_in_constant_memory() {
    stackway_wsgi::python_path("tests/python").unwrap();
    let running = Running::start(server(), Wsgi::import("wsgi_apps:big").unwrap());
    let mut stream = TcpStream::connect(running.addr).unwrap();
    // Warm up the interpreter, the threads and the buffers before measuring.
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx")
        .unwrap();
    let warm = read_chunked(&mut stream);
    assert!(
        warm.starts_with("HTTP/1.1 200 OK") && warm.contains("\r\n1\r\n1\r\n"),
        "{warm}"
    );

    let before = peak_rss_kib();

    // Up: 256 MiB, counted by the app as it reads.
    stream
        .write_all(
            format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {LEN}\r\n\r\n").as_bytes(),
        )
        .unwrap();
    let zeros = vec![0u8; CHUNK];
    for _ in 0..LEN / CHUNK as u64 {
        stream.write_all(&zeros).unwrap();
    }
    let counted = read_chunked(&mut stream);
    assert!(counted.contains(&format!("\r\n{LEN}\r\n")), "{counted}");

    // Down: 256 MiB from a generator, counted as it arrives.
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (head, first) = read_head_raw(&mut stream);
    assert!(head.contains(&format!("content-length: {LEN}")), "{head}");
    let mut received = first.len() as u64;
    let mut buf = vec![0; CHUNK];
    while received < LEN {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {received} bytes");
        received += n as u64;
    }
    assert_eq!(received, LEN);

    let grown = peak_rss_kib().saturating_sub(before);
    eprintln!("peak RSS grew by {grown} KiB for 256 MiB each way through Python");
    assert!(
        grown < 32 * 1024,
        "peak RSS grew by {grown} KiB while streaming 256 MiB each way through Python"
    );
}
