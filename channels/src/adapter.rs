//! The shared adapter: the one path every outbound channel call takes.
//!
//! ```text
//!  CardChannel::charge ─┐   breaker   rate limit       bulkhead   ┌─ attempt 1 ─ sign ─ timeout ─┐
//!  CardChannel::refund ─┼─► admits? ─► permit within ─► permit ───┤  (backoff, full jitter,      ├─► provider
//!  async channels ──────┘   (fast     rate_wait_ms_max (or fail   └─ attempt n: breaker + rate ──┘
//!                           fail)     (or fail fast)   fast)          permit again, ≤ retry_attempts_max
//! ```
//!
//! In this order, so a refused call costs as little as possible:
//!
//! * **Circuit breaker** (`breaker.rs`, a pure state machine fed with this adapter's clock):
//!   while it is open every call fails at once with [`ChannelError::CircuitOpen`] (nothing
//!   sent). Each attempt's outcome is recorded: timeouts, connect errors, 5xx and unreadable
//!   answers are failures; answers (2xx, declines, 4xx rejections) are successes; the
//!   provider's 429 and attempts that never went out count for nothing.
//! * **Rate limit** (`limiter.rs`, `governor`): per channel (`rate_per_s`, `burst`) and, for
//!   calls that name a merchant, per merchant (`merchant_rate_per_s`). A call waits at most
//!   `rate_wait_ms_max` for its permit, then fails with [`ChannelError::RateLimitedLocally`]
//!   (nothing sent).
//!   A cluster-wide limit ([`crate::SharedLimiter`], attached with
//!   [`ChannelAdapter::share_rate_limits`]) is asked after the local permits, within the same
//!   bound.
//! * **Bulkhead**: at most `inflight_max` calls hold a permit; one more is refused at once with
//!   [`ChannelError::Overloaded`] (nothing sent). The permit is held across retries.
//! * **Timeout**: each attempt (connect, send, read the whole answer) is bounded by
//!   `request_timeout_ms`.
//! * **Retries** (`backon`): only errors with [`ChannelError::is_retryable`], at most
//!   `retry_attempts_max` attempts in all, exponential delays from `backoff_ms_min` capped at
//!   `backoff_ms_max`, each drawn uniformly from `[0, delay]` ("full jitter"). A 429's
//!   `Retry-After` is a floor on the next delay; one longer than `backoff_ms_max` ends the
//!   call with [`ChannelError::RateLimited`] so the caller can decide. The request, with its
//!   idempotency key, is byte-for-byte the same on every attempt, so a retry cannot charge twice.
//!   Only the signature is fresh. A retry asks the breaker again and takes a rate permit again
//!   (it is one more request at the provider); if either refuses, the retries stop and the call
//!   ends with the *previous attempt's* error — never `CircuitOpen`, because that attempt may
//!   have reached the provider and its `outcome_unknown` must survive.
//!
//! # Merchant key
//!
//! [`ChannelAdapter::for_merchant`] returns a handle on the same adapter (same limits, breaker
//! and connection pool) whose calls count against that merchant's limit as well:
//! `CardChannel::new(adapter.for_merchant("mch_1")).charge(&request)`. Calls through a handle
//! without a merchant only meet the channel's limits. Inside the crate, `send_for` takes the key
//! per call.
//!
//! # Protocols
//!
//! An adapter speaks one [`Protocol`] (`adapter/protocol.rs`): [`ChannelAdapter::new`] builds a
//! card adapter, [`ChannelAdapter::with_protocol`] one for `qr_wallet` (signed forms),
//! `app_wallet` (`Wechatpay-*` headers) or `bank_transfer` (`Bank-*` headers). Signatures in
//! headers are fresh on each attempt; a form's signature is part of its body, so it is signed
//! once and every attempt resends the same bytes.
//!
//! # Runtimes
//!
//! The futures are `Send` and use only what every tokio runtime has (timers, I/O), so they run
//! on current-thread runtimes such as actix arbiters as well as on a multi-thread runtime. The
//! HTTP client spawns each connection's task on the runtime that opened it; the pool hands
//! connections to callers on any runtime, and a connection whose runtime has stopped is seen as
//! closed and dropped from the pool.
//!
//! # TLS
//!
//! A `https://` base URL is spoken over TLS with the provider's certificate verified (the
//! Mozilla roots plus `tls.extra_ca_path`, see [`tls`]); `http://` stays plain.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::RETRY_AFTER;
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use parking_lot::Mutex;
use tokio::sync::Semaphore;

