//! In-process costs: one call through a stack of 10 middleware, decoding a
//! path, SharedData answering for a small file, and handlers returning
//! something other than a `Response`.
//!
//! Run with `cargo bench --bench stack`.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use stackway::{App, Body, Builder, IntoResponse, Next, Request, RequestExt, Response, from_fn};
use stackway_middleware::SharedData;

async fn ok(_req: Request) -> Response {
    Response::new(Body::empty())
}

fn get(target: &str) -> Request {
    http::Request::get(target).body(Body::empty()).unwrap()
}

/// Calls `app` with a fresh request per iteration; the app must be ready at once.
fn bench_ready(c: &mut Criterion, name: &str, app: &impl App, target: &str) {
    c.bench_function(name, |b| {
        b.iter_batched(
            || get(target),
            |req| black_box(app.call(req).now_or_never().expect("ready at once")),
            BatchSize::SmallInput,
        );
    });
}

/// A middleware that does nothing but call the app it wraps.
struct Pass<A>(A);

impl<A: App> App for Pass<A> {
    async fn call(&self, req: Request) -> Response {
        self.0.call(req).await
    }
}

async fn pass(req: Request, next: Next) -> Response {
    next.run(req).await
}

fn stack(c: &mut Criterion) {
    bench_ready(c, "stack/0_middleware", &ok, "/");
    let structs = Pass(Pass(Pass(Pass(Pass(Pass(Pass(Pass(Pass(Pass(ok))))))))));
    bench_ready(c, "stack/10_middleware", &structs, "/");
    let fns = Builder::new()
        .wrap(from_fn(pass))
        .wrap(from_fn(pass))
        .wrap(from_fn(pass))
        .wrap(from_fn(pass))
        .wrap(from_fn(pass))
        .wrap(from_fn(pass))
        .wrap(from_fn(pass))
        .wrap(from_fn(pass))
        .wrap(from_fn(pass))
        .wrap(from_fn(pass))
        .run(ok);
    bench_ready(c, "stack/10_from_fn", &fns, "/");
}

/// The built-in `hello` app, which the peer benchmark serves: its page at
/// the root, and for a name that needs escaping.
fn hello(c: &mut Criterion) {
    bench_ready(c, "apps/hello", &stackway::apps::hello, "/");
    bench_ready(
        c,
        "apps/hello_escaped",
        &stackway::apps::hello,
        "/%3Cb%3E&amp",
    );
}

/// The same answer (`201 Created`, a short text body) three ways: built as a
/// `Response`, returned as `Result<(StatusCode, &str), Rejection>`, and as
/// `Json` of a short string.
fn into_response(c: &mut Criterion) {
    let response = |_req: Request| async { (http::StatusCode::CREATED, "created").into_response() };
    let result = |_req: Request| async {
        Ok::<_, stackway::Rejection>((http::StatusCode::CREATED, "created"))
    };
    let json = |_req: Request| async { stackway::Json("created") };
    bench_ready(c, "into_response/response", &response, "/");
    bench_ready(c, "into_response/result_status_text", &result, "/");
    bench_ready(c, "into_response/json", &json, "/");
}

/// The Profiler's cost: the same app with and without it.
fn profiler(c: &mut Criterion) {
    bench_ready(c, "profiler/without", &ok, "/");
    bench_ready(
        c,
        "profiler/with",
        &stackway_middleware::Profiler::new(ok),
        "/",
    );
}

/// The Metrics middleware's cost: a Dispatcher with one mount, without and
/// inside `Metrics` (counters, the latency histogram, the mount the Dispatcher
/// notes, bytes from the bodies' exact sizes).
///
/// The requests carry the connection's extension, as the server's do.
fn metrics(c: &mut Criterion) {
    let mut bench = |name, app: &dyn Fn(Request) -> Response| {
        c.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let mut req = get("/api/users");
                    req.extensions_mut().insert(stackway::Connection::default());
                    req
                },
                |req| black_box(app(req)),
                BatchSize::SmallInput,
            );
        });
    };
    let without = stackway_middleware::Dispatcher::default().mount("/api", ok);
    bench("metrics/without", &|req| {
        without.call(req).now_or_never().unwrap()
    });
    let with = stackway_middleware::Metrics::new(
        stackway_middleware::Dispatcher::default().mount("/api", ok),
    );
    bench("metrics/with", &|req| {
        with.call(req).now_or_never().unwrap()
    });
}

fn path(c: &mut Criterion) {
    let req = get("/caf%C3%A9/a%20b/c/d/e?x=1");
    c.bench_function("path/decode", |b| {
        b.iter(|| black_box(black_box(&req).environ().path_info_decoded().len()));
    });
    c.bench_function("path/shift_path_info", |b| {
        b.iter_batched(
            || get("/caf%C3%A9/a%20b/c"),
            |mut req| black_box(req.shift_path_info()),
            BatchSize::SmallInput,
        );
    });
}

fn shared_data(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("css")).unwrap();
    std::fs::write(dir.path().join("css/site.css"), vec![b'x'; 1024]).unwrap();
    let app = SharedData::new(ok).export("/static", dir.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    c.bench_function("shared_data/small_file", |b| {
        b.iter_batched(
            || get("/static/css/site.css"),
            |req| {
                let res = rt.block_on(app.call(req));
                assert_eq!(res.status(), 200);
                black_box(res)
            },
            BatchSize::SmallInput,
        );
    });
    // Large files: kept open by the cache, read from the page cache at once.
    std::fs::write(dir.path().join("1m.bin"), vec![b'y'; 1 << 20]).unwrap();
    let read = |req: Request| {
        rt.block_on(async {
            let res = app.call(req).await;
            assert!(res.status().is_success());
            res.into_body().collect(2 << 20).await.unwrap()
        })
    };
    c.bench_function("shared_data/large_range", |b| {
        b.iter_batched(
            || {
                let mut req = get("/static/1m.bin");
                req.headers_mut()
                    .insert("range", http::HeaderValue::from_static("bytes=1000-1999"));
                req
            },
            |req| black_box(read(req)),
            BatchSize::SmallInput,
        );
    });
    c.bench_function("shared_data/large_file_1m", |b| {
        b.iter_batched(
            || get("/static/1m.bin"),
            |req| black_box(read(req)),
            BatchSize::SmallInput,
        );
    });
    c.bench_function("shared_data/miss_to_app", |b| {
        b.iter_batched(
            || get("/api/users/42"),
            |req| black_box(rt.block_on(app.call(req))),
            BatchSize::SmallInput,
        );
    });
}

criterion_group!(
    benches,
    stack,
    hello,
    into_response,
    profiler,
    metrics,
    path,
    shared_data
);
criterion_main!(benches);
