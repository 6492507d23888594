//! The backends against the `Store` contract: the real file or server, the real writer, the
//! real read pool. Every case but the backend-specific ones at the end runs on both
//! backends (`on_sqlite::…`, `on_postgres::…`; see `common/mod.rs`).
//!
//! Tests that need the writer stuck hold the journal's write lock from a second connection
//! ([`Backend::hold_write_lock`]): the writer then waits inside its batch while the test
//! queues writes behind it.

#[macro_use]
mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Backend, Kind, Tune, WriteLock};
use futures::FutureExt;
use futures::future::{BoxFuture, join_all};
use kassa_store::postgres::{self, PostgresStore};
use kassa_store::sqlite::{SqliteConfig, SqliteStore};
use kassa_store::{
    Append, AppendError, IdempotencyRecord, JournalEntry, ListQuery, MerchantRecord, MethodRecord,
    PaymentRow, RefundRow, Store, StoreError,
};
use tempfile::TempDir;

on_both_backends!(worker_threads = 2;
    append_then_load_round_trips,
    seq_conflict_writes_nothing,
    misnumbered_entries_are_rejected,
    duplicate_merchant_order_id_returns_existing_payment,
    failing_request_does_not_fail_its_batch_neighbours,
    group_commit_batches_concurrent_appends,
    data_survives_close_and_reopen,
    list_payments_pages_newest_first,
    payment_ids_in_status_oldest_first,
    idempotency_insert_if_absent_keeps_the_earlier_record,
    purge_deletes_only_older_records,
    merchants_insert_get_list,
    merchant_secret_rotation_keeps_the_previous_secret,
    overloaded_when_the_queue_is_full,
    shutdown_drains_queued_writes_then_refuses_new_ones,
    works_as_a_shared_trait_object,
    many_reads_share_a_one_connection_pool,
    methods_upsert_list_and_refuse_impossible_limits,
);

const MERCHANT: &str = "mch_1";

/// The SQLite-only cases' file (a missing parent directory: `open` must create it).
fn config(dir: &TempDir) -> SqliteConfig {
    let mut config = SqliteConfig::new(dir.path().join("nested/data/kassa.db"));
    config.busy_timeout_ms = 30_000;
    config
}

fn entry(seq: u64) -> JournalEntry {
    JournalEntry {
        seq,
        kind: format!("kind_{seq}"),
        body: format!("{{\"seq\":{seq}}}"),
        at_ms: 1_000 + i64::try_from(seq % 1_000_000).expect("small"),
    }
}

fn payment(id: &str, merchant_order_id: &str, status: &str, created_ms: i64) -> PaymentRow {
    PaymentRow {
        id: id.to_owned(),
        merchant_id: MERCHANT.to_owned(),
        merchant_order_id: merchant_order_id.to_owned(),
        status: status.to_owned(),
        created_ms,
        body: format!("{{\"id\":\"{id}\",\"status\":\"{status}\"}}"),
        awaiting_channel: status == "processing",
    }
}

/// The first append of a new order whose payment has the same id as the order.
fn create(order_id: &str, merchant_order_id: &str, created_ms: i64) -> Append {
    Append {
        order_id: order_id.to_owned(),
        expected_seq: 0,
        entries: vec![entry(1)],
        payment: Some(payment(
            order_id,
            merchant_order_id,
            "processing",
            created_ms,
        )),
        refunds: Vec::new(),
        events: vec![],
    }
}

fn idempotency(key: &str, fingerprint: &str, created_ms: i64) -> IdempotencyRecord {
    IdempotencyRecord {
        merchant_id: MERCHANT.to_owned(),
        key: key.to_owned(),
        fingerprint: fingerprint.to_owned(),
        status: 201,
        body: fingerprint.as_bytes().to_vec(),
        created_ms,
    }
}

fn merchant(id: &str) -> MerchantRecord {
    MerchantRecord {
        id: id.to_owned(),
        name: format!("Merchant {id}"),
        secret_sealed: vec![1, 2, 3],
        webhook_url: Some("https://example.test/hook".to_owned()),
        webhook_secret_sealed: vec![4, 5],
        created_ms: 7,
        previous_secret_sealed: None,
        previous_secret_expires_ms: None,
    }
}

/// Polls `condition` until it holds; fails the test after a deadline.
async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Holds the write lock and parks the writer on it with one `plug` write, so every write
/// queued afterwards waits in the queue until the lock is released.
async fn park_writer(
    backend: &Backend,
    store: &Arc<dyn Store>,
) -> (WriteLock, BoxFuture<'static, ()>) {
    let lock = backend.hold_write_lock().await;
    let plug = store.append(create("pay_plug", "plug", 1));
    wait_for("the writer to take the plug", || {
        store.stats().queue_depth == 0
    })
    .await;
    let plug = plug.map(|result| result.expect("plug append")).boxed();
    (lock, plug)
}

fn store_path(dir: &TempDir) -> PathBuf {
    config(dir).path
}