use crate::breaker::{Admission, Breaker, BreakerState, CallOutcome};
use crate::card::signature;
use crate::card::transformers::error_code;
use crate::error::{AdapterConfigError, ChannelError};
use crate::limiter::{RateLimits, SharedLimiter};
use crate::secret::Secret;

mod config;
mod protocol;
pub mod tls;
pub use config::*;
pub use protocol::Protocol;
use protocol::Signer;

/// The shared outbound path to one channel. Cheap to clone (an `Arc` inside); clones share
/// the limits, the breaker and the connection pool.
#[derive(Clone)]
pub struct ChannelAdapter {
    inner: Arc<Inner>,
    /// The merchant whose rate limit this handle's calls count against, if any.
    merchant: Option<Arc<str>>,
    /// The first attempt's rate permit was taken by [`ChannelAdapter::admit_new_work`].
    prepaid: bool,
}

struct Inner {
    /// `https://` with verified certificates ([`tls`]), or plain `http://`.
    client: Client<tls::HttpsConnector, Full<Bytes>>,
    base_url: String,
    api_secret: Secret<String>,
    /// Signs each request the protocol's way.
    signer: Signer,
    config: AdapterConfig,
    breaker: Mutex<Breaker>,
    limits: RateLimits,
    bulkhead: Semaphore,
    jitter: Jitter,
    clock: WallClock,
    counters: Counters,
}

/// Monotonic milliseconds, expressed as unix milliseconds from the adapter's start, so the
/// breaker's times read as dates yet never go backwards.
struct WallClock {
    started: std::time::Instant,
    started_unix_ms: i64,
}

impl WallClock {
    fn new() -> Self {
        let started_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| {
                i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
            });
        Self {
            started: std::time::Instant::now(),
            started_unix_ms,
        }
    }

    fn now_ms(&self) -> i64 {
        let elapsed_ms = i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.started_unix_ms.saturating_add(elapsed_ms)
    }
}

#[derive(Default)]
struct Counters {
    calls_total: AtomicU64,
    failures_total: AtomicU64,
    rejected_open_total: AtomicU64,
    rejected_rate_total: AtomicU64,
    rejected_inflight_total: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl std::fmt::Debug for ChannelAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelAdapter")
            .field("protocol", &self.inner.signer.protocol())
            .field("base_url", &self.inner.base_url)
            .field("api_secret", &self.inner.api_secret)
            .field("config", &self.inner.config)
            .field("merchant", &self.merchant)
            .field("inflight", &self.inflight())
            .finish()
    }
}

impl ChannelAdapter {
    /// A card adapter for the provider at `base_url` (`http(s)://host:port`), signing with
    /// `api_secret`. Builds no connection yet, so it needs no runtime.
    pub fn new(
        base_url: &str,
        api_secret: impl Into<String>,
        config: AdapterConfig,
    ) -> Result<Self, AdapterConfigError> {
        Self::with_protocol(Protocol::Card, base_url, api_secret, config)
    }

