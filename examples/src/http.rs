//! The transport: one pooled hyper client bound to a base URL, with a timeout and a response
//! size bound on every request. No authentication happens here.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// How long a request may take, connect to last body byte, unless changed with
/// [`HttpClient::with_timeout`].
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 60_000;
/// How long opening a TCP connection may take.
pub const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// The largest response body the client reads; anything bigger is an error.
pub const RESPONSE_BODY_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Why a request produced no [`Response`], or a response was not what the caller needed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL and path did not form a valid URI.
    #[error("invalid request target {target:?}: {source}")]
    InvalidTarget {
        target: String,
        #[source]
        source: http::uri::InvalidUri,
    },
    /// A method or header could not be put on the wire.
    #[error("invalid request {method} {target}: {reason}")]
    InvalidRequest {
        method: String,
        target: String,
        reason: String,
    },
    /// Connecting, writing the request or reading the response head failed (refused, reset...).
    #[error("{method} {target} failed: {}", error_chain(source))]
    Transport {
        method: String,
        target: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The response head arrived but its body could not be read in full.
    #[error("{method} {target}: reading the response body failed: {reason}")]
    Body {
        method: String,
        target: String,
        reason: String,
    },
    /// No complete response within the client's timeout.
    #[error("{method} {target}: no response within {timeout_ms} ms")]
    Timeout {
        method: String,
        target: String,
        timeout_ms: u128,
    },
    /// The body was expected to be JSON and is not.
    #[error("response body (status {status}) is not JSON: {source}; body: {body}")]
    Json {
        status: u16,
        body: String,
        #[source]
        source: serde_json::Error,
    },
    /// Kassa answered, but not with the status the operation expects.
    #[error("{operation}: Kassa answered {status}: {body}")]
    Status {
        operation: String,
        status: u16,
        body: String,
    },
    /// Kassa answered with the expected status but a body missing a required field.
    #[error("{operation}: response lacks {field}: {body}")]
    MissingField {
        operation: String,
        field: String,
        body: String,
    },
}

/// `error: cause: cause...`, since hyper's top-level errors say little on their own.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A complete HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value, ClientError> {
        serde_json::from_slice(&self.body).map_err(|source| ClientError::Json {
            status: self.status,
            body: self.text(),
            source,
        })
    }

    /// The first value of header `name` (case-insensitive), if present and valid text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// The body as text (lossy), for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A pooled HTTP/1.1 client for one base URL (`http://127.0.0.1:8080`). Cheap to clone: clones
/// share the connection pool.
#[derive(Clone)]
pub struct HttpClient {
    base_url: String,
    timeout: Duration,
    inner: Client<HttpConnector, Full<Bytes>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client for `base_url` (a trailing `/` is ignored). Must be called inside a tokio
    /// runtime's context only when requests are sent, not here.
    pub fn new(base_url: &str) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_millis(CONNECT_TIMEOUT_MS)));
        connector.set_nodelay(true);
        let inner = Client::builder(TokioExecutor::new()).build(connector);
        HttpClient {
            base_url: base_url.trim_end_matches('/').to_owned(),
            timeout: Duration::from_millis(REQUEST_TIMEOUT_MS_DEFAULT),
            inner,
        }
    }

    /// The same client (sharing the pool) pointed at another base URL, e.g. after a restart
    /// moved the server to a new port.
    pub fn with_base_url(&self, base_url: &str) -> Self {
        HttpClient {
            base_url: base_url.trim_end_matches('/').to_owned(),
            ..self.clone()
        }
    }

    /// The same client with another per-request timeout.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        HttpClient {
            timeout,
            ..self.clone()
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Sends exactly the given method, target, headers and body; adds nothing but `Host` and
    /// `Content-Length`, which hyper sets.
    pub async fn send(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> Result<Response, ClientError> {
        let target = format!("{}{}", self.base_url, path_and_query);
        let invalid = |reason: String| ClientError::InvalidRequest {
            method: method.to_owned(),
            target: target.clone(),
            reason,
        };
        let uri: Uri = target
            .parse()
            .map_err(|source| ClientError::InvalidTarget {
                target: target.clone(),
                source,
            })?;
        if uri.scheme().is_none() || uri.authority().is_none() {
            return Err(invalid(format!(
                "base URL {:?} must be absolute, like http://127.0.0.1:8080",
                self.base_url
            )));
        }
        let method_value =
            Method::from_bytes(method.as_bytes()).map_err(|error| invalid(error.to_string()))?;
        let mut request = Request::builder()
            .method(method_value)
            .uri(uri)
            .body(Full::new(Bytes::from(body)))
            .map_err(|error| invalid(error.to_string()))?;
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|error| invalid(format!("header name {name:?}: {error}")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|error| invalid(format!("header {name}: {error}")))?;
            request.headers_mut().append(name, value);
        }
        match tokio::time::timeout(self.timeout, self.exchange(method, &target, request)).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout {
                method: method.to_owned(),
                target,
                timeout_ms: self.timeout.as_millis(),
            }),
        }
    }

    async fn exchange(
        &self,
        method: &str,
        target: &str,
        request: Request<Full<Bytes>>,
    ) -> Result<Response, ClientError> {
        let response =
            self.inner
                .request(request)
                .await
                .map_err(|source| ClientError::Transport {
                    method: method.to_owned(),
                    target: target.to_owned(),
                    source,
                })?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, RESPONSE_BODY_BYTES_MAX)
            .collect()
            .await
            .map_err(|error| ClientError::Body {
                method: method.to_owned(),
                target: target.to_owned(),
                reason: error_chain(error.as_ref()),
            })?
            .to_bytes();
        Ok(Response {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }
}
