//! Connecting, creating the schema and migrating it.
//!
//! Every table lives in one PostgreSQL schema (`PostgresConfig::schema`), named on every
//! connection through the startup option `search_path`, so several deployments (or tests)
//! can share a database without seeing each other's rows.
//!
//! The version lives in `kassa_schema_version`, one row per migration applied. Each
//! migration runs in its own transaction, which first takes a transaction-scoped advisory
//! lock derived from the schema's name (`pg_advisory_xact_lock`): several nodes starting at
//! once (or several `kassa migrate`) serialise on it, and each sees the versions the others
//! committed, so every migration runs exactly once. A crash mid-migration rolls its
//! transaction back and leaves the previous version intact (PostgreSQL's DDL is
//! transactional).
//!
//! The migrations describe the same schema as SQLite's version 5 (`sqlite/schema.rs`), in one
//! step (then version 6 adds cluster leases, and version 7 — like SQLite's 7 — merchants'
//! previous secrets), with PostgreSQL's types: `BIGINT` for SQLite's `INTEGER` (milliseconds, minor units,
//! seqs), `BOOLEAN` for its 0/1 flags, `BYTEA` for `BLOB`. Every text column compares
//! bytewise (`COLLATE "C"`), like SQLite's default `BINARY` collation, so the newest-first
//! lists break `created_ms` ties by id in the same order on both backends.

use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use super::{PostgresConfig, backend};
use crate::{StoreError, StoreResult};

/// The schema version this code writes and reads: SQLite's version 5, plus version 6
/// (cluster leases, which an embedded store serving one node does not need; SQLite's 6 is
/// empty) and version 7 (secret rotation, the same as SQLite's 7).
pub(super) const SCHEMA_VERSION: i64 = 7;

/// The table of applied migrations.
const VERSION_TABLE: &str = "
CREATE TABLE IF NOT EXISTS kassa_schema_version (
    version    INTEGER PRIMARY KEY CHECK (version >= 1),
    applied_ms BIGINT NOT NULL
)";

/// Version 0 → 5: SQLite's schema version 5 in one step. The journal, the projections,
/// merchants, idempotency records, methods, wallets and their movements, the outbox (events,
/// deliveries with the relay's `handed_off` mark, attempts), with the same keys, CHECKs and
/// indexes.
const MIGRATION_5: &str = r#"
CREATE TABLE journal (
    order_id TEXT COLLATE "C" NOT NULL,
    seq      BIGINT NOT NULL CHECK (seq >= 1),
    kind     TEXT COLLATE "C" NOT NULL,
    body     TEXT NOT NULL,
    at_ms    BIGINT NOT NULL,
    CONSTRAINT journal_pkey PRIMARY KEY (order_id, seq)
);

CREATE TABLE payments (
    id                TEXT COLLATE "C" PRIMARY KEY,
    merchant_id       TEXT COLLATE "C" NOT NULL,
    merchant_order_id TEXT COLLATE "C" NOT NULL,
    status            TEXT COLLATE "C" NOT NULL,
    created_ms        BIGINT NOT NULL,
    body              TEXT NOT NULL,
    awaiting_channel  BOOLEAN NOT NULL DEFAULT FALSE,
    CONSTRAINT payments_merchant_order UNIQUE (merchant_id, merchant_order_id)
);
CREATE INDEX payments_awaiting_channel ON payments (created_ms, id) WHERE awaiting_channel;
CREATE INDEX payments_by_merchant_newest ON payments (merchant_id, created_ms DESC, id DESC);
CREATE INDEX payments_by_status ON payments (status, created_ms, id);

