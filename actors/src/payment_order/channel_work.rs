//! An order's channel work: starting the calls its events ask for, and re-driving, with the
//! same idempotency keys, those whose outcome the channel did not give.

use std::time::Duration;

use super::{Outcome, PaymentOrder, Work};
use crate::channel_port::{CallError, ChargeCall, Instrument, RefundCall};
use crate::payment::{
    CaptureMode, ChargeOutcome, Command, Event, PaymentStatus, PendingOp, RefundStatus,
};
use actix::prelude::*;

impl PaymentOrder {
    pub(super) fn start_channel_work(&mut self, events: &[Event], ctx: &mut Context<Self>) {
        for event in events {
            match event {
                Event::CaptureRequested { .. } => self.drive(Work::Capture, ctx),
                Event::CancelRequested => self.drive(Work::Cancel, ctx),
                Event::UncaptureRequested => self.drive(Work::Uncapture, ctx),
                Event::ReversalRequested => self.drive(Work::Reverse, ctx),
                Event::RefundRequested { id, .. } => self.drive(Work::Refund(id.clone()), ctx),
                // The customer pays (or the bank settles) later: ask the channel on the
                // re-drive schedule, so a lost callback never leaves the order waiting.
                Event::ActionRequired { .. } | Event::Submitted { .. } => {
                    self.schedule_redrive(ctx)
                }
                // A cancel that lost the race to the customer's payment: learn the payment.
                Event::CancelFailed { .. } => {
                    if self
                        .state
                        .as_ref()
                        .is_some_and(|p| p.status == PaymentStatus::RequiresAction)
                    {
                        self.drive(Work::Charge, ctx);
                    }
                }
                Event::Created { .. }
                | Event::Authorized { .. }
                | Event::Captured { .. }
                | Event::Failed { .. }
                | Event::CaptureFailed { .. }
                | Event::Canceled
                | Event::Uncaptured
                | Event::UncaptureFailed { .. }
                | Event::Reversed
                | Event::ReversalFailed { .. }
                | Event::RefundSucceeded { .. }
                | Event::RefundFailed { .. }
                | Event::RequestApplied { .. } => {}
            }
        }
    }

    pub(super) fn charge(
        &mut self,
        instrument: Instrument,
        admission: Option<crate::channel_port::Admission>,
        ctx: &mut Context<Self>,
    ) {
        let port = self.port();
        let Some(p) = &self.state else { return };
        if !self.in_flight.insert(Work::Charge) {
            return;
        }
        let call = ChargeCall {
            order_id: p.id.clone(),
            merchant_id: p.merchant_id.clone(),
            amount: p.amount,
            capture: p.capture == CaptureMode::Automatic,
            instrument,
            description: p
                .description
                .clone()
                .unwrap_or_else(|| p.merchant_order_id.clone()),
            wallet_id: p.wallet_id.clone(),
            admission,
        };
        let sent = port.charge(call);
        ctx.spawn(sent.into_actor(self).map(|answer, act, ctx| {
            act.in_flight.remove(&Work::Charge);
            let answer = match answer {
                Ok(outcome) => Ok(Command::ChargeOutcome(outcome)),
                // The channel refused the charge itself: nothing was taken.
                Err(CallError::Refused(f)) => {
                    Ok(Command::ChargeOutcome(ChargeOutcome::Declined(f)))
                }
                Err(e) => Err(e),
            };
            act.on_answer(answer, ctx);
        }));
    }

