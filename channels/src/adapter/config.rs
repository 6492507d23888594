//! The adapter's bounds and its health figures.

use crate::breaker::{BreakerConfig, BreakerHealth};
use crate::error::AdapterConfigError;
use crate::limiter::RateSettings;
use bytes::Bytes;
use hyper::Method;
use serde::{Deserialize, Serialize};
use std::num::NonZeroU32;
use tokio::sync::Semaphore;

/// How long an idle pooled connection is kept before it is closed.
pub const POOL_IDLE_TIMEOUT_MS: u64 = 30_000;

/// The largest answer body the adapter reads; a longer one is [`ChannelError::Unreadable`].
pub const RESPONSE_BODY_BYTES_MAX: usize = 1024 * 1024;

/// The upper bound on `retry_attempts_max`, so a typo cannot turn into a retry storm.
pub const RETRY_ATTEMPTS_LIMIT: u32 = 20;

/// The upper bound on `rate_wait_ms_max`: a call never queues for a permit longer than this.
pub const RATE_WAIT_MS_LIMIT: u64 = 60_000;

/// The adapter's bounds. Every value has its unit in its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdapterConfig {
    /// The deadline of one attempt, from connecting to the last byte of the answer.
    pub request_timeout_ms: u64,
    /// The deadline of a whole command: every attempt, wait and backoff together. Past it the
    /// call ends as a `Timeout` (an attempt may have been in flight: the outcome is unknown).
    pub command_deadline_ms: u64,
    /// Attempts in all (the first one included), 1–[`RETRY_ATTEMPTS_LIMIT`].
    pub retry_attempts_max: u32,
    /// The delay before the first retry, before jitter.
    pub backoff_ms_min: u64,
    /// The ceiling of any delay, before jitter, and the longest `Retry-After` we wait for.
    pub backoff_ms_max: u64,
    /// Calls in flight at once; one more gets [`ChannelError::Overloaded`] — unless it is the
    /// call of work already admitted ([`ChannelAdapter::admit_new_work`]), which waits.
    pub inflight_max: usize,
    /// How long an admitted call (a payment Kassa has accepted, whose card details live only
    /// in memory) waits for a free in-flight slot before [`ChannelError::Overloaded`].
    pub admitted_inflight_wait_ms_max: u64,
    /// The channel's sustained rate limit, in requests per second (each attempt is one).
    pub rate_per_s: u32,
    /// Requests the channel limit lets through at once after a quiet spell.
    pub burst: u32,
    /// The longest a call waits for a rate-limit permit before
    /// [`ChannelError::RateLimitedLocally`] (0–[`RATE_WAIT_MS_LIMIT`]).
    pub rate_wait_ms_max: u64,
    /// Each merchant's rate limit on this channel, in requests per second (its burst is the
    /// channel's `burst`, capped at this rate). `None`: no per-merchant limit.
    pub merchant_rate_per_s: Option<u32>,
    /// The circuit breaker's window: the failure rate is computed over the last this-many
    /// attempts (1–10 000).
    pub breaker_window_size: u32,
    /// When set, attempts older than this also drop out of the breaker's window.
    pub breaker_window_ms: Option<u64>,
    /// The fewest attempts in the window before the breaker may open.
    pub breaker_min_calls: u32,
    /// The failure rate (1–100 %) over the window at or above which the breaker opens.
    pub breaker_failure_rate_percent: u32,
    /// How long an open breaker fails calls fast before it lets probes through.
    pub breaker_open_ms: u64,
    /// Probe calls a half-open breaker lets through; all must succeed for it to close.
    pub breaker_half_open_probes: u32,
}

impl Default for AdapterConfig {
    fn default() -> Self {
        Self {
            request_timeout_ms: 3_000,
            command_deadline_ms: 10_000,
            retry_attempts_max: 3,
            backoff_ms_min: 50,
            backoff_ms_max: 1_000,
            inflight_max: 256,
            admitted_inflight_wait_ms_max: 30_000,
            rate_per_s: 1_000,
            burst: 100,
            rate_wait_ms_max: 200,
            merchant_rate_per_s: None,
            breaker_window_size: 50,
            breaker_window_ms: None,
            breaker_min_calls: 20,
            breaker_failure_rate_percent: 50,
            breaker_open_ms: 5_000,
            breaker_half_open_probes: 3,
        }
    }
}

