//! The transactional outbox on both backends against the `Store` contract: events and their
//! deliveries are written with the append that raises them (and not at all when it fails),
//! attempts move a delivery on, requeues put it back, the lists page newest first; and (SQLite
//! only) a file from the previous schema is migrated in place.

#[macro_use]
mod common;

use std::path::Path;
use std::sync::Arc;

use common::Backend;
use kassa_store::sqlite::{SqliteConfig, SqliteStore};
use kassa_store::{
    ATTEMPT_RESPONSE_BYTES_MAX, Append, AppendError, AttemptOutcome, AttemptRecord, DeliveryFilter,
    DeliveryRecord, DeliveryStatus, EventRecord, JournalEntry, ListQuery, PaymentRow, Store,
    StoreError, UnixMs,
};
use tempfile::TempDir;

on_both_backends!(worker_threads = 2;
    an_append_writes_its_events_and_pending_deliveries,
    a_failed_append_leaves_no_event,
    re_appending_an_event_id_keeps_the_first,
    due_deliveries_come_oldest_due_first_with_their_events,
    attempts_move_a_delivery_on,
    an_attempt_on_a_finished_delivery_leaves_it_as_it_is,
    a_repeated_attempt_number_replaces_its_row_and_excerpts_are_cut,
    requeue_by_event_status_and_merchant,
    list_events_pages_newest_first_per_merchant,
    list_deliveries_filters_and_pages_newest_first,
    the_outbox_survives_close_and_reopen,
    the_relay_hands_each_attempt_off_once,
);

const MERCHANT: &str = "mch_1";
const OTHER_MERCHANT: &str = "mch_2";
/// The schema version before the outbox existed.
const SCHEMA_VERSION_BEFORE_OUTBOX: i64 = 3;

// --- Set-up -------------------------------------------------------------------------------

fn config(dir: &TempDir) -> SqliteConfig {
    let mut config = SqliteConfig::new(dir.path().join("kassa.db"));
    config.busy_timeout_ms = 30_000;
    config
}

fn open(dir: &TempDir) -> SqliteStore {
    SqliteStore::open(config(dir)).expect("open store")
}

/// Shuts `store` down cleanly, so that its file (or schema) can be opened again.
async fn close(store: Arc<dyn Store>) {
    store.shutdown().await.expect("shutdown");
    drop(store);
}

fn entry(seq: u64) -> JournalEntry {
    JournalEntry {
        seq,
        kind: format!("kind_{seq}"),
        body: "{}".to_owned(),
        at_ms: 1_000,
    }
}

fn payment(id: &str, merchant_id: &str, created_ms: i64) -> PaymentRow {
    PaymentRow {
        id: id.to_owned(),
        merchant_id: merchant_id.to_owned(),
        merchant_order_id: format!("order-{id}"),
        status: "succeeded".to_owned(),
        created_ms,
        body: format!("{{\"id\":\"{id}\"}}"),
        awaiting_channel: false,
    }
}

fn event(id: &str, merchant_id: &str, object_id: &str, created_ms: i64) -> EventRecord {
    EventRecord {
        id: id.to_owned(),
        merchant_id: merchant_id.to_owned(),
        kind: "payment.succeeded".to_owned(),
        object_id: object_id.to_owned(),
        created_ms,
        body: format!("{{\"id\":\"{id}\",\"type\":\"payment.succeeded\"}}"),
    }
}

/// Appends entry `expected_seq + 1` to `order_id` (a payment of `merchant_id`) with `events`.
fn append(
    order_id: &str,
    merchant_id: &str,
    expected_seq: u64,
    events: Vec<EventRecord>,
) -> Append {
    Append {
        order_id: order_id.to_owned(),
        expected_seq,
        entries: vec![entry(expected_seq + 1)],
        payment: Some(payment(order_id, merchant_id, 100)),
        refunds: Vec::new(),
        events,
    }
}

/// Writes `append`, which must succeed.
async fn commit(store: &Arc<dyn Store>, append: Append) {
    store.append(append).await.expect("append");
}

/// A new order of `merchant_id` whose first append raises one event, created at `created_ms`.
async fn order_with_event_of(
    store: &Arc<dyn Store>,
    merchant_id: &str,
    order_id: &str,
    event_id: &str,
    created_ms: i64,
) {
    let raised = event(event_id, merchant_id, order_id, created_ms);
    commit(store, append(order_id, merchant_id, 0, vec![raised])).await;
}

