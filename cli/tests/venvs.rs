//! `--venv PREFIX=PATH`: two virtualenvs (made by the test, from PyPI) with
//! different Flask majors, mounted side by side under one server, each in
//! processes of its own that are recycled on their own.

mod support;

use stackway_test_support::external;
use stackway_test_support::http::Conn;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use support::{Server, stackway};

const VENVS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/test-venvs");

fn addr(url: &str) -> SocketAddr {
    url.split("://").nth(1).unwrap().parse().unwrap()
}

/// `(flask version, pid)` of a page of venv_app, on a connection of its own
/// (the server's own process is recycled too, and closes its connections).
fn which(server: SocketAddr, path: &str) -> (String, String) {
    let res = Conn::open(server).get(path);
    assert_eq!(res.status, 200, "{path}: {}", res.text());
    let text = res.text();
    let words: Vec<&str> = text.split(' ').collect();
    assert_eq!(words[4], "at", "{text}");
    (words[1].to_owned(), words[3].to_owned())
}

#[test]
fn two_flask_majors_serve_side_by_side_and_are_recycled_apart() {
    let flask2 = Path::new(VENVS).join("flask2");
    let flask3 = Path::new(VENVS).join("flask3");
    if external::python_venv(&flask2, &["flask>=2.3,<3"]).is_none()
        || external::python_venv(&flask3, &["flask>=3.1,<4"]).is_none()
    {
        return;
    }
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/../wsgi/tests/python");
    let a = format!("/a={}", flask2.display());
    let b = format!("/b={}", flask3.display());
    let server = Server::start(
        stackway(&[
            "--bind",
            "127.0.0.1:0",
            "--pythonpath",
            python,
            "--mount",
            "/a=wsgi:venv_app:app",
            "--venv",
            &a,
            "--mount",
            "/b=wsgi:venv_app:app",
            "--venv",
            &b,
            "--mount",
            "/=hello",
            "--max-requests",
            "5",
        ]),
        1,
    );
    let front = addr(&server.listening[0]);
    assert_eq!(Conn::open(front).get("/you").text(), "<h1>Hello, you!</h1>");
    let page = Conn::open(front).get("/a/").text();
    assert!(page.ends_with("at /a for 127.0.0.1"), "{page}");
    let (version_a, _) = which(front, "/a/");
    let (version_b, pid_b) = which(front, "/b/");
    assert!(version_a.starts_with("2."), "{version_a}");
    assert!(version_b.starts_with("3."), "{version_b}");
    // /a's process is replaced after its five requests (once its successor
    // has imported the app); /b's, which served two, is not touched.
    let mut pids_a = HashSet::new();
    let asked = Instant::now();
    while pids_a.len() < 2 {
        assert!(
            asked.elapsed() < Duration::from_secs(20),
            "/a was never recycled: {pids_a:?}"
        );
        pids_a.insert(which(front, "/a/").1);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        which(front, "/b/"),
        (version_b.clone(), pid_b.clone()),
        "/b was recycled with /a"
    );
    // SIGHUP to the server replaces the virtualenvs' processes too, each
    // group reading its code again. Watched in /proc, not by requests: /b
    // is one request short of its own replacement.
    let socket = format!("stackway-{}/1.sock", server.child.id());
    let before = processes_with(&socket);
    server.signal("-HUP");
    let asked = Instant::now();
    while processes_with(&socket).is_superset(&before) {
        assert!(
            asked.elapsed() < Duration::from_secs(20),
            "/b's processes were not replaced on SIGHUP"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (version, pid) = which(front, "/b/");
    assert_eq!(version, version_b);
    assert_ne!(pid, pid_b);
}

/// The processes whose command line names `word`.
fn processes_with(word: &str) -> HashSet<u32> {
    let entries = std::fs::read_dir("/proc").unwrap().flatten();
    entries
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(word))
        })
        .collect()
}

#[test]
fn a_venv_that_is_not_one_or_not_on_a_python_mount_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let not_venv = format!("/a={}", dir.path().display());
    let out = stackway(&["--mount", "/a=wsgi:x:app", "--venv", &not_venv])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a virtualenv"), "{err}");
    // A directory with bin/python3 is one, but /a is not a Python mount.
    std::fs::create_dir(dir.path().join("bin")).unwrap();
    std::os::unix::fs::symlink("/usr/bin/python3", dir.path().join("bin/python3")).unwrap();
    let out = stackway(&["--mount", "/a=hello", "--venv", &not_venv, "--check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no wsgi: or asgi: mount at /a"), "{err}");
}

#[test]
fn a_mount_with_a_venv_has_its_own_pythonpath() {
    let flask3 = Path::new(VENVS).join("flask3");
    if external::python_venv(&flask3, &["flask>=3.1,<4"]).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("only_here.py"),
        "def application(environ, start_response):\n    \
         start_response('200 OK', [('Content-Type', 'text/plain')])\n    \
         return [b'only here, at ' + environ['SCRIPT_NAME'].encode()]\n\n\
         def first_bytes(environ, start_response):\n    \
         first = environ['wsgi.input'].read(5)\n    \
         start_response('200 OK', [('Content-Type', 'text/plain')])\n    \
         return [b'first ' + first]\n",
    )
    .unwrap();
    let config = dir.path().join("stackway.toml");
    std::fs::write(
        &config,
        format!(
            "bind = [\"127.0.0.1:0\"]\nbody_timeout = 5\n\n\
             [[mount]]\nprefix = \"/c\"\nwsgi = \"only_here:application\"\n\
             venv = \"{venv}\"\npythonpath = [\"{dir}\"]\n\n\
             [[mount]]\nprefix = \"/s\"\nwsgi = \"only_here:first_bytes\"\nstream_input = true\n\
             venv = \"{venv}\"\npythonpath = [\"{dir}\"]\n",
            venv = flask3.display(),
            dir = dir.path().display()
        ),
    )
    .unwrap();
    let server = Server::start(stackway(&["--config", config.to_str().unwrap()]), 1);
    let page = Conn::open(addr(&server.listening[0])).get("/c/");
    assert_eq!(page.text(), "only here, at /c");
    // The mount's stream_input reaches its own processes: the app answers
    // on the first five bytes of a hundred, the rest never sent.
    let mut conn = Conn::open(addr(&server.listening[0]));
    conn.send(b"POST /s/ HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhello");
    let asked = Instant::now();
    assert_eq!(conn.read_response().text(), "first hello");
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "{:?}",
        asked.elapsed()
    );
    // Without its venv, a mount's pythonpath would be the server's: refused.
    let shared = dir.path().join("shared.toml");
    std::fs::write(
        &shared,
        "[[mount]]\nprefix = \"/c\"\nwsgi = \"only_here:application\"\npythonpath = [\"/x\"]\n",
    )
    .unwrap();
    let out = stackway(&["--config", shared.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pythonpath needs the mount's venv"), "{err}");
}
