//! The merchant callback signature (`kassa_client::webhook`, which Kassa's notifier signs
//! with and receivers verify with): `Kassa-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret,
//! "{t}.{body}")>`.
//!
//! Input: the first line is a `Kassa-Signature` value, the rest the body; the first body byte,
//! if any, picks the byte a tamper check flips and the signing time's offset from now.
//!
//! Beyond "no panic" on any header:
//! - an accepted header's timestamp is within the tolerance before now;
//! - what `webhook_signature` signs verifies (fresh), and is refused with another secret, a
//!   flipped body byte, a flipped header byte (unless only a hex digit's case changed) or once
//!   it is older than the tolerance;
//! - a good header still verifies after a few garbage entries without `t=` in front of it.
#![no_main]

use kassa_client::webhook::{WebhookError, verify_webhook, webhook_signature};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "whsec_fuzz";
const NOW_S: i64 = 1_795_000_000;
const TOLERANCE_S: i64 = 300;

fuzz_target!(|data: &[u8]| {
    let (header, body) = match data.iter().position(|b| *b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let Ok(header) = std::str::from_utf8(header) else {
        return;
    };

    if let Ok(t) = verify_webhook(SECRET, header, body, NOW_S, TOLERANCE_S) {
        assert!(NOW_S.saturating_sub(t) <= TOLERANCE_S);
    }
    let _ = verify_webhook(SECRET, header, body, i64::MIN, i64::MAX);
    let _ = verify_webhook(SECRET, header, body, i64::MAX, 0);

    let pick = body.first().copied().unwrap_or(0);
    let t = NOW_S - i64::from(pick % 200);
    let good = webhook_signature(SECRET, t, body);
    assert_eq!(
        verify_webhook(SECRET, &good, body, NOW_S, TOLERANCE_S),
        Ok(t)
    );
    assert_eq!(
        verify_webhook("whsec_other", &good, body, NOW_S, TOLERANCE_S),
        Err(WebhookError::Mismatch)
    );
    assert!(matches!(
        verify_webhook(SECRET, &good, body, t + TOLERANCE_S + 1, TOLERANCE_S),
        Err(WebhookError::TooOld { .. })
    ));
    // Garbage entries in front (no `t=`, at most a few `v1=`) do not hide the good one.
    let garbage: Vec<&str> = header
        .split(',')
        .filter(|item| !item.trim().starts_with("t="))
        .take(4)
        .collect();
    if !garbage.is_empty() {
        let mixed = format!("{},{good}", garbage.join(","));
        assert_eq!(
            verify_webhook(SECRET, &mixed, body, NOW_S, TOLERANCE_S),
            Ok(t),
            "{mixed}"
        );
    }
    if !body.is_empty() {
        let mut tampered = body.to_vec();
        let at = usize::from(pick) % tampered.len();
        tampered[at] ^= 0x80;
        assert_eq!(
            verify_webhook(SECRET, &good, &tampered, NOW_S, TOLERANCE_S),
            Err(WebhookError::Mismatch)
        );
    }
    let mut flipped = good.clone().into_bytes();
    let at = usize::from(pick) % flipped.len();
    flipped[at] ^= 1 << (pick % 7);
    if let Ok(flipped) = String::from_utf8(flipped) {
        if verify_webhook(SECRET, &flipped, body, NOW_S, TOLERANCE_S).is_ok() {
            assert!(flipped.eq_ignore_ascii_case(&good), "{flipped} verifies");
        }
    }
});
