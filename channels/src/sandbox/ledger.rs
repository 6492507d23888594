//! The sandbox's ledger: charges, charge operations (captures, voids, capture reverts,
//! reversals), refunds and tombstones, in SQLite (a WAL file, or memory).
//!
//! This is a test double, so one connection behind one mutex serialises every ledger call.
//! That makes each check-and-write trivially atomic: a key is looked up and the row inserted
//! in one `IMMEDIATE` transaction under the lock, so twenty concurrent requests with one key
//! yield one charge. The table constraints repeat the invariants
//! (`0 <= refunded <= captured <= amount`, unique keys) so a bug here fails loudly instead of
//! moving money that does not exist.
//!
//! A charge moves through these states (the status, plus `voided` and `reversed` flags):
//!
//! ```text
//! requires_action ──challenge──► authorized | succeeded | declined
//! authorized ──capture──► succeeded ──uncapture (nothing refunded)──► authorized
//! authorized ──void | reverse──► authorized + voided
//! requires_action ──reverse──► requires_action + voided (the challenge can no longer finish)
//! succeeded ──reverse (nothing refunded)──► succeeded + reversed (captured kept, all returned)
//! succeeded ──refund──► succeeded, refunded ≤ captured (refused once reversed)
//! ```
//!
//! Every operation on an existing charge is recorded under its own idempotency key with the
//! charge as its answer showed it, so the same key replays that first answer.
//!
//! Layout: `schema` holds the tables and their migration in place; `operations` the record
//! of operations by key and their replay; `preauth` the pre-authorisation undo operations
//! (`uncapture`, `reverse`).
//!
//! Card data: only the BIN, the last four digits and a salted SHA-256 of the PAN (to recognise
//! "the same request" on a replayed key) are stored. The salt is drawn once per ledger and kept
//! in it, so the hash column alone is not a PAN lookup table. The CVC is never stored.

mod operations;
mod preauth;
mod schema;

use std::path::Path;

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use sha2::Digest;

use self::operations::Operation;
use super::SandboxError;
use super::sqlite::{self, Cached, Salt, unix_now};
/// How many rows `GET /sandbox/ledger` returns per table, newest first.
pub(crate) const SNAPSHOT_ROWS_MAX: u32 = 10_000;

const CHARGE_COLUMNS: &str = "charge_id, idempotency_key, amount_minor, currency, card_bin, \
    card_last4, status, decline_code, captured_minor, refunded_minor, voided, created_unix_s, \
    pan_fingerprint, capture_requested, reversed";

const REFUND_COLUMNS: &str =
    "refund_id, idempotency_key, charge_id, amount_minor, status, failure_code, created_unix_s";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChargeStatus {
    Succeeded,
    Authorized,
    Declined,
    /// Waiting for the cardholder's 3-D Secure challenge.
    RequiresAction,
}

