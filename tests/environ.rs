//! The environ: SCRIPT_NAME, PATH_INFO and the CGI view, as apps see them.

use stackway_test_support as support;

use std::net::SocketAddr;

use stackway::testing::Client;
use stackway::{Builder, IntoResponse, Request, RequestExt, from_fn};
use support::run;

/// An app that shows its SCRIPT_NAME and PATH_INFO, raw and decoded.
async fn show(req: Request) -> stackway::Response {
    let env = req.environ();
    format!(
        "{}|{}|{}|{}",
        env.script_name(),
        env.path_info(),
        env.script_name_decoded(),
        env.path_info_decoded()
    )
    .into_response()
}

/// `show`, mounted at `prefix` the way a dispatcher would mount it.
fn mounted(prefix: &'static str) -> impl stackway::App {
    Builder::new()
        .wrap(from_fn(move |mut req: Request, next| async move {
            assert!(
                req.push_script_name(prefix.len()),
                "{prefix} is a segment prefix"
            );
            next.run(req).await
        }))
        .run(show)
}

#[test]
fn raw_and_decoded_paths() {
    run(async {
        let client = Client::new(show);
        // (request path, SCRIPT_NAME|PATH_INFO|decoded SCRIPT_NAME|decoded PATH_INFO)
        let cases = [
            ("/a%2Fb", "|/a%2Fb||/a/b"),
            ("/with%20space", "|/with%20space||/with space"),
            ("/%C3%A4%C3%B6%C3%BC", "|/%C3%A4%C3%B6%C3%BC||/äöü"),
            ("/%FF", "|/%FF||/\u{FFFD}"),
            ("/a%252F", "|/a%252F||/a%2F"),
            ("", "|/||/"),
            ("/", "|/||/"),
        ];
        for (path, expected) in cases {
            client.get(path).await.assert_text(expected);
        }
    });
}

#[test]
fn mounting_moves_the_boundary_and_keeps_encoded_slashes() {
    run(async {
        let cases = [
            ("/api", "/api/a%2Fb", "/api|/a%2Fb|/api|/a/b"),
            ("/api", "/api", "/api||/api|"),
            ("/api", "/api/", "/api|/|/api|/"),
            (
                "/my%20app",
                "/my%20app/x%20y",
                "/my%20app|/x%20y|/my app|/x y",
            ),
            (
                "/%C3%A9t%C3%A9",
                "/%C3%A9t%C3%A9/x",
                "/%C3%A9t%C3%A9|/x|/été|/x",
            ),
            ("/a%2Fb", "/a%2Fb/c", "/a%2Fb|/c|/a/b|/c"),
        ];
        for (prefix, path, expected) in cases {
            Client::new(mounted(prefix))
                .get(path)
                .await
                .assert_text(expected);
        }
    });
}

#[test]
fn the_original_uri_is_never_rewritten() {
    run(async {
        let app = Builder::new()
            .wrap(from_fn(|mut req: Request, next| async move {
                req.push_script_name(2);
                next.run(req).await
            }))
            .run(|req: Request| async move { req.uri().to_string().into_response() });
        Client::new(app)
            .get("/a/b%2Fc?q=1")
            .await
            .assert_text("/a/b%2Fc?q=1");
    });
}

