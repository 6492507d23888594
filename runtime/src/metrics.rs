//! `/metrics`: Prometheus text exposition (format 0.0.4), without a metrics dependency.
//!
//! Two kinds of numbers:
//!
//! - **Per request**, kept here: the router calls [`Metrics::observe_request`] once per HTTP
//!   request with its route *template* (`"GET /v1/payments/{id}"`, never the raw path), the
//!   status and the elapsed time. That feeds `kassa_http_requests_total{route,status}` and the
//!   histogram `kassa_http_request_duration_seconds{route}`.
//! - **Read at scrape time**, owned elsewhere (the order directory, the journal writer, the
//!   supervision tree, the readiness check): the caller gathers them into [`Gauges`] and passes
//!   them to [`Metrics::render`].
//!
//! # Hot path
//!
//! Recording a request takes no lock once its route has been seen: routes live in a fixed
//! array of write-once slots, found by a linear scan of at most [`ROUTES_MAX`] short string
//! compares, and every counter is an `AtomicU64` updated with `Relaxed` ordering (each number
//! is independent; a scrape may see one request in the counter and not yet in the histogram).
//! Only the first request of a new route takes a mutex, to claim a slot.
//!
//! # Bounded cardinality
//!
//! Every label set is bounded, so a scrape stays small however the API is abused:
//!
//! - `route`: `&'static str` templates from the router, at most [`ROUTES_MAX`] distinct ones;
//!   any further route is counted as `route="other"`. Unmatched requests must be passed as
//!   `"unmatched"`, never as their path.
//! - `status`: one counter per status `100..=599` of a route; anything else (hyper allows up to
//!   999) is counted as `status="other"`.
//! - `path` of `kassa_supervision_restarts_total`: at most [`RESTART_PATHS_MAX`] paths are
//!   rendered (the first in path order); the rest are summed into `path="other"`. Callers should
//!   pass supervisors and named workers, not individual order actors (a shard's count already
//!   includes its orders' restarts).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The most distinct route templates tracked; later ones are counted as `route="other"`.
pub const ROUTES_MAX: usize = 64;
/// The most `kassa_supervision_restarts_total` series rendered; the rest sum into `"other"`.
pub const RESTART_PATHS_MAX: usize = 256;
/// The label value standing for everything past a cardinality bound.
const OTHER: &str = "other";

/// Statuses with their own counter: `STATUS_MIN..=STATUS_MAX`.
const STATUS_MIN: u16 = 100;
const STATUS_MAX: u16 = 599;
const STATUS_SLOTS: usize = (STATUS_MAX - STATUS_MIN + 1) as usize;

/// Histogram upper bounds in microseconds, with their `le` label exactly as rendered (so no
/// float formatting decides a label value). Observations above the last go to `+Inf` only.
const BUCKETS: [(u64, &str); 14] = [
    (500, "0.0005"),
    (1_000, "0.001"),
    (2_500, "0.0025"),
    (5_000, "0.005"),
    (10_000, "0.01"),
    (25_000, "0.025"),
    (50_000, "0.05"),
    (100_000, "0.1"),
    (250_000, "0.25"),
    (500_000, "0.5"),
    (1_000_000, "1"),
    (2_500_000, "2.5"),
    (5_000_000, "5"),
    (10_000_000, "10"),
];

/// Numbers owned by other parts of Kassa, read when `/metrics` is scraped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    /// `kassa_orders_live`: order actors currently running, over all shards.
    pub orders_live: u64,
    /// `kassa_journal_commits_total`: transactions the journal writer committed.
    pub journal_commits: u64,
    /// `kassa_journal_writes_total`: appends committed (many per commit under group commit).
    pub journal_writes: u64,
    /// `kassa_journal_batch_writes_max`: the largest number of appends in one commit so far.
    pub journal_batch_writes_max: u64,
    /// `kassa_journal_queue_depth`: appends waiting for the writer now.
    pub journal_queue_depth: u64,
    /// `kassa_supervision_restarts_total{path}`: restarts since start, by supervision path.
    pub restarts_by_path: Vec<(String, u64)>,
    /// `kassa_ready`: 1 when `/readyz` would answer 200.
    pub ready: bool,
    /// `kassa_http_requests_inflight`: merchant API requests being handled now (at most
    /// `http.requests_inflight_max`; past it requests are shed with 503).
    pub http_requests_inflight: u64,
}

