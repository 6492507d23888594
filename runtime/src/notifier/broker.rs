//! The RabbitMQ side of the notifier (`notifications.transport = "rabbitmq"`): the topology,
//! the connection, and the messages.
//!
//! # Topology (every name starts with `notifications.rabbitmq.prefix`, here `P`)
//! ```text
//!  relay ──publish "work"──▶ P.deliveries (direct) ──"work"──▶ P.work ──▶ consumers
//!                                   │                            ▲
//!                                   └──"dead"──▶ P.dead          │ dead-lettered on expiry
//!  consumer ──publish "<ms>"─▶ P.delays (direct) ──"<ms>"──▶ P.delay.<ms>ms
//! ```
//! - `P.work`: durable; what is due now. Its length is bounded by the relay, which publishes
//!   only while the queue holds fewer than `work_queue_length_max` (a broker-side limit would
//!   drop the messages the delay queues dead-letter into it).
//! - `P.delay.<ms>ms`, one per distinct delay of the schedule and one for
//!   `endpoint_busy_delay_ms`: durable, no consumer; each message carries its own expiration
//!   (the jittered delay) and is dead-lettered into `P.deliveries`/`work` when it expires.
//!   Bounded by `delay_queue_length_max` with `reject-publish`: a refused retry stays in the
//!   outbox and the relay publishes it when due. A queue expires only its head, so with
//!   jitter a message can wait behind a longer-jittered one: at most `2 × jitter_percent` of
//!   its delay late.
//! - `P.dead`: durable; a copy of every dead-lettered delivery for operators' tools, bounded by
//!   `dead_letter_queue_length_max` (oldest dropped first). The store keeps every dead delivery
//!   regardless, and replays go through the store.
//!
//! Messages are persistent, published with confirms and `mandatory` (an unroutable message is
//! a failure, not a silent drop), consumed with manual acks. A message names a delivery and the
//! attempts made when it was published ([`DeliveryMessage`]); the store stays the truth, so a
//! duplicate or stale message is recognised and dropped.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::future::join_all;
use kassa_config::{NotificationSettings, RabbitMqSettings};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde::{Deserialize, Serialize};

/// AMQP's persistent delivery mode.
const PERSISTENT: u8 = 2;
/// The routing key of the work queue and of the dead-letter queue in `P.deliveries`.
const WORK_KEY: &str = "work";
const DEAD_KEY: &str = "dead";

pub type BrokerResult<T> = Result<T, BrokerError>;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("broker: no confirm within {0} ms")]
    ConfirmTimeout(u64),
    #[error("broker: the message was refused ({0})")]
    Refused(&'static str),
    #[error("broker: the connection closed")]
    Closed,
}

/// Names of the exchanges and queues under one prefix.
#[derive(Clone, Debug)]
pub struct Topology {
    prefix: String,
    /// Distinct non-zero delays with a queue of their own.
    delays_ms: BTreeSet<u64>,
    bounds: RabbitMqSettings,
}

impl Topology {
    pub fn new(settings: &NotificationSettings) -> Topology {
        let rabbitmq = &settings.rabbitmq;
        let mut delays_ms: BTreeSet<u64> = settings
            .schedule_ms
            .iter()
            .copied()
            .filter(|&ms| ms > 0)
            .collect();
        delays_ms.insert(rabbitmq.endpoint_busy_delay_ms);
        Topology {
            prefix: rabbitmq.prefix.clone(),
            delays_ms,
            bounds: rabbitmq.clone(),
        }
    }

    pub fn deliveries_exchange(&self) -> String {
        format!("{}.deliveries", self.prefix)
    }

    pub fn delays_exchange(&self) -> String {
        format!("{}.delays", self.prefix)
    }

    pub fn work_queue(&self) -> String {
        format!("{}.work", self.prefix)
    }

    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    pub fn delay_queue(&self, delay_ms: u64) -> String {
        format!("{}.delay.{delay_ms}ms", self.prefix)
    }

    /// Every queue, for operators (and tests that clean up after themselves).
    pub fn queues(&self) -> Vec<String> {
        let mut queues = vec![self.work_queue(), self.dead_queue()];
        queues.extend(self.delays_ms.iter().map(|&ms| self.delay_queue(ms)));
        queues
    }

    /// The delay queue a retry `delay_ms` from now goes to: the smallest declared delay at least
    /// as long as the schedule's nominal one (the message's own expiration says exactly when).
    fn delay_key(&self, nominal_ms: u64) -> u64 {
        self.delays_ms
            .range(nominal_ms..)
            .next()
            .or_else(|| self.delays_ms.last())
            .copied()
            .unwrap_or(nominal_ms)
    }

