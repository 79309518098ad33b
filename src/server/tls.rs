//! TLS on rustls: a certificate chain and key read from PEM files, reloaded
//! in place (connections already open keep theirs, new ones get the new).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{ServerConfig, version};

use crate::error::{Error, Kind};

/// A TLS configuration for a [`Listener`](super::Listener): TLS 1.3 and 1.2,
/// ALPN offering `h2` and `http/1.1`, and a certificate that
/// [`reload`](Self::reload) replaces without closing a connection.
///
/// Clones share the certificate: reloading one reloads them all.
#[derive(Clone)]
pub struct Tls {
    certificate: Arc<Certificate>,
    pub(super) acceptor: TlsAcceptor,
}

/// The files and what was last read from them.
#[derive(Debug)]
struct Certificate {
    chain: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Tls {
    /// Reads a certificate chain (the server's certificate first, then its
    /// intermediates) and its private key (PKCS#8, PKCS#1 or SEC1) from PEM
    /// files.
    ///
    /// Fails with [`Error::is_tls`] when a file cannot be read, holds no
    /// certificate or key, or the key does not belong to the certificate.
    pub fn from_pem_files(chain: impl AsRef<Path>, key: impl AsRef<Path>) -> crate::Result<Self> {
        let provider = Arc::new(ring::default_provider());
        let (chain, key) = (chain.as_ref().to_owned(), key.as_ref().to_owned());
        let loaded = load(&chain, &key, &provider)?;
        let certificate = Arc::new(Certificate {
            chain,
            key,
            provider: provider.clone(),
            current: RwLock::new(Arc::new(loaded)),
        });
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&version::TLS13, &version::TLS12])
            .map_err(tls_error)?
            .with_no_client_auth()
            .with_cert_resolver(certificate.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            certificate,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Reads the files again: new connections get the new certificate, open
    /// ones keep theirs. On failure the old certificate stays in use.
    pub fn reload(&self) -> crate::Result<()> {
        let cert = &self.certificate;
        let loaded = load(&cert.chain, &cert.key, &cert.provider)?;
        *cert.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
        Ok(())
    }
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("chain", &self.certificate.chain)
            .field("key", &self.certificate.key)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

fn load(chain: &Path, key: &Path, provider: &CryptoProvider) -> crate::Result<CertifiedKey> {
    let named = |path: &Path, e: &dyn std::fmt::Display| {
        Error::new(Kind::Tls).with(format!("{}: {e}", path.display()))
    };
    let certs = CertificateDer::pem_file_iter(chain)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| named(chain, &e))?;
    if certs.is_empty() {
        return Err(named(chain, &"no certificate in the file"));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| named(key, &e))?;
    CertifiedKey::from_der(certs, private, provider).map_err(|e| named(key, &e))
}

fn tls_error(e: impl Into<crate::BoxError>) -> Error {
    Error::new(Kind::Tls).with(e)
}
