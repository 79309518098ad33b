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

/// A self-signed certificate for `names` that says it is a CA, as `openssl
/// req -x509` makes them: `NAME.crt` and `NAME.key` in `dir`.
pub fn self_signed_ca(dir: &Path, name: &str, names: &[&str]) -> (PathBuf, PathBuf) {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = rcgen::CertificateParams::new(names).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (cert_file, key_file) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    (cert_file, key_file)
}

/// A certificate authority of the tests' own: its certificate (`NAME.crt`
/// in `dir`) is what a client is told to trust, and it issues server and
/// client certificates.
pub struct Ca {
    dir: PathBuf,
    /// The CA's certificate file.
    pub cert: PathBuf,
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let issuer =
            rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        let cert = dir.join(format!("{name}.crt"));
        std::fs::write(&cert, issuer.pem()).unwrap();
        Self {
            dir: dir.to_owned(),
            cert,
            issuer,
        }
    }

    /// A server certificate for `names`, written as `NAME.crt` and `NAME.key`.
    pub fn server(&self, name: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        self.issue(name, names, rcgen::ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate whose common name is `name`, for mutual TLS.
    pub fn client(&self, name: &str) -> (PathBuf, PathBuf) {
        self.issue(name, &[], rcgen::ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(
        &self,
        name: &str,
        names: &[&str],
        usage: rcgen::ExtendedKeyUsagePurpose,
    ) -> (PathBuf, PathBuf) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (cert_file, key_file) = (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        (cert_file, key_file)
    }
}
