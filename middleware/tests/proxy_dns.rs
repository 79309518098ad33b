//! A pool from DNS: a small DNS server of the test's own names a host's
//! addresses, which change while a client sends requests through the proxy
//! to stackway upstreams on those addresses.

use stackway_test_support as support;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stackway::{Request, RequestExt};
use stackway_middleware::proxy::ProxyStats;
use stackway_middleware::{Lint, Proxy};
use support::Running;
use support::http::Conn;

/// What the test's DNS server answers for a name.
#[derive(Clone)]
enum Answer {
    A(Ipv4Addr),
    /// Priority, weight, port, target.
    Srv(u16, u16, u16, &'static str),
}

/// The names the test's DNS server knows, lower case, and their answers.
type Zone = Arc<Mutex<HashMap<String, Vec<Answer>>>>;

/// A DNS server on loopback that answers each question with the answers of
/// its type that `zone` has for the name (TTL 0), and none for the others.
fn dns_server(zone: Zone) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let query = &buf[..n];
            // The question: labels from byte 12 to a zero byte, then type and class.
            let (mut name, mut at) = (Vec::new(), 12);
            while let Some(&len) = query.get(at).filter(|&&len| len > 0) {
                let Some(label) = query.get(at + 1..at + 1 + usize::from(len)) else {
                    break;
                };
                name.push(String::from_utf8_lossy(label).to_lowercase());
                at += 1 + usize::from(len);
            }
            let Some(question) = query.get(12..at + 5) else {
                continue;
            };
            let qtype = u16::from_be_bytes([query[at + 1], query[at + 2]]);
            let found = zone.lock().unwrap().get(&name.join(".")).cloned();
            let answers: Vec<(u16, Vec<u8>)> = (found.into_iter().flatten())
                .filter_map(|answer| match answer {
                    Answer::A(ip) if qtype == 1 => Some((1, ip.octets().to_vec())),
                    Answer::Srv(priority, weight, port, target) if qtype == 33 => {
                        let mut data = [priority, weight, port].map(u16::to_be_bytes).concat();
                        for label in target.split('.') {
                            data.push(label.len() as u8);
                            data.extend_from_slice(label.as_bytes());
                        }
                        data.push(0);
                        Some((33, data))
                    }
                    _ => None,
                })
                .collect();
            let mut answer = Vec::new();
            answer.extend_from_slice(&query[..2]); // the id
            answer.extend_from_slice(&[0x81, 0x80, 0, 1]); // a response, recursion; one question
            answer.extend_from_slice(&(answers.len() as u16).to_be_bytes());
            answer.extend_from_slice(&[0, 0, 0, 0]);
            answer.extend_from_slice(question);
            for (rtype, data) in answers {
                // The name by a pointer to the question's, the type, IN, TTL 0, the data.
                answer.extend_from_slice(&[0xc0, 12]);
                answer.extend_from_slice(&rtype.to_be_bytes());
                answer.extend_from_slice(&[0, 1, 0, 0, 0, 0]);
                answer.extend_from_slice(&(data.len() as u16).to_be_bytes());
                answer.extend_from_slice(&data);
            }
            let _ = socket.send_to(&answer, from);
        }
    });
    addr
}

/// An upstream on `ip:port` (0: any) that answers with its own address and port.
fn upstream(ip: &str, port: u16) -> Running {
    let server = stackway::Server::bind(format!("{ip}:{port}"))
        .unwrap()
        .workers(1);
    Running::start(server, |req: Request| async move {
        req.environ().local_addr().unwrap().to_string()
    })
}

/// Asks `front` for `/` until `done` says so, a new connection now and then,
/// and says who answered each request; every one must succeed.
fn ask(front: &Running, done: &dyn Fn(&[String]) -> bool) -> Vec<String> {
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
}

/// The last `n` answers all came from `from`.
fn last(n: usize, from: &str) -> impl Fn(&[String]) -> bool {
    move |a: &[String]| a.len() >= n && a[a.len() - n..].iter().all(|a| a == from)
}

