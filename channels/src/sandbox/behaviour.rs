//! How the sandbox misbehaves: the [`Behaviour`] knobs, their bounds, a seeded RNG, and the
//! per-request draw ([`Chaos::draw`]) that decides a request's [`Fate`].
//!
//! Plain data and plain functions, no I/O and no clock: the same seed and the same sequence of
//! requests give the same fates, so a chaos run can be replayed.
//!
//! One draw per request, in `0..100`, picks at most one fault: `[0, error)` is an injected
//! 500/502/503, `[error, error + rate_limit)` a 429, `[…, … + timeout)` a held connection, the
//! rest is served. The three rates are therefore exact, disjoint shares of the traffic, and
//! their sum may not exceed 100.
//!
//! Each channel (`card`, `qr_wallet`, `app_wallet`, `bank_transfer`) has its own behaviour and
//! its own RNG, so one channel's chaos never shifts another's draws. The fields under
//! "asynchronous channels" mean nothing to the card channel; the card channel draws exactly as
//! it did before they existed.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The largest latency a behaviour may ask for.
pub const LATENCY_MS_LIMIT: u64 = 60_000;
/// The largest callback delay a behaviour may ask for.
pub const CALLBACK_DELAY_MS_LIMIT: u64 = 600_000;
/// The largest settle delay a behaviour may ask for.
pub const SETTLE_DELAY_MS_LIMIT: u64 = 600_000;
/// The longest `callback_url` accepted.
pub const CALLBACK_URL_LEN_MAX: usize = 2_048;

/// A channel's configurable behaviour. The default is a well-behaved provider: no latency, no
/// faults, no callbacks; asynchronous orders wait for their customer (`auto_settle: false`), a
/// bank settles at once (`settle_delay_ms_*: 0`) and announces every outcome it has a
/// `callback_url` for (`callback_rate_percent: 100`). JSON: every field optional (missing
/// means its default), unknown fields refused. In an asynchronous channel's behaviour, "card
/// calls" below means that channel's calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Behaviour {
    /// Latency added to each card answer, drawn uniformly in `[min, max]`, after the work.
    pub latency_ms_min: u64,
    /// See `latency_ms_min`.
    pub latency_ms_max: u64,
    /// Share of card calls answered 500, 502 or 503 without doing the work (nothing charged).
    pub error_rate_percent: u32,
    /// Share of card calls answered 429 with `Retry-After: 1` without doing the work.
    pub rate_limit_rate_percent: u32,
    /// Share of card calls whose work IS done (a charge is recorded) but whose answer is never
    /// sent: the connection is held until the client gives up, like a provider that charged
    /// and lost its answer. `resolve` then finds the charge.
    pub timeout_rate_percent: u32,
    /// Every card call answers 503, nothing is done.
    pub hard_down: bool,
    /// Not enforced: requests beyond this many in one second are counted in the stats
    /// (`requests_over_limit`), so a test can prove a client's rate limit held.
    pub max_requests_per_s: Option<u32>,
    /// Seeds the RNG; replacing the behaviour reseeds it.
    pub seed: u64,
    /// Where `charge.updated` callbacks go (`http://` or `https://`); `None` sends none.
    pub callback_url: Option<String>,
    /// Each callback waits a delay drawn uniformly in `[min, max]` before its first attempt.
    pub callback_delay_ms_min: u64,
    /// See `callback_delay_ms_min`.
    pub callback_delay_ms_max: u64,
    /// Share of callbacks sent twice (the copy with its own delay and the same event id).
    pub duplicate_callback_rate_percent: u32,
    /// Asynchronous channels (`qr_wallet`, `app_wallet`): when `true`, the wallet decides a new
    /// order by itself after the settle delay, by the test-amount rule, as if the customer had
    /// acted; when `false` (the default) the order waits for the customer page
    /// (`GET /qr/pay/{ref}`, `GET /app/pay/{ref}`). `bank_transfer` always settles by itself.
    /// Applies to orders created while it is in force.
    pub auto_settle: bool,
    /// Asynchronous channels: when the provider decides an order by itself, it does so after a
    /// delay drawn uniformly in `[min, max]` from the order's creation (default 0: at once,
    /// though always after the create's answer).
    pub settle_delay_ms_min: u64,
    /// See `settle_delay_ms_min`; at most [`SETTLE_DELAY_MS_LIMIT`].
    pub settle_delay_ms_max: u64,
    /// Asynchronous channels (meant for `bank_transfer`): the share of outcomes announced by a
    /// callback when a `callback_url` is set (default 100). The others are only learnt by
    /// query. The card channel ignores it.
    pub callback_rate_percent: u32,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            latency_ms_min: 0,
            latency_ms_max: 0,
            error_rate_percent: 0,
            rate_limit_rate_percent: 0,
            timeout_rate_percent: 0,
            hard_down: false,
            max_requests_per_s: None,
            seed: 0,
            callback_url: None,
            callback_delay_ms_min: 0,
            callback_delay_ms_max: 0,
            duplicate_callback_rate_percent: 0,
            auto_settle: false,
            settle_delay_ms_min: 0,
            settle_delay_ms_max: 0,
            callback_rate_percent: 100,
        }
    }
}

