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
pub async fn merchant(
    merchants: &Merchants,
    headers: &HeaderMap,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    now_s: i64,
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
    let ts: i64 = timestamp.parse().map_err(|_| {
        ApiError::unauthorized(
            "timestamp_out_of_window",
            "Kassa-Timestamp must be unix seconds",
        )
    })?;
    if (now_s - ts).abs() > window_s {
        return Err(ApiError::unauthorized(
            "timestamp_out_of_window",
            format!("Kassa-Timestamp is more than {window_s} s away from the server's clock"),
        ));
    }
    let refused =
        || ApiError::unauthorized("invalid_signature", "the request signature does not verify");
    if signature.len() > SIGNATURE_HEADER_BYTES_MAX || merchant_id.len() > 64 {
        return Err(refused());
    }
    let merchant = match merchants.get(merchant_id).await {
        Ok(Some(m)) => m,
        Ok(None) => return Err(refused()),
        Err(e) => {
            tracing::error!(error = %e, "merchant lookup failed");
            return Err(ApiError::unavailable(
                "overloaded",
                "Kassa is busy; retry shortly",
            ));
        }
    };
    let expected = hmac_sha256(
        merchant.secret.expose().as_bytes(),
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
    let matches = signature
        .split(',')
        .filter_map(|part| part.trim().strip_prefix("v1="))
        .filter_map(|hex_sig| hex::decode(hex_sig).ok())
        .any(|given| bool::from(given.as_slice().ct_eq(&expected)));
    if matches {
        Ok(merchant)
    } else {
        Err(refused())
    }
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
