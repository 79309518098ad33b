//! Compresses responses on the way out (br, zstd, gzip, deflate) by the
//! client's `Accept-Encoding`, as Rack's `Deflater` and tower-http's
//! `CompressionLayer` do, streaming: each chunk the app sends is compressed
//! and flushed as it comes, so server-sent events still arrive one by one.
//!
//! # Example
//!
//! ```
//! use stackway::{Html, Request, testing::Client};
//! use stackway_middleware::Compress;
//!
//! let page = |_req: Request| async { Html("<p>hello</p>".repeat(200)) };
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let res = Client::new(Compress::new(page)).get("/").header("accept-encoding", "gzip, br;q=0.9").await;
//! res.assert_header("content-encoding", "gzip").assert_header("vary", "accept-encoding");
//! assert!(res.body().len() < 200);
//! # });
//! ```
//!
//! # What is left alone
//!
//! `HEAD`; 1xx, 204, 206 and 304; a response that already has a
//! `Content-Encoding` (SharedData's precompressed files); one smaller than
//! [`min_size`](Compress::min_size) when its size is known; content types that
//! are compressed already (images but SVG, audio, video, archives, fonts but
//! SVG-like text ones); and `Cache-Control: no-transform`. A compressed
//! response loses its `Content-Length`, and a strong `ETag` becomes weak (it
//! names the uncompressed bytes). `Vary: Accept-Encoding` is always sent.

pub use async_compression::Level;
use async_compression::tokio::write::{BrotliEncoder, GzipEncoder, ZlibEncoder, ZstdEncoder};
use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG,
    HeaderValue, VARY,
};
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use stackway::{App, Body, Request, Response};
use tokio::io::AsyncWriteExt;

/// Compresses responses; see the [module docs](self).
#[doc(alias = "Deflater")]
#[doc(alias = "CompressionLayer")]
#[doc(alias = "gzip")]
#[derive(Debug, Clone)]
pub struct Compress<A> {
    inner: A,
    min_size: u64,
    level: Level,
}

/// The codings, in the server's order of preference on equal q-values.
const CODINGS: [&str; 4] = ["br", "zstd", "gzip", "deflate"];

impl<A> Compress<A> {
    /// Compresses `inner`'s responses at the codecs' default levels.
    pub fn new(inner: A) -> Self {
        Self {
            inner,
            min_size: 256,
            level: Level::Default,
        }
    }

    /// Leaves responses of known size under `bytes` alone (256 by default):
    /// compressing them saves too little.
    pub fn min_size(mut self, bytes: u64) -> Self {
        self.min_size = bytes;
        self
    }

    /// The compression level: `Level::Fastest`, `Level::Best`, or
    /// `Level::Precise(n)`.
    pub fn level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }

    inner_accessors!();
}

/// The coding the client prefers among ours, by q-value, ours breaking ties;
/// `None` when it accepts none (or only `identity`).
fn choose(headers: &HeaderMap) -> Option<&'static str> {
    let mut best: Option<(u16, usize)> = None;
    for value in headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        for item in value.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .map_or(1000, |q| (q.clamp(0.0, 1.0) * 1000.0) as u16);
            let candidates: Vec<usize> = match name.as_str() {
                "*" => (0..CODINGS.len()).collect(),
                name => CODINGS
                    .iter()
                    .position(|c| *c == name)
                    .into_iter()
                    .collect(),
            };
            for at in candidates {
                if q > 0 && best.is_none_or(|(bq, bat)| q > bq || (q == bq && at < bat)) {
                    best = Some((q, at));
                }
            }
        }
    }
    best.map(|(_, at)| CODINGS[at])
}

/// Whether the content type is compressed already (or not worth it).
fn incompressible(headers: &HeaderMap) -> bool {
    let Some(kind) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let kind = kind
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let (top, sub) = kind.split_once('/').unwrap_or((&kind, ""));
    match top {
        "image" => !sub.starts_with("svg"),
        "audio" | "video" => true,
        "font" => !matches!(sub, "ttf" | "otf" | "sfnt"),
        "application" => matches!(
            sub,
            "zip"
                | "gzip"
                | "x-gzip"
                | "zstd"
                | "x-bzip2"
                | "x-xz"
                | "x-7z-compressed"
                | "x-rar-compressed"
                | "pdf"
                | "octet-stream"
                | "wasm"
        ),
        _ => false,
    }
}