impl ChargeStatus {
    fn as_str(self) -> &'static str {
        match self {
            ChargeStatus::Succeeded => "succeeded",
            ChargeStatus::Authorized => "authorized",
            ChargeStatus::Declined => "declined",
            ChargeStatus::RequiresAction => "requires_action",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "succeeded" => Some(ChargeStatus::Succeeded),
            "authorized" => Some(ChargeStatus::Authorized),
            "declined" => Some(ChargeStatus::Declined),
            "requires_action" => Some(ChargeStatus::RequiresAction),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefundStatus {
    Succeeded,
    Failed,
}

/// A charge row, without its PAN fingerprint.
#[derive(Debug, Clone)]
pub(crate) struct ChargeRecord {
    pub charge_id: String,
    pub idempotency_key: String,
    pub amount_minor: i64,
    pub currency: String,
    pub card_bin: String,
    pub card_last4: String,
    pub status: ChargeStatus,
    pub decline_code: Option<String>,
    pub captured_minor: i64,
    pub refunded_minor: i64,
    pub voided: bool,
    /// A captured charge taken back whole: `captured_minor` stays as it was, all of it returned.
    pub reversed: bool,
    pub created_unix_s: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct RefundRecord {
    pub refund_id: String,
    pub idempotency_key: String,
    pub charge_id: String,
    pub amount_minor: i64,
    pub status: RefundStatus,
    pub failure_code: Option<String>,
    pub created_unix_s: i64,
}

/// What the issuer (the test-card table) decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    Approve,
    Decline(&'static str),
    /// The issuer asks for a 3-D Secure challenge first.
    Challenge,
}

/// Whether a ledger call changed the ledger or replayed what an earlier call with its key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    Fresh,
    Replayed,
}

/// A charge to record. `pan` is only hashed.
pub(crate) struct NewCharge<'a> {
    pub idempotency_key: &'a str,
    pub amount_minor: i64,
    pub currency: &'a str,
    pub pan: &'a str,
    pub capture: bool,
    pub decision: Decision,
}

/// Why a ledger call refused. The HTTP mapping lives in `routes`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LedgerError {
    #[error("this idempotency key was used for a different request")]
    KeyReused,
    #[error("this idempotency key was resolved as never charged and cannot be used")]
    KeyBlocked,
    #[error("no such charge")]
    ChargeNotFound,
    #[error("only an uncaptured, unvoided authorisation can be captured")]
    NotCapturable,
    #[error("only an uncaptured, unvoided authorisation can be voided")]
    NotVoidable,
    #[error("the capture amount exceeds the authorised amount")]
    AmountExceedsAuthorized,
    #[error(
        "only a captured charge with nothing refunded, not voided and not reversed can have its \
         capture reverted"
    )]
    NotRevertible,
    #[error(
        "only an unvoided authorisation or a captured charge with nothing refunded and not yet \
         reversed can be reversed"
    )]
    NotReversible,
    #[error("the refund currency is not the charge's currency")]
    CurrencyMismatch,
    #[error("ledger storage failed: {0}")]
    Storage(#[from] rusqlite::Error),
}

pub(crate) struct Ledger {
    /// One connection for the whole sandbox (see the module docs).
    connection: Mutex<Connection>,
    salt: Salt,
}

impl Ledger {
    /// Opens (and creates, migrates) the ledger at `path`, or in memory when `None`.
    pub(crate) fn open(path: Option<&Path>) -> Result<Self, SandboxError> {
        let mut connection = sqlite::open(path)?;
        schema::migrate(&mut connection)?;
        let salt = Salt::load_or_create(&connection, "meta")?;
        Ok(Self {
            connection: Mutex::new(connection),
            salt,
        })
    }

