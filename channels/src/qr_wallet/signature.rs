//! The `qr_wallet` signature (Alipay-style): inside the form, over its sorted parameters.
//!
//! Requests and callbacks are `application/x-www-form-urlencoded`. The signed string is every
//! parameter except `sign` and `sign_type`, sorted by name (bytewise), joined as
//! `name=value&name=value` with the decoded values (not URL-encoded). Then
//!
//! ```text
//! sign      = hex(HMAC-SHA256(derive_key(api_secret, "qr_wallet", "sign"), signed string))
//! sign_type = HMAC-SHA256
//! ```
//!
//! A `timestamp` parameter (unix seconds) is signed with the rest; the verifier accepts it within
//! [`crate::signing::SIGNATURE_TOLERANCE_S`] of its clock. A parameter given twice, or more
//! than [`PARAMS_MAX`] of them, makes the form malformed. Both sides use this module: the
//! adapter and the sandbox's callback sender sign, the sandbox and `inbound` verify.

use std::collections::BTreeMap;

use hmac::Mac;

use crate::signing::{self, PURPOSE_SIGN, SignatureError};

/// The channel's name in the key derivation.
pub const CHANNEL: &str = "qr_wallet";
/// The only `sign_type` this protocol knows.
pub const SIGN_TYPE: &str = "HMAC-SHA256";
/// The most parameters a signed form may carry.
pub const PARAMS_MAX: usize = 64;

const SIGN: &str = "sign";
const SIGN_TYPE_PARAM: &str = "sign_type";
const TIMESTAMP: &str = "timestamp";

/// The form-signing key derived from `api_secret`.
pub fn signing_key(api_secret: &[u8]) -> [u8; 32] {
    signing::derive_key(api_secret, CHANNEL, PURPOSE_SIGN)
}

/// Why a form could not be signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the form cannot be signed: a parameter repeats, it carries its own signature, or it has too \
     many parameters"
)]
pub struct UnsignableForm;

/// The string the signature covers: `params` without `sign`/`sign_type`, sorted, joined.
pub fn signed_string<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let sorted: BTreeMap<&str, &str> = params
        .into_iter()
        .filter(|(name, _)| *name != SIGN && *name != SIGN_TYPE_PARAM)
        .collect();
    let mut joined = String::new();
    for (name, value) in sorted {
        if !joined.is_empty() {
            joined.push('&');
        }
        joined.push_str(name);
        joined.push('=');
        joined.push_str(value);
    }
    joined
}

/// `hex(HMAC-SHA256(key, signed string))`.
pub fn sign<'a>(key: &[u8], params: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut mac = signing::hmac(key);
    mac.update(signed_string(params).as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Adds `timestamp`, `sign_type` and `sign` to an encoded form that has none of them. A form
/// with more than `PARAMS_MAX - 3` parameters is refused: signed, it would carry more than
/// [`verify_form`] reads.
pub fn sign_form(key: &[u8], body: &[u8], timestamp_s: u64) -> Result<String, UnsignableForm> {
    let timestamp = timestamp_s.to_string();
    let mut params = parse_unique(body).map_err(|_| UnsignableForm)?;
    if params.contains_key(SIGN)
        || params.contains_key(SIGN_TYPE_PARAM)
        || params
            .insert(TIMESTAMP.to_owned(), timestamp.clone())
            .is_some()
        // `sign_type` and `sign` are still to come.
        || params.len() + 2 > PARAMS_MAX
    {
        return Err(UnsignableForm);
    }
    let signature = sign(
        key,
        params
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str())),
    );
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (name, value) in form_urlencoded::parse(body) {
        form.append_pair(&name, &value);
    }
    form.append_pair(TIMESTAMP, &timestamp);
    form.append_pair(SIGN_TYPE_PARAM, SIGN_TYPE);
    form.append_pair(SIGN, &signature);
    Ok(form.finish())
}

