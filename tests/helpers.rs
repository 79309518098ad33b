//! The request and response helpers: query, JSON, form and multipart bodies,
//! cookies, redirects, server-sent events, state, and handlers using `?`.

use stackway_test_support as support;

use stackway_middleware::Lint;
use std::time::Duration;

use cookie::{Cookie, SameSite};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use stackway::response::{self, Event};
use stackway::testing::Client;
use stackway::{Extract, IntoResponse, Json, Rejection, Request, with_state};
use stackway_middleware::Dispatcher;
use support::http::Conn;
use support::{Running, run, server};

#[derive(Debug, Deserialize, Serialize, PartialEq)]
struct Item {
    name: String,
    qty: u32,
}

/// Echoes the item it reads, with `?` turning a bad body into its 4xx.
async fn json_item(mut req: Request) -> Result<Json<Item>, Rejection> {
    let item: Item = req.json().await?;
    Ok(Json(Item {
        qty: item.qty * 2,
        ..item
    }))
}

#[test]
fn json_bodies_and_every_way_they_go_wrong() {
    let client = Client::new(Lint::strict(json_item));
    run(async {
        client
            .post("/")
            .header("content-type", "application/json; charset=utf-8")
            .body(r#"{"name":"nail","qty":21}"#)
            .await
            .assert_status(200)
            .assert_header("content-type", "application/json")
            .assert_text(r#"{"name":"nail","qty":42}"#);
        client
            .post("/")
            .header("content-type", "application/vnd.api+json")
            .body(r#"{"name":"a","qty":1}"#)
            .await
            .assert_status(200);
        client
            .post("/")
            .header("content-type", "text/plain")
            .body("{}")
            .await
            .assert_status(415)
            .assert_text("expected a body of type application/json\n");
        client.post("/").body("{}").await.assert_status(415);
        let bad = client
            .post("/")
            .header("content-type", "application/json")
            .body("{\n  \"name\": \"nail\",\n  \"qty\": \"many\"\n}")
            .await;
        bad.assert_status(400);
        assert!(bad.text().contains("line 3 column"), "{}", bad.text());
        let huge = format!(r#"{{"name":"{}","qty":1}}"#, "x".repeat(3 << 20));
        client
            .post("/")
            .header("content-type", "application/json")
            .body(huge)
            .await
            .assert_status(413);
    });
}

#[test]
fn query_strings_and_forms() {
    #[derive(Deserialize)]
    struct Search {
        q: String,
        page: Option<u32>,
    }
    let search = |req: Request| async move {
        let search: Search = req.query()?;
        Ok::<_, Rejection>(format!("{} p{}", search.q, search.page.unwrap_or(1)))
    };
    let form = |mut req: Request| async move {
        let item: Item = req.form().await?;
        Ok::<_, Rejection>(format!("{} x{}", item.name, item.qty))
    };
    let app = Dispatcher::default()
        .mount("/search", search)
        .mount("/form", form);
    let client = Client::new(Lint::strict(app));
    run(async {
        client
            .get("/search?q=caf%C3%A9+au+lait&page=2")
            .await
            .assert_text("café au lait p2");
        client.get("/search?q=x").await.assert_text("x p1");
        let bad = client.get("/search?page=two").await;
        bad.assert_status(400);
        assert!(bad.text().starts_with("bad query string"), "{}", bad.text());
        client
            .post("/form")
            .header("content-type", "application/x-www-form-urlencoded")
            .body("name=a+b&qty=3")
            .await
            .assert_text("a b x3");
        client
            .post("/form")
            .header("content-type", "application/x-www-form-urlencoded")
            .body("name=a")
            .await
            .assert_status(400);
        client
            .post("/form")
            .header("content-type", "application/json")
            .body("{}")
            .await
            .assert_status(415);
    });
}

#[test]
fn multipart_uploads_stream_part_by_part_within_limits() {
    let upload = |mut req: Request| async move {
        let mut parts = req.multipart(1024)?;
        let mut seen = Vec::new();
        while let Some(mut field) = parts.next_field().await.map_err(Rejection::from)? {
            let name = field.name().unwrap_or("").to_owned();
            let file = field.file_name().map(str::to_owned);
            let mut len = 0;
            while let Some(chunk) = field.chunk().await.map_err(Rejection::from)? {
                len += chunk.len();
            }
            seen.push(format!("{name}:{}:{len}", file.unwrap_or_default()));
        }
        Ok::<_, Rejection>(seen.join(" "))
    };
    let client = Client::new(Lint::strict(upload));
    let body = |file_len: usize| {
        format!(
            "--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhello\r\n\
             --XyZ\r\nContent-Disposition: form-data; name=\"doc\"; filename=\"a.txt\"\r\n\
             Content-Type: text/plain\r\n\r\n{}\r\n--XyZ--\r\n",
            "d".repeat(file_len)
        )
    };
    run(async {
        client
            .post("/")
            .header("content-type", "multipart/form-data; boundary=XyZ")
            .body(body(1000))
            .await
            .assert_status(200)
            .assert_text("title::5 doc:a.txt:1000");
        client
            .post("/")
            .header("content-type", "multipart/form-data; boundary=XyZ")
            .body(body(5000))
            .await
            .assert_status(413);
        client
            .post("/")
            .header("content-type", "multipart/form-data; boundary=XyZ")
            .body("--XyZ\r\nContent-Disposition: form-data\r\n\r\nno name and no end")
            .await
            .assert_status(400);
        client
            .post("/")
            .header("content-type", "multipart/form-data")
            .body("")
            .await
            .assert_status(415);
    });
}

#[test]
fn cookies_in_and_out_with_their_attributes() {
    let app = |req: Request| async move {
        let seen: Vec<String> = req
            .cookies()
            .iter()
            .map(|c| format!("{}={}", c.name(), c.value()))
            .collect();
        let mut res = seen.join(",").into_response();
        let session = Cookie::build(("session", "a b"))
            .http_only(true)
            .secure(true)
            .same_site(SameSite::Strict)
            .max_age(cookie::time::Duration::hours(1));
        response::set_cookie(&mut res, &req, session.build());
        response::set_cookie(
            &mut res,
            &req,
            Cookie::build(("site", "1")).path("/").build(),
        );
        res
    };
    let client = Client::new(Lint::strict(Dispatcher::default().mount("/shop", app)));
    run(async {
        let res = client
            .get("/shop/cart")
            .header("cookie", "theme=dark; lang=fr%20CA; broken")
            .await;
        res.assert_text("theme=dark,lang=fr CA");
        let set: Vec<&str> = res
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            set,
            [
                "session=a%20b; HttpOnly; SameSite=Strict; Secure; Path=/shop; Max-Age=3600",
                "site=1; Path=/",
            ]
        );
    });
}

#[test]
fn redirects_stay_under_the_mount() {
    let app = |req: Request| async move {
        match req.environ().path_info() {
            "/old" => response::redirect(&req, StatusCode::MOVED_PERMANENTLY, "/new?x=1"),
            "/away" => response::redirect(&req, StatusCode::FOUND, "https://example.com/x"),
            _ => response::redirect(&req, StatusCode::SEE_OTHER, "//cdn.example.com/a"),
        }
    };
    use stackway::RequestExt;
    let client = Client::new(Lint::strict(Dispatcher::new(app).mount("/blog", app)));
    run(async {
        client
            .get("/blog/old")
            .await
            .assert_status(301)
            .assert_header("location", "/blog/new?x=1");
        client
            .get("/old")
            .await
            .assert_header("location", "/new?x=1");
        client
            .get("/blog/away")
            .await
            .assert_status(302)
            .assert_header("location", "https://example.com/x");
        client
            .get("/blog/other")
            .await
            .assert_header("location", "//cdn.example.com/a");
    });
}

#[test]
fn handlers_answer_with_anything_that_becomes_a_response() {
    let app = |req: Request| async move {
        let code: u16 = req
            .query::<Vec<(String, u16)>>()?
            .first()
            .map_or(200, |p| p.1);
        let status = StatusCode::from_u16(code)
            .map_err(|_| (StatusCode::BAD_REQUEST, "no such status"))
            .map_err(stackway::IntoResponse::into_response)?;
        Ok::<_, stackway::Response>((status, format!("status {code}")))
    };
    let client = Client::new(Lint::strict(app));
    run(async {
        client
            .get("/?code=201")
            .await
            .assert_status(201)
            .assert_text("status 201");
        client
            .get("/?code=9999")
            .await
            .assert_status(400)
            .assert_text("no such status");
        client.get("/?code=x").await.assert_status(400);
    });
    let unit = Client::new(Lint::strict(|_req: Request| async {}));
    run(async {
        unit.get("/").await.assert_status(204);
    });
}

#[test]
fn state_reaches_every_request() {
    struct Config {
        greeting: String,
    }
    let app = with_state(
        |req: Request| async move {
            match req.state::<Config>() {
                Some(config) => config.greeting.clone().into_response(),
                None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            }
        },
        Config {
            greeting: "hi".to_owned(),
        },
    );
    run(async {
        Client::new(Lint::strict(app))
            .get("/")
            .await
            .assert_text("hi");
    });
}

#[test]
fn server_sent_events_stream_through_the_server_with_keep_alives() {
    let app = |_req: Request| async {
        let events = futures_util::stream::unfold(0, |n| async move {
            if n == 3 {
                return None;
            }
            // The second event comes late: a keep-alive comment goes out first.
            let wait = if n == 1 { 400 } else { 10 };
            tokio::time::sleep(Duration::from_millis(wait)).await;
            let event = Event::data(format!("tick {n}\nline two"))
                .event("tick")
                .id(&n.to_string());
            Some((event, n + 1))
        });
        response::sse(events, Duration::from_millis(150))
    };
    let running = Running::start(server(), app);
    let mut conn = Conn::open(running.addr);
    let res = conn.get("/events");
    assert_eq!(res.header("content-type"), Some("text/event-stream"));
    assert_eq!(res.header("cache-control"), Some("no-cache"));
    let text = res.text();
    assert!(
        text.starts_with("event: tick\nid: 0\ndata: tick 0\ndata: line two\n\n"),
        "{text}"
    );
    assert!(text.contains(": keep-alive\n\n"), "{text}");
    assert!(
        text.ends_with("event: tick\nid: 2\ndata: tick 2\ndata: line two\n\n"),
        "{text}"
    );
}
