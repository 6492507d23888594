//! Fault injection for drills and tests (`admin.faults_enabled`; never on in production).
//!
//! `FaultyStore` wraps the real store and fails the next N journal appends on request;
//! everything else (wallet moves and the outbox's writes included) passes straight through. Order panics are a message to the order actor
//! (`kassa_actors::payment_order::InjectPanic`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use futures::future::BoxFuture;
use kassa_store::{
    Append, AppendError, AttemptOutcome, AttemptRecord, DeliveryFilter, DeliveryRecord,
    EventRecord, IdempotencyRecord, JournalEntry, ListQuery, MerchantRecord, MethodRecord, Page,
    PaymentRow, RefundRow, Store, StoreError, StoreResult, StoreStats, UnixMs, WalletMove,
    WalletMoveOutcome, WalletMovement, WalletRecord,
};

/// The most appends one request may ask to fail.
pub const STORE_FAULTS_MAX: u32 = 10_000;

pub struct FaultyStore {
    inner: Arc<dyn Store>,
    failing_appends: AtomicU32,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn Store>) -> FaultyStore {
        FaultyStore {
            inner,
            failing_appends: AtomicU32::new(0),
        }
    }

    /// The next `count` appends fail with a backend error (nothing is written).
    pub fn fail_next_appends(&self, count: u32) {
        self.failing_appends
            .store(count.min(STORE_FAULTS_MAX), Ordering::Release);
    }
}

