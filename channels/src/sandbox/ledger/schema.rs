//! The ledger file's tables and their migration in place.
//!
//! Versions (`PRAGMA user_version`):
//!
//! * 1: charges, charge operations (`capture`, `void`), refunds, tombstones.
//! * 2: `requires_action` joined the charge statuses (3-D Secure).
//! * 3: pre-authorisation reverts and reversals. `charges.reversed`; operations of kind
//!   `uncapture` and `reverse`; each operation keeps the charge as its first answer showed it
//!   (`*_after` columns), so a replayed key answers what it answered the first time; checks
//!   that a voided charge holds no capture and a reversed one no refund.
//!
//! SQLite cannot alter a `CHECK`, so an older file has its `charges` and `charge_operations`
//! tables rebuilt (create, copy, drop, rename) in one transaction, keeping every row.

use rusqlite::{Connection, TransactionBehavior};

/// The ledger file's schema version (`PRAGMA user_version`).
pub(super) const LEDGER_VERSION: i64 = 3;

const META: &str = "(
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
)";

const CHARGES: &str = "(
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    charge_id         TEXT    NOT NULL UNIQUE,
    idempotency_key   TEXT    NOT NULL UNIQUE,
    amount_minor      INTEGER NOT NULL CHECK (amount_minor > 0),
    currency          TEXT    NOT NULL,
    pan_fingerprint   TEXT    NOT NULL,
    card_bin          TEXT    NOT NULL CHECK (length(card_bin) = 6),
    card_last4        TEXT    NOT NULL CHECK (length(card_last4) = 4),
    capture_requested INTEGER NOT NULL,
    status            TEXT    NOT NULL CHECK (status IN ('succeeded', 'authorized', 'declined', 'requires_action')),
    decline_code      TEXT,
    captured_minor    INTEGER NOT NULL DEFAULT 0,
    refunded_minor    INTEGER NOT NULL DEFAULT 0,
    voided            INTEGER NOT NULL DEFAULT 0,
    reversed          INTEGER NOT NULL DEFAULT 0,
    created_unix_s    INTEGER NOT NULL,
    CHECK (0 <= refunded_minor AND refunded_minor <= captured_minor
           AND captured_minor <= amount_minor),
    CHECK (voided = 0 OR captured_minor = 0),
    CHECK (reversed = 0 OR (status = 'succeeded' AND captured_minor > 0
                            AND refunded_minor = 0 AND voided = 0))
)";

/// `amount_minor` is the money the operation moved (captured, reverted or reversed; 0 for a
/// void). The `*_after` columns are the charge as the operation's answer showed it; they are
/// NULL for operations recorded before version 3, which replay the charge as it is now.
const CHARGE_OPERATIONS: &str = "(
    idempotency_key      TEXT    PRIMARY KEY,
    charge_id            TEXT    NOT NULL REFERENCES charges (charge_id),
    kind                 TEXT    NOT NULL CHECK (kind IN ('capture', 'void', 'uncapture', 'reverse')),
    amount_minor         INTEGER NOT NULL,
    status_after         TEXT,
    captured_minor_after INTEGER,
    refunded_minor_after INTEGER,
    voided_after         INTEGER,
    reversed_after       INTEGER
)";

const REFUNDS: &str = "(
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    refund_id       TEXT    NOT NULL UNIQUE,
    idempotency_key TEXT    NOT NULL UNIQUE,
    charge_id       TEXT    NOT NULL REFERENCES charges (charge_id),
    amount_minor    INTEGER NOT NULL CHECK (amount_minor > 0),
    status          TEXT    NOT NULL CHECK (status IN ('succeeded', 'failed')),
    failure_code    TEXT,
    created_unix_s  INTEGER NOT NULL
)";

const TOMBSTONES: &str = "(
    idempotency_key TEXT    PRIMARY KEY,
    created_unix_s  INTEGER NOT NULL
)";

/// The columns `charges` had in versions 1 and 2, copied by the rebuild.
const CHARGES_V2_COLUMNS: &str = "seq, charge_id, idempotency_key, amount_minor, currency, \
    pan_fingerprint, card_bin, card_last4, capture_requested, status, decline_code, \
    captured_minor, refunded_minor, voided, created_unix_s";

/// The columns `charge_operations` had in versions 1 and 2, copied by the rebuild.
const CHARGE_OPERATIONS_V2_COLUMNS: &str = "idempotency_key, charge_id, kind, amount_minor";

