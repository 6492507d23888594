//! SIGKILL in the middle of a burst of keyed charges: every answer Kassa gave survives the
//! crash, and retrying the unanswered requests with their keys never makes a second payment
//! (DESIGN.md §3 "replies only after the append is durable", docs/API.md "Idempotency").

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use harness::*;
use serde_json::Value;

const CHARGES: usize = 200;
const CONCURRENCY: usize = 32;
/// The process is SIGKILLed once this many charges have been answered.
const KILL_AFTER_ANSWERS: usize = 100;
/// How long the burst may take to reach [`KILL_AFTER_ANSWERS`].
const BURST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a retried request may keep meeting a recovering server (409 in progress, 503).
const RETRY_TIMEOUT: Duration = Duration::from_secs(60);

/// One logical charge of the burst.
struct Charge {
    body: Value,
    key: String,
    /// The final status and failure code its sandbox card leads to.
    outcome: (&'static str, Option<&'static str>),
}

impl Charge {
    fn order_id(&self) -> &str {
        self.body["merchant_order_id"].as_str().unwrap_or_default()
    }

    /// Panics unless `payment` belongs to this charge and, if final, has the card's outcome.
    /// A charge the crash interrupted may instead have been failed by recovery (it never
    /// reached the channel, so nothing was charged): `interrupted` accepts any `failed`.
    fn assert_matches(&self, payment: &Value, when: &str, interrupted: bool) {
        let order_id = self.order_id();
        assert_eq!(payment["merchant_order_id"], order_id, "{when}: {payment}");
        assert_eq!(payment["amount"], self.body["amount"], "{when}: {payment}");
        if payment["status"] == "processing" || (interrupted && payment["status"] == "failed") {
            return;
        }
        let (status, failure_code) = self.outcome;
        assert_eq!(payment["status"], status, "{when}, {order_id}: {payment}");
        assert_eq!(
            payment["failure_code"],
            serde_json::json!(failure_code),
            "{when}, {order_id}: {payment}"
        );
    }
}

fn burst() -> Vec<Charge> {
    (0..CHARGES)
        .map(|i| {
            let (card, outcome) = match i % 4 {
                1 => (CARD_DECLINED, ("failed", Some("card_declined"))),
                3 => (
                    CARD_INSUFFICIENT_FUNDS,
                    ("failed", Some("insufficient_funds")),
                ),
                _ => (CARD_SUCCEEDS, ("succeeded", None)),
            };
            Charge {
                body: charge_body(&unique(&format!("crash-{i}")), "10.00", "USD", card),
                key: unique(&format!("crash-key-{i}")),
                outcome,
            }
        })
        .collect()
}

/// Sends every charge, `CONCURRENCY` at a time; returns each one's response, or `None` if the
/// request got no HTTP answer (the process died under it). Counts 2xx answers in `answered`.
async fn send_burst(
    merchant: MerchantClient,
    charges: Arc<Vec<Charge>>,
    answered: Arc<tokio::sync::watch::Sender<usize>>,
) -> Vec<Option<Response>> {
    futures::stream::iter(0..charges.len())
        .map(|i| {
            let (merchant, charges, answered) = (
                merchant.clone(),
                Arc::clone(&charges),
                Arc::clone(&answered),
            );
            async move {
                let charge = &charges[i];
                let response = merchant
                    .post_json("/v1/payments", &charge.body, Some(&charge.key))
                    .await
                    .ok();
                if response.as_ref().is_some_and(Response::is_success) {
                    answered.send_modify(|n| *n += 1);
                }
                response
            }
        })
        .buffered(CONCURRENCY)
        .collect()
        .await
}