/// Parses the `demo` app's `NAME=VALUE` lines.
async fn cgi_of(req: stackway::testing::RequestBuilder) -> Vec<(String, String)> {
    let res = req.await;
    res.assert_status(200)
        .assert_header("content-type", "text/plain; charset=utf-8");
    res.text()
        .lines()
        .map(|line| {
            let (name, value) = line.split_once('=').expect("NAME=VALUE");
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

#[test]
fn demo_prints_the_cgi_view_sorted() {
    run(async {
        let client = Client::new(
            Builder::new()
                .wrap(from_fn(|mut req: Request, next| async move {
                    req.push_script_name("/demo".len());
                    next.run(req).await
                }))
                .run(stackway::apps::demo),
        );
        let peer: SocketAddr = "192.0.2.7:4242".parse().unwrap();
        let req = client
            .post("/demo/a%2Fb%20c/%C3%A4?x=1&y=%2F")
            .header("host", "Example.org:8080")
            .header("content-type", "application/json")
            .header("content-length", "2")
            .header("x-forwarded-for", "10.0.0.1")
            .header("x-forwarded-for", "10.0.0.2")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("x_smuggled", "1")
            .remote_addr(peer)
            .body("{}");
        let cgi = cgi_of(req).await;
        let names: Vec<_> = cgi.iter().map(|(n, _)| n.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "lines are sorted by name");
        let get = |name: &str| cgi.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        assert_eq!(get("REQUEST_METHOD"), Some("POST"));
        assert_eq!(get("SCRIPT_NAME"), Some("/demo"));
        assert_eq!(get("PATH_INFO"), Some("/a/b c/ä"));
        assert_eq!(get("QUERY_STRING"), Some("x=1&y=%2F"));
        assert_eq!(get("REQUEST_URI"), Some("/demo/a%2Fb%20c/%C3%A4?x=1&y=%2F"));
        assert_eq!(get("SERVER_NAME"), Some("example.org"));
        assert_eq!(get("SERVER_PORT"), Some("8080"));
        assert_eq!(get("SERVER_PROTOCOL"), Some("HTTP/1.1"));
        assert_eq!(get("GATEWAY_INTERFACE"), Some("CGI/1.1"));
        assert_eq!(get("REQUEST_SCHEME"), Some("http"));
        assert_eq!(get("REMOTE_ADDR"), Some("192.0.2.7"));
        assert_eq!(get("REMOTE_PORT"), Some("4242"));
        assert_eq!(get("CONTENT_TYPE"), Some("application/json"));
        assert_eq!(get("CONTENT_LENGTH"), Some("2"));
        assert_eq!(get("HTTP_CONTENT_TYPE"), None);
        assert_eq!(get("HTTP_HOST"), Some("Example.org:8080"));
        assert_eq!(get("HTTP_X_FORWARDED_FOR"), Some("10.0.0.1, 10.0.0.2"));
        assert_eq!(get("HTTP_COOKIE"), Some("a=1; b=2"));
        assert_eq!(get("HTTP_X_SMUGGLED"), None, "names with _ are dropped");
        assert!(get("SERVER_SOFTWARE").unwrap().starts_with("stackway/"));
    });
}

#[test]
fn cgi_view_at_the_root_with_no_query() {
    run(async {
        let client = Client::new(stackway::apps::demo);
        let cgi = cgi_of(client.get("")).await;
        let get = |name: &str| cgi.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        assert_eq!(get("SCRIPT_NAME"), Some(""));
        assert_eq!(get("PATH_INFO"), Some("/"));
        assert_eq!(get("QUERY_STRING"), Some(""));
        assert_eq!(get("SERVER_NAME"), Some("localhost"));
        assert_eq!(get("SERVER_PORT"), Some("80"));
        assert_eq!(get("CONTENT_LENGTH"), None);
    });
}

#[test]
fn absolute_url_sets_scheme_and_host() {
    run(async {
        let app = |req: Request| async move {
            let env = req.environ();
            format!(
                "{} {} {} {}",
                env.url_scheme(),
                env.server_name(),
                env.server_port(),
                req.uri()
            )
            .into_response()
        };
        Client::new(app)
            .get("https://Example.com/x?y")
            .await
            .assert_text("https example.com 443 /x?y");
    });
}

#[test]
fn hello_greets_path_info_escaped() {
    run(async {
        let client = Client::new(stackway::apps::hello);
        let cases = [
            ("/", "<h1>Hello, web!</h1>"),
            ("", "<h1>Hello, web!</h1>"),
            ("/world", "<h1>Hello, world!</h1>"),
            ("/J%C3%BCrgen", "<h1>Hello, Jürgen!</h1>"),
            ("/a/b", "<h1>Hello, a/b!</h1>"),
            ("/%3Cscript%3E", "<h1>Hello, &lt;script&gt;!</h1>"),
            // Specials side by side, between and after other characters.
            (
                "/%26%22%27x%C3%BC%3E",
                "<h1>Hello, &amp;&quot;&#x27;xü&gt;!</h1>",
            ),
            ("/a%FFb", "<h1>Hello, a\u{FFFD}b!</h1>"),
        ];
        for (path, body) in cases {
            client
                .get(path)
                .await
                .assert_status(200)
                .assert_header("content-type", "text/html; charset=utf-8")
                .assert_text(body);
        }
        Client::new(mounted_hello())
            .get("/greet")
            .await
            .assert_text("<h1>Hello, web!</h1>");
    });
}

fn mounted_hello() -> impl stackway::App {
    Builder::new()
        .wrap(from_fn(|mut req: Request, next| async move {
            req.push_script_name("/greet".len());
            next.run(req).await
        }))
        .run(stackway::apps::hello)
}