/// Why a behaviour was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid sandbox behaviour: {0}")]
pub struct InvalidBehaviour(pub String);

impl Behaviour {
    /// Every answer delayed by exactly `latency_ms`, nothing else (the old `latency_ms` knob).
    pub fn fixed_latency(latency_ms: u64) -> Self {
        Self {
            latency_ms_min: latency_ms,
            latency_ms_max: latency_ms,
            ..Self::default()
        }
    }

    /// Checks every bound; the sandbox refuses a behaviour that fails it.
    pub fn validate(&self) -> Result<(), InvalidBehaviour> {
        let fail = |message: &str| Err(InvalidBehaviour(message.to_owned()));
        if self.latency_ms_min > self.latency_ms_max || self.latency_ms_max > LATENCY_MS_LIMIT {
            return fail("latency_ms_min <= latency_ms_max <= 60000 must hold");
        }
        let faults = [
            self.error_rate_percent,
            self.rate_limit_rate_percent,
            self.timeout_rate_percent,
        ];
        if faults.iter().map(|rate| u64::from(*rate)).sum::<u64>() > 100 {
            return fail(
                "error_rate_percent + rate_limit_rate_percent + timeout_rate_percent must be <= 100",
            );
        }
        if self.duplicate_callback_rate_percent > 100 {
            return fail("duplicate_callback_rate_percent must be <= 100");
        }
        if self.max_requests_per_s == Some(0) {
            return fail("max_requests_per_s must be at least 1 when set");
        }
        if self.callback_delay_ms_min > self.callback_delay_ms_max
            || self.callback_delay_ms_max > CALLBACK_DELAY_MS_LIMIT
        {
            return fail("callback_delay_ms_min <= callback_delay_ms_max <= 600000 must hold");
        }
        if let Some(url) = &self.callback_url {
            check_callback_url(url).map_err(|message| InvalidBehaviour(message.to_owned()))?;
        }
        if self.settle_delay_ms_min > self.settle_delay_ms_max
            || self.settle_delay_ms_max > SETTLE_DELAY_MS_LIMIT
        {
            return fail("settle_delay_ms_min <= settle_delay_ms_max <= 600000 must hold");
        }
        if self.callback_rate_percent > 100 {
            return fail("callback_rate_percent must be <= 100");
        }
        Ok(())
    }
}

fn check_callback_url(url: &str) -> Result<(), &'static str> {
    if url.len() > CALLBACK_URL_LEN_MAX {
        return Err("callback_url is longer than 2048 bytes");
    }
    let uri: hyper::Uri = url.parse().map_err(|_| "callback_url is not a valid URL")?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err("callback_url must be an absolute http:// or https:// URL");
    }
    Ok(())
}

