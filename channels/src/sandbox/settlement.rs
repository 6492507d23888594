//! What the asynchronous channels share on the provider's side: the ledger calls, deciding a
//! payment by itself after its settle delay, the customer pages, outcome callbacks and
//! `GET /sandbox/ledger`.
//!
//! The test-amount rule, for payments the provider decides by itself (every bank transfer; a
//! wallet order under `auto_settle`): an amount whose minor units end in `13` (`…13`, e.g.
//! `1013` = 10.13) fails with the channel's code (`qr_wallet`, `app_wallet`:
//! `payment_declined`; `bank_transfer`: `account_closed`); every other amount succeeds. The
//! outcome is fixed when the payment is created and applied at `now + settle delay` (drawn
//! from the channel's behaviour), by a settlement timer (at most
//! [`super::channels::SETTLEMENT_TIMERS_MAX`] pending) or by the first call that touches the
//! payment after that time, whichever comes first.
//!
//! A decision by the provider or the customer sends the channel's outcome callback (when its
//! behaviour names a `callback_url` and `callback_rate_percent` lets it through); a close by
//! the merchant sends none: its answer already says it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use serde::Serialize;

use super::async_ledger::{
    AsyncLedger, AsyncLedgerError, NewPayment, PaymentRecord, PaymentStatus, RefundRecord,
    RefundStatus, Touched,
};
use super::behaviour::Withheld;
use super::callbacks::{self, Envelope};
use super::channels::{self, Channel, SETTLEMENT_TIMERS_MAX};
pub(crate) use super::requests::{check_currency, check_optional_currency, json, parse_json};
use super::routes::ApiError;
use super::stats::Counter;
use super::{State, app_api, bank_api, card_api, qr_api, requests};
use crate::secret::Secret;

/// The longest description (subject, remittance information) accepted, in bytes.
pub(crate) const DESCRIPTION_LEN_MAX: usize = 256;

/// Whether the test-amount rule fails `amount_minor`: its minor units end in `13`.
pub(crate) fn fails_by_test_amount(amount_minor: i64) -> bool {
    amount_minor.rem_euclid(100) == 13
}

impl From<AsyncLedgerError> for ApiError {
    fn from(error: AsyncLedgerError) -> Self {
        let message = error.to_string();
        let (status, code) = match &error {
            AsyncLedgerError::KeyReused => (StatusCode::CONFLICT, "idempotency_key_reused"),
            AsyncLedgerError::KeyBlocked => (StatusCode::CONFLICT, "key_blocked"),
            AsyncLedgerError::PaymentNotFound => (StatusCode::NOT_FOUND, "payment_not_found"),
            AsyncLedgerError::NotRefundable => (StatusCode::CONFLICT, "payment_not_refundable"),
            AsyncLedgerError::CurrencyMismatch => {
                (StatusCode::UNPROCESSABLE_ENTITY, "currency_mismatch")
            }
            AsyncLedgerError::Storage(_) => {
                tracing::error!(%error, "sandbox async ledger failed");
                return ApiError::internal();
            }
        };
        ApiError::new(status, code, message)
    }
}

/// The unix time in milliseconds, by the OS clock.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// A payment a protocol's create request asks for, its fields checked.
pub(crate) struct Creation {
    pub channel: Channel,
    pub key: String,
    pub amount_minor: i64,
    pub currency: String,
    pub description: String,
    /// Only hashed into the request's fingerprint, never stored.
    pub payer_account: Option<Secret<String>>,
    pub payer_name: Option<String>,
    /// What the test-amount rule fails the payment with, when the provider decides it.
    pub test_failure: &'static str,
}

/// Records a payment (or finds the one under its key) with its settlement plan, and follows
/// up ([`after`]).
pub(crate) async fn create(
    state: &Arc<State>,
    creation: Creation,
) -> Result<PaymentRecord, ApiError> {
    let (settle_at_ms, settle_failure) = settle_plan(
        state,
        creation.channel,
        creation.amount_minor,
        creation.test_failure,
    );
    let touched = on_ledger(state, move |ledger| {
        ledger.create(
            &NewPayment {
                channel: creation.channel,
                idempotency_key: &creation.key,
                amount_minor: creation.amount_minor,
                currency: &creation.currency,
                description: &creation.description,
                payer_account: creation
                    .payer_account
                    .as_ref()
                    .map(|account| account.expose().as_str()),
                payer_name: creation.payer_name.as_deref(),
                settle_at_ms,
                settle_failure,
            },
            now_ms(),
        )
    })
    .await?;
    after(state, &touched);
    Ok(touched.record)
}

