//! `PaymentOrder`: one actor per payment order, the only writer of that order's state.
//!
//! Commands for one order are serialised by this actor's mailbox, not by locks: every
//! handler that changes state is atomic (the mailbox pauses until the journal append is
//! durable), so two refunds racing on one payment are decided one after the other.
//!
//! Life of a command: `decide` (pure) → events → `apply` to a copy → append the events and
//! the new projection rows to the store (group-committed with other orders' appends) → only
//! then adopt the new state, start the channel calls the events ask for, and answer.
//!
//! Channel calls run beside the mailbox (the order keeps serving reads and other commands);
//! their answers come back as [`Outcome`] messages and are journaled the same way. An answer
//! that never comes (timeout, crash) is *re-driven*: the same call with the same idempotency
//! key, or for a charge a `resolve` that either finds it or blocks the key. On activation an
//! order whose journal shows work still owed by the channel re-drives it at once.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix::prelude::*;
use kassa_store::{Append, AppendError, JournalEntry, PaymentRow, RefundRow, Store, StoreError};
use kassa_supervision::{ExitGuard, Shutdown};
use tokio::sync::oneshot;

use crate::channel_port::{ChannelPort, ChannelPorts, Instrument};
use crate::clock::Clock;
use crate::money::Money;
use crate::payment::{
    ChargeOutcome, Command, Event, NewPayment, NewRefund, Payment, PaymentStatus, RefundStatus,
    Rejection, apply, decide,
};
use crate::views::{payment_json, refund_json};

mod channel_work;

/// Callers waiting for one order's outcome; past it they get the current state at once.
const WAITERS_MAX: usize = 1_024;

/// What every order actor shares.
pub struct OrderDeps {
    pub store: Arc<dyn Store>,
    /// The channel of each payment method.
    pub channels: Arc<ChannelPorts>,
    pub clock: Arc<dyn Clock>,
    pub mailbox_capacity: usize,
    /// An order idle this long passivates (`orders.order_idle_ms`).
    pub idle_ms: u64,
    /// Delays before asking a channel again (`orders.redrive_schedule_ms`); the last repeats.
    pub redrive_schedule_ms: Vec<u64>,
    /// `orders.redrive_attempts_max`.
    pub redrive_attempts_max: u32,
    /// Told whenever an append carried merchant events (the notifier delivers them).
    pub events_appended: Arc<tokio::sync::Notify>,
    /// Other nodes may append to this order's journal (cluster mode): before deciding or
    /// answering, the actor reads the journal's tail and catches up, so it never decides on a
    /// state another node has moved past. Appends still carry the expected seq; a race lost
    /// at the append is caught up and decided once more.
    pub shared_journal: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("merchant_order_id is already used by payment {existing_payment_id}")]
    DuplicateMerchantOrderId { existing_payment_id: String },
    #[error("the order was changed concurrently; retry")]
    Conflict,
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// The state after a command, and (if asked for) a way to wait until its outcome is known.
#[derive(Debug)]
pub struct OrderReply {
    pub payment: Payment,
    pub refund_id: Option<String>,
    pub settled: Option<oneshot::Receiver<Payment>>,
}

/// Create the order (or, for an existing id asked by the same request, return it).
#[derive(Message)]
#[rtype(result = "Result<OrderReply, OrderError>")]
pub struct Create {
    pub new: NewPayment,
    /// What the channel needs to take the money (card data, an account), never journaled.
    pub instrument: Instrument,
    pub settle: bool,
    pub admission: Option<crate::channel_port::Admission>,
}

#[derive(Message)]
#[rtype(result = "Result<OrderReply, OrderError>")]
pub struct Capture {
    pub merchant_id: String,
    pub amount: Option<Money>,
    pub settle: bool,
    /// The request's name when it came with an Idempotency-Key (see `Command::Keyed`).
    pub request: Option<String>,
}

