//! The sandbox's ledger of asynchronous payments (`qr_wallet`, `app_wallet`, `bank_transfer`):
//! payments, refunds and tombstones in their own tables (`async_*`) of the sandbox's SQLite
//! file, or of an in-memory database.
//!
//! It opens its own connection to the card ledger's file (WAL, with a busy timeout, so the two
//! connections share it) and never touches the card tables or their `user_version`; its schema
//! version is kept in `async_meta`. One connection behind one mutex serialises its calls, and
//! each check-and-write is one `IMMEDIATE` transaction under the lock, so concurrent creates
//! with one key yield one payment. The table constraints repeat the invariants
//! (`0 <= refunded <= amount`, only a succeeded payment is refunded, unique keys per channel).
//!
//! Keys are per channel: `qr_wallet`'s `pay_1` and `app_wallet`'s `pay_1` are two payments. A
//! lookup of an unknown key tombstones it, so a later create with it is refused `key_blocked`.
//!
//! Deciding by itself: a payment the provider decides without its customer (a bank transfer;
//! a wallet order under `auto_settle`) is stored with `settle_at_ms` and the outcome decided at
//! creation (`settle_failure`, `NULL` for success). It is decided once, inside a transaction,
//! by whichever comes first at or after that time: its settlement timer, or any call that reads
//! or writes it. The caller learns it through [`Touched::decided`] and sends the callback.
//!
//! The payer's account number is never stored: only a salted SHA-256 over the whole request
//! (to recognise "the same request" on a replayed key).

use std::path::Path;

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use sha2::Digest;

use super::SandboxError;
use super::channels::Channel;
use super::sqlite::{self, Cached, Salt, unix_now, unknown_text};
/// How many rows `GET /sandbox/ledger` returns per table, oldest first.
pub(crate) const SNAPSHOT_ROWS_MAX: u32 = 10_000;
/// The asynchronous tables' schema version, in `async_meta`.
const ASYNC_SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS async_meta (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS async_payments (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    channel             TEXT    NOT NULL CHECK (channel IN ('qr_wallet', 'app_wallet', 'bank_transfer')),
    provider_ref        TEXT    NOT NULL UNIQUE,
    idempotency_key     TEXT    NOT NULL,
    amount_minor        INTEGER NOT NULL CHECK (amount_minor > 0),
    currency            TEXT    NOT NULL,
    request_fingerprint TEXT    NOT NULL,
    status              TEXT    NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    failure_code        TEXT,
    settle_at_ms        INTEGER,
    settle_failure      TEXT,
    refunded_minor      INTEGER NOT NULL DEFAULT 0,
    created_unix_s      INTEGER NOT NULL,
    updated_unix_s      INTEGER NOT NULL,
    UNIQUE (channel, idempotency_key),
    CHECK (0 <= refunded_minor AND refunded_minor <= amount_minor),
    CHECK (refunded_minor = 0 OR status = 'succeeded'),
    CHECK ((status = 'failed') = (failure_code IS NOT NULL))
);
CREATE TABLE IF NOT EXISTS async_refunds (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    channel         TEXT    NOT NULL,
    refund_ref      TEXT    NOT NULL UNIQUE,
    idempotency_key TEXT    NOT NULL,
    provider_ref    TEXT    NOT NULL REFERENCES async_payments (provider_ref),
    amount_minor    INTEGER NOT NULL CHECK (amount_minor > 0),
    status          TEXT    NOT NULL CHECK (status IN ('succeeded', 'failed')),
    failure_code    TEXT,
    created_unix_s  INTEGER NOT NULL,
    UNIQUE (channel, idempotency_key)
);
CREATE TABLE IF NOT EXISTS async_tombstones (
    channel         TEXT    NOT NULL,
    idempotency_key TEXT    NOT NULL,
    created_unix_s  INTEGER NOT NULL,
    PRIMARY KEY (channel, idempotency_key)
);
CREATE INDEX IF NOT EXISTS async_payments_to_settle
    ON async_payments (settle_at_ms) WHERE status = 'pending' AND settle_at_ms IS NOT NULL;
";

const PAYMENT_COLUMNS: &str = "channel, provider_ref, idempotency_key, amount_minor, currency, \
    status, failure_code, refunded_minor, settle_at_ms, settle_failure, created_unix_s, \
    request_fingerprint";

const REFUND_COLUMNS: &str = "channel, refund_ref, idempotency_key, provider_ref, amount_minor, status, failure_code, \
     created_unix_s";

/// Where a payment stands in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PaymentStatus {
    Pending,
    Succeeded,
    Failed,
}

