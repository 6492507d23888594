//! RabbitMQ restarted during a run (`rabbitmqctl stop_app` / `start_app`) loses no event: while
//! the broker is away payments go on, their events wait in the outbox, and once it is back every
//! event reaches the merchant. Messages the broker held (retries waiting in delay queues) survive
//! the restart.
//!
//! This binary stops the machine's broker, so it holds one test only: cargo runs test binaries
//! one after another, and no other test shares the broker meanwhile. A guard starts the broker
//! again however the test ends.

#[path = "notifications/common.rs"]
mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use harness::webhooks::fail_first;
use harness::*;
use serde_json::Value;

/// How long the broker may take to stop or start.
const BROKER_WAIT: Duration = Duration::from_secs(120);
/// The delay before a second attempt: long enough that the retries are still waiting in the
/// broker's delay queue when it stops.
const RETRY_DELAY_MS: u64 = 5_000;

fn rabbitmqctl(args: &[&str]) -> Result<(), String> {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .map_err(|e| format!("rabbitmqctl {args:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "rabbitmqctl {args:?}: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Starts the broker's application again when dropped (also when the test panics).
struct BrokerStopped;

impl BrokerStopped {
    fn stop() -> BrokerStopped {
        rabbitmqctl(&["stop_app"]).expect("stopping the broker");
        BrokerStopped
    }
}

impl Drop for BrokerStopped {
    fn drop(&mut self) {
        if let Err(error) = rabbitmqctl(&["start_app"]) {
            eprintln!("starting the broker again failed: {error}");
        }
        let timeout = BROKER_WAIT.as_secs().to_string();
        if let Err(error) = rabbitmqctl(&["await_startup", "--timeout", &timeout]) {
            eprintln!("the broker did not come back: {error}");
        }
    }
}

async fn pending_deliveries(kassa: &Kassa, merchant_id: &str) -> usize {
    let path = format!("/admin/notifications?status=pending&merchant={merchant_id}&limit=100");
    let (status, body) = admin_json(kassa, "GET", &path, None).await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn a_broker_restart_mid_run_loses_no_event() {
    // Every event's first delivery fails: at the stop, retries wait in the broker's delay
    // queues, besides whatever is in flight.
    let schedule = format!("0,{RETRY_DELAY_MS},400,800");
    let tweak = |options: KassaOptions| options.env("KASSA_NOTIFICATIONS_SCHEDULE_MS", schedule);
    let started =
        OneMerchant::start_with(Transport::RabbitMq, "Broker Restart", fail_first(1), tweak);
    let Some(one) = started.await else {
        return;
    };
    let (kassa, merchant) = (&one.kassa, &one.merchant);
    let before = one.charges_with_events(5).await;
    let broker = one.broker.as_ref().expect("a RabbitMQ instance");
    let delay_queue = format!("delay.{RETRY_DELAY_MS}ms");
    poll_until(
        "the five retries to wait in the broker",
        DELIVERY_WAIT,
        || async {
            match broker.queue_length(&delay_queue).await? {
                5 => Ok(()),
                n => Err(format!("{n} messages in {delay_queue}")),
            }
        },
    )
    .await;

    let stopped = BrokerStopped::stop();
    poll_until(
        "the notifier to notice the broker is gone",
        BROKER_WAIT,
        || async {
            let relay = kassa
                .metric("kassa_notifier_broker_connected{role=\"relay\"}")
                .await;
            let consumer = kassa
                .metric("kassa_notifier_broker_connected{role=\"consumer\"}")
                .await;
            if relay == 0 && consumer == 0 {
                Ok(())
            } else {
                Err(format!("relay {relay}, consumer {consumer}"))
            }
        },
    )
    .await;
    // Kassa stays ready and says why deliveries wait.
    let readyz = HttpClient::new(kassa.base_url())
        .send("GET", "/readyz", &[], Vec::new())
        .await
        .expect("GET /readyz");
    let checks = readyz.json().expect("a JSON body")["checks"].clone();
    assert_eq!(readyz.status, 200, "{checks}");
    let notifications = checks["notifications"].as_str().unwrap_or_default();
    assert!(notifications.starts_with("degraded"), "{checks}");
    // Payments go on without the broker; their events wait in the outbox.
    let during = charges(merchant, 5).await;
    assert_eq!(during.len(), 5);
    let merchant_id = &one.credentials.id;
    let waiting = pending_deliveries(kassa, merchant_id).await;
    assert!(
        waiting >= 5,
        "{waiting} deliveries pending while the broker is away"
    );
    let ready: Value = kassa
        .merchant(&one.credentials)
        .get("/v1/events?limit=100")
        .await
        .expect("events while the broker is away")
        .json()
        .expect("a JSON list");
    assert_eq!(ready["data"].as_array().map(Vec::len), Some(10));
    drop(stopped); // start_app, await_startup

    let ids = event_ids(merchant, 10).await;
    assert!(before.iter().all(|id| ids.contains(id)));
    wait_all_delivered(&one.receiver, &ids, BROKER_WAIT).await;
    one.assert_all_signed();
    wait_operator_sees_delivered(kassa, &ids, "every delivery after the restart").await;
    one.assert_carried_by_transport(10).await;
}
