//! Kassa's persistence, behind one trait.
//!
//! The store does not know the payment domain: it keeps opaque journal entries
//! (JSON produced by `kassa-actors`), the read projections the API lists from,
//! merchants, and idempotency records. The journal is the source of truth; a
//! projection row is written in the same transaction as the journal entries
//! that produced it, so a reader never sees one without the other.
//!
//! # Layout
//! - `lib.rs`    — the [`Store`] trait and the record types every backend shares.
//! - `outbox.rs` — the transactional outbox's records: merchant-facing events
//!   ([`EventRecord`]), their webhook deliveries ([`DeliveryRecord`]) and attempts.
//! - `wallet.rs` — the stored-value wallet's records ([`WalletRecord`], [`WalletMove`],
//!   [`WalletMovement`], [`WalletMoveOutcome`]).
//! - `write_request.rs` — what both backends share about writes: the argument checks made
//!   before queueing, the queued request and its reply, and the group commit (a transaction
//!   per batch, a savepoint per request); each backend supplies only its statements.
//! - `rows.rs` — what both backends share about reads: converting and checking stored rows,
//!   and the newest-first paging of the lists.
//! - `sqlite.rs` — the embedded backend ([`SqliteStore`], [`SqliteConfig`]): one
//!   writer thread that group-commits many appends per transaction, and a small
//!   pool of read connections (WAL). Its parts live in `sqlite/`: `schema.rs`
//!   (connections, migrations), `writer.rs` (the writer thread and its batches),
//!   `write_ops.rs` (each write's statements), `reader.rs` (the read pool and
//!   every query), `wallets.rs` (the wallet statements, both sides), `outbox.rs`
//!   (events and deliveries, both sides).
//! - `postgres.rs` — the server backend ([`PostgresStore`], [`PostgresConfig`],
//!   [`postgres::migrate`]): the same writer design (one task, group commit, a savepoint per
//!   write) on one PostgreSQL connection, a `deadpool-postgres` pool for reads, every table
//!   in one schema. Its parts live in `postgres/`, split like `sqlite/`.
//!
//! # Invariants every backend keeps
//! - `(order_id, seq)` is unique and gap-free per order: an [`Append`] whose
//!   `expected_seq` is not the order's current last seq fails with
//!   [`AppendError::SeqConflict`] and writes nothing.
//! - `(merchant_id, merchant_order_id)` is unique across payments: a second
//!   order with the same pair fails with
//!   [`AppendError::DuplicateMerchantOrderId`] and writes nothing.
//! - A write future resolves `Ok` only after its transaction is durable
//!   (committed with `synchronous=FULL` on SQLite; COMMIT returned on PostgreSQL).
//! - One failed write never fails the other writes that share its group commit.
//! - An append's events and their pending deliveries are written in the append's
//!   transaction: a failed append leaves no event, and an event id is stored once.
//! - A wallet's balance is the sum of its movements and never negative; a move is
//!   checked, journaled and applied in one transaction, at most once per key.

use futures::future::BoxFuture;

pub mod outbox;
pub mod postgres;
mod rows;
pub mod sqlite;
pub mod wallet;
mod write_request;

pub use outbox::{
    ATTEMPT_RESPONSE_BYTES_MAX, AttemptOutcome, AttemptRecord, DeliveryFilter, DeliveryRecord,
    DeliveryStatus, EventRecord,
};
pub use postgres::{MigrationReport, PostgresConfig, PostgresStore};
pub use sqlite::{SqliteConfig, SqliteStore};
pub use wallet::{
    WALLET_MOVE_KEY_BYTES_MAX, WalletMove, WalletMoveOutcome, WalletMovement, WalletMovementKind,
    WalletRecord,
};

/// Milliseconds since the Unix epoch.
pub type UnixMs = i64;

/// One journal entry as stored. `seq` starts at 1 for an order's first entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalEntry {
    pub seq: u64,
    /// The event's type name (`created`, `captured`, …), for operators and queries.
    pub kind: String,
    /// The event as JSON, produced and read back by the domain.
    pub body: String,
    pub at_ms: UnixMs,
}

/// Projection of one payment, as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentRow {
    pub id: String,
    pub merchant_id: String,
    pub merchant_order_id: String,
    /// The payment's status name (`processing`, `succeeded`, …).
    pub status: String,
    pub created_ms: UnixMs,
    /// The payment's API object as JSON.
    pub body: String,
    /// A channel still owes an answer (charge, capture, cancel or a refund in flight):
    /// crash recovery re-drives these orders at start.
    pub awaiting_channel: bool,
}

