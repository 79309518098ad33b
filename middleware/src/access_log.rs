//! Logs one line per request in the Common or Combined Log Format, as Apache
//! and nginx do, or as JSON; through `tracing` (target `stackway::access`)
//! unless given a sink.
//!
//! # Example
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use stackway::testing::Client;
//! use stackway_middleware::AccessLog;
//!
//! let lines = Arc::new(Mutex::new(Vec::new()));
//! let sink = lines.clone();
//! let app = AccessLog::new(stackway::apps::hello).sink(move |line: &str| sink.lock().unwrap().push(line.to_owned()));
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! Client::new(app).get("/you?x=1").await.assert_status(200);
//! # });
//! let line = lines.lock().unwrap().pop().unwrap();
//! assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
//! assert!(line.ends_with(r#"] "GET /you?x=1 HTTP/1.1" 200 20"#), "{line}");
//! ```
//!
//! The line is written when the response body has been sent (or the client
//! went away), so the byte count is what was really sent:
//!
//! ```text
//! 127.0.0.1 - - [21/Nov/2026:10:04:59 +0000] "GET /you?x=1 HTTP/1.1" 200 20
//! %h        %l %u %t                          "%r"                    %>s %b
//! ```
//!
//! `%u` is the user a Basic `Authorization` names (checked or not, as nginx's
//! `$remote_user` and Apache's `%u`), `-` without one.
//!
//! The request line is the original request target, whatever SCRIPT_NAME the
//! request later gained; `%b` is `-` when no body bytes were sent. The
//! [Combined](LogFormat::Combined) format adds `"%{Referer}i" "%{User-agent}i"`;
//! [JSON](LogFormat::Json) gives the same fields as one object.

use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::task::Poll;

use stackway::environ::ip_text;
use stackway::{App, Request, RequestExt, Response};
use time::OffsetDateTime;
use time::macros::format_description;

type Sink = Arc<dyn Fn(&str) + Send + Sync>;

/// Logs each request; see the [module docs](self).
#[doc(alias = "logger")]
pub struct AccessLog<A> {
    inner: A,
    sink: Sink,
    format: LogFormat,
}

/// How [`AccessLog`] writes a line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `host - - [time] "request" status bytes`. The default.
    #[default]
    Common,
    /// Common, then `"referer" "user-agent"`.
    Combined,
    /// One JSON object: `remote`, `user`, `time`, `request`, `status`, `bytes`,
    /// `referer`, `user_agent`, and `request_id` when
    /// [`RequestIds`](crate::RequestIds) runs around the log.
    Json,
}

impl<A> AccessLog<A> {
    /// Logs requests to `inner` through `tracing` (target `stackway::access`,
    /// level INFO), in the Common Log Format.
    pub fn new(inner: A) -> Self {
        Self {
            inner,
            sink: Arc::new(|line: &str| tracing::info!(target: "stackway::access", "{line}")),
            format: LogFormat::Common,
        }
    }

    /// Writes lines in `format`.
    pub fn format(mut self, format: LogFormat) -> Self {
        self.format = format;
        self
    }

    /// Sends each line to `sink` instead of `tracing`.
    pub fn sink(mut self, sink: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.sink = Arc::new(sink);
        self
    }

    inner_accessors!();
}

impl<A: App> App for AccessLog<A> {
    async fn call(&self, req: Request) -> Response {
        let time = OffsetDateTime::now_utc();
        let host = req
            .environ()
            .remote_addr()
            .map_or_else(|| "-".to_owned(), |a| ip_text(a.ip()));
        let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let request_line = format!("{} {target} {:?}", req.method(), req.version());
        // A field's bytes as they came (UTF-8 in a User-Agent too), escaped
        // when written.
        let header = |name| {
            (req.headers().get(name)).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let user = basic_user(&req);
        let request_id = req
            .extensions()
            .get::<crate::request_id::RequestId>()
            .map(ToString::to_string);
        let (referer, user_agent) = match self.format {
            LogFormat::Common => (None, None),
            _ => (
                header(http::header::REFERER),
                header(http::header::USER_AGENT),
            ),
        };
        let res = self.inner.call(req).await;
        let mut pending = Pending {
            host,
            user,
            time,
            request_line,
            referer,
            user_agent,
            request_id,
            format: self.format,
            status: res.status().as_u16(),
            sent: 0,
            sink: self.sink.clone(),
        };
        // Watched, not wrapped: a file body stays one the server may send with sendfile.
        res.map(|body| body.inspect(move |polled| pending.count(polled)))
    }
}

impl<A: fmt::Debug> fmt::Debug for AccessLog<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessLog")
            .field("inner", &self.inner)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// The user of `Authorization: Basic …`, whatever the password: `%u`, as
/// nginx's `$remote_user` and Apache's log it (on a 401 too).
fn basic_user(req: &Request) -> Option<String> {
    use base64::Engine as _;
    let value = req
        .headers()
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let user = &decoded[..decoded.iter().position(|&b| b == b':')?];
    Some(String::from_utf8_lossy(user).into_owned()).filter(|user| !user.is_empty())
}

/// `text` as a log line's field: `"` and `\\` behind a backslash, as
/// Apache's log escapes them, and every other byte that is not printable
/// ASCII (a control character, UTF-8's) as `\xHH`, as Apache and nginx write
/// them.
fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(byte));
            }
            b' '..=b'~' => out.push(char::from(byte)),
            _ => {
                let _ = write!(out, "\\x{byte:02x}");
            }
        }
    }
    out
}

