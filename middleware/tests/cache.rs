//! The HTTP cache in front of a real app over real sockets: what the HTTP
//! caching test suite (`benches/cache-tests`) does not cover.

use stackway_test_support as support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use stackway::{Body, Request, Response};
use stackway_middleware::{Cache, Lint};
use support::http::Conn;
use support::{Running, server};

/// How many requests the origin saw, by path.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<HashMap<String, usize>>>);

impl Seen {
    fn count(&self, path: &str) -> usize {
        self.0.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

fn response(status: StatusCode, headers: &[(&str, &str)], body: Body) -> Response {
    let mut builder = http::Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(body).unwrap()
}

/// The origin: `/fresh` (a minute), `/slow` (200 ms to answer), `/etag`
/// (always validated), `/big/N` (1 MiB each), `/huge` (64 MiB, no length).
fn origin(seen: Seen) -> impl stackway::App {
    move |req: Request| {
        let seen = seen.clone();
        async move {
            let path = req.uri().path().to_owned();
            let n = {
                let mut counts = seen.0.lock().unwrap();
                let n = counts.entry(path.clone()).or_default();
                *n += 1;
                *n
            };
            if req.method() == http::Method::POST {
                return response(StatusCode::OK, &[], Body::from("posted"));
            }
            match path.as_str() {
                "/fresh" => response(
                    StatusCode::OK,
                    &[("cache-control", "max-age=60")],
                    Body::from(format!("version {n}")),
                ),
                "/private" => response(
                    StatusCode::OK,
                    &[("cache-control", "private, max-age=60")],
                    Body::from("mine"),
                ),
                "/tagged" => response(
                    StatusCode::OK,
                    &[
                        ("cache-control", "max-age=60"),
                        ("cache-tag", "news, front"),
                    ],
                    Body::from("tagged"),
                ),
                "/swr" => response(
                    StatusCode::OK,
                    &[("cache-control", "max-age=1, stale-while-revalidate=60")],
                    Body::from(format!("version {n}")),
                ),
                "/slow" => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    response(
                        StatusCode::OK,
                        &[("cache-control", "max-age=60")],
                        Body::from("slow"),
                    )
                }
                "/etag"
                    if req
                        .headers()
                        .get("if-none-match")
                        .is_some_and(|t| t == "\"v1\"") =>
                {
                    response(
                        StatusCode::NOT_MODIFIED,
                        &[
                            ("etag", "\"v1\""),
                            ("cache-control", "max-age=0"),
                            ("x-checked", &n.to_string()),
                        ],
                        Body::default(),
                    )
                }
                "/etag" => response(
                    StatusCode::OK,
                    &[
                        ("etag", "\"v1\""),
                        ("cache-control", "max-age=0"),
                        ("x-checked", "0"),
                    ],
                    Body::from("tagged"),
                ),
                "/huge" => {
                    let chunks =
                        (0..64).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'h'; 1 << 20])));
                    response(
                        StatusCode::OK,
                        &[("cache-control", "max-age=60")],
                        Body::from_stream(futures_util::stream::iter(chunks)),
                    )
                }
                // nginx's X-Accel-Expires, in place of what Cache-Control says.
                accel if accel.starts_with("/accel/") => {
                    let (cc, expires) = match &accel["/accel/".len()..] {
                        "off" => ("max-age=60", "0".to_owned()),
                        "private" => ("private", "60".to_owned()),
                        "until" => ("no-cache", format!("@{}", unix_now() + 60)),
                        "gone" => ("max-age=60", format!("@{}", unix_now() - 60)),
                        _ => ("max-age=60", "soon".to_owned()),
                    };
                    response(
                        StatusCode::OK,
                        &[("cache-control", cc), ("x-accel-expires", &expires)],
                        Body::from(format!("version {n}")),
                    )
                }
                big if big.starts_with("/big/") => response(
                    StatusCode::OK,
                    &[("cache-control", "max-age=60")],
                    Body::from(vec![b'b'; 1 << 20]),
                ),
                _ => response(StatusCode::NOT_FOUND, &[], Body::default()),
            }
        }
    }
}

fn unix_now() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.unwrap().as_secs()
}

fn serve(capacity: usize) -> (Running, Seen, stackway_middleware::cache::CacheStats) {
    let seen = Seen::default();
    let cache = Cache::new(origin(seen.clone()), capacity);
    let stats = cache.stats();
    (
        Running::start(server().workers(2), Lint::strict(cache)),
        seen,
        stats,
    )
}

