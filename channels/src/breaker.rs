//! The circuit breaker: a pure state machine over injected time (`now_ms`), no I/O, no clock.
//!
//! ```text
//!            failure rate ≥ failure_rate_percent
//!            over ≥ min_calls of the last window_size calls
//!   ┌────────┐ ─────────────────────────────────────► ┌──────┐
//!   │ Closed │                                        │ Open │ ◄─┐ refuses every call with
//!   └────────┘ ◄──────────┐                           └──────┘   │ `retry_after_ms`
//!                          │ half_open_probes            │       │
//!                          │ successes                   │ open_ms passed (on the next call)
//!                          │                             ▼       │
//!                        ┌───────────┐  any probe fails          │
//!                        │ Half-open │ ──────────────────────────┘
//!                        └───────────┘  lets at most half_open_probes calls through
//! ```
//!
//! A call asks [`Breaker::try_acquire`] for an [`Admission`] before each attempt and hands
//! the attempt's [`CallOutcome`] back with [`Breaker::record`]. Every admission must be
//! recorded exactly once; an attempt that never happened (cancelled, refused by the rate limit
//! or the bulkhead) is recorded as [`CallOutcome::Ignored`], which frees a half-open probe slot.
//!
//! Each state change starts a new *epoch*; an admission remembers its epoch, so the late answer
//! of a call admitted before the breaker opened cannot close it again or count in the next
//! window.
//!
//! What is a failure is the caller's decision ([`CallOutcome`]); the adapter counts timeouts,
//! connect errors, 5xx and unreadable answers, and never declines, 4xx rejections or rate
//! limiting.

use std::collections::VecDeque;

use serde::Serialize;

/// The upper bound on `window_size`, which is also the window's memory bound.
pub const WINDOW_SIZE_LIMIT: u32 = 10_000;

/// The upper bound on `open_ms` and `window_ms` (one day).
pub const DURATION_MS_LIMIT: u64 = 86_400_000;

/// The upper bound on `half_open_probes`.
pub const HALF_OPEN_PROBES_LIMIT: u32 = 1_000;

/// The breaker's settings. Times are in milliseconds of the injected clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// How many of the most recent calls the failure rate is computed over (1–10 000).
    pub window_size: u32,
    /// When set (1 ms–1 day), calls older than this drop out of the window as well.
    pub window_ms: Option<u64>,
    /// The fewest calls in the window before the breaker may open (1–`window_size`).
    pub min_calls: u32,
    /// The failure rate (1–100 %) at or above which the breaker opens.
    pub failure_rate_percent: u32,
    /// How long the breaker stays open before it lets probes through (1 ms–1 day).
    pub open_ms: u64,
    /// How many probe calls half-open lets through (1–1 000); all must succeed to close.
    pub half_open_probes: u32,
    /// The `retry_after_ms` given to a call refused while half-open's probes are all out.
    pub probe_retry_after_ms: u64,
}

impl BreakerConfig {
    /// Why these settings cannot work, if they cannot: `(setting, reason)`.
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if !(1..=WINDOW_SIZE_LIMIT).contains(&self.window_size) {
            return Err(("breaker_window_size", "must be between 1 and 10000"));
        }
        if self
            .window_ms
            .is_some_and(|ms| !(1..=DURATION_MS_LIMIT).contains(&ms))
        {
            return Err((
                "breaker_window_ms",
                "must be between 1 and 86400000 when set",
            ));
        }
        if !(1..=self.window_size).contains(&self.min_calls) {
            return Err((
                "breaker_min_calls",
                "must be at least 1 and at most breaker_window_size",
            ));
        }
        if !(1..=100).contains(&self.failure_rate_percent) {
            return Err(("breaker_failure_rate_percent", "must be between 1 and 100"));
        }
        if !(1..=DURATION_MS_LIMIT).contains(&self.open_ms) {
            return Err(("breaker_open_ms", "must be between 1 and 86400000"));
        }
        if !(1..=HALF_OPEN_PROBES_LIMIT).contains(&self.half_open_probes) {
            return Err(("breaker_half_open_probes", "must be between 1 and 1000"));
        }
        Ok(())
    }
}

/// The breaker's state as operators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls pass; their outcomes fill the window.
    Closed,
    /// Calls are refused until `open_until_ms`.
    Open,
    /// A few probe calls pass; the rest are refused.
    HalfOpen,
}

