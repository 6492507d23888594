//! Charges: outcomes by sandbox card, authentication, manual capture and cancel, async charges,
//! list pagination, isolation between merchants and unique `merchant_order_id`s
//! (docs/API.md "Payments", "Authentication").

use std::time::Duration;

use harness::*;
use serde_json::{Value, json};

/// How long an async charge may take to settle in the sandbox.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn charge_outcome_follows_the_sandbox_card_and_reads_back() {
    let kassa = Kassa::start_default().await;
    let merchant = kassa.new_merchant("Books Ltd").await;

    let cases = [
        (CARD_SUCCEEDS, "succeeded", None),
        (CARD_DECLINED, "failed", Some("card_declined")),
        (
            CARD_INSUFFICIENT_FUNDS,
            "failed",
            Some("insufficient_funds"),
        ),
    ];
    for (number, status, failure_code) in cases {
        let order_id = unique("order");
        let mut body = charge_body(&order_id, "10.00", "USD", number);
        body["description"] = json!("2 books");
        body["metadata"] = json!({"cart": "c-77"});
        let response = post_payment(&merchant, &body, None).await;
        let payment = expect_status(&response, 201, &format!("charge with {number}"));
        assert_payment_shape(&payment);
        assert_no_card_data(&response, number);
        assert_eq!(payment["status"], status, "card {number}: {payment}");
        assert_eq!(payment["failure_code"], json!(failure_code), "{payment}");
        if failure_code.is_some() {
            assert!(payment["failure_message"].is_string(), "{payment}");
            assert_eq!(payment["amount_captured"], "0.00", "{payment}");
        } else {
            assert_eq!(payment["amount_captured"], payment["amount"], "{payment}");
            assert_eq!(payment["failure_message"], Value::Null, "{payment}");
        }
        assert_eq!(payment["amount"], "10.00", "{payment}");
        assert_eq!(payment["currency"], "USD", "{payment}");
        assert_eq!(payment["method"], "card", "{payment}");
        assert_eq!(payment["capture"], "automatic", "{payment}");
        assert_eq!(payment["amount_refunded"], "0.00", "{payment}");
        assert_eq!(payment["merchant_order_id"], order_id.as_str(), "{payment}");
        assert_eq!(payment["description"], "2 books", "{payment}");
        assert_eq!(payment["metadata"], json!({"cart": "c-77"}), "{payment}");
        assert_eq!(payment["card"]["bin"], &number[..6], "{payment}");
        assert_eq!(payment["card"]["last4"], &number[12..], "{payment}");
        assert_eq!(payment["card"]["brand"], "visa", "{payment}");

        let path = format!("/v1/payments/{}", id_of(&payment));
        let read = merchant.get(&path).await.expect("GET payment");
        let read_back = expect_status(&read, 200, &path);
        assert_no_card_data(&read, number);
        assert_payment_shape(&read_back);
        assert_eq!(read_back["status"], status, "{read_back}");
        assert_eq!(
            read_back["failure_code"],
            json!(failure_code),
            "{read_back}"
        );
        assert_eq!(read_back["amount_captured"], payment["amount_captured"]);
        assert_eq!(read_back["id"], payment["id"]);
    }

    let all = merchant.get("/v1/payments?limit=100").await.expect("list");
    for (number, _, _) in cases {
        assert_no_card_data(&all, number);
    }
    let (data, _) = assert_list(&all.json().expect("list json"));
    assert_eq!(data.len(), cases.len(), "one payment per charge");
}

/// Request headers as `(name, value)` pairs.
type Headers = Vec<(String, String)>;

