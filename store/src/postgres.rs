//! The server backend: PostgreSQL, for deployments that run several Kassa nodes or want the
//! database apart from the process.
//!
//! It keeps every semantic of the SQLite backend (`sqlite.rs`): the same checks before
//! queueing, the same answers, the same errors, the same newest-first cursors. Those that do
//! not depend on the SQL are one piece of code for both: the checks, the queued requests and
//! the group commit in `write_request.rs`, the row checks and the paging in `rows.rs`. What
//! differs is where the data lives and what else may write it.
//!
//! # Layout
//! - `postgres.rs` — [`PostgresConfig`], [`PostgresStore`] (the [`Store`] impl: checks,
//!   then a queued write or a pooled read) and [`migrate`].
//! - `postgres/schema.rs` — connection settings, the migrations and their advisory lock.
//! - `postgres/writer.rs` — the writer task, its connection's transaction control, and the
//!   statements each queued write runs (the batch itself is `write_request::commit_batch`).
//! - `postgres/write_ops.rs` — each write's statements (journal, projections, merchants,
//!   methods, idempotency).
//! - `postgres/reader.rs` — the read queries of the journal, projections, merchants, methods
//!   and idempotency records.
//! - `postgres/wallets.rs`, `postgres/outbox.rs` — wallets and the outbox, both sides.
//!
//! # Writes: one task, group commit
//! Like SQLite, every write goes through a bounded queue (`write_queue_max`; full →
//! [`StoreError::Overloaded`] at once) to one writer task with its own connection. It takes
//! whatever is queued (up to `group_commit_batch_max`) into ONE transaction, each request in
//! its own `SAVEPOINT` (a failing request is rolled back alone and answered with its own
//! error), COMMITs once, and only then answers the callers. One COMMIT per batch is one WAL
//! flush per batch, which is what makes the throughput.
//!
//! # Several nodes on one database
//! Unlike SQLite's file, the schema may be written by several stores at once (several nodes,
//! `kassa migrate`). The statements are written for that under `READ COMMITTED`:
//! - Two appends that expect the same seq of one order cannot both land: the journal's
//!   primary key `(order_id, seq)` lets one insert through; the other finds the row taken
//!   (after the first commits) and answers [`AppendError::SeqConflict`] with the seq it then
//!   reads, exactly as when both ran on one node.
//! - A `(merchant_id, merchant_order_id)` taken by another node's commit is
//!   [`AppendError::DuplicateMerchantOrderId`], like one taken earlier on this node.
//! - A wallet move locks its wallet row (`FOR UPDATE`) and its key (a transaction-scoped
//!   advisory lock, also taken by `close_wallet_key`), so the balance a move checks is the
//!   balance it changes and a key moves money at most once across nodes.
//! - An attempt locks its delivery row before moving it on.
//!
//! Locks taken by one node's batch are held until its COMMIT; two nodes locking the same rows
//! in opposite orders are a deadlock PostgreSQL breaks by failing one statement, which fails
//! that one request (its savepoint), not its batch.
//!
//! # Reads: a pool
//! Reads run on a `deadpool-postgres` pool of at most `pool_size_max` connections; each query
//! is its own statement, so it sees every commit that finished before it started: a read
//! issued after a write's future resolved sees that write.
//!
//! # Shutdown
//! [`Store::shutdown`] refuses new writes and reads at once, then waits for the writer to
//! commit everything already queued. Dropping the last handle closes the queue and the pool
//! too, but cannot block for the drain like SQLite's does (the writer is a task on the
//! runtime, not a thread): the writer finishes the queue on its own while the runtime runs.

mod outbox;
mod reader;
mod schema;
mod wallets;
mod write_ops;
mod writer;

use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod};
use futures::FutureExt;
use futures::future::BoxFuture;
use parking_lot::RwLock;
use tokio::sync::{mpsc, watch};
use tokio_postgres::NoTls;

pub use schema::MigrationReport;

