//! Kassa's webhook signature (DESIGN.md §4 "Merchant callbacks"): the scheme Stripe uses, so
//! existing verifiers work.
//!
//! `Kassa-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(webhook_secret, "{t}.{body}")>`.
//! Kassa signs with [`webhook_signature`]; a receiver checks with [`verify_webhook`], which
//! follows `stripe.Webhook.construct_event`: split the header on `,`, take `t=` and every
//! `v1=`, compare in constant time, and refuse a timestamp older than the tolerance.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header Kassa signs its callbacks with.
pub const SIGNATURE_HEADER: &str = "Kassa-Signature";
/// The header carrying the event id (the same as the body's `id`), for dedupe.
pub const EVENT_ID_HEADER: &str = "Kassa-Event-Id";
/// How old a signature's timestamp may be before a receiver refuses it (Stripe's default).
pub const WEBHOOK_TOLERANCE_S_DEFAULT: i64 = 300;
/// `v1=` entries one header may carry (more is not a Kassa header).
const SIGNATURES_PER_HEADER_MAX: usize = 8;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("the signature header has no t= timestamp")]
    NoTimestamp,
    #[error("the signature header has no v1= signature")]
    NoSignature,
    #[error("no v1= signature matches the body")]
    Mismatch,
    #[error("the signature's timestamp is {age_s} s old (tolerance {tolerance_s} s)")]
    TooOld { age_s: i64, tolerance_s: i64 },
}

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `Kassa-Signature` value for `body` sent at `timestamp` (unix seconds).
pub fn webhook_signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let digest = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(digest))
}

/// Checks a `Kassa-Signature` header against the raw `body`; returns its timestamp. Refuses a
/// timestamp more than `tolerance_s` before `now_s`; the comparison is constant time.
pub fn verify_webhook(
    secret: &str,
    header: &str,
    body: &[u8],
    now_s: i64,
    tolerance_s: i64,
) -> Result<i64, WebhookError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        let Some((key, value)) = item.trim().split_once('=') else {
            continue;
        };
        match key {
            "t" => timestamp = value.parse::<i64>().ok(),
            "v1" if signatures.len() < SIGNATURES_PER_HEADER_MAX => {
                if let Ok(bytes) = hex::decode(value) {
                    signatures.push(bytes);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(WebhookError::NoTimestamp)?;
    if signatures.is_empty() {
        return Err(WebhookError::NoSignature);
    }
    let expected = mac(secret, timestamp, body);
    // `verify_slice` compares in constant time.
    if !signatures
        .iter()
        .any(|candidate| expected.clone().verify_slice(candidate).is_ok())
    {
        return Err(WebhookError::Mismatch);
    }
    let age_s = now_s.saturating_sub(timestamp);
    if age_s > tolerance_s {
        return Err(WebhookError::TooOld { age_s, tolerance_s });
    }
    Ok(timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_reference_hmac() {
        // Reference: printf '1700000000.{"id":"evt_1"}' | openssl dgst -sha256 -hmac whsec_test
        let header = webhook_signature("whsec_test", 1_700_000_000, br#"{"id":"evt_1"}"#);
        assert_eq!(
            header,
            "t=1700000000,v1=c89214b5b5da833daed6f0b8c5bb6bd58cea9022bd80ccc78230f3942d632925",
            "signature of a fixed input changed"
        );
    }

    #[test]
    fn verifies_its_own_signature_and_refuses_tampering() {
        let body = br#"{"id":"evt_1","type":"payment.succeeded"}"#;
        let header = webhook_signature("whsec_a", 1_000, body);
        assert_eq!(
            verify_webhook("whsec_a", &header, body, 1_000, 300),
            Ok(1_000)
        );
        assert_eq!(
            verify_webhook("whsec_a", &header, body, 1_300, 300),
            Ok(1_000)
        );
        assert_eq!(
            verify_webhook("whsec_b", &header, body, 1_000, 300),
            Err(WebhookError::Mismatch)
        );
        assert_eq!(
            verify_webhook("whsec_a", &header, b"{}", 1_000, 300),
            Err(WebhookError::Mismatch)
        );
        assert_eq!(
            verify_webhook("whsec_a", &header, body, 1_301, 300),
            Err(WebhookError::TooOld {
                age_s: 301,
                tolerance_s: 300
            })
        );
        // A replayed signature with a fresher timestamp does not match.
        let forged = header.replace("t=1000", "t=1200");
        assert_eq!(
            verify_webhook("whsec_a", &forged, body, 1_200, 300),
            Err(WebhookError::Mismatch)
        );
    }

    #[test]
    fn accepts_any_matching_v1_among_several_and_needs_both_parts() {
        let body = b"{}";
        let good = webhook_signature("whsec_a", 5, body);
        let v1 = good
            .split_once(",v1=")
            .map(|(_, v1)| v1)
            .unwrap_or_default();
        let rotated = format!("t=5, v1={}, v1={v1}, v0=ignored", "00".repeat(32));
        assert_eq!(verify_webhook("whsec_a", &rotated, body, 5, 300), Ok(5));
        assert_eq!(
            verify_webhook("whsec_a", &format!("v1={v1}"), body, 5, 300),
            Err(WebhookError::NoTimestamp)
        );
        assert_eq!(
            verify_webhook("whsec_a", "t=5", body, 5, 300),
            Err(WebhookError::NoSignature)
        );
    }
}
