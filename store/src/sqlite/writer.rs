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

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::{backend, outbox, wallets, write_ops};
use crate::{
    Append, AppendError, AttemptOutcome, AttemptRecord, DeliveryFilter, IdempotencyRecord,
    MerchantRecord, MethodRecord, StoreError, StoreResult, StoreStats, UnixMs, WalletMove,
    WalletMoveOutcome, WalletMovement, WalletRecord,
};

/// One write, with the channel its answer goes back on.
pub(super) enum WriteRequest {
    Append {
        append: Append,
        reply: oneshot::Sender<Result<(), AppendError>>,
    },
    PutMerchant {
        merchant: MerchantRecord,
        reply: oneshot::Sender<StoreResult<()>>,
    },
    PutMethod {
        method: MethodRecord,
        reply: oneshot::Sender<StoreResult<()>>,
    },
    PutIdempotency {
        record: IdempotencyRecord,
        reply: oneshot::Sender<StoreResult<IdempotencyRecord>>,
    },
    /// Deletes at most `rows_max` records created before `before_ms`.
    PurgeIdempotency {
        before_ms: UnixMs,
        rows_max: u32,
        reply: oneshot::Sender<StoreResult<u64>>,
    },
    CreateWallet {
        wallet: WalletRecord,
        reply: oneshot::Sender<StoreResult<()>>,
    },
    MoveWallet {
        wallet_move: WalletMove,
        reply: oneshot::Sender<StoreResult<WalletMoveOutcome>>,
    },
    CloseWalletKey {
        key: String,
        reply: oneshot::Sender<StoreResult<Option<WalletMovement>>>,
    },
    RecordAttempt {
        attempt: AttemptRecord,
        outcome: AttemptOutcome,
        reply: oneshot::Sender<StoreResult<()>>,
    },
    RequeueDeliveries {
        filter: DeliveryFilter,
        now_ms: UnixMs,
        reply: oneshot::Sender<StoreResult<u64>>,
    },
}

impl WriteRequest {
    /// Runs the request's statements on `conn` (inside the caller's savepoint).
    fn apply(self, conn: &Connection) -> Applied {
        match self {
            Self::Append { append, reply } => Applied::Append(Pending {
                result: write_ops::append(conn, &append),
                reply,
            }),
            Self::PutMerchant { merchant, reply } => Applied::Unit(Pending {
                result: write_ops::put_merchant(conn, &merchant),
                reply,
            }),
            Self::PutMethod { method, reply } => Applied::Unit(Pending {
                result: write_ops::put_method(conn, &method),
                reply,
            }),
            Self::PutIdempotency { record, reply } => Applied::PutIdempotency(Pending {
                result: write_ops::put_idempotency(conn, &record),
                reply,
            }),
            Self::PurgeIdempotency {
                before_ms,
                rows_max,
                reply,
            } => Applied::Count(Pending {
                result: write_ops::purge_idempotency(conn, before_ms, rows_max),
                reply,
            }),
            Self::CreateWallet { wallet, reply } => Applied::Unit(Pending {
                result: wallets::create_wallet(conn, &wallet),
                reply,
            }),
            Self::MoveWallet { wallet_move, reply } => Applied::MoveWallet(Pending {
                result: wallets::move_wallet(conn, &wallet_move),
                reply,
            }),
            Self::CloseWalletKey { key, reply } => Applied::CloseWalletKey(Pending {
                result: wallets::close_wallet_key(conn, &key),
                reply,
            }),
            Self::RecordAttempt {
                attempt,
                outcome,
                reply,
            } => Applied::Unit(Pending {
                result: outbox::record_attempt(conn, &attempt, &outcome),
                reply,
            }),
            Self::RequeueDeliveries {
                filter,
                now_ms,
                reply,
            } => Applied::Count(Pending {
                result: outbox::requeue_deliveries(conn, &filter, now_ms),
                reply,
            }),
        }
    }

