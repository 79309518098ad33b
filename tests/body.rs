//! Bodies stream both ways in constant memory.
//!
//! This file is its own test binary, so the process's peak RSS (VmHWM) speaks of
//! these tests alone.

use stackway_test_support as support;

use std::io::Write;

use bytes::Bytes;
use http_body::Body as _;
use stackway::testing::Client;
use stackway::{Body, IntoResponse, Request, Response};
use support::run;

const CHUNK: usize = 64 * 1024;
/// The most of a file one chunk of a file body holds.
const FILE_CHUNK: usize = 256 * 1024;
const TOTAL: usize = 100 * 1024 * 1024;

/// 100 MiB in 64 KiB chunks, made one at a time as they are pulled.
fn hundred_mib() -> Body {
    Body::from_chunks((0..TOTAL / CHUNK).map(|i| Bytes::from(vec![(i % 251) as u8; CHUNK])))
}

/// The process's peak resident memory so far, in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[test]
fn a_100_mib_body_streams_through_the_stack_in_both_directions() {
    run(async {
        // The app streams the upload straight back, counting the chunks it sees.
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let app_seen = seen.clone();
        let app = move |req: Request| {
            let seen = app_seen.clone();
            async move {
                let echo = futures_util::stream::unfold(req.into_body(), move |mut upload| {
                    let seen = seen.clone();
                    async move {
                        let chunk = upload.chunk().await?;
                        seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        Some((chunk, upload))
                    }
                });
                Response::new(Body::from_stream(echo))
            }
        };
        let res = Client::new(app)
            .put("/echo")
            .body(hundred_mib())
            .stream()
            .await;
        assert_eq!(res.status(), 200);
        let mut body = res.into_body();
        let (mut chunks, mut bytes, mut largest) = (0usize, 0usize, 0usize);
        while let Some(chunk) = body.chunk().await {
            let chunk = chunk.unwrap();
            assert_eq!(chunk[0], (chunks % 251) as u8, "chunks arrive in order");
            chunks += 1;
            bytes += chunk.len();
            largest = largest.max(chunk.len());
        }
        assert_eq!(bytes, TOTAL);
        assert_eq!(chunks, TOTAL / CHUNK);
        assert_eq!(largest, CHUNK, "no chunk was merged with another");
        assert_eq!(
            seen.load(std::sync::atomic::Ordering::Relaxed),
            TOTAL / CHUNK
        );
        if let Some(peak) = peak_rss() {
            assert!(
                peak < 48 * 1024 * 1024,
                "peak RSS {peak} bytes: the body was buffered"
            );
        }
    });
}

#[test]
fn file_body_knows_its_length_and_streams_in_chunks() {
    run(async {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..600_000u32).map(|i| (i % 256) as u8).collect();
        file.write_all(&data).unwrap();
        let opened = tokio::fs::File::open(file.path()).await.unwrap();
        let mut body = Body::from_file(opened).await.unwrap();
        assert_eq!(body.size_hint().exact(), Some(600_000));
        let mut read = Vec::new();
        let mut sizes = Vec::new();
        while let Some(chunk) = body.chunk().await {
            let chunk = chunk.unwrap();
            sizes.push(chunk.len());
            read.extend_from_slice(&chunk);
        }
        assert_eq!(read, data);
        assert!(sizes.iter().all(|&n| n <= FILE_CHUNK), "{sizes:?}");
        assert!(sizes.len() >= 2, "{sizes:?}");
    });
}

#[test]
fn a_file_that_shrinks_while_sent_ends_in_an_error_not_a_short_body() {
    run(async {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&[7u8; 100_000]).unwrap();
        let opened = tokio::fs::File::open(file.path()).await.unwrap();
        let body = Body::from_file(opened).await.unwrap();
        file.as_file().set_len(10).unwrap();
        let err = body.collect(usize::MAX).await.unwrap_err();
        assert!(err.is_length_mismatch(), "{err}");
    });
}

#[test]
fn stream_bodies_report_errors_and_sizes() {
    run(async {
        let failing = futures_util::stream::iter([
            Ok(Bytes::from("a")),
            Err(std::io::Error::other("disk on fire")),
        ]);
        let mut body = Body::from_stream(failing);
        assert_eq!(
            body.size_hint().exact(),
            None,
            "a plain stream has no known size"
        );
        assert_eq!(body.chunk().await.unwrap().unwrap(), "a");
        let err = body.chunk().await.unwrap().unwrap_err();
        assert!(err.is_body());
        assert!(err.to_string().contains("disk on fire"), "{err}");
        assert!(body.chunk().await.is_none(), "a failed body ends");

        let long = Body::from_chunks(["abc", "def"]).exact_size(4);
        assert_eq!(long.size_hint().exact(), Some(4));
        assert!(long.collect(100).await.unwrap_err().is_length_mismatch());
    });
}

#[test]
fn collect_refuses_bodies_over_the_limit() {
    run(async {
        assert!(
            Body::from("0123456789")
                .collect(9)
                .await
                .unwrap_err()
                .is_too_large()
        );
        assert_eq!(
            Body::from("0123456789").collect(10).await.unwrap(),
            "0123456789"
        );
        // A stream of unknown length is cut off once it passes the limit.
        let endless = Body::from_chunks(std::iter::repeat_with(|| Bytes::from_static(&[0; 1024])));
        assert!(endless.collect(1 << 20).await.unwrap_err().is_too_large());
    });
}

