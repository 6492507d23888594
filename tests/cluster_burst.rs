//! Three nodes on the real PostgreSQL and RabbitMQ, one load generator spraying requests
//! across them the way a load balancer with retrying clients would, and one node SIGKILLed in
//! the middle of the burst. Every order is touched through several nodes (charges, captures,
//! refunds, duplicate merchant order ids). Afterwards:
//!
//! - every payment and refund that got a 2xx is durable and reaches its final state;
//! - the acquirer's ledger charged each payment at most once and agrees with Kassa on every
//!   captured and refunded amount; no refund sum exceeds what was captured;
//! - a retried Idempotency-Key answered by another node is the same object;
//! - no `merchant_order_id` was taken twice;
//! - every event reaches the merchant's webhook endpoint.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use harness::cluster::ClusterEnv;
use harness::verify::{check_events_delivered, check_ledger};
use harness::webhooks::{Reply, WebhookReceiver, always};
use harness::*;
use serde_json::{Value, json};
use tokio::sync::Notify;

const NODES: usize = 3;
/// The node killed mid-burst (node 0 hosts the sandbox acquirer, which must outlive it).
const VICTIM: usize = 1;
const SCENARIOS: usize = 160;
const CONCURRENCY: usize = 24;
/// The victim dies once this many scenarios have finished.
const KILL_AFTER: usize = SCENARIOS / 3;
/// How long one request may go on being retried across nodes.
const RETRY_FOR: Duration = Duration::from_secs(45);
/// How long one attempt on one node may take before it counts as unanswered.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// A retrying client's pause between two attempts (pacing, not waiting for a condition).
const RETRY_BACKOFF: Duration = Duration::from_millis(50);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The whole test: a hang anywhere is a failure that says so, not a stalled CI run.
const TEST_TIMEOUT: Duration = Duration::from_secs(600);

/// The load balancer and the retrying client in one: round-robin over the nodes believed
/// alive; an attempt that gets no answer, a 503 or a 409 "in progress" is sent again to the
/// next node with the same Idempotency-Key.
struct Balancer {
    nodes: Vec<MerchantClient>,
    alive: Vec<AtomicBool>,
    next: AtomicUsize,
    /// Final answers per node once the victim is dead.
    answered_after_kill: Vec<AtomicUsize>,
}

impl Balancer {
    fn pick(&self) -> usize {
        loop {
            let node = self.next.fetch_add(1, Ordering::Relaxed) % self.nodes.len();
            if self.alive[node].load(Ordering::Acquire) {
                return node;
            }
        }
    }

    /// POSTs `body` to `path` with `key`, starting at node `first`; returns the node that
    /// answered and its final answer.
    async fn post(&self, first: usize, path: &str, body: &Value, key: &str) -> (usize, Response) {
        let deadline = Instant::now() + RETRY_FOR;
        let mut node = first % self.nodes.len();
        let mut last_failure = String::new();
        while Instant::now() < deadline {
            if !self.alive[node].load(Ordering::Acquire) {
                node = self.pick();
            }
            match self.nodes[node].post_json(path, body, Some(key)).await {
                Ok(response) if retryable(&response) => {
                    last_failure = format!("node {node}: {} {}", response.status, response.text());
                }
                Ok(response) => {
                    if !self.alive[VICTIM].load(Ordering::Acquire) {
                        self.answered_after_kill[node].fetch_add(1, Ordering::Relaxed);
                    }
                    return (node, response);
                }
                Err(error) => last_failure = format!("node {node}: {error}"),
            }
            // The next attempt goes to another node (round-robin over the live ones), after
            // the client's backoff.
            node = self.pick();
            tokio::time::sleep(RETRY_BACKOFF).await;
        }
        panic!(
            "POST {path} (key {key}) found no node to answer within {RETRY_FOR:?}: {last_failure}"
        );
    }

