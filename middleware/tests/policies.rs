//! The gateway's policies over real sockets: rate and concurrency limits,
//! access by address, and ProxyFix trusting by peer.

use stackway_test_support as support;

use std::time::{Duration, Instant};

use stackway::{Request, RequestExt};
use stackway_middleware::access::Peers;
use stackway_middleware::{Access, Lint, ProxyFix, RateLimit};
use support::http::Conn;
use support::{Running, server};

/// Answers with the client's address as the app sees it.
async fn whoami(req: Request) -> String {
    match req.environ().remote_addr() {
        Some(addr) => addr.ip().to_string(),
        None => "unix".to_owned(),
    }
}

fn get_as(conn: &mut Conn, path: &str, client: &str) -> support::http::RawResponse {
    conn.send(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {client}\r\n\r\n").as_bytes(),
    );
    conn.read_response()
}

#[test]
fn a_burst_over_the_rate_gets_429_with_retry_after_and_the_rest_pass() {
    let app = RateLimit::new(whoami).rate(1.0).burst(5).nodelay();
    let running = Running::start(server(), Lint::strict(app));
    let mut conn = Conn::open(running.addr);
    let statuses: Vec<u16> = (0..10).map(|_| conn.get("/").status).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 429, 429, 429, 429]);
    let refused = conn.get("/");
    assert_eq!(refused.header("retry-after"), Some("1"));
    // A second later, one more has drained.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(conn.get("/").status, 200);
    assert_eq!(conn.get("/").status, 429);
}

#[test]
fn without_nodelay_a_burst_is_spaced_out_at_the_rate() {
    let app = RateLimit::new(whoami).rate(10.0).burst(3);
    let running = Running::start(server().workers(2), Lint::strict(app));
    let (addr, started) = (running.addr, Instant::now());
    let clients: Vec<_> = (0..5)
        .map(|_| std::thread::spawn(move || Conn::open(addr).get("/").status))
        .collect();
    let mut statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    statuses.sort();
    // One at once, three waiting their turn, the fifth over the burst.
    assert_eq!(statuses, [200, 200, 200, 200, 429]);
    // The last waited three turns of 100 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn the_concurrency_limit_counts_a_clients_requests_in_flight() {
    let slow = |_req: Request| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        "done"
    };
    let app = RateLimit::new(slow).concurrency(2);
    let running = Running::start(server().workers(2), Lint::strict(app));
    let addr = running.addr;
    let clients: Vec<_> = (0..3)
        .map(|i| {
            std::thread::sleep(Duration::from_millis(if i == 2 { 100 } else { 0 }));
            std::thread::spawn(move || Conn::open(addr).get("/").status)
        })
        .collect();
    let mut statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 200, 429]);
    // Once they are done, there is room again.
    assert_eq!(Conn::open(addr).get("/").status, 200);
}

#[test]
fn a_hundred_thousand_client_addresses_keep_the_limiter_bounded() {
    let limit = RateLimit::new(whoami).rate(1.0).max_keys(10_000);
    let stats = limit.clone();
    let app = ProxyFix::new(limit);
    let running = Running::start(server(), Lint::strict(app));
    let mut conn = Conn::open(running.addr);
    // Pipelined a thousand at a time.
    for batch in 0..100u32 {
        let mut requests = String::new();
        for i in 0..1000u32 {
            let n = batch * 1000 + i;
            let client = format!("10.{}.{}.{}", n >> 16, (n >> 8) & 255, n & 255);
            requests.push_str(&format!(
                "GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {client}\r\n\r\n"
            ));
        }
        conn.send(requests.as_bytes());
        for _ in 0..1000 {
            assert_eq!(conn.read_response().status, 200);
        }
    }
    assert!(stats.keys() <= 10_000, "{} keys", stats.keys());
    assert!(stats.keys() >= 9_000, "{} keys", stats.keys());
    // The latest are remembered (over the rate at once), the first forgotten.
    assert_eq!(get_as(&mut conn, "/", "10.1.134.159").status, 429);
    assert_eq!(get_as(&mut conn, "/", "10.0.0.0").status, 200);
}

#[test]
fn access_rules_allow_and_deny_ipv4_and_ipv6_clients_first_match_winning() {
    let access = Access::new(whoami)
        .rule("deny 10.0.0.1")
        .and_then(|a| a.rule("allow 10.0.0.0/8"))
        .and_then(|a| a.rule("allow 2001:db8::/32"))
        .and_then(|a| a.rule("deny all"))
        .unwrap();
    let running = Running::start(server(), Lint::strict(ProxyFix::new(access)));
    let mut conn = Conn::open(running.addr);
    for (client, status) in [
        ("10.0.0.1", 403),
        ("10.2.3.4", 200),
        ("2001:db8::7", 200),
        ("[2001:db8:ffff::1]:443", 200),
        ("2001:db9::1", 403),
        ("192.0.2.1", 403),
    ] {
        assert_eq!(get_as(&mut conn, "/", client).status, status, "{client}");
    }
    assert_eq!(get_as(&mut conn, "/", "10.2.3.4").text(), "10.2.3.4");
    // The loopback itself, not forwarded: denied by `all`.
    assert_eq!(Conn::open(running.addr).get("/").status, 403);

    // Over a real IPv6 socket, a client on ::1.
    let Ok(v6) = stackway::Server::bind("[::1]:0") else {
        assert!(std::env::var_os("CI").is_none(), "no IPv6 loopback");
        println!("skipped the IPv6 socket: no IPv6 loopback here");
        return;
    };
    let local = Access::new(whoami)
        .rule("allow ::1")
        .and_then(|a| a.rule("deny all"))
        .unwrap();
    let running = Running::start(v6.workers(1), Lint::strict(local));
    let res = Conn::open(running.addr).get("/");
    assert_eq!((res.status, res.text().as_str()), (200, "::1"));
}

