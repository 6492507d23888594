//! Inbound provider callbacks (`POST /callbacks/card`): a signed report settles a processing
//! order; duplicate, late and contradictory reports are harmless; unsigned or badly signed
//! ones are refused and change nothing. The test plays the provider, signing like the sandbox.

use harness::*;
use kassa_channels::card::signature;
use kassa_client::HttpClient;
use serde_json::{Value, json};

const PATH: &str = "/callbacks/card";

fn report(payment_id: &str, status: &str) -> Vec<u8> {
    let decline = if status == "declined" {
        json!("card_declined")
    } else {
        Value::Null
    };
    json!({
        "type": "charge.updated",
        "sent_at": signature::now_unix_s(),
        "charge": {
            "charge_id": "ch_from_callback", "idempotency_key": payment_id, "status": status,
            "decline_code": decline, "amount_minor": 1000, "captured_minor": 1000,
            "refunded_minor": 0, "currency": "USD", "voided": false
        }
    })
    .to_string()
    .into_bytes()
}

async fn post_callback(
    kassa: &Kassa,
    body: Vec<u8>,
    signature_header: Option<String>,
) -> kassa_client::Response {
    let mut headers = vec![("Content-Type".to_owned(), "application/json".to_owned())];
    if let Some(value) = signature_header {
        headers.push(("Sandbox-Signature".to_owned(), value));
    }
    HttpClient::new(kassa.base_url())
        .send("POST", PATH, &headers, body)
        .await
        .expect("callback")
}

fn sign(body: &[u8], secret: &str) -> String {
    signature::header_value(
        secret.as_bytes(),
        signature::now_unix_s(),
        "POST",
        PATH,
        body,
    )
}

#[tokio::test]
async fn a_signed_callback_settles_the_order_and_repeats_change_nothing() {
    // The sandbox answers charges only after 5 s: the callback gets there first.
    let kassa = Kassa::start(KassaOptions::new().env("KASSA_SANDBOX_LATENCY_MS", 5_000)).await;
    let merchant = kassa.new_merchant("Callbacks Ltd").await;
    let mut body = usd_charge(CARD_SUCCEEDS);
    body["async"] = true.into();
    let created = post_payment(&merchant, &body, None).await;
    let payment = expect_status(&created, 202, "async charge");
    let id = id_of(&payment);

    // Unsigned, badly signed or signed for another body: refused, nothing changes.
    let good = report(&id, "succeeded");
    assert_error(
        &post_callback(&kassa, good.clone(), None).await,
        401,
        "invalid_signature",
    );
    let wrong_key = sign(&good, "not-the-secret");
    assert_error(
        &post_callback(&kassa, good.clone(), Some(wrong_key)).await,
        401,
        "invalid_signature",
    );
    let other_body = sign(&report(&id, "declined"), SANDBOX_SECRET);
    assert_error(
        &post_callback(&kassa, good.clone(), Some(other_body)).await,
        401,
        "invalid_signature",
    );
    assert_eq!(get_payment(&merchant, &id).await["status"], "processing");

    // The signed report settles it.
    let answer = post_callback(&kassa, good.clone(), Some(sign(&good, SANDBOX_SECRET))).await;
    let applied = expect_status(&answer, 200, "signed callback");
    assert_eq!(applied["status"], "succeeded", "{applied}");
    let read = get_payment(&merchant, &id).await;
    assert_eq!(read["status"], "succeeded", "{read}");
    assert_eq!(read["amount_captured"], "10.00", "{read}");

    // A duplicate, and a late contradictory report: accepted (so the provider stops), no effect.
    expect_status(
        &post_callback(&kassa, good.clone(), Some(sign(&good, SANDBOX_SECRET))).await,
        200,
        "duplicate",
    );
    let late = report(&id, "declined");
    expect_status(
        &post_callback(&kassa, late.clone(), Some(sign(&late, SANDBOX_SECRET))).await,
        200,
        "late",
    );
    let read = get_payment(&merchant, &id).await;
    assert_eq!(read["status"], "succeeded", "{read}");
    assert_eq!(read["failure_code"], Value::Null, "{read}");

    // A report for an order Kassa does not have.
    let unknown = report("pay_000000000000000000000000", "succeeded");
    let answer = post_callback(
        &kassa,
        unknown.clone(),
        Some(sign(&unknown, SANDBOX_SECRET)),
    )
    .await;
    assert_error(&answer, 404, "resource_missing");
}
