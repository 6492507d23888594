//! Exits, restart decisions, and the work they leave: children to stop one at a time (each
//! waited for up to its `shutdown_timeout_ms`), then children to start in order, then maybe the
//! supervisor's own exit.
//!
//! A decision is taken when an exit arrives; the stops and the start it needs are queued and
//! run by [`Supervisor::drive`], which returns whenever it has to wait for a child to stop.
//! Stops are evaluated lazily (stopping a child that is already down does nothing) and starts
//! merge into one set started in spec order, so decisions queued behind each other compose:
//! a `rest_for_one` restart from child 1 queued behind one from child 3 restarts 1.. once.
//!
//! Bounds: `stops` holds each child at most once (≤ [`super::CHILDREN_MAX`]); `start` and
//! `pending` hold at most every child once. Every restart decision is counted against the
//! intensity, so a child that keeps failing to start ends in a give-up, not in a loop.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use actix::prelude::*;
use tokio::time::Instant;

use super::child::Slot;
use super::{ChildStart, Phase, Shutdown, Supervisor};
use crate::events::{EventKind, unix_now_ms};
use crate::exit::{ChildExited, ExitGuard, ExitReason, payload_text, truncated};
use crate::intensity::Verdict;
use crate::snapshot::FailureSnapshot;
use crate::spec::{RestartType, Strategy};

#[derive(Default)]
pub(super) struct Work {
    /// Children to stop, in this order; each is waited for before the next.
    stops: VecDeque<String>,
    /// The child being stopped now.
    waiting_for: Option<String>,
    /// Children to start once `stops` is empty.
    start: Option<StartSet>,
    /// Children to start when a backoff delay is over.
    pending: Option<PendingStart>,
    /// Exit once `stops` is empty.
    exit: Option<ExitReason>,
}

struct StartSet {
    names: Vec<String>,
    delay_ms: u64,
}

struct PendingStart {
    names: Vec<String>,
    due: Instant,
    timer: SpawnHandle,
}

impl Work {
    fn push_stop(&mut self, name: &str) {
        if self.waiting_for.as_deref() != Some(name) && !self.stops.iter().any(|s| s == name) {
            self.stops.push_back(name.to_owned());
        }
    }

    fn add_start(&mut self, names: Vec<String>, delay_ms: u64) {
        match &mut self.start {
            Some(set) => {
                merge_names(&mut set.names, names);
                set.delay_ms = set.delay_ms.max(delay_ms);
            }
            None => self.start = Some(StartSet { names, delay_ms }),
        }
    }
}

fn merge_names(into: &mut Vec<String>, names: Vec<String>) {
    for name in names {
        if !into.contains(&name) {
            into.push(name);
        }
    }
}

impl Supervisor {
    /// Start every child, in order (inside `create`, so before the parent's next child).
    pub(super) fn boot(&mut self, ctx: &mut Context<Self>) {
        if self.is_root {
            self.emit(&self.path, EventKind::Started, None);
        }
        let names = self.children.iter().map(|c| c.name().to_owned()).collect();
        self.work.add_start(names, 0);
        self.drive(ctx);
    }

    /// Run queued work until it has to wait (a child stopping, a backoff) or there is none.
    /// Each turn consumes a step; a start failure may queue more, but only through a restart
    /// decision counted against the intensity, so the loop ends.
    pub(super) fn drive(&mut self, ctx: &mut Context<Self>) {
        loop {
            if self.work.waiting_for.is_some() || self.phase == Phase::Exited {
                return;
            }
            if let Some(name) = self.work.stops.pop_front() {
                if self.begin_stop(&name, ctx) {
                    self.work.waiting_for = Some(name);
                    return;
                }
                continue;
            }
            if let Some(set) = self.work.start.take() {
                if self.phase == Phase::Running {
                    if set.delay_ms == 0 {
                        self.start_children(set.names, ctx);
                    } else {
                        self.schedule_start(set, ctx);
                    }
                }
                continue;
            }
            if let Some(reason) = self.work.exit.take() {
                self.finish(reason, ctx);
            }
            return;
        }
    }

