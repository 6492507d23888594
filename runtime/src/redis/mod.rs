//! Redis in cluster mode: a speed-up and a cluster-wide coordination aid, never the truth.
//!
//! - `mod.rs`         — [`Redis`]: one connection manager per node, every command bounded and
//!   run on the I/O runtime, and the health state (`kassa_redis_connected`).
//! - `idempotency.rs` — the cluster-wide in-flight lock of an `Idempotency-Key` and the cache of
//!   finished responses (used by `crate::idempotency`).
//! - `rate_limit.rs`  — the channels' cluster-wide rate limits: GCRA in a Lua script, attached to
//!   each adapter as its [`kassa_channels::SharedLimiter`].
//!
//! Keys, all under `redis.key_prefix` (`P`):
//!
//! | key | value | lifetime |
//! |---|---|---|
//! | `P:idem:<merchant>:<key>` | a random token: who is working on the key | released on finish (token-checked), else `inflight_lock_ms` |
//! | `P:idemdone:<merchant>:<key>` | the finished response (status, fingerprint, body) | `idempotency_cache_ttl_ms` |
//! | `P:rl:<channel>`, `P:rl:<channel>:<merchant>` | GCRA theoretical arrival time (µs, Redis' clock) | until the limit is back to full |
//!
//! # When Redis fails
//!
//! Any failed command (an error, or no answer within `redis.command_timeout_ms`) marks Redis
//! down, logged once. While it is down callers skip it at once — no request waits for a timeout
//! during an outage — and each skip counts in `kassa_redis_fallbacks_total{use}`: idempotency
//! goes to the store alone, rate limits to each node's own. A probe (`PING` every
//! `redis.reconnect_ms_max`) marks it up again. The connection manager reconnects by itself.

mod idempotency;
mod rate_limit;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use kassa_config::{RedisSettings, redact_url};
use parking_lot::Mutex;
use redis::RedisResult;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::metrics::{RedisGauges, RedisUse};

pub use idempotency::{ClusterLock, Lock};
pub use rate_limit::RedisRateLimiter;

/// One node's Redis client. Cheap to share (`Arc`); the connection manager multiplexes every
/// command over one connection.
pub struct Redis {
    manager: ConnectionManager,
    prefix: String,
    command_timeout: Duration,
    probe_interval: Duration,
    idempotency_cache_ttl_ms: u64,
    inflight_lock_ms: u64,
    gauges: Arc<RedisGauges>,
    /// The multi-threaded runtime every command runs on, whoever awaits it.
    io: tokio::runtime::Handle,
    probe: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("prefix", &self.prefix)
            .field("connected", &self.gauges.connected())
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// The client for `settings` (it connects lazily, so a node starts without Redis), one
    /// probe (bounded by `connect_timeout_ms`), and the probe's loop. Must run on the I/O runtime.
    pub async fn start(
        settings: &RedisSettings,
        gauges: Arc<RedisGauges>,
    ) -> anyhow::Result<Arc<Redis>> {
        let client = redis::Client::open(settings.url.as_str())
            .with_context(|| format!("the Redis URL {}", redact_url(&settings.url)))?;
        let command_timeout = Duration::from_millis(settings.command_timeout_ms);
        let connect_timeout = Duration::from_millis(settings.connect_timeout_ms);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(command_timeout))
            .set_max_delay(Duration::from_millis(settings.reconnect_ms_max));
        let manager = ConnectionManager::new_lazy_with_config(client, config)
            .context("creating the Redis connection manager")?;
        let redis = Arc::new(Redis {
            manager,
            prefix: settings.key_prefix.clone(),
            command_timeout,
            probe_interval: Duration::from_millis(settings.reconnect_ms_max),
            idempotency_cache_ttl_ms: settings.idempotency_cache_ttl_ms,
            inflight_lock_ms: settings.inflight_lock_ms,
            gauges,
            io: tokio::runtime::Handle::current(),
            probe: Mutex::new(None),
        });
        // The first connection may take the whole connect timeout.
        let first = redis.execute(connect_timeout, ping).await;
        match first {
            Ok(()) => redis.mark_up(),
            Err(reason) => tracing::warn!(
                url = %redact_url(&settings.url),
                %reason,
                "Redis is unreachable at start; running without it until it answers"
            ),
        }
        let probe = tokio::spawn(probe_loop(Arc::downgrade(&redis)));
        *redis.probe.lock() = Some(probe);
        Ok(redis)
    }

    /// Stops the probe (shutdown).
    pub fn stop(&self) {
        if let Some(probe) = self.probe.lock().take() {
            probe.abort();
        }
    }

    /// Whether Redis answered last time it was asked.
    pub fn connected(&self) -> bool {
        self.gauges.connected()
    }

    /// `P:part:part…`.
    fn key(&self, parts: &[&str]) -> String {
        let mut key = self.prefix.clone();
        for part in parts {
            key.push(':');
            key.push_str(part);
        }
        key
    }

    /// Runs `command` while Redis is up; `None` (one fallback of `used_for`) while it is down or
    /// when the command fails, which marks it down.
    async fn run<T, F, Fut>(&self, used_for: RedisUse, command: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>> + Send + 'static,
        T: Send + 'static,
    {
        if !self.connected() {
            self.gauges.count_fallback(used_for);
            return None;
        }
        self.run_anyway(used_for, command).await
    }

    /// [`Redis::run`] even while Redis is marked down (clean-ups that must not be skipped by a
    /// brief blip).
    async fn run_anyway<T, F, Fut>(&self, used_for: RedisUse, command: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>> + Send + 'static,
        T: Send + 'static,
    {
        match self.execute(self.command_timeout, command).await {
            Ok(value) => Some(value),
            Err(reason) => {
                self.mark_down(&reason);
                self.gauges.count_fallback(used_for);
                None
            }
        }
    }

    /// One command on the I/O runtime (a caller that goes away does not cut it short), within
    /// `timeout`.
    async fn execute<T, F, Fut>(&self, timeout: Duration, command: F) -> Result<T, String>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>> + Send + 'static,
        T: Send + 'static,
    {
        let bounded = tokio::time::timeout(timeout, command(self.manager.clone()));
        match self.io.spawn(bounded).await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(error))) => Err(error.to_string()),
            Ok(Err(_elapsed)) => Err(format!("no answer within {} ms", timeout.as_millis())),
            Err(_join) => Err("the command's task was cancelled".into()),
        }
    }

    fn mark_down(&self, reason: &str) {
        if self.gauges.set_connected(false) {
            tracing::warn!(
                %reason,
                retry_ms = self.probe_interval.as_millis() as u64,
                "Redis unreachable: idempotency falls back to the store, rate limits to each node's own"
            );
        }
    }

    fn mark_up(&self) {
        if !self.gauges.set_connected(true) {
            tracing::info!(prefix = %self.prefix, "Redis connected: cluster-wide idempotency locks and rate limits on");
        }
    }

    /// One `PING`: up on `PONG`, down otherwise.
    async fn probe(&self) {
        match self.execute(self.command_timeout, ping).await {
            Ok(()) => self.mark_up(),
            Err(reason) => self.mark_down(&reason),
        }
    }
}

