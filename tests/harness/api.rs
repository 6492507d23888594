//! Request bodies, sandbox test cards and assertions on the shapes docs/API.md fixes.
//!
//! Every assertion panics with the response body, so a failing e2e test says what Kassa sent.

use std::sync::atomic::{AtomicU64, Ordering};

use kassa_client::{MerchantClient, Response, unix_now};
use serde_json::{Value, json};

/// Sandbox card that succeeds.
pub const CARD_SUCCEEDS: &str = "4242424242424242";
/// Sandbox card that fails with `card_declined`.
pub const CARD_DECLINED: &str = "4000000000000002";
/// Sandbox card that fails with `insufficient_funds`.
pub const CARD_INSUFFICIENT_FUNDS: &str = "4000000000009995";

/// The most pages [`list_all_payments`] walks before deciding pagination is broken.
const LIST_PAGES_MAX: usize = 1_000;

/// A string unique within this test process (and, with the pid, across processes).
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// A card object with a future expiry: `{"number", "exp_month", "exp_year", "cvc"}`.
pub fn card(number: &str) -> Value {
    // Roughly this year plus four; exact enough for "not expired".
    let exp_year = 1970 + unix_now() / 31_556_952 + 4;
    json!({"number": number, "exp_month": 12, "exp_year": exp_year, "cvc": "123"})
}

/// A `POST /v1/payments` body paying `amount` `currency` with card `card_number`.
pub fn charge_body(order_id: &str, amount: &str, currency: &str, card_number: &str) -> Value {
    json!({
        "amount": amount,
        "currency": currency,
        "merchant_order_id": order_id,
        "method": "card",
        "card": card(card_number),
    })
}

/// A 10.00 USD charge body with a fresh `merchant_order_id`.
pub fn usd_charge(card_number: &str) -> Value {
    charge_body(&unique("order"), "10.00", "USD", card_number)
}

/// Panics unless `response.status == status`; returns the JSON body.
pub fn expect_status(response: &Response, status: u16, what: &str) -> Value {
    assert_eq!(
        response.status,
        status,
        "{what}: expected {status}, got {} with body {}",
        response.status,
        response.text()
    );
    response
        .json()
        .unwrap_or_else(|error| panic!("{what}: {error}"))
}

/// The error `type` docs/API.md pairs with `status` and `code`.
pub fn error_type_for(status: u16, code: &str) -> &'static str {
    match (status, code) {
        (401, _) => "authentication_error",
        (409, "idempotency_request_in_progress") => "idempotency_error",
        (422, "idempotency_key_reused" | "idempotency_key_invalid") => "idempotency_error",
        (429, _) => "rate_limit_error",
        (500..=599, _) => "api_error",
        _ => "invalid_request_error",
    }
}

/// Asserts `response` is `status` with exactly `{"error":{"type","code","message","param"}}`,
/// `code` as given, `type` as docs/API.md pairs with it, a non-empty message and `param` a
/// string or null. Returns the inner error object.
pub fn assert_error(response: &Response, status: u16, code: &str) -> Value {
    assert_error_in(response, status, &[code])
}

/// [`assert_error`], accepting any of `codes`.
pub fn assert_error_in(response: &Response, status: u16, codes: &[&str]) -> Value {
    check_error(response, status, codes).unwrap_or_else(|mismatch| panic!("{mismatch}"))
}