#[derive(Message)]
#[rtype(result = "Result<OrderReply, OrderError>")]
pub struct Cancel {
    pub merchant_id: String,
    pub settle: bool,
    /// The request's name when it came with an Idempotency-Key (see `Command::Keyed`).
    pub request: Option<String>,
}

/// The card pre-authorisation commands that undo: `complete_revert` and `reversal`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UndoKind {
    CompleteRevert,
    Reversal,
}

#[derive(Message)]
#[rtype(result = "Result<OrderReply, OrderError>")]
pub struct Undo {
    pub merchant_id: String,
    pub kind: UndoKind,
    pub settle: bool,
    /// The request's name when it came with an Idempotency-Key (see `Command::Keyed`).
    pub request: Option<String>,
}

#[derive(Message)]
#[rtype(result = "Result<OrderReply, OrderError>")]
pub struct RefundPayment {
    pub merchant_id: String,
    pub refund: NewRefund,
    pub settle: bool,
}

/// The current state; `merchant_id: None` is the operators' view.
#[derive(Message)]
#[rtype(result = "Result<Payment, OrderError>")]
pub struct Get {
    pub merchant_id: Option<String>,
}

/// A channel's answer, journaled like any command; `answered` (if any) gets the order's state
/// once it is (a confirm waits for exactly that).
#[derive(Message)]
#[rtype(result = "()")]
struct Outcome(Command, Option<oneshot::Sender<Payment>>);

/// Asks the order to passivate: at once if nothing is in flight, else as soon as it is idle.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Passivate;

/// Channel work an order may have in flight; at most one call per item at a time.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Work {
    Charge,
    Capture,
    Cancel,
    Uncapture,
    Reverse,
    Refund(String),
}

/// What a waiting caller waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Settle {
    Charge,
    Pending,
    Refund(String),
}

impl Settle {
    fn is_met(&self, p: &Payment) -> bool {
        match self {
            Settle::Charge => p.status != PaymentStatus::Processing,
            Settle::Pending => p.pending.is_none(),
            Settle::Refund(id) => p
                .refund(id)
                .is_none_or(|r| r.status != RefundStatus::Pending),
        }
    }
}

pub struct PaymentOrder {
    id: String,
    deps: Arc<OrderDeps>,
    state: Option<Payment>,
    load_failed: bool,
    waiters: Vec<(Settle, oneshot::Sender<Payment>)>,
    in_flight: HashSet<Work>,
    redrive_attempts: u32,
    redrive_scheduled: bool,
    /// Tells the shard (its supervisor) how this actor ended: a panic, or a normal exit.
    guard: Option<ExitGuard>,
    last_active: std::time::Instant,
    passivate_requested: bool,
    passivated: bool,
    /// Messages handed an address by the shard and not yet handled (the shard counts up, the
    /// handlers count down). An order never passivates while this is above zero.
    announced: Arc<AtomicUsize>,
    /// An append of this order is on its way to the journal. Only one may be: each carries
    /// the seq the previous one produced.
    appending: bool,
}

impl PaymentOrder {
    /// The counter of announced messages, for the shard to count up on every activation.
    pub fn announced(&self) -> Arc<AtomicUsize> {
        self.announced.clone()
    }

