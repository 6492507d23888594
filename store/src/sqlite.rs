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
//! fails every request of the batch. See `sqlite/writer.rs`.
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
use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::thread::JoinHandle;

use futures::FutureExt;
use futures::future::{BoxFuture, ready};
use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

use crate::{
    ATTEMPT_RESPONSE_BYTES_MAX, Append, AppendError, AttemptOutcome, AttemptRecord, DeliveryFilter,
    DeliveryRecord, EventRecord, IdempotencyRecord, JournalEntry, ListQuery, MerchantRecord,
    MethodRecord, Page, PaymentRow, RefundRow, Store, StoreError, StoreResult, StoreStats, UnixMs,
    WALLET_MOVE_KEY_BYTES_MAX, WalletMove, WalletMoveOutcome, WalletMovement, WalletRecord,
};
use writer::{Counters, WriteRequest, Writer};

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

/// Idempotency records one purge transaction deletes at most, so a large purge
/// never holds the writer (and every payment behind it) for long.
const PURGE_CHUNK_ROWS_MAX: u32 = 5_000;

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

    /// Enqueues a write now (not when the future is first polled) and returns
    /// the future of its answer. A full queue or a closed store fails at once.
    fn write<T, E>(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<T, E>>) -> WriteRequest,
    ) -> BoxFuture<'static, Result<T, E>>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        if let Err(e) = self.inner.enqueue(request(reply)) {
            return ready(Err(E::from(e))).boxed();
        }
        async move {
            answer.await.unwrap_or_else(|_| {
                Err(E::from(StoreError::Backend(
                    "the store writer stopped before answering".into(),
                )))
            })
        }
        .boxed()
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

impl Inner {
    fn enqueue(&self, request: WriteRequest) -> StoreResult<()> {
        let queue = self.queue.read();
        let Some(sender) = queue.as_ref() else {
            return Err(StoreError::Closed);
        };
        // Counted before the send so the writer's decrement can never come first.
        self.counters.queue_depth.fetch_add(1, Ordering::Relaxed);
        let refused = match sender.try_send(request) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(_)) => StoreError::Overloaded,
            Err(TrySendError::Disconnected(_)) => StoreError::Closed,
        };
        self.counters.queue_depth.fetch_sub(1, Ordering::Relaxed);
        Err(refused)
    }

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

/// An append's entries must be numbered `expected_seq + 1 ..` without gaps and
/// fit SQLite's INTEGER. A violation is a caller bug, reported before queueing.
fn check_numbering(append: &Append) -> StoreResult<()> {
    let mut want = append.expected_seq;
    for entry in &append.entries {
        want = want
            .checked_add(1)
            .ok_or_else(|| misnumbered(append, entry.seq, want))?;
        if entry.seq != want {
            return Err(misnumbered(append, entry.seq, want));
        }
    }
    i64_from_seq(want)?;
    Ok(())
}

fn misnumbered(append: &Append, found: u64, want: u64) -> StoreError {
    StoreError::Corrupt(format!(
        "append to order {} after seq {}: entry numbered {found} where {want} was expected",
        append.order_id, append.expected_seq
    ))
}

/// A journal seq as SQLite stores it.
fn i64_from_seq(seq: u64) -> StoreResult<i64> {
    i64::try_from(seq).map_err(|_| StoreError::Corrupt(format!("seq {seq} exceeds i64")))
}

/// A new wallet starts empty: money only enters through a journaled movement.
fn check_new_wallet(wallet: &WalletRecord) -> StoreResult<()> {
    if wallet.balance_minor != 0 {
        return Err(StoreError::Corrupt(format!(
            "wallet {}: a new wallet's balance must be 0; credit it with a top-up move",
            wallet.id
        )));
    }
    Ok(())
}

/// A move's amount is positive and its key fits; a violation is a caller bug.
fn check_move(wallet_move: &WalletMove) -> StoreResult<()> {
    check_wallet_key(&wallet_move.key)?;
    if wallet_move.amount_minor <= 0 {
        return Err(StoreError::Corrupt(format!(
            "wallet {}: a move's amount must be positive, got {}",
            wallet_move.wallet_id, wallet_move.amount_minor
        )));
    }
    Ok(())
}

