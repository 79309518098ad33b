//! Unit tests of the environ: SCRIPT_NAME and PATH_INFO moves, the host, the
//! server's name, port and protocol, and the URLs built from them.

use super::*;

fn request(path: &str) -> Request<()> {
    Request::builder().uri(path).body(()).unwrap()
}

#[test]
fn push_script_name_moves_whole_segments_only() {
    // (path, pushes in order, expected SCRIPT_NAME, PATH_INFO, last push result)
    let cases: &[(&str, &[usize], &str, &str, bool)] = &[
        ("/api/users", &[4], "/api", "/users", true),
        ("/api", &[4], "/api", "", true),
        ("/api/", &[4], "/api", "/", true),
        ("/apix", &[4], "", "/apix", false),
        ("/api/", &[5], "", "/api/", false),
        ("/a/b/c", &[2, 2], "/a/b", "/c", true),
        ("/a/b/c", &[2, 2, 2], "/a/b/c", "", true),
        ("/a", &[2, 1], "/a", "", false),
        ("/a%2Fb/c", &[6], "/a%2Fb", "/c", true),
        ("/a%2Fb/c", &[2], "", "/a%2Fb/c", false),
        ("/é/x", &[2], "", "/é/x", false),
        ("/é/x", &[3], "/é", "/x", true),
        ("/", &[0], "", "/", false),
    ];
    for &(path, pushes, script, info, last) in cases {
        let mut req = request(path);
        let mut result = false;
        for &len in pushes {
            result = req.push_script_name(len);
        }
        let env = req.environ();
        assert_eq!(
            (env.script_name(), env.path_info(), result),
            (script, info, last),
            "{path} {pushes:?}"
        );
    }
}

#[test]
fn a_replaced_uri_resets_the_boundary_instead_of_panicking() {
    let mut req = request("/é/x");
    assert!(req.push_script_name(3));
    *req.uri_mut() = "/ab".parse().unwrap();
    let env = req.environ();
    assert_eq!((env.script_name(), env.path_info()), ("", "/ab"));
}

#[test]
fn shift_path_info_moves_one_segment_at_a_time() {
    let mut req = request("/a%20b/c//d");
    assert_eq!(req.shift_path_info().as_deref(), Some("a b"));
    assert_eq!(req.shift_path_info().as_deref(), Some("c"));
    assert_eq!(
        req.shift_path_info(),
        None,
        "an empty segment does not move"
    );
    let env = req.environ();
    assert_eq!((env.script_name(), env.path_info()), ("/a%20b/c", "//d"));
    let mut req = request("/x/");
    assert_eq!(req.shift_path_info().as_deref(), Some("x"));
    assert_eq!(req.shift_path_info(), None);
    assert_eq!(req.environ().path_info(), "/");
}

#[test]
fn application_and_request_uri() {
    let mut req = Request::builder()
        .uri("/api/us%20ers?x=1")
        .header("host", "example.com:8080")
        .body(())
        .unwrap();
    assert_eq!(req.environ().application_uri(), "http://example.com:8080/");
    assert!(req.push_script_name(4));
    let env = req.environ();
    assert_eq!(env.application_uri(), "http://example.com:8080/api");
    assert_eq!(
        env.request_uri(true),
        "http://example.com:8080/api/us%20ers?x=1"
    );
    assert_eq!(
        env.request_uri(false),
        "http://example.com:8080/api/us%20ers"
    );
    let mut req = request("/x");
    req.extensions_mut().insert(Connection {
        local_addr: Some("10.0.0.1:8443".parse().unwrap()),
        scheme: Scheme::HTTPS,
        ..Connection::default()
    });
    assert_eq!(req.environ().application_uri(), "https://10.0.0.1:8443/");
}