async fn append_then_load_round_trips(backend: Backend) {
    let store = backend.open().await;
    let mut first = create("pay_1", "order-1", 100);
    first.entries.push(entry(2));
    store.append(first.clone()).await.unwrap();

    assert_eq!(store.load_journal("pay_1").await.unwrap(), first.entries);
    assert_eq!(store.get_payment("pay_1").await.unwrap(), first.payment);

    let refund = RefundRow {
        id: "re_1".to_owned(),
        payment_id: "pay_1".to_owned(),
        merchant_id: MERCHANT.to_owned(),
        status: "pending".to_owned(),
        created_ms: 200,
        body: "{\"id\":\"re_1\"}".to_owned(),
    };
    let second = Append {
        order_id: "pay_1".to_owned(),
        expected_seq: 2,
        entries: vec![entry(3)],
        payment: Some(payment("pay_1", "order-1", "succeeded", 100)),
        refunds: vec![refund.clone()],
        events: vec![],
    };
    store.append(second).await.unwrap();

    let journal = store.load_journal("pay_1").await.unwrap();
    assert_eq!(journal.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    let stored = store.get_payment("pay_1").await.unwrap().unwrap();
    assert_eq!(stored.status, "succeeded");
    assert_eq!(store.get_refund("re_1").await.unwrap(), Some(refund));
    assert_eq!(store.load_journal("pay_unknown").await.unwrap(), []);
    assert_eq!(store.get_payment("pay_unknown").await.unwrap(), None);
    assert_eq!(store.get_refund("re_unknown").await.unwrap(), None);
}

async fn seq_conflict_writes_nothing(backend: Backend) {
    let store = backend.open().await;
    let original = create("pay_1", "order-1", 100);
    store.append(original.clone()).await.unwrap();

    let mut stale = create("pay_1", "order-1", 100);
    stale.payment = Some(payment("pay_1", "order-1", "failed", 100));
    let err = store.append(stale).await.unwrap_err();
    assert!(
        matches!(
            err,
            AppendError::SeqConflict { ref order_id, expected_seq: 0, current_seq: 1 }
                if order_id == "pay_1"
        ),
        "{err:?}"
    );
    assert_eq!(store.load_journal("pay_1").await.unwrap(), original.entries);
    assert_eq!(store.get_payment("pay_1").await.unwrap(), original.payment);

    let ahead = Append {
        expected_seq: 5,
        entries: vec![entry(6)],
        ..create("pay_1", "order-1", 100)
    };
    let err = store.append(ahead).await.unwrap_err();
    assert!(
        matches!(err, AppendError::SeqConflict { current_seq: 1, .. }),
        "{err:?}"
    );
    assert_eq!(store.load_journal("pay_1").await.unwrap(), original.entries);
}

async fn misnumbered_entries_are_rejected(backend: Backend) {
    let store = backend.open().await;
    let cases = [
        vec![entry(1), entry(3)],
        vec![entry(2)],
        vec![entry(1), entry(1)],
    ];
    for entries in cases {
        let append = Append {
            entries,
            ..create("pay_1", "order-1", 100)
        };
        let err = store.append(append).await.unwrap_err();
        assert!(
            matches!(err, AppendError::Store(StoreError::Corrupt(_))),
            "{err:?}"
        );
    }
    // A seq SQLite's INTEGER cannot hold is refused before it reaches the writer.
    let too_far = Append {
        expected_seq: u64::MAX - 1,
        entries: vec![entry(u64::MAX)],
        ..create("pay_1", "order-1", 100)
    };
    let err = store.append(too_far).await.unwrap_err();
    assert!(
        matches!(err, AppendError::Store(StoreError::Corrupt(_))),
        "{err:?}"
    );
    assert_eq!(store.load_journal("pay_1").await.unwrap(), []);
    assert_eq!(store.get_payment("pay_1").await.unwrap(), None);
    assert_eq!(store.stats().writes, 0);
}

async fn duplicate_merchant_order_id_returns_existing_payment(backend: Backend) {
    let store = backend.open().await;
    store.append(create("pay_1", "order-1", 100)).await.unwrap();

    let err = store
        .append(create("pay_2", "order-1", 200))
        .await
        .unwrap_err();
    assert!(
        matches!(err, AppendError::DuplicateMerchantOrderId { ref existing_payment_id }
            if existing_payment_id == "pay_1"),
        "{err:?}"
    );
    assert_eq!(store.load_journal("pay_2").await.unwrap(), []);
    assert_eq!(store.get_payment("pay_2").await.unwrap(), None);
    assert_eq!(store.load_journal("pay_1").await.unwrap(), [entry(1)]);

    // The same merchant_order_id under another merchant is another order.
    let mut other = create("pay_3", "order-1", 300);
    if let Some(p) = other.payment.as_mut() {
        p.merchant_id = "mch_2".to_owned();
    }
    store.append(other).await.unwrap();
    // Updating the existing payment keeps its own merchant_order_id: no conflict.
    let update = Append {
        expected_seq: 1,
        entries: vec![entry(2)],
        ..create("pay_1", "order-1", 100)
    };
    store.append(update).await.unwrap();
}

async fn failing_request_does_not_fail_its_batch_neighbours(backend: Backend) {
    let store = backend.open().await;
    store
        .append(create("pay_taken", "order-taken", 1))
        .await
        .unwrap();
    let before = store.stats();

    let (lock, plug) = park_writer(&backend, &store).await;
    let mut appends = Vec::new();
    for i in 0..100 {
        appends.push(store.append(create(&format!("pay_{i}"), &format!("order-{i}"), i)));
        if i == 40 {
            // Stale seq on an existing order.
            appends.push(store.append(create("pay_taken", "order-taken", 1)));
        }
        if i == 60 {
            // Another order under a taken merchant_order_id.
            appends.push(store.append(create("pay_dup", "order-taken", 2)));
        }
    }
    lock.release().await;
    plug.await;
    let results = join_all(appends).await;

    let failed: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(
        matches!(results[41], Err(AppendError::SeqConflict { .. })),
        "{:?}",
        results[41]
    );
    assert!(
        matches!(
            results[62],
            Err(AppendError::DuplicateMerchantOrderId { .. })
        ),
        "{:?}",
        results[62]
    );
    for i in 0..100 {
        let journal = store.load_journal(&format!("pay_{i}")).await.unwrap();
        assert_eq!(journal, [entry(1)], "pay_{i}");
    }
    assert_eq!(store.load_journal("pay_taken").await.unwrap(), [entry(1)]);
    assert_eq!(store.load_journal("pay_dup").await.unwrap(), []);
    // The 100 good appends shared one commit with the two failures; the plug had its own.
    let after = store.stats();
    assert_eq!(after.commits - before.commits, 2, "{after:?}");
    assert_eq!(after.writes - before.writes, 101, "{after:?}");
    assert_eq!(after.batch_writes_max, 100, "{after:?}");
}

async fn group_commit_batches_concurrent_appends(backend: Backend) {
    const TASKS: usize = 100;
    const APPENDS_PER_TASK: usize = 20;
    let store = backend.open().await;
    // Each task is one order actor: it appends, waits for durability, appends again.
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let order_id = format!("pay_{task}");
                for seq in 1..=APPENDS_PER_TASK as u64 {
                    let append = Append {
                        order_id: order_id.clone(),
                        expected_seq: seq - 1,
                        entries: vec![entry(seq)],
                        payment: None,
                        refunds: Vec::new(),
                        events: vec![],
                    };
                    store.append(append).await.unwrap();
                }
            })
        })
        .collect();
    for task in join_all(tasks).await {
        task.unwrap();
    }

    let stats = store.stats();
    let writes = (TASKS * APPENDS_PER_TASK) as u64;
    assert_eq!(stats.writes, writes, "{stats:?}");
    assert!(
        stats.commits * 5 <= stats.writes,
        "too little batching: {stats:?}"
    );
    assert!(stats.batch_writes_max > 1, "{stats:?}");
    assert_eq!(stats.queue_depth, 0, "{stats:?}");
    let journal = store.load_journal("pay_7").await.unwrap();
    assert_eq!(journal.len(), APPENDS_PER_TASK);
}

