//! Wallets (docs/API.md "Wallets"): the company's stored value. Balances never go negative,
//! whatever the concurrency; every movement is a transaction in the wallet's list; idempotent
//! top-ups move money once; a merchant only sees its own wallets; balances survive a crash.

use futures::future::join_all;
use harness::*;
use serde_json::{Value, json};

const CONCURRENT_WITHDRAWALS: usize = 100;
/// The most pages [`all_transactions`] walks before deciding pagination is broken.
const TRANSACTION_PAGES_MAX: usize = 100;

/// Asserts the wallet object docs/API.md fixes.
fn assert_wallet_shape(wallet: &Value) {
    let fields = wallet
        .as_object()
        .unwrap_or_else(|| panic!("wallet must be an object: {wallet}"));
    let mut keys: Vec<&str> = fields.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "balance",
            "created",
            "currency",
            "customer_ref",
            "id",
            "metadata",
            "object",
            "updated"
        ],
        "wallet fields: {wallet}"
    );
    assert!(
        wallet["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("wal_")),
        "wallet id must start with wal_: {wallet}"
    );
    assert_eq!(wallet["object"], "wallet", "{wallet}");
    let currency = wallet["currency"].as_str().unwrap_or_default();
    assert_amount(&wallet["balance"], currency, "wallet balance");
    assert!(
        wallet["customer_ref"].is_string() || wallet["customer_ref"].is_null(),
        "{wallet}"
    );
    assert!(wallet["metadata"].is_object(), "{wallet}");
    assert!(
        wallet["created"].is_i64() && wallet["updated"].is_i64(),
        "{wallet}"
    );
}

/// Asserts the wallet transaction object docs/API.md fixes.
fn assert_transaction_shape(transaction: &Value) {
    let fields = transaction
        .as_object()
        .unwrap_or_else(|| panic!("transaction must be an object: {transaction}"));
    let mut keys: Vec<&str> = fields.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "amount",
            "balance_after",
            "created",
            "currency",
            "id",
            "object",
            "reference",
            "type",
            "wallet_id"
        ],
        "transaction fields: {transaction}"
    );
    assert!(
        transaction["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("wtx_")),
        "transaction id must start with wtx_: {transaction}"
    );
    assert_eq!(transaction["object"], "wallet_transaction", "{transaction}");
    assert!(
        ["top_up", "withdrawal", "payment", "refund"]
            .contains(&transaction["type"].as_str().unwrap_or_default()),
        "{transaction}"
    );
    let currency = transaction["currency"].as_str().unwrap_or_default();
    assert_amount(&transaction["amount"], currency, "transaction amount");
    assert_amount(&transaction["balance_after"], currency, "balance_after");
    assert!(
        transaction["reference"].is_string() || transaction["reference"].is_null(),
        "{transaction}"
    );
    assert!(transaction["created"].is_i64(), "{transaction}");
}

async fn post(merchant: &MerchantClient, path: &str, body: &Value, key: Option<&str>) -> Response {
    merchant
        .post_json(path, body, key)
        .await
        .unwrap_or_else(|error| panic!("POST {path}: {error}"))
}

async fn get(merchant: &MerchantClient, path: &str) -> Response {
    merchant
        .get(path)
        .await
        .unwrap_or_else(|error| panic!("GET {path}: {error}"))
}

/// A new wallet in `currency`; returns its id.
async fn create_wallet(merchant: &MerchantClient, currency: &str) -> String {
    let body = json!({"currency": currency, "customer_ref": "cus_1", "metadata": {"tier": "gold"}});
    let key = unique("wallet");
    let wallet = expect_status(
        &post(merchant, "/v1/wallets", &body, Some(&key)).await,
        201,
        "create wallet",
    );
    assert_wallet_shape(&wallet);
    id_of(&wallet)
}

async fn top_up(merchant: &MerchantClient, wallet_id: &str, amount: &str) -> Value {
    let body = json!({"amount": amount, "currency": "EUR"});
    let path = format!("/v1/wallets/{wallet_id}/top_ups");
    let key = unique("top-up");
    let transaction = expect_status(&post(merchant, &path, &body, Some(&key)).await, 201, &path);
    assert_transaction_shape(&transaction);
    transaction
}

