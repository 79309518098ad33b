//! Compress: every coding decodes back to the body, the negotiation, each
//! rule for leaving a response alone, and chunks that stream as they come.

use stackway_test_support as support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use http::StatusCode;
use stackway::testing::{Client, TestResponse};
use stackway::{Body, Html, IntoResponse, Request};
use stackway_middleware::{Compress, Lint};
use support::{Running, external, run, server};

fn page() -> String {
    (0..300).map(|i| format!("<li>item {i}</li>\n")).collect()
}

async fn html(_req: Request) -> stackway::Response {
    let mut res = Html(page()).into_response();
    res.headers_mut().insert("etag", "\"v1\"".parse().unwrap());
    res
}

fn decode(coding: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => flate2::read::GzDecoder::new(body)
            .read_to_end(&mut out)
            .map(drop),
        "deflate" => flate2::read::ZlibDecoder::new(body)
            .read_to_end(&mut out)
            .map(drop),
        "br" => brotli::Decompressor::new(body, 4096)
            .read_to_end(&mut out)
            .map(drop),
        "zstd" => ruzstd::decoding::StreamingDecoder::new(body)
            .unwrap()
            .read_to_end(&mut out)
            .map(drop),
        other => panic!("{other}"),
    }
    .unwrap();
    out
}

fn get(client: &Client, accept: &str) -> TestResponse {
    run(async { client.get("/").header("accept-encoding", accept).await })
}

#[test]
fn every_coding_decodes_to_the_body() {
    let client = Client::new(Lint::strict(Compress::new(html)));
    for coding in ["gzip", "deflate", "br", "zstd"] {
        let res = get(&client, coding);
        res.assert_status(200)
            .assert_header("content-encoding", coding)
            .assert_header("vary", "accept-encoding")
            .assert_header("etag", "W/\"v1\"")
            .assert_no_header("content-length");
        assert!(
            res.body().len() < page().len() / 3,
            "{coding}: {} bytes",
            res.body().len()
        );
        assert_eq!(decode(coding, res.body()), page().as_bytes(), "{coding}");
    }
}

#[test]
fn the_client_chooses_by_q_value_and_the_server_breaks_ties() {
    let client = Client::new(Compress::new(html));
    let cases = [
        ("gzip, br", "br"),
        ("gzip;q=1, br;q=0.5", "gzip"),
        ("deflate, zstd", "zstd"),
        ("*", "br"),
        ("*;q=0.5, gzip", "gzip"),
        ("GZIP", "gzip"),
        // A coding named outright is not among those `*` stands for.
        ("br;q=0, *", "zstd"),
        ("br;q=0, zstd;q=0, *;q=0.1, deflate;q=0.2", "deflate"),
        // qvalues to their three digits; the parameter's name in any case.
        ("gzip;q=0.002, br;q=0.001", "gzip"),
        ("br;Q=0.5, gzip", "gzip"),
        ("gzip ; q=1.000", "gzip"),
    ];
    for (accept, want) in cases {
        get(&client, accept).assert_header("content-encoding", want);
    }
    // Refused, none of ours, or an entry whose weight is no qvalue (left
    // out, as nginx leaves it out).
    for accept in [
        "identity",
        "gzip;q=0",
        "gzip;Q=0",
        "gzip;q=0.000",
        "*;q=0",
        "compress",
        "",
        "gzip;q=abc",
        "gzip;q=1.5",
        "gzip;q=.5",
        "br;q=0, gzip;q=0, zstd;q=0, deflate;q=0, *",
    ] {
        get(&client, accept)
            .assert_no_header("content-encoding")
            .assert_header("vary", "accept-encoding")
            .assert_text(&page());
    }
}