/// Parses a signed form and checks its signature and timestamp at `now_s`. The parameters,
/// without `sign` and `sign_type`, when it holds.
pub fn verify_form(
    key: &[u8],
    body: &[u8],
    now_s: u64,
) -> Result<BTreeMap<String, String>, SignatureError> {
    let mut params = parse_unique(body)?;
    let presented = params.remove(SIGN).ok_or(SignatureError::Missing)?;
    match params.remove(SIGN_TYPE_PARAM) {
        Some(sign_type) if sign_type == SIGN_TYPE => {}
        _ => return Err(SignatureError::Malformed),
    }
    let presented = hex::decode(presented).map_err(|_| SignatureError::Malformed)?;
    let timestamp = params.get(TIMESTAMP).ok_or(SignatureError::Malformed)?;
    signing::check_timestamp(timestamp, now_s)?;
    let mut mac = signing::hmac(key);
    mac.update(
        signed_string(
            params
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str())),
        )
        .as_bytes(),
    );
    signing::check_mac(mac, &presented)?;
    Ok(params)
}

/// The form's parameters; a repeated name or too many parameters is malformed.
fn parse_unique(body: &[u8]) -> Result<BTreeMap<String, String>, SignatureError> {
    let mut params = BTreeMap::new();
    for (name, value) in form_urlencoded::parse(body) {
        if params.len() == PARAMS_MAX
            || params
                .insert(name.into_owned(), value.into_owned())
                .is_some()
        {
            return Err(SignatureError::Malformed);
        }
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"qr-test-key";

    #[test]
    fn the_signed_string_is_sorted_and_skips_the_signature() {
        let params = [
            ("total_amount_minor", "100"),
            ("sign", "x"),
            ("out_trade_no", "k&1"),
            ("sign_type", "HMAC-SHA256"),
        ];
        assert_eq!(
            signed_string(params),
            "out_trade_no=k&1&total_amount_minor=100"
        );
    }

    #[test]
    fn a_signed_form_verifies_and_any_change_breaks_it() {
        let body = "out_trade_no=pay_1&subject=tea+%26+cake&total_amount_minor=1200";
        let signed = sign_form(KEY, body.as_bytes(), 1_000).expect("signable");
        let params = verify_form(KEY, signed.as_bytes(), 1_100).expect("verifies");
        assert_eq!(params["subject"], "tea & cake");
        assert_eq!(params["timestamp"], "1000");
        assert_eq!(
            verify_form(b"other", signed.as_bytes(), 1_000),
            Err(SignatureError::Mismatch)
        );
        let tampered = signed.replace("1200", "1201");
        assert_eq!(
            verify_form(KEY, tampered.as_bytes(), 1_000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_form(KEY, signed.as_bytes(), 2_000),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify_form(KEY, body.as_bytes(), 1_000),
            Err(SignatureError::Missing)
        );
        let other_type = signed.replace("HMAC-SHA256", "RSA2");
        assert_eq!(
            verify_form(KEY, other_type.as_bytes(), 1_000),
            Err(SignatureError::Malformed)
        );
        let repeated = format!("{signed}&out_trade_no=pay_2");
        assert_eq!(
            verify_form(KEY, repeated.as_bytes(), 1_000),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn a_form_the_signer_accepts_always_verifies() {
        // Found by fuzz/callback_qr_wallet: 62 to 64 parameters were signed into a form of up
        // to 67, which `verify_form` refuses as malformed.
        let form = |count: usize| {
            (0..count)
                .map(|i| format!("p{i:02}={i}"))
                .collect::<Vec<_>>()
                .join("&")
        };
        let most = form(PARAMS_MAX - 3);
        let signed = sign_form(KEY, most.as_bytes(), 1_000).expect("signable");
        assert_eq!(
            verify_form(KEY, signed.as_bytes(), 1_000).map(|params| params.len()),
            Ok(PARAMS_MAX - 2)
        );
        for count in PARAMS_MAX - 2..=PARAMS_MAX {
            assert_eq!(
                sign_form(KEY, form(count).as_bytes(), 1_000),
                Err(UnsignableForm),
                "{count}"
            );
        }
    }

    #[test]
    fn a_form_with_its_own_signature_or_timestamp_is_not_signed_again() {
        for body in ["sign=1", "sign_type=x", "timestamp=5", "a=1&a=2"] {
            assert_eq!(
                sign_form(KEY, body.as_bytes(), 1),
                Err(UnsignableForm),
                "{body}"
            );
        }
    }
}
