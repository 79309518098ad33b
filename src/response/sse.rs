//! Server-sent events (`text/event-stream`).

use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::header::{CACHE_CONTROL, HeaderValue};

use super::{EVENT_STREAM, with_type};
use crate::{Body, Response};

/// One server-sent event; see [`sse`].
#[derive(Debug, Clone, Default)]
pub struct Event {
    event: Option<String>,
    id: Option<String>,
    retry: Option<Duration>,
    data: String,
}

impl Event {
    /// An event carrying `data` (several lines become several `data:` lines).
    pub fn data(data: impl Into<String>) -> Self {
        Self {
            data: data.into(),
            ..Self::default()
        }
    }

    /// The event's type (`event:`); line breaks are removed.
    pub fn event(mut self, name: &str) -> Self {
        self.event = Some(name.replace(['\r', '\n'], ""));
        self
    }

    /// The event's id (`id:`), which the client sends back as `Last-Event-ID`.
    pub fn id(mut self, id: &str) -> Self {
        self.id = Some(id.replace(['\r', '\n', '\0'], ""));
        self
    }

    /// How long the client waits before reconnecting (`retry:`).
    pub fn retry(mut self, after: Duration) -> Self {
        self.retry = Some(after);
        self
    }

    fn encode(&self) -> Bytes {
        let mut out = String::with_capacity(self.data.len() + 16);
        if let Some(event) = &self.event {
            out.push_str(&format!("event: {event}\n"));
        }
        if let Some(id) = &self.id {
            out.push_str(&format!("id: {id}\n"));
        }
        if let Some(retry) = self.retry {
            out.push_str(&format!("retry: {}\n", retry.as_millis()));
        }
        for line in self.data.split('\n') {
            out.push_str("data: ");
            out.push_str(line.strip_suffix('\r').unwrap_or(line));
            out.push('\n');
        }
        out.push('\n');
        Bytes::from(out)
    }
}

/// A `text/event-stream` response (server-sent events) from a stream of
/// events, each sent as soon as it comes; when none has come for
/// `keep_alive`, a comment line is sent so that proxies and the client keep
/// the connection open.
pub fn sse<S>(events: S, keep_alive: Duration) -> Response
where
    S: Stream<Item = Event> + Send + 'static,
{
    let events = Box::pin(events.map(|event| event.encode()));
    let chunks = futures_util::stream::unfold(events, move |mut events| async move {
        match tokio::time::timeout(keep_alive, events.next()).await {
            Ok(Some(chunk)) => Some((Ok::<_, std::convert::Infallible>(chunk), events)),
            Ok(None) => None,
            Err(_idle) => Some((Ok(Bytes::from_static(b": keep-alive\n\n")), events)),
        }
    });
    let mut res = with_type(Body::from_stream(chunks), EVENT_STREAM);
    res.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}
