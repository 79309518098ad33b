//! File bodies over real sockets: sent with `sendfile` on plain HTTP/1
//! connections, read and copied on TLS and HTTP/2, read by the middleware
//! that changes them; the client gets the file's exact bytes every way, and
//! a file cut short while it is sent ends the response, never completes it.

use stackway_test_support as support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stackway::{IntoResponse, Request, Response};
use stackway_middleware::{AccessLog, Compress, Metrics, SharedData};
use support::http::Conn;
use support::{Running, external, server};

/// Bytes no run of zeros hides in: a stand-in sent for them would show.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

async fn app(_: Request) -> Response {
    http::StatusCode::NOT_FOUND.into_response()
}

/// `curl` with `args`, its body on stdout.
fn curl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "30"])
        .args(args)
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

struct Files {
    dir: tempfile::TempDir,
    big: Vec<u8>,
}

impl Files {
    /// `big.bin` (3 MiB and a bit: many chunks, the last short) and
    /// `text.txt` (compressible, 1 MiB).
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let big = noise(3 * 1024 * 1024 + 12_345, 7);
        std::fs::write(dir.path().join("big.bin"), &big).unwrap();
        let text = "All work and no play makes a dull file.\n".repeat(26_000);
        std::fs::write(dir.path().join("text.txt"), text).unwrap();
        Self { dir, big }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

#[test]
fn a_large_file_arrives_exact_over_every_kind_of_connection_through_watching_middleware() {
    if !external::command("curl", "Debian's curl") {
        return;
    }
    let files = Files::new();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = lines.clone();
    let stack = AccessLog::new(Metrics::new(
        SharedData::new(app).export("/static", files.path()),
    ))
    .sink(move |line| log.lock().unwrap().push(line.to_owned()));
    let tls_dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = support::tls::certificate(tls_dir.path(), "localhost");
    let plain = stackway::server::Listener::bind("127.0.0.1:0").unwrap();
    let tls = stackway::server::Listener::bind("127.0.0.1:0")
        .unwrap()
        .tls(stackway::server::Tls::from_pem_files(&cert, &key).unwrap());
    let socket = tls_dir.path().join("stackway.sock");
    let unix = stackway::server::Listener::bind_unix(&socket).unwrap();
    let (plain_addr, tls_addr) = (plain.local_addr().to_string(), tls.local_addr().to_string());
    let running = Running::start(
        stackway::Server::new([plain, tls, unix])
            .unwrap()
            .workers(1),
        stack,
    );

    let url = format!("{plain_addr}/static/big.bin");
    let secure = format!("{tls_addr}/static/big.bin").replace("127.0.0.1", "localhost");
    let tls_port = tls_addr.rsplit(':').next().unwrap();
    let resolve_tls = format!("localhost:{tls_port}:127.0.0.1");
    let cacert = cert.to_str().unwrap();
    for (how, args) in [
        ("HTTP/1.1", vec![url.as_str()]),
        ("HTTP/1.0", vec!["--http1.0", url.as_str()]),
        ("h2c", vec!["--http2-prior-knowledge", url.as_str()]),
        (
            "a unix socket",
            vec![
                "--unix-socket",
                socket.to_str().unwrap(),
                "http://localhost/static/big.bin",
            ],
        ),
        ("a slow reader", vec!["--limit-rate", "4M", url.as_str()]),
        (
            "TLS HTTP/1.1",
            vec![
                "--http1.1",
                "--cacert",
                cacert,
                "--resolve",
                &resolve_tls,
                secure.as_str(),
            ],
        ),
        (
            "TLS h2",
            vec![
                "--http2",
                "--cacert",
                cacert,
                "--resolve",
                &resolve_tls,
                secure.as_str(),
            ],
        ),
    ] {
        let got = curl(&args);
        assert!(
            got == files.big,
            "{how}: {} bytes, not the file's {}",
            got.len(),
            files.big.len()
        );
    }
    running.stop().unwrap();
    // The access log counted every byte it watched go by.
    let lines = lines.lock().unwrap();
    assert_eq!(lines.len(), 7, "{lines:?}");
    let size = files.big.len().to_string();
    assert!(
        lines
            .iter()
            .all(|line| line.ends_with(&format!(" 200 {size}"))),
        "{lines:?}"
    );
}

#[test]
fn ranges_and_multipart_ranges_of_a_large_file_are_its_bytes() {
    if !external::command("curl", "Debian's curl") {
        return;
    }
    let files = Files::new();
    let running = Running::start(
        server(),
        SharedData::new(app).export("/static", files.path()),
    );
    let url = format!("http://{}/static/big.bin", running.addr);
    let big = &files.big;
    for (range, start, end) in [
        ("0-0", 0, 1),
        ("1000-300000", 1000, 300_001),
        ("262143-524288", 262_143, 524_289),
        ("3000000-", 3_000_000, big.len()),
    ] {
        assert!(
            curl(&["-r", range, &url]) == big[start..end],
            "range {range}"
        );
    }
    let body = curl(&["-r", "10-20,1000000-1300000,-5", &url]);
    for (start, end) in [(10, 21), (1_000_000, 1_300_001), (big.len() - 5, big.len())] {
        let part = &big[start..end];
        assert!(
            body.windows(part.len()).any(|w| w == part),
            "part {start}-{end} missing"
        );
    }
    assert!(body.len() < 300_100 + 500, "{} bytes", body.len());
    running.stop().unwrap();
}

#[test]
fn a_middleware_that_reads_the_body_gets_the_files_bytes() {
    if !external::command("curl", "Debian's curl") {
        return;
    }
    let files = Files::new();
    let stack = Compress::new(SharedData::new(app).export("/static", files.path()));
    let running = Running::start(server(), stack);
    let url = format!("http://{}/static/text.txt", running.addr);
    let got = curl(&["--compressed", "-D", "/dev/stderr", &url]);
    assert_eq!(got, std::fs::read(files.path().join("text.txt")).unwrap());
    let raw = curl(&["-H", "Accept-Encoding: gzip", &url]);
    assert!(
        raw.len() < got.len() / 10,
        "not compressed: {} bytes",
        raw.len()
    );
    running.stop().unwrap();
}

#[test]
fn pipelined_requests_for_large_files_get_each_its_own_bytes() {
    let files = Files::new();
    let small = noise(100, 3);
    std::fs::write(files.path().join("small.bin"), &small).unwrap();
    let running = Running::start(
        server(),
        SharedData::new(app).export("/static", files.path()),
    );
    let mut conn = Conn::open(running.addr);
    let ask = |path: &str, range: &str| {
        format!("GET /static/{path} HTTP/1.1\r\nHost: localhost\r\n{range}\r\n")
    };
    let batch = [
        ask("big.bin", ""),
        ask("small.bin", ""),
        ask("big.bin", "Range: bytes=2000000-2999999\r\n"),
        ask("big.bin", ""),
    ]
    .concat();
    conn.send(batch.as_bytes());
    let big = &files.big;
    let expected: [&[u8]; 4] = [big, &small, &big[2_000_000..3_000_000], big];
    for (i, expected) in expected.into_iter().enumerate() {
        let res = conn.read_response();
        assert!(
            res.body == expected,
            "response {i}: {} bytes",
            res.body.len()
        );
    }
    running.stop().unwrap();
}

#[test]
fn a_file_cut_short_while_it_is_sent_ends_the_response_short() {
    let files = Files::new();
    let path = files.path().join("long.bin");
    let long = noise(16 * 1024 * 1024, 11);
    std::fs::write(&path, &long).unwrap();
    let running = Running::start(
        server(),
        SharedData::new(app).export("/static", files.path()),
    );
    let mut socket = TcpStream::connect(running.addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    socket
        .write_all(b"GET /static/long.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    // The response has begun; the file is then cut to 1 MiB.
    let mut got = vec![0; 64 * 1024];
    socket.read_exact(&mut got).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(1024 * 1024)
        .unwrap();
    socket.read_to_end(&mut got).unwrap();
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let body = &got[head_end..];
    assert!(
        body.len() < long.len(),
        "the whole file came: {} bytes",
        body.len()
    );
    // What the file still holds arrives as it is. (Bytes past the cut that
    // sat in the socket's buffer when it was made may arrive as the kernel
    // now has them, zeros: `sendfile` hands the socket the page cache, not
    // a copy, as it does for nginx. Files are replaced by renaming.)
    let kept = body.len().min(1024 * 1024);
    assert!(
        body[..kept] == long[..kept],
        "the file's first {kept} bytes differ"
    );
    // The connection was closed, and the server goes on serving.
    let res = Conn::open(running.addr).get("/static/big.bin");
    assert!(res.body == files.big);
    running.stop().unwrap();
}
