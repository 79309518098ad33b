//! axum 0.8 + tower-http's ServeDir: mounts by `nest_service`, static by `ServeDir`.

use axum::Router;
use axum::extract::Path;
use axum::handler::HandlerWithoutStateExt;
use axum::http::Uri;
use axum::routing::get;
use axum::response::Html;
use axum::serve::ListenerExt;
use clap::Parser;
use stackway_peers::{Flags, hello_body, ready};
use tower_http::compression::CompressionLayer;
use tower_http::services::ServeDir;

async fn hello(uri: Uri) -> Html<String> {
    Html(hello_body(uri.path()))
}

/// The `hello-param` scenario's route: `/users/{id}` greets `id`.
async fn user(Path(id): Path<String>) -> Html<String> {
    Html(hello_body(&format!("/{id}")))
}

#[tokio::main]
async fn main() {
    let flags = Flags::parse();
    let mut router = Router::new().route("/users/{id}", get(user));
    for (prefix, dir) in &flags.statics {
        let serve_dir = ServeDir::new(dir);
        router = match prefix.as_str() {
            "" => router.fallback_service(serve_dir),
            prefix => router.nest_service(prefix, serve_dir),
        };
    }
    for prefix in &flags.mounts {
        router = match prefix.as_str() {
            "" => router.fallback_service(hello.into_service()),
            prefix => router.nest_service(prefix, hello.into_service()),
        };
    }
    if flags.compress {
        router = router.layer(CompressionLayer::new());
    }
    let listener = tokio::net::TcpListener::bind(&flags.bind).await.unwrap();
    ready(listener.local_addr().unwrap());
    // TCP_NODELAY, as stackway, hyper-peer and nginx (`tcp_nodelay on`) set it:
    // without it a response written in two parts waits for a delayed ACK.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router).await.unwrap();
}
