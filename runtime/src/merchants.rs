//! Merchants: creation, secret rotation, and the cache of their (unsealed) secrets used to
//! verify requests.
//!
//! # Caching and rotation
//!
//! A cached merchant is used for [`MERCHANT_CACHE_TTL_MS`], then read again from the store.
//! A rotation replaces the rotating node's entry at once. Other nodes of a cluster learn it
//! by themselves: a signature that does not verify against a cached copy at least
//! [`MERCHANT_REFRESH_AFTER_FAILURE_MS_MIN`] old re-reads the merchant, so the new secret
//! works everywhere within about a second; the old secret stops verifying at its expiry on
//! every node that has read the rotation, and at the latest [`MERCHANT_CACHE_TTL_MS`] after
//! it on a node that cached the merchant before the rotation.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kassa_channels::secret::Secret;
use kassa_store::{MerchantRecord, Store};
use parking_lot::RwLock;

use crate::crypto::{CryptoError, Sealer, random_bytes, random_id};

/// Merchants kept in memory; past it the cache is cleared and refilled on demand.
const MERCHANT_CACHE_MAX: usize = 100_000;
/// How long a cached merchant is trusted before it is read again from the store.
pub const MERCHANT_CACHE_TTL_MS: u64 = 30_000;
/// A signature that fails against a cached merchant at least this old re-reads it (a secret
/// rotated on another node); younger copies are not re-read, so a flood of bad signatures
/// costs at most one store read per merchant per interval.
pub const MERCHANT_REFRESH_AFTER_FAILURE_MS_MIN: u64 = 1_000;
/// How long the old secret keeps verifying after a rotation when the request names no
/// `overlap_s`: a day.
pub const ROTATION_OVERLAP_S_DEFAULT: u64 = 86_400;
/// The longest overlap a rotation may ask for: a week.
pub const ROTATION_OVERLAP_S_MAX: u64 = 7 * 86_400;

pub struct Merchant {
    pub id: String,
    pub name: String,
    pub secret: Secret<String>,
    /// The secret before the last rotation, while it still verifies.
    pub previous_secret: Option<PreviousSecret>,
    pub webhook_url: Option<String>,
    pub webhook_secret: Secret<String>,
}

/// A rotated-out secret and the moment (unix ms) it stops verifying.
pub struct PreviousSecret {
    pub secret: Secret<String>,
    pub expires_ms: i64,
}

impl Merchant {
    /// The previous secret if it still verifies at `now_ms`.
    pub fn previous_secret_at(&self, now_ms: i64) -> Option<&Secret<String>> {
        self.previous_secret
            .as_ref()
            .filter(|previous| now_ms < previous.expires_ms)
            .map(|previous| &previous.secret)
    }
}

/// What `POST /admin/merchants` and `kassa merchant create` show, once.
#[derive(serde::Serialize)]
pub struct NewMerchantCredentials {
    pub id: String,
    pub object: &'static str,
    pub name: String,
    pub secret: String,
    pub webhook_secret: String,
    pub webhook_url: Option<String>,
    pub created: i64,
}