    /// Declares the exchanges, queues and bindings (idempotent; a queue declared before with
    /// other bounds is refused by the broker, which names it).
    pub async fn declare(&self, channel: &Channel) -> BrokerResult<()> {
        let durable_exchange = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        for exchange in [self.deliveries_exchange(), self.delays_exchange()] {
            channel
                .exchange_declare(
                    &exchange,
                    ExchangeKind::Direct,
                    durable_exchange,
                    FieldTable::default(),
                )
                .await?;
        }
        let durable_queue = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let deliveries = self.deliveries_exchange();
        channel
            .queue_declare(&self.work_queue(), durable_queue, FieldTable::default())
            .await?;
        self.bind(channel, &self.work_queue(), &deliveries, WORK_KEY)
            .await?;

        let mut dead_args = FieldTable::default();
        dead_args.insert(
            "x-max-length".into(),
            AMQPValue::LongLongInt(to_i64(self.bounds.dead_letter_queue_length_max)),
        );
        dead_args.insert("x-overflow".into(), text("drop-head"));
        channel
            .queue_declare(&self.dead_queue(), durable_queue, dead_args)
            .await?;
        self.bind(channel, &self.dead_queue(), &deliveries, DEAD_KEY)
            .await?;

        for &delay_ms in &self.delays_ms {
            let mut args = FieldTable::default();
            args.insert("x-dead-letter-exchange".into(), text(&deliveries));
            args.insert("x-dead-letter-routing-key".into(), text(WORK_KEY));
            args.insert(
                "x-max-length".into(),
                AMQPValue::LongLongInt(to_i64(self.bounds.delay_queue_length_max)),
            );
            args.insert("x-overflow".into(), text("reject-publish"));
            let queue = self.delay_queue(delay_ms);
            channel.queue_declare(&queue, durable_queue, args).await?;
            self.bind(
                channel,
                &queue,
                &self.delays_exchange(),
                &delay_ms.to_string(),
            )
            .await?;
        }
        Ok(())
    }

    async fn bind(
        &self,
        channel: &Channel,
        queue: &str,
        exchange: &str,
        key: &str,
    ) -> BrokerResult<()> {
        channel
            .queue_bind(
                queue,
                exchange,
                key,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(())
    }

    /// Messages waiting in the work queue now.
    pub async fn work_queue_length(&self, channel: &Channel) -> BrokerResult<u64> {
        let passive = QueueDeclareOptions {
            passive: true,
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let queue = channel
            .queue_declare(&self.work_queue(), passive, FieldTable::default())
            .await?;
        Ok(u64::from(queue.message_count()))
    }
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// "Make attempt `attempts + 1` of this delivery": what the work and delay queues carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryMessage {
    pub event_id: String,
    /// The delivery's `attempts` (this round) when the message was published.
    pub attempts: u32,
}

/// What the dead-letter queue keeps of a dead delivery (no event body, no secret).
#[derive(Clone, Debug, Serialize)]
pub struct DeadLetter<'a> {
    pub event_id: &'a str,
    pub merchant_id: &'a str,
    pub event_type: &'a str,
    pub attempts: u32,
    pub last_http_status: Option<u16>,
    pub last_error: Option<&'a str>,
    pub dead_at_ms: i64,
}

/// One connection with a confirming publisher channel, topology declared.
pub struct Broker {
    pub connection: Connection,
    pub channel: Channel,
    pub topology: Topology,
    confirm_timeout_ms: u64,
}

impl Broker {
    /// Connects (`name` shows in the broker's connection list), opens a confirming channel and
    /// declares the topology.
    pub async fn connect(settings: &NotificationSettings, name: &str) -> BrokerResult<Broker> {
        let properties = ConnectionProperties::default()
            .with_connection_name(LongString::from(name))
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio::current());
        let connection = Connection::connect(&settings.rabbitmq.url, properties).await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let topology = Topology::new(settings);
        topology.declare(&channel).await?;
        Ok(Broker {
            connection,
            channel,
            topology,
            confirm_timeout_ms: settings.rabbitmq.confirm_timeout_ms,
        })
    }

    pub fn connected(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }

    /// Publishes `messages` to the work queue; returns, in order, whether each was confirmed.
    pub async fn publish_due(&self, messages: &[DeliveryMessage]) -> BrokerResult<Vec<bool>> {
        let exchange = self.topology.deliveries_exchange();
        let mut confirms = Vec::with_capacity(messages.len());
        for message in messages {
            let body = serde_json::to_vec(message).unwrap_or_default();
            confirms.push(
                self.channel
                    .basic_publish(
                        &exchange,
                        WORK_KEY,
                        mandatory(),
                        &body,
                        persistent(message_id(message)),
                    )
                    .await?,
            );
        }
        let confirmed = self.confirmed(join_all(confirms)).await?;
        Ok(confirmed
            .into_iter()
            .map(|c| c.is_ok_and(|c| accepted(&c)))
            .collect())
    }

