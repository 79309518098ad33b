//! OpenTelemetry export (the `otel` feature): the span [`TraceContext`]
//! opens for each request, and the `tracing` spans inside it, sent to a
//! collector over OTLP/HTTP in protobuf, as the OpenTelemetry Collector,
//! Jaeger and Tempo receive them on port 4318.
//!
//! With [`Otlp::layer`] in the subscriber, a request's span *is* an
//! OpenTelemetry span: an incoming `traceparent` is its remote parent, and
//! its ids are the ones [`Trace`] carries and the proxy mount passes on, so
//! the upstream's spans hang under this server's in the collector.
//!
//! ```no_run
//! use stackway_middleware::otel::Otlp;
//! use tracing_subscriber::layer::SubscriberExt as _;
//!
//! let otlp = Otlp::new("http://127.0.0.1:4318", "my-service").unwrap();
//! let subscriber = tracing_subscriber::registry().with(otlp.layer());
//! tracing::subscriber::set_global_default(subscriber).unwrap();
//! // ... serve a stack with TraceContext in it, then:
//! otlp.shutdown().unwrap();
//! ```
//!
//! [`TraceContext`]: crate::TraceContext

use std::fmt;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// Sends spans to an OTLP/HTTP collector, batched on a thread of its own.
#[derive(Debug)]
pub struct Otlp {
    provider: SdkTracerProvider,
}

/// The exporter could not be built, or not flushed at shutdown.
#[derive(Debug)]
pub struct OtlpError(String);

impl fmt::Display for OtlpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OTLP export: {}", self.0)
    }
}

impl std::error::Error for OtlpError {}

impl Otlp {
    /// Exports to `endpoint`, the collector's base URL
    /// (`http://collector:4318`, to which `/v1/traces` is added) or the
    /// full traces URL; `service` is the `service.name` of every span.
    pub fn new(endpoint: &str, service: &str) -> Result<Self, OtlpError> {
        let url: http::Uri = endpoint
            .parse()
            .map_err(|e| OtlpError(format!("{endpoint:?} is not a URL: {e}")))?;
        if !matches!(url.scheme_str(), Some("http" | "https")) || url.host().is_none() {
            return Err(OtlpError(format!(
                "{endpoint:?} is not an http:// or https:// URL"
            )));
        }
        let endpoint = match url.path() {
            "" | "/" => format!("{}/v1/traces", endpoint.trim_end_matches('/')),
            _ => endpoint.to_owned(),
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| OtlpError(e.to_string()))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                Resource::builder()
                    .with_service_name(service.to_owned())
                    .build(),
            )
            .build();
        Ok(Self { provider })
    }

    /// The layer that makes `tracing` spans OpenTelemetry spans, for the
    /// subscriber.
    pub fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let tracer = self.provider.tracer("stackway");
        tracing_opentelemetry::layer().with_tracer(tracer)
    }

    /// Sends the spans still batched and stops the exporter's thread.
    pub fn shutdown(self) -> Result<(), OtlpError> {
        self.provider
            .shutdown()
            .map_err(|e| OtlpError(e.to_string()))
    }
}
