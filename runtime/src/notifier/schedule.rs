//! What a failed attempt does to its delivery: retry after the schedule's next delay (moved by
//! jitter), or dead once the round's attempts are spent. Pure: time and randomness come in.

use kassa_store::{AttemptOutcome, UnixMs};

/// The outcome of a failed attempt that was attempt `round_attempts` (1-based) of its round.
///
/// `schedule_ms[i]` is the delay before attempt `i + 1`, so the next attempt waits
/// `schedule_ms[round_attempts]`; past the schedule's end the delivery is dead. `random` is any
/// u64 (the caller's RNG); it picks the jitter, up to `jitter_percent` of the delay either way.
pub fn after_failure(
    schedule_ms: &[u64],
    round_attempts: u32,
    jitter_percent: u32,
    now_ms: UnixMs,
    random: u64,
) -> AttemptOutcome {
    let Some(&delay_ms) = schedule_ms.get(round_attempts as usize) else {
        return AttemptOutcome::Dead;
    };
    let delay_ms = jittered(delay_ms, jitter_percent, random);
    AttemptOutcome::Retry {
        next_attempt_ms: now_ms.saturating_add(i64::try_from(delay_ms).unwrap_or(i64::MAX)),
    }
}

/// `delay_ms` moved by a uniform amount in `[-span, +span]`, `span = delay_ms * percent / 100`.
fn jittered(delay_ms: u64, jitter_percent: u32, random: u64) -> u64 {
    let span = delay_ms.saturating_mul(u64::from(jitter_percent.min(100))) / 100;
    if span == 0 {
        return delay_ms;
    }
    // `2 * span + 1` fits: span <= delay_ms <= u64::MAX / 100 in any valid configuration, and
    // saturating keeps an absurd one harmless.
    let offset = random % span.saturating_mul(2).saturating_add(1);
    (delay_ms - span).saturating_add(offset)
}

/// SplitMix64: a small, seedable generator for the jitter (not for anything secret).
pub struct Jitter {
    state: u64,
}

impl Jitter {
    pub fn seeded(seed: u64) -> Jitter {
        Jitter { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEDULE: [u64; 4] = [0, 200, 400, 800];

    #[test]
    fn each_failure_waits_the_next_delay_then_the_delivery_dies() {
        let next = |attempts| after_failure(&SCHEDULE, attempts, 0, 1_000, 7);
        assert_eq!(
            next(1),
            AttemptOutcome::Retry {
                next_attempt_ms: 1_200
            }
        );
        assert_eq!(
            next(2),
            AttemptOutcome::Retry {
                next_attempt_ms: 1_400
            }
        );
        assert_eq!(
            next(3),
            AttemptOutcome::Retry {
                next_attempt_ms: 1_800
            }
        );
        assert_eq!(next(4), AttemptOutcome::Dead);
        assert_eq!(next(40), AttemptOutcome::Dead);
    }

    #[test]
    fn jitter_stays_within_its_share_and_covers_both_sides() {
        let mut rng = Jitter::seeded(42);
        let (mut low, mut high) = (u64::MAX, 0);
        for _ in 0..10_000 {
            let delay = jittered(60_000, 10, rng.next_u64());
            assert!((54_000..=66_000).contains(&delay), "{delay}");
            low = low.min(delay);
            high = high.max(delay);
        }
        assert!(low < 55_000 && high > 65_000, "{low}..{high}");
        assert_eq!(jittered(60_000, 0, 12345), 60_000);
        assert_eq!(jittered(0, 10, 12345), 0);
        assert!(jittered(u64::MAX / 2, 100, u64::MAX) >= 1);
    }
}