async fn data_survives_close_and_reopen(backend: Backend) {
    let store = backend.open().await;
    store.append(create("pay_1", "order-1", 100)).await.unwrap();
    store.put_merchant(merchant("mch_1")).await.unwrap();
    store
        .put_idempotency(idempotency("key-1", "fp-1", 5))
        .await
        .unwrap();
    store.shutdown().await.unwrap();
    drop(store);

    let store = backend.open().await;
    assert_eq!(store.load_journal("pay_1").await.unwrap(), [entry(1)]);
    assert_eq!(
        store.get_payment("pay_1").await.unwrap(),
        create("pay_1", "order-1", 100).payment
    );
    assert_eq!(
        store.get_merchant("mch_1").await.unwrap(),
        Some(merchant("mch_1"))
    );
    assert_eq!(
        store.get_idempotency(MERCHANT, "key-1").await.unwrap(),
        Some(idempotency("key-1", "fp-1", 5))
    );
    // The journal continues where it stopped.
    let next = Append {
        expected_seq: 1,
        entries: vec![entry(2)],
        ..create("pay_1", "order-1", 100)
    };
    store.append(next).await.unwrap();
    // Dropping the last handle (no shutdown) also commits and closes cleanly.
    drop(store);

    let store = backend.open().await;
    assert_eq!(
        store.load_journal("pay_1").await.unwrap(),
        [entry(1), entry(2)]
    );
}