    /// Records a charge, or returns the one already recorded under its key.
    pub(crate) fn create_charge(
        &self,
        new: &NewCharge<'_>,
    ) -> Result<(ChargeRecord, Written), LedgerError> {
        let fingerprint = self.pan_fingerprint(new.pan);
        let mut connection = self.connection.lock();
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let blocked: bool = tx
            .query_row_cached(
                "SELECT 1 FROM tombstones WHERE idempotency_key = ?1",
                [new.idempotency_key],
                |_| Ok(true),
            )
            .optional()?
            .unwrap_or(false);
        if blocked {
            return Err(LedgerError::KeyBlocked);
        }
        if let Some((existing, stored_fingerprint, stored_capture)) =
            charge_by_key_with_fingerprint(&tx, new.idempotency_key)?
        {
            let same = existing.amount_minor == new.amount_minor
                && existing.currency == new.currency
                && stored_fingerprint == fingerprint
                && stored_capture == new.capture;
            return if same {
                Ok((existing, Written::Replayed))
            } else {
                Err(LedgerError::KeyReused)
            };
        }
        let (status, decline_code, captured_minor) = match new.decision {
            Decision::Approve if new.capture => (ChargeStatus::Succeeded, None, new.amount_minor),
            Decision::Approve => (ChargeStatus::Authorized, None, 0),
            Decision::Decline(code) => (ChargeStatus::Declined, Some(code), 0),
            Decision::Challenge => (ChargeStatus::RequiresAction, None, 0),
        };
        let charge_id = self.salt.derive_id("ch_", "charge", new.idempotency_key);
        // `pan` was validated as 12–19 ASCII digits by the caller, so these slices are in bounds.
        let bin = &new.pan[..6];
        let last4 = &new.pan[new.pan.len() - 4..];
        tx.execute_cached(
            "INSERT INTO charges (charge_id, idempotency_key, amount_minor, currency, \
             pan_fingerprint, card_bin, card_last4, capture_requested, status, decline_code, \
             captured_minor, created_unix_s) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                charge_id,
                new.idempotency_key,
                new.amount_minor,
                new.currency,
                fingerprint,
                bin,
                last4,
                new.capture,
                status.as_str(),
                decline_code,
                captured_minor,
                unix_now()
            ],
        )?;
        let record = charge_by_id(&tx, &charge_id)?.ok_or_else(vanished)?;
        assert_charge_invariants(&record);
        tx.commit()?;
        Ok((record, Written::Fresh))
    }

    /// The cardholder finished (or failed) the 3-D Secure challenge of `charge_id`: the charge
    /// becomes what it would have been without one, or is declined `authentication_failed`.
    /// A charge no longer waiting for its challenge, or reversed while it waited (`voided`),
    /// is returned as it is.
    pub(crate) fn complete_challenge(
        &self,
        charge_id: &str,
        passed: bool,
    ) -> Result<(ChargeRecord, Written), LedgerError> {
        let mut connection = self.connection.lock();
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let charge = charge_by_id(&tx, charge_id)?.ok_or(LedgerError::ChargeNotFound)?;
        if charge.status != ChargeStatus::RequiresAction || charge.voided {
            return Ok((charge, Written::Replayed));
        }
        let capture: bool = tx.query_row_cached(
            "SELECT capture_requested FROM charges WHERE charge_id = ?1",
            params![charge_id],
            |row| row.get(0),
        )?;
        let (status, decline_code, captured_minor) = match (passed, capture) {
            (true, true) => (ChargeStatus::Succeeded, None, charge.amount_minor),
            (true, false) => (ChargeStatus::Authorized, None, 0),
            (false, _) => (ChargeStatus::Declined, Some("authentication_failed"), 0),
        };
        tx.execute_cached(
            "UPDATE charges SET status = ?2, decline_code = ?3, captured_minor = ?4 WHERE charge_id = ?1",
            params![charge_id, status.as_str(), decline_code, captured_minor],
        )?;
        let record = charge_by_id(&tx, charge_id)?.ok_or_else(vanished)?;
        assert_charge_invariants(&record);
        tx.commit()?;
        Ok((record, Written::Fresh))
    }

    /// Captures `amount_minor` of an authorisation (again, after a reverted capture); a
    /// replayed key returns its first answer.
    pub(crate) fn capture(
        &self,
        idempotency_key: &str,
        charge_id: &str,
        amount_minor: i64,
    ) -> Result<(ChargeRecord, Written), LedgerError> {
        let operation = Operation::Capture { amount_minor };
        self.operate(idempotency_key, charge_id, operation, |tx, before| {
            if !is_open_authorisation(before) {
                return Err(LedgerError::NotCapturable);
            }
            if amount_minor > before.amount_minor {
                return Err(LedgerError::AmountExceedsAuthorized);
            }
            tx.execute_cached(
                "UPDATE charges SET status = 'succeeded', captured_minor = ?2 WHERE charge_id = ?1",
                params![charge_id, amount_minor],
            )?;
            let after = charge_by_id(tx, charge_id)?.ok_or_else(vanished)?;
            assert_eq!(after.captured_minor, amount_minor, "capture: {charge_id}");
            Ok((after, amount_minor))
        })
    }

    /// Voids an uncaptured authorisation; a replayed key returns its first answer.
    pub(crate) fn void(
        &self,
        idempotency_key: &str,
        charge_id: &str,
    ) -> Result<(ChargeRecord, Written), LedgerError> {
        self.operate(idempotency_key, charge_id, Operation::Void, |tx, before| {
            // An open authorisation, or a charge still waiting for its 3-D Secure challenge (the
            // merchant gave up on the cardholder: the challenge can no longer complete it).
            let awaiting_challenge =
                before.status == ChargeStatus::RequiresAction && !before.voided;
            if !is_open_authorisation(before) && !awaiting_challenge {
                return Err(LedgerError::NotVoidable);
            }
            Ok((set_voided(tx, charge_id)?, 0))
        })
    }

    /// Refunds `amount_minor` of a charge if what is left of its capture covers it, and
    /// records a failed refund otherwise. A replayed key returns the first refund.
    pub(crate) fn refund(
        &self,
        idempotency_key: &str,
        charge_id: &str,
        amount_minor: i64,
        currency: Option<&str>,
    ) -> Result<RefundRecord, LedgerError> {
        let mut connection = self.connection.lock();
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(existing) = refund_by_key(&tx, idempotency_key)? {
            return if existing.charge_id == charge_id && existing.amount_minor == amount_minor {
                Ok(existing)
            } else {
                Err(LedgerError::KeyReused)
            };
        }
        let charge = charge_by_id(&tx, charge_id)?.ok_or(LedgerError::ChargeNotFound)?;
        if currency.is_some_and(|currency| currency != charge.currency) {
            return Err(LedgerError::CurrencyMismatch);
        }
        assert_charge_invariants(&charge);
        // The new refunded total, if what is left of the capture covers this refund. A reversed
        // charge has given all of its capture back already: nothing is left to refund.
        let refunded_total = charge
            .refunded_minor
            .checked_add(amount_minor)
            .filter(|total| *total <= charge.captured_minor);
        let (status, failure_code) = match refunded_total {
            _ if charge.reversed => ("failed", Some("charge_reversed")),
            None => ("failed", Some("amount_exceeds_captured")),
            Some(total) => {
                tx.execute_cached(
                    "UPDATE charges SET refunded_minor = ?2 WHERE charge_id = ?1",
                    params![charge_id, total],
                )?;
                ("succeeded", None)
            }
        };
        let refund_id = self.salt.derive_id("rf_", "refund", idempotency_key);
        tx.execute_cached(
            "INSERT INTO refunds (refund_id, idempotency_key, charge_id, amount_minor, status, \
             failure_code, created_unix_s) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                refund_id,
                idempotency_key,
                charge_id,
                amount_minor,
                status,
                failure_code,
                unix_now()
            ],
        )?;
        let after = charge_by_id(&tx, charge_id)?.ok_or_else(vanished)?;
        assert_charge_invariants(&after);
        let refund = refund_by_key(&tx, idempotency_key)?.ok_or_else(vanished)?;
        tx.commit()?;
        Ok(refund)
    }

    /// The charge under `idempotency_key`, or `None` after tombstoning the key.
    pub(crate) fn resolve(
        &self,
        idempotency_key: &str,
    ) -> Result<Option<ChargeRecord>, LedgerError> {
        let mut connection = self.connection.lock();
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some((charge, _, _)) = charge_by_key_with_fingerprint(&tx, idempotency_key)? {
            return Ok(Some(charge));
        }
        tx.execute_cached(
            "INSERT OR IGNORE INTO tombstones (idempotency_key, created_unix_s) VALUES (?1, ?2)",
            params![idempotency_key, unix_now()],
        )?;
        tx.commit()?;
        Ok(None)
    }

    pub(crate) fn charge(&self, charge_id: &str) -> Result<ChargeRecord, LedgerError> {
        let connection = self.connection.lock();
        charge_by_id(&connection, charge_id)?.ok_or(LedgerError::ChargeNotFound)
    }

    /// Up to [`SNAPSHOT_ROWS_MAX`] charges and refunds, oldest first.
    pub(crate) fn snapshot(&self) -> Result<(Vec<ChargeRecord>, Vec<RefundRecord>), LedgerError> {
        let connection = self.connection.lock();
        let charges = sqlite::rows(
            &connection,
            &format!("SELECT {CHARGE_COLUMNS} FROM charges ORDER BY seq LIMIT ?1"),
            SNAPSHOT_ROWS_MAX,
            |row| read_charge(row).map(|(charge, _, _)| charge),
        )?;
        let refunds = sqlite::rows(
            &connection,
            &format!("SELECT {REFUND_COLUMNS} FROM refunds ORDER BY seq LIMIT ?1"),
            SNAPSHOT_ROWS_MAX,
            read_refund,
        )?;
        Ok((charges, refunds))
    }

    fn pan_fingerprint(&self, pan: &str) -> String {
        let mut hasher = self.salt.hasher();
        hasher.update(pan.as_bytes());
        hex::encode(hasher.finalize())
    }
}

