//! `Idempotency-Key`: byte-identical replays, reuse with another request, concurrent
//! duplicates, and all of it across a restart (docs/API.md "Idempotency").

use harness::*;
use serde_json::{Value, json};

/// Sends `body` with `key` once more and asserts the answer is `original`, byte for byte,
/// marked `Idempotent-Replayed: true`.
async fn assert_replayed(
    merchant: &MerchantClient,
    path: &str,
    body: &Value,
    key: &str,
    original: &Response,
) {
    let replay = merchant
        .post_json(path, body, Some(key))
        .await
        .unwrap_or_else(|error| panic!("replay of {key}: {error}"));
    assert_eq!(
        replay.status,
        original.status,
        "replay of {key}: {}",
        replay.text()
    );
    assert_eq!(
        replay.body,
        original.body,
        "replay of {key} must be byte-identical:\n first: {}\nreplay: {}",
        original.text(),
        replay.text()
    );
    assert_eq!(
        replay.header("Idempotent-Replayed"),
        Some("true"),
        "replay of {key} must say Idempotent-Replayed: true"
    );
}

/// How many of `merchant`'s payments carry `order_id`.
async fn payments_with_order_id(merchant: &MerchantClient, order_id: &str) -> usize {
    list_all_payments(merchant)
        .await
        .iter()
        .filter(|payment| payment["merchant_order_id"] == order_id)
        .count()
}

#[tokio::test]
async fn replays_are_byte_identical_and_create_one_payment_across_a_restart() {
    let mut kassa = Kassa::start_default().await;
    let merchant = kassa.new_merchant("Books Ltd").await;

    let paid = usd_charge(CARD_SUCCEEDS);
    let paid_key = unique("key");
    let first = post_payment(&merchant, &paid, Some(&paid_key)).await;
    let payment = expect_status(&first, 201, "first charge");
    assert_ne!(
        first.header("Idempotent-Replayed"),
        Some("true"),
        "a first answer is not a replay"
    );
    let declined = usd_charge(CARD_DECLINED);
    let declined_key = unique("key");
    let declined_first = post_payment(&merchant, &declined, Some(&declined_key)).await;
    expect_status(&declined_first, 201, "declined charge");

    // The payment changes after the first answer; the replay still shows the stored answer.
    let refund_body = json!({"payment_id": id_of(&payment), "amount": "1.00"});
    let refund_key = unique("refund-key");
    let refund_first = post_refund(&merchant, &refund_body, Some(&refund_key)).await;
    expect_status(&refund_first, 201, "refund");

    let mut changed = paid.clone();
    changed["amount"] = json!("11.00");
    // The same checks before and after a restart: the records are durable.
    let check_all = |merchant: MerchantClient| {
        let (paid, declined, refund_body, changed) = (&paid, &declined, &refund_body, &changed);
        let (paid_key, declined_key, refund_key) = (&paid_key, &declined_key, &refund_key);
        let (first, declined_first, refund_first) = (&first, &declined_first, &refund_first);
        async move {
            assert_replayed(&merchant, "/v1/payments", paid, paid_key, first).await;
            assert_replayed(
                &merchant,
                "/v1/payments",
                declined,
                declined_key,
                declined_first,
            )
            .await;
            assert_replayed(
                &merchant,
                "/v1/refunds",
                refund_body,
                refund_key,
                refund_first,
            )
            .await;
            let response = post_payment(&merchant, changed, Some(paid_key)).await;
            assert_error(&response, 422, "idempotency_key_reused");
        }
    };
    check_all(merchant.clone()).await;
    kassa.restart().await;
    let merchant = merchant.with_base_url(kassa.base_url());
    check_all(merchant.clone()).await;

    for body in [&paid, &declined] {
        let order_id = body["merchant_order_id"].as_str().unwrap_or_default();
        assert_eq!(payments_with_order_id(&merchant, order_id).await, 1);
    }
    assert_eq!(list_all_payments(&merchant).await.len(), 2);
    let payment = get_payment(&merchant, &id_of(&payment)).await;
    assert_eq!(payment["amount_refunded"], "1.00", "one refund: {payment}");
}

