//! How long a stored response stays fresh and how old it is (RFC 9111
//! §4.2), and the HTTP dates those are read from (RFC 9110 §5.6.7).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{AGE, DATE, EXPIRES, LAST_MODIFIED};
use http::{HeaderMap, StatusCode};

use super::directives::{DELTA_MAX, Directives};

/// The longest heuristic lifetime: a tenth of a response's age since it was
/// last modified, but no more than a day.
const HEURISTIC_MAX: Duration = Duration::from_secs(24 * 3600);

/// Status codes cacheable without explicit freshness (RFC 9110 §15.1).
pub(crate) fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// When a response was asked for and received, and what it said of its age.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) requested: SystemTime,
    pub(crate) received: SystemTime,
}

/// A response's freshness lifetime as a shared cache computes it (§4.2.1):
/// `s-maxage`, `max-age`, the time to an `X-Accel-Expires: @T` or to
/// `Expires` from `Date` (unless the directives are `CDN-Cache-Control`'s or
/// `X-Accel-Expires`': `targeted`), else a heuristic for a response that
/// allows one; an invalid value makes it stale.
pub(crate) fn lifetime(
    headers: &HeaderMap,
    cc: &Directives,
    targeted: bool,
    status: StatusCode,
    timing: Timing,
) -> Duration {
    if let Some(seconds) = cc.s_maxage.or(cc.max_age) {
        return Duration::from_secs(seconds.or(0));
    }
    let date = date_of(headers, timing);
    if let Some(until) = cc.until {
        // Past 2106 is as good as never (and no SystemTime is u64::MAX seconds on).
        let until = UNIX_EPOCH + Duration::from_secs(until.min(DELTA_MAX * 2));
        return until.duration_since(date).unwrap_or_default();
    }
    if headers.contains_key(EXPIRES) && !targeted {
        let mut lines = headers.get_all(EXPIRES).iter();
        let expires = match (lines.next(), lines.next()) {
            (Some(only), None) => http_date(only.as_bytes()),
            _ => None,
        };
        return expires.map_or(Duration::ZERO, |e| {
            e.duration_since(date).unwrap_or_default()
        });
    }
    if !(heuristically_cacheable(status) || cc.public) {
        return Duration::ZERO;
    }
    match headers
        .get(LAST_MODIFIED)
        .and_then(|v| http_date(v.as_bytes()))
    {
        Some(modified) => {
            (date.duration_since(modified).unwrap_or_default() / 10).min(HEURISTIC_MAX)
        }
        None => Duration::ZERO,
    }
}

/// The response's `Date`, or when it was received if it has no valid one.
fn date_of(headers: &HeaderMap, timing: Timing) -> SystemTime {
    headers
        .get(DATE)
        .and_then(|v| http_date(v.as_bytes()))
        .unwrap_or(timing.received)
}

/// The response's age when it was received (§4.2.3's corrected initial age).
pub(crate) fn initial_age(headers: &HeaderMap, timing: Timing) -> Duration {
    let apparent = timing
        .received
        .duration_since(date_of(headers, timing))
        .unwrap_or_default();
    let delay = timing
        .received
        .duration_since(timing.requested)
        .unwrap_or_default();
    apparent.max(age_value(headers) + delay)
}

/// The `Age` field's value: the first member of its first line, when it
/// is a non-negative integer (capped at 2^31); otherwise none (§5.1).
fn age_value(headers: &HeaderMap) -> Duration {
    let Some(line) = headers.get(AGE) else {
        return Duration::ZERO;
    };
    let first = line
        .as_bytes()
        .split(|&b| b == b',')
        .next()
        .unwrap_or_default();
    let first = first.trim_ascii();
    if first.is_empty() || !first.iter().all(u8::is_ascii_digit) {
        return Duration::ZERO;
    }
    let seconds = std::str::from_utf8(first)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(DELTA_MAX, |s| s.min(DELTA_MAX));
    Duration::from_secs(seconds)
}

