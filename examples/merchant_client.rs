//! A merchant's first charge and refund against a running Kassa.
//!
//! ```text
//! KASSA_URL=http://127.0.0.1:8080 KASSA_ADMIN_TOKEN=... cargo run -p kassa-examples --example merchant_client
//! KASSA_MERCHANT_ID=mch_... KASSA_MERCHANT_SECRET=sk_... cargo run -p kassa-examples --example merchant_client
//! ```
//!
//! With `KASSA_ADMIN_TOKEN` (and no merchant credentials) it first creates a merchant named
//! "example merchant". Then it charges 10.00 USD to the sandbox card 4242 4242 4242 4242 with an
//! `Idempotency-Key`, refunds 3.00, and reads the payment again to show `amount_refunded`.

use std::process::ExitCode;

use kassa_client::{AdminClient, MerchantClient, Response, unix_now};
use serde_json::{Value, json};

const KASSA_URL_DEFAULT: &str = "http://127.0.0.1:8080";

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("merchant_client: error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let base_url = std::env::var("KASSA_URL").unwrap_or_else(|_| KASSA_URL_DEFAULT.to_owned());
    let merchant = merchant_from_env(&base_url).await?;
    println!("Kassa at {base_url}, merchant {}", merchant.merchant_id());

    let order_id = format!("example-{}-{}", unix_now(), std::process::id());
    let charge = json!({
        "amount": "10.00",
        "currency": "USD",
        "merchant_order_id": order_id,
        "method": "card",
        "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"},
        "description": "kassa-examples merchant_client",
    });
    let charge_key = format!("charge-{order_id}");
    let response = merchant
        .post_json("/v1/payments", &charge, Some(&charge_key))
        .await
        .map_err(|error| format!("charging failed: {error}"))?;
    let payment = expect(&response, &[201, 202], "POST /v1/payments")?;
    let payment_id = string_field(&payment, "id")?;
    println!(
        "\ncharged {} {}: payment {payment_id} is {} (captured {})",
        payment["amount"].as_str().unwrap_or("?"),
        payment["currency"].as_str().unwrap_or("?"),
        payment["status"].as_str().unwrap_or("?"),
        payment["amount_captured"].as_str().unwrap_or("?"),
    );
    print_json(&payment);
    if payment["status"] != "succeeded" {
        return Err(format!(
            "payment {payment_id} is {}, not succeeded; nothing to refund",
            payment["status"]
        ));
    }

    let refund_body =
        json!({"payment_id": payment_id, "amount": "3.00", "reason": "requested_by_customer"});
    let response = merchant
        .post_json(
            "/v1/refunds",
            &refund_body,
            Some(&format!("refund-{order_id}")),
        )
        .await
        .map_err(|error| format!("refunding failed: {error}"))?;
    let refund = expect(&response, &[201, 202], "POST /v1/refunds")?;
    println!(
        "\nrefunded {} {}: refund {} is {}",
        refund["amount"].as_str().unwrap_or("?"),
        refund["currency"].as_str().unwrap_or("?"),
        refund["id"].as_str().unwrap_or("?"),
        refund["status"].as_str().unwrap_or("?"),
    );
    print_json(&refund);

    let path = format!("/v1/payments/{payment_id}");
    let response = merchant
        .get(&path)
        .await
        .map_err(|error| format!("reading the payment failed: {error}"))?;
    let payment = expect(&response, &[200], &format!("GET {path}"))?;
    println!(
        "\npayment {payment_id} now: status {}, amount_captured {}, amount_refunded {}",
        payment["status"].as_str().unwrap_or("?"),
        payment["amount_captured"].as_str().unwrap_or("?"),
        payment["amount_refunded"].as_str().unwrap_or("?"),
    );
    print_json(&payment);
    Ok(())
}

/// Merchant credentials from the environment, or a new merchant made with the admin token.
async fn merchant_from_env(base_url: &str) -> Result<MerchantClient, String> {
    let id = std::env::var("KASSA_MERCHANT_ID").ok();
    let secret = std::env::var("KASSA_MERCHANT_SECRET").ok();
    match (id, secret) {
        (Some(id), Some(secret)) => Ok(MerchantClient::new(base_url, &id, &secret)),
        (Some(_), None) | (None, Some(_)) => Err(
            "set both KASSA_MERCHANT_ID and KASSA_MERCHANT_SECRET (or neither, with KASSA_ADMIN_TOKEN)"
                .to_owned(),
        ),
        (None, None) => {
            let token = std::env::var("KASSA_ADMIN_TOKEN").map_err(|_| {
                "set KASSA_MERCHANT_ID and KASSA_MERCHANT_SECRET, or KASSA_ADMIN_TOKEN to create a merchant"
                    .to_owned()
            })?;
            let admin = AdminClient::new(base_url, &token);
            let credentials = admin
                .create_merchant("example merchant", None)
                .await
                .map_err(|error| format!("creating a merchant failed: {error}"))?;
            println!("created merchant {} (\"example merchant\")", credentials.id);
            Ok(admin.merchant(&credentials))
        }
    }
}

/// The JSON body of `response` if its status is one of `statuses`, else a readable error.
fn expect(response: &Response, statuses: &[u16], operation: &str) -> Result<Value, String> {
    if !statuses.contains(&response.status) {
        return Err(format!(
            "{operation} answered {}: {}",
            response.status,
            response.text()
        ));
    }
    response
        .json()
        .map_err(|error| format!("{operation}: {error}"))
}

fn string_field(object: &Value, name: &str) -> Result<String, String> {
    object[name]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("response has no string {name:?}: {object}"))
}

fn print_json(value: &Value) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(_) => println!("{value}"),
    }
}
