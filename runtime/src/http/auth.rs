//! Who is asking: merchants sign every request (DESIGN.md §4); operators bring the admin token.

use std::sync::Arc;

use http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::crypto::hmac_sha256;
use crate::http::error::ApiError;
use crate::merchants::{Merchant, Merchants};

/// Longest signature header worth reading (`v1=` + 64 hex, with room for a second scheme).
const SIGNATURE_HEADER_BYTES_MAX: usize = 512;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Verifies `Kassa-Merchant`, `Kassa-Timestamp` and `Kassa-Signature` over the raw request.
///
/// The signature is checked against the merchant's secret, then against its previous secret
/// while a rotation's overlap lasts (`now_ms` before its expiry); each comparison is constant
/// time. A signature that matches neither is checked once more against the merchant as the
/// store has it now, when the cached copy is old enough (a rotation on another node).
pub async fn merchant(
    merchants: &Merchants,
    headers: &HeaderMap,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    now_ms: i64,
    window_s: i64,
) -> Result<Arc<Merchant>, ApiError> {
    let (Some(merchant_id), Some(timestamp), Some(signature)) = (
        header(headers, "kassa-merchant"),
        header(headers, "kassa-timestamp"),
        header(headers, "kassa-signature"),
    ) else {
        return Err(ApiError::unauthorized(
            "missing_credentials",
            "Kassa-Merchant, Kassa-Timestamp and Kassa-Signature headers are required",
        ));
    };
    timestamp_in_window(timestamp, now_ms.div_euclid(1_000), window_s)?;
    let refused =
        || ApiError::unauthorized("invalid_signature", "the request signature does not verify");
    if signature.len() > SIGNATURE_HEADER_BYTES_MAX || merchant_id.len() > 64 {
        return Err(refused());
    }
    let lookup_failed = |e: crate::merchants::MerchantError| {
        tracing::error!(error = %e, "merchant lookup failed");
        ApiError::unavailable("overloaded", "Kassa is busy; retry shortly")
    };
    let verifies = |merchant: &Merchant| {
        let matches = |secret: &kassa_channels::secret::Secret<String>| {
            signature_matches(
                secret.expose().as_bytes(),
                signature,
                timestamp,
                method,
                path_and_query,
                body,
            )
        };
        matches(&merchant.secret) || merchant.previous_secret_at(now_ms).is_some_and(matches)
    };
    let merchant = match merchants.get(merchant_id).await {
        Ok(Some(m)) => m,
        Ok(None) => return Err(refused()),
        Err(e) => return Err(lookup_failed(e)),
    };
    if verifies(&merchant) {
        return Ok(merchant);
    }
    match merchants.refresh_after_failure(merchant_id).await {
        Ok(Some(fresh)) if verifies(&fresh) => Ok(fresh),
        Ok(_) => Err(refused()),
        Err(e) => Err(lookup_failed(e)),
    }
}

/// `Kassa-Timestamp` as unix seconds, at most `window_s` away from `now_s`. Pure, so it can be
/// fuzzed; any i64 is parsed, so the distance is computed without overflow.
pub fn timestamp_in_window(timestamp: &str, now_s: i64, window_s: i64) -> Result<i64, ApiError> {
    let ts: i64 = timestamp.parse().map_err(|_| {
        ApiError::unauthorized(
            "timestamp_out_of_window",
            "Kassa-Timestamp must be unix seconds",
        )
    })?;
    let too_far = match u64::try_from(window_s) {
        Ok(window) => now_s.abs_diff(ts) > window,
        Err(_) => true,
    };
    if too_far {
        return Err(ApiError::unauthorized(
            "timestamp_out_of_window",
            format!("Kassa-Timestamp is more than {window_s} s away from the server's clock"),
        ));
    }
    Ok(ts)
}

/// Whether any `v1=` entry of the `Kassa-Signature` header is
/// `HMAC-SHA256(secret, "{timestamp}.{METHOD}.{path_and_query}.{body}")`, compared in
/// constant time. Pure (no merchant lookup), so it can be fuzzed.
pub fn signature_matches(
    secret: &[u8],
    signature: &str,
    timestamp: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> bool {
    let expected = hmac_sha256(
        secret,
        &[
            timestamp.as_bytes(),
            b".",
            method.as_bytes(),
            b".",
            path_and_query.as_bytes(),
            b".",
            body,
        ],
    );
    signature
        .split(',')
        .filter_map(|part| part.trim().strip_prefix("v1="))
        .filter_map(|hex_sig| hex::decode(hex_sig).ok())
        .any(|given| bool::from(given.as_slice().ct_eq(&expected)))
}

/// `Authorization: Bearer <admin token>`, compared in constant time. An empty configured
/// token disables the admin API.
pub fn admin(headers: &HeaderMap, token: &str) -> Result<(), ApiError> {
    let given = header(headers, "authorization").and_then(|v| v.strip_prefix("Bearer "));
    let ok = match given {
        Some(given) if !token.is_empty() => bool::from(given.as_bytes().ct_eq(token.as_bytes())),
        Some(_) | None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ApiError::unauthorized(
            "invalid_admin_token",
            "a valid admin bearer token is required",
        ))
    }
}

#[cfg(test)]
mod signature_tests {
    use super::*;

    #[test]
    fn extreme_timestamps_are_out_of_window_not_a_panic() {
        // `now - i64::MIN` used to overflow: a panic with overflow checks on (fuzz/auth target).
        for ts in ["-9223372036854775808", "9223372036854775807"] {
            let err = timestamp_in_window(ts, 1_700_000_000, 300).unwrap_err();
            assert_eq!(err.code, "timestamp_out_of_window");
        }
        let err = timestamp_in_window("1", i64::MIN, 300).unwrap_err();
        assert_eq!(err.code, "timestamp_out_of_window");
        assert_eq!(timestamp_in_window("1000", 1_300, 300).unwrap(), 1_000);
        assert!(timestamp_in_window("1000", 1_301, 300).is_err());
        assert!(timestamp_in_window("1000", 699, 300).is_err());
    }

    #[test]
    fn a_v1_signature_made_with_the_secret_matches() {
        let mac = hmac_sha256(b"sk", &[b"5.POST./v1/payments.{}"]);
        let header = format!("v0=zz, v1={}", hex::encode(mac));
        assert!(signature_matches(
            b"sk",
            &header,
            "5",
            "POST",
            "/v1/payments",
            b"{}"
        ));
        assert!(!signature_matches(
            b"sk2",
            &header,
            "5",
            "POST",
            "/v1/payments",
            b"{}"
        ));
        assert!(!signature_matches(
            b"sk",
            &header,
            "5",
            "POST",
            "/v1/payments",
            b"{ }"
        ));
        assert!(!signature_matches(
            b"sk",
            "v1=",
            "5",
            "POST",
            "/v1/payments",
            b"{}"
        ));
    }
}
