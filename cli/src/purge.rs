//! Purging the HTTP caches (`--cache`, a mount's `cache`) from the admin
//! listener, and nowhere else: `POST /cache/purge?url=/path` (or a whole
//! URL), `?prefix=/news/`, `?tag=front` (`Cache-Tag`, `Surrogate-Key`)
//! answers `{"purged": N}`.
//!
//! Under `--processes` each process has caches of its own and the admin
//! socket is shared, so the one asked also writes the purge, a line, to a
//! log in its supervisor's private directory (`purges.log` beside the
//! metrics' files); every process follows that log and applies the others'
//! lines within a fifth of a second.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use serde_json::json;
use stackway::http::{Method, StatusCode, header};
use stackway::{IntoResponse, Request, Response};
use stackway_middleware::cache::Purger;

use crate::args::ServeArgs;
use crate::tree_metrics;

/// Where the admin listener answers purges.
const PATH: &str = "/cache/purge";
/// The log of purges, in the supervisor's private directory.
const LOG: &str = "purges.log";
/// How often a process looks for the others' purges.
const FOLLOW: Duration = Duration::from_millis(200);

/// Whether the admin listener answers purges: it is there, and so is a cache.
pub(crate) fn on_admin(args: &ServeArgs) -> bool {
    args.admin_bind.is_some()
        && (args.cache.is_some() || args.mounts.iter().any(|mount| mount.cache.is_some()))
}

/// The caches of this process, purged as one.
pub(crate) struct Purges {
    purgers: Vec<Purger>,
    log: Option<PathBuf>,
}

impl Purges {
    /// Purges `purgers`; under a supervisor, also what the other processes
    /// write to the log, from now on.
    pub(crate) fn new(purgers: Vec<Purger>) -> Self {
        let log = std::env::var_os(tree_metrics::DIR).map(|dir| PathBuf::from(dir).join(LOG));
        if let Some(log) = &log {
            follow(purgers.clone(), log.clone());
        }
        Self { purgers, log }
    }

    pub(crate) fn serves(req: &Request) -> bool {
        req.uri().path() == PATH
    }

    pub(crate) fn answer(&self, req: &Request) -> Response {
        if req.method() != Method::POST {
            let mut res = StatusCode::METHOD_NOT_ALLOWED.into_response();
            res.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
            return res;
        }
        let asked = match asked(req.uri().query().unwrap_or_default()) {
            Ok(asked) => asked,
            Err(why) => return (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response(),
        };
        let purged = apply(&self.purgers, &asked);
        if let Some(log) = &self.log {
            let line = format!("{}\t{}\t{}\n", std::process::id(), asked.0, asked.1);
            let written = OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .and_then(|mut file| file.write_all(line.as_bytes()));
            if let Err(e) = written {
                tracing::error!("cannot pass a purge on to the other processes: {e}");
            }
        }
        tracing::info!(kind = asked.0, value = %asked.1, purged, "purged the cache");
        stackway::Json(json!({ "purged": purged })).into_response()
    }
}

/// What a purge names: its kind (`url`, `prefix`, `tag`) and value.
type Asked = (&'static str, String);

/// The one `url`, `prefix` or `tag` of the query, decoded.
fn asked(query: &str) -> Result<Asked, String> {
    let mut found = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(kind) = kind(name) else {
            return Err(format!(
                "unknown parameter {name:?}: give url, prefix or tag"
            ));
        };
        let value = percent_decode_str(&value.replace('+', " "))
            .decode_utf8()
            .map_err(|_| format!("{name}: not UTF-8"))?
            .into_owned();
        if value.is_empty() || value.chars().any(char::is_control) {
            return Err(format!("{name}: empty, or holds a control character"));
        }
        if found.replace((kind, value)).is_some() {
            return Err("give one of url, prefix and tag".to_owned());
        }
    }
    found.ok_or_else(|| "give url, prefix or tag, as in ?url=/page".to_owned())
}

/// A purge's kind, by its name.
fn kind(name: &str) -> Option<&'static str> {
    ["url", "prefix", "tag"]
        .into_iter()
        .find(|kind| *kind == name)
}

fn apply(purgers: &[Purger], (kind, value): &Asked) -> usize {
    purgers
        .iter()
        .map(|purger| match *kind {
            "url" => purger.url(value),
            "prefix" => purger.prefix(value),
            _ => purger.tag(value),
        })
        .sum()
}

/// Applies the purges other processes write to `log`, from its end now on.
fn follow(purgers: Vec<Purger>, log: PathBuf) {
    let own = std::process::id().to_string();
    let mut offset = std::fs::metadata(&log).map_or(0, |m| m.len());
    let spawned = std::thread::Builder::new()
        .name("stackway-purges".into())
        .spawn(move || {
            loop {
                std::thread::sleep(FOLLOW);
                let Ok(mut file) = File::open(&log) else {
                    continue;
                };
                let mut new = String::new();
                if file.seek(SeekFrom::Start(offset)).is_err()
                    || file.read_to_string(&mut new).is_err()
                {
                    continue;
                }
                // Whole lines only: a line being written is read next time.
                let whole = new.rfind('\n').map_or(0, |end| end + 1);
                offset += whole as u64;
                for line in new[..whole].lines() {
                    let mut fields = line.splitn(3, '\t');
                    let (Some(pid), Some(kind), Some(value)) =
                        (fields.next(), fields.next(), fields.next())
                    else {
                        continue;
                    };
                    if let (Some(kind), true) = (self::kind(kind), pid != own) {
                        apply(&purgers, &(kind, value.to_owned()));
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot follow the other processes' purges: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_purge_names_one_url_prefix_or_tag() {
        assert_eq!(asked("url=%2Fa%3Fb"), Ok(("url", "/a?b".to_owned())));
        assert_eq!(
            asked("tag=front+page"),
            Ok(("tag", "front page".to_owned()))
        );
        assert!(asked("").is_err());
        assert!(asked("url=/a&tag=b").is_err());
        assert!(asked("host=a").is_err());
        assert!(asked("url=%0A").is_err());
    }
}
