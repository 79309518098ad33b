//! gRPC through the proxy: the call's deadline (`grpc-timeout`) bounds the
//! wait for the upstream's answer, and the proxy's own failures (no
//! upstream, a timeout) reach the client as a gRPC status, which is what a
//! gRPC client reads, rather than as an HTTP status it would have to guess
//! from. Everything else (h2, streaming both ways, trailers) is the proxy's
//! ordinary work.

use std::time::Duration;

use http::header::{CONTENT_TYPE, HeaderName};
use http::{HeaderMap, HeaderValue, StatusCode, Version};
use stackway::{Body, Request, Response};

/// Whether the request is a gRPC call (`application/grpc`, `+proto`, `+json`, …).
/// gRPC runs on HTTP/2 alone (its status comes in trailers): the headers of
/// any other request are not looked at.
pub(crate) fn is_call(req: &Request) -> bool {
    req.version() == Version::HTTP_2
        && (req.headers().get(CONTENT_TYPE))
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == "application/grpc" || v.starts_with("application/grpc+"))
}

/// The call's deadline, from `grpc-timeout`: at most eight digits and a unit
/// (`H`ours, `M`inutes, `S`econds, `m`illi-, `u`micro-, `n`anoseconds).
pub(crate) fn timeout(headers: &HeaderMap) -> Option<Duration> {
    const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
    let value = headers.get(GRPC_TIMEOUT)?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The proxy's failure `status` as gRPC says it: HTTP 200 and the status
/// in a trailers-only response. A timeout is `DEADLINE_EXCEEDED`; the rest
/// follow gRPC's HTTP-to-gRPC mapping (502, 503 `UNAVAILABLE`, 400
/// `INTERNAL`).
pub(crate) fn failure(status: StatusCode) -> Response {
    let (code, message) = match status {
        StatusCode::GATEWAY_TIMEOUT | StatusCode::REQUEST_TIMEOUT => {
            (4, "the proxy's deadline for the upstream passed")
        }
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE => {
            (14, "the upstream is unavailable")
        }
        StatusCode::BAD_REQUEST => (13, "the request failed on its way to the upstream"),
        _ => (2, "the proxy failed the call"),
    };
    let mut res = Response::new(Body::empty());
    let headers = res.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from(code));
    headers.insert("grpc-message", HeaderValue::from_static(message));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout_of(value: &str) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-timeout", value.parse().unwrap());
        timeout(&headers)
    }

    #[test]
    fn grpc_timeouts_in_every_unit() {
        assert_eq!(timeout_of("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(timeout_of("2M"), Some(Duration::from_secs(120)));
        assert_eq!(timeout_of("30S"), Some(Duration::from_secs(30)));
        assert_eq!(timeout_of("500m"), Some(Duration::from_millis(500)));
        assert_eq!(
            timeout_of("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(timeout_of("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "S", "100", "123456789S", "1.5S", "-1S", "10s", "1 S"] {
            assert_eq!(timeout_of(bad), None, "{bad:?}");
        }
        assert_eq!(timeout(&HeaderMap::new()), None);
    }
}