#[test]
fn a_fresh_response_is_served_again_and_an_unsafe_request_invalidates_it() {
    let (running, seen, stats) = serve(64 << 20);
    let mut conn = Conn::open(running.addr);
    let first = conn.get("/fresh");
    assert_eq!(first.text(), "version 1");
    assert_eq!(
        first.header("cache-status"),
        Some("stackway; fwd=uri-miss; stored")
    );
    let again = conn.get("/fresh");
    assert_eq!(again.text(), "version 1");
    assert_eq!(again.header("cache-status"), Some("stackway; hit; ttl=60"));
    assert_eq!(again.header("age"), Some("0"));
    assert_eq!(seen.count("/fresh"), 1);
    conn.send(b"POST /fresh HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(conn.read_response().text(), "posted");
    // The POST was the origin's second request to /fresh.
    assert_eq!(conn.get("/fresh").text(), "version 3");
    assert_eq!((stats.hits(), stats.misses(), stats.responses()), (1, 2, 1));
    // What is not stored says why.
    assert_eq!(
        conn.get("/private").header("cache-status"),
        Some("stackway; fwd=uri-miss; detail=private")
    );
}

#[test]
fn x_accel_expires_says_how_long_in_place_of_cache_control_as_nginx_reads_it() {
    let (running, seen, _) = serve(64 << 20);
    let mut conn = Conn::open(running.addr);
    let twice = |conn: &mut Conn, path: &str| {
        let statuses = [conn.get(path), conn.get(path)].map(|res| {
            let status = res.header("cache-status").unwrap_or_default().to_owned();
            status.split("; ").nth(1).unwrap_or_default().to_owned()
        });
        (statuses, seen.count(path))
    };
    let expected = |second: &str, count| (["fwd=uri-miss", second].map(String::from), count);
    // `0`: not stored, whatever max-age says.
    assert_eq!(twice(&mut conn, "/accel/off"), expected("fwd=uri-miss", 2));
    // Seconds, and a time to keep it until: stored, though Cache-Control says
    // private or no-cache (to browsers).
    assert_eq!(twice(&mut conn, "/accel/private"), expected("hit", 1));
    assert_eq!(twice(&mut conn, "/accel/until"), expected("hit", 1));
    // A time past: stored stale, so fetched again.
    assert_eq!(twice(&mut conn, "/accel/gone"), expected("fwd=stale", 2));
    // Not a number: ignored, Cache-Control's max-age stands.
    assert_eq!(twice(&mut conn, "/accel/soon"), expected("hit", 1));
}

#[test]
fn a_stale_response_is_revalidated_and_a_304_refreshes_its_fields() {
    let (running, seen, stats) = serve(64 << 20);
    let mut conn = Conn::open(running.addr);
    assert_eq!(conn.get("/etag").text(), "tagged");
    let validated = conn.get("/etag");
    assert_eq!(validated.status, 200);
    assert_eq!(validated.text(), "tagged");
    assert_eq!(validated.header("x-checked"), Some("2"), "the 304's fields");
    assert_eq!(
        validated.header("cache-status"),
        Some("stackway; fwd=stale; fwd-status=304")
    );
    // A client's own condition is answered from what the cache holds.
    conn.send(b"GET /etag HTTP/1.1\r\nHost: localhost\r\nIf-None-Match: \"v1\"\r\n\r\n");
    assert_eq!(conn.read_head().status, 304);
    assert_eq!(seen.count("/etag"), 3);
    assert_eq!(stats.revalidated(), 2);
}

#[test]
fn concurrent_misses_for_one_target_make_one_request_to_the_app() {
    let (running, seen, _) = serve(64 << 20);
    let addr = running.addr;
    let clients: Vec<_> = (0..100)
        .map(|_| std::thread::spawn(move || Conn::open(addr).get("/slow").text()))
        .collect();
    for client in clients {
        assert_eq!(client.join().unwrap(), "slow");
    }
    assert_eq!(seen.count("/slow"), 1);
}

#[test]
fn the_least_recently_used_go_when_the_bound_is_reached() {
    // 100 distinct responses of 1 MiB through a 10 MiB cache.
    let (running, seen, stats) = serve(10 << 20);
    let mut conn = Conn::open(running.addr);
    for n in 0..100 {
        assert_eq!(conn.get(&format!("/big/{n}")).body.len(), 1 << 20);
    }
    assert!(stats.bytes() <= 10 << 20, "{} bytes held", stats.bytes());
    assert!(
        (8..=10).contains(&stats.responses()),
        "{} held",
        stats.responses()
    );
    // The latest are still there, the first are gone.
    conn.get("/big/99");
    assert_eq!(seen.count("/big/99"), 1);
    conn.get("/big/0");
    assert_eq!(seen.count("/big/0"), 2);
}

#[test]
fn a_response_longer_than_the_largest_object_streams_through_unstored() {
    let (running, seen, stats) = serve(16 << 20);
    for _ in 0..2 {
        let mut conn = Conn::open(running.addr);
        let res = conn.get("/huge");
        assert_eq!(res.body.len(), 64 << 20);
    }
    assert_eq!(seen.count("/huge"), 2);
    assert_eq!(stats.responses(), 0);
}

#[test]
fn within_stale_while_revalidate_the_stale_response_is_served_and_refreshed_behind_it() {
    let (running, seen, _) = serve(64 << 20);
    let mut conn = Conn::open(running.addr);
    assert_eq!(conn.get("/swr").text(), "version 1");
    std::thread::sleep(Duration::from_millis(2100));
    let stale = conn.get("/swr");
    assert_eq!(stale.text(), "version 1");
    assert!(
        stale
            .header("cache-status")
            .is_some_and(|s| s.ends_with("detail=stale-while-revalidate")),
        "{:?}",
        stale.header("cache-status")
    );
    let refreshed = std::time::Instant::now();
    while seen.count("/swr") < 2 && refreshed.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(50));
    let fresh = conn.get("/swr");
    assert_eq!(fresh.text(), "version 2");
    assert!(
        fresh
            .header("cache-status")
            .unwrap()
            .starts_with("stackway; hit")
    );
    assert_eq!(seen.count("/swr"), 2);
}