use crate::rows::i64_from_seq;
use crate::write_request::{self, Counters, Enqueue, WriteRequest};
use crate::{
    Append, AppendError, AttemptOutcome, AttemptRecord, DeliveryFilter, DeliveryRecord,
    EventRecord, IdempotencyRecord, JournalEntry, ListQuery, MerchantRecord, MethodRecord, Page,
    PaymentRow, RefundRow, Store, StoreError, StoreResult, StoreStats, UnixMs, WalletMove,
    WalletMoveOutcome, WalletMovement, WalletRecord,
};
use writer::Writer;

/// Where the database is, which schema holds Kassa's tables, and the bounds of the writer
/// and the read pool.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// `postgres://user[:password]@host[:port]/database[?options]`. Never logged.
    pub url: String,
    /// The schema every table lives in; created if missing. A plain lower-case identifier
    /// (`[a-z_][a-z0-9_]*`, at most 63 bytes).
    pub schema: String,
    /// Read connections, i.e. reads running at once. At least 1.
    pub pool_size_max: usize,
    /// Most writes that share one transaction (group commit). At least 1.
    pub group_commit_batch_max: usize,
    /// Writes waiting for the writer before new ones fail with `Overloaded`. At least 1.
    pub write_queue_max: usize,
    /// Longest a statement may run (server-side `statement_timeout`), waits for locks
    /// included. At least 1. Migrations are not bounded by it.
    pub statement_timeout_ms: u64,
    /// Longest a new connection may take to open. At least 1.
    pub connect_timeout_ms: u64,
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("PostgresConfig")
            .field("schema", &self.schema)
            .field("pool_size_max", &self.pool_size_max)
            .field("group_commit_batch_max", &self.group_commit_batch_max)
            .field("write_queue_max", &self.write_queue_max)
            .field("statement_timeout_ms", &self.statement_timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .finish_non_exhaustive()
    }
}

impl PostgresConfig {
    pub const SCHEMA_DEFAULT: &'static str = "kassa";
    pub const POOL_SIZE_MAX_DEFAULT: usize = 8;
    pub const GROUP_COMMIT_BATCH_MAX_DEFAULT: usize = 512;
    pub const WRITE_QUEUE_MAX_DEFAULT: usize = 65_536;
    pub const STATEMENT_TIMEOUT_MS_DEFAULT: u64 = 30_000;
    pub const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 5_000;
    /// The longest schema name PostgreSQL keeps (NAMEDATALEN - 1).
    pub const SCHEMA_BYTES_MAX: usize = 63;

    /// The defaults, for the database at `url`, in schema `kassa`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: Self::SCHEMA_DEFAULT.to_owned(),
            pool_size_max: Self::POOL_SIZE_MAX_DEFAULT,
            group_commit_batch_max: Self::GROUP_COMMIT_BATCH_MAX_DEFAULT,
            write_queue_max: Self::WRITE_QUEUE_MAX_DEFAULT,
            statement_timeout_ms: Self::STATEMENT_TIMEOUT_MS_DEFAULT,
            connect_timeout_ms: Self::CONNECT_TIMEOUT_MS_DEFAULT,
        }
    }

    fn validate(&self) -> StoreResult<()> {
        let positive = [
            ("pool_size_max", self.pool_size_max as u64),
            ("group_commit_batch_max", self.group_commit_batch_max as u64),
            ("write_queue_max", self.write_queue_max as u64),
            ("statement_timeout_ms", self.statement_timeout_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(StoreError::Backend(format!(
                    "postgres config: {name} must be at least 1"
                )));
            }
        }
        if self.url.is_empty() {
            return Err(StoreError::Backend("postgres config: url is empty".into()));
        }
        let plain = self
            .schema
            .bytes()
            .enumerate()
            .all(|(i, b)| b == b'_' || b.is_ascii_lowercase() || (i > 0 && b.is_ascii_digit()));
        if self.schema.is_empty() || self.schema.len() > Self::SCHEMA_BYTES_MAX || !plain {
            return Err(StoreError::Backend(format!(
                "postgres config: schema {:?} is not a plain identifier \
                 ([a-z_][a-z0-9_]*, at most {} bytes)",
                self.schema,
                Self::SCHEMA_BYTES_MAX
            )));
        }
        Ok(())
    }
}