impl PaymentStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Failed => "failed",
        }
    }
}

/// A payment row.
#[derive(Debug, Clone)]
pub(crate) struct PaymentRecord {
    pub channel: Channel,
    pub provider_ref: String,
    pub idempotency_key: String,
    pub amount_minor: i64,
    pub currency: String,
    pub status: PaymentStatus,
    pub failure_code: Option<String>,
    pub refunded_minor: i64,
    /// When the provider decides it by itself (unix ms); `None`: it waits for its customer.
    pub settle_at_ms: Option<i64>,
    /// What it is decided as at `settle_at_ms`: `None` succeeds, `Some(code)` fails.
    pub settle_failure: Option<String>,
    pub created_unix_s: i64,
}

/// A payment to record.
pub(crate) struct NewPayment<'a> {
    pub channel: Channel,
    pub idempotency_key: &'a str,
    pub amount_minor: i64,
    pub currency: &'a str,
    pub description: &'a str,
    /// Only hashed into the request's fingerprint, never stored.
    pub payer_account: Option<&'a str>,
    pub payer_name: Option<&'a str>,
    pub settle_at_ms: Option<i64>,
    pub settle_failure: Option<&'static str>,
}

/// A payment after a ledger call, and what the call did to it.
#[derive(Debug, Clone)]
pub(crate) struct Touched {
    pub record: PaymentRecord,
    /// The call created it (a replay did not).
    pub created: bool,
    /// The call decided its outcome on the provider's or the customer's behalf (its settle
    /// time had come, or the customer acted): its callback is due.
    pub decided: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefundStatus {
    Succeeded,
    Failed,
}

#[derive(Debug, Clone)]
pub(crate) struct RefundRecord {
    pub channel: Channel,
    pub refund_ref: String,
    pub idempotency_key: String,
    pub provider_ref: String,
    pub amount_minor: i64,
    pub status: RefundStatus,
    pub failure_code: Option<String>,
    pub created_unix_s: i64,
}

/// Why a ledger call refused. The HTTP mapping lives in `settlement`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AsyncLedgerError {
    #[error("this idempotency key was used for a different request")]
    KeyReused,
    #[error("this idempotency key was closed by a lookup and cannot be used")]
    KeyBlocked,
    #[error("no such payment")]
    PaymentNotFound,
    #[error("only a succeeded payment can be refunded")]
    NotRefundable,
    #[error("the refund currency is not the payment's currency")]
    CurrencyMismatch,
    #[error("ledger storage failed: {0}")]
    Storage(#[from] rusqlite::Error),
}

type Result<T> = std::result::Result<T, AsyncLedgerError>;

pub(crate) struct AsyncLedger {
    /// One connection for the asynchronous channels (see the module docs).
    connection: Mutex<Connection>,
    salt: Salt,
}

impl AsyncLedger {
    /// Opens (and creates) the asynchronous tables in the file at `path`, or in memory.
    pub(crate) fn open(path: Option<&Path>) -> std::result::Result<Self, SandboxError> {
        let connection = sqlite::open(path)?;
        connection.execute_batch(&format!(
            "BEGIN IMMEDIATE; {SCHEMA}
             INSERT OR REPLACE INTO async_meta (name, value) VALUES ('schema_version', {ASYNC_SCHEMA_VERSION});
             COMMIT;"
        ))?;
        let salt = Salt::load_or_create(&connection, "async_meta")?;
        Ok(Self {
            connection: Mutex::new(connection),
            salt,
        })
    }

