//! ProxyFix, with every case of Werkzeug's `tests/middleware/test_proxy_fix.py`
//! ported: the client's address, the URL root the app sees, HTTP_HOST, and a
//! redirect it builds, for each trust setting and header combination; then
//! Werkzeug's own ProxyFix, run beside ours on the same requests.

use stackway_test_support as support;

use std::net::SocketAddr;
use std::process::Command;

use http::StatusCode;
use stackway::testing::Client;
use stackway::{IntoResponse, Request, RequestExt, apps, response};
use stackway_middleware::{Dispatcher, Lint, ProxyFix};
use support::{Running, external, run, server};

/// Trust counts: for, proto, host, port, prefix.
type Trust = (usize, usize, usize, usize, usize);

const WERKZEUG: Trust = (1, 1, 0, 0, 0);

/// Werkzeug's app: asserts the client address, answers with the URL root,
/// and redirects to `parrot` below it.
async fn parrot(req: Request) -> stackway::Response {
    let env = req.environ();
    let remote = env
        .remote_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let root = env.application_uri();
    let root = if root.ends_with('/') {
        root
    } else {
        format!("{root}/")
    };
    // HTTP_HOST as the CGI view (and so `demo` and a WSGI app) gives it.
    let http_host = env.cgi().remove("HTTP_HOST").unwrap_or_default();
    let mut res = response::redirect(&req, StatusCode::FOUND, "/parrot");
    res.headers_mut()
        .insert("x-remote", remote.parse().unwrap());
    res.headers_mut().insert("x-root", root.parse().unwrap());
    res.headers_mut()
        .insert("x-http-host", http_host.parse().unwrap());
    res
}

fn proxy_fix<A>(trust: Trust, app: A) -> ProxyFix<A> {
    let (x_for, x_proto, x_host, x_port, x_prefix) = trust;
    ProxyFix::new(app)
        .x_for(x_for)
        .x_proto(x_proto)
        .x_host(x_host)
        .x_port(x_port)
        .x_prefix(x_prefix)
}

/// One of Werkzeug's cases: what the app sees of the client's address, its
/// URL root, and HTTP_HOST (as Werkzeug's ProxyFix sets it: `""` for none).
fn case(
    name: &str,
    trust: Trust,
    remote: &str,
    headers: &[(&str, &str)],
    (url_root, http_host): (&str, &str),
) {
    let client = Client::new(Lint::strict(proxy_fix(trust, parrot)));
    run(async {
        let mut req = client
            .get("/")
            .remote_addr(format!("{remote}:4711").parse::<SocketAddr>().unwrap());
        for (name, value) in headers {
            req = req.header(name, value);
        }
        let res = req.await;
        assert_eq!(
            res.header("x-remote"),
            Some("192.168.0.1"),
            "{name}: remote address"
        );
        assert_eq!(res.header("x-root"), Some(url_root), "{name}: url root");
        assert_eq!(
            res.header("x-http-host"),
            Some(http_host),
            "{name}: HTTP_HOST"
        );
        // The redirect is built under the prefix, as url_for's would be.
        let path = url_root.splitn(4, '/').nth(3).unwrap_or("");
        let want = format!("/{path}parrot");
        assert_eq!(
            res.header("location"),
            Some(want.as_str()),
            "{name}: redirect"
        );
    });
}

