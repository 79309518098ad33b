//! TLS on rustls: a certificate chain and key read from PEM files, reloaded
//! in place (connections already open keep theirs, new ones get the new).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::RootCertStore;
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::danger::ClientCertVerifier;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{ServerConfig, version};

use crate::error::{Error, Kind};

/// A TLS configuration for a [`Listener`](super::Listener): TLS 1.3 and 1.2,
/// ALPN offering `h2` and `http/1.1`, and a certificate that
/// [`reload`](Self::reload) replaces without closing a connection; with
/// [`client_ca`](Self::client_ca), clients show certificates of their own
/// (mutual TLS), which requests carry as a [`ClientCert`].
///
/// Clones share the certificate: reloading one reloads them all.
#[derive(Clone)]
pub struct Tls {
    certificate: Arc<Certificate>,
    pub(super) acceptor: TlsAcceptor,
}

/// The certificate a client showed on a mutual-TLS connection, verified
/// against the listener's CA: in each of the connection's requests'
/// extensions, and in the CGI and WSGI environ as `SSL_CLIENT_S_DN`,
/// `SSL_CLIENT_I_DN`, `SSL_CLIENT_FINGERPRINT` and `SSL_CLIENT_VERIFY`
/// (`SUCCESS`), the names nginx and Apache give them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert(Arc<ClientCertInner>);

#[derive(Debug, PartialEq, Eq)]
struct ClientCertInner {
    subject: String,
    issuer: String,
    fingerprint: String,
    der: Vec<u8>,
}

impl ClientCert {
    /// Reads a certificate (DER); `None` if it cannot be parsed.
    pub fn from_der(der: &[u8]) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let digest = ::ring::digest::digest(&::ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
        let fingerprint = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        Some(Self(Arc::new(ClientCertInner {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            fingerprint,
            der: der.to_owned(),
        })))
    }

    /// The subject's distinguished name, as `CN=alice, O=Example`.
    pub fn subject(&self) -> &str {
        &self.0.subject
    }

    /// The issuer's distinguished name.
    pub fn issuer(&self) -> &str {
        &self.0.issuer
    }

    /// The SHA-1 of the certificate, in lowercase hex (nginx's `$ssl_client_fingerprint`).
    pub fn fingerprint(&self) -> &str {
        &self.0.fingerprint
    }

    /// The certificate itself (DER).
    pub fn der(&self) -> &[u8] {
        &self.0.der
    }
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
            provider,
            current: RwLock::new(Arc::new(loaded)),
        });
        let acceptor = acceptor(&certificate, None)?;
        Ok(Self {
            certificate,
            acceptor,
        })
    }

    /// Asks clients for certificates signed by a CA of the PEM file `ca`:
    /// one is needed to connect when `required`, else a client without one
    /// is let in too (and its requests carry no [`ClientCert`]). A client
    /// whose certificate the CA did not sign is refused in the handshake.
    pub fn client_ca(self, ca: impl AsRef<Path>, required: bool) -> crate::Result<Self> {
        let ca = ca.as_ref();
        let named = |e: &dyn std::fmt::Display| {
            Error::new(Kind::Tls).with(format!("{}: {e}", ca.display()))
        };
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).map_err(|e| named(&e))? {
            roots
                .add(cert.map_err(|e| named(&e))?)
                .map_err(|e| named(&e))?;
        }
        if roots.is_empty() {
            return Err(named(&"no certificate in the file"));
        }
        let provider = self.certificate.provider.clone();
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let verifier = match required {
            true => verifier.build(),
            false => verifier.allow_unauthenticated().build(),
        }
        .map_err(|e| named(&e))?;
        Ok(Self {
            acceptor: acceptor(&self.certificate, Some(verifier))?,
            certificate: self.certificate,
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

/// The acceptor of `certificate`, asking for client certificates when `clients` verifies them.
fn acceptor(
    certificate: &Arc<Certificate>,
    clients: Option<Arc<dyn ClientCertVerifier>>,
) -> crate::Result<TlsAcceptor> {
    let builder = ServerConfig::builder_with_provider(certificate.provider.clone())
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])
        .map_err(tls_error)?;
    let builder = match clients {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(certificate.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
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
