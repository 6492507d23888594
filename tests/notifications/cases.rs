//! The merchant-callback cases, run once per transport: `notifications.rs` (embedded) and
//! `notifications_rabbitmq.rs` (RabbitMQ) include this file and say which by `TRANSPORT`.
//! The real binary delivers every event to a receiver the test scripts, signed, at least once,
//! on the configured schedule; dead letters are listed and replayed by operators; a hanging
//! endpoint does not hold up other merchants; a SIGKILL loses nothing.

use std::time::Duration;

use harness::webhooks::{Reply, WebhookReceiver, always, fail_first};
use harness::*;
use serde_json::{Value, json};

use super::TRANSPORT;
use super::common::*;

#[tokio::test]
async fn a_recovering_receiver_gets_every_event_once_after_dedupe_on_schedule() {
    // Down (503) for the first two deliveries of every event, then up.
    let Some(one) = OneMerchant::start(TRANSPORT, "Recovering Ltd", fail_first(2)).await else {
        return;
    };
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
    one.assert_carried_by_transport(ids.len() as u64).await;

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
    let script = always(Reply::Status(500));
    let Some(one) = OneMerchant::start(TRANSPORT, "Dead Letters Ltd", script).await else {
        return;
    };
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
    // First deliveries, the replay of the dead ones, and the single replay.
    one.assert_carried_by_transport(2 * ids.len() as u64 + 1)
        .await;
}

#[tokio::test]
async fn a_hanging_endpoint_does_not_delay_another_merchants_callbacks() {
    /// The most another merchant's callback may take, from its payment's answer.
    const OTHER_MERCHANT_BOUND: Duration = Duration::from_secs(2);
    const STUCK_EVENTS: usize = 20;
    let Some(setup) = setup(TRANSPORT, "Hanging").await else {
        return;
    };
    let hanging = WebhookReceiver::start(always(Reply::Hang)).await;
    let healthy = WebhookReceiver::start(always(Reply::Status(200))).await;
    // A small batch, so the hanging endpoint's backlog alone fills a whole scan, and a timeout
    // longer than the bound, so that backlog cannot drain in time by itself.
    let kassa = Kassa::start(
        setup
            .options
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
    let script = always(Reply::Status(200));
    let Some(one) = OneMerchant::start(TRANSPORT, "Stripe Compatible", script).await else {
        return;
    };
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
    one.assert_carried_by_transport(1).await;
}

#[tokio::test]
async fn a_sigkill_mid_delivery_loses_no_event() {
    // Every first delivery fails, so deliveries are pending (and some in flight) at the kill.
    let Some(mut one) = OneMerchant::start(TRANSPORT, "Crash Ltd", fail_first(1)).await else {
        return;
    };
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
    one.assert_carried_by_transport(0).await;
}