/// The payment of `channel` under `key`, decided first if its time has come; `None` when there
/// is none, and the key is closed for good.
pub(crate) async fn lookup(
    state: &Arc<State>,
    channel: Channel,
    key: String,
) -> Result<Option<PaymentRecord>, ApiError> {
    let found = on_ledger(state, move |ledger| ledger.lookup(channel, &key, now_ms())).await?;
    if let Some(touched) = &found {
        after(state, touched);
    }
    Ok(found.map(|touched| touched.record))
}

/// Closes the pending payment of `channel` under `key` (it fails `closed_code`); one already
/// decided is answered as it is.
pub(crate) async fn close(
    state: &Arc<State>,
    channel: Channel,
    key: String,
    closed_code: &'static str,
) -> Result<PaymentRecord, ApiError> {
    let touched = on_ledger(state, move |ledger| {
        ledger.close(channel, &key, closed_code, now_ms())
    })
    .await?;
    after(state, &touched);
    Ok(touched.record)
}

/// A refund a protocol's request asks for, its fields checked.
pub(crate) struct RefundAsk {
    pub channel: Channel,
    pub key: String,
    pub provider_ref: String,
    pub amount_minor: i64,
    pub currency: Option<String>,
}

/// Refunds (part of) a payment, or answers the refund already under the key; a payment the
/// call decided on its way sends its callback.
pub(crate) async fn refund(state: &Arc<State>, ask: RefundAsk) -> Result<RefundRecord, ApiError> {
    let (refund, decided) = on_ledger(state, move |ledger| {
        ledger.refund(
            ask.channel,
            &ask.key,
            &ask.provider_ref,
            ask.amount_minor,
            ask.currency.as_deref(),
            now_ms(),
        )
    })
    .await?;
    if let Some(record) = decided {
        outcome_callback(state, &record);
    }
    Ok(refund)
}

/// When (unix ms) and how a new payment of `channel` is decided by the provider itself:
/// `(None, None)` when it waits for its customer. `failure_code` is the channel's test-amount
/// failure.
fn settle_plan(
    state: &State,
    channel: Channel,
    amount_minor: i64,
    failure_code: &'static str,
) -> (Option<i64>, Option<&'static str>) {
    let mut chaos = channels::chaos(state, channel).lock();
    let by_itself = channel == Channel::BankTransfer || chaos.behaviour().auto_settle;
    if !by_itself {
        return (None, None);
    }
    let delay_ms = i64::try_from(chaos.draw_settle_delay().as_millis()).unwrap_or(i64::MAX);
    let failure = fails_by_test_amount(amount_minor).then_some(failure_code);
    (Some(now_ms().saturating_add(delay_ms)), failure)
}

/// Runs async-ledger work on the blocking pool (SQLite calls block).
async fn on_ledger<T, F>(state: &Arc<State>, work: F) -> Result<T, ApiError>
where
    F: FnOnce(&AsyncLedger) -> Result<T, AsyncLedgerError> + Send + 'static,
    T: Send + 'static,
{
    requests::on_blocking_pool(state, move |state: &State| {
        work(&state.async_channels.ledger)
    })
    .await
}

/// What follows a ledger call that touched a payment: a new one is counted and, when the
/// provider decides it by itself, gets its settlement timer; a decided one sends its callback.
fn after(state: &Arc<State>, touched: &Touched) {
    let record = &touched.record;
    if touched.created {
        channels::stats(state, record.channel).bump(Counter::Charges);
        if let Some(settle_at_ms) = record.settle_at_ms {
            arm(
                state,
                record.channel,
                record.provider_ref.clone(),
                settle_at_ms,
            );
        }
    }
    if touched.decided {
        outcome_callback(state, record);
    }
}

