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
//! 1xx, 204, 206 and 304; a response that already has a `Content-Encoding`
//! (SharedData's precompressed files); one smaller than
//! [`min_size`](Compress::min_size) when its size is known; content types that
//! are compressed already (images but SVG, audio, video, archives, fonts but
//! SVG-like text ones) and gRPC's (its messages have a compression of their
//! own); and `Cache-Control: no-transform`. Those sent as they are whatever the
//! client accepts get no `Vary`; the others, a 304 and a 206 among them, get
//! `Vary: Accept-Encoding`, added to the app's own.
//!
//! A compressed response loses its `Content-Length` and `Accept-Ranges` (both
//! are the uncompressed body's), a strong `ETag` becomes weak, and trailers
//! follow the compressed body. A `HEAD` gets the fields a `GET` would, with no
//! body compressed (RFC 9110 §9.3.2).
//!
//! The client's choice follows RFC 9110 §12.5.3: the highest q-value wins, a
//! coding named outright keeps its own weight under `*` (`br;q=0, *` refuses
//! brotli), and an entry whose weight is no qvalue is left out.

pub use async_compression::Level;
use async_compression::tokio::write::{BrotliEncoder, GzipEncoder, ZlibEncoder, ZstdEncoder};
use bytes::Bytes;
use http::header::{
    ACCEPT_ENCODING, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE,
    ETAG, HeaderValue, VARY,
};
use http::{HeaderMap, Method, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
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
/// `None` when it accepts none (or only `identity`). A coding named outright
/// takes its own weight, `*` the weight of those not named (RFC 9110
/// §12.5.3): `br;q=0, *` refuses brotli. An entry whose weight is no qvalue
/// is left out, as nginx leaves it.
fn choose(headers: &HeaderMap) -> Option<&'static str> {
    let mut named = [None; CODINGS.len()];
    let mut any = None;
    let entries = (headers.get_all(ACCEPT_ENCODING).iter())
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    for entry in entries {
        let mut parts = entry.split(';');
        let name = parts.next().unwrap_or("").trim();
        let Some(weight) = weight(parts) else {
            continue;
        };
        if name == "*" {
            any = Some(weight);
        } else if let Some(at) = CODINGS.iter().position(|c| name.eq_ignore_ascii_case(c)) {
            named[at] = Some(weight);
        }
    }
    (0..CODINGS.len())
        .filter_map(|at| Some((named[at].or(any)?, at)))
        .filter(|&(weight, _)| weight > 0)
        .max_by_key(|&(weight, at)| (weight, std::cmp::Reverse(at)))
        .map(|(_, at)| CODINGS[at])
}

/// An entry's weight in thousandths: 1000 without a `q` parameter (its name
/// in any case), `None` when the value is no qvalue (`0.5`, `1.000`; not
/// `abc`, `.5` or `1.5`).
fn weight<'a>(params: impl Iterator<Item = &'a str>) -> Option<u16> {
    let mut weight = 1000;
    for param in params {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("q") {
            continue;
        }
        let (whole, fraction) = value.trim().split_once('.').unwrap_or((value.trim(), ""));
        if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let thousandths: u16 = format!("{fraction:0<3}").parse().ok()?;
        weight = match whole {
            "0" => thousandths,
            "1" if thousandths == 0 => 1000,
            _ => return None,
        };
    }
    Some(weight)
}

/// Whether the content type is compressed already (or not worth it), or is
/// gRPC's, whose messages carry a compression of their own and whose framing
/// a client reads before any `Content-Encoding` (gRPC-Web's is text to a
/// browser, and is compressed).
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
        "application" => {
            (sub.starts_with("grpc") && !sub.starts_with("grpc-web"))
                || matches!(
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
                )
        }
        _ => false,
    }
}

impl<A: App> App for Compress<A> {
    async fn call(&self, req: Request) -> Response {
        let coding = choose(req.headers());
        let head = req.method() == Method::HEAD;
        let mut res = self.inner.call(req).await;
        let status = res.status();
        if status.is_informational()
            || status == StatusCode::NO_CONTENT
            || self.left_alone(&res, head || status == StatusCode::NOT_MODIFIED)
        {
            return res;
        }
        // Whether the body is compressed depends on the request's
        // `Accept-Encoding` from here on: caches are told so, a 304 and a
        // 206 too, as the 200 they stand for would be (RFC 9110 §15.4.5).
        let headers = res.headers_mut();
        let varies = (headers.get_all(VARY).iter())
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .any(|name| name == "*" || name.eq_ignore_ascii_case("accept-encoding"));
        if !varies {
            headers.append(VARY, HeaderValue::from_static("accept-encoding"));
        }
        let Some(coding) = coding.filter(|_| {
            !matches!(
                status,
                StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
            )
        }) else {
            return res;
        };
        // The fields of what is sent, to a HEAD as to a GET (RFC 9110
        // §9.3.2): the length and the byte ranges are the uncompressed
        // body's, and a strong `ETag` names its bytes.
        headers.remove(CONTENT_LENGTH);
        headers.remove(ACCEPT_RANGES);
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static(coding));
        if let Some(etag) = headers.get(ETAG).and_then(|v| v.to_str().ok()) {
            if !etag.starts_with("W/") {
                if let Ok(weak) = HeaderValue::from_str(&format!("W/{etag}")) {
                    headers.insert(ETAG, weak);
                }
            }
        }
        if head {
            return res;
        }
        let (parts, body) = res.into_parts();
        Response::from_parts(parts, compress(body, coding, self.level))
    }
}

impl<A> Compress<A> {
    /// Whether `res` is sent as it is whatever the client accepts: encoded
    /// already, of a type not worth compressing, marked `no-transform`, or
    /// smaller than [`min_size`](Self::min_size) (by its `Content-Length`,
    /// or its body's known size unless the body is left out: `bodiless`, the
    /// answer to a HEAD and a 304).
    fn left_alone(&self, res: &Response, bodiless: bool) -> bool {
        let headers = res.headers();
        let size = match stackway::response::declared_length(headers) {
            Ok(Some(length)) => Some(length),
            _ if bodiless => None,
            _ => http_body::Body::size_hint(res.body()).exact(),
        };
        headers.contains_key(CONTENT_ENCODING)
            || incompressible(headers)
            || (headers.get_all(CACHE_CONTROL).iter())
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.to_ascii_lowercase().contains("no-transform"))
            || size.is_some_and(|len| len < self.min_size)
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

/// The body, compressed chunk by chunk as it streams; its trailers (a
/// gRPC-Web call's status, a stream's checksum) follow the compressed end.
fn compress(body: Body, coding: &str, level: Level) -> Body {
    let state = (body, Some(Encoder::new(coding, level)), None);
    let frames = futures_util::stream::unfold(state, |(mut body, encoder, trailers)| async move {
        let Some(mut encoder) = encoder else {
            return trailers.map(|trailers| (Ok(Frame::trailers(trailers)), (body, None, None)));
        };
        loop {
            let (last, trailers) = match body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => continue,
                    Ok(data) => {
                        let out = encoder.feed(Some(&data)).await;
                        let encoder = out.is_ok().then_some(encoder);
                        return Some((out.map(Frame::data), (body, encoder, None)));
                    }
                    Err(frame) => (encoder.feed(None).await, frame.into_trailers().ok()),
                },
                Some(Err(e)) => return Some((Err(std::io::Error::other(e)), (body, None, None))),
                None => (encoder.feed(None).await, None),
            };
            return Some((last.map(Frame::data), (body, None, trailers)));
        }
    });
    Body::new(StreamBody::new(frames))
}
