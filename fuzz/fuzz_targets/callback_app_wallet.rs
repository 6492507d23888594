//! The `app_wallet` channel's inbound callback (`kassa_channels::inbound::decode`): a JSON
//! event signed by `Wechatpay-Timestamp`/`-Nonce`/`-Signature`, whose `resource` is an
//! AES-256-GCM-sealed transaction.
//!
//! Input: one mode byte, then
//! - `T`: a transaction's JSON (the plaintext): sealed, wrapped in a `TRANSACTION.SUCCESS`
//!   event and signed, so the decoder reaches the transaction parser;
//! - `E`: an event's JSON: signed, so the decoder reaches the event parser and the AEAD;
//! - anything else: three header lines (timestamp, nonce, signature) and a body, as given.
//!
//! Beyond "no panic": correctly signed input is never refused for its signature, and a sealed
//! resource always opens; another secret, a stale time, a flipped body byte or a flipped
//! ciphertext byte (re-signed) are refused; an accepted report holds together.
#![no_main]

use http::{HeaderMap, HeaderValue};
use kassa_channels::app_wallet::signature::{
    NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, aead_key, seal, signature, signing_key,
};
use kassa_channels::inbound::{InboundError, decode};
use kassa_channels::signing::SignatureError;
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"app_secret_fuzz";
const PATH: &str = "/callbacks/app_wallet";
const NOW_S: u64 = 1_795_000_000;
const NONCE: &str = "5f2b8c0d4e6a1b3c5f2b8c0d4e6a1b3c";
const AEAD_NONCE: &str = "0123456789ab";

fn signed_headers(secret: &[u8], timestamp_s: u64, body: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let value = signature(&signing_key(secret), timestamp_s, NONCE, "POST", PATH, body);
    headers.insert(TIMESTAMP_HEADER, HeaderValue::from(timestamp_s));
    headers.insert(NONCE_HEADER, HeaderValue::from_static(NONCE));
    headers.insert(SIGNATURE_HEADER, HeaderValue::from_str(&value).unwrap());
    headers
}

fn event(ciphertext: &str) -> Vec<u8> {
    serde_json::json!({
        "id": "evt_1",
        "create_time": "2026-11-18T10:00:00+08:00",
        "event_type": "TRANSACTION.SUCCESS",
        "resource_type": "encrypt-resource",
        "summary": "paid",
        "resource": {
            "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": ciphertext,
            "nonce": AEAD_NONCE,
            "associated_data": "transaction",
        },
    })
    .to_string()
    .into_bytes()
}

/// Decodes `body` signed correctly; checks what must hold of any signed body.
fn decode_signed(body: &[u8]) -> Result<kassa_channels::AsyncPayment, InboundError> {
    let headers = signed_headers(SECRET, NOW_S, body);
    let result = decode("app_wallet", SECRET, &headers, PATH, body, NOW_S);
    assert!(
        !matches!(result, Err(InboundError::Signature(_))),
        "a signed body was refused: {result:?}"
    );
    if let Ok(payment) = &result {
        assert!(payment.amount_minor > 0);
        assert!((0..=payment.amount_minor).contains(&payment.refunded_minor));
    }
    let refused =
        |result: Result<_, InboundError>| matches!(result, Err(InboundError::Signature(_)));
    assert!(refused(decode(
        "app_wallet",
        b"other",
        &headers,
        PATH,
        body,
        NOW_S
    )));
    assert!(refused(decode(
        "app_wallet",
        SECRET,
        &headers,
        PATH,
        body,
        NOW_S + 301
    )));
    if let Some(&pick) = body.first() {
        let mut tampered = body.to_vec();
        let at = usize::from(pick).wrapping_mul(17) % tampered.len();
        tampered[at] ^= 0x04;
        assert!(refused(decode(
            "app_wallet",
            SECRET,
            &headers,
            PATH,
            &tampered,
            NOW_S
        )));
    }
    result
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode {
        b'T' => {
            let sealed = seal(&aead_key(SECRET), AEAD_NONCE, "transaction", rest).unwrap();
            let result = decode_signed(&event(&sealed));
            assert!(
                !matches!(result, Err(InboundError::Decrypt(_))),
                "a sealed resource did not open"
            );
            if let Ok(payment) = &result {
                // Lossy: the decoder skips unknown fields without checking their UTF-8.
                let text = String::from_utf8_lossy(rest);
                let plain: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(plain["out_trade_no"], payment.idempotency_key.as_str());
            }
            // A flipped ciphertext character, correctly signed: never accepted.
            let pick = rest.first().copied().unwrap_or(0);
            let mut flipped = sealed.into_bytes();
            let at = usize::from(pick) % flipped.len();
            flipped[at] ^= 1 << (pick % 7);
            if let Ok(flipped) = String::from_utf8(flipped) {
                assert!(decode_signed(&event(&flipped)).is_err());
            }
        }
        b'E' => {
            let _ = decode_signed(rest);
        }
        _ => {
            let mut lines = data.splitn(4, |b| *b == b'\n');
            let (Some(timestamp), Some(nonce), Some(signature), Some(body)) =
                (lines.next(), lines.next(), lines.next(), lines.next())
            else {
                return;
            };
            let mut headers = HeaderMap::new();
            for (name, value) in [
                (TIMESTAMP_HEADER, timestamp),
                (NONCE_HEADER, nonce),
                (SIGNATURE_HEADER, signature),
            ] {
                if let Ok(value) = HeaderValue::from_bytes(value) {
                    headers.insert(name, value);
                }
            }
            let result = decode("app_wallet", SECRET, &headers, PATH, body, NOW_S);
            // A header missing (or not text, which the checks may meet first) is refused
            // before anything else is read.
            if headers.len() < 3 {
                assert!(
                    matches!(
                        result,
                        Err(InboundError::Signature(
                            SignatureError::Missing | SignatureError::Malformed
                        ))
                    ),
                    "{result:?}"
                );
            }
        }
    }
});
