//! The Router through the in-process client (and once over a socket):
//! parameters, methods, mounting, conflicts, slash redirects.

use stackway_test_support as support;

use stackway::testing::Client;
use stackway::{IntoResponse, Request, RequestExt};
use stackway_middleware::Dispatcher;
use stackway_middleware::Lint;
use stackway_middleware::router::{RouteParams, Router, any, get, post};
use support::{Running, run, server};

/// Answers with its name, every parameter, SCRIPT_NAME and PATH_INFO, and
/// checks that the two add up to the request's path.
fn echo(name: &'static str) -> impl stackway::App + Clone {
    move |req: Request| async move {
        let env = req.environ();
        assert_eq!(
            format!("{}{}", env.script_name(), env.path_info()),
            req.uri().path(),
            "SCRIPT_NAME + PATH_INFO is the path"
        );
        let params: Vec<String> = req
            .params()
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        format!(
            "{name} [{}] {}|{}",
            params.join(","),
            env.script_name(),
            env.path_info()
        )
        .into_response()
    }
}

#[test]
fn parameters_are_decoded_once_and_slashes_stay_inside() {
    let app = Router::new()
        .route("/users/{id}", get(echo("user")))
        .route("/users/{id}/posts/{post}", get(echo("post")))
        .route("/files/{*path}", get(echo("file")))
        .route("/café", get(echo("cafe")))
        .route("/img-{n}.png", get(echo("img")));
    let client = Client::new(Lint::strict(app));
    run(async {
        let cases = [
            ("/users/42", "user [id=42] |/users/42"),
            ("/users/a%2Fb", "user [id=a/b] |/users/a%2Fb"),
            ("/users/caf%C3%A9", "user [id=café] |/users/caf%C3%A9"),
            ("/users/%2525", "user [id=%25] |/users/%2525"),
            (
                "/users/7/posts/x%20y",
                "post [id=7,post=x y] |/users/7/posts/x%20y",
            ),
            (
                "/files/a/b%2Fc/d.txt",
                "file [path=a/b/c/d.txt] |/files/a/b%2Fc/d.txt",
            ),
            ("/caf%C3%A9", "cafe [] |/caf%C3%A9"),
            ("/img-3.png", "img [n=3] |/img-3.png"),
        ];
        for (path, want) in cases {
            client.get(path).await.assert_status(200).assert_text(want);
        }
        for missing in ["/users", "/users/", "/users/1/2", "/files/", "/%FF"] {
            client.get(missing).await.assert_status(404);
        }
    });
}

#[test]
fn methods_head_405_and_options() {
    let with_length = |req: Request| async move {
        let mut res = format!("{} items", req.method()).into_response();
        res.headers_mut()
            .insert("content-length", "9".parse().unwrap());
        res
    };
    let app = Router::new()
        .route("/items", get(with_length).post(echo("create")))
        .route("/items/{id}", get(echo("show")))
        .route("/items/{id}", post(echo("update")).delete(echo("remove")))
        .route("/anything", any(echo("any")))
        .route(
            "/headed",
            get(echo("get")).head(|_req: Request| async { "".into_response() }),
        );
    let client = Client::new(Lint::strict(app));
    run(async {
        client.get("/items").await.assert_text("GET items");
        client.post("/items").await.assert_text("create [] |/items");
        // HEAD by the GET handler: its head, no body.
        client
            .head("/items")
            .await
            .assert_status(200)
            .assert_header("content-length", "9")
            .assert_text("");
        client
            .put("/items")
            .await
            .assert_status(405)
            .assert_header("allow", "GET, HEAD, POST, OPTIONS");
        client
            .request(http::Method::OPTIONS, "/items")
            .await
            .assert_status(204)
            .assert_header("allow", "GET, HEAD, POST, OPTIONS");
        // Methods given for one pattern in two calls are one route.
        client
            .delete("/items/1")
            .await
            .assert_text("remove [id=1] |/items/1");
        client
            .get("/items/1")
            .await
            .assert_text("show [id=1] |/items/1");
        client
            .put("/items/1")
            .await
            .assert_status(405)
            .assert_header("allow", "GET, HEAD, POST, DELETE, OPTIONS");
        client
            .request(http::Method::from_bytes(b"PURGE").unwrap(), "/anything")
            .await
            .assert_text("any [] |/anything");
        client.get("/headed").await.assert_text("get [] |/headed");
    });
}

