//! X-Accel-Redirect over real sockets: an app names a file of an internal
//! export, which is served for the client's range, and is 404 from outside.

use stackway_test_support as support;

use http::StatusCode;
use stackway::{IntoResponse, Request, RequestExt, Response};
use stackway_middleware::shared_data::Export;
use stackway_middleware::{Lint, SharedData};
use support::http::Conn;
use support::{Running, server};

/// `/download/NAME` for whoever says `X-Staff: yes`; the file comes from
/// the internal export, named with the app's own type and disposition.
async fn app(req: Request) -> Response {
    let Some(name) = req
        .environ()
        .path_info()
        .strip_prefix("/download/")
        .map(str::to_owned)
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if req.headers().get("x-staff").is_none_or(|v| v != "yes") {
        return StatusCode::FORBIDDEN.into_response();
    }
    http::Response::builder()
        .header("x-accel-redirect", format!("/protected/{name}"))
        .header("content-type", "application/pdf")
        .header(
            "content-disposition",
            format!("attachment; filename=\"{name}\""),
        )
        .body(stackway::Body::from("the app's body, never sent"))
        .unwrap()
}

#[test]
fn an_app_names_a_protected_file_and_it_is_served_for_the_clients_range() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("report.pdf"), "0123456789").unwrap();
    let stack = SharedData::new(app).export("/protected", Export::dir(dir.path()).internal());
    let running = Running::start(server(), Lint::strict(stack));
    let mut conn = Conn::open(running.addr);

    conn.send(
        b"GET /download/report.pdf HTTP/1.1\r\nHost: x\r\nX-Staff: yes\r\nRange: bytes=2-5\r\n\r\n",
    );
    let part = conn.read_response();
    assert_eq!((part.status, part.text().as_str()), (206, "2345"));
    assert_eq!(part.header("content-range"), Some("bytes 2-5/10"));
    assert_eq!(part.header("content-type"), Some("application/pdf"));
    assert_eq!(
        part.header("content-disposition"),
        Some("attachment; filename=\"report.pdf\"")
    );
    assert!(part.header("x-accel-redirect").is_none());

    // Whoever the app refuses gets its answer; the export itself is not there from outside.
    assert_eq!(conn.get("/download/report.pdf").status, 403);
    assert_eq!(conn.get("/protected/report.pdf").status, 404);
    // A name outside the internal exports (or no such file) is 404, never the app's body.
    conn.send(b"GET /download/missing.pdf HTTP/1.1\r\nHost: x\r\nX-Staff: yes\r\n\r\n");
    assert_eq!(conn.read_response().status, 404);
}
