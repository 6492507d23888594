//! Chaos (issue: channel adapters): the sandbox answers 20 % of card calls with 5xx, 10 % with
//! 429, holds 10 % after charging (timeouts), and reports every charge late by callback, 5 %
//! twice. After 2 000 payments every order's final state equals the sandbox ledger's, nothing is
//! charged twice, nothing is stuck, and no merchant was told something that later changed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use harness::*;
use serde_json::Value;

const PAYMENTS: usize = 2_000;
const CONCURRENCY: usize = 32;
const SETTLE_TIMEOUT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_order_ends_as_the_sandbox_ledger_says_under_chaos() {
    let kassa = Kassa::start(
        KassaOptions::new()
            .env("KASSA_SANDBOX_ERROR_RATE_PERCENT", 20)
            .env("KASSA_SANDBOX_RATE_LIMIT_RATE_PERCENT", 10)
            .env("KASSA_SANDBOX_TIMEOUT_RATE_PERCENT", 10)
            .env("KASSA_SANDBOX_CALLBACKS", "true")
            .env("KASSA_SANDBOX_CALLBACK_DELAY_MS_MAX", 2_000)
            .env("KASSA_SANDBOX_DUPLICATE_CALLBACK_RATE_PERCENT", 5)
            .env("KASSA_SANDBOX_SEED", 42)
            .env("KASSA_CHANNELS_CARD_REQUEST_TIMEOUT_MS", 300)
            .env("KASSA_CHANNELS_CARD_BACKOFF_MS_MAX", 50)
            .env("KASSA_ORDERS_REDRIVE_SCHEDULE_MS", "200,500,1000")
            .env("KASSA_ORDERS_JANITOR_INTERVAL_MS", 1_000),
    )
    .await;
    let merchant = kassa.new_merchant("Chaos Ltd").await;
    let cards = [
        CARD_SUCCEEDS,
        CARD_SUCCEEDS,
        CARD_DECLINED,
        CARD_INSUFFICIENT_FUNDS,
    ];
    let started = Instant::now();
    let answers: Vec<(u16, Value)> = futures::stream::iter(0..PAYMENTS)
        .map(|n| {
            let merchant = merchant.clone();
            async move {
                let mut body = usd_charge(cards[n % cards.len()]);
                body["wait_ms"] = 2_000.into();
                let response = post_payment(&merchant, &body, Some(&unique("chaos"))).await;
                let json = response.json().unwrap_or(Value::Null);
                (response.status, json)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    eprintln!("{PAYMENTS} payments answered in {:?}", started.elapsed());

    // Every request was answered with an order (201 settled or 202 processing), or refused up
    // front while the channel's breaker was open (503, nothing created).
    let mut told: HashMap<String, String> = HashMap::new();
    let mut refused = 0;
    for (status, payment) in &answers {
        match status {
            201 | 202 => {
                let status = payment["status"].as_str().unwrap_or_default().to_owned();
                told.insert(id_of(payment), status);
            }
            503 => {
                assert_eq!(payment["error"]["code"], "channel_unavailable", "{payment}");
                refused += 1;
            }
            other => panic!("{other}: {payment}"),
        }
    }
    assert_eq!(
        told.len() + refused,
        PAYMENTS,
        "one order per accepted request"
    );
    assert_eq!(
        list_all_payments(&merchant).await.len(),
        told.len(),
        "refusals created nothing"
    );

    // Nothing stays processing: every unknown outcome is resolved from the channel.
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut finals: HashMap<String, Value> = HashMap::new();
    for id in told.keys() {
        let left = deadline.saturating_duration_since(Instant::now());
        finals.insert(id.clone(), wait_until_settled(&merchant, id, left).await);
    }
    eprintln!("all settled after {:?}", started.elapsed());

    // The ledger is the truth: each order's final state is what the channel did.
    let ledger = sandbox_call(&kassa, "GET", "/sandbox/ledger", None).await;
    let mut charges: HashMap<String, Value> = HashMap::new();
    for charge in ledger["charges"].as_array().expect("charges") {
        let key = charge["idempotency_key"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            charges.insert(key.clone(), charge.clone()).is_none(),
            "charged twice under {key}"
        );
    }
    let (mut succeeded, mut declined, mut never) = (0, 0, 0);
    for (id, payment) in &finals {
        let status = payment["status"].as_str().unwrap_or_default();
        match charges.get(id) {
            Some(charge) if charge["status"] == "succeeded" => {
                assert_eq!(status, "succeeded", "{payment} vs {charge}");
                succeeded += 1;
            }
            Some(charge) => {
                assert_eq!(charge["status"], "declined", "{charge}");
                assert_eq!(status, "failed", "{payment} vs {charge}");
                assert_eq!(
                    payment["failure_code"], charge["decline_code"],
                    "{payment} vs {charge}"
                );
                declined += 1;
            }
            None => {
                // Never charged: the channel confirmed it and blocked the key.
                assert_eq!(status, "failed", "{payment}");
                assert_eq!(payment["failure_code"], "processing_error", "{payment}");
                never += 1;
            }
        }
        // No wrong answers: what a merchant was told as final stayed final.
        let told = &told[id];
        if told != "processing" {
            assert_eq!(
                told, status,
                "order {id} was answered {told}, ended {status}"
            );
        }
    }
    assert!(
        charges.keys().all(|key| finals.contains_key(key)),
        "a charge Kassa does not know"
    );
    let stats = sandbox_call(&kassa, "GET", "/sandbox/stats", None).await;
    eprintln!(
        "succeeded {succeeded}, declined {declined}, never charged {never}, refused {refused}; sandbox {stats}"
    );
    assert!(
        stats["errors_injected"].as_u64().unwrap_or(0) > 0,
        "chaos was on: {stats}"
    );
    assert!(
        stats["timeouts_injected"].as_u64().unwrap_or(0) > 0,
        "chaos was on: {stats}"
    );
}
