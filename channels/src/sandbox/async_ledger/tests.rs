use std::sync::Arc;

use super::*;

const IBAN: &str = "DE89370400440532013000";

fn new_payment<'a>(channel: Channel, key: &'a str, amount_minor: i64) -> NewPayment<'a> {
    NewPayment {
        channel,
        idempotency_key: key,
        amount_minor,
        currency: "EUR",
        description: "invoice",
        payer_account: (channel == Channel::BankTransfer).then_some(IBAN),
        payer_name: (channel == Channel::BankTransfer).then_some("Ada"),
        settle_at_ms: None,
        settle_failure: None,
    }
}

#[test]
fn concurrent_creates_with_one_key_make_one_payment() {
    let ledger = Arc::new(AsyncLedger::open(None).expect("in-memory ledger"));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let ledger = ledger.clone();
            std::thread::spawn(move || {
                ledger
                    .create(&new_payment(Channel::QrWallet, "k1", 500), 0)
                    .expect("create")
            })
        })
        .collect();
    let results: Vec<Touched> = threads
        .into_iter()
        .map(|thread| thread.join().expect("no panic"))
        .collect();
    assert_eq!(results.iter().filter(|touched| touched.created).count(), 1);
    let refs: std::collections::HashSet<_> = results
        .iter()
        .map(|touched| touched.record.provider_ref.clone())
        .collect();
    assert_eq!(refs.len(), 1);
    assert_eq!(ledger.snapshot().expect("snapshot").0.len(), 1);
}

#[test]
fn a_key_is_per_channel_and_a_changed_request_is_refused() {
    let ledger = AsyncLedger::open(None).expect("in-memory ledger");
    let qr = ledger
        .create(&new_payment(Channel::QrWallet, "k", 500), 0)
        .unwrap();
    let app = ledger
        .create(&new_payment(Channel::AppWallet, "k", 500), 0)
        .unwrap();
    assert!(qr.created && app.created);
    assert_ne!(qr.record.provider_ref, app.record.provider_ref);
    assert!(qr.record.provider_ref.starts_with("qr_"));
    assert!(app.record.provider_ref.starts_with("wx_"));
    assert!(matches!(
        ledger.create(&new_payment(Channel::QrWallet, "k", 501), 0),
        Err(AsyncLedgerError::KeyReused)
    ));
    ledger
        .create(&new_payment(Channel::BankTransfer, "b", 500), 0)
        .unwrap();
    let other_account = NewPayment {
        payer_account: Some("GB82WEST12345698765432"),
        ..new_payment(Channel::BankTransfer, "b", 500)
    };
    assert!(matches!(
        ledger.create(&other_account, 0),
        Err(AsyncLedgerError::KeyReused)
    ));
}

#[test]
fn a_lookup_of_an_unknown_key_closes_it_for_that_channel_only() {
    let ledger = AsyncLedger::open(None).expect("in-memory ledger");
    assert!(
        ledger
            .lookup(Channel::AppWallet, "gone", 0)
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        ledger.create(&new_payment(Channel::AppWallet, "gone", 100), 0),
        Err(AsyncLedgerError::KeyBlocked)
    ));
    assert!(
        ledger
            .create(&new_payment(Channel::QrWallet, "gone", 100), 0)
            .unwrap()
            .created
    );
    assert!(matches!(
        ledger.close(Channel::AppWallet, "never", "order_closed", 0),
        Err(AsyncLedgerError::PaymentNotFound)
    ));
    assert!(matches!(
        ledger.create(&new_payment(Channel::AppWallet, "never", 100), 0),
        Err(AsyncLedgerError::KeyBlocked)
    ));
}

#[test]
fn a_payment_is_decided_once_when_its_settle_time_comes() {
    let ledger = AsyncLedger::open(None).expect("in-memory ledger");
    let new = NewPayment {
        settle_at_ms: Some(1_000),
        settle_failure: Some("account_closed"),
        ..new_payment(Channel::BankTransfer, "t1", 1_013)
    };
    let created = ledger.create(&new, 0).unwrap();
    assert_eq!(created.record.status, PaymentStatus::Pending);
    let early = ledger
        .lookup(Channel::BankTransfer, "t1", 999)
        .unwrap()
        .unwrap();
    assert_eq!(early.record.status, PaymentStatus::Pending);
    assert!(!early.decided);
    let due = ledger
        .lookup(Channel::BankTransfer, "t1", 1_000)
        .unwrap()
        .unwrap();
    assert!(due.decided);
    assert_eq!(due.record.status, PaymentStatus::Failed);
    assert_eq!(due.record.failure_code.as_deref(), Some("account_closed"));
    let again = ledger
        .by_provider_ref(Channel::BankTransfer, &created.record.provider_ref, 5_000)
        .unwrap();
    assert!(!again.decided, "decided once");
    assert!(ledger.to_settle(10).unwrap().is_empty());
}