/// Projection of one refund, as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundRow {
    pub id: String,
    pub payment_id: String,
    pub merchant_id: String,
    pub status: String,
    pub created_ms: UnixMs,
    /// The refund's API object as JSON.
    pub body: String,
}

/// An atomic append to one order's journal plus the projections it changes.
#[derive(Clone, Debug)]
pub struct Append {
    pub order_id: String,
    /// The order's last seq as the writer knows it (0 for a new order).
    /// `entries` must be numbered `expected_seq + 1 ..` without gaps.
    pub expected_seq: u64,
    pub entries: Vec<JournalEntry>,
    /// Upserted (by id) in the same transaction.
    pub payment: Option<PaymentRow>,
    /// Upserted (by id) in the same transaction.
    pub refunds: Vec<RefundRow>,
    /// Merchant-facing events this transition raises, inserted in the same transaction, each
    /// with a pending delivery due at its `created_ms` (an existing event id is left as it is).
    pub events: Vec<EventRecord>,
}

/// A merchant. Secrets are sealed (encrypted) by the caller before they get here.
#[derive(Clone, PartialEq, Eq)]
pub struct MerchantRecord {
    pub id: String,
    pub name: String,
    pub secret_sealed: Vec<u8>,
    pub webhook_url: Option<String>,
    pub webhook_secret_sealed: Vec<u8>,
    pub created_ms: UnixMs,
    /// The secret before the last rotation (sealed), still accepted until
    /// `previous_secret_expires_ms`; `None` before any rotation.
    pub previous_secret_sealed: Option<Vec<u8>>,
    pub previous_secret_expires_ms: Option<UnixMs>,
}

impl std::fmt::Debug for MerchantRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MerchantRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("webhook_url", &self.webhook_url)
            .field("created_ms", &self.created_ms)
            .field(
                "previous_secret_expires_ms",
                &self.previous_secret_expires_ms,
            )
            .finish_non_exhaustive()
    }
}

/// A payment method's terms in one currency: the channel that carries it and its limits.
/// Methods are data: operators change them through the admin API, not config files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MethodRecord {
    pub method: String,
    /// ISO 4217 code.
    pub currency: String,
    pub channel: String,
    /// Smallest and largest single payment, in the currency's minor units.
    pub min_minor: i64,
    pub max_minor: i64,
    pub enabled: bool,
    pub updated_ms: UnixMs,
}

/// The stored response of a completed idempotent request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub merchant_id: String,
    pub key: String,
    /// Hash of method, path and body: a different request under the same key is refused.
    pub fingerprint: String,
    pub status: u16,
    /// The response body, replayed byte for byte.
    pub body: Vec<u8>,
    pub created_ms: UnixMs,
}

/// Cursor pagination, newest first (by `created_ms`, then id).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// 1..=100; the caller validates.
    pub limit: u32,
    /// Return rows older than this id (the next page).
    pub starting_after: Option<String>,
    /// Return rows newer than this id (the previous page); still newest first.
    pub ending_before: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub rows: Vec<T>,
    pub has_more: bool,
}

