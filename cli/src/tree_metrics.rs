//! `--metrics` and `--status` under `--processes`: a scrape counts every
//! request of the tree, whichever process serves it, and the status page
//! shows the tree.
//!
//! Each server process writes its exposition and its status snapshot to a
//! private directory of its supervisor's (`STACKWAY_METRICS_DIR`, mode 700)
//! every second and once more when it has drained; the process that answers
//! writes its own anew and sums (or merges) every file there. The
//! supervisor adds `retired.prom` and `retired.status.json`, the counts of
//! the processes that ended, so that no total goes back when a process is
//! replaced, and a row per process.
//!
//! ```text
//! $STACKWAY_METRICS_DIR/ 1234.prom 1235.prom   each live process's exposition
//!                        retired.prom           counters of the processes that ended
//!                        retired.status.json    … and their counts for the status page
//!                        supervisor.prom        stackway_process_* rows
//!                        1234.status.json …     each live process's status snapshot
//!                        processes.json         the rows, for the status page
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stackway::{IntoResponse, Request, Response};
use stackway_middleware::metrics::{Exposition, StatusPage};

/// Set in a server process's environment by a supervisor that sums metrics.
pub(crate) const DIR: &str = "STACKWAY_METRICS_DIR";

/// The files the supervisor keeps the ended processes' counts in.
const RETIRED: &str = "retired.prom";
const RETIRED_STATUS: &str = "retired.status.json";

/// The file of the supervisor's rows for the status page.
const PROCESSES: &str = "processes.json";

/// In a server process: its exposition and status, written to the
/// directory and summed with the others'.
#[derive(Debug, Clone)]
pub(crate) struct TreeMetrics {
    exposition: Option<Exposition>,
    status: Option<StatusPage>,
    dir: PathBuf,
}

impl TreeMetrics {
    /// When this process's supervisor sums metrics; starts writing this
    /// process's share every second.
    pub(crate) fn start(
        exposition: Option<Exposition>,
        status: Option<StatusPage>,
    ) -> Option<Self> {
        let dir = PathBuf::from(std::env::var_os(DIR)?);
        let tree = Self {
            exposition,
            status,
            dir,
        };
        let writer = tree.clone();
        let started = std::thread::Builder::new()
            .name("stackway-metrics".into())
            .spawn(move || {
                loop {
                    writer.write_own();
                    std::thread::sleep(Duration::from_secs(1));
                }
            });
        if let Err(e) = started {
            tracing::warn!("cannot write this process's metrics for its supervisor: {e}");
        }
        Some(tree)
    }

    /// Writes this process's exposition and status (each whole: a reader
    /// never sees half).
    pub(crate) fn write_own(&self) {
        let pid = std::process::id();
        let own = [
            (
                format!("{pid}.prom"),
                self.exposition.as_ref().map(Exposition::render),
            ),
            (
                format!("{pid}.status.json"),
                self.status.as_ref().map(|s| s.snapshot().to_string()),
            ),
        ];
        for (name, text) in own {
            let Some(text) = text else { continue };
            if let Err(e) = write_whole(&self.dir.join(&name), &text) {
                tracing::warn!("cannot write {name} for the supervisor: {e}");
            }
        }
    }

    /// The files of the directory whose names end with `suffix`.
    fn read_all(&self, suffix: &str) -> Vec<String> {
        let files = std::fs::read_dir(&self.dir).into_iter().flatten().flatten();
        files
            .map(|entry| entry.path())
            .filter(|path| path.to_str().is_some_and(|p| p.ends_with(suffix)))
            .filter_map(|path| std::fs::read_to_string(path).ok())
            .collect()
    }

    /// Answers a scrape with every process's exposition (and the
    /// supervisor's files) summed.
    pub(crate) async fn metrics(&self) -> Response {
        let tree = self.clone();
        let summed = tokio::task::spawn_blocking(move || {
            tree.write_own();
            let mut sum = Sum::default();
            for text in tree.read_all(".prom") {
                sum.add(&text, false);
            }
            sum.render()
        });
        Exposition::respond(summed.await.unwrap_or_default())
    }

    /// Answers the status page (or its JSON) with every process's snapshot
    /// merged, and the supervisor's row per process.
    pub(crate) async fn status(&self, req: Request) -> Response {
        let Some(page) = self.status.clone() else {
            return stackway::http::StatusCode::NOT_FOUND.into_response();
        };
        let tree = self.clone();
        let merged = tokio::task::spawn_blocking(move || {
            tree.write_own();
            let snapshots: Vec<Value> = tree
                .read_all(".status.json")
                .iter()
                .filter_map(|text| serde_json::from_str(text).ok())
                .collect();
            let mut merged = StatusPage::merge(&snapshots);
            let processes = std::fs::read_to_string(tree.dir.join(PROCESSES)).unwrap_or_default();
            merged["processes"] = serde_json::from_str(&processes).unwrap_or_default();
            merged
        });
        page.answer(&req, &merged.await.unwrap_or_default())
    }
}