#[test]
fn the_customer_decides_a_pending_order_and_a_close_ends_an_unpaid_one() {
    let ledger = AsyncLedger::open(None).expect("in-memory ledger");
    let paid = ledger
        .create(&new_payment(Channel::QrWallet, "p", 100), 0)
        .unwrap();
    let after = ledger
        .customer(
            Channel::QrWallet,
            &paid.record.provider_ref,
            true,
            "payment_declined",
            0,
        )
        .unwrap();
    assert!(after.decided);
    assert_eq!(after.record.status, PaymentStatus::Succeeded);
    let replay = ledger
        .customer(
            Channel::QrWallet,
            &paid.record.provider_ref,
            false,
            "payment_declined",
            0,
        )
        .unwrap();
    assert!(!replay.decided);
    assert_eq!(replay.record.status, PaymentStatus::Succeeded);
    // Another channel's page does not see it.
    assert!(matches!(
        ledger.customer(Channel::AppWallet, &paid.record.provider_ref, true, "x", 0),
        Err(AsyncLedgerError::PaymentNotFound)
    ));
    // Closing a paid order leaves it paid; closing an unpaid one fails it, no callback due.
    let closed_paid = ledger
        .close(Channel::QrWallet, "p", "order_closed", 0)
        .unwrap();
    assert_eq!(closed_paid.record.status, PaymentStatus::Succeeded);
    ledger
        .create(&new_payment(Channel::QrWallet, "u", 100), 0)
        .unwrap();
    let closed = ledger
        .close(Channel::QrWallet, "u", "order_closed", 0)
        .unwrap();
    assert!(!closed.decided);
    assert_eq!(closed.record.status, PaymentStatus::Failed);
    assert_eq!(closed.record.failure_code.as_deref(), Some("order_closed"));
}

#[test]
fn refunds_never_exceed_the_paid_amount() {
    let ledger = AsyncLedger::open(None).expect("in-memory ledger");
    let created = ledger
        .create(&new_payment(Channel::AppWallet, "r", 1_000), 0)
        .unwrap();
    let reference = created.record.provider_ref.clone();
    assert!(matches!(
        ledger.refund(Channel::AppWallet, "rf0", &reference, 100, None, 0),
        Err(AsyncLedgerError::NotRefundable)
    ));
    ledger
        .customer(Channel::AppWallet, &reference, true, "payment_declined", 0)
        .unwrap();
    let (first, _) = ledger
        .refund(Channel::AppWallet, "rf1", &reference, 600, Some("EUR"), 0)
        .unwrap();
    assert_eq!(first.status, RefundStatus::Succeeded);
    let (over, _) = ledger
        .refund(Channel::AppWallet, "rf2", &reference, 401, None, 0)
        .unwrap();
    assert_eq!(over.status, RefundStatus::Failed);
    assert_eq!(
        over.failure_code.as_deref(),
        Some("amount_exceeds_captured")
    );
    let (replayed, _) = ledger
        .refund(Channel::AppWallet, "rf1", &reference, 600, None, 0)
        .unwrap();
    assert_eq!(replayed.refund_ref, first.refund_ref);
    assert!(matches!(
        ledger.refund(Channel::AppWallet, "rf1", &reference, 5, None, 0),
        Err(AsyncLedgerError::KeyReused)
    ));
    assert!(matches!(
        ledger.refund(Channel::AppWallet, "rf3", &reference, 5, Some("USD"), 0),
        Err(AsyncLedgerError::CurrencyMismatch)
    ));
    let (last, _) = ledger
        .refund(Channel::AppWallet, "rf4", &reference, 400, None, 0)
        .unwrap();
    assert_eq!(last.status, RefundStatus::Succeeded);
    let payment = ledger
        .by_provider_ref(Channel::AppWallet, &reference, 0)
        .unwrap()
        .record;
    assert_eq!(payment.refunded_minor, 1_000);
}

#[test]
fn the_ledger_shares_the_card_file_and_never_stores_the_account() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let card = super::super::ledger::Ledger::open(Some(&path)).expect("the card ledger");
    let created = {
        let ledger = AsyncLedger::open(Some(&path)).expect("the async ledger");
        ledger
            .create(&new_payment(Channel::BankTransfer, "t", 2_000), 0)
            .unwrap()
    };
    drop(card);
    let reopened = AsyncLedger::open(Some(&path)).expect("reopened");
    let replay = reopened
        .create(&new_payment(Channel::BankTransfer, "t", 2_000), 0)
        .unwrap();
    assert!(!replay.created);
    assert_eq!(replay.record.provider_ref, created.record.provider_ref);
    let connection = Connection::open(&path).unwrap();
    let dump: String = connection
        .query_row(
            "SELECT group_concat(quote(provider_ref) || quote(request_fingerprint) || \
             quote(idempotency_key) || quote(currency)) FROM async_payments",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert!(
        !dump.contains(IBAN) && !dump.contains("532013000"),
        "{dump}"
    );
    let card_tables: i64 = connection
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name IN ('charges', 'async_payments')",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(card_tables, 2, "one file, both ledgers");
}
