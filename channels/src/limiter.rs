//! The channel's rate limits (`governor`, GCRA): one for the channel, and optionally one per
//! merchant on it.
//!
//! ```text
//!  call ─► merchant limit (keyed, optional) ─► channel limit ─► permit
//!            │ no cell: sleep until the next     │ free cell at once: go
//!            │ one if it comes within the bound  │ else queue (FIFO, at most `waiting_max`)
//!            ▼                                   │ and sleep until the next cell
//!        RateLimitedLocally { retry_after_ms } ◄─┘ when it cannot come within the bound
//! ```
//!
//! * A call waits at most `rate_wait_ms_max` in all for its permits; a call that cannot get one
//!   within that bound fails fast with [`ChannelError::RateLimitedLocally`] (nothing was sent),
//!   with an estimate of when to try again.
//! * Waiting for the channel limit is a FIFO queue (a fair async mutex) of at most
//!   `waiting_max` calls — as many as the limit can serve within the wait bound. A call that
//!   finds the queue full is refused at once rather than after the bound: it could not have
//!   been served in time anyway. The head of the queue sleeps until governor's next cell, so
//!   there is no thundering herd.
//! * The merchant limit runs first, so one merchant's burst is refused by its own limit without
//!   using the channel's. Its waiters are bounded by `waiting_max` as well. Its key table is
//!   bounded by [`MERCHANT_KEYS_MAX`]: past it, keys whose state is back to "fresh" are dropped
//!   (`retain_recent`); if that is not enough, the merchant limit is skipped (the channel limit
//!   still holds) and a warning is logged.
//!
//! * A [`SharedLimiter`] (a cluster-wide limit every node shares; Kassa's lives in Redis) may be
//!   attached once. It is asked after the local permits, within the same bound: "wait N ms" that
//!   fits the time left is slept and asked again; one that does not fails like the local limit.
//!   A shared limiter that cannot answer leaves the local limits alone in charge.
//!
//! Time: governor's clock is used for its decisions, tokio's timers for the sleeps.

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, Quota, RateLimiter};
use tokio::time::Instant;

use crate::error::ChannelError;

/// The most merchants whose rate-limit state is kept per channel.
pub const MERCHANT_KEYS_MAX: usize = 10_000;

type GovernorInstant = <DefaultClock as Clock>::Instant;
type DirectLimiter =
    RateLimiter<NotKeyed, InMemoryState, DefaultClock, NoOpMiddleware<GovernorInstant>>;
type KeyedLimiter =
    RateLimiter<String, DashMapStateStore<String>, DefaultClock, NoOpMiddleware<GovernorInstant>>;

/// What a [`SharedLimiter`] says about one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedVerdict {
    /// A permit was taken: the call may go.
    Admitted,
    /// No permit now; the next one is expected in `wait_ms` (at least 1).
    Wait { wait_ms: u64 },
    /// The shared limit could not be asked (its store is unreachable): the local limits alone
    /// decide.
    Unavailable,
}

/// The future of one [`SharedLimiter::check`].
pub type SharedCheck<'a> = Pin<Box<dyn Future<Output = SharedVerdict> + Send + 'a>>;

/// A rate limit one channel shares with every node calling it (Kassa's: GCRA in Redis), asked
/// after the local permits. Implementations bound their own latency and answer
/// [`SharedVerdict::Unavailable`] rather than fail.
pub trait SharedLimiter: Send + Sync {
    /// Takes one permit of the channel's shared limit and, when `merchant` is given and the
    /// channel limits merchants, one of that merchant's: both or neither.
    fn check<'a>(&'a self, merchant: Option<&'a str>) -> SharedCheck<'a>;
}

/// The settings of [`RateLimits`], already checked by `AdapterConfig::validate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateSettings {
    pub rate_per_s: NonZeroU32,
    pub burst: NonZeroU32,
    pub wait_ms_max: u64,
    pub merchant_rate_per_s: Option<NonZeroU32>,
}

