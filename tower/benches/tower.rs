//! What crossing between stackway and tower costs, each way: the same app
//! called directly and through the adapter, at the root and under a mount
//! (where the URI is cut for the tower side and restored after).
//!
//! Run with `cargo bench --bench tower`; the crossing is the difference.

use std::convert::Infallible;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use stackway::{App, Body, Request, RequestExt, Response};
use stackway_tower::{FromService, IntoService, OriginalUri};
use tower::{Service, ServiceExt};

/// Readies `service` and calls it, both at once.
fn call_service<S: Service<Request>>(service: &mut S, req: Request) -> S::Response
where
    S::Error: std::fmt::Debug,
{
    let ready = service.ready().now_or_never().unwrap().unwrap();
    ready.call(req).now_or_never().unwrap().unwrap()
}

async fn ok(_req: Request) -> Response {
    Response::new(Body::empty())
}

fn get(target: &str) -> Request {
    http::Request::get(target).body(Body::empty()).unwrap()
}

/// A request below a mount at `/api`, as a Dispatcher hands it on.
fn mounted() -> Request {
    let mut req = get("/api/users/7?x=1");
    req.push_script_name(4);
    req
}

/// The same request as axum's `nest_service("/api", …)` hands it on.
fn nested() -> Request {
    let mut req = get("/users/7?x=1");
    req.extensions_mut()
        .insert(OriginalUri("/api/users/7?x=1".parse().unwrap()));
    req
}

fn tower(c: &mut Criterion) {
    c.bench_function("tower/direct", |b| {
        b.iter_batched(
            || get("/"),
            |req| black_box(App::call(&ok, req).now_or_never().unwrap()),
            BatchSize::SmallInput,
        );
    });

    // The baselines of the mounted crossings: the same requests, called directly.
    c.bench_function("tower/direct_mounted", |b| {
        b.iter_batched(
            mounted,
            |req| black_box(App::call(&ok, req).now_or_never().unwrap()),
            BatchSize::SmallInput,
        );
    });
    c.bench_function("tower/direct_nested", |b| {
        b.iter_batched(
            nested,
            |req| black_box(App::call(&ok, req).now_or_never().unwrap()),
            BatchSize::SmallInput,
        );
    });

    // stackway → tower: a tower service as an app (cloned per call, polled ready).
    let service = tower::service_fn(|_req: Request| async {
        Ok::<_, Infallible>(Response::new(Body::empty()))
    });
    let from_service = FromService::new(service);
    c.bench_function("tower/from_service", |b| {
        b.iter_batched(
            || get("/"),
            |req| black_box(App::call(&from_service, req).now_or_never().unwrap()),
            BatchSize::SmallInput,
        );
    });
    c.bench_function("tower/from_service_mounted", |b| {
        b.iter_batched(
            mounted,
            |req| black_box(App::call(&from_service, req).now_or_never().unwrap()),
            BatchSize::SmallInput,
        );
    });

    // tower → stackway: an app as a service (what axum's nest_service calls).
    let mut service = ok.into_service();
    c.bench_function("tower/into_service", |b| {
        b.iter_batched(
            || get("/"),
            |req| black_box(call_service(&mut service, req)),
            BatchSize::SmallInput,
        );
    });
    c.bench_function("tower/into_service_nested", |b| {
        b.iter_batched(
            nested,
            |req| black_box(call_service(&mut service, req)),
            BatchSize::SmallInput,
        );
    });
}

criterion_group!(benches, tower);
criterion_main!(benches);