/// A file written before secret rotation (schema 5) opens, keeps its merchants (with no
/// previous secret) and can rotate them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_5_file_migrates_its_merchants() {
    const SCHEMA_VERSION_BEFORE_ROTATION: i64 = 5;
    let dir = TempDir::new().unwrap();
    let store = SqliteStore::open(config(&dir)).unwrap();
    store.put_merchant(merchant("mch_old")).await.unwrap();
    store.shutdown().await.unwrap();
    drop(store);
    let conn = rusqlite::Connection::open(store_path(&dir)).unwrap();
    conn.execute_batch(&format!(
        "ALTER TABLE merchants DROP COLUMN previous_secret_sealed;
         ALTER TABLE merchants DROP COLUMN previous_secret_expires_ms;
         PRAGMA user_version = {SCHEMA_VERSION_BEFORE_ROTATION};"
    ))
    .unwrap();
    drop(conn);

    let store = SqliteStore::open(config(&dir)).unwrap();
    assert_eq!(
        store.get_merchant("mch_old").await.unwrap(),
        Some(merchant("mch_old"))
    );
    assert!(
        store
            .rotate_merchant_secret("mch_old", vec![9], 50)
            .await
            .unwrap()
    );
    let rotated = store.get_merchant("mch_old").await.unwrap().unwrap();
    assert_eq!(rotated.previous_secret_sealed, Some(vec![1, 2, 3]));
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused() {
    let dir = TempDir::new().unwrap();
    SqliteStore::open(config(&dir))
        .unwrap()
        .shutdown()
        .await
        .unwrap();
    let conn = rusqlite::Connection::open(store_path(&dir)).unwrap();
    let current: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    conn.pragma_update(None, "user_version", current + 1)
        .unwrap();
    drop(conn);
    let err = SqliteStore::open(config(&dir)).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
}

async fn list_payments_pages_newest_first(backend: Backend) {
    let store = backend.open().await;
    // Seven payments; ties on created_ms are ordered by id. Newest first:
    // g(70) f(60) e(50) d(50) c(50) b(20) a(10)
    let created = [
        ("a", 10),
        ("b", 20),
        ("c", 50),
        ("d", 50),
        ("e", 50),
        ("f", 60),
        ("g", 70),
    ];
    let appends = created
        .iter()
        .map(|(id, ms)| store.append(create(&format!("pay_{id}"), id, *ms)));
    for result in join_all(appends).await {
        result.unwrap();
    }
    let mut foreign = create("pay_x", "x", 55);
    if let Some(p) = foreign.payment.as_mut() {
        p.merchant_id = "mch_2".to_owned();
    }
    store.append(foreign).await.unwrap();

    let list = |starting_after: Option<&str>, ending_before: Option<&str>| {
        let query = ListQuery {
            limit: 3,
            starting_after: starting_after.map(|id| format!("pay_{id}")),
            ending_before: ending_before.map(|id| format!("pay_{id}")),
        };
        let page = store.list_payments(MERCHANT, query);
        async move {
            let page = page.await.unwrap();
            let ids: Vec<String> = page.rows.iter().map(|p| p.id[4..].to_owned()).collect();
            (ids.join(""), page.has_more)
        }
    };
    assert_eq!(list(None, None).await, ("gfe".to_owned(), true));
    assert_eq!(list(Some("e"), None).await, ("dcb".to_owned(), true));
    assert_eq!(list(Some("b"), None).await, ("a".to_owned(), false));
    assert_eq!(list(Some("a"), None).await, (String::new(), false));
    // Backwards: still newest first, has_more looks further back (newer).
    assert_eq!(list(None, Some("a")).await, ("dcb".to_owned(), true));
    assert_eq!(list(None, Some("d")).await, ("gfe".to_owned(), false));
    assert_eq!(list(None, Some("f")).await, ("g".to_owned(), false));
    assert_eq!(list(None, Some("g")).await, (String::new(), false));
    // Both cursors: the rows strictly between.
    assert_eq!(list(Some("f"), Some("b")).await, ("edc".to_owned(), false));

    let unknown = ListQuery {
        limit: 3,
        starting_after: Some("pay_nope".to_owned()),
        ending_before: None,
    };
    let err = store.list_payments(MERCHANT, unknown).await.unwrap_err();
    assert!(
        matches!(err, StoreError::UnknownCursor(ref id) if id == "pay_nope"),
        "{err:?}"
    );
    // Another merchant's payment is not a cursor for this one.
    let foreign_cursor = ListQuery {
        limit: 3,
        starting_after: None,
        ending_before: Some("pay_x".to_owned()),
    };
    let err = store
        .list_payments(MERCHANT, foreign_cursor)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::UnknownCursor(_)), "{err:?}");
    let other = store.list_payments(
        "mch_2",
        ListQuery {
            limit: 10,
            ..ListQuery::default()
        },
    );
    let other = other.await.unwrap();
    assert_eq!(other.rows.len(), 1);
    assert!(!other.has_more);
}