async fn withdraw(merchant: &MerchantClient, wallet_id: &str, amount: &str, key: &str) -> Response {
    let body = json!({"amount": amount, "currency": "EUR"});
    post(
        merchant,
        &format!("/v1/wallets/{wallet_id}/withdrawals"),
        &body,
        Some(key),
    )
    .await
}

async fn balance(merchant: &MerchantClient, wallet_id: &str) -> String {
    let wallet = get_ok(merchant, &format!("/v1/wallets/{wallet_id}")).await;
    assert_wallet_shape(&wallet);
    wallet["balance"].as_str().unwrap_or_default().to_owned()
}

/// Every transaction of the wallet, newest first, walking `starting_after` pages of `limit`.
async fn all_transactions(merchant: &MerchantClient, wallet_id: &str, limit: u32) -> Vec<Value> {
    let base = format!("/v1/wallets/{wallet_id}/transactions?limit={limit}");
    let mut all: Vec<Value> = Vec::new();
    let mut path = base.clone();
    for _ in 0..TRANSACTION_PAGES_MAX {
        let (page, has_more) = assert_list(&get_ok(merchant, &path).await);
        assert!(page.len() <= limit as usize, "page over the limit");
        for transaction in &page {
            assert_transaction_shape(transaction);
        }
        all.extend(page);
        if !has_more {
            return all;
        }
        let last = all.last().map(id_of).expect("has_more with an empty page");
        path = format!("{base}&starting_after={last}");
    }
    panic!("more than {TRANSACTION_PAGES_MAX} pages of transactions");
}

/// The transactions explain the balance: oldest to newest, each balance_after is the previous
/// one plus (top-up, refund) or minus (withdrawal, payment) its amount.
fn assert_chain(newest_first: &[Value], balance: &str) {
    let mut running: i128 = 0;
    for transaction in newest_first.iter().rev() {
        let amount = minor_units(transaction["amount"].as_str().unwrap_or_default(), 2);
        running += match transaction["type"].as_str() {
            Some("top_up" | "refund") => amount,
            _ => -amount,
        };
        assert!(running >= 0, "balance went negative at {transaction}");
        let after = minor_units(transaction["balance_after"].as_str().unwrap_or_default(), 2);
        assert_eq!(after, running, "{transaction}");
    }
    assert_eq!(
        running,
        minor_units(balance, 2),
        "the list explains the balance"
    );
}

#[tokio::test]
async fn create_top_up_withdraw_and_an_overdraft_moves_nothing() {
    let kassa = Kassa::start_default().await;
    let merchant = kassa.new_merchant("Coffee Club").await;

    let body = json!({"currency": "EUR", "customer_ref": "cus_1", "metadata": {"tier": "gold"}});
    let response = post(&merchant, "/v1/wallets", &body, Some(&unique("wallet"))).await;
    let wallet = expect_status(&response, 201, "create wallet");
    assert_wallet_shape(&wallet);
    assert_eq!(wallet["currency"], "EUR", "{wallet}");
    assert_eq!(wallet["balance"], "0.00", "{wallet}");
    assert_eq!(wallet["customer_ref"], "cus_1", "{wallet}");
    assert_eq!(wallet["metadata"], json!({"tier": "gold"}), "{wallet}");
    let wallet_id = id_of(&wallet);
    assert_eq!(
        get_ok(&merchant, &format!("/v1/wallets/{wallet_id}")).await,
        wallet
    );

    let credit = top_up(&merchant, &wallet_id, "10.00").await;
    assert_eq!(credit["type"], "top_up", "{credit}");
    assert_eq!(credit["amount"], "10.00", "{credit}");
    assert_eq!(credit["currency"], "EUR", "{credit}");
    assert_eq!(credit["balance_after"], "10.00", "{credit}");
    assert_eq!(credit["wallet_id"], wallet_id.as_str(), "{credit}");
    assert_eq!(credit["reference"], Value::Null, "{credit}");

    let response = withdraw(&merchant, &wallet_id, "3.50", &unique("withdrawal")).await;
    let debit = expect_status(&response, 201, "withdrawal");
    assert_transaction_shape(&debit);
    assert_eq!(debit["type"], "withdrawal", "{debit}");
    assert_eq!(debit["balance_after"], "6.50", "{debit}");

    // One cent more than the balance: refused, nothing moved, the list unchanged.
    let response = withdraw(&merchant, &wallet_id, "6.51", &unique("overdraft")).await;
    let error = assert_error(&response, 422, "insufficient_funds");
    assert_eq!(error["param"], "amount", "{error}");
    assert_eq!(balance(&merchant, &wallet_id).await, "6.50");
    let transactions = all_transactions(&merchant, &wallet_id, 10).await;
    assert_eq!(
        transactions.iter().map(id_of).collect::<Vec<_>>(),
        [id_of(&debit), id_of(&credit)],
        "newest first"
    );
    assert_eq!(transactions[0], debit, "the list shows what POST answered");

    // The whole balance can go; the wallet is then empty, not negative.
    let response = withdraw(&merchant, &wallet_id, "6.50", &unique("rest")).await;
    let rest = expect_status(&response, 201, "withdraw the rest");
    assert_eq!(rest["balance_after"], "0.00", "{rest}");
    let response = withdraw(&merchant, &wallet_id, "0.01", &unique("empty")).await;
    assert_error(&response, 422, "insufficient_funds");
    let wallet = get_ok(&merchant, &format!("/v1/wallets/{wallet_id}")).await;
    assert_eq!(wallet["balance"], "0.00", "{wallet}");
    assert!(
        wallet["updated"].as_i64() >= wallet["created"].as_i64(),
        "{wallet}"
    );
}

