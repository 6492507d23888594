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
use serde::de::DeserializeOwned;

use super::ledger::{ChargeRecord, Decision, Ledger, LedgerError, NewCharge, Written};
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

const IDEMPOTENCY_KEY_LEN_MAX: usize = 255;

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
    let request: KeyRequest = parse(body)?;
    check_key(&request.idempotency_key)?;
    let charge_id = charge_id.to_owned();
    let written = on_ledger(state, move |ledger| {
        ledger.void(&request.idempotency_key, &charge_id)
    })
    .await?;
    answer_charge(state, written)
}

/// `POST /card/v1/charges/{id}/uncapture`: reverts a capture (409 `charge_not_revertible`
/// unless captured, nothing refunded, not voided, not reversed).
pub(crate) async fn uncapture(
    state: &Arc<State>,
    charge_id: &str,
    body: &Bytes,
) -> Result<Bytes, ApiError> {
    let request: KeyRequest = parse(body)?;
    check_key(&request.idempotency_key)?;
    let charge_id = charge_id.to_owned();
    let written = on_ledger(state, move |ledger| {
        ledger.uncapture(&request.idempotency_key, &charge_id)
    })
    .await?;
    answer_charge(state, written)
}

/// `POST /card/v1/charges/{id}/reverse`: voids an open authorisation or a charge waiting for
/// 3-D Secure, or returns a whole unrefunded capture (409 `charge_not_reversible` otherwise).
pub(crate) async fn reverse(
    state: &Arc<State>,
    charge_id: &str,
    body: &Bytes,
) -> Result<Bytes, ApiError> {
    let request: KeyRequest = parse(body)?;
    check_key(&request.idempotency_key)?;
    let charge_id = charge_id.to_owned();
    let written = on_ledger(state, move |ledger| {
        ledger.reverse(&request.idempotency_key, &charge_id)
    })
    .await?;
    answer_charge(state, written)
}

pub(crate) async fn refund(state: &Arc<State>, body: &Bytes) -> Result<Bytes, ApiError> {
    let request: RefundRequest = parse(body)?;
    check_key(&request.idempotency_key)?;
    check_amount(request.amount_minor)?;
    if let Some(currency) = &request.currency {
        check_currency(currency)?;
    }
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

/// Runs ledger work on the blocking pool (SQLite calls block), available on every runtime.
async fn on_ledger<T, F>(state: &Arc<State>, work: F) -> Result<T, ApiError>
where
    F: FnOnce(&Ledger) -> Result<T, LedgerError> + Send + 'static,
    T: Send + 'static,
{
    let state = state.clone();
    tokio::task::spawn_blocking(move || work(&state.ledger))
        .await
        .map_err(|error| {
            tracing::error!(%error, "sandbox ledger task failed");
            ApiError::internal()
        })?
        .map_err(ApiError::from)
}

/// Parses a request body. The error names the position, never the content: a body may hold a
/// card number.
fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|error| {
        let (code, what) = match error.classify() {
            serde_json::error::Category::Data => {
                ("invalid_request", "does not match the endpoint's schema")
            }
            serde_json::error::Category::Io
            | serde_json::error::Category::Syntax
            | serde_json::error::Category::Eof => ("invalid_json", "is not valid JSON"),
        };
        ApiError::bad_request(
            code,
            format!(
                "the body {what} (line {}, column {})",
                error.line(),
                error.column()
            ),
        )
    })
}

fn json<T: serde::Serialize>(value: &T) -> Result<Bytes, ApiError> {
    serde_json::to_vec(value).map(Bytes::from).map_err(|error| {
        tracing::error!(%error, "sandbox answer could not be serialised");
        ApiError::internal()
    })
}

fn check_key(key: &str) -> Result<(), ApiError> {
    let visible = key.bytes().all(|b| b.is_ascii_graphic());
    if visible && !key.is_empty() && key.len() <= IDEMPOTENCY_KEY_LEN_MAX {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "idempotency_key must be 1 to 255 visible ASCII characters",
        ))
    }
}

fn check_amount(amount_minor: i64) -> Result<(), ApiError> {
    if amount_minor > 0 {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_amount",
            "amount_minor must be a positive integer",
        ))
    }
}

fn check_currency(currency: &str) -> Result<(), ApiError> {
    if currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_currency",
            "currency must be an upper-case ISO 4217 code",
        ))
    }
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