/// [`order_with_event_of`] for `MERCHANT`.
async fn order_with_event(store: &Arc<dyn Store>, order_id: &str, event_id: &str, created_ms: i64) {
    order_with_event_of(store, MERCHANT, order_id, event_id, created_ms).await;
}

/// One new order of `MERCHANT` per `(order_id, event_id, created_ms)`, each raising its event.
async fn orders_with_events(store: &Arc<dyn Store>, orders: &[(&str, &str, i64)]) {
    for (order_id, event_id, created_ms) in orders {
        order_with_event(store, order_id, event_id, *created_ms).await;
    }
}

fn attempt(event_id: &str, number: u32, at_ms: i64, http_status: Option<u16>) -> AttemptRecord {
    AttemptRecord {
        event_id: event_id.to_owned(),
        attempt: number,
        at_ms,
        http_status,
        latency_ms: 25,
        error: http_status
            .filter(|s| *s >= 300)
            .map(|s| format!("HTTP {s}")),
        response_excerpt: "ok".to_owned(),
    }
}

fn retry_at(next_attempt_ms: i64) -> AttemptOutcome {
    AttemptOutcome::Retry { next_attempt_ms }
}

/// Records `attempt` with `outcome`, which must succeed.
async fn record(store: &Arc<dyn Store>, attempt: AttemptRecord, outcome: AttemptOutcome) {
    store
        .record_attempt(attempt, outcome)
        .await
        .expect("record attempt");
}

/// Records `attempt` with `outcome`, which must be refused as corrupt.
async fn record_refused(store: &Arc<dyn Store>, attempt: AttemptRecord, outcome: AttemptOutcome) {
    let err = store.record_attempt(attempt, outcome).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
}

/// A store in which `pay_1` raised `evt_1` (created at 100), delivered by attempt 1 at 200.
async fn with_delivered_event(backend: &Backend) -> Arc<dyn Store> {
    let store = backend.open().await;
    order_with_event(&store, "pay_1", "evt_1", 100).await;
    let first = attempt("evt_1", 1, 200, Some(200));
    record(&store, first, AttemptOutcome::Delivered).await;
    store
}

// --- Reads --------------------------------------------------------------------------------

async fn stored_event(
    store: &Arc<dyn Store>,
    merchant_id: Option<&str>,
    id: &str,
) -> Option<EventRecord> {
    store.get_event(merchant_id, id).await.expect("get event")
}

async fn delivery(store: &Arc<dyn Store>, event_id: &str) -> DeliveryRecord {
    store
        .get_delivery(event_id)
        .await
        .expect("get delivery")
        .expect("delivery exists")
}

async fn status(store: &Arc<dyn Store>, event_id: &str) -> DeliveryStatus {
    delivery(store, event_id).await.status
}

async fn next_due(store: &Arc<dyn Store>) -> Option<UnixMs> {
    store.next_delivery_due().await.expect("next delivery due")
}

/// The event ids of the deliveries due at `now_ms`, in the order they come.
async fn due_ids(store: &Arc<dyn Store>, now_ms: UnixMs, limit: u32) -> Vec<String> {
    let due = store
        .due_deliveries(now_ms, limit)
        .await
        .expect("due deliveries");
    due.into_iter().map(|(d, _)| d.event_id).collect()
}

async fn attempt_numbers(store: &Arc<dyn Store>, event_id: &str) -> Vec<u32> {
    let attempts = store
        .delivery_attempts(event_id)
        .await
        .expect("delivery attempts");
    attempts.iter().map(|a| a.attempt).collect()
}

async fn requeue(store: &Arc<dyn Store>, filter: DeliveryFilter, now_ms: UnixMs) -> u64 {
    store
        .requeue_deliveries(filter, now_ms)
        .await
        .expect("requeue deliveries")
}

async fn event_count(store: &Arc<dyn Store>, merchant_id: &str) -> usize {
    event_page(store, merchant_id, page(100, None, None))
        .await
        .0
        .len()
}

