//! Invariants checked after a hostile run (a crash loop, a cluster burst with a kill): the
//! acquirer's ledger agrees with Kassa, nothing was charged twice, no refund sum exceeds its
//! capture, and every event reached the merchant.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde_json::Value;

use crate::webhooks::{Reply, WebhookReceiver};
use crate::{Kassa, MerchantClient, id_of, list_all, minor_units, poll_until, sandbox_call};

/// What [`check_ledger`] found, for the test's summary line.
#[derive(Debug, Default)]
pub struct LedgerSummary {
    /// Charges in the acquirer's ledger (one per idempotency key).
    pub charges: usize,
    /// Acknowledged payments the acquirer charged.
    pub charged_payments: usize,
}

/// The card charges of the acquirer's ledger (`GET /sandbox/ledger`) by idempotency key (the
/// payment id); panics if a key was charged twice.
pub fn charges_by_key(ledger: &Value) -> HashMap<String, Value> {
    let mut charges: HashMap<String, Value> = HashMap::new();
    for charge in ledger["charges"].as_array().expect("the ledger's charges") {
        let key = charge["idempotency_key"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            charges.insert(key.clone(), charge.clone()).is_none(),
            "charged twice under {key}"
        );
    }
    charges
}

/// The acquirer's ledger: each payment charged at most once, and its captured and refunded
/// amounts are Kassa's; no refund sum exceeds what was captured. `finals` maps payment ids to
/// their final objects (2-decimal currencies).
pub async fn check_ledger(sandbox_host: &Kassa, finals: &HashMap<String, Value>) -> LedgerSummary {
    let ledger = sandbox_call(sandbox_host, "GET", "/sandbox/ledger", None).await;
    let charges = charges_by_key(&ledger);
    let mut summary = LedgerSummary {
        charges: charges.len(),
        charged_payments: 0,
    };
    for (id, payment) in finals {
        let captured = minor_units(payment["amount_captured"].as_str().unwrap_or("0"), 2);
        let refunded = minor_units(payment["amount_refunded"].as_str().unwrap_or("0"), 2);
        assert!(
            refunded <= captured,
            "refunded more than captured: {payment}"
        );
        match (payment["status"].as_str(), charges.get(id)) {
            (Some("failed"), Some(charge)) => {
                assert_eq!(charge["status"], "declined", "{payment} vs {charge}");
            }
            (Some("failed"), None) => {}
            (_, Some(charge)) => {
                summary.charged_payments += 1;
                assert_eq!(
                    i128::from(charge["captured_minor"].as_i64().unwrap_or(-1)),
                    captured,
                    "{payment} vs {charge}"
                );
                assert_eq!(
                    i128::from(charge["refunded_minor"].as_i64().unwrap_or(-1)),
                    refunded,
                    "{payment} vs {charge}"
                );
            }
            (_, None) => panic!("an acknowledged payment the acquirer never charged: {payment}"),
        }
    }
    summary
}

/// Every event Kassa recorded for `merchant` reaches `receiver` within `timeout` (at least
/// once; duplicates are the merchant's to drop by event id). At least `events_min` events must
/// exist. Returns the number of events.
pub async fn check_events_delivered(
    merchant: &MerchantClient,
    receiver: &WebhookReceiver,
    events_min: usize,
    timeout: Duration,
) -> usize {
    let events: BTreeSet<String> = list_all(merchant, "/v1/events")
        .await
        .iter()
        .map(id_of)
        .collect();
    assert!(
        events.len() >= events_min,
        "{} events, expected at least {events_min}",
        events.len()
    );
    poll_until("every event delivered", timeout, || async {
        let delivered: BTreeSet<String> = receiver
            .received()
            .into_iter()
            .filter(|r| matches!(r.reply, Reply::Status(200)))
            .map(|r| r.event_id)
            .collect();
        let missing = events.difference(&delivered).count();
        if missing == 0 {
            Ok(())
        } else {
            Err(format!(
                "{missing} of {} events not delivered yet",
                events.len()
            ))
        }
    })
    .await;
    events.len()
}
