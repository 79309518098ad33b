//! A live status page over a [`Metrics`](super::Metrics)' counters, as
//! nginx's `stub_status` and HAProxy's stats page: one HTML page with no
//! external assets, readable without JavaScript, and a few lines of script
//! that poll its JSON twin (`PATH.json`) every second to draw rates, p50/p99
//! and sparklines.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use stackway::response::escape_html;
use stackway::{App, Html, IntoResponse, Json, Request, Response};

use super::{BUCKETS, NONE, State};

/// A live status page over a [`Metrics`](super::Metrics)' counters: one
/// HTML page with no external assets, readable without JavaScript, whose
/// script polls its JSON twin (`PATH.json`) every second to draw rates,
/// p50/p99 and sparklines. Made by
/// [`Metrics::status_page`](super::Metrics::status_page).
#[derive(Debug, Clone)]
pub struct StatusPage {
    state: Arc<State>,
    path: String,
    json: String,
    listeners: Vec<String>,
}

impl StatusPage {
    pub(super) fn new(state: Arc<State>) -> Self {
        Self {
            state,
            path: "/status".to_owned(),
            json: "/status.json".to_owned(),
            listeners: Vec::new(),
        }
    }

    /// Serves the page at `path` (default `/status`) and its JSON at
    /// `path.json`.
    pub fn path(mut self, path: &str) -> Self {
        self.path = path.to_owned();
        self.json = format!("{path}.json");
        self
    }

    /// The listening addresses to show.
    pub fn listeners(mut self, listeners: Vec<String>) -> Self {
        self.listeners = listeners;
        self
    }

    /// Whether `req` asks for the page or its JSON.
    pub fn serves(&self, req: &Request) -> bool {
        self.serves_path(req.uri().path())
    }

    /// Whether a request for `path` asks for the page or its JSON.
    pub fn serves_path(&self, path: &str) -> bool {
        path == self.path || path == self.json
    }