/// Creates the missing tables of a new or older ledger and migrates an older one in place.
///
/// A file written by a newer sandbox (a higher version) is opened as it is and left at its
/// version: its extra columns have defaults, and its checks still guard what this one writes.
pub(super) fn migrate(connection: &mut Connection) -> rusqlite::Result<()> {
    let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version > LEDGER_VERSION {
        tracing::warn!(
            version,
            supported = LEDGER_VERSION,
            "the sandbox ledger was written by a newer sandbox"
        );
    } else if version < LEDGER_VERSION && table_exists(connection, "charges")? {
        connection.pragma_update(None, "foreign_keys", "OFF")?;
        let rebuilt = rebuild_to_current(connection);
        connection.pragma_update(None, "foreign_keys", "ON")?;
        rebuilt?;
    }
    for (table, columns) in [
        ("meta", META),
        ("charges", CHARGES),
        ("charge_operations", CHARGE_OPERATIONS),
        ("refunds", REFUNDS),
        ("tombstones", TOMBSTONES),
    ] {
        connection.execute_batch(&format!("CREATE TABLE IF NOT EXISTS {table} {columns};"))?;
    }
    if version < LEDGER_VERSION {
        connection.pragma_update(None, "user_version", LEDGER_VERSION)?;
    }
    Ok(())
}

/// Rebuilds `charges` (and `charge_operations`, when the file has it) with the current DDL,
/// copying every row, and stamps the version, all in one transaction: a failure leaves the
/// file as it was. Foreign keys are off (the caller's job: the pragma is a no-op inside a
/// transaction) because `refunds` and `charge_operations` point at `charges` by name.
fn rebuild_to_current(connection: &mut Connection) -> rusqlite::Result<()> {
    let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut tables = vec![("charges", CHARGES, CHARGES_V2_COLUMNS)];
    if table_exists(&tx, "charge_operations")? {
        tables.push((
            "charge_operations",
            CHARGE_OPERATIONS,
            CHARGE_OPERATIONS_V2_COLUMNS,
        ));
    }
    for (table, ddl, copied) in tables {
        tx.execute_batch(&format!(
            "CREATE TABLE {table}_v{LEDGER_VERSION} {ddl};
             INSERT INTO {table}_v{LEDGER_VERSION} ({copied}) SELECT {copied} FROM {table};
             DROP TABLE {table};
             ALTER TABLE {table}_v{LEDGER_VERSION} RENAME TO {table};"
        ))?;
    }
    tx.pragma_update(None, "user_version", LEDGER_VERSION)?;
    tx.commit()
}

fn table_exists(connection: &Connection, table: &str) -> rusqlite::Result<bool> {
    connection.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [table],
        |row| row.get(0),
    )
}

#[cfg(test)]
mod tests {
    use super::super::{ChargeStatus, Ledger};
    use super::*;

    /// Version 2's DDL, frozen as it shipped, so the test migrates what real files hold.
    const V2_SCHEMA: &str = "
        CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
        CREATE TABLE charges (
            seq               INTEGER PRIMARY KEY AUTOINCREMENT,
            charge_id         TEXT    NOT NULL UNIQUE,
            idempotency_key   TEXT    NOT NULL UNIQUE,
            amount_minor      INTEGER NOT NULL CHECK (amount_minor > 0),
            currency          TEXT    NOT NULL,
            pan_fingerprint   TEXT    NOT NULL,
            card_bin          TEXT    NOT NULL CHECK (length(card_bin) = 6),
            card_last4        TEXT    NOT NULL CHECK (length(card_last4) = 4),
            capture_requested INTEGER NOT NULL,
            status            TEXT    NOT NULL CHECK (status IN ('succeeded', 'authorized', 'declined', 'requires_action')),
            decline_code      TEXT,
            captured_minor    INTEGER NOT NULL DEFAULT 0,
            refunded_minor    INTEGER NOT NULL DEFAULT 0,
            voided            INTEGER NOT NULL DEFAULT 0,
            created_unix_s    INTEGER NOT NULL,
            CHECK (0 <= refunded_minor AND refunded_minor <= captured_minor
                   AND captured_minor <= amount_minor)
        );
        CREATE TABLE charge_operations (
            idempotency_key TEXT    PRIMARY KEY,
            charge_id       TEXT    NOT NULL REFERENCES charges (charge_id),
            kind            TEXT    NOT NULL CHECK (kind IN ('capture', 'void')),
            amount_minor    INTEGER NOT NULL
        );
        CREATE TABLE refunds (
            seq             INTEGER PRIMARY KEY AUTOINCREMENT,
            refund_id       TEXT    NOT NULL UNIQUE,
            idempotency_key TEXT    NOT NULL UNIQUE,
            charge_id       TEXT    NOT NULL REFERENCES charges (charge_id),
            amount_minor    INTEGER NOT NULL CHECK (amount_minor > 0),
            status          TEXT    NOT NULL CHECK (status IN ('succeeded', 'failed')),
            failure_code    TEXT,
            created_unix_s  INTEGER NOT NULL
        );
        CREATE TABLE tombstones (idempotency_key TEXT PRIMARY KEY, created_unix_s INTEGER NOT NULL);
        INSERT INTO charges (charge_id, idempotency_key, amount_minor, currency, pan_fingerprint,
            card_bin, card_last4, capture_requested, status, captured_minor, created_unix_s)
            VALUES ('ch_1', 'pay_1', 100, 'USD', 'f', '424242', '4242', 0, 'succeeded', 100, 1);
        INSERT INTO charge_operations (idempotency_key, charge_id, kind, amount_minor)
            VALUES ('cap_1', 'ch_1', 'capture', 100);
        INSERT INTO refunds (refund_id, idempotency_key, charge_id, amount_minor, status,
            created_unix_s) VALUES ('rf_1', 're_1', 'ch_1', 40, 'succeeded', 1);
        UPDATE charges SET refunded_minor = 40 WHERE charge_id = 'ch_1';
    ";

