//! Passivation (issue: supervision): idle order actors stop and come back from the journal on
//! demand, and however many orders pass through, live actors stay bounded by
//! `orders.orders_live_max`.

use std::time::{Duration, Instant};

use futures::StreamExt;
use harness::*;
use serde_json::json;

/// `kassa_orders_live` from `/metrics`.
async fn orders_live(kassa: &Kassa) -> u64 {
    kassa.metric("kassa_orders_live").await
}

#[tokio::test]
async fn an_idle_order_passivates_and_comes_back_on_demand() {
    let kassa = Kassa::start(KassaOptions::new().env("KASSA_ORDERS_ORDER_IDLE_MS", 100)).await;
    let merchant = kassa.new_merchant("Idle Ltd").await;
    let payment = charge_succeeded(&merchant, &usd_charge(CARD_SUCCEEDS)).await;
    let id = id_of(&payment);

    poll_until(
        "every order actor to passivate",
        Duration::from_secs(20),
        || async {
            match orders_live(&kassa).await {
                0 => Ok(()),
                live => Err(format!("{live} live")),
            }
        },
    )
    .await;

    // A command reactivates the order from its journal, with its state intact.
    let refund = post_refund(
        &merchant,
        &json!({"payment_id": id, "amount": "4.00"}),
        None,
    )
    .await;
    expect_status(&refund, 201, "refund of a passivated payment");
    let read = get_payment(&merchant, &id).await;
    assert_eq!(read["status"], "succeeded", "{read}");
    assert_eq!(read["amount_refunded"], "4.00", "{read}");
    let too_much = post_refund(
        &merchant,
        &json!({"payment_id": id, "amount": "6.01"}),
        None,
    )
    .await;
    assert_error(&too_much, 422, "refund_exceeds_captured");
}

/// Orders pushed through in the bounded-live test (the figure).
const ORDERS: usize = 100_000;
const CONCURRENCY: usize = 64;
const LIVE_MAX: u64 = 1_000;

#[tokio::test]
async fn live_orders_stay_bounded_while_many_orders_pass_through() {
    // The janitor scans every second, waking orders a channel still owes an answer while the
    // burst runs: waking must not keep them from passivating.
    let kassa = Kassa::start(
        KassaOptions::new()
            .env("KASSA_ORDERS_ORDERS_LIVE_MAX", LIVE_MAX)
            .env("KASSA_ORDERS_JANITOR_INTERVAL_MS", 1_000)
            // This test is about memory, not the channel's rate limit.
            .env("KASSA_CHANNELS_CARD_RATE_PER_S", 1_000_000)
            .env("KASSA_CHANNELS_CARD_BURST", 100_000),
    )
    .await;
    let merchant = kassa.new_merchant("Busy Ltd").await;
    let started = Instant::now();
    let mut peak = 0;
    let mut answered = 0usize;
    let mut requests = futures::stream::iter(0..ORDERS)
        .map(|_| {
            let merchant = merchant.clone();
            async move {
                let mut body = usd_charge(CARD_SUCCEEDS);
                body["async"] = true.into();
                post_payment(&merchant, &body, None).await.status
            }
        })
        .buffer_unordered(CONCURRENCY);
    while let Some(status) = requests.next().await {
        assert_eq!(status, 202, "async charge");
        answered += 1;
        if answered.is_multiple_of(10_000) {
            let live = orders_live(&kassa).await;
            peak = peak.max(live);
            eprintln!("{answered} orders, {live} live, {:?}", started.elapsed());
        }
    }
    // Orders still waiting for their channel answer may stay live a moment; then the bound holds.
    let live = poll_until(
        "live orders within orders_live_max",
        Duration::from_secs(60),
        || async {
            let live = orders_live(&kassa).await;
            if live <= LIVE_MAX {
                Ok(live)
            } else {
                Err(format!("{live} live"))
            }
        },
    )
    .await;
    eprintln!(
        "{ORDERS} orders in {:?}; peak sampled live {peak}, final live {live}",
        started.elapsed()
    );
    assert!(
        peak <= LIVE_MAX + CONCURRENCY as u64 * 2,
        "peak {peak} far over {LIVE_MAX}"
    );
}