    /// A [`ChildExited`] arrived: match it to the child's current incarnation or ignore it.
    pub(super) fn on_child_exited(&mut self, exit: ChildExited, ctx: &mut Context<Self>) {
        let Some(index) = self.index_of(&exit.child_id) else {
            tracing::debug!(supervisor = %self.path, child = %exit.child_id, "exit of a removed child ignored");
            return;
        };
        let child = &mut self.children[index];
        match std::mem::replace(&mut child.slot, Slot::Down) {
            Slot::Stopping {
                generation, timer, ..
            } if generation == exit.generation => {
                ctx.cancel_future(timer);
                child.started_at = None;
                if self.work.waiting_for.as_deref() == Some(exit.child_id.as_str()) {
                    self.work.waiting_for = None;
                }
                self.record_exit(index, &exit.reason);
                self.forget_if_temporary(index);
            }
            Slot::Running { generation, .. } if generation == exit.generation => {
                child.started_at = None;
                let expected = self.phase != Phase::Running
                    || self.work.stops.iter().any(|s| *s == exit.child_id);
                if expected {
                    // Going to be stopped anyway (a restart of its siblings, or our own exit):
                    // not a crash to count, as in OTP.
                    self.work.stops.retain(|s| *s != exit.child_id);
                    self.record_exit(index, &exit.reason);
                    self.forget_if_temporary(index);
                } else {
                    self.on_unexpected_exit(index, exit.reason, ctx);
                }
            }
            slot => {
                child.slot = slot;
                tracing::debug!(supervisor = %self.path, child = %exit.child_id, generation = exit.generation, "stale exit ignored");
            }
        }
    }

    /// Decide what the exit of child `index` means. Returns whether a restart was queued.
    fn on_unexpected_exit(
        &mut self,
        index: usize,
        reason: ExitReason,
        ctx: &mut Context<Self>,
    ) -> bool {
        self.record_exit(index, &reason);
        let child = &self.children[index];
        let restart = match child.spec.restart {
            RestartType::Permanent => true,
            RestartType::Transient => reason.is_abnormal(),
            RestartType::Temporary => false,
        };
        if !restart {
            self.forget_if_temporary(index);
            return false;
        }
        let now_ms = self.now_ms();
        let attempt = child.tracker.restarts_window(now_ms);
        let name = child.name().to_owned();
        if self.tracker.record(now_ms) == Verdict::GiveUp {
            let intensity = self.tracker.intensity();
            let text = format!(
                "more than {} restarts in {} ms; last: {name} {reason}",
                intensity.max_restarts, intensity.period_ms
            );
            self.give_up(text, ctx);
            return false;
        }
        let delay_ms = match self.backoff {
            Some(backoff) => backoff.delay_ms(attempt, self.rng.next_u64()),
            None => 0,
        };
        let (stops, starts) = self.restart_set(index);
        for stop in &stops {
            self.work.push_stop(stop);
        }
        for child in self.children.iter_mut() {
            if starts.iter().any(|s| s == child.name()) {
                child.restarting = true;
            }
        }
        self.work.add_start(starts, delay_ms);
        true
    }

    /// Which children to stop (in order) and which to start again for a restart of `index`.
    /// Temporary siblings are stopped but never restarted (OTP).
    fn restart_set(&self, index: usize) -> (Vec<String>, Vec<String>) {
        let name = |c: &super::Child| c.name().to_owned();
        let restartable = |c: &&super::Child| c.spec.restart != RestartType::Temporary;
        match self.strategy {
            Strategy::OneForOne | Strategy::SimpleOneForOne => {
                (Vec::new(), vec![name(&self.children[index])])
            }
            Strategy::OneForAll => {
                let stops = self
                    .children
                    .iter()
                    .enumerate()
                    .rev()
                    .filter(|(i, _)| *i != index)
                    .map(|(_, c)| name(c))
                    .collect();
                let starts = self.children.iter().filter(restartable).map(name).collect();
                (stops, starts)
            }
            Strategy::RestForOne => {
                let stops = self.children[index + 1..].iter().rev().map(name).collect();
                let starts = self.children[index..]
                    .iter()
                    .filter(restartable)
                    .map(name)
                    .collect();
                (stops, starts)
            }
        }
    }

