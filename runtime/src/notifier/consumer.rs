//! The RabbitMQ consumer (`dispatcher` worker, RabbitMQ transport): takes "make attempt n of
//! delivery d" messages from `P.work`, makes the attempt, schedules the next one through a
//! delay queue, and only then acknowledges.
//!
//! # One message
//! ```text
//! parse ─▶ the delivery (store) ─▶ pending, at the message's attempt count? ── no ─▶ ack (stale)
//!                                    │ yes
//!          an attempt of this event already in flight here? ── yes ─▶ ack (a copy)
//!          merchant without endpoint ─▶ record no_endpoint, ack
//!          endpoint at endpoint_inflight_max ─▶ publish to P.delay.<busy>ms, ack (no attempt)
//!          otherwise: POST, record the attempt (store), then
//!            retry ─▶ publish to P.delay.<schedule>ms, expiring at next_attempt_ms;
//!                     mark handed off; ack
//!            dead  ─▶ publish a summary to P.dead; ack
//!            delivered ─▶ ack
//! ```
//! The store is the truth and moves first; the broker only carries "when". Every failure
//! between the steps leaves something that finishes the job: a crash before the ack has the
//! broker deliver the message again (stale once the attempt was recorded); a retry whose
//! publish failed is not marked handed off, so the relay publishes it when due; a store
//! failure nacks the message back into the queue (after a pause).
//!
//! Prefetch is `inflight_max`, and a busy endpoint's messages leave through the busy delay
//! queue at once, so a hanging endpoint holds at most `endpoint_inflight_max` of the slots:
//! no head-of-line blocking across endpoints.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use kassa_store::{AttemptOutcome, DeliveryRecord, DeliveryStatus};
use lapin::acker::Acker;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tokio::sync::watch;

use super::broker::{Broker, DeadLetter, DeliveryMessage, Reconnect};
use super::slots::Slots;
use super::{Attempt, DRAIN_MS_MAX, schedule, send, sleep_unless_stopped};
use crate::app::App;

/// The pause before a message is put back after a store error (so a broken store is not
/// hammered by the same message).
const STORE_RETRY_MS: u64 = 500;

pub fn run(app: Arc<App>, stop: watch::Receiver<bool>) -> BoxFuture<'static, ()> {
    let settings = &app.settings.notifications;
    let seed = crate::crypto::random_bytes::<8>()
        .map(u64::from_le_bytes)
        .unwrap_or_else(|_| app.now_ms() as u64);
    let consumer = Consumer {
        client: send::client(settings.endpoint_inflight_max),
        jitter: schedule::Jitter::seeded(seed),
        app,
        stop,
        slots: Slots::default(),
    };
    Box::pin(consumer.run())
}

/// The loop's own state: only the loop touches it.
struct Consumer {
    app: Arc<App>,
    stop: watch::Receiver<bool>,
    client: send::WebhookClient,
    jitter: schedule::Jitter,
    slots: Slots,
}

