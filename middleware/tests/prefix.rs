//! The Dispatcher, the Router's mounts and SharedData read prefixes with one
//! grammar: the same prefixes are accepted and refused with the same
//! sentence, and match the same requests with the same answers.

use stackway_test_support as support;

use stackway::testing::Client;
use stackway::{IntoResponse, Request, RequestExt};
use stackway_middleware::{Dispatcher, Lint, Router, SharedData};
use support::run;

async fn echo(req: Request) -> stackway::Response {
    let env = req.environ();
    format!("app {} {}", env.script_name(), env.path_info()).into_response()
}

#[test]
fn both_middleware_accept_and_refuse_the_same_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("/", true),
        ("", true),
        ("/static", true),
        ("/static/", true),
        ("/caf%C3%A9", true),
        ("/a%2Fb", true),
        ("static", false),
        ("/a//b", false),
        ("/files/*", false),
        ("/users/{id}", false),
        ("/users/:id", false),
        ("/a/../b", false),
        ("/%2e", false),
        ("/%FF", false),
    ];
    for (prefix, valid) in cases {
        let mounted = Dispatcher::default().try_mount(prefix, echo);
        let routed = Router::new().try_mount(prefix, echo);
        let exported = SharedData::new(echo).try_export(prefix, dir.path());
        assert_eq!(mounted.is_ok(), valid, "mount {prefix:?}");
        assert_eq!(routed.is_ok(), valid, "router mount {prefix:?}");
        assert_eq!(exported.is_ok(), valid, "export {prefix:?}");
        if let (Err(mount), Err(routed), Err(export)) = (mounted, routed, exported) {
            assert!(mount.is_invalid_prefix() && routed.is_invalid_prefix());
            assert!(export.is_invalid_prefix());
            assert_eq!(mount.to_string(), routed.to_string());
            let rule = |e: String| e.split_once(": ").unwrap().1.to_owned();
            assert_eq!(rule(mount.to_string()), rule(export.to_string()));
        }
    }
    // Mounted twice: both say so, in the same words.
    let twice = Dispatcher::default()
        .mount("/a", echo)
        .try_mount("/a/", echo);
    let twice_routed = Router::new().mount("/a", echo).try_mount("/a/", echo);
    let (twice, twice_routed) = (twice.unwrap_err(), twice_routed.unwrap_err());
    assert!(
        twice.is_duplicate() && twice_routed.is_duplicate(),
        "{twice_routed}"
    );
    // A host prefix is a Dispatcher feature; the others say where to put it.
    let host = "http://static.example.com/s";
    assert!(Dispatcher::default().try_mount(host, echo).is_ok());
    let err = SharedData::new(echo)
        .try_export(host, dir.path())
        .unwrap_err();
    assert!(err.is_invalid_prefix(), "{err}");
    assert!(err.to_string().contains("Dispatcher"), "{err}");
    let err = Router::new().try_mount(host, echo).unwrap_err();
    assert!(err.is_invalid_prefix(), "{err}");
    assert!(err.to_string().contains("Dispatcher"), "{err}");
}

#[test]
fn a_router_mount_answers_as_a_dispatcher_mount() {
    let fallback = |_req: Request| async { "fallback".into_response() };
    let prefixes = ["/st%61tic/", "/a%2Fb", "/caf%C3%A9", "/x/y", "/"];
    let mut dispatcher = Dispatcher::new(fallback).redirect_slash(true);
    let mut router = Router::new().fallback(fallback).redirect_slash(true);
    for prefix in prefixes {
        dispatcher = dispatcher.mount(prefix, echo);
        router = router.mount(prefix, echo);
    }
    let (dispatcher, router) = (
        Client::new(Lint::strict(dispatcher)),
        Client::new(Lint::strict(router)),
    );
    run(async {
        for path in [
            "/static/a.txt",
            "/st%61tic/a.txt",
            "/%73tatic",
            "/static/",
            "/static?q=1",
            "/staticx/a.txt",
            "/static%2Fa.txt",
            "/a%2Fb/c",
            "/a%2fb/c",
            "/a/b/c",
            "/caf%C3%A9/menu",
            "/café",
            "/x/y/z",
            "/x/y",
            "/x/yz",
            "/x",
            "/%FF/a",
            "/x/y/%FF",
            "/static/%2e%2e/secret",
            "/static/./a",
            "/../a",
            "/other/%2E",
            "",
            "/",
        ] {
            let (want, got) = (dispatcher.get(path).await, router.get(path).await);
            assert_eq!(got.status(), want.status(), "{path}");
            assert_eq!(got.header("location"), want.header("location"), "{path}");
            assert_eq!(got.text(), want.text(), "{path}");
        }
    });
}

#[test]
fn both_middleware_match_the_same_requests() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "file").unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/index.html"), "index").unwrap();
    let fallback = |_req: Request| async { "fallback".into_response() };
    let mounted = Client::new(
        Dispatcher::new(fallback)
            .mount("/st%61tic/", echo)
            .redirect_slash(true),
    );
    let exported = Client::new(Dispatcher::new(fallback).mount(
        "/site",
        SharedData::new(fallback).export("/st%61tic/", dir.path()),
    ));
    run(async {
        for path in ["/static/a.txt", "/st%61tic/a.txt", "/%73tatic/a.txt"] {
            mounted.get(path).await.assert_text_contains("app ");
            let site = format!("/site{path}");
            exported.get(&site).await.assert_text("file");
        }
        for path in ["/staticx/a.txt", "/stat", "/static%2Fa.txt", "/%FF/a.txt"] {
            mounted.get(path).await.assert_text("fallback");
            let site = format!("/site{path}");
            exported.get(&site).await.assert_text("fallback");
        }
        // The slash redirect is built the same way: SCRIPT_NAME + PATH_INFO + `/`, query kept.
        mounted
            .get("/static?q=1")
            .await
            .assert_status(308)
            .assert_header("location", "/static/?q=1");
        exported
            .get("/site/static/sub?q=1")
            .await
            .assert_status(308)
            .assert_header("location", "/site/static/sub/?q=1");
    });
}
