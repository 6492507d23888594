//! The notifier: delivers merchant-facing events to merchants' webhook endpoints from the
//! durable outbox (DESIGN.md §4 "Merchant callbacks"), at least once, signed, with backoff,
//! until delivered or dead-lettered.
//!
//! ```text
//! notifier (one_for_all)
//! ├── outbox      placeholder: the order actors write the outbox rows in their own appends
//! │               and wake the dispatcher (`App::notifier_due`); a RabbitMQ relay goes here
//! └── dispatcher  NotifierDuty → `Dispatcher::run` on the I/O runtime
//!                 └── one task per attempt in flight (a JoinSet the loop owns)
//! ```
//!
//! # The loop
//! `store.due_deliveries(now, batch_max)`; for each due delivery the merchant is looked up
//! (`App::merchants`): no webhook endpoint → `NoEndpoint`; otherwise, if its endpoint has fewer
//! than `endpoint_inflight_max` attempts in flight and all endpoints fewer than `inflight_max`,
//! an attempt task is spawned. A delivery whose endpoint is at its bound is skipped and picked
//! up on a later round, so a slow or hanging endpoint only ever holds its own slots. Each task
//! POSTs (`send.rs`), then records the attempt and the delivery's next step in one store write
//! (`schedule.rs`: delivered, retry at `now + schedule[attempts] ± jitter`, or dead), and only
//! then frees its slot, so the loop never sends a delivery twice at once.
//!
//! The loop sleeps until the earliest `next_attempt_ms`, at most `poll_interval_ms`, and wakes
//! early when an order appended events, an operator replayed, a merchant asked a resend, or an
//! attempt finished. `next_attempt_ms` is durable: after a crash or restart the loop resumes
//! where the store says; an attempt whose result was not recorded is sent again (at least once:
//! receivers dedupe by event id).
//!
//! # Head-of-line blocking
//! Deliveries come oldest due first. Attempts in flight still count as due, so the scan reads
//! `batch_max` plus the attempts in flight. If a full scan found nothing it could start (every
//! row waits for a saturated endpoint), the loop also walks the newest pending deliveries (at
//! most [`STARVED_SCAN_ROWS_MAX`]) for other endpoints' due ones: a flood for one hanging
//! endpoint does not starve the rest.

pub mod broker;
mod consumer;
mod relay;
mod schedule;
pub mod send;
mod slots;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use kassa_config::NotificationSettings;
use kassa_store::{
    AttemptOutcome, AttemptRecord, DeliveryFilter, DeliveryRecord, DeliveryStatus, EventRecord,
    ListQuery,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::App;
use crate::merchants::Merchant;
use crate::tree::{Duty, Worker};
use slots::Slots;

pub use consumer::run as rabbitmq_consumer;
pub use relay::run as rabbitmq_relay;
pub use schedule::after_failure;

/// Rows the starvation scan reads, in pages of [`LIST_PAGE_MAX`].
pub const STARVED_SCAN_ROWS_MAX: u32 = 500;
const LIST_PAGE_MAX: u32 = 100;
/// How long a graceful stop waits for attempts in flight before abandoning them (they are
/// sent again after the restart).
pub(super) const DRAIN_MS_MAX: u64 = 3_000;
/// How often the worker checks that its loop is still running.
const LOOP_CHECK_EVERY_MS: u64 = 500;
/// The pause after a store error before the loop tries again.
const STORE_RETRY_MS: u64 = 500;

/// Sleeps `delay`, or less if `stop` turns true (the broker loops' reconnect backoff).
async fn sleep_unless_stopped(stop: &mut watch::Receiver<bool>, delay: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = stop.changed() => {}
    }
}

/// One of the notifier's loops: runs until the receiver turns true, then drains.
pub type NotifierLoop =
    fn(Arc<App>, watch::Receiver<bool>) -> futures::future::BoxFuture<'static, ()>;

/// The embedded transport's `dispatcher` loop.
pub fn embedded_dispatcher(
    app: Arc<App>,
    stop: watch::Receiver<bool>,
) -> futures::future::BoxFuture<'static, ()> {
    Box::pin(Dispatcher::new(app).run(stop))
}

/// A notifier worker's duty: runs its loop ([`embedded_dispatcher`], [`relay::run`] or
/// [`consumer::run`]) on the I/O runtime, reports a crash if the loop ends by itself, and
/// stops it (draining attempts in flight) on shutdown.
pub struct NotifierDuty {
    app: Arc<App>,
    run: NotifierLoop,
    stop: Option<watch::Sender<bool>>,
    task: Option<JoinHandle<()>>,
}