async fn payment_ids_in_status_oldest_first(backend: Backend) {
    let store = backend.open().await;
    for (id, ms) in [("pay_c", 30), ("pay_a", 10), ("pay_b", 20), ("pay_d", 40)] {
        store.append(create(id, id, ms)).await.unwrap();
    }
    let succeed = Append {
        expected_seq: 1,
        entries: vec![entry(2)],
        payment: Some(payment("pay_b", "pay_b", "succeeded", 20)),
        ..create("pay_b", "pay_b", 20)
    };
    store.append(succeed).await.unwrap();

    let processing = store.payment_ids_in_status("processing", 10).await.unwrap();
    assert_eq!(processing, ["pay_a", "pay_c", "pay_d"]);
    let first_two = store.payment_ids_in_status("processing", 2).await.unwrap();
    assert_eq!(first_two, ["pay_a", "pay_c"]);
    assert_eq!(
        store.payment_ids_in_status("succeeded", 10).await.unwrap(),
        ["pay_b"]
    );
    assert!(
        store
            .payment_ids_in_status("failed", 10)
            .await
            .unwrap()
            .is_empty()
    );
    // The flag follows the latest upsert: pay_b no longer awaits its channel.
    let awaiting = store.payment_ids_awaiting_channel(10).await.unwrap();
    assert_eq!(awaiting, ["pay_a", "pay_c", "pay_d"]);
    assert_eq!(
        store.payment_ids_awaiting_channel(1).await.unwrap(),
        ["pay_a"]
    );
}

async fn idempotency_insert_if_absent_keeps_the_earlier_record(backend: Backend) {
    let store = backend.open().await;
    let first = idempotency("key-1", "fp-first", 10);
    assert_eq!(store.put_idempotency(first.clone()).await.unwrap(), first);
    let second = idempotency("key-1", "fp-second", 20);
    assert_eq!(store.put_idempotency(second).await.unwrap(), first);
    assert_eq!(
        store.get_idempotency(MERCHANT, "key-1").await.unwrap(),
        Some(first)
    );

    // Keys are per merchant.
    let other = IdempotencyRecord {
        merchant_id: "mch_2".to_owned(),
        ..idempotency("key-1", "fp-other", 30)
    };
    assert_eq!(store.put_idempotency(other.clone()).await.unwrap(), other);
    assert_eq!(
        store.get_idempotency("mch_2", "key-1").await.unwrap(),
        Some(other)
    );
    assert_eq!(
        store.get_idempotency(MERCHANT, "key-2").await.unwrap(),
        None
    );
}

async fn purge_deletes_only_older_records(backend: Backend) {
    // More than one purge chunk (5 000 rows), so the chunk loop is exercised.
    const OLD: i64 = 5_100;
    const NEW: i64 = 20;
    let store = backend.open().await;
    let puts =
        (0..OLD + NEW).map(|i| store.put_idempotency(idempotency(&format!("k{i}"), "fp", i)));
    for result in join_all(puts).await {
        result.unwrap();
    }
    assert_eq!(store.purge_idempotency(OLD).await.unwrap(), OLD as u64);
    assert_eq!(store.get_idempotency(MERCHANT, "k0").await.unwrap(), None);
    assert_eq!(
        store
            .get_idempotency(MERCHANT, &format!("k{}", OLD - 1))
            .await
            .unwrap(),
        None
    );
    let kept = store
        .get_idempotency(MERCHANT, &format!("k{OLD}"))
        .await
        .unwrap();
    assert_eq!(kept.map(|r| r.created_ms), Some(OLD));
    assert_eq!(store.purge_idempotency(OLD).await.unwrap(), 0);
    assert_eq!(
        store.purge_idempotency(OLD + NEW).await.unwrap(),
        NEW as u64
    );
}

async fn merchants_insert_get_list(backend: Backend) {
    let store = backend.open().await;
    store.put_merchant(merchant("mch_b")).await.unwrap();
    let mut no_webhook = merchant("mch_a");
    no_webhook.webhook_url = None;
    store.put_merchant(no_webhook.clone()).await.unwrap();

    let err = store.put_merchant(merchant("mch_b")).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Backend(ref m) if m.contains("already exists")),
        "{err:?}"
    );
    assert_eq!(
        store.get_merchant("mch_a").await.unwrap(),
        Some(no_webhook.clone())
    );
    assert_eq!(store.get_merchant("mch_c").await.unwrap(), None);
    let all = store.list_merchants().await.unwrap();
    assert_eq!(all, [no_webhook, merchant("mch_b")]);
}

