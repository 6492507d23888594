//! Undoing a pre-authorisation's progress: reverting a capture (`uncapture`) and reversing a
//! charge whatever stage it reached (`reverse`, 冲正).
//!
//! Both are charge operations like capture and void: one `IMMEDIATE` transaction, replay by
//! key first (the first answer), then the state check, the change, the invariants on both
//! sides, and the operation recorded with the charge as its answer shows it.

use rusqlite::Connection;

use crate::sandbox::sqlite::Cached;

use super::{
    ChargeRecord, ChargeStatus, Ledger, LedgerError, Operation, Written, assert_charge_invariants,
    charge_by_id, is_open_authorisation, set_voided, vanished,
};

/// What a reversal does to a charge in its current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reversal {
    /// An open authorisation (or one still waiting for 3-D Secure): release it, as a void
    /// does.
    Void,
    /// A capture with nothing refunded: give all of it back and mark the charge reversed.
    ReturnCapture,
}

impl Ledger {
    /// Reverts the capture of a pre-authorisation: the charge is `authorized` again with
    /// nothing captured, and can be captured again (with a new key). Only a captured charge
    /// with nothing refunded, not voided and not reversed qualifies. A replayed key returns
    /// its first answer.
    pub(crate) fn uncapture(
        &self,
        idempotency_key: &str,
        charge_id: &str,
    ) -> Result<(ChargeRecord, Written), LedgerError> {
        self.operate(
            idempotency_key,
            charge_id,
            Operation::Uncapture,
            |tx, before| {
                if !is_revertible(before) {
                    return Err(LedgerError::NotRevertible);
                }
                tx.execute_cached(
                "UPDATE charges SET status = 'authorized', captured_minor = 0 WHERE charge_id = ?1",
                [charge_id],
            )?;
                let after = charge_by_id(tx, charge_id)?.ok_or_else(vanished)?;
                assert!(is_open_authorisation(&after), "uncapture: {charge_id}");
                Ok((after, before.captured_minor))
            },
        )
    }

    /// Cancels a charge whatever stage it reached: an open authorisation, or a charge still
    /// waiting for 3-D Secure, is voided (the challenge can then no longer complete it); a
    /// capture with nothing refunded is returned whole and the charge marked `reversed` (its
    /// captured amount stays on record). A charge with refunds, declined, or already voided or
    /// reversed is refused. A replayed key returns its first answer.
    pub(crate) fn reverse(
        &self,
        idempotency_key: &str,
        charge_id: &str,
    ) -> Result<(ChargeRecord, Written), LedgerError> {
        self.operate(
            idempotency_key,
            charge_id,
            Operation::Reverse,
            |tx, before| match reversal(before).ok_or(LedgerError::NotReversible)? {
                Reversal::Void => Ok((set_voided(tx, charge_id)?, 0)),
                Reversal::ReturnCapture => Ok((set_reversed(tx, before)?, before.captured_minor)),
            },
        )
    }
}

/// A capture can be reverted (or returned whole by a reversal) while none of it has been
/// refunded, voided or reversed.
fn is_revertible(charge: &ChargeRecord) -> bool {
    match charge.status {
        ChargeStatus::Succeeded => {
            charge.captured_minor > 0
                && charge.refunded_minor == 0
                && !charge.voided
                && !charge.reversed
        }
        ChargeStatus::Authorized | ChargeStatus::Declined | ChargeStatus::RequiresAction => false,
    }
}

/// What reversing `charge` would do, or `None` when it cannot be reversed.
fn reversal(charge: &ChargeRecord) -> Option<Reversal> {
    match charge.status {
        ChargeStatus::Authorized => is_open_authorisation(charge).then_some(Reversal::Void),
        ChargeStatus::RequiresAction => (!charge.voided).then_some(Reversal::Void),
        ChargeStatus::Succeeded => is_revertible(charge).then_some(Reversal::ReturnCapture),
        ChargeStatus::Declined => None,
    }
}

/// Marks a captured charge reversed; what it captured stays on record.
fn set_reversed(
    connection: &Connection,
    before: &ChargeRecord,
) -> Result<ChargeRecord, LedgerError> {
    let charge_id = &before.charge_id;
    connection.execute_cached(
        "UPDATE charges SET reversed = 1 WHERE charge_id = ?1",
        [charge_id],
    )?;
    let after = charge_by_id(connection, charge_id)?.ok_or_else(vanished)?;
    assert_charge_invariants(&after);
    assert!(
        after.reversed && after.captured_minor == before.captured_minor,
        "reverse: {charge_id}"
    );
    Ok(after)
}

