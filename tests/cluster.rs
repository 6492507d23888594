//! Cluster mode on the real services: the `kassa` binary on PostgreSQL (127.0.0.1:5432) with
//! its webhooks carried by RabbitMQ (127.0.0.1:5672). `kassa migrate` creates the schema once;
//! a node takes charges and refunds into PostgreSQL, and after a SIGKILL every answered
//! payment, refund and event is still there and every event reaches the merchant.
//!
//! Each test has its own schema and queue prefix, dropped afterwards. Without the services the
//! tests skip with a printed reason; under `CI=true` they fail.

use std::collections::BTreeSet;
use std::time::Duration;

use harness::cluster::ClusterEnv;
use harness::webhooks::{Reply, WebhookReceiver, always};
use harness::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn kassa_migrate_creates_the_schema_once() {
    let Some(cluster) = ClusterEnv::new("migrate").await else {
        return;
    };
    let env = cluster.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let first = run_cli(&["migrate"], &env).await;
    first.assert_success();
    assert!(
        first.stdout.contains("version 0 -> ") && !first.stdout.contains("applied: []"),
        "{}",
        first.stdout
    );
    let again = run_cli(&["migrate"], &env).await;
    again.assert_success();
    assert!(again.stdout.contains("applied: []"), "{}", again.stdout);

    // A bad URL is a clear error, with no password in it.
    let mut bad = env.clone();
    bad.retain(|(key, _)| *key != "KASSA_POSTGRES_URL");
    bad.push((
        "KASSA_POSTGRES_URL",
        "postgres://kassa:hunter2@127.0.0.1:1/none",
    ));
    let refused = run_cli(&["migrate"], &bad).await;
    assert!(!refused.status.success());
    assert!(!refused.stderr.contains("hunter2"), "{}", refused.stderr);
    assert!(!refused.stdout.contains("hunter2"), "{}", refused.stdout);
}

#[tokio::test]
async fn a_node_on_postgresql_keeps_every_answered_payment_across_a_sigkill() {
    const CHARGES: usize = 12;
    let Some(cluster) = ClusterEnv::new("node-sigkill").await else {
        return;
    };
    let receiver = WebhookReceiver::start(always(Reply::Status(200))).await;
    let mut kassa = Kassa::start(cluster.options()).await;
    let credentials = kassa
        .admin()
        .create_merchant("Cluster Ltd", Some(&receiver.url()))
        .await
        .expect("creating a merchant");
    let merchant = kassa.merchant(&credentials);

    let mut answered: Vec<Value> = Vec::new();
    for _ in 0..CHARGES {
        answered.push(charge_succeeded(&merchant, &usd_charge(CARD_SUCCEEDS)).await);
    }
    let declined = post_payment(&merchant, &usd_charge(CARD_DECLINED), None).await;
    answered.push(expect_status(&declined, 201, "a declined charge"));
    let paid = id_of(&answered[0]);
    let refund_body = json!({"payment_id": paid, "amount": "1.00"});
    let refund = post_refund(&merchant, &refund_body, None).await;
    let refund = expect_status(&refund, 201, "a partial refund");
    // The same merchant order id again is refused by the shared store.
    let mut again = usd_charge(CARD_SUCCEEDS);
    again["merchant_order_id"] = answered[1]["merchant_order_id"].clone();
    assert_error(
        &post_payment(&merchant, &again, None).await,
        409,
        "duplicate_merchant_order_id",
    );

    kassa.kill9();
    assert!(
        !kassa.data_dir().join("kassa.db").exists(),
        "cluster mode keeps nothing in the local SQLite file"
    );
    kassa.restart().await;
    let merchant = kassa.merchant(&credentials);
    for before in &answered {
        let after = get_payment(&merchant, &id_of(before)).await;
        assert_eq!(after["status"], before["status"], "{after}");
        assert_eq!(after["amount"], before["amount"], "{after}");
    }
    let stored_refund = get_ok(&merchant, &format!("/v1/refunds/{}", id_of(&refund))).await;
    assert_eq!(stored_refund["status"], refund["status"]);

    // Every event of the run reaches the merchant (after dedupe, once each).
    let events = poll_until("the merchant's events", WAIT, || async {
        let body = get_ok(&merchant, "/v1/events?limit=100").await;
        let ids: BTreeSet<String> = assert_list(&body).0.iter().map(id_of).collect();
        if ids.len() > answered.len() {
            Ok(ids)
        } else {
            Err(format!("{} events", ids.len()))
        }
    })
    .await;
    poll_until("every event delivered", WAIT, || async {
        let delivered: BTreeSet<String> = receiver
            .received()
            .into_iter()
            .filter(|r| matches!(r.reply, Reply::Status(200)))
            .map(|r| r.event_id)
            .collect();
        let missing: Vec<&String> = events.difference(&delivered).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("not delivered yet: {missing:?}"))
        }
    })
    .await;
}