    /// A message the shard announced has arrived.
    fn arrived(&mut self) {
        self.last_active = std::time::Instant::now();
        // Saturating: a message sent without the shard (tests, operators) was never counted.
        let _ = self
            .announced
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    pub fn new(id: String, deps: Arc<OrderDeps>, guard: Option<ExitGuard>) -> Self {
        PaymentOrder {
            id,
            deps,
            state: None,
            load_failed: false,
            waiters: Vec::new(),
            in_flight: HashSet::new(),
            redrive_attempts: 0,
            redrive_scheduled: false,
            guard,
            last_active: std::time::Instant::now(),
            passivate_requested: false,
            passivated: false,
            announced: Arc::new(AtomicUsize::new(0)),
            appending: false,
        }
    }
}

/// Rebuilds an order from its journal.
pub fn replay(entries: &[JournalEntry]) -> Result<Option<Payment>, String> {
    replay_onto(None, entries)
}

/// `state` with `entries` (the journal entries after its seq) applied.
fn replay_onto(
    mut state: Option<Payment>,
    entries: &[JournalEntry],
) -> Result<Option<Payment>, String> {
    for entry in entries {
        let event: Event = serde_json::from_str(&entry.body)
            .map_err(|e| format!("entry {} does not parse: {e}", entry.seq))?;
        state = Some(apply(state, &event, entry.seq, entry.at_ms).map_err(|e| e.to_string())?);
    }
    Ok(state)
}

impl Actor for PaymentOrder {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.deps.mailbox_capacity);
        let load = self.deps.store.load_journal(&self.id);
        // `wait`: no message is handled before the journal is replayed.
        let check_every = Duration::from_millis((self.deps.idle_ms / 4).clamp(10, 5_000));
        ctx.run_interval(check_every, |act, ctx| act.maybe_passivate(ctx));
        ctx.wait(load.into_actor(self).map(|loaded, act, ctx| {
            let state = loaded
                .map_err(|e| e.to_string())
                .and_then(|entries| replay(&entries));
            match state {
                Ok(state) => {
                    let owed = state.as_ref().is_some_and(Payment::awaits_channel);
                    act.state = state;
                    if owed {
                        act.redrive(ctx);
                    }
                }
                Err(reason) => {
                    tracing::error!(order_id = %act.id, %reason, "order cannot be loaded");
                    act.load_failed = true;
                    ctx.stop();
                }
            }
        }));
    }

    fn stopping(&mut self, _ctx: &mut Context<Self>) -> Running {
        // The shard may have handed out this address after the decision to passivate (same
        // thread, so before this runs): stay for that message.
        if self.passivated && self.announced.load(Ordering::Acquire) > 0 {
            self.passivated = false;
            return Running::Continue;
        }
        Running::Stop
    }

    // `stopped` is left to actix: it also runs while a panic unwinds, where anything that
    // could panic again would abort the process. The `ExitGuard` reports the exit on drop.
}

type Reply = Result<OrderReply, OrderError>;

fn ready<T: 'static>(value: T) -> ResponseActFuture<PaymentOrder, T> {
    Box::pin(fut::ready(value))
}

impl PaymentOrder {
    /// The channel of this order's payment method.
    fn port(&self) -> Arc<dyn ChannelPort> {
        let method = self
            .state
            .as_ref()
            .map_or(crate::payment::Method::Card, |p| p.method);
        self.deps.channels.get(method)
    }

    fn unavailable(&self) -> Option<OrderError> {
        self.load_failed
            .then(|| OrderError::Unavailable("the order could not be loaded".into()))
    }

    /// Owned by someone else → as good as absent.
    fn check_owner(&self, merchant_id: &str) -> Result<(), OrderError> {
        match &self.state {
            Some(p) if p.merchant_id == merchant_id => Ok(()),
            Some(_) | None => Err(Rejection::NotFound.into()),
        }
    }

    /// Something still needs this actor in memory: a channel call, a waiting caller, a re-drive.
    fn busy(&mut self) -> bool {
        self.waiters.retain(|(_, tx)| !tx.is_closed());
        self.appending
            || !self.in_flight.is_empty()
            || !self.waiters.is_empty()
            || self.redrive_scheduled
            || self.announced.load(Ordering::Acquire) > 0
    }

    /// Stops (passivates) when idle long enough or asked to, and nothing is in flight. Its
    /// state is all in the journal; the next message starts a fresh actor that replays it.
    fn maybe_passivate(&mut self, ctx: &mut Context<Self>) {
        if self.passivated || self.busy() {
            return;
        }
        let idle = self.last_active.elapsed() >= Duration::from_millis(self.deps.idle_ms);
        if self.passivate_requested || idle {
            self.passivated = true;
            ctx.stop();
        }
    }