/// What `POST /admin/merchants/{id}/rotate_secret` and `kassa merchant rotate-secret` show,
/// once: the new secret, and until when the old one still verifies.
#[derive(serde::Serialize)]
pub struct RotatedSecret {
    pub id: String,
    pub object: &'static str,
    pub secret: String,
    pub overlap_s: u64,
    /// Unix seconds (rounded up) at which the previous secret stops verifying.
    pub previous_secret_expires: i64,
    pub rotated: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum MerchantError {
    #[error(transparent)]
    Store(#[from] kassa_store::StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

struct Cached {
    merchant: Arc<Merchant>,
    loaded: Instant,
}

pub struct Merchants {
    store: Arc<dyn Store>,
    sealer: Arc<Sealer>,
    cache: RwLock<HashMap<String, Cached>>,
    /// Bumped by every rotation on this node: a read of the store that started before a
    /// rotation must not put the secret it read back into the cache.
    rotations: AtomicU64,
}

fn new_secret() -> Result<String, CryptoError> {
    Ok(format!("sk_{}", hex::encode(random_bytes::<24>()?)))
}

impl Merchants {
    pub fn new(store: Arc<dyn Store>, sealer: Arc<Sealer>) -> Merchants {
        Merchants {
            store,
            sealer,
            cache: RwLock::new(HashMap::new()),
            rotations: AtomicU64::new(0),
        }
    }

    pub async fn create(
        &self,
        name: &str,
        webhook_url: Option<String>,
        now_ms: i64,
    ) -> Result<NewMerchantCredentials, MerchantError> {
        let id = random_id("mch_")?;
        let secret = new_secret()?;
        let webhook_secret = format!("whsec_{}", hex::encode(random_bytes::<24>()?));
        let record = MerchantRecord {
            id: id.clone(),
            name: name.to_string(),
            secret_sealed: self.sealer.seal(secret.as_bytes())?,
            webhook_url: webhook_url.clone(),
            webhook_secret_sealed: self.sealer.seal(webhook_secret.as_bytes())?,
            created_ms: now_ms,
            previous_secret_sealed: None,
            previous_secret_expires_ms: None,
        };
        self.store.put_merchant(record).await?;
        Ok(NewMerchantCredentials {
            id,
            object: "merchant",
            name: name.to_string(),
            secret,
            webhook_secret,
            webhook_url,
            created: now_ms.div_euclid(1_000),
        })
    }

    /// Gives merchant `id` a new secret; the current one keeps verifying for `overlap_s`
    /// seconds (at most [`ROTATION_OVERLAP_S_MAX`]; 0 ends it at once). `None` if there is
    /// no such merchant. This node's cache serves the new secret at once.
    pub async fn rotate_secret(
        &self,
        id: &str,
        overlap_s: u64,
        now_ms: i64,
    ) -> Result<Option<RotatedSecret>, MerchantError> {
        let overlap_s = overlap_s.min(ROTATION_OVERLAP_S_MAX);
        let secret = new_secret()?;
        // At most a week of milliseconds: no overflow.
        let expires_ms = now_ms.saturating_add(i64::try_from(overlap_s * 1_000).unwrap_or(0));
        let rotated = self
            .store
            .rotate_merchant_secret(id, self.sealer.seal(secret.as_bytes())?, expires_ms)
            .await?;
        if !rotated {
            return Ok(None);
        }
        self.rotations.fetch_add(1, Ordering::AcqRel);
        self.cache.write().remove(id);
        self.load(id).await?;
        tracing::info!(
            target: "audit",
            merchant = %id,
            overlap_s,
            previous_secret_expires_ms = expires_ms,
            "merchant secret rotated"
        );
        Ok(Some(RotatedSecret {
            id: id.to_string(),
            object: "merchant_secret",
            secret,
            overlap_s,
            previous_secret_expires: expires_ms.div_euclid(1_000)
                + i64::from(expires_ms.rem_euclid(1_000) != 0),
            rotated: now_ms.div_euclid(1_000),
        }))
    }

    /// The merchant, from the cache (if read less than [`MERCHANT_CACHE_TTL_MS`] ago) or the
    /// store; `None` if unknown.
    pub async fn get(&self, id: &str) -> Result<Option<Arc<Merchant>>, MerchantError> {
        let ttl = Duration::from_millis(MERCHANT_CACHE_TTL_MS);
        if let Some(fresh) = self.cached_younger_than(id, ttl) {
            return Ok(Some(fresh));
        }
        self.load(id).await
    }

    /// After a signature failed against a cached merchant: the merchant read again from the
    /// store, unless the cached copy is younger than
    /// [`MERCHANT_REFRESH_AFTER_FAILURE_MS_MIN`] (then `None`: nothing newer to try).
    pub async fn refresh_after_failure(
        &self,
        id: &str,
    ) -> Result<Option<Arc<Merchant>>, MerchantError> {
        let min = Duration::from_millis(MERCHANT_REFRESH_AFTER_FAILURE_MS_MIN);
        if self.cached_younger_than(id, min).is_some() {
            return Ok(None);
        }
        self.load(id).await
    }

    fn cached_younger_than(&self, id: &str, age: Duration) -> Option<Arc<Merchant>> {
        self.cache
            .read()
            .get(id)
            .filter(|cached| cached.loaded.elapsed() < age)
            .map(|cached| cached.merchant.clone())
    }

    /// Reads the merchant from the store, opens its secrets and caches it.
    async fn load(&self, id: &str) -> Result<Option<Arc<Merchant>>, MerchantError> {
        let rotations_seen = self.rotations.load(Ordering::Acquire);
        let Some(record) = self.store.get_merchant(id).await? else {
            self.cache.write().remove(id);
            return Ok(None);
        };
        let open = |sealed: &[u8]| -> Result<Secret<String>, MerchantError> {
            let bytes = self.sealer.open(sealed)?;
            Ok(Secret::new(
                String::from_utf8(bytes).map_err(|_| CryptoError::Open)?,
            ))
        };
        let previous_secret = match (
            &record.previous_secret_sealed,
            record.previous_secret_expires_ms,
        ) {
            (Some(sealed), Some(expires_ms)) => Some(PreviousSecret {
                secret: open(sealed)?,
                expires_ms,
            }),
            _ => None,
        };
        let merchant = Arc::new(Merchant {
            secret: open(&record.secret_sealed)?,
            previous_secret,
            webhook_secret: open(&record.webhook_secret_sealed)?,
            id: record.id,
            name: record.name,
            webhook_url: record.webhook_url,
        });
        let mut cache = self.cache.write();
        if self.rotations.load(Ordering::Acquire) != rotations_seen {
            // A rotation happened meanwhile: what was read may be the old secret. Answer
            // with it (the caller verifies against the previous secret too), cache nothing.
            return Ok(Some(merchant));
        }
        if cache.len() >= MERCHANT_CACHE_MAX {
            cache.clear();
        }
        cache.insert(
            merchant.id.clone(),
            Cached {
                merchant: merchant.clone(),
                loaded: Instant::now(),
            },
        );
        Ok(Some(merchant))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merchant(previous_expires_ms: Option<i64>) -> Merchant {
        Merchant {
            id: "mch_1".into(),
            name: "M".into(),
            secret: Secret::new("sk_new".into()),
            previous_secret: previous_expires_ms.map(|expires_ms| PreviousSecret {
                secret: Secret::new("sk_old".into()),
                expires_ms,
            }),
            webhook_url: None,
            webhook_secret: Secret::new("whsec".into()),
        }
    }

    #[test]
    fn the_previous_secret_verifies_only_before_its_expiry() {
        let rotated = merchant(Some(10_000));
        let expose = |s: Option<&Secret<String>>| s.map(|s| s.expose().clone());
        assert_eq!(
            expose(rotated.previous_secret_at(9_999)),
            Some("sk_old".into())
        );
        assert_eq!(expose(rotated.previous_secret_at(10_000)), None);
        assert_eq!(expose(rotated.previous_secret_at(20_000)), None);
        assert!(merchant(None).previous_secret_at(0).is_none());
    }
}