CREATE TABLE refunds (
    id          TEXT COLLATE "C" PRIMARY KEY,
    payment_id  TEXT COLLATE "C" NOT NULL REFERENCES payments (id),
    merchant_id TEXT COLLATE "C" NOT NULL,
    status      TEXT COLLATE "C" NOT NULL,
    created_ms  BIGINT NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX refunds_by_payment ON refunds (payment_id);

CREATE TABLE merchants (
    id                    TEXT COLLATE "C" PRIMARY KEY,
    name                  TEXT NOT NULL,
    secret_sealed         BYTEA NOT NULL,
    webhook_url           TEXT,
    webhook_secret_sealed BYTEA NOT NULL,
    created_ms            BIGINT NOT NULL
);

CREATE TABLE idempotency (
    merchant_id TEXT COLLATE "C" NOT NULL,
    key         TEXT COLLATE "C" NOT NULL,
    fingerprint TEXT COLLATE "C" NOT NULL,
    status      INTEGER NOT NULL,
    body        BYTEA NOT NULL,
    created_ms  BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, key)
);
CREATE INDEX idempotency_by_created ON idempotency (created_ms);

CREATE TABLE methods (
    method     TEXT COLLATE "C" NOT NULL,
    currency   TEXT COLLATE "C" NOT NULL,
    channel    TEXT COLLATE "C" NOT NULL,
    min_minor  BIGINT NOT NULL CHECK (min_minor >= 1),
    max_minor  BIGINT NOT NULL CHECK (max_minor >= min_minor),
    enabled    BOOLEAN NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (method, currency)
);

CREATE TABLE wallets (
    id            TEXT COLLATE "C" PRIMARY KEY,
    merchant_id   TEXT COLLATE "C" NOT NULL,
    currency      TEXT COLLATE "C" NOT NULL,
    balance_minor BIGINT NOT NULL CHECK (balance_minor >= 0),
    customer_ref  TEXT,
    metadata      TEXT NOT NULL DEFAULT '{}',
    created_ms    BIGINT NOT NULL,
    updated_ms    BIGINT NOT NULL
);

CREATE TABLE wallet_movements (
    key                 TEXT COLLATE "C" PRIMARY KEY,
    wallet_id           TEXT COLLATE "C" NOT NULL REFERENCES wallets (id),
    seq                 BIGINT NOT NULL CHECK (seq >= 1),
    kind                TEXT COLLATE "C" NOT NULL
                        CHECK (kind IN ('top_up', 'withdrawal', 'payment', 'refund')),
    amount_minor        BIGINT NOT NULL CHECK (amount_minor > 0),
    balance_after_minor BIGINT NOT NULL CHECK (balance_after_minor >= 0),
    reference           TEXT,
    at_ms               BIGINT NOT NULL,
    UNIQUE (wallet_id, seq)
);

CREATE TABLE wallet_closed_keys (
    key TEXT COLLATE "C" PRIMARY KEY
);

