//! TLS for Kassa's outbound HTTP: the one rustls client configuration every outbound client
//! shares (the channel adapters, the notifier's webhooks, the sandbox's callbacks), and the PEM
//! loading the front-end's HTTPS uses too.
//!
//! Server certificates are always verified: against the Mozilla root programme (`webpki-roots`,
//! compiled in, so a container without a system CA bundle verifies the same way as a laptop)
//! plus the CAs of `tls.extra_ca_path`, a PEM bundle trusted *in addition* (a private CA, or the
//! self-signed pair `kassa dev-cert` writes). `kassa serve` installs that bundle once at start
//! ([`install_extra_ca`]), before it builds any client; a client built without it (tests,
//! tools) trusts the Mozilla roots alone. Crypto is rustls' `ring` provider, TLS 1.2 and 1.3.
//!
//! `http://` URLs keep working: the connector ([`https_or_http`]) speaks plain HTTP to them.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use hyper_util::client::legacy::connect::HttpConnector;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// The connector of every outbound client: TLS (verified) for `https://`, plain for `http://`.
pub type HttpsConnector = hyper_rustls::HttpsConnector<HttpConnector>;

/// The process's outbound trust, set once by [`install_extra_ca`] (or on first use, without
/// extra CAs).
static OUTBOUND: OnceLock<Arc<ClientConfig>> = OnceLock::new();

/// Why a certificate, key or CA bundle could not be used. Never holds key material: only the
/// path and what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} from {path}: {reason}")]
    Read {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("{what} {path}: {reason}")]
    Invalid {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("the outbound TLS trust is already in use; install the extra CAs before any client")]
    AlreadyInstalled,
}

/// The crypto provider everywhere in Kassa: `ring` (never aws-lc-rs, which needs cmake).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in the PEM file at `path` (a chain: leaf first; or a CA bundle). At least
/// one, or an error naming `what` and the path.
pub fn read_certificates(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |reason: String| TlsError::Read {
        what,
        path: path.display().to_string(),
        reason,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| read(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read(e.to_string()))?;
    if certificates.is_empty() {
        return Err(TlsError::Invalid {
            what,
            path: path.display().to_string(),
            reason: "holds no PEM certificate".into(),
        });
    }
    Ok(certificates)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in the PEM file at `path`.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    // The error says what went wrong (missing file, no key section), never what the file holds.
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Read {
        what: "the private key",
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// A client configuration trusting the Mozilla roots plus `extra_cas`.
fn client_config(
    extra_cas: Vec<CertificateDer<'static>>,
    path: &str,
) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for ca in extra_cas {
        roots.add(ca).map_err(|e| TlsError::Invalid {
            what: "an extra CA certificate",
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    }
    let config = ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid {
            what: "the TLS configuration",
            path: path.to_owned(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// Trusts the CAs in the PEM bundle at `extra_ca_path` (`tls.extra_ca_path`) in addition to the
/// Mozilla roots, for every outbound client built from now on; `None` installs the Mozilla
/// roots alone. Returns how many extra CAs are trusted. Call once, before building clients.
pub fn install_extra_ca(extra_ca_path: Option<&Path>) -> Result<usize, TlsError> {
    let (extra, shown) = match extra_ca_path {
        Some(path) => (
            read_certificates(path, "the extra CA bundle")?,
            path.display().to_string(),
        ),
        None => (Vec::new(), String::new()),
    };
    let count = extra.len();
    let config = client_config(extra, &shown)?;
    OUTBOUND
        .set(Arc::new(config))
        .map_err(|_| TlsError::AlreadyInstalled)?;
    Ok(count)
}

/// The outbound client configuration: what [`install_extra_ca`] installed, or the Mozilla roots
/// alone when nothing was.
pub fn outbound_config() -> Arc<ClientConfig> {
    OUTBOUND
        .get_or_init(|| {
            // The `ring` provider supports the default protocol versions, and no extra CA can
            // be malformed here, so this cannot fail.
            Arc::new(
                client_config(Vec::new(), "").expect("the ring provider supports TLS 1.2 and 1.3"),
            )
        })
        .clone()
}

/// Wraps `http` (its timeouts, `TCP_NODELAY`) so that `https://` URLs are spoken over TLS with
/// [`outbound_config`]'s verification (HTTP/1.1) and `http://` URLs stay plain.
pub fn https_or_http(mut http: HttpConnector) -> HttpsConnector {
    http.enforce_http(false);
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(ClientConfig::clone(&outbound_config()))
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}
