//! 256 MiB each way through both tower adapters in constant memory: a
//! stackway app inside a tower-http layer inside an axum router mounted by
//! the Dispatcher, and an upload the other way.
//!
//! This file is its own test binary, so the process's peak RSS (VmHWM) speaks
//! of this test alone.

use stackway_test_support as support;

use bytes::Bytes;
use futures_util::StreamExt;
use stackway::testing::Client;
use stackway::{Body, Builder, IntoResponse, Request};
use stackway_middleware::Dispatcher;
use stackway_tower::{FromService, IntoService, TowerLayer};
use support::{peak_rss_kib, run};

const LEN: u64 = 256 << 20;
const CHUNK: usize = 64 * 1024;

#[test]
fn bodies_stream_through_both_adapters_in_constant_memory() {
    // Down: stackway app → TraceLayer (tower) → nested in axum → mounted by the Dispatcher.
    let download = |_req: Request| async {
        Body::from_chunks((0..LEN / CHUNK as u64).map(|_| Bytes::from(vec![b'x'; CHUNK])))
            .into_response()
    };
    let layered = Builder::new()
        .wrap(TowerLayer::new(
            tower_http::trace::TraceLayer::new_for_http(),
        ))
        .run(download);
    // Up: an axum handler counting an upload's bytes as they come.
    let upload = axum::routing::post(|body: axum::body::Body| async move {
        let mut stream = body.into_data_stream();
        let mut read = 0u64;
        while let Some(chunk) = stream.next().await {
            read += chunk.unwrap().len() as u64;
        }
        read.to_string()
    });
    let axum_app = axum::Router::new()
        .nest_service("/down", layered.into_service())
        .route("/up", upload);
    let client = Client::new(Dispatcher::default().mount("/axum", FromService::new(axum_app)));
    run(async {
        let before = peak_rss_kib();
        let mut body = client.get("/axum/down/").stream().await.into_body();
        let mut received = 0u64;
        while let Some(chunk) = body.chunk().await {
            received += chunk.unwrap().len() as u64;
        }
        assert_eq!(received, LEN);

        let chunks = (0..LEN / CHUNK as u64).map(|_| Bytes::from(vec![b'y'; CHUNK]));
        let res = client
            .post("/axum/up")
            .body(Body::from_chunks(chunks))
            .await;
        res.assert_status(200).assert_text(&LEN.to_string());
        let grown = peak_rss_kib().saturating_sub(before);
        eprintln!("peak RSS grew by {grown} KiB moving 256 MiB each way");
        assert!(grown < 16 * 1024, "peak RSS grew by {grown} KiB");
    });
}