/// One channel's rate limits.
pub(crate) struct RateLimits {
    channel: DirectLimiter,
    merchants: Option<KeyedLimiter>,
    /// The FIFO queue of calls waiting for the channel limit; its holder is the queue's head.
    queue: tokio::sync::Mutex<()>,
    /// Calls waiting for the channel limit (queued or at the head).
    waiting: AtomicUsize,
    /// Calls waiting for a merchant limit.
    merchant_waiting: AtomicUsize,
    waiting_max: usize,
    wait_max: Duration,
    /// The time between two cells of the channel limit.
    interval: Duration,
    /// The cluster-wide limit, once attached.
    shared: OnceLock<Arc<dyn SharedLimiter>>,
}

impl RateLimits {
    pub(crate) fn new(settings: RateSettings) -> Self {
        let quota = Quota::per_second(settings.rate_per_s).allow_burst(settings.burst);
        // A merchant's burst is the channel's, capped at its own rate: a merchant never gets
        // more room than the channel has.
        let merchants = settings.merchant_rate_per_s.map(|rate| {
            let burst = settings.burst.min(rate);
            RateLimiter::dashmap(Quota::per_second(rate).allow_burst(burst))
        });
        // The cells the channel limit hands out within the wait bound, at least one.
        let servable =
            u64::from(settings.rate_per_s.get()).saturating_mul(settings.wait_ms_max) / 1_000;
        let waiting_max = usize::try_from(servable.max(1)).unwrap_or(usize::MAX);
        Self {
            channel: RateLimiter::direct(quota),
            merchants,
            queue: tokio::sync::Mutex::new(()),
            waiting: AtomicUsize::new(0),
            merchant_waiting: AtomicUsize::new(0),
            waiting_max,
            wait_max: Duration::from_millis(settings.wait_ms_max),
            interval: quota.replenish_interval(),
            shared: OnceLock::new(),
        }
    }

    /// Attaches the cluster-wide limit; `false` if one was attached already (it stays).
    pub(crate) fn share(&self, limiter: Arc<dyn SharedLimiter>) -> bool {
        self.shared.set(limiter).is_ok()
    }

    /// Waits (at most `rate_wait_ms_max` in all) for a permit of the merchant's limit, when
    /// there is one and `merchant` is given, then of the channel's, then of the shared limit.
    pub(crate) async fn acquire(&self, merchant: Option<&str>) -> Result<(), ChannelError> {
        let deadline = Instant::now() + self.wait_max;
        if let (Some(limiter), Some(merchant)) = (&self.merchants, merchant) {
            self.acquire_merchant(limiter, merchant, deadline).await?;
        }
        self.acquire_channel(deadline).await?;
        self.acquire_shared(merchant, deadline).await
    }

    /// Asks the shared limit (if attached) until it admits, sleeping the waits it names while
    /// they fit before `deadline`.
    async fn acquire_shared(
        &self,
        merchant: Option<&str>,
        deadline: Instant,
    ) -> Result<(), ChannelError> {
        let Some(shared) = self.shared.get() else {
            return Ok(());
        };
        loop {
            let wait_ms = match shared.check(merchant).await {
                SharedVerdict::Admitted | SharedVerdict::Unavailable => return Ok(()),
                SharedVerdict::Wait { wait_ms } => wait_ms.max(1),
            };
            let wait = Duration::from_millis(wait_ms);
            if Instant::now() + wait > deadline {
                return Err(ChannelError::RateLimitedLocally {
                    retry_after_ms: wait_ms,
                });
            }
            tokio::time::sleep(wait).await;
        }
    }

    async fn acquire_merchant(
        &self,
        limiter: &KeyedLimiter,
        merchant: &str,
        deadline: Instant,
    ) -> Result<(), ChannelError> {
        if limiter.len() >= MERCHANT_KEYS_MAX {
            limiter.retain_recent();
            if limiter.len() >= MERCHANT_KEYS_MAX {
                tracing::warn!(
                    keys = limiter.len(),
                    "too many merchants are rate limited at once; this call skips its merchant limit"
                );
                return Ok(());
            }
        }
        let key = merchant.to_owned();
        let refused = |not_until: &NotUntil<GovernorInstant>| ChannelError::RateLimitedLocally {
            retry_after_ms: millis_ceil(not_until.wait_time_from(limiter.clock().now())),
        };
        let not_until = match limiter.check_key(&key) {
            Ok(()) => return Ok(()),
            Err(not_until) => not_until,
        };
        let _waiting = match Waiting::enter(&self.merchant_waiting, self.waiting_max) {
            Some(waiting) => waiting,
            None => return Err(refused(&not_until)),
        };
        let mut not_until = not_until;
        loop {
            let wait = not_until.wait_time_from(limiter.clock().now());
            if Instant::now() + wait > deadline {
                return Err(refused(&not_until));
            }
            tokio::time::sleep(wait).await;
            match limiter.check_key(&key) {
                Ok(()) => return Ok(()),
                Err(next) => not_until = next,
            }
        }
    }

