//! The card protocol's request signature: `Sandbox-Signature: t=<unix>,v1=<hex>`.
//!
//! `v1` is `hex(HMAC-SHA256(api_secret, "{t}.{METHOD}.{path}.{body}"))`, where `path` is the
//! request's path with its query string when it has one. The provider accepts a timestamp up to
//! [`SIGNATURE_TOLERANCE_S`] away from its clock and compares in constant time. Both sides of
//! the protocol use this module: the adapter signs, the sandbox verifies.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "Sandbox-Signature";

/// How far (either way) a signature's timestamp may be from the verifier's clock.
pub const SIGNATURE_TOLERANCE_S: u64 = 300;

/// How many `v1=` entries a header may carry (several allow secret rotation); more is malformed.
const SIGNATURES_PER_HEADER_MAX: usize = 4;

/// Why a signature was refused. The variants carry nothing from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `Sandbox-Signature` header.
    #[error("the Sandbox-Signature header is missing")]
    Missing,
    /// The header is not `t=<unix>,v1=<hex>`.
    #[error("the Sandbox-Signature header is malformed")]
    Malformed,
    /// The timestamp is more than the tolerance away from now.
    #[error("the signature timestamp is outside the tolerance window")]
    Stale,
    /// No `v1` matches.
    #[error("the signature does not match")]
    Mismatch,
}

/// Seconds since the Unix epoch by the OS clock (0 if the clock is before 1970).
pub fn now_unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

fn mac(secret: &[u8], timestamp_s: u64, method: &str, path: &str, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length (long keys are hashed, short ones padded), so
    // `new_from_slice` cannot fail for `Hmac<Sha256>`.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp_s.to_string().as_bytes());
    mac.update(b".");
    mac.update(method.as_bytes());
    mac.update(b".");
    mac.update(path.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The full header value for a request signed at `timestamp_s`.
pub fn header_value(
    secret: &[u8],
    timestamp_s: u64,
    method: &str,
    path: &str,
    body: &[u8],
) -> String {
    let digest = mac(secret, timestamp_s, method, path, body)
        .finalize()
        .into_bytes();
    format!("t={timestamp_s},v1={}", hex::encode(digest))
}

/// Checks `header` (the header's value, if present) against the request, at time `now_s`.
pub fn verify(
    secret: &[u8],
    header: Option<&str>,
    method: &str,
    path: &str,
    body: &[u8],
    now_s: u64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp_s = None;
    let mut signatures = Vec::with_capacity(SIGNATURES_PER_HEADER_MAX);
    for part in header.split(',') {
        let (name, value) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed)?;
        match name {
            "t" => {
                let parsed = value
                    .parse::<u64>()
                    .map_err(|_| SignatureError::Malformed)?;
                if timestamp_s.replace(parsed).is_some() {
                    return Err(SignatureError::Malformed);
                }
            }
            "v1" => {
                if signatures.len() == SIGNATURES_PER_HEADER_MAX {
                    return Err(SignatureError::Malformed);
                }
                signatures.push(hex::decode(value).map_err(|_| SignatureError::Malformed)?);
            }
            // Unknown schemes are ignored so a provider can add `v2` without breaking `v1`.
            _ => {}
        }
    }
    let timestamp_s = timestamp_s.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if timestamp_s.abs_diff(now_s) > SIGNATURE_TOLERANCE_S {
        return Err(SignatureError::Stale);
    }
    let expected = mac(secret, timestamp_s, method, path, body);
    // `verify_slice` compares in constant time.
    let matched = signatures
        .iter()
        .any(|signature| expected.clone().verify_slice(signature).is_ok());
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"sk_test";

    #[test]
    fn a_signed_request_verifies() {
        let header = header_value(SECRET, 1_000, "POST", "/card/v1/charges", b"{}");
        assert_eq!(
            verify(
                SECRET,
                Some(&header),
                "POST",
                "/card/v1/charges",
                b"{}",
                1_100
            ),
            Ok(())
        );
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let header = header_value(SECRET, 1_000, "POST", "/card/v1/charges", b"{}");
        let mismatch = Err(SignatureError::Mismatch);
        assert_eq!(
            verify(
                b"other",
                Some(&header),
                "POST",
                "/card/v1/charges",
                b"{}",
                1_000
            ),
            mismatch
        );
        assert_eq!(
            verify(
                SECRET,
                Some(&header),
                "GET",
                "/card/v1/charges",
                b"{}",
                1_000
            ),
            mismatch
        );
        assert_eq!(
            verify(
                SECRET,
                Some(&header),
                "POST",
                "/card/v1/refunds",
                b"{}",
                1_000
            ),
            mismatch
        );
        assert_eq!(
            verify(
                SECRET,
                Some(&header),
                "POST",
                "/card/v1/charges",
                b"{ }",
                1_000
            ),
            mismatch
        );
    }

    #[test]
    fn timestamps_outside_the_window_are_stale() {
        let header = header_value(SECRET, 1_000, "GET", "/x", b"");
        assert_eq!(
            verify(SECRET, Some(&header), "GET", "/x", b"", 1_301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(SECRET, Some(&header), "GET", "/x", b"", 699),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(SECRET, Some(&header), "GET", "/x", b"", 1_300),
            Ok(())
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        for header in [
            "",
            "t=1",
            "v1=00",
            "t=x,v1=00",
            "t=1,v1=zz",
            "t=1,t=2,v1=00",
        ] {
            assert_eq!(
                verify(SECRET, Some(header), "GET", "/x", b"", 1),
                Err(SignatureError::Malformed),
                "{header}"
            );
        }
        assert_eq!(
            verify(SECRET, None, "GET", "/x", b"", 1),
            Err(SignatureError::Missing)
        );
    }
}