    /// An adapter that encodes and signs requests the way `protocol` does, with keys derived
    /// from `api_secret` ([`crate::signing::derive_key`]). Builds no connection yet.
    pub fn with_protocol(
        protocol: Protocol,
        base_url: &str,
        api_secret: impl Into<String>,
        config: AdapterConfig,
    ) -> Result<Self, AdapterConfigError> {
        config.validate()?;
        // `validate` has checked that the rates and the burst are at least 1, so this is `Some`.
        let rate_settings = config
            .rate_settings()
            .ok_or(AdapterConfigError::InvalidBound {
                name: "rate_per_s",
                reason: "rates and burst must be at least 1",
            })?;
        let base_url = checked_base_url(base_url)?;
        let request_timeout = Duration::from_millis(config.request_timeout_ms);
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        // Shorter than the attempt's deadline, so a provider that cannot be reached shows as
        // `Connect` (nothing sent) rather than `Timeout` (outcome unknown) when it can.
        connector.set_connect_timeout(Some(request_timeout / 2));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_millis(POOL_IDLE_TIMEOUT_MS))
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(config.inflight_max)
            .build(tls::https_or_http(connector));
        let api_secret = Secret::new(api_secret.into());
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                base_url,
                signer: Signer::new(protocol, &api_secret),
                api_secret,
                config,
                breaker: Mutex::new(Breaker::new(config.breaker_config())),
                limits: RateLimits::new(rate_settings),
                bulkhead: Semaphore::new(config.inflight_max),
                jitter: Jitter::from_entropy(),
                clock: WallClock::new(),
                counters: Counters::default(),
            }),
            merchant: None,
            prepaid: false,
        })
    }

    /// A handle on this adapter whose calls also count against `merchant`'s rate limit
    /// (`merchant_rate_per_s`). It shares everything else: limits, breaker, pool, counters.
    pub fn for_merchant(&self, merchant: &str) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            merchant: Some(Arc::from(merchant)),
            prepaid: false,
        }
    }

    /// Makes room for one new piece of work before anything depends on it (Kassa calls this
    /// before an order exists): refuses at once while the breaker is open, and takes this
    /// handle's rate permit (waiting at most `rate_wait_ms_max`). The returned handle's next
    /// call uses that permit instead of taking another.
    pub async fn admit_new_work(&self) -> Result<ChannelAdapter, ChannelError> {
        let counters = &self.inner.counters;
        let now_ms = self.inner.clock.now_ms();
        let breaker = self.inner.breaker.lock().health(now_ms);
        if breaker.state == BreakerState::Open {
            bump(&counters.rejected_open_total);
            let retry_after_ms = breaker
                .open_until_ms
                .map_or(1, |until| until.saturating_sub(now_ms).max(1));
            return Err(ChannelError::CircuitOpen {
                retry_after_ms: u64::try_from(retry_after_ms).unwrap_or(1),
            });
        }
        self.inner
            .limits
            .acquire(self.merchant.as_deref())
            .await
            .inspect_err(|_| bump(&counters.rejected_rate_total))?;
        Ok(Self {
            inner: Arc::clone(&self.inner),
            merchant: self.merchant.clone(),
            prepaid: true,
        })
    }

    /// Attaches a cluster-wide rate limit every node calling this channel shares, asked after
    /// the local permits (see `limiter.rs`). Every handle on this adapter uses it; `false` if one
    /// was attached already (it stays).
    pub fn share_rate_limits(&self, limiter: Arc<dyn SharedLimiter>) -> bool {
        self.inner.limits.share(limiter)
    }

    /// The merchant this handle's calls are limited as, if any.
    pub fn merchant(&self) -> Option<&str> {
        self.merchant.as_deref()
    }

    /// The protocol this adapter speaks.
    pub fn protocol(&self) -> Protocol {
        self.inner.signer.protocol()
    }

    /// The provider's base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// The bounds this adapter enforces.
    pub fn config(&self) -> &AdapterConfig {
        &self.inner.config
    }

    /// Calls in flight right now (for channel health).
    pub fn inflight(&self) -> usize {
        self.inner.config.inflight_max - self.inner.bulkhead.available_permits()
    }

    /// The channel's health: bulkhead, limits, breaker and counters.
    pub fn health(&self) -> AdapterHealth {
        let config = &self.inner.config;
        let counters = &self.inner.counters;
        let breaker = self.inner.breaker.lock().health(self.inner.clock.now_ms());
        AdapterHealth {
            inflight: self.inflight(),
            inflight_max: config.inflight_max,
            rate_per_s: config.rate_per_s,
            burst: config.burst,
            merchant_rate_per_s: config.merchant_rate_per_s,
            breaker,
            calls_total: counters.calls_total.load(Ordering::Relaxed),
            failures_total: counters.failures_total.load(Ordering::Relaxed),
            rejected_open_total: counters.rejected_open_total.load(Ordering::Relaxed),
            rejected_rate_total: counters.rejected_rate_total.load(Ordering::Relaxed),
            rejected_inflight_total: counters.rejected_inflight_total.load(Ordering::Relaxed),
        }
    }

    /// Sends `request` as this handle's merchant (see [`ChannelAdapter::for_merchant`]).
    pub(crate) async fn send(&self, request: WireRequest) -> Result<WireResponse, ChannelError> {
        self.send_for(self.merchant.as_deref(), request).await
    }

    /// Sends `request` through the breaker, the rate limits (the channel's, and `merchant`'s
    /// when given), the bulkhead, and a per-attempt timeout with bounded retries.
    /// `Ok` only for a 2xx answer; every other status is a [`ChannelError`].
    pub(crate) async fn send_for(
        &self,
        merchant: Option<&str>,
        request: WireRequest,
    ) -> Result<WireResponse, ChannelError> {
        // A form-signed protocol signs its body here, once, so every attempt sends these bytes.
        let request = self
            .inner
            .signer
            .prepare(request, signature::now_unix_s())?;
        let counters = &self.inner.counters;
        let first = self
            .admit()
            .inspect_err(|_| bump(&counters.rejected_open_total))?;
        if !self.prepaid {
            self.inner
                .limits
                .acquire(merchant)
                .await
                .inspect_err(|_| bump(&counters.rejected_rate_total))?;
        }
        let config = &self.inner.config;
        let _permit = if self.prepaid {
            // Admitted work: the order is accepted and its card details exist only in memory,
            // so a full bulkhead is waited out (bounded) rather than turned into an outcome
            // the order would have to resolve (and fail) without ever calling the channel.
            let wait = Duration::from_millis(config.admitted_inflight_wait_ms_max);
            match tokio::time::timeout(wait, self.inner.bulkhead.acquire()).await {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) | Err(_) => {
                    bump(&counters.rejected_inflight_total);
                    return Err(ChannelError::Overloaded);
                }
            }
        } else {
            self.inner.bulkhead.try_acquire().map_err(|_| {
                bump(&counters.rejected_inflight_total);
                ChannelError::Overloaded
            })?
        };
        let backoff = ExponentialBuilder::new()
            .with_factor(2.0)
            .with_min_delay(Duration::from_millis(config.backoff_ms_min))
            .with_max_delay(Duration::from_millis(config.backoff_ms_max))
            // `retry_attempts_max` counts attempts; backon counts retries after the first.
            .with_max_times(config.retry_attempts_max.saturating_sub(1) as usize);
        let last_error: Mutex<Option<ChannelError>> = Mutex::new(None);
        let last_error = &last_error;
        let request = &request;
        let mut first = Some(first);
        let mut attempt: u32 = 0;
        let attempts = (|| {
            attempt += 1;
            let number = attempt;
            let admitted = first.take();
            async move {
                let ticket = match admitted {
                    Some(ticket) => ticket,
                    None => self.admit_retry(merchant, last_error).await?,
                };
                let result = self.attempt(request, number).await;
                ticket.record(breaker_outcome(&result));
                result.map_err(|error| {
                    *last_error.lock() = Some(error.clone());
                    AttemptError::Failed(error)
                })
            }
        })
        .retry(backoff)
        .when(AttemptError::may_retry)
        .adjust(|error, delay| match error {
            AttemptError::Failed(error) => self.next_delay(error, delay),
            AttemptError::Stopped(_) => None,
        })
        .notify(|error, delay| {
            tracing::warn!(
                method = %request.method,
                path = %request.path,
                error = %error.error(),
                delay_ms = delay.as_millis() as u64,
                "channel call failed, retrying with the same idempotency key"
            );
        });
        // One deadline for the whole command; dropping the attempts gives back their permits.
        let deadline = Duration::from_millis(config.command_deadline_ms);
        match tokio::time::timeout(deadline, attempts).await {
            Ok(result) => result.map_err(AttemptError::into_error),
            Err(_elapsed) => Err(ChannelError::Timeout),
        }
    }

    /// The breaker's admission for a call's first attempt.
    fn admit(&self) -> Result<Ticket<'_>, ChannelError> {
        let now_ms = self.inner.clock.now_ms();
        let mut breaker = self.inner.breaker.lock();
        let before = breaker.state(now_ms);
        let admitted = breaker.try_acquire(now_ms);
        if before == BreakerState::Open && breaker.state(now_ms) == BreakerState::HalfOpen {
            tracing::info!(base_url = %self.inner.base_url, "channel breaker half-open: probing");
        }
        drop(breaker);
        match admitted {
            Ok(admission) => Ok(Ticket {
                inner: &self.inner,
                admission: Some(admission),
            }),
            Err(refusal) => Err(ChannelError::CircuitOpen {
                retry_after_ms: refusal.retry_after_ms,
            }),
        }
    }

    /// A retry asks the breaker again and takes another rate permit; if either refuses, the
    /// retries stop with the previous attempt's error, which says what may have happened.
    async fn admit_retry(
        &self,
        merchant: Option<&str>,
        last_error: &Mutex<Option<ChannelError>>,
    ) -> Result<Ticket<'_>, AttemptError> {
        let stop = |refusal: ChannelError| {
            tracing::debug!(base_url = %self.inner.base_url, %refusal, "channel call not retried");
            // A retry follows a failed attempt, so there is a previous error; the refusal only
            // stands in for it if that ever changed.
            AttemptError::Stopped(last_error.lock().take().unwrap_or(refusal))
        };
        let ticket = self.admit().map_err(stop)?;
        self.inner.limits.acquire(merchant).await.map_err(stop)?;
        Ok(ticket)
    }

    /// The delay before the next attempt: full jitter over backon's exponential delay, with a
    /// 429's `Retry-After` as a floor. `None` ends the retries.
    fn next_delay(&self, error: &ChannelError, delay: Option<Duration>) -> Option<Duration> {
        let jittered = self.inner.jitter.full(delay?);
        match error {
            ChannelError::RateLimited {
                retry_after_ms: Some(retry_after_ms),
            } => {
                if *retry_after_ms > self.inner.config.backoff_ms_max {
                    None
                } else {
                    Some(jittered.max(Duration::from_millis(*retry_after_ms)))
                }
            }
            _ => Some(jittered),
        }
    }

    async fn attempt(
        &self,
        request: &WireRequest,
        attempt: u32,
    ) -> Result<WireResponse, ChannelError> {
        bump(&self.inner.counters.calls_total);
        let deadline = Duration::from_millis(self.inner.config.request_timeout_ms);
        let result = tokio::time::timeout(deadline, self.exchange(request))
            .await
            .unwrap_or(Err(ChannelError::Timeout));
        match &result {
            Ok(_) => {
                tracing::debug!(method = %request.method, path = %request.path, attempt, "channel call answered")
            }
            Err(error) => {
                tracing::debug!(method = %request.method, path = %request.path, attempt, %error, "channel call attempt failed")
            }
        }
        result
    }

    /// One HTTP exchange: sign, send, read the whole answer, classify its status.
    async fn exchange(&self, request: &WireRequest) -> Result<WireResponse, ChannelError> {
        let uri: Uri = format!("{}{}", self.inner.base_url, request.path)
            .parse()
            .map_err(|_| ChannelError::Rejected {
                status: 400,
                code: String::from("invalid_request_path"),
            })?;
        let mut builder = Request::builder().method(request.method.clone()).uri(uri);
        for (name, value) in self.sign(request)? {
            builder = builder.header(name, value);
        }
        let http_request =
            builder
                .body(Full::new(request.body.clone()))
                .map_err(|_| ChannelError::Rejected {
                    status: 400,
                    code: String::from("invalid_request"),
                })?;
        let response = self
            .inner
            .client
            .request(http_request)
            .await
            .map_err(classify_transport_error)?;
        let status = response.status();
        let retry_after_ms = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(|seconds| seconds.saturating_mul(1_000));
        let body = Limited::new(response.into_body(), RESPONSE_BODY_BYTES_MAX)
            .collect()
            .await
            .map_err(|error| ChannelError::Unreadable(format!("reading the answer: {error}")))?
            .to_bytes();
        classify_status(status, retry_after_ms, body)
    }

    /// This attempt's content type and signature headers, the protocol's way. The values are
    /// printable by construction; were one not, the error says "nothing sent".
    fn sign(&self, request: &WireRequest) -> Result<Vec<protocol::SignedHeader>, ChannelError> {
        self.inner.signer.headers(request, signature::now_unix_s())
    }
}

