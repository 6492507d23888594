//! What the sandbox counts, for tests: card requests per second (the last
//! [`REQUESTS_BY_SECOND_WINDOW_S`] seconds), charges, injected faults and callbacks.
//!
//! Time comes in as an argument (`now_s`), so the counting is plain and testable. Counts
//! start at zero when the sandbox starts, even on a ledger file that already holds charges.
//!
//! Each channel counts on its own [`Stats`]. The top-level fields of `GET /sandbox/stats` are
//! the card channel's (as they always were); `channels` holds every channel's counters by name
//! (`card`, `qr_wallet`, `app_wallet`, `bank_transfer`), where "charges" are the payments that
//! channel created and "requests" are requests under its path prefix.

use std::collections::BTreeMap;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// How many seconds `requests_by_second` keeps (the window ends at the current second).
pub const REQUESTS_BY_SECOND_WINDOW_S: usize = 120;

/// `GET /sandbox/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsView {
    /// Card requests received (every `/card/…` request, whatever its answer).
    pub requests_total: u64,
    /// `[unix_s, requests]` for the seconds of the last [`REQUESTS_BY_SECOND_WINDOW_S`] that saw any,
    /// oldest first.
    pub requests_by_second: Vec<[u64; 2]>,
    /// Requests that arrived in a second that had already seen `max_requests_per_s`.
    pub requests_over_limit: u64,
    /// Charges this sandbox created (replays not counted).
    pub charges_total: u64,
    /// Card calls answered 5xx by the behaviour (including `hard_down`).
    pub errors_injected: u64,
    /// Card calls answered 429 by the behaviour.
    pub rate_limited_injected: u64,
    /// Card calls done and then held without an answer.
    pub timeouts_injected: u64,
    /// Held connections not yet released (the client has not given up yet).
    pub connections_held: u64,
    /// Callback copies accepted into the queue (a duplicated callback counts twice).
    pub callbacks_queued: u64,
    /// Callbacks that were sent twice.
    pub callbacks_duplicated: u64,
    /// Callback copies the receiver answered with a 2xx.
    pub callbacks_delivered: u64,
    /// Callback copies abandoned after their last attempt.
    pub callbacks_failed: u64,
    /// Callback copies dropped because the queue was full.
    pub callbacks_dropped: u64,
    /// Asynchronous outcomes announced by no callback because of `callback_rate_percent`.
    #[serde(default)]
    pub callbacks_withheld: u64,
    /// Every channel's counters by channel name (only in the top-level view).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub channels: BTreeMap<String, StatsView>,
}

/// A counter the handlers bump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counter {
    Charges,
    ErrorsInjected,
    RateLimitedInjected,
    TimeoutsInjected,
    CallbacksQueued,
    CallbacksDuplicated,
    CallbacksDelivered,
    CallbacksFailed,
    CallbacksDropped,
    CallbacksWithheld,
}

#[derive(Debug)]
struct Inner {
    view: StatsView,
    /// Slot `s % REQUESTS_BY_SECOND_WINDOW_S` holds `(s, requests in s)`.
    seconds: [(u64, u64); REQUESTS_BY_SECOND_WINDOW_S],
}

/// The counters, behind one mutex (each update is a few additions).
#[derive(Debug)]
pub(crate) struct Stats {
    inner: Mutex<Inner>,
}

impl Stats {
    pub(crate) fn new() -> Self {
        Self {
            inner: Mutex::new(Inner {
                view: StatsView::default(),
                seconds: [(0, 0); REQUESTS_BY_SECOND_WINDOW_S],
            }),
        }
    }

    /// Counts a card request arriving at `now_s`, against `max_requests_per_s` if set.
    pub(crate) fn request(&self, now_s: u64, max_requests_per_s: Option<u32>) {
        let mut inner = self.inner.lock();
        let slot = &mut inner.seconds[slot_of(now_s)];
        if slot.0 != now_s {
            *slot = (now_s, 0);
        }
        slot.1 += 1;
        let in_second = slot.1;
        inner.view.requests_total += 1;
        if max_requests_per_s.is_some_and(|limit| in_second > u64::from(limit)) {
            inner.view.requests_over_limit += 1;
        }
    }

