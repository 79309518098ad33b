//! The cost of one dispatch through a `Dispatcher` with 1, 100 and 10,000 mounts.
//!
//! Run with `cargo bench --bench dispatch`.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use stackway::{App, Body, Request, Response};
use stackway_middleware::Dispatcher;

async fn ok(_req: Request) -> Response {
    Response::new(Body::empty())
}

fn dispatch(c: &mut Criterion) {
    let mut group = c.benchmark_group("dispatch");
    for mounts in [1usize, 100, 10_000] {
        let dispatcher =
            (0..mounts).fold(Dispatcher::default(), |d, i| d.mount(&format!("/m{i}"), ok));
        // The last mounted app, below its prefix: the lookup walks two segments.
        let target = format!("/m{}/users/42", mounts - 1);
        group.bench_function(format!("{mounts}_mounts"), |b| {
            b.iter_batched(
                || {
                    http::Request::get(target.as_str())
                        .body(Body::empty())
                        .unwrap()
                },
                |req| {
                    let res = dispatcher.call(req).now_or_never().expect("ready at once");
                    assert_eq!(res.status(), 200);
                    black_box(res)
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
