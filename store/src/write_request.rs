//! The writes both backends queue to their writer, and everything about them that does not
//! depend on the SQL dialect.
//!
//! A handle checks a write's arguments ([`check_numbering`], [`check_move`], …), wraps it in a
//! [`WriteRequest`] with the oneshot channel its answer goes back on, and hands it to its
//! backend's queue ([`Enqueue`]); the functions named after the [`Store`](crate::Store)
//! writes ([`append`], [`put_merchant`], …) do all of that, so both backends refuse the same
//! calls with the same errors. On the writer's side, [`WriteRequest::apply`] runs a request
//! through the backend's [`WriteOps`] (its statements, the only part that differs) and
//! [`Applied`] holds the result until the batch's COMMIT decides what the caller is told.
//!
//! [`WriteOps`] is async so that one `apply` serves both writers: PostgreSQL's statements
//! await the server; SQLite's are synchronous, so their futures are ready at the first poll
//! and its writer thread polls them once (`now_or_never`).

use std::sync::atomic::{AtomicU64, Ordering};

use futures::FutureExt;
use futures::future::{BoxFuture, ready};
use tokio::sync::oneshot;

use crate::rows::i64_from_seq;
use crate::{
    ATTEMPT_RESPONSE_BYTES_MAX, Append, AppendError, AttemptOutcome, AttemptRecord, DeliveryFilter,
    IdempotencyRecord, MerchantRecord, MethodRecord, StoreError, StoreResult, StoreStats, UnixMs,
    WALLET_MOVE_KEY_BYTES_MAX, WalletMove, WalletMoveOutcome, WalletMovement, WalletRecord,
};

/// Idempotency records one purge transaction deletes at most, so a large purge never holds
/// the writer (and every payment behind it) for long.
pub(crate) const PURGE_CHUNK_ROWS_MAX: u32 = 5_000;

/// Where a write's answer goes.
pub(crate) type Reply<T, E = StoreError> = oneshot::Sender<Result<T, E>>;

/// One write, with the channel its answer goes back on.
pub(crate) enum WriteRequest {
    Append {
        append: Append,
        reply: Reply<(), AppendError>,
    },
    PutMerchant {
        merchant: MerchantRecord,
        reply: Reply<()>,
    },
    /// Answers the rows changed: 1, or 0 for an unknown merchant.
    RotateMerchantSecret {
        id: String,
        secret_sealed: Vec<u8>,
        previous_expires_ms: UnixMs,
        reply: Reply<u64>,
    },
    PutMethod {
        method: MethodRecord,
        reply: Reply<()>,
    },
    PutIdempotency {
        record: IdempotencyRecord,
        reply: Reply<IdempotencyRecord>,
    },
    /// Deletes at most `rows_max` records created before `before_ms`.
    PurgeIdempotency {
        before_ms: UnixMs,
        rows_max: u32,
        reply: Reply<u64>,
    },
    CreateWallet {
        wallet: WalletRecord,
        reply: Reply<()>,
    },
    MoveWallet {
        wallet_move: WalletMove,
        reply: Reply<WalletMoveOutcome>,
    },
    CloseWalletKey {
        key: String,
        reply: Reply<Option<WalletMovement>>,
    },
    RecordAttempt {
        attempt: AttemptRecord,
        outcome: AttemptOutcome,
        reply: Reply<()>,
    },
    RequeueDeliveries {
        filter: DeliveryFilter,
        now_ms: UnixMs,
        reply: Reply<u64>,
    },
    MarkHandedOff {
        handoffs: Vec<(String, u32)>,
        reply: Reply<u64>,
    },
}