/// Starts the settlement timer of a payment decided at `settle_at_ms`, if a slot is free; the
/// payment is decided by its next read or write otherwise.
fn arm(state: &Arc<State>, channel: Channel, provider_ref: String, settle_at_ms: i64) {
    let slots = state.async_channels.settlement_slots.clone();
    let Ok(slot) = slots.try_acquire_owned() else {
        tracing::warn!("sandbox settlement timers full; a payment is decided when next touched");
        return;
    };
    let state = state.clone();
    let mut stopping = state.stopping.subscribe();
    tokio::spawn(async move {
        let wait_ms = u64::try_from(settle_at_ms.saturating_sub(now_ms())).unwrap_or(0);
        let due = tokio::select! {
            // Stop (or a dropped sender, which also means stop) abandons the timer; the
            // payment is decided when next touched.
            _ = stopping.wait_for(|stopped| *stopped) => false,
            () = tokio::time::sleep(Duration::from_millis(wait_ms)) => true,
        };
        if due {
            // The timer waited for the settle time, so it is due even if the wall clock lags
            // the timer's clock by a millisecond.
            let settled = on_ledger(&state, move |ledger| {
                ledger.by_provider_ref(channel, &provider_ref, now_ms().max(settle_at_ms))
            })
            .await;
            match settled {
                Ok(touched) => after(&state, &touched),
                Err(error) => tracing::warn!(
                    code = error.code,
                    "sandbox settlement timer could not decide a payment"
                ),
            }
        }
        drop(slot);
    });
}

/// Re-arms the timers of payments a previous run left to be decided by time.
pub(crate) async fn resume(state: &Arc<State>) {
    match on_ledger(state, |ledger| ledger.to_settle(SETTLEMENT_TIMERS_MAX)).await {
        Ok(pending) => {
            for record in pending {
                if let Some(settle_at_ms) = record.settle_at_ms {
                    arm(state, record.channel, record.provider_ref, settle_at_ms);
                }
            }
        }
        Err(error) => tracing::warn!(code = error.code, "sandbox could not resume settlements"),
    }
}

/// Schedules the channel's callback for a decided payment, as its behaviour says.
fn outcome_callback(state: &Arc<State>, record: &PaymentRecord) {
    let channel = record.channel;
    let stats = channels::stats(state, channel);
    let plan = channels::chaos(state, channel)
        .lock()
        .plan_outcome_callback();
    let plan = match plan {
        Ok(Some(plan)) => plan,
        Ok(None) => return,
        Err(Withheld) => {
            stats.bump(Counter::CallbacksWithheld);
            return;
        }
    };
    let event_id = callbacks::event_id(&plan);
    let envelope: Arc<dyn Envelope> = match channel {
        Channel::QrWallet => qr_api::envelope(record.clone(), event_id),
        Channel::AppWallet => app_api::envelope(record.clone(), event_id),
        Channel::BankTransfer => bank_api::envelope(record.clone(), event_id),
        // Card charges never reach this ledger.
        Channel::Card => return,
    };
    callbacks::schedule_envelope(state, stats, plan, envelope);
}

/// `GET /qr/pay/{ref}` and `GET /app/pay/{ref}` (`?result=fail` declines): the customer's side
/// of a wallet order, the page a wallet app would show. Unsigned: the customer calls it, not
/// Kassa. Answers the order as the channel's query would show it.
pub(crate) async fn customer_page(
    state: &Arc<State>,
    channel: Channel,
    provider_ref: &str,
    paid: bool,
) -> Result<Bytes, ApiError> {
    let provider_ref = provider_ref.to_owned();
    let touched = on_ledger(state, move |ledger| {
        ledger.customer(channel, &provider_ref, paid, DECLINED_BY_CUSTOMER, now_ms())
    })
    .await?;
    after(state, &touched);
    match channel {
        Channel::QrWallet => json(&qr_api::TradeView::new(state, &touched.record)),
        Channel::AppWallet => json(&app_api::TransactionView::new(state, &touched.record)),
        Channel::BankTransfer | Channel::Card => Err(super::routes::not_found()),
    }
}

