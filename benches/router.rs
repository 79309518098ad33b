//! The cost of one routed request through a `Router` with 1, 100 and 10,000
//! routes, each with a parameter.
//!
//! Run with `cargo bench --bench router`.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use stackway::{App, Body, Request, Response};
use stackway_middleware::router::{Router, get};

async fn ok(_req: Request) -> Response {
    Response::new(Body::empty())
}

fn route(c: &mut Criterion) {
    let mut group = c.benchmark_group("router");
    for routes in [1usize, 100, 10_000] {
        let router = (0..routes).fold(Router::new(), |r, i| {
            r.route(&format!("/r{i}/users/{{id}}"), get(ok))
        });
        // The last route added, with its parameter.
        let target = format!("/r{}/users/42", routes - 1);
        group.bench_function(format!("{routes}_routes"), |b| {
            b.iter_batched(
                || {
                    http::Request::get(target.as_str())
                        .body(Body::empty())
                        .unwrap()
                },
                |req| {
                    let res = router.call(req).now_or_never().expect("ready at once");
                    assert_eq!(res.status(), 200);
                    black_box(res)
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, route);
criterion_main!(benches);
