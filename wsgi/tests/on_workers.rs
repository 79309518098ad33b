//! A WSGI app with no threads of its own (`threads(0)`): each request runs on
//! the server worker that read it, over real sockets.

use stackway_test_support as support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use stackway_middleware::Lint;
use stackway_wsgi::Wsgi;
use support::http::Conn;
use support::{Running, server};

/// The app `callable` of `tests/python/wsgi_apps.py`, on the server's workers.
fn app(callable: &str) -> Wsgi {
    stackway_wsgi::python_path("tests/python").unwrap();
    Wsgi::import(&format!("wsgi_apps:{callable}"))
        .unwrap()
        .threads(0)
}

/// `where`'s answer: the thread's name, the requests its Python state has seen, the body's length.
fn answer(conn: &mut Conn, request: &[u8]) -> (String, u32, usize) {
    conn.send(request);
    let res = conn.read_response();
    assert_eq!(res.status, 200, "{}", res.text());
    let text = res.text();
    let mut fields = text.split(' ');
    let mut next = || fields.next().unwrap_or_default().to_owned();
    (next(), next().parse().unwrap(), next().parse().unwrap())
}

#[test]
fn each_request_runs_on_the_worker_that_read_it_keeping_its_python_state() {
    let running = Running::start(
        server()
            .workers(2)
            .around_workers(|serve| stackway_wsgi::attached(serve)),
        Lint::strict(app("where")),
    );
    // One connection stays on one worker: the same thread, with the same
    // Python thread state from one request to the next.
    let mut conn = Conn::open(running.addr);
    let get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let (name, first, _) = answer(&mut conn, get);
    assert_eq!(name, "stackway-worker");
    assert_eq!(answer(&mut conn, get), (name.clone(), first + 1, 0));
    assert_eq!(answer(&mut conn, get), (name, first + 2, 0));
    // A body past the memory bound (1 MiB) is read from its temporary file
    // by the worker that Python holds.
    let big = vec![b'x'; 3 << 20];
    let mut post = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        big.len()
    )
    .into_bytes();
    post.extend_from_slice(&big);
    assert_eq!(answer(&mut conn, &post).2, big.len());
}

#[test]
fn a_worker_not_attached_still_runs_python_with_a_state_made_for_each_request() {
    let running = Running::start(server().workers(1), Lint::strict(app("where")));
    let mut conn = Conn::open(running.addr);
    let get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(answer(&mut conn, get), ("stackway-worker".to_owned(), 1, 0));
    assert_eq!(answer(&mut conn, get), ("stackway-worker".to_owned(), 1, 0));
}

#[test]
fn harakiri_interrupts_the_worker_answers_504_and_the_worker_serves_again() {
    let called = Arc::new(AtomicUsize::new(0));
    let seen = called.clone();
    let spin = app("spin").harakiri(Duration::from_millis(500), move || {
        seen.fetch_add(1, Ordering::Relaxed);
    });
    let stats = spin.stats();
    assert_eq!(stats.threads(), 0);
    // One worker: the request after the stuck one needs it back.
    let running = Running::start(
        server()
            .workers(1)
            .around_workers(|serve| stackway_wsgi::attached(serve)),
        Lint::strict(spin),
    );
    assert_eq!(Conn::open(running.addr).get("/?0.1").text(), "done");
    let asked = Instant::now();
    let res = Conn::open(running.addr).get("/?30");
    let took = asked.elapsed();
    assert_eq!(res.status, 504);
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(stats.harakiri(), 1);
    assert_eq!(Conn::open(running.addr).get("/?0").text(), "done");
    let logged = Instant::now();
    while called.load(Ordering::Relaxed) == 0 && logged.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(called.load(Ordering::Relaxed), 1);
    assert_eq!(stats.busy(), 0);
    assert_eq!(stats.jobs(), 3);
}
