//! What a gateway policy costs a request it lets through: Access over a few
//! rules, RateLimit under its rate (one client, and one of 100,000), each
//! beside the bare app. The policy's cost is the difference.
//!
//! Run with `cargo bench --bench policies`.

use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use stackway::{App, Body, Connection, Request, Response};
use stackway_middleware::{Access, RateLimit};

async fn ok(_req: Request) -> Response {
    Response::new(Body::empty())
}

/// A request from `client`, as the server makes it.
fn from(client: IpAddr) -> Request {
    let mut req = http::Request::get("/").body(Body::empty()).unwrap();
    req.extensions_mut().insert(Connection {
        remote_addr: Some(SocketAddr::new(client, 40000)),
        ..Connection::default()
    });
    req
}

/// Calls `app` with a request from the client `client(i)` gives for the i-th iteration.
fn bench(c: &mut Criterion, name: &str, app: &impl App, client: impl Fn(u32) -> IpAddr) {
    let mut i = 0u32;
    c.bench_function(name, |b| {
        b.iter_batched(
            || {
                i = i.wrapping_add(1);
                from(client(i))
            },
            |req| black_box(app.call(req).now_or_never().expect("ready at once")),
            BatchSize::SmallInput,
        );
    });
}

fn policies(c: &mut Criterion) {
    let one = |_| IpAddr::from([10, 1, 2, 3]);
    let many = |i: u32| IpAddr::from(((10 << 24) | (i % 100_000)).to_be_bytes());
    bench(c, "policies/bare", &ok, one);
    let access = Access::new(ok)
        .rule("deny 10.9.9.9")
        .and_then(|a| a.rule("allow 10.0.0.0/8"))
        .and_then(|a| a.rule("deny all"))
        .unwrap();
    bench(c, "policies/access_3_rules", &access, one);
    let limit = RateLimit::new(ok).rate(1e9).burst(1000).nodelay();
    bench(c, "policies/rate_limit_one_client", &limit, one);
    bench(c, "policies/rate_limit_100k_clients", &limit, many);
    let both = RateLimit::new(ok)
        .rate(1e9)
        .burst(1000)
        .nodelay()
        .concurrency(1000);
    bench(c, "policies/rate_and_concurrency", &both, one);
}

criterion_group!(benches, policies);
criterion_main!(benches);
