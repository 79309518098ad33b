//! Links the binaries with packed relative relocations (`-z
//! pack-relative-relocs`, DT_RELR) where the linker and the C library have
//! them (binutils 2.38, glibc 2.36): a position-independent executable's
//! relocation table then takes 8 KiB instead of 390, which every start reads
//! whole. A linker without them links as before.

use std::path::PathBuf;
use std::process::{Command, Stdio};

const FLAG: &str = "-Wl,-z,pack-relative-relocs";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // The probe's answer is the compiler's: another one asks again.
    println!("cargo:rerun-if-env-changed=CC");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.contains("linux-gnu") && links_with(FLAG) {
        println!("cargo:rustc-link-arg-bins={FLAG}");
    }
}

/// Whether the C compiler links a position-independent executable with `flag`.
fn links_with(flag: &str) -> bool {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
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
