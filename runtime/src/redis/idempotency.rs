//! The Redis side of `Idempotency-Key` (`crate::idempotency` decides; this only stores):
//!
//! - `P:idem:<merchant>:<key>`: the in-flight lock, `SET … NX PX inflight_lock_ms` with a random
//!   token, renewed every third of its lifetime while the request runs (so a crashed node's
//!   lock is gone within `inflight_lock_ms`), and released by a compare-and-delete script so a
//!   node never frees another's lock (its own may have expired and been taken since).
//! - `P:idemdone:<merchant>:<key>`: a finished response, written only after the store holds it,
//!   so the cache never says more than the store: `v1 <status> <created_ms> <fingerprint>\n`
//!   followed by the body, byte for byte.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use kassa_store::IdempotencyRecord;
use redis::Script;

use super::Redis;
use crate::metrics::RedisUse;

/// Deletes the lock only if it still holds this node's token.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then
            return redis.call('DEL', KEYS[1])
          end
          return 0",
    )
});

/// Extends the lock only if it still holds this node's token.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then
            return redis.call('PEXPIRE', KEYS[1], ARGV[2])
          end
          return 0",
    )
});

/// The answer to "may this node work on the key?".
pub enum Lock {
    /// This node holds the cluster-wide lock until the [`ClusterLock`] is dropped.
    Taken(ClusterLock),
    /// Another request (on some node) holds it.
    HeldElsewhere,
    /// Redis could not say: the node goes on with its local guard and the store.
    Unavailable,
}

/// A held in-flight lock, renewed in the background; dropping it stops the renewals and
/// releases it (in the background, token-checked).
pub struct ClusterLock {
    redis: Arc<Redis>,
    key: String,
    token: String,
    renewal: tokio::task::JoinHandle<()>,
}

impl ClusterLock {
    /// Stops the renewals and releases the lock now; dropping the lock does the same in the
    /// background.
    pub async fn release(mut self) {
        self.renewal.abort();
        let (key, token) = self.take();
        release(&self.redis, key, token).await;
    }

    fn take(&mut self) -> (String, String) {
        (
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.token),
        )
    }
}

impl Drop for ClusterLock {
    fn drop(&mut self) {
        self.renewal.abort();
        let (key, token) = self.take();
        if key.is_empty() {
            return; // released already
        }
        // Not awaited by the request: the replay cache answers repeats meanwhile, and a lock that
        // cannot be released expires after `inflight_lock_ms`.
        let redis = Arc::clone(&self.redis);
        self.redis
            .io
            .spawn(async move { release(&redis, key, token).await });
    }
}

/// Deletes the lock if it still holds `token`; tried even while Redis is marked down (a blip
/// must not leave a lock behind for a whole lifetime).
async fn release(redis: &Redis, key: String, token: String) {
    redis
        .run_anyway(RedisUse::Idempotency, |mut connection| async move {
            RELEASE
                .key(key)
                .arg(token)
                .invoke_async::<i64>(&mut connection)
                .await
        })
        .await;
}

impl Redis {
    /// `SET P:idem:<merchant>:<key> <token> NX PX inflight_lock_ms`.
    pub async fn lock_key(self: &Arc<Self>, merchant_id: &str, key: &str) -> Lock {
        let Ok(random) = crate::crypto::random_bytes::<16>() else {
            return Lock::Unavailable;
        };
        let token = hex::encode(random);
        let lock_key = self.key(&["idem", merchant_id, key]);
        let ttl_ms = self.inflight_lock_ms;
        let (command_key, command_token) = (lock_key.clone(), token.clone());
        let set = self
            .run(RedisUse::Idempotency, move |mut connection| async move {
                redis::cmd("SET")
                    .arg(command_key)
                    .arg(command_token)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async::<Option<String>>(&mut connection)
                    .await
            })
            .await;
        match set {
            Some(Some(_ok)) => {
                let renewal =
                    self.io
                        .spawn(renew(Arc::clone(self), lock_key.clone(), token.clone()));
                Lock::Taken(ClusterLock {
                    redis: Arc::clone(self),
                    key: lock_key,
                    token,
                    renewal,
                })
            }
            Some(None) => Lock::HeldElsewhere,
            None => Lock::Unavailable,
        }
    }