/// How one attempt ended, as far as the breaker is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// The channel answered (a decline and a 4xx rejection are answers too).
    Success,
    /// The channel is sick: timeout, connect error, 5xx, unreadable answer.
    Failure,
    /// Says nothing about the channel's health (never sent, cancelled, the provider's 429).
    Ignored,
}

/// Permission for one attempt; hand it back to [`Breaker::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "every admission must be recorded, or a half-open probe slot stays taken"]
pub struct Admission {
    epoch: u64,
    probe: bool,
}

impl Admission {
    /// Whether this attempt is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

/// A refused call: the breaker is open, or half-open with every probe out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// When a call may be let through again (at least 1).
    pub retry_after_ms: u64,
}

/// The breaker's figures for `/admin/channels` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BreakerHealth {
    /// The state a call arriving now would meet.
    pub state: BreakerState,
    /// Failures per hundred calls in the window (0 when it is empty).
    pub failure_rate_percent: u32,
    /// Calls the failure rate is computed over.
    pub calls_in_window: u32,
    /// When the breaker last opened (not while closed).
    pub opened_at_ms: Option<i64>,
    /// Until when it refuses calls (not while closed).
    pub open_until_ms: Option<i64>,
    /// How many times it has opened.
    pub opens_total: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    Open {
        opened_at_ms: i64,
        until_ms: i64,
    },
    HalfOpen {
        opened_at_ms: i64,
        until_ms: i64,
        /// Probes let through and not yet recorded, plus those recorded as successes.
        admitted: u32,
        succeeded: u32,
    },
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at_ms: i64,
    failed: bool,
}

/// One channel's circuit breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    phase: Phase,
    epoch: u64,
    /// The last `window_size` calls recorded while closed, oldest first.
    window: VecDeque<Sample>,
    failures_in_window: u32,
    opens_total: u64,
}

impl Breaker {
    /// A closed breaker with an empty window. `config` must pass [`BreakerConfig::check`].
    pub fn new(config: BreakerConfig) -> Self {
        debug_assert_eq!(config.check(), Ok(()));
        Self {
            config,
            phase: Phase::Closed,
            epoch: 0,
            window: VecDeque::with_capacity(config.window_size as usize),
            failures_in_window: 0,
            opens_total: 0,
        }
    }