/// Writes `text` to `file` through a temporary file of this thread's renamed
/// over it.
pub(crate) fn write_whole(file: &Path, text: &str) -> std::io::Result<()> {
    let thread = format!("{:?}", std::thread::current().id());
    let partial = file.with_extension(format!(
        "{}.partial",
        thread.trim_matches(|c: char| !c.is_ascii_digit())
    ));
    std::fs::write(&partial, text)?;
    std::fs::rename(partial, file)
}

/// The supervisor's side: the directory, the counters of the processes
/// that ended, and the replacements by why.
#[derive(Debug)]
pub(crate) struct Ledger {
    dir: tempfile::TempDir,
    retired: Sum,
    retired_status: Value,
    replaced: BTreeMap<String, u64>,
    written: Option<Instant>,
}

/// A server process as the supervisor sees it, for its row.
pub(crate) struct Row {
    pub(crate) slot: usize,
    pub(crate) pid: u32,
    pub(crate) uptime: Duration,
    pub(crate) rss: u64,
}

impl Ledger {
    /// A directory only this user can read, for this supervisor.
    pub(crate) fn create() -> std::io::Result<Self> {
        // A new name no one can have made before (mode 700), gone with the ledger.
        let dir = tempfile::Builder::new()
            .prefix("stackway-metrics-")
            .tempdir()?;
        Ok(Self {
            dir,
            retired: Sum::default(),
            retired_status: Value::Null,
            replaced: BTreeMap::new(),
            written: None,
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `pid` has ended: its counts join the retired ones.
    pub(crate) fn retire(&mut self, pid: u32) {
        let (prom, status) = (
            self.dir().join(format!("{pid}.prom")),
            self.dir().join(format!("{pid}.status.json")),
        );
        if let Ok(text) = std::fs::read_to_string(&prom) {
            self.retired.add(&text, true);
            self.keep(RETIRED, &self.retired.render());
        }
        let snapshot = std::fs::read_to_string(&status).ok();
        if let Some(snapshot) = snapshot.and_then(|text| serde_json::from_str(&text).ok()) {
            let retired = StatusPage::retired(&snapshot);
            self.retired_status = StatusPage::merge(&[self.retired_status.take(), retired]);
            self.keep(RETIRED_STATUS, &self.retired_status.to_string());
        }
        let _ = std::fs::remove_file(prom);
        let _ = std::fs::remove_file(status);
    }

    fn keep(&self, file: &str, text: &str) {
        if let Err(e) = write_whole(&self.dir().join(file), text) {
            tracing::warn!("cannot keep the counts of a replaced process: {e}");
        }
    }

    /// A process was replaced because of `why` (`max-rss: 130 MiB` counts
    /// as `max-rss`).
    pub(crate) fn replaced(&mut self, why: &str) {
        let why = why.split(':').next().unwrap_or(why).trim();
        *self.replaced.entry(why.to_owned()).or_default() += 1;
        self.written = None;
    }

    /// Writes the rows of `supervisor.prom` and `processes.json`, at most
    /// once a second.
    pub(crate) fn write_rows(&mut self, rows: &[Row]) {
        if self
            .written
            .is_some_and(|at| at.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.written = Some(Instant::now());
        // Each row, with what its process wrote of itself.
        // (the metric, its key in the status page's JSON, its type, its help, its value)
        type Column = (
            &'static str,
            &'static str,
            &'static str,
            &'static str,
            fn(&Row, &str) -> f64,
        );
        let columns: [Column; 5] = [
            (
                "stackway_process_resident_bytes",
                "rss_bytes",
                "gauge",
                "Resident memory of each server process.",
                |row, _| row.rss as f64,
            ),
            (
                "stackway_process_uptime_seconds",
                "uptime_seconds",
                "gauge",
                "How long each server process has served.",
                |row, _| row.uptime.as_secs_f64(),
            ),
            (
                "stackway_process_requests",
                "requests",
                "counter",
                "Requests each server process has answered.",
                |_, own| total(own, "stackway_requests_total"),
            ),
            (
                "stackway_process_busy_threads",
                "busy_threads",
                "gauge",
                "Python threads of each server process running a request.",
                |_, own| total(own, "stackway_pool_busy"),
            ),
            (
                "stackway_process_harakiri",
                "harakiri",
                "counter",
                "Requests of each server process cut off by harakiri.",
                |_, own| total(own, "stackway_pool_harakiri_total"),
            ),
        ];
        let own: Vec<String> = rows
            .iter()
            .map(|row| {
                std::fs::read_to_string(self.dir().join(format!("{}.prom", row.pid)))
                    .unwrap_or_default()
            })
            .collect();
        let mut out = String::new();
        let mut processes: Vec<Value> = rows
            .iter()
            .map(|row| json!({"slot": row.slot, "pid": row.pid}))
            .collect();
        for (name, key, kind, help, value) in columns {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            let suffix = if kind == "counter" { "_total" } else { "" };
            for ((row, own), json) in rows.iter().zip(&own).zip(&mut processes) {
                let labels = format!("slot=\"{}\",pid=\"{}\"", row.slot, row.pid);
                let value = value(row, own);
                let _ = writeln!(out, "{name}{suffix}{{{labels}}} {value}");
                json[key] = json!(value);
            }
        }
        out.push_str("# HELP stackway_process_replacements Server processes replaced, by why.\n");
        out.push_str("# TYPE stackway_process_replacements counter\n");
        for (why, n) in &self.replaced {
            let _ = writeln!(
                out,
                "stackway_process_replacements_total{{reason=\"{why}\"}} {n}"
            );
        }
        let written = write_whole(&self.dir().join("supervisor.prom"), &out).and_then(|()| {
            write_whole(
                &self.dir().join(PROCESSES),
                &Value::from(processes).to_string(),
            )
        });
        if let Err(e) = written {
            tracing::warn!("cannot write the processes' rows: {e}");
        }
    }
}

/// The sum of `text`'s samples named `name`, whatever their labels.
fn total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Expositions summed sample by sample (the same name and labels), in the
/// order their families first appear.
#[derive(Debug, Default)]
pub(crate) struct Sum {
    families: Vec<Family>,
    by_name: HashMap<String, usize>,
}

#[derive(Debug)]
struct Family {
    name: String,
    help: Option<String>,
    kind: String,
    samples: Vec<(String, f64)>,
    by_series: HashMap<String, usize>,
}

impl Sum {
    /// Adds `text`'s samples; with `counters_only`, only those of counters
    /// and histograms (what an ended process leaves that must not go back).
    pub(crate) fn add(&mut self, text: &str, counters_only: bool) {
        let mut help: Option<&str> = None;
        let mut current: Option<usize> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                help = Some(rest);
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
                let counted = matches!(kind, "counter" | "histogram" | "summary");
                current = (counted || !counters_only).then(|| self.family(name, kind, help));
                help = None;
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (Some(at), Some((series, value))) = (current, line.rsplit_once(' ')) else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let family = &mut self.families[at];
            match family.by_series.get(series) {
                Some(&i) => family.samples[i].1 += value,
                None => {
                    family
                        .by_series
                        .insert(series.to_owned(), family.samples.len());
                    family.samples.push((series.to_owned(), value));
                }
            }
        }
    }

    fn family(&mut self, name: &str, kind: &str, help: Option<&str>) -> usize {
        if let Some(&at) = self.by_name.get(name) {
            return at;
        }
        let help = help.map(|h| h.strip_prefix(name).unwrap_or(h).trim().to_owned());
        self.by_name.insert(name.to_owned(), self.families.len());
        self.families.push(Family {
            name: name.to_owned(),
            help,
            kind: kind.to_owned(),
            samples: Vec::new(),
            by_series: HashMap::new(),
        });
        self.families.len() - 1
    }

    /// The sum, in the text exposition format.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        for family in &self.families {
            if let Some(help) = &family.help {
                let _ = writeln!(out, "# HELP {} {help}", family.name);
            }
            let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind);
            for (series, value) in &family.samples {
                let _ = writeln!(out, "{series} {value}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Sum;

    const ONE: &str = "# HELP requests Requests.\n# TYPE requests counter\n\
        requests_total{mount=\"/a\"} 2\nrequests_total{mount=\"/b\"} 1\n\
        # HELP open Open.\n# TYPE open gauge\nopen 3\n";
    const TWO: &str = "# HELP requests Requests.\n# TYPE requests counter\n\
        requests_total{mount=\"/a\"} 5\nrequests_total{mount=\"/c d\"} 1\n\
        # HELP open Open.\n# TYPE open gauge\nopen 4\n";

    #[test]
    fn samples_sum_by_name_and_labels_and_an_ended_process_leaves_its_counters_only() {
        let mut sum = Sum::default();
        sum.add(ONE, false);
        sum.add(TWO, false);
        assert_eq!(
            sum.render(),
            "# HELP requests Requests.\n# TYPE requests counter\n\
             requests_total{mount=\"/a\"} 7\nrequests_total{mount=\"/b\"} 1\n\
             requests_total{mount=\"/c d\"} 1\n\
             # HELP open Open.\n# TYPE open gauge\nopen 7\n"
        );
        let mut retired = Sum::default();
        retired.add(ONE, true);
        assert_eq!(
            retired.render(),
            "# HELP requests Requests.\n# TYPE requests counter\n\
             requests_total{mount=\"/a\"} 2\nrequests_total{mount=\"/b\"} 1\n"
        );
    }
}
