//! Merchant-facing events: what an order's journal events mean to the merchant.
//!
//! Each transition a merchant cares about becomes one [`EventRecord`], written by the order
//! actor in the same append as the transition itself (the transactional outbox), so a crash
//! can lose neither. The body is the exact JSON the webhook posts and `GET /v1/events/{id}`
//! returns: `{"id","object":"event","type","created","data":{"object":{…}}}`.
//!
//! Ids are derived from the order and the journal seq (`evt_<order>_<seq>`): re-appending the
//! same transition (a retry after a crash) names the same event, never a second one.

use kassa_store::EventRecord;

use crate::payment::{Event, Payment};
use crate::views::refund_json;

/// The merchant-facing type of a journal event, if it is one a merchant is told about.
pub fn event_type(event: &Event) -> Option<&'static str> {
    Some(match event {
        Event::Captured { .. } => "payment.succeeded",
        Event::Authorized { .. } => "payment.authorized",
        Event::ActionRequired { .. } => "payment.requires_action",
        Event::Submitted { .. } => "payment.processing",
        Event::Failed { .. } => "payment.failed",
        Event::Canceled => "payment.canceled",
        Event::Uncaptured => "payment.completion_reverted",
        Event::Reversed => "payment.reversed",
        Event::RefundSucceeded { .. } => "refund.succeeded",
        Event::RefundFailed { .. } => "refund.failed",
        // The payment's creation is announced by its outcome; intents and failed commands
        // leave the payment as it was.
        Event::Created { .. }
        | Event::CaptureRequested { .. }
        | Event::CaptureFailed { .. }
        | Event::CancelRequested
        | Event::CancelFailed { .. }
        | Event::UncaptureRequested
        | Event::UncaptureFailed { .. }
        | Event::ReversalRequested
        | Event::ReversalFailed { .. }
        | Event::RefundRequested { .. }
        | Event::RequestApplied { .. } => return None,
    })
}

/// The events one append raises: `events[i]` was journaled at `first_seq + i`; `after` is the
/// order once all of them are applied and `payment_body` its API object (the projection's
/// body, serialised once for both).
pub fn merchant_events(
    after: &Payment,
    payment_body: &str,
    events: &[Event],
    first_seq: u64,
    at_ms: i64,
) -> Vec<EventRecord> {
    let order = after.id.strip_prefix("pay_").unwrap_or(&after.id);
    events
        .iter()
        .enumerate()
        .filter_map(|(i, event)| {
            let kind = event_type(event)?;
            let seq = first_seq + i as u64;
            let id = format!("evt_{order}_{seq}");
            let (object_id, object) = match event {
                Event::RefundSucceeded { refund_id, .. } | Event::RefundFailed { refund_id, .. } => {
                    let refund = after.refund(refund_id)?;
                    (refund.id.clone(), refund_json(after, refund))
                }
                _ => (after.id.clone(), payment_body.to_owned()),
            };
            let body = format!(
                r#"{{"id":"{id}","object":"event","type":"{kind}","created":{},"data":{{"object":{object}}}}}"#,
                at_ms.div_euclid(1_000)
            );
            Some(EventRecord {
                id,
                merchant_id: after.merchant_id.clone(),
                kind: kind.to_string(),
                object_id,
                created_ms: at_ms,
                body,
            })
        })
        .collect()
}
