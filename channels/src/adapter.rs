//! The shared adapter: the one path every outbound channel call takes.
//!
//! ```text
//!  CardChannel::charge ─┐                      ┌─ attempt 1 ─ sign ─ timeout(request) ─┐
//!  CardChannel::refund ─┼─► ChannelAdapter ────┤  (backoff, full jitter, Retry-After)  ├─► provider
//!  (future protocols) ──┘    bulkhead permit   └─ attempt n ≤ retry_attempts_max ──────┘
//! ```
//!
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
//!   Only the signature is fresh.
//!
//! Seams for what comes next: the rate limiter (`governor`) and the circuit breaker go into
//! `ChannelAdapter::send` next to the bulkhead; another protocol's signature scheme replaces
//! `ChannelAdapter::sign`.
//!
//! # Runtimes
//!
//! The futures are `Send` and use only what every tokio runtime has (timers, I/O), so they run
//! on current-thread runtimes such as actix arbiters as well as on a multi-thread runtime. The
//! HTTP client spawns each connection's task on the runtime that opened it; the pool hands
//! connections to callers on any runtime, and a connection whose runtime has stopped is seen as
//! closed and dropped from the pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::card::signature::{self, SIGNATURE_HEADER};
use crate::card::transformers::error_code;
use crate::error::{AdapterConfigError, ChannelError};
use crate::secret::Secret;

/// How long an idle pooled connection is kept before it is closed.
pub const POOL_IDLE_TIMEOUT_MS: u64 = 30_000;

/// The largest answer body the adapter reads; a longer one is [`ChannelError::Unreadable`].
pub const RESPONSE_BODY_BYTES_MAX: usize = 1024 * 1024;

/// The upper bound on `retry_attempts_max`, so a typo cannot turn into a retry storm.
pub const RETRY_ATTEMPTS_LIMIT: u32 = 20;

/// The adapter's bounds. Every value has its unit in its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdapterConfig {
    /// The deadline of one attempt, from connecting to the last byte of the answer.
    pub request_timeout_ms: u64,
    /// Attempts in all (the first one included), 1–[`RETRY_ATTEMPTS_LIMIT`].
    pub retry_attempts_max: u32,
    /// The delay before the first retry, before jitter.
    pub backoff_ms_min: u64,
    /// The ceiling of any delay, before jitter, and the longest `Retry-After` we wait for.
    pub backoff_ms_max: u64,
    /// Calls in flight at once; one more gets [`ChannelError::Overloaded`].
    pub inflight_max: usize,
}

impl Default for AdapterConfig {
    fn default() -> Self {
        Self {
            request_timeout_ms: 3_000,
            retry_attempts_max: 3,
            backoff_ms_min: 50,
            backoff_ms_max: 1_000,
            inflight_max: 256,
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
        if !(1..=RETRY_ATTEMPTS_LIMIT).contains(&self.retry_attempts_max) {
            return invalid("retry_attempts_max", "must be between 1 and 20");
        }
        if self.backoff_ms_min > self.backoff_ms_max {
            return invalid("backoff_ms_min", "must not exceed backoff_ms_max");
        }
        if self.inflight_max == 0 || self.inflight_max > Semaphore::MAX_PERMITS {
            return invalid("inflight_max", "must be at least 1 and fit a semaphore");
        }
        Ok(())
    }
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

/// The shared outbound path to one channel. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct ChannelAdapter {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client<HttpConnector, Full<Bytes>>,
    base_url: String,
    api_secret: Secret<String>,
    config: AdapterConfig,
    bulkhead: Semaphore,
    jitter: Jitter,
}

impl std::fmt::Debug for ChannelAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelAdapter")
            .field("base_url", &self.inner.base_url)
            .field("api_secret", &self.inner.api_secret)
            .field("config", &self.inner.config)
            .field("inflight", &self.inflight())
            .finish()
    }
}