/// One attempt's permission from the breaker. Recording it hands the outcome back; dropping
/// it unrecorded (the attempt never went out, or the call was cancelled) records `Ignored`, so
/// a half-open probe slot is never lost.
struct Ticket<'a> {
    inner: &'a Inner,
    admission: Option<Admission>,
}

impl Ticket<'_> {
    fn record(mut self, outcome: CallOutcome) {
        if let Some(admission) = self.admission.take() {
            self.inner.record(admission, outcome);
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if let Some(admission) = self.admission.take() {
            self.inner.record(admission, CallOutcome::Ignored);
        }
    }
}

impl Inner {
    fn record(&self, admission: Admission, outcome: CallOutcome) {
        if outcome == CallOutcome::Failure {
            bump(&self.counters.failures_total);
        }
        let now_ms = self.clock.now_ms();
        let mut breaker = self.breaker.lock();
        let before = breaker.state(now_ms);
        breaker.record(now_ms, admission, outcome);
        let after = breaker.state(now_ms);
        drop(breaker);
        match (before, after) {
            (BreakerState::Closed | BreakerState::HalfOpen, BreakerState::Open) => {
                tracing::warn!(base_url = %self.base_url, "channel breaker opened: failing calls fast")
            }
            (BreakerState::HalfOpen, BreakerState::Closed) => {
                tracing::info!(base_url = %self.base_url, "channel breaker closed: channel recovered")
            }
            _ => {}
        }
    }
}

