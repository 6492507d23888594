//! The outbox relay (`outbox` worker, RabbitMQ transport): publishes what the outbox says is
//! due and not yet in the broker, and marks it handed off once the broker confirmed it.
//!
//! ```text
//! loop: store.relay_due(now, batch_max)            pending, handed_off = 0, due
//!       └─ work queue shorter than its bound?      (else wait: the events stay in the outbox)
//!          └─ publish each to P.deliveries/"work"  persistent, mandatory, confirmed
//!             └─ store.mark_handed_off(confirmed)  only those the broker acked
//! ```
//!
//! One node of a cluster relays at a time (the `outbox-relay` lease, renewed every pass; the
//! others stand by and take over when it lapses), so a node's new events are published by
//! the holder within `poll_interval_ms`. New events, replays and resends wake it (`App::notifier_due`); otherwise it polls every
//! `poll_interval_ms` (a retry whose delayed message could not be published, or a crash
//! between an attempt and its retry's publish, is found that way). A broker outage stops the
//! relay, not payments: appends keep writing events; the relay reconnects with backoff and
//! publishes the backlog. A crash between the confirm and the mark publishes the message again:
//! consumers drop the copy (the delivery's attempts moved on, or the first copy is in flight).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;

use super::broker::{Broker, BrokerError, DeliveryMessage, Reconnect};
use crate::app::App;
use crate::lease::ClusterLease;

pub fn run(app: Arc<App>, stop: watch::Receiver<bool>) -> BoxFuture<'static, ()> {
    let lease = ClusterLease::new("outbox-relay", app.settings.notifications.poll_interval_ms);
    Box::pin(Relay { app, stop, lease }.run())
}

struct Relay {
    app: Arc<App>,
    stop: watch::Receiver<bool>,
    /// Relays run on one node of a cluster at a time: two would publish the same deliveries.
    lease: ClusterLease,
}

/// Why a pass ended early.
enum Stalled {
    Broker(BrokerError),
    Store(kassa_store::StoreError),
}

impl Relay {
    async fn run(mut self) {
        let settings = self.app.settings.notifications.clone();
        let mut reconnect = Reconnect::new(&settings.rabbitmq);
        let app = self.app.clone();
        let gauges = &app.metrics.broker;
        while !*self.stop.borrow() {
            let broker = match Broker::connect(&settings, "kassa outbox relay").await {
                Ok(broker) => broker,
                Err(error) => {
                    gauges.set_relay_connected(false);
                    let delay = reconnect.next_delay();
                    tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64,
                        "notifier relay: cannot reach the broker; events wait in the outbox");
                    super::sleep_unless_stopped(&mut self.stop, delay).await;
                    continue;
                }
            };
            tracing::info!("notifier relay: connected to the broker");
            gauges.set_relay_connected(true);
            reconnect.reset();
            let error = self.relay(&broker).await;
            gauges.set_relay_connected(false);
            match error {
                None => {
                    broker.close().await;
                    break;
                }
                Some(error) => {
                    tracing::warn!(%error, "notifier relay: lost the broker; reconnecting");
                    broker.close().await;
                }
            }
        }
    }

    /// Relays until stopped (`None`) or the broker fails (its error).
    async fn relay(&mut self, broker: &Broker) -> Option<BrokerError> {
        let settings = &self.app.settings.notifications;
        let poll = Duration::from_millis(settings.poll_interval_ms);
        loop {
            if *self.stop.borrow() {
                return None;
            }
            if !broker.connected() {
                return Some(BrokerError::Closed);
            }
            if !self.lease.hold(self.app.store.as_ref()).await {
                // Another node relays; this one stands by, and takes over if that one dies.
                super::sleep_unless_stopped(&mut self.stop, poll).await;
                continue;
            }
            let wait = match self.pass(broker).await {
                Ok(published) if published > 0 => Duration::ZERO,
                Ok(_) => poll,
                Err(Stalled::Broker(error)) => return Some(error),
                Err(Stalled::Store(error)) => {
                    tracing::warn!(%error, "notifier relay: reading the outbox failed");
                    poll
                }
            };
            if !wait.is_zero() {
                self.pause(wait).await;
            }
        }
    }

    /// One batch: what is due and not in the broker, published and marked. Returns how many.
    async fn pass(&self, broker: &Broker) -> Result<usize, Stalled> {
        let settings = &self.app.settings.notifications;
        let now = self.app.now_ms();
        let due = self
            .app
            .store
            .relay_due(now, settings.batch_max)
            .await
            .map_err(Stalled::Store)?;
        if due.is_empty() {
            return Ok(0);
        }
        let waiting = broker
            .topology
            .work_queue_length(&broker.channel)
            .await
            .map_err(Stalled::Broker)?;
        let room = settings
            .rabbitmq
            .work_queue_length_max
            .saturating_sub(waiting);
        if room == 0 {
            tracing::warn!(
                waiting,
                "notifier relay: the work queue is at its bound; events wait in the outbox"
            );
            return Ok(0);
        }
        let messages: Vec<DeliveryMessage> = due
            .into_iter()
            .take(usize::try_from(room).unwrap_or(usize::MAX))
            .map(|delivery| DeliveryMessage {
                event_id: delivery.event_id,
                attempts: delivery.attempts,
            })
            .collect();
        let confirmed = broker
            .publish_due(&messages)
            .await
            .map_err(Stalled::Broker)?;
        let handoffs: Vec<(String, u32)> = messages
            .into_iter()
            .zip(confirmed)
            .filter_map(|(message, ok)| ok.then_some((message.event_id, message.attempts)))
            .collect();
        let published = handoffs.len();
        self.app.metrics.broker.count_relayed(published);
        if let Err(error) = self.app.store.mark_handed_off(handoffs).await {
            // Published but not marked: published again on the next pass; consumers drop the
            // copy.
            tracing::warn!(%error, "notifier relay: marking hand-offs failed");
        }
        Ok(published)
    }

    /// Waits `wait`, or less if woken (new events) or stopped.
    async fn pause(&mut self, wait: Duration) {
        let wake = self.app.notifier_due.clone();
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = self.stop.changed() => {}
        }
    }
}
