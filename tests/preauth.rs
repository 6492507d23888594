//! Card pre-authorisation commands over HTTP, against the sandbox card acquirer:
//!
//! | command          | call                                              |
//! |------------------|---------------------------------------------------|
//! | preauth          | `POST /v1/payments` with `capture: "manual"`      |
//! | preauth_cancel   | `POST /v1/payments/{id}/preauth_cancel` (cancel)  |
//! | preauth_complete | `POST /v1/payments/{id}/preauth_complete` (capture)|
//! | complete_revert  | `POST /v1/payments/{id}/complete_revert`          |
//! | preauth_refund   | `POST /v1/refunds`                                |
//! | reversal         | `POST /v1/payments/{id}/reverse`                  |
//!
//! Each valid transition, each invalid one (with its error code), the amounts (a completion
//! never exceeds the authorisation), and the acquirer's ledger agreeing with Kassa.

use harness::*;
use serde_json::{Value, json};

async fn command(merchant: &MerchantClient, id: &str, name: &str, body: Option<Value>) -> Response {
    merchant
        .send(
            "POST",
            &format!("/v1/payments/{id}/{name}"),
            body.map(|b| b.to_string().into_bytes()),
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

async fn ok(merchant: &MerchantClient, id: &str, name: &str, body: Option<Value>) -> Value {
    let response = command(merchant, id, name, body).await;
    expect_status(&response, 200, name)
}

async fn preauth(merchant: &MerchantClient, amount: &str) -> String {
    let mut body = charge_body(&unique("preauth"), amount, "USD", CARD_SUCCEEDS);
    body["capture"] = json!("manual");
    let response = post_payment(merchant, &body, Some(&unique("key"))).await;
    let payment = expect_status(&response, 201, "preauth");
    assert_eq!(payment["status"], "authorized", "{payment}");
    assert_eq!(payment["amount_authorized"], amount, "{payment}");
    assert_eq!(payment["amount_captured"], "0.00", "{payment}");
    id_of(&payment)
}

/// The acquirer's record of the payment's charge.
async fn ledger_charge(kassa: &Kassa, id: &str) -> Value {
    let ledger = sandbox_call(kassa, "GET", "/sandbox/ledger", None).await;
    ledger["charges"]
        .as_array()
        .expect("charges")
        .iter()
        .find(|c| c["idempotency_key"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no charge for {id} in {ledger}"))
}

#[tokio::test]
async fn complete_and_revert_and_complete_again() {
    let kassa = Kassa::start_default().await;
    let merchant = kassa.new_merchant("Hotel Ltd").await;
    let id = preauth(&merchant, "100.00").await;

    // A completion above the authorisation is refused; nothing changes.
    let over = command(
        &merchant,
        &id,
        "preauth_complete",
        Some(json!({"amount": "100.01"})),
    )
    .await;
    assert_error(&over, 422, "capture_exceeds_authorized");
    // Reverting what was never completed is refused.
    let early = command(&merchant, &id, "complete_revert", None).await;
    assert_error(&early, 409, "payment_unexpected_state");

    let done = ok(
        &merchant,
        &id,
        "preauth_complete",
        Some(json!({"amount": "80.00"})),
    )
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["amount_captured"], "80.00", "{done}");
    assert_eq!(ledger_charge(&kassa, &id).await["captured_minor"], 8_000);

    let reverted = ok(&merchant, &id, "complete_revert", None).await;
    assert_eq!(reverted["status"], "authorized", "{reverted}");
    assert_eq!(reverted["amount_captured"], "0.00", "{reverted}");
    let charge = ledger_charge(&kassa, &id).await;
    assert_eq!(charge["captured_minor"], 0, "{charge}");
    assert_eq!(charge["voided"], false, "{charge}");

    // Completed again, for the full amount this time: a new completion, not a replay.
    let again = ok(&merchant, &id, "preauth_complete", None).await;
    assert_eq!(again["status"], "succeeded", "{again}");
    assert_eq!(again["amount_captured"], "100.00", "{again}");
    assert_eq!(ledger_charge(&kassa, &id).await["captured_minor"], 10_000);

    // preauth_refund: a refund of the completion; afterwards no revert.
    let refund = post_refund(
        &merchant,
        &json!({"payment_id": id, "amount": "30.00"}),
        Some(&unique("refund")),
    )
    .await;
    let refund = expect_status(&refund, 201, "preauth refund");
    assert_eq!(refund["status"], "succeeded", "{refund}");
    let late = command(&merchant, &id, "complete_revert", None).await;
    assert_error(&late, 409, "payment_has_refunds");
    let reverse = command(&merchant, &id, "reverse", None).await;
    assert_error(&reverse, 409, "payment_has_refunds");
    let payment = get_payment(&merchant, &id).await;
    assert_eq!(payment["status"], "succeeded", "{payment}");
    assert_eq!(payment["amount_refunded"], "30.00", "{payment}");
}

#[tokio::test]
async fn cancel_and_reversal_and_what_they_refuse() {
    let kassa = Kassa::start_default().await;
    let merchant = kassa.new_merchant("Rental Ltd").await;

    // preauth_cancel: the authorisation is voided at the acquirer.
    let id = preauth(&merchant, "50.00").await;
    let canceled = ok(&merchant, &id, "preauth_cancel", None).await;
    assert_eq!(canceled["status"], "canceled", "{canceled}");
    assert_eq!(ledger_charge(&kassa, &id).await["voided"], true);
    let after = command(&merchant, &id, "preauth_complete", None).await;
    assert_error(&after, 409, "payment_unexpected_state");
    let after = command(&merchant, &id, "reverse", None).await;
    assert_error(&after, 409, "payment_unexpected_state");

    // Reversal of an authorisation.
    let id = preauth(&merchant, "50.00").await;
    let reversed = ok(&merchant, &id, "reverse", None).await;
    assert_eq!(reversed["status"], "canceled", "{reversed}");
    assert_eq!(reversed["reversed"], true, "{reversed}");
    assert_eq!(ledger_charge(&kassa, &id).await["voided"], true);

    // Reversal of a completed charge (automatic capture): the money goes back.
    let paid = charge_succeeded(&merchant, &usd_charge(CARD_SUCCEEDS)).await;
    let id = id_of(&paid);
    // complete_revert is only for pre-authorisations.
    let not_preauth = command(&merchant, &id, "complete_revert", None).await;
    assert_error(&not_preauth, 422, "payment_not_preauthorization");
    let reversed = ok(&merchant, &id, "reverse", None).await;
    assert_eq!(reversed["status"], "canceled", "{reversed}");
    assert_eq!(reversed["amount_captured"], "0.00", "{reversed}");
    let charge = ledger_charge(&kassa, &id).await;
    assert_eq!(charge["reversed"], true, "{charge}");
    // Nothing left to refund after a reversal.
    let refund = post_refund(&merchant, &json!({"payment_id": id}), None).await;
    assert_error(&refund, 409, "payment_unexpected_state");
    // A second reversal is a state error, not a second undo.
    let twice = command(&merchant, &id, "reverse", None).await;
    assert_error(&twice, 409, "payment_unexpected_state");

    // A declined charge has nothing to reverse.
    let declined = post_payment(&merchant, &usd_charge(CARD_DECLINED), None).await;
    let declined = expect_status(&declined, 201, "declined");
    let refused = command(&merchant, &id_of(&declined), "reverse", None).await;
    assert_error(&refused, 409, "payment_unexpected_state");

    // Other people's payments do not exist.
    let other = kassa.new_merchant("Other Ltd").await;
    let foreign = command(&other, &id, "reverse", None).await;
    assert_error(&foreign, 404, "resource_missing");
}
