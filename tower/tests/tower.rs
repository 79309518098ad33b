//! stackway and tower, both ways: axum routers mounted by the Dispatcher, a
//! stackway stack nested in axum, tower-http's layers around stackway apps,
//! failing services, and the URI at each crossing.

use stackway_test_support as support;

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{OriginalUri, Path};
use axum::routing::get;
use http::{Method, StatusCode, Uri};
use stackway::testing::Client;
use stackway::{Builder, IntoResponse, Request, RequestExt, Response};
use stackway_middleware::{Dispatcher, Lint};
use stackway_tower::{FromService, IntoService, TowerLayer};
use tower::ServiceExt;

/// An axum router whose handler says what it saw.
fn users() -> axum::Router {
    axum::Router::new().route(
        "/users/{id}",
        get(
            |Path(id): Path<String>, uri: Uri, OriginalUri(original): OriginalUri| async move {
                format!("id={id} uri={uri} original={original}")
            },
        ),
    )
}

#[tokio::test]
async fn an_axum_router_mounted_by_the_dispatcher_sees_axum_nest_semantics() {
    let app = Lint::strict(
        Dispatcher::new(stackway::apps::hello).mount("/api", FromService::new(users())),
    );
    let client = Client::new(app);
    client
        .get("/api/users/7?x=1")
        .await
        .assert_status(200)
        .assert_text("id=7 uri=/users/7?x=1 original=/api/users/7?x=1");
    // axum's own 404 for what it does not route; the Dispatcher's other mounts go on.
    client.get("/api/nope").await.assert_status(404);
    client
        .get("/")
        .await
        .assert_status(200)
        .assert_text("<h1>Hello, web!</h1>");

    // Nested twice: the outermost URI stays the original.
    let outer = Dispatcher::default().mount(
        "/v2",
        Dispatcher::default().mount("/api", FromService::new(users())),
    );
    Client::new(Lint::strict(outer))
        .get("/v2/api/users/x%20y")
        .await
        .assert_text("id=x y uri=/users/x%20y original=/v2/api/users/x%20y");
}

/// The demo app: it prints the environ it sees.
async fn environ(app: axum::Router, target: &str) -> String {
    let req = http::Request::get(target)
        .body(axum::body::Body::empty())
        .unwrap();
    let res = app.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let body = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test]
async fn a_stackway_dispatcher_nested_in_axum_gets_the_prefix_as_script_name() {
    let legacy = Dispatcher::default().mount("/v1", stackway::apps::demo);
    let app = axum::Router::new()
        .route("/", get(|| async { "axum" }))
        .nest_service("/legacy", Lint::strict(legacy).into_service());
    let page = environ(app.clone(), "/legacy/v1/x?q=1").await;
    assert!(page.contains("SCRIPT_NAME=/legacy/v1\n"), "{page}");
    assert!(page.contains("PATH_INFO=/x\n"), "{page}");
    assert!(page.contains("QUERY_STRING=q=1\n"), "{page}");
    // The mount point itself, with and without its slash.
    let page = environ(app.clone(), "/legacy/v1").await;
    assert!(page.contains("SCRIPT_NAME=/legacy/v1\n"), "{page}");
    assert!(page.contains("PATH_INFO=\n"), "{page}");
    let page = environ(app, "/legacy/v1/").await;
    assert!(
        page.contains("SCRIPT_NAME=/legacy/v1\n") && page.contains("PATH_INFO=/\n"),
        "{page}"
    );
}

#[tokio::test]
async fn a_round_trip_through_axum_keeps_script_name_and_path_info() {
    // Dispatcher /api → axum nest /v1 → stackway demo: SCRIPT_NAME /api/v1.
    let axum_app = axum::Router::new().nest_service("/v1", stackway::apps::demo.into_service());
    let app = Dispatcher::default().mount("/api", FromService::new(axum_app));
    let res = Client::new(Lint::strict(app))
        .get("/api/v1/users?a=b")
        .await;
    let page = res.text();
    assert!(page.contains("SCRIPT_NAME=/api/v1\n"), "{page}");
    assert!(page.contains("PATH_INFO=/users\n"), "{page}");
    assert!(page.contains("REQUEST_URI=/api/v1/users?a=b\n"), "{page}");
}

