//! gRPC through the proxy: a real gRPC server and client (grpcio, from PyPI
//! in a virtualenv the test makes) on either side of a stackway front
//! speaking h2c both ways, and a raw HTTP/2 client for the deadline.

use stackway_test_support as support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use stackway_middleware::{Dispatcher, Lint, Proxy};
use support::{Running, external, server};

const VENV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/test-venvs/grpc");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/grpc_echo.py");

/// The gRPC server, killed when dropped.
struct Upstream(Child, u16);

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// grpcio's server for `test.Echo`; `None` when grpcio cannot be installed here.
fn grpc_server() -> Option<Upstream> {
    // Made once for the tests of this file, which run at once.
    static MADE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let made =
        MADE.get_or_init(|| external::python_venv(VENV.as_ref(), &["grpcio>=1.60,<2"]).is_some());
    if !made {
        return None;
    }
    let mut child = Command::new(Path::new(VENV).join("bin/python"))
        .args([SCRIPT, "serve"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the gRPC server");
    let mut port = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    let port = port.trim().parse().expect("the gRPC server's port");
    Some(Upstream(child, port))
}

/// `test.Echo` at its own path, over h2c; `test.Down` to nowhere.
fn front(upstream: &Upstream) -> Running {
    let echo = Proxy::to(&format!("http://127.0.0.1:{}/test.Echo", upstream.1)).http2(true);
    let down = Proxy::to("http://127.0.0.1:1/test.Down").http2(true);
    let app = Dispatcher::default()
        .mount("/test.Echo", echo)
        .mount("/test.Down", down);
    Running::start(server().workers(2), Lint::strict(app))
}

#[test]
fn grpc_calls_of_every_kind_pass_with_their_status_and_trailers() {
    let Some(upstream) = grpc_server() else {
        return;
    };
    let front = front(&upstream);
    let out = Command::new(Path::new(VENV).join("bin/python"))
        .args([SCRIPT, "call", &front.addr.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    // With its metadata, a key with `_` too (a plain request's header
    // with one would not pass).
    assert_eq!(got["unary"]["ok"], "hello world from 42", "{got}");
    // A non-zero grpc-status, its message and the trailing metadata pass.
    assert_eq!(got["fail"]["code"], "NOT_FOUND", "{got}");
    assert_eq!(got["fail"]["details"], "no such thing", "{got}");
    assert_eq!(got["fail"]["trailers"]["why"], "asked to", "{got}");
    let parts: Vec<String> = (0..5).map(|i| format!("part {i}")).collect();
    assert_eq!(got["stream"], serde_json::json!(parts), "{got}");
    assert_eq!(
        got["chat"],
        serde_json::json!(["ONE", "TWO", "THREE"]),
        "{got}"
    );
    // No upstream to be had: a status the client understands, not a bare 502.
    assert_eq!(got["down"]["code"], "UNAVAILABLE", "{got}");
}

/// Sends one gRPC call (a message of `payload`) over h2c with `headers`;
/// the response's head and its trailers, or the head's own when it ends
/// the stream (a trailers-only answer), and how long it took.
async fn call(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (http::response::Parts, http::HeaderMap, Duration) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut message = vec![0, 0, 0, 0, 2];
    message.extend_from_slice(b"hi");
    let mut req = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Full::new(Bytes::from(message))).unwrap();
    let started = Instant::now();
    let res = send.send_request(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    (parts, trailers, started.elapsed())
}

fn grpc_status(parts: &http::response::Parts, trailers: &http::HeaderMap) -> String {
    let status = trailers
        .get("grpc-status")
        .or_else(|| parts.headers.get("grpc-status"));
    status.unwrap().to_str().unwrap().to_owned()
}

#[test]
fn the_calls_deadline_bounds_the_wait_for_the_upstream() {
    let Some(upstream) = grpc_server() else {
        return;
    };
    let front = front(&upstream);
    support::run(async move {
        // The upstream answers after 3 s; the call gives it half a second.
        let (parts, trailers, took) =
            call(front.addr, "/test.Echo/Slow", &[("grpc-timeout", "500m")]).await;
        assert_eq!(parts.status, 200);
        assert_eq!(grpc_status(&parts, &trailers), "4", "DEADLINE_EXCEEDED");
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_millis(2500),
            "answered after {took:?}"
        );
        // Without a deadline, the upstream's own answer (and status 0).
        let (parts, trailers, took) = call(front.addr, "/test.Echo/Slow", &[]).await;
        assert_eq!(grpc_status(&parts, &trailers), "0");
        assert!(took >= Duration::from_secs(3), "answered after {took:?}");
        // The proxy's 502 is UNAVAILABLE, in a trailers-only answer.
        let (parts, _, _) = call(front.addr, "/test.Down/Unary", &[]).await;
        assert_eq!(parts.headers["content-type"], "application/grpc");
        assert_eq!(parts.headers["grpc-status"], "14");
    });
}