    /// The request, answered with `error` without running.
    fn failed(self, error: &str) -> Applied {
        let error = || StoreError::Backend(error.to_owned());
        match self {
            Self::Append { reply, .. } => Applied::Append(Pending {
                result: Err(error().into()),
                reply,
            }),
            Self::PutMerchant { reply, .. }
            | Self::PutMethod { reply, .. }
            | Self::CreateWallet { reply, .. }
            | Self::RecordAttempt { reply, .. } => Applied::Unit(Pending {
                result: Err(error()),
                reply,
            }),
            Self::PutIdempotency { reply, .. } => Applied::PutIdempotency(Pending {
                result: Err(error()),
                reply,
            }),
            Self::PurgeIdempotency { reply, .. } | Self::RequeueDeliveries { reply, .. } => {
                Applied::Count(Pending {
                    result: Err(error()),
                    reply,
                })
            }
            Self::MoveWallet { reply, .. } => Applied::MoveWallet(Pending {
                result: Err(error()),
                reply,
            }),
            Self::CloseWalletKey { reply, .. } => Applied::CloseWalletKey(Pending {
                result: Err(error()),
                reply,
            }),
        }
    }
}

/// A request that has run inside the open transaction, waiting for the COMMIT.
enum Applied {
    Append(Pending<(), AppendError>),
    /// A write that answers `()` (merchants, methods, new wallets, delivery attempts).
    Unit(Pending<(), StoreError>),
    PutIdempotency(Pending<IdempotencyRecord, StoreError>),
    /// A write that answers a row count (purges, requeues).
    Count(Pending<u64, StoreError>),
    MoveWallet(Pending<WalletMoveOutcome, StoreError>),
    CloseWalletKey(Pending<Option<WalletMovement>, StoreError>),
}

impl Applied {
    fn is_ok(&self) -> bool {
        match self {
            Self::Append(p) => p.result.is_ok(),
            Self::Unit(p) => p.result.is_ok(),
            Self::PutIdempotency(p) => p.result.is_ok(),
            Self::Count(p) => p.result.is_ok(),
            Self::MoveWallet(p) => p.result.is_ok(),
            Self::CloseWalletKey(p) => p.result.is_ok(),
        }
    }

    /// Answers the caller. `batch` is how the transaction ended: `Err` turns a
    /// success into that error (its effects were rolled back).
    fn settle(self, batch: Result<(), &str>) {
        match self {
            Self::Append(p) => p.settle(batch),
            Self::Unit(p) => p.settle(batch),
            Self::PutIdempotency(p) => p.settle(batch),
            Self::Count(p) => p.settle(batch),
            Self::MoveWallet(p) => p.settle(batch),
            Self::CloseWalletKey(p) => p.settle(batch),
        }
    }
}

struct Pending<T, E> {
    result: Result<T, E>,
    reply: oneshot::Sender<Result<T, E>>,
}

impl<T, E: From<StoreError>> Pending<T, E> {
    fn settle(self, batch: Result<(), &str>) {
        let result = match (self.result, batch) {
            (Ok(_), Err(error)) => Err(E::from(StoreError::Backend(error.to_owned()))),
            (result, _) => result,
        };
        // A caller that stopped waiting dropped its receiver; the write stands either way.
        let _ = self.reply.send(result);
    }
}

/// Counters shared by the handles (which read them) and the writer (which bumps them).
#[derive(Default)]
pub(super) struct Counters {
    commits: AtomicU64,
    writes: AtomicU64,
    batch_writes_max: AtomicU64,
    /// Incremented by a handle before it enqueues, decremented by the writer on receipt.
    pub(super) queue_depth: AtomicU64,
}

impl Counters {
    pub(super) fn snapshot(&self) -> StoreStats {
        StoreStats {
            commits: self.commits.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            batch_writes_max: self.batch_writes_max.load(Ordering::Relaxed),
            queue_depth: self.queue_depth.load(Ordering::Relaxed),
        }
    }
}

