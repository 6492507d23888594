//! The writer task: one connection, group commit, and one savepoint per request.
//!
//! ```text
//!  callers ──try_send──▶ [bounded queue] ──recv──▶ writer task
//!                                                   BEGIN
//!                                                   ├─ SAVEPOINT / request 1 / RELEASE
//!                                                   ├─ SAVEPOINT / request 2 / ROLLBACK TO (failed alone)
//!                                                   ├─ …  (at most group_commit_batch_max)
//!                                                   COMMIT  (one WAL flush)
//!  callers ◀──oneshot── answers, only after COMMIT returned
//! ```
//!
//! The same shape as SQLite's writer (`sqlite/writer.rs`), on a Tokio task; the batch itself
//! is `write_request::commit_batch`, shared by both, and this file supplies the task, the
//! queue and the connection's side. The connection comes from a pool of one, taken per
//! batch: a connection that broke (a server restart) fails the batch it broke in, and the
//! next batch gets a new one.

use std::sync::Arc;

use deadpool_postgres::{Client, Pool};
use tokio::sync::{mpsc, watch};

use super::{backend, outbox, pool_error, wallets, write_ops};
use crate::write_request::{self, Counters, WriteOps, WriteRequest, WriterConnection};
use crate::{
    Append, AppendError, AttemptOutcome, AttemptRecord, DeliveryFilter, IdempotencyRecord,
    MerchantRecord, MethodRecord, StoreResult, UnixMs, WalletMove, WalletMoveOutcome,
    WalletMovement, WalletRecord,
};

/// How the writer is named in the log.
const WRITER: &str = "postgres store writer";

pub(super) struct Writer {
    /// A pool of one connection: the writer's.
    pub(super) pool: Pool,
    pub(super) queue: mpsc::Receiver<WriteRequest>,
    pub(super) counters: Arc<Counters>,
    pub(super) group_commit_batch_max: usize,
    /// Set to `true` once the queue is closed and drained.
    pub(super) done: watch::Sender<bool>,
}

impl Writer {
    /// The task's body: returns once every handle dropped its sender and the queue is empty,
    /// so everything queued before shutdown is committed.
    pub(super) async fn run(mut self) {
        debug_assert!(self.group_commit_batch_max >= 1);
        let mut batch = Vec::with_capacity(self.group_commit_batch_max);
        while let Some(first) = self.queue.recv().await {
            batch.push(first);
            while batch.len() < self.group_commit_batch_max {
                match self.queue.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            self.counters.received(batch.len());
            self.commit_batch(&mut batch).await;
            debug_assert!(batch.is_empty());
        }
        self.pool.close();
        tracing::debug!("postgres store writer: queue closed and drained, stopping");
        self.done.send_replace(true);
    }

    /// Runs `batch` in one transaction on the pool's connection and answers every request.
    /// Empties `batch`.
    async fn commit_batch(&self, batch: &mut Vec<WriteRequest>) {
        let client = match self.pool.get().await {
            Ok(client) => client,
            Err(e) => {
                let size = batch.len();
                let error = format!("begin a batch of {size} writes: {}", pool_error(e));
                tracing::error!(%error, "postgres store writer: no connection");
                write_request::fail_all(batch, &error);
                return;
            }
        };
        write_request::commit_batch(&client, "BEGIN", batch, &self.counters, WRITER).await;
    }
}

impl WriterConnection for Client {
    async fn control(&self, sql: &str, context: &str) -> Result<(), String> {
        self.batch_execute(sql)
            .await
            .map_err(|e| backend(context, e).to_string())
    }

    async fn rollback(&self) {
        if self.is_closed() {
            return; // The server ended the transaction with the connection.
        }
        if let Err(e) = self.batch_execute("ROLLBACK").await {
            tracing::error!(error = %super::describe(&e), "postgres store writer: ROLLBACK failed");
        }
    }
}

impl WriteOps for Client {
    async fn append(&self, append: &Append) -> Result<(), AppendError> {
        write_ops::append(self, append).await
    }
    async fn put_merchant(&self, merchant: &MerchantRecord) -> StoreResult<()> {
        write_ops::put_merchant(self, merchant).await
    }
    async fn rotate_merchant_secret(
        &self,
        id: &str,
        secret_sealed: &[u8],
        previous_expires_ms: UnixMs,
    ) -> StoreResult<u64> {
        write_ops::rotate_merchant_secret(self, id, secret_sealed, previous_expires_ms).await
    }
    async fn put_method(&self, method: &MethodRecord) -> StoreResult<()> {
        write_ops::put_method(self, method).await
    }
    async fn put_idempotency(&self, record: &IdempotencyRecord) -> StoreResult<IdempotencyRecord> {
        write_ops::put_idempotency(self, record).await
    }
    async fn purge_idempotency(&self, before_ms: UnixMs, rows_max: u32) -> StoreResult<u64> {
        write_ops::purge_idempotency(self, before_ms, rows_max).await
    }
    async fn create_wallet(&self, wallet: &WalletRecord) -> StoreResult<()> {
        wallets::create_wallet(self, wallet).await
    }
    async fn move_wallet(&self, wallet_move: &WalletMove) -> StoreResult<WalletMoveOutcome> {
        wallets::move_wallet(self, wallet_move).await
    }
    async fn close_wallet_key(&self, key: &str) -> StoreResult<Option<WalletMovement>> {
        wallets::close_wallet_key(self, key).await
    }
    async fn record_attempt(
        &self,
        attempt: &AttemptRecord,
        outcome: &AttemptOutcome,
    ) -> StoreResult<()> {
        outbox::record_attempt(self, attempt, outcome).await
    }
    async fn requeue_deliveries(
        &self,
        filter: &DeliveryFilter,
        now_ms: UnixMs,
    ) -> StoreResult<u64> {
        outbox::requeue_deliveries(self, filter, now_ms).await
    }
    async fn mark_handed_off(&self, handoffs: &[(String, u32)]) -> StoreResult<u64> {
        outbox::mark_handed_off(self, handoffs).await
    }
}
