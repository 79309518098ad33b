//! Self-signed certificates for the TLS tests.

use std::path::{Path, PathBuf};

/// A certificate for `localhost` and its key, written as PEM files in `dir`
/// (`NAME.crt`, `NAME.key`), and the certificate's DER, for clients to trust.
pub fn certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    (cert, key, made.cert.der().to_vec())
}