fn page(limit: u32, starting_after: Option<&str>, ending_before: Option<&str>) -> ListQuery {
    ListQuery {
        limit,
        starting_after: starting_after.map(str::to_owned),
        ending_before: ending_before.map(str::to_owned),
    }
}

/// One page of a listing as its ids and `has_more`, to compare with [`listed`].
type Listed = (Vec<String>, bool);

fn listed(ids: &[&str], has_more: bool) -> Listed {
    (ids.iter().map(|id| (*id).to_owned()).collect(), has_more)
}

async fn event_page(store: &Arc<dyn Store>, merchant_id: &str, query: ListQuery) -> Listed {
    let page = store
        .list_events(merchant_id, query)
        .await
        .expect("list events");
    (page.rows.into_iter().map(|e| e.id).collect(), page.has_more)
}

async fn delivery_page(store: &Arc<dyn Store>, filter: DeliveryFilter, query: ListQuery) -> Listed {
    let page = store
        .list_deliveries(filter, query)
        .await
        .expect("list deliveries");
    let ids = page.rows.into_iter().map(|d| d.event_id).collect();
    (ids, page.has_more)
}

/// A listing refused because its cursor is not one of the listed rows.
fn assert_unknown_cursor<T: std::fmt::Debug>(listing: Result<T, StoreError>) {
    let err = listing.unwrap_err();
    assert!(matches!(err, StoreError::UnknownCursor(_)), "{err:?}");
}

fn filter_event(event_id: &str) -> DeliveryFilter {
    DeliveryFilter {
        event_id: Some(event_id.to_owned()),
        ..DeliveryFilter::default()
    }
}

fn dead_of(merchant_id: &str) -> DeliveryFilter {
    DeliveryFilter {
        status: Some(DeliveryStatus::Dead),
        merchant_id: Some(merchant_id.to_owned()),
        event_id: None,
    }
}

/// The schema version a closed store file records.
fn schema_version(conn: &rusqlite::Connection) -> i64 {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
        .expect("user_version")
}

fn connect(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).expect("open the file directly")
}

// --- Tests --------------------------------------------------------------------------------

async fn an_append_writes_its_events_and_pending_deliveries(backend: Backend) {
    let store = backend.open().await;
    let first = event("evt_1", MERCHANT, "pay_1", 500);
    let second = EventRecord {
        kind: "payment.captured".to_owned(),
        ..event("evt_2", MERCHANT, "pay_1", 600)
    };
    let raised = vec![first.clone(), second.clone()];
    commit(&store, append("pay_1", MERCHANT, 0, raised)).await;

    assert_eq!(stored_event(&store, None, "evt_1").await, Some(first));
    assert_eq!(
        stored_event(&store, Some(MERCHANT), "evt_2").await,
        Some(second)
    );
    assert_eq!(
        stored_event(&store, Some(OTHER_MERCHANT), "evt_1").await,
        None
    );
    assert_eq!(stored_event(&store, None, "evt_nope").await, None);
    assert_eq!(
        delivery(&store, "evt_2").await,
        DeliveryRecord {
            event_id: "evt_2".to_owned(),
            merchant_id: MERCHANT.to_owned(),
            event_kind: "payment.captured".to_owned(),
            status: DeliveryStatus::Pending,
            attempts: 0,
            next_attempt_ms: 600,
            created_ms: 600,
            updated_ms: 600,
            last_http_status: None,
            last_error: None,
        }
    );
    assert_eq!(store.get_delivery("evt_nope").await.unwrap(), None);
    assert_eq!(next_due(&store).await, Some(500));
    assert_eq!(store.delivery_attempts("evt_1").await.unwrap(), []);
}