impl NotifierDuty {
    pub fn new(app: Arc<App>, run: NotifierLoop) -> NotifierDuty {
        NotifierDuty {
            app,
            run,
            stop: None,
            task: None,
        }
    }
}

impl Duty for NotifierDuty {
    fn started(&mut self, ctx: &mut Context<Worker>) {
        let (stop, stopped) = watch::channel(false);
        self.task = Some(self.app.io.spawn((self.run)(self.app.clone(), stopped)));
        self.stop = Some(stop);
        ctx.run_interval(Duration::from_millis(LOOP_CHECK_EVERY_MS), |worker, ctx| {
            let ended = worker
                .duty_mut::<NotifierDuty>()
                .and_then(|duty| duty.task.as_ref().map(JoinHandle::is_finished))
                .unwrap_or(false);
            if ended {
                worker.fail(ctx, "the notifier loop ended unexpectedly".into());
            }
        });
    }

    fn shutdown(&mut self, ctx: &mut Context<Worker>) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        match self.task.take() {
            Some(task) => {
                let drained = async move {
                    let _ = task.await;
                };
                ctx.spawn(
                    actix::fut::wrap_future::<_, Worker>(drained)
                        .map(|(), _worker, ctx: &mut Context<Worker>| ctx.stop()),
                );
            }
            None => ctx.stop(),
        }
    }
}

impl Drop for NotifierDuty {
    /// A crashed or restarted worker takes its loop (and the loop's attempts) with it.
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The loop's own state: only the loop touches it, so no locks.
pub struct Dispatcher {
    app: Arc<App>,
    settings: NotificationSettings,
    client: send::WebhookClient,
    jitter: schedule::Jitter,
    slots: Slots,
}

/// What one pass over the due deliveries did.
#[derive(Default)]
struct Pass {
    /// Rows the store returned.
    read: usize,
    /// Attempts (or `NoEndpoint` records) started.
    started: usize,
    /// Due rows left for a saturated endpoint.
    waiting: usize,
}

impl Dispatcher {
    pub fn new(app: Arc<App>) -> Dispatcher {
        let settings = app.settings.notifications.clone();
        let seed = crate::crypto::random_bytes::<8>()
            .map(u64::from_le_bytes)
            .unwrap_or_else(|_| app.now_ms() as u64);
        Dispatcher {
            client: send::client(settings.endpoint_inflight_max),
            jitter: schedule::Jitter::seeded(seed),
            app,
            settings,
            slots: Slots::default(),
        }
    }

    /// Delivers until `stop` turns true, then waits (a little) for the attempts in flight.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let poll = Duration::from_millis(self.settings.poll_interval_ms);
        let wake = self.app.notifier_due.clone();
        loop {
            if *stop.borrow() {
                break;
            }
            let wait = match self.pass().await {
                // Progress: look again at once (more may be due behind what was started).
                Ok(pass) if pass.started > 0 => Duration::ZERO,
                Ok(_) => self.until_next_due(poll).await,
                Err(error) => {
                    tracing::warn!(%error, "notifier: reading due deliveries failed");
                    Duration::from_millis(STORE_RETRY_MS)
                }
            };
            if wait.is_zero() {
                // Reap whatever finished meanwhile, without waiting.
                self.slots.reap();
                continue;
            }
            tokio::select! {
                _ = wake.notified() => {}
                Some(()) = self.slots.join_next(), if !self.slots.is_empty() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
        }
        self.drain().await;
    }

    /// How long to sleep: until the earliest pending delivery falls due, at most `poll`. A
    /// delivery due already is one waiting for a slot: a finished attempt wakes the loop.
    async fn until_next_due(&self, poll: Duration) -> Duration {
        let now = self.app.now_ms();
        match self.app.store.next_delivery_due().await {
            Ok(Some(due_ms)) if due_ms > now => {
                poll.min(Duration::from_millis((due_ms - now) as u64))
            }
            Ok(_) => poll,
            Err(error) => {
                tracing::warn!(%error, "notifier: reading the next due delivery failed");
                Duration::from_millis(STORE_RETRY_MS).min(poll)
            }
        }
    }

