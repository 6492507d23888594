//! Merchant callbacks end to end: the real binary delivers every event to a receiver the test
//! scripts, signed, at least once, on the configured schedule; dead letters are listed and
//! replayed by operators; a hanging endpoint does not hold up other merchants; a SIGKILL loses
//! nothing.
//!
//! Every instance runs a short schedule (`0,200,400,800` ms: four attempts a round), no jitter,
//! and a 1 s webhook timeout.

use std::time::Duration;

use harness::webhooks::{Received, Reply, Script, WebhookReceiver, always, fail_first};
use harness::*;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq;

const SCHEDULE_MS: [u64; 4] = [0, 200, 400, 800];
const WEBHOOK_TIMEOUT_MS: u64 = 1_000;
/// How long every wait for deliveries may take before the test fails.
const DELIVERY_WAIT: Duration = Duration::from_secs(30);
/// Slack for timer and clock granularity when checking the spacing of attempts.
const SPACING_SLACK_MS: u128 = 30;

fn options() -> KassaOptions {
    let schedule: Vec<String> = SCHEDULE_MS.iter().map(u64::to_string).collect();
    KassaOptions::new()
        .env("KASSA_NOTIFICATIONS_SCHEDULE_MS", schedule.join(","))
        .env("KASSA_NOTIFICATIONS_JITTER_PERCENT", 0)
        .env("KASSA_NOTIFICATIONS_WEBHOOK_TIMEOUT_MS", WEBHOOK_TIMEOUT_MS)
}