/// Retries `charge` with its key after the restart until Kassa gives a 2xx (it may say
/// `409 idempotency_request_in_progress` or 503 while it recovers); returns the payment.
async fn retry(merchant: &MerchantClient, charge: &Charge) -> Value {
    let what = format!("a 2xx for the retry of {}", charge.order_id());
    poll_until(&what, RETRY_TIMEOUT, || async {
        let response = post_payment(merchant, &charge.body, Some(&charge.key)).await;
        match response.status {
            201 | 202 => Ok(response.json().expect("payment json")),
            409 | 503 => {
                check_error(
                    &response,
                    response.status,
                    &["idempotency_request_in_progress", "overloaded"],
                )
                .unwrap_or_else(|mismatch| panic!("retry of {}: {mismatch}", charge.order_id()));
                Err(response.text())
            }
            status => panic!(
                "retry of {} with its key: {status} {}",
                charge.order_id(),
                response.text()
            ),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_burst_loses_no_answer_and_duplicates_nothing() {
    // A little channel latency keeps charges in flight when the kill lands.
    let mut kassa = Kassa::start(KassaOptions::new().env("KASSA_SANDBOX_LATENCY_MS", 100)).await;
    let merchant = kassa.new_merchant("Burst Ltd").await;
    let charges = Arc::new(burst());

    let (answered_tx, mut answered_rx) = tokio::sync::watch::channel(0usize);
    let burst = tokio::spawn(send_burst(
        merchant.clone(),
        Arc::clone(&charges),
        Arc::new(answered_tx),
    ));
    let reached = tokio::time::timeout(
        BURST_TIMEOUT,
        answered_rx.wait_for(|n| *n >= KILL_AFTER_ANSWERS),
    )
    .await
    .map(|waited| waited.map(|n| *n));
    let answered_at_kill = match reached {
        Ok(Ok(n)) => n,
        Ok(Err(_)) => panic!(
            "the burst ended with only {} 2xx answers, never reaching {KILL_AFTER_ANSWERS}",
            *answered_rx.borrow()
        ),
        Err(_) => panic!("{KILL_AFTER_ANSWERS} answers did not come within {BURST_TIMEOUT:?}"),
    };
    kassa.kill9();
    let responses = burst.await.expect("the burst task panicked");
    assert!(answered_at_kill >= KILL_AFTER_ANSWERS);

    // Split the burst into what Kassa answered and what it did not.
    let mut answered: Vec<(usize, Value)> = Vec::new();
    let mut unanswered: Vec<usize> = Vec::new();
    for (i, response) in responses.iter().enumerate() {
        match response {
            Some(response) if [201, 202].contains(&response.status) => {
                let payment = response.json().expect("payment json");
                assert_payment_shape(&payment);
                charges[i].assert_matches(&payment, "answer before the crash", false);
                answered.push((i, payment));
            }
            Some(response) => panic!(
                "{} got {} before the crash: {}",
                charges[i].order_id(),
                response.status,
                response.text()
            ),
            None => unanswered.push(i),
        }
    }
    assert!(
        answered.len() >= KILL_AFTER_ANSWERS,
        "answered: {}",
        answered.len()
    );
    assert!(
        !unanswered.is_empty(),
        "the kill left no request unanswered"
    );
    eprintln!(
        "crash: killed at {answered_at_kill} answers; {} answered, {} unanswered",
        answered.len(),
        unanswered.len()
    );

    kassa.restart().await;
    let merchant = merchant.with_base_url(kassa.base_url());
    let mut ids_by_order: HashMap<String, String> = HashMap::new();

    // Every answer survived: the payment exists with the status Kassa gave (a `processing`
    // answer may have moved on), and replaying its key finds the same payment.
    for (i, answer) in &answered {
        let charge = &charges[*i];
        let id = id_of(answer);
        let payment = get_payment(&merchant, &id).await;
        // Only a `processing` answer was interrupted; a final answer must stand as given.
        let interrupted = answer["status"] == "processing";
        charge.assert_matches(&payment, "after the crash", interrupted);
        if answer["status"] != "processing" {
            assert_eq!(
                payment["status"], answer["status"],
                "after the crash: {payment}"
            );
        }
        let replay = retry(&merchant, charge).await;
        assert_eq!(
            replay["id"],
            id.as_str(),
            "replaying {}'s key",
            charge.order_id()
        );
        ids_by_order.insert(charge.order_id().to_owned(), id);
    }
    // Every unanswered request, retried with its key, gives one payment.
    for i in &unanswered {
        let charge = &charges[*i];
        let payment = retry(&merchant, charge).await;
        charge.assert_matches(&payment, "retry after the crash", true);
        let again = retry(&merchant, charge).await;
        assert_eq!(
            again["id"],
            payment["id"],
            "a second retry of {}",
            charge.order_id()
        );
        ids_by_order.insert(charge.order_id().to_owned(), id_of(&payment));
    }

    // No merchant_order_id appears twice, and each is the payment its request was told about.
    let all = list_all_payments(&merchant).await;
    assert!(
        all.len() <= CHARGES,
        "{} payments from {CHARGES} charges",
        all.len()
    );
    let mut seen: HashMap<String, String> = HashMap::new();
    for payment in &all {
        let order_id = payment["merchant_order_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if let Some(first) = seen.insert(order_id.clone(), id_of(payment)) {
            panic!(
                "{order_id} has two payments: {first} and {}",
                id_of(payment)
            );
        }
    }
    for (order_id, id) in &ids_by_order {
        assert_eq!(
            seen.get(order_id),
            Some(id),
            "the listed payment of {order_id}"
        );
    }
    assert_eq!(
        all.len(),
        CHARGES,
        "after the retries every charge has its payment"
    );
}