#[tokio::test]
async fn amounts_and_currencies_are_validated_like_payments() {
    let kassa = Kassa::start_default().await;
    let merchant = kassa.new_merchant("Coffee Club").await;
    let wallet_id = create_wallet(&merchant, "EUR").await;
    let top_ups = format!("/v1/wallets/{wallet_id}/top_ups");
    let withdrawals = format!("/v1/wallets/{wallet_id}/withdrawals");

    let refused: [(Value, u16, &str, &str); 10] = [
        (
            json!({"amount": "1.001", "currency": "EUR"}),
            422,
            "amount_too_precise",
            "amount",
        ),
        (
            json!({"amount": "0.00", "currency": "EUR"}),
            422,
            "amount_not_positive",
            "amount",
        ),
        (
            json!({"amount": "-1.00", "currency": "EUR"}),
            422,
            "amount_not_positive",
            "amount",
        ),
        (
            json!({"amount": "1e3", "currency": "EUR"}),
            422,
            "amount_invalid",
            "amount",
        ),
        (
            json!({"amount": 10, "currency": "EUR"}),
            400,
            "invalid_field",
            "amount",
        ),
        (
            json!({"amount": "1.00", "currency": "USD"}),
            422,
            "currency_mismatch",
            "currency",
        ),
        (
            json!({"amount": "1.00", "currency": "XXX"}),
            422,
            "currency_unsupported",
            "currency",
        ),
        (json!({"amount": "1.00"}), 400, "missing_field", "currency"),
        (
            json!({"amount": "1.00", "currency": "EUR", "note": "x"}),
            400,
            "unknown_field",
            "note",
        ),
        (
            json!({"amount": "1000000.01", "currency": "EUR"}),
            422,
            "amount_over_limit",
            "amount",
        ),
    ];
    for (body, status, code, param) in refused {
        let response = post(&merchant, &top_ups, &body, None).await;
        let error = assert_error(&response, status, code);
        assert_eq!(error["param"], param, "{body}: {error}");
    }
    // The largest single top-up is allowed.
    let credit = top_up(&merchant, &wallet_id, "1000000.00").await;
    assert_eq!(credit["balance_after"], "1000000.00", "{credit}");
    let response = post(
        &merchant,
        &withdrawals,
        &json!({"amount": "0.001", "currency": "EUR"}),
        None,
    )
    .await;
    assert_error(&response, 422, "amount_too_precise");
    assert_eq!(balance(&merchant, &wallet_id).await, "1000000.00");
    assert_eq!(all_transactions(&merchant, &wallet_id, 10).await.len(), 1);

    // A wallet's currency decides its precision.
    let yen = expect_status(
        &post(&merchant, "/v1/wallets", &json!({"currency": "JPY"}), None).await,
        201,
        "JPY wallet",
    );
    assert_eq!(yen["balance"], "0", "{yen}");
    assert_eq!(yen["customer_ref"], Value::Null, "{yen}");
    let response = post(
        &merchant,
        &format!("/v1/wallets/{}/top_ups", id_of(&yen)),
        &json!({"amount": "1.5", "currency": "JPY"}),
        None,
    )
    .await;
    assert_error(&response, 422, "amount_too_precise");

    let response = post(&merchant, "/v1/wallets", &json!({"currency": "eur"}), None).await;
    assert_error(&response, 422, "currency_unsupported");
    let response = post(&merchant, "/v1/wallets", &json!({}), None).await;
    assert_error(&response, 400, "missing_field");
    let long_ref = "c".repeat(129);
    let body = json!({"currency": "EUR", "customer_ref": long_ref});
    assert_error(
        &post(&merchant, "/v1/wallets", &body, None).await,
        422,
        "value_invalid",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_withdrawals_never_overdraw() {
    let kassa = Kassa::start_default().await;
    let merchant = kassa.new_merchant("Coffee Club").await;
    let wallet_id = create_wallet(&merchant, "EUR").await;
    let funding = top_up(&merchant, &wallet_id, "20.00").await;

    let withdrawals = (0..CONCURRENT_WITHDRAWALS).map(|i| {
        let merchant = merchant.clone();
        let wallet_id = wallet_id.clone();
        let key = unique(&format!("withdrawal-{i}"));
        tokio::spawn(async move { withdraw(&merchant, &wallet_id, "1.00", &key).await })
    });
    let responses: Vec<Response> = join_all(withdrawals)
        .await
        .into_iter()
        .map(|joined| joined.expect("withdrawal task panicked"))
        .collect();
    let mut succeeded = Vec::new();
    for response in &responses {
        if response.status == 201 {
            let debit = response.json().expect("transaction json");
            assert_transaction_shape(&debit);
            assert_eq!(debit["type"], "withdrawal", "{debit}");
            succeeded.push(debit);
        } else {
            assert_error(response, 422, "insufficient_funds");
        }
    }
    assert_eq!(
        succeeded.len(),
        20,
        "exactly twenty 1.00 withdrawals fit in 20.00"
    );
    assert_eq!(balance(&merchant, &wallet_id).await, "0.00");
    let mut balances_after: Vec<i128> = succeeded
        .iter()
        .map(|debit| minor_units(debit["balance_after"].as_str().unwrap_or_default(), 2))
        .collect();
    balances_after.sort_unstable();
    assert_eq!(
        balances_after,
        (0..20).map(|n| n * 100).collect::<Vec<i128>>(),
        "each success left a distinct balance"
    );

    // The list: every success and the top-up, newest first, across pages of 7.
    let transactions = all_transactions(&merchant, &wallet_id, 7).await;
    assert_eq!(transactions.len(), 21);
    assert_eq!(
        transactions.last(),
        Some(&funding),
        "the top-up is the oldest"
    );
    assert_eq!(transactions[0]["balance_after"], "0.00");
    assert_chain(&transactions, "0.00");

    // Paging back with ending_before gives the page just newer, still newest first.
    let path = format!(
        "/v1/wallets/{wallet_id}/transactions?limit=5&ending_before={}",
        id_of(&transactions[10])
    );
    let (back, has_more) = assert_list(&get_ok(&merchant, &path).await);
    assert_eq!(back, transactions[5..10], "ending_before page");
    assert!(has_more);
    for bad in [
        "limit=0",
        "limit=101",
        "starting_after=wtx_nope",
        "colour=red",
    ] {
        let path = format!("/v1/wallets/{wallet_id}/transactions?{bad}");
        assert_error(&get(&merchant, &path).await, 400, "invalid_query");
    }
}

#[tokio::test]
async fn a_replayed_top_up_moves_money_once() {
    let kassa = Kassa::start_default().await;
    let merchant = kassa.new_merchant("Coffee Club").await;

    let body = json!({"currency": "EUR"});
    let key = unique("wallet");
    let first = post(&merchant, "/v1/wallets", &body, Some(&key)).await;
    let wallet = expect_status(&first, 201, "create wallet");
    let again = post(&merchant, "/v1/wallets", &body, Some(&key)).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.header("Idempotent-Replayed"), Some("true"));
    assert_eq!(again.body, first.body, "replayed byte for byte");
    let wallet_id = id_of(&wallet);

    let path = format!("/v1/wallets/{wallet_id}/top_ups");
    let body = json!({"amount": "10.00", "currency": "EUR"});
    let key = unique("top-up");
    let first = post(&merchant, &path, &body, Some(&key)).await;
    let credit = expect_status(&first, 201, "top-up");
    assert_ne!(first.header("Idempotent-Replayed"), Some("true"));
    for _ in 0..3 {
        let replay = post(&merchant, &path, &body, Some(&key)).await;
        assert_eq!(replay.status, 201, "{}", replay.text());
        assert_eq!(replay.header("Idempotent-Replayed"), Some("true"));
        assert_eq!(replay.body, first.body, "replayed byte for byte");
    }
    assert_eq!(balance(&merchant, &wallet_id).await, "10.00", "moved once");
    assert_eq!(
        all_transactions(&merchant, &wallet_id, 10).await,
        [credit],
        "one transaction"
    );

    // The same key on a different request is refused; nothing moves.
    let other = json!({"amount": "11.00", "currency": "EUR"});
    assert_error(
        &post(&merchant, &path, &other, Some(&key)).await,
        422,
        "idempotency_key_reused",
    );
    let withdrawals = format!("/v1/wallets/{wallet_id}/withdrawals");
    assert_error(
        &post(&merchant, &withdrawals, &body, Some(&key)).await,
        422,
        "idempotency_key_reused",
    );
    assert_eq!(balance(&merchant, &wallet_id).await, "10.00");
}

#[tokio::test]
async fn another_merchants_wallet_is_404() {
    let kassa = Kassa::start_default().await;
    let owner = kassa.new_merchant("Coffee Club").await;
    let other = kassa.new_merchant("Tea Room").await;
    let wallet_id = create_wallet(&owner, "EUR").await;
    top_up(&owner, &wallet_id, "5.00").await;

    let body = json!({"amount": "1.00", "currency": "EUR"});
    let attempts = [
        get(&other, &format!("/v1/wallets/{wallet_id}")).await,
        get(&other, &format!("/v1/wallets/{wallet_id}/transactions")).await,
        post(
            &other,
            &format!("/v1/wallets/{wallet_id}/top_ups"),
            &body,
            None,
        )
        .await,
        post(
            &other,
            &format!("/v1/wallets/{wallet_id}/withdrawals"),
            &body,
            None,
        )
        .await,
        get(&owner, "/v1/wallets/wal_000000000000000000000000").await,
        get(&owner, "/v1/wallets/pay_123").await,
    ];
    for response in &attempts {
        assert_error(response, 404, "resource_missing");
    }
    assert_eq!(balance(&owner, &wallet_id).await, "5.00");
    assert_eq!(all_transactions(&owner, &wallet_id, 10).await.len(), 1);
    assert_error(&get(&owner, "/v1/wallets").await, 405, "method_not_allowed");
}

#[tokio::test]
async fn balances_and_replays_survive_a_crash() {
    let mut kassa = Kassa::start_default().await;
    let credentials = kassa.new_merchant_credentials("Coffee Club").await;
    let merchant = kassa.merchant(&credentials);
    let wallet_id = create_wallet(&merchant, "EUR").await;
    top_up(&merchant, &wallet_id, "12.34").await;
    let key = unique("withdrawal");
    let first = withdraw(&merchant, &wallet_id, "2.34", &key).await;
    expect_status(&first, 201, "withdrawal");
    let before = all_transactions(&merchant, &wallet_id, 10).await;

    // Every 201 was durable before it was sent: SIGKILL loses nothing.
    kassa.kill9();
    kassa.restart().await;
    let merchant = kassa.merchant(&credentials);
    assert_eq!(balance(&merchant, &wallet_id).await, "10.00");
    assert_eq!(all_transactions(&merchant, &wallet_id, 10).await, before);
    let replay = withdraw(&merchant, &wallet_id, "2.34", &key).await;
    assert_eq!(replay.status, 201, "{}", replay.text());
    assert_eq!(replay.header("Idempotent-Replayed"), Some("true"));
    assert_eq!(replay.body, first.body);
    assert_eq!(balance(&merchant, &wallet_id).await, "10.00");

    // And the wallet keeps working.
    let response = withdraw(&merchant, &wallet_id, "10.00", &unique("rest")).await;
    assert_eq!(
        expect_status(&response, 201, "rest")["balance_after"],
        "0.00"
    );
}
