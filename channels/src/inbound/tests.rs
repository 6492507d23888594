use hyper::header::HeaderValue;
use serde_json::json;

use super::*;
use crate::outcome::{AsyncStatus, PAYMENT_DECLINED};

const SECRET: &[u8] = b"inbound-test-secret";
const NOW: u64 = 1_700_000_000;

fn qr_form(status: &str, fail_code: Option<&str>) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("notify_type", QR_NOTIFY_TYPE)
        .append_pair("notify_id", "evt_1")
        .append_pair("trade_no", "qr_1")
        .append_pair("out_trade_no", "pay_1")
        .append_pair("trade_status", status)
        .append_pair("total_amount_minor", "1200")
        .append_pair("currency", "CNY")
        .append_pair("refund_amount_minor", "0");
    if let Some(code) = fail_code {
        form.append_pair("fail_code", code);
    }
    let key = qr_signature::signing_key(SECRET);
    qr_signature::sign_form(&key, form.finish().as_bytes(), NOW).unwrap()
}

#[test]
fn qr_callbacks_decode_and_tampering_is_refused() {
    let paid = qr_form("TRADE_SUCCESS", None);
    let payment = decode(
        "qr_wallet",
        SECRET,
        &HeaderMap::new(),
        "/cb",
        paid.as_bytes(),
        NOW,
    )
    .expect("a signed callback");
    assert_eq!(payment.provider_ref, "qr_1");
    assert_eq!(payment.idempotency_key, "pay_1");
    assert_eq!(payment.status, AsyncStatus::Succeeded);

    let declined = qr_form("TRADE_CLOSED", Some(PAYMENT_DECLINED));
    let payment = decode(
        "qr_wallet",
        SECRET,
        &HeaderMap::new(),
        "/cb",
        declined.as_bytes(),
        NOW,
    )
    .expect("a signed callback");
    assert!(
        matches!(payment.status, AsyncStatus::Failed { ref code, .. } if code == PAYMENT_DECLINED)
    );

    let tampered = paid.replace("1200", "9200");
    assert_eq!(
        decode(
            "qr_wallet",
            SECRET,
            &HeaderMap::new(),
            "/cb",
            tampered.as_bytes(),
            NOW
        ),
        Err(InboundError::Signature(SignatureError::Mismatch))
    );
    assert_eq!(
        decode(
            "qr_wallet",
            b"wrong",
            &HeaderMap::new(),
            "/cb",
            paid.as_bytes(),
            NOW
        ),
        Err(InboundError::Signature(SignatureError::Mismatch))
    );
    assert!(matches!(
        decode(
            "qr_wallet",
            SECRET,
            &HeaderMap::new(),
            "/cb",
            paid.as_bytes(),
            NOW + 3_600
        ),
        Err(InboundError::Signature(SignatureError::Stale))
    ));
}

fn app_callback(
    secret: &[u8],
    path: &str,
    transaction: &serde_json::Value,
) -> (HeaderMap, Vec<u8>) {
    let aead_key = app_signature::aead_key(secret);
    let ciphertext = app_signature::seal(
        &aead_key,
        "abcdefghijkl",
        "transaction",
        transaction.to_string().as_bytes(),
    )
    .unwrap();
    let body = json!({
        "id": "evt_1",
        "create_time": NOW.to_string(),
        "event_type": "TRANSACTION.SUCCESS",
        "resource_type": "encrypt-resource",
        "summary": "paid",
        "resource": {
            "algorithm": AEAD_ALGORITHM,
            "ciphertext": ciphertext,
            "nonce": "abcdefghijkl",
            "associated_data": "transaction",
        },
    })
    .to_string()
    .into_bytes();
    let key = app_signature::signing_key(secret);
    let signature = app_signature::signature(&key, NOW, "n0nce", "POST", path, &body);
    let mut headers = HeaderMap::new();
    headers.insert(app_signature::TIMESTAMP_HEADER, HeaderValue::from(NOW));
    headers.insert(
        app_signature::NONCE_HEADER,
        HeaderValue::from_static("n0nce"),
    );
    headers.insert(
        app_signature::SIGNATURE_HEADER,
        HeaderValue::from_str(&signature).unwrap(),
    );
    (headers, body)
}

