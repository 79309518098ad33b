//! nginx's hashing balancers, to the same member for the same key:
//! `ip_hash`, `hash KEY` and `hash KEY consistent`, each as nginx computes
//! it, so that a pool moved from nginx sends each client where nginx did.

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use http::HeaderMap;
use stackway::{Request, RequestExt};

use super::upstream::{Address, Upstream};

/// What [`Balance::Hash`](super::Balance::Hash) hashes: nginx's variables in
/// text, as `hash` takes them (`$request_uri`, `$remote_addr`, `$host`,
/// `$uri`, `$args`, `$request_method`, `$scheme`, `$http_NAME`,
/// `$cookie_NAME`, `$arg_NAME`; `${name}` beside other text).
///
/// ```
/// use stackway_middleware::proxy::{Balance, HashKey};
///
/// let key = HashKey::parse("$cookie_session").unwrap();
/// let balance = Balance::Hash { key, consistent: true };
/// assert!(HashKey::parse("$nope").is_err());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct HashKey {
    text: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    RequestUri,
    Uri,
    Args,
    RemoteAddr,
    Host,
    Method,
    Scheme,
    Header(http::HeaderName),
    Cookie(String),
    Arg(String),
}

impl HashKey {
    /// Parses a key, or says which variable it does not know.
    pub fn parse(key: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = key;
        while let Some(at) = rest.find('$') {
            if at > 0 {
                parts.push(Part::Text(rest[..at].to_owned()));
            }
            let after = &rest[at + 1..];
            let (name, next) = match after.strip_prefix('{') {
                Some(braced) => {
                    let end = braced
                        .find('}')
                        .ok_or_else(|| format!("{key:?}: a ${{ without its }}"))?;
                    (&braced[..end], &braced[end + 1..])
                }
                None => {
                    let end = after
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(after.len());
                    (&after[..end], &after[end..])
                }
            };
            parts.push(Part::of(name).ok_or_else(|| {
                format!("{key:?}: ${name} is no variable a hash takes ($request_uri, $remote_addr, $host, $uri, $args, $request_method, $scheme, $http_NAME, $cookie_NAME, $arg_NAME)")
            })?);
            rest = next;
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self {
            text: key.to_owned(),
            parts,
        })
    }

    /// The key of `req`, as nginx would make it.
    pub(crate) fn of(&self, req: &Request) -> Vec<u8> {
        let env = req.environ();
        let mut key = Vec::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => key.extend_from_slice(text.as_bytes()),
                Part::RequestUri => key.extend_from_slice(env.request_target().as_bytes()),
                Part::Uri => key.extend(percent_encoding::percent_decode_str(req.uri().path())),
                Part::Args => key.extend_from_slice(env.query_string().as_bytes()),
                Part::RemoteAddr => {
                    if let Some(addr) = req.remote_addr() {
                        key.extend_from_slice(stackway::environ::ip_text(addr.ip()).as_bytes());
                    }
                }
                Part::Host => {
                    key.extend_from_slice(env.server_name().to_ascii_lowercase().as_bytes())
                }
                Part::Method => key.extend_from_slice(req.method().as_str().as_bytes()),
                Part::Scheme => key.extend_from_slice(env.url_scheme().as_str().as_bytes()),
                Part::Header(name) => key.extend(joined(req.headers(), name)),
                Part::Cookie(name) => key.extend_from_slice(cookie(req.headers(), name)),
                Part::Arg(name) => key.extend_from_slice(arg(env.query_string(), name).as_bytes()),
            }
        }
        key
    }
}

impl Part {
    fn of(name: &str) -> Option<Self> {
        Some(match name {
            "request_uri" => Self::RequestUri,
            "uri" | "document_uri" => Self::Uri,
            "args" | "query_string" => Self::Args,
            "remote_addr" => Self::RemoteAddr,
            "host" => Self::Host,
            "request_method" => Self::Method,
            "scheme" => Self::Scheme,
            _ => {
                if let Some(header) = name.strip_prefix("http_") {
                    let header = header.replace('_', "-").to_ascii_lowercase();
                    Self::Header(http::HeaderName::try_from(header).ok()?)
                } else if let Some(cookie) = name.strip_prefix("cookie_") {
                    Self::Cookie(cookie.to_owned())
                } else if let Some(arg) = name.strip_prefix("arg_") {
                    Self::Arg(arg.to_owned())
                } else {
                    return None;
                }
            }
        })
    }
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A header's values as nginx's `$http_NAME` gives them: `Cookie`'s joined
/// by `; `, any other's by `, `.
fn joined<'a>(headers: &'a HeaderMap, name: &http::HeaderName) -> impl Iterator<Item = u8> + 'a {
    let separator: &'static [u8] = match *name == http::header::COOKIE {
        true => b"; ",
        false => b", ",
    };
    (headers.get_all(name).iter().enumerate()).flat_map(move |(i, value)| {
        let before = if i == 0 { &b""[..] } else { separator };
        before.iter().chain(value.as_bytes()).copied()
    })
}

