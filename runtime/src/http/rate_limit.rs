//! The front door's request limits (DESIGN.md §3 step 1): GCRA (`governor`) keyed limiters,
//! one keyed by the client's address, one by merchant.
//!
//! ```text
//!  /v1 request ─► per-IP limit ─► admission ─► route, body ─► signature ─► per-merchant limit ─► idempotency, handler
//!                 (nothing read yet)                            (verified merchants only)
//! ```
//!
//! * **Per IP** (`http.ip_requests_per_s`, `http.ip_burst`): checked first, before the body
//!   is read or the signature computed, so a flood from one address costs a map lookup per
//!   request. IPv4 addresses are keyed whole, IPv6 by their /64 (one host usually holds a
//!   whole /64, so rotating through it gains nothing).
//! * **Per merchant** (`http.merchant_requests_per_s`, `http.merchant_burst`): checked once
//!   the signature verified, so nobody can spend another merchant's budget.
//! * Past a limit: `429 rate_limit_error` / `rate_limited` with `Retry-After` (governor's wait,
//!   rounded up to whole seconds); nothing was read into an order or created. Each refusal is
//!   counted in `kassa_http_rate_limited_total{scope}`.
//! * Health, readiness, metrics, provider callbacks and the admin API are not limited here.
//! * A rate of 0 turns that limit off.
//!
//! **Bounded memory.** Each limiter tracks at most [`RATE_LIMIT_KEYS_MAX`] keys. Every
//! [`RATE_LIMIT_SWEEP_INTERVAL_MS`], and whenever the table is found past the bound (its size
//! is read every [`RATE_LIMIT_SWEEP_EVERY_CHECKS`] checks), a sweep drops keys whose bucket is full again
//! (`retain_recent`: they are indistinguishable from a new key) and gives the memory back; if
//! more than the bound are still active (addresses rotating faster than their bucket
//! refills), the table is replaced by an empty one — every key starts again with a full
//! burst — and a warning is logged. So an attacker cycling through addresses can never grow
//! the table past the bound (plus one sweep's worth of checks).

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use parking_lot::RwLock;

use crate::http::error::ApiError;

/// The most keys (addresses or merchants) one limiter tracks.
pub const RATE_LIMIT_KEYS_MAX: usize = 100_000;
/// A sweep runs once per this many checks of a limiter (the bound on how far past
/// [`RATE_LIMIT_KEYS_MAX`] the table can grow between sweeps).
pub const RATE_LIMIT_SWEEP_EVERY_CHECKS: u64 = 256;
/// …and at least this often while requests arrive, to give back idle keys' memory.
pub const RATE_LIMIT_SWEEP_INTERVAL_MS: u64 = 10_000;

/// Which limit refused a request (the `scope` label of the metric).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Ip,
    Merchant,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ip => "ip",
            Scope::Merchant => "merchant",
        }
    }
}

type Keyed<K, C> = RateLimiter<K, DashMapStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// One keyed limit with its bounded key table.
pub struct KeyedLimit<K: Hash + Eq + Clone, C: Clock = DefaultClock> {
    quota: Quota,
    clock: C,
    table: RwLock<Arc<Keyed<K, C>>>,
    checks: AtomicU64,
    /// Milliseconds since `clock`'s first reading at which the next timed sweep is due.
    next_sweep_ms: AtomicU64,
    started: C::Instant,
    what: &'static str,
}

impl<K: Hash + Eq + Clone, C: Clock + Clone> KeyedLimit<K, C> {
    /// `None` when `per_s` is 0 (the limit is off). A burst of 0 is read as 1.
    pub fn new(per_s: u32, burst: u32, clock: C, what: &'static str) -> Option<Self> {
        let per_s = NonZeroU32::new(per_s)?;
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(per_s).allow_burst(burst);
        let started = clock.now();
        Some(KeyedLimit {
            table: RwLock::new(Arc::new(RateLimiter::dashmap_with_clock(
                quota,
                clock.clone(),
            ))),
            quota,
            clock,
            checks: AtomicU64::new(0),
            next_sweep_ms: AtomicU64::new(RATE_LIMIT_SWEEP_INTERVAL_MS),
            started,
            what,
        })
    }

    /// Takes one cell for `key`, or says how long until one is free.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        self.sweep_if_due();
        let table = self.table.read().clone();
        table
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Keys tracked now.
    pub fn keys(&self) -> usize {
        self.table.read().len()
    }