#[test]
fn with_stale_if_error_a_stale_response_answers_while_the_upstream_is_down() {
    let upstream = Running::start(server(), |_req: Request| async {
        response(
            StatusCode::OK,
            &[("cache-control", "max-age=1, stale-if-error=60")],
            Body::from("kept"),
        )
    });
    let proxy = stackway_middleware::Proxy::to(&format!("http://{}", upstream.addr));
    let running = Running::start(server(), Lint::strict(Cache::new(proxy, 1 << 20)));
    let mut conn = Conn::open(running.addr);
    assert_eq!(conn.get("/page").text(), "kept");
    upstream.stop().unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    let stale = conn.get("/page");
    assert_eq!(stale.status, 200);
    assert_eq!(stale.text(), "kept");
    assert_eq!(
        stale.header("cache-status"),
        Some("stackway; fwd=stale; fwd-status=502; detail=stale-if-error")
    );
    // Without it, the upstream's failure is the answer.
    conn.send(b"GET /page HTTP/1.1\r\nHost: localhost\r\nCache-Control: stale-if-error=0\r\n\r\n");
    assert_eq!(conn.read_response().status, 502);
}

#[test]
fn a_range_is_answered_from_a_stored_whole_response() {
    let (running, seen, _) = serve(64 << 20);
    let mut conn = Conn::open(running.addr);
    assert_eq!(conn.get("/fresh").text(), "version 1");
    let mut ask = |range: &str| {
        conn.send(format!("GET /fresh HTTP/1.1\r\nHost: localhost\r\n{range}\r\n").as_bytes());
        conn.read_response()
    };
    let part = ask("Range: bytes=0-6\r\n");
    assert_eq!(part.status, 206);
    assert_eq!(part.text(), "version");
    assert_eq!(part.header("content-range"), Some("bytes 0-6/9"));
    assert_eq!(ask("Range: bytes=-1\r\n").text(), "1");
    // An If-Range the stored response fails: the whole of it.
    let whole = ask("Range: bytes=0-6\r\nIf-Range: \"other\"\r\n");
    assert_eq!((whole.status, whole.text().as_str()), (200, "version 1"));
    let outside = ask("Range: bytes=100-\r\n");
    assert_eq!(outside.status, 416);
    assert_eq!(outside.header("content-range"), Some("bytes */9"));
    assert_eq!(seen.count("/fresh"), 1);
    // Several ranges apart: multipart/byteranges.
    assert_eq!(conn.get("/big/1").body.len(), 1 << 20);
    conn.send(b"GET /big/1 HTTP/1.1\r\nHost: localhost\r\nRange: bytes=0-0,-1\r\n\r\n");
    let parts = conn.read_response();
    assert_eq!(parts.status, 206);
    let content_type = parts.header("content-type").unwrap();
    let boundary = content_type
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap();
    let last = (1 << 20) - 1;
    assert_eq!(
        parts.text(),
        format!(
            "\r\n--{boundary}\r\ncontent-type: application/octet-stream\r\ncontent-range: bytes 0-0/{}\r\n\r\nb\
             \r\n--{boundary}\r\ncontent-type: application/octet-stream\r\ncontent-range: bytes {last}-{last}/{}\r\n\r\nb\
             \r\n--{boundary}--\r\n",
            1 << 20,
            1 << 20
        )
    );
    assert_eq!(seen.count("/big/1"), 1);
}