    /// The page's data.
    pub fn snapshot(&self) -> Value {
        let state = &self.state;
        let mut mounts: Vec<Value> = state
            .mounts_sorted()
            .into_iter()
            .map(|(mount, stats)| {
                let (sum, count, buckets) = stats.latency.snapshot();
                let errors: u64 = stats
                    .requests
                    .iter()
                    .map(|m| m[4].load(Ordering::Relaxed))
                    .sum();
                json!({
                    "mount": &*mount,
                    "requests": count,
                    "errors": errors,
                    "seconds": sum,
                    "buckets": buckets.iter().map(|(_, n)| n).collect::<Vec<_>>(),
                })
            })
            .collect();
        mounts.sort_by(|a, b| a["mount"].as_str().cmp(&b["mount"].as_str()));
        let server = state.server.as_ref().map(|read| read());
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": state.started.elapsed().as_secs_f64(),
            "listeners": self.listeners,
            "in_flight": state.in_flight(),
            "connections": {
                "accepted": server.map(|s| s.connections_accepted),
                "open": server.map(|s| s.connections_open),
            },
            "bytes": {
                "in": state.bytes_in.load(Ordering::Relaxed),
                "out": state.bytes_out.load(Ordering::Relaxed),
            },
            "static": {
                "file": state.statics[0].load(Ordering::Relaxed),
                "memory": state.statics[1].load(Ordering::Relaxed),
                "miss": state.statics[2].load(Ordering::Relaxed),
            },
            "bounds": BUCKETS,
            "pools": state.pools.iter().map(|(mount, read)| {
                let r = read();
                json!({"mount": mount, "threads": r.threads, "busy": r.busy, "queued": r.queued, "jobs": r.jobs, "waited_seconds": r.waited_seconds, "harakiri": r.harakiri})
            }).collect::<Vec<_>>(),
            "upstreams": state.upstreams.iter().flat_map(|(mount, read)| read().into_iter().map(move |u| json!({
                "mount": mount,
                "upstream": u.name,
                "up": u.up,
                "answered": u.answered,
                "failed": u.failed,
                "in_flight": u.in_flight,
                "connections": u.connections,
            }))).collect::<Vec<_>>(),
            "caches": state.caches.iter().map(|(cache, read)| {
                let r = read();
                json!({"cache": cache, "hits": r.hits, "misses": r.misses, "revalidated": r.revalidated, "stored": r.stored, "responses": r.responses, "bytes": r.bytes})
            }).collect::<Vec<_>>(),
            "mounts": mounts,
            "errors": state.errors.lock().unwrap_or_else(|e| e.into_inner()).iter().rev().map(|e| json!({
                "seconds_ago": e.at.elapsed().as_secs(),
                "method": e.method,
                "status": e.status,
                "mount": e.mount,
            })).collect::<Vec<_>>(),
        })
    }

    /// Answers `req` (the page or its JSON) with `data`: this page's
    /// [`snapshot`](Self::snapshot), or several [merged](Self::merge).
    pub fn answer(&self, req: &Request, data: &Value) -> Response {
        let mut res = match req.uri().path() {
            path if path == self.json => Json(data).into_response(),
            path if path == self.path => Html(self.page(data)).into_response(),
            _ => StatusCode::NOT_FOUND.into_response(),
        };
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        res
    }

    /// The snapshot of a process that has ended, as it joins the live ones in
    /// [`merge`](Self::merge): its counts stay, so that no total goes back
    /// when a process is replaced; what it held at the end (requests in
    /// flight, open connections, threads, upstreams up) and its recent errors
    /// go.
    pub fn retired(snapshot: &Value) -> Value {
        let mut retired = snapshot.clone();
        if let Value::Object(top) = &mut retired {
            for gone in ["uptime_seconds", "listeners", "in_flight", "errors"] {
                top.remove(gone);
            }
        }
        if let Some(connections) = retired["connections"].as_object_mut() {
            connections.remove("open");
        }
        let held = [
            ("pools", &["threads", "busy", "queued"][..]),
            ("upstreams", &["up", "in_flight", "connections"][..]),
            ("caches", &["responses", "bytes"][..]),
        ];
        for (list, fields) in held {
            for entry in retired[list].as_array_mut().into_iter().flatten() {
                if let Some(entry) = entry.as_object_mut() {
                    for field in fields {
                        entry.remove(*field);
                    }
                }
            }
        }
        retired
    }

    /// The snapshots of several processes as one: counts, histogram
    /// buckets and gauges summed, mounts, pools and upstreams matched by
    /// name, the last errors of all, the longest uptime; with a
    /// `processes` array, a row per process is shown.
    pub fn merge(snapshots: &[Value]) -> Value {
        let mut merged = snapshots.first().cloned().unwrap_or(Value::Null);
        for snapshot in snapshots.iter().skip(1) {
            merge_into(&mut merged, snapshot);
        }
        if let Some(errors) = merged["errors"].as_array_mut() {
            errors.sort_by_key(|e| e["seconds_ago"].as_u64());
            errors.truncate(ERRORS_SHOWN);
        }
        merged
    }

    fn page(&self, data: &Value) -> String {
        let mut rows = String::new();
        for mount in data["mounts"].as_array().into_iter().flatten() {
            let buckets: Vec<u64> = mount["buckets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_u64)
                .collect();
            let name = escape_html(mount["mount"].as_str().unwrap_or(NONE));
            let _ = write!(
                rows,
                "<tr data-mount=\"{name}\"><td>{name}</td><td class=n data-f=requests>{}</td>\
                 <td class=n data-f=rate>–</td><td class=n data-f=p50>{}</td><td class=n data-f=p99>{}</td>\
                 <td class=n data-f=errors>{}</td><td><svg width=120 height=24><polyline data-f=spark \
                 fill=none stroke=#2a7 stroke-width=1.5 points=\"\"/></svg></td></tr>",
                mount["requests"],
                quantile_ms(&buckets, 0.5),
                quantile_ms(&buckets, 0.99),
                mount["errors"],
            );
        }
        let mut errors = String::new();
        for e in data["errors"].as_array().into_iter().flatten() {
            let _ = write!(
                errors,
                "<tr><td>{}s ago</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                e["seconds_ago"],
                escape_html(e["method"].as_str().unwrap_or("")),
                e["status"],
                escape_html(e["mount"].as_str().unwrap_or("")),
            );
        }
        let mut upstreams = String::new();
        for u in data["upstreams"].as_array().into_iter().flatten() {
            let _ = write!(
                upstreams,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr>",
                escape_html(u["mount"].as_str().unwrap_or("")),
                escape_html(u["upstream"].as_str().unwrap_or("")),
                if u["up"].as_bool() == Some(true) {
                    "up"
                } else {
                    "DOWN"
                },
                u["answered"],
                u["failed"],
                u["in_flight"],
                u["connections"],
            );
        }
        let mut pools = String::new();
        for p in data["pools"].as_array().into_iter().flatten() {
            let _ = write!(
                pools,
                "<tr><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr>",
                escape_html(p["mount"].as_str().unwrap_or("")),
                p["busy"],
                p["threads"],
                p["queued"],
                p["jobs"],
            );
        }
        let mut caches = String::new();
        for c in data["caches"].as_array().into_iter().flatten() {
            let _ = write!(caches, "<tr>{}</tr>", cache_cells(c));
        }
        let listeners = data["listeners"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(escape_html)
            .collect::<Vec<_>>()
            .join(", ");
        let mut processes = String::new();
        for p in data["processes"].as_array().into_iter().flatten() {
            let _ = write!(
                processes,
                "<tr><td class=n>{}</td><td class=n>{}</td><td class=n>{:.0}</td><td class=n>{}</td><td class=n>{:.1}</td><td class=n>{}</td><td class=n>{}</td></tr>",
                p["slot"],
                p["pid"],
                p["uptime_seconds"].as_f64().unwrap_or(0.0),
                p["requests"],
                p["rss_bytes"].as_f64().unwrap_or(0.0) / f64::from(1 << 20),
                p["busy_threads"],
                p["harakiri"],
            );
        }
        if !processes.is_empty() {
            processes = format!(
                "<h2>Processes</h2>\n<table id=processes><thead><tr><th>slot</th><th>pid</th><th>up (s)</th><th>requests</th><th>RSS (MiB)</th><th>busy threads</th><th>harakiri</th></tr></thead><tbody>{processes}</tbody></table>\n"
            );
        }
        PAGE.replace("{version}", env!("CARGO_PKG_VERSION"))
            .replace(
                "{uptime}",
                &format!("{:.0}", data["uptime_seconds"].as_f64().unwrap_or(0.0)),
            )
            .replace("{listeners}", &listeners)
            .replace("{in_flight}", &data["in_flight"].to_string())
            .replace("{open}", &data["connections"]["open"].to_string())
            .replace(
                "{static}",
                &format!(
                    "{} / {} / {}",
                    data["static"]["file"], data["static"]["memory"], data["static"]["miss"]
                ),
            )
            .replace("{rows}", &rows)
            .replace("{errors}", &errors)
            .replace("{upstreams}", &upstreams)
            .replace("{pools}", &pools)
            .replace("{caches}", &caches)
            .replace("{processes}", &processes)
            .replace("{json}", &escape_html(&self.json))
            .replace(
                "{bounds}",
                &serde_json::to_string(&BUCKETS).unwrap_or_default(),
            )
    }
}

/// The upper bound (in milliseconds) of the bucket where the quantile `q`
/// falls, from per-bucket counts with `+Inf` last; `–` with no request.
fn quantile_ms(buckets: &[u64], q: f64) -> String {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return "–".to_owned();
    }
    let wanted = (q * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (at, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= wanted {
            return match BUCKETS.get(at) {
                Some(le) => format!("≤ {}", le * 1000.0),
                None => format!("> {}", BUCKETS[BUCKETS.len() - 1] * 1000.0),
            };
        }
    }
    "–".to_owned()
}

impl App for StatusPage {
    async fn call(&self, req: Request) -> Response {
        self.answer(&req, &self.snapshot())
    }
}

/// A cache's row: the same cells as the page's script makes.
fn cache_cells(c: &Value) -> String {
    let (hits, misses) = (
        c["hits"].as_u64().unwrap_or(0),
        c["misses"].as_u64().unwrap_or(0),
    );
    let ratio = match hits + misses {
        0 => "–".to_owned(),
        all => format!("{:.1} %", 100.0 * hits as f64 / all as f64),
    };
    format!(
        "<td>{}</td><td class=n>{hits}</td><td class=n>{misses}</td><td class=n>{ratio}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{:.1}</td>",
        escape_html(c["cache"].as_str().unwrap_or("")),
        c["revalidated"],
        c["stored"],
        c["responses"],
        c["bytes"].as_f64().unwrap_or(0.0) / f64::from(1 << 20),
    )
}

/// How many of the last errors the merged page shows.
const ERRORS_SHOWN: usize = 20;

/// Adds `from` into `into`: see [`StatusPage::merge`].
fn merge_into(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(into), Value::Object(from)) => {
            for (key, value) in from {
                match (key.as_str(), into.get_mut(key)) {
                    ("version" | "bounds" | "listeners", Some(_)) => {}
                    ("uptime_seconds", Some(mine)) => {
                        if value.as_f64() > mine.as_f64() {
                            *mine = value.clone();
                        }
                    }
                    ("mounts" | "pools", Some(mine)) => merge_by(mine, value, &["mount"]),
                    ("caches", Some(mine)) => merge_by(mine, value, &["cache"]),
                    ("upstreams", Some(mine)) => merge_by(mine, value, &["mount", "upstream"]),
                    ("errors", Some(Value::Array(mine))) => {
                        mine.extend(value.as_array().into_iter().flatten().cloned());
                    }
                    (_, Some(mine)) => merge_into(mine, value),
                    (_, None) => {
                        into.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (Value::Array(into), Value::Array(from)) => {
            for (mine, theirs) in into.iter_mut().zip(from) {
                merge_into(mine, theirs);
            }
        }
        (Value::Bool(into), Value::Bool(from)) => *into |= *from,
        (into @ Value::Number(_), Value::Number(from)) => {
            *into = match (into.as_u64(), from.as_u64()) {
                (Some(a), Some(b)) => json!(a + b),
                _ => json!(into.as_f64().unwrap_or(0.0) + from.as_f64().unwrap_or(0.0)),
            };
        }
        (into @ Value::Null, from) => *into = from.clone(),
        _ => {}
    }
}

/// Merges the objects of two arrays that have the same `keys`; the others
/// are added.
fn merge_by(into: &mut Value, from: &Value, keys: &[&str]) {
    let Value::Array(into) = into else { return };
    for theirs in from.as_array().into_iter().flatten() {
        let same = |mine: &&mut Value| keys.iter().all(|k| mine[*k] == theirs[*k]);
        match into.iter_mut().find(same) {
            Some(mine) => merge_into(mine, theirs),
            None => into.push(theirs.clone()),
        }
    }
    into.sort_by(|a, b| a[keys[0]].as_str().cmp(&b[keys[0]].as_str()));
}

const PAGE: &str = r##"<!doctype html>
<html lang=en><head><meta charset=utf-8><title>stackway status</title>
<meta name=viewport content="width=device-width">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.3em}h2{font-size:1.05em;margin-top:1.6em}
table{border-collapse:collapse}td,th{padding:.25em .8em;border-bottom:1px solid #ddd;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}
dt{color:#666}
</style></head>
<body data-updates=0>
<h1>stackway {version}</h1>
<dl><dt>uptime</dt><dd id=uptime>{uptime} s</dd><dt>listeners</dt><dd>{listeners}</dd>
<dt>in flight</dt><dd id=in_flight>{in_flight}</dd><dt>connections open</dt><dd id=open>{open}</dd>
<dt>static files: disk / memory / miss</dt><dd id=static>{static}</dd></dl>
<h2>Mounts</h2>
<table id=mounts><thead><tr><th>mount</th><th>requests</th><th>req/s</th><th>p50 ms</th><th>p99 ms</th><th>5xx</th><th>last 60 s</th></tr></thead>
<tbody>{rows}</tbody></table>
<h2>Upstreams</h2>
<table id=upstreams><thead><tr><th>mount</th><th>upstream</th><th>state</th><th>answered</th><th>failed</th><th>in flight</th><th>connections</th></tr></thead><tbody>{upstreams}</tbody></table>
<h2>Python pools</h2>
<table id=pools><thead><tr><th>mount</th><th>busy</th><th>threads</th><th>queued</th><th>requests</th></tr></thead><tbody>{pools}</tbody></table>
<h2>HTTP caches</h2>
<table id=caches><thead><tr><th>cache</th><th>hits</th><th>misses</th><th>hit ratio</th><th>revalidated</th><th>stored</th><th>held</th><th>MiB held</th></tr></thead><tbody>{caches}</tbody></table>
{processes}<h2>Last errors</h2>
<table id=errors><thead><tr><th>when</th><th>method</th><th>status</th><th>mount</th></tr></thead><tbody>{errors}</tbody></table>
<script>
"use strict";
const bounds={bounds},last={},history={};
function q(b,p){const t=b.reduce((a,n)=>a+n,0);if(!t)return"–";let s=0,w=Math.max(1,Math.ceil(p*t));
for(let i=0;i<b.length;i++){s+=b[i];if(s>=w)return i<bounds.length?"≤ "+bounds[i]*1000:"> "+bounds[bounds.length-1]*1000}return"–"}
function esc(t){return String(t).replace(/[&<>"]/g,c=>({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]))}
async function tick(){
 const d=await (await fetch("{json}",{cache:"no-store"})).json();
 document.getElementById("uptime").textContent=Math.round(d.uptime_seconds)+" s";
 document.getElementById("in_flight").textContent=d.in_flight;
 document.getElementById("open").textContent=d.connections.open;
 document.getElementById("static").textContent=d.static.file+" / "+d.static.memory+" / "+d.static.miss;
 const body=document.querySelector("#mounts tbody");
 for(const m of d.mounts){
  let row=[...body.rows].find(r=>r.dataset.mount===m.mount);
  if(!row){row=body.insertRow();row.dataset.mount=m.mount;row.innerHTML="<td>"+esc(m.mount)+"</td><td class=n data-f=requests></td><td class=n data-f=rate></td><td class=n data-f=p50></td><td class=n data-f=p99></td><td class=n data-f=errors></td><td><svg width=120 height=24><polyline data-f=spark fill=none stroke=#2a7 stroke-width=1.5 points=''/></svg></td>"}
  const prev=last[m.mount],now=performance.now();
  const recent=prev?m.buckets.map((n,i)=>n-prev.buckets[i]):m.buckets;
  const rate=prev?(m.requests-prev.requests)/((now-prev.at)/1000):0;
  last[m.mount]={requests:m.requests,buckets:m.buckets,at:now};
  const h=history[m.mount]=(history[m.mount]||[]).concat([rate]).slice(-60);
  const f=k=>row.querySelector("[data-f="+k+"]");
  f("requests").textContent=m.requests;f("rate").textContent=rate.toFixed(1);
  f("p50").textContent=q(recent,.5);f("p99").textContent=q(recent,.99);f("errors").textContent=m.errors;
  const top=Math.max(1,...h);f("spark").setAttribute("points",h.map((v,i)=>(i*2)+","+(22-20*v/top).toFixed(1)).join(" "));
 }
 document.querySelector("#upstreams tbody").innerHTML=d.upstreams.map(u=>"<tr><td>"+esc(u.mount)+"</td><td>"+esc(u.upstream)+"</td><td>"+(u.up?"up":"DOWN")+"</td><td class=n>"+u.answered+"</td><td class=n>"+u.failed+"</td><td class=n>"+u.in_flight+"</td><td class=n>"+u.connections+"</td></tr>").join("");
 document.querySelector("#pools tbody").innerHTML=d.pools.map(p=>"<tr><td>"+esc(p.mount)+"</td><td class=n>"+p.busy+"</td><td class=n>"+p.threads+"</td><td class=n>"+p.queued+"</td><td class=n>"+p.jobs+"</td></tr>").join("");
 document.querySelector("#caches tbody").innerHTML=d.caches.map(c=>"<tr><td>"+esc(c.cache)+"</td><td class=n>"+c.hits+"</td><td class=n>"+c.misses+"</td><td class=n>"+(c.hits+c.misses?(100*c.hits/(c.hits+c.misses)).toFixed(1)+" %":"–")+"</td><td class=n>"+c.revalidated+"</td><td class=n>"+c.stored+"</td><td class=n>"+c.responses+"</td><td class=n>"+(c.bytes/1048576).toFixed(1)+"</td></tr>").join("");
 document.querySelector("#errors tbody").innerHTML=d.errors.map(e=>"<tr><td>"+e.seconds_ago+"s ago</td><td>"+esc(e.method)+"</td><td>"+e.status+"</td><td>"+esc(e.mount)+"</td></tr>").join("");
 document.body.dataset.updates=+document.body.dataset.updates+1;
}
tick();setInterval(tick,1000);
</script>
</body></html>
"##;