    fn sweep_if_due(&self) {
        let checks = self.checks.fetch_add(1, Ordering::Relaxed) + 1;
        let elapsed_ms = u64::try_from(
            Duration::from(self.clock.now().duration_since(self.started)).as_millis(),
        )
        .unwrap_or(u64::MAX);
        let due_ms = self.next_sweep_ms.load(Ordering::Relaxed);
        let timed = elapsed_ms >= due_ms
            && self
                .next_sweep_ms
                .compare_exchange(
                    due_ms,
                    elapsed_ms.saturating_add(RATE_LIMIT_SWEEP_INTERVAL_MS),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok();
        // The count check only reads the table's size; the whole table is walked when it is
        // over the bound or on the timer.
        if timed
            || (checks.is_multiple_of(RATE_LIMIT_SWEEP_EVERY_CHECKS)
                && self.keys() > RATE_LIMIT_KEYS_MAX)
        {
            self.sweep();
        }
    }

    /// Drops keys back at a full bucket; past [`RATE_LIMIT_KEYS_MAX`] live keys, starts a
    /// new table.
    pub fn sweep(&self) {
        let table = self.table.read().clone();
        if table.is_empty() {
            return;
        }
        table.retain_recent();
        table.shrink_to_fit();
        let live = table.len();
        if live > RATE_LIMIT_KEYS_MAX {
            *self.table.write() = Arc::new(RateLimiter::dashmap_with_clock(
                self.quota,
                self.clock.clone(),
            ));
            tracing::warn!(
                limit = self.what,
                live,
                keys_max = RATE_LIMIT_KEYS_MAX,
                "more keys active than the rate limiter tracks: its table was reset"
            );
        }
    }
}

/// The key of a client address: IPv4 whole (also when mapped into IPv6), IPv6 by its /64.
pub fn ip_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

/// Both front-door limits; either may be off.
pub struct FrontLimits {
    ip: Option<KeyedLimit<IpAddr>>,
    merchant: Option<KeyedLimit<String>>,
}

impl FrontLimits {
    pub fn new(http: &kassa_config::HttpSettings) -> FrontLimits {
        FrontLimits {
            ip: KeyedLimit::new(
                http.ip_requests_per_s,
                http.ip_burst,
                DefaultClock::default(),
                "ip",
            ),
            merchant: KeyedLimit::new(
                http.merchant_requests_per_s,
                http.merchant_burst,
                DefaultClock::default(),
                "merchant",
            ),
        }
    }

    /// The per-IP limit, before anything of the request is read.
    pub fn check_ip(&self, addr: IpAddr) -> Result<(), Duration> {
        match &self.ip {
            Some(limit) => limit.check(&ip_key(addr)),
            None => Ok(()),
        }
    }

    /// The per-merchant limit, once the merchant's signature verified.
    pub fn check_merchant(&self, merchant_id: &str) -> Result<(), Duration> {
        match &self.merchant {
            // Merchant ids are verified, so this key set is bounded by the merchants there are.
            Some(limit) => limit.check(&merchant_id.to_owned()),
            None => Ok(()),
        }
    }
}

/// `429 rate_limit_error` / `rate_limited` with `Retry-After` (whole seconds, rounded up).
pub fn refused(scope: Scope, wait: Duration) -> ApiError {
    let message = match scope {
        Scope::Ip => "too many requests from this address; retry after Retry-After seconds",
        Scope::Merchant => "too many requests for this merchant; retry after Retry-After seconds",
    };
    let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
    ApiError::retry_later(false, "rate_limited", message, wait_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn limit(
        per_s: u32,
        burst: u32,
        clock: &FakeRelativeClock,
    ) -> KeyedLimit<u32, FakeRelativeClock> {
        KeyedLimit::new(per_s, burst, clock.clone(), "test").expect("on")
    }

    #[test]
    fn a_rate_of_zero_is_off() {
        assert!(KeyedLimit::<u32, _>::new(0, 10, FakeRelativeClock::default(), "t").is_none());
        let settings = kassa_config::HttpSettings {
            ip_requests_per_s: 0,
            merchant_requests_per_s: 0,
            ..kassa_config::HttpSettings::default()
        };
        let limits = FrontLimits::new(&settings);
        for _ in 0..10_000 {
            assert!(limits.check_ip("10.0.0.1".parse().unwrap()).is_ok());
            assert!(limits.check_merchant("mch_1").is_ok());
        }
    }

    #[test]
    fn refuses_past_the_burst_per_key_and_admits_after_the_wait() {
        let clock = FakeRelativeClock::default();
        let limit = limit(2, 3, &clock);
        for _ in 0..3 {
            limit.check(&1).expect("within the burst");
        }
        let wait = limit.check(&1).expect_err("past the burst");
        assert_eq!(wait, Duration::from_millis(500), "one cell every 500 ms");
        limit.check(&2).expect("another key has its own burst");
        clock.advance(wait);
        limit.check(&1).expect("admitted once the wait passed");
        assert!(limit.check(&1).is_err());
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        let e = refused(Scope::Merchant, Duration::from_millis(1));
        assert_eq!(e.status, http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!((e.kind, e.code), ("rate_limit_error", "rate_limited"));
        assert_eq!(e.retry_after_s, Some(1));
        assert_eq!(
            refused(Scope::Ip, Duration::from_millis(2_001)).retry_after_s,
            Some(3)
        );
        assert_eq!(refused(Scope::Ip, Duration::ZERO).retry_after_s, Some(1));
    }

    #[test]
    fn ipv6_is_keyed_by_its_slash_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_key(a), ip_key(b));
        assert_ne!(ip_key(a), ip_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(ip_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn the_key_table_stays_bounded_under_rotating_keys() {
        let clock = FakeRelativeClock::default();
        // A burst that takes long to refill: every key stays live (the worst case).
        let limit = limit(1, 1_000, &clock);
        let keys = u32::try_from(RATE_LIMIT_KEYS_MAX).unwrap() * 3;
        for key in 0..keys {
            let _ = limit.check(&key);
            assert!(
                limit.keys() <= RATE_LIMIT_KEYS_MAX + RATE_LIMIT_SWEEP_EVERY_CHECKS as usize,
                "{} keys after {key}",
                limit.keys()
            );
        }
    }

    #[test]
    fn idle_keys_are_dropped_once_their_bucket_is_full_again() {
        let clock = FakeRelativeClock::default();
        let limit = limit(1_000, 2, &clock);
        for key in 0..100 {
            limit.check(&key).unwrap();
        }
        assert_eq!(limit.keys(), 100);
        clock.advance(Duration::from_millis(RATE_LIMIT_SWEEP_INTERVAL_MS));
        limit.check(&1_000).unwrap();
        assert!(limit.keys() <= 1, "{} keys left", limit.keys());
    }
}
