//! What a run counts: per-worker [`Stats`] (merged once at the end, so the hot path touches no
//! shared state but two relaxed counters in [`Live`]), and what Kassa acknowledged ([`Acks`]),
//! which the verify step reads back.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

use crate::cli::Scenario;
use crate::conn::Failure;

/// The histograms' range: 1 µs to 60 s (larger is clamped), 3 significant figures.
pub const LATENCY_US_MAX: u64 = 60_000_000;
const LATENCY_SIGNIFICANT_FIGURES: u8 = 3;

pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that satisfy `new_with_bounds`' rules (low ≥ 1, high ≥ 2·low,
    // sigfig ≤ 5), so it cannot fail; the fallback exists only to avoid a panic path.
    Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGNIFICANT_FIGURES)
        .or_else(|_| Histogram::new(LATENCY_SIGNIFICANT_FIGURES))
        .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid"))
}

/// Counters the progress line reads while the run goes on.
#[derive(Debug, Default)]
pub struct Live {
    /// Answers and failures so far (warmup included).
    pub requests: AtomicU64,
    /// Non-2xx answers and failures so far.
    pub errors: AtomicU64,
    /// 5xx answers other than 503 (shedding), warmup included.
    pub internal_errors: AtomicU64,
}

impl Live {
    /// Counts an answer (`Some(status)`) or a failure (`None`).
    pub fn count(&self, status: Option<u16>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match status {
            Some(200..=299) => {}
            Some(status) if status >= 500 && status != 503 => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.internal_errors.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One worker's (or the whole run's) measurements over the measured window.
#[derive(Debug, Clone)]
pub struct Stats {
    pub latency_us: Histogram<u64>,
    /// 2xx answers only: what load shedding must keep fast for the requests it admits.
    pub admitted_latency_us: Histogram<u64>,
    /// 429 and 503 answers only: how fast a refusal comes.
    pub shed_latency_us: Histogram<u64>,
    pub statuses: BTreeMap<u16, u64>,
    /// `error.code` of non-2xx answers (`unparsable` when the body had none).
    pub error_codes: BTreeMap<String, u64>,
    /// Answers carrying `Retry-After`.
    pub retry_after: u64,
    pub connect_errors: u64,
    pub io_errors: u64,
    pub timeouts: u64,
    /// Open loop: scheduled starts picked up more than `LATE_THRESHOLD_US` after their time.
    pub late: u64,
    /// Open loop: scheduled starts in the window.
    pub scheduled: u64,
    pub started: [u64; Scenario::ALL.len()],
    pub completed: [u64; Scenario::ALL.len()],
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            latency_us: new_histogram(),
            admitted_latency_us: new_histogram(),
            shed_latency_us: new_histogram(),
            statuses: BTreeMap::new(),
            error_codes: BTreeMap::new(),
            retry_after: 0,
            connect_errors: 0,
            io_errors: 0,
            timeouts: 0,
            late: 0,
            scheduled: 0,
            started: [0; Scenario::ALL.len()],
            completed: [0; Scenario::ALL.len()],
        }
    }
}

impl Stats {
    pub fn failure(&mut self, failure: Failure) {
        match failure {
            Failure::Connect => self.connect_errors += 1,
            Failure::Io => self.io_errors += 1,
            Failure::Timeout => self.timeouts += 1,
        }
    }

    pub fn answer(&mut self, status: u16, retry_after: bool, latency_us: u64) {
        self.latency_us.saturating_record(latency_us.max(1));
        if (200..300).contains(&status) {
            self.admitted_latency_us
                .saturating_record(latency_us.max(1));
        } else if status == 429 || status == 503 {
            self.shed_latency_us.saturating_record(latency_us.max(1));
        }
        *self.statuses.entry(status).or_default() += 1;
        if retry_after {
            self.retry_after += 1;
        }
    }

    pub fn error_code(&mut self, code: &str) {
        match self.error_codes.get_mut(code) {
            Some(count) => *count += 1,
            None => {
                self.error_codes.insert(code.to_owned(), 1);
            }
        }
    }

    /// Answers received (any status).
    pub fn answers(&self) -> u64 {
        self.latency_us.len()
    }

    pub fn failures(&self) -> u64 {
        self.connect_errors + self.io_errors + self.timeouts
    }

    pub fn status_count(&self, pred: impl Fn(u16) -> bool) -> u64 {
        self.statuses
            .iter()
            .filter(|(status, _)| pred(**status))
            .map(|(_, count)| count)
            .sum()
    }

    pub fn merge(&mut self, other: &Stats) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
        let _ = self.admitted_latency_us.add(&other.admitted_latency_us);
        let _ = self.shed_latency_us.add(&other.shed_latency_us);
        for (status, count) in &other.statuses {
            *self.statuses.entry(*status).or_default() += count;
        }
        for (code, count) in &other.error_codes {
            *self.error_codes.entry(code.clone()).or_default() += count;
        }
        self.retry_after += other.retry_after;
        self.connect_errors += other.connect_errors;
        self.io_errors += other.io_errors;
        self.timeouts += other.timeouts;
        self.late += other.late;
        self.scheduled += other.scheduled;
        for i in 0..Scenario::ALL.len() {
            self.started[i] += other.started[i];
            self.completed[i] += other.completed[i];
        }
    }
}

/// The outcome a payment should end in, from what the run asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Succeeded,
    Failed,
    /// A manual-capture charge whose capture was not acknowledged: it may or may not have
    /// happened.
    AuthorizedOrSucceeded,
}

impl Expect {
    pub fn allows(self, status: &str) -> bool {
        match self {
            Expect::Succeeded => status == "succeeded",
            Expect::Failed => status == "failed",
            Expect::AuthorizedOrSucceeded => status == "authorized" || status == "succeeded",
        }
    }
}

/// A payment Kassa acknowledged with a 2xx.
#[derive(Debug, Clone)]
pub struct AckedPayment {
    pub merchant: u16,
    pub id: String,
    pub expect: Expect,
}

/// A refund Kassa acknowledged with a 2xx.
#[derive(Debug, Clone)]
pub struct AckedRefund {
    pub merchant: u16,
    pub id: String,
    pub payment_id: String,
}

/// Everything acknowledged, warmup included (those are real payments too).
#[derive(Debug, Default, Clone)]
pub struct Acks {
    pub payments: Vec<AckedPayment>,
    pub refunds: Vec<AckedRefund>,
}

impl Acks {
    pub fn merge(&mut self, other: Acks) {
        self.payments.extend(other.payments);
        self.refunds.extend(other.refunds);
    }
}