#[test]
fn proxy_fix_ignores_the_headers_of_a_peer_it_does_not_trust() {
    let elsewhere = Peers::new(["10.0.0.0/8", "unix"]).unwrap();
    let running = Running::start(
        server(),
        Lint::strict(ProxyFix::new(whoami).trusted(elsewhere)),
    );
    let mut conn = Conn::open(running.addr);
    assert_eq!(get_as(&mut conn, "/", "203.0.113.9").text(), "127.0.0.1");

    let loopback = Peers::new(["127.0.0.0/8"]).unwrap();
    let running = Running::start(
        server(),
        Lint::strict(ProxyFix::new(whoami).trusted(loopback)),
    );
    let mut conn = Conn::open(running.addr);
    assert_eq!(get_as(&mut conn, "/", "203.0.113.9").text(), "203.0.113.9");
}

/// The auth service: `Bearer alice` is alice, `Bearer ghost` gets a login
/// redirect, anyone else 401; it says back what it was asked about.
async fn auth_service(req: Request) -> stackway::Response {
    let asked = format!(
        "{} {}",
        req.headers()["x-forwarded-method"].to_str().unwrap(),
        req.headers()["x-forwarded-uri"].to_str().unwrap()
    );
    let builder = http::Response::builder().header("x-asked", asked);
    let builder = match req.headers().get("authorization").map(|v| v.as_bytes()) {
        Some(b"Bearer alice") => builder.header("x-user", "alice"),
        Some(b"Bearer ghost") => builder.status(302).header("location", "/login"),
        _ => builder.status(401).header("www-authenticate", "Bearer"),
    };
    builder.body(stackway::Body::from("from auth")).unwrap()
}

#[test]
fn forward_auth_asks_a_real_auth_service_and_copies_who_it_said() {
    use stackway_middleware::{ForwardAuth, Proxy};
    let service = Running::start(server(), Lint::strict(auth_service));
    let app = |req: Request| async move {
        let user = req.headers().get_all("x-user").iter();
        let users: Vec<_> = user.map(|v| v.to_str().unwrap().to_owned()).collect();
        format!("hello {}", users.join(","))
    };
    let guarded =
        |service: &str| ForwardAuth::new(app, Proxy::to(service), "/verify").copy(["x-user"]);
    let running = Running::start(
        server(),
        Lint::strict(guarded(&format!("http://{}", service.addr))),
    );
    let ask = |authorization: &str| {
        let mut conn = Conn::open(running.addr);
        conn.send(
            format!(
                "POST /orders?id=7 HTTP/1.1\r\nHost: x\r\nAuthorization: {authorization}\r\n\
                 X-User: mallory\r\nContent-Length: 4\r\n\r\nbody"
            )
            .as_bytes(),
        );
        conn.read_response()
    };
    // Yes: through, as the user the service named (the client's own X-User gone).
    assert_eq!(ask("Bearer alice").text(), "hello alice");
    // No: the service's answer, as it is.
    let refused = ask("Bearer mallory");
    assert_eq!(
        (refused.status, refused.text().as_str()),
        (401, "from auth")
    );
    assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
    assert_eq!(refused.header("x-asked"), Some("POST /orders?id=7"));
    let redirected = ask("Bearer ghost");
    assert_eq!(
        (redirected.status, redirected.header("location")),
        (302, Some("/login"))
    );

    // The service down: 503, never an open door.
    drop(service);
    let down = Running::start(server(), Lint::strict(guarded("http://127.0.0.1:1")));
    let mut conn = Conn::open(down.addr);
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer alice\r\n\r\n");
    assert_eq!(conn.read_response().status, 503);
}

#[test]
fn forward_auth_remembers_a_yes_for_its_while_and_never_a_no() {
    use stackway_middleware::{ForwardAuth, Proxy};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let asked = Arc::new(AtomicUsize::new(0));
    let counting = {
        let asked = asked.clone();
        move |req: Request| {
            asked.fetch_add(1, Ordering::Relaxed);
            auth_service(req)
        }
    };
    let service = Running::start(server(), Lint::strict(counting));
    let app = |req: Request| async move {
        let users = req.headers().get_all("x-user").iter();
        let users: Vec<_> = users.map(|v| v.to_str().unwrap().to_owned()).collect();
        format!("hello {}", users.join(","))
    };
    let guarded = ForwardAuth::new(
        app,
        Proxy::to(&format!("http://{}", service.addr)),
        "/verify",
    )
    .copy(["x-user"])
    .remember(Duration::from_millis(500));
    let running = Running::start(server(), Lint::strict(guarded));
    let ask = |path: &str, authorization: &str| {
        let mut conn = Conn::open(running.addr);
        conn.send(
            format!(
                "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {authorization}\r\n\
                 X-User: mallory\r\n\r\n"
            )
            .as_bytes(),
        );
        conn.read_response()
    };
    let questions = || asked.load(Ordering::Relaxed);

    // A yes, then the same request again: asked once, the fields copied both times.
    assert_eq!(ask("/a", "Bearer alice").text(), "hello alice");
    assert_eq!(ask("/a", "Bearer alice").text(), "hello alice");
    assert_eq!(questions(), 1);
    // Another target, or other credentials, is another question.
    assert_eq!(ask("/b", "Bearer alice").text(), "hello alice");
    assert_eq!(questions(), 2);
    // A no is asked every time.
    assert_eq!(ask("/a", "Bearer mallory").status, 401);
    assert_eq!(ask("/a", "Bearer mallory").status, 401);
    assert_eq!(questions(), 4);
    // Once its while is over, a yes is asked for again.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(ask("/a", "Bearer alice").text(), "hello alice");
    assert_eq!(questions(), 5);
}