/// What [`assert_error_in`] checks, as a `Result` (the mismatch, with the body) instead of a
/// panic, for tests that collect every mismatch before failing.
pub fn check_error(response: &Response, status: u16, codes: &[&str]) -> Result<Value, String> {
    let mismatch = |why: &str| {
        Err(format!(
            "expected error {status} {codes:?}, got {} ({why}): {}",
            response.status,
            response.text()
        ))
    };
    if response.status != status {
        return mismatch("status");
    }
    let Ok(body) = response.json() else {
        return mismatch("body is not JSON");
    };
    let Some(outer) = body.as_object() else {
        return mismatch("body is not an object");
    };
    if outer.len() != 1 {
        return mismatch("body must be exactly {\"error\":{...}}");
    }
    let Some(error) = body.get("error").and_then(Value::as_object) else {
        return mismatch("\"error\" is not an object");
    };
    let mut keys: Vec<&str> = error.keys().map(String::as_str).collect();
    keys.sort_unstable();
    if keys != ["code", "message", "param", "type"] {
        return mismatch("error keys must be type, code, message, param");
    }
    let code = error["code"].as_str().unwrap_or_default();
    if !codes.contains(&code) {
        return mismatch("code");
    }
    if error["type"] != error_type_for(status, code) {
        return mismatch(&format!("type must be {}", error_type_for(status, code)));
    }
    if error["message"].as_str().is_none_or(str::is_empty) {
        return mismatch("message must be a non-empty string");
    }
    if !(error["param"].is_string() || error["param"].is_null()) {
        return mismatch("param must be a string or null");
    }
    Ok(body["error"].clone())
}

/// ISO 4217 minor-unit exponent of the currencies the tests use.
pub fn exponent(currency: &str) -> Option<u32> {
    match currency {
        "USD" | "EUR" | "CNY" | "GBP" => Some(2),
        "JPY" | "KRW" => Some(0),
        "KWD" | "BHD" | "JOD" => Some(3),
        _ => None,
    }
}

/// `"12.34"` → 1234 for an exponent of 2. Panics unless `amount` prints exactly `exponent`
/// decimals (docs/API.md: responses always print the currency's full exponent).
pub fn minor_units(amount: &str, exponent: u32) -> i128 {
    let (units, decimals) = match amount.split_once('.') {
        Some((units, decimals)) => (units, decimals),
        None => (amount, ""),
    };
    let exponent_len = usize::try_from(exponent).expect("small exponent");
    assert!(
        decimals.len() == exponent_len
            && !units.is_empty()
            && units.bytes().all(|b| b.is_ascii_digit())
            && decimals.bytes().all(|b| b.is_ascii_digit())
            && (exponent > 0 || !amount.contains('.')),
        "amount {amount:?} is not a plain decimal with exactly {exponent} decimals"
    );
    let digits: String = [units, decimals].concat();
    digits.parse().expect("checked digits")
}

/// Asserts `value` is an amount string printed with `currency`'s full exponent.
pub fn assert_amount(value: &Value, currency: &str, what: &str) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{what}: amount must be a string, got {value}"));
    if let Some(exponent) = exponent(currency) {
        let _ = minor_units(text, exponent);
    }
}

fn assert_keys_present(object: &Value, keys: &[&str], what: &str) {
    for key in keys {
        assert!(
            object.get(key).is_some(),
            "{what}: field {key:?} is missing: {object}"
        );
    }
}

fn assert_string_or_null(object: &Value, key: &str, what: &str) {
    assert!(
        object[key].is_string() || object[key].is_null(),
        "{what}: {key} must be a string or null: {object}"
    );
}