/// A log line waiting for its byte count; written when dropped.
struct Pending {
    host: String,
    /// The user a Basic `Authorization` names, checked or not.
    user: Option<String>,
    time: OffsetDateTime,
    request_line: String,
    referer: Option<String>,
    user_agent: Option<String>,
    /// Set by [`RequestIds`](crate::RequestIds) around this log.
    request_id: Option<String>,
    format: LogFormat,
    status: u16,
    sent: u64,
    sink: Sink,
}

impl Pending {
    /// Counts the bytes of each frame the response body yields.
    fn count(
        &mut self,
        polled: &Poll<Option<Result<http_body::Frame<bytes::Bytes>, stackway::Error>>>,
    ) {
        if let Poll::Ready(Some(Ok(frame))) = polled {
            self.sent += frame.data_ref().map_or(0, |d| d.len() as u64);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let format =
            format_description!("[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000");
        let time = self.time.format(format).unwrap_or_else(|_| "-".to_owned());
        let sent = match self.sent {
            0 => "-".to_owned(),
            n => n.to_string(),
        };
        // Escaped as Apache and nginx escape them, so a hostile target cannot
        // forge a second log line or break the quoting.
        let request_line = escaped(&self.request_line);
        let user = self.user.as_deref().map_or("-".to_owned(), escaped);
        let line = match self.format {
            LogFormat::Common => format!(
                "{} - {user} [{time}] \"{request_line}\" {} {sent}",
                self.host, self.status
            ),
            LogFormat::Combined => {
                let quoted = |v: &Option<String>| v.as_deref().map_or("-".to_owned(), escaped);
                format!(
                    "{} - {user} [{time}] \"{request_line}\" {} {sent} \"{}\" \"{}\"",
                    self.host,
                    self.status,
                    quoted(&self.referer),
                    quoted(&self.user_agent)
                )
            }
            LogFormat::Json => serde_json::json!({
                "remote": self.host,
                "user": self.user,
                "time": time,
                "request": self.request_line,
                "status": self.status,
                "bytes": self.sent,
                "referer": self.referer,
                "user_agent": self.user_agent,
                "request_id": self.request_id,
            })
            .to_string(),
        };
        (self.sink)(&line);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use stackway::testing::Client;

    use super::*;

    fn logged(format: LogFormat) -> String {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let app = AccessLog::new(stackway::apps::hello)
            .format(format)
            .sink(move |line: &str| sink.lock().unwrap().push(line.to_owned()));
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            Client::new(app)
                .get("/a?b=1")
                .header("referer", "https://example.com/\"x\"")
                .header("user-agent", "curl/8")
                .await
                .assert_status(200);
        });
        lines.lock().unwrap().pop().unwrap()
    }

    #[test]
    fn combined_adds_referer_and_user_agent_escaped() {
        let line = logged(LogFormat::Combined);
        assert!(
            line.ends_with(r#""GET /a?b=1 HTTP/1.1" 200 18 "https://example.com/\"x\"" "curl/8""#),
            "{line}"
        );
    }

    #[test]
    fn the_user_is_the_one_a_basic_authorization_names() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let app = AccessLog::new(stackway::apps::hello)
            .sink(move |line: &str| sink.lock().unwrap().push(line.to_owned()));
        let client = Client::new(app);
        // alice:secret, "a\nb":x (a line break escaped), Bearer, an empty user.
        for authorization in [
            "Basic YWxpY2U6c2VjcmV0",
            "Basic YQpiOng=",
            "Bearer t",
            "Basic OnB3",
        ] {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                client.get("/").header("authorization", authorization).await;
            });
        }
        let lines = lines.lock().unwrap();
        let users: Vec<&str> = lines.iter().map(|l| l.split(' ').nth(2).unwrap()).collect();
        assert_eq!(users, ["alice", "a\\x0ab", "-", "-"], "{lines:?}");
    }

    #[test]
    fn fields_are_escaped_as_apache_and_nginx_escape_them() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let app = AccessLog::new(stackway::apps::hello)
            .format(LogFormat::Combined)
            .sink(move |line: &str| sink.lock().unwrap().push(line.to_owned()));
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            Client::new(app)
                .get("/")
                .header("user-agent", "Bob's \\ \"browser\" caf\u{e9}")
                .await;
        });
        let line = lines.lock().unwrap().pop().unwrap();
        assert!(
            line.ends_with(r#""-" "Bob's \\ \"browser\" caf\xc3\xa9""#),
            "{line}"
        );
    }

    #[test]
    fn json_names_the_request_id_when_one_was_given() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let app = crate::RequestIds::new(
            AccessLog::new(stackway::apps::hello)
                .format(LogFormat::Json)
                .sink(move |line: &str| sink.lock().unwrap().push(line.to_owned())),
        );
        let res = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(async { Client::new(app).get("/").await });
        let line = lines.lock().unwrap().pop().unwrap();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["request_id"], res.header("x-request-id").unwrap());
    }

    #[test]
    fn json_is_one_object_with_every_field() {
        let line = logged(LogFormat::Json);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["request"], "GET /a?b=1 HTTP/1.1");
        assert_eq!(value["status"], 200);
        assert_eq!(value["bytes"], 18);
        assert_eq!(value["remote"], "127.0.0.1");
        assert_eq!(value["referer"], "https://example.com/\"x\"");
        assert_eq!(value["user_agent"], "curl/8");
        assert!(value["request_id"].is_null());
        assert!(!line.contains('\n'));
    }
}