/// Reproduces `stripe.Webhook.construct_event`'s check (`WebhookSignature.verify_header`):
/// split the header on `,`, each item on the first `=`; `t=` is the timestamp and every `v1=` a
/// candidate; the expected signature is hex HMAC-SHA256(secret, "{t}.{payload}"), compared in
/// constant time with each candidate; a timestamp older than the tolerance (300 s) is refused.
/// Written here from that description, independently of Kassa's own code.
fn stripe_construct_event(payload: &[u8], header: &str, secret: &str) -> Result<Value, String> {
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
async fn merchant_with_endpoint(
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
async fn charges(merchant: &MerchantClient, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..count {
        let response = post_payment(merchant, &usd_charge(CARD_SUCCEEDS), None).await;
        ids.push(id_of(&expect_status(&response, 201, "charge")));
    }
    ids
}

/// The merchant's event ids (from `GET /v1/events`), waiting until there are at least `min`.
async fn event_ids(merchant: &MerchantClient, min: usize) -> Vec<String> {
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
async fn wait_all_delivered(receiver: &WebhookReceiver, ids: &[String], within: Duration) {
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
fn assert_signed_callback(received: &Received, secret: &str) -> Value {
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

async fn admin_json(kassa: &Kassa, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let response = kassa
        .admin()
        .send(method, path, body.map(|b| b.to_string().into_bytes()))
        .await
        .expect("admin request");
    let json = response.json().unwrap_or(Value::Null);
    (response.status, json)
}

/// The operator's view of one delivery (`GET /admin/notifications/{id}`).
async fn notification(kassa: &Kassa, event_id: &str) -> (u16, Value) {
    let path = format!("/admin/notifications/{event_id}");
    admin_json(kassa, "GET", &path, None).await
}

/// Waits until the operator's view says every delivery in `ids` is `delivered`.
async fn wait_operator_sees_delivered(kassa: &Kassa, ids: &[String], what: &str) {
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
async fn assert_replayed(kassa: &Kassa, path: &str, filter: Option<Value>, requeued: usize) {
    let (status, body) = admin_json(kassa, "POST", path, filter).await;
    assert_eq!(
        (status, body["requeued"].clone()),
        (200, json!(requeued)),
        "{body}"
    );
}

/// The real binary (with [`options`]) and one merchant whose endpoint is a receiver answering
/// as `script` says.
struct OneMerchant {
    merchant: MerchantClient,
    credentials: MerchantCredentials,
    kassa: Kassa,
    receiver: WebhookReceiver,
}

impl OneMerchant {
    async fn start(name: &str, script: Script) -> OneMerchant {
        let receiver = WebhookReceiver::start(script).await;
        let kassa = Kassa::start(options()).await;
        let (merchant, credentials) = merchant_with_endpoint(&kassa, name, &receiver).await;
        OneMerchant {
            merchant,
            credentials,
            kassa,
            receiver,
        }
    }

    fn webhook_secret(&self) -> &str {
        &self.credentials.webhook_secret
    }

    /// Makes `count` successful charges; returns the ids of the (at least `count`) events.
    async fn charges_with_events(&self, count: usize) -> Vec<String> {
        charges(&self.merchant, count).await;
        event_ids(&self.merchant, count).await
    }

    /// Asserts every request the receiver got so far is a validly signed callback.
    fn assert_all_signed(&self) {
        for received in self.receiver.received() {
            assert_signed_callback(&received, self.webhook_secret());
        }
    }
}

#[tokio::test]
async fn a_recovering_receiver_gets_every_event_once_after_dedupe_on_schedule() {
    // Down (503) for the first two deliveries of every event, then up.
    let one = OneMerchant::start("Recovering Ltd", fail_first(2)).await;
    let (kassa, receiver) = (&one.kassa, &one.receiver);
    let ids = one.charges_with_events(3).await;
    wait_all_delivered(receiver, &ids, DELIVERY_WAIT).await;

    let mut deduped = std::collections::BTreeSet::new();
    for received in receiver.received() {
        assert_signed_callback(&received, one.webhook_secret());
        if matches!(received.reply, Reply::Status(200)) {
            assert!(
                deduped.insert(received.event_id.clone()),
                "two 2xx for one event"
            );
        }
    }
    let expected: std::collections::BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(deduped, expected, "every event exactly once after dedupe");

    for id in &ids {
        let attempts = receiver.received_for(id);
        assert_eq!(attempts.len(), 3, "two failures then the delivery: {id}");
        for (k, pair) in attempts.windows(2).enumerate() {
            let gap_ms = (pair[1].at - pair[0].at).as_millis();
            let delay_ms = u128::from(SCHEDULE_MS[k + 1]);
            assert!(
                gap_ms + SPACING_SLACK_MS >= delay_ms && gap_ms <= delay_ms + 1_500,
                "attempt {} of {id} came {gap_ms} ms after the previous, schedule says {delay_ms}",
                k + 2
            );
        }
        // The operator's view: delivered, with every attempt.
        let (status, detail) = notification(kassa, id).await;
        assert_eq!(status, 200, "{detail}");
        assert_eq!(detail["status"], "delivered", "{detail}");
        let statuses: Vec<Value> = detail["attempts"]
            .as_array()
            .expect("attempts")
            .iter()
            .map(|a| a["http_status"].clone())
            .collect();
        assert_eq!(statuses, [json!(503), json!(503), json!(200)], "{detail}");
        assert_eq!(detail["event"]["id"], id.as_str());
    }
}

#[tokio::test]
async fn a_receiver_that_never_succeeds_ends_dead_and_a_replay_delivers() {
    let one = OneMerchant::start("Dead Letters Ltd", always(Reply::Status(500))).await;
    let (kassa, receiver) = (&one.kassa, &one.receiver);
    let ids = one.charges_with_events(2).await;

    let merchant_id = &one.credentials.id;
    let path = format!("/admin/notifications?status=dead&merchant={merchant_id}");
    let dead = poll_until("the deliveries to be dead", DELIVERY_WAIT, || async {
        let (status, body) = admin_json(kassa, "GET", &path, None).await;
        let (data, _) = assert_list(&body);
        if status == 200 && data.len() == ids.len() {
            Ok(data)
        } else {
            Err(format!("{status} {body}"))
        }
    })
    .await;
    for delivery in &dead {
        assert_eq!(delivery["status"], "dead");
        assert_eq!(delivery["last_http_status"], 500);
    }
    for id in &ids {
        assert_eq!(
            receiver.received_for(id).len(),
            SCHEDULE_MS.len(),
            "a whole round: {id}"
        );
    }

    // An empty filter is refused; the merchant's dead letters are replayed once it recovers.
    let replay = "/admin/notifications/replay";
    let (status, body) = admin_json(kassa, "POST", replay, Some(json!({}))).await;
    assert_eq!(status, 422, "{body}");
    receiver.set_script(always(Reply::Status(200)));
    let filter = json!({"status": "dead", "merchant": merchant_id});
    assert_replayed(kassa, replay, Some(filter), ids.len()).await;
    wait_all_delivered(receiver, &ids, DELIVERY_WAIT).await;
    wait_operator_sees_delivered(kassa, &ids, "the replayed delivery to be delivered").await;

    // One delivery replayed by id is sent once more.
    let first = &ids[0];
    let before = receiver.received_for(first).len();
    let replay_one = format!("/admin/notifications/{first}/replay");
    assert_replayed(kassa, &replay_one, None, 1).await;
    receiver
        .wait_received_for("the single replay", first, before + 1, DELIVERY_WAIT)
        .await;
    let (status, _) = admin_json(kassa, "POST", "/admin/notifications/evt_nope/replay", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_hanging_endpoint_does_not_delay_another_merchants_callbacks() {
    /// The most another merchant's callback may take, from its payment's answer.
    const OTHER_MERCHANT_BOUND: Duration = Duration::from_secs(2);
    const STUCK_EVENTS: usize = 20;
    let hanging = WebhookReceiver::start(always(Reply::Hang)).await;
    let healthy = WebhookReceiver::start(always(Reply::Status(200))).await;
    // A small batch, so the hanging endpoint's backlog alone fills a whole scan, and a timeout
    // longer than the bound, so that backlog cannot drain in time by itself.
    let kassa = Kassa::start(
        options()
            .env("KASSA_NOTIFICATIONS_BATCH_MAX", 3)
            .env("KASSA_NOTIFICATIONS_WEBHOOK_TIMEOUT_MS", 10_000),
    )
    .await;
    let (stuck, _) = merchant_with_endpoint(&kassa, "Hanging Ltd", &hanging).await;
    let (fine, _) = merchant_with_endpoint(&kassa, "Healthy Ltd", &healthy).await;
    charges(&stuck, STUCK_EVENTS).await;
    // The hanging endpoint holds its slots (endpoint_inflight_max = 4) and has more waiting.
    hanging
        .wait_received("the hanging endpoint to be saturated", 4, DELIVERY_WAIT)
        .await;

    for _ in 0..3 {
        let started = tokio::time::Instant::now();
        let payment = charges(&fine, 1).await.remove(0);
        poll_until(
            "the healthy merchant's callback",
            OTHER_MERCHANT_BOUND,
            || async {
                let got = healthy
                    .received()
                    .iter()
                    .any(|r| String::from_utf8_lossy(&r.body).contains(&payment));
                if got {
                    Ok(())
                } else {
                    Err("not yet".to_string())
                }
            },
        )
        .await;
        assert!(started.elapsed() < OTHER_MERCHANT_BOUND + Duration::from_secs(1));
    }
    assert!(
        hanging.received().len() <= 4,
        "the hanging endpoint got more than endpoint_inflight_max attempts at once"
    );
}

#[tokio::test]
async fn the_signature_verifies_with_stripes_algorithm_and_nothing_else() {
    let one = OneMerchant::start("Stripe Compatible", always(Reply::Status(200))).await;
    let (merchant, receiver, secret) = (&one.merchant, &one.receiver, one.webhook_secret());
    let payment = charges(merchant, 1).await.remove(0);
    let ids = event_ids(merchant, 1).await;
    wait_all_delivered(receiver, &ids, DELIVERY_WAIT).await;
    let received = receiver.received_for(&ids[0]).remove(0);
    let event = assert_signed_callback(&received, secret);
    assert_eq!(event["type"], "payment.succeeded");
    assert_eq!(event["data"]["object"]["id"], payment.as_str());
    // The body is byte for byte the event of `GET /v1/events/{id}`.
    let stored = get_ok(merchant, &format!("/v1/events/{}", ids[0])).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&received.body).unwrap(),
        stored
    );

    let header = received.signature.clone().unwrap();
    assert!(
        header.starts_with("t=") && header.contains(",v1="),
        "{header}"
    );
    let mut tampered = received.body.to_vec();
    tampered.extend_from_slice(b" ");
    assert!(stripe_construct_event(&tampered, &header, secret).is_err());
    assert!(stripe_construct_event(&received.body, &header, "whsec_other").is_err());
    // Kassa's own verifier (the example receiver's) agrees.
    kassa_client::verify_webhook(secret, &header, &received.body, unix_now(), 300)
        .expect("kassa_client::verify_webhook");
    // A correctly signed but stale delivery (older than the 300 s tolerance) is refused.
    let old = unix_now() - 301;
    let stale = kassa_client::webhook_signature(secret, old, &received.body);
    let refused = stripe_construct_event(&received.body, &stale, secret);
    assert!(refused.unwrap_err().contains("tolerance"));
}

#[tokio::test]
async fn a_sigkill_mid_delivery_loses_no_event() {
    // Every first delivery fails, so deliveries are pending (and some in flight) at the kill.
    let mut one = OneMerchant::start("Crash Ltd", fail_first(1)).await;
    let ids = one.charges_with_events(8).await;
    one.receiver
        .wait_received("first attempts to start", 1, DELIVERY_WAIT)
        .await;
    one.kassa.kill9();
    one.kassa.restart().await;
    wait_all_delivered(&one.receiver, &ids, DELIVERY_WAIT).await;
    one.assert_all_signed();
    let merchant = one.kassa.merchant(&one.credentials);
    assert_eq!(
        event_ids(&merchant, 8).await.len(),
        ids.len(),
        "no event lost or added"
    );
    let what = "the delivery to be delivered after the restart";
    wait_operator_sees_delivered(&one.kassa, &ids, what).await;
}
