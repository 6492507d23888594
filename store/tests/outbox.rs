//! The transactional outbox on the SQLite backend against the `Store` contract: events and
//! their deliveries are written with the append that raises them (and not at all when it
//! fails), attempts move a delivery on, requeues put it back, the lists page newest first,
//! and a file from the previous schema is migrated in place.

use kassa_store::sqlite::{SqliteConfig, SqliteStore};
use kassa_store::{
    ATTEMPT_RESPONSE_BYTES_MAX, Append, AppendError, AttemptOutcome, AttemptRecord, DeliveryFilter,
    DeliveryRecord, DeliveryStatus, EventRecord, JournalEntry, ListQuery, PaymentRow, Store,
    StoreError,
};
use tempfile::TempDir;

const MERCHANT: &str = "mch_1";
const OTHER_MERCHANT: &str = "mch_2";
/// The schema version before the outbox existed.
const SCHEMA_VERSION_BEFORE_OUTBOX: i64 = 3;

fn config(dir: &TempDir) -> SqliteConfig {
    let mut config = SqliteConfig::new(dir.path().join("kassa.db"));
    config.busy_timeout_ms = 30_000;
    config
}

fn open(dir: &TempDir) -> SqliteStore {
    SqliteStore::open(config(dir)).expect("open store")
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

/// A new order of `MERCHANT` whose first append raises one event, created at `created_ms`.
async fn order_with_event(store: &SqliteStore, order_id: &str, event_id: &str, created_ms: i64) {
    let raised = event(event_id, MERCHANT, order_id, created_ms);
    store
        .append(append(order_id, MERCHANT, 0, vec![raised]))
        .await
        .expect("append with an event");
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

async fn delivery(store: &SqliteStore, event_id: &str) -> DeliveryRecord {
    store
        .get_delivery(event_id)
        .await
        .expect("get delivery")
        .expect("delivery exists")
}

async fn event_count(store: &SqliteStore, merchant_id: &str) -> usize {
    let page = store
        .list_events(merchant_id, page(100, None, None))
        .await
        .expect("list events");
    page.rows.len()
}

fn page(limit: u32, starting_after: Option<&str>, ending_before: Option<&str>) -> ListQuery {
    ListQuery {
        limit,
        starting_after: starting_after.map(str::to_owned),
        ending_before: ending_before.map(str::to_owned),
    }
}

fn ids(events: &[EventRecord]) -> Vec<&str> {
    events.iter().map(|e| e.id.as_str()).collect()
}

fn filter_event(event_id: &str) -> DeliveryFilter {
    DeliveryFilter {
        event_id: Some(event_id.to_owned()),
        ..DeliveryFilter::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_writes_its_events_and_pending_deliveries() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let first = event("evt_1", MERCHANT, "pay_1", 500);
    let second = EventRecord {
        kind: "payment.captured".to_owned(),
        ..event("evt_2", MERCHANT, "pay_1", 600)
    };
    store
        .append(append(
            "pay_1",
            MERCHANT,
            0,
            vec![first.clone(), second.clone()],
        ))
        .await
        .unwrap();

    assert_eq!(
        store.get_event(None, "evt_1").await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        store.get_event(Some(MERCHANT), "evt_2").await.unwrap(),
        Some(second.clone())
    );
    assert_eq!(
        store
            .get_event(Some(OTHER_MERCHANT), "evt_1")
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.get_event(None, "evt_nope").await.unwrap(), None);
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
    assert_eq!(store.next_delivery_due().await.unwrap(), Some(500));
    assert_eq!(store.delivery_attempts("evt_1").await.unwrap(), []);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_append_leaves_no_event() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    store
        .append(append("pay_1", MERCHANT, 0, Vec::new()))
        .await
        .unwrap();

    // A stale writer: seq conflict, with an event that must not survive it.
    let stale = append(
        "pay_1",
        MERCHANT,
        0,
        vec![event("evt_stale", MERCHANT, "pay_1", 100)],
    );
    let err = store.append(stale).await.unwrap_err();
    assert!(matches!(err, AppendError::SeqConflict { .. }), "{err:?}");

    // A duplicate merchant_order_id fails after the journal insert: still no event.
    let mut duplicate = append(
        "pay_2",
        MERCHANT,
        0,
        vec![event("evt_dup", MERCHANT, "pay_2", 100)],
    );
    if let Some(p) = duplicate.payment.as_mut() {
        p.merchant_order_id = "order-pay_1".to_owned();
    }
    let err = store.append(duplicate).await.unwrap_err();
    assert!(
        matches!(err, AppendError::DuplicateMerchantOrderId { .. }),
        "{err:?}"
    );

    for id in ["evt_stale", "evt_dup"] {
        assert_eq!(store.get_event(None, id).await.unwrap(), None);
        assert_eq!(store.get_delivery(id).await.unwrap(), None);
    }
    assert_eq!(event_count(&store, MERCHANT).await, 0);
    assert_eq!(store.next_delivery_due().await.unwrap(), None);
    let all = store
        .list_deliveries(DeliveryFilter::default(), page(100, None, None))
        .await
        .unwrap();
    assert!(all.rows.is_empty() && !all.has_more);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_appending_an_event_id_keeps_the_first() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    order_with_event(&store, "pay_1", "evt_1", 100).await;
    store
        .record_attempt(
            attempt("evt_1", 1, 200, Some(200)),
            AttemptOutcome::Delivered,
        )
        .await
        .unwrap();

    // The same event id again (e.g. a retried transition), with another body.
    let again = EventRecord {
        body: "{\"changed\":true}".to_owned(),
        ..event("evt_1", MERCHANT, "pay_1", 900)
    };
    store
        .append(append("pay_1", MERCHANT, 1, vec![again]))
        .await
        .unwrap();

    let stored = store.get_event(None, "evt_1").await.unwrap().unwrap();
    assert_eq!(stored, event("evt_1", MERCHANT, "pay_1", 100));
    assert_eq!(event_count(&store, MERCHANT).await, 1);
    // Its delivery is not reset by the second append.
    let delivered = delivery(&store, "evt_1").await;
    assert_eq!(delivered.status, DeliveryStatus::Delivered);
    assert_eq!(store.next_delivery_due().await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_deliveries_come_oldest_due_first_with_their_events() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    order_with_event(&store, "pay_1", "evt_c", 300).await;
    order_with_event(&store, "pay_2", "evt_a", 100).await;
    order_with_event(&store, "pay_3", "evt_b", 200).await;
    order_with_event(&store, "pay_4", "evt_later", 5_000).await;
    // Two due at the same time come in event id order.
    order_with_event(&store, "pay_5", "evt_a2", 100).await;

    let due = store.due_deliveries(1_000, 10).await.unwrap();
    let due_ids: Vec<&str> = due.iter().map(|(d, _)| d.event_id.as_str()).collect();
    assert_eq!(due_ids, ["evt_a", "evt_a2", "evt_b", "evt_c"]);
    for (delivery, event) in &due {
        assert_eq!(delivery.event_id, event.id);
        assert_eq!(delivery.status, DeliveryStatus::Pending);
    }
    assert_eq!(due[0].1, event("evt_a", MERCHANT, "pay_2", 100));

    let first_two = store.due_deliveries(1_000, 2).await.unwrap();
    assert_eq!(first_two.len(), 2);
    assert!(store.due_deliveries(99, 10).await.unwrap().is_empty());
    assert_eq!(store.next_delivery_due().await.unwrap(), Some(100));

    // A retry moves a delivery behind the others; a finished one is never due.
    store
        .record_attempt(
            attempt("evt_a", 1, 1_000, Some(500)),
            AttemptOutcome::Retry {
                next_attempt_ms: 250,
            },
        )
        .await
        .unwrap();
    store
        .record_attempt(
            attempt("evt_a2", 1, 1_000, Some(200)),
            AttemptOutcome::Delivered,
        )
        .await
        .unwrap();
    let due = store.due_deliveries(1_000, 10).await.unwrap();
    let due_ids: Vec<&str> = due.iter().map(|(d, _)| d.event_id.as_str()).collect();
    assert_eq!(due_ids, ["evt_b", "evt_a", "evt_c"]);
    assert_eq!(store.next_delivery_due().await.unwrap(), Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_move_a_delivery_on() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    order_with_event(&store, "pay_1", "evt_retry", 100).await;
    order_with_event(&store, "pay_2", "evt_dead", 100).await;
    order_with_event(&store, "pay_3", "evt_none", 100).await;

    // Retry, retry, delivered.
    store
        .record_attempt(
            attempt("evt_retry", 1, 110, None),
            AttemptOutcome::Retry {
                next_attempt_ms: 1_110,
            },
        )
        .await
        .unwrap();
    let retried = delivery(&store, "evt_retry").await;
    assert_eq!(retried.status, DeliveryStatus::Pending);
    assert_eq!(retried.attempts, 1);
    assert_eq!(retried.next_attempt_ms, 1_110);
    assert_eq!(retried.updated_ms, 110);
    assert_eq!(retried.last_http_status, None);

    store
        .record_attempt(
            attempt("evt_retry", 2, 1_120, Some(503)),
            AttemptOutcome::Retry {
                next_attempt_ms: 5_000,
            },
        )
        .await
        .unwrap();
    let retried = delivery(&store, "evt_retry").await;
    assert_eq!(
        (retried.attempts, retried.next_attempt_ms),
        (2, 5_000),
        "{retried:?}"
    );
    assert_eq!(retried.last_http_status, Some(503));
    assert_eq!(retried.last_error.as_deref(), Some("HTTP 503"));

    store
        .record_attempt(
            attempt("evt_retry", 3, 5_010, Some(204)),
            AttemptOutcome::Delivered,
        )
        .await
        .unwrap();
    let delivered = delivery(&store, "evt_retry").await;
    assert_eq!(delivered.status, DeliveryStatus::Delivered);
    assert_eq!(delivered.attempts, 3);
    assert_eq!(delivered.last_http_status, Some(204));
    assert_eq!(delivered.last_error, None);
    assert_eq!(delivered.updated_ms, 5_010);

    let attempts = store.delivery_attempts("evt_retry").await.unwrap();
    let numbers: Vec<u32> = attempts.iter().map(|a| a.attempt).collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert_eq!(attempts[1], attempt("evt_retry", 2, 1_120, Some(503)));

    // Dead.
    store
        .record_attempt(attempt("evt_dead", 1, 120, Some(410)), AttemptOutcome::Dead)
        .await
        .unwrap();
    let dead = delivery(&store, "evt_dead").await;
    assert_eq!((dead.status, dead.attempts), (DeliveryStatus::Dead, 1));
    assert_eq!(dead.last_http_status, Some(410));

    // No endpoint: no attempt row, no attempt counted.
    store
        .record_attempt(
            attempt("evt_none", 1, 130, None),
            AttemptOutcome::NoEndpoint,
        )
        .await
        .unwrap();
    let none = delivery(&store, "evt_none").await;
    assert_eq!(
        (none.status, none.attempts),
        (DeliveryStatus::NoEndpoint, 0)
    );
    assert_eq!(store.delivery_attempts("evt_none").await.unwrap(), []);
    assert_eq!(store.next_delivery_due().await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_on_a_finished_delivery_leaves_it_as_it_is() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    order_with_event(&store, "pay_1", "evt_1", 100).await;
    store
        .record_attempt(
            attempt("evt_1", 1, 200, Some(200)),
            AttemptOutcome::Delivered,
        )
        .await
        .unwrap();
    let before = delivery(&store, "evt_1").await;

    for outcome in [
        AttemptOutcome::Retry {
            next_attempt_ms: 9_000,
        },
        AttemptOutcome::Dead,
        AttemptOutcome::NoEndpoint,
        AttemptOutcome::Delivered,
    ] {
        store
            .record_attempt(attempt("evt_1", 2, 300, Some(500)), outcome)
            .await
            .unwrap();
        assert_eq!(delivery(&store, "evt_1").await, before);
    }
    // The late attempt itself happened and is kept (once: same number, same row).
    let numbers: Vec<u32> = store
        .delivery_attempts("evt_1")
        .await
        .unwrap()
        .iter()
        .map(|a| a.attempt)
        .collect();
    assert_eq!(numbers, [1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_attempt_number_replaces_its_row_and_excerpts_are_cut() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    order_with_event(&store, "pay_1", "evt_1", 100).await;
    let mut first = attempt("evt_1", 1, 200, None);
    first.error = Some("timeout".to_owned());
    store
        .record_attempt(
            first,
            AttemptOutcome::Retry {
                next_attempt_ms: 300,
            },
        )
        .await
        .unwrap();
    // The same attempt number again (a crash between the send and the record, then a retry).
    let mut again = attempt("evt_1", 1, 250, Some(500));
    // 'é' is two bytes: the cut must not split it.
    again.response_excerpt = format!("x{}", "é".repeat(ATTEMPT_RESPONSE_BYTES_MAX));
    store
        .record_attempt(
            again,
            AttemptOutcome::Retry {
                next_attempt_ms: 400,
            },
        )
        .await
        .unwrap();

    let attempts = store.delivery_attempts("evt_1").await.unwrap();
    assert_eq!(attempts.len(), 1);
    let kept = &attempts[0];
    assert_eq!((kept.at_ms, kept.http_status), (250, Some(500)));
    assert_eq!(kept.response_excerpt.len(), ATTEMPT_RESPONSE_BYTES_MAX - 1);
    assert!(kept.response_excerpt.starts_with("xé"));

    // Attempts are numbered from 1, and only for a delivery that exists.
    let err = store
        .record_attempt(attempt("evt_1", 0, 500, None), AttemptOutcome::Dead)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    let err = store
        .record_attempt(attempt("evt_nope", 1, 500, None), AttemptOutcome::Dead)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert_eq!(
        delivery(&store, "evt_1").await.status,
        DeliveryStatus::Pending
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_by_event_status_and_merchant() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    order_with_event(&store, "pay_1", "evt_delivered", 100).await;
    order_with_event(&store, "pay_2", "evt_dead_1", 100).await;
    order_with_event(&store, "pay_3", "evt_dead_2", 100).await;
    order_with_event(&store, "pay_4", "evt_none", 100).await;
    store
        .append(append(
            "pay_9",
            OTHER_MERCHANT,
            0,
            vec![event("evt_other", OTHER_MERCHANT, "pay_9", 100)],
        ))
        .await
        .unwrap();
    let finish = [
        ("evt_delivered", AttemptOutcome::Delivered),
        ("evt_dead_1", AttemptOutcome::Dead),
        ("evt_dead_2", AttemptOutcome::Dead),
        ("evt_none", AttemptOutcome::NoEndpoint),
        ("evt_other", AttemptOutcome::Dead),
    ];
    for (event_id, outcome) in finish {
        store
            .record_attempt(attempt(event_id, 1, 200, Some(500)), outcome)
            .await
            .unwrap();
    }

    // One event (a resend of a delivered one).
    let requeued = store
        .requeue_deliveries(filter_event("evt_delivered"), 1_000)
        .await
        .unwrap();
    assert_eq!(requeued, 1);
    let resent = delivery(&store, "evt_delivered").await;
    assert_eq!(resent.status, DeliveryStatus::Pending);
    assert_eq!(
        (resent.attempts, resent.next_attempt_ms, resent.updated_ms),
        (0, 1_000, 1_000)
    );
    assert_eq!(store.next_delivery_due().await.unwrap(), Some(1_000));
    assert_eq!(
        store
            .requeue_deliveries(filter_event("evt_nope"), 1_000)
            .await
            .unwrap(),
        0
    );

    // Dead letters of one merchant.
    let dead_of_merchant = DeliveryFilter {
        status: Some(DeliveryStatus::Dead),
        merchant_id: Some(MERCHANT.to_owned()),
        event_id: None,
    };
    assert_eq!(
        store
            .requeue_deliveries(dead_of_merchant, 2_000)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        delivery(&store, "evt_dead_2").await.status,
        DeliveryStatus::Pending
    );
    assert_eq!(
        delivery(&store, "evt_other").await.status,
        DeliveryStatus::Dead
    );
    assert_eq!(
        delivery(&store, "evt_none").await.status,
        DeliveryStatus::NoEndpoint
    );

    // Every dead letter, whoever's.
    let dead = DeliveryFilter {
        status: Some(DeliveryStatus::Dead),
        ..DeliveryFilter::default()
    };
    assert_eq!(store.requeue_deliveries(dead, 3_000).await.unwrap(), 1);

    // Everything of one merchant, whatever its status.
    let merchant = DeliveryFilter {
        merchant_id: Some(MERCHANT.to_owned()),
        ..DeliveryFilter::default()
    };
    assert_eq!(store.requeue_deliveries(merchant, 4_000).await.unwrap(), 4);
    let due = store.due_deliveries(4_000, 100).await.unwrap();
    assert_eq!(due.len(), 5);
    assert!(due.iter().all(|(d, _)| d.attempts == 0), "{due:?}");
    // The attempts of the earlier round are kept.
    assert_eq!(
        store.delivery_attempts("evt_dead_1").await.unwrap().len(),
        1
    );

    // An empty filter is every delivery.
    assert_eq!(
        store
            .requeue_deliveries(DeliveryFilter::default(), 5_000)
            .await
            .unwrap(),
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_events_pages_newest_first_per_merchant() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
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
        store
            .append(append("pay_1", MERCHANT, seq, events))
            .await
            .unwrap();
    }
    store
        .append(append(
            "pay_9",
            OTHER_MERCHANT,
            0,
            vec![event("evt_9", OTHER_MERCHANT, "pay_9", 25)],
        ))
        .await
        .unwrap();

    let first = store
        .list_events(MERCHANT, page(2, None, None))
        .await
        .unwrap();
    assert_eq!(ids(&first.rows), ["evt_5", "evt_4"]);
    assert!(first.has_more);
    let second = store
        .list_events(MERCHANT, page(2, Some("evt_4"), None))
        .await
        .unwrap();
    assert_eq!(ids(&second.rows), ["evt_3", "evt_2"]);
    assert!(second.has_more);
    let last = store
        .list_events(MERCHANT, page(2, Some("evt_2"), None))
        .await
        .unwrap();
    assert_eq!(ids(&last.rows), ["evt_1"]);
    assert!(!last.has_more);

    // Backwards from the last page, still newest first.
    let back = store
        .list_events(MERCHANT, page(2, None, Some("evt_2")))
        .await
        .unwrap();
    assert_eq!(ids(&back.rows), ["evt_4", "evt_3"]);
    assert!(back.has_more);
    let back = store
        .list_events(MERCHANT, page(2, None, Some("evt_3")))
        .await
        .unwrap();
    assert_eq!(ids(&back.rows), ["evt_5", "evt_4"]);
    assert!(!back.has_more);
    let between = store
        .list_events(MERCHANT, page(10, Some("evt_5"), Some("evt_1")))
        .await
        .unwrap();
    assert_eq!(ids(&between.rows), ["evt_4", "evt_3", "evt_2"]);
    assert!(!between.has_more);

    // Another merchant's events are not listed and are not a cursor.
    let other = store
        .list_events(OTHER_MERCHANT, page(10, None, None))
        .await
        .unwrap();
    assert_eq!(ids(&other.rows), ["evt_9"]);
    for cursor in ["evt_9", "evt_nope"] {
        let err = store
            .list_events(MERCHANT, page(10, Some(cursor), None))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::UnknownCursor(_)), "{err:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_deliveries_filters_and_pages_newest_first() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    for (i, created_ms) in [(1, 10), (2, 20), (3, 30), (4, 40)] {
        order_with_event(&store, &format!("pay_{i}"), &format!("evt_{i}"), created_ms).await;
    }
    store
        .append(append(
            "pay_9",
            OTHER_MERCHANT,
            0,
            vec![event("evt_9", OTHER_MERCHANT, "pay_9", 25)],
        ))
        .await
        .unwrap();
    for event_id in ["evt_2", "evt_4", "evt_9"] {
        store
            .record_attempt(attempt(event_id, 1, 100, Some(500)), AttemptOutcome::Dead)
            .await
            .unwrap();
    }
    let event_ids =
        |rows: &[DeliveryRecord]| rows.iter().map(|d| d.event_id.clone()).collect::<Vec<_>>();

    let all = store
        .list_deliveries(DeliveryFilter::default(), page(3, None, None))
        .await
        .unwrap();
    assert_eq!(event_ids(&all.rows), ["evt_4", "evt_3", "evt_9"]);
    assert!(all.has_more);
    let rest = store
        .list_deliveries(DeliveryFilter::default(), page(3, Some("evt_9"), None))
        .await
        .unwrap();
    assert_eq!(event_ids(&rest.rows), ["evt_2", "evt_1"]);
    assert!(!rest.has_more);

    let dead_of_merchant = DeliveryFilter {
        status: Some(DeliveryStatus::Dead),
        merchant_id: Some(MERCHANT.to_owned()),
        event_id: None,
    };
    let dead = store
        .list_deliveries(dead_of_merchant.clone(), page(1, None, None))
        .await
        .unwrap();
    assert_eq!(event_ids(&dead.rows), ["evt_4"]);
    assert!(dead.has_more);
    let dead = store
        .list_deliveries(dead_of_merchant.clone(), page(1, Some("evt_4"), None))
        .await
        .unwrap();
    assert_eq!(event_ids(&dead.rows), ["evt_2"]);
    assert!(!dead.has_more);
    let back = store
        .list_deliveries(dead_of_merchant.clone(), page(5, None, Some("evt_2")))
        .await
        .unwrap();
    assert_eq!(event_ids(&back.rows), ["evt_4"]);

    let one = store
        .list_deliveries(filter_event("evt_3"), page(5, None, None))
        .await
        .unwrap();
    assert_eq!(event_ids(&one.rows), ["evt_3"]);

    // With a merchant in the filter, another merchant's delivery is not a cursor.
    let err = store
        .list_deliveries(dead_of_merchant, page(5, Some("evt_9"), None))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::UnknownCursor(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_survives_close_and_reopen() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    order_with_event(&store, "pay_1", "evt_1", 100).await;
    order_with_event(&store, "pay_2", "evt_2", 200).await;
    store
        .record_attempt(
            attempt("evt_1", 1, 150, Some(502)),
            AttemptOutcome::Retry {
                next_attempt_ms: 900,
            },
        )
        .await
        .unwrap();
    let before = delivery(&store, "evt_1").await;
    store.shutdown().await.unwrap();
    drop(store);

    let store = open(&dir);
    assert_eq!(delivery(&store, "evt_1").await, before);
    assert_eq!(
        store.get_event(Some(MERCHANT), "evt_2").await.unwrap(),
        Some(event("evt_2", MERCHANT, "pay_2", 200))
    );
    assert_eq!(store.delivery_attempts("evt_1").await.unwrap().len(), 1);
    let due = store.due_deliveries(1_000, 10).await.unwrap();
    let due_ids: Vec<&str> = due.iter().map(|(d, _)| d.event_id.as_str()).collect();
    assert_eq!(due_ids, ["evt_2", "evt_1"]);
}

/// A file the previous build wrote (schema 3: no outbox tables) is migrated in place: its
/// data stays, and appends with events work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_from_before_the_outbox_is_migrated_in_place() {
    let dir = TempDir::new().unwrap();
    let path = config(&dir).path;
    let store = open(&dir);
    store
        .append(append("pay_1", MERCHANT, 0, Vec::new()))
        .await
        .unwrap();
    store.shutdown().await.unwrap();
    drop(store);

    // Turn the file back into what the previous schema wrote.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(&format!(
        "DROP TABLE delivery_attempts; DROP TABLE deliveries; DROP TABLE events;
         PRAGMA user_version = {SCHEMA_VERSION_BEFORE_OUTBOX};"
    ))
    .unwrap();
    drop(conn);

    let store = open(&dir);
    assert_eq!(
        store.get_payment("pay_1").await.unwrap(),
        Some(payment("pay_1", MERCHANT, 100))
    );
    assert_eq!(store.load_journal("pay_1").await.unwrap(), [entry(1)]);
    store
        .append(append(
            "pay_1",
            MERCHANT,
            1,
            vec![event("evt_1", MERCHANT, "pay_1", 300)],
        ))
        .await
        .unwrap();
    assert_eq!(
        delivery(&store, "evt_1").await.status,
        DeliveryStatus::Pending
    );
    store.shutdown().await.unwrap();
    drop(store);

    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert!(version > SCHEMA_VERSION_BEFORE_OUTBOX, "{version}");
    // The CHECK is the last line: a delivery status outside the four cannot be written.
    let err = conn
        .execute(
            "UPDATE deliveries SET status = 'lost' WHERE event_id = 'evt_1'",
            [],
        )
        .unwrap_err();
    assert!(err.to_string().contains("CHECK"), "{err}");
}
