//! Opening connections and creating or migrating the schema.
//!
//! The schema version lives in `PRAGMA user_version`. Version 0 is an empty file;
//! each migration moves the file one version up inside one transaction, so a
//! crash mid-migration leaves the previous version intact.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::backend;
use crate::{StoreError, StoreResult};

/// The schema version this code writes and reads.
pub(super) const SCHEMA_VERSION: i64 = 7;

/// Prepared statements kept per connection; the backend uses fewer than this (the outbox's
/// list queries build their WHERE clause from the filter, a few dozen shapes at most).
const STATEMENT_CACHE_CAPACITY: usize = 96;
/// WAL pages written before the writer checkpoints them into the database file (SQLite's
/// default is 1 000). A checkpoint copies each page once however often it changed, so under a
/// burst a longer WAL copies the hot index pages far fewer times; the WAL stays bounded at
/// about this many 4 KiB pages (16 MiB) between checkpoints.
const WAL_AUTOCHECKPOINT_PAGES: u32 = 4_096;
/// The writer's page cache, in KiB (SQLite's default is 2 000). Ids are random, so inserts
/// land on index pages all over each table; a cache that holds the indexes' interior and
/// recent leaf pages saves reading them back for every batch.
const WRITER_CACHE_KIB: i64 = 65_536;

/// Version 0 → 1: the journal, the projections, merchants and idempotency records.
const MIGRATION_1: &str = "
CREATE TABLE journal (
    order_id TEXT NOT NULL,
    seq      INTEGER NOT NULL CHECK (seq >= 1),
    kind     TEXT NOT NULL,
    body     TEXT NOT NULL,
    at_ms    INTEGER NOT NULL,
    PRIMARY KEY (order_id, seq)
) WITHOUT ROWID;

CREATE TABLE payments (
    id                TEXT PRIMARY KEY NOT NULL,
    merchant_id       TEXT NOT NULL,
    merchant_order_id TEXT NOT NULL,
    status            TEXT NOT NULL,
    created_ms        INTEGER NOT NULL,
    body              TEXT NOT NULL,
    awaiting_channel  INTEGER NOT NULL DEFAULT 0,
    UNIQUE (merchant_id, merchant_order_id)
);
CREATE INDEX payments_awaiting_channel ON payments (created_ms, id) WHERE awaiting_channel = 1;
CREATE INDEX payments_by_merchant_newest ON payments (merchant_id, created_ms DESC, id DESC);
CREATE INDEX payments_by_status ON payments (status, created_ms, id);