    /// One scan of the due deliveries: start what the bounds allow.
    async fn pass(&mut self) -> Result<Pass, kassa_store::StoreError> {
        let mut pass = Pass::default();
        if self.slots.len() >= self.settings.inflight_max {
            return Ok(pass);
        }
        let now = self.app.now_ms();
        // Rows in flight are still due: read past them.
        let limit = self
            .settings
            .batch_max
            .saturating_add(u32::try_from(self.slots.len()).unwrap_or(u32::MAX));
        let due = self.app.store.due_deliveries(now, limit).await?;
        pass.read = due.len();
        for (delivery, event) in due {
            if self.slots.len() >= self.settings.inflight_max {
                break;
            }
            self.consider(delivery, event, &mut pass).await;
        }
        let full = pass.read == limit as usize;
        if full && pass.started == 0 && pass.waiting > 0 {
            self.starved_scan(now, &mut pass).await?;
        }
        Ok(pass)
    }

    /// Starts `delivery` if nothing holds it back.
    async fn consider(&mut self, delivery: DeliveryRecord, event: EventRecord, pass: &mut Pass) {
        if self.slots.holds_event(&delivery.event_id) {
            return;
        }
        let merchant = match self.app.merchants.get(&delivery.merchant_id).await {
            Ok(merchant) => merchant,
            Err(error) => {
                tracing::warn!(%error, merchant = %delivery.merchant_id,
                    "notifier: merchant lookup failed; the delivery waits");
                return;
            }
        };
        let endpoint = merchant.as_ref().and_then(|m| m.webhook_url.clone());
        let Some(endpoint) = endpoint else {
            let event_id = delivery.event_id.clone();
            self.spawn(
                &event_id,
                None,
                record_no_endpoint(self.app.clone(), delivery),
            );
            pass.started += 1;
            return;
        };
        if self.slots.at_endpoint(&endpoint) >= self.settings.endpoint_inflight_max {
            pass.waiting += 1;
            return;
        }
        // `merchant` is `Some` here: `endpoint` came from it.
        let Some(merchant) = merchant else { return };
        let attempt = Attempt {
            app: self.app.clone(),
            client: self.client.clone(),
            endpoint: endpoint.clone(),
            merchant,
            delivery,
            event,
            random: self.jitter.next_u64(),
        };
        let event_id = attempt.delivery.event_id.clone();
        self.spawn(&event_id, Some(endpoint), attempt.run());
        pass.started += 1;
    }

    /// Every due row of a full scan waited for a saturated endpoint: look among the newest
    /// pending deliveries for other endpoints' due ones (bounded).
    async fn starved_scan(
        &mut self,
        now: kassa_store::UnixMs,
        pass: &mut Pass,
    ) -> Result<(), kassa_store::StoreError> {
        let filter = DeliveryFilter {
            status: Some(DeliveryStatus::Pending),
            ..DeliveryFilter::default()
        };
        let mut after = None;
        let mut read = 0;
        while read < STARVED_SCAN_ROWS_MAX && self.slots.len() < self.settings.inflight_max {
            let query = ListQuery {
                limit: LIST_PAGE_MAX,
                starting_after: after.take(),
                ending_before: None,
            };
            let page = self
                .app
                .store
                .list_deliveries(filter.clone(), query)
                .await?;
            read += page.rows.len() as u32;
            after = page.rows.last().map(|d| d.event_id.clone());
            for delivery in page.rows {
                if delivery.next_attempt_ms > now || self.slots.holds_event(&delivery.event_id) {
                    continue;
                }
                if let Some(event) = self.app.store.get_event(None, &delivery.event_id).await? {
                    self.consider(delivery, event, pass).await;
                }
            }
            if !page.has_more {
                break;
            }
        }
        if pass.started > 0 {
            tracing::info!(
                started = pass.started,
                "notifier: started deliveries past a saturated endpoint's backlog"
            );
        }
        Ok(())
    }

    fn spawn(
        &mut self,
        event_id: &str,
        endpoint: Option<String>,
        work: impl Future<Output = ()> + Send + 'static,
    ) {
        self.slots
            .spawn(&self.app.io, Some(event_id), endpoint, work);
    }

