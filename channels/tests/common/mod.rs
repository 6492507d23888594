//! Helpers shared by the integration tests: a sandbox on port 0, adapters with small bounds,
//! raw signed HTTP for what the adapter does not expose, and a tiny counting server.

#![allow(dead_code)] // Each test file uses a different subset.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kassa_channels::card::signature;
use kassa_channels::sandbox::{self, SandboxConfig, SandboxHandle};
use kassa_channels::{AdapterConfig, CardChannel, CardData, ChannelAdapter, ChargeRequest};
use serde_json::Value;

pub const SECRET: &str = "sk_sandbox_test_secret";

pub async fn start_sandbox(latency_ms: u64, ledger_path: Option<PathBuf>) -> SandboxHandle {
    sandbox::start(SandboxConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        ledger_path,
        api_secret: SECRET.to_owned(),
        latency_ms,
    })
    .await
    .expect("the sandbox starts")
}

/// Small delays so retry tests finish fast.
pub fn fast_config() -> AdapterConfig {
    AdapterConfig {
        request_timeout_ms: 2_000,
        retry_attempts_max: 3,
        backoff_ms_min: 1,
        backoff_ms_max: 10,
        inflight_max: 64,
        ..AdapterConfig::default()
    }
}

pub fn channel_for(base_url: &str, config: AdapterConfig) -> CardChannel {
    CardChannel::new(ChannelAdapter::new(base_url, SECRET, config).expect("valid adapter"))
}

pub fn card(pan: &str) -> CardData {
    CardData::new(pan, 12, 2030, "987").expect("well-formed card")
}

pub fn charge_request(key: &str, pan: &str, amount_minor: i64, capture: bool) -> ChargeRequest {
    ChargeRequest {
        idempotency_key: key.to_owned(),
        amount_minor,
        currency: "USD".to_owned(),
        card: card(pan),
        capture,
    }
}

/// Sends a request with `signature_header` (or none) and returns the status and JSON body.
pub async fn raw_request(
    base_url: &str,
    method: Method,
    path: &str,
    body: &str,
    signature_header: Option<String>,
) -> (StatusCode, Value) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("{base_url}{path}"))
        .header("content-type", "application/json");
    if let Some(header) = signature_header {
        builder = builder.header(signature::SIGNATURE_HEADER, header);
    }
    let request = builder
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("valid request");
    let response = client.request(request).await.expect("the sandbox answers");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("a readable body")
        .to_bytes();
    let json = serde_json::from_slice(&bytes).expect("every answer is JSON");
    (status, json)
}

/// Sends a request correctly signed with [`SECRET`].
pub async fn signed_request(
    base_url: &str,
    method: Method,
    path: &str,
    body: &str,
) -> (StatusCode, Value) {
    let header = signature::header_value(
        SECRET.as_bytes(),
        signature::now_unix_s(),
        method.as_str(),
        path,
        body.as_bytes(),
    );
    raw_request(base_url, method, path, body, Some(header)).await
}

/// `GET /sandbox/ledger`.
pub async fn ledger(base_url: &str) -> Value {
    let (status, body) = signed_request(base_url, Method::GET, "/sandbox/ledger", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The ledger's charges with this idempotency key.
pub async fn charges_with_key(base_url: &str, key: &str) -> Vec<Value> {
    let ledger = ledger(base_url).await;
    ledger["charges"]
        .as_array()
        .expect("charges is a list")
        .iter()
        .filter(|charge| charge["idempotency_key"] == key)
        .cloned()
        .collect()
}

/// Polls `condition` every millisecond until it holds or `deadline_ms` passes.
pub async fn wait_until(deadline_ms: u64, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_millis(deadline_ms);
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    condition()
}

/// A server that answers every request with `status` (and `retry_after_s` as `Retry-After`
/// when given), counting the requests it saw.
pub struct CountingServer {
    pub base_url: String,
    pub hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingServer {
    pub async fn start(status: StatusCode, retry_after_s: Option<u64>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base_url = format!("http://{}", listener.local_addr().expect("addr"));
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_request| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let mut response = Response::new(Full::new(Bytes::from_static(
                            br#"{"error":{"code":"scripted","message":"scripted answer"}}"#,
                        )));
                        *response.status_mut() = status;
                        if let Some(seconds) = retry_after_s {
                            response.headers_mut().insert(
                                "retry-after",
                                seconds.to_string().parse().expect("digits"),
                            );
                        }
                        async move { Ok::<_, std::convert::Infallible>(response) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            base_url,
            hits,
            task,
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for CountingServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