CREATE TABLE refunds (
    id          TEXT PRIMARY KEY NOT NULL,
    payment_id  TEXT NOT NULL REFERENCES payments (id),
    merchant_id TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX refunds_by_payment ON refunds (payment_id);

CREATE TABLE merchants (
    id                    TEXT PRIMARY KEY NOT NULL,
    name                  TEXT NOT NULL,
    secret_sealed         BLOB NOT NULL,
    webhook_url           TEXT,
    webhook_secret_sealed BLOB NOT NULL,
    created_ms            INTEGER NOT NULL
);

CREATE TABLE idempotency (
    merchant_id TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status      INTEGER NOT NULL,
    body        BLOB NOT NULL,
    created_ms  INTEGER NOT NULL,
    PRIMARY KEY (merchant_id, key)
);
CREATE INDEX idempotency_by_created ON idempotency (created_ms);
";

/// Version 1 → 2: payment methods as data.
const MIGRATION_2: &str = "
CREATE TABLE methods (
    method     TEXT NOT NULL,
    currency   TEXT NOT NULL,
    channel    TEXT NOT NULL,
    min_minor  INTEGER NOT NULL CHECK (min_minor >= 1),
    max_minor  INTEGER NOT NULL CHECK (max_minor >= min_minor),
    enabled    INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (method, currency)
) WITHOUT ROWID;
";

/// Version 2 → 3: stored-value wallets, the journal of their movements, and closed keys.
///
/// `seq` numbers a wallet's movements 1, 2, … (the list order); each movement keeps the
/// balance after it, so the chain can be checked against `wallets.balance_minor`. The CHECKs
/// are the last line: the writer refuses an overdraft before it would trip one.
const MIGRATION_3: &str = "
CREATE TABLE wallets (
    id            TEXT PRIMARY KEY NOT NULL,
    merchant_id   TEXT NOT NULL,
    currency      TEXT NOT NULL,
    balance_minor INTEGER NOT NULL CHECK (balance_minor >= 0),
    customer_ref  TEXT,
    metadata      TEXT NOT NULL DEFAULT '{}',
    created_ms    INTEGER NOT NULL,
    updated_ms    INTEGER NOT NULL
);

CREATE TABLE wallet_movements (
    key                 TEXT PRIMARY KEY NOT NULL,
    wallet_id           TEXT NOT NULL REFERENCES wallets (id),
    seq                 INTEGER NOT NULL CHECK (seq >= 1),
    kind                TEXT NOT NULL
                        CHECK (kind IN ('top_up', 'withdrawal', 'payment', 'refund')),
    amount_minor        INTEGER NOT NULL CHECK (amount_minor > 0),
    balance_after_minor INTEGER NOT NULL CHECK (balance_after_minor >= 0),
    reference           TEXT,
    at_ms               INTEGER NOT NULL,
    UNIQUE (wallet_id, seq)
);

CREATE TABLE wallet_closed_keys (
    key TEXT PRIMARY KEY NOT NULL
) WITHOUT ROWID;
";

/// Version 3 → 4: the transactional outbox — merchant-facing events, one delivery per event,
/// and the log of delivery attempts.
///
/// An event and its pending delivery are inserted by the same append as the transition they
/// report. `deliveries_due` serves the notifier's scan (pending, oldest due first); the
/// `*_newest` indexes serve the newest-first cursor lists.
const MIGRATION_4: &str = "
CREATE TABLE events (
    id          TEXT PRIMARY KEY NOT NULL,
    merchant_id TEXT NOT NULL,
    kind        TEXT NOT NULL,
    object_id   TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX events_by_merchant_newest ON events (merchant_id, created_ms, id);

CREATE TABLE deliveries (
    event_id         TEXT PRIMARY KEY NOT NULL REFERENCES events (id),
    merchant_id      TEXT NOT NULL,
    event_kind       TEXT NOT NULL,
    status           TEXT NOT NULL
                     CHECK (status IN ('pending', 'delivered', 'dead', 'no_endpoint')),
    attempts         INTEGER NOT NULL CHECK (attempts >= 0),
    next_attempt_ms  INTEGER NOT NULL,
    created_ms       INTEGER NOT NULL,
    updated_ms       INTEGER NOT NULL,
    last_http_status INTEGER,
    last_error       TEXT
);
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_ms);
CREATE INDEX deliveries_newest ON deliveries (created_ms, event_id);
CREATE INDEX deliveries_by_merchant_newest ON deliveries (merchant_id, created_ms, event_id);

CREATE TABLE delivery_attempts (
    event_id         TEXT NOT NULL REFERENCES deliveries (event_id),
    attempt          INTEGER NOT NULL CHECK (attempt >= 1),
    at_ms            INTEGER NOT NULL,
    http_status      INTEGER,
    latency_ms       INTEGER NOT NULL CHECK (latency_ms >= 0),
    error            TEXT,
    response_excerpt TEXT NOT NULL,
    PRIMARY KEY (event_id, attempt)
);
";

/// Version 4 → 5: the broker relay's mark. `handed_off = 1` says a message for the
/// delivery's next attempt is in the broker (confirmed); every attempt, replay and resend
/// clears it. `deliveries_relay` serves the relay's scan (pending, not handed off, due).
const MIGRATION_5: &str = "
ALTER TABLE deliveries ADD COLUMN handed_off INTEGER NOT NULL DEFAULT 0
    CHECK (handed_off IN (0, 1));
CREATE INDEX deliveries_relay ON deliveries (next_attempt_ms, event_id)
    WHERE status = 'pending' AND handed_off = 0;
";

/// Version 5 → 6: nothing. PostgreSQL's version 6 is the cluster's leases, which an embedded
/// store serving one node does not need; the step keeps both backends' version numbers equal
/// from here on.
const MIGRATION_6: &str = "";

/// Version 6 → 7: secret rotation. The secret before the last rotation (sealed like the
/// current one) and when it stops being accepted; both NULL until the first rotation.
const MIGRATION_7: &str = "
ALTER TABLE merchants ADD COLUMN previous_secret_sealed BLOB;
ALTER TABLE merchants ADD COLUMN previous_secret_expires_ms INTEGER;
";

/// Migrations in order: `MIGRATIONS[n]` moves the schema from version `n` to `n + 1`.
const MIGRATIONS: [&str; 7] = [
    MIGRATION_1,
    MIGRATION_2,
    MIGRATION_3,
    MIGRATION_4,
    MIGRATION_5,
    MIGRATION_6,
    MIGRATION_7,
];

/// Opens the one read-write connection: WAL, `synchronous=FULL`, foreign keys,
/// and the schema brought up to [`SCHEMA_VERSION`].
pub(super) fn open_writer(path: &Path, busy_timeout_ms: u64) -> StoreResult<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| backend(format!("open {} for writing", path.display()), e))?;
    conn.busy_timeout(Duration::from_millis(busy_timeout_ms))
        .map_err(|e| backend("set busy_timeout", e))?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(|e| backend("set journal_mode=WAL", e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!(
            "{}: SQLite refused WAL mode (journal_mode is {mode})",
            path.display()
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(|e| backend("set synchronous=FULL", e))?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(|e| backend("set foreign_keys=ON", e))?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
        .map_err(|e| backend("set wal_autocheckpoint", e))?;
    conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)
        .map_err(|e| backend("set cache_size", e))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    migrate(&conn, path)?;
    Ok(conn)
}

/// Opens one read-only connection. Call after [`open_writer`]: the file, its
/// WAL and its shared-memory index must already exist.
pub(super) fn open_reader(path: &Path, busy_timeout_ms: u64) -> StoreResult<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| backend(format!("open {} for reading", path.display()), e))?;
    conn.busy_timeout(Duration::from_millis(busy_timeout_ms))
        .map_err(|e| backend("set busy_timeout", e))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    let version = user_version(&conn)?;
    if version != SCHEMA_VERSION {
        return Err(StoreError::Corrupt(format!(
            "{}: reader sees schema version {version}, expected {SCHEMA_VERSION}",
            path.display()
        )));
    }
    Ok(conn)
}