    /// Sends (again) the channel call for `work`, with the same idempotency key as ever.
    pub(super) fn drive(&mut self, work: Work, ctx: &mut Context<Self>) {
        let port = self.port();
        let Some(p) = &self.state else { return };
        if self.in_flight.contains(&work) {
            return;
        }
        let channel = &port;
        let provider_ref = p.provider_ref.clone().unwrap_or_default();
        let call: futures::future::BoxFuture<'static, Result<Command, CallError>> =
            match (&work, &p.pending) {
                (Work::Charge, _) => {
                    let resolved = channel.resolve(p.id.clone());
                    Box::pin(async move {
                        match resolved.await {
                            Ok(outcome) => Ok(Command::ChargeOutcome(outcome)),
                            // A refused *query* says nothing about the charge: ask again later.
                            Err(CallError::Refused(f)) => Err(CallError::Unknown(f.message)),
                            Err(e) => Err(e),
                        }
                    })
                }
                (Work::Capture, Some(PendingOp::Capture { amount })) => {
                    let sent = channel.capture(p.capture_key(), provider_ref, *amount);
                    Box::pin(async move {
                        match sent.await {
                            Ok(reference) => Ok(Command::CaptureOutcome(Ok(reference))),
                            Err(CallError::Refused(f)) => Ok(Command::CaptureOutcome(Err(f))),
                            Err(e) => Err(e),
                        }
                    })
                }
                (Work::Cancel, Some(PendingOp::Cancel)) => {
                    let sent = channel.void(p.cancel_key(), p.id.clone(), provider_ref);
                    Box::pin(async move {
                        match sent.await {
                            Ok(()) => Ok(Command::CancelOutcome(Ok(()))),
                            Err(CallError::Refused(f)) => Ok(Command::CancelOutcome(Err(f))),
                            Err(e) => Err(e),
                        }
                    })
                }
                (Work::Uncapture, Some(PendingOp::Uncapture)) => {
                    let sent = channel.uncapture(p.uncapture_key(), provider_ref);
                    Box::pin(async move {
                        match sent.await {
                            Ok(()) => Ok(Command::UncaptureOutcome(Ok(()))),
                            Err(CallError::Refused(f)) => Ok(Command::UncaptureOutcome(Err(f))),
                            Err(e) => Err(e),
                        }
                    })
                }
                (Work::Reverse, Some(PendingOp::Reverse)) => {
                    let sent =
                        channel.reverse(p.reverse_key(), p.id.clone(), p.provider_ref.clone());
                    Box::pin(async move {
                        match sent.await {
                            Ok(()) => Ok(Command::ReverseOutcome(Ok(()))),
                            Err(CallError::Refused(f)) => Ok(Command::ReverseOutcome(Err(f))),
                            Err(e) => Err(e),
                        }
                    })
                }
                (Work::Refund(id), _) => {
                    let Some(refund) = p.refund(id).filter(|r| r.status == RefundStatus::Pending)
                    else {
                        return;
                    };
                    let refund_id = id.clone();
                    let sent = channel.refund(RefundCall {
                        key: refund_id.clone(),
                        merchant_id: p.merchant_id.clone(),
                        provider_ref,
                        amount: refund.amount,
                    });
                    Box::pin(async move {
                        match sent.await {
                            Ok(reference) => Ok(Command::RefundOutcome {
                                refund_id,
                                result: Ok(reference),
                            }),
                            Err(CallError::Refused(f)) => Ok(Command::RefundOutcome {
                                refund_id,
                                result: Err(f),
                            }),
                            Err(e) => Err(e),
                        }
                    })
                }
                (Work::Capture | Work::Cancel | Work::Uncapture | Work::Reverse, _) => return,
            };
        self.in_flight.insert(work.clone());
        ctx.spawn(call.into_actor(self).map(move |answer, act, ctx| {
            act.in_flight.remove(&work);
            act.on_answer(answer, ctx);
        }));
    }

    pub(super) fn on_answer(
        &mut self,
        answer: Result<Command, CallError>,
        ctx: &mut Context<Self>,
    ) {
        match answer {
            Ok(command) => self.outcome(Outcome(command, None), ctx),
            Err(error) => {
                let reason = match error {
                    CallError::Refused(failure) => failure.message,
                    CallError::Unknown(reason) => reason,
                };
                tracing::warn!(order_id = %self.id, %reason, "channel outcome unknown; will ask again");
                self.schedule_redrive(ctx);
            }
        }
    }

    pub(super) fn schedule_redrive(&mut self, ctx: &mut Context<Self>) {
        if self.redrive_scheduled {
            return;
        }
        if self.redrive_attempts >= self.deps.redrive_attempts_max {
            tracing::error!(order_id = %self.id, attempts = self.redrive_attempts,
                "channel outcome still unknown; left for the next activation");
            return;
        }
        let schedule = &self.deps.redrive_schedule_ms;
        let index = (self.redrive_attempts as usize).min(schedule.len().saturating_sub(1));
        let delay = Duration::from_millis(schedule.get(index).copied().unwrap_or(60_000));
        self.redrive_attempts += 1;
        self.redrive_scheduled = true;
        ctx.run_later(delay, |act, ctx| {
            act.redrive_scheduled = false;
            act.redrive(ctx);
        });
    }

    /// Re-drives everything the journal says the channel still owes.
    pub(super) fn redrive(&mut self, ctx: &mut Context<Self>) {
        let Some(p) = &self.state else { return };
        let mut owed = Vec::new();
        if matches!(
            p.status,
            PaymentStatus::Processing | PaymentStatus::RequiresAction
        ) {
            owed.push(Work::Charge);
        }
        match &p.pending {
            Some(PendingOp::Capture { .. }) => owed.push(Work::Capture),
            Some(PendingOp::Cancel) => owed.push(Work::Cancel),
            Some(PendingOp::Uncapture) => owed.push(Work::Uncapture),
            Some(PendingOp::Reverse) => owed.push(Work::Reverse),
            None => {}
        }
        owed.extend(
            p.refunds
                .iter()
                .filter(|r| r.status == RefundStatus::Pending)
                .map(|r| Work::Refund(r.id.clone())),
        );
        for work in owed {
            self.drive(work, ctx);
        }
    }
}
