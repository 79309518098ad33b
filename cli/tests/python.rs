//! `stackway` links no Python interpreter: a command with a Python mount runs
//! as `stackway-python`, beside it, in the same process.

mod support;

use std::path::Path;
use std::process::Command;

use support::{Server, stackway};

/// The files a running process has mapped.
fn maps(server: &Server) -> String {
    std::fs::read_to_string(format!("/proc/{}/maps", server.child.id())).unwrap()
}

/// The binary a running process runs.
fn exe(server: &Server) -> String {
    let exe = std::fs::read_link(format!("/proc/{}/exe", server.child.id())).unwrap();
    exe.file_name().unwrap().to_string_lossy().into_owned()
}

fn curl(url: &str) -> String {
    let out = Command::new("curl").args(["-sS", url]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn write_app(dir: &Path) {
    std::fs::write(
        dir.join("python_app.py"),
        "import sys\n\
         def application(environ, start_response):\n\
         \x20   start_response('200 OK', [('Content-Type', 'text/plain')])\n\
         \x20   return [f'Python {sys.version_info[0]}.{sys.version_info[1]} at {environ[\"SCRIPT_NAME\"]}'.encode()]\n",
    )
    .unwrap();
}

#[test]
fn a_process_without_a_python_mount_maps_no_interpreter() {
    if !stackway_test_support::external::command("curl", "Debian's curl") {
        return;
    }
    let server = Server::start(
        stackway(&["--bind", "127.0.0.1:0", "--mount", "/=hello"]),
        1,
    );
    let url = &server.listening[0];
    assert_eq!(curl(&format!("{url}/")), "<h1>Hello, web!</h1>");
    assert_eq!(exe(&server), "stackway");
    assert!(!maps(&server).contains("libpython"), "{}", maps(&server));
    server.signal("-TERM");
    assert_eq!(server.finish().0, 0);
}

#[test]
fn a_python_mount_is_served_by_stackway_python_in_the_process_started() {
    if !stackway_test_support::external::command("curl", "Debian's curl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write_app(dir.path());
    let pythonpath = dir.path().to_str().unwrap();
    let server = Server::start(
        stackway(&[
            "--bind",
            "127.0.0.1:0",
            "--mount",
            "/py=wsgi:python_app:application",
            "--mount",
            "/=hello",
            "--pythonpath",
            pythonpath,
        ]),
        1,
    );
    let url = &server.listening[0];
    assert_eq!(curl(&format!("{url}/py/")), "Python 3.11 at /py");
    assert_eq!(curl(&format!("{url}/")), "<h1>Hello, web!</h1>");
    // The pid the caller holds is the one serving: signals and supervisors
    // reach it.
    assert_eq!(exe(&server), "stackway-python");
    assert!(maps(&server).contains("libpython3.11"));
    server.signal("-TERM");
    let (code, err) = server.finish();
    assert_eq!(code, 0, "{err}");
}

#[test]
fn without_stackway_python_beside_it_a_python_mount_is_refused_with_why() {
    let dir = tempfile::tempdir().unwrap();
    write_app(dir.path());
    let alone = dir.path().join("stackway");
    std::fs::copy(env!("CARGO_BIN_EXE_stackway"), &alone).unwrap();
    let run = |mount: &str| {
        Command::new(&alone)
            .args(["serve", "--check", "--mount", mount, "--pythonpath"])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let out = run("/=wsgi:python_app:application");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("stackway-python") && err.contains(&dir.path().display().to_string()),
        "{err}"
    );
    // Without a Python mount, it needs nothing beside it.
    let out = run("/=hello");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}