impl Consumer {
    async fn run(mut self) {
        let settings = self.app.settings.notifications.clone();
        let mut reconnect = Reconnect::new(&settings.rabbitmq);
        while !*self.stop.borrow() {
            let broker = match Broker::connect(&settings, "kassa webhook consumer").await {
                Ok(broker) => Arc::new(broker),
                Err(error) => {
                    self.app.metrics.broker.set_consumer_connected(false);
                    let delay = reconnect.next_delay();
                    tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64,
                        "notifier consumer: cannot reach the broker; deliveries wait");
                    sleep_unless_stopped(&mut self.stop, delay).await;
                    continue;
                }
            };
            reconnect.reset();
            match self.consume(&broker).await {
                Ok(()) => {}
                Err(error) => {
                    tracing::warn!(%error, "notifier consumer: lost the broker; reconnecting");
                }
            }
            self.app.metrics.broker.set_consumer_connected(false);
            if *self.stop.borrow() {
                self.drain().await;
            }
            if let Ok(broker) = Arc::try_unwrap(broker) {
                broker.close().await;
            }
        }
        self.drain().await;
    }

    /// Consumes until stopped (`Ok`) or the broker fails.
    async fn consume(&mut self, broker: &Arc<Broker>) -> Result<(), lapin::Error> {
        let settings = &self.app.settings.notifications;
        let channel = broker.connection.create_channel().await?;
        let prefetch = u16::try_from(settings.inflight_max).unwrap_or(u16::MAX);
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let mut consumer = channel
            .basic_consume(
                &broker.topology.work_queue(),
                "kassa-webhooks",
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        tracing::info!(prefetch, "notifier consumer: consuming");
        self.app.metrics.broker.set_consumer_connected(true);
        loop {
            tokio::select! {
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        let message = serde_json::from_slice::<DeliveryMessage>(&delivery.data);
                        self.take(broker, message, delivery.acker).await;
                    }
                    Some(Err(error)) => return Err(error),
                    None => return Ok(()),
                },
                Some(()) = self.slots.join_next(), if !self.slots.is_empty() => {}
                _ = self.stop.changed() => return Ok(()),
            }
        }
    }

    /// Decides what one message needs and starts it.
    async fn take(
        &mut self,
        broker: &Arc<Broker>,
        message: Result<DeliveryMessage, serde_json::Error>,
        acker: Acker,
    ) {
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "notifier consumer: dropping a message that is not a delivery");
                ack(&acker).await;
                return;
            }
        };
        if self.slots.holds_event(&message.event_id) {
            // A copy (the relay published again after a crash): the attempt in flight goes on.
            ack(&acker).await;
            return;
        }
        let delivery = match self.app.store.get_delivery(&message.event_id).await {
            Ok(Some(delivery)) => delivery,
            Ok(None) => {
                tracing::warn!(event = %message.event_id,
                    "notifier consumer: a message for an unknown delivery; dropped");
                ack(&acker).await;
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "notifier consumer: reading a delivery failed");
                self.spawn_held(None, &message.event_id, nack_later(acker));
                return;
            }
        };
        if delivery.status != DeliveryStatus::Pending || delivery.attempts != message.attempts {
            // Delivered, dead, replayed or already attempted: the store moved on.
            ack(&acker).await;
            return;
        }
        let merchant = match self.app.merchants.get(&delivery.merchant_id).await {
            Ok(merchant) => merchant,
            Err(error) => {
                tracing::warn!(%error, merchant = %delivery.merchant_id,
                    "notifier consumer: merchant lookup failed");
                self.spawn_held(None, &message.event_id, nack_later(acker));
                return;
            }
        };
        let endpoint = merchant.as_ref().and_then(|m| m.webhook_url.clone());
        let (Some(merchant), Some(endpoint)) = (merchant, endpoint) else {
            let app = self.app.clone();
            let work = async move {
                match super::try_record_no_endpoint(&app, &delivery).await {
                    Ok(()) => ack(&acker).await,
                    Err(_) => nack_later(acker).await,
                }
            };
            self.spawn_held(None, &message.event_id, work);
            return;
        };
        let settings = &self.app.settings.notifications;
        if self.slots.at_endpoint(&endpoint) >= settings.endpoint_inflight_max {
            let broker = broker.clone();
            let busy_delay_ms = settings.rabbitmq.endpoint_busy_delay_ms;
            let work = async move {
                match broker
                    .publish_delayed(&message, busy_delay_ms, busy_delay_ms)
                    .await
                {
                    Ok(()) => ack(&acker).await,
                    Err(error) => {
                        tracing::warn!(%error, "notifier consumer: deferring a busy endpoint's message failed");
                        nack_later(acker).await;
                    }
                }
            };
            // Holds neither the event nor the endpoint: it only moves the message.
            self.slots.spawn(&self.app.io, None, None, work);
            return;
        }
        let attempt = Attempt {
            app: self.app.clone(),
            client: self.client.clone(),
            endpoint: endpoint.clone(),
            merchant,
            event: match self.app.store.get_event(None, &delivery.event_id).await {
                Ok(Some(event)) => event,
                Ok(None) | Err(_) => {
                    tracing::warn!(event = %delivery.event_id,
                        "notifier consumer: the event could not be read");
                    self.spawn_held(None, &message.event_id, nack_later(acker));
                    return;
                }
            },
            delivery,
            random: self.jitter.next_u64(),
        };
        let work = attempt_then_schedule(self.app.clone(), broker.clone(), attempt, acker);
        self.spawn_held(Some(endpoint), &message.event_id, work);
    }

    fn spawn_held(
        &mut self,
        endpoint: Option<String>,
        event_id: &str,
        work: impl Future<Output = ()> + Send + 'static,
    ) {
        self.slots
            .spawn(&self.app.io, Some(event_id), endpoint, work);
    }

    /// Waits (a little) for the tasks in flight; unacknowledged messages go back to the queue.
    async fn drain(&mut self) {
        let settings = &self.app.settings.notifications;
        let bound = Duration::from_millis(settings.webhook_timeout_ms.min(DRAIN_MS_MAX));
        self.slots.drain(bound).await;
    }
}

