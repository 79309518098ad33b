//! Run with `cargo run --example static_files`, then open http://127.0.0.1:8000/
//! (another address: `cargo run --example static_files -- 127.0.0.1:0`).
//!
//! A site whose pages come from `examples/static/` on disk, whose favicon is
//! compiled into the binary, and whose API is an app mounted under `/api`:
//!
//! ```text
//! SharedData (/ → examples/static/, /favicon.ico → bytes) ─▶ Dispatcher (/api → api)
//! ```

use std::path::Path;
use std::time::Duration;

use stackway::{Request, RequestExt};
use stackway_middleware::Dispatcher;
use stackway_middleware::shared_data::{Export, SharedData};

/// The smallest valid ICO file: one transparent 1×1 image.
const FAVICON: &[u8] = &[
    0, 0, 1, 0, 1, 0, 1, 1, 0, 0, 1, 0, 32, 0, 48, 0, 0, 0, 22, 0, 0, 0, 40, 0, 0, 0, 1, 0, 0, 0,
    2, 0, 0, 0, 1, 0, 32, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0,
];

async fn api(req: Request) -> String {
    format!("api: {}\n", req.environ().path_info())
}

fn main() -> stackway::Result<()> {
    let site = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/static");
    let app = SharedData::new(Dispatcher::default().mount("/api", api))
        .export("/", Export::dir(site).max_age(Duration::from_secs(60)))
        .export(
            "/favicon.ico",
            Export::bytes("favicon.ico", FAVICON).immutable(),
        );
    let addr = std::env::args().nth(1);
    stackway::Server::bind(addr.as_deref().unwrap_or("127.0.0.1:8000"))?
        .when_ready(|addrs| println!("listening on {}", addrs[0]))
        .run(app)
}
