//! The `bank_transfer` signature: two headers over the method, the path and a digest of the
//! body.
//!
//! ```text
//! Bank-Timestamp: <unix seconds>
//! Bank-Signature: v1=<hex HMAC-SHA256(derive_key(api_secret, "bank_transfer", "sign"),
//!                 "{timestamp}\n{METHOD}\n{path}\n{hex(SHA-256(body))}")>
//! ```
//!
//! `path` is the request's path with its query (a callback's: the callback URL's path, and
//! `POST`). The verifier accepts a timestamp within [`crate::signing::SIGNATURE_TOLERANCE_S`]
//! and compares in constant time.

use hmac::Mac;
use hyper::HeaderMap;
use hyper::header::{HeaderValue, InvalidHeaderValue};
use sha2::{Digest, Sha256};

use crate::signing::{self, PURPOSE_SIGN, SignatureError, SignedHeader, header};

/// The channel's name in the key derivation.
pub const CHANNEL: &str = "bank_transfer";
/// The signing time, unix seconds.
pub const TIMESTAMP_HEADER: &str = "Bank-Timestamp";
/// `v1=<hex>`.
pub const SIGNATURE_HEADER: &str = "Bank-Signature";

const SCHEME: &str = "v1=";

/// The signing key derived from `api_secret`.
pub fn signing_key(api_secret: &[u8]) -> [u8; 32] {
    signing::derive_key(api_secret, CHANNEL, PURPOSE_SIGN)
}

fn mac(key: &[u8], timestamp_s: u64, method: &str, path: &str, body: &[u8]) -> hmac::Hmac<Sha256> {
    let digest = hex::encode(Sha256::digest(body));
    let mut mac = signing::hmac(key);
    mac.update(format!("{timestamp_s}\n{method}\n{path}\n{digest}").as_bytes());
    mac
}

/// The `Bank-Signature` value for a message signed at `timestamp_s`.
pub fn signature(key: &[u8], timestamp_s: u64, method: &str, path: &str, body: &[u8]) -> String {
    let digest = mac(key, timestamp_s, method, path, body)
        .finalize()
        .into_bytes();
    format!("{SCHEME}{}", hex::encode(digest))
}

/// The two headers of a message signed at `timestamp_s`.
pub(crate) fn signed_headers(
    key: &[u8],
    timestamp_s: u64,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<Vec<SignedHeader>, InvalidHeaderValue> {
    let signature = signature(key, timestamp_s, method, path, body);
    Ok(vec![
        (TIMESTAMP_HEADER, HeaderValue::from(timestamp_s)),
        (SIGNATURE_HEADER, HeaderValue::from_str(&signature)?),
    ])
}

/// Checks a message's two headers at `now_s`.
pub fn verify(
    key: &[u8],
    headers: &HeaderMap,
    method: &str,
    path: &str,
    body: &[u8],
    now_s: u64,
) -> Result<(), SignatureError> {
    let presented = header(headers, SIGNATURE_HEADER)?
        .strip_prefix(SCHEME)
        .ok_or(SignatureError::Malformed)?;
    let presented = hex::decode(presented).map_err(|_| SignatureError::Malformed)?;
    let timestamp_s = signing::check_timestamp(header(headers, TIMESTAMP_HEADER)?, now_s)?;
    signing::check_mac(mac(key, timestamp_s, method, path, body), &presented)
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    const KEY: &[u8] = b"bank-test-key";

    fn headers(timestamp_s: u64, signature: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(TIMESTAMP_HEADER, HeaderValue::from(timestamp_s));
        headers.insert(SIGNATURE_HEADER, HeaderValue::from_str(signature).unwrap());
        headers
    }

    #[test]
    fn a_signed_message_verifies_and_any_change_breaks_it() {
        let signed = signature(KEY, 1_000, "POST", "/bank/v1/transfers", b"{}");
        let good = headers(1_000, &signed);
        assert_eq!(
            verify(KEY, &good, "POST", "/bank/v1/transfers", b"{}", 1_000),
            Ok(())
        );
        let mismatch = Err(SignatureError::Mismatch);
        assert_eq!(
            verify(b"k", &good, "POST", "/bank/v1/transfers", b"{}", 1_000),
            mismatch
        );
        assert_eq!(
            verify(KEY, &good, "POST", "/bank/v1/returns", b"{}", 1_000),
            mismatch
        );
        assert_eq!(
            verify(KEY, &good, "POST", "/bank/v1/transfers", b"{ }", 1_000),
            mismatch
        );
        assert_eq!(
            verify(
                KEY,
                &headers(1_001, &signed),
                "POST",
                "/bank/v1/transfers",
                b"{}",
                1_000
            ),
            mismatch
        );
        assert_eq!(
            verify(KEY, &good, "POST", "/bank/v1/transfers", b"{}", 5_000),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(KEY, &headers(1_000, "v2=00"), "POST", "/", b"", 1_000),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(KEY, &HeaderMap::new(), "POST", "/", b"", 1_000),
            Err(SignatureError::Missing)
        );
    }
}
