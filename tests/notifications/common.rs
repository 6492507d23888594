//! What the merchant-callback tests share, whichever transport carries the deliveries: the
//! instance set-up, a Stripe-compatible signature check, and waits on the receiver and on the
//! operator's view.
//!
//! Every instance runs a short schedule (`0,200,400,800` ms: four attempts a round), no jitter,
//! and a 1 s webhook timeout.

#![allow(dead_code)] // Each test binary uses its own share of these helpers.

use std::time::Duration;

use harness::services::{self, BrokerPrefix};
use harness::webhooks::{Received, Reply, Script, WebhookReceiver};
use harness::*;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub const SCHEDULE_MS: [u64; 4] = [0, 200, 400, 800];
pub const WEBHOOK_TIMEOUT_MS: u64 = 1_000;
/// How long every wait for deliveries may take before the test fails.
pub const DELIVERY_WAIT: Duration = Duration::from_secs(30);
/// Slack for timer and clock granularity when checking the spacing of attempts.
pub const SPACING_SLACK_MS: u128 = 30;

/// How deliveries travel (`notifications.transport`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Embedded,
    RabbitMq,
}

/// An instance's options for `transport`, and (RabbitMQ) the broker prefix that must outlive
/// the instance. `None` when the transport's service is missing on a developer machine (the
/// reason is printed; under `CI=true` the test fails instead).
pub struct Setup {
    pub options: KassaOptions,
    pub broker: Option<BrokerPrefix>,
}

pub async fn setup(transport: Transport, test: &str) -> Option<Setup> {
    let schedule: Vec<String> = SCHEDULE_MS.iter().map(u64::to_string).collect();
    let options = KassaOptions::new()
        .env("KASSA_NOTIFICATIONS_SCHEDULE_MS", schedule.join(","))
        .env("KASSA_NOTIFICATIONS_JITTER_PERCENT", 0)
        .env("KASSA_NOTIFICATIONS_WEBHOOK_TIMEOUT_MS", WEBHOOK_TIMEOUT_MS);
    match transport {
        Transport::Embedded => Some(Setup {
            options,
            broker: None,
        }),
        Transport::RabbitMq => {
            services::rabbitmq(test).await?;
            let broker = BrokerPrefix::new(&test.replace(' ', "-"));
            let options = options
                .env("KASSA_NOTIFICATIONS_TRANSPORT", "rabbitmq")
                .env("KASSA_AMQP_URL", services::AMQP_URL)
                .env("KASSA_NOTIFICATIONS_RABBITMQ_PREFIX", &broker.prefix)
                // Reconnect quickly when a test stops the broker.
                .env("KASSA_NOTIFICATIONS_RABBITMQ_RECONNECT_MS_MAX", 500);
            Some(Setup {
                options,
                broker: Some(broker),
            })
        }
    }
}