    fn old_file(schema: &str, version: i64) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(schema).unwrap();
        old.pragma_update(None, "user_version", version).unwrap();
        (dir, path)
    }

    fn version_of(ledger: &Ledger) -> i64 {
        ledger
            .connection
            .lock()
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap()
    }

    #[test]
    fn a_version_2_ledger_keeps_its_rows_and_learns_reversals() {
        let (_dir, path) = old_file(V2_SCHEMA, 2);
        let ledger = Ledger::open(Some(&path)).unwrap();
        assert_eq!(version_of(&ledger), LEDGER_VERSION);
        let charge = ledger.charge("ch_1").unwrap();
        assert_eq!(
            (
                charge.captured_minor,
                charge.refunded_minor,
                charge.reversed
            ),
            (100, 40, false)
        );
        // The old capture key still replays (as the charge is now: it has no first answer).
        let (replayed, _) = ledger.capture("cap_1", "ch_1", 100).unwrap();
        assert_eq!(replayed.refunded_minor, 40);
        // The refund is still there and still blocks a reversal and a revert.
        assert!(ledger.reverse("rev_1", "ch_1").is_err());
        assert!(ledger.uncapture("unc_1", "ch_1").is_err());
        // The new operation kinds and the reversed column are accepted.
        let connection = ledger.connection.lock();
        connection
            .execute(
                "INSERT INTO charge_operations (idempotency_key, charge_id, kind, amount_minor) \
                 VALUES ('rev_2', 'ch_1', 'reverse', 0)",
                [],
            )
            .unwrap();
        // …and the new checks hold: a reversed charge cannot carry a refund.
        assert!(
            connection
                .execute(
                    "UPDATE charges SET reversed = 1 WHERE charge_id = 'ch_1'",
                    []
                )
                .is_err()
        );
        let foreign_keys_on: bool = connection
            .pragma_query_value(None, "foreign_keys", |row| row.get(0))
            .unwrap();
        assert!(foreign_keys_on);
    }

    #[test]
    fn a_version_1_ledger_migrates_straight_to_the_current_version() {
        let v1 = V2_SCHEMA.replace(", 'requires_action'", "");
        let (_dir, path) = old_file(&v1, 1);
        let ledger = Ledger::open(Some(&path)).unwrap();
        assert_eq!(version_of(&ledger), LEDGER_VERSION);
        assert_eq!(
            ledger.charge("ch_1").unwrap().status,
            ChargeStatus::Succeeded
        );
        ledger
            .connection
            .lock()
            .execute(
                "UPDATE charges SET status = 'requires_action', captured_minor = 0, \
                 refunded_minor = 0 WHERE charge_id = 'ch_1'",
                [],
            )
            .unwrap();
    }

    #[test]
    fn reopening_a_current_ledger_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        drop(Ledger::open(Some(&path)).unwrap());
        let ledger = Ledger::open(Some(&path)).unwrap();
        assert_eq!(version_of(&ledger), LEDGER_VERSION);
    }
}