    /// Records a payment, or returns the one already recorded under its channel and key.
    pub(crate) fn create(&self, new: &NewPayment<'_>, now_ms: i64) -> Result<Touched> {
        let fingerprint = self.fingerprint(new);
        let channel = new.channel.name();
        let mut connection = self.connection.lock();
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let blocked = tx
            .query_row_cached(
                "SELECT 1 FROM async_tombstones WHERE channel = ?1 AND idempotency_key = ?2",
                params![channel, new.idempotency_key],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if blocked {
            return Err(AsyncLedgerError::KeyBlocked);
        }
        if let Some((existing, stored_fingerprint)) = payment_where(
            &tx,
            "channel = ?1 AND idempotency_key = ?2",
            [channel, new.idempotency_key],
        )? {
            if stored_fingerprint != fingerprint {
                return Err(AsyncLedgerError::KeyReused);
            }
            let touched = settle_if_due(&tx, existing, now_ms)?;
            tx.commit()?;
            return Ok(touched);
        }
        let provider_ref =
            self.salt
                .derive_id(payment_prefix(new.channel), channel, new.idempotency_key);
        let now_s = unix_now();
        tx.execute_cached(
            "INSERT INTO async_payments (channel, provider_ref, idempotency_key, amount_minor, \
             currency, request_fingerprint, status, settle_at_ms, settle_failure, \
             created_unix_s, updated_unix_s) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?8, ?9, ?9)",
            params![
                channel,
                provider_ref,
                new.idempotency_key,
                new.amount_minor,
                new.currency,
                fingerprint,
                new.settle_at_ms,
                new.settle_failure,
                now_s
            ],
        )?;
        let record = by_ref(&tx, &provider_ref)?.ok_or_else(vanished)?;
        // A settle time already passed (a zero delay) is still decided after this answer, by
        // its timer or the next call, so a create always answers `pending` first.
        tx.commit()?;
        Ok(Touched {
            record,
            created: true,
            decided: false,
        })
    }

    /// The payment under `key`, decided first if its time has come; `None` after tombstoning
    /// the key.
    pub(crate) fn lookup(
        &self,
        channel: Channel,
        key: &str,
        now_ms: i64,
    ) -> Result<Option<Touched>> {
        let mut connection = self.connection.lock();
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found = payment_where(
            &tx,
            "channel = ?1 AND idempotency_key = ?2",
            [channel.name(), key],
        )?;
        let answer = match found {
            Some((record, _)) => Some(settle_if_due(&tx, record, now_ms)?),
            None => {
                tombstone(&tx, channel, key)?;
                None
            }
        };
        tx.commit()?;
        Ok(answer)
    }

    /// The payment `provider_ref` of `channel`, decided first if its time has come.
    pub(crate) fn by_provider_ref(
        &self,
        channel: Channel,
        provider_ref: &str,
        now_ms: i64,
    ) -> Result<Touched> {
        let mut connection = self.connection.lock();
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let record = channel_payment(&tx, channel, provider_ref)?;
        let touched = settle_if_due(&tx, record, now_ms)?;
        tx.commit()?;
        Ok(touched)
    }

    /// The customer paid (`paid`) or declined a pending payment on the wallet's page. One
    /// already decided (also by its settle time, first) is returned as it is.
    pub(crate) fn customer(
        &self,
        channel: Channel,
        provider_ref: &str,
        paid: bool,
        declined_code: &str,
        now_ms: i64,
    ) -> Result<Touched> {
        let mut connection = self.connection.lock();
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let record = channel_payment(&tx, channel, provider_ref)?;
        let failure = (!paid).then_some(declined_code);
        // The customer's decision sends the callback.
        let touched = decide_unless_decided(&tx, record, now_ms, failure, true)?;
        tx.commit()?;
        Ok(touched)
    }

    /// Closes the pending payment under `key` (it fails `closed_code`). One already decided (or
    /// whose settle time has come) is returned as it is; an unknown key is tombstoned and
    /// refused `PaymentNotFound`. Closing is the merchant's act, so `decided` stays `false`
    /// unless the settle time decided the payment first.
    pub(crate) fn close(
        &self,
        channel: Channel,
        key: &str,
        closed_code: &str,
        now_ms: i64,
    ) -> Result<Touched> {
        let mut connection = self.connection.lock();
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let Some((record, _)) = payment_where(
            &tx,
            "channel = ?1 AND idempotency_key = ?2",
            [channel.name(), key],
        )?
        else {
            tombstone(&tx, channel, key)?;
            tx.commit()?;
            return Err(AsyncLedgerError::PaymentNotFound);
        };
        // The merchant's close sends no callback: its answer says it.
        let touched = decide_unless_decided(&tx, record, now_ms, Some(closed_code), false)?;
        tx.commit()?;
        Ok(touched)
    }

    /// Refunds `amount_minor` of a succeeded payment if what is left covers it, and records a
    /// failed refund otherwise. A replayed key returns the first refund. Also returns the
    /// payment when this call decided it (its settle time had come).
    pub(crate) fn refund(
        &self,
        channel: Channel,
        key: &str,
        provider_ref: &str,
        amount_minor: i64,
        currency: Option<&str>,
        now_ms: i64,
    ) -> Result<(RefundRecord, Option<PaymentRecord>)> {
        let mut connection = self.connection.lock();
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(existing) = refund_by_key(&tx, channel, key)? {
            return if existing.provider_ref == provider_ref && existing.amount_minor == amount_minor
            {
                Ok((existing, None))
            } else {
                Err(AsyncLedgerError::KeyReused)
            };
        }
        let record = channel_payment(&tx, channel, provider_ref)?;
        let touched = settle_if_due(&tx, record, now_ms)?;
        let decided = touched.decided.then(|| touched.record.clone());
        let payment = touched.record;
        if currency.is_some_and(|currency| currency != payment.currency) {
            tx.commit()?;
            return Err(AsyncLedgerError::CurrencyMismatch);
        }
        if payment.status != PaymentStatus::Succeeded {
            tx.commit()?;
            return Err(AsyncLedgerError::NotRefundable);
        }
        let refunded_total = payment
            .refunded_minor
            .checked_add(amount_minor)
            .filter(|total| *total <= payment.amount_minor);
        let (status, failure_code) = match refunded_total {
            Some(total) => {
                tx.execute_cached(
                    "UPDATE async_payments SET refunded_minor = ?2, updated_unix_s = ?3 \
                     WHERE provider_ref = ?1",
                    params![provider_ref, total, unix_now()],
                )?;
                ("succeeded", None)
            }
            None => ("failed", Some(crate::outcome::AMOUNT_EXCEEDS_CAPTURED)),
        };
        let refund_ref = self.salt.derive_id(refund_prefix(channel), "refund", key);
        tx.execute_cached(
            "INSERT INTO async_refunds (channel, refund_ref, idempotency_key, provider_ref, \
             amount_minor, status, failure_code, created_unix_s) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                channel.name(),
                refund_ref,
                key,
                provider_ref,
                amount_minor,
                status,
                failure_code,
                unix_now()
            ],
        )?;
        let after = by_ref(&tx, provider_ref)?.ok_or_else(vanished)?;
        assert_payment_invariants(&after);
        let refund = refund_by_key(&tx, channel, key)?.ok_or_else(vanished)?;
        tx.commit()?;
        Ok((refund, decided))
    }