/// One backend's statements for each write, run by its writer inside the request's
/// savepoint. Each either succeeds or returns an error and leaves the savepoint for the
/// writer to roll back; none commits.
pub(crate) trait WriteOps {
    async fn append(&self, append: &Append) -> Result<(), AppendError>;
    async fn put_merchant(&self, merchant: &MerchantRecord) -> StoreResult<()>;
    async fn rotate_merchant_secret(
        &self,
        id: &str,
        secret_sealed: &[u8],
        previous_expires_ms: UnixMs,
    ) -> StoreResult<u64>;
    async fn put_method(&self, method: &MethodRecord) -> StoreResult<()>;
    async fn put_idempotency(&self, record: &IdempotencyRecord) -> StoreResult<IdempotencyRecord>;
    async fn purge_idempotency(&self, before_ms: UnixMs, rows_max: u32) -> StoreResult<u64>;
    async fn create_wallet(&self, wallet: &WalletRecord) -> StoreResult<()>;
    async fn move_wallet(&self, wallet_move: &WalletMove) -> StoreResult<WalletMoveOutcome>;
    async fn close_wallet_key(&self, key: &str) -> StoreResult<Option<WalletMovement>>;
    async fn record_attempt(
        &self,
        attempt: &AttemptRecord,
        outcome: &AttemptOutcome,
    ) -> StoreResult<()>;
    async fn requeue_deliveries(&self, filter: &DeliveryFilter, now_ms: UnixMs)
    -> StoreResult<u64>;
    async fn mark_handed_off(&self, handoffs: &[(String, u32)]) -> StoreResult<u64>;
}

impl WriteRequest {
    /// Runs the request's statements through `ops` (inside the writer's savepoint).
    pub(crate) async fn apply(self, ops: &impl WriteOps) -> Applied {
        match self {
            Self::Append { append, reply } => Applied::Append(Pending {
                result: ops.append(&append).await,
                reply,
            }),
            Self::PutMerchant { merchant, reply } => Applied::Unit(Pending {
                result: ops.put_merchant(&merchant).await,
                reply,
            }),
            Self::RotateMerchantSecret {
                id,
                secret_sealed,
                previous_expires_ms,
                reply,
            } => Applied::Count(Pending {
                result: ops
                    .rotate_merchant_secret(&id, &secret_sealed, previous_expires_ms)
                    .await,
                reply,
            }),
            Self::PutMethod { method, reply } => Applied::Unit(Pending {
                result: ops.put_method(&method).await,
                reply,
            }),
            Self::PutIdempotency { record, reply } => Applied::PutIdempotency(Pending {
                result: ops.put_idempotency(&record).await,
                reply,
            }),
            Self::PurgeIdempotency {
                before_ms,
                rows_max,
                reply,
            } => Applied::Count(Pending {
                result: ops.purge_idempotency(before_ms, rows_max).await,
                reply,
            }),
            Self::CreateWallet { wallet, reply } => Applied::Unit(Pending {
                result: ops.create_wallet(&wallet).await,
                reply,
            }),
            Self::MoveWallet { wallet_move, reply } => Applied::MoveWallet(Pending {
                result: ops.move_wallet(&wallet_move).await,
                reply,
            }),
            Self::CloseWalletKey { key, reply } => Applied::CloseWalletKey(Pending {
                result: ops.close_wallet_key(&key).await,
                reply,
            }),
            Self::RecordAttempt {
                attempt,
                outcome,
                reply,
            } => Applied::Unit(Pending {
                result: ops.record_attempt(&attempt, &outcome).await,
                reply,
            }),
            Self::RequeueDeliveries {
                filter,
                now_ms,
                reply,
            } => Applied::Count(Pending {
                result: ops.requeue_deliveries(&filter, now_ms).await,
                reply,
            }),
            Self::MarkHandedOff { handoffs, reply } => Applied::Count(Pending {
                result: ops.mark_handed_off(&handoffs).await,
                reply,
            }),
        }
    }

