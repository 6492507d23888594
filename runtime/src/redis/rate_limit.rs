//! The channels' cluster-wide rate limits: the same GCRA as `governor` (each node's local
//! limit), run in Redis so every node spends one budget.
//!
//! Per key, Redis keeps the theoretical arrival time (TAT) of the next call, in microseconds of
//! Redis' own clock (`TIME` inside the script, so the nodes' clocks do not matter). With the
//! emission interval `T = 1 s / rate` and the burst tolerance `τ = T × (burst − 1)`, a call at
//! `now` is admitted when `now ≥ TAT − τ`, and moves TAT to `max(TAT, now) + T`; otherwise it
//! must wait `TAT − τ − now`. A call on a channel that limits merchants checks the channel's key
//! and the merchant's in one script and spends both or neither. A key expires once its TAT has
//! passed (its state is then "full" again), so merchant keys do not pile up.

use std::sync::{Arc, LazyLock};

use kassa_channels::{AdapterConfig, SharedCheck, SharedLimiter, SharedVerdict};
use redis::Script;

use super::Redis;
use crate::metrics::RedisUse;

/// KEYS: the limits' TAT keys. ARGV: per key, its interval and tolerance in µs.
/// Returns 0 (admitted, every TAT moved) or the µs to wait (nothing moved).
static GCRA: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"redis.replicate_commands()
          local time = redis.call('TIME')
          local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
          local wait = 0
          local next_tats = {}
          for i, key in ipairs(KEYS) do
            local interval = tonumber(ARGV[2 * i - 1])
            local tolerance = tonumber(ARGV[2 * i])
            local tat = tonumber(redis.call('GET', key)) or now
            if tat < now then tat = now end
            if now < tat - tolerance then
              wait = math.max(wait, tat - tolerance - now)
            end
            next_tats[i] = tat + interval
          end
          if wait > 0 then return wait end
          for i, key in ipairs(KEYS) do
            local ttl_ms = math.ceil((next_tats[i] - now) / 1000)
            redis.call('SET', key, string.format('%.0f', next_tats[i]), 'PX', ttl_ms)
          end
          return 0",
    )
});

/// One limit's GCRA parameters, as governor derives them from a quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gcra {
    interval_us: u64,
    tolerance_us: u64,
}

impl Gcra {
    /// `rate_per_s` calls per second with bursts of `burst` (both at least 1).
    fn new(rate_per_s: u32, burst: u32) -> Gcra {
        let interval_us = (1_000_000 / u64::from(rate_per_s.max(1))).max(1);
        let extra_cells = u64::from(burst.max(1) - 1);
        Gcra {
            interval_us,
            tolerance_us: interval_us.saturating_mul(extra_cells),
        }
    }
}

/// One channel's cluster-wide limits (and its merchants', when it limits them), with the same
/// rates and bursts as its adapter's local ones.
pub struct RedisRateLimiter {
    redis: Arc<Redis>,
    channel: String,
    channel_limit: Gcra,
    merchant_limit: Option<Gcra>,
}

impl RedisRateLimiter {
    pub fn new(redis: Arc<Redis>, channel: &str, config: &AdapterConfig) -> RedisRateLimiter {
        // As locally: a merchant's burst is the channel's, capped at its own rate.
        let merchant_limit = config
            .merchant_rate_per_s
            .map(|rate| Gcra::new(rate, config.burst.min(rate)));
        RedisRateLimiter {
            redis,
            channel: channel.to_string(),
            channel_limit: Gcra::new(config.rate_per_s, config.burst),
            merchant_limit,
        }
    }

    async fn verdict(&self, merchant: Option<&str>) -> SharedVerdict {
        let mut keys = vec![self.redis.key(&["rl", &self.channel])];
        let mut limits = vec![self.channel_limit];
        if let (Some(limit), Some(merchant)) = (self.merchant_limit, merchant) {
            keys.push(self.redis.key(&["rl", &self.channel, merchant]));
            limits.push(limit);
        }
        let wait_us = self
            .redis
            .run(RedisUse::RateLimit, move |mut connection| async move {
                let mut invocation = GCRA.prepare_invoke();
                for key in keys {
                    invocation.key(key);
                }
                for limit in limits {
                    invocation.arg(limit.interval_us).arg(limit.tolerance_us);
                }
                invocation.invoke_async::<u64>(&mut connection).await
            })
            .await;
        match wait_us {
            None => SharedVerdict::Unavailable,
            Some(0) => SharedVerdict::Admitted,
            Some(wait_us) => SharedVerdict::Wait {
                wait_ms: wait_us.div_ceil(1_000),
            },
        }
    }
}

impl SharedLimiter for RedisRateLimiter {
    fn check<'a>(&'a self, merchant: Option<&'a str>) -> SharedCheck<'a> {
        Box::pin(self.verdict(merchant))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::testing;

    fn waits(verdict: SharedVerdict) -> u64 {
        match verdict {
            SharedVerdict::Wait { wait_ms } => wait_ms,
            other => panic!("expected a wait, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_call_spends_the_channel_and_the_merchant_budget_both_or_neither() {
        let Some(redis) = testing::local("gcra", |_| {}).await else {
            return;
        };
        // The channel: 1/s, bursts of 3. Each merchant: 1/s, bursts of min(3, 1) = 1.
        let config = AdapterConfig {
            rate_per_s: 1,
            burst: 3,
            merchant_rate_per_s: Some(1),
            ..AdapterConfig::default()
        };
        let limiter = RedisRateLimiter::new(redis.clone(), "card", &config);
        assert_eq!(
            limiter.verdict(Some("mch_a")).await,
            SharedVerdict::Admitted
        );
        // mch_a's budget is spent: about a second to wait, and the channel's is not touched.
        let wait_ms = waits(limiter.verdict(Some("mch_a")).await);
        assert!((900..=1_000).contains(&wait_ms), "{wait_ms}");
        assert_eq!(
            limiter.verdict(Some("mch_b")).await,
            SharedVerdict::Admitted
        );
        assert_eq!(limiter.verdict(None).await, SharedVerdict::Admitted);
        // Three cells of the channel are spent, whoever asks.
        let wait_ms = waits(limiter.verdict(Some("mch_c")).await);
        assert!((1..=1_000).contains(&wait_ms), "{wait_ms}");
        // The state is a TAT per key, each expiring once its limit is full again.
        let ttl_ms: i64 = redis
            .raw(redis::cmd("PTTL").arg(redis.key(&["rl", "card"])).clone())
            .await;
        assert!((2_000..=3_000).contains(&ttl_ms), "{ttl_ms}");
        let merchant_c: Option<String> = redis
            .raw(
                redis::cmd("GET")
                    .arg(redis.key(&["rl", "card", "mch_c"]))
                    .clone(),
            )
            .await;
        assert_eq!(merchant_c, None, "a refused call spends nothing");
        redis.clean_up().await;
    }

    #[test]
    fn parameters_are_governors() {
        // 1 000/s with bursts of 100: a cell every ms, 99 more cells of tolerance.
        assert_eq!(
            Gcra::new(1_000, 100),
            Gcra {
                interval_us: 1_000,
                tolerance_us: 99_000
            }
        );
        // A burst of 1 tolerates nothing beyond the one cell.
        assert_eq!(Gcra::new(4, 1).tolerance_us, 0);
        assert_eq!(Gcra::new(3, 2).interval_us, 333_333);
        // Rates past a million per second still move time forward.
        assert_eq!(Gcra::new(u32::MAX, 2).interval_us, 1);
    }
}
