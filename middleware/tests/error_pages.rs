//! ErrorPages over real sockets: a page for a dead upstream, an app's own
//! error left alone, the fields kept, and the maintenance switch.

use stackway_test_support as support;

use std::time::Duration;

use http::StatusCode;
use stackway::{IntoResponse, Request, RequestExt, Response};
use stackway_middleware::error_pages::Page;
use stackway_middleware::{Dispatcher, ErrorPages, Lint, Proxy};
use support::http::Conn;
use support::{Running, server};

/// `/own`: an app's own 502 page; `/limited`: a bare 429 with `Retry-After`.
async fn app(req: Request) -> Response {
    match req.environ().path_info() {
        "/own" => {
            let mut res = stackway::Html("<p>the app's own</p>").into_response();
            *res.status_mut() = StatusCode::BAD_GATEWAY;
            res
        }
        "/limited" => {
            let mut res = StatusCode::TOO_MANY_REQUESTS.into_response();
            res.headers_mut()
                .insert("retry-after", "7".parse().unwrap());
            res
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

fn stack(dir: &std::path::Path) -> Dispatcher {
    let page = dir.join("50x.html");
    std::fs::write(&page, "<h1>We will be right back</h1>").unwrap();
    let pages = |app| {
        ErrorPages::new(app)
            .page(502..=504, Page::file(&page).unwrap())
            .page([404, 429], Page::html("<h1>Not here</h1>"))
            .maintenance(dir.join("maintenance"), Duration::from_secs(120))
    };
    Dispatcher::default()
        .mount(
            "/down",
            pages(stackway::BoxApp::new(Proxy::to("http://127.0.0.1:1"))),
        )
        .mount("/app", pages(stackway::BoxApp::new(app)))
}

#[test]
fn a_dead_upstream_gets_the_page_and_an_apps_own_error_stays() {
    let dir = tempfile::tempdir().unwrap();
    let running = Running::start(server(), Lint::strict(stack(dir.path())));
    let mut conn = Conn::open(running.addr);
    let down = conn.get("/down/x");
    assert_eq!(down.status, 502);
    assert_eq!(down.text(), "<h1>We will be right back</h1>");
    assert_eq!(
        down.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let own = conn.get("/app/own");
    assert_eq!(
        (own.status, own.text().as_str()),
        (502, "<p>the app's own</p>")
    );
    let limited = conn.get("/app/limited");
    assert_eq!(
        (limited.status, limited.text().as_str()),
        (429, "<h1>Not here</h1>")
    );
    assert_eq!(limited.header("retry-after"), Some("7"), "the fields stay");
    assert_eq!(conn.get("/app/nothing").text(), "<h1>Not here</h1>");
}

#[test]
fn while_the_maintenance_file_exists_every_request_gets_503() {
    let dir = tempfile::tempdir().unwrap();
    let running = Running::start(server(), Lint::strict(stack(dir.path())));
    let mut conn = Conn::open(running.addr);
    assert_eq!(conn.get("/app/limited").status, 429);
    std::fs::write(dir.path().join("maintenance"), "").unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let res = conn.get("/app/limited");
    assert_eq!(res.status, 503);
    assert_eq!(res.header("retry-after"), Some("120"));
    assert_eq!(res.text(), "<h1>We will be right back</h1>", "the 503 page");
    std::fs::remove_file(dir.path().join("maintenance")).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(conn.get("/app/limited").status, 429);
}

#[test]
fn a_page_can_be_a_path_the_wrapped_app_serves() {
    use stackway_middleware::SharedData;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("errors")).unwrap();
    std::fs::write(
        dir.path().join("errors/50x.html"),
        "<h1>from the export</h1>",
    )
    .unwrap();
    let site =
        SharedData::new(Dispatcher::default().mount("/down", Proxy::to("http://127.0.0.1:1")))
            .export("/errors", dir.path().join("errors"));
    let pages = ErrorPages::new(site)
        .page([502], Page::uri("/errors/50x.html"))
        .page([404], Page::uri("/errors/missing.html"));
    let running = Running::start(server(), Lint::strict(pages));
    let mut conn = Conn::open(running.addr);
    let down = conn.get("/down/x");
    assert_eq!(
        (down.status, down.text().as_str()),
        (502, "<h1>from the export</h1>")
    );
    assert_eq!(
        down.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    // A page the app cannot serve leaves the error as it was.
    let missing = conn.get("/nowhere");
    assert_eq!(
        (missing.status, missing.text().as_str()),
        (404, "404 Not Found")
    );
}
