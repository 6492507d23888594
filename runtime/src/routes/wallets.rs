//! `/v1/wallets`: the company's stored-value wallets — create, retrieve, top up, withdraw, and
//! list a wallet's transactions.
//!
//! Balances live in the store, in minor units, and change only through `Store::move_wallet`,
//! which checks and journals each movement in one transaction: a withdrawal larger than the
//! balance is refused there (`insufficient_funds`), whatever the concurrency. With an
//! `Idempotency-Key`, the wallet id and the movement key are derived from (merchant, key), so a
//! retry after a lost response finds what the first attempt did instead of doing it again.

use std::collections::BTreeMap;

use http::StatusCode;
use kassa_actors::money::{Currency, Money};
use kassa_store::{
    StoreError, WalletMove, WalletMoveOutcome, WalletMovement, WalletMovementKind, WalletRecord,
};
use serde::Serialize;

use crate::app::App;
use crate::crypto::{derived_id, random_id};
use crate::http::error::ApiError;
use crate::http::fields::Fields;
use crate::merchants::Merchant;
use crate::routes::payments::list_query;
use crate::routes::{Answer, list_body};

/// Longest `customer_ref`, in characters.
pub const CUSTOMER_REF_CHARS_MAX: usize = 128;
/// Longest wallet id worth looking up (ours are `wal_` + 24 hex characters).
pub const WALLET_ID_CHARS_MAX: usize = 64;
/// Largest single top-up, in major units of the wallet's currency (1,000,000.00 EUR,
/// 1,000,000 JPY): one request cannot mint unbounded value.
pub const WALLET_TOP_UP_MAJOR_MAX: i64 = 1_000_000;

#[derive(Serialize)]
struct WalletView<'a> {
    id: &'a str,
    object: &'static str,
    currency: &'a str,
    balance: String,
    customer_ref: Option<&'a str>,
    metadata: &'a BTreeMap<String, String>,
    created: i64,
    updated: i64,
}

#[derive(Serialize)]
struct TransactionView<'a> {
    id: &'a str,
    object: &'static str,
    wallet_id: &'a str,
    #[serde(rename = "type")]
    kind: WalletMovementKind,
    amount: String,
    currency: &'static str,
    balance_after: String,
    reference: Option<&'a str>,
    created: i64,
}

fn unix_s(ms: i64) -> i64 {
    ms.div_euclid(1_000)
}

fn to_json(value: &impl Serialize) -> Result<String, ApiError> {
    serde_json::to_string(value).map_err(|_| ApiError::internal())
}

/// An amount the store holds, at the currency's scale; a negative one is corrupt data.
fn major(minor: i64, currency: Currency) -> Result<String, ApiError> {
    Money::from_minor(minor, currency)
        .map(|money| money.to_string())
        .map_err(|_| {
            tracing::error!(minor, %currency, "stored wallet amount is negative");
            ApiError::internal()
        })
}

/// The wallet's currency; a code Kassa does not know is corrupt data.
fn wallet_currency(wallet: &WalletRecord) -> Result<Currency, ApiError> {
    Currency::from_code(&wallet.currency).map_err(|_| {
        tracing::error!(wallet_id = %wallet.id, "stored wallet has an unknown currency");
        ApiError::internal()
    })
}

fn wallet_json(wallet: &WalletRecord) -> Result<String, ApiError> {
    let currency = wallet_currency(wallet)?;
    to_json(&WalletView {
        id: &wallet.id,
        object: "wallet",
        currency: currency.code(),
        balance: major(wallet.balance_minor, currency)?,
        customer_ref: wallet.customer_ref.as_deref(),
        metadata: &wallet.metadata,
        created: unix_s(wallet.created_ms),
        updated: unix_s(wallet.updated_ms),
    })
}

/// A movement as the API shows it; its id is the movement's key (`wtx_…`).
fn transaction_json(movement: &WalletMovement, currency: Currency) -> Result<String, ApiError> {
    to_json(&TransactionView {
        id: &movement.key,
        object: "wallet_transaction",
        wallet_id: &movement.wallet_id,
        kind: movement.kind,
        amount: major(movement.amount_minor, currency)?,
        currency: currency.code(),
        balance_after: major(movement.balance_after_minor, currency)?,
        reference: movement.reference.as_deref(),
        created: unix_s(movement.at_ms),
    })
}

fn key_reused() -> ApiError {
    ApiError::idempotency(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
        "this Idempotency-Key was used with a different request",
    )
}

fn required_body(body: &[u8]) -> Result<Fields, ApiError> {
    Fields::parse(body, false)?
        .ok_or_else(|| ApiError::bad_request("invalid_json", "the request body is empty"))
}

fn parse_currency(code: &str) -> Result<Currency, ApiError> {
    Currency::from_code(code).map_err(|e| ApiError::from(e).with_param("currency"))
}

