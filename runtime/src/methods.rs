//! Payment methods as data: for each (method, currency), the channel that carries it and the
//! smallest and largest single payment. Kept in the store, cached here, changed by operators
//! through `PUT /admin/methods/{method}/{currency}` (every change is logged as an audit line).
//!
//! On a fresh store the card method is seeded for every supported currency, with limits by
//! the currency's exponent (1 000 000 major units; 100 000 000 for zero-decimal currencies;
//! 100 000 for three-decimal ones), so the embedded default works out of the box.

use std::collections::BTreeMap;
use std::sync::Arc;

use kassa_actors::money::Currency;
use kassa_store::{MethodRecord, Store, StoreError};
use parking_lot::RwLock;

/// Channels a method may be routed to (grows with the channel protocols).
pub const CHANNELS: &[&str] = &["card"];
/// Methods the order actors know how to run.
pub const METHODS: &[&str] = &["card"];

pub struct Methods {
    store: Arc<dyn Store>,
    cache: RwLock<BTreeMap<(String, String), MethodRecord>>,
}

fn default_card_max_major(currency: Currency) -> i64 {
    match currency.exponent() {
        0 => 100_000_000,
        3 => 100_000,
        _ => 1_000_000,
    }
}

impl Methods {
    /// Loads the methods, seeding the defaults into an empty store.
    pub async fn load(store: Arc<dyn Store>, now_ms: i64) -> Result<Methods, StoreError> {
        let mut records = store.list_methods().await?;
        if records.is_empty() {
            for currency in Currency::all() {
                let record = MethodRecord {
                    method: "card".into(),
                    currency: currency.code().into(),
                    channel: "card".into(),
                    min_minor: 1,
                    max_minor: default_card_max_major(currency) * 10_i64.pow(currency.exponent()),
                    enabled: true,
                    updated_ms: now_ms,
                };
                store.put_method(record.clone()).await?;
                records.push(record);
            }
            tracing::info!(
                methods = records.len(),
                "seeded the default payment methods"
            );
        }
        let cache = records
            .into_iter()
            .map(|r| ((r.method.clone(), r.currency.clone()), r))
            .collect();
        Ok(Methods {
            store,
            cache: RwLock::new(cache),
        })
    }

    /// The terms of `method` in `currency`, if it is offered (and enabled).
    pub fn terms(&self, method: &str, currency: &str) -> Option<MethodRecord> {
        self.cache
            .read()
            .get(&(method.to_string(), currency.to_string()))
            .filter(|r| r.enabled)
            .cloned()
    }

    pub fn list(&self) -> Vec<MethodRecord> {
        self.cache.read().values().cloned().collect()
    }

    /// Stores new terms durably, then serves them.
    pub async fn put(&self, record: MethodRecord) -> Result<(), StoreError> {
        self.store.put_method(record.clone()).await?;
        self.cache
            .write()
            .insert((record.method.clone(), record.currency.clone()), record);
        Ok(())
    }
}
