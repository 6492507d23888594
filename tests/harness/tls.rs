//! [`HttpsClient`]: requests to a Kassa serving HTTPS, trusting only the CA the test gives it,
//! over the HTTP version ALPN negotiates (HTTP/2 or HTTP/1.1, as the client offers). Each
//! request opens its own TLS connection, so every [`HttpsResponse`] says what its connection
//! negotiated. Also [`tls_connect`] for handshake-only checks and [`server_config`] for a
//! test's own TLS endpoints.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kassa_client::Response;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// How long one request may take, connect to last body byte.
const REQUEST_TIMEOUT_MS: u64 = 30_000;
/// ALPN ids.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration offering `alpn` and trusting only the certificates in the PEM file
/// `trusted` (`None`: trusting nothing at all).
pub fn client_config(trusted: Option<&Path>, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    if let Some(path) = trusted {
        for cert in CertificateDer::pem_file_iter(path).expect("reading the trusted PEM") {
            roots
                .add(cert.expect("a PEM certificate"))
                .expect("a usable CA certificate");
        }
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|id| id.to_vec()).collect();
    Arc::new(config)
}

/// A server configuration for the certificate chain and key PEM files, offering `alpn`.
pub fn server_config(cert: &Path, key: &Path, alpn: &[&[u8]]) -> Arc<ServerConfig> {
    let chain = CertificateDer::pem_file_iter(cert)
        .expect("reading the certificate PEM")
        .collect::<Result<Vec<_>, _>>()
        .expect("PEM certificates");
    let key = PrivateKeyDer::from_pem_file(key).expect("reading the key PEM");
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("a usable certificate and key");
    config.alpn_protocols = alpn.iter().map(|id| id.to_vec()).collect();
    Arc::new(config)
}

/// Connects to `authority` (`host:port`) and completes a TLS handshake naming `host`; Err is the
/// handshake's (or the connection's) error as text.
pub async fn tls_connect(
    authority: &str,
    config: Arc<ClientConfig>,
) -> Result<TlsStream<TcpStream>, String> {
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = ServerName::try_from(host.to_owned()).map_err(|e| format!("{host}: {e}"))?;
    let tcp = TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connecting to {authority}: {e}"))?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {authority}: {e}"))
}

/// An answer, with what its connection negotiated.
#[derive(Debug, Clone)]
pub struct HttpsResponse {
    pub response: Response,
    /// The response's HTTP version (`HTTP/2.0` or `HTTP/1.1`).
    pub version: Version,
    /// The ALPN protocol the handshake chose, if any.
    pub alpn: Option<Vec<u8>>,
}

/// A client for `https://host:port`.
#[derive(Clone)]
pub struct HttpsClient {
    authority: String,
    config: Arc<ClientConfig>,
}

impl HttpsClient {
    /// A client for `base_url` (`https://host:port`) with `config` ([`client_config`]).
    pub fn new(base_url: &str, config: Arc<ClientConfig>) -> Self {
        let authority = base_url
            .strip_prefix("https://")
            .unwrap_or_else(|| panic!("{base_url} is not an https:// URL"))
            .trim_end_matches('/')
            .to_owned();
        HttpsClient { authority, config }
    }

    /// Sends one request on a new connection: HTTP/2 if ALPN chose `h2`, else HTTP/1.1.
    pub async fn send(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> Result<HttpsResponse, String> {
        let exchange = self.exchange(method, path_and_query, headers, body);
        tokio::time::timeout(Duration::from_millis(REQUEST_TIMEOUT_MS), exchange)
            .await
            .map_err(|_| {
                format!("{method} {path_and_query}: no answer in {REQUEST_TIMEOUT_MS} ms")
            })?
    }

    async fn exchange(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> Result<HttpsResponse, String> {
        let stream = tls_connect(&self.authority, self.config.clone()).await?;
        let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let h2 = alpn.as_deref() == Some(ALPN_H2);
        // HTTP/2 carries the authority in the URI (`:authority`), HTTP/1.1 in `Host`.
        let uri: Uri = if h2 {
            format!("https://{}{path_and_query}", self.authority)
        } else {
            path_and_query.to_owned()
        }
        .parse()
        .map_err(|e| format!("{path_and_query}: {e}"))?;
        let mut request = Request::builder().method(method).uri(uri);
        if !h2 {
            request = request.header("host", &self.authority);
        }
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let io = TokioIo::new(stream);
        let response = if h2 {
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
            tokio::spawn(connection);
            sender.send_request(request).await
        } else {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
            tokio::spawn(connection);
            sender.send_request(request).await
        }
        .map_err(|e| format!("{method} {path_and_query}: {e}"))?;
        let version = response.version();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e}"))?
            .to_bytes();
        Ok(HttpsResponse {
            response: Response {
                status,
                headers,
                body,
            },
            version,
            alpn,
        })
    }
}
