//! The HTTP caching test suite (http-tests/cache-tests, the snapshot in
//! `../shared/vendor/cache-tests`) against `stackway serve --cache` in front
//! of the suite's own server, through `benches/cache-tests/run.sh`: every
//! required test passes but the one left on purpose (BENCHMARKS.md says why).

use stackway_test_support::external;

use std::path::Path;
use std::process::Command;

#[test]
fn the_http_caching_test_suite_passes_its_required_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let suite = root.join("../shared/vendor/cache-tests");
    if !external::exists(
        &suite,
        "the suite's snapshot, beside the repository in ../shared",
    ) || !external::command("node", "Node.js (the suite's runner)")
        || !external::command("npm", "npm (the suite's packages)")
    {
        return;
    }
    let results = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new("bash")
        .arg("benches/cache-tests/run.sh")
        .arg(results.path())
        .current_dir(&root)
        .env("STACKWAY", env!("CARGO_BIN_EXE_stackway"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("{report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    let failures = report
        .lines()
        .find_map(|line| line.strip_prefix("stackway's required failures: "))
        .expect("the summary names the failures");
    // A 1xx interim response is not passed on: see BENCHMARKS.md.
    assert_eq!(failures, "interim-not-cached");
}