#[test]
fn werkzeug_test_proxy_fix_cases() {
    case(
        "for",
        WERKZEUG,
        "192.168.0.2",
        &[
            ("host", "spam"),
            ("x-forwarded-for", "192.168.0.1"),
            ("x-forwarded-proto", "https"),
        ],
        ("https://spam/", "spam"),
    );
    case(
        "proto",
        (1, 1, 0, 0, 0),
        "192.168.0.1",
        &[("host", "spam"), ("x-forwarded-proto", "https")],
        ("https://spam/", "spam"),
    );
    case(
        "host",
        (1, 1, 1, 0, 0),
        "192.168.0.1",
        &[("host", "spam"), ("x-forwarded-host", "eggs")],
        ("http://eggs/", "eggs"),
    );
    case(
        "port, host without port",
        (1, 1, 0, 1, 0),
        "192.168.0.1",
        &[("host", "spam"), ("x-forwarded-port", "8080")],
        ("http://spam:8080/", "spam:8080"),
    );
    case(
        "port, host with port",
        (1, 1, 0, 1, 0),
        "192.168.0.1",
        &[("host", "spam:9000"), ("x-forwarded-port", "8080")],
        ("http://spam:8080/", "spam:8080"),
    );
    // Werkzeug's "port, name" sets SERVER_NAME without a Host header; here the
    // test client names `localhost`, and the port goes with it.
    case(
        "port, name",
        (1, 1, 0, 1, 0),
        "192.168.0.1",
        &[("x-forwarded-port", "8080")],
        ("http://localhost:8080/", "localhost:8080"),
    );
    case(
        "prefix",
        (1, 1, 0, 0, 1),
        "192.168.0.1",
        &[("host", "spam"), ("x-forwarded-prefix", "/eggs")],
        ("http://spam/eggs/", "spam"),
    );
    case(
        "all",
        (1, 1, 1, 1, 1),
        "192.168.0.2",
        &[
            ("host", "spam:9000"),
            ("x-forwarded-for", "192.168.0.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "eggs"),
            ("x-forwarded-port", "443"),
            ("x-forwarded-prefix", "/ham"),
        ],
        ("https://eggs/ham/", "eggs:443"),
    );
    case(
        "multiple for",
        (2, 1, 0, 0, 0),
        "192.168.0.3",
        &[
            ("host", "spam"),
            ("x-forwarded-for", "192.168.0.1, 192.168.0.2"),
        ],
        ("http://spam/", "spam"),
    );
    case(
        "ignore 0",
        (0, 1, 0, 0, 0),
        "192.168.0.1",
        &[("host", "spam"), ("x-forwarded-for", "192.168.0.2")],
        ("http://spam/", "spam"),
    );
    case(
        "ignore len < trusted",
        (3, 1, 0, 0, 0),
        "192.168.0.1",
        &[
            ("host", "spam"),
            ("x-forwarded-for", "192.168.0.3, 192.168.0.2"),
        ],
        ("http://spam/", "spam"),
    );
    case(
        "ignore untrusted",
        WERKZEUG,
        "192.168.0.2",
        &[
            ("host", "spam"),
            ("x-forwarded-for", "192.168.0.3, 192.168.0.1"),
        ],
        ("http://spam/", "spam"),
    );
    case(
        "ignore empty",
        (2, 1, 0, 0, 0),
        "192.168.0.1",
        &[("host", "spam"), ("x-forwarded-for", ", 192.168.0.3")],
        ("http://spam/", "spam"),
    );
    case(
        "prefix < for",
        (2, 1, 0, 0, 1),
        "192.168.0.2",
        &[
            ("host", "spam"),
            ("x-forwarded-for", "192.168.0.1, 192.168.0.3"),
            ("x-forwarded-prefix", "/ham, /eggs"),
        ],
        ("http://spam/eggs/", "spam"),
    );
    case(
        "ipv6 host",
        (1, 1, 1, 0, 0),
        "192.168.0.1",
        &[("host", "spam"), ("x-forwarded-host", "[2001:db8::a]")],
        ("http://[2001:db8::a]/", "[2001:db8::a]"),
    );
    case(
        "ipv6 port, host without port",
        (1, 1, 0, 1, 0),
        "192.168.0.1",
        &[("host", "[2001:db8::a]"), ("x-forwarded-port", "8080")],
        ("http://[2001:db8::a]:8080/", "[2001:db8::a]:8080"),
    );
    case(
        "ipv6 - port, host with port",
        (1, 1, 0, 1, 0),
        "192.168.0.1",
        &[("host", "[2001:db8::a]:9000"), ("x-forwarded-port", "8080")],
        ("http://[2001:db8::a]:8080/", "[2001:db8::a]:8080"),
    );
}

#[test]
fn invalid_values_are_ignored() {
    case(
        "bad for, proto, port and prefix",
        (1, 1, 1, 1, 1),
        "192.168.0.1",
        &[
            ("host", "spam"),
            ("x-forwarded-for", "not-an-address"),
            ("x-forwarded-proto", "gopher"),
            ("x-forwarded-port", "99999"),
            ("x-forwarded-prefix", "no-slash"),
        ],
        ("http://spam/", "spam"),
    );
    case(
        "a prefix that names another host",
        (1, 1, 0, 0, 1),
        "192.168.0.1",
        &[("host", "spam"), ("x-forwarded-prefix", "//evil.example")],
        ("http://spam/", "spam"),
    );
}

#[test]
fn the_prefix_stays_in_front_under_a_mount() {
    let inner = |req: Request| async move {
        let env = req.environ();
        format!(
            "{} {} {}",
            env.script_name(),
            env.mount_path(),
            env.application_uri()
        )
        .into_response()
    };
    let app = ProxyFix::new(Dispatcher::default().mount("/api", inner)).x_prefix(1);
    let client = Client::new(app);
    run(async {
        client
            .get("/api/users")
            .header("host", "spam")
            .header("x-forwarded-prefix", "/app/")
            .await
            .assert_text("/api /app/api http://spam/app/api");
    });
}

#[test]
fn a_forwarded_host_that_is_no_host_is_refused() {
    // Werkzeug copies any text into HTTP_HOST; here it must be an authority,
    // so that nothing downstream (a URL, a proxy's `Forwarded`) gets a quote
    // or a space from a client.
    for bad in [
        "x\", for=6.6.6.6;host=\"x",
        "a b",
        "eggs/ham",
        "eggs:99999",
        "user@eggs",
        ":80",
    ] {
        case(
            bad,
            (1, 1, 1, 0, 0),
            "192.168.0.1",
            &[("host", "spam"), ("x-forwarded-host", bad)],
            ("http://spam/", "spam"),
        );
    }
}

#[test]
fn agrees_with_werkzeugs_proxy_fix_request_by_request() {
    let imports = "from werkzeug.middleware.proxy_fix import ProxyFix";
    if !external::python_imports("python3", imports, "Werkzeug, from PyPI") {
        return;
    }
    let trusts: [Trust; 5] = [
        WERKZEUG,
        (1, 1, 1, 0, 0),
        (1, 1, 1, 1, 1),
        (2, 2, 2, 2, 2),
        (0, 0, 1, 1, 0),
    ];
    let mut app = Dispatcher::default().mount("/raw", apps::demo);
    for (i, trust) in trusts.into_iter().enumerate() {
        app = app.mount(&format!("/t{i}"), proxy_fix(trust, apps::demo));
    }
    let running = Running::start(server(), Lint::strict(app));
    let trusts = trusts.map(|(a, b, c, d, e)| [a, b, c, d, e]);
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/proxy_fix_differential.py"
        ))
        .arg(running.addr.to_string())
        .arg(format!("{trusts:?}"))
        .output()
        .expect("python3 runs");
    let said = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}{err}");
    // 4 hosts × 32 header sets × 5 trust settings.
    assert!(said.trim_end().ends_with("640 agree, 0 differ"), "{said}");
}
