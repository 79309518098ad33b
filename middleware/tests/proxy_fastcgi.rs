//! The proxy to Debian's PHP-FPM over FastCGI (`fastcgi+unix:`): PHP pages,
//! a form POST, a 10 MiB answer, and PHP-FPM gone, as nginx's
//! `fastcgi_pass` serves them; and to Debian's fcgiwrap, which runs the CGI
//! script SCRIPT_FILENAME names.

use stackway_test_support as support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use stackway_middleware::{Dispatcher, Lint, Proxy};
use support::http::{Conn, exchange};
use support::{Running, external, server};

/// A FastCGI server (PHP-FPM, fcgiwrap), stopped when dropped.
struct Upstream(Child);

impl Upstream {
    /// Runs `command`, its output let go, and waits for it to listen on `sock`.
    fn start(command: &mut Command, sock: &Path) -> Self {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {command:?}: {e}"));
        let upstream = Self(child);
        let started = Instant::now();
        while std::os::unix::net::UnixStream::connect(sock).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{command:?} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        upstream
    }
}

impl Drop for Upstream {
    /// SIGTERM, which stops the workers too (SIGKILL would leave them serving).
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

const INDEX: &str = r#"<?php
header('Content-Type: application/json');
$body = file_get_contents('php://input');
echo json_encode([
    'SCRIPT_NAME' => $_SERVER['SCRIPT_NAME'],
    'SCRIPT_FILENAME' => $_SERVER['SCRIPT_FILENAME'],
    'REQUEST_URI' => $_SERVER['REQUEST_URI'],
    'QUERY_STRING' => $_SERVER['QUERY_STRING'],
    'REQUEST_METHOD' => $_SERVER['REQUEST_METHOD'],
    'REMOTE_ADDR' => $_SERVER['REMOTE_ADDR'],
    'HTTP_HOST' => $_SERVER['HTTP_HOST'],
    'DOCUMENT_ROOT' => $_SERVER['DOCUMENT_ROOT'],
    'SERVER_ADDR' => $_SERVER['SERVER_ADDR'] ?? null,
    'REMOTE_PORT' => $_SERVER['REMOTE_PORT'] ?? null,
    'REMOTE_USER' => $_SERVER['REMOTE_USER'] ?? null,
    'CONTENT_TYPE' => $_SERVER['CONTENT_TYPE'] ?? null,
    'SERVER_PROTOCOL' => $_SERVER['SERVER_PROTOCOL'],
    'cookies' => $_COOKIE,
    'get' => $_GET,
    'post' => $_POST,
    'body' => strlen($body),
]);
"#;

const BIG: &str = r#"<?php
header('Content-Type: application/octet-stream');
for ($i = 0; $i < 10; $i++) { echo str_repeat('p', 1048576); }
"#;

const MOVED: &str = r#"<?php
header('Location: /php/index.php?moved=1');
"#;

const MISSING: &str = r#"<?php
http_response_code(404);
echo 'no such thing';
"#;

/// A page that names a transfer coding it does not use.
const CODED: &str = r#"<?php
header('Transfer-Encoding: chunked');
echo 'not chunked';
"#;

/// PHP-FPM serving `root` on the unix socket `sock`; `None` when it is not installed.
fn php_fpm(dir: &Path, root: &Path, sock: &Path) -> Option<Upstream> {
    let bin = external::file(&["/usr/sbin/php-fpm8.2"], "Debian's php8.2-fpm")?;
    // As root, PHP-FPM wants its workers' user said (and -R).
    let root_user = std::fs::metadata("/proc/self").unwrap().uid() == 0;
    let conf = dir.join("php-fpm.conf");
    std::fs::write(
        &conf,
        format!(
            "[global]\npid = {dir}/php-fpm.pid\nerror_log = {dir}/php-fpm.log\ndaemonize = no\n\
             [www]\nlisten = {sock}\npm = static\npm.max_children = 2\n{user}\
             catch_workers_output = yes\n",
            dir = dir.display(),
            sock = sock.display(),
            user = if root_user {
                "user = root\ngroup = root\n"
            } else {
                ""
            },
        ),
    )
    .unwrap();
    for (name, page) in [
        ("index.php", INDEX),
        ("big.php", BIG),
        ("moved.php", MOVED),
        ("missing.php", MISSING),
        ("coded.php", CODED),
    ] {
        std::fs::write(root.join(name), page).unwrap();
    }
    let mut command = Command::new(bin);
    command
        .args(["--nodaemonize", "--allow-to-run-as-root", "--fpm-config"])
        .arg(&conf);
    Some(Upstream::start(&mut command, sock))
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn php_pages_behind_the_proxy_over_fastcgi() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("www");
    std::fs::create_dir(&root).unwrap();
    let sock = dir.path().join("php.sock");
    let Some(fpm) = php_fpm(dir.path(), &root, &sock) else {
        return;
    };
    let proxy = || Proxy::to(&format!("fastcgi+unix:{}", sock.display())).fastcgi_root(&root);
    // Behind BasicAuth, as behind nginx's auth_basic: the user is REMOTE_USER.
    let users = dir.path().join("users");
    std::fs::write(&users, "alice:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n").unwrap();
    let users = stackway_middleware::basic_auth::Htpasswd::load(&users).unwrap();
    let apps = Dispatcher::default().mount("/php", proxy()).mount(
        "/staff",
        stackway_middleware::BasicAuth::new(proxy(), users, "Staff"),
    );
    let front = Running::start(server().workers(2), Lint::strict(apps));
    let mut conn = Conn::open(front.addr);
    // alice:secret
    conn.send(b"GET /staff/index.php HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YWxpY2U6c2VjcmV0\r\n\r\n");
    assert_eq!(json(&conn.read_response().text())["REMOTE_USER"], "alice");
    // A client cannot name one itself.
    conn.send(b"GET /php/index.php HTTP/1.1\r\nHost: x\r\nX-Stackway-Remote-User: mallory\r\n\r\n");
    assert_eq!(json(&conn.read_response().text())["REMOTE_USER"], "");

    let page = conn.get("/php/index.php?a=1&b=two");
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(page.header("content-type"), Some("application/json"));
    let env = json(&page.text());
    assert_eq!(env["SCRIPT_NAME"], "/php/index.php");
    assert_eq!(
        env["SCRIPT_FILENAME"],
        root.join("index.php").to_str().unwrap()
    );
    assert_eq!(env["DOCUMENT_ROOT"], root.to_str().unwrap());
    assert_eq!(env["REQUEST_URI"], "/php/index.php?a=1&b=two");
    assert_eq!(env["QUERY_STRING"], "a=1&b=two");
    assert_eq!(env["REMOTE_ADDR"], "127.0.0.1");
    assert_eq!(env["get"]["b"], "two");
    // Slashes merged, as nginx's $fastcgi_script_name has them: a PHP_SELF
    // of `//index.php` would be another site's address in the page's links.
    let doubled = json(&conn.get("/php//index.php").text());
    assert_eq!(doubled["SCRIPT_NAME"], "/php/index.php");
    assert_eq!(
        doubled["REQUEST_URI"], "/php//index.php",
        "as the client sent it"
    );
    // The rest of nginx's fastcgi_params: the client's port, the address it
    // reached the server at, and empty values where nginx's are empty.
    let client_port = conn.reader.get_ref().local_addr().unwrap().port();
    assert_eq!(env["REMOTE_PORT"], client_port.to_string());
    assert_eq!(env["SERVER_ADDR"], "127.0.0.1");
    assert_eq!(env["REMOTE_USER"], "");
    assert_eq!(env["CONTENT_TYPE"], "");
    assert_eq!(env["SERVER_PROTOCOL"], "HTTP/1.1");
    // The client's HTTP version, as nginx's $server_protocol, though the
    // proxy's own head is HTTP/1.1.
    let old = exchange(
        front.addr,
        b"GET /php/index.php HTTP/1.0\r\nHost: x\r\n\r\n",
    );
    let (_, body) = old.split_once("\r\n\r\n").unwrap();
    assert_eq!(json(body)["SERVER_PROTOCOL"], "HTTP/1.0");
    // Two Cookie headers are two cookies.
    conn.send(b"GET /php/index.php HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n");
    let env = json(&conn.read_response().text());
    assert_eq!(env["cookies"], serde_json::json!({"a": "1", "b": "2"}));

    // A form POST.
    let form = "name=stackway&lang=rust";
    conn.send(
        format!(
            "POST /php/index.php HTTP/1.1\r\nHost: shop.example\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
            form.len()
        )
        .as_bytes(),
    );
    let env = json(&conn.read_response().text());
    assert_eq!(env["REQUEST_METHOD"], "POST");
    assert_eq!(env["post"]["name"], "stackway");
    assert_eq!(env["HTTP_HOST"], "shop.example");
    // A body of unknown length, read whole first.
    conn.send(b"POST /php/index.php HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n");
    assert_eq!(json(&conn.read_response().text())["body"], 7);

    // Statuses and redirects as PHP says them.
    let moved = conn.get("/php/moved.php");
    assert_eq!(moved.status, 302);
    assert_eq!(moved.header("location"), Some("/php/index.php?moved=1"));
    let missing = conn.get("/php/missing.php");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.text(), "no such thing");
    // A CGI body is framed by its records: a Transfer-Encoding the page
    // names is not decoded (nginx passes the bytes as they come too).
    let coded = conn.get("/php/coded.php");
    assert_eq!(
        (coded.status, coded.text()),
        (200, "not chunked".to_owned())
    );
    assert_eq!(
        conn.get("/php/nowhere.php").status,
        404,
        "PHP-FPM's own answer"
    );
    // PHP-FPM reads SCRIPT_FILENAME up to a NUL: index.php%00.txt would run
    // index.php. A NUL decoded from the path is a 400, as nginx answers it.
    assert_eq!(conn.get("/php/index.php%00.txt").status, 400);
    // And a `%` that escapes nothing has no file name to tell PHP-FPM.
    assert_eq!(conn.get("/php/index.php%zz").status, 400);

