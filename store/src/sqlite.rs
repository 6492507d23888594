//! The embedded backend: one SQLite file in WAL mode.
//!
//! # Writes: one thread, group commit
//! Every write (append, merchant, idempotency, wallet, delivery attempt, requeue) goes through a bounded queue
//! (`write_queue_max`) to one thread, `kassa-store-writer`, which owns the only
//! read-write connection. A full queue fails the write at once with
//! [`StoreError::Overloaded`]; an async caller never blocks on the store. The
//! writer waits for one request, takes whatever else is queued (up to
//! `group_commit_batch_max`), runs them in ONE transaction — each inside its own
//! `SAVEPOINT`, so a failing request is rolled back alone and answered with its
//! own error — commits (one fsync for the whole batch, `synchronous=FULL`), and
//! only then answers each caller through its oneshot channel. A failed COMMIT
//! fails every request of the batch. See `sqlite/writer.rs` and, for the batch
//! itself (shared with PostgreSQL), `write_request.rs`.
//!
//! # Reads: a small pool
//! `readers` read-only connections, handed out under a semaphore to
//! `spawn_blocking` tasks. WAL lets them read while the writer writes; each
//! query sees every commit that finished before it started, so a read issued
//! after a write's future resolved sees that write. See `sqlite/reader.rs`.
//!
//! # Shutdown
//! [`Store::shutdown`] drops the queue's sender at once (later writes get
//! [`StoreError::Closed`]), closes the read pool, and waits for the writer to
//! commit everything already queued and exit. Dropping the last handle does
//! the same, blocking the dropping thread until the writer has drained the queue
//! and closed the file (so a process can reopen it at once).

mod outbox;
mod reader;
mod schema;
mod wallets;
mod write_ops;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::thread::JoinHandle;

use futures::FutureExt;
use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};

use crate::rows::i64_from_seq;
use crate::write_request::{self, Counters, Enqueue, WriteRequest};
use crate::{
    Append, AppendError, AttemptOutcome, AttemptRecord, DeliveryFilter, DeliveryRecord,
    EventRecord, IdempotencyRecord, JournalEntry, ListQuery, MerchantRecord, MethodRecord, Page,
    PaymentRow, RefundRow, Store, StoreError, StoreResult, StoreStats, UnixMs, WalletMove,
    WalletMoveOutcome, WalletMovement, WalletRecord,
};
use writer::Writer;

/// Where the SQLite file lives and the bounds of its writer and reader pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqliteConfig {
    /// The database file; missing parent directories are created.
    pub path: PathBuf,
    /// Most writes that share one transaction (group commit). At least 1.
    pub group_commit_batch_max: usize,
    /// Writes waiting for the writer before new ones fail with `Overloaded`. At least 1.
    pub write_queue_max: usize,
    /// Read-only connections, i.e. reads running at once. At least 1.
    pub readers: usize,
    /// How long a connection waits for a lock held by another process.
    pub busy_timeout_ms: u64,
}

impl SqliteConfig {
    pub const GROUP_COMMIT_BATCH_MAX_DEFAULT: usize = 512;
    pub const WRITE_QUEUE_MAX_DEFAULT: usize = 65_536;
    pub const READERS_DEFAULT: usize = 4;
    pub const BUSY_TIMEOUT_MS_DEFAULT: u64 = 5_000;
    /// The database file's name under a data directory.
    pub const FILE_NAME: &'static str = "kassa.db";

    /// The defaults, for the file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            group_commit_batch_max: Self::GROUP_COMMIT_BATCH_MAX_DEFAULT,
            write_queue_max: Self::WRITE_QUEUE_MAX_DEFAULT,
            readers: Self::READERS_DEFAULT,
            busy_timeout_ms: Self::BUSY_TIMEOUT_MS_DEFAULT,
        }
    }

    /// The defaults, for `kassa.db` inside `data_dir` (the embedded mode's layout).
    pub fn in_data_dir(data_dir: impl AsRef<Path>) -> Self {
        Self::new(data_dir.as_ref().join(Self::FILE_NAME))
    }

    fn validate(&self) -> StoreResult<()> {
        let positive = [
            ("group_commit_batch_max", self.group_commit_batch_max),
            ("write_queue_max", self.write_queue_max),
            ("readers", self.readers),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(StoreError::Backend(format!(
                    "sqlite config: {name} must be at least 1"
                )));
            }
        }
        if self.path.as_os_str().is_empty() {
            return Err(StoreError::Backend("sqlite config: path is empty".into()));
        }
        Ok(())
    }
}

