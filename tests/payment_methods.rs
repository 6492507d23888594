//! Payment methods beyond the card, end to end over HTTP against the sandbox:
//!
//! * `qr_wallet` (Alipay-style): the payment `requires_action` with a QR link; the customer
//!   pays at the provider; a signed form-encoded callback brings the outcome.
//! * `app_wallet` (WeChat Pay-style): the same with an AES-256-GCM encrypted callback.
//! * `bank_transfer` (B2B, large amounts): accepted (`processing`, 202), settled later; here
//!   the bank sends no callback at all, so Kassa learns the outcome only by asking on its
//!   re-drive schedule.
//! * `wallet`: Kassa's own stored value; paid from the balance, refunded back to it, never
//!   below zero.
//!
//! And method selection: per-currency limits (a large amount is refused on the card and
//! taken by bank transfer), and payer details that do not fit the method are refused.

use std::time::Duration;

use harness::*;
use kassa_client::HttpClient;
use serde_json::{Value, json};

const SETTLE: Duration = Duration::from_secs(30);

async fn start() -> Kassa {
    Kassa::start(
        KassaOptions::new()
            .env("KASSA_SANDBOX_CALLBACKS", "true")
            .env("KASSA_SANDBOX_SETTLE_DELAY_MS_MAX", 300)
            .env("KASSA_SANDBOX_BANK_CALLBACK_RATE_PERCENT", 0)
            .env("KASSA_ORDERS_REDRIVE_SCHEDULE_MS", "200,400,800")
            .env("KASSA_ORDERS_JANITOR_INTERVAL_MS", 500),
    )
    .await
}

fn body(method: &str, amount: &str, currency: &str) -> Value {
    json!({
        "amount": amount,
        "currency": currency,
        "method": method,
        "merchant_order_id": unique("order"),
        "description": "Tea, 2 kg",
    })
}

/// The customer at the provider's pay page (unsigned, as their phone would be).
async fn customer_visits(url: &str, pay: bool) -> u16 {
    let at = url.find("/pay/").expect("a pay link");
    let (base, path) = url.split_at(at);
    let path = if pay {
        path.to_owned()
    } else {
        format!("{path}?result=fail")
    };
    HttpClient::new(base)
        .send("GET", &path, &[], Vec::new())
        .await
        .expect("pay page")
        .status
}