async fn a_failed_append_leaves_no_event(backend: Backend) {
    let store = backend.open().await;
    commit(&store, append("pay_1", MERCHANT, 0, Vec::new())).await;

    // A stale writer: seq conflict, with an event that must not survive it.
    let stale_event = event("evt_stale", MERCHANT, "pay_1", 100);
    let stale = append("pay_1", MERCHANT, 0, vec![stale_event]);
    let err = store.append(stale).await.unwrap_err();
    assert!(matches!(err, AppendError::SeqConflict { .. }), "{err:?}");

    // A duplicate merchant_order_id fails after the journal insert: still no event.
    let dup_event = event("evt_dup", MERCHANT, "pay_2", 100);
    let mut duplicate = append("pay_2", MERCHANT, 0, vec![dup_event]);
    if let Some(p) = duplicate.payment.as_mut() {
        p.merchant_order_id = "order-pay_1".to_owned();
    }
    let err = store.append(duplicate).await.unwrap_err();
    assert!(
        matches!(err, AppendError::DuplicateMerchantOrderId { .. }),
        "{err:?}"
    );

    for id in ["evt_stale", "evt_dup"] {
        assert_eq!(stored_event(&store, None, id).await, None);
        assert_eq!(store.get_delivery(id).await.unwrap(), None);
    }
    assert_eq!(event_count(&store, MERCHANT).await, 0);
    assert_eq!(next_due(&store).await, None);
    let all = delivery_page(&store, DeliveryFilter::default(), page(100, None, None)).await;
    assert_eq!(all, listed(&[], false));
}

async fn re_appending_an_event_id_keeps_the_first(backend: Backend) {
    let store = with_delivered_event(&backend).await;

    // The same event id again (e.g. a retried transition), with another body.
    let again = EventRecord {
        body: "{\"changed\":true}".to_owned(),
        ..event("evt_1", MERCHANT, "pay_1", 900)
    };
    commit(&store, append("pay_1", MERCHANT, 1, vec![again])).await;

    assert_eq!(
        stored_event(&store, None, "evt_1").await,
        Some(event("evt_1", MERCHANT, "pay_1", 100))
    );
    assert_eq!(event_count(&store, MERCHANT).await, 1);
    // Its delivery is not reset by the second append.
    assert_eq!(status(&store, "evt_1").await, DeliveryStatus::Delivered);
    assert_eq!(next_due(&store).await, None);
}

async fn due_deliveries_come_oldest_due_first_with_their_events(backend: Backend) {
    let store = backend.open().await;
    orders_with_events(
        &store,
        &[
            ("pay_1", "evt_c", 300),
            ("pay_2", "evt_a", 100),
            ("pay_3", "evt_b", 200),
            ("pay_4", "evt_later", 5_000),
            // Two due at the same time come in event id order.
            ("pay_5", "evt_a2", 100),
        ],
    )
    .await;

    let due = store.due_deliveries(1_000, 10).await.unwrap();
    let ids: Vec<&str> = due.iter().map(|(d, _)| d.event_id.as_str()).collect();
    assert_eq!(ids, ["evt_a", "evt_a2", "evt_b", "evt_c"]);
    for (delivery, event) in &due {
        assert_eq!(delivery.event_id, event.id);
        assert_eq!(delivery.status, DeliveryStatus::Pending);
    }
    assert_eq!(due[0].1, event("evt_a", MERCHANT, "pay_2", 100));

    assert_eq!(due_ids(&store, 1_000, 2).await.len(), 2);
    assert!(due_ids(&store, 99, 10).await.is_empty());
    assert_eq!(next_due(&store).await, Some(100));

    // A retry moves a delivery behind the others; a finished one is never due.
    record(&store, attempt("evt_a", 1, 1_000, Some(500)), retry_at(250)).await;
    record(
        &store,
        attempt("evt_a2", 1, 1_000, Some(200)),
        AttemptOutcome::Delivered,
    )
    .await;
    assert_eq!(
        due_ids(&store, 1_000, 10).await,
        ["evt_b", "evt_a", "evt_c"]
    );
    assert_eq!(next_due(&store).await, Some(200));
}

