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
//!
//! The asynchronous channels send their outcome callbacks through the same sender and bounds
//! ([`schedule_envelope`]): each channel's [`Envelope`] renders a copy afresh for every attempt
//! (its own body, content type and signature headers, signed at that attempt's time) and says
//! which answers acknowledge it (`qr_wallet` wants the body `success`, like Alipay). Each
//! channel's copies are counted in that channel's stats.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use http_body_util::{BodyExt, Limited};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tokio::sync::Semaphore;

use super::State;
use super::behaviour::CallbackPlan;
use super::stats::{Counter, Stats};
use crate::adapter::tls;
use crate::card::signature::{self, SIGNATURE_HEADER};

/// Callback copies pending at once; more are dropped (and counted in the stats).
pub const CALLBACKS_QUEUED_MAX: usize = 1_024;
/// Attempts per callback copy.
pub const CALLBACK_ATTEMPTS_MAX: u32 = 3;
/// How long one attempt may take before it counts as failed.
pub const CALLBACK_ATTEMPT_TIMEOUT_MS: u64 = 5_000;
/// The pause after a failed attempt, times the attempt's number.
pub const CALLBACK_RETRY_PAUSE_MS: u64 = 100;

/// The event type of every card callback.
const EVENT_TYPE: &str = "charge.updated";
/// How much of a receiver's answer is read to see whether it acknowledges a callback.
const ACK_BODY_BYTES_MAX: usize = 1_024;

/// One callback copy as it goes on the wire at one attempt.
pub(crate) struct Rendered {
    pub content_type: &'static str,
    /// Signature headers: a name the HTTP builder accepts, and its value.
    pub headers: Vec<(&'static str, HeaderValue)>,
    pub body: Bytes,
}

/// How a channel's callback goes on the wire: rendered afresh for every attempt (its time and
/// signature are the attempt's), and which answers acknowledge it.
pub(crate) trait Envelope: Send + Sync {
    /// The copy for an attempt at `now_s` to a URL whose path (with query) is `path`.
    fn render(&self, state: &State, path: &str, now_s: u64) -> Result<Rendered, &'static str>;

    /// Whether the receiver's answer acknowledges the callback (by default: any 2xx).
    fn acknowledged(&self, status: StatusCode, _body: &[u8]) -> bool {
        status.is_success()
    }
}

/// The callback sender: a slot per pending copy and one pooled HTTP client (`https://`
/// receivers' certificates verified like every outbound call's, [`tls`]; `http://` plain).
pub(crate) struct Callbacks {
    slots: Arc<Semaphore>,
    client: Client<tls::HttpsConnector, Full<Bytes>>,
}

impl Callbacks {
    /// A sender with room for `queued_max` pending copies ([`CALLBACKS_QUEUED_MAX`] in the
    /// sandbox).
    pub(crate) fn new(queued_max: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(queued_max)),
            client: Client::builder(TokioExecutor::new())
                .build(tls::https_or_http(HttpConnector::new())),
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
    envelope: Arc<dyn Envelope>,
    delay: Duration,
}

/// The card channel's `charge.updated` event.
struct ChargeUpdated {
    event_id: Arc<str>,
    charge: serde_json::Value,
}

impl Envelope for ChargeUpdated {
    fn render(&self, state: &State, path: &str, now_s: u64) -> Result<Rendered, &'static str> {
        let body = serde_json::to_vec(&CallbackEvent {
            kind: EVENT_TYPE,
            id: &self.event_id,
            charge: &self.charge,
            sent_at: now_s,
        })
        .map_err(|_| "the event could not be serialised")?;
        let header = signature::header_value(
            state.api_secret.expose().as_bytes(),
            now_s,
            Method::POST.as_str(),
            path,
            &body,
        );
        let header = HeaderValue::from_str(&header).map_err(|_| "unprintable signature")?;
        Ok(Rendered {
            content_type: "application/json",
            headers: vec![(SIGNATURE_HEADER, header)],
            body: Bytes::from(body),
        })
    }
}

/// The event id of a planned callback: `evt_<16 hex>`, the same for its duplicate.
pub(crate) fn event_id(plan: &CallbackPlan) -> Arc<str> {
    Arc::from(format!("evt_{:016x}", plan.event_number))
}

/// Schedules the `charge.updated` callback for `charge` (its JSON as `GET` shows it) when the
/// behaviour names a `callback_url`. Never blocks and never fails the request that caused it.
pub(crate) fn schedule(state: &Arc<State>, charge: serde_json::Value) {
    let Some(plan) = state.chaos.lock().plan_callback() else {
        return;
    };
    let envelope = Arc::new(ChargeUpdated {
        event_id: event_id(&plan),
        charge,
    });
    schedule_envelope(state, &state.stats, plan, envelope);
}

/// Schedules the copies of a planned callback, rendered by `envelope`, counting them in
/// `stats` (the channel's). Never blocks and never fails the request that caused it.
pub(crate) fn schedule_envelope(
    state: &Arc<State>,
    stats: &Arc<Stats>,
    plan: CallbackPlan,
    envelope: Arc<dyn Envelope>,
) {
    let event_id = event_id(&plan);
    let CallbackPlan { url, delays, .. } = plan;
    let Ok(url) = url.parse::<Uri>() else {
        // `Behaviour::validate` checked the URL, so this cannot happen; drop rather than panic.
        stats.bump(Counter::CallbacksDropped);
        return;
    };
    if delays.len() > 1 {
        stats.bump(Counter::CallbacksDuplicated);
    }
    for delay in delays {
        let Ok(slot) = state.callbacks.slots.clone().try_acquire_owned() else {
            tracing::warn!("sandbox callback queue full; dropping a callback");
            stats.bump(Counter::CallbacksDropped);
            continue;
        };
        stats.bump(Counter::CallbacksQueued);
        let delivery = Delivery {
            url: url.clone(),
            event_id: event_id.clone(),
            envelope: envelope.clone(),
            delay,
        };
        let state = state.clone();
        let stats = stats.clone();
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
                    stats.bump(counter);
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
    let path = delivery
        .url
        .path_and_query()
        .map_or("/", |path| path.as_str());
    let rendered = delivery
        .envelope
        .render(state, path, signature::now_unix_s())?;
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(delivery.url.clone())
        .header(
            CONTENT_TYPE,
            HeaderValue::from_static(rendered.content_type),
        );
    for (name, value) in rendered.headers {
        builder = builder.header(name, value);
    }
    let request = builder
        .body(Full::new(rendered.body))
        .map_err(|_| "the request could not be built")?;
    let timeout = Duration::from_millis(CALLBACK_ATTEMPT_TIMEOUT_MS);
    let exchange = async {
        let response = state
            .callbacks
            .client
            .request(request)
            .await
            .map_err(|_| "the receiver could not be reached")?;
        let status = response.status();
        let body = Limited::new(response.into_body(), ACK_BODY_BYTES_MAX)
            .collect()
            .await
            .map(|collected| collected.to_bytes())
            .unwrap_or_default();
        Ok::<_, &'static str>((status, body))
    };
    let (status, body) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| "timed out")??;
    if delivery.envelope.acknowledged(status, &body) {
        Ok(())
    } else {
        Err("the receiver did not acknowledge the callback")
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
            async_channels: crate::sandbox::channels::AsyncChannels::open(
                None,
                "http://127.0.0.1:9".to_owned(),
                "secret",
            )
            .expect("an in-memory ledger"),
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
