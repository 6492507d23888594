//! Charge operations (capture, void, uncapture, reverse) by idempotency key.
//!
//! Each operation is a row of `charge_operations`: its key, charge, kind, the money it moved
//! and the charge as its answer showed it. The same key for the same operation on the same
//! charge replays that first answer, whatever happened to the charge since; the key for
//! anything else is `KeyReused`.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::sandbox::sqlite::Cached;

use super::{
    ChargeRecord, ChargeStatus, Ledger, LedgerError, Written, assert_charge_invariants,
    charge_by_id, unknown_text, vanished,
};

/// A change to an existing charge, recorded under its own idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Operation {
    Capture { amount_minor: i64 },
    Void,
    Uncapture,
    Reverse,
}

impl Operation {
    fn kind(self) -> &'static str {
        match self {
            Operation::Capture { .. } => "capture",
            Operation::Void => "void",
            Operation::Uncapture => "uncapture",
            Operation::Reverse => "reverse",
        }
    }

    /// Whether an operation recorded as `kind` with `amount_minor` is this one again (a
    /// capture must name the same amount; the others carry none in their request).
    fn is_replayed_by(self, kind: &str, amount_minor: i64) -> bool {
        let same_amount = match self {
            Operation::Capture {
                amount_minor: asked,
            } => asked == amount_minor,
            Operation::Void | Operation::Uncapture | Operation::Reverse => true,
        };
        kind == self.kind() && same_amount
    }
}

impl Ledger {
    /// Runs `operation` on `charge_id` under `idempotency_key` in one `IMMEDIATE` transaction:
    /// a replayed key answers its first answer; otherwise the charge is read (and checked),
    /// `change` checks its state and writes, answering the charge after it and the money it
    /// moved, and the operation is recorded with that answer.
    pub(super) fn operate(
        &self,
        idempotency_key: &str,
        charge_id: &str,
        operation: Operation,
        change: impl FnOnce(&Connection, &ChargeRecord) -> Result<(ChargeRecord, i64), LedgerError>,
    ) -> Result<(ChargeRecord, Written), LedgerError> {
        let mut connection = self.connection.lock();
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(replayed) = replay_operation(&tx, idempotency_key, charge_id, operation)? {
            return Ok((replayed, Written::Replayed));
        }
        let before = charge_by_id(&tx, charge_id)?.ok_or(LedgerError::ChargeNotFound)?;
        assert_charge_invariants(&before);
        let (after, moved_minor) = change(&tx, &before)?;
        assert_charge_invariants(&after);
        record_operation(&tx, idempotency_key, operation, moved_minor, &after)?;
        tx.commit()?;
        Ok((after, Written::Fresh))
    }
}

/// The charge as the first answer under `idempotency_key` showed it, when the key was used for
/// this same operation on this charge; `KeyReused` when it was used for anything else.
fn replay_operation(
    connection: &Connection,
    idempotency_key: &str,
    charge_id: &str,
    operation: Operation,
) -> Result<Option<ChargeRecord>, LedgerError> {
    let existing = connection
        .query_row_cached(
            "SELECT charge_id, kind, amount_minor, status_after, captured_minor_after, \
             refunded_minor_after, voided_after, reversed_after \
             FROM charge_operations WHERE idempotency_key = ?1",
            [idempotency_key],
            |row| {
                let stored: (String, String, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
                let after: Option<String> = row.get(3)?;
                let after = match after {
                    None => None,
                    Some(status) => Some((
                        ChargeStatus::parse(&status).ok_or_else(|| unknown_text(3))?,
                        row.get::<_, i64>(4)?,
                        row.get::<_, i64>(5)?,
                        row.get::<_, bool>(6)?,
                        row.get::<_, bool>(7)?,
                    )),
                };
                Ok((stored, after))
            },
        )
        .optional()?;
    let Some(((stored_charge, kind, amount_minor), after)) = existing else {
        return Ok(None);
    };
    if stored_charge != charge_id || !operation.is_replayed_by(&kind, amount_minor) {
        return Err(LedgerError::KeyReused);
    }
    let mut charge = charge_by_id(connection, charge_id)?.ok_or_else(vanished)?;
    // Operations recorded before ledger version 3 kept no answer: the charge as it is now.
    if let Some((status, captured_minor, refunded_minor, voided, reversed)) = after {
        charge.status = status;
        charge.captured_minor = captured_minor;
        charge.refunded_minor = refunded_minor;
        charge.voided = voided;
        charge.reversed = reversed;
    }
    Ok(Some(charge))
}

/// Records `operation` under its key: the money it moved and the charge as its answer shows.
fn record_operation(
    connection: &Connection,
    idempotency_key: &str,
    operation: Operation,
    moved_minor: i64,
    after: &ChargeRecord,
) -> Result<(), LedgerError> {
    connection.execute_cached(
        "INSERT INTO charge_operations (idempotency_key, charge_id, kind, amount_minor, \
         status_after, captured_minor_after, refunded_minor_after, voided_after, reversed_after) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            idempotency_key,
            after.charge_id,
            operation.kind(),
            moved_minor,
            after.status.as_str(),
            after.captured_minor,
            after.refunded_minor,
            after.voided,
            after.reversed
        ],
    )?;
    Ok(())
}