CREATE TABLE events (
    id          TEXT COLLATE "C" PRIMARY KEY,
    merchant_id TEXT COLLATE "C" NOT NULL,
    kind        TEXT COLLATE "C" NOT NULL,
    object_id   TEXT COLLATE "C" NOT NULL,
    created_ms  BIGINT NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX events_by_merchant_newest ON events (merchant_id, created_ms, id);

CREATE TABLE deliveries (
    event_id         TEXT COLLATE "C" PRIMARY KEY REFERENCES events (id),
    merchant_id      TEXT COLLATE "C" NOT NULL,
    event_kind       TEXT COLLATE "C" NOT NULL,
    status           TEXT COLLATE "C" NOT NULL
                     CHECK (status IN ('pending', 'delivered', 'dead', 'no_endpoint')),
    attempts         BIGINT NOT NULL CHECK (attempts >= 0),
    next_attempt_ms  BIGINT NOT NULL,
    created_ms       BIGINT NOT NULL,
    updated_ms       BIGINT NOT NULL,
    last_http_status INTEGER,
    last_error       TEXT,
    handed_off       BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_ms);
CREATE INDEX deliveries_newest ON deliveries (created_ms, event_id);
CREATE INDEX deliveries_by_merchant_newest ON deliveries (merchant_id, created_ms, event_id);
CREATE INDEX deliveries_relay ON deliveries (next_attempt_ms, event_id)
    WHERE status = 'pending' AND NOT handed_off;

CREATE TABLE delivery_attempts (
    event_id         TEXT COLLATE "C" NOT NULL REFERENCES deliveries (event_id),
    attempt          BIGINT NOT NULL CHECK (attempt >= 1),
    at_ms            BIGINT NOT NULL,
    http_status      INTEGER,
    latency_ms       BIGINT NOT NULL CHECK (latency_ms >= 0),
    error            TEXT,
    response_excerpt TEXT NOT NULL,
    PRIMARY KEY (event_id, attempt)
);
"#;

/// Version 5 → 6: the leases of work that runs on one node at a time (`Store::try_lease`).
/// `fence` grows each time a lease changes hands; `expires_ms` is the database's clock.
const MIGRATION_6: &str = r#"
CREATE TABLE leases (
    name       TEXT COLLATE "C" PRIMARY KEY,
    holder     TEXT COLLATE "C" NOT NULL,
    fence      BIGINT NOT NULL CHECK (fence >= 1),
    expires_ms BIGINT NOT NULL
);
"#;

/// Version 6 → 7: secret rotation (SQLite's version 7). The secret before the last rotation
/// (sealed like the current one) and when it stops being accepted; both NULL until the first
/// rotation.
const MIGRATION_7: &str = r#"
ALTER TABLE merchants ADD COLUMN previous_secret_sealed BYTEA;
ALTER TABLE merchants ADD COLUMN previous_secret_expires_ms BIGINT;
"#;

/// Migrations in order: `(version, sql)`, each moving the schema from the previous entry's
/// version (0 for the first) to `version`. PostgreSQL starts at SQLite's version 5; version 6
/// is PostgreSQL's own (leases); from version 7 on both backends number their schema alike.
/// The next change to both backends' schema is version 8.
const MIGRATIONS: [(i64, &str); 3] = [(5, MIGRATION_5), (6, MIGRATION_6), (7, MIGRATION_7)];

/// Takes `name` for `holder` when it is free, expired or already `holder`'s, for `ttl_ms`
/// from now by the database's clock; answers the fence, or `None` while another holds it.
pub(super) async fn try_lease(
    client: &Client,
    name: &str,
    holder: &str,
    ttl_ms: u64,
) -> StoreResult<Option<u64>> {
    let ttl_ms = i64::try_from(ttl_ms).unwrap_or(i64::MAX / 2);
    let row = client
        .query_opt(
            "WITH now AS (SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint AS ms)
             INSERT INTO leases AS l (name, holder, fence, expires_ms)
             SELECT $1, $2, 1, now.ms + $3 FROM now
             ON CONFLICT (name) DO UPDATE SET
                 fence = l.fence + CASE WHEN l.holder = excluded.holder THEN 0 ELSE 1 END,
                 holder = excluded.holder,
                 expires_ms = excluded.expires_ms
             WHERE l.holder = excluded.holder
                OR l.expires_ms <= (SELECT ms FROM now)
             RETURNING fence",
            &[&name, &holder, &ttl_ms],
        )
        .await
        .map_err(|e| backend(format!("take lease {name}"), e))?;
    match row {
        None => Ok(None),
        Some(row) => {
            let fence: i64 = row
                .try_get(0)
                .map_err(|e| backend(format!("read lease {name}"), e))?;
            Ok(Some(u64::try_from(fence).unwrap_or(0)))
        }
    }
}

/// What [`super::migrate`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// The schema's version before (0: the schema or its tables did not exist).
    pub from_version: i64,
    /// The schema's version after: this build's version.
    pub to_version: i64,
    /// The versions this call applied, in order; empty when the schema was up to date (or
    /// another node migrated it first).
    pub applied: Vec<i64>,
}

/// The connection settings of every connection: the URL's, plus the schema as
/// `search_path`, the statement timeout, and the connect timeout.
pub(super) fn pg_config(config: &PostgresConfig) -> StoreResult<tokio_postgres::Config> {
    // The URL may carry a password: the parse error is reported without it.
    let mut pg: tokio_postgres::Config = config.url.parse().map_err(|e| {
        StoreError::Backend(format!("postgres config: url is not a PostgreSQL URL: {e}"))
    })?;
    // The schema name was checked to be a plain identifier, so it needs no escaping here.
    let options = format!(
        "{} -c search_path={} -c statement_timeout={}",
        pg.get_options().unwrap_or_default(),
        config.schema,
        config.statement_timeout_ms
    );
    pg.options(options.trim_start());
    pg.connect_timeout(Duration::from_millis(config.connect_timeout_ms));
    if pg.get_application_name().is_none() {
        pg.application_name("kassa");
    }
    Ok(pg)
}