    /// A node believed alive, for reads.
    fn any(&self) -> &MerchantClient {
        &self.nodes[self.pick()]
    }
}

fn retryable(response: &Response) -> bool {
    response.status == 503
        || (response.status == 409
            && response
                .json()
                .is_ok_and(|body| body["error"]["code"] == "idempotency_request_in_progress"))
}

/// What one scenario left behind, to check once the cluster has settled.
#[derive(Default)]
struct Outcome {
    /// Payment ids answered with a 2xx, with the node that answered.
    payments: Vec<(String, usize)>,
    /// Refund ids answered with a 2xx, by payment.
    refunds: Vec<(String, String)>,
    /// Requests answered by a node other than the one they were first sent to.
    rerouted: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_lose_nothing_and_charge_nothing_twice_when_one_is_killed_mid_burst() {
    within(TEST_TIMEOUT, burst_through_a_kill()).await;
}

async fn burst_through_a_kill() {
    let Some(cluster) = ClusterEnv::new("burst").await else {
        return;
    };
    let receiver = WebhookReceiver::start(always(Reply::Status(200))).await;
    let mut nodes = cluster
        .start_nodes(NODES, |options| {
            options
                // A dead node's leases lapse fast: another node re-drives what it left owed.
                .env("KASSA_ORDERS_JANITOR_INTERVAL_MS", 500)
                .env("KASSA_NOTIFICATIONS_POLL_INTERVAL_MS", 200)
        })
        .await;
    let credentials = nodes[0]
        .admin()
        .create_merchant("Burst Ltd", Some(&receiver.url()))
        .await
        .expect("creating a merchant");
    let balancer = Arc::new(Balancer {
        nodes: nodes
            .iter()
            .map(|node| node.merchant(&credentials).with_timeout(ATTEMPT_TIMEOUT))
            .collect(),
        alive: (0..NODES).map(|_| AtomicBool::new(true)).collect(),
        next: AtomicUsize::new(0),
        answered_after_kill: (0..NODES).map(|_| AtomicUsize::new(0)).collect(),
    });

    let finished = Arc::new(AtomicUsize::new(0));
    let kill_now = Arc::new(Notify::new());
    let burst = {
        let (balancer, finished, kill_now) = (balancer.clone(), finished.clone(), kill_now.clone());
        tokio::spawn(async move {
            futures::stream::iter(0..SCENARIOS)
                .map(|i| {
                    let (balancer, finished, kill_now) =
                        (balancer.clone(), finished.clone(), kill_now.clone());
                    async move {
                        let outcome = run_scenario(&balancer, i).await;
                        if finished.fetch_add(1, Ordering::AcqRel) + 1 == KILL_AFTER {
                            kill_now.notify_one();
                        }
                        outcome
                    }
                })
                .buffer_unordered(CONCURRENCY)
                .collect::<Vec<Outcome>>()
                .await
        })
    };
    // A scenario that panics before the kill ends the burst early: its panic is the failure
    // (waiting on the kill alone would wait forever).
    let mut burst = burst;
    tokio::select! {
        () = kill_now.notified() => {}
        ended = &mut burst => {
            let outcomes = ended.unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()));
            panic!("the burst ended ({} scenarios) before the kill", outcomes.len());
        }
    }
    nodes[VICTIM].kill9();
    balancer.alive[VICTIM].store(false, Ordering::Release);
    let killed_at = finished.load(Ordering::Acquire);
    let outcomes = burst.await.expect("the burst panicked");
    eprintln!("node {VICTIM} killed after {killed_at} of {SCENARIOS} scenarios");

    let after: Vec<usize> = balancer
        .answered_after_kill
        .iter()
        .map(|count| count.load(Ordering::Acquire))
        .collect();
    eprintln!("answers per node after the kill: {after:?}");
    assert_eq!(after[VICTIM], 0, "a dead node answered");
    assert!(
        (0..NODES).filter(|n| *n != VICTIM).all(|n| after[n] > 0),
        "the surviving nodes carry on: {after:?}"
    );
    let rerouted: usize = outcomes.iter().map(|o| o.rerouted).sum();
    eprintln!("{rerouted} requests were answered by another node than the first one tried");

    // Every acknowledged payment and refund is durable and reaches its final state, read
    // through the surviving nodes.
    let survivor = balancer.any().clone();
    let mut finals: HashMap<String, Value> = HashMap::new();
    for (id, _) in outcomes.iter().flat_map(|o| o.payments.iter()) {
        let payment = poll_until(&format!("payment {id} final"), SETTLE_TIMEOUT, || async {
            let payment = get_payment(&survivor, id).await;
            match payment["status"].as_str() {
                Some("processing" | "requires_action") => Err(payment.to_string()),
                _ => Ok(payment),
            }
        })
        .await;
        finals.insert(id.clone(), payment);
    }
    for (payment_id, refund_id) in outcomes.iter().flat_map(|o| o.refunds.iter()) {
        poll_until(
            &format!("refund {refund_id} final"),
            SETTLE_TIMEOUT,
            || async {
                let refund = get_ok(&survivor, &format!("/v1/refunds/{refund_id}")).await;
                assert_eq!(refund["payment_id"], payment_id.as_str(), "{refund}");
                match refund["status"].as_str() {
                    Some("pending") => Err(refund.to_string()),
                    _ => Ok(()),
                }
            },
        )
        .await;
    }
    // Read again once every refund is final: the amounts refunded are settled too.
    for (id, payment) in finals.iter_mut() {
        *payment = get_payment(&survivor, id).await;
    }

    // One payment per scenario, and no merchant order id twice.
    let listed = list_all_payments(&survivor).await;
    assert_eq!(listed.len(), SCENARIOS, "one payment per scenario");
    let order_ids: BTreeSet<&str> = listed
        .iter()
        .filter_map(|p| p["merchant_order_id"].as_str())
        .collect();
    assert_eq!(
        order_ids.len(),
        listed.len(),
        "a merchant order id was taken twice"
    );
    assert_eq!(
        finals.len(),
        SCENARIOS,
        "every scenario's payment was acknowledged"
    );

    check_ledger(&nodes[0], &finals).await;
    check_events_delivered(&survivor, &receiver, SCENARIOS, SETTLE_TIMEOUT).await;
}