    /// The request, answered with `error` without running.
    pub(crate) fn failed(self, error: &str) -> Applied {
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
            Self::PurgeIdempotency { reply, .. }
            | Self::RotateMerchantSecret { reply, .. }
            | Self::RequeueDeliveries { reply, .. }
            | Self::MarkHandedOff { reply, .. } => Applied::Count(Pending {
                result: Err(error()),
                reply,
            }),
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
pub(crate) enum Applied {
    Append(Pending<(), AppendError>),
    /// A write that answers `()` (merchants, methods, new wallets, delivery attempts).
    Unit(Pending<(), StoreError>),
    PutIdempotency(Pending<IdempotencyRecord, StoreError>),
    /// A write that answers a row count (purges, requeues, hand-off marks, secret rotations).
    Count(Pending<u64, StoreError>),
    MoveWallet(Pending<WalletMoveOutcome, StoreError>),
    CloseWalletKey(Pending<Option<WalletMovement>, StoreError>),
}

impl Applied {
    pub(crate) fn is_ok(&self) -> bool {
        match self {
            Self::Append(p) => p.result.is_ok(),
            Self::Unit(p) => p.result.is_ok(),
            Self::PutIdempotency(p) => p.result.is_ok(),
            Self::Count(p) => p.result.is_ok(),
            Self::MoveWallet(p) => p.result.is_ok(),
            Self::CloseWalletKey(p) => p.result.is_ok(),
        }
    }

    /// Answers the caller. `batch` is how the transaction ended: `Err` turns a success into
    /// that error (its effects were rolled back).
    pub(crate) fn settle(self, batch: Result<(), &str>) {
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

pub(crate) struct Pending<T, E> {
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
pub(crate) struct Counters {
    commits: AtomicU64,
    writes: AtomicU64,
    batch_writes_max: AtomicU64,
    /// Incremented by a handle before it enqueues, decremented by the writer on receipt.
    queue_depth: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> StoreStats {
        StoreStats {
            commits: self.commits.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            batch_writes_max: self.batch_writes_max.load(Ordering::Relaxed),
            queue_depth: self.queue_depth.load(Ordering::Relaxed),
        }
    }

    /// Counts one request into the queue around `send`, which hands it over or says why not.
    /// Counted before the send so the writer's decrement can never come first.
    pub(crate) fn enqueue(&self, send: impl FnOnce() -> StoreResult<()>) -> StoreResult<()> {
        self.queue_depth.fetch_add(1, Ordering::Relaxed);
        let refused = send();
        if refused.is_err() {
            self.queue_depth.fetch_sub(1, Ordering::Relaxed);
        }
        refused
    }

    /// The writer took `requests` off the queue.
    pub(crate) fn received(&self, requests: usize) {
        let received = u64::try_from(requests).unwrap_or(u64::MAX);
        self.queue_depth.fetch_sub(received, Ordering::Relaxed);
    }

    /// One COMMIT of `writes` successful writes.
    pub(crate) fn count_commit(&self, writes: usize) {
        let writes = u64::try_from(writes).unwrap_or(u64::MAX);
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.writes.fetch_add(writes, Ordering::Relaxed);
        self.batch_writes_max.fetch_max(writes, Ordering::Relaxed);
    }
}

// ---- the writer's side: one transaction per batch, a savepoint per request ----

/// The writer's connection as the group commit drives it: transaction control in the
/// backend's dialect, and its statements for each write.
pub(crate) trait WriterConnection: WriteOps {
    /// Runs `sql` (transaction control); a failure is described as `context: …`.
    async fn control(&self, sql: &str, context: &str) -> Result<(), String>;
    /// Rolls back the open transaction, unless the database already ended it.
    async fn rollback(&self);
}

/// The per-request savepoint; only one is open at a time.
const SAVEPOINT: &str = "SAVEPOINT request";
const RELEASE: &str = "RELEASE SAVEPOINT request";
const ROLLBACK_TO: &str = "ROLLBACK TO SAVEPOINT request; RELEASE SAVEPOINT request";

/// Answers every request of `batch` with `error`, without running it. Empties `batch`.
pub(crate) fn fail_all(batch: &mut Vec<WriteRequest>, error: &str) {
    for request in batch.drain(..) {
        request.failed(error).settle(Ok(()));
    }
}

/// Runs `batch` in one transaction opened by `begin`, each request in its own savepoint,
/// COMMITs once and only then answers every request. Empties `batch`. `writer` names the
/// writer in the log.
pub(crate) async fn commit_batch(
    conn: &impl WriterConnection,
    begin: &str,
    batch: &mut Vec<WriteRequest>,
    counters: &Counters,
    writer: &str,
) {
    let size = batch.len();
    if let Err(error) = conn
        .control(begin, &format!("begin a batch of {size} writes"))
        .await
    {
        tracing::error!(%error, "{writer}: cannot begin a transaction");
        fail_all(batch, &error);
        return;
    }
    let mut applied = Vec::with_capacity(size);
    let mut requests = batch.drain(..);
    for request in requests.by_ref() {
        let (done, savepoint_error) = apply_in_savepoint(conn, request).await;
        applied.push(done);
        if let Some(error) = savepoint_error {
            // The savepoint machinery itself failed: the transaction's state is unknown, so
            // nothing in it may be reported as written.
            tracing::error!(%error, "{writer}: savepoint failed, rolling back the batch");
            conn.rollback().await;
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
        // Every request failed and was rolled back to its savepoint: skip the flush.
        conn.rollback().await;
        for done in applied {
            done.settle(Ok(()));
        }
        return;
    }
    match conn
        .control("COMMIT", &format!("commit a batch of {size} writes"))
        .await
    {
        Ok(()) => {
            counters.count_commit(writes);
            for done in applied {
                done.settle(Ok(()));
            }
        }
        // Also when the connection broke mid-COMMIT: the outcome is unknown, and a caller is
        // only told `Ok` for what is known durable.
        Err(error) => {
            tracing::error!(%error, "{writer}: commit failed");
            conn.rollback().await;
            for done in applied {
                done.settle(Err(&error));
            }
        }
    }
}

/// Runs one request inside its own savepoint, rolled back alone if it fails. The second
/// value is a savepoint failure, which poisons the whole batch.
async fn apply_in_savepoint(
    conn: &impl WriterConnection,
    request: WriteRequest,
) -> (Applied, Option<String>) {
    if let Err(error) = conn.control(SAVEPOINT, "open a request savepoint").await {
        return (request.failed(&error), Some(error));
    }
    let done = request.apply(conn).await;
    let end = if done.is_ok() { RELEASE } else { ROLLBACK_TO };
    match conn.control(end, "close a request savepoint").await {
        Ok(()) => (done, None),
        Err(error) => (done, Some(error)),
    }
}

// ---- the handle's side ----

/// A backend's write queue, as its handles see it.
pub(crate) trait Enqueue {
    /// Hands `request` to the writer now; a full queue or a closed store fails at once.
    fn enqueue(&self, request: WriteRequest) -> StoreResult<()>;
}

impl<Q: Enqueue + ?Sized> Enqueue for std::sync::Arc<Q> {
    fn enqueue(&self, request: WriteRequest) -> StoreResult<()> {
        (**self).enqueue(request)
    }
}

/// Enqueues a write now (not when the future is first polled) and returns the future of its
/// answer. A full queue or a closed store fails at once.
pub(crate) fn submit<T, E>(
    queue: &impl Enqueue,
    request: impl FnOnce(oneshot::Sender<Result<T, E>>) -> WriteRequest,
) -> BoxFuture<'static, Result<T, E>>
where
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    let (reply, answer) = oneshot::channel();
    if let Err(e) = queue.enqueue(request(reply)) {
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

/// `check`, then the write; a failed check answers at once, without queueing.
fn checked<T, E>(
    check: StoreResult<()>,
    queue: &impl Enqueue,
    request: impl FnOnce(oneshot::Sender<Result<T, E>>) -> WriteRequest,
) -> BoxFuture<'static, Result<T, E>>
where
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    match check {
        Ok(()) => submit(queue, request),
        Err(e) => ready(Err(E::from(e))).boxed(),
    }
}

pub(crate) fn append(
    queue: &impl Enqueue,
    append: Append,
) -> BoxFuture<'static, Result<(), AppendError>> {
    checked(check_numbering(&append), queue, |reply| {
        WriteRequest::Append { append, reply }
    })
}

pub(crate) fn put_merchant(
    queue: &impl Enqueue,
    merchant: MerchantRecord,
) -> BoxFuture<'static, StoreResult<()>> {
    submit(queue, |reply| WriteRequest::PutMerchant { merchant, reply })
}

pub(crate) fn rotate_merchant_secret(
    queue: &impl Enqueue,
    id: &str,
    secret_sealed: Vec<u8>,
    previous_expires_ms: UnixMs,
) -> BoxFuture<'static, StoreResult<bool>> {
    let id = id.to_owned();
    submit(queue, |reply| WriteRequest::RotateMerchantSecret {
        id,
        secret_sealed,
        previous_expires_ms,
        reply,
    })
    .map(|changed| changed.map(|rows| rows > 0))
    .boxed()
}

pub(crate) fn put_method(
    queue: &impl Enqueue,
    method: MethodRecord,
) -> BoxFuture<'static, StoreResult<()>> {
    submit(queue, |reply| WriteRequest::PutMethod { method, reply })
}

pub(crate) fn put_idempotency(
    queue: &impl Enqueue,
    record: IdempotencyRecord,
) -> BoxFuture<'static, StoreResult<IdempotencyRecord>> {
    submit(queue, |reply| WriteRequest::PutIdempotency {
        record,
        reply,
    })
}

/// Deletes in chunks of [`PURGE_CHUNK_ROWS_MAX`], one write each, so appends interleave with
/// a large purge. Ends at the first short chunk.
pub(crate) fn purge_idempotency<Q>(
    queue: Q,
    before_ms: UnixMs,
) -> BoxFuture<'static, StoreResult<u64>>
where
    Q: Enqueue + Send + 'static,
{
    async move {
        let mut purged: u64 = 0;
        loop {
            let deleted = submit(&queue, |reply| WriteRequest::PurgeIdempotency {
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

pub(crate) fn create_wallet(
    queue: &impl Enqueue,
    wallet: WalletRecord,
) -> BoxFuture<'static, StoreResult<()>> {
    checked(check_new_wallet(&wallet), queue, |reply| {
        WriteRequest::CreateWallet { wallet, reply }
    })
}

pub(crate) fn move_wallet(
    queue: &impl Enqueue,
    wallet_move: WalletMove,
) -> BoxFuture<'static, StoreResult<WalletMoveOutcome>> {
    checked(check_move(&wallet_move), queue, |reply| {
        WriteRequest::MoveWallet { wallet_move, reply }
    })
}

pub(crate) fn close_wallet_key(
    queue: &impl Enqueue,
    key: &str,
) -> BoxFuture<'static, StoreResult<Option<WalletMovement>>> {
    checked(check_wallet_key(key), queue, |reply| {
        WriteRequest::CloseWalletKey {
            key: key.to_owned(),
            reply,
        }
    })
}

pub(crate) fn record_attempt(
    queue: &impl Enqueue,
    mut attempt: AttemptRecord,
    outcome: AttemptOutcome,
) -> BoxFuture<'static, StoreResult<()>> {
    checked(check_attempt(&mut attempt), queue, |reply| {
        WriteRequest::RecordAttempt {
            attempt,
            outcome,
            reply,
        }
    })
}

pub(crate) fn requeue_deliveries(
    queue: &impl Enqueue,
    filter: DeliveryFilter,
    now_ms: UnixMs,
) -> BoxFuture<'static, StoreResult<u64>> {
    submit(queue, |reply| WriteRequest::RequeueDeliveries {
        filter,
        now_ms,
        reply,
    })
}

/// Nothing to mark is answered at once, without a write.
pub(crate) fn mark_handed_off(
    queue: &impl Enqueue,
    handoffs: Vec<(String, u32)>,
) -> BoxFuture<'static, StoreResult<u64>> {
    if handoffs.is_empty() {
        return ready(Ok(0)).boxed();
    }
    submit(queue, |reply| WriteRequest::MarkHandedOff {
        handoffs,
        reply,
    })
}

