//! Lint: each finding fires for an app (or a middleware) that breaks its rule,
//! and a well-behaved stack passes clean.

use stackway_test_support as support;

use std::future::IntoFuture;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use http::{Method, StatusCode};
use stackway::testing::{Client, RequestBuilder};
use stackway::{Body, IntoResponse, Request, Response};
use stackway_middleware::{Dispatcher, Lint};
use support::run;

/// What `Lint::strict` says about `request` to `app`, if anything.
fn finding(
    app: impl stackway::App,
    request: impl FnOnce(&Client) -> RequestBuilder,
) -> Option<String> {
    let client = Client::new(Lint::strict(app));
    run(async {
        let answered = AssertUnwindSafe(request(&client).into_future())
            .catch_unwind()
            .await;
        answered
            .err()
            .map(|panic| match panic.downcast::<String>() {
                Ok(message) => *message,
                Err(_) => "a panic without a message".to_owned(),
            })
    })
}

fn with_status(status: StatusCode, body: &'static str) -> impl stackway::App {
    move |_req: Request| async move { (status, body).into_response() }
}

fn expect(found: Option<String>, words: &str) {
    let found = found.unwrap_or_else(|| panic!("no finding; expected {words:?}"));
    assert!(found.contains(words), "{found}");
    assert!(found.starts_with("stackway lint: "), "{found}");
}

#[test]
fn bodies_where_none_may_be() {
    expect(
        finding(with_status(StatusCode::NO_CONTENT, "x"), |c| c.get("/")),
        "a 204 response has a body",
    );
    expect(
        finding(with_status(StatusCode::NOT_MODIFIED, "x"), |c| c.get("/")),
        "a 304 response has a body",
    );
    let head = |_req: Request| async { Response::new(Body::from("body")) };
    expect(
        finding(head, |c| c.head("/")),
        "a response to HEAD has a body",
    );
}

#[test]
fn content_length_that_lies() {
    let short = |_req: Request| async {
        let mut res = Response::new(Body::from("four"));
        res.headers_mut()
            .insert("content-length", "10".parse().unwrap());
        res
    };
    expect(
        finding(short, |c| c.get("/")),
        "Content-Length says 10 but the body is 4 bytes",
    );
    let streamed = |_req: Request| async {
        let mut res = Response::new(Body::from_chunks(vec![bytes::Bytes::from("ab")]));
        res.headers_mut()
            .insert("content-length", "3".parse().unwrap());
        res
    };
    expect(
        finding(streamed, |c| c.get("/")),
        "Content-Length says 3 but 2 bytes were sent",
    );
    let nan = |_req: Request| async {
        let mut res = "x".into_response();
        res.headers_mut()
            .insert("content-length", "ten".parse().unwrap());
        res
    };
    expect(finding(nan, |c| c.get("/")), "is not a number");
}

#[test]
fn hop_by_hop_headers_from_the_app() {
    for name in ["connection", "transfer-encoding", "keep-alive", "te"] {
        let app = move |_req: Request| async move {
            let mut res = "x".into_response();
            res.headers_mut().insert(name, "close".parse().unwrap());
            res
        };
        expect(finding(app, |c| c.get("/")), &format!("the app set {name}"));
    }
    let upgrade = |_req: Request| async {
        let mut res = "x".into_response();
        res.headers_mut()
            .insert("upgrade", "websocket".parse().unwrap());
        res
    };
    expect(finding(upgrade, |c| c.get("/")), "Upgrade outside a 101");
}

#[test]
fn not_modified_without_its_validator_and_bad_locations() {
    let bare_304 = |_req: Request| async {
        let mut res = Response::new(Body::empty());
        *res.status_mut() = StatusCode::NOT_MODIFIED;
        res
    };
    expect(
        finding(bare_304, |c| c.get("/").header("if-none-match", "\"v1\"")),
        "a 304 to If-None-Match has no ETag",
    );
    let empty_location = |_req: Request| async {
        let mut res = Response::new(Body::empty());
        *res.status_mut() = StatusCode::FOUND;
        res.headers_mut().insert("location", "".parse().unwrap());
        res
    };
    expect(
        finding(empty_location, |c| c.get("/")),
        "is not a URI reference",
    );
}

#[test]
fn a_well_behaved_stack_passes_clean() {
    let stack = || {
        Dispatcher::new(stackway::apps::hello)
            .mount("/demo", stackway::apps::demo)
            .mount("/status", with_status(StatusCode::NO_CONTENT, ""))
    };
    for (method, path) in [
        (Method::GET, "/"),
        (Method::HEAD, "/x"),
        (Method::GET, "/demo/a%2Fb?x=1"),
        (Method::GET, "/status"),
        (Method::POST, "/demo"),
    ] {
        assert_eq!(
            finding(stack(), |c| c.request(method, path)),
            None,
            "{path}"
        );
    }
}