async fn attempts_move_a_delivery_on(backend: Backend) {
    let store = backend.open().await;
    orders_with_events(
        &store,
        &[
            ("pay_1", "evt_retry", 100),
            ("pay_2", "evt_dead", 100),
            ("pay_3", "evt_none", 100),
        ],
    )
    .await;

    // Retry, retry, delivered.
    record(&store, attempt("evt_retry", 1, 110, None), retry_at(1_110)).await;
    let retried = delivery(&store, "evt_retry").await;
    assert_eq!(retried.status, DeliveryStatus::Pending);
    assert_eq!(retried.attempts, 1);
    assert_eq!(retried.next_attempt_ms, 1_110);
    assert_eq!(retried.updated_ms, 110);
    assert_eq!(retried.last_http_status, None);

    record(
        &store,
        attempt("evt_retry", 2, 1_120, Some(503)),
        retry_at(5_000),
    )
    .await;
    let retried = delivery(&store, "evt_retry").await;
    assert_eq!(
        (retried.attempts, retried.next_attempt_ms),
        (2, 5_000),
        "{retried:?}"
    );
    assert_eq!(retried.last_http_status, Some(503));
    assert_eq!(retried.last_error.as_deref(), Some("HTTP 503"));

    let third = attempt("evt_retry", 3, 5_010, Some(204));
    record(&store, third, AttemptOutcome::Delivered).await;
    let delivered = delivery(&store, "evt_retry").await;
    assert_eq!(delivered.status, DeliveryStatus::Delivered);
    assert_eq!(delivered.attempts, 3);
    assert_eq!(delivered.last_http_status, Some(204));
    assert_eq!(delivered.last_error, None);
    assert_eq!(delivered.updated_ms, 5_010);

    assert_eq!(attempt_numbers(&store, "evt_retry").await, [1, 2, 3]);
    let attempts = store.delivery_attempts("evt_retry").await.unwrap();
    assert_eq!(attempts[1], attempt("evt_retry", 2, 1_120, Some(503)));

    // Dead.
    record(
        &store,
        attempt("evt_dead", 1, 120, Some(410)),
        AttemptOutcome::Dead,
    )
    .await;
    let dead = delivery(&store, "evt_dead").await;
    assert_eq!((dead.status, dead.attempts), (DeliveryStatus::Dead, 1));
    assert_eq!(dead.last_http_status, Some(410));

    // No endpoint: no attempt row, no attempt counted.
    record(
        &store,
        attempt("evt_none", 1, 130, None),
        AttemptOutcome::NoEndpoint,
    )
    .await;
    let none = delivery(&store, "evt_none").await;
    assert_eq!(
        (none.status, none.attempts),
        (DeliveryStatus::NoEndpoint, 0)
    );
    assert_eq!(store.delivery_attempts("evt_none").await.unwrap(), []);
    assert_eq!(next_due(&store).await, None);
}

async fn an_attempt_on_a_finished_delivery_leaves_it_as_it_is(backend: Backend) {
    let store = with_delivered_event(&backend).await;
    let before = delivery(&store, "evt_1").await;

    for outcome in [
        retry_at(9_000),
        AttemptOutcome::Dead,
        AttemptOutcome::NoEndpoint,
        AttemptOutcome::Delivered,
    ] {
        record(&store, attempt("evt_1", 2, 300, Some(500)), outcome).await;
        assert_eq!(delivery(&store, "evt_1").await, before);
    }
    // The late attempt itself happened and is kept (once: same number, same row).
    assert_eq!(attempt_numbers(&store, "evt_1").await, [1, 2]);
}

async fn a_repeated_attempt_number_replaces_its_row_and_excerpts_are_cut(backend: Backend) {
    let store = backend.open().await;
    order_with_event(&store, "pay_1", "evt_1", 100).await;
    let mut first = attempt("evt_1", 1, 200, None);
    first.error = Some("timeout".to_owned());
    record(&store, first, retry_at(300)).await;
    // The same attempt number again (a crash between the send and the record, then a retry).
    let mut again = attempt("evt_1", 1, 250, Some(500));
    // 'é' is two bytes: the cut must not split it.
    again.response_excerpt = format!("x{}", "é".repeat(ATTEMPT_RESPONSE_BYTES_MAX));
    record(&store, again, retry_at(400)).await;

    let attempts = store.delivery_attempts("evt_1").await.unwrap();
    assert_eq!(attempts.len(), 1);
    let kept = &attempts[0];
    assert_eq!((kept.at_ms, kept.http_status), (250, Some(500)));
    assert_eq!(kept.response_excerpt.len(), ATTEMPT_RESPONSE_BYTES_MAX - 1);
    assert!(kept.response_excerpt.starts_with("xé"));

    // Attempts are numbered from 1, and only for a delivery that exists.
    record_refused(&store, attempt("evt_1", 0, 500, None), AttemptOutcome::Dead).await;
    record_refused(
        &store,
        attempt("evt_nope", 1, 500, None),
        AttemptOutcome::Dead,
    )
    .await;
    assert_eq!(status(&store, "evt_1").await, DeliveryStatus::Pending);
}

