//! Run with `cargo run --example router`, then try
//! http://127.0.0.1:8000/api/users/42 and http://127.0.0.1:8000/api/files/a/b.txt
//! (another address: `cargo run --example router -- 127.0.0.1:0`).
//!
//! A Router with parameters and methods, mounted under `/api` by a Dispatcher
//! beside the `hello` app; an admin area mounted inside the Router:
//!
//! ```text
//! Dispatcher (/ → hello, /api → Router)
//!   Router: /users/{id} (GET, PUT), /files/{*path} (GET), /admin/... → demo
//! ```

use stackway::http::StatusCode;
use stackway::{Request, RequestExt};
use stackway_middleware::Dispatcher;
use stackway_middleware::router::{RouteParams, Router, get};

async fn show_user(req: Request) -> String {
    let id = req.param("id").unwrap_or_default();
    // SCRIPT_NAME says where the Router is mounted: links stay right under any prefix.
    let base = req.environ().script_name().to_owned();
    format!("user {id}; edit with PUT {base}/users/{id}\n")
}

async fn update_user(req: Request) -> Result<String, StatusCode> {
    let id = req.param("id").unwrap_or_default().to_owned();
    match req.into_body().collect(64 * 1024).await {
        Ok(body) => Ok(format!("user {id} updated with {} bytes\n", body.len())),
        Err(_) => Err(StatusCode::PAYLOAD_TOO_LARGE),
    }
}

async fn file(req: Request) -> String {
    format!("file {}\n", req.param("path").unwrap_or_default())
}

fn main() -> stackway::Result<()> {
    let api = Router::new()
        .route("/users/{id}", get(show_user).put(update_user))
        .route("/files/{*path}", get(file))
        .mount("/admin", stackway::apps::demo)
        .redirect_slash(true);
    let app = Dispatcher::new(stackway::apps::hello).mount("/api", api);
    let addr = std::env::args().nth(1);
    stackway::Server::bind(addr.as_deref().unwrap_or("127.0.0.1:8000"))?
        .when_ready(|addrs| println!("listening on {}", addrs[0]))
        .run(app)
}
