//! A pool from DNS: a small DNS server of the test's own names a host's
//! addresses, which change while a client sends requests through the proxy
//! to stackway upstreams on those addresses.

use stackway_test_support as support;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stackway::{Request, RequestExt};
use stackway_middleware::{Lint, Proxy};
use support::Running;
use support::http::Conn;

/// A DNS server on loopback that answers every A question with the
/// addresses in `answers` (TTL 0) and every other question with none.
fn dns_server(answers: Arc<Mutex<Vec<Ipv4Addr>>>) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let query = &buf[..n];
            // The question: labels from byte 12 to a zero byte, then type and class.
            let Some(end) = query[12..].iter().position(|&b| b == 0).map(|i| 12 + i + 5) else {
                continue;
            };
            let Some(question) = query.get(12..end) else {
                continue;
            };
            let qtype =
                u16::from_be_bytes([question[question.len() - 4], question[question.len() - 3]]);
            let ips = match qtype {
                1 => answers.lock().unwrap().clone(),
                _ => Vec::new(),
            };
            let mut answer = Vec::new();
            answer.extend_from_slice(&query[..2]); // the id
            answer.extend_from_slice(&[0x81, 0x80, 0, 1]); // a response, recursion; one question
            answer.extend_from_slice(&(ips.len() as u16).to_be_bytes());
            answer.extend_from_slice(&[0, 0, 0, 0]);
            answer.extend_from_slice(question);
            for ip in ips {
                // The name by a pointer to the question's, A, IN, TTL 0, four bytes.
                answer.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
                answer.extend_from_slice(&ip.octets());
            }
            let _ = socket.send_to(&answer, from);
        }
    });
    addr
}

/// An upstream on `ip:port` that answers with its own address.
fn upstream(ip: &str, port: u16) -> Running {
    let server = stackway::Server::bind(format!("{ip}:{port}"))
        .unwrap()
        .workers(1);
    Running::start(server, |req: Request| async move {
        req.environ().local_addr().unwrap().ip().to_string()
    })
}

#[test]
fn a_pool_follows_its_hosts_addresses_and_no_request_fails() {
    let answers = Arc::new(Mutex::new(vec![Ipv4Addr::new(127, 0, 0, 2)]));
    let dns = dns_server(answers.clone());
    let two = upstream("127.0.0.2", 0);
    let port = two.addr.port();
    let three = upstream("127.0.0.3", port);
    let proxy = Proxy::to(&format!("http://api.test:{port}"))
        .resolve(Duration::from_millis(100))
        .nameservers([dns]);
    let stats = proxy.stats();
    let front = Running::start(support::server().workers(2), Lint::strict(proxy));

    // Asks until `done` says so, a new connection now and then; who answered each.
    let ask = |done: &dyn Fn(&[String]) -> bool| {
        let mut answered = Vec::new();
        let started = Instant::now();
        while !done(&answered) {
            assert!(started.elapsed() < Duration::from_secs(10), "{answered:?}");
            let mut conn = Conn::open(front.addr);
            for _ in 0..5 {
                let res = conn.get("/");
                assert_eq!(res.status, 200, "a request failed: {}", res.text());
                answered.push(res.text());
            }
        }
        answered
    };
    let seen = ask(&|a| a.len() >= 20);
    assert!(seen.iter().all(|a| a == "127.0.0.2"), "{seen:?}");

    answers.lock().unwrap().push(Ipv4Addr::new(127, 0, 0, 3));
    ask(&|a| a.iter().any(|a| a == "127.0.0.3"));
    let names: Vec<String> = stats.upstreams().into_iter().map(|u| u.name).collect();
    assert_eq!(
        names,
        [
            format!("http://api.test:{port} (127.0.0.2)"),
            format!("http://api.test:{port} (127.0.0.3)")
        ]
    );

    // .2 leaves the name: once the proxy sees it, nothing goes there, and it can stop.
    *answers.lock().unwrap() = vec![Ipv4Addr::new(127, 0, 0, 3)];
    ask(&|a| a.len() >= 20 && a[a.len() - 20..].iter().all(|a| a == "127.0.0.3"));
    two.stop().unwrap();
    let seen = ask(&|a| a.len() >= 20);
    assert!(seen.iter().all(|a| a == "127.0.0.3"), "{seen:?}");
    assert_eq!(stats.upstreams().len(), 1);
    drop(three);
}
