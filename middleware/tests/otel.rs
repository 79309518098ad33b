//! OpenTelemetry export (the `otel` feature) over real sockets: a request
//! through TraceContext and the proxy mount is exported to a collector as
//! OTLP/HTTP protobuf, decoded here as a collector decodes it; the span's
//! parent is the caller's, and its id is the parent the upstream was sent.

use stackway_test_support as support;

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind};
use prost::Message as _;
use stackway::{IntoResponse, Request};
use stackway_middleware::otel::Otlp;
use stackway_middleware::trace_context::Trace;
use stackway_middleware::{Dispatcher, Lint, Proxy, TraceContext};
use support::Running;
use support::http::Conn;
use tracing_subscriber::layer::SubscriberExt as _;

const INCOMING: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A collector: keeps each export request's body.
fn collector(got: Arc<Mutex<Vec<ExportTraceServiceRequest>>>) -> impl stackway::App {
    move |req: Request| {
        let got = got.clone();
        async move {
            assert_eq!(req.uri().path(), "/v1/traces");
            assert_eq!(
                req.headers()["content-type"],
                "application/x-protobuf",
                "OTLP/HTTP in protobuf"
            );
            let body = req.into_body().collect(16 << 20).await.unwrap();
            got.lock()
                .unwrap()
                .push(ExportTraceServiceRequest::decode(body).unwrap());
            http::StatusCode::OK.into_response()
        }
    }
}

#[test]
fn a_request_is_exported_as_a_server_span_under_the_callers() {
    let exported = Arc::new(Mutex::new(Vec::new()));
    let collector = Running::start(support::server(), collector(exported.clone()));
    let otlp = Otlp::new(&format!("http://{}", collector.addr), "stackway-test").unwrap();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(otlp.layer()))
        .unwrap();

    let echo = |req: Request| async move {
        let sent = req.headers().get("traceparent").cloned();
        sent.map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let upstream = Running::start(support::server(), echo);
    let app = TraceContext::new(Lint::strict(
        Dispatcher::default().mount("/api", Proxy::to(&format!("http://{}", upstream.addr))),
    ));
    let running = Running::start(support::server(), app);
    let mut conn = Conn::open(running.addr);
    conn.send(
        format!("GET /api/x HTTP/1.1\r\nHost: x\r\ntraceparent: {INCOMING}\r\n\r\n").as_bytes(),
    );
    let continued = Trace::parse(&conn.read_response().text()).expect("a traceparent upstream");
    let started = Trace::parse(&conn.get("/api/y").text()).expect("a traceparent upstream");
    drop(conn);
    running.stop().unwrap();
    otlp.shutdown().unwrap();

    let exported = exported.lock().unwrap();
    let resource = &exported[0].resource_spans[0].resource.as_ref().unwrap();
    let service = resource
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| kv.value.as_ref()?.value.as_ref());
    assert_eq!(service, Some(&Value::StringValue("stackway-test".into())));
    let spans: Vec<&Span> = exported
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .collect();
    let server_span = |path: &str| {
        *spans
            .iter()
            .find(|s| {
                s.attributes.iter().any(|kv| {
                    kv.key == "url.path"
                        && kv.value.as_ref().and_then(|v| v.value.as_ref())
                            == Some(&Value::StringValue(path.into()))
                })
            })
            .unwrap_or_else(|| panic!("no span for {path} in {spans:#?}"))
    };

    // Continued: the caller's trace, the caller's span as parent, and the
    // span's own id is the parent the upstream was sent.
    let span = server_span("/api/x");
    assert_eq!(span.name, "GET");
    assert_eq!(span.kind, SpanKind::Server as i32);
    assert_eq!(
        span.trace_id,
        0x4bf92f3577b34da6a3ce929d0e0e4736u128.to_be_bytes()
    );
    assert_eq!(span.parent_span_id, 0x00f067aa0ba902b7u64.to_be_bytes());
    assert_eq!(continued.0, 0x4bf92f3577b34da6a3ce929d0e0e4736);
    assert_eq!(span.span_id, continued.1.to_be_bytes());
    assert!(span.end_time_unix_nano >= span.start_time_unix_nano);

    // Started here: a root span whose trace and id the upstream was sent.
    let span = server_span("/api/y");
    assert!(span.parent_span_id.is_empty(), "{span:?}");
    assert_eq!(span.trace_id, started.0.to_be_bytes());
    assert_eq!(span.span_id, started.1.to_be_bytes());

    upstream.stop().unwrap();
    collector.stop().unwrap();
}

#[test]
fn an_endpoint_that_is_not_a_url_is_refused() {
    for bad in ["", "collector:4318", "ftp://collector", "http://"] {
        let e = Otlp::new(bad, "x").unwrap_err();
        assert!(e.to_string().contains("URL"), "{bad}: {e}");
    }
}
