//! Redis killed in the middle of a run and started again, while two nodes keep taking keyed
//! charges (each key sent several times, to alternating nodes). Redis is never the truth:
//! every request is answered 2xx throughout, `/readyz` stays 200 and says Redis is degraded,
//! `kassa_redis_connected` drops to 0 and comes back to 1, and each key made exactly one
//! payment, replayed byte for byte.
//!
//! The test runs a `redis-server` of its own (on a free port, keeping nothing on disk), so
//! killing it disturbs no other test. Without the services (or `redis-server`) it skips with a
//! printed reason; under `CI=true` it fails.

#[path = "redis_common.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use harness::services::OwnRedis;
use harness::*;

/// Concurrent clients; each sends its keys one request at a time.
const WORKERS: usize = 4;
/// Each key is sent this many times, to alternating nodes, before its client takes a new one.
const SENDS_PER_KEY: usize = 3;
/// Answers to wait for in each phase: before the outage, during it, after it.
const ANSWERS_PER_PHASE: usize = 24;
const PHASE_WAIT: Duration = Duration::from_secs(60);

/// One answer of the load.
struct Answer {
    key: String,
    status: u16,
    replayed: bool,
    body: Bytes,
}

/// Keyed charges from [`WORKERS`] clients until stopped.
struct Load {
    answers: Mutex<Vec<Answer>>,
    count: AtomicUsize,
    stop: AtomicBool,
}

impl Load {
    fn start(clients: &[MerchantClient]) -> (Arc<Load>, Vec<tokio::task::JoinHandle<()>>) {
        let load = Arc::new(Load {
            answers: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let workers = (0..WORKERS)
            .map(|worker| {
                let (load, clients) = (load.clone(), clients.to_vec());
                tokio::spawn(async move { load.run(worker, &clients).await })
            })
            .collect();
        (load, workers)
    }

    async fn run(&self, worker: usize, clients: &[MerchantClient]) {
        while !self.stop.load(Ordering::Acquire) {
            let key = unique("outage");
            let body = usd_charge(CARD_SUCCEEDS);
            for send in 0..SENDS_PER_KEY {
                let client = &clients[(worker + send) % clients.len()];
                let response = post_payment(client, &body, Some(&key)).await;
                self.answers.lock().expect("answers").push(Answer {
                    key: key.clone(),
                    status: response.status,
                    replayed: response.header("Idempotent-Replayed") == Some("true"),
                    body: response.body.clone(),
                });
                self.count.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// Waits until `more` answers have come in after this call.
    async fn wait_for(&self, more: usize, what: &str) {
        let target = self.count.load(Ordering::Acquire) + more;
        poll_until(what, PHASE_WAIT, || async {
            match self.count.load(Ordering::Acquire) {
                n if n >= target => Ok(()),
                n => Err(format!("{n} of {target} answers")),
            }
        })
        .await;
    }
}

#[tokio::test]
async fn redis_killed_mid_run_changes_nothing_a_merchant_sees() {
    let Some(mut redis) = OwnRedis::start("redis-outage").await else {
        return;
    };
    let started = RedisCluster::start("redis-outage", Some(redis.url()), 2, |o| o).await;
    let Some(cluster) = started else {
        return;
    };
    cluster.wait_connected(true).await;
    let (_, clients) = cluster.merchant("Outage Ltd").await;
    let (load, workers) = Load::start(&clients);
    load.wait_for(ANSWERS_PER_PHASE, "answers with Redis up")
        .await;

    redis.kill();
    cluster.wait_connected(false).await;
    for node in &cluster.nodes {
        let (status, checks) = readyz(node).await;
        assert_eq!(status, 200, "still ready without Redis: {checks}");
        let check = checks["redis"].as_str().unwrap_or_default();
        assert!(check.starts_with("degraded"), "{checks}");
    }
    load.wait_for(ANSWERS_PER_PHASE, "answers while Redis is down")
        .await;
    for node in &cluster.nodes {
        assert!(fallbacks(node, "idempotency").await > 0);
        assert!(fallbacks(node, "rate_limit").await > 0);
    }

    redis.restart().await;
    cluster.wait_connected(true).await;
    for node in &cluster.nodes {
        assert_eq!(readyz(node).await.1["redis"], "ok");
    }
    load.wait_for(ANSWERS_PER_PHASE, "answers with Redis back")
        .await;
    load.stop.store(true, Ordering::Release);
    for worker in workers {
        worker.await.expect("a load worker");
    }

    let answers = std::mem::take(&mut *load.answers.lock().expect("answers"));
    let keys = assert_one_payment_per_key(&answers);
    let payments = list_all_payments(&clients[0]).await;
    let ids: BTreeSet<String> = payments.iter().map(id_of).collect();
    assert_eq!(
        ids,
        keys.values().cloned().collect(),
        "one payment per key, no other"
    );
    let order_ids: BTreeSet<&str> = payments
        .iter()
        .filter_map(|p| p["merchant_order_id"].as_str())
        .collect();
    assert_eq!(
        order_ids.len(),
        payments.len(),
        "no merchant_order_id twice"
    );
}

/// Every answer is a 201; each key's answers are one fresh answer and byte-identical replays.
/// Returns each key's payment id.
fn assert_one_payment_per_key(answers: &[Answer]) -> BTreeMap<String, String> {
    let mut by_key: BTreeMap<&str, Vec<&Answer>> = BTreeMap::new();
    for answer in answers {
        let text = String::from_utf8_lossy(&answer.body);
        assert_eq!(answer.status, 201, "every request is served: {text}");
        by_key.entry(&answer.key).or_default().push(answer);
    }
    by_key
        .into_iter()
        .map(|(key, answers)| {
            let fresh = answers.iter().filter(|a| !a.replayed).count();
            assert_eq!(fresh, 1, "{key}: one answer did the work");
            assert!(
                answers.iter().all(|a| a.body == answers[0].body),
                "{key}: replays are byte for byte"
            );
            let payment: serde_json::Value =
                serde_json::from_slice(&answers[0].body).expect("a payment");
            (key.to_string(), id_of(&payment))
        })
        .collect()
}
