//! `stackway serve --otlp-endpoint`: with the `otel` feature, a request's
//! span reaches a collector (a small OTLP/HTTP receiver here, decoding the
//! protobuf as a collector does) by the time the server has stopped; without
//! it, the flag is refused with the way to get it.

mod support;

use support::stackway;

#[cfg(feature = "otel")]
#[test]
fn a_requests_span_reaches_the_collector_by_shutdown() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::mpsc;

    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;

    // The collector: each POST's body, decoded, down a channel.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let collector = listener.local_addr().unwrap();
    let (exported, received) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let exported = exported.clone();
            std::thread::spawn(move || {
                let mut conn = BufReader::new(conn.unwrap());
                loop {
                    let mut length = 0;
                    let mut line = String::new();
                    while conn.read_line(&mut line).unwrap_or(0) > 2 {
                        if let Some((name, value)) = line.trim_end().split_once(": ") {
                            if name.eq_ignore_ascii_case("content-length") {
                                length = value.parse().unwrap();
                            }
                        }
                        line.clear();
                    }
                    if line.is_empty() {
                        return;
                    }
                    let mut body = vec![0; length];
                    conn.read_exact(&mut body).unwrap();
                    let _ = exported.send(ExportTraceServiceRequest::decode(&body[..]).unwrap());
                    let _ = conn
                        .get_mut()
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
                }
            });
        }
    });

    let endpoint = format!("http://{collector}");
    let mut command = stackway(&[
        "--bind",
        "127.0.0.1:0",
        "--mount",
        "/=hello",
        "--otlp-endpoint",
        &endpoint,
    ]);
    command.env("OTEL_SERVICE_NAME", "edge");
    let server = support::Server::start(command, 1);
    let mut conn = std::net::TcpStream::connect(server.tcp(0)).unwrap();
    conn.write_all(
        b"GET /you HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
          traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    server.signal("-TERM");
    let (code, err) = server.finish();
    assert_eq!(code, 0, "{err}");

    let export = received
        .recv_timeout(std::time::Duration::from_secs(5))
        .expect("spans exported by shutdown");
    let resource = &export.resource_spans[0];
    let service = resource
        .resource
        .as_ref()
        .unwrap()
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name");
    assert_eq!(
        format!("{:?}", service.unwrap().value.as_ref().unwrap().value),
        r#"Some(StringValue("edge"))"#
    );
    let span = &resource.scope_spans[0].spans[0];
    assert_eq!(span.name, "GET");
    assert_eq!(
        span.trace_id,
        0x4bf92f3577b34da6a3ce929d0e0e4736u128.to_be_bytes()
    );
    assert_eq!(span.parent_span_id, 0x00f067aa0ba902b7u64.to_be_bytes());
}

#[cfg(not(feature = "otel"))]
#[test]
fn without_the_feature_the_flag_is_refused_with_the_way_to_get_it() {
    let out = stackway(&["--otlp-endpoint", "http://127.0.0.1:4318", "--check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--features otel"), "{err}");
}

#[cfg(feature = "otel")]
#[test]
fn an_endpoint_that_is_not_a_url_is_refused() {
    let out = stackway(&["--otlp-endpoint", "collector:4318", "--check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--otlp-endpoint") && err.contains("URL"),
        "{err}"
    );
}
