//! Asynchronous `charge.updated` callbacks: late (a random delay in the behaviour's bounds),
//! sometimes twice, signed like requests, bounded.
//!
//! Wire format, `POST {callback_url}`:
//!
//! ```text
//! Content-Type: application/json
//! Sandbox-Signature: t=<unix>,v1=<hex HMAC-SHA256(api_secret, "{t}.POST.{path}.{body}")>
//!
//! {"type":"charge.updated","id":"evt_<16 hex>","charge":{…as GET /card/v1/charges/{id}…},
//!  "sent_at":<unix>}
//! ```
//!
//! `path` is the callback URL's path with its query, as for requests (the same
//! [`crate::card::signature`] module signs and verifies both). A duplicate carries the same
//! `id` and `charge`; `sent_at` and the signature are those of each attempt.
//!
//! Bounds: at most [`CALLBACKS_QUEUED_MAX`] copies are pending (waiting out their delay or
//! being delivered) at once; beyond that a copy is dropped and counted. Each copy gets at most
//! [`CALLBACK_ATTEMPTS_MAX`] attempts of at most [`CALLBACK_ATTEMPT_TIMEOUT_MS`] each; any 2xx
//! is delivered. Pending callbacks are abandoned when the sandbox stops.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tokio::sync::Semaphore;

use super::State;
use super::behaviour::CallbackPlan;
use super::stats::Counter;
use crate::card::signature::{self, SIGNATURE_HEADER};

/// Callback copies pending at once; more are dropped (and counted in the stats).
pub const CALLBACKS_QUEUED_MAX: usize = 1_024;
/// Attempts per callback copy.
pub const CALLBACK_ATTEMPTS_MAX: u32 = 3;
/// How long one attempt may take before it counts as failed.
pub const CALLBACK_ATTEMPT_TIMEOUT_MS: u64 = 5_000;
/// The pause after a failed attempt, times the attempt's number.
pub const CALLBACK_RETRY_PAUSE_MS: u64 = 100;

/// The event type of every callback today.
const EVENT_TYPE: &str = "charge.updated";

/// The callback sender: a slot per pending copy and one pooled HTTP client.
pub(crate) struct Callbacks {
    slots: Arc<Semaphore>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Callbacks {
    /// A sender with room for `queued_max` pending copies ([`CALLBACKS_QUEUED_MAX`] in the
    /// sandbox).
    pub(crate) fn new(queued_max: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(queued_max)),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }
}

#[derive(Serialize)]
struct CallbackEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    charge: &'a serde_json::Value,
    sent_at: u64,
}

/// One copy of a callback, ready to send.
struct Delivery {
    url: Uri,
    event_id: Arc<str>,
    charge: Arc<serde_json::Value>,
    delay: Duration,
}

/// Schedules the `charge.updated` callback for `charge` (its JSON as `GET` shows it) when the
/// behaviour names a `callback_url`. Never blocks and never fails the request that caused it.
pub(crate) fn schedule(state: &Arc<State>, charge: serde_json::Value) {
    let Some(plan) = state.chaos.lock().plan_callback() else {
        return;
    };
    let CallbackPlan {
        url,
        delays,
        event_number,
    } = plan;
    let Ok(url) = url.parse::<Uri>() else {
        // `Behaviour::validate` checked the URL, so this cannot happen; drop rather than panic.
        state.stats.bump(Counter::CallbacksDropped);
        return;
    };
    if delays.len() > 1 {
        state.stats.bump(Counter::CallbacksDuplicated);
    }
    let event_id: Arc<str> = Arc::from(format!("evt_{event_number:016x}"));
    let charge = Arc::new(charge);
    for delay in delays {
        let Ok(slot) = state.callbacks.slots.clone().try_acquire_owned() else {
            tracing::warn!("sandbox callback queue full; dropping a callback");
            state.stats.bump(Counter::CallbacksDropped);
            continue;
        };
        state.stats.bump(Counter::CallbacksQueued);
        let delivery = Delivery {
            url: url.clone(),
            event_id: event_id.clone(),
            charge: charge.clone(),
            delay,
        };
        let state = state.clone();
        let mut stopping = state.stopping.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                // Stop (or a dropped sender, which also means stop) abandons the callback.
                _ = stopping.wait_for(|stopped| *stopped) => {}
                delivered = deliver(&state, &delivery) => {
                    let counter = if delivered {
                        Counter::CallbacksDelivered
                    } else {
                        Counter::CallbacksFailed
                    };
                    state.stats.bump(counter);
                }
            }
            drop(slot);
        });
    }
}