    /// Waits (a little) for the attempts in flight; the rest are abandoned (still due, so
    /// sent again after the restart).
    async fn drain(&mut self) {
        let bound = Duration::from_millis(self.settings.webhook_timeout_ms.min(DRAIN_MS_MAX));
        self.slots.drain(bound).await;
    }
}

async fn record_no_endpoint(app: Arc<App>, delivery: DeliveryRecord) {
    // A failed record leaves the delivery due: it is looked at again.
    let _ = try_record_no_endpoint(&app, &delivery).await;
}

async fn try_record_no_endpoint(
    app: &App,
    delivery: &DeliveryRecord,
) -> Result<(), kassa_store::StoreError> {
    let attempt = AttemptRecord {
        event_id: delivery.event_id.clone(),
        attempt: delivery.attempts.saturating_add(1),
        at_ms: app.now_ms(),
        http_status: None,
        latency_ms: 0,
        error: Some("the merchant has no webhook endpoint".into()),
        response_excerpt: String::new(),
    };
    let recorded = app
        .store
        .record_attempt(attempt, AttemptOutcome::NoEndpoint)
        .await;
    if let Err(error) = &recorded {
        tracing::warn!(%error, event = %delivery.event_id, "notifier: recording no endpoint failed");
    }
    recorded
}

/// One attempt to deliver one event.
struct Attempt {
    app: Arc<App>,
    client: send::WebhookClient,
    endpoint: String,
    merchant: Arc<Merchant>,
    delivery: DeliveryRecord,
    event: EventRecord,
    random: u64,
}

impl Attempt {
    async fn run(self) {
        // A failed record leaves the delivery due: it is sent again (at least once).
        let _ = self.send_and_record().await;
    }

    /// POSTs, then records the attempt and what it did to the delivery; returns that.
    async fn send_and_record(self) -> Result<AttemptOutcome, kassa_store::StoreError> {
        let settings = &self.app.settings.notifications;
        let number = self.number().await;
        let at_ms = self.app.now_ms();
        let sent = send::post(
            &self.client,
            &self.endpoint,
            &self.merchant.webhook_secret,
            &self.event,
            at_ms.div_euclid(1_000),
            Duration::from_millis(settings.webhook_timeout_ms),
        )
        .await;
        let round_attempts = self.delivery.attempts.saturating_add(1);
        let outcome = if sent.delivered() {
            AttemptOutcome::Delivered
        } else {
            after_failure(
                &settings.schedule_ms,
                round_attempts,
                settings.jitter_percent,
                self.app.now_ms(),
                self.random,
            )
        };
        let counters = &self.app.metrics.webhooks;
        counters.count(&outcome);
        // Delivered at debug (one per event, counted by kassa_webhook_attempts_total); every
        // failure at info, for operators.
        if matches!(outcome, AttemptOutcome::Delivered) {
            tracing::debug!(event = %self.event.id, merchant = %self.merchant.id,
                attempt = number, status = ?sent.http_status, latency_ms = sent.latency_ms,
                "webhook delivered");
        } else {
            tracing::info!(event = %self.event.id, merchant = %self.merchant.id,
                attempt = number, status = ?sent.http_status, latency_ms = sent.latency_ms,
                error = ?sent.error, outcome = ?outcome, "webhook attempt failed");
        }
        let record = AttemptRecord {
            event_id: self.event.id.clone(),
            attempt: number,
            at_ms,
            http_status: sent.http_status,
            latency_ms: sent.latency_ms,
            error: sent.error,
            response_excerpt: sent.response_excerpt,
        };
        match self.app.store.record_attempt(record, outcome.clone()).await {
            Ok(()) => Ok(outcome),
            Err(error) => {
                tracing::warn!(%error, event = %self.event.id, "notifier: recording an attempt failed");
                Err(error)
            }
        }
    }

    /// The attempt's number over the delivery's whole life (replays continue the count).
    async fn number(&self) -> u32 {
        // Every recorded attempt leaves an HTTP status or an error on the delivery, and a
        // replay keeps them: a delivery with neither was never attempted, and this is its
        // first attempt (no read needed — the common case, once per event).
        let never_attempted = self.delivery.attempts == 0
            && self.delivery.last_http_status.is_none()
            && self.delivery.last_error.is_none();
        if never_attempted {
            return 1;
        }
        match self.app.store.delivery_attempts(&self.event.id).await {
            Ok(attempts) => attempts
                .iter()
                .map(|a| a.attempt)
                .max()
                .unwrap_or(0)
                .saturating_add(1),
            Err(_) => self.delivery.attempts.saturating_add(1),
        }
    }
}