async fn merchant_secret_rotation_keeps_the_previous_secret(backend: Backend) {
    let store = backend.open().await;
    store.put_merchant(merchant("mch_r")).await.unwrap();
    store.put_merchant(merchant("mch_other")).await.unwrap();
    assert!(
        !store
            .rotate_merchant_secret("mch_unknown", vec![9], 100)
            .await
            .unwrap(),
        "an unknown merchant is not rotated"
    );

    assert!(
        store
            .rotate_merchant_secret("mch_r", vec![6, 6], 1_000)
            .await
            .unwrap()
    );
    let rotated = store.get_merchant("mch_r").await.unwrap().unwrap();
    assert_eq!(rotated.secret_sealed, [6, 6]);
    assert_eq!(
        rotated.previous_secret_sealed.as_deref(),
        Some(&[1, 2, 3][..])
    );
    assert_eq!(rotated.previous_secret_expires_ms, Some(1_000));
    assert_eq!(
        (rotated.webhook_secret_sealed.clone(), rotated.created_ms),
        (vec![4, 5], 7),
        "nothing else changes"
    );
    assert_eq!(
        store.get_merchant("mch_other").await.unwrap(),
        Some(merchant("mch_other")),
        "other merchants are untouched"
    );

    // Racing rotations are applied one after the other: the secret of the first is the
    // previous secret of the second, never lost.
    let (a, b) = futures::join!(
        store.rotate_merchant_secret("mch_r", vec![7], 2_000),
        store.rotate_merchant_secret("mch_r", vec![8], 3_000),
    );
    assert!(a.unwrap() && b.unwrap());
    let after = store.get_merchant("mch_r").await.unwrap().unwrap();
    let pair = (after.secret_sealed, after.previous_secret_sealed);
    assert!(
        pair == (vec![8], Some(vec![7])) || pair == (vec![7], Some(vec![8])),
        "{pair:?}"
    );
}

async fn overloaded_when_the_queue_is_full(backend: Backend) {
    const QUEUE_MAX: usize = 4;
    let tune = Tune {
        write_queue_max: Some(QUEUE_MAX),
        ..Tune::default()
    };
    let store = backend.open_with(tune).await;
    let (lock, plug) = park_writer(&backend, &store).await;

    let mut accepted = Vec::new();
    let refused = loop {
        assert!(
            accepted.len() <= QUEUE_MAX,
            "the queue took more than {QUEUE_MAX}"
        );
        let i = accepted.len();
        let mut write = store.append(create(&format!("pay_{i}"), &format!("order-{i}"), 1));
        // An accepted write is pending behind the parked writer; a refused one is ready.
        match futures::poll!(&mut write) {
            std::task::Poll::Pending => accepted.push(write),
            std::task::Poll::Ready(result) => break result,
        }
    };
    assert!(
        matches!(refused, Err(AppendError::Store(StoreError::Overloaded))),
        "{refused:?}"
    );
    assert_eq!(accepted.len(), QUEUE_MAX);
    assert_eq!(store.stats().queue_depth, QUEUE_MAX as u64);
    let err = store.put_merchant(merchant("mch_1")).await.unwrap_err();
    assert!(matches!(err, StoreError::Overloaded), "{err:?}");

    lock.release().await;
    plug.await;
    for result in join_all(accepted).await {
        result.unwrap();
    }
    store
        .append(create("pay_after", "order-after", 1))
        .await
        .unwrap();
    assert_eq!(store.stats().queue_depth, 0);
}

async fn shutdown_drains_queued_writes_then_refuses_new_ones(backend: Backend) {
    let store = backend.open().await;
    let (lock, plug) = park_writer(&backend, &store).await;
    let queued: Vec<_> = (0..50)
        .map(|i| store.append(create(&format!("pay_{i}"), &format!("order-{i}"), i)))
        .collect();

    let shutdown = tokio::spawn(store.shutdown());
    let err = store
        .append(create("pay_late", "order-late", 1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, AppendError::Store(StoreError::Closed)),
        "{err:?}"
    );
    let err = store
        .put_idempotency(idempotency("k", "fp", 1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Closed), "{err:?}");
    let err = store.get_payment("pay_0").await.unwrap_err();
    assert!(matches!(err, StoreError::Closed), "{err:?}");
    assert!(
        !shutdown.is_finished(),
        "shutdown returned while writes were queued"
    );

    lock.release().await;
    plug.await;
    for result in join_all(queued).await {
        result.unwrap();
    }
    shutdown.await.unwrap().unwrap();
    // Idempotent.
    store.shutdown().await.unwrap();
    drop(store);

    let store = backend.open().await;
    for i in 0..50 {
        assert_eq!(
            store.load_journal(&format!("pay_{i}")).await.unwrap(),
            [entry(1)]
        );
    }
    assert_eq!(store.load_journal("pay_late").await.unwrap(), []);
}

async fn works_as_a_shared_trait_object(backend: Backend) {
    let store: Arc<dyn Store> = backend.open().await;
    store.append(create("pay_1", "order-1", 1)).await.unwrap();
    assert_eq!(store.load_journal("pay_1").await.unwrap(), [entry(1)]);
    store.shutdown().await.unwrap();
}

async fn many_reads_share_a_one_connection_pool(backend: Backend) {
    let tune = Tune {
        readers: Some(1),
        ..Tune::default()
    };
    let store = backend.open_with(tune).await;
    store.append(create("pay_1", "order-1", 1)).await.unwrap();
    let reads = (0..200).map(|_| store.get_payment("pay_1"));
    for read in join_all(reads).await {
        assert_eq!(read.unwrap().map(|p| p.id), Some("pay_1".to_owned()));
    }
    // Each read after a resolved write sees it.
    for seq in 2..=20 {
        let next = Append {
            expected_seq: seq - 1,
            entries: vec![entry(seq)],
            ..create("pay_1", "order-1", 1)
        };
        store.append(next).await.unwrap();
        let journal = store.load_journal("pay_1").await.unwrap();
        assert_eq!(journal.last().map(|e| e.seq), Some(seq));
    }
}

