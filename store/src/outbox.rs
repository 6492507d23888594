//! The transactional outbox: merchant-facing events and their webhook deliveries.
//!
//! Every event ([`EventRecord`]) is written by [`crate::Store::append`] in the same transaction
//! as the order transition it reports (`Append::events`), together with one pending
//! [`DeliveryRecord`] for it: a crash can lose neither the transition nor its notification.
//! The notifier reads due deliveries, records each attempt ([`AttemptRecord`]) and moves the
//! delivery on (next attempt, delivered, or dead-lettered); operators and merchants can put a
//! delivery back in the queue (replay, resend).

use crate::UnixMs;

/// How much of a receiver's answer an attempt keeps (bytes).
pub const ATTEMPT_RESPONSE_BYTES_MAX: usize = 512;

/// A merchant-facing event, as sent: `body` is the exact JSON posted to the webhook
/// (`{"id","type","created","data":{"object"}}`) and returned by `GET /v1/events/{id}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRecord {
    /// `evt_…`, derived from the order and the journal seq, so a re-append cannot mint twice.
    pub id: String,
    pub merchant_id: String,
    /// `payment.succeeded`, `refund.failed`, …
    pub kind: String,
    /// The payment (or refund) the event is about.
    pub object_id: String,
    pub created_ms: UnixMs,
    pub body: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    /// Waiting for its next attempt at `next_attempt_ms`.
    Pending,
    /// A 2xx was received.
    Delivered,
    /// Every attempt of the schedule failed; waits for a replay.
    Dead,
    /// The merchant has no webhook endpoint: nothing to send (listed in `/v1/events` still).
    NoEndpoint,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 4] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Delivered,
        DeliveryStatus::Dead,
        DeliveryStatus::NoEndpoint,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Dead => "dead",
            DeliveryStatus::NoEndpoint => "no_endpoint",
        }
    }

    pub fn from_name(name: &str) -> Option<DeliveryStatus> {
        DeliveryStatus::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// One event's delivery to its merchant's endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub event_id: String,
    pub merchant_id: String,
    pub event_kind: String,
    pub status: DeliveryStatus,
    /// Attempts made so far (in this round: a replay starts a new round at 0).
    pub attempts: u32,
    pub next_attempt_ms: UnixMs,
    pub created_ms: UnixMs,
    pub updated_ms: UnixMs,
    pub last_http_status: Option<u16>,
    pub last_error: Option<String>,
}

/// One attempt to deliver, kept for operators.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptRecord {
    pub event_id: String,
    /// 1 for the first attempt of the delivery's life (rounds continue the count).
    pub attempt: u32,
    pub at_ms: UnixMs,
    /// `None`: no HTTP answer (connect error, timeout).
    pub http_status: Option<u16>,
    pub latency_ms: u64,
    /// Why it failed, without secrets or the event body.
    pub error: Option<String>,
    /// The receiver's answer, cut to [`ATTEMPT_RESPONSE_BYTES_MAX`] bytes.
    pub response_excerpt: String,
}

/// What an attempt did to its delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    /// Try again at `next_attempt_ms`.
    Retry {
        next_attempt_ms: UnixMs,
    },
    /// The schedule is exhausted.
    Dead,
    /// The merchant has no endpoint (no attempt is recorded with it).
    NoEndpoint,
}

/// Which deliveries a list or a replay means; `None` is "any".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    pub status: Option<DeliveryStatus>,
    pub merchant_id: Option<String>,
    pub event_id: Option<String>,
}