#[tokio::test]
async fn unauthenticated_requests_get_401_and_create_nothing() {
    let kassa = Kassa::start_default().await;
    let merchant = kassa.new_merchant("Books Ltd").await;
    charge_succeeded(&merchant, &usd_charge(CARD_SUCCEEDS)).await;
    let count_before = list_all_payments(&merchant).await.len();

    let path = "/v1/payments";
    let refused_order = unique("refused");
    let body = charge_body(&refused_order, "10.00", "USD", CARD_SUCCEEDS)
        .to_string()
        .into_bytes();
    let now = unix_now();
    let impostor = MerchantClient::new(kassa.base_url(), merchant.merchant_id(), "sk_wrong");
    let stranger = MerchantClient::new(kassa.base_url(), "mch_doesnotexist", "sk_whatever");
    let mut tampered = merchant.signed_headers(now, "POST", path, &body);
    tampered.retain(|(name, _)| name != "Kassa-Timestamp");
    tampered.push(("Kassa-Timestamp".to_owned(), (now + 1).to_string()));
    let json_only = vec![("Content-Type".to_owned(), "application/json".to_owned())];
    let no_signature: Headers = merchant
        .signed_headers(now, "POST", path, &body)
        .into_iter()
        .filter(|(name, _)| name != "Kassa-Signature")
        .collect();

    // A request with some but not all of the headers may be either code.
    let partial: &[&str] = &["missing_credentials", "invalid_signature"];
    let cases: Vec<(&str, Headers, &[&str])> = vec![
        ("no credentials at all", json_only, &["missing_credentials"]),
        ("no signature header", no_signature, partial),
        (
            "signed with the wrong secret",
            impostor.signed_headers(now, "POST", path, &body),
            &["invalid_signature"],
        ),
        (
            "unknown merchant",
            stranger.signed_headers(now, "POST", path, &body),
            &["invalid_signature"],
        ),
        (
            "signature over another timestamp",
            tampered,
            &["invalid_signature"],
        ),
        (
            "signature over another body",
            merchant.signed_headers(now, "POST", path, b"{}"),
            &["invalid_signature"],
        ),
        (
            "timestamp 301 s old",
            merchant.signed_headers(now - 301, "POST", path, &body),
            &["timestamp_out_of_window"],
        ),
        (
            "timestamp 301 s ahead",
            merchant.signed_headers(now + 301, "POST", path, &body),
            &["timestamp_out_of_window"],
        ),
    ];
    for (what, headers, codes) in cases {
        let response = merchant
            .send_raw("POST", path, &headers, body.clone())
            .await
            .unwrap_or_else(|error| panic!("{what}: {error}"));
        assert_eq!(response.status, 401, "{what}: {}", response.text());
        assert_error_in(&response, 401, codes);
    }

    // A GET signed with the wrong secret is refused too.
    let headers = impostor.signed_headers(now, "GET", path, b"");
    let response = merchant
        .send_raw("GET", path, &headers, Vec::new())
        .await
        .expect("GET");
    assert_error(&response, 401, "invalid_signature");

    assert_eq!(
        list_all_payments(&merchant).await.len(),
        count_before,
        "refused requests must create nothing"
    );
    // The order id of every refused request is still free.
    let body = charge_body(&refused_order, "10.00", "USD", CARD_SUCCEEDS);
    charge_succeeded(&merchant, &body).await;
}

#[tokio::test]
async fn manual_capture_partial_capture_and_cancel() {
    let kassa = Kassa::start_default().await;
    let merchant = kassa.new_merchant("Books Ltd").await;
    let manual = || {
        let mut body = usd_charge(CARD_SUCCEEDS);
        body["capture"] = json!("manual");
        body
    };
    let post = |path: String, body: Option<Value>| {
        let merchant = merchant.clone();
        async move {
            let bytes = body.map(|body| body.to_string().into_bytes());
            merchant
                .send("POST", &path, bytes, None)
                .await
                .unwrap_or_else(|error| panic!("POST {path}: {error}"))
        }
    };

    // Authorise, then capture part of it.
    let response = post_payment(&merchant, &manual(), None).await;
    let authorized = expect_status(&response, 201, "manual charge");
    assert_payment_shape(&authorized);
    assert_eq!(authorized["status"], "authorized", "{authorized}");
    assert_eq!(authorized["capture"], "manual", "{authorized}");
    assert_eq!(authorized["amount_authorized"], "10.00", "{authorized}");
    assert_eq!(authorized["amount_captured"], "0.00", "{authorized}");
    let id = id_of(&authorized);
    let capture = format!("/v1/payments/{id}/capture");
    let response = post(capture.clone(), Some(json!({"amount": "6.00"}))).await;
    let captured = expect_status(&response, 200, "partial capture");
    assert_payment_shape(&captured);
    assert_eq!(captured["status"], "succeeded", "{captured}");
    assert_eq!(captured["amount_captured"], "6.00", "{captured}");
    assert_eq!(get_payment(&merchant, &id).await["amount_captured"], "6.00");
    // A captured payment can be captured or canceled no more.
    let response = post(capture.clone(), Some(json!({"amount": "1.00"}))).await;
    assert_error(&response, 409, "payment_unexpected_state");
    let response = post(format!("/v1/payments/{id}/cancel"), None).await;
    assert_error(&response, 409, "payment_unexpected_state");

    // More than authorised is refused; an empty body captures everything.
    let id = id_of(&expect_status(
        &post_payment(&merchant, &manual(), None).await,
        201,
        "manual charge",
    ));
    let capture = format!("/v1/payments/{id}/capture");
    let response = post(capture.clone(), Some(json!({"amount": "10.01"}))).await;
    assert_error(&response, 422, "capture_exceeds_authorized");
    assert_eq!(get_payment(&merchant, &id).await["status"], "authorized");
    let response = post(capture, None).await;
    let captured = expect_status(&response, 200, "full capture");
    assert_eq!(captured["status"], "succeeded", "{captured}");
    assert_eq!(captured["amount_captured"], "10.00", "{captured}");

    // Cancel an authorisation; it can then be neither captured nor canceled again.
    let id = id_of(&expect_status(
        &post_payment(&merchant, &manual(), None).await,
        201,
        "manual charge",
    ));
    let response = post(format!("/v1/payments/{id}/cancel"), Some(json!({}))).await;
    let canceled = expect_status(&response, 200, "cancel");
    assert_payment_shape(&canceled);
    assert_eq!(canceled["status"], "canceled", "{canceled}");
    assert_eq!(canceled["amount_captured"], "0.00", "{canceled}");
    assert_eq!(get_payment(&merchant, &id).await["status"], "canceled");
    let response = post(format!("/v1/payments/{id}/capture"), Some(json!({}))).await;
    assert_error(&response, 409, "payment_unexpected_state");
    let response = post(format!("/v1/payments/{id}/cancel"), None).await;
    assert_error(&response, 409, "payment_unexpected_state");
    assert_eq!(get_payment(&merchant, &id).await["status"], "canceled");

    // An automatically captured payment cannot be captured again or canceled.
    let done = charge_succeeded(&merchant, &usd_charge(CARD_SUCCEEDS)).await;
    let id = id_of(&done);
    let response = post(format!("/v1/payments/{id}/capture"), None).await;
    assert_error(&response, 409, "payment_unexpected_state");
    let response = post(format!("/v1/payments/{id}/cancel"), None).await;
    assert_error(&response, 409, "payment_unexpected_state");
}