    /// Past the intensity: stop every child (reverse order), then exit `Escalated`.
    fn give_up(&mut self, text: String, ctx: &mut Context<Self>) {
        self.phase = Phase::GivingUp;
        self.emit(&self.path, EventKind::GaveUp, Some(text.clone()));
        self.stop_all_then(ExitReason::Escalated(text), ctx);
    }

    /// [`Shutdown`]: stop every child (reverse order), then exit `Shutdown`.
    pub(super) fn shut_down(&mut self, ctx: &mut Context<Self>) {
        if self.phase != Phase::Running {
            return; // already on its way out
        }
        self.phase = Phase::ShuttingDown;
        self.stop_all_then(ExitReason::Shutdown, ctx);
    }

    fn stop_all_then(&mut self, reason: ExitReason, ctx: &mut Context<Self>) {
        if let Some(pending) = self.work.pending.take() {
            ctx.cancel_future(pending.timer);
        }
        self.work.start = None;
        self.work.stops.clear();
        for child in self.children.iter_mut() {
            child.restarting = false;
        }
        let running: Vec<String> = self
            .children
            .iter()
            .rev()
            .filter(|c| !c.is_down())
            .map(|c| c.name().to_owned())
            .collect();
        for name in &running {
            self.work.push_stop(name);
        }
        self.work.exit = Some(reason);
    }

    /// Every child is stopped: publish, hand the reason to the exit guard, stop.
    fn finish(&mut self, reason: ExitReason, ctx: &mut Context<Self>) {
        self.phase = Phase::Exited;
        match &reason {
            ExitReason::Escalated(text) => {
                self.emit(&self.path, EventKind::Escalated, Some(text.clone()))
            }
            _ if self.is_root => {
                self.emit(&self.path, EventKind::Stopped, Some(reason.to_string()))
            }
            _ => {}
        }
        self.exit.set_reason(reason.clone());
        self.exit_reason = Some(reason);
        ctx.stop();
    }

    /// Send [`Shutdown`] to a running child and arm its timeout. Returns whether to wait for it.
    fn begin_stop(&mut self, name: &str, ctx: &mut Context<Self>) -> bool {
        let Some(index) = self.index_of(name) else {
            return false;
        };
        let child = &mut self.children[index];
        match std::mem::replace(&mut child.slot, Slot::Down) {
            Slot::Running {
                generation,
                child: child_ref,
            } => {
                // `do_send` queues even into a full mailbox; a closed one means the child is
                // already gone and its exit is on the way.
                child_ref.shutdown.do_send(Shutdown);
                let timeout = Duration::from_millis(child.spec.shutdown_timeout_ms);
                let owned = name.to_owned();
                let timer = ctx.run_later(timeout, move |supervisor, ctx| {
                    supervisor.on_stop_timeout(&owned, generation);
                    supervisor.drive(ctx);
                });
                child.slot = Slot::Stopping {
                    generation,
                    child: child_ref,
                    timer,
                };
                true
            }
            slot @ Slot::Stopping { .. } => {
                child.slot = slot;
                true
            }
            Slot::Down => false,
        }
    }

    /// A child did not stop within its timeout: stop waiting. actix cannot kill an actor from
    /// outside, so it may still be running; its late exit is ignored as stale.
    fn on_stop_timeout(&mut self, name: &str, generation: u64) {
        let Some(index) = self.index_of(name) else {
            return;
        };
        let child = &mut self.children[index];
        if !matches!(child.slot, Slot::Stopping { generation: g, .. } if g == generation) {
            return;
        }
        child.slot = Slot::Down;
        child.started_at = None;
        let text = format!(
            "did not stop within {} ms; no longer waited for",
            child.spec.shutdown_timeout_ms
        );
        tracing::warn!(child = %child.path, "{text}");
        self.emit(&self.children[index].path, EventKind::Stopped, Some(text));
        if self.work.waiting_for.as_deref() == Some(name) {
            self.work.waiting_for = None;
        }
        self.forget_if_temporary(index);
    }