/// SplitMix64: tiny, fast, and good enough to pick faults; not for anything secret.
#[derive(Debug, Clone)]
pub(crate) struct Rng {
    state: u64,
}

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (multiply-shift; the bias is below 2^-32 for the bounds used).
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        let wide = u128::from(self.next_u64()) * u128::from(bound);
        // The product of two u64 shifted right by 64 fits in u64.
        u64::try_from(wide >> 64).unwrap_or(0)
    }

    /// Uniform in `[min, max]` (`min` when `max <= min`).
    pub(crate) fn between(&mut self, min: u64, max: u64) -> u64 {
        if max <= min {
            return min;
        }
        let span = max - min;
        match span.checked_add(1) {
            Some(count) => min + self.below(count),
            None => self.next_u64(),
        }
    }

    /// True with probability `percent / 100`.
    pub(crate) fn percent(&mut self, percent: u32) -> bool {
        self.below(100) < u64::from(percent)
    }
}

/// What happens to one card request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Do the work and answer.
    Serve,
    /// Answer this 5xx without doing the work.
    Fail(u16),
    /// Answer 429 with `Retry-After: 1` without doing the work.
    RateLimit,
    /// Do the work, then never answer.
    Hold,
}

/// A request's fate: its verdict and the latency added before its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fate {
    pub verdict: Verdict,
    pub latency: Duration,
}

/// The live behaviour and the RNG it draws from, replaced together.
#[derive(Debug)]
pub(crate) struct Chaos {
    behaviour: Behaviour,
    rng: Rng,
}

/// One callback's plan: delays for the first copy and, when duplicated, the second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CallbackPlan {
    pub url: String,
    pub delays: Vec<Duration>,
    pub event_number: u64,
}

/// An outcome whose callback the behaviour's `callback_rate_percent` withheld.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Withheld;

const INJECTED_STATUSES: [u16; 3] = [500, 502, 503];

impl Chaos {
    /// `behaviour` must have passed [`Behaviour::validate`].
    pub(crate) fn new(behaviour: Behaviour) -> Self {
        let rng = Rng::new(behaviour.seed);
        Self { behaviour, rng }
    }

    pub(crate) fn behaviour(&self) -> &Behaviour {
        &self.behaviour
    }

    /// Replaces the behaviour and reseeds the RNG from it.
    pub(crate) fn replace(&mut self, behaviour: Behaviour) {
        *self = Self::new(behaviour);
    }

    /// Decides one card request's fate.
    pub(crate) fn draw(&mut self) -> Fate {
        let behaviour = &self.behaviour;
        let latency_ms = self
            .rng
            .between(behaviour.latency_ms_min, behaviour.latency_ms_max);
        let latency = Duration::from_millis(latency_ms);
        if behaviour.hard_down {
            return Fate {
                verdict: Verdict::Fail(503),
                latency,
            };
        }
        let roll = self.rng.below(100);
        let error_end = u64::from(behaviour.error_rate_percent);
        let rate_limit_end = error_end + u64::from(behaviour.rate_limit_rate_percent);
        let timeout_end = rate_limit_end + u64::from(behaviour.timeout_rate_percent);
        let verdict = if roll < error_end {
            // `below(3)` is < 3, so the index is in bounds.
            let index = usize::try_from(self.rng.below(3)).unwrap_or(0);
            Verdict::Fail(INJECTED_STATUSES[index])
        } else if roll < rate_limit_end {
            Verdict::RateLimit
        } else if roll < timeout_end {
            Verdict::Hold
        } else {
            Verdict::Serve
        };
        Fate { verdict, latency }
    }

    /// When an order the provider decides by itself is decided: a delay in the settle bounds.
    pub(crate) fn draw_settle_delay(&mut self) -> Duration {
        let behaviour = &self.behaviour;
        Duration::from_millis(
            self.rng
                .between(behaviour.settle_delay_ms_min, behaviour.settle_delay_ms_max),
        )
    }

