//! `--admin-bind`: a listener with a role of its own, whatever its address
//! family (TCP, a unix socket, a passed descriptor). The status page and the
//! metrics are served there alone, the app never is, and the app keeps its
//! default listener when `--admin-bind` is the only address given.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use support::{Server, activated, stackway};

/// Where a listener is reached.
enum At {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl At {
    /// What `listening on LINE` names.
    fn of(line: &str) -> Self {
        match line.strip_prefix("unix:") {
            Some(path) => Self::Unix(path.into()),
            None => Self::Tcp(line.strip_prefix("http://").unwrap().parse().unwrap()),
        }
    }

    /// GET `path` on a connection of its own: the status and the body.
    fn get(&self, path: &str) -> (u16, String) {
        self.ask("GET", path)
    }

    /// `method` `path` on a connection of its own: the status and the body.
    fn ask(&self, method: &str, path: &str) -> (u16, String) {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let mut answer = String::new();
        match self {
            Self::Tcp(addr) => {
                let mut stream = TcpStream::connect(addr).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                stream.write_all(request.as_bytes()).unwrap();
                stream.read_to_string(&mut answer).unwrap();
            }
            Self::Unix(path) => {
                let mut stream = UnixStream::connect(path).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                stream.write_all(request.as_bytes()).unwrap();
                stream.read_to_string(&mut answer).unwrap();
            }
        }
        let status = answer[9..12].parse().unwrap();
        let body = answer.split_once("\r\n\r\n").unwrap().1.to_owned();
        (status, body)
    }
}

/// The flags every case shares: an app, the metrics and the status page.
const OBSERVED: [&str; 6] = [
    "--mount",
    "/app=hello",
    "--metrics",
    "/metrics",
    "--status",
    "/status",
];

fn serve(listen: &[&str]) -> support::Server {
    let args: Vec<&str> = listen.iter().chain(&OBSERVED).copied().collect();
    Server::start(stackway(&args), 2)
}

/// The app on `public` alone, the status page and the metrics on `admin` alone.
fn roles_are_kept(public: &At, admin: &At) {
    assert_eq!(
        public.get("/app/you"),
        (200, "<h1>Hello, you!</h1>".to_owned())
    );
    let (status, metrics) = admin.get("/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("stackway_requests"), "{metrics}");
    assert_eq!(admin.get("/status.json").0, 200);
    assert_eq!(admin.get("/status").0, 200);
    for path in ["/app/you", "/", "/anything"] {
        assert_eq!(admin.get(path).0, 404, "{path} on the admin listener");
    }
    for path in ["/metrics", "/status", "/status.json"] {
        assert_eq!(public.get(path).0, 404, "{path} on the app's listener");
    }
}

#[test]
fn a_tcp_admin_listener_serves_the_admin_paths_alone() {
    let server = serve(&["--bind", "127.0.0.1:0", "--admin-bind", "127.0.0.1:0"]);
    let (public, admin) = (At::of(&server.listening[0]), At::of(&server.listening[1]));
    roles_are_kept(&public, &admin);
}

#[test]
fn a_unix_admin_listener_serves_the_admin_paths_alone() {
    let dir = tempfile::tempdir().unwrap();
    let admin = format!("unix:{}", dir.path().join("admin.sock").display());
    let server = serve(&["--bind", "127.0.0.1:0", "--admin-bind", &admin]);
    assert_eq!(server.listening[1], admin);
    roles_are_kept(&At::of(&server.listening[0]), &At::of(&admin));

    // The other way round: the app on a unix socket, the admin on TCP.
    let app = format!("unix:{}", dir.path().join("app.sock").display());
    let server = serve(&["--bind", &app, "--admin-bind", "127.0.0.1:0"]);
    roles_are_kept(&At::of(&app), &At::of(&server.listening[1]));
}

#[test]
fn a_passed_descriptor_as_the_admin_listener_serves_the_admin_paths_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("passed-admin.sock");
    let passed = UnixListener::bind(&path).unwrap();
    let mut args = vec!["--bind", "127.0.0.1:0", "--admin-bind", "fd:3"];
    args.extend(OBSERVED);
    let server = Server::start(activated(vec![passed.into()], &args), 2);
    assert_eq!(server.listening[1], format!("unix:{}", path.display()));
    roles_are_kept(&At::of(&server.listening[0]), &At::Unix(path));

    // A passed TCP socket too.
    let passed = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = passed.local_addr().unwrap();
    let server = Server::start(activated(vec![passed.into()], &args), 2);
    roles_are_kept(&At::of(&server.listening[0]), &At::Tcp(addr));
}

#[test]
fn the_app_keeps_its_default_listener_beside_an_admin_listener() {
    // No --bind: the app listens where it would without --admin-bind.
    let server = serve(&["--admin-bind", "127.0.0.1:0"]);
    assert_eq!(server.listening[0], "http://127.0.0.1:8000");
    roles_are_kept(&At::of(&server.listening[0]), &At::of(&server.listening[1]));
}

#[test]
fn the_admin_listener_purges_the_cache_of_every_process() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("page.txt");
    // Modified long ago: fresh for a day by the heuristic, so kept.
    let write = |text: &str| {
        std::fs::write(&page, text).unwrap();
        let touched = std::process::Command::new("touch")
            .args(["-d", "2020-01-01"])
            .arg(&page)
            .status()
            .unwrap();
        assert!(touched.success());
    };
    write("old news");
    let root = format!("/s={}", dir.path().display());
    let args = [
        "--bind",
        "127.0.0.1:0",
        "--admin-bind",
        "127.0.0.1:0",
        "--static",
        &root,
        "--cache",
        "1MiB",
        "--processes",
        "2",
    ];
    let server = Server::start(stackway(&args), 2);
    let (public, admin) = (At::of(&server.listening[0]), At::of(&server.listening[1]));
    // Each connection reaches one process or the other.
    for _ in 0..20 {
        assert_eq!(public.get("/s/page.txt"), (200, "old news".to_owned()));
    }
    write("new news");
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(public.get("/s/page.txt").1, "old news", "kept by a cache");
    assert_ne!(
        public.ask("POST", "/cache/purge?url=/s/page.txt").0,
        200,
        "not on the app's listener"
    );
    assert_eq!(admin.get("/cache/purge?url=/s/page.txt").0, 405);
    assert_eq!(admin.ask("POST", "/cache/purge?page=/s/page.txt").0, 400);
    let (status, purged) = admin.ask("POST", "/cache/purge?url=%2Fs%2Fpage.txt");
    assert_eq!(status, 200);
    assert!(purged.starts_with("{\"purged\":"), "{purged}");
    // The other process reads the purge within a fifth of a second.
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..20 {
        assert_eq!(public.get("/s/page.txt"), (200, "new news".to_owned()));
    }
}

