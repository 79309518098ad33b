//! From a file that was found to its response: validators, conditionals,
//! ranges, and the redirect and listing pages.

use http::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE,
    ETAG, LAST_MODIFIED, RANGE, VARY,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use stackway::{Body, FilePart, Html, IntoResponse, Request, RequestExt, Response, response};

use super::entry::{Content, File};
use super::headers::{self, Precondition};
use stackway::range::{self, Ranges};

/// What an export's options add to every file response.
pub(super) struct Headers<'a> {
    pub(super) cache_control: Option<&'a str>,
    /// Whether precompressed siblings may be chosen: `Vary: Accept-Encoding`.
    pub(super) vary: bool,
    pub(super) fallback_type: &'a str,
}

/// The response for a found file, after conditionals and ranges.
pub(super) fn file(req: &Request, file: File, options: &Headers<'_>) -> Response {
    let File {
        name,
        found,
        encoding,
    } = file;
    let validators = found.validators.for_encoding(encoding);
    let mut head = HeaderMap::new();
    head.insert(ETAG, header_value(&validators.etag));
    if let Some(modified) = validators.modified {
        head.insert(
            LAST_MODIFIED,
            header_value(&httpdate::fmt_http_date(modified)),
        );
    }
    if let Some(value) = options.cache_control {
        head.insert(CACHE_CONTROL, header_value(value));
    }
    if options.vary {
        head.insert(VARY, HeaderValue::from_static("accept-encoding"));
    }
    let mut res = match headers::precondition(req.method(), req.headers(), &validators) {
        Precondition::NotModified => {
            let mut res = Response::new(Body::empty());
            *res.status_mut() = StatusCode::NOT_MODIFIED;
            res
        }
        Precondition::Failed => StatusCode::PRECONDITION_FAILED.into_response(),
        Precondition::Proceed => {
            let ranges = match req.headers().get(RANGE) {
                Some(value)
                    if req.method() == Method::GET
                        && headers::if_range_holds(req.headers(), &validators) =>
                {
                    range::parse(value.to_str().unwrap_or(""), found.len)
                }
                _ => Ranges::Ignore,
            };
            head.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            if let Some(encoding) = encoding {
                head.insert(CONTENT_ENCODING, HeaderValue::from_static(encoding));
            }
            let content_type = content_type(&name, options.fallback_type);
            let head_only = req.method() == Method::HEAD;
            file_response(found.content, found.len, ranges, content_type, head_only)
        }
    };
    res.headers_mut().extend(head);
    res
}

/// 200 with the whole file, 206 with the ranges, or 416; without a body for HEAD.
fn file_response(
    content: Content,
    len: u64,
    ranges: Ranges,
    content_type: HeaderValue,
    head_only: bool,
) -> Response {
    let (status, pieces, content_type, content_range) = match ranges {
        Ranges::Ignore => (
            StatusCode::OK,
            vec![FilePart::Range(0..len)],
            content_type,
            None,
        ),
        Ranges::Unsatisfiable => {
            let mut res = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            res.headers_mut()
                .insert(CONTENT_RANGE, header_value(&format!("bytes */{len}")));
            return res;
        }
        Ranges::Satisfiable(ranges) if ranges.len() == 1 => {
            let range = ranges[0].clone();
            let content_range = format!("bytes {}-{}/{len}", range.start, range.end - 1);
            (
                StatusCode::PARTIAL_CONTENT,
                vec![FilePart::Range(range)],
                content_type,
                Some(content_range),
            )
        }
        Ranges::Satisfiable(ranges) => {
            let part_type = content_type.to_str().unwrap_or("application/octet-stream");
            let (pieces, content_type) = range::multipart(ranges, len, part_type);
            let content_type = header_value(&content_type);
            (StatusCode::PARTIAL_CONTENT, pieces, content_type, None)
        }
    };
    let total: u64 = pieces.iter().map(FilePart::len).sum();
    let body = if head_only {
        Body::empty()
    } else {
        content.body(pieces)
    };
    let mut res = Response::new(body);
    *res.status_mut() = status;
    let headers = res.headers_mut();
    headers.insert(CONTENT_TYPE, content_type);
    headers.insert(CONTENT_LENGTH, HeaderValue::from(total));
    if let Some(content_range) = content_range {
        headers.insert(CONTENT_RANGE, header_value(&content_range));
    }
    res
}

/// A value made of text we built or checked when the export was added.
fn header_value(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `Content-Type` from the file name, with a charset for text.
fn content_type(name: &str, fallback: &str) -> HeaderValue {
    let Some(mime) = mime_guess::from_path(name).first_raw() else {
        return header_value(fallback);
    };
    let texty = mime.starts_with("text/")
        || mime.ends_with("+xml")
        || mime.ends_with("+json")
        || matches!(
            mime,
            "application/javascript"
                | "application/json"
                | "application/xml"
                | "application/ecmascript"
                | "application/sql"
        );
    match texty {
        true => header_value(&format!("{mime}; charset=utf-8")),
        false => HeaderValue::from_static(mime),
    }
}

/// Characters kept as they are in a listing's links: RFC 3986 unreserved.
const LINK: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub(super) fn listing(req: &Request, entries: &[(String, bool)]) -> Response {
    let env = req.environ();
    let title = response::escape_html(&format!(
        "{}{}",
        env.script_name_decoded(),
        env.path_info_decoded()
    ));
    let mut html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of {title}</title></head>\n\
         <body><h1>Index of {title}</h1>\n<ul>\n"
    );
    for (name, is_dir) in entries {
        let slash = if *is_dir { "/" } else { "" };
        let href = utf8_percent_encode(name, LINK);
        let text = response::escape_html(name);
        html.push_str(&format!(
            "<li><a href=\"{href}{slash}\">{text}{slash}</a></li>\n"
        ));
    }
    html.push_str("</ul></body></html>\n");
    Html(html).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_types_get_a_charset() {
        let cases = [
            ("a.txt", "text/plain; charset=utf-8"),
            ("a.html", "text/html; charset=utf-8"),
            ("a.js", "text/javascript; charset=utf-8"),
            ("a.json", "application/json; charset=utf-8"),
            ("a.svg", "image/svg+xml; charset=utf-8"),
            ("a.png", "image/png"),
            ("a.unknownext", "application/x-fallback"),
            ("README", "application/x-fallback"),
        ];
        for (name, expected) in cases {
            assert_eq!(
                content_type(name, "application/x-fallback"),
                expected,
                "{name}"
            );
        }
    }
}
