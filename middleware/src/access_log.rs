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

use http::header::{AUTHORIZATION, REFERER, USER_AGENT};
use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Version};
use stackway::app::BoxFuture;
use stackway::environ::{Packet, ip_text};
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
        let field = |name| req.headers().get(name).map(HeaderValue::as_bytes);
        let asked = self.asked(
            (req.environ().remote_addr()).map_or_else(|| "-".to_owned(), |a| ip_text(a.ip())),
            request_line(req.method(), req.uri().path_and_query(), req.version()),
            (req.extensions().get::<crate::request_id::RequestId>()).map(ToString::to_string),
            [AUTHORIZATION, REFERER, USER_AGENT].map(field),
        );
        let res = self.inner.call(req).await;
        self.logged(asked, res)
    }

    /// A uwsgi packet the app behind takes is logged as the request made of
    /// it would be: the same line.
    fn call_packet(&self, packet: Box<Packet>) -> Result<BoxFuture<'_, Response>, Box<Packet>> {
        let field = |cgi: &[u8]| {
            (packet.cgi_headers())
                .find(|(name, _)| *name == cgi)
                .map(|(_, value)| value)
        };
        let asked = self.asked(
            ip_text(packet.remote_addr().ip()),
            request_line(packet.method(), Some(packet.target()), packet.version()),
            // A packet passes no `RequestIds`, which takes none.
            None,
            [
                &b"HTTP_AUTHORIZATION"[..],
                b"HTTP_REFERER",
                b"HTTP_USER_AGENT",
            ]
            .map(field),
        );
        let answer = self.inner.call_packet(packet)?;
        Ok(Box::pin(async move { self.logged(asked, answer.await) }))
    }

    fn takes_packets(&self) -> bool {
        self.inner.takes_packets()
    }
}

impl<A> AccessLog<A> {
    /// What the line says of a request, from its Authorization, Referer and
    /// User-Agent (their bytes as they came, UTF-8 in a User-Agent too,
    /// escaped when written).
    fn asked(
        &self,
        host: String,
        request_line: String,
        request_id: Option<String>,
        [authorization, referer, user_agent]: [Option<&[u8]>; 3],
    ) -> Asked {
        let written = self.format != LogFormat::Common;
        let text = |value: Option<&[u8]>| {
            value
                .filter(|_| written)
                .map(|value| String::from_utf8_lossy(value).into_owned())
        };
        Asked {
            time: OffsetDateTime::now_utc(),
            host,
            request_line,
            user: authorization.and_then(basic_user),
            request_id,
            referer: text(referer),
            user_agent: text(user_agent),
        }
    }

    /// `res`, whose line is written once its body has been sent.
    fn logged(&self, asked: Asked, res: Response) -> Response {
        let mut pending = Pending {
            asked,
            format: self.format,
            status: res.status().as_u16(),
            sent: 0,
            sink: self.sink.clone(),
        };
        // Watched, not wrapped: a file body stays one the server may send with sendfile.
        res.map(|body| body.inspect(move |polled| pending.count(polled)))
    }
}

/// `GET /you?x=1 HTTP/1.1`: the original target, whatever SCRIPT_NAME the
/// request later gains.
fn request_line(method: &Method, target: Option<&PathAndQuery>, version: Version) -> String {
    let target = target.map_or("/", PathAndQuery::as_str);
    format!("{method} {target} {version:?}")
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
fn basic_user(authorization: &[u8]) -> Option<String> {
    use base64::Engine as _;
    // Read as `HeaderValue::to_str` reads a value: visible ASCII and tabs.
    let visible = |b: &u8| *b == b'\t' || (b' '..=b'~').contains(b);
    let value = std::str::from_utf8(authorization)
        .ok()
        .filter(|v| v.as_bytes().iter().all(visible))?;
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

/// What a log line says of the request, noted before it is answered.
struct Asked {
    time: OffsetDateTime,
    host: String,
    request_line: String,
    /// The user a Basic `Authorization` names, checked or not.
    user: Option<String>,
    /// Set by [`RequestIds`](crate::RequestIds) around this log.
    request_id: Option<String>,
    referer: Option<String>,
    user_agent: Option<String>,
}

/// A log line waiting for its byte count; written when dropped.
struct Pending {
    asked: Asked,
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
        let Asked {
            time,
            host,
            request_line,
            user,
            request_id,
            referer,
            user_agent,
        } = &self.asked;
        let format =
            format_description!("[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000");
        let time = time.format(format).unwrap_or_else(|_| "-".to_owned());
        let (status, sent) = (self.status, self.sent);
        let bytes = match sent {
            0 => "-".to_owned(),
            n => n.to_string(),
        };
        // Escaped as Apache and nginx escape them, so a hostile target cannot
        // forge a second log line or break the quoting.
        let escaped_line = escaped(request_line);
        let escaped_user = user.as_deref().map_or("-".to_owned(), escaped);
        let line = match self.format {
            LogFormat::Common => {
                format!("{host} - {escaped_user} [{time}] \"{escaped_line}\" {status} {bytes}")
            }
            LogFormat::Combined => {
                let quoted = |v: &Option<String>| v.as_deref().map_or("-".to_owned(), escaped);
                let (referer, user_agent) = (quoted(referer), quoted(user_agent));
                format!(
                    "{host} - {escaped_user} [{time}] \"{escaped_line}\" {status} {bytes} \"{referer}\" \"{user_agent}\""
                )
            }
            LogFormat::Json => serde_json::json!({
                "remote": host,
                "user": user,
                "time": time,
                "request": request_line,
                "status": status,
                "bytes": sent,
                "referer": referer,
                "user_agent": user_agent,
                "request_id": request_id,
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
