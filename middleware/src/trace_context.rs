//! W3C Trace Context: each request's `traceparent` is read (or a trace is
//! started when it is missing or malformed), the request runs in a `tracing`
//! span carrying the trace and span ids, and the proxy mount passes the
//! context on to its upstream, this server's span as the parent.
//!
//! ```text
//! traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
//!                 └ trace id (kept)                └ parent (the caller's span)
//! upstream gets: 00-4bf92f3577b34da6a3ce929d0e0e4736-<this server's span>-01
//! ```
//!
//! With the `otel` feature, `otel::Otlp` exports these
//! spans to an OpenTelemetry collector; the request's span is then an
//! OpenTelemetry span with the caller's as its remote parent.
//!
//! # Example
//!
//! ```
//! use stackway::{IntoResponse, Request, testing::Client};
//! use stackway_middleware::TraceContext;
//! use stackway_middleware::trace_context::Trace;
//!
//! let app = TraceContext::new(|req: Request| async move {
//!     let trace = Trace::of(&req).unwrap();
//!     format!("{:032x}", trace.trace_id).into_response()
//! });
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! Client::new(app)
//!     .get("/")
//!     .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
//!     .await
//!     .assert_text("4bf92f3577b34da6a3ce929d0e0e4736");
//! # });
//! ```

use stackway::{App, Request, Response};
use tracing::Instrument as _;

/// Reads or starts a trace for each request; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct TraceContext<A> {
    inner: A,
}

impl<A> TraceContext<A> {
    /// Wraps `inner`.
    pub fn new(inner: A) -> Self {
        Self { inner }
    }

    inner_accessors!();
}

/// A request's place in a trace, in its extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trace {
    /// The trace, from the caller or new.
    pub trace_id: u128,
    /// This server's span for the request.
    pub span_id: u64,
    /// The caller's span, when the request came with a valid `traceparent`.
    pub parent_id: Option<u64>,
    /// The caller's trace flags (bit 0: sampled); `01` for a new trace.
    pub flags: u8,
}

impl Trace {
    /// The trace of a request inside a [`TraceContext`].
    pub fn of(req: &Request) -> Option<&Self> {
        req.extensions().get()
    }

    /// `traceparent` for a call this server makes: this server's span is
    /// the parent.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }

    /// A valid `traceparent` (version 00, or a later one read as 00
    /// prescribes), or `None`.
    pub fn parse(value: &str) -> Option<(u128, u64, u8)> {
        let hex = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let mut parts = value.splitn(5, '-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let rest = parts.next();
        let ok = version.len() == 2
            && hex(version)
            && version != "ff"
            && (version != "00" || rest.is_none())
            && trace.len() == 32
            && parent.len() == 16
            && flags.len() == 2
            && hex(trace)
            && hex(parent)
            && hex(flags);
        let trace = u128::from_str_radix(trace, 16).ok().filter(|_| ok)?;
        let parent = u64::from_str_radix(parent, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace != 0 && parent != 0).then_some((trace, parent, flags))
    }
}

impl<A: App> App for TraceContext<A> {
    async fn call(&self, mut req: Request) -> Response {
        let incoming = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(Trace::parse);
        let span_id = fastrand::u64(1..);
        #[cfg_attr(not(feature = "otel"), allow(unused_mut))]
        let mut trace = match incoming {
            Some((trace_id, parent, flags)) => Trace {
                trace_id,
                span_id,
                parent_id: Some(parent),
                flags,
            },
            None => Trace {
                trace_id: fastrand::u128(1..),
                span_id,
                parent_id: None,
                flags: 1,
            },
        };
        use tracing::field::Empty;
        #[cfg(not(feature = "otel"))]
        let span = tracing::info_span!("request", trace_id = Empty, span_id = Empty);
        #[cfg(feature = "otel")]
        let span = {
            let method = req.method().as_str();
            let span = tracing::info_span!(
                "request",
                trace_id = Empty,
                span_id = Empty,
                otel.kind = "server",
                otel.name = method,
                http.request.method = method,
                url.path = req.uri().path(),
            );
            adopt(&span, &mut trace);
            span
        };
        span.record(
            "trace_id",
            tracing::field::display(format_args!("{:032x}", trace.trace_id)),
        );
        span.record(
            "span_id",
            tracing::field::display(format_args!("{:016x}", trace.span_id)),
        );
        req.extensions_mut().insert(trace);
        self.inner.call(req).instrument(span).await
    }
}

/// Makes `span` the OpenTelemetry span of `trace`'s request, when the
/// subscriber has the layer: the caller's span is its remote parent, and
/// the ids the span was given become the trace's.
#[cfg(feature = "otel")]
fn adopt(span: &tracing::Span, trace: &mut Trace) {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    if let Some(parent) = trace.parent_id {
        let remote = SpanContext::new(
            TraceId::from_bytes(trace.trace_id.to_be_bytes()),
            SpanId::from_bytes(parent.to_be_bytes()),
            TraceFlags::new(trace.flags),
            true,
            TraceState::default(),
        );
        let parent = opentelemetry::Context::new().with_remote_span_context(remote);
        if span.set_parent(parent).is_err() {
            // No layer in the subscriber, or the span is disabled: ours stand.
            return;
        }
    }
    let context = span.context();
    let ids = context.span().span_context().clone();
    if ids.is_valid() {
        trace.trace_id = u128::from_be_bytes(ids.trace_id().to_bytes());
        trace.span_id = u64::from_be_bytes(ids.span_id().to_bytes());
        trace.flags = ids.trace_flags().to_u8();
    }
}

#[cfg(test)]
mod tests {
    use super::Trace;

    #[test]
    fn traceparent_is_read_as_the_recommendation_says() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            Trace::parse(ok),
            Some((0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7, 1))
        );
        // A later version may carry more fields; version 00 may not.
        assert!(Trace::parse(&format!("01{}-extra", &ok[2..])).is_some());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(Trace::parse(bad), None, "{bad}");
        }
    }
}
