//! The callable interface: apps, middleware, stacks.

use stackway_test_support as support;

use http::StatusCode;
use stackway::testing::Client;
use stackway::{App, Body, BoxApp, Builder, IntoResponse, Request, Response, from_fn};
use support::{Trace, Traced, run, traced};

#[test]
fn closure_is_an_app() {
    run(async {
        let greeting = String::from("hi");
        let app = move |req: Request| {
            let body = format!("{greeting} {}", req.uri().path());
            async move { body.into_response() }
        };
        Client::new(app)
            .get("/there")
            .await
            .assert_status(200)
            .assert_text("hi /there");
    });
}

async fn async_fn_app(req: Request) -> Response {
    req.method().to_string().into_response()
}

#[test]
fn async_fn_is_an_app() {
    run(async {
        Client::new(async_fn_app)
            .post("/")
            .await
            .assert_text("POST");
    });
}

/// An app with state, called through `&self` by every request.
struct Counter {
    hits: std::sync::atomic::AtomicUsize,
}

impl App for Counter {
    async fn call(&self, _req: Request) -> Response {
        let n = self.hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        n.to_string().into_response()
    }
}

#[test]
fn struct_is_an_app_and_keeps_state_across_calls() {
    run(async {
        let client = Client::new(Counter { hits: 0.into() });
        client.get("/").await.assert_text("1");
        client.get("/").await.assert_text("2");
        client.clone().get("/").await.assert_text("3");
    });
}

#[test]
fn builder_stacks_first_written_outermost() {
    run(async {
        let trace = Trace::default();
        let inner_trace = trace.clone();
        let app = Builder::new()
            .wrap(traced("a", &trace))
            .wrap(traced("b", &trace))
            .wrap(traced("c", &trace))
            .run(move |_req: Request| {
                inner_trace.push("app");
                async { "ok".into_response() }
            });
        let res = Client::new(app).get("/").await;
        res.assert_status(200);
        assert_eq!(
            trace.take(),
            ["a in", "b in", "c in", "app", "c out", "b out", "a out"]
        );
        // The innermost changes the response first, the outermost last.
        let order: Vec<_> = res.headers().get_all("x-trace").iter().collect();
        assert_eq!(order, ["c", "b", "a"]);
    });
}

#[test]
fn builder_is_the_same_as_nesting_by_hand() {
    run(async {
        let trace = Trace::default();
        let app = Traced {
            name: "a",
            trace: trace.clone(),
            inner: Traced {
                name: "b",
                trace: trace.clone(),
                inner: stackway::apps::hello,
            },
        };
        Client::new(app).get("/").await.assert_status(200);
        assert_eq!(trace.take(), ["a in", "b in", "b out", "a out"]);
    });
}

#[test]
fn middleware_can_short_circuit() {
    run(async {
        let trace = Trace::default();
        let inner_trace = trace.clone();
        let app = Builder::new()
            .wrap(traced("outer", &trace))
            .wrap(from_fn(|req: Request, next| async move {
                if !req.headers().contains_key("authorization") {
                    return StatusCode::UNAUTHORIZED.into_response();
                }
                next.run(req).await
            }))
            .run(move |_req: Request| {
                inner_trace.push("app");
                async { "secret".into_response() }
            });
        let client = Client::new(app);
        client
            .get("/")
            .await
            .assert_status(401)
            .assert_text("401 Unauthorized");
        assert_eq!(
            trace.take(),
            ["outer in", "outer out"],
            "the app was not called"
        );
        client
            .get("/")
            .header("authorization", "Bearer x")
            .await
            .assert_status(200)
            .assert_text("secret");
        assert_eq!(trace.take(), ["outer in", "app", "outer out"]);
    });
}

#[test]
fn from_fn_changes_the_request_and_the_response() {
    run(async {
        let app = Builder::new()
            .wrap(from_fn(|mut req: Request, next| async move {
                req.headers_mut()
                    .insert("x-request-id", "42".parse().unwrap());
                let mut res = next.run(req).await;
                *res.status_mut() = StatusCode::ACCEPTED;
                res
            }))
            .run(|req: Request| async move {
                let id = req.headers()["x-request-id"].to_str().unwrap().to_owned();
                id.into_response()
            });
        Client::new(app)
            .get("/")
            .await
            .assert_status(202)
            .assert_text("42");
    });
}

#[test]
fn middleware_with_config_stacks_from_a_closure() {
    run(async {
        struct SetHeader<A> {
            inner: A,
            name: &'static str,
            value: &'static str,
        }
        impl<A: App> App for SetHeader<A> {
            async fn call(&self, req: Request) -> Response {
                let mut res = self.inner.call(req).await;
                res.headers_mut()
                    .insert(self.name, self.value.parse().unwrap());
                res
            }
        }
        let app = Builder::new()
            .wrap(|inner| SetHeader {
                inner,
                name: "x-a",
                value: "1",
            })
            .wrap(|inner| SetHeader {
                inner,
                name: "x-a",
                value: "2",
            })
            .run(stackway::apps::hello);
        // The outer one writes last, so its value wins.
        Client::new(app).get("/").await.assert_header("x-a", "1");
    });
}

#[test]
fn box_app_mixes_types_in_one_table_and_shares_state() {
    run(async {
        let counter = BoxApp::new(Counter { hits: 0.into() });
        let table = [
            BoxApp::new(stackway::apps::hello),
            BoxApp::new(|_req: Request| async { "closure".into_response() }),
            counter.clone(),
            BoxApp::new(counter.clone()),
        ];
        let mut bodies = Vec::new();
        for app in &table {
            let res = Client::new(app.clone()).get("/").await;
            bodies.push(res.text());
        }
        assert_eq!(bodies, ["<h1>Hello, web!</h1>", "closure", "1", "2"]);
    });
}

#[test]
fn request_body_reaches_the_app() {
    run(async {
        let app = |req: Request| async move {
            let body = req.into_body().collect(1024).await.unwrap();
            Body::from(body).into_response()
        };
        Client::new(app)
            .put("/")
            .body("payload")
            .await
            .assert_text("payload");
    });
}