#[test]
fn responses_are_left_alone_where_compressing_is_wrong_or_useless() {
    let with = |status: StatusCode, headers: &'static [(&'static str, &'static str)]| {
        move |_req: Request| async move {
            let body = if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
                Body::empty()
            } else {
                Body::from(page())
            };
            let mut res = stackway::Response::new(body);
            *res.status_mut() = status;
            for (name, value) in headers {
                res.headers_mut().insert(*name, value.parse().unwrap());
            }
            res
        }
    };
    // Whether each varies by `Accept-Encoding`: a 304 and a 206 do, as the
    // 200 they stand for would; a response sent as it is whatever the client
    // accepts does not, so caches keep one copy of it.
    let cases: Vec<(&str, bool, stackway::BoxApp)> = vec![
        (
            "204",
            false,
            stackway::BoxApp::new(with(StatusCode::NO_CONTENT, &[])),
        ),
        (
            "304",
            true,
            stackway::BoxApp::new(with(StatusCode::NOT_MODIFIED, &[("etag", "\"v1\"")])),
        ),
        (
            "206",
            true,
            stackway::BoxApp::new(with(
                StatusCode::PARTIAL_CONTENT,
                &[("content-range", "bytes 0-9/100")],
            )),
        ),
        (
            "encoded",
            false,
            stackway::BoxApp::new(with(StatusCode::OK, &[("content-encoding", "br")])),
        ),
        (
            "png",
            false,
            stackway::BoxApp::new(with(StatusCode::OK, &[("content-type", "image/png")])),
        ),
        (
            "zip",
            false,
            stackway::BoxApp::new(with(StatusCode::OK, &[("content-type", "application/zip")])),
        ),
        (
            "grpc",
            false,
            stackway::BoxApp::new(with(
                StatusCode::OK,
                &[("content-type", "application/grpc+proto")],
            )),
        ),
        (
            "no-transform",
            false,
            stackway::BoxApp::new(with(
                StatusCode::OK,
                &[("cache-control", "public, no-transform")],
            )),
        ),
        (
            "small",
            false,
            stackway::BoxApp::new(|_req: Request| async { "tiny".into_response() }),
        ),
    ];
    for (name, varies, app) in cases {
        let client = Client::new(Compress::new(app));
        let res = get(&client, "gzip, br");
        assert_eq!(
            res.header("content-encoding").filter(|_| name != "encoded"),
            None,
            "{name}"
        );
        assert_eq!(
            res.header("vary"),
            varies.then_some("accept-encoding"),
            "{name}"
        );
    }
    // SVG is text, and gRPC-Web's body a browser's: compressed.
    let texts: [&'static [(&str, &str)]; 2] = [
        &[("content-type", "image/svg+xml")],
        &[("content-type", "application/grpc-web-text")],
    ];
    for headers in texts {
        let client = Client::new(Compress::new(with(StatusCode::OK, headers)));
        get(&client, "gzip").assert_header("content-encoding", "gzip");
    }
}

/// A HEAD is told what a GET would be (RFC 9110 §9.3.2), as nginx's gzip
/// tells it: the coding, no length, a weak tag, no byte ranges.
#[test]
fn a_head_gets_the_fields_a_get_would() {
    // An app that answers a HEAD as it should: the GET's fields, no body.
    let app = |req: Request| async move {
        let head = req.method() == http::Method::HEAD;
        let mut res = html(req).await;
        let headers = res.headers_mut();
        headers.insert("accept-ranges", "bytes".parse().unwrap());
        headers.insert("content-length", page().len().into());
        if head {
            *res.body_mut() = Body::empty();
        }
        res
    };
    let client = Client::new(Lint::strict(Compress::new(app)));
    run(async {
        for method in [http::Method::GET, http::Method::HEAD] {
            let res = client
                .request(method.clone(), "/")
                .header("accept-encoding", "gzip")
                .await;
            res.assert_status(200)
                .assert_header("content-encoding", "gzip")
                .assert_header("vary", "accept-encoding")
                .assert_header("etag", "W/\"v1\"")
                .assert_no_header("content-length")
                .assert_no_header("accept-ranges");
            assert_eq!(
                res.body().is_empty(),
                method == http::Method::HEAD,
                "{method}"
            );
        }
        // Not accepted: the fields stay the uncompressed body's.
        let res = client.head("/").await;
        res.assert_no_header("content-encoding")
            .assert_header("content-length", &page().len().to_string())
            .assert_header("etag", "\"v1\"");
    });
}

/// The app's own `Vary` is added to, once, as a list: a name already in it
/// (in any case, or `*`) is not repeated.
#[test]
fn vary_is_added_to_the_apps_own_once() {
    for (own, want) in [
        ("Origin", "Origin, accept-encoding"),
        ("origin, Accept-Encoding", "origin, Accept-Encoding"),
        ("*", "*"),
    ] {
        let app = move |req: Request| async move {
            let mut res = html(req).await;
            res.headers_mut().insert("vary", own.parse().unwrap());
            res
        };
        let res = get(&Client::new(Compress::new(app)), "gzip");
        res.assert_header("content-encoding", "gzip");
        let vary: Vec<&str> = res
            .headers()
            .get_all("vary")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(vary.join(", "), want, "{own}");
    }
}