/// Creates `config.schema` if missing and applies every migration it lacks (for
/// `kassa migrate`, and called by [`PostgresStore::open`]). Safe to run from several nodes
/// at once: each migration runs once, under an advisory lock.
pub async fn migrate(config: &PostgresConfig) -> StoreResult<MigrationReport> {
    config.validate()?;
    let report = schema::migrate(config).await?;
    tracing::info!(
        schema = %config.schema,
        from_version = report.from_version,
        to_version = report.to_version,
        applied = ?report.applied,
        "postgres schema migrated"
    );
    Ok(report)
}

/// The PostgreSQL [`Store`]. Cheap to clone: clones share one writer and one pool.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    schema: String,
    /// `None` once shut down. Handles only read-lock it to enqueue.
    queue: RwLock<Option<mpsc::Sender<WriteRequest>>>,
    /// Turns `true` when the writer has drained the queue and stopped.
    writer_done: watch::Receiver<bool>,
    readers: Pool,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.inner.schema)
            .field("stats", &self.stats())
            .finish()
    }
}

impl PostgresStore {
    /// Connects, creates the schema if missing, migrates it, opens the read pool and starts
    /// the writer task (on the current Tokio runtime).
    pub async fn open(config: PostgresConfig) -> StoreResult<Self> {
        migrate(&config).await?;
        let pg = schema::pg_config(&config)?;
        let readers = pool(pg.clone(), config.pool_size_max)?;
        // The writer's one connection, through a pool of one so a broken connection is
        // replaced at the next batch.
        let writer_pool = pool(pg, 1)?;
        {
            // Both pools reach the migrated schema before the store says it is open.
            let client = readers.get().await.map_err(pool_error)?;
            schema::check_version(&**client, &config.schema).await?;
            let client = writer_pool.get().await.map_err(pool_error)?;
            schema::check_version(&**client, &config.schema).await?;
        }
        let counters = Arc::new(Counters::default());
        let (sender, queue) = mpsc::channel(config.write_queue_max);
        let (done, writer_done) = watch::channel(false);
        let writer = Writer {
            pool: writer_pool,
            queue,
            counters: Arc::clone(&counters),
            group_commit_batch_max: config.group_commit_batch_max,
            done,
        };
        tokio::spawn(writer.run());
        tracing::info!(
            schema = %config.schema,
            schema_version = schema::SCHEMA_VERSION,
            pool_size_max = config.pool_size_max,
            group_commit_batch_max = config.group_commit_batch_max,
            write_queue_max = config.write_queue_max,
            "postgres store open"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                schema: config.schema,
                queue: RwLock::new(Some(sender)),
                writer_done,
                readers,
                counters,
            }),
        })
    }

    /// The schema the tables live in.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// Runs `query` on a pooled connection. `Closed` once shut down.
    fn read<T, F, Fut>(&self, query: F) -> BoxFuture<'static, StoreResult<T>>
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Client) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = StoreResult<T>> + Send + 'static,
    {
        let pool = self.inner.readers.clone();
        async move {
            if pool.is_closed() {
                return Err(StoreError::Closed);
            }
            let client = pool.get().await.map_err(pool_error)?;
            query(client).await
        }
        .boxed()
    }
}

impl Enqueue for Inner {
    fn enqueue(&self, request: WriteRequest) -> StoreResult<()> {
        let queue = self.queue.read();
        let Some(sender) = queue.as_ref() else {
            return Err(StoreError::Closed);
        };
        self.counters.enqueue(|| match sender.try_send(request) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(StoreError::Overloaded),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(StoreError::Closed),
        })
    }
}

impl Inner {
    /// Stops taking writes and reads; the writer drains the queue and exits.
    fn close(&self) {
        drop(self.queue.write().take());
        self.readers.close();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The writer drains what is queued on its own; see the module docs.
        self.close();
    }
}

