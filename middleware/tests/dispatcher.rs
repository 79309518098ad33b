//! The Dispatcher: which app answers, and what SCRIPT_NAME and PATH_INFO it sees.

use stackway_test_support as support;

use http::StatusCode;
use stackway::testing::Client;
use stackway::{App, IntoResponse, Request, RequestExt};
use stackway_middleware::Dispatcher;
use stackway_middleware::Lint;
use support::run;

/// An app that answers `NAME|SCRIPT_NAME|PATH_INFO`, after checking the
/// environ's invariants.
fn echo(name: &'static str) -> impl App + Copy {
    move |req: Request| async move {
        let env = req.environ();
        let (script, info) = (env.script_name(), env.path_info());
        assert_eq!(
            format!("{script}{info}"),
            req.uri().path(),
            "SCRIPT_NAME + PATH_INFO is the path"
        );
        assert!(
            info.is_empty() || info.starts_with('/'),
            "PATH_INFO {info:?}"
        );
        assert!(!script.ends_with('/'), "SCRIPT_NAME {script:?}");
        format!("{name}|{script}|{info}").into_response()
    }
}

/// Asserts where each request goes: `(path, "APP|SCRIPT_NAME|PATH_INFO")`.
fn assert_routes(app: impl App, cases: &[(&str, &str)]) {
    run(async {
        let client = Client::new(Lint::strict(app));
        for &(path, expected) in cases {
            let res = client.get(path).await;
            assert_eq!(res.text(), expected, "GET {path}");
        }
    });
}

#[test]
fn werkzeug_dispatcher_test() {
    // tests/middleware/test_dispatcher.py: mounts echo SCRIPT_NAME; the default is a 404.
    let script_name =
        |req: Request| async move { req.environ().script_name().to_owned().into_response() };
    let not_found = |_req: Request| async { (StatusCode::NOT_FOUND, "NOT FOUND").into_response() };
    let app = Dispatcher::new(not_found)
        .mount("/test1", script_name)
        .mount("/test2/very", script_name);
    run(async {
        let client = Client::new(Lint::strict(app));
        for (path, script) in [
            ("/test1", "/test1"),
            ("/test1/asfd", "/test1"),
            ("/test1/very", "/test1"),
            ("/test2/very", "/test2/very"),
            ("/test2/very/long/path/after/script/name", "/test2/very"),
        ] {
            client
                .get(path)
                .await
                .assert_status(200)
                .assert_text(script);
        }
        client
            .get("/missing")
            .await
            .assert_status(404)
            .assert_text("NOT FOUND");
    });
}

#[test]
fn exact_prefix_has_empty_path_info_and_segments_are_whole() {
    let app = Dispatcher::new(echo("D"))
        .mount("/a", echo("A"))
        .mount("/ab", echo("AB"))
        .mount("/a/b", echo("A/B"));
    assert_routes(
        app,
        &[
            ("/a", "A|/a|"),
            ("/a/", "A|/a|/"),
            ("/a/x/y", "A|/a|/x/y"),
            ("/ab", "AB|/ab|"),
            ("/abc", "D||/abc"),
            ("/ab/c", "AB|/ab|/c"),
            ("/a/b/c", "A/B|/a/b|/c"),
            ("/a/bc", "A|/a|/bc"),
            ("/a//b", "A|/a|//b"),
            ("//a", "D||//a"),
            ("/", "D||/"),
            ("/A", "D||/A"),
        ],
    );
}

#[test]
fn trailing_slashes_on_mounts_are_ignored() {
    // Werkzeug's `/c/` only matches `/c/` exactly; ours is `/c`.
    let app = Dispatcher::new(echo("D")).mount("/c/", echo("C"));
    assert_routes(
        app,
        &[
            ("/c", "C|/c|"),
            ("/c/", "C|/c|/"),
            ("/c/x", "C|/c|/x"),
            ("/cx", "D||/cx"),
        ],
    );
}

#[test]
fn root_mount_is_the_default() {
    // Werkzeug's mount `/` only matches `/`; ours is the default for everything.
    let app = Dispatcher::default()
        .mount("/", echo("R"))
        .mount("/a", echo("A"));
    assert_routes(
        app,
        &[("/", "R||/"), ("/x/y", "R||/x/y"), ("/a/b", "A|/a|/b")],
    );
    let app = Dispatcher::default().mount("", echo("R"));
    assert_routes(app, &[("/x", "R||/x")]);
}

