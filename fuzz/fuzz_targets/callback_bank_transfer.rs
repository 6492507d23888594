//! The `bank_transfer` channel's inbound callback (`kassa_channels::inbound::decode`): a JSON
//! `transfer.settled` / `transfer.rejected` event signed by `Bank-Timestamp` and
//! `Bank-Signature: v1=<hex>` over the method, the path and the body's SHA-256.
//!
//! Input: the first two lines are the `Bank-Timestamp` and `Bank-Signature` values, the rest
//! the body. Each input is decoded as given (no panic) and signed correctly (the decoder
//! reaches the event parser). Beyond "no panic": a signed body is never refused for its
//! signature; another secret, a stale time or a flipped body byte is refused; an accepted
//! report is a known event type and holds together (a positive amount, returns within it, a
//! rejected transfer has a reason).
#![no_main]

use http::{HeaderMap, HeaderValue};
use kassa_channels::bank_transfer::signature::{
    SIGNATURE_HEADER, TIMESTAMP_HEADER, signature, signing_key,
};
use kassa_channels::inbound::{BANK_EVENT_TYPES, InboundError, decode};
use kassa_channels::outcome::AsyncStatus;
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"bank_secret_fuzz";
const PATH: &str = "/callbacks/bank_transfer";
const NOW_S: u64 = 1_795_000_000;

fn signed_headers(secret: &[u8], timestamp_s: u64, body: &[u8]) -> HeaderMap {
    let value = signature(&signing_key(secret), timestamp_s, "POST", PATH, body);
    let mut headers = HeaderMap::new();
    headers.insert(TIMESTAMP_HEADER, HeaderValue::from(timestamp_s));
    headers.insert(SIGNATURE_HEADER, HeaderValue::from_str(&value).unwrap());
    headers
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.splitn(3, |b| *b == b'\n');
    let (timestamp, signature_value, body) = match (lines.next(), lines.next(), lines.next()) {
        (Some(t), Some(s), Some(body)) => (t, s, body),
        _ => (&[][..], &[][..], data),
    };
    let mut given = HeaderMap::new();
    for (name, value) in [
        (TIMESTAMP_HEADER, timestamp),
        (SIGNATURE_HEADER, signature_value),
    ] {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            given.insert(name, value);
        }
    }
    let _ = decode("bank_transfer", SECRET, &given, PATH, body, NOW_S);
    let _ = decode("bank_transfer", SECRET, &given, PATH, body, u64::MAX);

    let headers = signed_headers(SECRET, NOW_S, body);
    match decode("bank_transfer", SECRET, &headers, PATH, body, NOW_S) {
        Err(e) => assert!(!e.is_signature(), "a signed body was refused: {e}"),
        Ok(payment) => {
            // Lossy: the decoder skips unknown fields without checking their UTF-8.
            let text = String::from_utf8_lossy(body);
            let json: serde_json::Value = serde_json::from_str(&text).expect("accepted is JSON");
            let event_type = json["event_type"].as_str().unwrap_or_default();
            assert!(BANK_EVENT_TYPES.contains(&event_type));
            assert_eq!(
                json["transfer"]["end_to_end_id"],
                payment.idempotency_key.as_str()
            );
            assert!(payment.amount_minor > 0);
            assert!((0..=payment.amount_minor).contains(&payment.refunded_minor));
            if let AsyncStatus::Failed { code, .. } = &payment.status {
                assert!(!code.is_empty());
            }
        }
    }
    let refused =
        |result: Result<_, InboundError>| matches!(result, Err(InboundError::Signature(_)));
    assert!(refused(decode(
        "bank_transfer",
        b"other",
        &headers,
        PATH,
        body,
        NOW_S
    )));
    assert!(refused(decode(
        "bank_transfer",
        SECRET,
        &headers,
        PATH,
        body,
        NOW_S + 301
    )));
    assert!(refused(decode(
        "bank_transfer",
        SECRET,
        &headers,
        "/callbacks/bank",
        body,
        NOW_S
    )));
    if let Some(&pick) = body.first() {
        let mut tampered = body.to_vec();
        let at = usize::from(pick).wrapping_mul(13) % tampered.len();
        tampered[at] ^= 1 << (pick % 8);
        assert!(refused(decode(
            "bank_transfer",
            SECRET,
            &headers,
            PATH,
            &tampered,
            NOW_S
        )));
    }
});
