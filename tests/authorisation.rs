//! Authorisation (docs/API.md "Authentication", docs/ADMIN.md "Authentication"): a merchant
//! only ever reaches its own objects, merchant and operator credentials never stand in for
//! each other, signed requests cannot be replayed outside the timestamp window (and inside it
//! a replay with the same `Idempotency-Key` is that request again, not a second payment), and
//! a rotated secret keeps verifying only for its overlap.

use std::time::{Duration, Instant};

use harness::*;
use serde_json::{Value, json};

/// How long an async step (the rotation's overlap running out) may take before the test fails.
const OVERLAP_END_TIMEOUT: Duration = Duration::from_secs(30);
/// The overlap of the short rotation.
const SHORT_OVERLAP_S: u64 = 3;
/// The server's default `http.signature_window_s`.
const SIGNATURE_WINDOW_S: i64 = 300;

async fn send(
    merchant: &MerchantClient,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Response {
    let body = body.map(|b| b.to_string().into_bytes());
    merchant
        .send(method, path, body, None)
        .await
        .unwrap_or_else(|error| panic!("{method} {path}: {error}"))
}

/// Everything merchant A owns, as A reads it: compared before and after B's attempts.
async fn snapshot(merchant: &MerchantClient, ids: &Owned) -> Vec<Value> {
    let mut seen = Vec::new();
    for id in [&ids.authorized, &ids.succeeded] {
        seen.push(get_payment(merchant, id).await);
    }
    seen.push(get_ok(merchant, &format!("/v1/refunds/{}", ids.refund)).await);
    seen.push(get_ok(merchant, &format!("/v1/wallets/{}", ids.wallet)).await);
    seen.push(json!(
        list_all(
            merchant,
            &format!("/v1/wallets/{}/transactions", ids.wallet)
        )
        .await
    ));
    seen.push(json!(list_all_payments(merchant).await));
    seen.push(json!(list_all(merchant, "/v1/events").await));
    seen
}

/// Merchant A's objects.
struct Owned {
    /// A manual-capture card payment, `authorized`.
    authorized: String,
    /// An automatic card payment, `succeeded`, with a partial refund.
    succeeded: String,
    refund: String,
    event: String,
    /// An EUR wallet with a top-up.
    wallet: String,
}

async fn objects_of(merchant: &MerchantClient) -> Owned {
    let mut manual = usd_charge(CARD_SUCCEEDS);
    manual["capture"] = json!("manual");
    let authorized = expect_status(&post_payment(merchant, &manual, None).await, 201, "preauth");
    assert_eq!(authorized["status"], "authorized", "{authorized}");
    let succeeded = charge_succeeded(merchant, &usd_charge(CARD_SUCCEEDS)).await;
    let refund = post_refund(
        merchant,
        &json!({"payment_id": id_of(&succeeded), "amount": "1.00"}),
        None,
    )
    .await;
    let refund = expect_status(&refund, 201, "refund");
    let (events, _) = assert_list(&get_ok(merchant, "/v1/events").await);
    let event = id_of(events.first().expect("the charges raised events"));
    let wallet = send(
        merchant,
        "POST",
        "/v1/wallets",
        Some(json!({"currency": "EUR"})),
    )
    .await;
    let wallet = id_of(&expect_status(&wallet, 201, "create wallet"));
    let top_up = send(
        merchant,
        "POST",
        &format!("/v1/wallets/{wallet}/top_ups"),
        Some(json!({"amount": "50.00", "currency": "EUR"})),
    )
    .await;
    expect_status(&top_up, 201, "top up");
    Owned {
        authorized: id_of(&authorized),
        succeeded: id_of(&succeeded),
        refund: id_of(&refund),
        event,
        wallet,
    }
}

#[tokio::test]
async fn another_merchants_ids_are_404_on_every_route_and_change_nothing() {
    let kassa = Kassa::start_default().await;
    let alice = kassa.new_merchant("Alice Ltd").await;
    let bob = kassa.new_merchant("Bob Ltd").await;
    let ids = objects_of(&alice).await;
    let before = snapshot(&alice, &ids).await;

    let (auth, done, wallet) = (&ids.authorized, &ids.succeeded, &ids.wallet);
    let empty = Some(json!({}));
    let eur = || Some(json!({"amount": "1.00", "currency": "EUR"}));
    let attempts: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", format!("/v1/payments/{auth}"), None),
        (
            "POST",
            format!("/v1/payments/{auth}/capture"),
            empty.clone(),
        ),
        ("POST", format!("/v1/payments/{auth}/cancel"), empty.clone()),
        (
            "POST",
            format!("/v1/payments/{auth}/confirm"),
            empty.clone(),
        ),
        (
            "POST",
            format!("/v1/payments/{auth}/preauth_complete"),
            empty.clone(),
        ),
        (
            "POST",
            format!("/v1/payments/{auth}/preauth_cancel"),
            empty.clone(),
        ),
        (
            "POST",
            format!("/v1/payments/{auth}/reverse"),
            empty.clone(),
        ),
        (
            "POST",
            format!("/v1/payments/{done}/complete_revert"),
            empty.clone(),
        ),
        (
            "POST",
            format!("/v1/payments/{done}/reverse"),
            empty.clone(),
        ),
        (
            "POST",
            "/v1/refunds".to_owned(),
            Some(json!({"payment_id": done})),
        ),
        (
            "POST",
            "/v1/refunds".to_owned(),
            Some(json!({"payment_id": auth, "amount": "1.00"})),
        ),
        ("GET", format!("/v1/refunds/{}", ids.refund), None),
        ("GET", format!("/v1/events/{}", ids.event), None),
        ("POST", format!("/v1/events/{}/resend", ids.event), None),
        ("GET", format!("/v1/wallets/{wallet}"), None),
        ("POST", format!("/v1/wallets/{wallet}/top_ups"), eur()),
        ("POST", format!("/v1/wallets/{wallet}/withdrawals"), eur()),
        ("GET", format!("/v1/wallets/{wallet}/transactions"), None),
    ];
    let mut mismatches = Vec::new();
    for (method, path, body) in attempts {
        let response = send(&bob, method, &path, body).await;
        if let Err(mismatch) = check_error(&response, 404, &["resource_missing"]) {
            mismatches.push(format!("{method} {path}: {mismatch}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));

    // Paying from another merchant's wallet is refused before anything exists.
    let mut from_wallet = json!({
        "amount": "5.00", "currency": "EUR", "merchant_order_id": unique("order"),
        "method": "wallet", "wallet_id": wallet,
    });
    let refused = post_payment(&bob, &from_wallet, None).await;
    assert_error(&refused, 422, "wallet_not_found");
    assert_eq!(
        snapshot(&alice, &ids).await,
        before,
        "another merchant's calls changed nothing of alice's"
    );
    // The same body is fine for its owner: the id was right, the merchant was not.
    from_wallet["merchant_order_id"] = json!(unique("order"));
    let paid = expect_status(
        &post_payment(&alice, &from_wallet, None).await,
        201,
        "owner",
    );
    assert_eq!(paid["status"], "succeeded", "{paid}");

    // Lists never show another merchant's objects, either way round.
    let bobs = charge_succeeded(&bob, &usd_charge(CARD_SUCCEEDS)).await;
    let bob_payments: Vec<String> = list_all_payments(&bob).await.iter().map(id_of).collect();
    assert_eq!(
        bob_payments,
        [id_of(&bobs)],
        "bob sees only his own payment"
    );
    let alice_payments: Vec<String> = list_all_payments(&alice).await.iter().map(id_of).collect();
    assert!(
        !alice_payments.contains(&id_of(&bobs)),
        "{alice_payments:?}"
    );
    assert!(alice_payments.contains(&ids.authorized) && alice_payments.contains(&ids.succeeded));
    for event in list_all(&bob, "/v1/events").await {
        assert_eq!(
            event["data"]["object"]["id"],
            json!(id_of(&bobs)),
            "bob's events are about his payment only: {event}"
        );
    }
    assert!(
        list_all(&alice, "/v1/events")
            .await
            .iter()
            .all(|event| event["data"]["object"]["id"] != json!(id_of(&bobs))),
        "alice never sees bob's events"
    );
    // A cursor naming another merchant's object is not a way in either.
    let cursor = send(
        &bob,
        "GET",
        &format!("/v1/payments?starting_after={auth}"),
        None,
    )
    .await;
    assert_error(&cursor, 400, "invalid_query");
}

#[tokio::test]
async fn merchant_and_admin_credentials_never_stand_in_for_each_other() {
    let kassa = Kassa::start_default().await;
    let credentials = kassa.new_merchant_credentials("Cross Ltd").await;
    let merchant = kassa.merchant(&credentials);
    let http = HttpClient::new(kassa.base_url());
    let body = json!({"name": "Sneaky"}).to_string().into_bytes();

    // A merchant-signed request to the admin API.
    let rotate_path = format!("/admin/merchants/{}/rotate_secret", credentials.id);
    for (method, path, body) in [
        ("POST", "/admin/merchants", body.clone()),
        ("GET", "/admin/supervision", Vec::new()),
        ("GET", "/admin/notifications", Vec::new()),
        ("POST", rotate_path.as_str(), Vec::new()),
    ] {
        let headers = merchant.signed_headers(unix_now(), method, path, &body);
        let response = http.send(method, path, &headers, body).await.expect("send");
        assert_error(&response, 401, "invalid_admin_token");
    }
    // The merchant's secret (or its webhook secret) as the bearer token.
    for bearer in [&credentials.secret, &credentials.webhook_secret] {
        let headers = [("Authorization".to_owned(), format!("Bearer {bearer}"))];
        let response = http
            .send("GET", "/admin/supervision", &headers, Vec::new())
            .await
            .expect("send");
        assert_error(&response, 401, "invalid_admin_token");
    }

    // The admin token on the merchant API: as a bearer, and as if it were a merchant secret.
    let bearer = [(
        "Authorization".to_owned(),
        format!("Bearer {}", kassa.admin_token()),
    )];
    let response = http
        .send("GET", "/v1/payments", &bearer, Vec::new())
        .await
        .expect("send");
    assert_error(&response, 401, "missing_credentials");
    let as_secret = MerchantClient::new(kassa.base_url(), &credentials.id, kassa.admin_token());
    assert_error(
        &as_secret.get("/v1/payments").await.expect("send"),
        401,
        "invalid_signature",
    );
    let charge = as_secret
        .post_json("/v1/payments", &usd_charge(CARD_SUCCEEDS), None)
        .await
        .expect("send");
    assert_error(&charge, 401, "invalid_signature");
    assert!(
        list_all_payments(&merchant).await.is_empty(),
        "nothing was created"
    );
}

#[tokio::test]
async fn signed_requests_cannot_be_replayed_outside_the_window_and_inside_it_are_idempotent() {
    let kassa = Kassa::start_default().await;
    let merchant = kassa.new_merchant("Replay Ltd").await;
    let http = merchant.http().clone();
    let body = usd_charge(CARD_SUCCEEDS).to_string().into_bytes();

    // A correctly signed request whose timestamp is outside the window, either way.
    for offset_s in [-(SIGNATURE_WINDOW_S + 5), SIGNATURE_WINDOW_S + 5] {
        let timestamp = unix_now() + offset_s;
        let headers = merchant.signed_headers(timestamp, "POST", "/v1/payments", &body);
        let response = http
            .send("POST", "/v1/payments", &headers, body.clone())
            .await
            .expect("send");
        assert_error(&response, 401, "timestamp_out_of_window");
    }
    assert!(
        list_all_payments(&merchant).await.is_empty(),
        "nothing was created"
    );

    // Captured and re-sent as is within the window, with its Idempotency-Key: the same answer,
    // byte for byte, marked as a replay; one payment.
    let key = unique("key");
    let mut headers = merchant.signed_headers(unix_now(), "POST", "/v1/payments", &body);
    headers.push(("Idempotency-Key".to_owned(), key.clone()));
    let first = http
        .send("POST", "/v1/payments", &headers, body.clone())
        .await
        .expect("first");
    let payment = expect_status(&first, 201, "first send");
    let again = http
        .send("POST", "/v1/payments", &headers, body.clone())
        .await
        .expect("replay");
    assert_eq!(again.status, 201, "{}", again.text());
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        again.body, first.body,
        "a replay is byte for byte the first answer"
    );
    assert_eq!(first.header("idempotent-replayed"), None);

    // Without a key, the replay is a second create of the same merchant_order_id: refused.
    let bare: Vec<(String, String)> = headers
        .iter()
        .filter(|(name, _)| name != "Idempotency-Key")
        .cloned()
        .collect();
    let replayed = http
        .send("POST", "/v1/payments", &bare, body.clone())
        .await
        .expect("replay without key");
    let error = assert_error(&replayed, 409, "duplicate_merchant_order_id");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&id_of(&payment)),
        "{error}"
    );
    let all: Vec<String> = list_all_payments(&merchant)
        .await
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(
        all,
        [id_of(&payment)],
        "one payment however often it was sent"
    );
}

/// `POST /admin/merchants/{id}/rotate_secret` as the operator.
async fn rotate(kassa: &Kassa, id: &str, body: Option<Value>) -> Response {
    kassa
        .admin()
        .send(
            "POST",
            &format!("/admin/merchants/{id}/rotate_secret"),
            body.map(|b| b.to_string().into_bytes()),
        )
        .await
        .expect("rotate_secret")
}

async fn list_status(merchant: &MerchantClient) -> u16 {
    merchant
        .get("/v1/payments")
        .await
        .expect("GET /v1/payments")
        .status
}

#[tokio::test]
async fn a_rotated_secret_verifies_until_its_overlap_ends_and_the_new_one_throughout() {
    let kassa = Kassa::start_default().await;
    let credentials = kassa.new_merchant_credentials("Rotating Ltd").await;
    let old = kassa.merchant(&credentials);
    charge_succeeded(&old, &usd_charge(CARD_SUCCEEDS)).await;

    let started = Instant::now();
    let response = rotate(
        &kassa,
        &credentials.id,
        Some(json!({"overlap_s": SHORT_OVERLAP_S})),
    )
    .await;
    let rotated = expect_status(&response, 200, "rotate_secret");
    assert_eq!(rotated["id"], credentials.id.as_str(), "{rotated:?}");
    assert_eq!(rotated["object"], "merchant_secret");
    assert_eq!(rotated["overlap_s"], SHORT_OVERLAP_S);
    assert!(rotated["previous_secret_expires"].is_i64());
    let secret = rotated["secret"]
        .as_str()
        .expect("the new secret")
        .to_owned();
    assert!(secret.starts_with("sk_") && secret != credentials.secret);
    let new = MerchantClient::new(kassa.base_url(), &credentials.id, &secret);

    // Both verify during the overlap (on this node at once: no cache delay).
    assert_eq!(
        list_status(&old).await,
        200,
        "the old secret during the overlap"
    );
    assert_eq!(list_status(&new).await, 200, "the new secret at once");
    charge_succeeded(&new, &usd_charge(CARD_SUCCEEDS)).await;

    // The old one stops once the overlap ends; the new one keeps working all along.
    poll_until(
        "the old secret to stop verifying",
        OVERLAP_END_TIMEOUT,
        || async {
            assert_eq!(list_status(&new).await, 200, "the new secret throughout");
            match old.get("/v1/payments").await.expect("GET") {
                response if response.status == 200 => Err("still accepted".to_owned()),
                response => {
                    assert_error(&response, 401, "invalid_signature");
                    Ok(())
                }
            }
        },
    )
    .await;
    let overlap = Duration::from_secs(SHORT_OVERLAP_S);
    assert!(
        started.elapsed() + Duration::from_millis(500) >= overlap,
        "the old secret stopped after {:?}, before its overlap of {overlap:?}",
        started.elapsed()
    );
    assert_eq!(list_status(&old).await, 401, "and stays refused");
    assert_eq!(list_status(&new).await, 200);
    let payments = list_all_payments(&new).await;
    assert_eq!(payments.len(), 2, "the merchant's objects stay its own");

    // The rotation is logged, never a secret.
    let log = kassa.log_contents();
    assert!(
        log.contains("merchant secret rotated"),
        "{}",
        kassa.log_tail()
    );
    for secret in [&secret, &credentials.secret] {
        assert!(!log.contains(secret.as_str()), "a secret reached the log");
    }

    // Operators' mistakes.
    let unknown = rotate(&kassa, "mch_000000000000000000000000", None).await;
    assert_error(&unknown, 404, "resource_missing");
    let too_long = rotate(&kassa, &credentials.id, Some(json!({"overlap_s": 604_801}))).await;
    assert_eq!(
        assert_error(&too_long, 422, "value_invalid")["param"],
        "overlap_s"
    );
    let wrong_type = rotate(&kassa, &credentials.id, Some(json!({"overlap_s": "2"}))).await;
    assert_error(&wrong_type, 400, "invalid_field");
    let unknown_field = rotate(&kassa, &credentials.id, Some(json!({"overlap": 2}))).await;
    assert_error(&unknown_field, 400, "unknown_field");
    assert_eq!(
        list_status(&new).await,
        200,
        "refused rotations change nothing"
    );

    // No body: the default overlap of a day; the secret it replaced keeps verifying.
    let default = expect_status(&rotate(&kassa, &credentials.id, None).await, 200, "default");
    assert_eq!(default["overlap_s"], 86_400);
    let newest = MerchantClient::new(
        kassa.base_url(),
        &credentials.id,
        default["secret"].as_str().expect("secret"),
    );
    assert_eq!(list_status(&newest).await, 200);
    assert_eq!(
        list_status(&new).await,
        200,
        "the replaced secret, within its day"
    );
    assert_eq!(
        list_status(&old).await,
        401,
        "only the last secret before is kept"
    );
}

#[tokio::test]
async fn cli_rotates_a_secret_in_a_stopped_instance() {
    let mut kassa = Kassa::start_default().await;
    let credentials = kassa.new_merchant_credentials("CLI Rotating Ltd").await;
    let status = kassa.stop().await;
    assert!(status.success(), "clean stop: {status}");

    let output = kassa
        .cli(&[
            "merchant",
            "rotate-secret",
            "--id",
            &credentials.id,
            "--overlap-s",
            "0",
        ])
        .await;
    output.assert_success();
    let rotated = output.json();
    assert_eq!(rotated["id"], credentials.id.as_str());
    assert_eq!(rotated["overlap_s"], 0);
    let secret = rotated["secret"].as_str().expect("secret").to_owned();
    let unknown = kassa
        .cli(&[
            "merchant",
            "rotate-secret",
            "--id",
            "mch_000000000000000000000000",
        ])
        .await;
    assert!(
        !unknown.status.success(),
        "an unknown merchant fails: {}",
        unknown.stdout
    );
    let too_long = kassa
        .cli(&[
            "merchant",
            "rotate-secret",
            "--id",
            &credentials.id,
            "--overlap-s",
            "604801",
        ])
        .await;
    assert!(!too_long.status.success(), "{}", too_long.stdout);

    kassa.restart().await;
    let new = MerchantClient::new(kassa.base_url(), &credentials.id, &secret);
    assert_eq!(list_status(&new).await, 200);
    let old = kassa.merchant(&credentials);
    assert_error(
        &old.get("/v1/payments").await.expect("GET"),
        401,
        "invalid_signature",
    );
}