    async fn acquire_channel(&self, deadline: Instant) -> Result<(), ChannelError> {
        // A free cell with nobody queued: take it. With a queue, join it, so waiting calls are
        // served in order.
        if self.waiting.load(Ordering::Acquire) == 0 && self.channel.check().is_ok() {
            return Ok(());
        }
        let Some(_waiting) = Waiting::enter(&self.waiting, self.waiting_max) else {
            return Err(self.queue_full());
        };
        let Ok(_head) = tokio::time::timeout_at(deadline, self.queue.lock()).await else {
            return Err(self.queue_full());
        };
        loop {
            let not_until = match self.channel.check() {
                Ok(()) => return Ok(()),
                Err(not_until) => not_until,
            };
            let wait = not_until.wait_time_from(self.channel.clock().now());
            if Instant::now() + wait > deadline {
                return Err(ChannelError::RateLimitedLocally {
                    retry_after_ms: millis_ceil(wait),
                });
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// The refusal of a call that cannot be served within the bound: try again once the
    /// calls ahead of it are served.
    fn queue_full(&self) -> ChannelError {
        let ahead = u32::try_from(self.waiting.load(Ordering::Acquire)).unwrap_or(u32::MAX);
        ChannelError::RateLimitedLocally {
            retry_after_ms: millis_ceil(self.interval.saturating_mul(ahead.max(1))),
        }
    }
}

/// A place among the waiting calls, given back on drop (also when the call is cancelled).
struct Waiting<'a> {
    count: &'a AtomicUsize,
}

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize, max: usize) -> Option<Self> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Self { count })
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let before = self.count.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before >= 1);
    }
}

