//! The card channel's rate limit is the cluster's, not each node's: with Redis
//! (127.0.0.1:6379, a key prefix of the test's own), a burst spread over two nodes is admitted
//! within one budget (`burst` at once, then `rate_per_s`), where each node's local limit alone
//! would admit a burst per node. The refused get 429 `rate_limited` with `Retry-After`, and
//! nothing is created for them.
//!
//! Without the services the test skips with a printed reason; under `CI=true` it fails.

#[path = "redis_common.rs"]
mod common;

use std::time::Instant;

use common::*;
use harness::*;

const RATE_PER_S: u64 = 1;
const BURST: u64 = 5;
/// Charges sent at once, alternating between the nodes.
const SENT: usize = 30;

#[tokio::test]
async fn a_burst_over_two_nodes_gets_one_cluster_budget() {
    let limits = |options: KassaOptions| {
        options
            .env("KASSA_CHANNELS_CARD_RATE_PER_S", RATE_PER_S)
            .env("KASSA_CHANNELS_CARD_BURST", BURST)
            // Refuse at once instead of waiting for a permit, so the count is the budget.
            .env("KASSA_CHANNELS_CARD_RATE_WAIT_MS_MAX", 0)
    };
    let Some(cluster) = RedisCluster::start("rate-limit", None, 2, limits).await else {
        return;
    };
    cluster.wait_connected(true).await;
    let (_, clients) = cluster.merchant("Burst Ltd").await;
    let bodies: Vec<_> = (0..SENT).map(|_| usd_charge(CARD_SUCCEEDS)).collect();

    let started = Instant::now();
    let sends = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| post_payment(&clients[i % 2], body, None));
    let answers = futures::future::join_all(sends).await;
    let elapsed = started.elapsed();

    let mut admitted_by_node = [0u64; 2];
    for (i, answer) in answers.iter().enumerate() {
        match answer.status {
            201 => admitted_by_node[i % 2] += 1,
            429 => {
                assert_error(answer, 429, "rate_limited");
                let retry_after = answer.header("Retry-After").unwrap_or_default();
                assert!(
                    retry_after.parse::<u64>().is_ok_and(|s| s >= 1),
                    "{retry_after:?}"
                );
            }
            _ => panic!("unexpected answer {}: {}", answer.status, answer.text()),
        }
    }
    let admitted: u64 = admitted_by_node.iter().sum();
    // GCRA: `BURST` at once, then one more every 1/RATE_PER_S s.
    let budget = BURST + (elapsed.as_millis() as u64 * RATE_PER_S).div_ceil(1_000);
    assert!(
        budget < 2 * BURST,
        "the burst took {elapsed:?}: too slow to tell one budget from one per node"
    );
    assert!(
        (1..=budget).contains(&admitted),
        "admitted {admitted} ({admitted_by_node:?} by node) in {elapsed:?}; the cluster's \
         budget is {budget}, each node's alone would be {BURST}"
    );
    // Nothing was created for the refused.
    let payments = list_all_payments(&clients[0]).await;
    assert_eq!(payments.len() as u64, admitted);
    // The budget lives in Redis.
    let state = cluster.redis.keys("rl:*").await.expect("reading Redis");
    assert_eq!(state, [format!("{}:rl:card", cluster.redis.prefix)]);
    for node in &cluster.nodes {
        assert_eq!(
            fallbacks(node, "rate_limit").await,
            0,
            "Redis answered every time"
        );
    }
}