/// The link to the customer page (under `prefix`) of a pending wallet order; `None` once it is
/// decided.
pub(crate) fn pay_page(state: &State, prefix: &str, record: &PaymentRecord) -> Option<String> {
    (record.status == PaymentStatus::Pending).then(|| {
        format!(
            "{}{prefix}{}",
            state.async_channels.base_url, record.provider_ref
        )
    })
}

/// What a customer who declines on a wallet page fails the order with.
const DECLINED_BY_CUSTOMER: &str = "payment_declined";

/// `GET /sandbox/ledger`: the card ledger's `charges` and `refunds`, plus `async_payments` and
/// `async_refunds`.
pub(crate) async fn ledger(state: &Arc<State>) -> Result<Bytes, ApiError> {
    let card = card_api::ledger(state).await?;
    let mut view: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&card).map_err(|_| ApiError::internal())?;
    let (payments, refunds) = on_ledger(state, AsyncLedger::snapshot).await?;
    let payments: Vec<PaymentView<'_>> = payments.iter().map(PaymentView::from).collect();
    let refunds: Vec<RefundView<'_>> = refunds.iter().map(RefundView::from).collect();
    let payments = serde_json::to_value(&payments).map_err(|_| ApiError::internal())?;
    let refunds = serde_json::to_value(&refunds).map_err(|_| ApiError::internal())?;
    view.insert("async_payments".into(), payments);
    view.insert("async_refunds".into(), refunds);
    json(&view)
}

/// One asynchronous payment in `GET /sandbox/ledger`.
#[derive(Serialize)]
struct PaymentView<'a> {
    channel: &'static str,
    provider_ref: &'a str,
    idempotency_key: &'a str,
    amount_minor: i64,
    currency: &'a str,
    status: &'static str,
    failure_code: Option<&'a str>,
    refunded_minor: i64,
    created: i64,
}

impl<'a> From<&'a PaymentRecord> for PaymentView<'a> {
    fn from(record: &'a PaymentRecord) -> Self {
        Self {
            channel: record.channel.name(),
            provider_ref: &record.provider_ref,
            idempotency_key: &record.idempotency_key,
            amount_minor: record.amount_minor,
            currency: &record.currency,
            status: record.status.as_str(),
            failure_code: record.failure_code.as_deref(),
            refunded_minor: record.refunded_minor,
            created: record.created_unix_s,
        }
    }
}

/// One asynchronous refund in `GET /sandbox/ledger`.
#[derive(Serialize)]
struct RefundView<'a> {
    channel: &'static str,
    refund_ref: &'a str,
    idempotency_key: &'a str,
    provider_ref: &'a str,
    amount_minor: i64,
    status: &'static str,
    failure_code: Option<&'a str>,
    created: i64,
}

impl<'a> From<&'a RefundRecord> for RefundView<'a> {
    fn from(record: &'a RefundRecord) -> Self {
        Self {
            channel: record.channel.name(),
            refund_ref: &record.refund_ref,
            idempotency_key: &record.idempotency_key,
            provider_ref: &record.provider_ref,
            amount_minor: record.amount_minor,
            status: match record.status {
                RefundStatus::Succeeded => "succeeded",
                RefundStatus::Failed => "failed",
            },
            failure_code: record.failure_code.as_deref(),
            created: record.created_unix_s,
        }
    }
}

pub(crate) fn check_key(key: &str) -> Result<(), ApiError> {
    requests::check_key(
        key,
        "the merchant's order or request number must be 1 to 255 visible ASCII characters",
    )
}

pub(crate) fn check_amount(amount_minor: i64) -> Result<(), ApiError> {
    requests::check_amount(
        amount_minor,
        "the amount must be a positive integer of minor units",
    )
}

pub(crate) fn check_description(description: &str) -> Result<(), ApiError> {
    if description.len() <= DESCRIPTION_LEN_MAX && !description.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_description",
            "the description must be at most 256 bytes without control characters",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_amount_rule_fails_minor_units_ending_in_13() {
        for amount in [13, 113, 1_013, 99_913] {
            assert!(fails_by_test_amount(amount), "{amount}");
        }
        for amount in [1, 12, 14, 130, 1_031, 1_300, 10_000] {
            assert!(!fails_by_test_amount(amount), "{amount}");
        }
    }
}