/// Counters of one route. Histogram buckets are stored per bucket (not cumulative) and summed
/// when rendered, so one observation is one increment.
struct RouteStats {
    route: &'static str,
    /// Index `status - STATUS_MIN`.
    statuses: Box<[AtomicU64]>,
    status_other: AtomicU64,
    /// `buckets[i]` counts observations in `(BUCKETS[i-1], BUCKETS[i]]`; the extra last one
    /// counts those above the last bound. Their total is the histogram's `_count`.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    /// Sum of elapsed times in nanoseconds (u64 wraps only after ~584 years of summed time).
    sum_nanos: AtomicU64,
}

impl RouteStats {
    fn new(route: &'static str) -> RouteStats {
        RouteStats {
            route,
            statuses: (0..STATUS_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            status_other: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }

    fn observe(&self, status: u16, elapsed: Duration) {
        let counter = match status.checked_sub(STATUS_MIN) {
            Some(index) if status <= STATUS_MAX => &self.statuses[usize::from(index)],
            _ => &self.status_other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let micros = elapsed.as_micros();
        let bucket = BUCKETS
            .iter()
            .position(|&(le_micros, _)| micros <= u128::from(le_micros))
            .unwrap_or(BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// Webhook attempts by what they did to their delivery (the notifier counts them).
#[derive(Debug, Default)]
pub struct WebhookCounters {
    delivered: AtomicU64,
    /// Failed attempts that will be retried.
    failed: AtomicU64,
    /// Failed attempts that spent the schedule (the delivery is dead).
    dead: AtomicU64,
}

impl WebhookCounters {
    pub fn count(&self, outcome: &kassa_store::AttemptOutcome) {
        use kassa_store::AttemptOutcome;
        let counter = match outcome {
            AttemptOutcome::Delivered => &self.delivered,
            AttemptOutcome::Retry { .. } => &self.failed,
            AttemptOutcome::Dead => &self.dead,
            AttemptOutcome::NoEndpoint => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String) {
        let name = "kassa_webhook_attempts_total";
        header(
            out,
            name,
            "counter",
            "Webhook attempts by result: delivered, failed (retried), dead (schedule spent).",
        );
        for (result, counter) in [
            ("delivered", &self.delivered),
            ("failed", &self.failed),
            ("dead", &self.dead),
        ] {
            let _ = writeln!(
                out,
                "{name}{{result=\"{result}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
    }
}

/// The RabbitMQ transport's state (all zero with the embedded transport).
#[derive(Debug, Default)]
pub struct BrokerGauges {
    relay_connected: std::sync::atomic::AtomicBool,
    consumer_connected: std::sync::atomic::AtomicBool,
    relayed: AtomicU64,
}

impl BrokerGauges {
    pub fn set_relay_connected(&self, connected: bool) {
        self.relay_connected.store(connected, Ordering::Relaxed);
    }

    pub fn set_consumer_connected(&self, connected: bool) {
        self.consumer_connected.store(connected, Ordering::Relaxed);
    }

    pub fn count_relayed(&self, messages: usize) {
        self.relayed.fetch_add(
            u64::try_from(messages).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Whether the relay and the consumer are each connected.
    pub fn connected(&self) -> (bool, bool) {
        (
            self.relay_connected.load(Ordering::Relaxed),
            self.consumer_connected.load(Ordering::Relaxed),
        )
    }

    fn render(&self, out: &mut String) {
        let name = "kassa_notifier_broker_connected";
        header(
            out,
            name,
            "gauge",
            "1 while the notifier's relay or consumer holds a broker connection (RabbitMQ transport).",
        );
        let (relay, consumer) = self.connected();
        for (role, up) in [("relay", relay), ("consumer", consumer)] {
            let _ = writeln!(out, "{name}{{role=\"{role}\"}} {}", u8::from(up));
        }
        let name = "kassa_notifier_relayed_total";
        header(
            out,
            name,
            "counter",
            "Deliveries the outbox relay handed to the broker (confirmed).",
        );
        let _ = writeln!(out, "{name} {}", self.relayed.load(Ordering::Relaxed));
    }
}

/// What Kassa used Redis for when it fell back without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisUse {
    /// The in-flight lock or the replay cache: the store alone answered.
    Idempotency,
    /// The cluster-wide rate limit: the local limits alone decided.
    RateLimit,
}

impl RedisUse {
    pub fn as_str(self) -> &'static str {
        match self {
            RedisUse::Idempotency => "idempotency",
            RedisUse::RateLimit => "rate_limit",
        }
    }
}

/// Redis' state in cluster mode (all zero in embedded mode, which never connects). Shared with
/// the Redis client (`redis/`), which sets it.
#[derive(Debug, Default)]
pub struct RedisGauges {
    connected: std::sync::atomic::AtomicBool,
    fallbacks_idempotency: AtomicU64,
    fallbacks_rate_limit: AtomicU64,
}

impl RedisGauges {
    /// Sets whether Redis answers; returns what it was before (callers log changes only).
    pub fn set_connected(&self, connected: bool) -> bool {
        self.connected.swap(connected, Ordering::Relaxed)
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// One operation that went on without Redis.
    pub fn count_fallback(&self, used_for: RedisUse) {
        let counter = match used_for {
            RedisUse::Idempotency => &self.fallbacks_idempotency,
            RedisUse::RateLimit => &self.fallbacks_rate_limit,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String) {
        let name = "kassa_redis_connected";
        header(
            out,
            name,
            "gauge",
            "1 while Redis answers (cluster mode); 0 while Kassa runs without it.",
        );
        let _ = writeln!(out, "{name} {}", u8::from(self.connected()));
        let name = "kassa_redis_fallbacks_total";
        header(
            out,
            name,
            "counter",
            "Operations that went on without Redis, by what Redis would have done.",
        );
        for (used_for, counter) in [
            (RedisUse::Idempotency, &self.fallbacks_idempotency),
            (RedisUse::RateLimit, &self.fallbacks_rate_limit),
        ] {
            let _ = writeln!(
                out,
                "{name}{{use=\"{}\"}} {}",
                used_for.as_str(),
                counter.load(Ordering::Relaxed)
            );
        }
    }
}

/// Requests the front door's rate limits refused (`http/rate_limit.rs`), by scope.
#[derive(Debug, Default)]
pub struct RateLimitCounters {
    ip: AtomicU64,
    merchant: AtomicU64,
}

impl RateLimitCounters {
    /// One `429 rate_limited` answered by the `scope` limit.
    pub fn count(&self, scope: crate::http::rate_limit::Scope) {
        use crate::http::rate_limit::Scope;
        let counter = match scope {
            Scope::Ip => &self.ip,
            Scope::Merchant => &self.merchant,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String) {
        use crate::http::rate_limit::Scope;
        let name = "kassa_http_rate_limited_total";
        header(
            out,
            name,
            "counter",
            "Merchant API requests refused with 429 by the front door's limits, by scope (ip, merchant).",
        );
        for (scope, counter) in [(Scope::Ip, &self.ip), (Scope::Merchant, &self.merchant)] {
            let _ = writeln!(
                out,
                "{name}{{scope=\"{}\"}} {}",
                scope.as_str(),
                counter.load(Ordering::Relaxed)
            );
        }
    }
}

/// The process's request metrics. `Send + Sync`; share it behind an `Arc` (or in `App`).
pub struct Metrics {
    /// 429s of the front door's per-IP and per-merchant limits.
    pub rate_limited: RateLimitCounters,
    /// Webhook attempts (the notifier's counters).
    pub webhooks: WebhookCounters,
    /// The notifier's broker connections (RabbitMQ transport).
    pub broker: BrokerGauges,
    /// Redis' state and fallbacks (cluster mode); the Redis client holds a clone.
    pub redis: std::sync::Arc<RedisGauges>,
    /// Write-once slots, filled front to back; a scan stops at the first empty one.
    routes: [OnceLock<RouteStats>; ROUTES_MAX],
    /// Serialises claiming a slot (first request of a new route only).
    claim: Mutex<()>,
    /// Routes past [`ROUTES_MAX`].
    overflow: RouteStats,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let routes = self.routes.iter().map_while(OnceLock::get).count();
        f.debug_struct("Metrics").field("routes", &routes).finish()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            routes: std::array::from_fn(|_| OnceLock::new()),
            claim: Mutex::new(()),
            overflow: RouteStats::new(OTHER),
            webhooks: WebhookCounters::default(),
            broker: BrokerGauges::default(),
            redis: std::sync::Arc::default(),
            rate_limited: RateLimitCounters::default(),
        }
    }

    /// Records one finished request. `route` is the router's template (`"POST /v1/payments"`,
    /// `"GET /v1/payments/{id}"`, `"unmatched"`), never a raw path.
    pub fn observe_request(&self, route: &'static str, status: u16, elapsed: Duration) {
        self.stats_for(route).observe(status, elapsed);
    }

    fn stats_for(&self, route: &'static str) -> &RouteStats {
        if let Some(stats) = self.find(route) {
            return stats;
        }
        // A poisoned lock only means a thread panicked while holding `()`: nothing to repair.
        let _claim = self
            .claim
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(stats) = self.find(route) {
            return stats;
        }
        match self.routes.iter().find(|slot| slot.get().is_none()) {
            // Slots are only set under `claim`, so this empty one is still empty.
            Some(slot) => slot.get_or_init(|| RouteStats::new(route)),
            None => &self.overflow,
        }
    }

    fn find(&self, route: &str) -> Option<&RouteStats> {
        self.routes
            .iter()
            .map_while(OnceLock::get)
            .find(|stats| stats.route == route)
    }

    /// The whole exposition: request metrics, then `gauges`. Content type
    /// `text/plain; version=0.0.4; charset=utf-8`.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let mut routes: Vec<&RouteStats> = self.routes.iter().map_while(OnceLock::get).collect();
        routes.push(&self.overflow);
        routes.sort_by_key(|stats| stats.route);
        render_requests(&mut out, &routes);
        render_durations(&mut out, &routes);
        render_gauges(&mut out, gauges);
        self.webhooks.render(&mut out);
        self.broker.render(&mut out);
        self.redis.render(&mut out);
        self.rate_limited.render(&mut out);
        out
    }
}

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn render_requests(out: &mut String, routes: &[&RouteStats]) {
    let name = "kassa_http_requests_total";
    header(
        out,
        name,
        "counter",
        "HTTP requests answered, by route template and status.",
    );
    for stats in routes {
        let route = escape_label(stats.route);
        let statuses = (STATUS_MIN..=STATUS_MAX).zip(stats.statuses.iter());
        for (status, counter) in statuses {
            let count = counter.load(Ordering::Relaxed);
            if count > 0 {
                let _ = writeln!(
                    out,
                    "{name}{{route=\"{route}\",status=\"{status}\"}} {count}"
                );
            }
        }
        let other = stats.status_other.load(Ordering::Relaxed);
        if other > 0 {
            let _ = writeln!(
                out,
                "{name}{{route=\"{route}\",status=\"{OTHER}\"}} {other}"
            );
        }
    }
}

fn render_durations(out: &mut String, routes: &[&RouteStats]) {
    let name = "kassa_http_request_duration_seconds";
    header(
        out,
        name,
        "histogram",
        "HTTP request latency, by route template.",
    );
    for stats in routes {
        let counts: Vec<u64> = stats
            .buckets
            .iter()
            .map(|bucket| bucket.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            continue;
        }
        let route = escape_label(stats.route);
        let mut cumulative = 0u64;
        for (&(_, le), count) in BUCKETS.iter().zip(&counts) {
            cumulative += count;
            let _ = writeln!(
                out,
                "{name}_bucket{{route=\"{route}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {total}"
        );
        // Floats are fine here: these are seconds of latency, not money.
        let sum_seconds = stats.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{route=\"{route}\"}} {sum_seconds}");
        let _ = writeln!(out, "{name}_count{{route=\"{route}\"}} {total}");
    }
}

fn render_gauges(out: &mut String, gauges: &Gauges) {
    let single: [(&str, &str, &str, u64); 7] = [
        (
            "kassa_orders_live",
            "gauge",
            "Order actors running now, over all shards.",
            gauges.orders_live,
        ),
        (
            "kassa_journal_commits_total",
            "counter",
            "Journal transactions committed (one fsync each).",
            gauges.journal_commits,
        ),
        (
            "kassa_journal_writes_total",
            "counter",
            "Journal appends committed (group commit puts many in one transaction).",
            gauges.journal_writes,
        ),
        (
            "kassa_journal_batch_writes_max",
            "gauge",
            "The most journal appends committed in one transaction since start.",
            gauges.journal_batch_writes_max,
        ),
        (
            "kassa_journal_queue_depth",
            "gauge",
            "Journal appends waiting for the writer now.",
            gauges.journal_queue_depth,
        ),
        (
            "kassa_ready",
            "gauge",
            "1 when /readyz answers ready, else 0.",
            u64::from(gauges.ready),
        ),
        (
            "kassa_http_requests_inflight",
            "gauge",
            "Merchant API requests being handled now (past http.requests_inflight_max they are shed with 503).",
            gauges.http_requests_inflight,
        ),
    ];
    for (name, kind, help, value) in single {
        header(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
    render_restarts(out, &gauges.restarts_by_path);
}

fn render_restarts(out: &mut String, restarts_by_path: &[(String, u64)]) {
    let name = "kassa_supervision_restarts_total";
    header(
        out,
        name,
        "counter",
        "Restarts since start, by supervision tree path.",
    );
    let mut sorted: Vec<&(String, u64)> = restarts_by_path.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let kept = sorted.len().min(RESTART_PATHS_MAX);
    for (path, restarts) in &sorted[..kept] {
        let _ = writeln!(out, "{name}{{path=\"{}\"}} {restarts}", escape_label(path));
    }
    if sorted.len() > kept {
        let rest: u64 = sorted[kept..].iter().map(|(_, restarts)| restarts).sum();
        let _ = writeln!(out, "{name}{{path=\"{OTHER}\"}} {rest}");
    }
}

/// A label value as the text format wants it: `\` → `\\`, `"` → `\"`, newline → `\n`.
fn escape_label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The value of the sample whose line starts with `series ` (name and labels exactly).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map(|value| value.parse().expect("sample values are numbers"))
    }

    #[test]
    fn counts_requests_by_route_and_status() {
        let metrics = Metrics::new();
        metrics.observe_request("POST /v1/payments", 201, ms(3));
        metrics.observe_request("POST /v1/payments", 201, ms(4));
        metrics.observe_request("POST /v1/payments", 422, ms(1));
        metrics.observe_request("GET /v1/payments/{id}", 200, ms(1));
        metrics.observe_request("unmatched", 404, ms(0));
        let text = metrics.render(&Gauges::default());

        assert!(text.contains("# HELP kassa_http_requests_total "), "{text}");
        assert!(
            text.contains("# TYPE kassa_http_requests_total counter\n"),
            "{text}"
        );
        let requests = |route: &str, status: &str| {
            let series =
                format!("kassa_http_requests_total{{route=\"{route}\",status=\"{status}\"}}");
            sample(&text, &series)
        };
        assert_eq!(requests("POST /v1/payments", "201"), Some(2.0), "{text}");
        assert_eq!(requests("POST /v1/payments", "422"), Some(1.0), "{text}");
        assert_eq!(
            requests("GET /v1/payments/{id}", "200"),
            Some(1.0),
            "{text}"
        );
        assert_eq!(requests("unmatched", "404"), Some(1.0), "{text}");
        assert_eq!(
            requests("POST /v1/payments", "500"),
            None,
            "no zero series: {text}"
        );
        assert!(
            !text.contains("route=\"other\""),
            "an unused overflow route renders nothing: {text}"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_in_count() {
        let metrics = Metrics::new();
        let route = "GET /admin/supervision";
        for elapsed in [
            Duration::from_micros(100), // ≤ 0.0005
            Duration::from_micros(500), // ≤ 0.0005 (bounds are inclusive)
            ms(2),                      // ≤ 0.0025
            ms(300),                    // ≤ 0.5
            ms(20_000),                 // +Inf only
        ] {
            metrics.observe_request(route, 200, elapsed);
        }
        let text = metrics.render(&Gauges::default());
        assert!(
            text.contains("# TYPE kassa_http_request_duration_seconds histogram\n"),
            "{text}"
        );
        let bucket = |le: &str| {
            let series = format!(
                "kassa_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}}"
            );
            sample(&text, &series).unwrap_or_else(|| panic!("no bucket le={le}: {text}"))
        };
        assert_eq!(bucket("0.0005"), 2.0);
        assert_eq!(bucket("0.001"), 2.0);
        assert_eq!(bucket("0.0025"), 3.0);
        assert_eq!(bucket("0.25"), 3.0);
        assert_eq!(bucket("0.5"), 4.0);
        assert_eq!(bucket("10"), 4.0);
        assert_eq!(bucket("+Inf"), 5.0);
        let mut previous = 0.0;
        for (_, le) in BUCKETS {
            assert!(bucket(le) >= previous, "bucket le={le} went down: {text}");
            previous = bucket(le);
        }
        let count = format!("kassa_http_request_duration_seconds_count{{route=\"{route}\"}}");
        assert_eq!(sample(&text, &count), Some(5.0), "{text}");
        let sum = format!("kassa_http_request_duration_seconds_sum{{route=\"{route}\"}}");
        let sum = sample(&text, &sum).expect("a _sum line");
        assert!((sum - 20.3026).abs() < 1e-9, "sum {sum}: {text}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("line\nbreak"), r"line\nbreak");
        assert_eq!(escape_label("root/orders/shard-0"), "root/orders/shard-0");

        let metrics = Metrics::new();
        metrics.observe_request("GET \"odd\"\\route", 200, ms(1));
        let gauges = Gauges {
            restarts_by_path: vec![("root/we\"ird\npath".to_owned(), 3)],
            ..Gauges::default()
        };
        let text = metrics.render(&gauges);
        assert!(
            text.contains(
                r#"kassa_http_requests_total{route="GET \"odd\"\\route",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"kassa_supervision_restarts_total{path="root/we\"ird\npath"} 3"#),
            "{text}"
        );
        for line in text.lines() {
            assert!(
                line.starts_with('#') || line.starts_with("kassa_"),
                "a label broke a line: {line:?}"
            );
        }
    }

    #[test]
    fn renders_gauges_and_restarts() {
        let gauges = Gauges {
            orders_live: 7,
            journal_commits: 40,
            journal_writes: 95,
            journal_batch_writes_max: 12,
            journal_queue_depth: 3,
            restarts_by_path: vec![
                ("root/orders/shard-1".to_owned(), 2),
                ("root/channels/card".to_owned(), 1),
            ],
            ready: true,
            http_requests_inflight: 5,
        };
        let text = Metrics::new().render(&gauges);
        for line in [
            "# TYPE kassa_orders_live gauge",
            "kassa_orders_live 7",
            "# TYPE kassa_journal_commits_total counter",
            "kassa_journal_commits_total 40",
            "# TYPE kassa_journal_writes_total counter",
            "kassa_journal_writes_total 95",
            "# TYPE kassa_journal_batch_writes_max gauge",
            "kassa_journal_batch_writes_max 12",
            "# TYPE kassa_journal_queue_depth gauge",
            "kassa_journal_queue_depth 3",
            "# TYPE kassa_http_requests_inflight gauge",
            "kassa_http_requests_inflight 5",
            "# TYPE kassa_ready gauge",
            "kassa_ready 1",
            "# TYPE kassa_supervision_restarts_total counter",
            "kassa_supervision_restarts_total{path=\"root/channels/card\"} 1",
            "kassa_supervision_restarts_total{path=\"root/orders/shard-1\"} 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        let not_ready = Metrics::new().render(&Gauges::default());
        assert!(
            not_ready.lines().any(|l| l == "kassa_ready 0"),
            "{not_ready}"
        );
        // Every metric has exactly one HELP and one TYPE line.
        for name in [
            "kassa_http_requests_total",
            "kassa_http_request_duration_seconds",
            "kassa_supervision_restarts_total",
        ] {
            let help = format!("# HELP {name} ");
            let kind = format!("# TYPE {name} ");
            assert_eq!(not_ready.matches(&help).count(), 1, "{not_ready}");
            assert_eq!(not_ready.matches(&kind).count(), 1, "{not_ready}");
        }
    }

    #[test]
    fn renders_redis_state_and_fallbacks_by_use() {
        let metrics = Metrics::new();
        let text = metrics.render(&Gauges::default());
        assert!(
            text.lines().any(|l| l == "kassa_redis_connected 0"),
            "{text}"
        );
        assert!(text.contains("# TYPE kassa_redis_fallbacks_total counter\n"));
        assert!(!metrics.redis.set_connected(true), "it was disconnected");
        metrics.redis.count_fallback(RedisUse::Idempotency);
        metrics.redis.count_fallback(RedisUse::RateLimit);
        metrics.redis.count_fallback(RedisUse::RateLimit);
        let text = metrics.render(&Gauges::default());
        assert!(
            text.lines().any(|l| l == "kassa_redis_connected 1"),
            "{text}"
        );
        let fallbacks = |used_for: &str| {
            sample(
                &text,
                &format!("kassa_redis_fallbacks_total{{use=\"{used_for}\"}}"),
            )
        };
        assert_eq!(fallbacks("idempotency"), Some(1.0), "{text}");
        assert_eq!(fallbacks("rate_limit"), Some(2.0), "{text}");
    }

    #[test]
    fn counts_rate_limit_refusals_by_scope() {
        use crate::http::rate_limit::Scope;
        let metrics = Metrics::new();
        let text = metrics.render(&Gauges::default());
        assert!(
            text.contains("# TYPE kassa_http_rate_limited_total counter\n"),
            "{text}"
        );
        assert_eq!(
            sample(&text, "kassa_http_rate_limited_total{scope=\"ip\"}"),
            Some(0.0),
            "{text}"
        );
        metrics.rate_limited.count(Scope::Ip);
        metrics.rate_limited.count(Scope::Merchant);
        metrics.rate_limited.count(Scope::Merchant);
        let text = metrics.render(&Gauges::default());
        let refused = |scope: &str| {
            sample(
                &text,
                &format!("kassa_http_rate_limited_total{{scope=\"{scope}\"}}"),
            )
        };
        assert_eq!(refused("ip"), Some(1.0), "{text}");
        assert_eq!(refused("merchant"), Some(2.0), "{text}");
    }

    #[test]
    fn cardinality_is_bounded() {
        let metrics = Metrics::new();
        // Leaked on purpose: routes are &'static str; 70 small strings in a test.
        let routes: Vec<&'static str> = (0..ROUTES_MAX + 6)
            .map(|i| &*Box::leak(format!("GET /r{i}").into_boxed_str()))
            .collect();
        for route in &routes {
            metrics.observe_request(route, 200, ms(1));
        }
        metrics.observe_request("GET /r0", 999, ms(1));
        metrics.observe_request("GET /r0", 42, ms(1));
        let many_paths: Vec<(String, u64)> = (0..RESTART_PATHS_MAX + 10)
            .map(|i| (format!("root/p{i:04}"), 1))
            .collect();
        let text = metrics.render(&Gauges {
            restarts_by_path: many_paths,
            ..Gauges::default()
        });

        let request_series = text
            .lines()
            .filter(|l| l.starts_with("kassa_http_requests_total{"))
            .count();
        assert_eq!(request_series, ROUTES_MAX + 2, "{text}");
        let other = "kassa_http_requests_total{route=\"other\",status=\"200\"}";
        assert_eq!(sample(&text, other), Some(6.0), "{text}");
        let odd = "kassa_http_requests_total{route=\"GET /r0\",status=\"other\"}";
        assert_eq!(sample(&text, odd), Some(2.0), "{text}");

        let restart_series = text
            .lines()
            .filter(|l| l.starts_with("kassa_supervision_restarts_total{"))
            .count();
        assert_eq!(restart_series, RESTART_PATHS_MAX + 1, "{text}");
        let rest = "kassa_supervision_restarts_total{path=\"other\"}";
        assert_eq!(sample(&text, rest), Some(10.0), "{text}");
    }

    #[test]
    fn concurrent_observations_all_count() {
        let metrics = std::sync::Arc::new(Metrics::new());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let metrics = std::sync::Arc::clone(&metrics);
                std::thread::spawn(move || {
                    for i in 0..1_000 {
                        let route = if (i + t) % 2 == 0 { "GET /a" } else { "GET /b" };
                        metrics.observe_request(route, 200, Duration::from_micros(i));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("observer thread");
        }
        let text = metrics.render(&Gauges::default());
        let a = sample(
            &text,
            "kassa_http_requests_total{route=\"GET /a\",status=\"200\"}",
        );
        let b = sample(
            &text,
            "kassa_http_requests_total{route=\"GET /b\",status=\"200\"}",
        );
        assert_eq!(a.zip(b).map(|(a, b)| a + b), Some(4_000.0), "{text}");
        let count_a = sample(
            &text,
            "kassa_http_request_duration_seconds_count{route=\"GET /a\"}",
        );
        assert_eq!(count_a, a, "{text}");
    }
}