#[test]
fn app_callbacks_decrypt_and_tampering_is_refused() {
    let transaction = json!({
        "prepay_id": "wx_1", "out_trade_no": "pay_2", "trade_state": "SUCCESS",
        "amount": {"total": 500, "currency": "CNY", "refunded": 0},
    });
    let (headers, body) = app_callback(SECRET, "/callbacks/app_wallet", &transaction);
    let payment = decode(
        "app_wallet",
        SECRET,
        &headers,
        "/callbacks/app_wallet",
        &body,
        NOW,
    )
    .expect("a signed, sealed callback");
    assert_eq!(payment.provider_ref, "wx_1");
    assert_eq!(payment.status, AsyncStatus::Succeeded);
    assert_eq!(payment.amount_minor, 500);

    // Signed elsewhere, or with another secret.
    assert!(matches!(
        decode(
            "app_wallet",
            SECRET,
            &headers,
            "/callbacks/other",
            &body,
            NOW
        ),
        Err(InboundError::Signature(SignatureError::Mismatch))
    ));
    assert!(matches!(
        decode(
            "app_wallet",
            b"wrong",
            &headers,
            "/callbacks/app_wallet",
            &body,
            NOW
        ),
        Err(InboundError::Signature(SignatureError::Mismatch))
    ));
    // Sealed under another key but signed correctly: the resource does not open.
    let (foreign_headers, foreign_body) = {
        let aead_key = app_signature::aead_key(b"someone else");
        let ciphertext =
            app_signature::seal(&aead_key, "abcdefghijkl", "transaction", b"{}").unwrap();
        let body = json!({"id":"e","event_type":"TRANSACTION.SUCCESS","resource":{
            "algorithm": AEAD_ALGORITHM, "ciphertext": ciphertext, "nonce": "abcdefghijkl",
            "associated_data": "transaction"}})
        .to_string()
        .into_bytes();
        let key = app_signature::signing_key(SECRET);
        let signature = app_signature::signature(&key, NOW, "n", "POST", "/cb", &body);
        let mut headers = HeaderMap::new();
        headers.insert(app_signature::TIMESTAMP_HEADER, HeaderValue::from(NOW));
        headers.insert(app_signature::NONCE_HEADER, HeaderValue::from_static("n"));
        headers.insert(
            app_signature::SIGNATURE_HEADER,
            HeaderValue::from_str(&signature).unwrap(),
        );
        (headers, body)
    };
    let error = decode(
        "app_wallet",
        SECRET,
        &foreign_headers,
        "/cb",
        &foreign_body,
        NOW,
    )
    .expect_err("sealed under another key");
    assert_eq!(error, InboundError::Decrypt(AeadError::Open));
    assert!(error.is_signature(), "not authentic: a 401");
    assert!(!InboundError::UnknownEvent.is_signature());
    assert!(!InboundError::Unreadable(String::new()).is_signature());
}

#[test]
fn bank_callbacks_decode_and_unknown_channels_are_refused() {
    let body = json!({
        "event_id": "evt_9", "event_type": "transfer.rejected", "sent_at": NOW,
        "transfer": {"transfer_id": "bt_1", "end_to_end_id": "pay_3", "status": "rejected",
                     "reason_code": "account_closed", "amount_minor": 1013,
                     "currency": "EUR", "returned_minor": 0},
    })
    .to_string()
    .into_bytes();
    let key = bank_signature::signing_key(SECRET);
    let signature = bank_signature::signature(&key, NOW, "POST", "/callbacks/bank_transfer", &body);
    let mut headers = HeaderMap::new();
    headers.insert(bank_signature::TIMESTAMP_HEADER, HeaderValue::from(NOW));
    headers.insert(
        bank_signature::SIGNATURE_HEADER,
        HeaderValue::from_str(&signature).unwrap(),
    );
    let payment = decode(
        "bank_transfer",
        SECRET,
        &headers,
        "/callbacks/bank_transfer",
        &body,
        NOW,
    )
    .expect("a signed callback");
    assert!(
        matches!(payment.status, AsyncStatus::Failed { ref code, .. } if code == "account_closed")
    );
    assert_eq!(
        decode("card", SECRET, &headers, "/callbacks/card", &body, NOW),
        Err(InboundError::UnknownChannel)
    );
    let mut tampered = body.clone();
    tampered[10] ^= 1;
    assert!(matches!(
        decode(
            "bank_transfer",
            SECRET,
            &headers,
            "/callbacks/bank_transfer",
            &tampered,
            NOW
        ),
        Err(InboundError::Signature(_))
    ));
}

#[test]
fn errors_never_quote_the_body() {
    // Signed, but the trade's amount is not a number and carries a marker.
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("notify_type", QR_NOTIFY_TYPE)
        .append_pair("trade_no", "qr_1")
        .append_pair("out_trade_no", "SECRET-MARKER")
        .append_pair("trade_status", "TRADE_SUCCESS")
        .append_pair("total_amount_minor", "SECRET-MARKER")
        .append_pair("currency", "CNY")
        .append_pair("refund_amount_minor", "0");
    let key = qr_signature::signing_key(SECRET);
    let signed = qr_signature::sign_form(&key, form.finish().as_bytes(), NOW).unwrap();
    let error = decode(
        "qr_wallet",
        SECRET,
        &HeaderMap::new(),
        "/cb",
        signed.as_bytes(),
        NOW,
    )
    .expect_err("not a number");
    assert!(!error.to_string().contains("SECRET-MARKER"), "{error}");
    assert_eq!(
        acknowledgement("qr_wallet"),
        ("text/plain", &b"success"[..])
    );
    assert_eq!(acknowledgement("app_wallet").1, br#"{"code":"SUCCESS"}"#);
}
