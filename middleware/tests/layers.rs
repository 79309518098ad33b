//! The everyday layers: Timeout, RequestIds, SetHeaders (all under Lint).

use stackway_test_support as support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::StatusCode;
use stackway::testing::Client;
use stackway::{IntoResponse, Request};
use stackway_middleware::request_id::RequestId;
use stackway_middleware::{BodyLimit, CatchPanic, Lint, ProxyFix, RequestIds, SetHeaders, Timeout};
use support::run;

/// Sets its flag when dropped: proof the app's future was cancelled.
struct Dropped(Arc<AtomicBool>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn timeout_answers_for_a_slow_app_and_drops_it() {
    let cancelled = Arc::new(AtomicBool::new(false));
    let flag = cancelled.clone();
    let slow = move |req: Request| {
        let guard = Dropped(flag.clone());
        async move {
            let _guard = guard;
            if req.uri().path() == "/slow" {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            "in time".into_response()
        }
    };
    let app = Timeout::new(slow, Duration::from_millis(100));
    let client = Client::new(Lint::strict(app));
    run(async {
        client
            .get("/fast")
            .await
            .assert_status(200)
            .assert_text("in time");
        cancelled.store(false, Ordering::Relaxed);
        let started = std::time::Instant::now();
        client.get("/slow").await.assert_status(503);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            cancelled.load(Ordering::Relaxed),
            "the app's future was not dropped"
        );
    });
    let gateway = Timeout::new(
        |_req: Request| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            "never".into_response()
        },
        Duration::from_millis(20),
    )
    .status(StatusCode::GATEWAY_TIMEOUT);
    run(async {
        Client::new(gateway).get("/").await.assert_status(504);
    });
}

#[test]
fn request_ids_are_trusted_only_when_asked() {
    let echo = |req: Request| async move {
        let id = req.extensions().get::<RequestId>().unwrap().to_string();
        let header = req.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_eq!(id, header, "extension and header agree");
        id.into_response()
    };
    let untrusted = Client::new(Lint::strict(RequestIds::new(echo)));
    let trusting = Client::new(Lint::strict(RequestIds::new(echo).trust_incoming(true)));
    run(async {
        let fresh = untrusted
            .get("/")
            .header("x-request-id", "chosen-by-client")
            .await;
        let id = fresh.text();
        assert_ne!(id, "chosen-by-client");
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        fresh.assert_header("x-request-id", &id);
        assert_ne!(untrusted.get("/").await.text(), id, "ids differ");
        trusting
            .get("/")
            .header("x-request-id", "from-the-proxy")
            .await
            .assert_text("from-the-proxy")
            .assert_header("x-request-id", "from-the-proxy");
        let long = "x".repeat(200);
        assert_eq!(
            trusting
                .get("/")
                .header("x-request-id", &long)
                .await
                .text()
                .len(),
            32
        );
    });
}

#[test]
fn set_headers_set_append_if_missing_and_hsts_over_https_only() {
    let app = |_req: Request| async {
        let mut res = "x".into_response();
        res.headers_mut()
            .insert("x-frame-options", "SAMEORIGIN".parse().unwrap());
        res.headers_mut().insert("server", "app".parse().unwrap());
        res.headers_mut().insert("link", "</a>".parse().unwrap());
        res
    };
    let stack = || {
        SetHeaders::secure(app)
            .content_security_policy("default-src 'self'")
            .set("server", "stackway")
            .append("link", "</b>")
    };
    let plain = Client::new(Lint::strict(stack()));
    // Behind a proxy that terminates TLS: https, as ProxyFix says.
    let tls = Client::new(Lint::strict(ProxyFix::new(stack())));
    run(async {
        let res = plain.get("/").await;
        res.assert_header("x-frame-options", "SAMEORIGIN") // the app's own kept
            .assert_header("x-content-type-options", "nosniff")
            .assert_header("referrer-policy", "strict-origin-when-cross-origin")
            .assert_header("content-security-policy", "default-src 'self'")
            .assert_header("server", "stackway")
            .assert_no_header("strict-transport-security");
        let links: Vec<&str> = res
            .headers()
            .get_all("link")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(links, ["</a>", "</b>"]);
        tls.get("/")
            .header("x-forwarded-proto", "https")
            .await
            .assert_header(
                "strict-transport-security",
                "max-age=63072000; includeSubDomains",
            );
    });
}

#[test]
fn body_limit_refuses_declared_and_streamed_bodies_over_it() {
    // An app that ignores its read error: the answer is 413 all the same.
    let careless = |req: Request| async move {
        let read = req.into_body().collect(usize::MAX).await;
        format!("read {:?}", read.map(|b| b.len()).ok()).into_response()
    };
    let app =
        stackway_middleware::Dispatcher::new(careless).mount("/small", BodyLimit::new(careless, 4));
    let client = Client::new(Lint::strict(app));
    run(async {
        client
            .post("/small")
            .body("1234")
            .await
            .assert_text("read Some(4)");
        client.post("/small").body("12345").await.assert_status(413);
        // A streamed body with no Content-Length, over the limit.
        let chunks = vec![bytes::Bytes::from("123"), bytes::Bytes::from("456")];
        client
            .post("/small")
            .body(stackway::Body::from_chunks(chunks))
            .await
            .assert_status(413);
        // Elsewhere, no limit of this layer's.
        client
            .post("/big")
            .body("123456789")
            .await
            .assert_text("read Some(9)");
    });
}

