//! Middleware meet only through public API: no module of this crate uses an
//! item another module keeps `pub(crate)`, so anything here could have been
//! written outside the repository. A fact one middleware passes another
//! travels in a public type (`stackway::notes`, `trace_context::Trace`,
//! `profiler::Timings`), visible in a signature.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The `.rs` files under `dir`, recursively.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The top-level module a file belongs to: `proxy` for `src/proxy/body.rs`.
fn module(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next().unwrap();
    let name = first.as_os_str().to_string_lossy();
    name.trim_end_matches(".rs").to_owned()
}

/// The names a file declares `pub(crate)` (functions, types, constants,
/// fields and modules alike).
fn crate_private(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.trim_start().strip_prefix("pub(crate) ") else {
            continue;
        };
        let words: Vec<&str> = rest
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .collect();
        let keywords = [
            "async", "unsafe", "const", "fn", "struct", "enum", "trait", "type", "static", "mod",
            "use",
        ];
        if let Some(name) = words.iter().find(|w| !keywords.contains(w)) {
            names.insert((*name).to_owned());
        }
    }
    names
}

/// Every path a file names that starts `crate::MODULE::`, as the module and
/// the identifiers that follow it: `crate::a::b::C` gives `a`, `[b, C]`;
/// `crate::a::{b::C, D}` gives `a`, `[b, C, D]`.
fn crate_paths(text: &str) -> Vec<(String, Vec<String>)> {
    let ident = |s: &str| -> usize {
        s.find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(s.len())
    };
    let mut found = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        let mut rest = &text[at + "crate::".len()..];
        let mut idents = Vec::new();
        loop {
            let len = ident(rest);
            if len == 0 {
                break;
            }
            idents.push(rest[..len].to_owned());
            rest = &rest[len..];
            let Some(next) = rest.strip_prefix("::") else {
                break;
            };
            rest = next;
            if let Some(group) = rest.strip_prefix('{') {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                idents.extend(
                    group
                        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .filter(|w| !w.is_empty() && *w != "self")
                        .map(str::to_owned),
                );
                break;
            }
        }
        if !idents.is_empty() {
            let module = idents.remove(0);
            found.push((module, idents));
        }
    }
    found
}

#[test]
fn no_module_uses_another_modules_crate_private_items() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = sources(&src);
    let mut private: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let texts: Vec<(PathBuf, String)> = files
        .iter()
        .map(|f| (f.clone(), std::fs::read_to_string(f).unwrap()))
        .collect();
    for (file, text) in &texts {
        private
            .entry(module(&src, file))
            .or_default()
            .extend(crate_private(text));
    }
    let mut breaches = Vec::new();
    for (file, text) in &texts {
        let here = module(&src, file);
        for (there, idents) in crate_paths(text) {
            if there == here {
                continue;
            }
            let Some(hidden) = private.get(&there) else {
                continue;
            };
            for ident in idents.iter().filter(|i| hidden.contains(*i)) {
                breaches.push(format!(
                    "{} uses crate::{there}::…{ident}, which {there} keeps pub(crate)",
                    file.strip_prefix(&src).unwrap().display()
                ));
            }
        }
    }
    assert!(breaches.is_empty(), "{}", breaches.join("\n"));
    // The check reads what it should: some modules do keep items to themselves.
    assert!(private.values().map(BTreeSet::len).sum::<usize>() > 10);
}

#[test]
fn the_check_finds_a_breach() {
    let text = "use crate::proxy::{Proxy, upstream::Pool};\nfn f() { crate::metrics::MountStats::default(); }\n|u: &crate::proxy::Stats| u.answered";
    let paths = crate_paths(text);
    assert_eq!(
        paths,
        [
            (
                "proxy".to_owned(),
                vec!["Proxy".to_owned(), "upstream".to_owned(), "Pool".to_owned()]
            ),
            (
                "metrics".to_owned(),
                vec!["MountStats".to_owned(), "default".to_owned()]
            ),
            ("proxy".to_owned(), vec!["Stats".to_owned()]),
        ]
    );
    let names = crate_private("pub(crate) struct MountStats {\n    pub(crate) async fn go() {}\n");
    assert_eq!(
        names,
        BTreeSet::from(["MountStats".to_owned(), "go".to_owned()])
    );
}
