//! Run with `cargo run -p stackway-tower --example axum_inside`, then open http://127.0.0.1:8000/
//! (another address: `cargo run -p stackway-tower --example axum_inside -- 127.0.0.1:0`).
//!
//! An axum Router mounted by stackway's Dispatcher under `/api`, beside
//! static files and a stackway app; a tower-http layer around it all:
//!
//! ```text
//! TraceLayer (tower-http) ─▶ SharedData (/static) ─▶ Dispatcher (/ → hello, /api → axum Router)
//! ```
//!
//! The axum handlers see the URI below the mount (`/users/7`), as inside
//! axum's own `nest`, and the whole one in `OriginalUri` (`/api/users/7`).

use std::path::Path;

use axum::extract::{OriginalUri, Path as Param};
use axum::routing::get;
use stackway_middleware::Dispatcher;
use stackway_middleware::shared_data::{Export, SharedData};
use stackway_tower::{FromService, TowerLayer};

fn main() -> stackway::Result<()> {
    let api = axum::Router::new().route(
        "/users/{id}",
        get(
            |Param(id): Param<u32>, OriginalUri(original): OriginalUri| async move {
                axum::Json(serde_json::json!({ "id": id, "url": original.to_string() }))
            },
        ),
    );
    let site = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/static");
    let app = stackway::Builder::new()
        .wrap(TowerLayer::new(
            tower_http::trace::TraceLayer::new_for_http(),
        ))
        .run(
            SharedData::new(
                Dispatcher::new(stackway::apps::hello).mount("/api", FromService::new(api)),
            )
            .export("/static", Export::dir(site)),
        );
    let addr = std::env::args().nth(1);
    stackway::Server::bind(addr.as_deref().unwrap_or("127.0.0.1:8000"))?
        .when_ready(|addrs| println!("listening on {}", addrs[0]))
        .run(app)
}