/// The first cookie called `name`, as nginx's `$cookie_NAME` finds it.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> &'a [u8] {
    (headers.get_all(http::header::COOKIE).iter())
        .flat_map(|value| value.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii_start();
            let value = pair.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
            Some(value.trim_ascii_end())
        })
        .unwrap_or_default()
}

/// The first query argument called `name` (case-insensitively), as sent.
fn arg<'a>(query: &'a str, name: &str) -> &'a str {
    (query.split('&'))
        .find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            key.eq_ignore_ascii_case(name).then_some(value)
        })
        .unwrap_or_default()
}

/// One request's way through a hashing balancer: what nginx keeps between
/// the tries of one request.
pub(crate) enum Turn {
    /// `ip_hash`: the client's network (the first three bytes of an IPv4
    /// address, all of an IPv6 one) and the hash so far.
    Ip {
        addr: [u8; 16],
        len: usize,
        hash: u32,
        tries: u32,
    },
    /// `hash KEY`: the sum of the hashes so far, and how many.
    Key {
        key: Vec<u8>,
        hash: u32,
        rehash: u32,
        tries: u32,
    },
    /// `hash KEY consistent`: the point on the circle reached.
    Consistent {
        circle: Arc<Circle>,
        point: usize,
        tries: usize,
    },
}

impl Turn {
    pub(crate) fn ip(addr: Option<IpAddr>) -> Self {
        let mut bytes = [0; 16];
        let len = match addr.map(|ip| ip.to_canonical()) {
            Some(IpAddr::V4(ip)) => {
                bytes[..4].copy_from_slice(&ip.octets());
                3
            }
            Some(IpAddr::V6(ip)) => {
                bytes = ip.octets();
                16
            }
            None => 3,
        };
        Self::Ip {
            addr: bytes,
            len,
            hash: 89,
            tries: 0,
        }
    }

    pub(crate) fn key(key: Vec<u8>) -> Self {
        Self::Key {
            key,
            hash: 0,
            rehash: 0,
            tries: 0,
        }
    }
}

/// The members a hash maps to: all but the backups, in order.
fn hashed(upstreams: &[Arc<Upstream>]) -> Vec<usize> {
    (0..upstreams.len())
        .filter(|&i| !upstreams[i].spec.member.backup)
        .collect()
}

/// Whether the hash may send the request to member `i`.
fn takes(upstreams: &[Arc<Upstream>], tried: &[usize], i: usize) -> bool {
    let upstream = &upstreams[i];
    !tried.contains(&i) && !upstream.spec.member.down && upstream.is_up() && !upstream.is_full()
}

/// The member a weighted `hash` falls on: nginx lays the members out by
/// weight and takes the one `hash` modulo their total lands in. (An SRV
/// record's weight may be 0; nginx's are 1 at least, and so are these.)
fn by_weight(upstreams: &[Arc<Upstream>], members: &[usize], hash: u32) -> usize {
    let weight = |i: usize| upstreams[i].weight.max(1);
    let total: usize = members.iter().map(|&i| weight(i)).sum();
    let mut w = hash as usize % total;
    for &i in members {
        match w.checked_sub(weight(i)) {
            Some(left) => w = left,
            None => return i,
        }
    }
    unreachable!("w is below the total of the weights")
}

/// nginx's way through `ip_hash` and `hash KEY`: `next` gives each try's
/// hash, and the first member one lands on that may take the request is the
/// one; `None` for round robin with one member, or after twenty tries.
fn twenty_tries(
    upstreams: &[Arc<Upstream>],
    tried: &[usize],
    members: &[usize],
    tries: &mut u32,
    mut next: impl FnMut() -> u32,
) -> Option<usize> {
    if *tries > 20 || members.len() < 2 {
        return None;
    }
    loop {
        let i = by_weight(upstreams, members, next());
        if takes(upstreams, tried, i) {
            return Some(i);
        }
        *tries += 1;
        if *tries > 20 {
            return None;
        }
    }
}