    /// Pending payments with a settle time, oldest first, at most `limit` (to re-arm their
    /// timers when a sandbox starts on an existing file).
    pub(crate) fn to_settle(&self, limit: usize) -> Result<Vec<PaymentRecord>> {
        let connection = self.connection.lock();
        Ok(sqlite::rows(
            &connection,
            &format!(
                "SELECT {PAYMENT_COLUMNS} FROM async_payments WHERE status = 'pending' \
                 AND settle_at_ms IS NOT NULL ORDER BY settle_at_ms LIMIT ?1"
            ),
            i64::try_from(limit).unwrap_or(i64::MAX),
            read_record,
        )?)
    }

    /// Up to [`SNAPSHOT_ROWS_MAX`] payments and refunds, oldest first.
    pub(crate) fn snapshot(&self) -> Result<(Vec<PaymentRecord>, Vec<RefundRecord>)> {
        let connection = self.connection.lock();
        let payments = sqlite::rows(
            &connection,
            &format!("SELECT {PAYMENT_COLUMNS} FROM async_payments ORDER BY seq LIMIT ?1"),
            SNAPSHOT_ROWS_MAX,
            read_record,
        )?;
        let refunds = sqlite::rows(
            &connection,
            &format!("SELECT {REFUND_COLUMNS} FROM async_refunds ORDER BY seq LIMIT ?1"),
            SNAPSHOT_ROWS_MAX,
            read_refund,
        )?;
        Ok((payments, refunds))
    }