/// A pool of at most `size_max` connections with `pg`'s settings.
fn pool(pg: tokio_postgres::Config, size_max: usize) -> StoreResult<Pool> {
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size_max)
        .build()
        .map_err(|e| StoreError::Backend(format!("build the postgres pool: {e}")))
}

fn pool_error(error: PoolError) -> StoreError {
    match error {
        PoolError::Closed => StoreError::Closed,
        PoolError::Backend(e) => backend("get a pooled postgres connection", e),
        other => StoreError::Backend(format!("get a pooled postgres connection: {other}")),
    }
}

/// A PostgreSQL failure, described without the server's DETAIL (which quotes row values,
/// e.g. the key that was taken): severity, SQLSTATE and message name constraints and
/// relations, never values.
pub(super) fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{} {}: {}", db.severity(), db.code().code(), db.message());
    }
    match std::error::Error::source(error) {
        Some(source) => format!("{error}: {source}"),
        None => error.to_string(),
    }
}

/// A PostgreSQL failure with what was being done.
pub(super) fn backend(context: impl std::fmt::Display, error: tokio_postgres::Error) -> StoreError {
    StoreError::Backend(format!("{context}: {}", describe(&error)))
}

/// A stored seq or count that must fit `u32`/`u64` and did not.
fn out_of_range(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what} is out of range"))
}

