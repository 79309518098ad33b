//! Compress over a 256 MiB generated body in constant memory: a compressor
//! that buffered the body would grow the peak by all of it.
//!
//! This file is its own test binary, so the process's peak RSS (VmHWM) speaks
//! of this test alone.

use stackway_test_support as support;

use bytes::Bytes;
use stackway::testing::Client;
use stackway::{Body, IntoResponse, Request};
use stackway_middleware::Compress;
use support::{peak_rss_kib, run};

const LEN: u64 = 256 << 20;
const CHUNK: usize = 64 * 1024;

#[test]
fn a_256_mib_body_is_compressed_in_constant_memory() {
    // Compressible, but not trivially: a line of text that changes. The
    // counter proves every byte went through the compressor.
    static PRODUCED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let app = |_req: Request| async {
        let chunks = (0..LEN / CHUNK as u64).map(|i| {
            let line = format!("<tr><td>row {i}</td><td>some cell text</td></tr>\n");
            PRODUCED.fetch_add(CHUNK as u64, std::sync::atomic::Ordering::Relaxed);
            Bytes::from(line.repeat(CHUNK / line.len() + 1)[..CHUNK].to_owned())
        });
        Body::from_chunks(chunks).into_response()
    };
    let client = Client::new(Compress::new(app).level(async_compression_level()));
    run(async {
        let before = peak_rss_kib();
        let res = client
            .get("/")
            .header("accept-encoding", "zstd")
            .stream()
            .await;
        assert_eq!(res.headers()["content-encoding"], "zstd");
        let mut body = res.into_body();
        let mut compressed = 0u64;
        while let Some(chunk) = body.chunk().await {
            compressed += chunk.unwrap().len() as u64;
        }
        assert!(
            compressed > 0 && compressed < LEN / 10,
            "{compressed} bytes"
        );
        assert_eq!(PRODUCED.load(std::sync::atomic::Ordering::Relaxed), LEN);
        let grown = peak_rss_kib().saturating_sub(before);
        eprintln!("peak RSS grew by {grown} KiB compressing 256 MiB to {compressed} bytes");
        assert!(grown < 16 * 1024, "peak RSS grew by {grown} KiB");
    });
}

/// The fastest level: the test measures memory, not compression.
fn async_compression_level() -> stackway_middleware::compress::Level {
    stackway_middleware::compress::Level::Fastest
}