fn zone(names: impl IntoIterator<Item = (&'static str, Vec<Answer>)>) -> Zone {
    let names = names
        .into_iter()
        .map(|(name, answers)| (name.to_owned(), answers));
    Arc::new(Mutex::new(names.collect()))
}

/// A front that proxies to `spec`, a pool from DNS asking `dns` every 100 ms, and its stats.
fn pool(spec: &str, dns: SocketAddr) -> (Running, ProxyStats) {
    let proxy = Proxy::to(spec)
        .resolve(Duration::from_millis(100))
        .nameservers([dns]);
    let stats = proxy.stats();
    let front = Running::start(support::server().workers(2), Lint::strict(proxy));
    (front, stats)
}

fn names(stats: &ProxyStats) -> Vec<String> {
    stats.upstreams().into_iter().map(|u| u.name).collect()
}

#[test]
fn a_pool_follows_its_hosts_addresses_and_no_request_fails() {
    let zone = zone([("api.test", vec![Answer::A(Ipv4Addr::new(127, 0, 0, 2))])]);
    let dns = dns_server(zone.clone());
    let two = upstream("127.0.0.2", 0);
    let port = two.addr.port();
    let three = upstream("127.0.0.3", port);
    let (two_at, three_at) = (two.addr.to_string(), three.addr.to_string());
    let (front, stats) = pool(&format!("http://api.test:{port}"), dns);

    let seen = ask(&front, &|a| a.len() >= 20);
    assert!(seen.iter().all(|a| *a == two_at), "{seen:?}");

    let add = Answer::A(Ipv4Addr::new(127, 0, 0, 3));
    zone.lock().unwrap().get_mut("api.test").unwrap().push(add);
    ask(&front, &|a| a.contains(&three_at));
    assert_eq!(
        names(&stats),
        [
            format!("http://api.test:{port} (127.0.0.2)"),
            format!("http://api.test:{port} (127.0.0.3)")
        ]
    );

    // .2 leaves the name: once the proxy sees it, nothing goes there, and it can stop.
    zone.lock().unwrap().get_mut("api.test").unwrap().remove(0);
    ask(&front, &last(20, &three_at));
    two.stop().unwrap();
    let seen = ask(&front, &|a| a.len() >= 20);
    assert!(seen.iter().all(|a| *a == three_at), "{seen:?}");
    assert_eq!(stats.upstreams().len(), 1);
    drop(three);
}

/// `_http._tcp.api.test`: a primary on a.api.test, and a backup (a higher
/// priority number) on the same host at another port.
fn srv_zone(primary: u16, backup: u16) -> Zone {
    zone([
        (
            "_http._tcp.api.test",
            vec![
                Answer::Srv(10, 5, primary, "a.api.test"),
                Answer::Srv(20, 0, backup, "a.api.test"),
            ],
        ),
        ("a.api.test", vec![Answer::A(Ipv4Addr::new(127, 0, 0, 2))]),
        ("b.api.test", vec![Answer::A(Ipv4Addr::new(127, 0, 0, 3))]),
    ])
}

#[test]
fn srv_records_give_members_their_ports_and_a_backup_serves_when_the_primaries_are_gone() {
    let (a, backup, b) = (
        upstream("127.0.0.2", 0),
        upstream("127.0.0.2", 0),
        upstream("127.0.0.3", 0),
    );
    let zone = srv_zone(a.addr.port(), backup.addr.port());
    let dns = dns_server(zone.clone());
    let (a_at, b_at, backup_at) = (
        a.addr.to_string(),
        b.addr.to_string(),
        backup.addr.to_string(),
    );
    let (front, stats) = pool("http+srv://_http._tcp.api.test", dns);

    // The lowest priority number is served while it has a live member.
    let seen = ask(&front, &|a| a.len() >= 20);
    assert!(seen.iter().all(|seen| *seen == a_at), "{seen:?}");

    // A record for another target and port joins that priority, with three
    // times the weight: it takes three requests in four.
    let record = Answer::Srv(10, 15, b.addr.port(), "b.api.test");
    zone.lock()
        .unwrap()
        .get_mut("_http._tcp.api.test")
        .unwrap()
        .push(record);
    ask(&front, &|a| a.contains(&b_at));
    let seen = ask(&front, &|a| a.len() >= 80);
    let to_b = seen.iter().filter(|seen| **seen == b_at).count();
    assert!((50..=70).contains(&to_b), "{to_b} of 80 to b: {seen:?}");
    assert!(!seen.contains(&backup_at), "{seen:?}");
    let name = "http+srv://_http._tcp.api.test";
    assert_eq!(
        names(&stats),
        [
            format!("{name} ({a_at})"),
            format!("{name} ({b_at})"),
            format!("{name} ({backup_at})")
        ]
    );

    // b's record goes, then b and a stop: the backup takes the requests, and
    // the one sent to a as it stopped is tried again there.
    zone.lock()
        .unwrap()
        .get_mut("_http._tcp.api.test")
        .unwrap()
        .pop();
    ask(&front, &last(20, &a_at));
    b.stop().unwrap();
    a.stop().unwrap();
    ask(&front, &last(20, &backup_at));
    drop(backup);
}

#[test]
fn without_resolve_an_srv_name_is_asked_at_each_connection() {
    let (a, backup) = (upstream("127.0.0.2", 0), upstream("127.0.0.2", 0));
    let dns = dns_server(srv_zone(a.addr.port(), backup.addr.port()));
    let front = Running::start(
        support::server(),
        Lint::strict(Proxy::to("http+srv://_http._tcp.api.test").nameservers([dns])),
    );
    let seen = ask(&front, &|a| a.len() >= 10);
    assert!(
        seen.iter().all(|seen| *seen == a.addr.to_string()),
        "{seen:?}"
    );

    // A name with no SRV records is the upstream's failure, not a hang.
    let front = Running::start(
        support::server(),
        Lint::strict(Proxy::to("http+srv://_http._tcp.none.test").nameservers([dns])),
    );
    assert_eq!(Conn::open(front.addr).get("/").status, 502);
    drop(backup);
}
