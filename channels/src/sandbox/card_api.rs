//! The card protocol's endpoints: check the request, ask the test-card table, write the ledger.
//!
//! Pre-authorisation: a charge with `capture: false` is authorised only; then `capture`
//! (complete, at most the authorised amount), `void` (cancel), `uncapture` (revert a capture
//! with nothing refunded: the charge is authorised again), `reverse` (冲正: void an open
//! authorisation or a pending 3-D Secure charge, or give a whole unrefunded capture back) and
//! refunds of what is captured.
//! Each answers the charge and, when it changed something, sends `charge.updated`.
//!
//! Test cards (anything else that passes Luhn succeeds):
//!
//! | PAN                | outcome                          |
//! |--------------------|----------------------------------|
//! | `4242424242424242` | succeeds (or `authorized`)       |
//! | `4000000000000002` | declined `card_declined`         |
//! | `4000000000009995` | declined `insufficient_funds`    |
//!
//! New behaviours (3-D Secure `requires_action`, a card that never answers) belong in
//! [`TEST_CARDS`] and [`decide`].

use std::sync::Arc;

use bytes::Bytes;

use super::ledger::{ChargeRecord, Decision, Ledger, LedgerError, NewCharge, Written};
use super::requests::{self, check_currency, check_optional_currency, json, parse_json as parse};
use super::routes::ApiError;
use super::stats::Counter;
use super::wire::{
    CaptureRequest, ChargeRequest, ChargeView, KeyRequest, LedgerView, RefundRequest, RefundView,
    ResolveView,
};
use super::{State, callbacks};
use crate::card::luhn_valid;

/// Test card numbers with a fixed outcome.
const TEST_CARDS: &[(&str, Decision)] = &[
    ("4242424242424242", Decision::Approve),
    ("4000000000000002", Decision::Decline("card_declined")),
    ("4000000000009995", Decision::Decline("insufficient_funds")),
    ("4000000000003220", Decision::Challenge),
];

/// What the issuer says about a (Luhn-valid) card number.
fn decide(pan: &str) -> Decision {
    TEST_CARDS
        .iter()
        .find(|(number, _)| *number == pan)
        .map_or(Decision::Approve, |(_, decision)| *decision)
}

pub(crate) async fn create_charge(state: &Arc<State>, body: &Bytes) -> Result<Bytes, ApiError> {
    let request: ChargeRequest = parse(body)?;
    check_key(&request.idempotency_key)?;
    check_amount(request.amount_minor)?;
    check_currency(&request.currency)?;
    let pan = request.pan.expose();
    let pan_shape_ok = (12..=19).contains(&pan.len()) && pan.bytes().all(|b| b.is_ascii_digit());
    if !pan_shape_ok || !luhn_valid(pan) {
        return Err(ApiError::bad_request(
            "invalid_card_number",
            "the card number is not a valid card number",
        ));
    }
    if !(1..=12).contains(&request.exp_month) || !(1000..=9999).contains(&request.exp_year) {
        return Err(ApiError::bad_request(
            "invalid_expiry",
            "the expiry date is invalid",
        ));
    }
    let cvc = request.cvc.expose();
    if !(3..=4).contains(&cvc.len()) || !cvc.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_request(
            "invalid_cvc",
            "the security code must be 3 or 4 digits",
        ));
    }
    let decision = decide(pan);
    let written = on_ledger(state, move |ledger| {
        ledger.create_charge(&NewCharge {
            idempotency_key: &request.idempotency_key,
            amount_minor: request.amount_minor,
            currency: &request.currency,
            pan: request.pan.expose(),
            capture: request.capture,
            decision,
        })
    })
    .await?;
    if written.1 == Written::Fresh {
        state.stats.bump(Counter::Charges);
    }
    answer_charge(state, written)
}

pub(crate) async fn capture(
    state: &Arc<State>,
    charge_id: &str,
    body: &Bytes,
) -> Result<Bytes, ApiError> {
    let request: CaptureRequest = parse(body)?;
    check_key(&request.idempotency_key)?;
    check_amount(request.amount_minor)?;
    let charge_id = charge_id.to_owned();
    let written = on_ledger(state, move |ledger| {
        ledger.capture(&request.idempotency_key, &charge_id, request.amount_minor)
    })
    .await?;
    answer_charge(state, written)
}

pub(crate) async fn void(
    state: &Arc<State>,
    charge_id: &str,
    body: &Bytes,
) -> Result<Bytes, ApiError> {
    keyed_operation(state, charge_id, body, Ledger::void).await
}

/// `POST /card/v1/charges/{id}/uncapture`: reverts a capture (409 `charge_not_revertible`
/// unless captured, nothing refunded, not voided, not reversed).
pub(crate) async fn uncapture(
    state: &Arc<State>,
    charge_id: &str,
    body: &Bytes,
) -> Result<Bytes, ApiError> {
    keyed_operation(state, charge_id, body, Ledger::uncapture).await
}

/// `POST /card/v1/charges/{id}/reverse`: voids an open authorisation or a charge waiting for
/// 3-D Secure, or returns a whole unrefunded capture (409 `charge_not_reversible` otherwise).
pub(crate) async fn reverse(
    state: &Arc<State>,
    charge_id: &str,
    body: &Bytes,
) -> Result<Bytes, ApiError> {
    keyed_operation(state, charge_id, body, Ledger::reverse).await
}