#[test]
fn response_helpers_set_exact_lengths() {
    let res = "héllo".into_response();
    assert_eq!(res.body().size_hint().exact(), Some(6));
    assert!(Body::empty().is_end_stream());
    assert_eq!(Body::from(()).size_hint().exact(), Some(0));
}

/// A source that can give its next chunk only once the one before was taken
/// (a channel of one), and says when it has given them all.
fn one_at_a_time(
    chunks: Vec<Result<Bytes, std::io::Error>>,
) -> (Body, tokio::sync::oneshot::Receiver<()>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let (done, all_given) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        for chunk in chunks {
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
        let _ = done.send(());
    });
    let body = Body::from_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    (body, all_given)
}

#[test]
fn a_spooled_body_frees_its_source_before_the_client_reads() {
    run(async {
        // 3 MiB through a 256 KiB memory bound: the rest goes to a file.
        let chunks: Vec<_> = (0..48u8).map(|i| Ok(Bytes::from(vec![i; CHUNK]))).collect();
        let (source, all_given) = one_at_a_time(chunks);
        let spooled = source.spool(256 * 1024);
        tokio::time::timeout(std::time::Duration::from_secs(5), all_given)
            .await
            .expect("the source was held by a client that had not read")
            .unwrap();
        let read = spooled.collect(4 << 20).await.unwrap();
        assert_eq!(read.len(), 48 * CHUNK);
        for (i, chunk) in read.chunks(CHUNK).enumerate() {
            assert!(
                chunk.iter().all(|b| usize::from(*b) == i),
                "chunk {i} out of place"
            );
        }
    });
}

#[test]
fn a_spooled_body_keeps_its_error_in_place() {
    run(async {
        let mut chunks: Vec<_> = (0..8).map(|_| Ok(Bytes::from(vec![7; CHUNK]))).collect();
        chunks.push(Err(std::io::Error::other("the app raised")));
        let (source, all_given) = one_at_a_time(chunks);
        let mut spooled = source.spool(CHUNK);
        all_given.await.unwrap();
        let mut read = 0;
        let failed = loop {
            match spooled.chunk().await {
                Some(Ok(chunk)) => read += chunk.len(),
                Some(Err(e)) => break e,
                None => panic!("ended cleanly after {read} bytes"),
            }
        };
        assert_eq!(read, 8 * CHUNK, "every byte before the error");
        assert!(failed.is_body(), "{failed}");
    });
}

#[test]
fn a_spooler_on_a_plain_thread_never_waits_for_the_reader() {
    run(async {
        let (spooler, body) = Body::spooled(256 * 1024);
        // A blocking thread (as a Python thread is) sends 3 MiB and is done
        // before anything reads.
        let sender = std::thread::spawn(move || {
            for i in 0..48u8 {
                spooler.send(Bytes::from(vec![i; CHUNK])).unwrap();
            }
            spooler.trailers(http::HeaderMap::from_iter([(
                http::header::HeaderName::from_static("x-sum"),
                http::HeaderValue::from_static("48"),
            )]));
        });
        sender.join().unwrap();
        let collected = http_body_util::BodyExt::collect(body).await.unwrap();
        assert_eq!(collected.trailers().unwrap()["x-sum"], "48");
        let read = collected.to_bytes();
        assert_eq!(read.len(), 48 * CHUNK);
        for (i, chunk) in read.chunks(CHUNK).enumerate() {
            assert!(
                chunk.iter().all(|b| usize::from(*b) == i),
                "chunk {i} out of place"
            );
        }
        // A reader gone: the sender hears of it.
        let (spooler, body) = Body::spooled(CHUNK);
        drop(body);
        assert!(
            spooler
                .send(Bytes::from_static(b"x"))
                .unwrap_err()
                .is_body()
        );
    });
}

#[test]
fn a_buffered_body_is_whole_with_its_size_or_fails_as_its_source_did() {
    run(async {
        let chunks: Vec<_> = (0..20u8).map(|i| Ok(Bytes::from(vec![i; CHUNK]))).collect();
        let (source, _) = one_at_a_time(chunks);
        let buffered = source.buffer(CHUNK * 4).await.unwrap();
        assert_eq!(buffered.size_hint().exact(), Some(20 * CHUNK as u64));
        assert_eq!(buffered.collect(4 << 20).await.unwrap().len(), 20 * CHUNK);

        let (source, _) = one_at_a_time(vec![
            Ok(Bytes::from_static(b"half")),
            Err(std::io::Error::other("gone")),
        ]);
        assert!(source.buffer(CHUNK).await.is_err());
    });
}

#[test]
fn a_wrapped_body_that_has_ended_says_so_before_it_is_read() {
    // What hyper sees: an ended body ends an HTTP/2 response with its head
    // (a gRPC trailers-only answer), where an empty DATA frame would follow.
    let ended = Body::new(http_body_util::Empty::<Bytes>::new());
    assert!(ended.is_end_stream());
    let pending = Body::new(http_body_util::Full::new(Bytes::from("x")));
    assert!(!pending.is_end_stream());
    run(async {
        assert_eq!(pending.collect(10).await.unwrap(), "x");
        // Declared longer than it is, an empty body still fails when read.
        let short = Body::new(http_body_util::Empty::<Bytes>::new()).exact_size(3);
        assert!(!short.is_end_stream());
        assert!(short.collect(10).await.unwrap_err().is_length_mismatch());
    });
}
