//! Wallets on both backends against the `Store` contract: balances never negative under
//! concurrency, every movement journaled once per key, closed keys, merchant isolation,
//! pagination; and (SQLite only) the in-place migration of a file written by the previous
//! schema.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::Backend;
use futures::future::join_all;
use kassa_store::sqlite::{SqliteConfig, SqliteStore};
use kassa_store::{
    Append, JournalEntry, ListQuery, PaymentRow, Store, StoreError, WalletMove, WalletMoveOutcome,
    WalletMovement, WalletMovementKind, WalletRecord,
};
use tempfile::TempDir;

on_both_backends!(worker_threads = 4;
    concurrent_debits_never_overdraw,
    a_key_moves_money_once_even_when_raced,
    a_key_used_for_another_move_is_refused,
    a_closed_key_never_moves_money,
    a_merchant_only_reaches_its_own_wallets,
    wrong_currency_and_bad_moves_change_nothing,
    wallets_are_created_once_and_start_empty,
    movements_page_newest_first,
    balances_survive_close_and_reopen,
);

const MERCHANT: &str = "mch_1";
const OTHER_MERCHANT: &str = "mch_2";
/// The schema version before wallets existed.
const SCHEMA_VERSION_BEFORE_WALLETS: i64 = 2;

fn config(dir: &TempDir) -> SqliteConfig {
    let mut config = SqliteConfig::new(dir.path().join("kassa.db"));
    config.busy_timeout_ms = 30_000;
    config
}

fn open(dir: &TempDir) -> SqliteStore {
    SqliteStore::open(config(dir)).expect("open store")
}

fn wallet(id: &str, merchant_id: &str, currency: &str) -> WalletRecord {
    WalletRecord {
        id: id.to_owned(),
        merchant_id: merchant_id.to_owned(),
        currency: currency.to_owned(),
        balance_minor: 0,
        customer_ref: Some("cus_1".to_owned()),
        metadata: BTreeMap::from([("tier".to_owned(), "gold".to_owned())]),
        created_ms: 1_000,
        updated_ms: 1_000,
    }
}

fn move_(key: &str, wallet_id: &str, kind: WalletMovementKind, amount_minor: i64) -> WalletMove {
    WalletMove {
        key: key.to_owned(),
        wallet_id: wallet_id.to_owned(),
        merchant_id: MERCHANT.to_owned(),
        kind,
        amount_minor,
        currency: "EUR".to_owned(),
        reference: None,
        at_ms: 2_000,
    }
}

async fn new_wallet(store: &Arc<dyn Store>, id: &str) {
    store
        .create_wallet(wallet(id, MERCHANT, "EUR"))
        .await
        .expect("create wallet");
}

async fn top_up(store: &Arc<dyn Store>, wallet_id: &str, key: &str, amount_minor: i64) {
    let outcome = store
        .move_wallet(move_(
            key,
            wallet_id,
            WalletMovementKind::TopUp,
            amount_minor,
        ))
        .await
        .expect("top up");
    assert!(
        matches!(outcome, WalletMoveOutcome::Applied(_)),
        "{outcome:?}"
    );
}

async fn balance(store: &Arc<dyn Store>, wallet_id: &str) -> i64 {
    store
        .get_wallet(MERCHANT, wallet_id)
        .await
        .expect("get wallet")
        .expect("wallet exists")
        .balance_minor
}

/// Every movement of a wallet, oldest first, walking pages of 100.
async fn all_movements(store: &Arc<dyn Store>, wallet_id: &str) -> Vec<WalletMovement> {
    let mut newest_first = Vec::new();
    let mut query = ListQuery {
        limit: 100,
        ..ListQuery::default()
    };
    for _ in 0..1_000 {
        let page = store
            .list_wallet_movements(wallet_id, query.clone())
            .await
            .expect("list movements");
        query.starting_after = page.rows.last().map(|m| m.key.clone());
        newest_first.extend(page.rows);
        if !page.has_more {
            newest_first.reverse();
            return newest_first;
        }
    }
    panic!("pagination does not end");
}

/// The journal explains the balance: each movement's balance_after is the previous one plus or
/// minus its amount, never negative, and the last one is the wallet's balance.
async fn assert_journal_explains_balance(store: &Arc<dyn Store>, wallet_id: &str) {
    let mut running = 0_i64;
    for movement in all_movements(store, wallet_id).await {
        running = if movement.kind.is_credit() {
            running + movement.amount_minor
        } else {
            running - movement.amount_minor
        };
        assert!(running >= 0, "balance went negative at {movement:?}");
        assert_eq!(movement.balance_after_minor, running, "{movement:?}");
    }
    assert_eq!(balance(store, wallet_id).await, running);
}