#[test]
fn a_fallback_answers_what_matches_nothing() {
    let app = Router::new()
        .route("/a", get(echo("a")))
        .fallback(echo("fallback"));
    let client = Client::new(Lint::strict(app));
    run(async {
        client.get("/b").await.assert_text("fallback [] |/b");
        client.get("/a").await.assert_text("a [] |/a");
    });
    let bare = Client::new(Lint::strict(Router::new().route("/a", get(echo("a")))));
    run(async {
        bare.get("/b").await.assert_status(404);
    });
}

#[test]
fn routers_and_dispatchers_nest_both_ways() {
    // A Router mounted by a Dispatcher sees PATH_INFO below the mount...
    let api = Router::new()
        .route("/", get(echo("api-root")))
        .route("/users/{id}", get(echo("user")))
        .mount(
            "/admin",
            Dispatcher::new(echo("admin-default")).mount("/stats", echo("stats")),
        )
        .mount(
            "/v2",
            Router::new().route("/users/{id}", get(echo("v2-user"))),
        );
    let app = Dispatcher::new(echo("site")).mount("/api", api);
    let client = Client::new(Lint::strict(app));
    run(async {
        let cases = [
            ("/api/users/7", "user [id=7] /api|/users/7"),
            ("/api", "api-root [] /api|"),
            ("/api/", "api-root [] /api|/"),
            // ...and a Dispatcher mounted in a Router sees SCRIPT_NAME grow again.
            ("/api/admin/stats/x", "stats [] /api/admin/stats|/x"),
            ("/api/admin", "admin-default [] /api/admin|"),
            ("/api/admin/", "admin-default [] /api/admin|/"),
            ("/api/admin/other", "admin-default [] /api/admin|/other"),
            ("/api/v2/users/9", "v2-user [id=9] /api/v2|/users/9"),
            ("/elsewhere", "site [] |/elsewhere"),
        ];
        for (path, want) in cases {
            client.get(path).await.assert_text(want);
        }
        // `/admin` is a whole segment: `/adminx` is no route of the Router's.
        client.get("/api/adminx").await.assert_status(404);
    });
}

#[test]
fn conflicts_are_refused_when_the_router_is_built() {
    let err = Router::new()
        .route("/users/{id}", get(echo("a")))
        .try_route("/users/{name}", get(echo("b")))
        .unwrap_err();
    assert_eq!(err.pattern(), "/users/{name}");
    assert!(err.to_string().contains("cannot be told apart"), "{err}");
    assert!(Router::new().try_route("", get(echo("a"))).is_err());
    assert!(Router::new().try_route("/{a}-{b}", get(echo("a"))).is_err());
    assert!(
        Router::new()
            .mount("/admin", echo("a"))
            .try_route("/admin", get(echo("b")))
            .is_err()
    );
    let panicked = std::panic::catch_unwind(|| {
        Router::new()
            .route("/x", get(echo("a")))
            .route("/x", get(echo("b")))
    });
    let message = panicked.unwrap_err();
    let message = message.downcast_ref::<String>().unwrap();
    assert!(
        message.contains("cannot route \"/x\": GET is routed there already"),
        "{message}"
    );
}

#[test]
fn trailing_slash_redirects_are_built_under_the_mount() {
    let router = Router::new()
        .route("/docs/", get(echo("docs")))
        .route("/about", get(echo("about")))
        .redirect_slash(true);
    let app = Dispatcher::default().mount("/site", router);
    let client = Client::new(Lint::strict(app));
    run(async {
        client
            .get("/site/docs?page=2")
            .await
            .assert_status(308)
            .assert_header("location", "/site/docs/?page=2");
        client
            .get("/site/about/")
            .await
            .assert_status(308)
            .assert_header("location", "/site/about");
        client
            .get("/site/docs/")
            .await
            .assert_text("docs [] /site|/docs/");
        client.get("/site/nothing/").await.assert_status(404);
    });
}

