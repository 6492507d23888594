//! A scripted provider for the adapter's tests (`limits.rs`, `breaker.rs`): counts hits and
//! answers 200 / decline / 503 / 400 / 429 or hangs, on command. Each file uses part of it.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kassa_channels::{CardData, ChargeRequest};

/// What the scripted server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// 200 with a succeeded charge.
    Succeed = 0,
    /// 200 with a declined charge.
    Decline = 1,
    /// 503.
    Fail = 2,
    /// 400 with an error code.
    Reject = 3,
    /// Accept the request and never answer.
    Hang = 4,
    /// 429 with `Retry-After: 0`.
    Throttle = 5,
}

/// A tiny provider on port 0 that answers as told and counts what it saw.
pub struct ScriptedServer {
    pub base_url: String,
    mode: Arc<AtomicU8>,
    hits: Arc<Mutex<Vec<Hit>>>,
    task: tokio::task::JoinHandle<()>,
}

/// One request the server saw.
#[derive(Debug, Clone)]
pub struct Hit {
    pub at: Instant,
    pub idempotency_key: String,
}

impl ScriptedServer {
    pub async fn start(mode: Mode) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base_url = format!("http://{}", listener.local_addr().expect("addr"));
        let mode = Arc::new(AtomicU8::new(mode as u8));
        let hits = Arc::new(Mutex::new(Vec::new()));
        let (task_mode, task_hits) = (mode.clone(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (mode, hits) = (task_mode.clone(), task_hits.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let (mode, hits) = (mode.clone(), hits.clone());
                        async move { answer(request, &mode, &hits).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            base_url,
            mode,
            hits,
            task,
        }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().expect("not poisoned").clone()
    }

    pub fn hit_count(&self) -> usize {
        self.hits.lock().expect("not poisoned").len()
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    request: Request<Incoming>,
    mode: &AtomicU8,
    hits: &Mutex<Vec<Hit>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let at = Instant::now();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|body| body.to_bytes())
        .unwrap_or_default();
    let idempotency_key = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|json| json["idempotency_key"].as_str().map(str::to_owned))
        .unwrap_or_default();
    hits.lock().expect("not poisoned").push(Hit {
        at,
        idempotency_key: idempotency_key.clone(),
    });
    let charge = |status: &str, decline_code: Option<&str>| {
        serde_json::json!({
            "charge_id": format!("ch_{idempotency_key}"),
            "status": status,
            "decline_code": decline_code,
            "amount_minor": 100,
            "captured_minor": if status == "succeeded" { 100 } else { 0 },
            "refunded_minor": 0,
            "currency": "USD",
            "voided": false,
        })
        .to_string()
    };
    let (status, body) = match mode.load(Ordering::SeqCst) {
        0 => (StatusCode::OK, charge("succeeded", None)),
        1 => (StatusCode::OK, charge("declined", Some("card_declined"))),
        2 => (StatusCode::SERVICE_UNAVAILABLE, String::from("{}")),
        3 => (
            StatusCode::BAD_REQUEST,
            String::from(r#"{"error":{"code":"invalid_amount","message":"no"}}"#),
        ),
        5 => (StatusCode::TOO_MANY_REQUESTS, String::from("{}")),
        _ => std::future::pending::<(StatusCode, String)>().await,
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if status == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert("retry-after", hyper::header::HeaderValue::from_static("0"));
    }
    Ok(response)
}

pub fn charge_request(key: &str) -> ChargeRequest {
    ChargeRequest {
        idempotency_key: key.to_owned(),
        amount_minor: 100,
        currency: "USD".to_owned(),
        card: CardData::new("4242424242424242", 12, 2030, "987").expect("well-formed card"),
        capture: true,
    }
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
