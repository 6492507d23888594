//! The merchant API's JSON request bodies, through the parse functions the routes themselves
//! call (`runtime/src/routes/*.rs`, `runtime/src/http/fields.rs`).
//!
//! Input: one selector byte, then the body.
//! - `p` `POST /v1/payments` (`parse_create_payment`, with a stand-in for the node's method
//!   terms, clock and `wait_ms` bounds)
//! - `c` `POST /v1/payments/{id}/capture` (`parse_capture`, for a JPY, USD and KWD payment)
//! - `w` cancel / confirm / complete_revert / reverse (`optional_wait_ms`)
//! - `r` `POST /v1/refunds` (`parse_create_refund`)
//! - `W` `POST /v1/wallets` (`parse_create_wallet`)
//! - `m` top-up / withdrawal (`parse_wallet_move` then `check_wallet_move`)
//!
//! Beyond "no panic": a refusal is a 400 or a 422 (never a 5xx: nothing here is Kassa's
//! fault) whose error object is well-formed JSON; what is accepted respects every documented
//! bound (positive amounts within the method's limits and the currency's exponent, card and
//! bank summaries that keep only what they may, bounded strings and metadata); and parsing is
//! deterministic (same body and key, same payment id and fingerprint).
#![no_main]

use http::StatusCode;
use kassa_actors::money::{Currency, Money};
use kassa_actors::payment::{CaptureMode, Method};
use kassa_runtime::http::error::ApiError;
use kassa_runtime::http::fields::{
    METADATA_KEY_CHARS_MAX, METADATA_KEYS_MAX, METADATA_VALUE_CHARS_MAX,
};
use kassa_runtime::routes::payments::{
    self, CreateContext, DESCRIPTION_CHARS_MAX, HOLDER_NAME_CHARS_MAX, MERCHANT_ORDER_ID_CHARS_MAX,
    WALLET_ID_CHARS_MAX,
};
use kassa_runtime::routes::{refunds, wallets};
use kassa_store::{MethodRecord, WalletMovementKind, WalletRecord};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

const WAIT_MS_DEFAULT: u64 = 5_000;
const WAIT_MS_MAX: u64 = 30_000;
/// 2026-11-18: cards expiring before 2026-11 are expired.
const NOW_MS: i64 = 1_795_500_000_000;

/// The default method terms of `methods.rs`, in minor units.
struct Node;

impl CreateContext for Node {
    fn terms(&self, method: &str, currency: &str) -> Option<MethodRecord> {
        let exponent = Currency::from_code(currency).ok()?.exponent();
        let major = 10_i64.pow(exponent);
        let wallets = ["CNY", "HKD", "USD", "EUR"].contains(&currency);
        let banks = ["EUR", "USD", "GBP", "CHF", "CNY", "JPY"].contains(&currency);
        let (min_minor, max_minor) = match method {
            "card" => (1, 1_000_000 * major),
            "qr_wallet" | "app_wallet" if wallets => (1, 50_000 * major),
            "bank_transfer" if banks => (major, 100_000_000 * major),
            "wallet" => (1, 100_000 * major),
            _ => return None,
        };
        Some(MethodRecord {
            method: method.to_owned(),
            currency: currency.to_owned(),
            channel: method.to_owned(),
            min_minor,
            max_minor,
            enabled: true,
            updated_ms: 0,
        })
    }

    fn now_ms(&self) -> i64 {
        NOW_MS
    }

    fn wait_ms(&self, asked: Option<u64>) -> Result<u64, ApiError> {
        match asked {
            None => Ok(WAIT_MS_DEFAULT),
            Some(ms) if ms <= WAIT_MS_MAX => Ok(ms),
            Some(_) => Err(ApiError::unprocessable("wait_ms_invalid", "too long")),
        }
    }
}