// ---- argument checks ----

/// An append's entries must be numbered `expected_seq + 1 ..` without gaps and fit a signed
/// 64-bit INTEGER/BIGINT. A violation is a caller bug, reported before queueing.
pub(crate) fn check_numbering(append: &Append) -> StoreResult<()> {
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

/// A new wallet starts empty: money only enters through a journaled movement.
pub(crate) fn check_new_wallet(wallet: &WalletRecord) -> StoreResult<()> {
    if wallet.balance_minor != 0 {
        return Err(StoreError::Corrupt(format!(
            "wallet {}: a new wallet's balance must be 0; credit it with a top-up move",
            wallet.id
        )));
    }
    Ok(())
}

/// A move's amount is positive and its key fits; a violation is a caller bug.
pub(crate) fn check_move(wallet_move: &WalletMove) -> StoreResult<()> {
    check_wallet_key(&wallet_move.key)?;
    if wallet_move.amount_minor <= 0 {
        return Err(StoreError::Corrupt(format!(
            "wallet {}: a move's amount must be positive, got {}",
            wallet_move.wallet_id, wallet_move.amount_minor
        )));
    }
    Ok(())
}

pub(crate) fn check_wallet_key(key: &str) -> StoreResult<()> {
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
pub(crate) fn check_attempt(attempt: &mut AttemptRecord) -> StoreResult<()> {
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