    /// Decide, journal durably, adopt. Resolves to the new state. With a shared journal the
    /// actor first catches up with what other nodes appended, and a race lost at the append
    /// (another node appended meanwhile) is caught up and decided once more.
    fn execute(
        &mut self,
        command: Command,
    ) -> ResponseActFuture<Self, Result<Payment, OrderError>> {
        if !self.deps.shared_journal || self.state.is_none() {
            return self.decide_and_journal(command);
        }
        let again = command.clone();
        let first = self.caught_up(move |act, _ctx| act.decide_and_journal(command));
        Box::pin(first.then(move |result, act, _ctx| match result {
            Err(OrderError::Conflict) => {
                act.caught_up(move |act, _ctx| act.decide_and_journal(again))
            }
            other => ready(other),
        }))
    }

    /// Reads the journal, adopts what other nodes appended past this actor's seq, then runs
    /// `then`. A journal this actor cannot apply fails the call (and stops the actor, which
    /// reloads on next use).
    fn caught_up<T: 'static>(
        &mut self,
        then: impl FnOnce(
            &mut Self,
            &mut Context<Self>,
        ) -> ResponseActFuture<Self, Result<T, OrderError>>
        + 'static,
    ) -> ResponseActFuture<Self, Result<T, OrderError>> {
        let load = self.deps.store.load_journal(&self.id);
        Box::pin(load.into_actor(self).then(move |loaded, act, ctx| {
            let entries = match loaded {
                Ok(entries) => entries,
                Err(e) => {
                    return ready(Err(OrderError::Unavailable(format!(
                        "the journal could not be read: {e}"
                    ))));
                }
            };
            let seq = act.state.as_ref().map_or(0, |p| p.seq);
            let newer: Vec<JournalEntry> = entries.into_iter().filter(|e| e.seq > seq).collect();
            if !newer.is_empty() {
                match replay_onto(act.state.take(), &newer) {
                    Ok(state) => {
                        act.state = state;
                        act.settle_waiters();
                    }
                    Err(reason) => {
                        tracing::error!(order_id = %act.id, %reason, "order cannot catch up");
                        act.load_failed = true;
                        ctx.stop();
                        return ready(Err(OrderError::Internal(reason)));
                    }
                }
            }
            then(act, ctx)
        }))
    }

    fn decide_and_journal(
        &mut self,
        command: Command,
    ) -> ResponseActFuture<Self, Result<Payment, OrderError>> {
        self.last_active = std::time::Instant::now();
        let events = match decide(self.state.as_ref(), &command) {
            Ok(events) => events,
            Err(rejection) => return ready(Err(rejection.into())),
        };
        let Some(current) = self.state.clone().filter(|_| events.is_empty()).map(Ok) else {
            return self.journal(events);
        };
        ready(current)
    }

    fn journal(
        &mut self,
        events: Vec<Event>,
    ) -> ResponseActFuture<Self, Result<Payment, OrderError>> {
        if self.appending {
            // Handlers that journal are atomic and outcomes arrive through the mailbox (see
            // `PaymentOrder::outcome`), so this is a bug: refuse rather than race our own seq.
            tracing::error!(order_id = %self.id, "a second append while one is in flight; refused");
            return ready(Err(OrderError::Unavailable(
                "the order is busy journaling; retry".into(),
            )));
        }
        let at_ms = self.deps.clock.now_ms();
        let expected_seq = self.state.as_ref().map_or(0, |p| p.seq);
        let mut next = self.state.clone();
        let mut entries = Vec::with_capacity(events.len());
        for event in &events {
            let seq = next.as_ref().map_or(1, |p| p.seq + 1);
            next = match apply(next, event, seq, at_ms) {
                Ok(p) => Some(p),
                Err(corrupt) => return ready(Err(OrderError::Internal(corrupt.to_string()))),
            };
            let body = match serde_json::to_string(event) {
                Ok(body) => body,
                Err(e) => return ready(Err(OrderError::Internal(e.to_string()))),
            };
            entries.push(JournalEntry {
                seq,
                kind: event.kind().to_string(),
                body,
                at_ms,
            });
        }
        let Some(next) = next else {
            return ready(Err(OrderError::Internal("no event to journal".into())));
        };
        let payment = payment_row(&next);
        // The outbox: what the merchant is told, durable with the transition itself.
        let merchant_events =
            crate::events::merchant_events(&next, &payment.body, &events, expected_seq + 1, at_ms);
        let append = Append {
            order_id: self.id.clone(),
            expected_seq,
            entries,
            payment: Some(payment),
            refunds: refund_rows(&next, &events),
            events: merchant_events,
        };
        let raised_events = !append.events.is_empty();
        let write = self.deps.store.append(append);
        self.appending = true;
        Box::pin(write.into_actor(self).map(move |written, act, ctx| {
            act.appending = false;
            act.adopt_append(written, next, &events, raised_events, ctx)
        }))
    }

    /// What a journal append's answer means for this order: on success the new state is
    /// adopted and its channel work started.
    fn adopt_append(
        &mut self,
        written: Result<(), AppendError>,
        next: Payment,
        events: &[Event],
        raised_events: bool,
        ctx: &mut Context<Self>,
    ) -> Result<Payment, OrderError> {
        match written {
            Ok(()) => {
                if raised_events {
                    self.deps.events_appended.notify_one();
                }
                self.state = Some(next.clone());
                self.start_channel_work(events, ctx);
                self.settle_waiters();
                Ok(next)
            }
            Err(AppendError::DuplicateMerchantOrderId {
                existing_payment_id,
            }) => Err(OrderError::DuplicateMerchantOrderId {
                existing_payment_id,
            }),
            Err(AppendError::SeqConflict {
                expected_seq,
                current_seq,
                ..
            }) => {
                tracing::warn!(order_id = %self.id, expected_seq, current_seq,
                            "journal moved past this order's copy; not appended");
                // Another writer got there first: this copy is stale. With a shared
                // journal `execute` catches up and decides again; otherwise the
                // actor reloads on next use.
                if !self.deps.shared_journal {
                    ctx.stop();
                }
                Err(OrderError::Conflict)
            }
            Err(AppendError::Store(StoreError::Overloaded)) => {
                Err(OrderError::Unavailable("the journal is overloaded".into()))
            }
            Err(AppendError::Store(e)) => {
                tracing::error!(order_id = %self.id, error = %e, "journal append failed");
                Err(OrderError::Unavailable("the journal is unavailable".into()))
            }
        }
    }

    /// The reply to a command, with a receiver if the caller wants to wait for `settle`.
    fn reply(
        &mut self,
        payment: Payment,
        settle: Settle,
        wait: bool,
        refund_id: Option<String>,
    ) -> OrderReply {
        let settled = if wait && !settle.is_met(&payment) && self.waiters.len() < WAITERS_MAX {
            let (tx, rx) = oneshot::channel();
            self.waiters.push((settle, tx));
            Some(rx)
        } else {
            None
        };
        OrderReply {
            payment,
            refund_id,
            settled,
        }
    }

    fn settle_waiters(&mut self) {
        let Some(p) = &self.state else { return };
        let (met, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|(settle, _)| settle.is_met(p));
        self.waiters = waiting;
        for (_, tx) in met {
            // A caller that stopped waiting has dropped its receiver; nothing to tell it.
            let _ = tx.send(p.clone());
        }
    }
}