    /// The settings.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The state a call arriving at `now_ms` would meet.
    pub fn state(&self, now_ms: i64) -> BreakerState {
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { until_ms, .. } if now_ms < until_ms => BreakerState::Open,
            Phase::Open { .. } | Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Asks to let one attempt through at `now_ms`.
    pub fn try_acquire(&mut self, now_ms: i64) -> Result<Admission, Refusal> {
        match self.phase {
            Phase::Closed => Ok(Admission {
                epoch: self.epoch,
                probe: false,
            }),
            Phase::Open { until_ms, .. } if now_ms < until_ms => Err(Refusal {
                retry_after_ms: retry_after(until_ms, now_ms),
            }),
            Phase::Open {
                opened_at_ms,
                until_ms,
            } => {
                self.enter(Phase::HalfOpen {
                    opened_at_ms,
                    until_ms,
                    admitted: 0,
                    succeeded: 0,
                });
                self.admit_probe()
            }
            Phase::HalfOpen { .. } => self.admit_probe(),
        }
    }

    fn admit_probe(&mut self) -> Result<Admission, Refusal> {
        let refusal = Refusal {
            retry_after_ms: self.config.probe_retry_after_ms.max(1),
        };
        let Phase::HalfOpen { admitted, .. } = &mut self.phase else {
            debug_assert!(false, "probes are admitted only while half-open");
            return Err(refusal);
        };
        if *admitted >= self.config.half_open_probes {
            return Err(refusal);
        }
        *admitted += 1;
        debug_assert!(*admitted <= self.config.half_open_probes);
        Ok(Admission {
            epoch: self.epoch,
            probe: true,
        })
    }

    /// Records how an admitted attempt ended, at `now_ms`. An admission from an earlier epoch
    /// (the breaker changed state since) is ignored.
    pub fn record(&mut self, now_ms: i64, admission: Admission, outcome: CallOutcome) {
        if admission.epoch != self.epoch {
            return;
        }
        match (&mut self.phase, outcome) {
            (Phase::Closed, CallOutcome::Ignored) => {}
            (Phase::Closed, CallOutcome::Success | CallOutcome::Failure) => {
                debug_assert!(!admission.probe);
                self.push(now_ms, outcome == CallOutcome::Failure);
                if self.should_open(now_ms) {
                    self.open(now_ms);
                }
            }
            (
                Phase::HalfOpen {
                    admitted,
                    succeeded,
                    ..
                },
                outcome,
            ) => {
                debug_assert!(admission.probe && *succeeded < *admitted);
                match outcome {
                    CallOutcome::Ignored => *admitted -= 1,
                    CallOutcome::Success => {
                        *succeeded += 1;
                        if *succeeded >= self.config.half_open_probes {
                            self.close();
                        }
                    }
                    CallOutcome::Failure => self.open(now_ms),
                }
            }
            // An open breaker admits nothing, so no admission of its epoch exists.
            (Phase::Open { .. }, _) => debug_assert!(false, "an admission of an open epoch"),
        }
    }

    /// The figures at `now_ms`.
    pub fn health(&self, now_ms: i64) -> BreakerHealth {
        let (calls, failures) = self.live_window(now_ms);
        let (opened_at_ms, open_until_ms) = match self.phase {
            Phase::Closed => (None, None),
            Phase::Open {
                opened_at_ms,
                until_ms,
            }
            | Phase::HalfOpen {
                opened_at_ms,
                until_ms,
                ..
            } => (Some(opened_at_ms), Some(until_ms)),
        };
        BreakerHealth {
            state: self.state(now_ms),
            failure_rate_percent: failure_rate_percent(calls, failures),
            calls_in_window: calls,
            opened_at_ms,
            open_until_ms,
            opens_total: self.opens_total,
        }
    }

    fn push(&mut self, now_ms: i64, failed: bool) {
        if self.window.len() >= self.config.window_size as usize {
            self.pop_oldest();
        }
        self.window.push_back(Sample {
            at_ms: now_ms,
            failed,
        });
        self.failures_in_window += u32::from(failed);
        self.prune(now_ms);
        debug_assert!(self.window.len() <= self.config.window_size as usize);
        debug_assert!(self.failures_in_window as usize <= self.window.len());
    }

    fn pop_oldest(&mut self) {
        if let Some(oldest) = self.window.pop_front() {
            self.failures_in_window -= u32::from(oldest.failed);
        }
    }

    /// Drops calls older than `window_ms`.
    fn prune(&mut self, now_ms: i64) {
        let Some(window_ms) = self.config.window_ms else {
            return;
        };
        let oldest_ms = now_ms.saturating_sub_unsigned(window_ms);
        while self.window.front().is_some_and(|s| s.at_ms < oldest_ms) {
            self.pop_oldest();
        }
    }

    /// `(calls, failures)` in the window as it stands at `now_ms`, without changing it.
    fn live_window(&self, now_ms: i64) -> (u32, u32) {
        let oldest_ms = self
            .config
            .window_ms
            .map_or(i64::MIN, |ms| now_ms.saturating_sub_unsigned(ms));
        let live = self.window.iter().filter(|s| s.at_ms >= oldest_ms);
        let (calls, failures) = live.fold((0u32, 0u32), |(calls, failures), sample| {
            (calls + 1, failures + u32::from(sample.failed))
        });
        (calls, failures)
    }

    fn should_open(&self, now_ms: i64) -> bool {
        let (calls, failures) = self.live_window(now_ms);
        calls >= self.config.min_calls
            && u64::from(failures) * 100
                >= u64::from(self.config.failure_rate_percent) * u64::from(calls)
    }

    fn open(&mut self, now_ms: i64) {
        let until_ms = now_ms.saturating_add_unsigned(self.config.open_ms);
        self.enter(Phase::Open {
            opened_at_ms: now_ms,
            until_ms,
        });
        self.opens_total += 1;
        self.clear_window();
        debug_assert!(self.state(now_ms) == BreakerState::Open);
    }

    fn close(&mut self) {
        self.enter(Phase::Closed);
        self.clear_window();
        debug_assert!(self.window.is_empty() && self.failures_in_window == 0);
    }

    fn clear_window(&mut self) {
        self.window.clear();
        self.failures_in_window = 0;
    }

    fn enter(&mut self, phase: Phase) {
        debug_assert_ne!(self.phase, phase);
        self.phase = phase;
        self.epoch += 1;
    }
}

fn retry_after(until_ms: i64, now_ms: i64) -> u64 {
    u64::try_from(until_ms.saturating_sub(now_ms))
        .unwrap_or(0)
        .max(1)
}

fn failure_rate_percent(calls: u32, failures: u32) -> u32 {
    if calls == 0 {
        0
    } else {
        // At most 100, so the cast back cannot truncate.
        (u64::from(failures) * 100 / u64::from(calls)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use CallOutcome::{Failure as F, Ignored as I, Success as S};

    fn config() -> BreakerConfig {
        BreakerConfig {
            window_size: 4,
            window_ms: None,
            min_calls: 4,
            failure_rate_percent: 50,
            open_ms: 200,
            half_open_probes: 2,
            probe_retry_after_ms: 30,
        }
    }

    /// Lets one call through at `now_ms` and records `outcome`.
    fn call(breaker: &mut Breaker, now_ms: i64, outcome: CallOutcome) {
        let admission = breaker.try_acquire(now_ms).expect("admitted");
        breaker.record(now_ms, admission, outcome);
    }

    /// A breaker that opened at `at_ms`.
    fn opened(config: BreakerConfig, at_ms: i64) -> Breaker {
        let mut breaker = Breaker::new(config);
        for _ in 0..config.min_calls {
            call(&mut breaker, at_ms, F);
        }
        assert_eq!(breaker.state(at_ms), BreakerState::Open);
        breaker
    }

    #[test]
    fn closed_opens_only_past_min_calls_and_the_failure_rate() {
        // (window_size, min_calls, failure_rate_percent, outcomes, state after the last one)
        let table: &[(u32, u32, u32, &[CallOutcome], BreakerState)] = &[
            (4, 4, 50, &[F, F, F], BreakerState::Closed), // below min_calls
            (4, 4, 50, &[F, F, F, F], BreakerState::Open),
            (4, 4, 50, &[S, F, S, F], BreakerState::Open), // exactly 50 %
            (4, 4, 50, &[S, S, S, F], BreakerState::Closed), // 25 %
            (4, 4, 50, &[F, S, S, S, S], BreakerState::Closed), // the failure slid out
            (4, 4, 50, &[S, S, S, S, F, F], BreakerState::Open), // the last four: 50 %
            (4, 4, 50, &[F, F, F, I, I, I], BreakerState::Closed), // ignored counts nothing
            (4, 2, 100, &[S, F, F], BreakerState::Closed), // 66 % < 100 %
            (4, 2, 100, &[F, F], BreakerState::Open),
            (10, 1, 1, &[F], BreakerState::Open),
            (10, 3, 34, &[S, S, F], BreakerState::Closed), // 33.3 % < 34 %
            (10, 3, 33, &[S, S, F], BreakerState::Open),
        ];
        for (row, &(window_size, min_calls, percent, outcomes, expected)) in
            table.iter().enumerate()
        {
            let mut breaker = Breaker::new(BreakerConfig {
                window_size,
                min_calls,
                failure_rate_percent: percent,
                ..config()
            });
            for (now_ms, &outcome) in (0_i64..).zip(outcomes) {
                assert_eq!(breaker.state(now_ms), BreakerState::Closed, "row {row}");
                call(&mut breaker, now_ms, outcome);
            }
            assert_eq!(breaker.state(outcomes.len() as i64), expected, "row {row}");
        }
    }

    #[test]
    fn calls_older_than_window_ms_drop_out() {
        let mut breaker = Breaker::new(BreakerConfig {
            window_ms: Some(1_000),
            ..config()
        });
        for now_ms in [0, 10, 20] {
            call(&mut breaker, now_ms, F);
        }
        // The three failures are more than 1 s old: one more failure is 1 call of 4 needed.
        call(&mut breaker, 1_500, F);
        assert_eq!(breaker.state(1_500), BreakerState::Closed);
        assert_eq!(breaker.health(1_500).calls_in_window, 1);
        for now_ms in [1_600, 1_700, 1_800] {
            call(&mut breaker, now_ms, F);
        }
        assert_eq!(breaker.state(1_800), BreakerState::Open);
    }

    #[test]
    fn open_refuses_with_the_time_left_until_open_ms_has_passed() {
        let mut breaker = opened(config(), 1_000);
        assert_eq!(
            breaker.try_acquire(1_050),
            Err(Refusal {
                retry_after_ms: 150
            })
        );
        assert_eq!(
            breaker.try_acquire(1_199),
            Err(Refusal { retry_after_ms: 1 })
        );
        let health = breaker.health(1_199);
        assert_eq!(health.state, BreakerState::Open);
        assert_eq!(health.opened_at_ms, Some(1_000));
        assert_eq!(health.open_until_ms, Some(1_200));
        assert_eq!(health.opens_total, 1);
        assert_eq!(health.calls_in_window, 0, "the window starts afresh");
        // A clock that went backwards still refuses, with a positive retry_after.
        assert!(breaker.try_acquire(0).is_err());
    }

    #[test]
    fn half_open_lets_at_most_the_probes_through() {
        let mut breaker = opened(config(), 0);
        assert_eq!(breaker.state(200), BreakerState::HalfOpen);
        let first = breaker.try_acquire(200).expect("probe 1");
        let second = breaker.try_acquire(201).expect("probe 2");
        assert!(first.is_probe() && second.is_probe());
        assert_eq!(
            breaker.try_acquire(202),
            Err(Refusal { retry_after_ms: 30 })
        );
        breaker.record(203, first, S);
        assert_eq!(
            breaker.try_acquire(204),
            Err(Refusal { retry_after_ms: 30 }),
            "a succeeded probe keeps its slot"
        );
        breaker.record(205, second, S);
        assert_eq!(breaker.state(205), BreakerState::Closed);
        let health = breaker.health(205);
        assert_eq!((health.opened_at_ms, health.open_until_ms), (None, None));
        assert!(!breaker.try_acquire(206).expect("closed").is_probe());
    }

    #[test]
    fn a_failing_probe_opens_the_breaker_again() {
        let mut breaker = opened(config(), 0);
        let first = breaker.try_acquire(300).expect("probe 1");
        let second = breaker.try_acquire(300).expect("probe 2");
        breaker.record(310, first, F);
        assert_eq!(breaker.state(310), BreakerState::Open);
        assert_eq!(breaker.health(310).opens_total, 2);
        assert_eq!(breaker.health(310).open_until_ms, Some(510));
        // The other probe's late success belongs to the closed-off half-open epoch.
        breaker.record(320, second, S);
        assert_eq!(breaker.state(320), BreakerState::Open);
        assert_eq!(
            breaker.try_acquire(320),
            Err(Refusal {
                retry_after_ms: 190
            })
        );
    }

    #[test]
    fn an_ignored_probe_frees_its_slot() {
        let mut breaker = opened(config(), 0);
        let first = breaker.try_acquire(200).expect("probe 1");
        let second = breaker.try_acquire(200).expect("probe 2");
        breaker.record(201, first, I);
        let third = breaker.try_acquire(202).expect("the freed slot");
        breaker.record(203, second, S);
        assert_eq!(breaker.state(203), BreakerState::HalfOpen);
        breaker.record(204, third, S);
        assert_eq!(breaker.state(204), BreakerState::Closed);
    }

    #[test]
    fn answers_from_before_the_breaker_opened_are_ignored() {
        let mut breaker = Breaker::new(config());
        let late = breaker.try_acquire(0).expect("closed");
        for _ in 0..4 {
            call(&mut breaker, 1, F);
        }
        // Neither reopens (opens_total stays 1) nor closes the open breaker.
        breaker.record(2, late, F);
        breaker.record(3, late, S);
        assert_eq!(breaker.health(3).opens_total, 1);
        assert_eq!(breaker.state(3), BreakerState::Open);
        // Nor counts in the window after the breaker closed again.
        let probes = [breaker.try_acquire(201), breaker.try_acquire(201)];
        for probe in probes {
            breaker.record(202, probe.expect("probe"), S);
        }
        assert_eq!(breaker.state(202), BreakerState::Closed);
        breaker.record(203, late, F);
        assert_eq!(breaker.health(203).calls_in_window, 0);
    }

    #[test]
    fn health_reports_the_window_and_serialises_states_in_snake_case() {
        let mut breaker = Breaker::new(BreakerConfig {
            window_size: 10,
            min_calls: 10,
            ..config()
        });
        for outcome in [S, F, S, I] {
            call(&mut breaker, 5, outcome);
        }
        let health = breaker.health(5);
        assert_eq!(health.state, BreakerState::Closed);
        assert_eq!(health.calls_in_window, 3);
        assert_eq!(health.failure_rate_percent, 33);
        let json = serde_json::to_value(health).expect("serialisable");
        assert_eq!(json["state"], "closed");
        assert_eq!(json["opened_at_ms"], serde_json::Value::Null);
        assert_eq!(
            serde_json::to_value(BreakerState::HalfOpen).expect("serialisable"),
            "half_open"
        );
    }

    #[test]
    fn config_bounds_are_checked() {
        assert_eq!(config().check(), Ok(()));
        let bad = [
            BreakerConfig {
                window_size: 0,
                min_calls: 0,
                ..config()
            },
            BreakerConfig {
                window_size: WINDOW_SIZE_LIMIT + 1,
                ..config()
            },
            BreakerConfig {
                min_calls: 0,
                ..config()
            },
            BreakerConfig {
                min_calls: 5,
                ..config()
            },
            BreakerConfig {
                failure_rate_percent: 0,
                ..config()
            },
            BreakerConfig {
                failure_rate_percent: 101,
                ..config()
            },
            BreakerConfig {
                open_ms: 0,
                ..config()
            },
            BreakerConfig {
                half_open_probes: 0,
                ..config()
            },
            BreakerConfig {
                window_ms: Some(0),
                ..config()
            },
            BreakerConfig {
                window_ms: Some(DURATION_MS_LIMIT + 1),
                ..config()
            },
            BreakerConfig {
                open_ms: DURATION_MS_LIMIT + 1,
                ..config()
            },
            BreakerConfig {
                half_open_probes: HALF_OPEN_PROBES_LIMIT + 1,
                ..config()
            },
        ];
        for config in bad {
            assert!(config.check().is_err(), "{config:?}");
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Advance the clock, then ask for an admission.
        Acquire { advance_ms: u16 },
        /// Record the outstanding admission at this index (modulo) with an outcome.
        Record { index: usize, outcome: u8 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u16..150).prop_map(|advance_ms| Op::Acquire { advance_ms }),
            (any::<usize>(), 0u8..3).prop_map(|(index, outcome)| Op::Record { index, outcome }),
        ]
    }

    proptest! {
        /// Whatever the interleaving of calls and answers: an open breaker admits nothing
        /// before its time, half-open never has more than `half_open_probes` probes out,
        /// every refusal names a positive wait, and the window never outgrows its bound.
        #[test]
        fn invariants_hold_for_any_interleaving(ops in proptest::collection::vec(op(), 1..300)) {
            let config = config();
            let mut breaker = Breaker::new(config);
            let mut now_ms: i64 = 0;
            let mut outstanding: Vec<Admission> = Vec::new();
            for op in ops {
                match op {
                    Op::Acquire { advance_ms } => {
                        now_ms += i64::from(advance_ms);
                        let before = breaker.health(now_ms);
                        match breaker.try_acquire(now_ms) {
                            Ok(admission) => {
                                prop_assert_ne!(before.state, BreakerState::Open);
                                prop_assert_eq!(
                                    admission.is_probe(),
                                    before.state == BreakerState::HalfOpen
                                );
                                outstanding.push(admission);
                            }
                            Err(refusal) => {
                                prop_assert_ne!(before.state, BreakerState::Closed);
                                prop_assert!(refusal.retry_after_ms >= 1);
                            }
                        }
                        let epoch = breaker.epoch;
                        let probes_out = outstanding
                            .iter()
                            .filter(|a| a.probe && a.epoch == epoch)
                            .count();
                        prop_assert!(probes_out <= config.half_open_probes as usize);
                    }
                    Op::Record { index, outcome } => {
                        if outstanding.is_empty() {
                            continue;
                        }
                        let admission = outstanding.swap_remove(index % outstanding.len());
                        let outcome = [S, F, I][usize::from(outcome)];
                        let live_probe = admission.is_probe() && admission.epoch == breaker.epoch;
                        breaker.record(now_ms, admission, outcome);
                        if live_probe && outcome == F {
                            prop_assert_eq!(breaker.state(now_ms), BreakerState::Open);
                        }
                    }
                }
                prop_assert!(breaker.window.len() <= config.window_size as usize);
                prop_assert!(breaker.failures_in_window as usize <= breaker.window.len());
            }
        }
    }
}