#[test]
fn catch_panic_answers_with_500_or_a_chosen_response() {
    let broken = |_req: Request| async {
        if true {
            panic!("the handler broke");
        }
        "never".into_response()
    };
    let run_one = |app: CatchPanic<_>| run(async move { Client::new(app).get("/").await });
    run_one(CatchPanic::new(broken)).assert_status(500);
    let custom = CatchPanic::new(broken).respond(|message| {
        (StatusCode::SERVICE_UNAVAILABLE, format!("sorry: {message}")).into_response()
    });
    run_one(custom)
        .assert_status(503)
        .assert_text("sorry: the handler broke");
}

/// Panics while making its future, as a router's lookup in a plain `fn call` may.
struct PanicsWhenCalled;

impl stackway::App for PanicsWhenCalled {
    fn call(&self, _req: Request) -> impl Future<Output = stackway::Response> + Send {
        if true {
            panic!("the lookup broke");
        }
        std::future::ready("never".into_response())
    }
}

#[test]
fn catch_panic_catches_a_panic_in_call_itself() {
    let app = CatchPanic::new(PanicsWhenCalled)
        .respond(|message| (StatusCode::SERVICE_UNAVAILABLE, message.to_owned()).into_response());
    run(async move { Client::new(Lint::strict(app)).get("/").await })
        .assert_status(503)
        .assert_text("the lookup broke");
}

#[test]
fn cors_preflights_simple_requests_vary_and_the_credentials_rule() {
    use http::Method;
    use stackway_middleware::Cors;
    let reached = Arc::new(AtomicBool::new(false));
    let flag = reached.clone();
    let app = move |_req: Request| {
        flag.store(true, Ordering::Relaxed);
        async {
            let mut res = "data".into_response();
            res.headers_mut().insert("x-total", "3".parse().unwrap());
            res
        }
    };
    let cors = Cors::new(app)
        .allow_origin("https://app.example")
        .allow_origin_fn(|o| o.ends_with(".partner.example"))
        .allow_headers(["content-type", "x-token"])
        .expose_headers(["x-total"])
        .allow_credentials(true);
    let client = Client::new(Lint::strict(cors));
    run(async {
        let pre = client
            .request(Method::OPTIONS, "/items")
            .header("origin", "https://a.partner.example")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .await;
        pre.assert_status(204)
            .assert_header("access-control-allow-origin", "https://a.partner.example")
            .assert_header("access-control-allow-credentials", "true")
            .assert_header("access-control-allow-methods", "GET, HEAD, POST")
            .assert_header("access-control-allow-headers", "content-type, x-token");
        assert!(
            !reached.load(Ordering::Relaxed),
            "a preflight reached the app"
        );
        let vary: Vec<&str> = pre
            .headers()
            .get_all("vary")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert!(vary.contains(&"origin"), "{vary:?}");
        // The predicate replaced the list: the listed origin is no longer allowed.
        client
            .get("/items")
            .header("origin", "https://app.example")
            .await
            .assert_no_header("access-control-allow-origin")
            .assert_header("vary", "origin");
        client
            .get("/items")
            .header("origin", "https://b.partner.example")
            .await
            .assert_text("data")
            .assert_header("access-control-allow-origin", "https://b.partner.example")
            .assert_header("access-control-expose-headers", "x-total");
        // No Origin: not a CORS request; the answer still varies by origin.
        client
            .get("/items")
            .await
            .assert_no_header("access-control-allow-origin");
    });
    let any = Client::new(Lint::strict(
        Cors::new(stackway::apps::hello).allow_any_origin(),
    ));
    run(async {
        any.get("/")
            .header("origin", "https://anyone.example")
            .await
            .assert_header("access-control-allow-origin", "*")
            .assert_no_header("vary");
    });
    // Any header: a preflight's own list comes back, whatever it names.
    let any_header = Client::new(Lint::strict(
        Cors::new(stackway::apps::hello)
            .allow_origin("https://app.example")
            .allow_any_header(),
    ));
    run(async {
        any_header
            .request(Method::OPTIONS, "/")
            .header("origin", "https://app.example")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type, x-token")
            .await
            .assert_status(204)
            .assert_header("access-control-allow-headers", "content-type, x-token");
        any_header
            .request(Method::OPTIONS, "/")
            .header("origin", "https://app.example")
            .header("access-control-request-method", "GET")
            .await
            .assert_no_header("access-control-allow-headers");
    });
    let refused = std::panic::catch_unwind(|| {
        Cors::new(stackway::apps::hello)
            .allow_any_origin()
            .allow_credentials(true)
    });
    let message = refused.unwrap_err();
    assert!(
        message
            .downcast_ref::<&str>()
            .copied()
            .unwrap_or_default()
            .contains("every site")
    );
    assert!(
        std::panic::catch_unwind(|| Cors::new(stackway::apps::hello)
            .allow_credentials(true)
            .allow_any_origin())
        .is_err()
    );
}
