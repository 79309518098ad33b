//! SharedData streams large files in constant memory.
//!
//! This file is its own test binary, so the process's peak RSS (VmHWM) speaks of
//! this test alone.

use stackway_test_support as support;

use stackway::testing::Client;
use stackway_middleware::SharedData;
use support::{peak_rss_kib, run};

#[test]
fn a_20_gib_file_streams_in_constant_memory() {
    const LEN: u64 = 20 << 30;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.bin");
    // Sparse: 20 GiB long, a few blocks on disk, and a marker at the very end.
    std::fs::File::create(&path)
        .unwrap()
        .set_len(LEN - 3)
        .unwrap();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut file, b"END").unwrap();
    let client = Client::new(SharedData::new(stackway::apps::hello).export("/static", dir.path()));
    run(async {
        client
            .head("/static/huge.bin")
            .await
            .assert_header("content-length", &LEN.to_string());
        client
            .get("/static/huge.bin")
            .header("range", "bytes=-5")
            .await
            .assert_status(206)
            .assert_header(
                "content-range",
                &format!("bytes {}-{}/{LEN}", LEN - 5, LEN - 1),
            )
            .assert_text("\0\0END");

        // Stream 256 MiB through the stack and count it: a body read into
        // memory would grow the peak by all of it.
        let before = peak_rss_kib();
        let res = client
            .get("/static/huge.bin")
            .header("range", "bytes=0-268435455")
            .stream()
            .await;
        let mut body = res.into_body();
        let mut total = 0u64;
        while let Some(chunk) = body.chunk().await {
            total += chunk.unwrap().len() as u64;
        }
        assert_eq!(total, 256 << 20);
        let grown = peak_rss_kib().saturating_sub(before);
        assert!(
            grown < 16 * 1024,
            "peak RSS grew by {grown} KiB while streaming 256 MiB"
        );
    });
}