#[cfg(test)]
mod tests {
    use super::super::{Decision, NewCharge};
    use super::*;

    const PAN: &str = "4242424242424242";

    fn ledger_with(key: &str, capture: bool, decision: Decision) -> (Ledger, String) {
        let ledger = Ledger::open(None).expect("in-memory ledger");
        let (charge, _) = ledger
            .create_charge(&NewCharge {
                idempotency_key: key,
                amount_minor: 1_000,
                currency: "USD",
                pan: PAN,
                capture,
                decision,
            })
            .expect("charge");
        (ledger, charge.charge_id)
    }

    #[test]
    fn a_capture_reverts_to_an_authorisation_that_captures_again() {
        let (ledger, id) = ledger_with("pay_1", false, Decision::Approve);
        assert!(matches!(
            ledger.uncapture("unc_0", &id),
            Err(LedgerError::NotRevertible)
        ));
        ledger.capture("cap_1", &id, 600).expect("capture");
        let (reverted, written) = ledger.uncapture("unc_1", &id).expect("revert");
        assert_eq!(written, Written::Fresh);
        assert_eq!(
            (reverted.status, reverted.captured_minor),
            (ChargeStatus::Authorized, 0)
        );
        let (again, _) = ledger.capture("cap_2", &id, 1_000).expect("capture again");
        assert_eq!(again.captured_minor, 1_000);
        // Both old keys answer what they answered first, not what the charge is now.
        let (first_capture, written) = ledger.capture("cap_1", &id, 600).expect("replay");
        assert_eq!(written, Written::Replayed);
        assert_eq!(first_capture.captured_minor, 600);
        let (first_revert, _) = ledger.uncapture("unc_1", &id).expect("replay");
        assert_eq!(first_revert.status, ChargeStatus::Authorized);
        assert!(matches!(
            ledger.void("unc_1", &id),
            Err(LedgerError::KeyReused)
        ));
    }

    #[test]
    fn reversal_voids_an_authorisation_and_returns_a_capture() {
        let (ledger, authorised) = ledger_with("pay_a", false, Decision::Approve);
        let (voided, _) = ledger.reverse("rev_a", &authorised).expect("reverse");
        assert!(voided.voided && !voided.reversed);

        let (ledger, captured) = ledger_with("pay_c", true, Decision::Approve);
        let (reversed, _) = ledger.reverse("rev_c", &captured).expect("reverse");
        assert!(reversed.reversed && !reversed.voided);
        assert_eq!(
            reversed.captured_minor, 1_000,
            "the capture stays on record"
        );
        let refund = ledger.refund("re_c", &captured, 1, None).expect("answered");
        assert_eq!(refund.failure_code.as_deref(), Some("charge_reversed"));
        assert!(matches!(
            ledger.reverse("rev_c2", &captured),
            Err(LedgerError::NotReversible)
        ));
        assert!(matches!(
            ledger.uncapture("unc_c", &captured),
            Err(LedgerError::NotRevertible)
        ));
        let (replayed, written) = ledger.reverse("rev_c", &captured).expect("replay");
        assert_eq!(
            (written, replayed.reversed, replayed.refunded_minor),
            (Written::Replayed, true, 0)
        );
    }

    #[test]
    fn a_charge_waiting_for_3ds_is_voided_and_its_challenge_changes_nothing() {
        let (ledger, pending) = ledger_with("pay_p", true, Decision::Challenge);
        let (voided, _) = ledger.reverse("rev_p", &pending).expect("reverse");
        assert_eq!(
            (voided.status, voided.voided),
            (ChargeStatus::RequiresAction, true)
        );
        let (after, written) = ledger.complete_challenge(&pending, true).expect("answered");
        assert_eq!(written, Written::Replayed);
        assert_eq!((after.captured_minor, after.voided), (0, true));
        assert!(matches!(
            ledger.reverse("rev_p2", &pending),
            Err(LedgerError::NotReversible)
        ));
    }

    #[test]
    fn declined_and_refunded_charges_are_not_reversible() {
        let (ledger, declined) = ledger_with("pay_d", true, Decision::Decline("card_declined"));
        assert!(matches!(
            ledger.reverse("rev_d", &declined),
            Err(LedgerError::NotReversible)
        ));
        let (ledger, refunded) = ledger_with("pay_r", true, Decision::Approve);
        ledger.refund("re_r", &refunded, 10, None).expect("refund");
        assert!(matches!(
            ledger.reverse("rev_r", &refunded),
            Err(LedgerError::NotReversible)
        ));
        assert!(matches!(
            ledger.reverse("rev_x", "ch_missing"),
            Err(LedgerError::ChargeNotFound)
        ));
    }
}
