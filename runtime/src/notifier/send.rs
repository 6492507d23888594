//! One webhook attempt: POST the event's body, signed, and read what the receiver said.
//!
//! Only a 2xx answer within `notifications.webhook_timeout_ms` counts. Redirects are not
//! followed (a 3xx is a failure, as with Stripe). What is kept of the attempt never holds the
//! secret, the signature or the event body: the status, the latency, a short error, and at
//! most [`ATTEMPT_RESPONSE_BYTES_MAX`] bytes of the answer.
//!
//! `https://` endpoints are called over TLS with their certificate verified (the Mozilla roots
//! plus `tls.extra_ca_path`, `kassa_channels::adapter::tls`); an endpoint whose certificate
//! does not verify fails the attempt like a connect error. `http://` endpoints stay plain.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kassa_channels::adapter::tls;
use kassa_channels::secret::Secret;
use kassa_client::webhook::{EVENT_ID_HEADER, SIGNATURE_HEADER, webhook_signature};
use kassa_store::{ATTEMPT_RESPONSE_BYTES_MAX, EventRecord};

pub const USER_AGENT: &str = "kassa-webhooks/1";
/// Idle connections to endpoints are closed after this long.
const POOL_IDLE_TIMEOUT_MS: u64 = 30_000;
/// The longest error text kept with an attempt.
const ERROR_CHARS_MAX: usize = 300;

/// The shared client every attempt goes through: `https://` (verified) and `http://`.
pub type WebhookClient = Client<tls::HttpsConnector, Full<Bytes>>;

pub fn client(endpoint_inflight_max: usize) -> WebhookClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_millis(POOL_IDLE_TIMEOUT_MS))
        .pool_timer(TokioTimer::new())
        .pool_max_idle_per_host(endpoint_inflight_max)
        .build(tls::https_or_http(connector))
}

/// What one attempt did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    /// `None`: no answer (connect error, timeout, refused URL).
    pub http_status: Option<u16>,
    pub latency_ms: u64,
    pub error: Option<String>,
    pub response_excerpt: String,
}

impl Sent {
    pub fn delivered(&self) -> bool {
        self.error.is_none() && self.http_status.is_some_and(|s| (200..300).contains(&s))
    }

    fn failed(started: Instant, error: impl Into<String>) -> Sent {
        Sent {
            http_status: None,
            latency_ms: elapsed_ms(started),
            error: Some(bounded(error.into())),
            response_excerpt: String::new(),
        }
    }
}

/// POSTs `event` to `url`, signed with `secret` at `now_s`, within `timeout`.
pub async fn post(
    client: &WebhookClient,
    url: &str,
    secret: &Secret<String>,
    event: &EventRecord,
    now_s: i64,
    timeout: Duration,
) -> Sent {
    let started = Instant::now();
    let uri: http::Uri = match url.parse() {
        Ok(uri) => uri,
        Err(_) => return Sent::failed(started, "the endpoint is not a valid URL"),
    };
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Sent::failed(started, "only http:// and https:// endpoints are supported");
    }
    let signature = webhook_signature(secret.expose(), now_s, event.body.as_bytes());
    let request = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, USER_AGENT)
        .header(SIGNATURE_HEADER, signature)
        .header(EVENT_ID_HEADER, event.id.as_str())
        .body(Full::new(Bytes::from(event.body.clone())));
    let request = match request {
        Ok(request) => request,
        Err(_) => return Sent::failed(started, "the request could not be built"),
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let response = match tokio::time::timeout_at(deadline, client.request(request)).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => return Sent::failed(started, transport_error(&error)),
        Err(_elapsed) => {
            return Sent::failed(
                started,
                format!("no answer within {} ms", timeout.as_millis()),
            );
        }
    };
    let status = response.status().as_u16();
    let latency_ms = elapsed_ms(started);
    // The answer's start, read within what is left of the deadline; a slow body does not undo
    // a 2xx that arrived in time.
    let excerpt = tokio::time::timeout_at(deadline, excerpt(response.into_body()))
        .await
        .unwrap_or_default();
    Sent {
        http_status: Some(status),
        latency_ms,
        error: (!(200..300).contains(&status)).then(|| format!("the endpoint answered {status}")),
        response_excerpt: excerpt,
    }
}

/// At most [`ATTEMPT_RESPONSE_BYTES_MAX`] bytes of `body`, as text (cut on a char boundary).
async fn excerpt(mut body: hyper::body::Incoming) -> String {
    let mut kept = Vec::with_capacity(ATTEMPT_RESPONSE_BYTES_MAX);
    while kept.len() < ATTEMPT_RESPONSE_BYTES_MAX {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let room = ATTEMPT_RESPONSE_BYTES_MAX - kept.len();
                    kept.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    let mut text = String::from_utf8_lossy(&kept).into_owned();
    while text.len() > ATTEMPT_RESPONSE_BYTES_MAX {
        text.pop();
    }
    text
}

/// The transport error and its causes (connection refused, reset, …): never the URL.
fn transport_error(error: &hyper_util::client::legacy::Error) -> String {
    let mut detail = if error.is_connect() {
        "could not connect".to_string()
    } else {
        "the connection failed".to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    detail
}

fn bounded(mut text: String) -> String {
    if let Some((cut, _)) = text.char_indices().nth(ERROR_CHARS_MAX) {
        text.truncate(cut);
    }
    text
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_2xx_without_error_is_delivered() {
        let sent = |status: Option<u16>, error: Option<&str>| Sent {
            http_status: status,
            latency_ms: 1,
            error: error.map(str::to_string),
            response_excerpt: String::new(),
        };
        assert!(sent(Some(200), None).delivered());
        assert!(sent(Some(204), None).delivered());
        assert!(!sent(Some(301), Some("the endpoint answered 301")).delivered());
        assert!(!sent(Some(503), Some("the endpoint answered 503")).delivered());
        assert!(!sent(None, Some("no answer")).delivered());
    }

    #[test]
    fn errors_are_bounded() {
        assert_eq!(bounded("é".repeat(1_000)).chars().count(), ERROR_CHARS_MAX);
        assert_eq!(bounded("short".into()), "short");
    }
}