/// A `POST /v1/wallets` body, parsed and checked.
pub struct WalletRequest {
    pub currency: Currency,
    pub customer_ref: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

/// Parses a `POST /v1/wallets` body: every 400/422 it can answer.
pub fn parse_create_wallet(body: &[u8]) -> Result<WalletRequest, ApiError> {
    let mut f = required_body(body)?;
    let currency = f.required_string("currency")?;
    let customer_ref = f.bounded_string("customer_ref", CUSTOMER_REF_CHARS_MAX, false)?;
    let metadata = f.metadata()?;
    f.finish()?;
    let currency = parse_currency(&currency)?;
    Ok(WalletRequest {
        currency,
        customer_ref,
        metadata,
    })
}

/// `POST /v1/wallets`: a new, empty wallet.
pub async fn create(app: &App, merchant: &Merchant, body: &[u8], key: Option<&str>) -> Answer {
    let WalletRequest {
        currency,
        customer_ref,
        metadata,
    } = parse_create_wallet(body)?;
    let id = match key {
        Some(key) => derived_id("wal_", &["wallet", &merchant.id, key]),
        None => random_id("wal_").map_err(|_| ApiError::internal())?,
    };
    let now_ms = app.now_ms();
    let wallet = WalletRecord {
        id,
        merchant_id: merchant.id.clone(),
        currency: currency.code().to_owned(),
        balance_minor: 0,
        customer_ref,
        metadata,
        created_ms: now_ms,
        updated_ms: now_ms,
    };
    match app.store.create_wallet(wallet.clone()).await {
        Ok(()) => Ok((StatusCode::CREATED, wallet_json(&wallet)?.into())),
        // Only a derived id can already exist: the same key's request got this far before
        // (its answer was lost). The same request gets that wallet; another one is refused.
        Err(StoreError::Conflict(_)) if key.is_some() => {
            match app.store.get_wallet(&merchant.id, &wallet.id).await? {
                Some(existing)
                    if existing.currency == wallet.currency
                        && existing.customer_ref == wallet.customer_ref
                        && existing.metadata == wallet.metadata =>
                {
                    Ok((StatusCode::CREATED, wallet_json(&existing)?.into()))
                }
                Some(_) | None => Err(key_reused()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// The merchant's wallet `id`, or 404 (also for another merchant's).
async fn owned_wallet(app: &App, merchant: &Merchant, id: &str) -> Result<WalletRecord, ApiError> {
    let missing = || ApiError::not_found("wallet", id);
    if !id.starts_with("wal_") || id.chars().count() > WALLET_ID_CHARS_MAX {
        return Err(missing());
    }
    app.store
        .get_wallet(&merchant.id, id)
        .await?
        .ok_or_else(missing)
}

/// `GET /v1/wallets/{id}`.
pub async fn retrieve(app: &App, merchant: &Merchant, id: &str) -> Answer {
    let wallet = owned_wallet(app, merchant, id).await?;
    Ok((StatusCode::OK, wallet_json(&wallet)?.into()))
}

/// `POST /v1/wallets/{id}/top_ups`.
pub async fn top_up(
    app: &App,
    merchant: &Merchant,
    id: &str,
    body: &[u8],
    key: Option<&str>,
) -> Answer {
    move_money(app, merchant, id, body, key, WalletMovementKind::TopUp).await
}

/// `POST /v1/wallets/{id}/withdrawals`.
pub async fn withdraw(
    app: &App,
    merchant: &Merchant,
    id: &str,
    body: &[u8],
    key: Option<&str>,
) -> Answer {
    move_money(app, merchant, id, body, key, WalletMovementKind::Withdrawal).await
}

/// The largest single top-up in `currency`, in minor units.
fn top_up_minor_max(currency: Currency) -> i64 {
    10_i64
        .checked_pow(currency.exponent())
        .and_then(|scale| scale.checked_mul(WALLET_TOP_UP_MAJOR_MAX))
        .unwrap_or(i64::MAX)
}

/// A top-up or withdrawal body: the `amount` and `currency` as sent (checked against the
/// wallet by [`check_wallet_move`]).
pub fn parse_wallet_move(body: &[u8]) -> Result<(String, String), ApiError> {
    let mut f = required_body(body)?;
    let amount = f.amount("amount", true)?.unwrap_or_default();
    let currency = f.required_string("currency")?;
    f.finish()?;
    Ok((amount, currency))
}

/// The amount of a move on `wallet`: its currency must be the wallet's, and a top-up is
/// bounded ([`WALLET_TOP_UP_MAJOR_MAX`]).
pub fn check_wallet_move(
    amount: &str,
    currency: &str,
    wallet: &WalletRecord,
    kind: WalletMovementKind,
) -> Result<Money, ApiError> {
    let currency = parse_currency(currency)?;
    if currency.code() != wallet.currency {
        return Err(ApiError::unprocessable(
            "currency_mismatch",
            format!(
                "the wallet holds {}, not {currency}",
                wallet_currency(wallet)?
            ),
        )
        .with_param("currency"));
    }
    let amount = Money::parse_positive(amount, currency)?;
    let limit_minor = top_up_minor_max(currency);
    if kind == WalletMovementKind::TopUp && amount.minor_units() > limit_minor {
        return Err(ApiError::unprocessable(
            "amount_over_limit",
            format!(
                "a single top-up in {currency} is limited to {}",
                major(limit_minor, currency)?
            ),
        )
        .with_param("amount"));
    }
    Ok(amount)
}

async fn move_money(
    app: &App,
    merchant: &Merchant,
    id: &str,
    body: &[u8],
    key: Option<&str>,
    kind: WalletMovementKind,
) -> Answer {
    let (amount, currency) = parse_wallet_move(body)?;
    let wallet = owned_wallet(app, merchant, id).await?;
    let amount = check_wallet_move(&amount, &currency, &wallet, kind)?;
    let currency = amount.currency();
    let movement_key = match key {
        // Not tied to the wallet or the kind: the same key on another move is caught as reuse.
        Some(key) => derived_id("wtx_", &["wallet_move", &merchant.id, key]),
        None => random_id("wtx_").map_err(|_| ApiError::internal())?,
    };
    let wallet_move = WalletMove {
        key: movement_key,
        wallet_id: wallet.id.clone(),
        merchant_id: merchant.id.clone(),
        kind,
        amount_minor: amount.minor_units(),
        currency: wallet.currency.clone(),
        reference: None,
        at_ms: app.now_ms(),
    };
    let outcome = app
        .store
        .move_wallet(wallet_move)
        .await
        .map_err(|e| match e {
            StoreError::LimitExceeded(_) => ApiError::unprocessable(
                "amount_over_limit",
                "the wallet cannot hold that much; nothing was moved",
            )
            .with_param("amount"),
            other => other.into(),
        })?;
    match outcome {
        WalletMoveOutcome::Applied(movement) | WalletMoveOutcome::Replayed(movement) => Ok((
            StatusCode::CREATED,
            transaction_json(&movement, currency)?.into(),
        )),
        WalletMoveOutcome::InsufficientFunds { balance_minor } => Err(ApiError::unprocessable(
            "insufficient_funds",
            format!(
                "the wallet's balance is {} {currency}, less than the amount; nothing was moved",
                major(balance_minor, currency)?
            ),
        )
        .with_param("amount")),
        WalletMoveOutcome::WalletNotFound => Err(ApiError::not_found("wallet", id)),
        WalletMoveOutcome::CurrencyMismatch { wallet_currency } => Err(ApiError::unprocessable(
            "currency_mismatch",
            format!(
                "the wallet holds {}, not {currency}",
                wallet_currency.chars().take(8).collect::<String>()
            ),
        )
        .with_param("currency")),
        WalletMoveOutcome::KeyReused | WalletMoveOutcome::KeyClosed => Err(key_reused()),
    }
}

/// `GET /v1/wallets/{id}/transactions`: newest first, cursor-paginated like payments.
pub async fn transactions(app: &App, merchant: &Merchant, id: &str, query: Option<&str>) -> Answer {
    let wallet = owned_wallet(app, merchant, id).await?;
    let currency = wallet_currency(&wallet)?;
    let page = app
        .store
        .list_wallet_movements(&wallet.id, list_query(query)?)
        .await?;
    let bodies = page
        .rows
        .iter()
        .map(|movement| transaction_json(movement, currency))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((StatusCode::OK, list_body(bodies.into_iter(), page.has_more)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_up_bound_follows_the_exponent() {
        let code = |c: &str| Currency::from_code(c).unwrap();
        assert_eq!(top_up_minor_max(code("JPY")), 1_000_000);
        assert_eq!(top_up_minor_max(code("EUR")), 100_000_000);
        assert_eq!(top_up_minor_max(code("KWD")), 1_000_000_000);
    }

    #[test]
    fn transaction_shape() {
        let movement = WalletMovement {
            key: "wtx_1".into(),
            wallet_id: "wal_1".into(),
            kind: WalletMovementKind::TopUp,
            amount_minor: 1_000,
            balance_after_minor: 1_250,
            reference: None,
            at_ms: 1_795_000_000_999,
        };
        let json = transaction_json(&movement, Currency::from_code("EUR").unwrap()).unwrap();
        assert_eq!(
            json,
            r#"{"id":"wtx_1","object":"wallet_transaction","wallet_id":"wal_1","type":"top_up","amount":"10.00","currency":"EUR","balance_after":"12.50","reference":null,"created":1795000000}"#
        );
    }
}