/// Whole milliseconds, rounded up, at least 1 (a `retry_after_ms` of 0 would invite a spin).
fn millis_ceil(duration: Duration) -> u64 {
    let nanos = duration.as_nanos();
    let millis = nanos.div_ceil(1_000_000);
    u64::try_from(millis).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(rate_per_s: u32, burst: u32, wait_ms_max: u64) -> RateSettings {
        RateSettings {
            rate_per_s: NonZeroU32::new(rate_per_s).expect("non-zero"),
            burst: NonZeroU32::new(burst).expect("non-zero"),
            wait_ms_max,
            merchant_rate_per_s: None,
        }
    }

    #[test]
    fn millis_round_up_and_never_reach_zero() {
        assert_eq!(millis_ceil(Duration::ZERO), 1);
        assert_eq!(millis_ceil(Duration::from_micros(1)), 1);
        assert_eq!(millis_ceil(Duration::from_micros(1_001)), 2);
        assert_eq!(millis_ceil(Duration::from_millis(250)), 250);
    }

    #[test]
    fn the_queue_holds_what_the_limit_serves_within_the_wait_bound() {
        assert_eq!(RateLimits::new(settings(1_000, 100, 200)).waiting_max, 200);
        assert_eq!(RateLimits::new(settings(10, 1, 50)).waiting_max, 1);
        assert_eq!(RateLimits::new(settings(10, 1, 0)).waiting_max, 1);
    }

    #[test]
    fn waiting_places_are_bounded_and_given_back() {
        let count = AtomicUsize::new(0);
        let first = Waiting::enter(&count, 2).expect("room");
        let second = Waiting::enter(&count, 2).expect("room");
        assert!(Waiting::enter(&count, 2).is_none());
        drop(first);
        assert!(Waiting::enter(&count, 2).is_some());
        drop(second);
        assert_eq!(count.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn with_no_wait_allowed_a_call_past_the_burst_fails_fast() {
        let limits = RateLimits::new(settings(1, 2, 0));
        assert_eq!(limits.acquire(None).await, Ok(()));
        assert_eq!(limits.acquire(None).await, Ok(()));
        let started = std::time::Instant::now();
        let Err(ChannelError::RateLimitedLocally { retry_after_ms }) = limits.acquire(None).await
        else {
            panic!("the third call is over the burst");
        };
        assert!(started.elapsed() < Duration::from_millis(50));
        assert!((1..=1_000).contains(&retry_after_ms), "{retry_after_ms}");
    }

    #[tokio::test]
    async fn a_call_waits_for_the_next_cell_within_the_bound() {
        // 50/s: one cell every 20 ms; the bound (100 ms) covers the second call's wait.
        let limits = RateLimits::new(settings(50, 1, 100));
        assert_eq!(limits.acquire(None).await, Ok(()));
        let started = std::time::Instant::now();
        assert_eq!(limits.acquire(None).await, Ok(()));
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(10), "{waited:?}");
        assert!(waited < Duration::from_millis(100), "{waited:?}");
    }

    /// A shared limit that answers from a script, then admits; it records what it was asked.
    struct Scripted {
        answers: parking_lot::Mutex<Vec<SharedVerdict>>,
        asked: parking_lot::Mutex<Vec<Option<String>>>,
    }

    impl Scripted {
        fn new(answers: &[SharedVerdict]) -> Arc<Self> {
            let mut answers = answers.to_vec();
            answers.reverse();
            Arc::new(Self {
                answers: parking_lot::Mutex::new(answers),
                asked: parking_lot::Mutex::new(Vec::new()),
            })
        }
    }

    impl SharedLimiter for Scripted {
        fn check<'a>(&'a self, merchant: Option<&'a str>) -> SharedCheck<'a> {
            self.asked.lock().push(merchant.map(str::to_owned));
            let verdict = self.answers.lock().pop().unwrap_or(SharedVerdict::Admitted);
            Box::pin(async move { verdict })
        }
    }

    #[tokio::test]
    async fn the_shared_limit_is_asked_after_the_local_one_and_its_wait_is_slept() {
        let limits = RateLimits::new(settings(1_000, 10, 200));
        let shared = Scripted::new(&[SharedVerdict::Wait { wait_ms: 20 }]);
        assert!(limits.share(shared.clone()));
        assert!(!limits.share(Scripted::new(&[])), "attached once");
        let started = std::time::Instant::now();
        assert_eq!(limits.acquire(Some("mch_a")).await, Ok(()));
        assert!(started.elapsed() >= Duration::from_millis(20));
        assert_eq!(
            *shared.asked.lock(),
            [Some("mch_a".into()), Some("mch_a".into())]
        );
    }

    #[tokio::test]
    async fn a_shared_wait_past_the_bound_fails_like_the_local_limit() {
        let limits = RateLimits::new(settings(1_000, 10, 50));
        limits.share(Scripted::new(&[SharedVerdict::Wait { wait_ms: 700 }]));
        let started = std::time::Instant::now();
        assert_eq!(
            limits.acquire(None).await,
            Err(ChannelError::RateLimitedLocally {
                retry_after_ms: 700
            })
        );
        assert!(started.elapsed() < Duration::from_millis(50), "fails fast");
    }

    #[tokio::test]
    async fn an_unavailable_shared_limit_leaves_the_local_one_in_charge() {
        let limits = RateLimits::new(settings(1, 1, 0));
        let shared = Scripted::new(&[SharedVerdict::Unavailable, SharedVerdict::Unavailable]);
        limits.share(shared.clone());
        assert_eq!(limits.acquire(None).await, Ok(()));
        assert!(matches!(
            limits.acquire(None).await,
            Err(ChannelError::RateLimitedLocally { .. })
        ));
        assert_eq!(
            shared.asked.lock().len(),
            1,
            "a local refusal never reaches it"
        );
    }

    #[tokio::test]
    async fn merchants_have_their_own_limit_under_the_channels() {
        let limits = RateLimits::new(RateSettings {
            merchant_rate_per_s: NonZeroU32::new(1),
            ..settings(1_000, 10, 0)
        });
        assert_eq!(limits.acquire(Some("mch_a")).await, Ok(()));
        assert!(matches!(
            limits.acquire(Some("mch_a")).await,
            Err(ChannelError::RateLimitedLocally { .. })
        ));
        assert_eq!(limits.acquire(Some("mch_b")).await, Ok(()));
        assert_eq!(limits.acquire(None).await, Ok(()), "no key: channel only");
    }
}