#[test]
fn a_purge_forgets_by_url_by_prefix_and_by_tag() {
    let cache = Cache::new(origin(Seen::default()), 64 << 20);
    let (stats, purger) = (cache.stats(), cache.purger());
    let running = Running::start(server(), Lint::strict(cache));
    let mut conn = Conn::open(running.addr);
    for path in ["/fresh", "/big/1", "/big/2", "/tagged"] {
        conn.get(path);
    }
    assert_eq!(stats.responses(), 4);
    assert_eq!(purger.url("/nothing"), 0);
    assert_eq!(purger.url("http://localhost/fresh"), 1);
    assert_eq!(purger.prefix("/big/"), 2);
    assert_eq!(purger.tag("front"), 1);
    assert_eq!(stats.responses(), 0);
    assert_eq!(conn.get("/fresh").text(), "version 2");
}

fn serve_on_disk(dir: &std::path::Path) -> (Running, Seen, stackway_middleware::cache::CacheStats) {
    let seen = Seen::default();
    let cache = Cache::new(origin(seen.clone()), 256 << 20)
        .on_disk(dir)
        .unwrap();
    let stats = cache.stats();
    (
        Running::start(server().workers(2), Lint::strict(cache)),
        seen,
        stats,
    )
}

/// The cache's files, but those being written.
fn cache_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            match entry.file_type().unwrap().is_dir() {
                true if entry.file_name() != "tmp" => dirs.push(entry.path()),
                true => {}
                false => files.push(entry.path()),
            }
        }
    }
    files
}

/// Waits for `n` files in place (each is synced and renamed after its body ends).
fn wait_for_files(dir: &std::path::Path, n: usize) {
    for _ in 0..500 {
        if cache_files(dir).len() == n {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{} files in place, not {n}", cache_files(dir).len());
}

#[test]
fn the_disk_store_serves_what_it_stored_after_a_restart_and_removes_torn_files() {
    let dir = tempfile::tempdir().unwrap();
    let (running, _, stats) = serve_on_disk(dir.path());
    let mut conn = Conn::open(running.addr);
    assert_eq!(conn.get("/fresh").text(), "version 1");
    let at_once = conn.get("/fresh");
    assert_eq!(
        at_once.header("cache-status"),
        Some("stackway; hit; ttl=60")
    );
    assert_eq!(at_once.text(), "version 1");
    assert_eq!(conn.get("/huge").body.len(), 64 << 20);
    assert_eq!(
        stats.responses(),
        2,
        "served from their files before they are in place"
    );
    wait_for_files(dir.path(), 2);
    drop(running);
    drop(stats);

    // A copy of a stored file cut short, as a crash mid-write would leave
    // it were files not put in place whole; and a file being written.
    let stored = cache_files(dir.path());
    assert_eq!(stored.len(), 2, "{stored:?}");
    let small = stored
        .iter()
        .min_by_key(|f| f.metadata().unwrap().len())
        .unwrap();
    let bytes = std::fs::read(small).unwrap();
    let torn = small.with_file_name("torn");
    std::fs::write(&torn, &bytes[..bytes.len() - 3]).unwrap();
    std::fs::write(dir.path().join("tmp/1-1"), b"half").unwrap();

    let (running, seen, stats) = serve_on_disk(dir.path());
    assert_eq!(stats.responses(), 2);
    assert!(!torn.exists(), "a torn file is removed");
    let mut conn = Conn::open(running.addr);
    let res = conn.get("/fresh");
    assert_eq!(res.text(), "version 1");
    assert!(
        res.header("cache-status")
            .unwrap()
            .starts_with("stackway; hit")
    );
    let res = conn.get("/huge");
    assert!(res.body.iter().all(|b| *b == b'h') && res.body.len() == 64 << 20);
    conn.send(b"GET /huge HTTP/1.1\r\nHost: localhost\r\nRange: bytes=10-19\r\n\r\n");
    let part = conn.read_response();
    assert_eq!((part.status, part.text().as_str()), (206, "hhhhhhhhhh"));
    assert_eq!(seen.count("/fresh") + seen.count("/huge"), 0);
}

#[test]
fn caches_sharing_a_directory_find_what_the_other_stored_and_invalidated() {
    let dir = tempfile::tempdir().unwrap();
    let (one, seen_one, _) = serve_on_disk(dir.path());
    let (other, seen_other, _) = serve_on_disk(dir.path());
    let (mut one, mut other) = (Conn::open(one.addr), Conn::open(other.addr));
    assert_eq!(one.get("/fresh").text(), "version 1");
    wait_for_files(dir.path(), 1);
    let res = other.get("/fresh");
    assert_eq!(res.text(), "version 1");
    assert!(
        res.header("cache-status")
            .unwrap()
            .starts_with("stackway; hit")
    );
    assert_eq!(seen_other.count("/fresh"), 0);

    // A POST through one forgets the target for both.
    other.send(b"POST /fresh HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(other.read_response().text(), "posted");
    assert!(cache_files(dir.path()).is_empty());
    assert_eq!(one.get("/fresh").text(), "version 2");
    assert_eq!(seen_one.count("/fresh"), 2);
}