#[tokio::test]
async fn tower_http_layers_wrap_stackway_apps() {
    use tower_http::compression::CompressionLayer;
    use tower_http::cors::{Any, CorsLayer};
    use tower_http::timeout::TimeoutLayer;
    use tower_http::trace::TraceLayer;

    let text = "stackway ".repeat(1000);
    let body = text.clone();
    let responses = Arc::new(AtomicUsize::new(0));
    let seen = responses.clone();
    let app = Builder::new()
        .wrap(Lint::strict)
        .wrap(TowerLayer::new(TraceLayer::new_for_http().on_response(
            move |res: &http::Response<_>, _latency: Duration, _span: &tracing::Span| {
                assert_eq!(res.status(), 200);
                seen.fetch_add(1, Ordering::Relaxed);
            },
        )))
        .wrap(TowerLayer::new(
            CorsLayer::new()
                .allow_origin(Any)
                .allow_methods([Method::GET]),
        ))
        .wrap(TowerLayer::new(CompressionLayer::new()))
        .run(move |_req: Request| {
            let body = body.clone();
            async move { body.into_response() }
        });
    let client = Client::new(app);

    // Compression: gzip for a client that accepts it, as tower-http documents.
    let res = client.get("/").header("accept-encoding", "gzip").await;
    res.assert_status(200)
        .assert_header("content-encoding", "gzip");
    let mut plain = String::new();
    flate2::read::GzDecoder::new(&res.body()[..])
        .read_to_string(&mut plain)
        .unwrap();
    assert_eq!(plain, text);
    client
        .get("/")
        .await
        .assert_no_header("content-encoding")
        .assert_text(&text);

    // CORS: the preflight is answered by the layer, the app never sees it.
    let preflight = client
        .request(Method::OPTIONS, "/")
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .await;
    preflight
        .assert_status(200)
        .assert_header("access-control-allow-origin", "*");
    assert_eq!(
        responses.load(Ordering::Relaxed),
        3,
        "TraceLayer saw every response"
    );

    // Timeout: 408 for an app slower than the layer allows.
    let slow = Builder::new()
        .wrap(TowerLayer::new(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(50),
        )))
        .run(|_req: Request| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "late".into_response()
        });
    Client::new(slow).get("/").await.assert_status(408);
}

#[tokio::test]
async fn a_failing_service_becomes_a_500() {
    let failing =
        tower::service_fn(|_req: Request| async { Err::<Response, _>("the database is down") });
    Client::new(Lint::strict(FromService::new(failing)))
        .get("/")
        .await
        .assert_status(500);

    // A service that is never ready to take a request, with an error.
    #[derive(Clone)]
    struct Unready;
    impl tower::Service<Request> for Unready {
        type Response = Response;
        type Error = std::io::Error;
        type Future = std::future::Ready<Result<Response, std::io::Error>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Err(std::io::Error::other("overloaded")))
        }
        fn call(&mut self, _: Request) -> Self::Future {
            unreachable!("never ready")
        }
    }
    Client::new(FromService::new(Unready))
        .get("/")
        .await
        .assert_status(500);
}

#[test]
fn a_stackway_stack_serves_from_axum_over_a_real_socket() {
    let app = axum::Router::new().nest_service(
        "/static",
        Lint::strict(|req: Request| async move {
            let env = req.environ();
            format!("{} {}", env.script_name(), env.path_info()).into_response()
        })
        .into_service(),
    );
    support::run(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let page = tokio::task::spawn_blocking(move || {
            support::http::Conn::open(addr).get("/static/css/site.css")
        })
        .await
        .unwrap();
        assert_eq!(page.status, 200);
        assert_eq!(page.text(), "/static /css/site.css");
    });
}