#[test]
fn no_default_is_a_404() {
    let app = Dispatcher::default().mount("/a", echo("A"));
    run(async {
        Client::new(Lint::strict(app))
            .get("/b")
            .await
            .assert_status(404)
            .assert_text("404 Not Found");
    });
}

#[test]
fn nested_three_deep_accumulates_script_name() {
    let inner = Dispatcher::new(echo("inner-default")).mount("/c", echo("C"));
    let middle = Dispatcher::new(echo("middle-default")).mount("/b", inner);
    let outer = Dispatcher::new(echo("outer-default")).mount("/a", middle);
    assert_routes(
        outer,
        &[
            ("/a/b/c/d", "C|/a/b/c|/d"),
            ("/a/b/c", "C|/a/b/c|"),
            ("/a/b/x", "inner-default|/a/b|/x"),
            ("/a/x", "middle-default|/a|/x"),
            ("/x", "outer-default||/x"),
        ],
    );
}

#[test]
fn percent_encoded_and_utf8_prefixes_match_decoded_segments() {
    let app = Dispatcher::new(echo("D"))
        .mount("/café", echo("CAFE"))
        .mount("/my%20app", echo("SPACE"))
        .mount("/a%2Fb", echo("SLASH"));
    assert_routes(
        app,
        &[
            ("/caf%C3%A9/menu", "CAFE|/caf%C3%A9|/menu"),
            ("/caf%c3%a9", "CAFE|/caf%c3%a9|"),
            ("/my%20app/x%20y", "SPACE|/my%20app|/x%20y"),
            // %2F inside a segment is part of the segment, never a separator.
            ("/a%2Fb/c", "SLASH|/a%2Fb|/c"),
            ("/a/b/c", "D||/a/b/c"),
            ("/caf%FF", "D||/caf%FF"),
        ],
    );
    let app = Dispatcher::new(echo("D")).mount("/a", echo("A"));
    assert_routes(app, &[("/a%2Fb", "D||/a%2Fb"), ("/a/%2Fb", "A|/a|/%2Fb")]);
}

#[test]
fn dot_segments_are_refused() {
    let app = Dispatcher::new(echo("D"))
        .mount("/public", echo("P"))
        .mount("/admin", echo("ADMIN"));
    run(async {
        let client = Client::new(Lint::strict(app));
        for path in [
            "/public/../admin",
            "/public/%2e%2e/admin",
            "/public/.%2E/admin",
            "/./admin",
            "/public/x/.",
            "/..",
        ] {
            client.get(path).await.assert_status(400);
        }
        // Dots inside a name are fine.
        client
            .get("/public/a..b/.c")
            .await
            .assert_text("P|/public|/a..b/.c");
    });
}

#[test]
fn a_thousand_mounts() {
    let mut app = Dispatcher::new(echo("D"));
    let names: Vec<&'static str> = (0..1000).map(|i| &*format!("app{i}").leak()).collect();
    for (i, name) in names.iter().enumerate() {
        app = app.mount(&format!("/m{i}"), echo(name));
        app = app.mount(&format!("/deep/{}/m{i}", i % 10), echo(name));
    }
    assert_routes(
        app,
        &[
            ("/m0", "app0|/m0|"),
            ("/m999/x", "app999|/m999|/x"),
            ("/m1000", "D||/m1000"),
            ("/deep/7/m517/y", "app517|/deep/7/m517|/y"),
            ("/deep/7/m518", "D||/deep/7/m518"),
        ],
    );
}

