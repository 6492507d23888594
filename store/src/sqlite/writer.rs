//! The writer thread: the only read-write connection, group commit, and one
//! savepoint per request.
//!
//! ```text
//!  callers ──try_send──▶ [bounded queue] ──recv──▶ writer thread
//!                                                   BEGIN IMMEDIATE
//!                                                   ├─ SAVEPOINT / request 1 / RELEASE
//!                                                   ├─ SAVEPOINT / request 2 / ROLLBACK TO (failed alone)
//!                                                   ├─ …  (at most group_commit_batch_max)
//!                                                   COMMIT  (one fsync)
//!  callers ◀──oneshot── answers, only after COMMIT returned
//! ```
//!
//! The batch itself (savepoints, COMMIT, who is told what) is `write_request::commit_batch`,
//! shared with PostgreSQL's writer; this file supplies the thread, the queue and the
//! connection's side: transaction control and each write's statements (`write_ops.rs`,
//! `wallets.rs`, `outbox.rs`). Those are synchronous, so the batch's future is ready at its
//! first poll.

use std::sync::Arc;
use std::sync::mpsc::Receiver;

use futures::FutureExt;
use rusqlite::Connection;

use super::{backend, outbox, wallets, write_ops};
use crate::write_request::{self, Counters, WriteOps, WriteRequest, WriterConnection};
use crate::{
    Append, AppendError, AttemptOutcome, AttemptRecord, DeliveryFilter, IdempotencyRecord,
    MerchantRecord, MethodRecord, StoreResult, UnixMs, WalletMove, WalletMoveOutcome,
    WalletMovement, WalletRecord,
};

pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) queue: Receiver<WriteRequest>,
    pub(super) counters: Arc<Counters>,
    pub(super) group_commit_batch_max: usize,
}

impl Writer {
    /// The thread's body: returns once every handle dropped its sender and the
    /// queue is empty, so everything queued before shutdown is committed.
    pub(super) fn run(self) {
        debug_assert!(self.group_commit_batch_max >= 1);
        let mut batch = Vec::with_capacity(self.group_commit_batch_max);
        while let Ok(first) = self.queue.recv() {
            batch.push(first);
            while batch.len() < self.group_commit_batch_max {
                match self.queue.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            self.counters.received(batch.len());
            write_request::commit_batch(
                &self.conn,
                "BEGIN IMMEDIATE",
                &mut batch,
                &self.counters,
                "store writer",
            )
            .now_or_never()
            .expect("SQLite's statements never wait, so a batch is done at its first poll");
            debug_assert!(batch.is_empty());
        }
        tracing::debug!("store writer: queue closed and drained, stopping");
    }
}

impl WriterConnection for Connection {
    async fn control(&self, sql: &str, context: &str) -> Result<(), String> {
        // Each statement from the prepared-statement cache: the writer runs these around every
        // request of every batch, and parsing them anew each time cost ~12 % of the CPU of a
        // burst (docs/PERFORMANCE.md).
        sql.split(';')
            .map(str::trim)
            .filter(|statement| !statement.is_empty())
            .try_for_each(|statement| {
                self.prepare_cached(statement)
                    .and_then(|mut prepared| prepared.execute([]))
                    .map(drop)
            })
            .map_err(|e| backend(context, e).to_string())
    }

    async fn rollback(&self) {
        if self.is_autocommit() {
            return; // SQLite already rolled the transaction back.
        }
        if let Err(e) = self.execute_batch("ROLLBACK") {
            tracing::error!(error = %e, "store writer: ROLLBACK failed");
        }
    }
}

impl WriteOps for Connection {
    async fn append(&self, append: &Append) -> Result<(), AppendError> {
        write_ops::append(self, append)
    }
    async fn put_merchant(&self, merchant: &MerchantRecord) -> StoreResult<()> {
        write_ops::put_merchant(self, merchant)
    }
    async fn rotate_merchant_secret(
        &self,
        id: &str,
        secret_sealed: &[u8],
        previous_expires_ms: UnixMs,
    ) -> StoreResult<u64> {
        write_ops::rotate_merchant_secret(self, id, secret_sealed, previous_expires_ms)
    }
    async fn put_method(&self, method: &MethodRecord) -> StoreResult<()> {
        write_ops::put_method(self, method)
    }
    async fn put_idempotency(&self, record: &IdempotencyRecord) -> StoreResult<IdempotencyRecord> {
        write_ops::put_idempotency(self, record)
    }
    async fn purge_idempotency(&self, before_ms: UnixMs, rows_max: u32) -> StoreResult<u64> {
        write_ops::purge_idempotency(self, before_ms, rows_max)
    }
    async fn create_wallet(&self, wallet: &WalletRecord) -> StoreResult<()> {
        wallets::create_wallet(self, wallet)
    }
    async fn move_wallet(&self, wallet_move: &WalletMove) -> StoreResult<WalletMoveOutcome> {
        wallets::move_wallet(self, wallet_move)
    }
    async fn close_wallet_key(&self, key: &str) -> StoreResult<Option<WalletMovement>> {
        wallets::close_wallet_key(self, key)
    }
    async fn record_attempt(
        &self,
        attempt: &AttemptRecord,
        outcome: &AttemptOutcome,
    ) -> StoreResult<()> {
        outbox::record_attempt(self, attempt, outcome)
    }
    async fn requeue_deliveries(
        &self,
        filter: &DeliveryFilter,
        now_ms: UnixMs,
    ) -> StoreResult<u64> {
        outbox::requeue_deliveries(self, filter, now_ms)
    }
    async fn mark_handed_off(&self, handoffs: &[(String, u32)]) -> StoreResult<u64> {
        outbox::mark_handed_off(self, handoffs)
    }
}