impl<A: App> App for Compress<A> {
    async fn call(&self, req: Request) -> Response {
        let coding = choose(req.headers()).filter(|_| req.method() != Method::HEAD);
        let mut res = self.inner.call(req).await;
        let headers = res.headers_mut();
        if !headers
            .get_all(VARY)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"accept-encoding"))
        {
            headers.append(VARY, HeaderValue::from_static("accept-encoding"));
        }
        let status = res.status();
        let skip = status.is_informational()
            || matches!(
                status,
                StatusCode::NO_CONTENT | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
            )
            || res.headers().contains_key(CONTENT_ENCODING)
            || incompressible(res.headers())
            || res
                .headers()
                .get(CACHE_CONTROL)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.to_ascii_lowercase().contains("no-transform"))
            || http_body::Body::size_hint(res.body())
                .exact()
                .is_some_and(|len| len < self.min_size);
        let Some(coding) = coding.filter(|_| !skip) else {
            return res;
        };
        let (mut parts, body) = res.into_parts();
        parts.headers.remove(CONTENT_LENGTH);
        parts
            .headers
            .insert(CONTENT_ENCODING, HeaderValue::from_static(coding));
        if let Some(etag) = parts.headers.get(ETAG).and_then(|v| v.to_str().ok()) {
            if !etag.starts_with("W/") {
                if let Ok(weak) = HeaderValue::from_str(&format!("W/{etag}")) {
                    parts.headers.insert(ETAG, weak);
                }
            }
        }
        Response::from_parts(parts, compress(body, coding, self.level))
    }
}

/// An encoder writing into a buffer, whatever the coding.
enum Encoder {
    /// Boxed: brotli's state is kilobytes, the others' a few words.
    Br(Box<BrotliEncoder<Vec<u8>>>),
    Zstd(ZstdEncoder<Vec<u8>>),
    Gzip(GzipEncoder<Vec<u8>>),
    /// HTTP's `deflate` is the zlib format (RFC 9110 §8.4.1.2), not raw deflate.
    Deflate(ZlibEncoder<Vec<u8>>),
}

impl Encoder {
    fn new(coding: &str, level: Level) -> Self {
        match coding {
            // Brotli's own default (11) is for files compressed once, ahead of
            // time: far too slow per response. 4 is tower-http's choice too.
            "br" => {
                let level = match level {
                    Level::Default => Level::Precise(4),
                    other => other,
                };
                Self::Br(Box::new(BrotliEncoder::with_quality(Vec::new(), level)))
            }
            "zstd" => Self::Zstd(ZstdEncoder::with_quality(Vec::new(), level)),
            "gzip" => Self::Gzip(GzipEncoder::with_quality(Vec::new(), level)),
            _ => Self::Deflate(ZlibEncoder::with_quality(Vec::new(), level)),
        }
    }

    /// Compresses `chunk` and flushes, returning what came out; with `None`,
    /// finishes the stream.
    async fn feed(&mut self, chunk: Option<&[u8]>) -> std::io::Result<Bytes> {
        macro_rules! run {
            ($encoder:expr) => {{
                match chunk {
                    Some(chunk) => {
                        $encoder.write_all(chunk).await?;
                        $encoder.flush().await?;
                    }
                    None => $encoder.shutdown().await?,
                }
                Ok(Bytes::from(std::mem::take($encoder.get_mut())))
            }};
        }
        match self {
            Self::Br(e) => run!(e),
            Self::Zstd(e) => run!(e),
            Self::Gzip(e) => run!(e),
            Self::Deflate(e) => run!(e),
        }
    }
}

/// The body, compressed chunk by chunk as it streams.
fn compress(body: Body, coding: &str, level: Level) -> Body {
    let encoder = Encoder::new(coding, level);
    let frames = body.into_data_stream();
    let chunks = futures_util::stream::unfold(
        (frames, Some(encoder)),
        |(mut frames, encoder)| async move {
            let mut encoder = encoder?;
            loop {
                let out = match frames.next().await {
                    Some(Ok(data)) if data.is_empty() => continue,
                    Some(Ok(data)) => encoder.feed(Some(&data)).await,
                    Some(Err(e)) => Err(std::io::Error::other(e)),
                    None => {
                        let last = encoder.feed(None).await;
                        return Some((last, (frames, None)));
                    }
                };
                let failed = out.is_err();
                return Some((out, (frames, (!failed).then_some(encoder))));
            }
        },
    );
    Body::from_stream(chunks)
}