fn payment_row(p: &Payment) -> PaymentRow {
    PaymentRow {
        id: p.id.clone(),
        merchant_id: p.merchant_id.clone(),
        merchant_order_id: p.merchant_order_id.clone(),
        status: p.status.as_str().to_string(),
        created_ms: p.created_ms,
        body: payment_json(p),
        awaiting_channel: p.awaits_channel(),
    }
}

fn refund_rows(p: &Payment, events: &[Event]) -> Vec<RefundRow> {
    let touched = events.iter().filter_map(|event| match event {
        Event::RefundRequested { id, .. } => Some(id),
        Event::RefundSucceeded { refund_id, .. } | Event::RefundFailed { refund_id, .. } => {
            Some(refund_id)
        }
        _ => None,
    });
    touched
        .filter_map(|id| p.refund(id))
        .map(|r| RefundRow {
            id: r.id.clone(),
            payment_id: p.id.clone(),
            merchant_id: p.merchant_id.clone(),
            status: r.status.as_str().to_string(),
            created_ms: r.created_ms,
            body: refund_json(p, r),
        })
        .collect()
}

impl Handler<Create> for PaymentOrder {
    type Result = AtomicResponse<Self, Reply>;

    fn handle(&mut self, msg: Create, _ctx: &mut Context<Self>) -> Self::Result {
        self.arrived();
        if let Some(err) = self.unavailable() {
            return AtomicResponse::new(ready(Err(err)));
        }
        let Create {
            new,
            instrument,
            settle,
            admission,
        } = msg;
        let created = self
            .execute(Command::Create(Box::new(new)))
            .map(move |result, act, ctx| match result {
                Ok(payment) => {
                    act.charge(instrument, admission, ctx);
                    Ok(act.reply(payment, Settle::Charge, settle, None))
                }
                Err(OrderError::Rejected(Rejection::Exists { same_request: true })) => {
                    let payment = act
                        .state
                        .clone()
                        .ok_or(OrderError::Rejected(Rejection::NotFound))?;
                    if payment.status == PaymentStatus::Processing {
                        // A retry after a crash brings the card again: send the charge under
                        // the same key (the provider answers with the first charge if there
                        // was one). Skipped while a charge or resolve is already in flight.
                        act.charge(instrument, admission, ctx);
                    }
                    Ok(act.reply(payment, Settle::Charge, settle, None))
                }
                Err(other) => {
                    if act.state.is_none() {
                        ctx.stop();
                    }
                    Err(other)
                }
            });
        AtomicResponse::new(Box::pin(created))
    }
}

