//! What the `stackway` binary's tests share: starting it and reading where it
//! listens, signalling it, and waiting for it to exit.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};

/// A running server, killed when dropped.
pub struct Server {
    pub child: Child,
    /// What it printed: one `listening on ADDRESS` line per listener.
    pub listening: Vec<String>,
    /// Its standard error, in a file: a process it starts on a restart
    /// writes there too, and outlives it.
    stderr: tempfile::NamedTempFile,
}

impl Server {
    /// Starts `command` and reads its `listening on` lines, one per listener.
    pub fn start(mut command: Command, listeners: usize) -> Self {
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(stderr.reopen().unwrap())
            .spawn()
            .expect("start stackway");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let listening = (0..listeners)
            .map(|_| {
                let mut line = String::new();
                out.read_line(&mut line).unwrap();
                line.strip_prefix("listening on ")
                    .unwrap_or_else(|| panic!("unexpected line {line:?}"))
                    .trim_end()
                    .to_owned()
            })
            .collect();
        Self {
            child,
            listening,
            stderr,
        }
    }

    pub fn tcp(&self, n: usize) -> SocketAddr {
        let url = &self.listening[n];
        url.split("://").nth(1).unwrap().parse().unwrap()
    }

    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args([name, &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// What it has written to standard error so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap()
    }

    /// Waits at most 20 s for the process to exit; its exit code and stderr.
    pub fn finish(mut self) -> (i32, String) {
        let started = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            if started.elapsed() > Duration::from_secs(20) {
                let err = std::fs::read_to_string(self.stderr.path()).unwrap();
                panic!("stackway did not exit: {err}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let err = std::fs::read_to_string(self.stderr.path()).unwrap();
        (self.child.wait().unwrap().code().unwrap_or(-1), err)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn stackway(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stackway"));
    command.arg("serve").args(args);
    command
}

/// As systemd starts a socket-activated service: the sockets at descriptors
/// 3.., `LISTEN_FDS`, and `LISTEN_PID` naming the service's own process (set
/// by a shell that then becomes stackway).
pub fn activated(sockets: Vec<std::os::fd::OwnedFd>, args: &[&str]) -> Command {
    let mut command = Command::new("sh");
    command
        .args(["-c", "LISTEN_PID=$$ exec \"$0\" serve \"$@\""])
        .arg(env!("CARGO_BIN_EXE_stackway"))
        .args(args)
        .env("LISTEN_FDS", sockets.len().to_string());
    let mappings = sockets
        .into_iter()
        .zip(3..)
        .map(|(parent_fd, child_fd)| FdMapping {
            parent_fd,
            child_fd,
        })
        .collect();
    command.fd_mappings(mappings).unwrap();
    command
}

/// The processes whose parent is `parent`.
pub fn children(parent: u32) -> std::collections::BTreeSet<u32> {
    let out = Command::new("ps")
        .args(["-o", "pid=", "--ppid", &parent.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|pid| pid.parse().unwrap())
        .collect()
}