/// One scenario, chosen by `i`; every request goes through the balancer.
async fn run_scenario(balancer: &Balancer, i: usize) -> Outcome {
    let mut outcome = Outcome::default();
    let home = i % NODES;
    let run = unique(&format!("burst-{i}"));
    match i % 4 {
        // A charge through one node, refunds through the next two.
        0 => {
            let payment = accept(
                balancer,
                &mut outcome,
                home,
                "/v1/payments",
                &charge(&run, "automatic"),
                &format!("{run}-pay"),
            )
            .await;
            let id = id_of(&payment);
            assert_eq!(payment["status"], "succeeded", "{payment}");
            outcome.payments.push((id.clone(), home));
            let refund = accept(
                balancer,
                &mut outcome,
                home + 1,
                "/v1/refunds",
                &json!({"payment_id": id, "amount": "4.00"}),
                &format!("{run}-refund-1"),
            )
            .await;
            outcome.refunds.push((id.clone(), id_of(&refund)));
            let (_, over) = balancer
                .post(
                    home + 2,
                    "/v1/refunds",
                    &json!({"payment_id": id, "amount": "7.00"}),
                    &format!("{run}-refund-2"),
                )
                .await;
            assert_error(&over, 422, "refund_exceeds_captured");
        }
        // A pre-authorisation, captured through another node, then five concurrent refunds
        // through all nodes, of which exactly four fit in the captured 8.00.
        1 => {
            let payment = accept(
                balancer,
                &mut outcome,
                home,
                "/v1/payments",
                &charge(&run, "manual"),
                &format!("{run}-auth"),
            )
            .await;
            let id = id_of(&payment);
            assert_eq!(payment["status"], "authorized", "{payment}");
            outcome.payments.push((id.clone(), home));
            let captured = accept(
                balancer,
                &mut outcome,
                home + 1,
                &format!("/v1/payments/{id}/capture"),
                &json!({"amount": "8.00"}),
                &format!("{run}-capture"),
            )
            .await;
            assert_eq!(captured["amount_captured"], "8.00", "{captured}");
            let refunds = (0..5).map(|r| {
                let body = json!({"payment_id": id, "amount": "2.00"});
                let key = format!("{run}-refund-{r}");
                async move { balancer.post(home + r, "/v1/refunds", &body, &key).await }
            });
            let answers = futures::future::join_all(refunds).await;
            let mut accepted = 0;
            for (_, response) in answers {
                match response.status {
                    201 | 202 => {
                        let refund = response.json().expect("refund json");
                        outcome.refunds.push((id.clone(), id_of(&refund)));
                        accepted += 1;
                    }
                    _ => {
                        assert_error(&response, 422, "refund_exceeds_captured");
                    }
                }
            }
            assert_eq!(
                accepted, 4,
                "exactly four 2.00 refunds fit in 8.00 captured"
            );
        }
        // A declined card: the answer is final and nothing is charged.
        2 => {
            let mut body = charge(&run, "automatic");
            body["card"] = card(CARD_DECLINED);
            let payment = accept(
                balancer,
                &mut outcome,
                home,
                "/v1/payments",
                &body,
                &format!("{run}-declined"),
            )
            .await;
            assert_eq!(payment["status"], "failed", "{payment}");
            outcome.payments.push((id_of(&payment), home));
        }
        // The same merchant order id through two nodes at once, under two keys: one wins.
        _ => {
            let body = charge(&run, "automatic");
            let (key_a, key_b) = (format!("{run}-dup-a"), format!("{run}-dup-b"));
            let (first, second) = futures::join!(
                balancer.post(home, "/v1/payments", &body, &key_a),
                balancer.post(home + 1, "/v1/payments", &body, &key_b),
            );
            let mut won = Vec::new();
            for (node, response) in [first, second] {
                if response.status == 201 {
                    won.push((id_of(&response.json().expect("payment json")), node));
                } else {
                    assert_error(&response, 409, "duplicate_merchant_order_id");
                }
            }
            assert_eq!(
                won.len(),
                1,
                "exactly one of two payments with one merchant order id"
            );
            outcome.payments.extend(won);
        }
    }
    outcome
}