async fn concurrent_debits_never_overdraw(backend: Backend) {
    const DEBITS: usize = 200;
    let store = backend.open().await;
    new_wallet(&store, "wal_1").await;
    top_up(&store, "wal_1", "wtx_fund", 5_000).await;

    let debits = (0..DEBITS).map(|i| {
        let store = Arc::clone(&store);
        let kind = if i % 2 == 0 {
            WalletMovementKind::Withdrawal
        } else {
            WalletMovementKind::Payment
        };
        let debit = move_(&format!("wtx_debit_{i}"), "wal_1", kind, 100);
        tokio::spawn(async move { store.move_wallet(debit).await })
    });
    let outcomes: Vec<WalletMoveOutcome> = join_all(debits)
        .await
        .into_iter()
        .map(|joined| joined.expect("debit task").expect("debit"))
        .collect();

    let mut applied = 0;
    let mut refused = 0;
    for outcome in &outcomes {
        match outcome {
            WalletMoveOutcome::Applied(movement) => {
                assert!(movement.balance_after_minor >= 0, "{movement:?}");
                applied += 1;
            }
            WalletMoveOutcome::InsufficientFunds { balance_minor } => {
                assert!((0..100).contains(balance_minor), "{outcome:?}");
                refused += 1;
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(applied, 50, "exactly fifty 1.00 debits fit in 50.00");
    assert_eq!(refused, DEBITS - 50);
    assert_eq!(balance(&store, "wal_1").await, 0);
    assert_eq!(all_movements(&store, "wal_1").await.len(), 51);
    assert_journal_explains_balance(&store, "wal_1").await;
}

async fn a_key_moves_money_once_even_when_raced(backend: Backend) {
    let store = backend.open().await;
    new_wallet(&store, "wal_1").await;

    let mut credit = move_("wtx_same", "wal_1", WalletMovementKind::TopUp, 1_000);
    credit.reference = Some("pay_1".to_owned());
    let racers = (0..20).map(|_| {
        let store = Arc::clone(&store);
        let credit = credit.clone();
        tokio::spawn(async move { store.move_wallet(credit).await })
    });
    let outcomes: Vec<WalletMoveOutcome> = join_all(racers)
        .await
        .into_iter()
        .map(|joined| joined.expect("task").expect("move"))
        .collect();
    let applied: Vec<&WalletMovement> = outcomes
        .iter()
        .filter_map(|o| match o {
            WalletMoveOutcome::Applied(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(applied.len(), 1, "{outcomes:?}");
    let first = applied[0].clone();
    assert_eq!(first.balance_after_minor, 1_000);
    assert_eq!(first.reference.as_deref(), Some("pay_1"));
    for outcome in &outcomes {
        match outcome {
            WalletMoveOutcome::Applied(m) | WalletMoveOutcome::Replayed(m) => {
                assert_eq!(m, &first)
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(balance(&store, "wal_1").await, 1_000);

    // A replay after later movements still answers the original movement.
    top_up(&store, "wal_1", "wtx_more", 500).await;
    assert_eq!(
        store.move_wallet(credit).await.unwrap(),
        WalletMoveOutcome::Replayed(first.clone())
    );
    assert_eq!(balance(&store, "wal_1").await, 1_500);
    assert_eq!(
        store.wallet_movement("wtx_same").await.unwrap(),
        Some(first)
    );
    assert_eq!(store.wallet_movement("wtx_never").await.unwrap(), None);
}

async fn a_key_used_for_another_move_is_refused(backend: Backend) {
    let store = backend.open().await;
    new_wallet(&store, "wal_1").await;
    new_wallet(&store, "wal_2").await;
    top_up(&store, "wal_1", "wtx_k", 1_000).await;

    let other_amount = move_("wtx_k", "wal_1", WalletMovementKind::TopUp, 999);
    let other_kind = move_("wtx_k", "wal_1", WalletMovementKind::Refund, 1_000);
    let other_wallet = move_("wtx_k", "wal_2", WalletMovementKind::TopUp, 1_000);
    for reused in [other_amount, other_kind, other_wallet] {
        assert_eq!(
            store.move_wallet(reused.clone()).await.unwrap(),
            WalletMoveOutcome::KeyReused,
            "{reused:?}"
        );
    }
    assert_eq!(balance(&store, "wal_1").await, 1_000);
    assert_eq!(balance(&store, "wal_2").await, 0);
    assert_eq!(all_movements(&store, "wal_2").await, []);
}

async fn a_closed_key_never_moves_money(backend: Backend) {
    let store = backend.open().await;
    new_wallet(&store, "wal_1").await;
    top_up(&store, "wal_1", "wtx_fund", 1_000).await;

    // No movement under the key: it is closed, and stays closed (idempotent).
    assert_eq!(store.close_wallet_key("wtx_lost").await.unwrap(), None);
    assert_eq!(store.close_wallet_key("wtx_lost").await.unwrap(), None);
    let late = move_("wtx_lost", "wal_1", WalletMovementKind::Payment, 300);
    assert_eq!(
        store.move_wallet(late).await.unwrap(),
        WalletMoveOutcome::KeyClosed
    );
    assert_eq!(balance(&store, "wal_1").await, 1_000);

    // A movement under the key: closing answers it and changes nothing; replays still work.
    let debit = move_("wtx_done", "wal_1", WalletMovementKind::Payment, 300);
    let WalletMoveOutcome::Applied(made) = store.move_wallet(debit.clone()).await.unwrap() else {
        panic!("debit not applied");
    };
    assert_eq!(
        store.close_wallet_key("wtx_done").await.unwrap(),
        Some(made.clone())
    );
    assert_eq!(
        store.move_wallet(debit).await.unwrap(),
        WalletMoveOutcome::Replayed(made)
    );
    assert_eq!(balance(&store, "wal_1").await, 700);

    // Closed keys survive a restart.
    store.shutdown().await.unwrap();
    drop(store);
    let store = backend.open().await;
    let late = move_("wtx_lost", "wal_1", WalletMovementKind::Payment, 300);
    assert_eq!(
        store.move_wallet(late).await.unwrap(),
        WalletMoveOutcome::KeyClosed
    );
}

async fn a_merchant_only_reaches_its_own_wallets(backend: Backend) {
    let store = backend.open().await;
    new_wallet(&store, "wal_1").await;
    top_up(&store, "wal_1", "wtx_fund", 1_000).await;

    assert_eq!(
        store.get_wallet(OTHER_MERCHANT, "wal_1").await.unwrap(),
        None
    );
    assert_eq!(store.get_wallet(MERCHANT, "wal_nope").await.unwrap(), None);
    let mut theirs = move_("wtx_theirs", "wal_1", WalletMovementKind::Withdrawal, 100);
    theirs.merchant_id = OTHER_MERCHANT.to_owned();
    assert_eq!(
        store.move_wallet(theirs).await.unwrap(),
        WalletMoveOutcome::WalletNotFound
    );
    // Even a replay of the owner's key is not the other merchant's to see.
    let mut replay = move_("wtx_fund", "wal_1", WalletMovementKind::TopUp, 1_000);
    replay.merchant_id = OTHER_MERCHANT.to_owned();
    assert_eq!(
        store.move_wallet(replay).await.unwrap(),
        WalletMoveOutcome::WalletNotFound
    );
    let missing = move_("wtx_missing", "wal_nope", WalletMovementKind::TopUp, 100);
    assert_eq!(
        store.move_wallet(missing).await.unwrap(),
        WalletMoveOutcome::WalletNotFound
    );
    assert_eq!(balance(&store, "wal_1").await, 1_000);
    assert_eq!(store.wallet_movement("wtx_theirs").await.unwrap(), None);
}

async fn wrong_currency_and_bad_moves_change_nothing(backend: Backend) {
    let store = backend.open().await;
    new_wallet(&store, "wal_1").await;
    top_up(&store, "wal_1", "wtx_fund", 1_000).await;

    let mut usd = move_("wtx_usd", "wal_1", WalletMovementKind::TopUp, 100);
    usd.currency = "USD".to_owned();
    assert_eq!(
        store.move_wallet(usd).await.unwrap(),
        WalletMoveOutcome::CurrencyMismatch {
            wallet_currency: "EUR".to_owned()
        }
    );
    let overdraft = move_("wtx_over", "wal_1", WalletMovementKind::Withdrawal, 1_001);
    assert_eq!(
        store.move_wallet(overdraft).await.unwrap(),
        WalletMoveOutcome::InsufficientFunds {
            balance_minor: 1_000
        }
    );
    // The refused key was not used up: the same key may move money once funds allow.
    let exact = move_("wtx_over", "wal_1", WalletMovementKind::Withdrawal, 1_000);
    assert!(matches!(
        store.move_wallet(exact).await.unwrap(),
        WalletMoveOutcome::Applied(_)
    ));
    assert_eq!(balance(&store, "wal_1").await, 0);

    for amount_minor in [0, -5] {
        let bad = move_("wtx_bad", "wal_1", WalletMovementKind::TopUp, amount_minor);
        let err = store.move_wallet(bad).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    }
    for key in [String::new(), "k".repeat(256)] {
        let bad = move_(&key, "wal_1", WalletMovementKind::TopUp, 1);
        let err = store.move_wallet(bad).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    }
    assert_eq!(store.wallet_movement("wtx_bad").await.unwrap(), None);

    // A credit past what an i64 holds fails alone; the wallet keeps its balance.
    top_up(&store, "wal_1", "wtx_max", i64::MAX).await;
    let past = move_("wtx_past", "wal_1", WalletMovementKind::Refund, 1);
    let err = store.move_wallet(past).await.unwrap_err();
    assert!(matches!(err, StoreError::LimitExceeded(_)), "{err:?}");
    assert_eq!(balance(&store, "wal_1").await, i64::MAX);
    assert_journal_explains_balance(&store, "wal_1").await;
}

async fn wallets_are_created_once_and_start_empty(backend: Backend) {
    let store = backend.open().await;
    let record = wallet("wal_1", MERCHANT, "EUR");
    store.create_wallet(record.clone()).await.unwrap();
    assert_eq!(
        store.get_wallet(MERCHANT, "wal_1").await.unwrap(),
        Some(record.clone())
    );
    let err = store
        .create_wallet(wallet("wal_1", OTHER_MERCHANT, "USD"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(
        store.get_wallet(MERCHANT, "wal_1").await.unwrap(),
        Some(record)
    );

    let funded = WalletRecord {
        balance_minor: 100,
        ..wallet("wal_2", MERCHANT, "EUR")
    };
    let err = store.create_wallet(funded).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert_eq!(store.get_wallet(MERCHANT, "wal_2").await.unwrap(), None);

    // updated_ms follows the balance.
    let mut credit = move_("wtx_1", "wal_1", WalletMovementKind::TopUp, 5);
    credit.at_ms = 9_000;
    store.move_wallet(credit).await.unwrap();
    let read = store.get_wallet(MERCHANT, "wal_1").await.unwrap().unwrap();
    assert_eq!((read.balance_minor, read.updated_ms), (5, 9_000));
    assert_eq!(read.created_ms, 1_000);
}

async fn movements_page_newest_first(backend: Backend) {
    let store = backend.open().await;
    new_wallet(&store, "wal_1").await;
    new_wallet(&store, "wal_2").await;
    top_up(&store, "wal_2", "wtx_elsewhere", 1).await;
    // Keys that sort against their order, so the list follows the journal, not the keys.
    let keys: Vec<String> = (0..25).map(|i| format!("wtx_{:02}", 99 - i)).collect();
    for key in &keys {
        top_up(&store, "wal_1", key, 1).await;
    }
    let newest_first: Vec<String> = keys.iter().rev().cloned().collect();
    let page = |limit, starting_after: Option<&str>, ending_before: Option<&str>| ListQuery {
        limit,
        starting_after: starting_after.map(str::to_owned),
        ending_before: ending_before.map(str::to_owned),
    };
    let keys_of = |rows: &[WalletMovement]| rows.iter().map(|m| m.key.clone()).collect::<Vec<_>>();

    let first = store
        .list_wallet_movements("wal_1", page(10, None, None))
        .await
        .unwrap();
    assert_eq!(keys_of(&first.rows), newest_first[..10]);
    assert!(first.has_more);
    assert_eq!(first.rows[0].balance_after_minor, 25);

    let second = store
        .list_wallet_movements("wal_1", page(10, Some(&newest_first[9]), None))
        .await
        .unwrap();
    assert_eq!(keys_of(&second.rows), newest_first[10..20]);
    assert!(second.has_more);

    let last = store
        .list_wallet_movements("wal_1", page(10, Some(&newest_first[19]), None))
        .await
        .unwrap();
    assert_eq!(keys_of(&last.rows), newest_first[20..]);
    assert!(!last.has_more);

    // Back from the second page: the ten just newer, still newest first.
    let back = store
        .list_wallet_movements("wal_1", page(10, None, Some(&newest_first[10])))
        .await
        .unwrap();
    assert_eq!(keys_of(&back.rows), newest_first[..10]);
    assert!(!back.has_more);
    let back = store
        .list_wallet_movements("wal_1", page(3, None, Some(&newest_first[10])))
        .await
        .unwrap();
    assert_eq!(keys_of(&back.rows), newest_first[7..10]);
    assert!(back.has_more);

    let between = store
        .list_wallet_movements(
            "wal_1",
            page(100, Some(&newest_first[2]), Some(&newest_first[6])),
        )
        .await
        .unwrap();
    assert_eq!(keys_of(&between.rows), newest_first[3..6]);

    // A cursor from another wallet (or nowhere) names nothing in this list.
    for cursor in ["wtx_elsewhere", "wtx_nope"] {
        let err = store
            .list_wallet_movements("wal_1", page(10, Some(cursor), None))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::UnknownCursor(_)), "{err:?}");
    }
    let empty = store
        .list_wallet_movements("wal_nope", page(10, None, None))
        .await
        .unwrap();
    assert!(empty.rows.is_empty() && !empty.has_more);
}

async fn balances_survive_close_and_reopen(backend: Backend) {
    let store = backend.open().await;
    new_wallet(&store, "wal_1").await;
    top_up(&store, "wal_1", "wtx_1", 1_250).await;
    let debit = move_("wtx_2", "wal_1", WalletMovementKind::Payment, 250);
    store.move_wallet(debit.clone()).await.unwrap();
    // Dropping the last handle commits and closes.
    drop(store);

    let store = backend.open().await;
    assert_eq!(balance(&store, "wal_1").await, 1_000);
    let WalletMoveOutcome::Replayed(replayed) = store.move_wallet(debit).await.unwrap() else {
        panic!("the debit must replay after a restart");
    };
    assert_eq!(replayed.balance_after_minor, 1_000);
    assert_journal_explains_balance(&store, "wal_1").await;
}

/// A file the build before wallets wrote (schema 2: no wallet or outbox tables) is migrated in place: its data
/// stays, and wallets work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_from_before_wallets_is_migrated_in_place() {
    let dir = TempDir::new().unwrap();
    let path = config(&dir).path;
    let payment = PaymentRow {
        id: "pay_1".to_owned(),
        merchant_id: MERCHANT.to_owned(),
        merchant_order_id: "order-1".to_owned(),
        status: "succeeded".to_owned(),
        created_ms: 10,
        body: "{}".to_owned(),
        awaiting_channel: false,
    };
    let entry = JournalEntry {
        seq: 1,
        kind: "created".to_owned(),
        body: "{}".to_owned(),
        at_ms: 10,
    };
    let store: Arc<dyn Store> = Arc::new(open(&dir));
    store
        .append(Append {
            order_id: "pay_1".to_owned(),
            expected_seq: 0,
            entries: vec![entry.clone()],
            payment: Some(payment.clone()),
            refunds: Vec::new(),
            events: vec![],
        })
        .await
        .unwrap();
    store.shutdown().await.unwrap();
    drop(store);

    // Turn the file back into what the previous schema wrote.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(&format!(
        "DROP TABLE wallet_movements; DROP TABLE wallets; DROP TABLE wallet_closed_keys;
         DROP TABLE delivery_attempts; DROP TABLE deliveries; DROP TABLE events;
         ALTER TABLE merchants DROP COLUMN previous_secret_sealed;
         ALTER TABLE merchants DROP COLUMN previous_secret_expires_ms;
         PRAGMA user_version = {SCHEMA_VERSION_BEFORE_WALLETS};"
    ))
    .unwrap();
    let tables: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'wallet%'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0);
    drop(conn);

    let store: Arc<dyn Store> = Arc::new(open(&dir));
    assert_eq!(store.get_payment("pay_1").await.unwrap(), Some(payment));
    assert_eq!(store.load_journal("pay_1").await.unwrap(), [entry]);
    new_wallet(&store, "wal_1").await;
    top_up(&store, "wal_1", "wtx_1", 700).await;
    assert_eq!(balance(&store, "wal_1").await, 700);
    store.shutdown().await.unwrap();
    drop(store);

    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert!(version > SCHEMA_VERSION_BEFORE_WALLETS, "{version}");
    // The CHECK is there as the last line: a negative balance cannot be written at all.
    let err = conn
        .execute(
            "UPDATE wallets SET balance_minor = -1 WHERE id = 'wal_1'",
            [],
        )
        .unwrap_err();
    assert!(err.to_string().contains("CHECK"), "{err}");
}