/// The SQLite [`Store`]. Cheap to clone: clones share one writer and one pool.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// `None` once shut down. Handles only read-lock it to enqueue.
    queue: RwLock<Option<SyncSender<WriteRequest>>>,
    /// The writer thread, until someone joined it.
    writer: Arc<Mutex<Option<JoinHandle<()>>>>,
    readers: Arc<reader::ReadPool>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("stats", &self.stats())
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database, migrates its schema, opens the
    /// read pool and starts the writer thread. Blocking: call it at startup.
    pub fn open(config: SqliteConfig) -> StoreResult<Self> {
        config.validate()?;
        if let Some(parent) = config.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Backend(format!("create directory {}: {e}", parent.display()))
            })?;
        }
        let write_conn = schema::open_writer(&config.path, config.busy_timeout_ms)?;
        let readers = (0..config.readers)
            .map(|_| schema::open_reader(&config.path, config.busy_timeout_ms))
            .collect::<StoreResult<Vec<_>>>()?;
        let counters = Arc::new(Counters::default());
        let (sender, queue) = std::sync::mpsc::sync_channel(config.write_queue_max);
        let writer = Writer {
            conn: write_conn,
            queue,
            counters: Arc::clone(&counters),
            group_commit_batch_max: config.group_commit_batch_max,
        };
        let handle = std::thread::Builder::new()
            .name("kassa-store-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Backend(format!("spawn the store writer thread: {e}")))?;
        tracing::info!(
            path = %config.path.display(),
            schema_version = schema::SCHEMA_VERSION,
            readers = config.readers,
            group_commit_batch_max = config.group_commit_batch_max,
            write_queue_max = config.write_queue_max,
            "sqlite store open"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                path: config.path,
                queue: RwLock::new(Some(sender)),
                writer: Arc::new(Mutex::new(Some(handle))),
                readers: Arc::new(reader::ReadPool::new(readers)),
                counters,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn read<T, F>(&self, query: F) -> BoxFuture<'static, StoreResult<T>>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> StoreResult<T> + Send + 'static,
    {
        let pool = Arc::clone(&self.inner.readers);
        async move { pool.run(query).await }.boxed()
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
            Err(TrySendError::Full(_)) => Err(StoreError::Overloaded),
            Err(TrySendError::Disconnected(_)) => Err(StoreError::Closed),
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

/// Waits for the writer thread to exit. Holding the lock while joining makes a
/// concurrent second call wait too, so every `shutdown` returns after the drain.
fn join_writer(writer: &Mutex<Option<JoinHandle<()>>>) -> StoreResult<()> {
    let mut slot = writer.lock();
    match slot.take() {
        Some(handle) => handle
            .join()
            .map_err(|_| StoreError::Backend("the store writer thread panicked".into())),
        None => Ok(()),
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.close();
        // Blocks for the writer's last batch: the file is closed when the last handle is gone.
        if let Err(error) = join_writer(&self.writer) {
            tracing::error!(%error, "sqlite store: writer did not stop cleanly");
        }
    }
}

/// A SQLite failure with what was being done. rusqlite's messages name
/// constraints and columns, never values, so no row body leaks through here.
fn backend(context: impl std::fmt::Display, error: rusqlite::Error) -> StoreError {
    StoreError::Backend(format!("{context}: {error}"))
}

impl Store for SqliteStore {
    fn append(&self, append: Append) -> BoxFuture<'static, Result<(), AppendError>> {
        write_request::append(&self.inner, append)
    }

    fn load_journal(&self, order_id: &str) -> BoxFuture<'static, StoreResult<Vec<JournalEntry>>> {
        let order_id = order_id.to_owned();
        self.read(move |conn| reader::load_journal(conn, &order_id))
    }

    fn get_payment(&self, id: &str) -> BoxFuture<'static, StoreResult<Option<PaymentRow>>> {
        let id = id.to_owned();
        self.read(move |conn| reader::get_payment(conn, &id))
    }

    fn list_payments(
        &self,
        merchant_id: &str,
        query: ListQuery,
    ) -> BoxFuture<'static, StoreResult<Page<PaymentRow>>> {
        let merchant_id = merchant_id.to_owned();
        self.read(move |conn| reader::list_payments(conn, &merchant_id, &query))
    }

    fn payment_ids_in_status(
        &self,
        status: &str,
        limit: u32,
    ) -> BoxFuture<'static, StoreResult<Vec<String>>> {
        let status = status.to_owned();
        self.read(move |conn| reader::payment_ids_in_status(conn, &status, limit))
    }

    fn payment_ids_awaiting_channel(
        &self,
        limit: u32,
    ) -> BoxFuture<'static, StoreResult<Vec<String>>> {
        self.read(move |conn| reader::payment_ids_awaiting_channel(conn, limit))
    }

    fn get_refund(&self, id: &str) -> BoxFuture<'static, StoreResult<Option<RefundRow>>> {
        let id = id.to_owned();
        self.read(move |conn| reader::get_refund(conn, &id))
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
        self.read(move |conn| reader::get_merchant(conn, &id))
    }

    fn list_merchants(&self) -> BoxFuture<'static, StoreResult<Vec<MerchantRecord>>> {
        self.read(reader::list_merchants)
    }

    fn list_methods(&self) -> BoxFuture<'static, StoreResult<Vec<MethodRecord>>> {
        self.read(reader::list_methods)
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
        self.read(move |conn| reader::get_idempotency(conn, &merchant_id, &key))
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
        self.read(move |conn| wallets::get_wallet(conn, &merchant_id, &id))
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
        self.read(move |conn| wallets::wallet_movement(conn, &key))
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
        self.read(move |conn| wallets::list_wallet_movements(conn, &wallet_id, &query))
    }

    fn get_event(
        &self,
        merchant_id: Option<&str>,
        id: &str,
    ) -> BoxFuture<'static, StoreResult<Option<EventRecord>>> {
        let (merchant_id, id) = (merchant_id.map(str::to_owned), id.to_owned());
        self.read(move |conn| outbox::get_event(conn, merchant_id.as_deref(), &id))
    }

    fn list_events(
        &self,
        merchant_id: &str,
        query: ListQuery,
    ) -> BoxFuture<'static, StoreResult<Page<EventRecord>>> {
        let merchant_id = merchant_id.to_owned();
        self.read(move |conn| outbox::list_events(conn, &merchant_id, &query))
    }

    fn due_deliveries(
        &self,
        now_ms: UnixMs,
        limit: u32,
    ) -> BoxFuture<'static, StoreResult<Vec<(DeliveryRecord, EventRecord)>>> {
        self.read(move |conn| outbox::due_deliveries(conn, now_ms, limit))
    }

    fn next_delivery_due(&self) -> BoxFuture<'static, StoreResult<Option<UnixMs>>> {
        self.read(outbox::next_delivery_due)
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
        self.read(move |conn| outbox::get_delivery(conn, &event_id))
    }

    fn list_deliveries(
        &self,
        filter: DeliveryFilter,
        query: ListQuery,
    ) -> BoxFuture<'static, StoreResult<Page<DeliveryRecord>>> {
        self.read(move |conn| outbox::list_deliveries(conn, &filter, &query))
    }

    fn delivery_attempts(
        &self,
        event_id: &str,
    ) -> BoxFuture<'static, StoreResult<Vec<AttemptRecord>>> {
        let event_id = event_id.to_owned();
        self.read(move |conn| outbox::delivery_attempts(conn, &event_id))
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
        self.read(move |conn| outbox::relay_due(conn, now_ms, limit))
    }

    fn mark_handed_off(
        &self,
        handoffs: Vec<(String, u32)>,
    ) -> BoxFuture<'static, StoreResult<u64>> {
        write_request::mark_handed_off(&self.inner, handoffs)
    }

    fn try_lease(
        &self,
        _name: &str,
        _holder: &str,
        _ttl_ms: u64,
    ) -> BoxFuture<'static, StoreResult<Option<u64>>> {
        // One node owns an embedded store (cluster mode requires PostgreSQL).
        Box::pin(futures::future::ready(Ok(Some(1))))
    }

    fn stats(&self) -> StoreStats {
        self.inner.counters.snapshot()
    }

    fn shutdown(&self) -> BoxFuture<'static, StoreResult<()>> {
        // Refuse new writes now, before the returned future is polled.
        self.inner.close();
        let writer = Arc::clone(&self.inner.writer);
        async move {
            tokio::task::spawn_blocking(move || join_writer(&writer))
                .await
                .map_err(|e| StoreError::Backend(format!("join the store writer: {e}")))?
        }
        .boxed()
    }
}