    /// Plans the callback for an asynchronous payment's outcome: `None` without a
    /// `callback_url`, and `Err(Withheld)` for an outcome the draw leaves outside
    /// `callback_rate_percent` (learnt only by query).
    pub(crate) fn plan_outcome_callback(&mut self) -> Result<Option<CallbackPlan>, Withheld> {
        if self.behaviour.callback_url.is_none() {
            return Ok(None);
        }
        let rate = self.behaviour.callback_rate_percent;
        if rate < 100 && !self.rng.percent(rate) {
            return Err(Withheld);
        }
        Ok(self.plan_callback())
    }

    /// Plans the callback for one charge change, or `None` when no `callback_url` is set.
    pub(crate) fn plan_callback(&mut self) -> Option<CallbackPlan> {
        let behaviour = &self.behaviour;
        let url = behaviour.callback_url.clone()?;
        let (min, max) = (
            behaviour.callback_delay_ms_min,
            behaviour.callback_delay_ms_max,
        );
        let duplicate_rate = behaviour.duplicate_callback_rate_percent;
        let mut delays = vec![Duration::from_millis(self.rng.between(min, max))];
        if self.rng.percent(duplicate_rate) {
            delays.push(Duration::from_millis(self.rng.between(min, max)));
        }
        let event_number = self.rng.next_u64();
        Some(CallbackPlan {
            url,
            delays,
            event_number,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chaotic(seed: u64) -> Behaviour {
        Behaviour {
            latency_ms_min: 5,
            latency_ms_max: 20,
            error_rate_percent: 20,
            rate_limit_rate_percent: 10,
            timeout_rate_percent: 10,
            seed,
            ..Behaviour::default()
        }
    }

    #[test]
    fn the_default_behaviour_never_misbehaves() {
        let mut chaos = Chaos::new(Behaviour::default());
        for _ in 0..1_000 {
            assert_eq!(
                chaos.draw(),
                Fate {
                    verdict: Verdict::Serve,
                    latency: Duration::ZERO
                }
            );
        }
        assert_eq!(chaos.plan_callback(), None);
    }

    #[test]
    fn one_seed_replays_the_same_fates() {
        let mut first = Chaos::new(chaotic(42));
        let mut second = Chaos::new(chaotic(42));
        let mut other = Chaos::new(chaotic(43));
        let a: Vec<Fate> = (0..200).map(|_| first.draw()).collect();
        let b: Vec<Fate> = (0..200).map(|_| second.draw()).collect();
        let c: Vec<Fate> = (0..200).map(|_| other.draw()).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Replacing the behaviour reseeds.
        first.replace(chaotic(42));
        assert_eq!(first.draw(), a[0]);
    }

    #[test]
    fn rates_and_latencies_hold_over_many_draws() {
        let mut chaos = Chaos::new(chaotic(7));
        let draws = 100_000;
        let (mut errors, mut limited, mut held) = (0u32, 0u32, 0u32);
        let mut statuses = [0u32; 3];
        for _ in 0..draws {
            let fate = chaos.draw();
            assert!((5..=20).contains(&fate.latency.as_millis()));
            match fate.verdict {
                Verdict::Serve => {}
                Verdict::Fail(status) => {
                    errors += 1;
                    let index = INJECTED_STATUSES
                        .iter()
                        .position(|s| *s == status)
                        .expect("an injected status");
                    statuses[index] += 1;
                }
                Verdict::RateLimit => limited += 1,
                Verdict::Hold => held += 1,
            }
        }
        let near = |count: u32, percent: u32| count.abs_diff(draws / 100 * percent) < draws / 100;
        assert!(near(errors, 20), "{errors}");
        assert!(near(limited, 10), "{limited}");
        assert!(near(held, 10), "{held}");
        assert!(statuses.iter().all(|count| *count > 6_000), "{statuses:?}");
    }

    #[test]
    fn hard_down_fails_everything() {
        let mut chaos = Chaos::new(Behaviour {
            hard_down: true,
            ..Behaviour::default()
        });
        assert!((0..100).all(|_| chaos.draw().verdict == Verdict::Fail(503)));
    }

    #[test]
    fn callbacks_are_planned_within_bounds_and_duplicated_at_the_rate() {
        let mut chaos = Chaos::new(Behaviour {
            callback_url: Some("http://127.0.0.1:9/hooks".to_owned()),
            callback_delay_ms_min: 100,
            callback_delay_ms_max: 300,
            duplicate_callback_rate_percent: 25,
            seed: 3,
            ..Behaviour::default()
        });
        let mut duplicated = 0;
        for _ in 0..10_000 {
            let plan = chaos.plan_callback().expect("a url is set");
            assert!(plan.delays.len() == 1 || plan.delays.len() == 2);
            assert!(
                plan.delays
                    .iter()
                    .all(|delay| (100..=300).contains(&delay.as_millis()))
            );
            duplicated += usize::from(plan.delays.len() == 2);
        }
        assert!(duplicated.abs_diff(2_500) < 200, "{duplicated}");
    }

    #[test]
    fn validation_refuses_out_of_bounds_behaviours() {
        assert_eq!(Behaviour::default().validate(), Ok(()));
        assert_eq!(chaotic(1).validate(), Ok(()));
        let refused = [
            Behaviour {
                latency_ms_min: 10,
                latency_ms_max: 5,
                ..Behaviour::default()
            },
            Behaviour::fixed_latency(LATENCY_MS_LIMIT + 1),
            Behaviour {
                error_rate_percent: 60,
                timeout_rate_percent: 41,
                ..Behaviour::default()
            },
            Behaviour {
                duplicate_callback_rate_percent: 101,
                ..Behaviour::default()
            },
            Behaviour {
                max_requests_per_s: Some(0),
                ..Behaviour::default()
            },
            Behaviour {
                callback_url: Some("ftp://example.com/hooks".to_owned()),
                ..Behaviour::default()
            },
            Behaviour {
                callback_url: Some("/relative".to_owned()),
                ..Behaviour::default()
            },
            Behaviour {
                callback_delay_ms_min: 2,
                callback_delay_ms_max: 1,
                ..Behaviour::default()
            },
            Behaviour {
                settle_delay_ms_min: 2,
                settle_delay_ms_max: 1,
                ..Behaviour::default()
            },
            Behaviour {
                settle_delay_ms_max: SETTLE_DELAY_MS_LIMIT + 1,
                ..Behaviour::default()
            },
            Behaviour {
                callback_rate_percent: 101,
                ..Behaviour::default()
            },
        ];
        for behaviour in refused {
            assert!(behaviour.validate().is_err(), "{behaviour:?}");
        }
    }

    #[test]
    fn outcome_callbacks_are_withheld_at_the_rate_and_settle_delays_stay_in_bounds() {
        let mut chaos = Chaos::new(Behaviour {
            callback_url: Some("http://127.0.0.1:9/hooks".to_owned()),
            callback_rate_percent: 30,
            settle_delay_ms_min: 10,
            settle_delay_ms_max: 20,
            seed: 5,
            ..Behaviour::default()
        });
        let mut sent: u32 = 0;
        for _ in 0..10_000 {
            match chaos.plan_outcome_callback() {
                Ok(Some(_)) => sent += 1,
                Ok(None) => panic!("a url is set"),
                Err(Withheld) => {}
            }
            assert!((10..=20).contains(&chaos.draw_settle_delay().as_millis()));
        }
        assert!(sent.abs_diff(3_000) < 200, "{sent}");
        let mut quiet = Chaos::new(Behaviour::default());
        assert_eq!(quiet.plan_outcome_callback(), Ok(None));
        assert_eq!(quiet.draw_settle_delay(), Duration::ZERO);
    }

    #[test]
    fn between_covers_both_ends() {
        let mut rng = Rng::new(1);
        let mut seen = [false; 4];
        for _ in 0..1_000 {
            let value = rng.between(10, 13);
            assert!((10..=13).contains(&value));
            seen[usize::try_from(value - 10).expect("small")] = true;
        }
        assert_eq!(seen, [true; 4]);
        assert_eq!(rng.between(7, 7), 7);
    }
}
