//! Key derivation and the signature checks the asynchronous protocols share.
//!
//! Kassa and a provider share ONE secret per channel (`api_secret`; the sandbox has one for all
//! its channels, `SandboxConfig::api_secret`). The asynchronous protocols need several keys
//! each, so both sides derive them from that secret with [`derive_key`], the one place the
//! derivation is written down:
//!
//! ```text
//! key = HMAC-SHA256(api_secret, "{channel}:{purpose}")
//! ```
//!
//! | channel         | purpose ([`PURPOSE_SIGN`], [`PURPOSE_AEAD`]) | used for                                  |
//! |-----------------|-----------------------------------------------|-------------------------------------------|
//! | `qr_wallet`     | `sign`                                        | the `sign` parameter of requests and callbacks |
//! | `app_wallet`    | `sign`                                        | `Wechatpay-Signature` on requests and callbacks |
//! | `app_wallet`    | `aead`                                        | the API-v3 key: AES-256-GCM of callback resources |
//! | `bank_transfer` | `sign`                                        | `Bank-Signature` on requests and callbacks |
//!
//! So Kassa's configuration needs only the one secret per channel, and a key of one protocol
//! is useless for another. The card protocol predates this and signs with `api_secret` itself.
//!
//! Every signature carries a timestamp; a verifier accepts it within
//! [`SIGNATURE_TOLERANCE_S`] of its own clock and compares MACs in constant time.

use hmac::{Hmac, Mac};
use hyper::HeaderMap;
use hyper::header::HeaderValue;
use sha2::Sha256;

/// How far (either way) a signature's timestamp may be from the verifier's clock. A request's
/// retries resend its first signature's timestamp in the form-signed protocol (`qr_wallet`),
/// so a command deadline must stay well below this.
pub const SIGNATURE_TOLERANCE_S: u64 = 300;

/// The purpose of a signing key.
pub const PURPOSE_SIGN: &str = "sign";
/// The purpose of `app_wallet`'s callback encryption key (its "API-v3 key").
pub const PURPOSE_AEAD: &str = "aead";

/// The key of `channel` for `purpose`: `HMAC-SHA256(api_secret, "{channel}:{purpose}")`.
pub fn derive_key(api_secret: &[u8], channel: &str, purpose: &str) -> [u8; 32] {
    let mut mac = hmac(api_secret);
    mac.update(channel.as_bytes());
    mac.update(b":");
    mac.update(purpose.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Why a signature was refused. The variants carry nothing from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The signature (header or parameter) is missing.
    #[error("the signature is missing")]
    Missing,
    /// The signature or its timestamp or nonce is not in the protocol's shape.
    #[error("the signature is malformed")]
    Malformed,
    /// The timestamp is more than the tolerance away from now.
    #[error("the signature timestamp is outside the tolerance window")]
    Stale,
    /// The signature does not match.
    #[error("the signature does not match")]
    Mismatch,
}

/// An HMAC-SHA256 keyed with `key`.
pub(crate) fn hmac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length (long keys are hashed, short ones padded), so
    // `new_from_slice` cannot fail for `Hmac<Sha256>`.
    Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// One header of a signed message: its name and value.
pub(crate) type SignedHeader = (&'static str, HeaderValue);

/// The value of the header `name`, which a signature needs.
pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, SignatureError> {
    headers
        .get(name)
        .ok_or(SignatureError::Missing)?
        .to_str()
        .map_err(|_| SignatureError::Malformed)
}

/// Parses a unix-seconds timestamp and checks it is within the tolerance of `now_s`.
pub(crate) fn check_timestamp(timestamp: &str, now_s: u64) -> Result<u64, SignatureError> {
    let digits = !timestamp.is_empty() && timestamp.len() <= 20;
    let timestamp_s = timestamp
        .parse::<u64>()
        .ok()
        .filter(|_| digits)
        .ok_or(SignatureError::Malformed)?;
    if timestamp_s.abs_diff(now_s) > SIGNATURE_TOLERANCE_S {
        return Err(SignatureError::Stale);
    }
    Ok(timestamp_s)
}

/// Compares `mac` with `presented` in constant time.
pub(crate) fn check_mac(mac: Hmac<Sha256>, presented: &[u8]) -> Result<(), SignatureError> {
    mac.verify_slice(presented)
        .map_err(|_| SignatureError::Mismatch)
}

/// `bytes` random bytes as lower-case hex, for nonces. Nonces need uniqueness, not secrecy:
/// without OS entropy the clock and a counter stand in.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    if getrandom::fill(&mut buffer).is_err() {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        let mut mac = hmac(&nanos.to_le_bytes());
        mac.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        let digest = mac.finalize().into_bytes();
        for (index, byte) in buffer.iter_mut().enumerate() {
            *byte = digest[index % digest.len()];
        }
    }
    hex::encode(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_channel_purpose_and_secret() {
        let sign = derive_key(b"secret", "qr_wallet", PURPOSE_SIGN);
        assert_eq!(sign, derive_key(b"secret", "qr_wallet", PURPOSE_SIGN));
        assert_ne!(sign, derive_key(b"secret", "app_wallet", PURPOSE_SIGN));
        assert_ne!(sign, derive_key(b"secret", "qr_wallet", PURPOSE_AEAD));
        assert_ne!(sign, derive_key(b"other", "qr_wallet", PURPOSE_SIGN));
        // The documented construction, spelled out.
        let mut mac = hmac(b"secret");
        mac.update(b"qr_wallet:sign");
        assert_eq!(sign.as_slice(), mac.finalize().into_bytes().as_slice());
    }

    #[test]
    fn timestamps_are_checked_against_the_window() {
        assert_eq!(check_timestamp("1000", 1_300), Ok(1_000));
        assert_eq!(check_timestamp("1000", 1_301), Err(SignatureError::Stale));
        assert_eq!(check_timestamp("1000", 699), Err(SignatureError::Stale));
        for malformed in ["", "x", "-1", "1.5", "99999999999999999999999"] {
            assert_eq!(
                check_timestamp(malformed, 1_000),
                Err(SignatureError::Malformed)
            );
        }
    }

    #[test]
    fn nonces_are_hex_and_differ() {
        let first = random_hex(16);
        assert_eq!(first.len(), 32);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(first, random_hex(16));
    }
}
