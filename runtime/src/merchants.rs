//! Merchants: creation, and the cache of their (unsealed) secrets used to verify requests.

use std::collections::HashMap;
use std::sync::Arc;

use kassa_channels::secret::Secret;
use kassa_store::{MerchantRecord, Store};
use parking_lot::RwLock;

use crate::crypto::{CryptoError, Sealer, random_bytes, random_id};

/// Merchants kept in memory; past it the cache is cleared and refilled on demand.
const MERCHANT_CACHE_MAX: usize = 100_000;

pub struct Merchant {
    pub id: String,
    pub name: String,
    pub secret: Secret<String>,
    pub webhook_url: Option<String>,
    pub webhook_secret: Secret<String>,
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

#[derive(Debug, thiserror::Error)]
pub enum MerchantError {
    #[error(transparent)]
    Store(#[from] kassa_store::StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

pub struct Merchants {
    store: Arc<dyn Store>,
    sealer: Arc<Sealer>,
    cache: RwLock<HashMap<String, Arc<Merchant>>>,
}

impl Merchants {
    pub fn new(store: Arc<dyn Store>, sealer: Arc<Sealer>) -> Merchants {
        Merchants {
            store,
            sealer,
            cache: RwLock::new(HashMap::new()),
        }
    }

    pub async fn create(
        &self,
        name: &str,
        webhook_url: Option<String>,
        now_ms: i64,
    ) -> Result<NewMerchantCredentials, MerchantError> {
        let id = random_id("mch_")?;
        let secret = format!("sk_{}", hex::encode(random_bytes::<24>()?));
        let webhook_secret = format!("whsec_{}", hex::encode(random_bytes::<24>()?));
        let record = MerchantRecord {
            id: id.clone(),
            name: name.to_string(),
            secret_sealed: self.sealer.seal(secret.as_bytes())?,
            webhook_url: webhook_url.clone(),
            webhook_secret_sealed: self.sealer.seal(webhook_secret.as_bytes())?,
            created_ms: now_ms,
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

    /// The merchant, from the cache or the store; `None` if unknown.
    pub async fn get(&self, id: &str) -> Result<Option<Arc<Merchant>>, MerchantError> {
        if let Some(found) = self.cache.read().get(id) {
            return Ok(Some(found.clone()));
        }
        let Some(record) = self.store.get_merchant(id).await? else {
            return Ok(None);
        };
        let open = |sealed: &[u8]| -> Result<Secret<String>, MerchantError> {
            let bytes = self.sealer.open(sealed)?;
            Ok(Secret::new(
                String::from_utf8(bytes).map_err(|_| CryptoError::Open)?,
            ))
        };
        let merchant = Arc::new(Merchant {
            secret: open(&record.secret_sealed)?,
            webhook_secret: open(&record.webhook_secret_sealed)?,
            id: record.id,
            name: record.name,
            webhook_url: record.webhook_url,
        });
        let mut cache = self.cache.write();
        if cache.len() >= MERCHANT_CACHE_MAX {
            cache.clear();
        }
        cache.insert(merchant.id.clone(), merchant.clone());
        Ok(Some(merchant))
    }
}