async fn requeue_by_event_status_and_merchant(backend: Backend) {
    let store = backend.open().await;
    orders_with_events(
        &store,
        &[
            ("pay_1", "evt_delivered", 100),
            ("pay_2", "evt_dead_1", 100),
            ("pay_3", "evt_dead_2", 100),
            ("pay_4", "evt_none", 100),
        ],
    )
    .await;
    order_with_event_of(&store, OTHER_MERCHANT, "pay_9", "evt_other", 100).await;
    let finish = [
        ("evt_delivered", AttemptOutcome::Delivered),
        ("evt_dead_1", AttemptOutcome::Dead),
        ("evt_dead_2", AttemptOutcome::Dead),
        ("evt_none", AttemptOutcome::NoEndpoint),
        ("evt_other", AttemptOutcome::Dead),
    ];
    for (event_id, outcome) in finish {
        record(&store, attempt(event_id, 1, 200, Some(500)), outcome).await;
    }

    // One event (a resend of a delivered one).
    assert_eq!(
        requeue(&store, filter_event("evt_delivered"), 1_000).await,
        1
    );
    let resent = delivery(&store, "evt_delivered").await;
    assert_eq!(resent.status, DeliveryStatus::Pending);
    assert_eq!(
        (resent.attempts, resent.next_attempt_ms, resent.updated_ms),
        (0, 1_000, 1_000)
    );
    assert_eq!(next_due(&store).await, Some(1_000));
    assert_eq!(requeue(&store, filter_event("evt_nope"), 1_000).await, 0);

    // Dead letters of one merchant.
    assert_eq!(requeue(&store, dead_of(MERCHANT), 2_000).await, 2);
    assert_eq!(status(&store, "evt_dead_2").await, DeliveryStatus::Pending);
    assert_eq!(status(&store, "evt_other").await, DeliveryStatus::Dead);
    assert_eq!(status(&store, "evt_none").await, DeliveryStatus::NoEndpoint);

    // Every dead letter, whoever's.
    let dead = DeliveryFilter {
        status: Some(DeliveryStatus::Dead),
        ..DeliveryFilter::default()
    };
    assert_eq!(requeue(&store, dead, 3_000).await, 1);

    // Everything of one merchant, whatever its status.
    let merchant = DeliveryFilter {
        merchant_id: Some(MERCHANT.to_owned()),
        ..DeliveryFilter::default()
    };
    assert_eq!(requeue(&store, merchant, 4_000).await, 4);
    let due = store.due_deliveries(4_000, 100).await.unwrap();
    assert_eq!(due.len(), 5);
    assert!(due.iter().all(|(d, _)| d.attempts == 0), "{due:?}");
    // The attempts of the earlier round are kept.
    assert_eq!(attempt_numbers(&store, "evt_dead_1").await.len(), 1);

    // An empty filter is every delivery.
    assert_eq!(requeue(&store, DeliveryFilter::default(), 5_000).await, 5);
}

async fn list_events_pages_newest_first_per_merchant(backend: Backend) {
    let store = backend.open().await;
    // Five events of one order over four appends; two share a created_ms (id breaks the tie).
    let raised = [
        vec![event("evt_1", MERCHANT, "pay_1", 10)],
        vec![
            event("evt_2", MERCHANT, "pay_1", 20),
            event("evt_3", MERCHANT, "pay_1", 20),
        ],
        vec![event("evt_4", MERCHANT, "pay_1", 30)],
        vec![event("evt_5", MERCHANT, "pay_1", 40)],
    ];
    for (seq, events) in (0_u64..).zip(raised) {
        commit(&store, append("pay_1", MERCHANT, seq, events)).await;
    }
    order_with_event_of(&store, OTHER_MERCHANT, "pay_9", "evt_9", 25).await;
    let events = |query| event_page(&store, MERCHANT, query);

    assert_eq!(
        events(page(2, None, None)).await,
        listed(&["evt_5", "evt_4"], true)
    );
    assert_eq!(
        events(page(2, Some("evt_4"), None)).await,
        listed(&["evt_3", "evt_2"], true)
    );
    assert_eq!(
        events(page(2, Some("evt_2"), None)).await,
        listed(&["evt_1"], false)
    );

    // Backwards from the last page, still newest first.
    assert_eq!(
        events(page(2, None, Some("evt_2"))).await,
        listed(&["evt_4", "evt_3"], true)
    );
    assert_eq!(
        events(page(2, None, Some("evt_3"))).await,
        listed(&["evt_5", "evt_4"], false)
    );
    assert_eq!(
        events(page(10, Some("evt_5"), Some("evt_1"))).await,
        listed(&["evt_4", "evt_3", "evt_2"], false)
    );

    // Another merchant's events are not listed and are not a cursor.
    let other = event_page(&store, OTHER_MERCHANT, page(10, None, None)).await;
    assert_eq!(other.0, ["evt_9"]);
    for cursor in ["evt_9", "evt_nope"] {
        let listing = store.list_events(MERCHANT, page(10, Some(cursor), None));
        assert_unknown_cursor(listing.await);
    }
}