/// Waits until the payment leaves `processing`, and checks it became `want`.
async fn wait_for_status(merchant: &MerchantClient, id: &str, want: &str) -> Value {
    let payment = wait_until_settled(merchant, id, SETTLE_TIMEOUT).await;
    assert_eq!(payment["status"], want, "{payment}");
    payment
}

#[tokio::test]
async fn async_and_timed_out_charges_answer_202_then_settle() {
    // A slow sandbox, so a short `wait_ms` runs out before the outcome.
    let kassa = Kassa::start(KassaOptions::new().env("KASSA_SANDBOX_LATENCY_MS", 1000)).await;
    let merchant = kassa.new_merchant("Books Ltd").await;

    let mut body = usd_charge(CARD_SUCCEEDS);
    body["async"] = json!(true);
    let response = post_payment(&merchant, &body, None).await;
    let payment = expect_status(&response, 202, "async charge");
    assert_payment_shape(&payment);
    assert_eq!(payment["status"], "processing", "{payment}");
    let settled = wait_for_status(&merchant, &id_of(&payment), "succeeded").await;
    assert_eq!(settled["amount_captured"], "10.00", "{settled}");

    let mut body = usd_charge(CARD_DECLINED);
    body["async"] = json!(true);
    let payment = expect_status(
        &post_payment(&merchant, &body, None).await,
        202,
        "async declined charge",
    );
    assert_eq!(payment["status"], "processing", "{payment}");
    let settled = wait_for_status(&merchant, &id_of(&payment), "failed").await;
    assert_eq!(settled["failure_code"], "card_declined", "{settled}");

    let mut body = usd_charge(CARD_SUCCEEDS);
    body["wait_ms"] = json!(50);
    let payment = expect_status(
        &post_payment(&merchant, &body, None).await,
        202,
        "sync charge whose wait runs out",
    );
    assert_eq!(payment["status"], "processing", "{payment}");
    wait_for_status(&merchant, &id_of(&payment), "succeeded").await;
}

/// The ids of a list page, in order.
fn ids(page: &[Value]) -> Vec<String> {
    page.iter().map(id_of).collect()
}

/// `GET path`; returns the page's ids and `has_more`.
async fn page(merchant: &MerchantClient, path: &str) -> (Vec<String>, bool) {
    let (data, has_more) = assert_list(&get_ok(merchant, path).await);
    for payment in &data {
        assert_payment_shape(payment);
    }
    (ids(&data), has_more)
}