#[test]
fn open_refuses_zero_bounds() {
    let dir = TempDir::new().unwrap();
    for zero in ["group_commit_batch_max", "write_queue_max", "readers"] {
        let mut config = config(&dir);
        match zero {
            "group_commit_batch_max" => config.group_commit_batch_max = 0,
            "write_queue_max" => config.write_queue_max = 0,
            _ => config.readers = 0,
        }
        let err = SqliteStore::open(config).unwrap_err();
        assert!(err.to_string().contains(zero), "{err}");
    }
}

fn method(currency: &str, min_minor: i64, max_minor: i64) -> MethodRecord {
    MethodRecord {
        method: "card".to_owned(),
        currency: currency.to_owned(),
        channel: "card".to_owned(),
        min_minor,
        max_minor,
        enabled: true,
        updated_ms: 1,
    }
}

async fn methods_upsert_list_and_refuse_impossible_limits(backend: Backend) {
    let store = backend.open().await;
    assert!(store.list_methods().await.unwrap().is_empty());
    store.put_method(method("USD", 1, 100)).await.unwrap();
    store.put_method(method("EUR", 1, 50)).await.unwrap();
    store.put_method(method("USD", 5, 500)).await.unwrap();
    let listed = store.list_methods().await.unwrap();
    assert_eq!(listed, [method("EUR", 1, 50), method("USD", 5, 500)]);
    // The schema refuses a minimum above the maximum, and a zero minimum.
    assert!(store.put_method(method("GBP", 10, 5)).await.is_err());
    assert!(store.put_method(method("GBP", 0, 5)).await.is_err());
    assert_eq!(store.list_methods().await.unwrap().len(), 2);
}

// --- PostgreSQL only ------------------------------------------------------------------------