#[test]
fn the_host_comes_from_one_place() {
    let forwarded = |host: &str, port: Option<u16>| Forwarded {
        host: Some(host.parse().unwrap()),
        port,
        ..Forwarded::default()
    };
    // target, Host header, forwarded; HTTP_HOST, SERVER_NAME, SERVER_PORT, application_uri
    type Case<'a> = (&'a str, Option<&'a str>, Option<Forwarded>);
    type Seen<'a> = (Option<&'a str>, &'a str, u16, &'a str);
    let cases: Vec<(Case<'_>, Seen<'_>)> = vec![
        (
            ("/", Some("spam:9000"), None),
            (Some("spam:9000"), "spam", 9000, "http://spam:9000/"),
        ),
        (
            ("/", Some("spam:80"), None),
            (Some("spam:80"), "spam", 80, "http://spam/"),
        ),
        // HTTP/2 and absolute-form: the target's authority wins over Host.
        (
            ("http://eggs/x", Some("spam"), None),
            (Some("eggs"), "eggs", 80, "http://eggs/"),
        ),
        // A trusted proxy's host wins over both.
        (
            (
                "http://eggs/x",
                Some("spam"),
                Some(forwarded("ham:8443", None)),
            ),
            (Some("ham:8443"), "ham", 8443, "http://ham:8443/"),
        ),
        (
            ("/", Some("spam"), Some(forwarded("ham:80", Some(80)))),
            (Some("ham:80"), "ham", 80, "http://ham/"),
        ),
        (
            ("/", Some("spam"), Some(forwarded("ham", None))),
            (Some("ham"), "ham", 80, "http://ham/"),
        ),
        (
            ("/", None, None),
            (None, "localhost", 80, "http://localhost/"),
        ),
    ];
    for ((target, host, fwd), (http_host, name, port, uri)) in cases {
        let mut req = Request::builder().uri(target);
        if let Some(host) = host {
            req = req.header("host", host);
        }
        let mut req = req.body(()).unwrap();
        if let Some(fwd) = fwd {
            req.extensions_mut().insert(fwd);
        }
        let env = req.environ();
        assert_eq!(
            (
                env.http_host(),
                env.server_name().as_str(),
                env.server_port(),
                env.application_uri().as_str()
            ),
            (http_host, name, port, uri),
            "{target} {host:?}"
        );
        assert_eq!(env.cgi().get("HTTP_HOST").map(String::as_str), http_host);
    }
}

#[test]
fn server_protocol_names_http2_as_rfc_9113_does() {
    for (version, name) in [
        (Version::HTTP_10, "HTTP/1.0"),
        (Version::HTTP_11, "HTTP/1.1"),
        (Version::HTTP_2, "HTTP/2"),
    ] {
        let req = Request::builder().version(version).body(()).unwrap();
        assert_eq!(req.environ().server_protocol(), name);
        assert_eq!(req.environ().cgi()["SERVER_PROTOCOL"], name);
    }
}

#[test]
fn server_name_and_port() {
    let req = Request::builder()
        .uri("/")
        .header("host", "Example.COM:8080")
        .body(())
        .unwrap();
    assert_eq!(
        (req.environ().server_name(), req.environ().server_port()),
        ("example.com".into(), 8080)
    );
    let req = Request::builder().uri("https://[::1]/x").body(()).unwrap();
    assert_eq!(
        (req.environ().server_name(), req.environ().server_port()),
        ("[::1]".into(), 443)
    );
    let req = request("/");
    assert_eq!(
        (req.environ().server_name(), req.environ().server_port()),
        ("localhost".into(), 80)
    );
}

#[test]
fn ip_text_is_what_to_string_gives() {
    for ip in [
        "0.0.0.0",
        "127.0.0.1",
        "192.0.2.10",
        "10.200.3.99",
        "255.255.255.255",
        "::1",
        "2001:db8::8a2e:370:7334",
        "::ffff:192.0.2.1",
    ] {
        let ip: IpAddr = ip.parse().unwrap();
        assert_eq!(ip_text(ip), ip.to_string());
    }
}

