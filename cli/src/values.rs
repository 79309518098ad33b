//! The values flags and config keys share, read one way: seconds, socket
//! modes, URL paths, ProxyFix trust counts, addresses; and the serde
//! deserializers that give the config file's keys the flags' parsers and
//! messages.

use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};
use stackway_middleware::proxy::{Balance, HashKey};

use crate::listen::{Address, Bind, parse_address, parse_bind};

/// `for=1,proto=1,host=0,port=0,prefix=0`: trusted proxies per header, in
/// that order; unnamed ones keep Werkzeug's defaults (1, 1, 0, 0, 0).
pub(crate) fn parse_proxy_fix(value: &str) -> Result<[usize; 5], String> {
    let mut trust = [1, 1, 0, 0, 0];
    for pair in value.split(',').filter(|p| !p.is_empty()) {
        let (name, count) = pair
            .split_once('=')
            .ok_or_else(|| format!("expected NAME=COUNT, not {pair:?}"))?;
        let at = ["for", "proto", "host", "port", "prefix"]
            .iter()
            .position(|n| *n == name)
            .ok_or_else(|| format!("unknown header {name:?} (for, proto, host, port, prefix)"))?;
        trust[at] = count
            .parse()
            .map_err(|_| format!("{name}={count:?}: expected a number of proxies"))?;
    }
    Ok(trust)
}

/// A number of processes from 1 up, or `auto`: one per core.
pub(crate) fn parse_processes(value: &str) -> Result<u16, String> {
    if value == "auto" {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        return Ok(u16::try_from(cores).unwrap_or(u16::MAX));
    }
    value
        .parse::<u16>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("expected a number of processes from 1 up, or auto, not {value:?}"))
}

/// `2` or `"auto"`.
pub(crate) fn processes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    checked(d, |value: toml::Value| match value {
        toml::Value::Integer(n) => parse_processes(&n.to_string()),
        toml::Value::String(s) => parse_processes(&s),
        _ => Err("expected a number of processes, or \"auto\"".to_owned()),
    })
}

pub(crate) fn parse_mode(value: &str) -> Result<u32, String> {
    u32::from_str_radix(value, 8)
        .ok()
        .filter(|mode| *mode <= 0o777)
        .ok_or_else(|| format!("expected permission bits in octal, as in 660, not {value:?}"))
}

pub(crate) fn parse_path(value: &str) -> Result<String, String> {
    match value.starts_with('/') {
        true => Ok(value.to_owned()),
        false => Err(format!("expected a path, as in /healthz, not {value:?}")),
    }
}

/// A size in bytes: a number, perhaps with `KiB`, `MiB` or `GiB` (`k`, `m`, `g`).
pub(crate) fn parse_size(value: &str) -> Result<usize, String> {
    let error = || format!("expected a size, as in 64MiB or 1GiB, not {value:?}");
    let digits = value.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let shift = match value[digits.len()..].to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" | "kb" => 10,
        "m" | "mib" | "mb" => 20,
        "g" | "gib" | "gb" => 30,
        _ => return Err(error()),
    };
    let number: usize = digits.trim().parse().map_err(|_| error())?;
    number
        .checked_mul(1 << shift)
        .filter(|&bytes| bytes > 0)
        .ok_or_else(error)
}

/// A size, given as a number of bytes or a string such as `"64MiB"`.
pub(crate) fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(usize),
        Text(String),
    }
    checked(d, |size: Size| match size {
        Size::Bytes(bytes) => parse_size(&bytes.to_string()),
        Size::Text(text) => parse_size(&text),
    })
}

pub(crate) fn parse_secs(value: &str) -> Result<Duration, String> {
    value
        .parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("expected a positive number of seconds, not {value:?}"))
}

/// A value checked by one of the flags' own parsers, with its message.
pub(crate) fn checked<'de, D: Deserializer<'de>, T, V: Deserialize<'de>>(
    deserializer: D,
    check: impl FnOnce(V) -> Result<T, String>,
) -> Result<Option<T>, D::Error> {
    check(V::deserialize(deserializer)?)
        .map(Some)
        .map_err(de::Error::custom)
}