/// A ledger operation on a charge (`idempotency_key`, `charge_id`).
type KeyedOperation = fn(&Ledger, &str, &str) -> Result<(ChargeRecord, Written), LedgerError>;

/// A charge operation whose request is only its key (`void`, `uncapture`, `reverse`).
async fn keyed_operation(
    state: &Arc<State>,
    charge_id: &str,
    body: &Bytes,
    operation: KeyedOperation,
) -> Result<Bytes, ApiError> {
    let request: KeyRequest = parse(body)?;
    check_key(&request.idempotency_key)?;
    let charge_id = charge_id.to_owned();
    let written = on_ledger(state, move |ledger| {
        operation(ledger, &request.idempotency_key, &charge_id)
    })
    .await?;
    answer_charge(state, written)
}

pub(crate) async fn refund(state: &Arc<State>, body: &Bytes) -> Result<Bytes, ApiError> {
    let request: RefundRequest = parse(body)?;
    check_key(&request.idempotency_key)?;
    check_amount(request.amount_minor)?;
    check_optional_currency(request.currency.as_deref())?;
    let refund = on_ledger(state, move |ledger| {
        ledger.refund(
            &request.idempotency_key,
            &request.charge_id,
            request.amount_minor,
            request.currency.as_deref(),
        )
    })
    .await?;
    json(&RefundView::from(refund))
}

pub(crate) async fn resolve(state: &Arc<State>, body: &Bytes) -> Result<Bytes, ApiError> {
    let request: KeyRequest = parse(body)?;
    check_key(&request.idempotency_key)?;
    let found = on_ledger(state, move |ledger| {
        ledger.resolve(&request.idempotency_key)
    })
    .await?;
    json(&ResolveView {
        found: found.is_some(),
        charge: found.map(ChargeView::from),
    })
}

pub(crate) async fn retrieve(state: &Arc<State>, charge_id: &str) -> Result<Bytes, ApiError> {
    let charge_id = charge_id.to_owned();
    let charge = on_ledger(state, move |ledger| ledger.charge(&charge_id)).await?;
    json(&ChargeView::from(charge))
}

pub(crate) async fn ledger(state: &Arc<State>) -> Result<Bytes, ApiError> {
    let (charges, refunds) = on_ledger(state, Ledger::snapshot).await?;
    json(&LedgerView {
        charges: charges.into_iter().map(ChargeView::from).collect(),
        refunds: refunds.into_iter().map(RefundView::from).collect(),
    })
}

/// The answer for a charge a call settled; a fresh change (not a replay) also schedules its
/// `charge.updated` callback. Refunds send none yet.
fn answer_charge(
    state: &Arc<State>,
    (charge, written): (ChargeRecord, Written),
) -> Result<Bytes, ApiError> {
    let view = ChargeView::from(charge);
    if written == Written::Fresh {
        match serde_json::to_value(&view) {
            Ok(charge) => callbacks::schedule(state, charge),
            Err(error) => tracing::error!(%error, "a sandbox callback could not be serialised"),
        }
    }
    json(&view)
}

/// Runs card-ledger work on the blocking pool.
async fn on_ledger<T, F>(state: &Arc<State>, work: F) -> Result<T, ApiError>
where
    F: FnOnce(&Ledger) -> Result<T, LedgerError> + Send + 'static,
    T: Send + 'static,
{
    requests::on_blocking_pool(state, move |state: &State| work(&state.ledger)).await
}

fn check_key(key: &str) -> Result<(), ApiError> {
    requests::check_key(
        key,
        "idempotency_key must be 1 to 255 visible ASCII characters",
    )
}

fn check_amount(amount_minor: i64) -> Result<(), ApiError> {
    requests::check_amount(amount_minor, "amount_minor must be a positive integer")
}

/// `GET /challenge/{charge_id}?result=pass|fail`: the cardholder's side of 3-D Secure (the
/// page an issuer would show). Not signed: the cardholder's browser calls it, not Kassa.
pub(crate) async fn challenge(
    state: &Arc<State>,
    charge_id: &str,
    passed: bool,
) -> Result<Bytes, ApiError> {
    let charge_id = charge_id.to_owned();
    let written = on_ledger(state, move |ledger| {
        ledger.complete_challenge(&charge_id, passed)
    })
    .await?;
    answer_charge(state, written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_card_table_decides() {
        assert_eq!(decide("4242424242424242"), Decision::Approve);
        assert_eq!(
            decide("4000000000000002"),
            Decision::Decline("card_declined")
        );
        assert_eq!(
            decide("4000000000009995"),
            Decision::Decline("insufficient_funds")
        );
        assert_eq!(decide("5555555555554444"), Decision::Approve);
    }

    #[test]
    fn parse_errors_never_echo_the_body() {
        let body = Bytes::from_static(br#"{"pan": 4242424242424242}"#);
        let error = parse::<ChargeRequest>(&body).expect_err("a number is not a string");
        assert!(
            !error.message.contains("4242424242424242"),
            "{}",
            error.message
        );
    }
}