/// Waits out the delay, then tries up to [`CALLBACK_ATTEMPTS_MAX`] times. True when delivered.
async fn deliver(state: &State, delivery: &Delivery) -> bool {
    tokio::time::sleep(delivery.delay).await;
    for attempt in 1..=CALLBACK_ATTEMPTS_MAX {
        match attempt_once(state, delivery).await {
            Ok(()) => return true,
            Err(reason) => {
                tracing::debug!(
                    attempt,
                    reason,
                    event = %delivery.event_id,
                    "sandbox callback attempt failed"
                );
            }
        }
        if attempt < CALLBACK_ATTEMPTS_MAX {
            let pause_ms = CALLBACK_RETRY_PAUSE_MS * u64::from(attempt);
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        }
    }
    tracing::warn!(event = %delivery.event_id, "sandbox callback abandoned after its last attempt");
    false
}

async fn attempt_once(state: &State, delivery: &Delivery) -> Result<(), &'static str> {
    let sent_at = signature::now_unix_s();
    let body = serde_json::to_vec(&CallbackEvent {
        kind: EVENT_TYPE,
        id: &delivery.event_id,
        charge: &delivery.charge,
        sent_at,
    })
    .map_err(|_| "the event could not be serialised")?;
    let path = delivery
        .url
        .path_and_query()
        .map_or("/", |path| path.as_str());
    let header = signature::header_value(
        state.api_secret.expose().as_bytes(),
        sent_at,
        Method::POST.as_str(),
        path,
        &body,
    );
    let header = HeaderValue::from_str(&header).map_err(|_| "unprintable signature")?;
    let request = Request::builder()
        .method(Method::POST)
        .uri(delivery.url.clone())
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header(SIGNATURE_HEADER, header)
        .body(Full::new(Bytes::from(body)))
        .map_err(|_| "the request could not be built")?;
    let timeout = Duration::from_millis(CALLBACK_ATTEMPT_TIMEOUT_MS);
    let response = tokio::time::timeout(timeout, state.callbacks.client.request(request))
        .await
        .map_err(|_| "timed out")?
        .map_err(|_| "the receiver could not be reached")?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err("the receiver answered with a non-2xx status")
    }
}

#[cfg(test)]
mod tests {
    use parking_lot::Mutex;
    use tokio::sync::watch;

    use super::*;
    use crate::sandbox::behaviour::{Behaviour, Chaos};
    use crate::sandbox::ledger::Ledger;
    use crate::sandbox::stats::Stats;
    use crate::secret::Secret;

    #[tokio::test]
    async fn callbacks_beyond_the_queue_bound_are_dropped_and_counted() {
        let behaviour = Behaviour {
            // Nothing listens on port 9 here; the long delay keeps every copy pending anyway.
            callback_url: Some("http://127.0.0.1:9/hooks".to_owned()),
            callback_delay_ms_min: 60_000,
            callback_delay_ms_max: 60_000,
            ..Behaviour::default()
        };
        let state = Arc::new(State {
            ledger: Ledger::open(None).expect("an in-memory ledger"),
            api_secret: Secret::new("secret".to_owned()),
            chaos: Mutex::new(Chaos::new(behaviour)),
            stats: Arc::new(Stats::new()),
            callbacks: Callbacks::new(2),
            stopping: watch::Sender::new(false),
        });
        for _ in 0..5 {
            schedule(&state, serde_json::json!({ "charge_id": "ch_1" }));
        }
        let stats = state.stats.view(0);
        assert_eq!(stats.callbacks_queued, 2);
        assert_eq!(stats.callbacks_dropped, 3);
        // Stopping abandons the pending copies and frees their slots.
        state.stopping.send_replace(true);
        let slots = state.callbacks.slots.clone();
        let freed = tokio::time::timeout(Duration::from_secs(5), slots.acquire_many(2)).await;
        assert!(matches!(freed, Ok(Ok(_))), "the slots come back");
        let stats = state.stats.view(0);
        assert_eq!(stats.callbacks_delivered + stats.callbacks_failed, 0);
    }
}