/// A PostgreSQL backend for a PostgreSQL-only case (or `None`: skipped, see `common`).
async fn postgres_backend(test: &str) -> Option<Backend> {
    let backend = Backend::postgres(test).await?;
    assert_eq!(backend.kind(), Kind::Postgres);
    Some(backend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_migrate_twice_is_a_no_op() {
    let Some(backend) = postgres_backend("postgres_migrate_twice_is_a_no_op").await else {
        return;
    };
    let config = backend.postgres_config(Tune::default());
    let first = postgres::migrate(&config).await.unwrap();
    assert_eq!(first.from_version, 0, "{first:?}");
    assert_eq!(first.applied, [5, 6, 7], "{first:?}");
    assert_eq!(first.to_version, 7, "{first:?}");
    let second = postgres::migrate(&config).await.unwrap();
    assert_eq!(second.from_version, 7, "{second:?}");
    assert!(second.applied.is_empty(), "{second:?}");
    assert_eq!(second.to_version, 7, "{second:?}");
    // A store opens on the migrated schema (migrating nothing) and works.
    let store = backend.open().await;
    store.append(create("pay_1", "order-1", 1)).await.unwrap();
    assert_eq!(store.load_journal("pay_1").await.unwrap(), [entry(1)]);
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_migrations_apply_each_version_once() {
    let Some(backend) =
        postgres_backend("postgres_concurrent_migrations_apply_each_version_once").await
    else {
        return;
    };
    let config = backend.postgres_config(Tune::default());
    let runs = (0..4).map(|_| {
        let config = config.clone();
        tokio::spawn(async move { postgres::migrate(&config).await })
    });
    let reports: Vec<_> = join_all(runs)
        .await
        .into_iter()
        .map(|run| run.unwrap().unwrap())
        .collect();
    // Which run applied which version is a race (one may apply 5 and another 6): the set is
    // what must hold, each version once.
    let mut applied: Vec<i64> = reports.iter().flat_map(|r| r.applied.clone()).collect();
    applied.sort_unstable();
    assert_eq!(applied, [5, 6, 7], "{reports:?}");
    assert!(reports.iter().all(|r| r.to_version == 7), "{reports:?}");
    let client = backend.postgres_client().await;
    let rows = client
        .query(
            &format!(
                "SELECT version FROM \"{}\".kassa_schema_version",
                config.schema
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 3, "one row per version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_newer_schema_is_refused() {
    let Some(backend) = postgres_backend("postgres_a_newer_schema_is_refused").await else {
        return;
    };
    let config = backend.postgres_config(Tune::default());
    postgres::migrate(&config).await.unwrap();
    let client = backend.postgres_client().await;
    client
        .batch_execute(&format!(
            "INSERT INTO \"{}\".kassa_schema_version (version, applied_ms) VALUES (8, 0)",
            config.schema
        ))
        .await
        .unwrap();
    let err = PostgresStore::open(config).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
}

/// Leases: one holder at a time; the holder renews; once it lapses another takes it with a
/// higher fence. Two stores stand for two nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_lease_has_one_holder_until_it_lapses() {
    let Some(backend) = postgres_backend("postgres_a_lease_has_one_holder_until_it_lapses").await
    else {
        return;
    };
    let node_a = backend.open().await;
    let node_b = backend.open().await;
    const LONG_MS: u64 = 60_000;
    let fence = node_a.try_lease("janitor", "a", LONG_MS).await.unwrap();
    assert_eq!(fence, Some(1));
    assert_eq!(
        node_b.try_lease("janitor", "b", LONG_MS).await.unwrap(),
        None
    );
    // Renewing keeps the fence; another lease name is independent.
    assert_eq!(
        node_a.try_lease("janitor", "a", LONG_MS).await.unwrap(),
        Some(1)
    );
    assert_eq!(
        node_b.try_lease("relay", "b", LONG_MS).await.unwrap(),
        Some(1)
    );
    // A lease of 0 ms has lapsed at once: the other node takes it, with a new fence.
    assert_eq!(node_a.try_lease("janitor", "a", 0).await.unwrap(), Some(1));
    assert_eq!(
        node_b.try_lease("janitor", "b", LONG_MS).await.unwrap(),
        Some(2)
    );
    assert_eq!(
        node_a.try_lease("janitor", "a", LONG_MS).await.unwrap(),
        None
    );
    node_a.shutdown().await.unwrap();
    node_b.shutdown().await.unwrap();
}

/// Two stores (two nodes) on one schema, both appending the first entry of one order: the
/// journal's key lets exactly one through; the other gets the seq conflict one node gives.
/// Both writers are held at the journal's lock until both have read seq 0, so the conflict
/// is found at the insert, not at the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_stores_with_the_same_expected_seq_one_wins() {
    let Some(backend) =
        postgres_backend("postgres_two_stores_with_the_same_expected_seq_one_wins").await
    else {
        return;
    };
    let first = backend.open().await;
    let second = backend.open().await;
    let lock = backend.hold_write_lock().await;
    let a = first.append(create("pay_1", "order-1", 1));
    let mut other = create("pay_1", "order-1", 1);
    other.entries[0].kind = "other".to_owned();
    let b = second.append(other);
    wait_for("both writers to take their append", || {
        first.stats().queue_depth == 0 && second.stats().queue_depth == 0
    })
    .await;
    // Both are now inside their batch: past the seq check, waiting at the insert.
    tokio::time::sleep(Duration::from_millis(200)).await;
    lock.release().await;
    let (a, b) = futures::join!(a, b);
    let (winner, loser) = match (&a, &b) {
        (Ok(()), Err(e)) => ("first", e),
        (Err(e), Ok(())) => ("second", e),
        _ => panic!("exactly one append must win: {a:?} {b:?}"),
    };
    assert!(
        matches!(
            loser,
            AppendError::SeqConflict { order_id, expected_seq: 0, current_seq: 1 }
                if order_id == "pay_1"
        ),
        "{winner} won; the other got {loser:?}"
    );
    let journal = first.load_journal("pay_1").await.unwrap();
    assert_eq!(journal.len(), 1);
    assert_eq!(second.load_journal("pay_1").await.unwrap(), journal);
    // Another order under the same merchant_order_id, from either node, is a duplicate.
    let err = second
        .append(create("pay_2", "order-1", 2))
        .await
        .unwrap_err();
    assert!(
        matches!(err, AppendError::DuplicateMerchantOrderId { ref existing_payment_id }
            if existing_payment_id == "pay_1"),
        "{err:?}"
    );
    first.shutdown().await.unwrap();
    second.shutdown().await.unwrap();
}

/// Bounds and the schema name are checked before connecting: no server needed.
#[tokio::test]
async fn postgres_open_refuses_zero_bounds_and_odd_schemas() {
    let base = kassa_store::PostgresConfig::new("postgres://nobody@127.0.0.1:1/none");
    for zero in [
        "pool_size_max",
        "group_commit_batch_max",
        "write_queue_max",
        "statement_timeout_ms",
        "connect_timeout_ms",
    ] {
        let mut config = base.clone();
        match zero {
            "pool_size_max" => config.pool_size_max = 0,
            "group_commit_batch_max" => config.group_commit_batch_max = 0,
            "write_queue_max" => config.write_queue_max = 0,
            "statement_timeout_ms" => config.statement_timeout_ms = 0,
            _ => config.connect_timeout_ms = 0,
        }
        let err = PostgresStore::open(config).await.unwrap_err();
        assert!(err.to_string().contains(zero), "{err}");
    }
    for schema in [
        "",
        "Kassa",
        "1kassa",
        "kassa-test",
        "kassa\"; DROP",
        &"k".repeat(64),
    ] {
        let mut config = base.clone();
        config.schema = schema.to_owned();
        let err = PostgresStore::open(config).await.unwrap_err();
        assert!(err.to_string().contains("schema"), "{schema:?}: {err}");
    }
}
