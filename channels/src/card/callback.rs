//! Inbound callbacks of the card channel: `POST /callbacks/card` on Kassa.
//!
//! The provider reports a charge's final state asynchronously (and may repeat itself, or be
//! late): `{"type": "charge.updated", "charge": {…the charge as GET returns it…}, "sent_at": …}`,
//! signed with `Sandbox-Signature: t=<unix>,v1=<hex HMAC-SHA256(api_secret,
//! "{t}.POST.{path}.{body}")>` — the same scheme as Kassa's requests to it, with `path` the
//! callback URL's path. Decoding verifies the signature first and never echoes the body.

use serde::Deserialize;

use super::ResolvedCharge;
use super::signature::{self, SignatureError};
use super::transformers::ChargeResponse;

/// The event types this decoder understands.
const CHARGE_UPDATED: &str = "charge.updated";

/// A verified report of one charge's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackReport {
    /// Kassa's key for the charge: the order id.
    pub idempotency_key: String,
    pub charge: ResolvedCharge,
}

#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("callback signature: {0}")]
    Signature(#[from] SignatureError),
    #[error("callback body is not a charge report: {0}")]
    Unreadable(String),
    #[error("callback type {0:?} is not handled")]
    UnknownType(String),
}

#[derive(Deserialize)]
struct Body {
    #[serde(rename = "type")]
    kind: String,
    charge: Charge,
}

#[derive(Deserialize)]
struct Charge {
    idempotency_key: String,
    #[serde(flatten)]
    charge: ChargeResponse,
}

/// Verifies and decodes one callback received at `path` (e.g. `/callbacks/card`).
pub fn decode(
    base_url: &str,
    secret: &[u8],
    signature_header: Option<&str>,
    path: &str,
    body: &[u8],
    now_s: u64,
) -> Result<CallbackReport, CallbackError> {
    signature::verify(secret, signature_header, "POST", path, body, now_s)?;
    let parsed: Body = serde_json::from_slice(body).map_err(|e| {
        CallbackError::Unreadable(format!(
            "line {} column {}: {:?}",
            e.line(),
            e.column(),
            e.classify()
        ))
    })?;
    if parsed.kind != CHARGE_UPDATED {
        let shown: String = parsed.kind.chars().take(40).collect();
        return Err(CallbackError::UnknownType(shown));
    }
    let charge = parsed
        .charge
        .charge
        .into_resolved(base_url)
        .map_err(|e| CallbackError::Unreadable(e.to_string()))?;
    Ok(CallbackReport {
        idempotency_key: parsed.charge.idempotency_key,
        charge,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::ChargeOutcome;

    const SECRET: &[u8] = b"callback-test-secret";

    fn body(status: &str) -> Vec<u8> {
        format!(
            r#"{{"type":"charge.updated","sent_at":1,"charge":{{"charge_id":"ch_1","idempotency_key":"pay_1",
            "status":"{status}","decline_code":{},"amount_minor":1000,"captured_minor":1000,
            "refunded_minor":0,"currency":"USD","voided":false}}}}"#,
            if status == "declined" { "\"card_declined\"" } else { "null" }
        )
        .into_bytes()
    }

    fn signed(body: &[u8], now: u64) -> String {
        signature::header_value(SECRET, now, "POST", "/callbacks/card", body)
    }

    #[test]
    fn a_signed_report_decodes_to_the_charge_outcome() {
        let b = body("succeeded");
        let report = decode(
            "http://sandbox",
            SECRET,
            Some(&signed(&b, 1_000)),
            "/callbacks/card",
            &b,
            1_000,
        )
        .unwrap();
        assert_eq!(report.idempotency_key, "pay_1");
        assert_eq!(
            report.charge.outcome,
            ChargeOutcome::Succeeded {
                provider_ref: "ch_1".into()
            }
        );
        let b = body("declined");
        let report = decode(
            "http://sandbox",
            SECRET,
            Some(&signed(&b, 1_000)),
            "/callbacks/card",
            &b,
            1_000,
        )
        .unwrap();
        assert!(matches!(
            report.charge.outcome,
            ChargeOutcome::Declined { .. }
        ));
    }

    #[test]
    fn a_reversal_is_reported_and_an_older_provider_reports_none() {
        let older = body("succeeded");
        let report = decode(
            "http://sandbox",
            SECRET,
            Some(&signed(&older, 1_000)),
            "/callbacks/card",
            &older,
            1_000,
        )
        .unwrap();
        assert!(
            !report.charge.reversed,
            "no `reversed` field means not reversed"
        );
        let reversed = String::from_utf8(body("succeeded"))
            .unwrap()
            .replace(r#""voided":false"#, r#""voided":false,"reversed":true"#)
            .into_bytes();
        let report = decode(
            "http://sandbox",
            SECRET,
            Some(&signed(&reversed, 1_000)),
            "/callbacks/card",
            &reversed,
            1_000,
        )
        .unwrap();
        assert!(report.charge.reversed);
        assert_eq!(report.charge.captured_minor, 1_000);
    }

    #[test]
    fn unsigned_tampered_stale_and_foreign_reports_are_refused() {
        let b = body("succeeded");
        let header = signed(&b, 1_000);
        assert!(matches!(
            decode("http://sandbox", SECRET, None, "/callbacks/card", &b, 1_000),
            Err(CallbackError::Signature(_))
        ));
        let mut tampered = b.clone();
        tampered[20] ^= 1;
        assert!(
            decode(
                "http://sandbox",
                SECRET,
                Some(&header),
                "/callbacks/card",
                &tampered,
                1_000
            )
            .is_err()
        );
        assert!(
            decode(
                "http://sandbox",
                SECRET,
                Some(&header),
                "/callbacks/card",
                &b,
                10_000
            )
            .is_err()
        );
        assert!(
            decode(
                "http://sandbox",
                b"other",
                Some(&header),
                "/callbacks/card",
                &b,
                1_000
            )
            .is_err()
        );
        assert!(
            decode(
                "http://sandbox",
                SECRET,
                Some(&header),
                "/callbacks/other",
                &b,
                1_000
            )
            .is_err()
        );
    }
}
