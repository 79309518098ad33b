//! Run with `cargo run --example stack`.
//!
//! Stacks two middleware around the built-in `hello` app and calls the stack
//! in-process, printing what each layer did.

use std::time::Instant;

use stackway::testing::Client;
use stackway::{App, Builder, IntoResponse, Request, Response, apps, from_fn};

/// Logs each request and how long the rest of the stack took.
struct Timing<A>(A);

impl<A: App> App for Timing<A> {
    async fn call(&self, req: Request) -> Response {
        let (method, path) = (req.method().clone(), req.uri().path().to_owned());
        let start = Instant::now();
        let res = self.0.call(req).await;
        println!(
            "{method} {path} -> {} in {:?}",
            res.status(),
            start.elapsed()
        );
        res
    }
}

#[tokio::main]
async fn main() {
    let app = Builder::new()
        .wrap(Timing) // outermost: sees the request first, the response last
        .wrap(from_fn(|req: Request, next| async move {
            if req.uri().path().starts_with("/admin") {
                return http::StatusCode::FORBIDDEN.into_response(); // short-circuit
            }
            next.run(req).await
        }))
        .run(apps::hello);

    let client = Client::new(app);
    for path in ["/", "/world", "/admin/users"] {
        let res = client.get(path).await;
        println!("  {}", res.text());
    }
}
