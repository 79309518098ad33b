//! Run with `cargo run -p stackway-tower --example inside_axum`, then open http://127.0.0.1:8000/
//! (another address: `cargo run -p stackway-tower --example inside_axum -- 127.0.0.1:0`).
//!
//! A stackway stack nested in an axum app, served by axum:
//!
//! ```text
//! axum Router (/ → an axum handler, /legacy → the stackway stack:
//!     AccessLog ─▶ SharedData (/static) ─▶ Dispatcher (/env → demo))
//! ```
//!
//! The prefix axum's `nest_service` strips becomes SCRIPT_NAME: `/legacy/env/x`
//! reaches `demo` with SCRIPT_NAME `/legacy/env` and PATH_INFO `/x`.

use std::path::Path;

use stackway_middleware::shared_data::{Export, SharedData};
use stackway_middleware::{AccessLog, Dispatcher};
use stackway_tower::IntoService;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let site = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/static");
    let legacy = AccessLog::new(
        SharedData::new(Dispatcher::default().mount("/env", stackway::apps::demo))
            .export("/static", Export::dir(site)),
    )
    .sink(|line: &str| println!("{line}"));
    let app = axum::Router::new()
        .route(
            "/",
            axum::routing::get(|| async { "axum at /, stackway at /legacy\n" }),
        )
        .nest_service("/legacy", legacy.into_service());

    let addr = std::env::args().nth(1);
    let listener =
        tokio::net::TcpListener::bind(addr.as_deref().unwrap_or("127.0.0.1:8000")).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        })
        .await
}
