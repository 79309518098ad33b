//! TLS to `https://` upstreams, on rustls (the server's listeners use the
//! same): the upstream's certificate checked against the system's roots or
//! a CA file, and against the name it is reached by (also sent as SNI); a
//! client certificate for mutual TLS; HTTP/2 where ALPN agrees on it. There
//! is no way to turn the check off.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::{WantsClientCert, WebPkiServerVerifier, verify_server_name};
use tokio_rustls::rustls::crypto::{
    WebPkiSupportedAlgorithms, ring, verify_tls12_signature, verify_tls13_signature,
};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::server::ParsedCertificate;
use tokio_rustls::rustls::{
    CertificateError, ClientConfig, ConfigBuilder, DigitallySignedStruct, Error, RootCertStore,
    SignatureScheme, version,
};

/// What the proxy trusts in its `https://` upstreams and shows them: the
/// system's root certificates by default; see [`Proxy::tls`](super::Proxy::tls).
///
/// ```no_run
/// use stackway_middleware::Proxy;
/// use stackway_middleware::proxy::UpstreamTls;
///
/// let tls = UpstreamTls::from_ca_file("/etc/stackway/internal-ca.pem")?
///     .client_certificate("/etc/stackway/proxy.crt", "/etc/stackway/proxy.key")?;
/// let proxy = Proxy::to("https://billing.internal:8443/api").tls(tls);
/// # Ok::<(), stackway_middleware::proxy::TlsError>(())
/// ```
#[derive(Clone)]
pub struct UpstreamTls {
    roots: Arc<RootCertStore>,
    /// The CA file's certificates, also trusted as they are when an
    /// upstream presents one as its own.
    pinned: Arc<[CertificateDer<'static>]>,
    /// A client certificate chain and its key, for mutual TLS.
    identity: Option<Arc<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>>,
}

/// A certificate or key file that cannot be used; `Display` names the file
/// and why.
#[derive(Debug, Clone)]
pub struct TlsError {
    file: PathBuf,
    why: String,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.why)
    }
}

impl std::error::Error for TlsError {}

impl UpstreamTls {
    /// Trusts the system's root certificates (`/etc/ssl/certs` on Debian,
    /// `SSL_CERT_FILE` where set), read once for the whole process.
    pub fn system_roots() -> Self {
        static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
        let roots = ROOTS.get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!("reading the system's root certificates: {e}");
            }
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                tracing::warn!(
                    "no system root certificates (Debian's ca-certificates): \
                     https upstreams need a CA file"
                );
            }
            Arc::new(roots)
        });
        Self {
            roots: roots.clone(),
            pinned: Arc::new([]),
            identity: None,
        }
    }

    /// Trusts only the certificates in a PEM file (an internal CA; nginx's
    /// `proxy_ssl_trusted_certificate`).
    pub fn from_ca_file(path: impl AsRef<Path>) -> Result<Self, TlsError> {
        let path = path.as_ref();
        let certs = certificates(path)?;
        let mut roots = RootCertStore::empty();
        for cert in &certs {
            roots.add(cert.clone()).map_err(|e| TlsError {
                file: path.to_owned(),
                why: format!("not a CA certificate: {e}"),
            })?;
        }
        Ok(Self {
            roots: Arc::new(roots),
            pinned: certs.into(),
            identity: None,
        })
    }

    /// Shows the upstreams a client certificate (its chain first, then any
    /// intermediates) with its private key, for mutual TLS (nginx's
    /// `proxy_ssl_certificate` and `proxy_ssl_certificate_key`).
    pub fn client_certificate(
        mut self,
        chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, TlsError> {
        let (certs, key) = (certificates(chain.as_ref())?, key.as_ref());
        let error = |why: String| TlsError {
            file: key.to_owned(),
            why,
        };
        let private = PrivateKeyDer::from_pem_file(key).map_err(|e| error(e.to_string()))?;
        // Checked now, not at the first connection.
        self.builder()
            .with_client_auth_cert(certs.clone(), private.clone_key())
            .map_err(|e| error(e.to_string()))?;
        self.identity = Some(Arc::new((certs, private)));
        Ok(self)
    }

    fn builder(&self) -> ConfigBuilder<ClientConfig, WantsClientCert> {
        let provider = Arc::new(ring::default_provider());
        // None without a root (a machine without ca-certificates): nothing passes.
        let webpki =
            WebPkiServerVerifier::builder_with_provider(self.roots.clone(), provider.clone())
                .build()
                .ok();
        let verifier = Verifier {
            webpki,
            algorithms: provider.signature_verification_algorithms,
            pinned: self.pinned.clone(),
        };
        ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&version::TLS13, &version::TLS12])
            .expect("rustls' own versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
    }

    /// A connector offering `alpn`, in order of preference.
    fn connector(&self, alpn: &[&[u8]]) -> TlsConnector {
        let mut config = match &self.identity {
            Some(identity) => self
                .builder()
                .with_client_auth_cert(identity.0.clone(), identity.1.clone_key())
                .expect("checked by client_certificate"),
            None => self.builder().with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }
}

/// The certificates of a PEM file: at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let error = |why: String| TlsError {
        file: path.to_owned(),
        why,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| error(e.to_string()))?;
    match certs.is_empty() {
        true => Err(error("no certificate in the file".into())),
        false => Ok(certs),
    }
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("roots", &self.roots.len())
            .field("client_certificate", &self.identity.is_some())
            .finish()
    }
}

/// rustls' own check, and one exception: a certificate of the CA file
/// presented as the upstream's own is accepted for the names it holds, even
/// though it says it is a CA. `openssl req -x509` makes such self-signed
/// certificates, and nginx (OpenSSL) and curl accept them when trusted so;
/// rustls refuses a CA certificate as an end entity.
#[derive(Debug)]
struct Verifier {
    webpki: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
    pinned: Arc<[CertificateDer<'static>]>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(webpki) = &self.webpki else {
            return Err(Error::General(
                "no root certificate to check it against: give a CA file".into(),
            ));
        };
        let checked = webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now);
        match checked {
            // webpki checks the validity period before the CA flag.
            Err(Error::InvalidCertificate(CertificateError::Other(other)))
                if other.0.downcast_ref::<webpki::Error>()
                    == Some(&webpki::Error::CaUsedAsEndEntity)
                    && self.pinned.iter().any(|pinned| pinned == end_entity) =>
            {
                verify_server_name(&ParsedCertificate::try_from(end_entity)?, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            checked => checked,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// How a connection to one `https://` upstream is made: the name its
/// certificate must hold, and connectors for requests that may go over
/// HTTP/2 and for upgrades, which need HTTP/1.1.
#[derive(Clone)]
pub(crate) struct Dial {
    pub(crate) name: ServerName<'static>,
    pub(crate) any: TlsConnector,
    pub(crate) http1: TlsConnector,
}

impl Dial {
    /// For the upstream named `name`; `http2_only` offers only h2.
    pub(crate) fn new(tls: &UpstreamTls, name: ServerName<'static>, http2_only: bool) -> Self {
        let any: &[&[u8]] = if http2_only {
            &[b"h2"]
        } else {
            &[b"h2", b"http/1.1"]
        };
        Self {
            name,
            any: tls.connector(any),
            http1: tls.connector(&[b"http/1.1"]),
        }
    }
}
