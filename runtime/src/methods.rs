//! Payment methods as data: for each (method, currency), the channel that carries it and the
//! smallest and largest single payment. Kept in the store, cached here, changed by operators
//! through `PUT /admin/methods/{method}/{currency}` (every change is logged as an audit line).
//!
//! The defaults (seeded for every pair the store does not have yet, so an upgrade gains new
//! methods and keeps every operator change), in major units scaled to the currency's exponent
//! (×100 for zero-decimal currencies, ÷10 for three-decimal ones):
//!
//! | method          | currencies                  | min   | max          |
//! |-----------------|-----------------------------|-------|--------------|
//! | `card`          | all 45                      | 0.01  | 1 000 000    |
//! | `qr_wallet`     | CNY HKD USD EUR             | 0.01  | 50 000       |
//! | `app_wallet`    | CNY HKD USD EUR             | 0.01  | 50 000       |
//! | `bank_transfer` | EUR USD GBP CHF CNY JPY     | 1.00  | 100 000 000  |
//! | `wallet`        | all 45                      | 0.01  | 100 000      |
//!
//! Large B2B amounts therefore go by bank transfer; a card or wallet payment above its maximum
//! is refused with `amount_over_limit` before anything exists.

use std::collections::BTreeMap;
use std::sync::Arc;

use kassa_actors::money::Currency;
use kassa_store::{MethodRecord, Store, StoreError};
use parking_lot::RwLock;

/// Channels a method may be routed to.
pub const CHANNELS: &[&str] = &["card", "qr_wallet", "app_wallet", "bank_transfer", "wallet"];
/// Methods the order actors know how to run.
pub const METHODS: &[&str] = &["card", "qr_wallet", "app_wallet", "bank_transfer", "wallet"];

pub struct Methods {
    store: Arc<dyn Store>,
    cache: RwLock<BTreeMap<(String, String), MethodRecord>>,
}

/// One default: the method (also its channel), its currencies (`None`: all), min and max in
/// major units.
struct Default {
    method: &'static str,
    currencies: Option<&'static [&'static str]>,
    min_major_cents: i64,
    max_major: i64,
}

const DEFAULTS: &[Default] = &[
    Default {
        method: "card",
        currencies: None,
        min_major_cents: 1,
        max_major: 1_000_000,
    },
    Default {
        method: "qr_wallet",
        currencies: Some(&["CNY", "HKD", "USD", "EUR"]),
        min_major_cents: 1,
        max_major: 50_000,
    },
    Default {
        method: "app_wallet",
        currencies: Some(&["CNY", "HKD", "USD", "EUR"]),
        min_major_cents: 1,
        max_major: 50_000,
    },
    Default {
        method: "bank_transfer",
        currencies: Some(&["EUR", "USD", "GBP", "CHF", "CNY", "JPY"]),
        min_major_cents: 100,
        max_major: 100_000_000,
    },
    Default {
        method: "wallet",
        currencies: None,
        min_major_cents: 1,
        max_major: 100_000,
    },
];

/// Major units × 100 ("cents") in the currency's minor units, at least 1.
fn cents_to_minor(cents: i64, currency: Currency) -> i64 {
    match currency.exponent() {
        0 => cents.div_euclid(100).max(1),
        e => cents * 10_i64.pow(e - 2),
    }
}

fn max_minor(max_major: i64, currency: Currency) -> i64 {
    match currency.exponent() {
        0 => max_major * 100,
        3 => max_major / 10 * 1_000,
        e => max_major * 10_i64.pow(e),
    }
}

fn default_records(now_ms: i64) -> Vec<MethodRecord> {
    let mut out = Vec::new();
    for d in DEFAULTS {
        let currencies: Vec<Currency> = match d.currencies {
            None => Currency::all().collect(),
            Some(codes) => codes
                .iter()
                .filter_map(|code| Currency::from_code(code).ok())
                .collect(),
        };
        for currency in currencies {
            out.push(MethodRecord {
                method: d.method.into(),
                currency: currency.code().into(),
                channel: d.method.into(),
                min_minor: cents_to_minor(d.min_major_cents, currency),
                max_minor: max_minor(d.max_major, currency),
                enabled: true,
                updated_ms: now_ms,
            });
        }
    }
    out
}

impl Methods {
    /// Loads the methods, seeding every default pair the store does not have yet.
    pub async fn load(store: Arc<dyn Store>, now_ms: i64) -> Result<Methods, StoreError> {
        let mut records = store.list_methods().await?;
        let mut seeded = 0;
        for record in default_records(now_ms) {
            let known = records
                .iter()
                .any(|r| r.method == record.method && r.currency == record.currency);
            if !known {
                store.put_method(record.clone()).await?;
                records.push(record);
                seeded += 1;
            }
        }
        if seeded > 0 {
            tracing::info!(seeded, "seeded default payment methods");
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