fn user_version(conn: &Connection) -> StoreResult<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|e| backend("read user_version", e))
}

/// Applies every migration the file lacks, one transaction each.
fn migrate(conn: &Connection, path: &Path) -> StoreResult<()> {
    let found = user_version(conn)?;
    if !(0..=SCHEMA_VERSION).contains(&found) {
        return Err(StoreError::Corrupt(format!(
            "{}: schema version {found} is not one this build knows (0..={SCHEMA_VERSION})",
            path.display()
        )));
    }
    // `found` is in 0..=SCHEMA_VERSION, so the loop runs at most MIGRATIONS.len() times.
    for version in found..SCHEMA_VERSION {
        let index = usize::try_from(version)
            .map_err(|_| StoreError::Corrupt(format!("schema version {version} out of range")))?;
        let sql = MIGRATIONS.get(index).ok_or_else(|| {
            StoreError::Corrupt(format!("no migration from schema version {version}"))
        })?;
        let next = version + 1;
        let batch = format!("BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {next};\nCOMMIT;");
        if let Err(e) = conn.execute_batch(&batch) {
            // Leave the file at `version`; a failed ROLLBACK means nothing was open.
            let _ = conn.execute_batch("ROLLBACK");
            return Err(backend(format!("migrate schema {version} -> {next}"), e));
        }
    }
    debug_assert_eq!(user_version(conn).ok(), Some(SCHEMA_VERSION));
    Ok(())
}