/// One connection outside the pools (migrations), its driver task spawned on the runtime.
pub(super) async fn connect(config: &PostgresConfig) -> StoreResult<Client> {
    let (client, connection) = pg_config(config)?
        .connect(NoTls)
        .await
        .map_err(|e| backend("connect to PostgreSQL", e))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(error = %super::describe(&error), "postgres: connection closed");
        }
    });
    Ok(client)
}

/// Creates the schema if missing and applies every migration it lacks, one transaction each.
pub(super) async fn migrate(config: &PostgresConfig) -> StoreResult<MigrationReport> {
    let mut client = connect(config).await?;
    let lock_key = format!("kassa-migrate:{}", config.schema);
    let quoted_schema = format!("\"{}\"", config.schema);
    let mut report = MigrationReport {
        from_version: -1,
        to_version: 0,
        applied: Vec::new(),
    };
    // Step 0 creates the schema and the version table; then one step per migration.
    for step in 0..=MIGRATIONS.len() {
        let tx = client
            .transaction()
            .await
            .map_err(|e| backend("begin a migration transaction", e))?;
        // A migration may wait for another node's; neither is cut short by the timeout.
        tx.batch_execute("SET LOCAL statement_timeout = 0")
            .await
            .map_err(|e| backend("lift the statement timeout for migrations", e))?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))",
            &[&lock_key],
        )
        .await
        .map_err(|e| backend("take the migration lock", e))?;
        if step == 0 {
            tx.batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {quoted_schema}; {VERSION_TABLE}"
            ))
            .await
            .map_err(|e| backend(format!("create schema {}", config.schema), e))?;
            let found = current_version(&tx).await?;
            if !(0..=SCHEMA_VERSION).contains(&found) {
                return Err(StoreError::Corrupt(format!(
                    "postgres schema {}: version {found} is not one this build knows \
                     (0..={SCHEMA_VERSION})",
                    config.schema
                )));
            }
            report.from_version = found;
        } else {
            let (version, sql) = MIGRATIONS[step - 1];
            let found = current_version(&tx).await?;
            if found >= version {
                // Already applied (by another node since step 0, or before this call).
                tx.commit()
                    .await
                    .map_err(|e| backend("end a migration transaction", e))?;
                continue;
            }
            tx.batch_execute(sql)
                .await
                .map_err(|e| backend(format!("migrate schema {found} -> {version}"), e))?;
            tx.execute(
                "INSERT INTO kassa_schema_version (version, applied_ms)
                 VALUES ($1::integer, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint)",
                &[&i32::try_from(version).unwrap_or(i32::MAX)],
            )
            .await
            .map_err(|e| backend(format!("record schema version {version}"), e))?;
            report.applied.push(version);
        }
        tx.commit()
            .await
            .map_err(|e| backend(format!("commit migration step {step}"), e))?;
    }
    report.to_version = check_version(&client, &config.schema).await?;
    Ok(report)
}

/// The highest version applied, 0 if none.
async fn current_version(client: &impl tokio_postgres::GenericClient) -> StoreResult<i64> {
    let row = client
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::bigint FROM kassa_schema_version",
            &[],
        )
        .await
        .map_err(|e| backend("read the schema version", e))?;
    row.try_get(0)
        .map_err(|e| backend("read the schema version", e))
}

/// The schema's version, which must be this build's.
pub(super) async fn check_version(
    client: &impl tokio_postgres::GenericClient,
    schema: &str,
) -> StoreResult<i64> {
    let version = current_version(client).await?;
    if version != SCHEMA_VERSION {
        return Err(StoreError::Corrupt(format!(
            "postgres schema {schema}: version {version}, expected {SCHEMA_VERSION}"
        )));
    }
    Ok(version)
}
