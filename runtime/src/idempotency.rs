//! `Idempotency-Key` on every POST (DESIGN.md §4).
//!
//! - A key being processed is held in memory; a second request with it gets 409.
//! - A finished response is stored durably (group-committed) *before* it is sent, and
//!   replayed byte for byte with `Idempotent-Replayed: true`.
//! - The same key with a different request (method, path, body) gets 422.
//! - A crash between doing the work and storing the response is covered one level down:
//!   ids of objects created under a key are derived from (merchant, key), so the retry
//!   finds the object instead of creating another.
//!
//! # With Redis (cluster mode)
//!
//! The in-memory guard only sees this node. With Redis up, `begin` also asks the replay cache
//! (`P:idemdone:…`, a hit is answered without the store, fingerprint still checked) and takes
//! the cluster-wide in-flight lock (`P:idem:…`, held elsewhere → 409 unless the store already
//! has the answer); `finish` caches the response once the store holds it; dropping the guard
//! releases the lock. Redis is never the truth: a miss, an error or an outage leaves the store
//! path above, which alone is correct (derived ids, and the store keeps the first response).

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use kassa_store::{IdempotencyRecord, Store};
use parking_lot::Mutex;

use crate::crypto::sha256_hex;
use crate::http::error::ApiError;
use crate::redis::{ClusterLock, Lock, Redis};

pub const KEY_CHARS_MAX: usize = 255;
/// Keyed requests in flight at once, across merchants; past it new keyed requests get 503.
pub const IN_FLIGHT_MAX: usize = 100_000;

pub struct Idempotency {
    store: Arc<dyn Store>,
    in_flight: Arc<Mutex<HashSet<(String, String)>>>,
    /// Cluster mode's lock and replay cache.
    redis: Option<Arc<Redis>>,
}

/// Holds a key as "in progress" until dropped (also when the client goes away mid-request).
pub struct InFlight {
    set: Arc<Mutex<HashSet<(String, String)>>>,
    entry: (String, String),
    fingerprint: String,
    /// The cluster-wide lock, when Redis gave one; released when this guard drops.
    _cluster: Option<ClusterLock>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.set.lock().remove(&self.entry);
    }
}

pub enum Begin {
    Fresh(InFlight),
    Replay { status: StatusCode, body: Bytes },
}

pub fn fingerprint(method: &str, path_and_query: &str, body: &[u8]) -> String {
    sha256_hex(&[method.as_bytes(), path_and_query.as_bytes(), body])
}

fn check_key(key: &str) -> Result<(), ApiError> {
    let printable = key.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if key.is_empty() || key.len() > KEY_CHARS_MAX || !printable {
        return Err(ApiError::idempotency(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_invalid",
            format!(
                "Idempotency-Key must be 1 to {KEY_CHARS_MAX} printable ASCII characters without spaces"
            ),
        ));
    }
    Ok(())
}

fn in_progress() -> ApiError {
    ApiError::idempotency(
        StatusCode::CONFLICT,
        "idempotency_request_in_progress",
        "a request with this Idempotency-Key is still being processed; retry after it finishes",
    )
}

impl Idempotency {
    /// `redis`: cluster mode's shared lock and cache (`None` in embedded mode).
    pub fn new(store: Arc<dyn Store>, redis: Option<Arc<Redis>>) -> Idempotency {
        Idempotency {
            store,
            in_flight: Arc::new(Mutex::new(HashSet::new())),
            redis,
        }
    }

    pub async fn begin(
        &self,
        merchant_id: &str,
        key: &str,
        fingerprint: String,
    ) -> Result<Begin, ApiError> {
        check_key(key)?;
        let mut guard = self.guard_locally(merchant_id, key, fingerprint)?;
        let mut held_elsewhere = false;
        if let Some(redis) = &self.redis {
            if let Some(record) = redis.cached_response(merchant_id, key).await {
                return replay_or_refuse(&record, &guard.fingerprint);
            }
            match redis.lock_key(merchant_id, key).await {
                Lock::Taken(lock) => guard._cluster = Some(lock),
                Lock::HeldElsewhere => held_elsewhere = true,
                Lock::Unavailable => {}
            }
        }
        // The store has the last word: a finished response is the answer even while a lock
        // lingers (its node died before releasing it).
        match self.store.get_idempotency(merchant_id, key).await? {
            Some(record) => {
                if let Some(redis) = &self.redis {
                    redis.cache_response(&record).await;
                }
                replay_or_refuse(&record, &guard.fingerprint)
            }
            None if held_elsewhere => Err(in_progress()),
            None => Ok(Begin::Fresh(guard)),
        }
    }

    /// Marks (merchant, key) in progress on this node: 409 if it already is, 503 past
    /// [`IN_FLIGHT_MAX`].
    fn guard_locally(
        &self,
        merchant_id: &str,
        key: &str,
        fingerprint: String,
    ) -> Result<InFlight, ApiError> {
        let entry = (merchant_id.to_string(), key.to_string());
        let mut set = self.in_flight.lock();
        if set.len() >= IN_FLIGHT_MAX {
            return Err(ApiError::unavailable(
                "overloaded",
                "too many requests in progress; retry shortly",
            ));
        }
        if !set.insert(entry.clone()) {
            return Err(in_progress());
        }
        Ok(InFlight {
            set: self.in_flight.clone(),
            entry,
            fingerprint,
            _cluster: None,
        })
    }

    /// Stores the response (if it is one to keep) and returns what to send.
    pub async fn finish(
        &self,
        guard: InFlight,
        status: StatusCode,
        body: Bytes,
        now_ms: i64,
    ) -> Result<(StatusCode, Bytes, bool), ApiError> {
        if !worth_keeping(status) {
            return Ok((status, body, false));
        }
        let record = IdempotencyRecord {
            merchant_id: guard.entry.0.clone(),
            key: guard.entry.1.clone(),
            fingerprint: guard.fingerprint.clone(),
            status: status.as_u16(),
            body: body.to_vec(),
            created_ms: now_ms,
        };
        let stored = self.store.put_idempotency(record).await?;
        // Durable first, then cached (the cache never says more than the store); the lock goes
        // when `guard` drops, after this.
        if let Some(redis) = &self.redis {
            redis.cache_response(&stored).await;
        }
        if stored.fingerprint != guard.fingerprint || stored.body != body {
            // Another node finished the same key first: its answer is the answer.
            return match replay_or_refuse(&stored, &guard.fingerprint)? {
                Begin::Replay { status, body } => Ok((status, body, true)),
                Begin::Fresh(_) => Ok((status, body, false)),
            };
        }
        Ok((status, body, false))
    }
}

fn replay_or_refuse(record: &IdempotencyRecord, fingerprint: &str) -> Result<Begin, ApiError> {
    if record.fingerprint != fingerprint {
        return Err(ApiError::idempotency(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request",
        ));
    }
    let status = StatusCode::from_u16(record.status).map_err(|_| ApiError::internal())?;
    Ok(Begin::Replay {
        status,
        body: Bytes::from(record.body.clone()),
    })
}

/// Answers that say what happened to the request are kept; answers that say "try again"
/// (shed, overloaded, in progress, failed inside Kassa) are not.
fn worth_keeping(status: StatusCode) -> bool {
    !(status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::UNAUTHORIZED)
}
