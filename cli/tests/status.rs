//! The status page in a real browser: headless Chromium (Debian's `chromium`)
//! loads it from the admin listener while requests run, and the page's own
//! DOM says the tables and sparklines rendered and updated. A screenshot is
//! saved as a test artifact (`target/tmp/status.png`).

use stackway_test_support::http;
mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::Conn;
use support::{Server, stackway};

fn chromium() -> Option<&'static str> {
    let paths = ["/usr/bin/chromium", "/usr/bin/chromium-browser"];
    stackway_test_support::external::file(&paths, "Debian's chromium")
}

/// Chromium, headless, with the flags that keep it off the network.
fn headless(chromium: &str, profile: &std::path::Path) -> Command {
    let mut command = Command::new(chromium);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // Time runs ahead while nothing is pending: five seconds of the page's
            // polling, fetches included, then the DOM.
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()));
    command
}

#[test]
fn the_status_page_renders_and_updates_in_chromium() {
    let Some(chromium) = chromium() else {
        return;
    };
    let mut command = stackway(&["--bind", "127.0.0.1:0", "--admin-bind", "127.0.0.1:0"]);
    command
        .args([
            "--status",
            "/status",
            "--metrics",
            "/metrics",
            "--cache",
            "1MiB",
        ])
        .args(["--mount", "/=hello", "--mount", "/env=demo"])
        .args(["--mount", "/down=http://127.0.0.1:1"])
        .args(["--mount", "/py=wsgi:wsgi_apps:hello", "--pythonpath"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../wsgi/tests/python"));
    let server = Server::start(command, 2);
    let (public, admin) = (server.tcp(0), server.tcp(1));
    // The page is the admin listener's alone.
    assert_eq!(
        Conn::open(public).get("/status").text(),
        "<h1>Hello, status!</h1>"
    );

    // Requests while the browser looks: a demo page and a failing upstream (502).
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut conn = Conn::open(public);
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(conn.get("/env/x").status, 200);
                assert_eq!(conn.get("/down/").status, 502);
                assert_eq!(conn.get("/py/you").text(), "Hello, you!");
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));

    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://{admin}/status");
    let dom = headless(chromium, profile.path())
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    let updates: u32 = dom
        .split("data-updates=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no data-updates in {dom}"));
    assert!(
        updates >= 3,
        "the page polled its JSON {updates} times: {dom}"
    );
    let env_row = dom
        .split("data-mount=\"/env\"")
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .unwrap_or_else(|| panic!("no /env row in {dom}"));
    let points = env_row
        .split("points=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("");
    assert!(
        points.split(' ').count() >= 3,
        "a sparkline of at least 3 points: {env_row}"
    );
    // Time runs ahead of the load in the browser, so some ticks see no new
    // request; at least one saw some (a point above the baseline).
    let rose = points
        .split(' ')
        .filter_map(|p| p.split(',').nth(1)?.parse::<f64>().ok())
        .any(|y| y < 22.0);
    assert!(rose, "a rate above zero in the sparkline: {env_row}");
    assert!(dom.contains("data-mount=\"/down\""), "{dom}");
    let upstreams = dom.split("id=\"upstreams\"").nth(1).unwrap_or("");
    assert!(
        upstreams.contains("<td>http://127.0.0.1:1</td><td>DOWN</td>"),
        "the dead upstream is shown down: {upstreams}"
    );
    let pools = dom.split("id=\"pools\"").nth(1).unwrap_or("");
    assert!(
        pools.contains("<td>/py</td>"),
        "the Python pool is shown: {pools}"
    );
    let caches = dom.split("id=\"caches\"").nth(1).unwrap_or("");
    let serve_row = caches.split("<td>serve</td>").nth(1).unwrap_or("");
    let misses: u64 = (serve_row.split("<td class=\"n\">").nth(2))
        .and_then(|cell| cell.split('<').next()?.parse().ok())
        .unwrap_or_else(|| panic!("the cache is shown with its misses: {caches}"));
    assert!(misses > 0, "{caches}");
    let errors = dom.split("id=\"errors\"").nth(1).unwrap_or("");
    assert!(
        errors.contains("<td>502</td>") && errors.contains("<td>/down</td>"),
        "{errors}"
    );

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status.png");
    let _ = std::fs::remove_file(&shot);
    let taken = headless(chromium, profile.path())
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1000,720")
        .arg(&url)
        .output()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot ({e}): {taken:?}"));
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());
}