/// The member for this try, or `None` for round robin, as nginx falls back
/// to it: `ip_hash` and `hash KEY` with one member, or after twenty tries
/// that found none; `hash KEY consistent` once every point was tried.
/// `round_robin` picks among members of one name (a host name's addresses).
pub(crate) fn pick(
    upstreams: &[Arc<Upstream>],
    tried: &[usize],
    turn: &mut Turn,
    round_robin: impl Fn(&[usize]) -> Option<usize>,
) -> Option<usize> {
    let members = hashed(upstreams);
    match turn {
        Turn::Ip {
            addr,
            len,
            hash,
            tries,
        } => {
            let mut h = *hash;
            let found = twenty_tries(upstreams, tried, &members, tries, || {
                for &byte in &addr[..*len] {
                    h = (h * 113 + u32::from(byte)) % 6271;
                }
                h
            });
            if found.is_some() {
                *hash = h;
            }
            found
        }
        Turn::Key {
            key,
            hash,
            rehash,
            tries,
        } => twenty_tries(upstreams, tried, &members, tries, || {
            // Cache::Memcached's: ((crc32([REHASH] KEY) >> 16) & 0x7fff) + PREV.
            let mut crc = crc32fast::Hasher::new();
            if *rehash > 0 {
                crc.update(rehash.to_string().as_bytes());
            }
            crc.update(key);
            *hash = hash.wrapping_add((crc.finalize() >> 16) & 0x7fff);
            *rehash += 1;
            *hash
        }),
        Turn::Consistent {
            circle,
            point,
            tries,
        } => {
            let points = &circle.points;
            while *tries < points.len() {
                let name = &points[*point % points.len()].1;
                let named: Vec<usize> = (members.iter().copied())
                    .filter(|&i| takes(upstreams, tried, i) && *server(&upstreams[i]) == **name)
                    .collect();
                if let Some(i) = round_robin(&named) {
                    return Some(i);
                }
                *point += 1;
                *tries += 1;
            }
            None
        }
    }
}

/// The circle of `hash KEY consistent`: each member's name hashed 160 times
/// its weight (Cache::Memcached::Fast's points), sorted.
pub(crate) struct Circle {
    /// What it was made of: each member's name and weight.
    of: Vec<(String, usize)>,
    /// The points, each with its member's name.
    points: Vec<(u32, Arc<str>)>,
}

/// A member's name on the circle: nginx's `server` as written.
fn server(upstream: &Upstream) -> String {
    match &upstream.spec.address {
        Address::Tcp(authority) => authority.clone(),
        Address::Unix(path) => format!("unix:{}", path.display()),
    }
}

impl Circle {
    fn new(of: Vec<(String, usize)>) -> Self {
        let mut points = Vec::new();
        for (name, weight) in &of {
            // crc32(HOST \0 PORT PREV_HASH), PORT the digits after the last `:`.
            let (host, port) = match name.strip_prefix("unix:") {
                Some(path) => (path, ""),
                None => match name.rsplit_once(':') {
                    Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => (host, port),
                    _ => (name.as_str(), ""),
                },
            };
            let mut base = crc32fast::Hasher::new();
            base.update(host.as_bytes());
            base.update(&[0]);
            base.update(port.as_bytes());
            let shared: Arc<str> = name.as_str().into();
            let mut prev = 0u32;
            for _ in 0..weight * 160 {
                let mut point = base.clone();
                point.update(&prev.to_le_bytes());
                prev = point.finalize();
                points.push((prev, shared.clone()));
            }
        }
        points.sort_by_key(|&(hash, _)| hash);
        points.dedup_by_key(|&mut (hash, _)| hash);
        Self { of, points }
    }

    /// The circle for `upstreams`, made again when they changed.
    pub(crate) fn of(cache: &Mutex<Option<Arc<Self>>>, upstreams: &[Arc<Upstream>]) -> Arc<Self> {
        let members = hashed(upstreams);
        let of: Vec<(String, usize)> = (members.iter())
            .map(|&i| (server(&upstreams[i]), upstreams[i].weight))
            .collect();
        let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
        match &*cache {
            Some(circle) if circle.of == of => circle.clone(),
            _ => cache.insert(Arc::new(Self::new(of))).clone(),
        }
    }

    /// Where `key` starts on the circle.
    pub(crate) fn start(self: Arc<Self>, key: &[u8]) -> Turn {
        let hash = crc32fast::hash(key);
        Turn::Consistent {
            point: self.points.partition_point(|&(point, _)| point < hash),
            circle: self,
            tries: 0,
        }
    }
}
