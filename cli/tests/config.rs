//! `stackway serve --config`: the example file served for real (every
//! listener, mount and export it names), flags over keys, and bad files.

use stackway_test_support::http;
mod support;
use stackway_test_support::tls;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use http::Conn;
use support::{Server, stackway};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Starts `stackway serve ARGS` in the repository and reads `listeners` lines.
fn serve(args: &[&str], listeners: usize) -> Server {
    let mut command = stackway(args);
    command.current_dir(repo());
    Server::start(command, listeners)
}

fn addr(url: &str) -> std::net::SocketAddr {
    url.split("://").nth(1).unwrap().parse().unwrap()
}

#[test]
fn the_example_file_serves_every_listener_mount_and_export() {
    if !stackway_test_support::external::command("curl", "Debian's curl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = tls::certificate(dir.path(), "localhost");
    let sock = dir.path().join("app.sock");
    let uwsgi_sock = dir.path().join("uwsgi.sock");
    // Two upstreams for the proxy pool.
    let upstreams: Vec<Server> = (0..2)
        .map(|_| serve(&["--bind", "127.0.0.1:0", "--mount", "/=demo"], 1))
        .collect();

    let example = std::fs::read_to_string(repo().join("stackway.example.toml")).unwrap();
    let config = example
        .replace("\"127.0.0.1:8000\"", "\"127.0.0.1:0\"")
        .replace("\"127.0.0.1:8443\"", "\"127.0.0.1:0\"")
        .replace("/etc/stackway/fullchain.pem", cert.to_str().unwrap())
        .replace("/etc/stackway/privkey.pem", key.to_str().unwrap())
        .replace("/run/stackway/app.sock", sock.to_str().unwrap())
        .replace("/run/stackway/uwsgi.sock", uwsgi_sock.to_str().unwrap())
        .replace("http://127.0.0.1:9000", &upstreams[0].listening[0])
        .replace("http://127.0.0.1:9001", &upstreams[1].listening[0])
        .replace("drain_delay = 5", "drain_delay = 0.2");
    assert_ne!(config, example);
    let file = dir.path().join("stackway.toml");
    std::fs::write(&file, &config).unwrap();

    let server = serve(&["--config", file.to_str().unwrap()], 4);
    let [plain, tls, unix, uwsgi] = &server.listening[..] else {
        unreachable!()
    };
    assert_eq!(uwsgi, &format!("uwsgi+unix:{}", uwsgi_sock.display()));
    // A uwsgi packet (as nginx's uwsgi_pass sends) for `/`: its raw HTTP answer.
    let packet = http::uwsgi_packet(&[
        ("REQUEST_METHOD", "GET"),
        ("PATH_INFO", "/"),
        ("HTTP_HOST", "example.org"),
    ]);
    let mut stream = UnixStream::connect(&uwsgi_sock).unwrap();
    stream.write_all(&packet).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.0 200 "), "{answer}");
    assert!(answer.ends_with("<h1>Hello, web!</h1>"), "{answer}");
    assert!(plain.starts_with("http://127.0.0.1:"), "{plain}");
    assert!(tls.starts_with("https://127.0.0.1:"), "{tls}");
    assert_eq!(unix, &format!("unix:{}", sock.display()));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o660
    );

    let get = |path: &str| Conn::open(addr(plain)).get(path);
    assert_eq!(get("/").text(), "<h1>Hello, web!</h1>");
    assert!(get("/env/x").text().contains("SCRIPT_NAME=/env\n"));
    assert_eq!(get("/py/stackway").text(), "Hello, stackway!");
    // The ASGI app's lifespan ran before serving: its state is in the scope.
    assert_eq!(get("/asgi").text(), "started");
    let api = get("/api/users");
    assert!(api.text().contains("PATH_INFO=/users\n"), "{}", api.text());
    // trace_context: the upstream got a traceparent.
    assert!(
        api.text().contains("HTTP_TRACEPARENT=00-"),
        "{}",
        api.text()
    );
    let page = get("/static/");
    assert_eq!(page.header("cache-control"), Some("public, max-age=3600"));
    assert!(page.text().contains("<html"), "{}", page.text());
    let spa = get("/app/some/route");
    assert_eq!(spa.status, 200);
    assert_eq!(spa.text(), page.text());
    assert_eq!(
        spa.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    let health = get("/healthz");
    assert_eq!((health.status, health.text().as_str()), (200, "ok\n"));
    let metrics = get("/metrics").text();
    assert!(
        metrics.contains(r#"stackway_requests_total{mount="/py",method="GET",status="2xx"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("stackway_handshakes_total 0"), "{metrics}");
    assert!(
        metrics.contains(r#"stackway_pool_threads{mount="/py"} 4"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"stackway_pool_jobs_total{mount="/py"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"stackway_upstream_up{mount="/api",upstream="#),
        "{metrics}"
    );
    // The file's caches: /py's own (its one request a miss), and the server's, which
    // stored the static pages (`max-age`) it saw.
    assert!(
        metrics.contains(r#"stackway_cache_misses_total{cache="/py"} 1"#),
        "{metrics}"
    );
    let held = metrics
        .lines()
        .find_map(|line| line.strip_prefix(r#"stackway_cache_responses{cache="serve"} "#))
        .and_then(|n| n.parse::<f64>().ok());
    assert!(held.is_some_and(|n| n >= 2.0), "{metrics}");
    // The middleware the file switches on.
    assert!(page.header("x-request-id").is_some());
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    let mut conn = Conn::open(addr(plain));
    conn.send(b"GET /env/ HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.9\r\nAccept-Encoding: gzip\r\n\r\n");
    let res = conn.read_response();
    assert_eq!(res.header("content-encoding"), Some("gzip"));

    // HTTPS, by curl.
    let port = addr(tls).port();
    let out = Command::new("curl")
        .args(["-sS", "--http2", "-w", "%{http_version}", "--cacert"])
        .arg(&cert)
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .arg(format!("https://localhost:{port}/env/"))
        .output()
        .unwrap();
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.contains("REQUEST_SCHEME=https\n") && page.ends_with('2'),
        "{page}"
    );

    // The unix socket expects a PROXY header, and REMOTE_ADDR comes from it
    // (ProxyFix then trusts the X-Forwarded-For it does not get here).
    let mut stream = UnixStream::connect(&sock).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"PROXY TCP4 198.51.100.4 10.0.0.1 5555 80\r\nGET /env/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut page = String::new();
    let _ = stream.read_to_string(&mut page);
    assert!(page.contains("REMOTE_ADDR=198.51.100.4\n"), "{page}");
}

#[test]
fn a_mounts_policies_are_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.toml");
    std::fs::write(
        &file,
        "bind = [\"127.0.0.1:0\"]\n\
         [[mount]]\nprefix = \"/open\"\napp = \"hello\"\n\
         [[mount]]\nprefix = \"/internal\"\napp = \"hello\"\naccess = [\"allow 10.0.0.0/8\", \"deny all\"]\n\
         [[mount]]\nprefix = \"/api\"\napp = \"hello\"\nrate_limit = \"1r/m burst=1 nodelay key=header:x-api-key\"\n",
    )
    .unwrap();
    let server = serve(&["--config", file.to_str().unwrap()], 1);
    let mut conn = Conn::open(addr(&server.listening[0]));
    assert_eq!(conn.get("/open/").status, 200);
    assert_eq!(
        conn.get("/internal/").status,
        403,
        "the loopback is not 10/8"
    );
    let mut with_key = |key: &str| {
        conn.send(format!("GET /api/ HTTP/1.1\r\nHost: x\r\nX-Api-Key: {key}\r\n\r\n").as_bytes());
        conn.read_response().status
    };
    assert_eq!(
        [with_key("a"), with_key("a"), with_key("a")],
        [200, 200, 429]
    );
    assert_eq!(with_key("b"), 200, "counted by key");
    // Without the key, not counted (as nginx's empty key).
    assert!((0..3).all(|_| conn.get("/api/").status == 200));
}

#[test]
fn flags_replace_the_keys_they_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.toml");
    std::fs::write(
        &file,
        "bind = [\"127.0.0.1:1\"]\nhealth = \"/healthz\"\n[[mount]]\nprefix = \"/\"\napp = \"demo\"\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    // --bind replaces the file's listeners; --health its health path; the mounts stay.
    let server = serve(
        &[
            "--config",
            file,
            "--bind",
            "127.0.0.1:0",
            "--health",
            "/ready",
        ],
        1,
    );
    let a = addr(&server.listening[0]);
    assert_eq!(Conn::open(a).get("/ready").text(), "ok\n");
    assert!(
        Conn::open(a)
            .get("/healthz")
            .text()
            .contains("PATH_INFO=/healthz\n")
    );
    // --mount replaces the file's mounts.
    let server = serve(
        &[
            "--config",
            file,
            "--bind",
            "127.0.0.1:0",
            "--mount",
            "/=hello",
        ],
        1,
    );
    assert_eq!(
        Conn::open(addr(&server.listening[0])).get("/").text(),
        "<h1>Hello, web!</h1>"
    );
}

#[test]
fn a_mounts_proxy_options_name_its_upstreams_ca_and_how_to_resolve_them() {
    let dir = tempfile::tempdir().unwrap();
    let ca = tls::Ca::new(dir.path(), "internal");
    let (cert, key) = ca.server("upstream", &["localhost"]);
    let listener = stackway::server::Listener::bind("127.0.0.1:0")
        .unwrap()
        .tls(stackway::server::Tls::from_pem_files(cert, key).unwrap());
    let upstream = stackway_test_support::Running::start(
        stackway::Server::new([listener]).unwrap().workers(1),
        stackway::apps::demo,
    );
    let file = dir.path().join("s.toml");
    std::fs::write(
        &file,
        format!(
            "bind = [\"127.0.0.1:0\"]\n[[mount]]\nprefix = \"/api\"\nproxy = \"https://localhost:{}\"\n\
             [mount.proxy_options]\nca = {:?}\nresolve = 30\nnameservers = [\"127.0.0.1:9\"]\n",
            upstream.addr.port(),
            ca.cert.to_str().unwrap(),
        ),
    )
    .unwrap();
    let server = serve(&["--config", file.to_str().unwrap()], 1);
    // The CA is the mount's; `localhost` is in the hosts file, which the resolver reads
    // before it asks the nameservers (here a port that never answers).
    let env = Conn::open(addr(&server.listening[0])).get("/api/").text();
    for line in ["REQUEST_SCHEME=https\n", "SERVER_PROTOCOL=HTTP/2\n"] {
        assert!(env.contains(line), "{line} missing from:\n{env}");
    }
}

#[test]
fn a_bad_file_names_its_line_and_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "workers = 2\nwokers = 3\n",
            "s.toml:2:1: wokers: unknown field `wokers`",
        ),
        (
            "[[listen]]\nbind = \"uwsgi://127.0.0.1:0\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n",
            "listener 127.0.0.1:0: a uwsgi listener speaks to its front in the clear, without tls_cert",
        ),
        (
            "[[listen]]\nbind = \"unix:/tmp/x.sock\"\nprotocol = \"fastcgi\"\n",
            "s.toml:3:12: listen[0].protocol: unknown variant `fastcgi`, expected `http` or `uwsgi`",
        ),
        (
            "processes = 0\n",
            "s.toml:1:13: processes: expected a number of processes from 1 up, or auto, not \"0\"",
        ),
        (
            "processes = \"many\"\n",
            "s.toml:1:13: processes: expected a number of processes from 1 up, or auto",
        ),
        (
            "idle_timeout = \"long\"\n",
            "s.toml:1:16: idle_timeout: invalid type: string \"long\"",
        ),
        (
            "[[mount]]\nprefix = \"/\"\napp = \"nope\"\n",
            "mount /: unknown app \"nope\"",
        ),
        (
            "[[mount]]\nprefix = \"a/../b\"\napp = \"hello\"\n",
            "mount a/../b:",
        ),
        (
            "[[mount]]\nprefix = \"/\"\napp = \"hello\"\nasgi = \"main:app\"\n",
            "mount /: give exactly one of app, wsgi, asgi and proxy",
        ),
        (
            "[[mount]]\nprefix = \"/\"\napp = \"hello\"\nthreads = 2\n",
            "mount /: threads and stream_input need a wsgi app",
        ),
        (
            "[[mount]]\nprefix = \"/api\"\nproxy = \"http://127.0.0.1:9\"\n[mount.proxy_options]\nbalance = \"random\"\n",
            "s.toml:5:11: mount[0].proxy_options.balance: \"random\": expected round-robin, least-outstanding, ip-hash or hash KEY [consistent]",
        ),
        (
            "[[mount]]\nprefix = \"/api\"\nproxy = \"http://127.0.0.1:9\"\n[mount.proxy_options]\nbalance = \"hash $nope\"\n",
            "s.toml:5:11: mount[0].proxy_options.balance: \"$nope\": $nope is no variable a hash takes",
        ),
        (
            "[[mount]]\nprefix = \"/api\"\nproxy = [\"http://127.0.0.1:9 weight=0\"]\n",
            "weight=0: a weight is a whole number from 1 to 65535",
        ),
        (
            "[[mount]]\nprefix = \"/\"\napp = \"hello\"\ncache_dir = \"/tmp/c\"\n",
            "mount /: cache_dir needs cache, the size to keep there",
        ),
        (
            "cache = \"1MiB\"\ncache_dir = \"/tmp/c\"\n[[mount]]\nprefix = \"/\"\napp = \"hello\"\ncache = \"1MiB\"\ncache_dir = \"/tmp/c\"\n",
            "cache directory /tmp/c is given to two caches: each needs its own",
        ),
        (
            "[[mount]]\nprefix = \"/\"\napp = \"hello\"\nrate_limit = \"fast\"\n",
            "s.toml:4:14: mount[0].rate_limit: \"fast\": expected a rate",
        ),
        (
            "access = [\"deny 300.0.0.1\"]\n",
            "s.toml:1:10: access: \"300.0.0.1\": expected an address",
        ),
        (
            "cache_dir = \"/tmp/c\"\n",
            "cache_dir needs cache, the size to keep there",
        ),
        (
            "[[static]]\nprefix = \"/s\"\npath = \"/no/such/dir\"\n",
            "static /s:",
        ),
        (
            "[[listen]]\nbind = \"127.0.0.1:0\"\ntls_cert = \"c.pem\"\n",
            "tls_cert and tls_key go together",
        ),
        (
            "[[listen]]\nbind = \"fd:2\"\n",
            "s.toml:2:8: listen[0].bind: expected fd:N",
        ),
        (
            "bind = 8000\n",
            "s.toml:1:8: bind: invalid type: integer `8000`",
        ),
        (
            "log_level = \"loud\"\n",
            "log_level: \"loud\": expected error, warn",
        ),
        (
            "proxy_fix = \"from=1\"\n",
            "s.toml:1:13: proxy_fix: unknown header \"from\"",
        ),
        (
            "max_header_size = 100\n",
            "max_header_size: at least 8192 bytes",
        ),
        (
            "[[mount]]\nprefix = \"/api\"\nproxy = \"http://api.internal:9\"\n[mount.proxy_options]\nnameservers = [\"nope\"]\n",
            "mount[0].proxy_options.nameservers: \"nope\": expected IP or IP:PORT",
        ),
        ("[server\n", "s.toml:1:"),
    ];
    for (text, says) in cases {
        let file = dir.path().join("s.toml");
        std::fs::write(&file, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_stackway"))
            .current_dir(dir.path())
            // --check: a file that passes exits 0 rather than serving.
            .args(["serve", "--config", "s.toml", "--check"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert!(
            err.starts_with("stackway: ") && err.contains(says),
            "{text}: {err}"
        );
        if !says.starts_with("s.toml") {
            assert!(err.contains("s.toml"), "the file is named: {err}");
        }
    }
    // A mount that streams its input cannot run on the workers (--wsgi-threads 0).
    let file = dir.path().join("s.toml");
    std::fs::write(
        &file,
        "[[mount]]\nprefix = \"/\"\nwsgi = \"nowhere:app\"\nstream_input = true\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stackway"))
        .current_dir(dir.path())
        .args([
            "serve",
            "--config",
            "s.toml",
            "--wsgi-threads",
            "0",
            "--check",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "stackway: mount /: stream_input needs Python threads: with 0 the body is read whole on the worker"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_stackway"))
        .args(["serve", "--config", "/no/such.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read the config file /no/such.toml")
    );
}
