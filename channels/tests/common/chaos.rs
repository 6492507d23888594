//! Helpers for `sandbox_chaos.rs`: a sandbox with a behaviour, a signed client that returns
//! status, `Retry-After` and JSON, a raw connection for held requests, and a tiny callback
//! receiver that records what it got.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kassa_channels::card::signature;
use kassa_channels::sandbox::{self, Behaviour, SandboxConfig, SandboxHandle, StatsView};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::common::{SECRET, ledger};

pub const APPROVED: &str = "4242424242424242";
pub const DECLINED: &str = "4000000000000002";

pub async fn start(behaviour: Behaviour) -> SandboxHandle {
    sandbox::start_with_behaviour(
        SandboxConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ledger_path: None,
            api_secret: SECRET.to_owned(),
            latency_ms: 0,
        },
        behaviour,
    )
    .await
    .expect("the sandbox starts")
}

/// One answer: status, `Retry-After` and the JSON body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub retry_after: Option<String>,
    pub json: Value,
}

/// A signed client for one sandbox, with one connection pool.
pub struct Api {
    pub base_url: String,
    pub client: Client<HttpConnector, Full<Bytes>>,
}

impl Api {
    pub fn new(sandbox: &SandboxHandle) -> Self {
        Self {
            base_url: sandbox.base_url(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub async fn call(&self, method: Method, path: &str, body: &str) -> Reply {
        let header = signature::header_value(
            SECRET.as_bytes(),
            signature::now_unix_s(),
            method.as_str(),
            path,
            body.as_bytes(),
        );
        self.send(method, path, body, Some(header)).await
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: &str,
        signature_header: Option<String>,
    ) -> Reply {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base_url))
            .header("content-type", "application/json");
        if let Some(header) = signature_header {
            builder = builder.header(signature::SIGNATURE_HEADER, header);
        }
        let request = builder
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("a valid request");
        let response = self.client.request(request).await.expect("an answer");
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|value| value.to_str().expect("ASCII").to_owned());
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        let json = serde_json::from_slice(&bytes).expect("every answer is JSON");
        Reply {
            status,
            retry_after,
            json,
        }
    }

    pub async fn charge(&self, key: &str, pan: &str, capture: bool) -> Reply {
        self.call(
            Method::POST,
            "/card/v1/charges",
            &charge_body(key, pan, capture),
        )
        .await
    }

    pub async fn put_behaviour(&self, behaviour: &Value) -> Reply {
        self.call(Method::PUT, "/sandbox/behaviour", &behaviour.to_string())
            .await
    }

    pub async fn stats(&self) -> StatsView {
        let reply = self.call(Method::GET, "/sandbox/stats", "").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
        serde_json::from_value(reply.json).expect("the stats shape")
    }
}

pub fn charge_body(key: &str, pan: &str, capture: bool) -> String {
    json!({
        "idempotency_key": key,
        "amount_minor": 1_250,
        "currency": "USD",
        "pan": pan,
        "exp_month": 12,
        "exp_year": 2030,
        "cvc": "123",
        "capture": capture,
    })
    .to_string()
}

/// The idempotency keys of every charge in the ledger.
pub async fn ledger_keys(base_url: &str) -> HashSet<String> {
    ledger(base_url).await["charges"]
        .as_array()
        .expect("charges is a list")
        .iter()
        .map(|charge| {
            charge["idempotency_key"]
                .as_str()
                .expect("a key")
                .to_owned()
        })
        .collect()
}

/// Sends `count` charges one after another and returns each key with its answer.
pub async fn charge_many(api: &Api, prefix: &str, count: usize) -> Vec<(String, Reply)> {
    let mut replies = Vec::with_capacity(count);
    for index in 0..count {
        let key = format!("{prefix}-{index}");
        let reply = api.charge(&key, APPROVED, true).await;
        replies.push((key, reply));
    }
    replies
}

/// Writes one signed charge on a raw connection, so the test decides when to give up.
pub async fn raw_charge(sandbox: &SandboxHandle, key: &str) -> tokio::net::TcpStream {
    let body = charge_body(key, APPROVED, true);
    let header = signature::header_value(
        SECRET.as_bytes(),
        signature::now_unix_s(),
        "POST",
        "/card/v1/charges",
        body.as_bytes(),
    );
    let request = format!(
        "POST /card/v1/charges HTTP/1.1\r\nHost: {}\r\ncontent-type: application/json\r\n\
         {}: {header}\r\ncontent-length: {}\r\n\r\n{body}",
        sandbox.addr(),
        signature::SIGNATURE_HEADER,
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(sandbox.addr())
        .await
        .expect("connect");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write the request");
    stream
}

/// One callback as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub path: String,
    pub signature: Option<String>,
    pub body: Bytes,
}

/// A tiny callback receiver: records every request, fails the first `fail_first` with 500.
pub struct Receiver {
    pub base_url: String,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start(fail_first: usize) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base_url = format!("http://{}", listener.local_addr().expect("addr"));
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: Request<hyper::body::Incoming>| {
                            let log = log.clone();
                            async move {
                                let at = Instant::now();
                                let path = request
                                    .uri()
                                    .path_and_query()
                                    .map(|path| path.as_str().to_owned())
                                    .unwrap_or_default();
                                let signature = request
                                    .headers()
                                    .get(signature::SIGNATURE_HEADER)
                                    .map(|value| value.to_str().unwrap_or("").to_owned());
                                let body = request
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|collected| collected.to_bytes())
                                    .unwrap_or_default();
                                let seen = {
                                    let mut log = log.lock().expect("the log");
                                    log.push(Received {
                                        at,
                                        path,
                                        signature,
                                        body,
                                    });
                                    log.len()
                                };
                                let status = if seen <= fail_first {
                                    StatusCode::INTERNAL_SERVER_ERROR
                                } else {
                                    StatusCode::OK
                                };
                                let mut response = Response::new(Full::new(Bytes::new()));
                                *response.status_mut() = status;
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            base_url,
            received,
            task,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("the log").clone()
    }

    pub fn count(&self) -> usize {
        self.received.lock().expect("the log").len()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A call that changed a charge: its answer and when it was sent and answered.
pub struct Change {
    pub charge: Value,
    pub sent: Instant,
    pub answered: Instant,
}

pub async fn timed(api: &Api, method: Method, path: &str, body: &str) -> Change {
    let sent = Instant::now();
    let reply = api.call(method, path, body).await;
    let answered = Instant::now();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    Change {
        charge: reply.json,
        sent,
        answered,
    }
}

/// Kills the child process this test started, however the test ends.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