#[tokio::test]
async fn list_is_newest_first_with_cursors() {
    let kassa = Kassa::start_default().await;
    let merchant = kassa.new_merchant("Books Ltd").await;
    let other = kassa.new_merchant("Other Ltd").await;

    // p[0] oldest .. p[11] newest; created one after another.
    let mut p = Vec::new();
    for _ in 0..12 {
        p.push(id_of(
            &charge_succeeded(&merchant, &usd_charge(CARD_SUCCEEDS)).await,
        ));
    }
    let newest_first: Vec<String> = p.iter().rev().cloned().collect();

    let (all, has_more) = page(&merchant, "/v1/payments?limit=100").await;
    assert_eq!(all, newest_first, "newest first");
    assert!(!has_more);
    let (default, has_more) = page(&merchant, "/v1/payments").await;
    assert_eq!(default, newest_first[..10], "default limit is 10");
    assert!(has_more, "12 payments, 10 shown");

    let (first, has_more) = page(&merchant, "/v1/payments?limit=5").await;
    assert_eq!(first, newest_first[..5]);
    assert!(has_more);
    let (second, has_more) = page(
        &merchant,
        &format!("/v1/payments?limit=5&starting_after={}", first[4]),
    )
    .await;
    assert_eq!(second, newest_first[5..10]);
    assert!(has_more);
    let (third, has_more) = page(
        &merchant,
        &format!("/v1/payments?limit=5&starting_after={}", second[4]),
    )
    .await;
    assert_eq!(third, newest_first[10..]);
    assert!(!has_more, "the last page has no more");

    // ending_before pages towards newer payments: the `limit` payments just newer than the
    // cursor, still newest first.
    let (back, has_more) = page(
        &merchant,
        &format!("/v1/payments?limit=5&ending_before={}", third[0]),
    )
    .await;
    assert_eq!(back, newest_first[5..10]);
    assert!(has_more, "newer payments remain beyond the page");
    let (back, has_more) = page(
        &merchant,
        &format!("/v1/payments?limit=5&ending_before={}", newest_first[3]),
    )
    .await;
    assert_eq!(back, newest_first[..3]);
    assert!(!has_more, "nothing is newer than the newest");

    for bad in ["limit=0", "limit=101", "limit=abc"] {
        let response = merchant
            .get(&format!("/v1/payments?{bad}"))
            .await
            .expect("GET list");
        assert_error(&response, 400, "invalid_query");
    }

    let (theirs, has_more) = page(&other, "/v1/payments?limit=100").await;
    assert!(theirs.is_empty(), "another merchant's list: {theirs:?}");
    assert!(!has_more);
}

#[tokio::test]
async fn another_merchants_objects_are_404() {
    let kassa = Kassa::start_default().await;
    let owner = kassa.new_merchant("Books Ltd").await;
    let stranger = kassa.new_merchant("Other Ltd").await;

    let payment = charge_succeeded(&owner, &usd_charge(CARD_SUCCEEDS)).await;
    let payment_id = id_of(&payment);
    let refund_body = json!({"payment_id": payment_id, "amount": "1.00"});
    let refund = expect_status(
        &post_refund(&owner, &refund_body, None).await,
        201,
        "refund",
    );
    let refund_id = id_of(&refund);
    let mut manual = usd_charge(CARD_SUCCEEDS);
    manual["capture"] = json!("manual");
    let authorized = expect_status(&post_payment(&owner, &manual, None).await, 201, "manual");
    let authorized_id = id_of(&authorized);

    for path in [
        format!("/v1/payments/{payment_id}"),
        format!("/v1/refunds/{refund_id}"),
        "/v1/payments/pay_doesnotexist".to_owned(),
        "/v1/refunds/re_doesnotexist".to_owned(),
    ] {
        let response = stranger.get(&path).await.expect("GET");
        assert_error(&response, 404, "resource_missing");
    }
    for path in [
        format!("/v1/payments/{authorized_id}/capture"),
        format!("/v1/payments/{authorized_id}/cancel"),
    ] {
        let response = stranger
            .send("POST", &path, None, None)
            .await
            .expect("POST");
        assert_error(&response, 404, "resource_missing");
    }
    let response = post_refund(&stranger, &refund_body, None).await;
    assert_error(&response, 404, "resource_missing");

    // Nothing the stranger did touched the owner's objects.
    assert_eq!(
        get_payment(&owner, &authorized_id).await["status"],
        "authorized"
    );
    assert_eq!(
        get_payment(&owner, &payment_id).await["amount_refunded"],
        "1.00"
    );
}

#[tokio::test]
async fn duplicate_merchant_order_id_is_409_naming_the_payment() {
    let kassa = Kassa::start_default().await;
    let merchant = kassa.new_merchant("Books Ltd").await;
    let other = kassa.new_merchant("Other Ltd").await;
    let order_id = unique("order");

    let first = charge_succeeded(
        &merchant,
        &charge_body(&order_id, "10.00", "USD", CARD_SUCCEEDS),
    )
    .await;
    let first_id = id_of(&first);
    let again = charge_body(&order_id, "25.00", "USD", CARD_SUCCEEDS);
    let response = post_payment(&merchant, &again, None).await;
    let error = assert_error(&response, 409, "duplicate_merchant_order_id");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&first_id),
        "the message must name {first_id}: {error}"
    );
    let mine = list_all_payments(&merchant).await;
    assert_eq!(ids(&mine), [first_id], "the duplicate created nothing");

    // merchant_order_id is unique per merchant, not globally.
    charge_succeeded(&other, &again).await;
}