async fn list_deliveries_filters_and_pages_newest_first(backend: Backend) {
    let store = backend.open().await;
    for (i, created_ms) in [(1, 10), (2, 20), (3, 30), (4, 40)] {
        order_with_event(&store, &format!("pay_{i}"), &format!("evt_{i}"), created_ms).await;
    }
    order_with_event_of(&store, OTHER_MERCHANT, "pay_9", "evt_9", 25).await;
    for event_id in ["evt_2", "evt_4", "evt_9"] {
        let last = attempt(event_id, 1, 100, Some(500));
        record(&store, last, AttemptOutcome::Dead).await;
    }
    let all = |query| delivery_page(&store, DeliveryFilter::default(), query);
    let dead = |query| delivery_page(&store, dead_of(MERCHANT), query);

    assert_eq!(
        all(page(3, None, None)).await,
        listed(&["evt_4", "evt_3", "evt_9"], true)
    );
    assert_eq!(
        all(page(3, Some("evt_9"), None)).await,
        listed(&["evt_2", "evt_1"], false)
    );

    assert_eq!(dead(page(1, None, None)).await, listed(&["evt_4"], true));
    assert_eq!(
        dead(page(1, Some("evt_4"), None)).await,
        listed(&["evt_2"], false)
    );
    assert_eq!(dead(page(5, None, Some("evt_2"))).await.0, ["evt_4"]);

    let one = delivery_page(&store, filter_event("evt_3"), page(5, None, None)).await;
    assert_eq!(one.0, ["evt_3"]);

    // With a merchant in the filter, another merchant's delivery is not a cursor.
    let listing = store.list_deliveries(dead_of(MERCHANT), page(5, Some("evt_9"), None));
    assert_unknown_cursor(listing.await);
}

async fn the_outbox_survives_close_and_reopen(backend: Backend) {
    let store = backend.open().await;
    orders_with_events(&store, &[("pay_1", "evt_1", 100), ("pay_2", "evt_2", 200)]).await;
    record(&store, attempt("evt_1", 1, 150, Some(502)), retry_at(900)).await;
    let before = delivery(&store, "evt_1").await;
    close(store).await;

    let store = backend.open().await;
    assert_eq!(delivery(&store, "evt_1").await, before);
    assert_eq!(
        stored_event(&store, Some(MERCHANT), "evt_2").await,
        Some(event("evt_2", MERCHANT, "pay_2", 200))
    );
    assert_eq!(attempt_numbers(&store, "evt_1").await.len(), 1);
    assert_eq!(due_ids(&store, 1_000, 10).await, ["evt_2", "evt_1"]);
}