/// Name of the per-request savepoint; savepoints nest, but only one is open at a time.
const SAVEPOINT: &str = "SAVEPOINT request";
const RELEASE: &str = "RELEASE request";
const ROLLBACK_TO: &str = "ROLLBACK TO request; RELEASE request";

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
            let received = u64::try_from(batch.len()).unwrap_or(u64::MAX);
            self.counters
                .queue_depth
                .fetch_sub(received, Ordering::Relaxed);
            self.commit_batch(&mut batch);
            debug_assert!(batch.is_empty());
        }
        tracing::debug!("store writer: queue closed and drained, stopping");
    }

    /// Runs `batch` in one transaction and answers every request. Empties `batch`.
    fn commit_batch(&self, batch: &mut Vec<WriteRequest>) {
        let size = batch.len();
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            let error = backend(format!("begin a batch of {size} writes"), e).to_string();
            tracing::error!(%error, "store writer: cannot begin a transaction");
            for request in batch.drain(..) {
                request.failed(&error).settle(Ok(()));
            }
            return;
        }
        let mut applied = Vec::with_capacity(size);
        let mut requests = batch.drain(..);
        for request in requests.by_ref() {
            let (done, savepoint_error) = self.apply_in_savepoint(request);
            applied.push(done);
            if let Some(error) = savepoint_error {
                // The savepoint machinery itself failed: the transaction's state is
                // unknown, so nothing in it may be reported as written.
                tracing::error!(%error, "store writer: savepoint failed, rolling back the batch");
                self.rollback();
                for done in applied {
                    done.settle(Err(&error));
                }
                for request in requests {
                    request.failed(&error).settle(Ok(()));
                }
                return;
            }
        }
        let writes = applied.iter().filter(|done| done.is_ok()).count();
        if writes == 0 {
            // Every request failed and was rolled back to its savepoint: skip the fsync.
            self.rollback();
            for done in applied {
                done.settle(Ok(()));
            }
            return;
        }
        match self.conn.execute_batch("COMMIT") {
            Ok(()) => {
                self.count_commit(writes);
                for done in applied {
                    done.settle(Ok(()));
                }
            }
            Err(e) => {
                let error = backend(format!("commit a batch of {size} writes"), e).to_string();
                tracing::error!(%error, "store writer: commit failed");
                self.rollback();
                for done in applied {
                    done.settle(Err(&error));
                }
            }
        }
    }

    /// Runs one request inside its own savepoint, rolled back alone if it fails.
    /// The second value is a savepoint failure, which poisons the whole batch.
    fn apply_in_savepoint(&self, request: WriteRequest) -> (Applied, Option<String>) {
        if let Err(e) = self.conn.execute_batch(SAVEPOINT) {
            let error = backend("open a request savepoint", e).to_string();
            return (request.failed(&error), Some(error));
        }
        let done = request.apply(&self.conn);
        let end = if done.is_ok() { RELEASE } else { ROLLBACK_TO };
        match self.conn.execute_batch(end) {
            Ok(()) => (done, None),
            Err(e) => {
                let error = backend("close a request savepoint", e).to_string();
                (done, Some(error))
            }
        }
    }

    fn rollback(&self) {
        if self.conn.is_autocommit() {
            return; // SQLite already rolled the transaction back.
        }
        if let Err(e) = self.conn.execute_batch("ROLLBACK") {
            tracing::error!(error = %e, "store writer: ROLLBACK failed");
        }
    }

    fn count_commit(&self, writes: usize) {
        let writes = u64::try_from(writes).unwrap_or(u64::MAX);
        self.counters.commits.fetch_add(1, Ordering::Relaxed);
        self.counters.writes.fetch_add(writes, Ordering::Relaxed);
        self.counters
            .batch_writes_max
            .fetch_max(writes, Ordering::Relaxed);
    }
}