/// A row read back inside the transaction that wrote (or replayed) it is missing: the storage
/// is broken, which is a 500, not a 404.
fn vanished() -> LedgerError {
    LedgerError::Storage(rusqlite::Error::QueryReturnedNoRows)
}

/// An authorisation that can still be captured or voided: authorised, nothing captured (or
/// its capture reverted), not voided.
fn is_open_authorisation(charge: &ChargeRecord) -> bool {
    match charge.status {
        ChargeStatus::Authorized => !charge.voided && charge.captured_minor == 0,
        ChargeStatus::Succeeded | ChargeStatus::Declined | ChargeStatus::RequiresAction => false,
    }
}

/// Marks a charge voided: a void or the reversal of an open authorisation, or the reversal
/// of a charge waiting for 3-D Secure.
fn set_voided(connection: &Connection, charge_id: &str) -> Result<ChargeRecord, LedgerError> {
    connection.execute_cached(
        "UPDATE charges SET voided = 1 WHERE charge_id = ?1",
        [charge_id],
    )?;
    let after = charge_by_id(connection, charge_id)?.ok_or_else(vanished)?;
    assert_charge_invariants(&after);
    assert!(after.voided, "void: {charge_id}");
    Ok(after)
}

/// The ledger's bounds, checked before and after every change to a charge. The table `CHECK`s
/// repeat the money bounds, so a violation would also abort the transaction.
fn assert_charge_invariants(charge: &ChargeRecord) {
    let id = &charge.charge_id;
    assert!(0 <= charge.refunded_minor, "refunded below zero: {id}");
    assert!(
        charge.refunded_minor <= charge.captured_minor,
        "refunded above captured: {id}"
    );
    assert!(
        charge.captured_minor <= charge.amount_minor,
        "captured above amount: {id}"
    );
    assert!(
        !charge.voided || charge.captured_minor == 0,
        "voided yet captured: {id}"
    );
    assert!(
        !charge.reversed || charge.refunded_minor == 0,
        "reversed yet refunded: {id}"
    );
    match charge.status {
        ChargeStatus::Succeeded => {
            assert!(charge.captured_minor > 0, "succeeded without capture: {id}");
        }
        ChargeStatus::Authorized => {
            assert_eq!(charge.captured_minor, 0, "authorized yet captured: {id}");
            assert!(!charge.reversed, "reversed authorisation: {id}");
        }
        ChargeStatus::RequiresAction => {
            assert_eq!(charge.captured_minor, 0, "captured before 3-D Secure: {id}");
            assert!(!charge.reversed, "reversed before 3-D Secure: {id}");
        }
        ChargeStatus::Declined => {
            assert_eq!(charge.captured_minor, 0, "captured yet declined: {id}");
            assert!(!charge.voided && !charge.reversed, "undone decline: {id}");
        }
    }
}

