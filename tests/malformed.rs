//! Malformed `POST /v1/payments` requests: each gets its documented status, code and `param`,
//! creates nothing, and the server keeps serving (docs/API.md "Errors", "Conventions").

use harness::*;
use serde_json::{Value, json};

/// 10 MB, far past the 64 KiB default body limit.
const HUGE_BODY_BYTES: usize = 10 * 1024 * 1024;

/// One malformed request and what docs/API.md says it gets.
struct Case {
    name: &'static str,
    body: Vec<u8>,
    status: u16,
    /// Acceptable codes (one, unless docs/API.md leaves the choice open).
    codes: &'static [&'static str],
    /// `Some(expected)` to check `param`; `None` to leave it unchecked.
    param: Option<Value>,
}

fn case(name: &'static str, body: Value, status: u16, code: &'static [&'static str]) -> Case {
    Case {
        name,
        body: body.to_string().into_bytes(),
        status,
        codes: code,
        param: None,
    }
}

impl Case {
    fn param(mut self, param: &str) -> Self {
        self.param = Some(json!(param));
        self
    }
}

/// A valid charge body with `key` set to `value`.
fn with(key: &str, value: Value) -> Value {
    let mut body = usd_charge(CARD_SUCCEEDS);
    body[key] = value;
    body
}

/// A valid charge body without `key`.
fn without(key: &str) -> Value {
    let mut body = usd_charge(CARD_SUCCEEDS);
    body.as_object_mut().map(|object| object.remove(key));
    body
}

/// A valid charge body with `card.key` set to `value`.
fn with_card(key: &str, value: Value) -> Value {
    let mut body = usd_charge(CARD_SUCCEEDS);
    body["card"][key] = value;
    body
}

fn amount(amount: &str, currency: &str) -> Value {
    charge_body(&unique("order"), amount, currency, CARD_SUCCEEDS)
}

fn raw(name: &'static str, body: &[u8], status: u16, codes: &'static [&'static str]) -> Case {
    Case {
        name,
        body: body.to_vec(),
        status,
        codes,
        param: None,
    }
}

fn cases() -> Vec<Case> {
    let too_many_metadata: serde_json::Map<String, Value> =
        (0..21).map(|i| (format!("k{i}"), json!("v"))).collect();
    let not_an_object: &[&str] = &["invalid_json", "invalid_field"];
    vec![
        raw(
            "truncated JSON",
            br#"{"amount": "10.00", "#,
            400,
            &["invalid_json"],
        ),
        raw(
            "not JSON at all",
            b"amount=10.00&currency=USD",
            400,
            &["invalid_json"],
        ),
        raw("empty body", b"", 400, &["invalid_json"]),
        raw("a JSON array", b"[]", 400, not_an_object),
        raw("a JSON string", br#""pay me""#, 400, not_an_object),
        raw("JSON null", b"null", 400, not_an_object),
        case(
            "amount as a number",
            with("amount", json!(10.5)),
            400,
            &["invalid_field"],
        )
        .param("amount"),
        case(
            "currency as a number",
            with("currency", json!(840)),
            400,
            &["invalid_field"],
        )
        .param("currency"),
        case(
            "card as a string",
            with("card", json!(CARD_SUCCEEDS)),
            400,
            &["invalid_field"],
        )
        .param("card"),
        case(
            "merchant_order_id as a number",
            with("merchant_order_id", json!(1001)),
            400,
            &["invalid_field"],
        )
        .param("merchant_order_id"),
        case(
            "async as a string",
            with("async", json!("yes")),
            400,
            &["invalid_field"],
        )
        .param("async"),
        case(
            "unknown top-level field",
            with("amount_cents", json!(1000)),
            400,
            &["unknown_field"],
        )
        .param("amount_cents"),
        case(
            "unknown card field",
            with_card("pin", json!("0000")),
            400,
            &["unknown_field"],
        ),
        case("missing amount", without("amount"), 400, &["missing_field"]).param("amount"),
        case(
            "missing currency",
            without("currency"),
            400,
            &["missing_field"],
        )
        .param("currency"),
        case("missing card", without("card"), 400, &["missing_field"]).param("card"),
        case(
            "missing merchant_order_id",
            without("merchant_order_id"),
            400,
            &["missing_field"],
        )
        .param("merchant_order_id"),
        case(
            "3 decimals in USD",
            amount("10.001", "USD"),
            422,
            &["amount_too_precise"],
        )
        .param("amount"),
        case(
            "decimals in JPY",
            amount("1.5", "JPY"),
            422,
            &["amount_too_precise"],
        )
        .param("amount"),
        case(
            "4 decimals in KWD",
            amount("1.2501", "KWD"),
            422,
            &["amount_too_precise"],
        )
        .param("amount"),
        case(
            "negative amount",
            amount("-1.00", "USD"),
            422,
            &["amount_not_positive"],
        )
        .param("amount"),
        case(
            "zero amount",
            amount("0.00", "USD"),
            422,
            &["amount_not_positive"],
        )
        .param("amount"),
        case(
            "exponent notation",
            amount("1e3", "USD"),
            422,
            &["amount_invalid"],
        )
        .param("amount"),
        case("letters", amount("abc", "USD"), 422, &["amount_invalid"]).param("amount"),
        case("empty amount", amount("", "USD"), 422, &["amount_invalid"]).param("amount"),
        case(
            "comma decimal",
            amount("10,00", "USD"),
            422,
            &["amount_invalid"],
        )
        .param("amount"),
        case(
            "absurdly large amount",
            amount("1000000000000000000000", "USD"),
            422,
            &["amount_too_large"],
        )
        .param("amount"),
        case(
            "unknown currency",
            amount("10.00", "XYZ"),
            422,
            &["currency_unsupported"],
        )
        .param("currency"),
        case(
            "lowercase currency",
            amount("10.00", "usd"),
            422,
            &["currency_unsupported"],
        )
        .param("currency"),
        case(
            "Luhn-invalid card number",
            with_card("number", json!("4242424242424241")),
            422,
            &["card_number_invalid"],
        )
        .param("card.number"),
        case(
            "card number with letters",
            with_card("number", json!("4242abcd42424242")),
            422,
            &["card_number_invalid"],
        )
        .param("card.number"),
        case(
            "expired card",
            with_card("exp_year", json!(2001)),
            422,
            &["card_expired"],
        ),
        case(
            "bad cvc",
            with_card("cvc", json!("12a")),
            422,
            &["card_cvc_invalid"],
        )
        .param("card.cvc"),
        case(
            "unknown method",
            with("method", json!("bitcoin")),
            422,
            &["method_unsupported"],
        )
        .param("method"),
        case(
            "21 metadata keys",
            with("metadata", Value::Object(too_many_metadata)),
            422,
            &["metadata_invalid"],
        )
        .param("metadata"),
    ]
}

#[tokio::test]
async fn malformed_charges_get_their_documented_errors_and_create_nothing() {
    let kassa = Kassa::start_default().await;
    let merchant = kassa.new_merchant("Books Ltd").await;
    let cases = cases();
    assert!(cases.len() >= 20, "the foundation asks for at least twenty");

    let mut failures = Vec::new();
    for case in &cases {
        let response = merchant
            .send("POST", "/v1/payments", Some(case.body.clone()), None)
            .await
            .unwrap_or_else(|error| panic!("{}: {error}", case.name));
        // Collect every mismatch, so one run shows them all.
        let checked =
            check_error(&response, case.status, case.codes).and_then(|error| match &case.param {
                Some(param) if &error["param"] != param => {
                    Err(format!("param must be {param}, got {error}"))
                }
                _ => Ok(()),
            });
        if let Err(mismatch) = checked {
            let short: String = mismatch.chars().take(400).collect();
            failures.push(format!("{}: {short}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} malformed requests got the wrong answer:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // 10 MB: Kassa may answer 413 before reading the body and close, so this one goes over a
    // bare connection that reads the answer while the body is still being written.
    let path = "/v1/payments";
    let mut huge = usd_charge(CARD_SUCCEEDS);
    huge["description"] = json!("x".repeat(HUGE_BODY_BYTES));
    let huge = huge.to_string().into_bytes();
    let headers = merchant.signed_headers(unix_now(), "POST", path, &huge);
    let response = send_raw_http(kassa.base_url(), "POST", path, &headers, huge)
        .await
        .unwrap_or_else(|error| panic!("10 MB body: {error}"));
    assert_error(&response, 413, "body_too_large");

    assert!(
        list_all_payments(&merchant).await.is_empty(),
        "malformed requests must create nothing"
    );

    // The server still serves, and amounts at a currency's full exponent are fine.
    for (amount, currency, printed) in [
        ("10.00", "USD", "10.00"),
        ("10", "USD", "10.00"),
        ("1.250", "KWD", "1.250"),
        ("500", "JPY", "500"),
    ] {
        let body = charge_body(&unique("order"), amount, currency, CARD_SUCCEEDS);
        let payment = charge_succeeded(&merchant, &body).await;
        assert_payment_shape(&payment);
        assert_eq!(payment["amount"], printed, "{amount} {currency}: {payment}");
        assert_eq!(payment["amount_captured"], printed, "{payment}");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let kassa = Kassa::start_default().await;
    let merchant = kassa.new_merchant("Books Ltd").await;
    let response = merchant.get("/v1/nothing-here").await.expect("GET");
    assert_error(&response, 404, "route_not_found");
    let response = merchant
        .send("DELETE", "/v1/payments", None, None)
        .await
        .expect("DELETE");
    assert_error(&response, 405, "method_not_allowed");
    let response = merchant
        .send("PUT", "/v1/refunds", Some(b"{}".to_vec()), None)
        .await
        .expect("PUT");
    assert_error(&response, 405, "method_not_allowed");
}