/// A node looks through a few children in order and hashes many: every
/// count on either side of the switch routes, and a mount made twice is
/// refused on both sides.
#[test]
fn siblings_few_and_many() {
    for count in [1, 7, 8, 9, 10, 17] {
        let names: Vec<&'static str> = (0..count).map(|i| &*format!("s{i}").leak()).collect();
        let mounted = || {
            (names.iter().enumerate()).fold(Dispatcher::new(echo("D")), |app, (i, name)| {
                app.mount(&format!("/p/s{i}"), echo(name))
            })
        };
        let err = match mounted().try_mount(&format!("/p/s{}", count - 1), echo("again")) {
            Err(err) => err,
            Ok(_) => panic!("{count} siblings: a second mount at the last was taken"),
        };
        assert!(err.is_duplicate(), "{count} siblings: {err}");
        let paths: Vec<(String, String)> = (0..count)
            .map(|i| (format!("/p/s{i}/x"), format!("s{i}|/p/s{i}|/x")))
            .chain([(format!("/p/s{count}"), format!("D||/p/s{count}"))])
            .collect();
        let routes: Vec<(&str, &str)> = paths
            .iter()
            .map(|(path, want)| (path.as_str(), want.as_str()))
            .collect();
        assert_routes(mounted(), &routes);
    }
}

#[test]
fn host_mounts_are_tried_first_and_case_insensitively() {
    let app = Dispatcher::new(echo("D"))
        .mount("/", echo("ROOT"))
        .mount("/x", echo("X"))
        .mount("http://admin.example.com/", echo("ADMIN"))
        .mount("http://admin.example.com/x", echo("ADMIN-X"));
    run(async {
        let client = Client::new(Lint::strict(app));
        let get = |host: &'static str, path: &'static str| client.get(path).header("host", host);
        get("admin.example.com", "/x/1")
            .await
            .assert_text("ADMIN-X|/x|/1");
        get("ADMIN.Example.COM:8080", "/y")
            .await
            .assert_text("ADMIN||/y");
        get("www.example.com", "/x/1").await.assert_text("X|/x|/1");
        get("www.example.com", "/y").await.assert_text("ROOT||/y");
        client
            .get("http://admin.example.com/x")
            .await
            .assert_text("ADMIN-X|/x|");
    });
}

#[test]
fn host_mounts_fall_back_to_host_less_ones() {
    let app = Dispatcher::default()
        .mount("/api", echo("API"))
        .mount("http://admin.example.com/panel", echo("PANEL"));
    run(async {
        let client = Client::new(Lint::strict(app));
        client
            .get("/api/v1")
            .header("host", "admin.example.com")
            .await
            .assert_text("API|/api|/v1");
        client
            .get("/panel")
            .header("host", "other.example.com")
            .await
            .assert_status(404);
    });
}

#[test]
fn redirect_slash_keeps_the_query_and_the_outer_script_name() {
    let inner = Dispatcher::default()
        .mount("/docs", echo("DOCS"))
        .redirect_slash(true);
    let app = Dispatcher::default().mount("/site", inner);
    run(async {
        let client = Client::new(Lint::strict(app));
        client
            .get("/site/docs?page=2")
            .await
            .assert_status(308)
            .assert_header("location", "/site/docs/?page=2");
        client
            .get("/site/docs/")
            .await
            .assert_text("DOCS|/site/docs|/");
    });
}

#[test]
fn invalid_mounts_are_refused_with_a_sentence() {
    let err = Dispatcher::default()
        .try_mount("api", echo("A"))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"cannot mount at "api": a prefix starts with / (or is http://HOST/...)"#
    );
    assert_eq!(err.prefix(), "api");
    let err = Dispatcher::default()
        .mount("/a", echo("A"))
        .try_mount("/a/", echo("B"))
        .unwrap_err();
    assert!(err.is_duplicate(), "{err}");
    assert_eq!(
        err.to_string(),
        r#"cannot mount at "/a/": something is mounted there already"#
    );
    let err = Dispatcher::new(echo("D"))
        .mount("/", echo("R"))
        .try_mount("", echo("R2"))
        .unwrap_err();
    assert!(err.is_duplicate());
    assert!(
        Dispatcher::default()
            .try_mount("/users/{id}", echo("U"))
            .unwrap_err()
            .to_string()
            .contains("literal")
    );
}

#[test]
#[should_panic(expected = "cannot mount at \"/x/*\"")]
fn mount_panics_with_the_sentence() {
    let _ = Dispatcher::default().mount("/x/*", echo("X"));
}

#[test]
fn the_original_uri_is_kept_for_logging_after_the_call() {
    let app = Dispatcher::default().mount("/a", |req: Request| async move {
        req.uri().to_string().into_response()
    });
    run(async {
        Client::new(Lint::strict(app))
            .get("/a/b?c=d")
            .await
            .assert_text("/a/b?c=d");
    });
}
