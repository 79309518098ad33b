//! Times each request and says so in a `Server-Timing` header, which browsers
//! show in their network panel, as Werkzeug's `ProfilerMiddleware` times the
//! requests it profiles; inner middleware and handlers add their own entries,
//! and requests slower than a threshold are logged.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use stackway::{Request, testing::Client};
//! use stackway_middleware::Profiler;
//! use stackway_middleware::profiler::Timings;
//!
//! let app = |req: Request| async move {
//!     // A handler reports the part it knows about.
//!     Timings::record(&req, "db", Duration::from_micros(1500), Some("users query"));
//!     "ok"
//! };
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let res = Client::new(Profiler::new(app)).get("/").await;
//! let timing = res.header("server-timing").unwrap();
//! assert!(timing.starts_with(r#"db;dur=1.5;desc="users query", app;dur="#), "{timing}");
//! # });
//! ```
//!
//! `app;dur=` is the time until the response head was ready, in
//! milliseconds. SharedData adds `fs` (the time it spent finding and reading
//! a file) and the proxy adds `upstream` (until the upstream's response head)
//! when they run inside a Profiler. The header says how long things took,
//! which helps an attacker time the server: put the Profiler in development
//! stacks, or behind a proxy that removes `Server-Timing`.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderValue;
use stackway::{App, Request, Response};

/// Adds `Server-Timing` to responses and logs slow requests; see the
/// [module docs](self).
#[doc(alias = "ProfilerMiddleware")]
#[doc(alias = "Server-Timing")]
#[derive(Debug, Clone)]
pub struct Profiler<A> {
    inner: A,
    slow: Option<Duration>,
}

/// The entries of a request's `Server-Timing`, shared by everything that
/// handles the request inside a [`Profiler`].
#[derive(Debug, Clone, Default)]
pub struct Timings(Arc<Mutex<Vec<Entry>>>);

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    duration: Duration,
    description: Option<String>,
}

impl Timings {
    /// Adds an entry to the request's `Server-Timing`, if it runs inside a
    /// [`Profiler`]; otherwise does nothing. `name` is made a valid token.
    pub fn record(req: &Request, name: &str, duration: Duration, description: Option<&str>) {
        if let Some(timings) = req.extensions().get::<Self>() {
            timings.add(name, duration, description);
        }
    }

    /// Adds an entry.
    pub fn add(&self, name: &str, duration: Duration, description: Option<&str>) {
        let name: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(*c))
            .collect();
        let entry = Entry {
            name: if name.is_empty() {
                "step".to_owned()
            } else {
                name
            },
            duration,
            description: description.map(str::to_owned),
        };
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(entry);
    }

    /// `name;dur=1.5;desc="..."` entries, comma-separated (RFC's grammar:
    /// the description a quoted-string, `"` and `\` escaped).
    fn header(&self) -> String {
        let entries = self.0.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .map(|entry| {
                let mut out = format!("{};dur={}", entry.name, millis(entry.duration));
                if let Some(description) = &entry.description {
                    let escaped: String = description
                        .chars()
                        .filter(|c| !c.is_control())
                        .flat_map(|c| match c {
                            '"' | '\\' => vec!['\\', c],
                            c => vec![c],
                        })
                        .collect();
                    out.push_str(&format!(";desc=\"{escaped}\""));
                }
                out
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Milliseconds with up to three decimals, as browsers show them.
fn millis(duration: Duration) -> String {
    let ms = duration.as_secs_f64() * 1000.0;
    let text = format!("{ms:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

impl<A> Profiler<A> {
    /// Times requests to `inner`.
    pub fn new(inner: A) -> Self {
        Self { inner, slow: None }
    }

    /// Logs requests whose response head takes longer than `threshold`
    /// (a `tracing` warning, target `stackway::profiler`, with the timings).
    pub fn slow(mut self, threshold: Duration) -> Self {
        self.slow = Some(threshold);
        self
    }

    inner_accessors!();
}

impl<A: App> App for Profiler<A> {
    async fn call(&self, mut req: Request) -> Response {
        let timings = Timings::default();
        req.extensions_mut().insert(timings.clone());
        let line = self.slow.map(|_| format!("{} {}", req.method(), req.uri()));
        let started = Instant::now();
        let mut res = self.inner.call(req).await;
        let took = started.elapsed();
        timings.add("app", took, None);
        let header = timings.header();
        if let (Some(threshold), Some(line)) = (self.slow, line) {
            if took > threshold {
                tracing::warn!(target: "stackway::profiler", request = %line, timings = %header, "slow request: {}ms", millis(took));
            }
        }
        if let Ok(value) = HeaderValue::try_from(header) {
            res.headers_mut().append("server-timing", value);
        }
        res
    }
}

impl fmt::Display for Timings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.header())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_follow_the_server_timing_grammar() {
        let timings = Timings::default();
        timings.add("db", Duration::from_micros(1500), Some(r#"say "hi" \ bye"#));
        timings.add("a b/c", Duration::from_millis(2), None);
        timings.add("", Duration::from_nanos(1), Some("line\nbreak"));
        assert_eq!(
            timings.header(),
            r#"db;dur=1.5;desc="say \"hi\" \\ bye", abc;dur=2, step;dur=0;desc="linebreak""#
        );
        assert_eq!(millis(Duration::from_secs(1)), "1000");
        assert_eq!(millis(Duration::from_micros(12_345)), "12.345");
    }
}
