//! The card channel's inbound callback (`kassa_channels::card::callback::decode`): a
//! `charge.updated` JSON report signed with `Sandbox-Signature: t=<unix>,v1=<hex>`.
//!
//! Input: the first line is a `Sandbox-Signature` value, the rest the body. Each input is
//! decoded twice: as given (any header, any body: no panic, and never accepted unsigned), and
//! signed correctly, which takes the body past the signature into the JSON decoder. Then:
//! - a correctly signed body is never refused for its signature;
//! - a flipped body byte, another secret, another path or a stale time is always refused;
//! - an accepted report is a `charge.updated` with its idempotency key and charge id.
#![no_main]

use kassa_channels::card::callback::{CallbackError, decode};
use kassa_channels::card::signature::{self, SignatureError};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"sandbox_secret_fuzz";
const BASE_URL: &str = "http://sandbox.test";
const PATH: &str = "/callbacks/card";
const NOW_S: u64 = 1_795_000_000;

fuzz_target!(|data: &[u8]| {
    let (header, body) = match data.iter().position(|b| *b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&[][..], data),
    };
    if let Ok(header) = std::str::from_utf8(header) {
        let _ = decode(BASE_URL, SECRET, Some(header), PATH, body, NOW_S);
        let _ = signature::verify(SECRET, Some(header), "POST", PATH, body, u64::MAX);
        let _ = signature::verify(SECRET, Some(header), "POST", PATH, body, 0);
    }
    assert!(matches!(
        decode(BASE_URL, SECRET, None, PATH, body, NOW_S),
        Err(CallbackError::Signature(SignatureError::Missing))
    ));

    let good = signature::header_value(SECRET, NOW_S, "POST", PATH, body);
    match decode(BASE_URL, SECRET, Some(&good), PATH, body, NOW_S) {
        Err(CallbackError::Signature(e)) => panic!("a signed body was refused: {e}"),
        Err(CallbackError::Unreadable(_) | CallbackError::UnknownType(_)) => {}
        Ok(report) => {
            // Lossy: the decoder skips unknown fields without checking their UTF-8.
            let text = String::from_utf8_lossy(body);
            let json: serde_json::Value = serde_json::from_str(&text).expect("accepted is JSON");
            assert_eq!(json["type"], "charge.updated");
            assert_eq!(
                json["charge"]["idempotency_key"],
                report.idempotency_key.as_str()
            );
            assert_eq!(json["charge"]["amount_minor"], report.charge.amount_minor);
        }
    }
    let refused =
        |result: Result<_, CallbackError>| matches!(result, Err(CallbackError::Signature(_)));
    assert!(refused(decode(
        BASE_URL,
        b"other",
        Some(&good),
        PATH,
        body,
        NOW_S
    )));
    assert!(refused(decode(
        BASE_URL,
        SECRET,
        Some(&good),
        "/callbacks/cart",
        body,
        NOW_S
    )));
    assert!(refused(decode(
        BASE_URL,
        SECRET,
        Some(&good),
        PATH,
        body,
        NOW_S + 301
    )));
    if let Some(&pick) = body.first() {
        let mut tampered = body.to_vec();
        let at = usize::from(pick) % tampered.len();
        tampered[at] ^= 0x20;
        assert!(refused(decode(
            BASE_URL,
            SECRET,
            Some(&good),
            PATH,
            &tampered,
            NOW_S
        )));
    }
});