    /// The finished response cached for (merchant, key); `None` on a miss or without Redis.
    pub async fn cached_response(&self, merchant_id: &str, key: &str) -> Option<IdempotencyRecord> {
        let done_key = self.key(&["idemdone", merchant_id, key]);
        let value = self
            .run(RedisUse::Idempotency, |mut connection| async move {
                redis::cmd("GET")
                    .arg(done_key)
                    .query_async::<Option<Vec<u8>>>(&mut connection)
                    .await
            })
            .await??;
        let decoded = decode(merchant_id, key, &value);
        if decoded.is_none() {
            tracing::warn!(
                merchant_id,
                "ignoring an unreadable cached idempotent response; the store answers"
            );
        }
        decoded
    }

    /// Caches `record` (already durable in the store) for `idempotency_cache_ttl_ms`.
    pub async fn cache_response(&self, record: &IdempotencyRecord) {
        let done_key = self.key(&["idemdone", &record.merchant_id, &record.key]);
        let value = encode(record);
        let ttl_ms = self.idempotency_cache_ttl_ms;
        self.run(RedisUse::Idempotency, move |mut connection| async move {
            redis::cmd("SET")
                .arg(done_key)
                .arg(value)
                .arg("PX")
                .arg(ttl_ms)
                .query_async::<()>(&mut connection)
                .await
        })
        .await;
    }
}

/// Extends the lock every third of `inflight_lock_ms` until aborted (its guard dropped) or the
/// lock is found lost. While Redis is down it waits: the lock may expire meanwhile, and then
/// another node may run the same key, which the store path makes safe.
async fn renew(redis: Arc<Redis>, key: String, token: String) {
    let lifetime_ms = redis.inflight_lock_ms;
    let period = Duration::from_millis((lifetime_ms / 3).max(1));
    loop {
        tokio::time::sleep(period).await;
        if !redis.connected() {
            continue;
        }
        let (key, token) = (key.clone(), token.clone());
        let renewed = redis
            .run(RedisUse::Idempotency, move |mut connection| async move {
                RENEW
                    .key(key)
                    .arg(token)
                    .arg(lifetime_ms)
                    .invoke_async::<i64>(&mut connection)
                    .await
            })
            .await;
        if renewed == Some(0) {
            tracing::info!(
                "an idempotency lock expired before its request finished; the store keeps the \
                 first response"
            );
            return;
        }
    }
}

fn encode(record: &IdempotencyRecord) -> Vec<u8> {
    let header = format!(
        "v1 {} {} {}\n",
        record.status, record.created_ms, record.fingerprint
    );
    let mut value = Vec::with_capacity(header.len() + record.body.len());
    value.extend_from_slice(header.as_bytes());
    value.extend_from_slice(&record.body);
    value
}