/// Why an attempt produced no answer, as backon sees it.
enum AttemptError {
    /// The attempt failed; it is retried if the error allows.
    Failed(ChannelError),
    /// The breaker or the rate limit refused a retry: the call ends with this, the previous
    /// attempt's error.
    Stopped(ChannelError),
}

impl AttemptError {
    fn may_retry(&self) -> bool {
        match self {
            AttemptError::Failed(error) => error.is_retryable(),
            AttemptError::Stopped(_) => false,
        }
    }

    fn error(&self) -> &ChannelError {
        match self {
            AttemptError::Failed(error) | AttemptError::Stopped(error) => error,
        }
    }

    fn into_error(self) -> ChannelError {
        match self {
            AttemptError::Failed(error) | AttemptError::Stopped(error) => error,
        }
    }
}

/// What an attempt says about the channel's health. An answer is health, whatever it says.
fn breaker_outcome(result: &Result<WireResponse, ChannelError>) -> CallOutcome {
    match result {
        Ok(_) => CallOutcome::Success,
        Err(error) => match error {
            ChannelError::Timeout
            | ChannelError::Connect(_)
            | ChannelError::Server { .. }
            | ChannelError::Unreadable(_) => CallOutcome::Failure,
            ChannelError::Rejected { .. } => CallOutcome::Success,
            ChannelError::RateLimited { .. }
            | ChannelError::Overloaded
            | ChannelError::RateLimitedLocally { .. }
            | ChannelError::CircuitOpen { .. } => CallOutcome::Ignored,
        },
    }
}

