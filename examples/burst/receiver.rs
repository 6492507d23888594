//! The in-process webhook receiver: a small hyper server on 127.0.0.1:0. Merchant `i` gets
//! the endpoint `/hook/{i}` (Kassa bounds attempts in flight per endpoint URL, so one URL per
//! merchant keeps deliveries from queueing behind each other). Every delivery is answered 200;
//! its signature is checked with the merchant's webhook secret and its event id recorded.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::server::conn::http1;
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use kassa_client::{unix_now, verify_webhook};
use serde::Deserialize;

/// The largest webhook body read (an event is a payment object, ~1 KiB).
const WEBHOOK_BODY_BYTES_MAX: usize = 256 * 1024;
/// The signature timestamp tolerance (Stripe's default, as `kassa_client` documents).
const WEBHOOK_TOLERANCE_S: i64 = kassa_client::webhook::WEBHOOK_TOLERANCE_S_DEFAULT;

#[derive(Default)]
struct State {
    /// Webhook secrets by merchant index; set once the merchants exist.
    secrets: RwLock<Vec<String>>,
    event_ids: Mutex<HashSet<String>>,
    deliveries: AtomicU64,
    duplicates: AtomicU64,
    bad_signatures: AtomicU64,
    unparsable: AtomicU64,
}

/// Counts for the report.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ReceiverCounts {
    pub deliveries: u64,
    pub distinct_events: u64,
    pub duplicates: u64,
    pub bad_signatures: u64,
    pub unparsable: u64,
}

pub struct Receiver {
    pub port: u16,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    pub async fn start() -> std::io::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                // Accept errors (EMFILE) are transient; Kassa retries what it could not deliver.
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |request| handle(Arc::clone(&state), request));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Receiver { port, state, task })
    }

    /// Merchant `index`'s endpoint.
    pub fn url(&self, index: usize) -> String {
        format!("http://127.0.0.1:{}/hook/{index}", self.port)
    }

    pub fn set_secrets(&self, secrets: Vec<String>) {
        *self
            .state
            .secrets
            .write()
            .unwrap_or_else(|p| p.into_inner()) = secrets;
    }

    /// Which of `ids` have not been delivered.
    pub fn missing<'a>(&self, ids: impl Iterator<Item = &'a String>) -> Vec<String> {
        let seen = self
            .state
            .event_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        ids.filter(|id| !seen.contains(*id)).cloned().collect()
    }

    pub fn counts(&self) -> ReceiverCounts {
        let state = &self.state;
        let distinct = state
            .event_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len() as u64;
        ReceiverCounts {
            deliveries: state.deliveries.load(Ordering::Relaxed),
            distinct_events: distinct,
            duplicates: state.duplicates.load(Ordering::Relaxed),
            bad_signatures: state.bad_signatures.load(Ordering::Relaxed),
            unparsable: state.unparsable.load(Ordering::Relaxed),
        }
    }
}

#[derive(Deserialize)]
struct EventHead {
    id: String,
}

async fn handle(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let merchant: Option<usize> = request
        .uri()
        .path()
        .strip_prefix("/hook/")
        .and_then(|index| index.parse().ok());
    let signature = request
        .headers()
        .get(kassa_client::webhook::SIGNATURE_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = Limited::new(request.into_body(), WEBHOOK_BODY_BYTES_MAX)
        .collect()
        .await
        .map(|collected| collected.to_bytes());
    state.deliveries.fetch_add(1, Ordering::Relaxed);
    let Ok(body) = body else {
        state.unparsable.fetch_add(1, Ordering::Relaxed);
        return Ok(Response::new(Full::new(Bytes::new())));
    };
    let verified = {
        let secrets = state.secrets.read().unwrap_or_else(|p| p.into_inner());
        match (merchant.and_then(|i| secrets.get(i)), signature) {
            (Some(secret), Some(header)) => {
                verify_webhook(secret, &header, &body, unix_now(), WEBHOOK_TOLERANCE_S).is_ok()
            }
            _ => false,
        }
    };
    if !verified {
        state.bad_signatures.fetch_add(1, Ordering::Relaxed);
    }
    match serde_json::from_slice::<EventHead>(&body) {
        Ok(event) => {
            let fresh = state
                .event_ids
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(event.id);
            if !fresh {
                state.duplicates.fetch_add(1, Ordering::Relaxed);
            }
        }
        Err(_) => {
            state.unparsable.fetch_add(1, Ordering::Relaxed);
        }
    }
    // Always 200: a receiver that refuses would only make Kassa retry.
    Ok(Response::new(Full::new(Bytes::from_static(b"{}"))))
}