impl Store for PostgresStore {
    fn append(&self, append: Append) -> BoxFuture<'static, Result<(), AppendError>> {
        write_request::append(&self.inner, append)
    }

    fn load_journal(&self, order_id: &str) -> BoxFuture<'static, StoreResult<Vec<JournalEntry>>> {
        let order_id = order_id.to_owned();
        self.read(move |c| async move { reader::load_journal(&c, &order_id).await })
    }

    fn get_payment(&self, id: &str) -> BoxFuture<'static, StoreResult<Option<PaymentRow>>> {
        let id = id.to_owned();
        self.read(move |c| async move { reader::get_payment(&c, &id).await })
    }

    fn list_payments(
        &self,
        merchant_id: &str,
        query: ListQuery,
    ) -> BoxFuture<'static, StoreResult<Page<PaymentRow>>> {
        let merchant_id = merchant_id.to_owned();
        self.read(move |c| async move { reader::list_payments(&c, &merchant_id, &query).await })
    }

    fn payment_ids_in_status(
        &self,
        status: &str,
        limit: u32,
    ) -> BoxFuture<'static, StoreResult<Vec<String>>> {
        let status = status.to_owned();
        self.read(move |c| async move { reader::payment_ids_in_status(&c, &status, limit).await })
    }

    fn payment_ids_awaiting_channel(
        &self,
        limit: u32,
    ) -> BoxFuture<'static, StoreResult<Vec<String>>> {
        self.read(move |c| async move { reader::payment_ids_awaiting_channel(&c, limit).await })
    }

    fn get_refund(&self, id: &str) -> BoxFuture<'static, StoreResult<Option<RefundRow>>> {
        let id = id.to_owned();
        self.read(move |c| async move { reader::get_refund(&c, &id).await })
    }

    fn put_merchant(&self, merchant: MerchantRecord) -> BoxFuture<'static, StoreResult<()>> {
        write_request::put_merchant(&self.inner, merchant)
    }

    fn rotate_merchant_secret(
        &self,
        id: &str,
        secret_sealed: Vec<u8>,
        previous_expires_ms: UnixMs,
    ) -> BoxFuture<'static, StoreResult<bool>> {
        write_request::rotate_merchant_secret(&self.inner, id, secret_sealed, previous_expires_ms)
    }

    fn get_merchant(&self, id: &str) -> BoxFuture<'static, StoreResult<Option<MerchantRecord>>> {
        let id = id.to_owned();
        self.read(move |c| async move { reader::get_merchant(&c, &id).await })
    }

    fn list_merchants(&self) -> BoxFuture<'static, StoreResult<Vec<MerchantRecord>>> {
        self.read(move |c| async move { reader::list_merchants(&c).await })
    }

    fn list_methods(&self) -> BoxFuture<'static, StoreResult<Vec<MethodRecord>>> {
        self.read(move |c| async move { reader::list_methods(&c).await })
    }

    fn put_method(&self, method: MethodRecord) -> BoxFuture<'static, StoreResult<()>> {
        write_request::put_method(&self.inner, method)
    }

    fn get_idempotency(
        &self,
        merchant_id: &str,
        key: &str,
    ) -> BoxFuture<'static, StoreResult<Option<IdempotencyRecord>>> {
        let (merchant_id, key) = (merchant_id.to_owned(), key.to_owned());
        self.read(move |c| async move { reader::get_idempotency(&c, &merchant_id, &key).await })
    }

    fn put_idempotency(
        &self,
        record: IdempotencyRecord,
    ) -> BoxFuture<'static, StoreResult<IdempotencyRecord>> {
        write_request::put_idempotency(&self.inner, record)
    }

    fn purge_idempotency(&self, before_ms: UnixMs) -> BoxFuture<'static, StoreResult<u64>> {
        write_request::purge_idempotency(Arc::clone(&self.inner), before_ms)
    }

    fn create_wallet(&self, wallet: WalletRecord) -> BoxFuture<'static, StoreResult<()>> {
        write_request::create_wallet(&self.inner, wallet)
    }

    fn get_wallet(
        &self,
        merchant_id: &str,
        id: &str,
    ) -> BoxFuture<'static, StoreResult<Option<WalletRecord>>> {
        let (merchant_id, id) = (merchant_id.to_owned(), id.to_owned());
        self.read(move |c| async move { wallets::get_wallet(&c, &merchant_id, &id).await })
    }

    fn move_wallet(
        &self,
        wallet_move: WalletMove,
    ) -> BoxFuture<'static, StoreResult<WalletMoveOutcome>> {
        write_request::move_wallet(&self.inner, wallet_move)
    }

    fn wallet_movement(
        &self,
        key: &str,
    ) -> BoxFuture<'static, StoreResult<Option<WalletMovement>>> {
        let key = key.to_owned();
        self.read(move |c| async move { wallets::wallet_movement(&c, &key).await })
    }

    fn close_wallet_key(
        &self,
        key: &str,
    ) -> BoxFuture<'static, StoreResult<Option<WalletMovement>>> {
        write_request::close_wallet_key(&self.inner, key)
    }

    fn list_wallet_movements(
        &self,
        wallet_id: &str,
        query: ListQuery,
    ) -> BoxFuture<'static, StoreResult<Page<WalletMovement>>> {
        let wallet_id = wallet_id.to_owned();
        self.read(
            move |c| async move { wallets::list_wallet_movements(&c, &wallet_id, &query).await },
        )
    }

    fn get_event(
        &self,
        merchant_id: Option<&str>,
        id: &str,
    ) -> BoxFuture<'static, StoreResult<Option<EventRecord>>> {
        let (merchant_id, id) = (merchant_id.map(str::to_owned), id.to_owned());
        self.read(move |c| async move { outbox::get_event(&c, merchant_id.as_deref(), &id).await })
    }

    fn list_events(
        &self,
        merchant_id: &str,
        query: ListQuery,
    ) -> BoxFuture<'static, StoreResult<Page<EventRecord>>> {
        let merchant_id = merchant_id.to_owned();
        self.read(move |c| async move { outbox::list_events(&c, &merchant_id, &query).await })
    }

    fn due_deliveries(
        &self,
        now_ms: UnixMs,
        limit: u32,
    ) -> BoxFuture<'static, StoreResult<Vec<(DeliveryRecord, EventRecord)>>> {
        self.read(move |c| async move { outbox::due_deliveries(&c, now_ms, limit).await })
    }

    fn next_delivery_due(&self) -> BoxFuture<'static, StoreResult<Option<UnixMs>>> {
        self.read(move |c| async move { outbox::next_delivery_due(&c).await })
    }

    fn record_attempt(
        &self,
        attempt: AttemptRecord,
        outcome: AttemptOutcome,
    ) -> BoxFuture<'static, StoreResult<()>> {
        write_request::record_attempt(&self.inner, attempt, outcome)
    }

    fn get_delivery(
        &self,
        event_id: &str,
    ) -> BoxFuture<'static, StoreResult<Option<DeliveryRecord>>> {
        let event_id = event_id.to_owned();
        self.read(move |c| async move { outbox::get_delivery(&c, &event_id).await })
    }

    fn list_deliveries(
        &self,
        filter: DeliveryFilter,
        query: ListQuery,
    ) -> BoxFuture<'static, StoreResult<Page<DeliveryRecord>>> {
        self.read(move |c| async move { outbox::list_deliveries(&c, &filter, &query).await })
    }

    fn delivery_attempts(
        &self,
        event_id: &str,
    ) -> BoxFuture<'static, StoreResult<Vec<AttemptRecord>>> {
        let event_id = event_id.to_owned();
        self.read(move |c| async move { outbox::delivery_attempts(&c, &event_id).await })
    }

    fn requeue_deliveries(
        &self,
        filter: DeliveryFilter,
        now_ms: UnixMs,
    ) -> BoxFuture<'static, StoreResult<u64>> {
        write_request::requeue_deliveries(&self.inner, filter, now_ms)
    }

    fn relay_due(
        &self,
        now_ms: UnixMs,
        limit: u32,
    ) -> BoxFuture<'static, StoreResult<Vec<DeliveryRecord>>> {
        self.read(move |c| async move { outbox::relay_due(&c, now_ms, limit).await })
    }

    fn mark_handed_off(
        &self,
        handoffs: Vec<(String, u32)>,
    ) -> BoxFuture<'static, StoreResult<u64>> {
        write_request::mark_handed_off(&self.inner, handoffs)
    }

    fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_ms: u64,
    ) -> BoxFuture<'static, StoreResult<Option<u64>>> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        // One statement, committed on its own: a lease is not part of any batch.
        self.read(move |c| async move { schema::try_lease(&c, &name, &holder, ttl_ms).await })
    }

    fn stats(&self) -> StoreStats {
        self.inner.counters.snapshot()
    }

    fn shutdown(&self) -> BoxFuture<'static, StoreResult<()>> {
        // Refuse new writes now, before the returned future is polled.
        self.inner.close();
        let mut done = self.inner.writer_done.clone();
        async move {
            // An error means the writer task is gone without saying so (its runtime stopped).
            done.wait_for(|done| *done).await.map(|_| ()).map_err(|_| {
                StoreError::Backend("the store writer stopped before draining its queue".into())
            })
        }
        .boxed()
    }
}