/// Reproduces `stripe.Webhook.construct_event`'s check (`WebhookSignature.verify_header`):
/// split the header on `,`, each item on the first `=`; `t=` is the timestamp and every `v1=` a
/// candidate; the expected signature is hex HMAC-SHA256(secret, "{t}.{payload}"), compared in
/// constant time with each candidate; a timestamp older than the tolerance (300 s) is refused.
/// Written here from that description, independently of Kassa's own code.
pub fn stripe_construct_event(payload: &[u8], header: &str, secret: &str) -> Result<Value, String> {
    const TOLERANCE_S: i64 = 300;
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for item in header.split(',') {
        if let Some((key, value)) = item.split_once('=') {
            match key.trim() {
                "t" => timestamp = value.trim().parse::<i64>().ok(),
                "v1" => candidates.push(value.trim().to_owned()),
                _ => {}
            }
        }
    }
    let timestamp = timestamp.ok_or("Unable to extract timestamp and signatures from header")?;
    if candidates.is_empty() {
        return Err("No signatures found with expected scheme".into());
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(payload);
    let expected = hex::encode(mac.finalize().into_bytes());
    let matches = candidates
        .iter()
        .any(|candidate| bool::from(expected.as_bytes().ct_eq(candidate.as_bytes())));
    if !matches {
        return Err("No signatures found matching the expected signature for payload".into());
    }
    if timestamp < unix_now() - TOLERANCE_S {
        return Err("Timestamp outside the tolerance zone".into());
    }
    serde_json::from_slice(payload).map_err(|e| format!("Invalid payload: {e}"))
}

/// A merchant whose `webhook_url` is `receiver`'s; returns its client and webhook secret.
pub async fn merchant_with_endpoint(
    kassa: &Kassa,
    name: &str,
    receiver: &WebhookReceiver,
) -> (MerchantClient, MerchantCredentials) {
    let credentials = kassa
        .admin()
        .create_merchant(name, Some(&receiver.url()))
        .await
        .expect("creating a merchant with a webhook endpoint");
    assert!(credentials.webhook_secret.starts_with("whsec_"));
    (kassa.merchant(&credentials), credentials)
}

/// Makes `count` successful charges; returns the payment ids.
pub async fn charges(merchant: &MerchantClient, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..count {
        let response = post_payment(merchant, &usd_charge(CARD_SUCCEEDS), None).await;
        ids.push(id_of(&expect_status(&response, 201, "charge")));
    }
    ids
}

/// The merchant's event ids (from `GET /v1/events`), waiting until there are at least `min`.
pub async fn event_ids(merchant: &MerchantClient, min: usize) -> Vec<String> {
    poll_until("the merchant's events", DELIVERY_WAIT, || async {
        let body = get_ok(merchant, "/v1/events?limit=100").await;
        let (data, _) = assert_list(&body);
        let ids: Vec<String> = data.iter().map(id_of).collect();
        if ids.len() >= min {
            Ok(ids)
        } else {
            Err(format!("{} events", ids.len()))
        }
    })
    .await
}

/// Waits until every event in `ids` got a 2xx from `receiver` (or the deadline passes).
pub async fn wait_all_delivered(receiver: &WebhookReceiver, ids: &[String], within: Duration) {
    poll_until("every event answered 2xx", within, || async {
        let delivered: Vec<&String> = ids
            .iter()
            .filter(|id| {
                receiver
                    .received_for(id)
                    .iter()
                    .any(|r| matches!(r.reply, Reply::Status(200..=299)))
            })
            .collect();
        if delivered.len() == ids.len() {
            Ok(())
        } else {
            Err(format!("{} of {} delivered", delivered.len(), ids.len()))
        }
    })
    .await
}

/// Asserts one request is a well-formed, validly signed Kassa callback for `secret`.
pub fn assert_signed_callback(received: &Received, secret: &str) -> Value {
    let header = received
        .signature
        .as_deref()
        .expect("a Kassa-Signature header");
    let event = stripe_construct_event(&received.body, header, secret)
        .unwrap_or_else(|e| panic!("signature of {}: {e}", received.event_id));
    assert_eq!(
        received.event_id_header.as_deref(),
        Some(received.event_id.as_str())
    );
    assert_eq!(received.content_type.as_deref(), Some("application/json"));
    assert_eq!(received.user_agent.as_deref(), Some("kassa-webhooks/1"));
    assert_eq!(event["object"], "event");
    event
}

pub async fn admin_json(
    kassa: &Kassa,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let response = kassa
        .admin()
        .send(method, path, body.map(|b| b.to_string().into_bytes()))
        .await
        .expect("admin request");
    let json = response.json().unwrap_or(Value::Null);
    (response.status, json)
}

/// The operator's view of one delivery (`GET /admin/notifications/{id}`).
pub async fn notification(kassa: &Kassa, event_id: &str) -> (u16, Value) {
    let path = format!("/admin/notifications/{event_id}");
    admin_json(kassa, "GET", &path, None).await
}

/// Waits until the operator's view says every delivery in `ids` is `delivered`.
pub async fn wait_operator_sees_delivered(kassa: &Kassa, ids: &[String], what: &str) {
    for id in ids {
        poll_until(what, DELIVERY_WAIT, || async {
            let (_, detail) = notification(kassa, id).await;
            if detail["status"] == "delivered" {
                Ok(())
            } else {
                Err(detail.to_string())
            }
        })
        .await;
    }
}

/// An operator's replay (`POST` to `path`), which must be accepted and requeue `requeued`.
pub async fn assert_replayed(kassa: &Kassa, path: &str, filter: Option<Value>, requeued: usize) {
    let (status, body) = admin_json(kassa, "POST", path, filter).await;
    assert_eq!(
        (status, body["requeued"].clone()),
        (200, json!(requeued)),
        "{body}"
    );
}

/// The real binary (with [`setup`]'s options) and one merchant whose endpoint is a receiver
/// answering as `script` says.
pub struct OneMerchant {
    pub merchant: MerchantClient,
    pub credentials: MerchantCredentials,
    pub kassa: Kassa,
    pub receiver: WebhookReceiver,
    /// Dropped after `kassa` (fields drop in order): the queues go once nothing uses them.
    pub broker: Option<BrokerPrefix>,
}

impl OneMerchant {
    /// `None` when the transport's service is missing (see [`setup`]).
    pub async fn start(transport: Transport, name: &str, script: Script) -> Option<OneMerchant> {
        Self::start_with(transport, name, script, |options| options).await
    }

    /// [`OneMerchant::start`] with `tweak` applied to the instance's options.
    pub async fn start_with(
        transport: Transport,
        name: &str,
        script: Script,
        tweak: impl FnOnce(KassaOptions) -> KassaOptions,
    ) -> Option<OneMerchant> {
        let setup = setup(transport, name).await?;
        let receiver = WebhookReceiver::start(script).await;
        let kassa = Kassa::start(tweak(setup.options)).await;
        let (merchant, credentials) = merchant_with_endpoint(&kassa, name, &receiver).await;
        Some(OneMerchant {
            merchant,
            credentials,
            kassa,
            receiver,
            broker: setup.broker,
        })
    }

    /// With RabbitMQ, the deliveries went through the broker: the relay and the consumer are
    /// connected and the relay handed off at least `min` messages.
    pub async fn assert_carried_by_transport(&self, min: u64) {
        if self.broker.is_none() {
            return;
        }
        let kassa = &self.kassa;
        for role in ["relay", "consumer"] {
            let series = format!("kassa_notifier_broker_connected{{role=\"{role}\"}}");
            assert_eq!(kassa.metric(&series).await, 1, "{series}");
        }
        let relayed = kassa.metric("kassa_notifier_relayed_total").await;
        assert!(
            relayed >= min,
            "the relay handed off {relayed}, expected at least {min}"
        );
    }

    pub fn webhook_secret(&self) -> &str {
        &self.credentials.webhook_secret
    }

    /// Makes `count` successful charges; returns the ids of the (at least `count`) events.
    pub async fn charges_with_events(&self, count: usize) -> Vec<String> {
        charges(&self.merchant, count).await;
        event_ids(&self.merchant, count).await
    }

    /// Asserts every request the receiver got so far is a validly signed callback.
    pub fn assert_all_signed(&self) {
        for received in self.receiver.received() {
            assert_signed_callback(&received, self.webhook_secret());
        }
    }
}