impl ChannelAdapter {
    /// An adapter for the provider at `base_url` (`http://host:port`), signing with
    /// `api_secret`. Builds no connection yet, so it needs no runtime.
    pub fn new(
        base_url: &str,
        api_secret: impl Into<String>,
        config: AdapterConfig,
    ) -> Result<Self, AdapterConfigError> {
        config.validate()?;
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
            .build(connector);
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                base_url,
                api_secret: Secret::new(api_secret.into()),
                config,
                bulkhead: Semaphore::new(config.inflight_max),
                jitter: Jitter::from_entropy(),
            }),
        })
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

    /// Sends `request` through the bulkhead, with a per-attempt timeout and bounded retries.
    /// `Ok` only for a 2xx answer; every other status is a [`ChannelError`].
    pub(crate) async fn send(&self, request: WireRequest) -> Result<WireResponse, ChannelError> {
        let _permit = self
            .inner
            .bulkhead
            .try_acquire()
            .map_err(|_| ChannelError::Overloaded)?;
        let config = &self.inner.config;
        let backoff = ExponentialBuilder::new()
            .with_factor(2.0)
            .with_min_delay(Duration::from_millis(config.backoff_ms_min))
            .with_max_delay(Duration::from_millis(config.backoff_ms_max))
            // `retry_attempts_max` counts attempts; backon counts retries after the first.
            .with_max_times(config.retry_attempts_max.saturating_sub(1) as usize);
        let mut attempt: u32 = 0;
        (|| {
            attempt += 1;
            self.attempt(&request, attempt)
        })
        .retry(backoff)
        .when(ChannelError::is_retryable)
        .adjust(|error, delay| self.next_delay(error, delay))
        .notify(|error, delay| {
            tracing::warn!(
                method = %request.method,
                path = %request.path,
                %error,
                delay_ms = delay.as_millis() as u64,
                "channel call failed, retrying with the same idempotency key"
            );
        })
        .await
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
        let signature = self.sign(request)?;
        let http_request = Request::builder()
            .method(request.method.clone())
            .uri(uri)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(SIGNATURE_HEADER, signature)
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

    /// The `Sandbox-Signature` header for this attempt.
    fn sign(&self, request: &WireRequest) -> Result<HeaderValue, ChannelError> {
        let value = signature::header_value(
            self.inner.api_secret.expose().as_bytes(),
            signature::now_unix_s(),
            request.method.as_str(),
            &request.path,
            &request.body,
        );
        // `t=<digits>,v1=<hex>` is always a valid header value; the error arm is unreachable
        // in practice and says "nothing sent" if it were not.
        HeaderValue::from_str(&value).map_err(|_| ChannelError::Rejected {
            status: 400,
            code: String::from("unsignable_request"),
        })
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
    if uri.scheme_str() != Some("http") {
        return Err(invalid("the scheme must be http"));
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
mod tests {
    use super::*;

    #[test]
    fn full_jitter_stays_within_the_delay() {
        let jitter = Jitter {
            state: AtomicU64::new(7),
        };
        let mut seen_low = false;
        let mut seen_high = false;
        for _ in 0..1_000 {
            let drawn = jitter.full(Duration::from_millis(100));
            assert!(drawn <= Duration::from_millis(100));
            seen_low |= drawn < Duration::from_millis(50);
            seen_high |= drawn >= Duration::from_millis(50);
        }
        assert!(
            seen_low && seen_high,
            "jitter must spread over the whole range"
        );
        assert_eq!(jitter.full(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn config_bounds_are_checked() {
        assert_eq!(AdapterConfig::default().validate(), Ok(()));
        let bad = [
            AdapterConfig {
                request_timeout_ms: 0,
                ..AdapterConfig::default()
            },
            AdapterConfig {
                retry_attempts_max: 0,
                ..AdapterConfig::default()
            },
            AdapterConfig {
                retry_attempts_max: 21,
                ..AdapterConfig::default()
            },
            AdapterConfig {
                backoff_ms_min: 2_000,
                ..AdapterConfig::default()
            },
            AdapterConfig {
                inflight_max: 0,
                ..AdapterConfig::default()
            },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?}");
        }
    }

    #[test]
    fn base_urls_must_be_plain_http() {
        assert_eq!(
            checked_base_url("http://127.0.0.1:8080/").as_deref(),
            Ok("http://127.0.0.1:8080")
        );
        for url in [
            "https://x:1",
            "127.0.0.1:80",
            "http://x/api",
            "http://x?q=1",
            "not a url",
        ] {
            assert!(checked_base_url(url).is_err(), "{url}");
        }
    }

    #[test]
    fn rate_limits_longer_than_the_ceiling_end_the_retries() {
        let adapter = ChannelAdapter::new("http://127.0.0.1:9", "s", AdapterConfig::default())
            .expect("valid adapter");
        let long = ChannelError::RateLimited {
            retry_after_ms: Some(5_000),
        };
        assert_eq!(
            adapter.next_delay(&long, Some(Duration::from_millis(50))),
            None
        );
        let short = ChannelError::RateLimited {
            retry_after_ms: Some(700),
        };
        let delay = adapter.next_delay(&short, Some(Duration::from_millis(50)));
        assert_eq!(delay, Some(Duration::from_millis(700)));
        assert_eq!(adapter.next_delay(&ChannelError::Timeout, None), None);
    }
}
