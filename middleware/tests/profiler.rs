//! The Profiler's `Server-Timing`: its grammar, and the entries inner
//! middleware add (SharedData's `fs`, the proxy's `upstream`).

use stackway_test_support as support;

use stackway::testing::Client;
use stackway::{IntoResponse, Request};
use stackway_middleware::shared_data::SharedData;
use stackway_middleware::{Dispatcher, Lint, Profiler, Proxy};
use support::{Running, run, server};

/// Checks `value` against RFC's Server-Timing grammar (names are tokens,
/// `dur` a number, `desc` a token or quoted-string) and returns the names.
fn names(value: &str) -> Vec<String> {
    let token = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
    };
    value
        .split(", ")
        .map(|metric| {
            let mut parts = metric.split(';');
            let name = parts.next().unwrap();
            assert!(token(name), "bad name in {value:?}");
            for param in parts {
                let (key, val) = param.split_once('=').unwrap_or_else(|| panic!("{param:?}"));
                match key {
                    "dur" => assert!(val.parse::<f64>().is_ok_and(|d| d >= 0.0), "{param:?}"),
                    "desc" => assert!(
                        token(val)
                            || (val.starts_with('"') && val.ends_with('"') && val.len() >= 2),
                        "{param:?}"
                    ),
                    other => panic!("unknown parameter {other}"),
                }
            }
            name.to_owned()
        })
        .collect()
}

#[test]
fn inner_middleware_add_their_entries() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "file").unwrap();
    let upstream = Running::start(server(), |_req: Request| async {
        "from upstream".into_response()
    });
    let site = SharedData::new(
        Dispatcher::new(stackway::apps::hello)
            .mount("/api", Proxy::to(&format!("http://{}", upstream.addr))),
    )
    .export("/static", dir.path());
    let client = Client::new(Lint::strict(Profiler::new(site)));
    run(async {
        let res = client.get("/static/a.txt").await;
        res.assert_text("file");
        assert_eq!(names(res.header("server-timing").unwrap()), ["fs", "app"]);
        let res = client.get("/api/x").await;
        res.assert_text("from upstream");
        assert_eq!(
            names(res.header("server-timing").unwrap()),
            ["upstream", "app"]
        );
        let res = client.get("/hello").await;
        assert_eq!(names(res.header("server-timing").unwrap()), ["app"]);
    });
}

#[test]
fn the_header_reaches_a_real_client() {
    let running = Running::start(
        server(),
        Profiler::new(stackway::apps::hello).slow(std::time::Duration::from_secs(60)),
    );
    let res = support::http::Conn::open(running.addr).get("/");
    let value = res.header("server-timing").unwrap().to_owned();
    assert_eq!(names(&value), ["app"]);
}