/// A 10.00 USD card charge for order `run`.
fn charge(run: &str, capture: &str) -> Value {
    let mut body = charge_body(run, "10.00", "USD", CARD_SUCCEEDS);
    body["capture"] = json!(capture);
    body
}

/// POSTs through the balancer from node `first` (taken modulo the node count) and expects a
/// 2xx; counts a reroute.
async fn accept(
    balancer: &Balancer,
    outcome: &mut Outcome,
    first: usize,
    path: &str,
    body: &Value,
    key: &str,
) -> Value {
    let first = first % NODES;
    let (node, response) = balancer.post(first, path, body, key).await;
    if node != first {
        outcome.rerouted += 1;
    }
    assert!(
        (200..300).contains(&response.status),
        "POST {path} (key {key}) through node {node}: {} {}",
        response.status,
        response.text()
    );
    let object = response.json().expect("a JSON object");
    // The same key through another node answers the same object (a replay).
    let again_on = (node + 1) % NODES;
    if balancer.alive[again_on].load(Ordering::Acquire) {
        let (_, replay) = balancer.post(again_on, path, body, key).await;
        if (200..300).contains(&replay.status) {
            let replayed = replay.json().expect("a JSON object");
            assert_eq!(replayed["id"], object["id"], "a key answered two objects");
        }
    }
    object
}