fn charge_by_id(
    connection: &Connection,
    charge_id: &str,
) -> Result<Option<ChargeRecord>, LedgerError> {
    Ok(connection
        .query_row_cached(
            &format!("SELECT {CHARGE_COLUMNS} FROM charges WHERE charge_id = ?1"),
            [charge_id],
            read_charge,
        )
        .optional()?
        .map(|(charge, _, _)| charge))
}

fn charge_by_key_with_fingerprint(
    connection: &Connection,
    idempotency_key: &str,
) -> Result<Option<(ChargeRecord, String, bool)>, LedgerError> {
    Ok(connection
        .query_row_cached(
            &format!("SELECT {CHARGE_COLUMNS} FROM charges WHERE idempotency_key = ?1"),
            [idempotency_key],
            read_charge,
        )
        .optional()?)
}

fn refund_by_key(
    connection: &Connection,
    idempotency_key: &str,
) -> Result<Option<RefundRecord>, LedgerError> {
    Ok(connection
        .query_row_cached(
            &format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE idempotency_key = ?1"),
            [idempotency_key],
            read_refund,
        )
        .optional()?)
}

fn read_charge(row: &Row<'_>) -> rusqlite::Result<(ChargeRecord, String, bool)> {
    let status: String = row.get(6)?;
    let status = ChargeStatus::parse(&status).ok_or_else(|| unknown_text(6))?;
    let record = ChargeRecord {
        charge_id: row.get(0)?,
        idempotency_key: row.get(1)?,
        amount_minor: row.get(2)?,
        currency: row.get(3)?,
        card_bin: row.get(4)?,
        card_last4: row.get(5)?,
        status,
        decline_code: row.get(7)?,
        captured_minor: row.get(8)?,
        refunded_minor: row.get(9)?,
        voided: row.get(10)?,
        reversed: row.get(14)?,
        created_unix_s: row.get(11)?,
    };
    Ok((record, row.get(12)?, row.get(13)?))
}