/// Asserts the payment object has every field docs/API.md lists, with the right types, and a
/// `card` holding only brand, bin, last4 and expiry.
pub fn assert_payment_shape(payment: &Value) {
    let what = "payment object";
    assert_keys_present(
        payment,
        &[
            "id",
            "object",
            "merchant_order_id",
            "amount",
            "currency",
            "method",
            "status",
            "amount_authorized",
            "amount_captured",
            "amount_refunded",
            "capture",
            "card",
            "failure_code",
            "failure_message",
            "description",
            "created",
            "updated",
            "metadata",
        ],
        what,
    );
    assert!(
        payment["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("pay_")),
        "{what}: id must start with pay_: {payment}"
    );
    assert_eq!(payment["object"], "payment", "{what}: {payment}");
    assert!(
        payment["merchant_order_id"].is_string(),
        "{what}: {payment}"
    );
    let currency = payment["currency"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: currency must be a string: {payment}"));
    for amount in [
        "amount",
        "amount_authorized",
        "amount_captured",
        "amount_refunded",
    ] {
        assert_amount(&payment[amount], currency, &format!("{what} {amount}"));
    }
    assert!(payment["method"].is_string(), "{what}: {payment}");
    assert!(
        [
            "processing",
            "requires_action",
            "authorized",
            "succeeded",
            "failed",
            "canceled"
        ]
        .contains(&payment["status"].as_str().unwrap_or_default()),
        "{what}: unknown status: {payment}"
    );
    assert!(
        ["automatic", "manual"].contains(&payment["capture"].as_str().unwrap_or_default()),
        "{what}: capture: {payment}"
    );
    for key in ["failure_code", "failure_message", "description"] {
        assert_string_or_null(payment, key, what);
    }
    assert!(payment["created"].is_i64(), "{what}: created: {payment}");
    assert!(payment["updated"].is_i64(), "{what}: updated: {payment}");
    assert!(
        payment["metadata"].is_object(),
        "{what}: metadata: {payment}"
    );
    // The card only on card payments; other methods carry their own (masked) payer details.
    if payment["method"] == "card" {
        assert_card_shape(&payment["card"], payment);
    } else {
        assert!(
            payment["card"].is_null(),
            "{what}: card on a non-card payment: {payment}"
        );
    }
}

fn assert_card_shape(card: &Value, payment: &Value) {
    let fields = card
        .as_object()
        .unwrap_or_else(|| panic!("payment card must be an object: {payment}"));
    for key in fields.keys() {
        assert!(
            ["brand", "bin", "last4", "exp_month", "exp_year"].contains(&key.as_str()),
            "payment card may hold only brand, bin, last4 and expiry, found {key:?}: {payment}"
        );
    }
    assert!(card["brand"].is_string(), "card brand: {payment}");
    let digits = |key: &str, len: usize| {
        card[key]
            .as_str()
            .is_some_and(|s| s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
    };
    assert!(digits("bin", 6), "card bin must be 6 digits: {payment}");
    assert!(digits("last4", 4), "card last4 must be 4 digits: {payment}");
}

/// Asserts the refund object has every field docs/API.md lists, with the right types.
pub fn assert_refund_shape(refund: &Value) {
    let what = "refund object";
    assert_keys_present(
        refund,
        &[
            "id",
            "object",
            "payment_id",
            "amount",
            "currency",
            "status",
            "reason",
            "failure_code",
            "created",
            "metadata",
        ],
        what,
    );
    assert!(
        refund["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("re_")),
        "{what}: id must start with re_: {refund}"
    );
    assert_eq!(refund["object"], "refund", "{what}: {refund}");
    assert!(
        refund["payment_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("pay_")),
        "{what}: payment_id: {refund}"
    );
    let currency = refund["currency"].as_str().unwrap_or_default();
    assert_amount(&refund["amount"], currency, what);
    assert!(
        ["pending", "succeeded", "failed"].contains(&refund["status"].as_str().unwrap_or_default()),
        "{what}: status: {refund}"
    );
    assert_string_or_null(refund, "reason", what);
    assert_string_or_null(refund, "failure_code", what);
    assert!(refund["created"].is_i64(), "{what}: created: {refund}");
    assert!(refund["metadata"].is_object(), "{what}: metadata: {refund}");
}

/// Asserts a response body never carries the full card number or a CVC.
pub fn assert_no_card_data(response: &Response, number: &str) {
    let text = response.text();
    assert!(
        !text.contains(number),
        "response carries the full card number: {text}"
    );
    assert!(!text.contains("\"cvc\""), "response carries a cvc: {text}");
}

/// Asserts `{"object":"list","data":[...],"has_more":bool}`; returns `(data, has_more)`.
pub fn assert_list(body: &Value) -> (Vec<Value>, bool) {
    assert_eq!(body["object"], "list", "list object: {body}");
    let data = body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("list data must be an array: {body}"))
        .clone();
    let has_more = body["has_more"]
        .as_bool()
        .unwrap_or_else(|| panic!("list has_more must be a bool: {body}"));
    (data, has_more)
}

/// `GET path` as `merchant`, expecting 200; returns the body.
pub async fn get_ok(merchant: &MerchantClient, path: &str) -> Value {
    let response = merchant
        .get(path)
        .await
        .unwrap_or_else(|error| panic!("GET {path}: {error}"));
    expect_status(&response, 200, &format!("GET {path}"))
}

/// `GET /v1/payments/{id}`, expecting 200.
pub async fn get_payment(merchant: &MerchantClient, id: &str) -> Value {
    get_ok(merchant, &format!("/v1/payments/{id}")).await
}

/// Every payment of `merchant`, newest first, walking `starting_after` pages of 100.
pub async fn list_all_payments(merchant: &MerchantClient) -> Vec<Value> {
    list_all(merchant, "/v1/payments").await
}

/// Every object of the list at `path` (`/v1/payments`, `/v1/events`), newest first, walking
/// `starting_after` pages of 100.
pub async fn list_all(merchant: &MerchantClient, path: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut page_path = format!("{path}?limit=100");
    for _ in 0..LIST_PAGES_MAX {
        let (page, has_more) = assert_list(&get_ok(merchant, &page_path).await);
        let last = page.last().map(|object| object["id"].clone());
        all.extend(page);
        match (has_more, last) {
            (false, _) => return all,
            (true, Some(Value::String(last))) => {
                page_path = format!("{path}?limit=100&starting_after={last}");
            }
            (true, last) => panic!("{path}: has_more with no usable last id ({last:?})"),
        }
    }
    panic!("{path}: more than {LIST_PAGES_MAX} pages: pagination does not end");
}

/// `POST /v1/payments` as `merchant`; panics only on transport errors.
pub async fn post_payment(merchant: &MerchantClient, body: &Value, key: Option<&str>) -> Response {
    merchant
        .post_json("/v1/payments", body, key)
        .await
        .unwrap_or_else(|error| panic!("POST /v1/payments: {error}"))
}

/// `POST /v1/refunds` as `merchant`; panics only on transport errors.
pub async fn post_refund(merchant: &MerchantClient, body: &Value, key: Option<&str>) -> Response {
    merchant
        .post_json("/v1/refunds", body, key)
        .await
        .unwrap_or_else(|error| panic!("POST /v1/refunds: {error}"))
}

/// A charge that must answer `201 succeeded`; returns the payment.
pub async fn charge_succeeded(merchant: &MerchantClient, body: &Value) -> Value {
    let response = post_payment(merchant, body, None).await;
    let payment = expect_status(&response, 201, "charge");
    assert_eq!(payment["status"], "succeeded", "charge: {payment}");
    payment
}

/// The `id` of an object as a `String`; panics if absent.
pub fn id_of(object: &Value) -> String {
    object["id"]
        .as_str()
        .unwrap_or_else(|| panic!("object has no string id: {object}"))
        .to_owned()
}

/// Polls `GET /v1/payments/{id}` until the payment leaves `processing`; returns it.
pub async fn wait_until_settled(
    merchant: &MerchantClient,
    id: &str,
    timeout: std::time::Duration,
) -> Value {
    let what = format!("payment {id} to leave processing");
    crate::poll_until(&what, timeout, || async {
        let payment = get_payment(merchant, id).await;
        match payment["status"].as_str() {
            Some("processing") => Err(payment.to_string()),
            _ => Ok(payment),
        }
    })
    .await
}

/// The in-process sandbox's default shared secret (`sandbox.api_secret`).
pub const SANDBOX_SECRET: &str = "sandbox-dev-secret";

/// A signed call to the run's sandbox provider (its ledger, stats and behaviour), expecting 200.
pub async fn sandbox_call(
    kassa: &crate::Kassa,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Value {
    use kassa_channels::card::signature;
    let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let header = signature::header_value(
        SANDBOX_SECRET.as_bytes(),
        signature::now_unix_s(),
        method,
        path,
        &body,
    );
    let headers = [
        ("Sandbox-Signature".to_owned(), header),
        ("Content-Type".to_owned(), "application/json".to_owned()),
    ];
    let response = kassa_client::HttpClient::new(&kassa.sandbox_url())
        .send(method, path, &headers, body)
        .await
        .unwrap_or_else(|error| panic!("sandbox {method} {path}: {error}"));
    expect_status(&response, 200, path)
}