/// A refusal is the merchant's to fix (400 or 422) and renders as the documented error object.
fn check_refusal(e: &ApiError) {
    assert!(
        e.status == StatusCode::BAD_REQUEST || e.status == StatusCode::UNPROCESSABLE_ENTITY,
        "status {} for {}: {}",
        e.status,
        e.code,
        e.message
    );
    assert!(!e.code.is_empty());
    let body: serde_json::Value = serde_json::from_slice(&e.body()).expect("error body is JSON");
    assert_eq!(body["error"]["code"], e.code);
    assert!(body["error"]["message"].is_string());
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

fn check_metadata(metadata: &BTreeMap<String, String>) {
    assert!(metadata.len() <= METADATA_KEYS_MAX);
    for (key, value) in metadata {
        assert!((1..=METADATA_KEY_CHARS_MAX).contains(&chars(key)));
        assert!(chars(value) <= METADATA_VALUE_CHARS_MAX);
    }
}

fn check_amount(amount: &Money) {
    assert!(amount.minor_units() > 0);
    let shown = amount.to_string();
    let decimals = shown.split_once('.').map_or(0, |(_, f)| f.len());
    assert_eq!(decimals, amount.currency().exponent() as usize);
}

fn create_payment(body: &[u8]) {
    let first = payments::parse_create_payment(&Node, "mch_fuzz", body, Some("key-1"));
    let request = match first {
        Ok(request) => request,
        Err(e) => return check_refusal(&e),
    };
    let new = &request.new;
    check_amount(&new.amount);
    let terms = Node
        .terms(new.method.as_str(), new.amount.currency().code())
        .expect("an accepted method has terms");
    assert!((terms.min_minor..=terms.max_minor).contains(&new.amount.minor_units()));
    assert!(new.id.starts_with("pay_"));
    assert_eq!(new.merchant_id, "mch_fuzz");
    assert!((1..=MERCHANT_ORDER_ID_CHARS_MAX).contains(&chars(&new.merchant_order_id)));
    assert!(!new.merchant_order_id.chars().any(char::is_control));
    if let Some(description) = &new.description {
        assert!((1..=DESCRIPTION_CHARS_MAX).contains(&chars(description)));
    }
    check_metadata(&new.metadata);
    assert!(request.wait_ms <= WAIT_MS_MAX);
    if new.capture == CaptureMode::Manual {
        assert!(new.method.supports_manual_capture());
    }
    // Exactly the payer details the method uses.
    assert_eq!(new.card.is_some(), new.method == Method::Card);
    assert_eq!(
        new.bank_account.is_some(),
        new.method == Method::BankTransfer
    );
    assert_eq!(new.wallet_id.is_some(), new.method == Method::Wallet);
    if let Some(card) = &new.card {
        // The summary keeps the brand, the BIN and the last four digits: never the PAN.
        assert_eq!(card.last4.len(), 4);
        assert!(card.last4.bytes().all(|b| b.is_ascii_digit()));
        assert!(card.bin.len() <= 8 && card.bin.bytes().all(|b| b.is_ascii_digit()));
        assert!((1..=12).contains(&card.exp_month));
        assert!(
            (card.exp_year, card.exp_month) >= (2026, 11),
            "expired card accepted"
        );
    }
    if let Some(account) = &new.bank_account {
        assert_eq!(account.last4.len(), 4);
        assert!(account.last4.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert!((1..=HOLDER_NAME_CHARS_MAX).contains(&chars(&account.holder_name)));
        assert!(!account.holder_name.trim().is_empty());
    }
    if let Some(wallet_id) = &new.wallet_id {
        assert!((1..=WALLET_ID_CHARS_MAX).contains(&chars(wallet_id)));
    }
    // Deterministic: the same body under the same key is the same payment.
    let again = payments::parse_create_payment(&Node, "mch_fuzz", body, Some("key-1"))
        .unwrap_or_else(|e| panic!("accepted once, refused the second time: {}", e.code));
    assert_eq!(again.new, request.new);
}

fn capture(body: &[u8]) {
    for code in ["JPY", "USD", "KWD"] {
        let currency = Currency::from_code(code).unwrap();
        match payments::parse_capture(body, currency) {
            Ok((amount, _wait_ms)) => {
                if let Some(amount) = amount {
                    check_amount(&amount);
                    assert_eq!(amount.currency(), currency);
                }
            }
            Err(e) => check_refusal(&e),
        }
    }
}

fn wait_ms(body: &[u8]) {
    if let Err(e) = payments::optional_wait_ms(body) {
        check_refusal(&e);
    }
}

fn refund(body: &[u8]) {
    match refunds::parse_create_refund(body) {
        Ok(request) => {
            check_metadata(&request.metadata);
            // The amount is parsed in the payment's currency, later: it must not panic either.
            if let Some(amount) = &request.amount {
                for code in ["JPY", "USD", "KWD"] {
                    let _ = Money::parse_positive(amount, Currency::from_code(code).unwrap());
                }
            }
        }
        Err(e) => check_refusal(&e),
    }
}

fn wallet(body: &[u8]) {
    match wallets::parse_create_wallet(body) {
        Ok(request) => {
            check_metadata(&request.metadata);
            if let Some(customer_ref) = &request.customer_ref {
                assert!((1..=wallets::CUSTOMER_REF_CHARS_MAX).contains(&chars(customer_ref)));
            }
        }
        Err(e) => check_refusal(&e),
    }
}

fn wallet_move(body: &[u8]) {
    let (amount, currency) = match wallets::parse_wallet_move(body) {
        Ok(parsed) => parsed,
        Err(e) => return check_refusal(&e),
    };
    for code in ["EUR", "JPY", "KWD"] {
        let wallet = WalletRecord {
            id: "wal_1".into(),
            merchant_id: "mch_fuzz".into(),
            currency: code.into(),
            balance_minor: 0,
            customer_ref: None,
            metadata: BTreeMap::new(),
            created_ms: 0,
            updated_ms: 0,
        };
        for kind in [WalletMovementKind::TopUp, WalletMovementKind::Withdrawal] {
            match wallets::check_wallet_move(&amount, &currency, &wallet, kind) {
                Ok(money) => {
                    check_amount(&money);
                    assert_eq!(money.currency().code(), code);
                    if kind == WalletMovementKind::TopUp {
                        let major = 10_i64.pow(money.currency().exponent());
                        let limit = wallets::WALLET_TOP_UP_MAJOR_MAX * major;
                        assert!(money.minor_units() <= limit);
                    }
                }
                Err(e) => check_refusal(&e),
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector {
        b'p' => create_payment(body),
        b'c' => capture(body),
        b'w' => wait_ms(body),
        b'r' => refund(body),
        b'W' => wallet(body),
        b'm' => wallet_move(body),
        _ => {}
    }
});
