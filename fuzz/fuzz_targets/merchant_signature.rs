//! The merchant request signature (`runtime/src/http/auth.rs`): `Kassa-Timestamp` and
//! `Kassa-Signature: v1=<hex HMAC-SHA256(secret, "{t}.{METHOD}.{path_and_query}.{body}")>`.
//!
//! Input: four lines — the `Kassa-Signature` value, the `Kassa-Timestamp` value, the method,
//! the path and query — then the body (everything after the fourth newline); the first byte
//! of the body, if any, also picks the byte a tamper check flips.
//!
//! Beyond "no panic" on any header:
//! - a timestamp is accepted only within the window, and then it is the number it reads as;
//! - a request signed by the merchant client (`kassa_client::sign::sign_v1`, a separate
//!   implementation) verifies, also next to the fuzzed header's garbage entries;
//! - it does not verify with another secret, with a body byte flipped, or with a flipped
//!   header byte, unless the flip only changed the case of a hex digit.
#![no_main]

use kassa_client::sign::sign_v1;
use kassa_runtime::http::auth::{signature_matches, timestamp_in_window};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"sk_test_fuzz";
const NOW_S: i64 = 1_795_000_000;
const WINDOW_S: i64 = 300;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(5, |b| *b == b'\n');
    let (Some(signature), Some(timestamp), Some(method), Some(path)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let body = parts.next().unwrap_or_default();
    // Header values reach auth.rs as `&str` (`HeaderValue::to_str`): visible ASCII.
    let (Ok(signature), Ok(timestamp), Ok(method), Ok(path)) = (
        std::str::from_utf8(signature),
        std::str::from_utf8(timestamp),
        std::str::from_utf8(method),
        std::str::from_utf8(path),
    ) else {
        return;
    };

    match timestamp_in_window(timestamp, NOW_S, WINDOW_S) {
        Ok(ts) => {
            assert!(NOW_S.abs_diff(ts) <= WINDOW_S as u64);
            assert_eq!(timestamp.parse::<i64>(), Ok(ts));
        }
        Err(e) => assert_eq!(e.code, "timestamp_out_of_window"),
    }
    // Any window and clock: never a panic.
    let _ = timestamp_in_window(timestamp, i64::MIN, i64::MAX);
    let _ = timestamp_in_window(timestamp, i64::MAX, -1);
    let _ = signature_matches(SECRET, signature, timestamp, method, path, body);

    // The client's signature over the same request verifies, in any company.
    let ts = timestamp.parse::<i64>().unwrap_or(NOW_S);
    let ts_text = ts.to_string();
    let secret = std::str::from_utf8(SECRET).unwrap();
    let good = sign_v1(secret, ts, method, path, body);
    assert!(signature_matches(
        SECRET, &good, &ts_text, method, path, body
    ));
    assert!(signature_matches(
        SECRET,
        &format!("{signature},{good}"),
        &ts_text,
        method,
        path,
        body
    ));
    assert!(!signature_matches(
        b"sk_test_other",
        &good,
        &ts_text,
        method,
        path,
        body
    ));
    // Another method or timestamp is another message.
    assert!(!signature_matches(
        SECRET,
        &good,
        &(ts.wrapping_add(1)).to_string(),
        method,
        path,
        body
    ));
    if let Some(&pick) = body.first() {
        let mut tampered = body.to_vec();
        let at = usize::from(pick) % tampered.len();
        tampered[at] ^= 0x01;
        assert!(!signature_matches(
            SECRET, &good, &ts_text, method, path, &tampered
        ));
        let mut header = good.clone().into_bytes();
        let at = usize::from(pick) % header.len();
        header[at] ^= 1 << (pick % 7);
        if let Ok(header) = String::from_utf8(header) {
            if signature_matches(SECRET, &header, &ts_text, method, path, body) {
                assert!(header.eq_ignore_ascii_case(&good), "{header} verifies");
            }
        }
    }
});
