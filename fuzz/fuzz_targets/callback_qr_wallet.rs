//! The `qr_wallet` channel's inbound callback (`kassa_channels::inbound::decode`): a form with
//! the trade's fields, signed by its own `sign` parameter over the sorted parameters.
//!
//! Input: a form body. Each input is decoded as given (no panic; no `sign`, no report), then
//! signed with `qr_wallet::signature::sign_form` (the sandbox's signer) and decoded again:
//! - a form the signer accepts verifies (the signer never makes a form the verifier refuses);
//! - a flipped byte is refused, unless the form still means the same parameters;
//! - another secret or a stale time is refused;
//! - an accepted report holds together: a positive amount, refunds within it, and the key is
//!   the form's `out_trade_no`.
#![no_main]

use http::HeaderMap;
use kassa_channels::inbound::{InboundError, decode};
use kassa_channels::outcome::AsyncStatus;
use kassa_channels::qr_wallet::signature::{sign_form, signing_key, verify_form};
use kassa_channels::signing::SignatureError;
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"qr_secret_fuzz";
const PATH: &str = "/callbacks/qr_wallet";
const NOW_S: u64 = 1_795_000_000;

fuzz_target!(|data: &[u8]| {
    let headers = HeaderMap::new();
    let key = signing_key(SECRET);
    match decode("qr_wallet", SECRET, &headers, PATH, data, NOW_S) {
        Ok(_) => panic!("an unsigned form was accepted"),
        Err(e) => assert!(
            e.is_signature(),
            "an unsigned form passed the signature check: {e}"
        ),
    }
    let _ = verify_form(&key, data, 0);
    let _ = verify_form(&key, data, u64::MAX);

    let Ok(signed) = sign_form(&key, data, NOW_S) else {
        return;
    };
    let params = verify_form(&key, signed.as_bytes(), NOW_S)
        .unwrap_or_else(|e| panic!("a form sign_form made does not verify: {e}"));
    match decode(
        "qr_wallet",
        SECRET,
        &headers,
        PATH,
        signed.as_bytes(),
        NOW_S,
    ) {
        Err(e) => assert!(!e.is_signature(), "a signed form was refused: {e}"),
        Ok(payment) => {
            assert_eq!(
                params.get("notify_type").map(String::as_str),
                Some("trade_status_sync")
            );
            assert_eq!(Some(&payment.idempotency_key), params.get("out_trade_no"));
            assert!(payment.amount_minor > 0);
            assert!((0..=payment.amount_minor).contains(&payment.refunded_minor));
            if let AsyncStatus::Failed { code, .. } = &payment.status {
                assert!(!code.is_empty());
            }
        }
    }
    assert!(matches!(
        decode(
            "qr_wallet",
            b"other",
            &headers,
            PATH,
            signed.as_bytes(),
            NOW_S
        ),
        Err(InboundError::Signature(SignatureError::Mismatch))
    ));
    assert!(matches!(
        decode(
            "qr_wallet",
            SECRET,
            &headers,
            PATH,
            signed.as_bytes(),
            NOW_S + 301
        ),
        Err(InboundError::Signature(SignatureError::Stale))
    ));
    // A flipped byte anywhere: refused, unless the parameters it decodes to are unchanged
    // (`+` and `%20`, hex case in escapes and in `sign`).
    let pick = data.first().copied().unwrap_or(0);
    let mut flipped = signed.clone().into_bytes();
    let at = usize::from(pick).wrapping_mul(31) % flipped.len();
    flipped[at] ^= 1 << (pick % 8);
    if let Ok(same) = verify_form(&key, &flipped, NOW_S) {
        assert_eq!(same, params, "a changed form verifies");
    }
});
