//! Restart intensity and backoff, as pure code: time comes in as `now_ms`, randomness as a
//! `u64`, so every decision can be replayed in a test.

use std::collections::VecDeque;

use crate::spec::{Backoff, Intensity};

/// Largest `max_restarts` honoured; a larger one is clamped. It bounds the restart timestamps a
/// tracker keeps (at most this plus one).
pub const MAX_RESTARTS_LIMIT: u32 = 10_000;

/// Whether the restart just recorded is allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// At most `max_restarts` restarts in the window: restart.
    Restart,
    /// More than `max_restarts` restarts in the window: give up (OTP: the supervisor terminates).
    GiveUp,
}

/// Counts restarts in a sliding window of `period_ms` (OTP's `add_restart`).
///
/// A restart recorded at `t` is in the window at `now_ms` while `now_ms - t <= period_ms`
/// (inclusive, like OTP). The restart that makes the count in the window exceed `max_restarts`
/// gets [`Verdict::GiveUp`].
#[derive(Clone, Debug)]
pub struct RestartTracker {
    intensity: Intensity,
    /// Times of the restarts still in the window, oldest first; at most `max_restarts + 1`.
    window_ms: VecDeque<u64>,
    restarts_total: u64,
}

impl RestartTracker {
    pub fn new(intensity: Intensity) -> Self {
        let intensity = Intensity {
            max_restarts: intensity.max_restarts.min(MAX_RESTARTS_LIMIT),
            period_ms: intensity.period_ms,
        };
        Self {
            intensity,
            window_ms: VecDeque::new(),
            restarts_total: 0,
        }
    }

    pub fn intensity(&self) -> Intensity {
        self.intensity
    }

    /// Record a restart at `now_ms` and say whether it is allowed. `now_ms` must not go
    /// backwards between calls (a monotonic clock); if it does, it is treated as the latest time
    /// seen.
    pub fn record(&mut self, now_ms: u64) -> Verdict {
        let now_ms = now_ms.max(self.window_ms.back().copied().unwrap_or(0));
        self.expire(now_ms);
        self.window_ms.push_back(now_ms);
        self.restarts_total = self.restarts_total.saturating_add(1);
        let limit = self.intensity.max_restarts as usize;
        let verdict = if self.window_ms.len() > limit {
            Verdict::GiveUp
        } else {
            Verdict::Restart
        };
        // Keep the bound even if the owner records again after a GiveUp.
        while self.window_ms.len() > limit + 1 {
            self.window_ms.pop_front();
        }
        debug_assert!(self.window_ms.len() <= limit + 1);
        verdict
    }

    /// Restarts inside the window ending at `now_ms`.
    pub fn restarts_window(&self, now_ms: u64) -> u32 {
        let in_window = self
            .window_ms
            .iter()
            .filter(|&&t| now_ms.saturating_sub(t) <= self.intensity.period_ms)
            .count();
        // The deque holds at most MAX_RESTARTS_LIMIT + 1 entries, so this always fits.
        u32::try_from(in_window).unwrap_or(u32::MAX)
    }

    /// Restarts since the tracker was made.
    pub fn restarts_total(&self) -> u64 {
        self.restarts_total
    }

    fn expire(&mut self, now_ms: u64) {
        while let Some(&oldest) = self.window_ms.front() {
            if now_ms.saturating_sub(oldest) > self.intensity.period_ms {
                self.window_ms.pop_front();
            } else {
                break;
            }
        }
    }
}

impl Backoff {
    /// Delay before restart number `attempt` (0 for the first restart in the window): `min_ms *
    /// 2^attempt`, capped at `max_ms` (and never below `min_ms`). With `jitter`, uniform in
    /// `[min_ms, that]` drawn from `rng_u64` — "full jitter" above a floor, so a restart never
    /// comes sooner than `min_ms`.
    pub fn delay_ms(&self, attempt: u32, rng_u64: u64) -> u64 {
        let floor_ms = self.min_ms;
        let ceiling_ms = self.max_ms.max(floor_ms);
        let factor = 1u64.checked_shl(attempt).unwrap_or(u64::MAX);
        let capped_ms = floor_ms.saturating_mul(factor).clamp(floor_ms, ceiling_ms);
        if !self.jitter {
            return capped_ms;
        }
        let span_ms = capped_ms - floor_ms; // capped_ms >= floor_ms by the clamp
        match span_ms.checked_add(1) {
            Some(choices) => floor_ms + rng_u64 % choices,
            None => floor_ms.saturating_add(rng_u64), // span is the whole u64 range
        }
    }
}