    /// A salted hash over every field of the request (length-prefixed, so no two requests
    /// share an encoding).
    fn fingerprint(&self, new: &NewPayment<'_>) -> String {
        let mut hasher = self.salt.hasher();
        let amount = new.amount_minor.to_string();
        let fields = [
            Some(new.channel.name()),
            Some(amount.as_str()),
            Some(new.currency),
            Some(new.description),
            new.payer_account,
            new.payer_name,
        ];
        for field in fields {
            match field {
                Some(value) => {
                    hasher.update([1]);
                    hasher.update((value.len() as u64).to_le_bytes());
                    hasher.update(value.as_bytes());
                }
                None => hasher.update([0]),
            }
        }
        hex::encode(hasher.finalize())
    }
}

fn payment_prefix(channel: Channel) -> &'static str {
    match channel {
        Channel::QrWallet => "qr_",
        Channel::AppWallet => "wx_",
        Channel::BankTransfer => "bt_",
        // Card payments never reach this ledger; a prefix keeps the function total.
        Channel::Card => "ch_",
    }
}

fn refund_prefix(channel: Channel) -> &'static str {
    match channel {
        Channel::QrWallet => "qrrf_",
        Channel::AppWallet => "wxrf_",
        Channel::BankTransfer => "btrt_",
        Channel::Card => "rf_",
    }
}

/// Decides a pending payment whose settle time has come; anything else is returned as it is.
fn settle_if_due(tx: &Transaction<'_>, record: PaymentRecord, now_ms: i64) -> Result<Touched> {
    let due = record.status == PaymentStatus::Pending
        && record.settle_at_ms.is_some_and(|at_ms| at_ms <= now_ms);
    if !due {
        return Ok(Touched {
            record,
            created: false,
            decided: false,
        });
    }
    let failure = record.settle_failure.clone();
    let record = decide(tx, &record, failure.as_deref())?;
    Ok(Touched {
        record,
        created: false,
        decided: true,
    })
}

/// Decides a pending payment as `failure` says (after its settle time, if that has come first);
/// one already decided is returned as it is. `callback_due` is what a decision by this call
/// reports as [`Touched::decided`].
fn decide_unless_decided(
    tx: &Transaction<'_>,
    record: PaymentRecord,
    now_ms: i64,
    failure: Option<&str>,
    callback_due: bool,
) -> Result<Touched> {
    let touched = settle_if_due(tx, record, now_ms)?;
    if touched.decided || touched.record.status != PaymentStatus::Pending {
        return Ok(touched);
    }
    let record = decide(tx, &touched.record, failure)?;
    Ok(Touched {
        record,
        created: false,
        decided: callback_due,
    })
}

/// Moves a pending payment to succeeded (`failure: None`) or failed.
fn decide(
    tx: &Transaction<'_>,
    record: &PaymentRecord,
    failure: Option<&str>,
) -> Result<PaymentRecord> {
    assert_eq!(
        record.status,
        PaymentStatus::Pending,
        "only a pending payment is decided: {}",
        record.provider_ref
    );
    let status = match failure {
        None => PaymentStatus::Succeeded,
        Some(_) => PaymentStatus::Failed,
    };
    let changed = tx.execute_cached(
        "UPDATE async_payments SET status = ?2, failure_code = ?3, updated_unix_s = ?4 \
         WHERE provider_ref = ?1 AND status = 'pending'",
        params![record.provider_ref, status.as_str(), failure, unix_now()],
    )?;
    assert_eq!(
        changed, 1,
        "a pending payment is decided once: {}",
        record.provider_ref
    );
    let after = by_ref(tx, &record.provider_ref)?.ok_or_else(vanished)?;
    assert_eq!(after.status, status);
    assert_payment_invariants(&after);
    Ok(after)
}

fn tombstone(tx: &Transaction<'_>, channel: Channel, key: &str) -> Result<()> {
    tx.execute_cached(
        "INSERT OR IGNORE INTO async_tombstones (channel, idempotency_key, created_unix_s) \
         VALUES (?1, ?2, ?3)",
        params![channel.name(), key, unix_now()],
    )?;
    Ok(())
}