#[test]
fn the_admin_listener_switches_maintenance_for_every_process() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("maintenance");
    let args = [
        "--bind",
        "127.0.0.1:0",
        "--admin-bind",
        "127.0.0.1:0",
        "--mount",
        "/app=hello",
        "--maintenance",
        flag.to_str().unwrap(),
        "--processes",
        "2",
    ];
    let server = Server::start(stackway(&args), 2);
    let (public, admin) = (At::of(&server.listening[0]), At::of(&server.listening[1]));
    let off = (200, "{\"maintenance\":false}".to_owned());
    let on = (200, "{\"maintenance\":true}".to_owned());
    assert_eq!(admin.get("/maintenance"), off);
    assert_ne!(
        public.ask("PUT", "/maintenance").0,
        200,
        "not on the app's listener"
    );
    assert_eq!(admin.ask("POST", "/maintenance").0, 405);

    assert_eq!(admin.ask("PUT", "/maintenance"), on);
    assert!(flag.exists());
    std::thread::sleep(Duration::from_millis(1100));
    // Each connection reaches one process or the other: both are down.
    for _ in 0..10 {
        assert_eq!(public.get("/app/you").0, 503);
    }
    assert_eq!(admin.get("/maintenance"), on);

    assert_eq!(admin.ask("DELETE", "/maintenance"), off);
    std::thread::sleep(Duration::from_millis(1100));
    for _ in 0..10 {
        assert_eq!(public.get("/app/you").0, 200);
    }
    assert_eq!(
        admin.ask("DELETE", "/maintenance"),
        off,
        "once off, it stays off"
    );
}