/// A file the previous build wrote (schema 3: no outbox tables) is migrated in place: its
/// data stays, and appends with events work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_from_before_the_outbox_is_migrated_in_place() {
    let dir = TempDir::new().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(open(&dir));
    let path = config(&dir).path;
    commit(&store, append("pay_1", MERCHANT, 0, Vec::new())).await;
    close(store).await;

    // Turn the file back into what the previous schema wrote.
    let conn = connect(&path);
    conn.execute_batch(&format!(
        "DROP TABLE delivery_attempts; DROP TABLE deliveries; DROP TABLE events;
         ALTER TABLE merchants DROP COLUMN previous_secret_sealed;
         ALTER TABLE merchants DROP COLUMN previous_secret_expires_ms;
         PRAGMA user_version = {SCHEMA_VERSION_BEFORE_OUTBOX};"
    ))
    .unwrap();
    drop(conn);

    let store: Arc<dyn Store> = Arc::new(open(&dir));
    assert_eq!(
        store.get_payment("pay_1").await.unwrap(),
        Some(payment("pay_1", MERCHANT, 100))
    );
    assert_eq!(store.load_journal("pay_1").await.unwrap(), [entry(1)]);
    let raised = event("evt_1", MERCHANT, "pay_1", 300);
    commit(&store, append("pay_1", MERCHANT, 1, vec![raised])).await;
    assert_eq!(status(&store, "evt_1").await, DeliveryStatus::Pending);
    close(store).await;

    let conn = connect(&path);
    let version = schema_version(&conn);
    assert!(version > SCHEMA_VERSION_BEFORE_OUTBOX, "{version}");
    // The CHECK is the last line: a delivery status outside the four cannot be written.
    let lost = "UPDATE deliveries SET status = 'lost' WHERE event_id = 'evt_1'";
    let err = conn.execute(lost, []).unwrap_err();
    assert!(err.to_string().contains("CHECK"), "{err}");
}

async fn relay_ids(store: &Arc<dyn Store>, now_ms: UnixMs) -> Vec<String> {
    let due = store.relay_due(now_ms, 10).await.expect("relay due");
    due.into_iter().map(|d| d.event_id).collect()
}

async fn hand_off(store: &Arc<dyn Store>, handoffs: &[(&str, u32)]) -> u64 {
    let handoffs = handoffs
        .iter()
        .map(|(id, n)| ((*id).to_owned(), *n))
        .collect();
    store
        .mark_handed_off(handoffs)
        .await
        .expect("mark handed off")
}

/// The broker relay's view: a delivery is relayed once per attempt. The mark holds only for
/// the attempt count it was made at; an attempt or a replay clears it, so the next attempt is
/// relayed again, and a stale mark (made after an attempt) changes nothing.
async fn the_relay_hands_each_attempt_off_once(backend: Backend) {
    let store = backend.open().await;
    orders_with_events(&store, &[("pay_1", "evt_1", 100), ("pay_2", "evt_2", 200)]).await;
    assert_eq!(
        relay_ids(&store, 50).await,
        Vec::<String>::new(),
        "not due yet"
    );
    assert_eq!(relay_ids(&store, 1_000).await, ["evt_1", "evt_2"]);

    assert_eq!(hand_off(&store, &[("evt_1", 0)]).await, 1);
    assert_eq!(relay_ids(&store, 1_000).await, ["evt_2"]);
    // Embedded scans are unaffected by the mark.
    assert_eq!(due_ids(&store, 1_000, 10).await, ["evt_1", "evt_2"]);

    // Attempt 1 fails: the retry needs a new message, once it is due.
    record(&store, attempt("evt_1", 1, 300, Some(503)), retry_at(900)).await;
    assert_eq!(relay_ids(&store, 800).await, ["evt_2"]);
    assert_eq!(
        relay_ids(&store, 900).await,
        ["evt_2", "evt_1"],
        "oldest due first"
    );
    // A mark for the old attempt count is stale; the current one holds.
    assert_eq!(hand_off(&store, &[("evt_1", 0), ("evt_2", 0)]).await, 1);
    assert_eq!(relay_ids(&store, 1_000).await, ["evt_1"]);
    assert_eq!(hand_off(&store, &[("evt_1", 1)]).await, 1);
    assert_eq!(relay_ids(&store, 1_000).await, Vec::<String>::new());

    // Delivered: never relayed again, and a mark cannot touch it.
    record(
        &store,
        attempt("evt_1", 2, 950, Some(200)),
        AttemptOutcome::Delivered,
    )
    .await;
    assert_eq!(hand_off(&store, &[("evt_1", 2)]).await, 0);
    // A replay clears the mark: relayed again.
    assert_eq!(requeue(&store, filter_event("evt_1"), 2_000).await, 1);
    assert_eq!(relay_ids(&store, 2_000).await, ["evt_1"]);
    assert_eq!(hand_off(&store, &[]).await, 0);
}