    /// Start `names` later, together with any start already waiting (the later due time wins,
    /// so no child starts before its own backoff is over).
    fn schedule_start(&mut self, set: StartSet, ctx: &mut Context<Self>) {
        let mut names = set.names;
        let mut due = Instant::now() + Duration::from_millis(set.delay_ms);
        if let Some(pending) = self.work.pending.take() {
            ctx.cancel_future(pending.timer);
            merge_names(&mut names, pending.names);
            due = due.max(pending.due);
        }
        let timer = ctx.run_later(due.saturating_duration_since(Instant::now()), |s, ctx| {
            if let Some(pending) = s.work.pending.take()
                && s.phase == Phase::Running
            {
                s.start_children(pending.names, ctx);
            }
            s.drive(ctx);
        });
        self.work.pending = Some(PendingStart { names, due, timer });
    }

    /// Start the named children that are down, in spec order. A start failure is a crash; if
    /// it is to be restarted, the children after it wait and start after it (their order holds
    /// even across failed starts and backoff).
    fn start_children(&mut self, names: Vec<String>, ctx: &mut Context<Self>) {
        let ordered: Vec<String> = self
            .children
            .iter()
            .filter(|c| c.is_down() && names.iter().any(|n| n == c.name()))
            .map(|c| c.name().to_owned())
            .collect();
        for (position, name) in ordered.iter().enumerate() {
            if self.phase != Phase::Running {
                return;
            }
            let Some(index) = self.index_of(name) else {
                continue;
            };
            if !self.children[index].is_down() {
                continue;
            }
            if let Err(reason) = self.start_child(index, ctx)
                && self.on_unexpected_exit(index, reason, ctx)
            {
                let rest = ordered[position + 1..].to_vec();
                self.work.add_start(rest, 0);
                return;
            }
        }
    }

    /// Call the child's start function with a fresh generation and guard.
    fn start_child(&mut self, index: usize, ctx: &mut Context<Self>) -> Result<(), ExitReason> {
        let generation = self.next_generation;
        self.next_generation += 1; // u64: cannot overflow at any realistic restart rate
        let now_ms = self.now_ms();
        let child = &self.children[index];
        let start = ChildStart {
            path: child.path.clone(),
            guard: ExitGuard::new(ctx.address().recipient(), child.name(), generation),
            events: self.events.clone(),
        };
        let start_fn = child.spec.start.clone();
        // A panicking start function is a failed start, not a dead supervisor. The guard, dropped
        // while unwinding, reports this generation, which is then stale and ignored.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| start_fn(start)));
        let child = &mut self.children[index];
        match result {
            Ok(Ok(child_ref)) => {
                let restarted = child.starts > 0;
                child.starts += 1;
                child.restarting = false;
                child.started_at = Some(Instant::now());
                child.slot = Slot::Running {
                    generation,
                    child: child_ref,
                };
                let kind = if restarted {
                    child.tracker.record(now_ms);
                    EventKind::Restarted
                } else {
                    EventKind::Started
                };
                self.emit(&self.children[index].path, kind, None);
                Ok(())
            }
            Ok(Err(message)) => Err(ExitReason::Failed(truncated(format!(
                "start failed: {message}"
            )))),
            // The guard, dropped while unwinding, already took the hook's message: use the payload.
            Err(payload) => Err(ExitReason::Panicked(truncated(format!(
                "in start function: {}",
                payload_text(payload.as_ref())
            )))),
        }
    }

    /// Publish the exit of child `index` and remember it if it was a failure.
    fn record_exit(&mut self, index: usize, reason: &ExitReason) {
        let child = &mut self.children[index];
        let kind = if reason.is_abnormal() {
            let failure = FailureSnapshot {
                at: unix_now_ms(),
                reason: reason.to_string(),
            };
            child.last_failure = Some(failure.clone());
            self.last_failure = Some(failure);
            EventKind::Crashed
        } else {
            EventKind::Stopped
        };
        self.emit(&self.children[index].path, kind, Some(reason.to_string()));
    }

    /// OTP removes a temporary child's spec once it is gone.
    fn forget_if_temporary(&mut self, index: usize) {
        let child = &self.children[index];
        if child.spec.restart == RestartType::Temporary && child.is_down() && !child.restarting {
            self.children.remove(index);
        }
    }

    pub(super) fn index_of(&self, name: &str) -> Option<usize> {
        self.children.iter().position(|c| c.name() == name)
    }
}