/// One attempt, then what its outcome asks of the broker, then the ack.
async fn attempt_then_schedule(app: Arc<App>, broker: Arc<Broker>, attempt: Attempt, acker: Acker) {
    let event_id = attempt.event.id.clone();
    let merchant_id = attempt.merchant.id.clone();
    let event_kind = attempt.event.kind.clone();
    let attempts_before = attempt.delivery.attempts;
    let outcome = match attempt.send_and_record().await {
        Ok(outcome) => outcome,
        Err(_) => {
            // Not recorded: the message goes back and the attempt is made again.
            nack_later(acker).await;
            return;
        }
    };
    let attempts = attempts_before.saturating_add(1);
    match outcome {
        AttemptOutcome::Retry { next_attempt_ms } => {
            let schedule_ms = &app.settings.notifications.schedule_ms;
            let nominal_ms = schedule_ms.get(attempts as usize).copied().unwrap_or(0);
            let wait_ms = u64::try_from(next_attempt_ms - app.now_ms()).unwrap_or(0);
            let message = DeliveryMessage {
                event_id: event_id.clone(),
                attempts,
            };
            match broker.publish_delayed(&message, nominal_ms, wait_ms).await {
                Ok(()) => {
                    if let Err(error) = app
                        .store
                        .mark_handed_off(vec![(event_id.clone(), attempts)])
                        .await
                    {
                        // Published again by the relay when due; the copy is dropped.
                        tracing::warn!(%error, event = %event_id, "notifier consumer: marking a retry failed");
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, event = %event_id,
                        "notifier consumer: the retry could not be queued; the relay sends it when due");
                }
            }
        }
        AttemptOutcome::Dead => {
            let last = app.store.get_delivery(&event_id).await.ok().flatten();
            let dead = dead_letter(
                &event_id,
                &merchant_id,
                &event_kind,
                attempts,
                last.as_ref(),
                app.now_ms(),
            );
            if let Err(error) = broker.publish_dead(&dead).await {
                // The store keeps the dead delivery; the queue is a copy for operators' tools.
                tracing::warn!(%error, event = %event_id, "notifier consumer: publishing a dead letter failed");
            }
        }
        AttemptOutcome::Delivered | AttemptOutcome::NoEndpoint => {}
    }
    ack(&acker).await;
}

fn dead_letter<'a>(
    event_id: &'a str,
    merchant_id: &'a str,
    event_kind: &'a str,
    attempts: u32,
    last: Option<&'a DeliveryRecord>,
    now_ms: i64,
) -> DeadLetter<'a> {
    DeadLetter {
        event_id,
        merchant_id,
        event_type: event_kind,
        attempts,
        last_http_status: last.and_then(|d| d.last_http_status),
        last_error: last.and_then(|d| d.last_error.as_deref()),
        dead_at_ms: now_ms,
    }
}

async fn ack(acker: &Acker) {
    if let Err(error) = acker.ack(BasicAckOptions::default()).await {
        // The channel is gone: the broker delivers the message again, and it is found stale.
        tracing::debug!(%error, "notifier consumer: ack failed");
    }
}

/// Puts the message back at the head of the queue, after [`STORE_RETRY_MS`].
async fn nack_later(acker: Acker) {
    tokio::time::sleep(Duration::from_millis(STORE_RETRY_MS)).await;
    let requeue = BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    };
    if let Err(error) = acker.nack(requeue).await {
        tracing::debug!(%error, "notifier consumer: nack failed");
    }
}