fn read_refund(row: &Row<'_>) -> rusqlite::Result<RefundRecord> {
    let status: String = row.get(4)?;
    let status = match status.as_str() {
        "succeeded" => RefundStatus::Succeeded,
        "failed" => RefundStatus::Failed,
        _ => return Err(unknown_text(4)),
    };
    Ok(RefundRecord {
        refund_id: row.get(0)?,
        idempotency_key: row.get(1)?,
        charge_id: row.get(2)?,
        amount_minor: row.get(3)?,
        status,
        failure_code: row.get(5)?,
        created_unix_s: row.get(6)?,
    })
}

fn unknown_text(column: usize) -> rusqlite::Error {
    sqlite::unknown_text(column, "status")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_charge<'a>(key: &'a str, pan: &'a str, capture: bool) -> NewCharge<'a> {
        NewCharge {
            idempotency_key: key,
            amount_minor: 1_000,
            currency: "USD",
            pan,
            capture,
            decision: Decision::Approve,
        }
    }

    #[test]
    fn the_ledger_never_stores_the_pan() {
        let ledger = Ledger::open(None).expect("in-memory ledger");
        ledger
            .create_charge(&new_charge("k1", "4242424242424242", true))
            .expect("charge");
        let connection = ledger.connection.lock();
        let dump: Vec<String> = connection
            .prepare("SELECT quote(charge_id) || quote(pan_fingerprint) || card_bin || card_last4 FROM charges")
            .expect("query")
            .query_map([], |row| row.get(0))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("read");
        assert_eq!(dump.len(), 1);
        assert!(!dump[0].contains("4242424242424242"));
    }

    #[test]
    fn a_replayed_key_with_another_pan_is_refused() {
        let ledger = Ledger::open(None).expect("in-memory ledger");
        let (first, written) = ledger
            .create_charge(&new_charge("k1", "4242424242424242", true))
            .expect("charge");
        assert_eq!(written, Written::Fresh);
        let (again, written) = ledger
            .create_charge(&new_charge("k1", "4242424242424242", true))
            .expect("replay");
        assert_eq!(written, Written::Replayed);
        assert_eq!(first.charge_id, again.charge_id);
        let other = ledger.create_charge(&new_charge("k1", "5555555555554444", true));
        assert!(matches!(other, Err(LedgerError::KeyReused)));
    }
}