/// Nameservers: `IP` (port 53) or `IP:PORT`, IPv6 as `[IP]:PORT`.
pub(crate) fn nameservers<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<std::net::SocketAddr>>, D::Error> {
    checked(d, |all: Vec<String>| {
        (all.iter())
            .map(|s| {
                (s.parse().ok())
                    .or_else(|| s.parse().ok().map(|ip| std::net::SocketAddr::new(ip, 53)))
                    .ok_or_else(|| format!("{s:?}: expected IP or IP:PORT"))
            })
            .collect()
    })
}

pub(crate) fn bind<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Bind>, D::Error> {
    checked(d, |s: String| parse_bind(&s))
}

pub(crate) fn addresses<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Address>>, D::Error> {
    checked(d, |all: Vec<String>| {
        all.iter().map(|s| parse_address(s)).collect()
    })
}

pub(crate) fn required_address<'de, D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
    checked(d, |s: String| parse_address(&s)).map(Option::unwrap)
}

/// `"http://…"` or `["http://…", "http://…"]`.
pub(crate) fn upstreams<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    checked(d, |value: toml::Value| match value {
        toml::Value::String(one) => Ok(vec![one]),
        toml::Value::Array(pool) => pool
            .into_iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .filter(|pool| !pool.is_empty())
            .ok_or_else(|| {
                "expected a list of upstreams, as in [\"http://127.0.0.1:9000\"]".to_owned()
            }),
        _ => Err("expected an upstream or a list of them".to_owned()),
    })
}

pub(crate) fn octal<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    checked(d, |s: String| parse_mode(&s))
}

pub(crate) fn path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    checked(d, |s: String| parse_path(&s))
}

pub(crate) fn seconds(secs: f64) -> Result<Duration, String> {
    parse_secs(&secs.to_string())
}

/// A positive number of seconds, whole or not.
pub(crate) fn secs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    checked(d, seconds)
}

pub(crate) fn required_secs<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    secs(d).map(Option::unwrap)
}

pub(crate) fn header_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    checked(d, |n: usize| match n >= 8192 {
        true => Ok(n),
        false => Err(format!("at least 8192 bytes, not {n}")),
    })
}

pub(crate) fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    checked(d, |n: usize| match n >= 1 {
        true => Ok(n),
        false => Err("at least 1".to_owned()),
    })
}

pub(crate) fn level<'de, D: Deserializer<'de>>(d: D) -> Result<Option<tracing::Level>, D::Error> {
    checked(d, |s: String| {
        s.parse()
            .map_err(|_| format!("{s:?}: expected error, warn, info, debug or trace"))
    })
}

pub(crate) fn log_format<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    checked(d, |s: String| match s.as_str() {
        "text" | "json" => Ok(s),
        _ => Err(format!("{s:?}: expected text or json")),
    })
}

/// `true` for Werkzeug's defaults, or the flag's `for=1,proto=1,…`.
pub(crate) fn proxy_fix<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[usize; 5]>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Trust {
        On(bool),
        Counts(String),
    }
    let trust = Trust::deserialize(d)?;
    match trust {
        Trust::On(false) => Ok(None),
        Trust::On(true) => parse_proxy_fix("").map(Some),
        Trust::Counts(counts) => parse_proxy_fix(&counts).map(Some),
    }
    .map_err(de::Error::custom)
}

pub(crate) fn balance<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Balance>, D::Error> {
    checked(d, |s: String| {
        let words: Vec<&str> = s.split_ascii_whitespace().collect();
        match words[..] {
            ["round-robin"] => Ok(Balance::RoundRobin),
            ["least-outstanding"] => Ok(Balance::LeastOutstanding),
            ["ip-hash"] => Ok(Balance::IpHash),
            ["hash", key] | ["hash", key, "consistent"] => Ok(Balance::Hash {
                key: HashKey::parse(key)?,
                consistent: words.len() == 3,
            }),
            _ => Err(format!(
                "{s:?}: expected round-robin, least-outstanding, ip-hash or hash KEY [consistent]"
            )),
        }
    })
}
