//! The `app_wallet` signature and callback encryption (WeChat Pay v3-style).
//!
//! Requests and callbacks carry three headers:
//!
//! ```text
//! Wechatpay-Timestamp: <unix seconds>
//! Wechatpay-Nonce:     <32 hex digits, fresh per message>
//! Wechatpay-Signature: base64(HMAC-SHA256(derive_key(api_secret, "app_wallet", "sign"),
//!                      "{timestamp}\n{nonce}\n{METHOD}\n{path}\n{body}\n"))
//! ```
//!
//! where `path` is the request's path with its query (a callback's: the callback URL's path and
//! `POST`). The verifier accepts a timestamp within [`crate::signing::SIGNATURE_TOLERANCE_S`]
//! and compares in constant time.
//!
//! A callback's `resource` is encrypted with `AEAD_AES_256_GCM` under the API-v3 key
//! `derive_key(api_secret, "app_wallet", "aead")`: `nonce` is [`AEAD_NONCE_LEN`] ASCII
//! characters used as the 12-byte GCM nonce, `associated_data` is authenticated with it, and
//! `ciphertext` is `base64(ciphertext || 16-byte tag)`.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hyper::HeaderMap;
use hyper::header::{HeaderValue, InvalidHeaderValue};

use crate::signing::{self, PURPOSE_AEAD, PURPOSE_SIGN, SignatureError, SignedHeader, header};

/// The channel's name in the key derivation.
pub const CHANNEL: &str = "app_wallet";
/// The signing time, unix seconds.
pub const TIMESTAMP_HEADER: &str = "Wechatpay-Timestamp";
/// A fresh random string per message.
pub const NONCE_HEADER: &str = "Wechatpay-Nonce";
/// The base64 HMAC.
pub const SIGNATURE_HEADER: &str = "Wechatpay-Signature";
/// Random bytes in a header nonce (sent as twice as many hex digits).
pub const NONCE_BYTES: usize = 16;
/// The longest header nonce accepted.
pub const NONCE_LEN_MAX: usize = 64;
/// The length of a resource's AEAD nonce, in ASCII characters (= bytes).
pub const AEAD_NONCE_LEN: usize = 12;
/// The one algorithm a resource may use.
pub const AEAD_ALGORITHM: &str = "AEAD_AES_256_GCM";

/// The header-signing key derived from `api_secret`.
pub fn signing_key(api_secret: &[u8]) -> [u8; 32] {
    signing::derive_key(api_secret, CHANNEL, PURPOSE_SIGN)
}

/// The API-v3 key (callback encryption) derived from `api_secret`.
pub fn aead_key(api_secret: &[u8]) -> [u8; 32] {
    signing::derive_key(api_secret, CHANNEL, PURPOSE_AEAD)
}