#[test]
fn route_layer_wraps_the_routes_only() {
    let tag = stackway::from_fn(|req: Request, next: stackway::Next| async move {
        let mut res = next.run(req).await;
        res.headers_mut().insert("x-layer", "yes".parse().unwrap());
        res
    });
    let app = Router::new()
        .route("/a", get(echo("a")))
        .route_layer(tag)
        .fallback(echo("fallback"));
    let client = Client::new(Lint::strict(app));
    run(async {
        client.get("/a").await.assert_header("x-layer", "yes");
        client.get("/b").await.assert_no_header("x-layer");
    });
}

#[test]
fn layer_wraps_routes_mounts_and_the_fallback() {
    let tag = stackway::from_fn(|req: Request, next: stackway::Next| async move {
        let mut res = next.run(req).await;
        res.headers_mut().insert("x-layer", "yes".parse().unwrap());
        res
    });
    let app = Router::new()
        .route("/a", get(echo("a")))
        .mount("/m", echo("mounted"))
        .layer(tag);
    let client = Client::new(Lint::strict(app));
    run(async {
        client.get("/a").await.assert_header("x-layer", "yes");
        client.get("/m/x").await.assert_header("x-layer", "yes");
        client
            .get("/nothing")
            .await
            .assert_status(404)
            .assert_header("x-layer", "yes");
    });
}

#[test]
fn merged_routers_answer_as_one() {
    let users = Router::new()
        .route("/users", get(echo("list")))
        .mount("/files", echo("files"));
    let more = Router::new()
        .route("/users", post(echo("create")))
        .route("/health", get(echo("health")))
        .fallback(echo("fallback"));
    let client = Client::new(Lint::strict(users.merge(more)));
    run(async {
        client.get("/users").await.assert_text("list [] |/users");
        client.post("/users").await.assert_text("create [] |/users");
        client
            .get("/health")
            .await
            .assert_text("health [] |/health");
        client
            .get("/files/a")
            .await
            .assert_text("files [] /files|/a");
        client.get("/else").await.assert_text("fallback [] |/else");
    });
    let twice = |router: Router| router.route("/users", get(echo("x")));
    let err = twice(Router::new())
        .try_merge(twice(Router::new()))
        .unwrap_err();
    assert!(
        err.to_string().contains("GET is routed there already"),
        "{err}"
    );
    let err = Router::new()
        .mount("/users", echo("m"))
        .try_merge(twice(Router::new()))
        .unwrap_err();
    assert!(err.to_string().contains("both routers use it"), "{err}");
    let fallback = || Router::new().fallback(echo("f"));
    let err = fallback().try_merge(fallback()).unwrap_err();
    assert!(
        err.to_string().contains("both routers have a fallback"),
        "{err}"
    );
    // A layered 404 is no fallback: the other router's fallback is taken.
    let pass = stackway::from_fn(|req: Request, next: stackway::Next| next.run(req));
    let client = Client::new(Router::new().layer(pass).merge(fallback()));
    run(async {
        client.get("/x").await.assert_text("f [] |/x");
    });
}

#[test]
fn routes_over_a_socket() {
    let app = Router::new().route("/users/{id}", get(echo("user")));
    let running = Running::start(server(), Dispatcher::default().mount("/api", app));
    let mut conn = support::http::Conn::open(running.addr);
    assert_eq!(
        conn.get("/api/users/a%2Fb").text(),
        "user [id=a/b] /api|/users/a%2Fb"
    );
    let res = conn.get("/api/users");
    assert_eq!(res.status, 404);
    conn.send(b"DELETE /api/users/1 HTTP/1.1\r\nHost: x\r\n\r\n");
    let res = conn.read_response();
    assert_eq!(
        (res.status, res.header("allow")),
        (405, Some("GET, HEAD, OPTIONS"))
    );
}
