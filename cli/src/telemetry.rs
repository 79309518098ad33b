//! The log subscriber, and the OpenTelemetry export beside it when
//! `--otlp-endpoint` is given (the `otel` feature).

use tracing::Level;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer, Registry};

#[cfg(feature = "otel")]
pub(crate) use stackway_middleware::otel::Otlp;

/// No exporter can exist in a build without the `otel` feature.
#[cfg(not(feature = "otel"))]
pub(crate) enum Otlp {}

#[cfg(not(feature = "otel"))]
impl Otlp {
    pub(crate) fn shutdown(self) -> Result<(), String> {
        match self {}
    }
}

/// The exporter `--otlp-endpoint URL` asks for.
pub(crate) fn exporter(endpoint: &str) -> Result<Otlp, String> {
    #[cfg(feature = "otel")]
    {
        let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "stackway".into());
        Otlp::new(endpoint, &service).map_err(|e| e.to_string())
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = endpoint;
        Err("this stackway was built without OpenTelemetry export: \
             build it with `cargo build -p stackway-cli --features otel`"
            .into())
    }
}

/// Logs to stderr at `level` as text or JSON lines, and exports spans (at
/// any log level) when there is an exporter.
pub(crate) fn init(format: &str, level: Level, otlp: Option<&Otlp>) {
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match format {
        "json" => logs
            .json()
            .with_filter(LevelFilter::from_level(level))
            .boxed(),
        _ => logs.with_filter(LevelFilter::from_level(level)).boxed(),
    };
    #[cfg(feature = "otel")]
    let spans = otlp.map(|otlp| otlp.layer().with_filter(LevelFilter::INFO));
    #[cfg(not(feature = "otel"))]
    let spans = otlp.map(|otlp| -> LevelFilter { match *otlp {} });
    tracing_subscriber::registry().with(logs).with(spans).init();
}
