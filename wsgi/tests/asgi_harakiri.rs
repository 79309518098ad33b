//! Harakiri for the asyncio loop, in a binary of its own: a stuck loop stays
//! stuck, for every ASGI app of the process.

use stackway_test_support as support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use stackway_middleware::{Dispatcher, Lint};
use stackway_wsgi::Asgi;
use support::http::Conn;
use support::{Running, server};

#[test]
fn a_coroutine_that_never_awaits_is_cut_off_and_the_hook_called_once() {
    stackway_wsgi::python_path("tests/python").unwrap();
    let called = Arc::new(AtomicUsize::new(0));
    let seen = called.clone();
    let spin =
        Asgi::import("asgi_apps:spin")
            .unwrap()
            .harakiri(Duration::from_millis(500), move || {
                seen.fetch_add(1, Ordering::Relaxed);
            });
    let apps = Dispatcher::default()
        .mount("/spin", Lint::strict(spin))
        .mount("/nap", Lint::strict(Asgi::import("asgi_apps:nap").unwrap()));
    let running = Running::start(server().workers(2), apps);
    assert_eq!(Conn::open(running.addr).get("/nap").text(), "rested");
    let asked = Instant::now();
    assert_eq!(Conn::open(running.addr).get("/spin").status, 500);
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(4), "{took:?}");
    // The hook comes once the loop thread's stack is logged.
    while called.load(Ordering::Relaxed) == 0 && asked.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(called.load(Ordering::Relaxed), 1);
    // The loop is gone for this process: 503 at once, until it is replaced.
    assert_eq!(Conn::open(running.addr).get("/nap").status, 503);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(called.load(Ordering::Relaxed), 1, "the hook is called once");
}
