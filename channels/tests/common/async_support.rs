//! Helpers for the asynchronous channels' tests: a sandbox, adapters of each protocol, payment
//! requests, the unsigned customer page, a callback receiver that keeps headers, and polling
//! with a deadline.

#![allow(dead_code)] // Each test file uses a different subset.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kassa_channels::card::signature;
use kassa_channels::sandbox::{self, Behaviour, SandboxConfig, SandboxHandle};
use kassa_channels::{
    AppWalletChannel, AsyncPayment, AsyncPaymentRequest, AsyncStatus, BankTransferChannel,
    ChannelAdapter, LookupOutcome, Protocol, QrWalletChannel, RefundRequest, Secret, inbound,
};
use serde_json::Value;

use crate::common::{SECRET, fast_config};

/// A valid IBAN (the standard example).
pub const IBAN: &str = "DE89370400440532013000";

pub async fn start() -> SandboxHandle {
    sandbox::start(SandboxConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        ledger_path: None,
        api_secret: SECRET.to_owned(),
        latency_ms: 0,
    })
    .await
    .expect("the sandbox starts")
}

pub fn adapter(sandbox: &SandboxHandle, protocol: Protocol) -> ChannelAdapter {
    ChannelAdapter::with_protocol(protocol, &sandbox.base_url(), SECRET, fast_config())
        .expect("a valid adapter")
}

pub fn qr(sandbox: &SandboxHandle) -> QrWalletChannel {
    QrWalletChannel::new(adapter(sandbox, Protocol::QrWallet))
}

pub fn app(sandbox: &SandboxHandle) -> AppWalletChannel {
    AppWalletChannel::new(adapter(sandbox, Protocol::AppWallet))
}

pub fn bank(sandbox: &SandboxHandle) -> BankTransferChannel {
    BankTransferChannel::new(adapter(sandbox, Protocol::BankTransfer))
}

pub fn request(key: &str, amount_minor: i64) -> AsyncPaymentRequest {
    AsyncPaymentRequest {
        idempotency_key: key.to_owned(),
        amount_minor,
        currency: "CNY".to_owned(),
        description: "tea & cake".to_owned(),
        payer_account: None,
        payer_name: None,
    }
}

pub fn bank_request(key: &str, amount_minor: i64) -> AsyncPaymentRequest {
    AsyncPaymentRequest {
        currency: "EUR".to_owned(),
        description: "invoice 2024-17".to_owned(),
        payer_account: Some(Secret::new(IBAN.to_owned())),
        payer_name: Some("Ada Lovelace GmbH".to_owned()),
        ..request(key, amount_minor)
    }
}

pub fn refund(key: &str, provider_ref: &str, amount_minor: i64, currency: &str) -> RefundRequest {
    RefundRequest {
        idempotency_key: key.to_owned(),
        provider_ref: provider_ref.to_owned(),
        amount_minor,
        currency: currency.to_owned(),
    }
}

/// The customer opens the wallet page (`fail`: and declines). Unsigned, as a browser would.
pub async fn customer(action_url: &str, fail: bool) -> (StatusCode, Value) {
    let url = if fail {
        format!("{action_url}?result=fail")
    } else {
        action_url.to_owned()
    };
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let response = client
        .get(url.parse().expect("a URL"))
        .await
        .expect("the sandbox answers");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    (status, serde_json::from_slice(&body).expect("JSON"))
}

/// Sets one channel's behaviour in process.
pub fn set(sandbox: &SandboxHandle, channel: &str, behaviour: Behaviour) {
    sandbox
        .set_channel_behaviour(channel, behaviour)
        .expect("a valid behaviour");
}

/// A receiver for `channel`'s callbacks (refusing the first `refuse_first`), set as its
/// `callback_url` on top of `behaviour`.
pub async fn receive_callbacks(
    sandbox: &SandboxHandle,
    channel: &'static str,
    refuse_first: usize,
    behaviour: Behaviour,
) -> CallbackReceiver {
    let receiver = CallbackReceiver::start(channel, refuse_first).await;
    set(
        sandbox,
        channel,
        Behaviour {
            callback_url: Some(receiver.url.clone()),
            ..behaviour
        },
    );
    receiver
}

/// The customer page of a payment that waits for its customer.
pub fn action_url(payment: &AsyncPayment) -> &str {
    match &payment.status {
        AsyncStatus::Pending {
            action_url: Some(url),
        } => url,
        _ => panic!("the payment waits for its customer: {payment:?}"),
    }
}

/// Calls `probe` until it returns `Some` or `deadline_ms` passes.
pub async fn eventually<T, F, Fut>(deadline_ms: u64, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_millis(deadline_ms);
    loop {
        if let Some(found) = probe().await {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The payment under `key` once it is no longer pending (`lookup` until then).
pub async fn decided<F, Fut>(deadline_ms: u64, mut lookup: F) -> kassa_channels::AsyncPayment
where
    F: FnMut() -> Fut,
    Fut: Future<Output = LookupOutcome>,
{
    eventually(deadline_ms, || {
        let answer = lookup();
        async move {
            match answer.await {
                LookupOutcome::Found(payment)
                    if !matches!(payment.status, kassa_channels::AsyncStatus::Pending { .. }) =>
                {
                    Some(payment)
                }
                _ => None,
            }
        }
    })
    .await
    .expect("the payment is decided before the deadline")
}

/// One callback as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    /// Decodes it the way Kassa's `POST /callbacks/{channel}` does.
    pub fn decode(
        &self,
        channel: &str,
        secret: &str,
    ) -> Result<kassa_channels::AsyncPayment, kassa_channels::InboundError> {
        inbound::decode(
            channel,
            secret.as_bytes(),
            &self.headers,
            &self.path,
            &self.body,
            signature::now_unix_s(),
        )
    }
}

/// A callback receiver for one channel at `/callbacks/{channel}`: records every request and
/// answers with the channel's acknowledgement ([`inbound::acknowledgement`]), except the first
/// `refuse_first` requests, which get a 200 whose body is `fail` (which only `qr_wallet`'s
/// provider, wanting `success`, does not take as an acknowledgement).
pub struct CallbackReceiver {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl CallbackReceiver {
    pub async fn start(channel: &'static str, refuse_first: usize) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "http://{}/callbacks/{channel}",
            listener.local_addr().expect("addr")
        );
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let seen = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let log = log.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: Request<hyper::body::Incoming>| {
                            let log = log.clone();
                            let seen = seen.clone();
                            async move {
                                let path = request.uri().path().to_owned();
                                let headers = request.headers().clone();
                                let body = request
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|collected| collected.to_bytes())
                                    .unwrap_or_default();
                                log.lock().expect("the log").push(Received {
                                    path,
                                    headers,
                                    body,
                                });
                                let (content_type, ack) = inbound::acknowledgement(channel);
                                let answer: &'static [u8] =
                                    if seen.fetch_add(1, Ordering::SeqCst) < refuse_first {
                                        b"fail"
                                    } else {
                                        ack
                                    };
                                let mut response =
                                    Response::new(Full::new(Bytes::from_static(answer)));
                                response.headers_mut().insert(
                                    "content-type",
                                    content_type.parse().expect("a header value"),
                                );
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
            url,
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

    /// Waits until at least `count` callbacks arrived.
    pub async fn wait_for(&self, count: usize, deadline_ms: u64) -> Vec<Received> {
        let arrived = crate::common::wait_until(deadline_ms, || self.count() >= count).await;
        assert!(arrived, "expected {count} callbacks, got {}", self.count());
        self.received()
    }
}

impl Drop for CallbackReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
