//! W3C Trace Context through the proxy mount: an upstream on a real socket
//! sees the caller's trace with this server's span as its parent.

use stackway_test_support as support;

use stackway::testing::Client;
use stackway::{IntoResponse, Request};
use stackway_middleware::trace_context::Trace;
use stackway_middleware::{Dispatcher, Lint, Proxy, TraceContext};
use support::Running;

const INCOMING: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn the_proxy_passes_the_trace_on_with_this_servers_span_as_parent() {
    // The upstream answers with the traceparent it was sent.
    let echo = |req: Request| async move {
        let got = req
            .headers()
            .get("traceparent")
            .map(|v| v.to_str().unwrap().to_owned());
        got.unwrap_or_default().into_response()
    };
    let upstream = Running::start(support::server(), echo);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let spy = {
        let seen = seen.clone();
        move |req: Request| {
            *seen.lock().unwrap() = Trace::of(&req).copied();
            async { "spied".into_response() }
        }
    };
    let app = TraceContext::new(Lint::strict(
        Dispatcher::new(spy).mount("/api", Proxy::to(&format!("http://{}", upstream.addr))),
    ));
    let client = Client::new(app);

    let sent = client
        .get("/api/x")
        .header("traceparent", INCOMING)
        .await
        .text();
    let (trace, parent, flags) =
        Trace::parse(&sent).unwrap_or_else(|| panic!("upstream got {sent:?}"));
    assert_eq!(
        trace, 0x4bf92f3577b34da6a3ce929d0e0e4736,
        "the trace is kept"
    );
    assert_ne!(
        parent, 0x00f067aa0ba902b7,
        "the upstream's parent is this server's span"
    );
    assert_eq!(flags, 1);

    // The app sees the same context: the caller as parent, its own span.
    client
        .get("/")
        .header("traceparent", INCOMING)
        .await
        .assert_text("spied");
    let trace = seen.lock().unwrap().take().unwrap();
    assert_eq!(trace.parent_id, Some(0x00f067aa0ba902b7));
    assert_eq!(trace.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);

    // Missing or malformed: a new trace, sampled, with no parent.
    for header in [None, Some("00-zz-00f067aa0ba902b7-01")] {
        let mut req = client.get("/");
        if let Some(value) = header {
            req = req.header("traceparent", value);
        }
        req.await.assert_text("spied");
        let trace = seen.lock().unwrap().take().unwrap();
        assert_eq!((trace.parent_id, trace.flags), (None, 1));
        assert_ne!(trace.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert!(Trace::parse(&trace.traceparent()).is_some());
    }
    // Without TraceContext, the proxy passes the header as it came.
    let plain = Client::new(Proxy::to(&format!("http://{}", upstream.addr)));
    plain
        .get("/")
        .header("traceparent", INCOMING)
        .await
        .assert_text(INCOMING);
    upstream.stop().unwrap();
}