    // 10 MiB, whole.
    let big = conn.get("/php/big.php");
    assert_eq!(big.status, 200);
    assert_eq!(big.body.len(), 10 << 20);
    assert!(big.body.iter().all(|b| *b == b'p'));

    // PHP-FPM stopped: 502, and the server goes on.
    drop(fpm);
    assert_eq!(conn.get("/php/index.php").status, 502);
    assert_eq!(Conn::open(front.addr).get("/php/index.php").status, 502);
}

/// fcgiwrap runs the file SCRIPT_FILENAME names, with no root of its own to
/// keep to: the proxy's root is the only one.
#[test]
fn cgi_scripts_behind_fcgiwrap_run_from_the_root_only() {
    let Some(bin) = external::file(&["/usr/sbin/fcgiwrap"], "Debian's fcgiwrap") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cgi-bin");
    std::fs::create_dir(&root).unwrap();
    let script = |path: &Path, says: &str| {
        let text = format!("#!/bin/sh\nprintf \"Content-Type: text/plain\\r\\n\\r\\n{says}\"\n");
        std::fs::write(path, text).unwrap();
        let mut mode = std::fs::metadata(path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut mode, 0o755);
        std::fs::set_permissions(path, mode).unwrap();
    };
    script(&root.join("hello.cgi"), "inside the root");
    script(&root.join("proxy.cgi"), "HTTP_PROXY=[$HTTP_PROXY]");
    script(&dir.path().join("secret.cgi"), "outside the root");
    let sock = dir.path().join("cgi.sock");
    let mut command = Command::new(bin);
    command.arg("-s").arg(format!("unix:{}", sock.display()));
    let _fcgiwrap = Upstream::start(&mut command, &sock);
    let proxy = Proxy::to(&format!("fastcgi+unix:{}", sock.display())).fastcgi_root(&root);
    let front = Running::start(
        server(),
        Lint::strict(Dispatcher::default().mount("/cgi", proxy)),
    );
    let mut conn = Conn::open(front.addr);

    let hello = conn.get("/cgi/hello.cgi");
    assert_eq!(
        (hello.status, hello.text()),
        (200, "inside the root".to_owned())
    );
    // httpoxy: a client's `Proxy` header would be the script's HTTP_PROXY,
    // the variable HTTP clients take for the proxy to send requests through.
    conn.send(b"GET /cgi/proxy.cgi HTTP/1.1\r\nHost: x\r\nProxy: http://evil.example:8080\r\n\r\n");
    assert_eq!(conn.read_response().text(), "HTTP_PROXY=[]");
    // A `%2F` makes a dot segment only once decoded, and the Dispatcher sees
    // one segment (`..%2Fsecret.cgi`): SCRIPT_FILENAME would be
    // `cgi-bin/../secret.cgi`, and fcgiwrap run it. 400, as nginx answers.
    for outside in [
        "/cgi/..%2Fsecret.cgi",
        "/cgi/x/..%2f..%2Fsecret.cgi",
        "/cgi/.%2F..%2Fsecret.cgi",
    ] {
        let refused = conn.get(outside);
        assert_eq!(
            (refused.status, refused.text().contains("outside")),
            (400, false),
            "{outside}"
        );
    }
}