impl Store for FaultyStore {
    fn append(&self, append: Append) -> BoxFuture<'static, Result<(), AppendError>> {
        let take = self
            .failing_appends
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        if take.is_ok() {
            let order_id = append.order_id;
            return Box::pin(async move {
                Err(AppendError::Store(StoreError::Backend(format!(
                    "injected fault (order {order_id})"
                ))))
            });
        }
        self.inner.append(append)
    }
    fn load_journal(&self, order_id: &str) -> BoxFuture<'static, StoreResult<Vec<JournalEntry>>> {
        self.inner.load_journal(order_id)
    }
    fn get_payment(&self, id: &str) -> BoxFuture<'static, StoreResult<Option<PaymentRow>>> {
        self.inner.get_payment(id)
    }
    fn list_payments(
        &self,
        merchant_id: &str,
        query: ListQuery,
    ) -> BoxFuture<'static, StoreResult<Page<PaymentRow>>> {
        self.inner.list_payments(merchant_id, query)
    }
    fn payment_ids_in_status(
        &self,
        status: &str,
        limit: u32,
    ) -> BoxFuture<'static, StoreResult<Vec<String>>> {
        self.inner.payment_ids_in_status(status, limit)
    }
    fn payment_ids_awaiting_channel(
        &self,
        limit: u32,
    ) -> BoxFuture<'static, StoreResult<Vec<String>>> {
        self.inner.payment_ids_awaiting_channel(limit)
    }
    fn get_refund(&self, id: &str) -> BoxFuture<'static, StoreResult<Option<RefundRow>>> {
        self.inner.get_refund(id)
    }
    fn put_merchant(&self, merchant: MerchantRecord) -> BoxFuture<'static, StoreResult<()>> {
        self.inner.put_merchant(merchant)
    }
    fn get_merchant(&self, id: &str) -> BoxFuture<'static, StoreResult<Option<MerchantRecord>>> {
        self.inner.get_merchant(id)
    }
    fn list_merchants(&self) -> BoxFuture<'static, StoreResult<Vec<MerchantRecord>>> {
        self.inner.list_merchants()
    }
    fn rotate_merchant_secret(
        &self,
        id: &str,
        secret_sealed: Vec<u8>,
        previous_expires_ms: UnixMs,
    ) -> BoxFuture<'static, StoreResult<bool>> {
        self.inner
            .rotate_merchant_secret(id, secret_sealed, previous_expires_ms)
    }
    fn list_methods(&self) -> BoxFuture<'static, StoreResult<Vec<MethodRecord>>> {
        self.inner.list_methods()
    }
    fn put_method(&self, method: MethodRecord) -> BoxFuture<'static, StoreResult<()>> {
        self.inner.put_method(method)
    }
    fn get_idempotency(
        &self,
        merchant_id: &str,
        key: &str,
    ) -> BoxFuture<'static, StoreResult<Option<IdempotencyRecord>>> {
        self.inner.get_idempotency(merchant_id, key)
    }
    fn put_idempotency(
        &self,
        record: IdempotencyRecord,
    ) -> BoxFuture<'static, StoreResult<IdempotencyRecord>> {
        self.inner.put_idempotency(record)
    }
    fn purge_idempotency(&self, before_ms: UnixMs) -> BoxFuture<'static, StoreResult<u64>> {
        self.inner.purge_idempotency(before_ms)
    }
    fn create_wallet(&self, wallet: WalletRecord) -> BoxFuture<'static, StoreResult<()>> {
        self.inner.create_wallet(wallet)
    }
    fn get_wallet(
        &self,
        merchant_id: &str,
        id: &str,
    ) -> BoxFuture<'static, StoreResult<Option<WalletRecord>>> {
        self.inner.get_wallet(merchant_id, id)
    }
    fn move_wallet(
        &self,
        wallet_move: WalletMove,
    ) -> BoxFuture<'static, StoreResult<WalletMoveOutcome>> {
        self.inner.move_wallet(wallet_move)
    }
    fn wallet_movement(
        &self,
        key: &str,
    ) -> BoxFuture<'static, StoreResult<Option<WalletMovement>>> {
        self.inner.wallet_movement(key)
    }
    fn close_wallet_key(
        &self,
        key: &str,
    ) -> BoxFuture<'static, StoreResult<Option<WalletMovement>>> {
        self.inner.close_wallet_key(key)
    }
    fn list_wallet_movements(
        &self,
        wallet_id: &str,
        query: ListQuery,
    ) -> BoxFuture<'static, StoreResult<Page<WalletMovement>>> {
        self.inner.list_wallet_movements(wallet_id, query)
    }
    fn get_event(
        &self,
        merchant_id: Option<&str>,
        id: &str,
    ) -> BoxFuture<'static, StoreResult<Option<EventRecord>>> {
        self.inner.get_event(merchant_id, id)
    }
    fn list_events(
        &self,
        merchant_id: &str,
        query: ListQuery,
    ) -> BoxFuture<'static, StoreResult<Page<EventRecord>>> {
        self.inner.list_events(merchant_id, query)
    }
    fn due_deliveries(
        &self,
        now_ms: UnixMs,
        limit: u32,
    ) -> BoxFuture<'static, StoreResult<Vec<(DeliveryRecord, EventRecord)>>> {
        self.inner.due_deliveries(now_ms, limit)
    }
    fn next_delivery_due(&self) -> BoxFuture<'static, StoreResult<Option<UnixMs>>> {
        self.inner.next_delivery_due()
    }
    fn record_attempt(
        &self,
        attempt: AttemptRecord,
        outcome: AttemptOutcome,
    ) -> BoxFuture<'static, StoreResult<()>> {
        self.inner.record_attempt(attempt, outcome)
    }
    fn get_delivery(
        &self,
        event_id: &str,
    ) -> BoxFuture<'static, StoreResult<Option<DeliveryRecord>>> {
        self.inner.get_delivery(event_id)
    }
    fn list_deliveries(
        &self,
        filter: DeliveryFilter,
        query: ListQuery,
    ) -> BoxFuture<'static, StoreResult<Page<DeliveryRecord>>> {
        self.inner.list_deliveries(filter, query)
    }
    fn delivery_attempts(
        &self,
        event_id: &str,
    ) -> BoxFuture<'static, StoreResult<Vec<AttemptRecord>>> {
        self.inner.delivery_attempts(event_id)
    }
    fn requeue_deliveries(
        &self,
        filter: DeliveryFilter,
        now_ms: UnixMs,
    ) -> BoxFuture<'static, StoreResult<u64>> {
        self.inner.requeue_deliveries(filter, now_ms)
    }
    fn relay_due(
        &self,
        now_ms: UnixMs,
        limit: u32,
    ) -> BoxFuture<'static, StoreResult<Vec<DeliveryRecord>>> {
        self.inner.relay_due(now_ms, limit)
    }
    fn mark_handed_off(
        &self,
        handoffs: Vec<(String, u32)>,
    ) -> BoxFuture<'static, StoreResult<u64>> {
        self.inner.mark_handed_off(handoffs)
    }
    fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_ms: u64,
    ) -> BoxFuture<'static, StoreResult<Option<u64>>> {
        self.inner.try_lease(name, holder, ttl_ms)
    }
    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }
    fn shutdown(&self) -> BoxFuture<'static, StoreResult<()>> {
        self.inner.shutdown()
    }
}