async fn ping(mut connection: ConnectionManager) -> RedisResult<()> {
    redis::cmd("PING")
        .query_async::<String>(&mut connection)
        .await
        .map(drop)
}

/// Probes every `reconnect_ms_max` until the client is dropped or stopped.
async fn probe_loop(redis: std::sync::Weak<Redis>) {
    loop {
        let Some(interval) = redis.upgrade().map(|r| r.probe_interval) else {
            return;
        };
        tokio::time::sleep(interval).await;
        let Some(redis) = redis.upgrade() else {
            return;
        };
        redis.probe().await;
    }
}

/// Helpers for tests against the machine's Redis (SERVICES.md: 127.0.0.1:6379).
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A client under a fresh prefix, with `tweak` applied to its settings. `None` (reason
    /// printed) when Redis does not answer, except under `CI=true`, where that fails the test.
    pub(crate) async fn local(
        test: &str,
        tweak: impl FnOnce(&mut RedisSettings),
    ) -> Option<Arc<Redis>> {
        let random = crate::crypto::random_bytes::<6>().expect("randomness");
        let mut settings = RedisSettings {
            key_prefix: format!("kassa-unit-{test}-{}", hex::encode(random)),
            ..RedisSettings::default()
        };
        tweak(&mut settings);
        let redis = Redis::start(&settings, Arc::default())
            .await
            .expect("a client");
        if redis.connected() {
            return Some(redis);
        }
        let why = format!("{test}: Redis at {} does not answer", settings.url);
        if std::env::var("CI").is_ok_and(|ci| ci == "true") {
            panic!("{why}; CI=true requires it");
        }
        eprintln!("SKIPPED {why}");
        None
    }

    impl Redis {
        /// One raw command (reading or planting keys in a test).
        pub(crate) async fn raw<T: redis::FromRedisValue + Send + 'static>(
            &self,
            command: redis::Cmd,
        ) -> T {
            self.execute(self.command_timeout, |mut connection| async move {
                command.query_async(&mut connection).await
            })
            .await
            .expect("a Redis command")
        }

        /// Deletes every key under the prefix.
        pub(crate) async fn clean_up(&self) {
            let pattern = format!("{}:*", self.prefix);
            let keys: Vec<String> = self.raw(redis::cmd("KEYS").arg(pattern).clone()).await;
            if !keys.is_empty() {
                let _: u64 = self.raw(redis::cmd("DEL").arg(keys).clone()).await;
            }
            self.stop();
        }
    }
}