impl PaymentOrder {
    /// Runs a merchant's command and replies; a keyed command the order applied already
    /// (a retry whose first answer was lost) is answered with the current state.
    fn command_reply(
        &mut self,
        merchant_id: &str,
        command: Command,
        request: Option<String>,
        settle: Settle,
        wait: bool,
    ) -> AtomicResponse<Self, Reply> {
        if let Some(err) = self
            .unavailable()
            .map(Err)
            .or_else(|| self.check_owner(merchant_id).err().map(Err))
        {
            return AtomicResponse::new(ready(err));
        }
        let command = match request {
            Some(request) => Command::Keyed {
                request,
                command: Box::new(command),
            },
            None => command,
        };
        let done = self.execute(command).map(move |result, act, _ctx| {
            let payment = match result {
                Err(OrderError::Rejected(Rejection::AlreadyApplied)) => act
                    .state
                    .clone()
                    .ok_or(OrderError::Rejected(Rejection::NotFound))?,
                other => other?,
            };
            Ok(act.reply(payment, settle, wait, None))
        });
        AtomicResponse::new(Box::pin(done))
    }
}

impl Handler<Capture> for PaymentOrder {
    type Result = AtomicResponse<Self, Reply>;

    fn handle(&mut self, msg: Capture, _ctx: &mut Context<Self>) -> Self::Result {
        self.arrived();
        self.command_reply(
            &msg.merchant_id,
            Command::Capture { amount: msg.amount },
            msg.request,
            Settle::Pending,
            msg.settle,
        )
    }
}

impl Handler<Cancel> for PaymentOrder {
    type Result = AtomicResponse<Self, Reply>;

    fn handle(&mut self, msg: Cancel, _ctx: &mut Context<Self>) -> Self::Result {
        self.arrived();
        self.command_reply(
            &msg.merchant_id,
            Command::Cancel,
            msg.request,
            Settle::Pending,
            msg.settle,
        )
    }
}

impl Handler<Undo> for PaymentOrder {
    type Result = AtomicResponse<Self, Reply>;