fn classify_status(
    status: StatusCode,
    retry_after_ms: Option<u64>,
    body: Bytes,
) -> Result<WireResponse, ChannelError> {
    if status.is_success() {
        Ok(WireResponse { body })
    } else if status == StatusCode::TOO_MANY_REQUESTS {
        Err(ChannelError::RateLimited { retry_after_ms })
    } else if status.is_client_error() {
        Err(ChannelError::Rejected {
            status: status.as_u16(),
            code: error_code(&body),
        })
    } else if status.is_server_error() {
        Err(ChannelError::Server {
            status: status.as_u16(),
        })
    } else {
        Err(ChannelError::Unreadable(format!(
            "unexpected status {}",
            status.as_u16()
        )))
    }
}

/// A connect failure means nothing was sent; anything later means the provider may have acted.
fn classify_transport_error(error: hyper_util::client::legacy::Error) -> ChannelError {
    let mut detail = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    if error.is_connect() {
        ChannelError::Connect(detail)
    } else {
        ChannelError::Unreadable(detail)
    }
}

fn checked_base_url(base_url: &str) -> Result<String, AdapterConfigError> {
    let invalid = |reason: &str| AdapterConfigError::InvalidBaseUrl {
        url: base_url.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = base_url.trim_end_matches('/');
    let uri: Uri = trimmed.parse().map_err(|_| invalid("not a URL"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(invalid("the scheme must be http or https"));
    }
    if uri.authority().is_none() {
        return Err(invalid("a host is required"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(invalid("no path or query is allowed"));
    }
    Ok(trimmed.to_owned())
}

/// Full jitter: a delay drawn uniformly from `[0, delay]`, from a small lock-free generator
/// (SplitMix64). Not cryptographic; it only has to spread retries apart.
struct Jitter {
    state: AtomicU64,
}

impl Jitter {
    const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

    fn from_entropy() -> Self {
        // Without OS entropy the jitter is still spread by the clock; it needs no secrecy.
        let seed = getrandom::u64().unwrap_or_else(|_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|elapsed| elapsed.as_nanos() as u64)
                .unwrap_or(Self::GOLDEN_GAMMA)
        });
        Self {
            state: AtomicU64::new(seed),
        }
    }

    fn next_u64(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(Self::GOLDEN_GAMMA, Ordering::Relaxed)
            .wrapping_add(Self::GOLDEN_GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn full(&self, delay: Duration) -> Duration {
        let ceiling_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        let drawn_ms = match ceiling_ms.checked_add(1) {
            Some(span) => self.next_u64() % span,
            None => self.next_u64(),
        };
        Duration::from_millis(drawn_ms)
    }
}

#[cfg(test)]
mod tests;