impl AdapterConfig {
    /// Checks every bound is usable.
    pub fn validate(&self) -> Result<(), AdapterConfigError> {
        let invalid = |name, reason| Err(AdapterConfigError::InvalidBound { name, reason });
        if self.request_timeout_ms == 0 {
            return invalid("request_timeout_ms", "must be at least 1");
        }
        if self.command_deadline_ms < self.request_timeout_ms {
            return invalid("command_deadline_ms", "must be at least request_timeout_ms");
        }
        if !(1..=RETRY_ATTEMPTS_LIMIT).contains(&self.retry_attempts_max) {
            return invalid("retry_attempts_max", "must be between 1 and 20");
        }
        if self.backoff_ms_min > self.backoff_ms_max {
            return invalid("backoff_ms_min", "must not exceed backoff_ms_max");
        }
        if self.inflight_max == 0 || self.inflight_max > Semaphore::MAX_PERMITS {
            return invalid("inflight_max", "must be at least 1 and fit a semaphore");
        }
        if self.rate_per_s == 0 {
            return invalid("rate_per_s", "must be at least 1");
        }
        if self.burst == 0 {
            return invalid("burst", "must be at least 1");
        }
        if self.rate_wait_ms_max > RATE_WAIT_MS_LIMIT {
            return invalid("rate_wait_ms_max", "must be at most 60000");
        }
        if self.merchant_rate_per_s == Some(0) {
            return invalid("merchant_rate_per_s", "must be at least 1 when set");
        }
        self.breaker_config()
            .check()
            .or_else(|(name, reason)| invalid(name, reason))
    }

    pub(super) fn rate_settings(&self) -> Option<RateSettings> {
        Some(RateSettings {
            rate_per_s: NonZeroU32::new(self.rate_per_s)?,
            burst: NonZeroU32::new(self.burst)?,
            wait_ms_max: self.rate_wait_ms_max,
            merchant_rate_per_s: match self.merchant_rate_per_s {
                Some(rate) => Some(NonZeroU32::new(rate)?),
                None => None,
            },
        })
    }

    pub(super) fn breaker_config(&self) -> BreakerConfig {
        BreakerConfig {
            window_size: self.breaker_window_size,
            window_ms: self.breaker_window_ms,
            min_calls: self.breaker_min_calls,
            failure_rate_percent: self.breaker_failure_rate_percent,
            open_ms: self.breaker_open_ms,
            half_open_probes: self.breaker_half_open_probes,
            // A probe ends within one attempt's deadline.
            probe_retry_after_ms: self.request_timeout_ms,
        }
    }
}

/// One channel's health, for `/admin/channels` and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdapterHealth {
    /// Calls holding a bulkhead permit now.
    pub inflight: usize,
    /// The bulkhead's bound.
    pub inflight_max: usize,
    /// The channel's rate limit, per second.
    pub rate_per_s: u32,
    /// The channel's burst.
    pub burst: u32,
    /// Each merchant's rate limit on the channel, when there is one.
    pub merchant_rate_per_s: Option<u32>,
    /// The circuit breaker (times in unix milliseconds).
    pub breaker: BreakerHealth,
    /// Attempts sent to the channel (retries included).
    pub calls_total: u64,
    /// Attempts the breaker counted as failures.
    pub failures_total: u64,
    /// Calls refused at once because the breaker was open (or half-open with its probes out).
    pub rejected_open_total: u64,
    /// Calls refused because no rate-limit permit came within `rate_wait_ms_max`.
    pub rejected_rate_total: u64,
    /// Calls refused because `inflight_max` calls were in flight.
    pub rejected_inflight_total: u64,
}

/// One request as the protocol module built it. Not `Debug`: the body may hold card data.
pub(crate) struct WireRequest {
    pub method: Method,
    /// Path and query, starting with `/`.
    pub path: String,
    pub body: Bytes,
}

/// A 2xx answer.
pub(crate) struct WireResponse {
    pub body: Bytes,
}
