//! The sandbox's HTTP surface seen raw: signatures, JSON errors, routes, and no card data out.

mod common;

use common::{
    SECRET, channel_for, charge_request, fast_config, raw_request, signed_request, start_sandbox,
};
use hyper::{Method, StatusCode};
use kassa_channels::card::signature;
use kassa_channels::{CardChannel, ChannelAdapter, ChannelError};

const CHARGE_BODY: &str = r#"{"idempotency_key":"raw-1","amount_minor":500,"currency":"USD","pan":"4242424242424242","exp_month":12,"exp_year":2030,"cvc":"987","capture":true}"#;

#[tokio::test]
async fn a_bad_signature_is_a_401_and_charges_nothing() {
    let sandbox = start_sandbox(0, None).await;
    let base = sandbox.base_url();
    let path = "/card/v1/charges";
    let now = signature::now_unix_s();

    let wrong_secret =
        signature::header_value(b"not-the-secret", now, "POST", path, CHARGE_BODY.as_bytes());
    let tampered = signature::header_value(SECRET.as_bytes(), now, "POST", path, b"{}");
    let stale = signature::header_value(
        SECRET.as_bytes(),
        now - 301,
        "POST",
        path,
        CHARGE_BODY.as_bytes(),
    );
    for header in [
        Some(wrong_secret),
        Some(tampered),
        Some(stale),
        Some("garbage".to_owned()),
        None,
    ] {
        let (status, body) =
            raw_request(&base, Method::POST, path, CHARGE_BODY, header.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{header:?}: {body}");
        assert_eq!(body["error"]["code"], "invalid_signature");
    }

    // The adapter with the wrong secret sees a non-retryable rejection.
    let adapter = ChannelAdapter::new(&base, "wrong", fast_config()).expect("valid adapter");
    let result = CardChannel::new(adapter)
        .charge(&charge_request("raw-2", "4242424242424242", 500, true))
        .await;
    assert_eq!(
        result,
        Err(ChannelError::Rejected {
            status: 401,
            code: "invalid_signature".into()
        })
    );

    let ledger = common::ledger(&base).await;
    assert_eq!(ledger["charges"].as_array().map(Vec::len), Some(0));

    // The correctly signed request goes through.
    let (status, body) = signed_request(&base, Method::POST, path, CHARGE_BODY).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "succeeded");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn malformed_requests_and_unknown_routes_get_json_errors() {
    let sandbox = start_sandbox(0, None).await;
    let base = sandbox.base_url();

    let (status, body) = signed_request(&base, Method::POST, "/card/v1/charges", "{not json").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_json"))
    );

    // A schema error must not echo the card number back.
    let (status, body) = signed_request(
        &base,
        Method::POST,
        "/card/v1/charges",
        r#"{"pan":4242424242424242}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(!body.to_string().contains("4242424242424242"), "{body}");

    let (status, body) = signed_request(&base, Method::GET, "/card/v1/nothing", "").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("route_not_found"))
    );

    let (status, body) =
        signed_request(&base, Method::GET, "/card/v1/charges/ch_missing", "").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("charge_not_found"))
    );

    let (status, body) = raw_request(&base, Method::GET, "/healthz", "", None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn no_answer_and_no_ledger_row_contains_the_pan_or_cvc() {
    let sandbox = start_sandbox(0, None).await;
    let base = sandbox.base_url();
    let (status, charge) =
        signed_request(&base, Method::POST, "/card/v1/charges", CHARGE_BODY).await;
    assert_eq!(status, StatusCode::OK, "{charge}");
    assert_eq!(charge["card"]["bin"], "424242");
    assert_eq!(charge["card"]["last4"], "4242");

    let channel = channel_for(&base, fast_config());
    channel
        .charge(&charge_request("raw-3", "5555555555554444", 100, true))
        .await
        .expect("an answer");

    let ledger = common::ledger(&base).await.to_string();
    for secret in [
        "4242424242424242",
        "5555555555554444",
        "\"987\"",
        "\"cvc\"",
        "\"pan\"",
    ] {
        assert!(
            !ledger.contains(secret),
            "the ledger leaks {secret}: {ledger}"
        );
        assert!(
            !charge.to_string().contains(secret),
            "the answer leaks {secret}"
        );
    }
    sandbox.shutdown().await;
}