#[tokio::test]
async fn two_nodes_on_one_database_share_orders_keys_and_order_ids() {
    let Some(cluster) = ClusterEnv::new("two-nodes").await else {
        return;
    };
    let receiver = WebhookReceiver::start(always(Reply::Status(200))).await;
    // Node A runs the sandbox acquirer; node B calls the same one, so both nodes' charges
    // and refunds land in one ledger.
    let nodes = cluster.start_nodes(2, |options| options).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let credentials = a
        .admin()
        .create_merchant("Two Nodes Ltd", Some(&receiver.url()))
        .await
        .expect("creating a merchant");
    let (on_a, on_b) = (a.merchant(&credentials), b.merchant(&credentials));

    // One order, touched through both nodes: every node decides on the journal's latest state.
    let mut preauth = usd_charge(CARD_SUCCEEDS);
    preauth["capture"] = json!("manual");
    let authorized = post_payment(&on_a, &preauth, None).await;
    let authorized = expect_status(&authorized, 201, "a pre-authorisation through node A");
    assert_eq!(authorized["status"], "authorized", "{authorized}");
    let id = id_of(&authorized);
    assert_eq!(get_payment(&on_b, &id).await["status"], "authorized");
    let capture = format!("/v1/payments/{id}/capture");
    let captured = on_b
        .post_json(&capture, &json!({"amount": "8.00"}), None)
        .await
        .expect("capture through node B");
    let captured = expect_status(&captured, 200, "capture through node B");
    assert_eq!(captured["amount_captured"], "8.00", "{captured}");
    // Node A last saw `authorized`: it catches up before refunding.
    let refund = |amount: &str| json!({"payment_id": id, "amount": amount});
    let first = post_refund(&on_a, &refund("3.00"), None).await;
    expect_status(&first, 201, "a refund through node A");
    let second = post_refund(&on_b, &refund("3.00"), None).await;
    expect_status(&second, 201, "a refund through node B");
    // 6.00 of 8.00 refunded: 3.00 more is refused on either node.
    let over = post_refund(&on_a, &refund("3.00"), None).await;
    assert_error(&over, 422, "refund_exceeds_captured");
    let over = post_refund(&on_b, &refund("3.00"), None).await;
    assert_error(&over, 422, "refund_exceeds_captured");
    for node in [&on_a, &on_b] {
        let payment = get_payment(node, &id).await;
        assert_eq!(payment["amount_refunded"], "6.00", "{payment}");
    }

    // An idempotency key used on node A is replayed by node B.
    let key = unique("key");
    let body = usd_charge(CARD_SUCCEEDS);
    let original = post_payment(&on_a, &body, Some(&key)).await;
    let original = expect_status(&original, 201, "a keyed charge through node A");
    let replayed = post_payment(&on_b, &body, Some(&key)).await;
    assert_eq!(replayed.header("Idempotent-Replayed"), Some("true"));
    assert_eq!(
        id_of(&expect_status(&replayed, 201, "the replay")),
        id_of(&original)
    );
    // A merchant order id taken through node A is refused by node B.
    let mut again = usd_charge(CARD_SUCCEEDS);
    again["merchant_order_id"] = original["merchant_order_id"].clone();
    assert_error(
        &post_payment(&on_b, &again, None).await,
        409,
        "duplicate_merchant_order_id",
    );

    // The acquirer charged each payment once.
    let payments = list_all_payments(&on_a).await;
    assert_eq!(payments.len(), 2, "{payments:?}");
    let ledger = sandbox_call(a, "GET", "/sandbox/ledger", None).await;
    let charges = ledger["charges"].as_array().expect("the sandbox's charges");
    assert_eq!(charges.len(), 2, "{ledger}");
}