fn check_wallet_key(key: &str) -> StoreResult<()> {
    if key.is_empty() || key.len() > WALLET_MOVE_KEY_BYTES_MAX {
        return Err(StoreError::Corrupt(format!(
            "a wallet move key must be 1 to {WALLET_MOVE_KEY_BYTES_MAX} bytes, got {}",
            key.len()
        )));
    }
    Ok(())
}

/// An attempt is numbered from 1; its excerpt is cut to [`ATTEMPT_RESPONSE_BYTES_MAX`] bytes
/// (on a char boundary) if the caller did not.
fn check_attempt(attempt: &mut AttemptRecord) -> StoreResult<()> {
    if attempt.attempt == 0 {
        return Err(StoreError::Corrupt(format!(
            "event {}: delivery attempts are numbered from 1",
            attempt.event_id
        )));
    }
    cut_to_char_boundary(&mut attempt.response_excerpt, ATTEMPT_RESPONSE_BYTES_MAX);
    Ok(())
}

/// Shortens `text` to at most `bytes_max` bytes without splitting a character.
fn cut_to_char_boundary(text: &mut String, bytes_max: usize) {
    if text.len() <= bytes_max {
        return;
    }
    // Index 0 is a char boundary, so the search always ends.
    let end = (0..=bytes_max)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    text.truncate(end);
    debug_assert!(text.len() <= bytes_max);
}

/// A SQLite failure with what was being done. rusqlite's messages name
/// constraints and columns, never values, so no row body leaks through here.
fn backend(context: impl std::fmt::Display, error: rusqlite::Error) -> StoreError {
    StoreError::Backend(format!("{context}: {error}"))
}

impl Store for SqliteStore {
    fn append(&self, append: Append) -> BoxFuture<'static, Result<(), AppendError>> {
        if let Err(e) = check_numbering(&append) {
            return ready(Err(e.into())).boxed();
        }
        self.write(|reply| WriteRequest::Append { append, reply })
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
        self.write(|reply| WriteRequest::PutMerchant { merchant, reply })
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
        self.write(|reply| WriteRequest::PutMethod { method, reply })
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
        self.write(|reply| WriteRequest::PutIdempotency { record, reply })
    }

    /// Deletes in chunks of `PURGE_CHUNK_ROWS_MAX`, one write each, so appends
    /// interleave with a large purge. Ends at the first short chunk.
    fn purge_idempotency(&self, before_ms: UnixMs) -> BoxFuture<'static, StoreResult<u64>> {
        let store = self.clone();
        async move {
            let mut purged: u64 = 0;
            loop {
                let deleted = store
                    .write(|reply| WriteRequest::PurgeIdempotency {
                        before_ms,
                        rows_max: PURGE_CHUNK_ROWS_MAX,
                        reply,
                    })
                    .await?;
                purged = purged.saturating_add(deleted);
                if deleted < u64::from(PURGE_CHUNK_ROWS_MAX) {
                    return Ok(purged);
                }
            }
        }
        .boxed()
    }

    fn create_wallet(&self, wallet: WalletRecord) -> BoxFuture<'static, StoreResult<()>> {
        if let Err(e) = check_new_wallet(&wallet) {
            return ready(Err(e)).boxed();
        }
        self.write(|reply| WriteRequest::CreateWallet { wallet, reply })
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
        if let Err(e) = check_move(&wallet_move) {
            return ready(Err(e)).boxed();
        }
        self.write(|reply| WriteRequest::MoveWallet { wallet_move, reply })
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
        if let Err(e) = check_wallet_key(key) {
            return ready(Err(e)).boxed();
        }
        let key = key.to_owned();
        self.write(|reply| WriteRequest::CloseWalletKey { key, reply })
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
        mut attempt: AttemptRecord,
        outcome: AttemptOutcome,
    ) -> BoxFuture<'static, StoreResult<()>> {
        if let Err(e) = check_attempt(&mut attempt) {
            return ready(Err(e)).boxed();
        }
        self.write(|reply| WriteRequest::RecordAttempt {
            attempt,
            outcome,
            reply,
        })
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
        self.write(|reply| WriteRequest::RequeueDeliveries {
            filter,
            now_ms,
            reply,
        })
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