fn decode(merchant_id: &str, key: &str, value: &[u8]) -> Option<IdempotencyRecord> {
    let newline = value.iter().position(|&b| b == b'\n')?;
    let header = std::str::from_utf8(&value[..newline]).ok()?;
    let mut fields = header.split(' ');
    let (Some("v1"), Some(status), Some(created_ms), Some(fingerprint), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return None;
    };
    Some(IdempotencyRecord {
        merchant_id: merchant_id.to_string(),
        key: key.to_string(),
        fingerprint: fingerprint.to_string(),
        status: status.parse().ok()?,
        body: value[newline + 1..].to_vec(),
        created_ms: created_ms.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::testing;

    #[tokio::test]
    async fn a_lock_is_exclusive_renewed_and_released_only_by_its_holder() {
        let Some(redis) = testing::local("lock", |r| {
            r.command_timeout_ms = 100;
            r.inflight_lock_ms = 300;
        })
        .await
        else {
            return;
        };
        let Lock::Taken(lock) = redis.lock_key("mch_1", "k1").await else {
            panic!("a free key is taken");
        };
        assert!(matches!(
            redis.lock_key("mch_1", "k1").await,
            Lock::HeldElsewhere
        ));
        assert!(matches!(
            redis.lock_key("mch_2", "k1").await,
            Lock::Taken(_)
        ));
        // Renewals keep it well past its 300 ms lifetime (the time passing is the point here).
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(matches!(
            redis.lock_key("mch_1", "k1").await,
            Lock::HeldElsewhere
        ));
        // Once its lifetime ran out and another holder took it, a late release frees nothing.
        let key = redis.key(&["idem", "mch_1", "k1"]);
        let set = redis::cmd("SET").arg(&key).arg("another-node").clone();
        let _: () = redis.raw(set).await;
        lock.release().await;
        let holder: Option<String> = redis.raw(redis::cmd("GET").arg(&key).clone()).await;
        assert_eq!(holder.as_deref(), Some("another-node"));
        redis.clean_up().await;
    }

    #[tokio::test]
    async fn a_dropped_lock_is_released() {
        let Some(redis) = testing::local("release", |_| {}).await else {
            return;
        };
        let Lock::Taken(lock) = redis.lock_key("mch_1", "k2").await else {
            panic!("a free key is taken");
        };
        drop(lock);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match redis.lock_key("mch_1", "k2").await {
                Lock::Taken(_) => break,
                _ if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                _ => panic!("the lock was never released"),
            }
        }
        redis.clean_up().await;
    }

    #[tokio::test]
    async fn a_cached_response_round_trips_through_redis() {
        let Some(redis) = testing::local("cache", |_| {}).await else {
            return;
        };
        assert!(redis.cached_response("mch_1", "k3").await.is_none());
        let original = IdempotencyRecord {
            key: "k3".into(),
            ..record(b"{\"id\":\"pay_1\"}\n")
        };
        redis.cache_response(&original).await;
        let cached = redis.cached_response("mch_1", "k3").await.expect("a hit");
        assert_eq!(cached.body, original.body);
        assert_eq!(cached.fingerprint, original.fingerprint);
        redis.clean_up().await;
    }

    fn record(body: &[u8]) -> IdempotencyRecord {
        IdempotencyRecord {
            merchant_id: "mch_1".into(),
            key: "order:42".into(),
            fingerprint: "ab12".repeat(16),
            status: 201,
            body: body.to_vec(),
            created_ms: 1_795_000_000_123,
        }
    }

    #[test]
    fn a_cached_response_reads_back_byte_for_byte() {
        for body in [
            &b"{\"id\":\"pay_1\"}"[..],
            b"",
            b"line\nbreaks\n and v1 1 2 3\n",
        ] {
            let original = record(body);
            let decoded = decode("mch_1", "order:42", &encode(&original)).expect("decodes");
            assert_eq!(decoded.body, original.body);
            assert_eq!(decoded.status, 201);
            assert_eq!(decoded.fingerprint, original.fingerprint);
            assert_eq!(decoded.created_ms, original.created_ms);
            assert_eq!(
                (decoded.merchant_id.as_str(), decoded.key.as_str()),
                ("mch_1", "order:42")
            );
        }
    }

    #[test]
    fn an_unreadable_value_is_a_miss() {
        for value in [
            &b"no newline"[..],
            b"v2 201 1 ab\n{}",
            b"v1 two 1 ab\n{}",
            b"v1 201 1\n{}",
            b"v1 201 1 ab extra\n{}",
        ] {
            assert!(decode("mch_1", "k", value).is_none(), "{value:?}");
        }
    }
}
