//! Outcomes are facts, not guesses (DESIGN.md §3 step 7): a channel call that times out
//! leaves the order `processing`; Kassa never marks it failed for lack of patience, and once
//! the channel answers again the order takes the channel's own answer — without a second charge.

use std::time::Duration;

use harness::*;
use serde_json::Value;

async fn sandbox_charges_under(kassa: &Kassa, key: &str) -> Vec<Value> {
    let ledger = sandbox_call(kassa, "GET", "/sandbox/ledger", None).await;
    let charges = ledger["charges"].as_array().cloned().unwrap_or_default();
    charges
        .into_iter()
        .filter(|c| c["idempotency_key"] == key)
        .collect()
}

#[tokio::test]
async fn a_timed_out_charge_stays_processing_then_takes_the_channels_answer() {
    // The sandbox charges at once but answers only after 1.5 s; Kassa gives up on an answer
    // after 200 ms and does not retry, so the outcome is unknown.
    let mut kassa = Kassa::start(
        KassaOptions::new()
            .env("KASSA_SANDBOX_LATENCY_MS", 1_500)
            .env("KASSA_CHANNELS_CARD_REQUEST_TIMEOUT_MS", 200)
            .env("KASSA_CHANNELS_CARD_RETRY_ATTEMPTS_MAX", 1),
    )
    .await;
    let merchant = kassa.new_merchant("Uncertain Ltd").await;
    let mut body = usd_charge(CARD_SUCCEEDS);
    body["wait_ms"] = 1_000.into();
    let response = post_payment(&merchant, &body, Some(&unique("key"))).await;
    let payment = expect_status(&response, 202, "charge whose answer timed out");
    assert_eq!(payment["status"], "processing", "{payment}");
    let id = id_of(&payment);

    // Every attempt to learn the outcome times out too: still processing, never "failed".
    let read = get_payment(&merchant, &id).await;
    assert_eq!(read["status"], "processing", "{read}");
    assert_eq!(read["failure_code"], Value::Null, "{read}");

    // The channel recovers (and Kassa restarts on the way): the order asks the channel and
    // takes its answer — the charge that was made — instead of charging again.
    kassa.set_env("KASSA_SANDBOX_LATENCY_MS", 0);
    kassa.restart().await;
    let merchant = merchant.with_base_url(kassa.base_url());
    let settled = wait_until_settled(&merchant, &id, Duration::from_secs(30)).await;
    assert_eq!(settled["status"], "succeeded", "{settled}");
    assert_eq!(settled["amount_captured"], "10.00", "{settled}");
    let charges = sandbox_charges_under(&kassa, &id).await;
    assert_eq!(
        charges.len(),
        1,
        "exactly one charge at the provider: {charges:?}"
    );
}

#[tokio::test]
async fn an_order_whose_charge_never_left_kassa_is_failed_only_once_the_channel_confirms() {
    // Nothing listens at the card channel's address: every call fails to connect, so Kassa
    // cannot know whether to consider the charge made, and keeps the order processing.
    let mut kassa = Kassa::start(
        KassaOptions::new()
            .env("KASSA_CHANNELS_CARD_BASE_URL", "http://127.0.0.1:9")
            .env("KASSA_CHANNELS_CARD_REQUEST_TIMEOUT_MS", 200)
            .env("KASSA_CHANNELS_CARD_RETRY_ATTEMPTS_MAX", 1),
    )
    .await;
    let merchant = kassa.new_merchant("Unreachable Ltd").await;
    let mut body = usd_charge(CARD_SUCCEEDS);
    body["wait_ms"] = 500.into();
    let response = post_payment(&merchant, &body, Some(&unique("key"))).await;
    let payment = expect_status(&response, 202, "charge to an unreachable channel");
    let id = id_of(&payment);
    assert_eq!(get_payment(&merchant, &id).await["status"], "processing");

    // Back to the reachable sandbox: it has no charge under the key, blocks the key, and only
    // then does the order fail — with a code that says the card was not charged.
    kassa.set_env("KASSA_CHANNELS_CARD_BASE_URL", "");
    kassa.restart().await;
    let merchant = merchant.with_base_url(kassa.base_url());
    let settled = wait_until_settled(&merchant, &id, Duration::from_secs(30)).await;
    assert_eq!(settled["status"], "failed", "{settled}");
    assert_eq!(settled["failure_code"], "processing_error", "{settled}");
    assert!(sandbox_charges_under(&kassa, &id).await.is_empty());
}