/// A row read back inside the transaction that wrote it is missing: the storage is broken,
/// which is a 500, not a 404.
fn vanished() -> AsyncLedgerError {
    AsyncLedgerError::Storage(rusqlite::Error::QueryReturnedNoRows)
}

/// The ledger's bounds, checked after every change that moves money. The table `CHECK`s
/// repeat them, so a violation would also abort the transaction.
fn assert_payment_invariants(payment: &PaymentRecord) {
    assert!(
        (0..=payment.amount_minor).contains(&payment.refunded_minor),
        "refunded outside [0, amount]: {}",
        payment.provider_ref
    );
    assert!(
        payment.refunded_minor == 0 || payment.status == PaymentStatus::Succeeded,
        "refunded an unpaid payment: {}",
        payment.provider_ref
    );
}

fn payment_where<const N: usize>(
    connection: &Connection,
    condition: &str,
    values: [&str; N],
) -> Result<Option<(PaymentRecord, String)>> {
    Ok(connection
        .query_row_cached(
            &format!("SELECT {PAYMENT_COLUMNS} FROM async_payments WHERE {condition}"),
            rusqlite::params_from_iter(values),
            read_payment,
        )
        .optional()?)
}

fn by_ref(connection: &Connection, provider_ref: &str) -> Result<Option<PaymentRecord>> {
    Ok(payment_where(connection, "provider_ref = ?1", [provider_ref])?.map(|(record, _)| record))
}

/// The payment `provider_ref` if it is `channel`'s (another channel's is not found).
fn channel_payment(
    connection: &Connection,
    channel: Channel,
    provider_ref: &str,
) -> Result<PaymentRecord> {
    payment_where(
        connection,
        "channel = ?1 AND provider_ref = ?2",
        [channel.name(), provider_ref],
    )?
    .map(|(record, _)| record)
    .ok_or(AsyncLedgerError::PaymentNotFound)
}

fn refund_by_key(
    connection: &Connection,
    channel: Channel,
    key: &str,
) -> Result<Option<RefundRecord>> {
    Ok(connection
        .query_row_cached(
            &format!("SELECT {REFUND_COLUMNS} FROM async_refunds WHERE channel = ?1 AND idempotency_key = ?2"),
            params![channel.name(), key],
            read_refund,
        )
        .optional()?)
}

fn read_channel(row: &Row<'_>, column: usize) -> rusqlite::Result<Channel> {
    let name: String = row.get(column)?;
    Channel::from_name(&name).ok_or_else(|| unknown_text(column, "channel"))
}

fn read_payment(row: &Row<'_>) -> rusqlite::Result<(PaymentRecord, String)> {
    let status: String = row.get(5)?;
    let status = match status.as_str() {
        "pending" => PaymentStatus::Pending,
        "succeeded" => PaymentStatus::Succeeded,
        "failed" => PaymentStatus::Failed,
        _ => return Err(unknown_text(5, "status")),
    };
    let record = PaymentRecord {
        channel: read_channel(row, 0)?,
        provider_ref: row.get(1)?,
        idempotency_key: row.get(2)?,
        amount_minor: row.get(3)?,
        currency: row.get(4)?,
        status,
        failure_code: row.get(6)?,
        refunded_minor: row.get(7)?,
        settle_at_ms: row.get(8)?,
        settle_failure: row.get(9)?,
        created_unix_s: row.get(10)?,
    };
    Ok((record, row.get(11)?))
}

fn read_refund(row: &Row<'_>) -> rusqlite::Result<RefundRecord> {
    let status: String = row.get(5)?;
    let status = match status.as_str() {
        "succeeded" => RefundStatus::Succeeded,
        "failed" => RefundStatus::Failed,
        _ => return Err(unknown_text(5, "status")),
    };
    Ok(RefundRecord {
        channel: read_channel(row, 0)?,
        refund_ref: row.get(1)?,
        idempotency_key: row.get(2)?,
        provider_ref: row.get(3)?,
        amount_minor: row.get(4)?,
        status,
        failure_code: row.get(6)?,
        created_unix_s: row.get(7)?,
    })
}

/// A payment row without its request fingerprint.
fn read_record(row: &Row<'_>) -> rusqlite::Result<PaymentRecord> {
    read_payment(row).map(|(record, _)| record)
}

#[cfg(test)]
mod tests;