#[test]
fn a_fronts_variables_join_the_cgi_view_and_never_replace_its_own() {
    let mut req = request("/x");
    req.extensions_mut().insert(Forwarded {
        vars: vec![
            ("REMOTE_USER".into(), "alice".into()),
            ("REQUEST_METHOD".into(), "DELETE".into()),
        ],
        ..Forwarded::default()
    });
    let env = req.environ();
    assert_eq!(env.front_vars().len(), 2);
    let cgi = env.cgi();
    assert_eq!(cgi["REMOTE_USER"], "alice");
    assert_eq!(cgi["REQUEST_METHOD"], "GET");
    assert!(request("/x").environ().front_vars().is_empty());
}

#[test]
fn the_fronts_server_name_is_server_name_and_urls_keep_the_host() {
    let mut req = request("/x");
    req.headers_mut()
        .insert(http::header::HOST, "www.example.org".parse().unwrap());
    req.extensions_mut().insert(Forwarded {
        server_name: Some("example.org".into()),
        ..Forwarded::default()
    });
    let env = req.environ();
    assert_eq!(env.server_name(), "example.org");
    assert_eq!(env.cgi()["SERVER_NAME"], "example.org");
    assert_eq!(env.http_host(), Some("www.example.org"));
}

#[test]
fn headers_become_cgi_variables_joined_as_sent_and_underscores_left_out() {
    use http::HeaderValue;
    let req = Request::builder()
        .uri("/x")
        .header("host", "example.com")
        .header("accept", "text/html")
        .header("cookie", "a=1")
        .header("accept", "*/*")
        .header("cookie", "b=2")
        .header("content-type", "text/plain")
        .header("x-user_id", "7")
        .header("x-trace-id", HeaderValue::from_bytes(b"caf\xe9").unwrap())
        .body(())
        .unwrap();
    let env = req.environ();
    let mut lent = Vec::new();
    env.for_each_cgi_header(|name, value| lent.push((name.to_owned(), value.to_vec())));
    let expected: Vec<(String, Vec<u8>)> = [
        ("HTTP_HOST", &b"example.com"[..]),
        ("HTTP_ACCEPT", b"text/html, */*"),
        ("HTTP_COOKIE", b"a=1; b=2"),
        ("CONTENT_TYPE", b"text/plain"),
        ("HTTP_X_TRACE_ID", b"caf\xe9"),
    ]
    .iter()
    .map(|(name, value)| ((*name).to_owned(), value.to_vec()))
    .collect();
    assert_eq!(lent, expected);
    assert_eq!(env.cgi_headers(), expected);
    let cgi = env.cgi();
    assert_eq!(cgi["HTTP_COOKIE"], "a=1; b=2");
    assert!(!cgi.keys().any(|name| name.contains("USER")));
}

#[test]
fn an_authoritys_host_is_read_as_http_reads_it() {
    for authority in [
        "example.com",
        "example.com:8080",
        "Example.COM:80",
        "127.0.0.1:19200",
        "[::1]",
        "[::1]:8080",
        "[2001:db8::1]:443",
        "user@host",
        "user:pass@host:81",
        "a@b@[::1]:1",
        "host:",
    ] {
        let parsed: Authority = authority.parse().unwrap();
        assert_eq!(host_of(parsed.as_str()), parsed.host(), "{authority}");
    }
}

#[test]
fn a_host_is_an_authority_as_http_parses_one() {
    for host in [
        "example.com",
        "Example.COM:8080",
        "127.0.0.1:19200",
        "host:",
        ":80",
        "a-b.c:x",
        "",
        "a:b:c",
        "a b",
        "a/b",
        "a?b",
        "ex%41mple",
        "[::1]:8080",
        "[::1",
        "user@host",
        "host@",
        "h\u{e9}te",
    ] {
        let parsed = host.parse::<Authority>().is_ok();
        assert_eq!(is_authority(host), parsed, "{host:?}");
    }
}
