//! Link options for the binaries, each where the toolchain has it:
//!
//! - packed relative relocations (`-z pack-relative-relocs`, DT_RELR; binutils
//!   2.38, glibc 2.36): a position-independent executable's relocation table
//!   then takes 8 KiB instead of 390, which every start reads whole;
//! - the functions of `link-order.txt` laid out first and together
//!   (`--symbol-ordering-file`, lld's, the linker rustc uses on x86-64 Linux):
//!   a request then runs from a few pages of the binary's code, and a process
//!   at rest has touched a few, instead of pages all through it.
//!   `link-order.py` writes the file.
//!
//! A toolchain without one links as before.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const RELR: &str = "-Wl,-z,pack-relative-relocs";
const ORDER: &str = "link-order.txt";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={ORDER}");
    // The probes' answers are the compilers': others ask again.
    println!("cargo:rerun-if-env-changed=CC");
    println!("cargo:rerun-if-env-changed=RUSTC");
    let target = std::env::var("TARGET").unwrap_or_default();
    if !target.contains("linux-gnu") {
        return;
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    if cc_links_with(&out, RELR) {
        println!("cargo:rustc-link-arg-bins={RELR}");
    }
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let order = [
        format!("-Wl,--symbol-ordering-file={}", dir.join(ORDER).display()),
        // Names the list has and this build does not (an older list) are no error.
        "-Wl,--no-warn-symbol-ordering".to_owned(),
    ];
    if rustc_links_with(&out, &target, &order) {
        for flag in order {
            println!("cargo:rustc-link-arg-bins={flag}");
        }
    }
}

/// Whether the C compiler links a position-independent executable with `flag`.
fn cc_links_with(out: &Path, flag: &str) -> bool {
    let source = out.join("probe.c");
    if std::fs::write(&source, "int main(void) { return 0; }\n").is_err() {
        return false;
    }
    let compiler = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    Command::new(compiler)
        .args(["-pie", "-fPIE", flag, "-o"])
        .arg(out.join("probe"))
        .arg(&source)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Whether rustc, with this build's flags, links a program with `flags`: the
/// linker it picks is the one that will link the binaries.
fn rustc_links_with(out: &Path, target: &str, flags: &[String]) -> bool {
    let source = out.join("probe.rs");
    if std::fs::write(&source, "fn main() {}\n").is_err() {
        return false;
    }
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let build_flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let mut command = Command::new(rustc);
    command
        .args(build_flags.split('\x1f').filter(|flag| !flag.is_empty()))
        .args(["--target", target, "-o"])
        .arg(out.join("probe-rs"));
    for flag in flags {
        command.arg("-C").arg(format!("link-arg={flag}"));
    }
    command
        .arg(&source)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}
