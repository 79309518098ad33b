//! Which Python thread takes the next request, with the app alone in its
//! process: apps in one process share the GIL, and another test's app
//! holding it would make this one's threads look blocked.

use stackway_test_support as support;

use std::time::{Duration, Instant};

use stackway_middleware::Lint;
use stackway_wsgi::Wsgi;
use support::http::Conn;
use support::{Running, server};

#[test]
fn computing_requests_take_turns_in_order_and_waiting_ones_overlap() {
    // Eight threads. Sixteen requests that compute 10 ms each would, started
    // together, only trade the GIL in no fair order; they run one after
    // another instead. Sixteen that sleep 200 ms all overlap.
    stackway_wsgi::python_path("tests/python").unwrap();
    let app = Wsgi::import("wsgi_apps:counted").unwrap().threads(8);
    let running = Running::start(server().workers(2), Lint::strict(app));
    let addr = running.addr;
    let burst = |path: &'static str| {
        let clients: Vec<_> = (0..16)
            .map(|_| std::thread::spawn(move || Conn::open(addr).get(path).text()))
            .collect();
        for client in clients {
            assert_eq!(client.join().unwrap(), "done");
        }
        Conn::open(addr)
            .get("/most")
            .text()
            .parse::<usize>()
            .unwrap()
    };
    // A request that a loaded machine keeps from its core for longer than the
    // pool's 20 ms lets the next one in, by design; without the turns, every
    // burst has all eight threads in at once. So the best of three bursts counts.
    let mut computing = Vec::new();
    while computing.len() < 3 && computing.last().is_none_or(|&most| most > 2) {
        computing.push(burst("/compute"));
    }
    assert!(
        computing.iter().any(|&most| most <= 2),
        "computing requests at once: {computing:?}"
    );
    let started = Instant::now();
    let sleeping = burst("/sleep");
    assert!(sleeping >= 6, "{sleeping} sleeping requests at once");
    let took = started.elapsed();
    assert!(took < Duration::from_millis(16 * 200 / 3), "took {took:?}");
}