    fn handle(&mut self, msg: Undo, _ctx: &mut Context<Self>) -> Self::Result {
        self.arrived();
        let command = match msg.kind {
            UndoKind::CompleteRevert => Command::Uncapture,
            UndoKind::Reversal => Command::Reverse,
        };
        self.command_reply(
            &msg.merchant_id,
            command,
            msg.request,
            Settle::Pending,
            msg.settle,
        )
    }
}

impl Handler<RefundPayment> for PaymentOrder {
    type Result = AtomicResponse<Self, Reply>;

    fn handle(&mut self, msg: RefundPayment, _ctx: &mut Context<Self>) -> Self::Result {
        self.arrived();
        if let Some(err) = self
            .unavailable()
            .map(Err)
            .or_else(|| self.check_owner(&msg.merchant_id).err().map(Err))
        {
            return AtomicResponse::new(ready(err));
        }
        let refund_id = msg.refund.id.clone();
        let settle = Settle::Refund(refund_id.clone());
        let wait = msg.settle;
        let done = self
            .execute(Command::Refund(msg.refund))
            .map(move |result, act, _ctx| {
                let payment = match result {
                    Ok(payment) => payment,
                    Err(OrderError::Rejected(Rejection::RefundExists { same_request: true })) => {
                        act.state
                            .clone()
                            .ok_or(OrderError::Rejected(Rejection::NotFound))?
                    }
                    Err(other) => return Err(other),
                };
                Ok(act.reply(payment, settle, wait, Some(refund_id)))
            });
        AtomicResponse::new(Box::pin(done))
    }
}

impl Handler<Get> for PaymentOrder {
    type Result = AtomicResponse<Self, Result<Payment, OrderError>>;

    fn handle(&mut self, msg: Get, _ctx: &mut Context<Self>) -> Self::Result {
        self.arrived();
        let answer = move |act: &mut Self| -> Result<Payment, OrderError> {
            if let Some(err) = act.unavailable() {
                return Err(err);
            }
            if let Some(merchant_id) = &msg.merchant_id {
                act.check_owner(merchant_id)?;
            }
            act.state.clone().ok_or(Rejection::NotFound.into())
        };
        if !self.deps.shared_journal || self.state.is_none() {
            return AtomicResponse::new(ready(answer(self)));
        }
        AtomicResponse::new(self.caught_up(move |act, _ctx| ready(answer(act))))
    }
}

impl PaymentOrder {
    /// Hands a channel's answer to this order through its own mailbox. Not `ctx.notify`:
    /// actix 0.13 polls notified messages in the same turn as a mailbox message that has just
    /// started an atomic handler (its wait is merged only after the spawned items ran), so a
    /// notified outcome could journal beside a command and lose the seq race. The mailbox is
    /// only read while no atomic handler is waiting.
    fn outcome(&self, outcome: Outcome, ctx: &mut Context<Self>) {
        // A stopping order drops it; the next activation re-drives what the channel owes.
        ctx.address().do_send(outcome);
    }
}

impl Handler<Outcome> for PaymentOrder {
    type Result = AtomicResponse<Self, ()>;

    fn handle(
        &mut self,
        Outcome(command, answered): Outcome,
        _ctx: &mut Context<Self>,
    ) -> Self::Result {
        let seq_before = self.state.as_ref().map_or(0, |p| p.seq);
        let done = self.execute(command).map(move |result, act, ctx| match result {
            Ok(payment) => {
                if payment.seq != seq_before {
                    // Progress: the schedule starts again for whatever is still owed.
                    act.redrive_attempts = 0;
                }
                if matches!(
                    payment.status,
                    PaymentStatus::Processing | PaymentStatus::RequiresAction
                ) {
                    // Still no final word on the charge (a submitted transfer, an unpaid QR
                    // code): ask again on the schedule.
                    act.schedule_redrive(ctx);
                }
                if let Some(tx) = answered {
                    // A caller that stopped waiting dropped its receiver.
                    let _ = tx.send(payment);
                }
                if act.passivate_requested {
                    act.maybe_passivate(ctx);
                }
            }
            // A late or duplicate answer to something already decided.
            Err(OrderError::Rejected(_)) => {
                if let (Some(tx), Some(payment)) = (answered, act.state.clone()) {
                    let _ = tx.send(payment);
                }
            }
            Err(error) => {
                // Not journaled: the channel will give the same answer to the same key again.
                tracing::warn!(order_id = %act.id, %error, "channel outcome not journaled; will ask again");
                act.schedule_redrive(ctx);
            }
        });
        AtomicResponse::new(Box::pin(done))
    }
}