/// A small deterministic generator (SplitMix64) for backoff jitter, so callers can keep one
/// seeded value instead of depending on `rand`.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tracker(max_restarts: u32, period_ms: u64) -> RestartTracker {
        RestartTracker::new(Intensity::new(max_restarts, period_ms))
    }

    #[test]
    fn more_than_max_in_the_window_gives_up() {
        let mut t = tracker(3, 5_000);
        assert_eq!(t.record(0), Verdict::Restart);
        assert_eq!(t.record(1_000), Verdict::Restart);
        assert_eq!(t.record(2_000), Verdict::Restart);
        assert_eq!(t.restarts_window(2_000), 3);
        assert_eq!(t.record(3_000), Verdict::GiveUp);
        assert_eq!(t.restarts_total(), 4);
    }

    #[test]
    fn window_edges_are_inclusive_like_otp() {
        // (max, period, restart times, verdict of the last one)
        let table: &[(u32, u64, &[u64], Verdict)] = &[
            // a restart exactly period_ms ago still counts
            (1, 1_000, &[0, 1_000], Verdict::GiveUp),
            // one ms later it has left the window
            (1, 1_000, &[0, 1_001], Verdict::Restart),
            (2, 1_000, &[0, 500, 1_000], Verdict::GiveUp),
            (2, 1_000, &[0, 500, 1_001], Verdict::Restart),
            // max 0: the first restart already gives up
            (0, 1_000, &[0], Verdict::GiveUp),
            // period 0: only restarts at the same ms are together
            (1, 0, &[5, 5], Verdict::GiveUp),
            (1, 0, &[5, 6], Verdict::Restart),
        ];
        for (max, period, times, expected) in table {
            let mut t = tracker(*max, *period);
            let mut last = Verdict::Restart;
            for &at in *times {
                last = t.record(at);
            }
            assert_eq!(last, *expected, "max {max} period {period} times {times:?}");
        }
    }

    #[test]
    fn window_count_falls_as_time_passes() {
        let mut t = tracker(5, 1_000);
        t.record(0);
        t.record(400);
        assert_eq!(t.restarts_window(1_000), 2);
        assert_eq!(t.restarts_window(1_001), 1);
        assert_eq!(t.restarts_window(1_401), 0);
        assert_eq!(t.restarts_total(), 2);
    }

    #[test]
    fn backoff_doubles_from_min_to_max() {
        let b = Backoff::new(100, 1_000, false);
        let delays: Vec<u64> = (0..6).map(|a| b.delay_ms(a, 0)).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(b.delay_ms(200, 0), 1_000);
        assert_eq!(Backoff::new(0, 50, false).delay_ms(3, 0), 0);
        assert_eq!(Backoff::new(80, 10, false).delay_ms(3, 0), 80);
    }

    #[test]
    fn jitter_stays_between_min_and_the_step() {
        let b = Backoff::new(100, 1_000, true);
        assert_eq!(b.delay_ms(0, 12_345), 100);
        assert_eq!(b.delay_ms(2, 0), 100);
        assert_eq!(b.delay_ms(2, 300), 400);
        assert_eq!(b.delay_ms(2, 301), 100);
    }

    proptest! {
        #[test]
        fn verdict_matches_a_naive_count(
            max in 0u32..6,
            period in 0u64..2_000,
            gaps in proptest::collection::vec(0u64..800, 1..40),
        ) {
            let mut t = tracker(max, period);
            let mut times = Vec::new();
            let mut now = 0u64;
            for gap in gaps {
                now += gap;
                times.push(now);
                let verdict = t.record(now);
                let in_window = times.iter().filter(|&&x| now - x <= period).count();
                let expected = if in_window > max as usize { Verdict::GiveUp } else { Verdict::Restart };
                prop_assert_eq!(verdict, expected);
                prop_assert_eq!(t.restarts_window(now) as usize, in_window.min(max as usize + 1));
                prop_assert_eq!(t.restarts_total(), times.len() as u64);
            }
        }

        #[test]
        fn delay_is_within_bounds(min in 0u64..10_000, max in 0u64..100_000, attempt in 0u32..80, rng: u64, jitter: bool) {
            let d = Backoff::new(min, max, jitter).delay_ms(attempt, rng);
            prop_assert!(d >= min);
            prop_assert!(d <= max.max(min));
        }
    }
}