    /// Publishes `message` to the delay queue for `nominal_ms`, expiring after `wait_ms`.
    pub async fn publish_delayed(
        &self,
        message: &DeliveryMessage,
        nominal_ms: u64,
        wait_ms: u64,
    ) -> BrokerResult<()> {
        let key = self.topology.delay_key(nominal_ms).to_string();
        let body = serde_json::to_vec(message).unwrap_or_default();
        let properties =
            persistent(message_id(message)).with_expiration(ShortString::from(wait_ms.to_string()));
        let confirm = self
            .channel
            .basic_publish(
                &self.topology.delays_exchange(),
                &key,
                mandatory(),
                &body,
                properties,
            )
            .await?;
        self.settle(confirm).await
    }

    /// Publishes a dead letter's summary to the dead-letter queue.
    pub async fn publish_dead(&self, dead: &DeadLetter<'_>) -> BrokerResult<()> {
        let body = serde_json::to_vec(dead).unwrap_or_default();
        let confirm = self
            .channel
            .basic_publish(
                &self.topology.deliveries_exchange(),
                DEAD_KEY,
                mandatory(),
                &body,
                persistent(format!("{}.dead", dead.event_id)),
            )
            .await?;
        self.settle(confirm).await
    }

    async fn settle(
        &self,
        confirm: lapin::publisher_confirm::PublisherConfirm,
    ) -> BrokerResult<()> {
        let confirmation = self.confirmed(confirm).await??;
        if accepted(&confirmation) {
            Ok(())
        } else if confirmation.is_nack() {
            Err(BrokerError::Refused("the queue is full"))
        } else {
            Err(BrokerError::Refused("no queue is bound for it"))
        }
    }

    async fn confirmed<F: Future>(&self, confirms: F) -> BrokerResult<F::Output> {
        let bound = Duration::from_millis(self.confirm_timeout_ms);
        tokio::time::timeout(bound, confirms)
            .await
            .map_err(|_| BrokerError::ConfirmTimeout(self.confirm_timeout_ms))
    }

    pub async fn close(self) {
        let _ = self.connection.close(200, "kassa stopping").await;
    }
}

/// An ack without a returned message: queued by the broker.
fn accepted(confirmation: &Confirmation) -> bool {
    matches!(confirmation, Confirmation::Ack(None))
}

fn mandatory() -> BasicPublishOptions {
    BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    }
}

fn persistent(message_id: String) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_content_type(ShortString::from("application/json"))
        .with_message_id(ShortString::from(message_id))
}

fn message_id(message: &DeliveryMessage) -> String {
    format!("{}.{}", message.event_id, message.attempts)
}

/// Reconnect delays: from `reconnect_ms_min`, doubling, capped at `reconnect_ms_max`.
pub struct Reconnect {
    next_ms: u64,
    min_ms: u64,
    max_ms: u64,
}

impl Reconnect {
    pub fn new(settings: &RabbitMqSettings) -> Reconnect {
        Reconnect {
            next_ms: settings.reconnect_ms_min,
            min_ms: settings.reconnect_ms_min,
            max_ms: settings.reconnect_ms_max,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next_ms;
        self.next_ms = self.next_ms.saturating_mul(2).min(self.max_ms);
        Duration::from_millis(delay)
    }

    pub fn reset(&mut self) {
        self.next_ms = self.min_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(schedule_ms: Vec<u64>) -> NotificationSettings {
        let mut settings = NotificationSettings {
            schedule_ms,
            ..NotificationSettings::default()
        };
        settings.rabbitmq.prefix = "p".into();
        settings.rabbitmq.endpoint_busy_delay_ms = 1_000;
        settings
    }

    #[test]
    fn one_delay_queue_per_distinct_delay_and_retries_go_to_the_next_one_up() {
        let topology = Topology::new(&settings(vec![0, 200, 400, 400, 60_000]));
        assert_eq!(
            topology.queues(),
            [
                "p.work",
                "p.dead",
                "p.delay.200ms",
                "p.delay.400ms",
                "p.delay.1000ms",
                "p.delay.60000ms"
            ]
        );
        assert_eq!(topology.delay_key(200), 200);
        assert_eq!(topology.delay_key(400), 400);
        assert_eq!(topology.delay_key(1), 200);
        assert_eq!(topology.delay_key(90_000), 60_000);
    }

    #[test]
    fn reconnects_back_off_to_the_cap_and_reset() {
        let mut reconnect = Reconnect::new(&RabbitMqSettings {
            reconnect_ms_min: 100,
            reconnect_ms_max: 350,
            ..RabbitMqSettings::default()
        });
        let delays: Vec<u64> = (0..4)
            .map(|_| reconnect.next_delay().as_millis() as u64)
            .collect();
        assert_eq!(delays, [100, 200, 350, 350]);
        reconnect.reset();
        assert_eq!(reconnect.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn messages_round_trip_and_name_their_attempt() {
        let message = DeliveryMessage {
            event_id: "evt_1".into(),
            attempts: 2,
        };
        let body = serde_json::to_vec(&message).unwrap();
        assert_eq!(
            serde_json::from_slice::<DeliveryMessage>(&body).unwrap(),
            message
        );
        assert_eq!(message_id(&message), "evt_1.2");
    }
}