type Params<'a> = &'a [&'a (dyn tokio_postgres::types::ToSql + Sync)];

/// Runs `sql` (prepared once per connection) and returns its rows.
async fn query(
    client: &deadpool_postgres::Client,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    let statement = client.prepare_cached(sql).await?;
    client.query(&statement, params).await
}

/// Runs `sql` (prepared once per connection) and returns its row, if any (at most one).
async fn query_opt(
    client: &deadpool_postgres::Client,
    sql: &str,
    params: Params<'_>,
) -> Result<Option<tokio_postgres::Row>, tokio_postgres::Error> {
    let statement = client.prepare_cached(sql).await?;
    client.query_opt(&statement, params).await
}

/// Runs `sql` (prepared once per connection) and returns how many rows it changed.
async fn execute(
    client: &deadpool_postgres::Client,
    sql: &str,
    params: Params<'_>,
) -> Result<u64, tokio_postgres::Error> {
    let statement = client.prepare_cached(sql).await?;
    client.execute(&statement, params).await
}

/// Whether `error` is a unique violation of `constraint`.
fn is_unique_violation(error: &tokio_postgres::Error, constraint: &str) -> bool {
    error.as_db_error().is_some_and(|db| {
        *db.code() == tokio_postgres::error::SqlState::UNIQUE_VIOLATION
            && db.constraint() == Some(constraint)
    })
}