fn mac(
    key: &[u8],
    timestamp_s: u64,
    nonce: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> hmac::Hmac<sha2::Sha256> {
    use hmac::Mac;
    let timestamp = timestamp_s.to_string();
    let mut mac = signing::hmac(key);
    for part in [
        timestamp.as_bytes(),
        nonce.as_bytes(),
        method.as_bytes(),
        path.as_bytes(),
        body,
    ] {
        mac.update(part);
        mac.update(b"\n");
    }
    mac
}

/// The `Wechatpay-Signature` value for a message signed at `timestamp_s` with `nonce`.
pub fn signature(
    key: &[u8],
    timestamp_s: u64,
    nonce: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> String {
    use hmac::Mac;
    BASE64.encode(
        mac(key, timestamp_s, nonce, method, path, body)
            .finalize()
            .into_bytes(),
    )
}

/// The three headers of a message signed at `timestamp_s` with a fresh nonce.
pub(crate) fn signed_headers(
    key: &[u8],
    timestamp_s: u64,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<Vec<SignedHeader>, InvalidHeaderValue> {
    let nonce = signing::random_hex(NONCE_BYTES);
    let signature = signature(key, timestamp_s, &nonce, method, path, body);
    Ok(vec![
        (TIMESTAMP_HEADER, HeaderValue::from(timestamp_s)),
        (NONCE_HEADER, HeaderValue::from_str(&nonce)?),
        (SIGNATURE_HEADER, HeaderValue::from_str(&signature)?),
    ])
}

/// Checks a message's three headers at `now_s`.
pub fn verify(
    key: &[u8],
    headers: &HeaderMap,
    method: &str,
    path: &str,
    body: &[u8],
    now_s: u64,
) -> Result<(), SignatureError> {
    let presented = header(headers, SIGNATURE_HEADER)?;
    let timestamp = header(headers, TIMESTAMP_HEADER)?;
    let nonce = header(headers, NONCE_HEADER)?;
    if nonce.is_empty() || nonce.len() > NONCE_LEN_MAX {
        return Err(SignatureError::Malformed);
    }
    let presented = BASE64
        .decode(presented)
        .map_err(|_| SignatureError::Malformed)?;
    let timestamp_s = signing::check_timestamp(timestamp, now_s)?;
    signing::check_mac(mac(key, timestamp_s, nonce, method, path, body), &presented)
}

/// Why a resource could not be sealed or opened. Carries nothing from the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AeadError {
    /// The nonce is not [`AEAD_NONCE_LEN`] characters.
    #[error("the resource nonce must be 12 characters")]
    Nonce,
    /// The ciphertext is not base64.
    #[error("the resource ciphertext is not base64")]
    Encoding,
    /// The tag does not verify: wrong key, or altered ciphertext, nonce or associated data.
    #[error("the resource does not decrypt")]
    Open,
}

fn cipher(key: &[u8; 32]) -> Aes256Gcm {
    // A 32-byte key is exactly what AES-256 takes.
    Aes256Gcm::new(key.into())
}

/// `base64(AES-256-GCM(key, nonce, associated_data, plaintext) || tag)`.
pub fn seal(
    key: &[u8; 32],
    nonce: &str,
    associated_data: &str,
    plaintext: &[u8],
) -> Result<String, AeadError> {
    if nonce.len() != AEAD_NONCE_LEN {
        return Err(AeadError::Nonce);
    }
    let sealed = cipher(key)
        .encrypt(
            Nonce::from_slice(nonce.as_bytes()),
            Payload {
                msg: plaintext,
                aad: associated_data.as_bytes(),
            },
        )
        .map_err(|_| AeadError::Open)?;
    Ok(BASE64.encode(sealed))
}

/// Opens a sealed resource; any change to it, its nonce or its associated data fails.
pub fn open(
    key: &[u8; 32],
    nonce: &str,
    associated_data: &str,
    ciphertext: &str,
) -> Result<Vec<u8>, AeadError> {
    if nonce.len() != AEAD_NONCE_LEN {
        return Err(AeadError::Nonce);
    }
    let sealed = BASE64.decode(ciphertext).map_err(|_| AeadError::Encoding)?;
    cipher(key)
        .decrypt(
            Nonce::from_slice(nonce.as_bytes()),
            Payload {
                msg: &sealed,
                aad: associated_data.as_bytes(),
            },
        )
        .map_err(|_| AeadError::Open)
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    const KEY: &[u8] = b"app-test-key";

    fn headers(timestamp_s: u64, nonce: &str, signature: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(TIMESTAMP_HEADER, HeaderValue::from(timestamp_s));
        headers.insert(NONCE_HEADER, HeaderValue::from_str(nonce).unwrap());
        headers.insert(SIGNATURE_HEADER, HeaderValue::from_str(signature).unwrap());
        headers
    }

    #[test]
    fn a_signed_message_verifies_and_any_change_breaks_it() {
        let body = br#"{"out_trade_no":"pay_1"}"#;
        let signed = signature(KEY, 1_000, "n1", "POST", "/app/v3/x", body);
        let good = headers(1_000, "n1", &signed);
        assert_eq!(verify(KEY, &good, "POST", "/app/v3/x", body, 1_200), Ok(()));
        let mismatch = Err(SignatureError::Mismatch);
        assert_eq!(
            verify(b"k2", &good, "POST", "/app/v3/x", body, 1_000),
            mismatch
        );
        assert_eq!(
            verify(KEY, &good, "GET", "/app/v3/x", body, 1_000),
            mismatch
        );
        assert_eq!(
            verify(KEY, &good, "POST", "/app/v3/y", body, 1_000),
            mismatch
        );
        assert_eq!(
            verify(KEY, &good, "POST", "/app/v3/x", b"{}", 1_000),
            mismatch
        );
        let other_nonce = headers(1_000, "n2", &signed);
        assert_eq!(
            verify(KEY, &other_nonce, "POST", "/app/v3/x", body, 1_000),
            mismatch
        );
        assert_eq!(
            verify(KEY, &good, "POST", "/app/v3/x", body, 1_301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(KEY, &HeaderMap::new(), "POST", "/app/v3/x", body, 1_000),
            Err(SignatureError::Missing)
        );
        let not_base64 = headers(1_000, "n1", "***");
        assert_eq!(
            verify(KEY, &not_base64, "POST", "/app/v3/x", body, 1_000),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn a_sealed_resource_opens_only_unchanged_and_with_its_key() {
        let key = aead_key(b"secret");
        let sealed = seal(&key, "0123456789ab", "transaction", b"plain").unwrap();
        assert_eq!(
            open(&key, "0123456789ab", "transaction", &sealed).unwrap(),
            b"plain"
        );
        let other_key = aead_key(b"other secret");
        assert_eq!(
            open(&other_key, "0123456789ab", "transaction", &sealed),
            Err(AeadError::Open)
        );
        assert_eq!(
            open(&key, "0123456789ac", "transaction", &sealed),
            Err(AeadError::Open)
        );
        assert_eq!(
            open(&key, "0123456789ab", "refund", &sealed),
            Err(AeadError::Open)
        );
        let mut bytes = BASE64.decode(&sealed).unwrap();
        bytes[0] ^= 1;
        assert_eq!(
            open(&key, "0123456789ab", "transaction", &BASE64.encode(bytes)),
            Err(AeadError::Open)
        );
        assert_eq!(
            open(&key, "short", "transaction", &sealed),
            Err(AeadError::Nonce)
        );
        assert_eq!(
            open(&key, "0123456789ab", "transaction", "%%%"),
            Err(AeadError::Encoding)
        );
    }
}