/// The provider's record of a payment (the sandbox ledger's `async_payments`).
async fn provider_record(kassa: &Kassa, id: &str) -> Value {
    let ledger = sandbox_call(kassa, "GET", "/sandbox/ledger", None).await;
    ledger["async_payments"]
        .as_array()
        .expect("async_payments")
        .iter()
        .find(|p| p["idempotency_key"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no provider record for {id}: {ledger}"))
}

/// Polls until the payment reaches a final status (not processing, not requires_action).
async fn final_state(merchant: &MerchantClient, id: &str) -> Value {
    poll_until(&format!("payment {id} to be final"), SETTLE, || async {
        let payment = get_payment(merchant, id).await;
        match payment["status"].as_str() {
            Some("processing" | "requires_action") => Err(payment.to_string()),
            _ => Ok(payment),
        }
    })
    .await
}

async fn awaiting_customer(
    merchant: &MerchantClient,
    body: &Value,
    action: &str,
) -> (String, String) {
    let response = post_payment(merchant, body, Some(&unique("key"))).await;
    let payment = expect_status(&response, 201, "wallet-app payment");
    assert_payment_shape(&payment);
    assert_eq!(payment["status"], "requires_action", "{payment}");
    assert_eq!(payment["next_action"]["type"], action, "{payment}");
    let url = payment["next_action"]["url"]
        .as_str()
        .expect("url")
        .to_owned();
    (id_of(&payment), url)
}

#[tokio::test]
async fn qr_and_app_wallet_payments_complete_by_signed_callbacks() {
    let kassa = start().await;
    let merchant = kassa.new_merchant("Tea House").await;

    for (method, action) in [
        ("qr_wallet", "display_qr_code"),
        ("app_wallet", "open_wallet_app"),
    ] {
        // Paid.
        let (id, url) = awaiting_customer(&merchant, &body(method, "88.00", "CNY"), action).await;
        assert_eq!(customer_visits(&url, true).await, 200);
        let paid = final_state(&merchant, &id).await;
        assert_eq!(paid["status"], "succeeded", "{method}: {paid}");
        assert_eq!(paid["amount_captured"], "88.00", "{paid}");
        assert_eq!(paid["next_action"], Value::Null, "{paid}");
        // Refunded in part at the provider.
        let refund = post_refund(
            &merchant,
            &json!({"payment_id": id, "amount": "8.00"}),
            None,
        )
        .await;
        let refund = expect_status(&refund, 201, "wallet refund");
        assert_eq!(refund["status"], "succeeded", "{method}: {refund}");

        // The customer declines.
        let (id, url) = awaiting_customer(&merchant, &body(method, "12.00", "CNY"), action).await;
        assert_eq!(customer_visits(&url, false).await, 200);
        let declined = final_state(&merchant, &id).await;
        assert_eq!(declined["status"], "failed", "{method}: {declined}");
        assert!(declined["failure_code"].is_string(), "{declined}");

        // The merchant cancels before the customer pays: closed at the provider first, so a
        // late scan cannot take money.
        let (id, url) = awaiting_customer(&merchant, &body(method, "5.00", "CNY"), action).await;
        let canceled = merchant
            .send("POST", &format!("/v1/payments/{id}/cancel"), None, None)
            .await
            .expect("cancel");
        let canceled = expect_status(&canceled, 200, "cancel");
        assert_eq!(canceled["status"], "canceled", "{method}: {canceled}");
        customer_visits(&url, true).await;
        let at_provider = provider_record(&kassa, &id).await;
        assert_eq!(
            at_provider["status"], "failed",
            "{method}: a closed order paid: {at_provider}"
        );
        assert_eq!(get_payment(&merchant, &id).await["status"], "canceled");
    }

    // The provider's ledger agrees with Kassa.
    let ledger = sandbox_call(&kassa, "GET", "/sandbox/ledger", None).await;
    let payments = ledger["async_payments"].as_array().expect("async_payments");
    let succeeded = payments
        .iter()
        .filter(|p| p["status"] == "succeeded")
        .count();
    assert_eq!(succeeded, 2, "{ledger}");
}

#[tokio::test]
async fn bank_transfers_take_large_amounts_and_settle_by_query() {
    let kassa = start().await;
    let merchant = kassa.new_merchant("Steel Works").await;
    const ACCOUNT: &str = "DE89370400440532013000";

    // Too large for a card: refused before anything exists.
    let mut card = charge_body(&unique("big"), "2500000.00", "EUR", CARD_SUCCEEDS);
    card["method"] = json!("card");
    let refused = post_payment(&merchant, &card, None).await;
    let error = assert_error(&refused, 422, "amount_over_limit");
    assert_eq!(error["param"], "amount", "{error}");

    // By bank transfer: accepted, not yet settled (202), and no account number echoed.
    let mut transfer = body("bank_transfer", "2500000.00", "EUR");
    transfer["bank_account"] = json!({"number": ACCOUNT, "holder_name": "Buyer GmbH"});
    let response = post_payment(&merchant, &transfer, Some(&unique("key"))).await;
    assert_no_card_data(&response, ACCOUNT);
    let accepted = response.json().expect("json");
    assert!(
        [201, 202].contains(&response.status),
        "{}: {accepted}",
        response.status
    );
    assert_payment_shape(&accepted);
    assert_eq!(accepted["bank_account"]["last4"], "3000", "{accepted}");
    let id = id_of(&accepted);
    // The bank sends no callback here: Kassa asks until it knows.
    let settled = final_state(&merchant, &id).await;
    assert_eq!(settled["status"], "succeeded", "{settled}");
    assert_eq!(settled["amount_captured"], "2500000.00", "{settled}");
    assert!(
        !kassa.log_contents().contains(ACCOUNT),
        "account number in the log"
    );

    // Rejected by the payer's bank (amounts ending in 13 minor units, by the sandbox's rule).
    let mut rejected = body("bank_transfer", "1000.13", "EUR");
    rejected["bank_account"] = json!({"number": ACCOUNT, "holder_name": "Buyer GmbH"});
    let response = post_payment(&merchant, &rejected, None).await;
    let id = id_of(&response.json().expect("json"));
    let failed = final_state(&merchant, &id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["failure_code"], "account_closed", "{failed}");

    // A transfer cannot be canceled once submitted.
    let mut pending = body("bank_transfer", "1000.00", "EUR");
    pending["bank_account"] = json!({"number": ACCOUNT, "holder_name": "Buyer GmbH"});
    pending["async"] = json!(true);
    let response = post_payment(&merchant, &pending, None).await;
    let id = id_of(&response.json().expect("json"));
    let cancel = merchant
        .send("POST", &format!("/v1/payments/{id}/cancel"), None, None)
        .await
        .expect("cancel");
    assert_error_in(&cancel, 409, &["payment_unexpected_state"]);
    assert_eq!(final_state(&merchant, &id).await["status"], "succeeded");
}

async fn wallet_balance(merchant: &MerchantClient, id: &str) -> String {
    get_ok(merchant, &format!("/v1/wallets/{id}")).await["balance"]
        .as_str()
        .expect("balance")
        .to_owned()
}

#[tokio::test]
async fn wallet_payments_debit_the_balance_and_refunds_credit_it() {
    let kassa = start().await;
    let merchant = kassa.new_merchant("Arcade").await;
    let created = merchant
        .post_json(
            "/v1/wallets",
            &json!({"currency": "EUR", "customer_ref": "cus_7"}),
            Some(&unique("wallet")),
        )
        .await
        .expect("create wallet");
    let wallet = id_of(&expect_status(&created, 201, "create wallet"));
    let top_up = merchant
        .post_json(
            &format!("/v1/wallets/{wallet}/top_ups"),
            &json!({"amount": "50.00", "currency": "EUR"}),
            Some(&unique("top-up")),
        )
        .await
        .expect("top up");
    expect_status(&top_up, 201, "top up");

    let mut pay = body("wallet", "30.00", "EUR");
    pay["wallet_id"] = json!(wallet);
    let paid = post_payment(&merchant, &pay, None).await;
    let paid = expect_status(&paid, 201, "wallet payment");
    assert_payment_shape(&paid);
    assert_eq!(paid["status"], "succeeded", "{paid}");
    assert_eq!(wallet_balance(&merchant, &wallet).await, "20.00");

    // Not enough left: an order that failed, and the balance untouched.
    let mut again = body("wallet", "30.00", "EUR");
    again["wallet_id"] = json!(wallet);
    let short = post_payment(&merchant, &again, None).await;
    let short = expect_status(&short, 201, "short wallet payment");
    assert_eq!(short["status"], "failed", "{short}");
    assert_eq!(short["failure_code"], "insufficient_funds", "{short}");
    assert_eq!(wallet_balance(&merchant, &wallet).await, "20.00");

    // A refund goes back to the wallet.
    let refund = post_refund(
        &merchant,
        &json!({"payment_id": id_of(&paid), "amount": "10.00"}),
        None,
    )
    .await;
    assert_eq!(
        expect_status(&refund, 201, "wallet refund")["status"],
        "succeeded"
    );
    assert_eq!(wallet_balance(&merchant, &wallet).await, "30.00");

    // Someone else's wallet, or the wrong currency: refused, nothing created.
    let other = kassa.new_merchant("Other Arcade").await;
    let mut foreign = body("wallet", "1.00", "EUR");
    foreign["wallet_id"] = json!(wallet);
    assert_error(
        &post_payment(&other, &foreign, None).await,
        422,
        "wallet_not_found",
    );
    let mut dollars = body("wallet", "1.00", "USD");
    dollars["wallet_id"] = json!(wallet);
    assert_error(
        &post_payment(&merchant, &dollars, None).await,
        422,
        "currency_mismatch",
    );
    assert_eq!(list_all_payments(&other).await.len(), 0);
}

#[tokio::test]
async fn payer_details_must_fit_the_method() {
    let kassa = Kassa::start_default().await;
    let merchant = kassa.new_merchant("Strict Ltd").await;
    let mut with_card = body("qr_wallet", "10.00", "CNY");
    with_card["card"] = card(CARD_SUCCEEDS);
    assert_error(
        &post_payment(&merchant, &with_card, None).await,
        422,
        "parameter_unexpected",
    );
    let no_account = body("bank_transfer", "10.00", "EUR");
    assert_error(
        &post_payment(&merchant, &no_account, None).await,
        400,
        "missing_field",
    );
    let mut bad_account = body("bank_transfer", "10.00", "EUR");
    bad_account["bank_account"] = json!({"number": "12-34", "holder_name": "X"});
    assert_error(
        &post_payment(&merchant, &bad_account, None).await,
        422,
        "bank_account_invalid",
    );
    let mut manual = body("qr_wallet", "10.00", "CNY");
    manual["capture"] = json!("manual");
    assert_error(
        &post_payment(&merchant, &manual, None).await,
        422,
        "capture_unsupported",
    );
    // QR payments are offered in CNY, HKD, USD and EUR only.
    let yen = body("qr_wallet", "1000", "JPY");
    assert_error(
        &post_payment(&merchant, &yen, None).await,
        422,
        "method_unsupported",
    );
    let unknown = body("cheque", "10.00", "EUR");
    assert_error(
        &post_payment(&merchant, &unknown, None).await,
        422,
        "method_unsupported",
    );
    assert_eq!(
        list_all_payments(&merchant).await.len(),
        0,
        "refusals create nothing"
    );
}
