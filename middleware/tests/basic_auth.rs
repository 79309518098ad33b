//! BasicAuth over real sockets, against files Apache's `htpasswd` wrote.

use stackway_test_support as support;

use std::path::Path;
use std::process::Command;

use stackway_middleware::basic_auth::Htpasswd;
use stackway_middleware::{BasicAuth, Lint};
use support::http::Conn;
use support::{Running, external, server};

/// Adds `user` with `password` to `file`, hashed as `scheme` (an htpasswd flag).
fn htpasswd(file: &Path, scheme: &str, user: &str, password: &str) {
    let create = if file.exists() { "" } else { "c" };
    let status = Command::new("htpasswd")
        .arg(format!("-b{create}{scheme}"))
        .args([file.to_str().unwrap(), user, password])
        .status()
        .unwrap();
    assert!(status.success());
}

fn get(addr: std::net::SocketAddr, authorization: Option<&str>) -> support::http::RawResponse {
    let mut conn = Conn::open(addr);
    let header = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    conn.send(format!("GET / HTTP/1.1\r\nHost: x\r\n{header}\r\n").as_bytes());
    conn.read_response()
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

#[test]
fn users_of_every_htpasswd_scheme_get_in_and_nobody_else() {
    if !external::command("htpasswd", "apache2-utils") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users");
    let schemes = [
        ("B", "alice"),
        ("m", "bob"),
        ("s", "carol"),
        ("2", "dave"),
        ("5", "erin"),
    ];
    for (scheme, user) in schemes {
        htpasswd(&file, scheme, user, &format!("{user}'s secret"));
    }
    let users = Htpasswd::load(&file).unwrap();
    // The app is told who got in, as nginx's `$remote_user` tells it.
    let app = BasicAuth::new(
        |req: stackway::Request| async move {
            use stackway::RequestExt;
            let cgi = req.environ().cgi();
            format!("inside: {} by {}", cgi["REMOTE_USER"], cgi["AUTH_TYPE"])
        },
        users.clone(),
        "Staff",
    );
    let running = Running::start(server().workers(2), Lint::strict(app));

    for (_, user) in schemes {
        let res = get(
            running.addr,
            Some(&basic(user, &format!("{user}'s secret"))),
        );
        let inside = format!("inside: {user} by Basic");
        assert_eq!((res.status, res.text()), (200, inside), "{user}");
        assert_eq!(
            get(running.addr, Some(&basic(user, "guess"))).status,
            401,
            "{user}"
        );
    }
    let refused = get(running.addr, None);
    assert_eq!(refused.status, 401);
    assert_eq!(
        refused.header("www-authenticate"),
        Some("Basic realm=\"Staff\", charset=\"UTF-8\"")
    );
    assert_eq!(get(running.addr, Some(&basic("mallory", "x"))).status, 401);
    assert_eq!(get(running.addr, Some("Bearer abc")).status, 401);
    assert_eq!(get(running.addr, Some("Basic !!!")).status, 401);

    // A new password, read again; a broken file leaves the users as they were.
    htpasswd(&file, "B", "alice", "new");
    users.reload().unwrap();
    assert_eq!(get(running.addr, Some(&basic("alice", "new"))).status, 200);
    assert_eq!(
        get(running.addr, Some(&basic("alice", "alice's secret"))).status,
        401
    );
    std::fs::write(&file, "alice:plain\n").unwrap();
    let error = users.reload().unwrap_err().to_string();
    assert!(
        error.contains("line 1 (alice): not a hash stackway reads"),
        "{error}"
    );
    assert_eq!(get(running.addr, Some(&basic("alice", "new"))).status, 200);
}