    pub(crate) fn bump(&self, counter: Counter) {
        let mut inner = self.inner.lock();
        let view = &mut inner.view;
        let field = match counter {
            Counter::Charges => &mut view.charges_total,
            Counter::ErrorsInjected => &mut view.errors_injected,
            Counter::RateLimitedInjected => &mut view.rate_limited_injected,
            Counter::TimeoutsInjected => &mut view.timeouts_injected,
            Counter::CallbacksQueued => &mut view.callbacks_queued,
            Counter::CallbacksDuplicated => &mut view.callbacks_duplicated,
            Counter::CallbacksDelivered => &mut view.callbacks_delivered,
            Counter::CallbacksFailed => &mut view.callbacks_failed,
            Counter::CallbacksDropped => &mut view.callbacks_dropped,
            Counter::CallbacksWithheld => &mut view.callbacks_withheld,
        };
        *field += 1;
    }

    /// Marks a connection held; the guard releases it when dropped (answered, expired, or the
    /// client went away and hyper dropped the request).
    pub(crate) fn hold(self: &std::sync::Arc<Self>) -> HeldConnection {
        self.inner.lock().view.connections_held += 1;
        HeldConnection {
            stats: self.clone(),
        }
    }

    /// The counters as of `now_s`.
    pub(crate) fn view(&self, now_s: u64) -> StatsView {
        let inner = self.inner.lock();
        let oldest_s = now_s.saturating_sub(REQUESTS_BY_SECOND_WINDOW_S as u64 - 1);
        let mut seconds: Vec<[u64; 2]> = inner
            .seconds
            .iter()
            .filter(|(second, count)| *count > 0 && (oldest_s..=now_s).contains(second))
            .map(|(second, count)| [*second, *count])
            .collect();
        seconds.sort_unstable();
        let mut view = inner.view.clone();
        view.requests_by_second = seconds;
        view
    }
}

fn slot_of(second: u64) -> usize {
    // The remainder is below REQUESTS_BY_SECOND_WINDOW_S, which fits in usize.
    usize::try_from(second % REQUESTS_BY_SECOND_WINDOW_S as u64).unwrap_or(0)
}

/// See [`Stats::hold`].
#[derive(Debug)]
pub(crate) struct HeldConnection {
    stats: std::sync::Arc<Stats>,
}

impl Drop for HeldConnection {
    fn drop(&mut self) {
        let mut inner = self.stats.inner.lock();
        assert!(
            inner.view.connections_held > 0,
            "held connections underflow"
        );
        inner.view.connections_held -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_per_second_and_old_seconds_fall_out() {
        let stats = Stats::new();
        for _ in 0..3 {
            stats.request(1_000, Some(2));
        }
        stats.request(1_001, Some(2));
        stats.request(1_000 + REQUESTS_BY_SECOND_WINDOW_S as u64, Some(2));
        let view = stats.view(1_000 + REQUESTS_BY_SECOND_WINDOW_S as u64);
        assert_eq!(view.requests_total, 5);
        assert_eq!(view.requests_over_limit, 1);
        // Second 1000 was overwritten by its slot's newer second, and is out of the window.
        assert_eq!(
            view.requests_by_second,
            vec![[1_001, 1], [1_000 + REQUESTS_BY_SECOND_WINDOW_S as u64, 1]]
        );
        assert_eq!(
            stats
                .view(1_001 + REQUESTS_BY_SECOND_WINDOW_S as u64)
                .requests_by_second
                .len(),
            1
        );
    }

    #[test]
    fn held_connections_are_released_by_their_guard() {
        let stats = std::sync::Arc::new(Stats::new());
        let first = stats.hold();
        let second = stats.hold();
        assert_eq!(stats.view(0).connections_held, 2);
        drop(first);
        drop(second);
        assert_eq!(stats.view(0).connections_held, 0);
    }
}