impl Handler<Passivate> for PaymentOrder {
    type Result = ();

    fn handle(&mut self, _msg: Passivate, ctx: &mut Context<Self>) {
        self.passivate_requested = true;
        self.maybe_passivate(ctx);
    }
}

/// Drills and tests only (`admin.faults_enabled`): makes the order panic inside a handler,
/// exactly as a bug would. Its supervisor restarts it and it rebuilds from the journal.
#[derive(Message)]
#[rtype(result = "()")]
pub struct InjectPanic;

impl Handler<InjectPanic> for PaymentOrder {
    type Result = ();

    fn handle(&mut self, _msg: InjectPanic, _ctx: &mut Context<Self>) {
        self.arrived();
        panic!("injected fault in order {}", self.id);
    }
}

impl Handler<Shutdown> for PaymentOrder {
    type Result = ();

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Context<Self>) {
        // Everything the order knows is in the journal; work in flight is re-driven later.
        if let Some(guard) = &mut self.guard {
            guard.set_reason(kassa_supervision::ExitReason::Shutdown);
        }
        ctx.stop();
    }
}

/// A channel's own report of a charge's outcome (an inbound provider callback). Journaled
/// like any outcome: a duplicate, late or out-of-order report changes nothing.
#[derive(Message)]
#[rtype(result = "Result<Payment, OrderError>")]
pub struct Report(pub ChargeOutcome);

impl Handler<Report> for PaymentOrder {
    type Result = AtomicResponse<Self, Result<Payment, OrderError>>;

    fn handle(&mut self, Report(outcome): Report, _ctx: &mut Context<Self>) -> Self::Result {
        self.arrived();
        if let Some(err) = self.unavailable() {
            return AtomicResponse::new(ready(Err(err)));
        }
        AtomicResponse::new(self.execute(Command::ChargeOutcome(outcome)))
    }
}

/// The cardholder says they finished the action (3-D Secure): ask the channel for the outcome.
#[derive(Message)]
#[rtype(result = "Result<OrderReply, OrderError>")]
pub struct Confirm {
    pub merchant_id: String,
    pub settle: bool,
}

impl Handler<Confirm> for PaymentOrder {
    type Result = Result<OrderReply, OrderError>;

    fn handle(&mut self, msg: Confirm, ctx: &mut Context<Self>) -> Self::Result {
        self.arrived();
        if let Some(err) = self.unavailable() {
            return Err(err);
        }
        self.check_owner(&msg.merchant_id)?;
        let payment = self.state.clone().ok_or(Rejection::NotFound)?;
        if payment.status != PaymentStatus::RequiresAction {
            return Ok(OrderReply {
                payment,
                refund_id: None,
                settled: None,
            });
        }
        // Ask the channel now; the answer is journaled as an `Outcome`, then handed back.
        let (answered, settled) = oneshot::channel();
        let asked = self.port().resolve(self.id.clone());
        ctx.spawn(
            asked
                .into_actor(self)
                .map(move |answer, act, ctx| match answer {
                    Ok(outcome) => act.outcome(
                        Outcome(Command::ChargeOutcome(outcome), Some(answered)),
                        ctx,
                    ),
                    Err(error) => act.on_answer(Err(error), ctx),
                }),
        );
        Ok(OrderReply {
            payment,
            refund_id: None,
            settled: msg.settle.then_some(settled),
        })
    }
}