/// A body's trailers (gRPC-Web's status, a checksum) follow its compressed
/// end.
#[test]
fn trailers_follow_the_compressed_body() {
    use http_body_util::BodyExt;
    use stackway::App;
    let app = |_req: Request| async {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let frames = [
            Ok::<_, std::convert::Infallible>(http_body::Frame::data(bytes::Bytes::from(page()))),
            Ok(http_body::Frame::trailers(trailers)),
        ];
        let mut res = stackway::Response::new(Body::new(http_body_util::StreamBody::new(
            futures_util::stream::iter(frames),
        )));
        res.headers_mut()
            .insert("content-type", "application/grpc-web".parse().unwrap());
        res
    };
    run(async {
        let req = http::Request::builder()
            .uri("/")
            .header("accept-encoding", "gzip")
            .body(Body::empty())
            .unwrap();
        let res = Compress::new(app).call(req).await;
        assert_eq!(res.headers()["content-encoding"], "gzip");
        let collected = BodyExt::collect(res.into_body()).await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
        assert_eq!(decode("gzip", &collected.to_bytes()), page().as_bytes());
    });
}

#[test]
fn chunks_are_compressed_and_sent_as_the_app_sends_them() {
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
    let rx = std::sync::Mutex::new(Some(rx));
    let app = move |_req: Request| {
        let mut rx = rx.lock().unwrap().take().expect("one request");
        async move {
            let chunks = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
                .map(Ok::<_, std::convert::Infallible>);
            let mut res = stackway::Response::new(Body::from_stream(chunks));
            res.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            res
        }
    };
    use futures_util::StreamExt;
    let running = Running::start(server(), Compress::new(app));
    let mut stream = TcpStream::connect(running.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAccept-Encoding: gzip\r\n\r\n",
        )
        .unwrap();
    tx.blocking_send("data: first\n\n".into()).unwrap();
    // The first event arrives, compressed, while the app has not finished.
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") || got.len() < 60 {
        let n = stream.read(&mut buf).expect("the first chunk never came");
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got).to_string();
    assert!(head.contains("content-encoding: gzip"), "{head}");
    tx.blocking_send("data: second\n\n".into()).unwrap();
    drop(tx);
    let _ = stream.read_to_end(&mut got);
    // De-chunk and decode the whole stream.
    let text = got.split(|_| false).next().unwrap();
    let body_at = text.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut rest = &text[body_at..];
    let mut compressed = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap(), 16).unwrap();
        rest = &rest[line_end + 2..];
        if size == 0 {
            break;
        }
        compressed.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
    assert_eq!(
        decode("gzip", &compressed),
        b"data: first\n\ndata: second\n\n"
    );
}

#[test]
fn curl_decodes_what_we_send() {
    if !external::command("curl", "Debian's curl") {
        return;
    }
    let running = Running::start(server(), Compress::new(html));
    let out = std::process::Command::new("curl")
        .args(["-s", "--compressed", "-D", "-"])
        .arg(format!("http://{}/", running.addr))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.to_ascii_lowercase().contains("content-encoding: "),
        "{text:.300}"
    );
    assert!(text.ends_with(&page()), "curl did not decode the body");
}

#[test]
fn pythons_urllib_decodes_every_coding() {
    // Python's own decoders: gzip and zlib from the standard library, brotli
    // and zstandard from Debian's packages (`.ci/run` installs them).
    let packages = "Debian's python3-brotli and python3-zstandard";
    if !external::python_modules(&["brotli", "zstandard"], packages) {
        return;
    }
    let script = r#"
import sys, urllib.request, gzip, zlib, brotli, zstandard
base, expected = sys.argv[1], sys.stdin.read().encode()
decoders = {
    "gzip": gzip.decompress,
    "deflate": zlib.decompress,
    "br": brotli.decompress,
    "zstd": lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b),
}
for coding, decode in decoders.items():
    req = urllib.request.Request(base, headers={"Accept-Encoding": coding})
    with urllib.request.urlopen(req) as res:
        assert res.headers["Content-Encoding"] == coding, res.headers
        assert decode(res.read()) == expected, coding
print("decoded", " ".join(decoders))
"#;
    let running = Running::start(server(), Compress::new(html));
    let mut child = std::process::Command::new(external::SYSTEM_PYTHON)
        .args(["-c", script, &format!("http://{}/", running.addr)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}{err}");
    assert_eq!(said.trim(), "decoded gzip deflate br zstd");
}