#[tokio::test]
async fn a_key_belongs_to_one_request_of_one_merchant() {
    let kassa = Kassa::start_default().await;
    let merchant = kassa.new_merchant("Books Ltd").await;
    let other = kassa.new_merchant("Other Ltd").await;
    let key = unique("key");
    let body = usd_charge(CARD_SUCCEEDS);

    // A refused (401) request is not stored: the key stays free.
    let bytes = body.to_string().into_bytes();
    let mut headers = MerchantClient::new(kassa.base_url(), merchant.merchant_id(), "sk_wrong")
        .signed_headers(unix_now(), "POST", "/v1/payments", &bytes);
    headers.push(("Idempotency-Key".to_owned(), key.clone()));
    let response = merchant
        .send_raw("POST", "/v1/payments", &headers, bytes)
        .await
        .expect("POST");
    assert_error(&response, 401, "invalid_signature");

    let first = post_payment(&merchant, &body, Some(&key)).await;
    let payment = expect_status(&first, 201, "first charge");

    let mut other_amount = body.clone();
    other_amount["amount"] = json!("10.01");
    let response = post_payment(&merchant, &other_amount, Some(&key)).await;
    assert_error(&response, 422, "idempotency_key_reused");
    let mut other_order = body.clone();
    other_order["merchant_order_id"] = json!(unique("order"));
    let response = post_payment(&merchant, &other_order, Some(&key)).await;
    assert_error(&response, 422, "idempotency_key_reused");
    let refund = json!({"payment_id": id_of(&payment), "amount": "1.00"});
    let response = post_refund(&merchant, &refund, Some(&key)).await;
    assert_error(&response, 422, "idempotency_key_reused");
    assert_eq!(
        get_payment(&merchant, &id_of(&payment)).await["amount_refunded"],
        "0.00"
    );

    // Another merchant's identical key and body are its own request.
    let theirs = post_payment(&other, &body, Some(&key)).await;
    let their_payment = expect_status(&theirs, 201, "other merchant, same key");
    assert_ne!(theirs.header("Idempotent-Replayed"), Some("true"));
    assert_ne!(their_payment["id"], payment["id"]);

    for bad_key in ["".to_owned(), "k".repeat(256)] {
        let response = post_payment(&merchant, &usd_charge(CARD_SUCCEEDS), Some(&bad_key)).await;
        assert_error(&response, 422, "idempotency_key_invalid");
    }
    let longest = "k".repeat(255);
    let response = post_payment(&merchant, &usd_charge(CARD_SUCCEEDS), Some(&longest)).await;
    expect_status(&response, 201, "a 255-character key");
    assert_eq!(list_all_payments(&merchant).await.len(), 2);
}

/// Fires the same keyed charge twice at once while the sandbox is slow: one must win (201),
/// the other must be told the first is in progress (409); a later replay returns the winner.
async fn race_two_identical_requests(merchant: &MerchantClient) {
    let key = unique("race-key");
    let body = usd_charge(CARD_SUCCEEDS);
    let (a, b) = tokio::join!(
        post_payment(merchant, &body, Some(&key)),
        post_payment(merchant, &body, Some(&key)),
    );
    let (winner, loser) = if a.status == 201 { (a, b) } else { (b, a) };
    expect_status(&winner, 201, "one of two concurrent identical requests");
    assert_error(&loser, 409, "idempotency_request_in_progress");
    assert_replayed(merchant, "/v1/payments", &body, &key, &winner).await;
    let order_id = body["merchant_order_id"].as_str().unwrap_or_default();
    assert_eq!(payments_with_order_id(merchant, order_id).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_duplicate_is_409_in_progress_across_a_restart() {
    // Slow enough that the first charge is still at the channel when the second arrives.
    let mut kassa = Kassa::start(KassaOptions::new().env("KASSA_SANDBOX_LATENCY_MS", 1500)).await;
    let merchant = kassa.new_merchant("Books Ltd").await;
    race_two_identical_requests(&merchant).await;

    kassa.restart().await;
    let merchant = merchant.with_base_url(kassa.base_url());
    race_two_identical_requests(&merchant).await;
}
