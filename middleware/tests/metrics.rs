//! The Metrics middleware over a real server: a known mix of requests, then
//! a scrape parsed as Prometheus parses it, with exact counts, buckets and
//! labels; a flood of hostile paths adds no label value.

use stackway_test_support as support;

use std::collections::BTreeSet;

use prometheus_parse::{Scrape, Value};
use stackway::{IntoResponse, Request};
use stackway_middleware::{Dispatcher, Lint, Metrics, SharedData};
use support::Running;
use support::http::Conn;

fn scrape(addr: std::net::SocketAddr) -> Scrape {
    let res = Conn::open(addr).get("/metrics");
    assert_eq!(res.status, 200);
    assert!(
        res.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    Scrape::parse(res.text().lines().map(|l| Ok(l.to_owned()))).unwrap()
}

/// The value of the sample named `metric` whose labels include `labels`.
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<Value> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| s.value.clone())
}

fn counter(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    match value(scrape, metric, labels) {
        Some(Value::Counter(n) | Value::Gauge(n) | Value::Untyped(n)) => n,
        other => panic!("{metric} {labels:?}: {other:?}"),
    }
}

#[test]
fn a_known_mix_gives_exact_counts_buckets_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "static text").unwrap();
    let api = |req: Request| async move {
        match *req.method() {
            http::Method::POST => {
                let body = req.into_body().collect(1 << 20).await.unwrap();
                (http::StatusCode::CREATED, format!("{} bytes", body.len())).into_response()
            }
            _ => "api".into_response(),
        }
    };
    let stack = SharedData::new(Dispatcher::new(stackway::apps::hello).mount("/api", api))
        .export("/static", dir.path());
    let server = support::server();
    let stats = server.stats();
    let metrics = Metrics::new(Lint::strict(stack)).server(move || stats.reading());
    let running = Running::start(server, metrics);
    let addr = running.addr;

    let mut conn = Conn::open(addr);
    for _ in 0..3 {
        assert_eq!(conn.get("/api/x").status, 200);
    }
    for body in ["12345", "1234567890"] {
        conn.send(
            format!(
                "POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        assert_eq!(conn.read_response().status, 201);
    }
    // Chunked: counted as it is read.
    conn.send(b"POST /api/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n");
    assert_eq!(conn.read_response().status, 201);
    assert_eq!(conn.get("/static/a.txt").text(), "static text"); // from disk
    assert_eq!(conn.get("/static/a.txt").text(), "static text"); // from memory
    assert_eq!(conn.get("/static/missing").status, 200); // a miss, then hello at /
    assert_eq!(conn.get("/api/../x").status, 400);
    drop(conn);

    let scraped = scrape(addr);
    let requests = |mount, method, status| {
        counter(
            &scraped,
            "stackway_requests_total",
            &[("mount", mount), ("method", method), ("status", status)],
        )
    };
    assert_eq!(requests("/api", "GET", "2xx"), 3.0);
    assert_eq!(requests("/api", "POST", "2xx"), 3.0);
    assert_eq!(requests("/static", "GET", "2xx"), 2.0);
    assert_eq!(requests("/", "GET", "2xx"), 1.0);
    assert_eq!(
        requests("none", "GET", "4xx"),
        1.0,
        "the Dispatcher refused it before any mount"
    );
    assert_eq!(
        counter(&scraped, "stackway_static_total", &[("outcome", "file")]),
        1.0
    );
    assert_eq!(
        counter(&scraped, "stackway_static_total", &[("outcome", "memory")]),
        1.0
    );
    assert_eq!(
        counter(&scraped, "stackway_static_total", &[("outcome", "miss")]),
        1.0
    );
    assert_eq!(counter(&scraped, "stackway_request_bytes_total", &[]), 19.0);
    assert!(counter(&scraped, "stackway_response_bytes_total", &[]) >= 3.0 * 3.0 + 2.0 * 11.0);
    assert_eq!(counter(&scraped, "stackway_requests_in_flight", &[]), 0.0);
    // One connection for the mix, one for this scrape.
    assert_eq!(
        counter(&scraped, "stackway_connections_accepted_total", &[]),
        2.0
    );
    assert_eq!(counter(&scraped, "stackway_connections_open", &[]), 1.0);

    // Six requests at /api, each in its bucket and counted once at +Inf.
    let Some(Value::Histogram(buckets)) = value(
        &scraped,
        "stackway_request_duration_seconds",
        &[("mount", "/api")],
    ) else {
        panic!("no histogram for /api")
    };
    assert_eq!(buckets.last().unwrap().less_than, f64::INFINITY);
    assert_eq!(buckets.last().unwrap().count, 6.0);
    assert!(
        buckets.windows(2).all(|w| w[0].count <= w[1].count),
        "cumulative: {buckets:?}"
    );
    assert_eq!(
        counter(
            &scraped,
            "stackway_request_duration_seconds_count",
            &[("mount", "/api")]
        ),
        6.0
    );
    running.stop().unwrap();
}

#[test]
fn latency_lands_in_its_bucket_and_a_request_the_client_gives_up_leaves_no_flight() {
    let slow = |req: Request| async move {
        match req.uri().path() {
            "/slow/forever" => std::future::pending().await,
            _ => {
                tokio::time::sleep(std::time::Duration::from_millis(60)).await;
                "slow".into_response()
            }
        }
    };
    let stack = Lint::strict(Dispatcher::default().mount("/slow", slow));
    let running = Running::start(support::server(), Metrics::new(stack));
    assert_eq!(Conn::open(running.addr).get("/slow/60ms").text(), "slow");

    let mut gone = Conn::open(running.addr);
    gone.send(b"GET /slow/forever HTTP/1.1\r\nHost: x\r\n\r\n");
    let in_flight = || counter(&scrape(running.addr), "stackway_requests_in_flight", &[]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while in_flight() != 1.0 {
        assert!(std::time::Instant::now() < deadline, "never in flight");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    drop(gone);
    while in_flight() != 0.0 {
        assert!(std::time::Instant::now() < deadline, "still in flight");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }

    let scraped = scrape(running.addr);
    let Some(Value::Histogram(buckets)) = value(
        &scraped,
        "stackway_request_duration_seconds",
        &[("mount", "/slow")],
    ) else {
        panic!("no histogram for /slow")
    };
    let at = |le: f64| buckets.iter().find(|b| b.less_than == le).unwrap().count;
    assert_eq!((at(0.05), at(0.1)), (0.0, 1.0), "60 ms: {buckets:?}");
    let sum = counter(
        &scraped,
        "stackway_request_duration_seconds_sum",
        &[("mount", "/slow")],
    );
    assert!((0.06..0.1).contains(&sum), "{sum}");
    running.stop().unwrap();
}

#[test]
fn a_flood_of_hostile_paths_adds_no_label_value() {
    let stack = Dispatcher::new(stackway::apps::hello).mount("/api", stackway::apps::hello);
    let running = Running::start(support::server(), Metrics::new(stack));
    let mut conn = Conn::open(running.addr);
    for n in 0..300 {
        let path = match n % 3 {
            0 => format!("/api/{n}/%2e%2e/%00{n}"),
            1 => format!("/%61pi/x{n}"),
            _ => format!("/random-{n}?mount=/evil{n}"),
        };
        let status = conn.get(&path).status;
        assert!(status == 200 || status == 400, "{path}: {status}");
    }
    let scraped = scrape(running.addr);
    let mounts: BTreeSet<String> = scraped
        .samples
        .iter()
        .filter_map(|s| s.labels.get("mount").map(str::to_owned))
        .collect();
    assert!(
        mounts.is_subset(&["/", "/api", "none"].map(String::from).into()),
        "{mounts:?}"
    );
    let total: f64 = scraped
        .samples
        .iter()
        .filter(|s| s.metric == "stackway_requests_total")
        .map(|s| match s.value {
            Value::Counter(n) | Value::Untyped(n) => n,
            _ => 0.0,
        })
        .sum();
    assert_eq!(total, 300.0);
    running.stop().unwrap();
}

#[test]
fn each_upstream_of_a_proxy_mount_is_reported() {
    let upstream = Running::start(support::server(), stackway::apps::hello);
    // Port 1: nothing listens there; max_fails 1 leaves it out after one failure.
    let (live, dead) = (
        format!("http://{}", upstream.addr),
        "http://127.0.0.1:1".to_owned(),
    );
    let proxy = stackway_middleware::Proxy::balance([live.as_str(), dead.as_str()]);
    let stats = proxy.stats();
    assert_eq!(
        stats.upstreams().len(),
        2,
        "reported before the first request"
    );
    let metrics = Metrics::new(Dispatcher::default().mount("/api", proxy))
        .upstreams("/api", move || stats.upstreams());
    let running = Running::start(support::server(), metrics);
    let mut conn = Conn::open(running.addr);
    for _ in 0..6 {
        // A GET that fails to connect is tried once more on the other upstream.
        assert_eq!(conn.get("/api/x").status, 200);
    }
    let scraped = scrape(running.addr);
    let upstream_value =
        |metric, name: &str| counter(&scraped, metric, &[("mount", "/api"), ("upstream", name)]);
    assert_eq!(
        upstream_value("stackway_upstream_requests_total", &live),
        6.0
    );
    assert_eq!(
        upstream_value("stackway_upstream_requests_total", &dead),
        0.0
    );
    assert_eq!(
        upstream_value("stackway_upstream_failures_total", &dead),
        1.0
    );
    assert_eq!(upstream_value("stackway_upstream_up", &live), 1.0);
    assert_eq!(upstream_value("stackway_upstream_up", &dead), 0.0);
    assert_eq!(upstream_value("stackway_upstream_in_flight", &live), 0.0);
    // One connection served all six, kept in the pool; none to the dead one.
    assert_eq!(upstream_value("stackway_upstream_connections", &live), 1.0);
    assert_eq!(upstream_value("stackway_upstream_connections", &dead), 0.0);

    // The upstream going away closes the pooled connection.
    upstream.stop().unwrap();
    let connections = || {
        let scraped = scrape(running.addr);
        counter(
            &scraped,
            "stackway_upstream_connections",
            &[("mount", "/api"), ("upstream", &live)],
        )
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while connections() != 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the pool kept a closed connection"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    running.stop().unwrap();
}

#[test]
fn a_pool_kept_anywhere_is_read_through_its_closure_at_each_scrape() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use stackway::readings::{PoolReading, UpstreamReading};

    // A pool of workers and one upstream kept by code outside this crate.
    let busy = Arc::new(AtomicUsize::new(1));
    let seen = busy.clone();
    let metrics = Metrics::new(Lint::strict(stackway::apps::hello))
        .pool("/jobs", move || PoolReading {
            threads: 4,
            busy: seen.load(Ordering::Relaxed),
            ..PoolReading::default()
        })
        .upstreams("/far", || {
            vec![UpstreamReading {
                name: "tcp://10.0.0.9:7000".to_owned(),
                answered: 12,
                ..UpstreamReading::default()
            }]
        });
    let running = Running::start(support::server(), metrics);
    let pool = |scraped: &Scrape, metric| counter(scraped, metric, &[("mount", "/jobs")]);

    let first = scrape(running.addr);
    assert_eq!(pool(&first, "stackway_pool_threads"), 4.0);
    assert_eq!(pool(&first, "stackway_pool_busy"), 1.0);
    let far = [("mount", "/far"), ("upstream", "tcp://10.0.0.9:7000")];
    assert_eq!(
        counter(&first, "stackway_upstream_requests_total", &far),
        12.0
    );
    assert_eq!(counter(&first, "stackway_upstream_up", &far), 0.0);

    busy.store(3, Ordering::Relaxed);
    assert_eq!(pool(&scrape(running.addr), "stackway_pool_busy"), 3.0);
    running.stop().unwrap();
}