/// An HTTP date in any of its three forms (IMF-fixdate, RFC 850, asctime),
/// names in any case; anything else is not a date.
pub(crate) fn http_date(value: &[u8]) -> Option<SystemTime> {
    let text = std::str::from_utf8(value).ok()?;
    let parts: Vec<&str> = text.split(' ').collect();
    let (day, month, year, time) = match parts.as_slice() {
        // Sun, 06 Nov 1994 08:49:37 GMT
        [weekday, day, month, year, time, gmt] if weekday.ends_with(',') => {
            let weekday = weekday.strip_suffix(',')?;
            (weekday.len() == 3
                && gmt.eq_ignore_ascii_case("GMT")
                && day.len() == 2
                && year.len() == 4)
                .then_some(())?;
            (*day, *month, year.parse::<i64>().ok()?, *time)
        }
        // Sunday, 06-Nov-94 08:49:37 GMT
        [weekday, date, time, gmt] => {
            weekday.strip_suffix(',')?;
            gmt.eq_ignore_ascii_case("GMT").then_some(())?;
            let mut date = date.split('-');
            let (day, month, year) = (date.next()?, date.next()?, date.next()?);
            (day.len() == 2 && year.len() == 2 && date.next().is_none()).then_some(())?;
            // Two digits: the century within 50 years of now (RFC 9110 §5.6.7).
            let year: i64 = year.parse().ok()?;
            (
                day,
                month,
                if year < 70 { 2000 + year } else { 1900 + year },
                *time,
            )
        }
        // Sun Nov  6 08:49:37 1994
        [weekday, month, "", day, time, year] if day.len() == 1 => {
            (weekday.len() == 3 && year.len() == 4).then_some(())?;
            (*day, *month, year.parse().ok()?, *time)
        }
        [weekday, month, day, time, year] if day.len() == 2 => {
            (weekday.len() == 3 && year.len() == 4).then_some(())?;
            (*day, *month, year.parse().ok()?, *time)
        }
        _ => return None,
    };
    let day: i64 = day
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| day.parse().ok())??;
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(month))? as i64 + 1;
    let mut hms = time.split(':');
    let mut field = |max: i64| -> Option<i64> {
        let f = hms.next()?;
        (f.len() == 2 && f.bytes().all(|b| b.is_ascii_digit())).then_some(())?;
        f.parse().ok().filter(|&v| v <= max)
    };
    let (hour, minute, second) = (field(23)?, field(59)?, field(60)?);
    if hms.next().is_some() || !(1..=31).contains(&day) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    u64::try_from(seconds)
        .ok()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn dates_in_three_forms_names_in_any_case_and_nothing_else() {
        let when = Some(at(784_111_777));
        assert_eq!(http_date(b"Sun, 06 Nov 1994 08:49:37 GMT"), when);
        assert_eq!(http_date(b"sun, 06 NOV 1994 08:49:37 gmt"), when);
        assert_eq!(http_date(b"Sunday, 06-Nov-94 08:49:37 GMT"), when);
        assert_eq!(http_date(b"Sun Nov  6 08:49:37 1994"), when);
        for bad in [
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Nov 1994 08:49:37 CET",
            "Sun, 06 Nov 94 08:49:37 GMT",
            "Sun 06 Nov 1994 08:49:37 GMT",
            "Sun,  06 Nov 1994 08:49:37 GMT",
            "Sun, 06-Nov-1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08.49.37 GMT",
            "Sun, 06 Nov 1994 8:49:37 GMT",
            "0",
            "",
        ] {
            assert_eq!(http_date(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(
            http_date(b"Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(UNIX_EPOCH)
        );
        assert_eq!(
            http_date(b"Tue, 19 Jan 2038 03:14:08 GMT"),
            Some(at(1 << 31))
        );
    }

    #[test]
    fn the_first_member_of_the_first_age_line_counts_when_it_is_a_number() {
        let age = |lines: &[&str]| {
            let mut headers = HeaderMap::new();
            for line in lines {
                headers.append(AGE, line.parse().unwrap());
            }
            age_value(&headers).as_secs()
        };
        assert_eq!(age(&["10"]), 10);
        assert_eq!(age(&["10, 0"]), 10);
        assert_eq!(age(&["0", "10"]), 0);
        assert_eq!(age(&["-10"]), 0);
        assert_eq!(age(&["1.5"]), 0);
        assert_eq!(age(&["old"]), 0);
        assert_eq!(age(&["99999999999"]), DELTA_MAX);
    }
}