/// Counters for metrics and the group-commit figures of docs/PERFORMANCE.md.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Transactions committed by the writer.
    pub commits: u64,
    /// Write operations (appends, merchant, idempotency and wallet writes) committed.
    pub writes: u64,
    /// Largest number of writes that shared one commit.
    pub batch_writes_max: u64,
    /// Writes waiting for the writer right now.
    pub queue_depth: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store backend failed: {0}")]
    Backend(String),
    #[error("store is overloaded: the write queue is full")]
    Overloaded,
    #[error("store is shut down")]
    Closed,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("a cursor names an object that does not exist: {0}")]
    UnknownCursor(String),
    /// An insert whose id is already taken (e.g. `create_wallet`).
    #[error("already exists: {0}")]
    Conflict(String),
    /// A write would take a stored number past what the store can hold (a wallet balance
    /// past `i64::MAX` minor units).
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("order {order_id}: expected seq {expected_seq}, journal is at {current_seq}")]
    SeqConflict {
        order_id: String,
        expected_seq: u64,
        current_seq: u64,
    },
    #[error("merchant_order_id already used by payment {existing_payment_id}")]
    DuplicateMerchantOrderId { existing_payment_id: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Everything Kassa persists. Implementations are cheap to share (`Arc<dyn Store>`).
pub trait Store: Send + Sync + 'static {
    /// Append to one order's journal and upsert its projections, atomically and durably.
    fn append(&self, append: Append) -> BoxFuture<'static, Result<(), AppendError>>;
    /// The whole journal of one order, in seq order; empty if the order is unknown.
    fn load_journal(&self, order_id: &str) -> BoxFuture<'static, StoreResult<Vec<JournalEntry>>>;
    fn get_payment(&self, id: &str) -> BoxFuture<'static, StoreResult<Option<PaymentRow>>>;
    fn list_payments(
        &self,
        merchant_id: &str,
        query: ListQuery,
    ) -> BoxFuture<'static, StoreResult<Page<PaymentRow>>>;
    /// Ids of payments in `status`, oldest first, at most `limit` (recovery and janitor scans).
    fn payment_ids_in_status(
        &self,
        status: &str,
        limit: u32,
    ) -> BoxFuture<'static, StoreResult<Vec<String>>>;
    /// Ids of payments with `awaiting_channel`, oldest first, at most `limit`.
    fn payment_ids_awaiting_channel(
        &self,
        limit: u32,
    ) -> BoxFuture<'static, StoreResult<Vec<String>>>;
    fn get_refund(&self, id: &str) -> BoxFuture<'static, StoreResult<Option<RefundRow>>>;

    /// Insert a merchant; an existing id is a `Backend` error.
    fn put_merchant(&self, merchant: MerchantRecord) -> BoxFuture<'static, StoreResult<()>>;
    fn get_merchant(&self, id: &str) -> BoxFuture<'static, StoreResult<Option<MerchantRecord>>>;
    fn list_merchants(&self) -> BoxFuture<'static, StoreResult<Vec<MerchantRecord>>>;
    /// Secret rotation, in one statement: `secret_sealed` becomes the merchant's secret and
    /// the secret it had becomes the previous one, accepted until `previous_expires_ms`
    /// (whatever previous secret there was is dropped). Two rotations racing are applied one
    /// after the other, so neither new secret is lost. `false` if there is no such merchant.
    fn rotate_merchant_secret(
        &self,
        id: &str,
        secret_sealed: Vec<u8>,
        previous_expires_ms: UnixMs,
    ) -> BoxFuture<'static, StoreResult<bool>>;

    /// Every method and currency, ordered by (method, currency).
    fn list_methods(&self) -> BoxFuture<'static, StoreResult<Vec<MethodRecord>>>;
    /// Inserts or replaces the terms of (method, currency).
    fn put_method(&self, method: MethodRecord) -> BoxFuture<'static, StoreResult<()>>;

    fn get_idempotency(
        &self,
        merchant_id: &str,
        key: &str,
    ) -> BoxFuture<'static, StoreResult<Option<IdempotencyRecord>>>;
    /// Store a completed response unless one is already stored for (merchant, key);
    /// returns the record that is stored afterwards (the earlier one wins).
    fn put_idempotency(
        &self,
        record: IdempotencyRecord,
    ) -> BoxFuture<'static, StoreResult<IdempotencyRecord>>;
    /// Delete idempotency records created before `before_ms`; returns how many.
    fn purge_idempotency(&self, before_ms: UnixMs) -> BoxFuture<'static, StoreResult<u64>>;

    /// Insert a wallet (its `balance_minor` must be 0); an existing id is
    /// [`StoreError::Conflict`].
    fn create_wallet(&self, wallet: WalletRecord) -> BoxFuture<'static, StoreResult<()>>;
    /// The wallet, if it exists and belongs to `merchant_id`.
    fn get_wallet(
        &self,
        merchant_id: &str,
        id: &str,
    ) -> BoxFuture<'static, StoreResult<Option<WalletRecord>>>;
    /// Moves money in or out of a wallet in ONE transaction: idempotent by key, a debit never
    /// takes the balance below zero, and the merchant must own the wallet. See
    /// [`WalletMoveOutcome`]. A non-positive amount or an over-long key is a caller bug
    /// (`Corrupt`), refused before queueing.
    fn move_wallet(
        &self,
        wallet_move: WalletMove,
    ) -> BoxFuture<'static, StoreResult<WalletMoveOutcome>>;
    /// The movement made under `key`, if any.
    fn wallet_movement(&self, key: &str)
    -> BoxFuture<'static, StoreResult<Option<WalletMovement>>>;
    /// Settles a key whose move's outcome is unknown (e.g. after a crash): the movement made
    /// under it if there is one; otherwise the key is closed for good (a later move with it is
    /// [`WalletMoveOutcome::KeyClosed`]) and the answer is `None`. Idempotent.
    fn close_wallet_key(
        &self,
        key: &str,
    ) -> BoxFuture<'static, StoreResult<Option<WalletMovement>>>;
    /// One page of a wallet's movements, newest first; cursors are movement keys of that
    /// wallet (another key is [`StoreError::UnknownCursor`]). The caller checks ownership.
    fn list_wallet_movements(
        &self,
        wallet_id: &str,
        query: ListQuery,
    ) -> BoxFuture<'static, StoreResult<Page<WalletMovement>>>;

    /// One event; with `merchant_id`, only if it is that merchant's.
    fn get_event(
        &self,
        merchant_id: Option<&str>,
        id: &str,
    ) -> BoxFuture<'static, StoreResult<Option<EventRecord>>>;
    /// A merchant's events, newest first; cursors are event ids of that merchant.
    fn list_events(
        &self,
        merchant_id: &str,
        query: ListQuery,
    ) -> BoxFuture<'static, StoreResult<Page<EventRecord>>>;
    /// Pending deliveries due at `now_ms` (oldest due first) with their events, at most `limit`.
    fn due_deliveries(
        &self,
        now_ms: UnixMs,
        limit: u32,
    ) -> BoxFuture<'static, StoreResult<Vec<(DeliveryRecord, EventRecord)>>>;
    /// The earliest `next_attempt_ms` of any pending delivery, to sleep until.
    fn next_delivery_due(&self) -> BoxFuture<'static, StoreResult<Option<UnixMs>>>;
    /// Records one attempt (unless the outcome is `NoEndpoint`) and moves the delivery on, in
    /// one transaction. A delivery that is no longer pending is left as it is.
    fn record_attempt(
        &self,
        attempt: AttemptRecord,
        outcome: AttemptOutcome,
    ) -> BoxFuture<'static, StoreResult<()>>;
    fn get_delivery(
        &self,
        event_id: &str,
    ) -> BoxFuture<'static, StoreResult<Option<DeliveryRecord>>>;
    /// Deliveries matching `filter`, newest first; cursors are event ids.
    fn list_deliveries(
        &self,
        filter: DeliveryFilter,
        query: ListQuery,
    ) -> BoxFuture<'static, StoreResult<Page<DeliveryRecord>>>;
    /// Every attempt of one delivery, oldest first.
    fn delivery_attempts(
        &self,
        event_id: &str,
    ) -> BoxFuture<'static, StoreResult<Vec<AttemptRecord>>>;
    /// Replay / resend: the matching deliveries (any status) become pending again, due at
    /// `now_ms`, with a new round of attempts (`attempts` back to 0). Returns how many.
    fn requeue_deliveries(
        &self,
        filter: DeliveryFilter,
        now_ms: UnixMs,
    ) -> BoxFuture<'static, StoreResult<u64>>;
    /// Broker relay: pending deliveries due at `now_ms` that have no message in the broker
    /// (never handed off, or their mark was cleared by an attempt or a replay), oldest due
    /// first, at most `limit`.
    fn relay_due(
        &self,
        now_ms: UnixMs,
        limit: u32,
    ) -> BoxFuture<'static, StoreResult<Vec<DeliveryRecord>>>;
    /// Broker relay: each `(event_id, attempts)` now has a confirmed message in the broker.
    /// Marks only deliveries still pending at that many attempts; returns how many.
    fn mark_handed_off(&self, handoffs: Vec<(String, u32)>)
    -> BoxFuture<'static, StoreResult<u64>>;

    /// Scheduled work that must run on one node at a time (the janitor, the outbox relay):
    /// takes or renews the lease `name` for `holder` for `ttl_ms`, and answers its fencing
    /// token (it grows each time the lease changes hands), or `None` while another holder's
    /// lease runs. Correctness never depends on it: it keeps nodes from doing the same work
    /// twice. Time is the store's clock, so nodes' clocks need not agree. An embedded store
    /// serves one node: its lease is always that node's.
    fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_ms: u64,
    ) -> BoxFuture<'static, StoreResult<Option<u64>>>;

    fn stats(&self) -> StoreStats;
    /// Stop taking writes, commit everything queued, and close. Idempotent.
    fn shutdown(&self) -> BoxFuture<'static, StoreResult<()>>;
}
