//! The payment order's state machine: plain data and plain functions, no I/O, no clock.
//!
//! A command is *decided* against the current state into events (or refused);
//! events are *applied* to produce the next state. The journal stores events,
//! so replaying them through [`apply`] rebuilds any order exactly. Time comes
//! in with each event (`at_ms`), never from the OS, so tests and replays are
//! deterministic.
//!
//! ```text
//!                 ┌──────────── Failed (declined, never charged)
//!  Processing ────┼──────────── Succeeded ── refunds (amount_refunded ≤ amount_captured)
//!      │   │      └── Authorized ─┬─ capture (preauth_complete) ─▶ Succeeded
//!      │   │            ▲         └─ cancel (preauth_cancel) ────▶ Canceled
//!      │   │            └──── complete_revert ◀── Succeeded (nothing refunded)
//!      │   └── reversal (outcome unknown, authorised, or captured with nothing refunded) ─▶ Canceled
//!      ▼
//!  RequiresAction (3-D Secure challenge, QR code or app to pay) ─▶ Succeeded | Failed | Canceled
//! ```
//!
//! An asynchronous channel (a bank transfer) may answer "submitted": the order stays
//! `Processing` with the provider's reference until the channel reports the outcome.
//!
//! Operations that call a channel are journaled as an intent first
//! (`CaptureRequested`, `CancelRequested`, `RefundRequested`) and as an outcome
//! after; an intent without an outcome is re-driven with the same idempotency
//! key after a crash, so it is never lost and never done twice.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::money::{Currency, Money};

/// Refunds one payment may have; a bound like every other.
pub const REFUNDS_PER_PAYMENT_MAX: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Processing,
    RequiresAction,
    Authorized,
    Succeeded,
    Failed,
    Canceled,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Processing => "processing",
            PaymentStatus::RequiresAction => "requires_action",
            PaymentStatus::Authorized => "authorized",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Failed => "failed",
            PaymentStatus::Canceled => "canceled",
        }
    }

    /// No transition leaves a terminal status (refunds change amounts, not status).
    ///
    /// `Succeeded` is final for every purpose but two card pre-authorisation commands: a
    /// `complete_revert` returns it to `Authorized`, a `reversal` cancels it (see `can_become`).
    pub fn is_terminal(self) -> bool {
        match self {
            PaymentStatus::Failed | PaymentStatus::Canceled => true,
            PaymentStatus::Processing
            | PaymentStatus::RequiresAction
            | PaymentStatus::Authorized
            | PaymentStatus::Succeeded => false,
        }
    }

    /// The edges of the lifecycle; anything else is a skipped or illegal state.
    pub fn can_become(self, next: PaymentStatus) -> bool {
        use PaymentStatus::*;
        match self {
            // Canceled: a reversal of a charge whose outcome was unknown.
            Processing => matches!(
                next,
                RequiresAction | Authorized | Succeeded | Failed | Canceled
            ),
            RequiresAction => matches!(
                next,
                Processing | Authorized | Succeeded | Failed | Canceled
            ),
            Authorized => matches!(next, Succeeded | Canceled),
            // Authorized: complete_revert; Canceled: reversal.
            Succeeded => matches!(next, Authorized | Canceled),
            Failed | Canceled => false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Pending,
    Succeeded,
    Failed,
}

impl RefundStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Pending => "pending",
            RefundStatus::Succeeded => "succeeded",
            RefundStatus::Failed => "failed",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMode {
    Automatic,
    Manual,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Card,
    /// A QR code or payment link paid in the customer's wallet app (Alipay-style).
    QrWallet,
    /// Paid in the customer's wallet app from an in-app prompt (WeChat Pay-style).
    AppWallet,
    /// A B2B bank transfer: accepted at once, settled (or rejected) hours later.
    BankTransfer,
    /// The customer's stored-value wallet held by Kassa itself.
    Wallet,
}

impl Method {
    pub const ALL: [Method; 5] = [
        Method::Card,
        Method::QrWallet,
        Method::AppWallet,
        Method::BankTransfer,
        Method::Wallet,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Card => "card",
            Method::QrWallet => "qr_wallet",
            Method::AppWallet => "app_wallet",
            Method::BankTransfer => "bank_transfer",
            Method::Wallet => "wallet",
        }
    }

    pub fn parse(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// Only a card can be authorised now and captured later (the pre-authorisation family).
    pub fn supports_manual_capture(self) -> bool {
        self == Method::Card
    }
}

/// What Kassa keeps of a payer's bank account: the last four characters and the holder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BankAccountSummary {
    pub last4: String,
    pub holder_name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundReason {
    Duplicate,
    Fraudulent,
    RequestedByCustomer,
}

/// What Kassa keeps of a card: never the full number, never the CVC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardSummary {
    pub brand: String,
    pub bin: String,
    pub last4: String,
    pub exp_month: u8,
    pub exp_year: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub code: String,
    pub message: String,
}

impl Failure {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Failure {
        Failure {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// A validated request to create a payment (no card secrets: those travel beside it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewPayment {
    pub id: String,
    pub merchant_id: String,
    pub merchant_order_id: String,
    pub amount: Money,
    pub method: Method,
    pub capture: CaptureMode,
    /// The card, for `method: card` (always present in journals written before other methods).
    #[serde(default)]
    pub card: Option<CardSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank_account: Option<BankAccountSummary>,
    /// The stored-value wallet debited, for `method: wallet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wallet_id: Option<String>,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// Hash of the request that created it: the same id asked for by a different request is refused.
    pub fingerprint: String,
}

/// A validated refund request; `amount: None` means whatever is still refundable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRefund {
    pub id: String,
    pub amount: Option<Money>,
    pub reason: Option<RefundReason>,
    pub metadata: BTreeMap<String, String>,
    pub fingerprint: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub id: String,
    pub amount: Money,
    pub status: RefundStatus,
    pub reason: Option<RefundReason>,
    pub failure: Option<Failure>,
    pub metadata: BTreeMap<String, String>,
    pub fingerprint: String,
    pub provider_ref: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// A channel operation whose intent is journaled and whose outcome is not yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum PendingOp {
    Capture {
        amount: Money,
    },
    Cancel,
    /// `complete_revert`: undo a pre-authorisation's completion.
    Uncapture,
    /// `reversal`: undo the whole transaction at the channel.
    Reverse,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub id: String,
    pub merchant_id: String,
    pub merchant_order_id: String,
    pub amount: Money,
    pub method: Method,
    pub capture: CaptureMode,
    pub card: Option<CardSummary>,
    pub bank_account: Option<BankAccountSummary>,
    pub wallet_id: Option<String>,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub fingerprint: String,
    pub status: PaymentStatus,
    /// Canceled by a reversal (after an authorisation or a capture, or with the outcome unknown).
    pub reversed: bool,
    pub amount_authorized: Money,
    pub amount_captured: Money,
    /// Sum of succeeded refunds.
    pub amount_refunded: Money,
    pub provider_ref: Option<String>,
    /// Where the cardholder authenticates while the payment `requires_action` (3-D Secure).
    pub next_action_url: Option<String>,
    pub failure: Option<Failure>,
    pub pending: Option<PendingOp>,
    /// Captures and completion reverts requested so far: each one's channel key is its own.
    pub capture_requests: u32,
    pub uncapture_requests: u32,
    pub refunds: Vec<Refund>,
    /// The most recent keyed requests applied (`Command::Keyed`), oldest first, at most
    /// [`APPLIED_REQUESTS_MAX`].
    pub applied_requests: Vec<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// Seq of the last journal entry applied.
    pub seq: u64,
}

/// Keyed requests an order remembers: a retry comes within a few, not hundreds, of others.
pub const APPLIED_REQUESTS_MAX: usize = 64;

impl Payment {
    pub fn currency(&self) -> Currency {
        self.amount.currency()
    }

    /// Sum of refunds still waiting for the channel.
    pub fn amount_refund_pending(&self) -> Money {
        self.refunds
            .iter()
            .filter(|r| r.status == RefundStatus::Pending)
            .fold(Money::zero(self.currency()), |sum, r| {
                sum.checked_add(&r.amount).unwrap_or(sum)
            })
    }

    /// What a new refund may still take: captured − refunded − pending.
    pub fn refundable(&self) -> Money {
        self.amount_captured
            .checked_sub(&self.amount_refunded)
            .and_then(|m| m.checked_sub(&self.amount_refund_pending()))
            .unwrap_or_else(|_| Money::zero(self.currency()))
    }

    /// The channel's idempotency key for the capture in flight (or the last one). The first
    /// keeps the key journals written before completion reverts existed used.
    pub fn capture_key(&self) -> String {
        match self.capture_requests {
            0 | 1 => format!("{}.capture", self.id),
            n => format!("{}.capture.{n}", self.id),
        }
    }

    pub fn uncapture_key(&self) -> String {
        format!("{}.uncapture.{}", self.id, self.uncapture_requests)
    }

    pub fn cancel_key(&self) -> String {
        format!("{}.cancel", self.id)
    }

    pub fn reverse_key(&self) -> String {
        format!("{}.reverse", self.id)
    }

    pub fn refund(&self, id: &str) -> Option<&Refund> {
        self.refunds.iter().find(|r| r.id == id)
    }

    /// Work whose outcome is owed by a channel: the charge itself, a capture or cancel, refunds,
    /// and a payment waiting for its customer (3-D Secure, a QR code): asked about on a
    /// schedule, so a lost callback never leaves it waiting.
    pub fn awaits_channel(&self) -> bool {
        self.status == PaymentStatus::Processing
            || self.status == PaymentStatus::RequiresAction
            || self.pending.is_some()
            || self
                .refunds
                .iter()
                .any(|r| r.status == RefundStatus::Pending)
    }
}

/// What a channel said about a charge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChargeOutcome {
    Succeeded {
        provider_ref: String,
    },
    Authorized {
        provider_ref: String,
    },
    /// The cardholder must authenticate (3-D Secure) at `redirect_url` before the issuer decides.
    RequiresAction {
        provider_ref: String,
        redirect_url: String,
    },
    Declined(Failure),
    /// The channel confirms it never took the charge (and never will: the key is blocked).
    NeverCharged,
    /// Accepted for processing; the outcome follows (a bank transfer).
    Submitted {
        provider_ref: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Create(Box<NewPayment>),
    ChargeOutcome(ChargeOutcome),
    Capture {
        amount: Option<Money>,
    },
    CaptureOutcome(Result<String, Failure>),
    Cancel,
    CancelOutcome(Result<(), Failure>),
    Refund(NewRefund),
    RefundOutcome {
        refund_id: String,
        result: Result<String, Failure>,
    },
    /// `complete_revert`.
    Uncapture,
    UncaptureOutcome(Result<(), Failure>),
    /// `reversal`.
    Reverse,
    ReverseOutcome(Result<(), Failure>),
    /// `command`, sent under an Idempotency-Key: `request` names the key and the action. If
    /// the order already applied it (a retry whose first answer was lost with a node, or cut
    /// short by a deadline), it is refused as [`Rejection::AlreadyApplied`], which callers
    /// answer with the current state; otherwise its events are journaled together with
    /// [`Event::RequestApplied`].
    Keyed {
        request: String,
        command: Box<Command>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Event {
    Created {
        payment: Box<NewPayment>,
    },
    Authorized {
        provider_ref: String,
    },
    ActionRequired {
        provider_ref: String,
        redirect_url: String,
    },
    Captured {
        amount: Money,
        provider_ref: String,
    },
    Failed {
        failure: Failure,
    },
    CaptureRequested {
        amount: Money,
    },
    CaptureFailed {
        failure: Failure,
    },
    CancelRequested,
    Canceled,
    CancelFailed {
        failure: Failure,
    },
    RefundRequested {
        id: String,
        amount: Money,
        reason: Option<RefundReason>,
        metadata: BTreeMap<String, String>,
        fingerprint: String,
    },
    RefundSucceeded {
        refund_id: String,
        provider_ref: String,
    },
    RefundFailed {
        refund_id: String,
        failure: Failure,
    },
    /// The channel accepted the payment; its outcome comes later.
    Submitted {
        provider_ref: String,
    },
    UncaptureRequested,
    /// The completion is undone: back to `authorized`, nothing captured.
    Uncaptured,
    UncaptureFailed {
        failure: Failure,
    },
    ReversalRequested,
    /// The whole transaction is undone at the channel: `canceled`, nothing captured.
    Reversed,
    ReversalFailed {
        failure: Failure,
    },
    /// The keyed request `request` was applied by the events journaled with this one.
    RequestApplied {
        request: String,
    },
}

impl Event {
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Created { .. } => "created",
            Event::Authorized { .. } => "authorized",
            Event::ActionRequired { .. } => "action_required",
            Event::Captured { .. } => "captured",
            Event::Failed { .. } => "failed",
            Event::CaptureRequested { .. } => "capture_requested",
            Event::CaptureFailed { .. } => "capture_failed",
            Event::CancelRequested => "cancel_requested",
            Event::Canceled => "canceled",
            Event::CancelFailed { .. } => "cancel_failed",
            Event::RefundRequested { .. } => "refund_requested",
            Event::RefundSucceeded { .. } => "refund_succeeded",
            Event::RefundFailed { .. } => "refund_failed",
            Event::Submitted { .. } => "submitted",
            Event::UncaptureRequested => "uncapture_requested",
            Event::Uncaptured => "uncaptured",
            Event::UncaptureFailed { .. } => "uncapture_failed",
            Event::ReversalRequested => "reversal_requested",
            Event::Reversed => "reversed",
            Event::ReversalFailed { .. } => "reversal_failed",
            Event::RequestApplied { .. } => "request_applied",
        }
    }
}

/// Why a command was refused. Nothing was written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("no such payment")]
    NotFound,
    #[error("the payment already exists")]
    Exists { same_request: bool },
    #[error("the refund already exists")]
    RefundExists { same_request: bool },
    #[error("cannot {action} a payment whose status is {}", status.as_str())]
    UnexpectedState {
        status: PaymentStatus,
        action: &'static str,
    },
    #[error("a {action} of this payment is already in progress")]
    InProgress { action: &'static str },
    #[error("capture amount exceeds the authorised amount of {authorized}")]
    CaptureExceedsAuthorized { authorized: Money },
    #[error("refund amount exceeds what is still refundable ({refundable})")]
    RefundExceedsCaptured { refundable: Money },
    #[error("currency does not match the payment's currency {expected}")]
    CurrencyMismatch { expected: Currency },
    #[error("a payment may have at most {REFUNDS_PER_PAYMENT_MAX} refunds")]
    TooManyRefunds,
    #[error("{action} applies only to card pre-authorisations (capture: manual)")]
    NotPreauth { action: &'static str },
    #[error("cannot {action} a payment that has refunds")]
    HasRefunds { action: &'static str },
    /// A keyed request this order applied already: answer its current state.
    #[error("this request was applied already")]
    AlreadyApplied,
}

/// A journal that cannot be replayed: an event that does not fit the state it follows.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("journal does not replay: {0}")]
pub struct Corrupt(pub String);

/// Decides a command against the current state. An empty list means "nothing to do":
/// a duplicate or late outcome of something already recorded.
pub fn decide(state: Option<&Payment>, command: &Command) -> Result<Vec<Event>, Rejection> {
    let Some(p) = state else {
        return match command {
            Command::Create(new) => Ok(vec![Event::Created {
                payment: new.clone(),
            }]),
            _ => Err(Rejection::NotFound),
        };
    };
    match command {
        Command::Keyed { request, command } => {
            if p.applied_requests.iter().any(|r| r == request) {
                return Err(Rejection::AlreadyApplied);
            }
            let mut events = decide(state, command)?;
            if !events.is_empty() {
                events.push(Event::RequestApplied {
                    request: request.clone(),
                });
            }
            Ok(events)
        }
        Command::Create(new) => Err(Rejection::Exists {
            same_request: new.fingerprint == p.fingerprint && new.merchant_id == p.merchant_id,
        }),
        Command::ChargeOutcome(outcome) => Ok(decide_charge_outcome(p, outcome)),
        Command::Capture { amount } => decide_capture(p, *amount),
        Command::CaptureOutcome(result) => Ok(match (&p.pending, result) {
            (Some(PendingOp::Capture { amount }), Ok(provider_ref)) => {
                vec![Event::Captured {
                    amount: *amount,
                    provider_ref: provider_ref.clone(),
                }]
            }
            (Some(PendingOp::Capture { .. }), Err(failure)) => {
                vec![Event::CaptureFailed {
                    failure: failure.clone(),
                }]
            }
            _ => vec![],
        }),
        Command::Cancel => decide_cancel(p),
        Command::CancelOutcome(result) => Ok(match (&p.pending, result) {
            (Some(PendingOp::Cancel), Ok(())) => vec![Event::Canceled],
            (Some(PendingOp::Cancel), Err(failure)) => {
                vec![Event::CancelFailed {
                    failure: failure.clone(),
                }]
            }
            _ => vec![],
        }),
        Command::Uncapture => decide_uncapture(p),
        Command::UncaptureOutcome(result) => Ok(match (&p.pending, result) {
            (Some(PendingOp::Uncapture), Ok(())) => vec![Event::Uncaptured],
            (Some(PendingOp::Uncapture), Err(failure)) => vec![Event::UncaptureFailed {
                failure: failure.clone(),
            }],
            _ => vec![],
        }),
        Command::Reverse => decide_reverse(p),
        Command::ReverseOutcome(result) => Ok(match (&p.pending, result) {
            (Some(PendingOp::Reverse), Ok(())) => vec![Event::Reversed],
            (Some(PendingOp::Reverse), Err(failure)) => vec![Event::ReversalFailed {
                failure: failure.clone(),
            }],
            _ => vec![],
        }),
        Command::Refund(new) => decide_refund(p, new),
        Command::RefundOutcome { refund_id, result } => {
            Ok(match (p.refund(refund_id).map(|r| r.status), result) {
                (Some(RefundStatus::Pending), Ok(provider_ref)) => vec![Event::RefundSucceeded {
                    refund_id: refund_id.clone(),
                    provider_ref: provider_ref.clone(),
                }],
                (Some(RefundStatus::Pending), Err(failure)) => vec![Event::RefundFailed {
                    refund_id: refund_id.clone(),
                    failure: failure.clone(),
                }],
                (Some(RefundStatus::Succeeded | RefundStatus::Failed) | None, _) => vec![],
            })
        }
    }
}

fn decide_charge_outcome(p: &Payment, outcome: &ChargeOutcome) -> Vec<Event> {
    match p.status {
        PaymentStatus::Processing | PaymentStatus::RequiresAction => {}
        PaymentStatus::Authorized
        | PaymentStatus::Succeeded
        | PaymentStatus::Failed
        | PaymentStatus::Canceled => return vec![],
    }
    match outcome {
        ChargeOutcome::RequiresAction { .. } if p.status == PaymentStatus::RequiresAction => vec![],
        ChargeOutcome::RequiresAction {
            provider_ref,
            redirect_url,
        } => vec![Event::ActionRequired {
            provider_ref: provider_ref.clone(),
            redirect_url: redirect_url.clone(),
        }],
        ChargeOutcome::Succeeded { provider_ref } => {
            vec![Event::Captured {
                amount: p.amount,
                provider_ref: provider_ref.clone(),
            }]
        }
        ChargeOutcome::Authorized { provider_ref } => {
            vec![Event::Authorized {
                provider_ref: provider_ref.clone(),
            }]
        }
        ChargeOutcome::Declined(failure) => vec![Event::Failed {
            failure: failure.clone(),
        }],
        ChargeOutcome::NeverCharged => vec![Event::Failed {
            failure: Failure::new(
                "processing_error",
                "the payment did not reach the payment channel; nothing was charged",
            ),
        }],
        ChargeOutcome::Submitted { provider_ref } => {
            if p.status == PaymentStatus::Processing && p.provider_ref.is_none() {
                vec![Event::Submitted {
                    provider_ref: provider_ref.clone(),
                }]
            } else {
                vec![]
            }
        }
    }
}

fn expect_currency(p: &Payment, amount: &Money) -> Result<(), Rejection> {
    if amount.currency() != p.currency() {
        return Err(Rejection::CurrencyMismatch {
            expected: p.currency(),
        });
    }
    Ok(())
}

fn decide_capture(p: &Payment, amount: Option<Money>) -> Result<Vec<Event>, Rejection> {
    if p.status != PaymentStatus::Authorized {
        return Err(Rejection::UnexpectedState {
            status: p.status,
            action: "capture",
        });
    }
    if let Some(op) = &p.pending {
        return Err(Rejection::InProgress {
            action: pending_name(op),
        });
    }
    let amount = amount.unwrap_or(p.amount_authorized);
    expect_currency(p, &amount)?;
    if amount.checked_cmp(&p.amount_authorized) == Ok(std::cmp::Ordering::Greater) {
        return Err(Rejection::CaptureExceedsAuthorized {
            authorized: p.amount_authorized,
        });
    }
    Ok(vec![Event::CaptureRequested { amount }])
}

fn pending_name(op: &PendingOp) -> &'static str {
    match op {
        PendingOp::Capture { .. } => "capture",
        PendingOp::Cancel => "cancel",
        PendingOp::Uncapture => "complete_revert",
        PendingOp::Reverse => "reversal",
    }
}

fn nothing_pending(p: &Payment) -> Result<(), Rejection> {
    match &p.pending {
        Some(op) => Err(Rejection::InProgress {
            action: pending_name(op),
        }),
        None => Ok(()),
    }
}

fn decide_cancel(p: &Payment) -> Result<Vec<Event>, Rejection> {
    match p.status {
        // An authorisation is voided; a payment waiting for its customer (3-D Secure, a QR
        // code) is closed at the channel first, so a late payment cannot slip through.
        PaymentStatus::Authorized | PaymentStatus::RequiresAction => {
            nothing_pending(p)?;
            Ok(vec![Event::CancelRequested])
        }
        PaymentStatus::Processing
        | PaymentStatus::Succeeded
        | PaymentStatus::Failed
        | PaymentStatus::Canceled => Err(Rejection::UnexpectedState {
            status: p.status,
            action: "cancel",
        }),
    }
}

/// Nothing refunded and nothing on its way back: what an undo of the whole capture needs.
fn untouched_by_refunds(p: &Payment) -> bool {
    p.amount_refunded.is_zero() && p.amount_refund_pending().is_zero()
}

/// `complete_revert`: a completed pre-authorisation goes back to `authorized`.
fn decide_uncapture(p: &Payment) -> Result<Vec<Event>, Rejection> {
    let action = "complete_revert";
    if !(p.method.supports_manual_capture() && p.capture == CaptureMode::Manual) {
        return Err(Rejection::NotPreauth { action });
    }
    if p.status != PaymentStatus::Succeeded {
        return Err(Rejection::UnexpectedState {
            status: p.status,
            action,
        });
    }
    nothing_pending(p)?;
    if !untouched_by_refunds(p) {
        return Err(Rejection::HasRefunds { action });
    }
    Ok(vec![Event::UncaptureRequested])
}

/// `reversal`: the whole card transaction is undone, whatever stage it reached — including a
/// charge whose outcome is still unknown.
fn decide_reverse(p: &Payment) -> Result<Vec<Event>, Rejection> {
    let action = "reverse";
    if p.method != Method::Card {
        return Err(Rejection::NotPreauth { action });
    }
    match p.status {
        PaymentStatus::Processing | PaymentStatus::Authorized => {}
        PaymentStatus::Succeeded if !untouched_by_refunds(p) => {
            return Err(Rejection::HasRefunds { action });
        }
        PaymentStatus::Succeeded => {}
        PaymentStatus::RequiresAction | PaymentStatus::Failed | PaymentStatus::Canceled => {
            return Err(Rejection::UnexpectedState {
                status: p.status,
                action,
            });
        }
    }
    nothing_pending(p)?;
    Ok(vec![Event::ReversalRequested])
}

fn decide_refund(p: &Payment, new: &NewRefund) -> Result<Vec<Event>, Rejection> {
    if let Some(existing) = p.refund(&new.id) {
        return Err(Rejection::RefundExists {
            same_request: existing.fingerprint == new.fingerprint,
        });
    }
    if p.status != PaymentStatus::Succeeded {
        return Err(Rejection::UnexpectedState {
            status: p.status,
            action: "refund",
        });
    }
    nothing_pending(p)?;
    if p.refunds.len() >= REFUNDS_PER_PAYMENT_MAX {
        return Err(Rejection::TooManyRefunds);
    }
    let refundable = p.refundable();
    let amount = new.amount.unwrap_or(refundable);
    expect_currency(p, &amount)?;
    if refundable.is_zero() || amount.checked_cmp(&refundable) == Ok(std::cmp::Ordering::Greater) {
        return Err(Rejection::RefundExceedsCaptured { refundable });
    }
    Ok(vec![Event::RefundRequested {
        id: new.id.clone(),
        amount,
        reason: new.reason,
        metadata: new.metadata.clone(),
        fingerprint: new.fingerprint.clone(),
    }])
}

/// Applies one journaled event. Checks what must hold before, and the invariants after.
pub fn apply(
    state: Option<Payment>,
    event: &Event,
    seq: u64,
    at_ms: i64,
) -> Result<Payment, Corrupt> {
    let mut p = match (state, event) {
        (None, Event::Created { payment }) => created(payment, at_ms),
        (None, other) => return Err(Corrupt(format!("{} before created", other.kind()))),
        (Some(_), Event::Created { .. }) => return Err(Corrupt("created twice".into())),
        (Some(mut p), event) => {
            apply_to(&mut p, event, at_ms)?;
            p
        }
    };
    if seq != p.seq + 1 && !(seq == 1 && p.seq == 0) {
        return Err(Corrupt(format!("seq {seq} follows {}", p.seq)));
    }
    p.seq = seq;
    p.updated_ms = at_ms.max(p.updated_ms);
    check_invariants(&p).map_err(Corrupt)?;
    Ok(p)
}

fn created(new: &NewPayment, at_ms: i64) -> Payment {
    let zero = Money::zero(new.amount.currency());
    Payment {
        id: new.id.clone(),
        merchant_id: new.merchant_id.clone(),
        merchant_order_id: new.merchant_order_id.clone(),
        amount: new.amount,
        method: new.method,
        capture: new.capture,
        card: new.card.clone(),
        bank_account: new.bank_account.clone(),
        wallet_id: new.wallet_id.clone(),
        description: new.description.clone(),
        metadata: new.metadata.clone(),
        fingerprint: new.fingerprint.clone(),
        status: PaymentStatus::Processing,
        reversed: false,
        capture_requests: 0,
        uncapture_requests: 0,
        amount_authorized: zero,
        amount_captured: zero,
        amount_refunded: zero,
        provider_ref: None,
        next_action_url: None,
        failure: None,
        pending: None,
        refunds: Vec::new(),
        applied_requests: Vec::new(),
        created_ms: at_ms,
        updated_ms: at_ms,
        seq: 0,
    }
}

fn become_status(p: &mut Payment, next: PaymentStatus) -> Result<(), Corrupt> {
    if !p.status.can_become(next) {
        return Err(Corrupt(format!(
            "{} cannot become {}",
            p.status.as_str(),
            next.as_str()
        )));
    }
    p.status = next;
    Ok(())
}

fn money(result: Result<Money, crate::money::MoneyError>) -> Result<Money, Corrupt> {
    result.map_err(|e| Corrupt(e.to_string()))
}

fn apply_to(p: &mut Payment, event: &Event, at_ms: i64) -> Result<(), Corrupt> {
    match event {
        Event::Created { .. } => return Err(Corrupt("created twice".into())),
        Event::RequestApplied { request } => {
            if p.applied_requests.len() >= APPLIED_REQUESTS_MAX {
                p.applied_requests.remove(0);
            }
            p.applied_requests.push(request.clone());
        }
        Event::Authorized { provider_ref } => {
            // Only a charge's outcome authorises; a completion comes back only by `Uncaptured`.
            if !matches!(
                p.status,
                PaymentStatus::Processing | PaymentStatus::RequiresAction
            ) {
                return Err(Corrupt(format!(
                    "{} cannot become authorized by a charge outcome",
                    p.status.as_str()
                )));
            }
            become_status(p, PaymentStatus::Authorized)?;
            p.amount_authorized = p.amount;
            p.provider_ref = Some(provider_ref.clone());
            p.next_action_url = None;
        }
        Event::ActionRequired {
            provider_ref,
            redirect_url,
        } => {
            become_status(p, PaymentStatus::RequiresAction)?;
            p.provider_ref = Some(provider_ref.clone());
            p.next_action_url = Some(redirect_url.clone());
        }
        Event::Captured {
            amount,
            provider_ref,
        } => {
            match (p.status, &p.pending) {
                (PaymentStatus::Authorized, Some(PendingOp::Capture { amount: asked }))
                    if asked == amount =>
                {
                    p.pending = None;
                }
                // The charge's own outcome. A cancel sent meanwhile lost the race (the channel
                // will refuse it); a reversal still goes ahead.
                (
                    PaymentStatus::Processing | PaymentStatus::RequiresAction,
                    None | Some(PendingOp::Cancel | PendingOp::Reverse),
                ) => {
                    p.amount_authorized = p.amount;
                    if p.pending == Some(PendingOp::Cancel) {
                        p.pending = None;
                    }
                }
                _ => {
                    return Err(Corrupt(
                        "captured without a charge or capture in flight".into(),
                    ));
                }
            }
            become_status(p, PaymentStatus::Succeeded)?;
            p.next_action_url = None;
            p.amount_captured = *amount;
            p.provider_ref = Some(provider_ref.clone());
        }
        Event::Failed { failure } => {
            become_status(p, PaymentStatus::Failed)?;
            p.failure = Some(failure.clone());
            p.next_action_url = None;
            // Nothing was charged: a cancel or reversal in flight has nothing left to undo.
            p.pending = None;
        }
        Event::Submitted { provider_ref } => {
            if p.status != PaymentStatus::Processing {
                return Err(Corrupt("submitted outside processing".into()));
            }
            p.provider_ref = Some(provider_ref.clone());
        }
        Event::CaptureRequested { amount } => {
            if p.status != PaymentStatus::Authorized || p.pending.is_some() {
                return Err(Corrupt("capture requested outside authorized".into()));
            }
            p.pending = Some(PendingOp::Capture { amount: *amount });
            p.capture_requests += 1;
        }
        Event::CaptureFailed { failure }
        | Event::CancelFailed { failure }
        | Event::UncaptureFailed { failure }
        | Event::ReversalFailed { failure } => {
            if p.pending.take().is_none() {
                return Err(Corrupt("operation failed without being requested".into()));
            }
            p.failure = Some(failure.clone());
        }
        Event::CancelRequested => {
            let cancelable = matches!(
                p.status,
                PaymentStatus::Authorized | PaymentStatus::RequiresAction
            );
            if !cancelable || p.pending.is_some() {
                return Err(Corrupt("cancel requested outside authorized".into()));
            }
            p.pending = Some(PendingOp::Cancel);
        }
        Event::Canceled => {
            // A cancel voids or closes; a success is undone only by `Reversed`.
            if p.status == PaymentStatus::Succeeded {
                return Err(Corrupt(
                    "succeeded cannot become canceled by a cancel".into(),
                ));
            }
            become_status(p, PaymentStatus::Canceled)?;
            p.pending = None;
            p.next_action_url = None;
        }
        Event::UncaptureRequested => {
            if p.status != PaymentStatus::Succeeded || p.pending.is_some() {
                return Err(Corrupt(
                    "complete_revert requested outside succeeded".into(),
                ));
            }
            p.pending = Some(PendingOp::Uncapture);
            p.uncapture_requests += 1;
        }
        Event::Uncaptured => {
            if p.pending != Some(PendingOp::Uncapture) {
                return Err(Corrupt(
                    "uncaptured without a complete_revert in flight".into(),
                ));
            }
            become_status(p, PaymentStatus::Authorized)?;
            p.pending = None;
            p.amount_captured = Money::zero(p.currency());
        }
        Event::ReversalRequested => {
            let reversible = matches!(
                p.status,
                PaymentStatus::Processing | PaymentStatus::Authorized | PaymentStatus::Succeeded
            );
            if !reversible || p.pending.is_some() {
                return Err(Corrupt(
                    "reversal requested in a state it cannot undo".into(),
                ));
            }
            p.pending = Some(PendingOp::Reverse);
        }
        Event::Reversed => {
            if p.pending != Some(PendingOp::Reverse) {
                return Err(Corrupt("reversed without a reversal in flight".into()));
            }
            become_status(p, PaymentStatus::Canceled)?;
            p.pending = None;
            p.reversed = true;
            p.next_action_url = None;
            p.amount_captured = Money::zero(p.currency());
        }
        Event::RefundRequested {
            id,
            amount,
            reason,
            metadata,
            fingerprint,
        } => {
            if p.status != PaymentStatus::Succeeded || exceeds(amount, &p.refundable())? {
                return Err(Corrupt(format!("refund {id} exceeds what is refundable")));
            }
            p.refunds.push(Refund {
                id: id.clone(),
                amount: *amount,
                status: RefundStatus::Pending,
                reason: *reason,
                failure: None,
                metadata: metadata.clone(),
                fingerprint: fingerprint.clone(),
                provider_ref: None,
                created_ms: at_ms,
                updated_ms: at_ms,
            });
        }
        Event::RefundSucceeded {
            refund_id,
            provider_ref,
        } => {
            let refund = pending_refund(p, refund_id)?;
            refund.status = RefundStatus::Succeeded;
            refund.provider_ref = Some(provider_ref.clone());
            refund.updated_ms = at_ms;
            let amount = refund.amount;
            p.amount_refunded = money(p.amount_refunded.checked_add(&amount))?;
        }
        Event::RefundFailed { refund_id, failure } => {
            let refund = pending_refund(p, refund_id)?;
            refund.status = RefundStatus::Failed;
            refund.failure = Some(failure.clone());
            refund.updated_ms = at_ms;
        }
    }
    Ok(())
}

fn pending_refund<'a>(p: &'a mut Payment, refund_id: &str) -> Result<&'a mut Refund, Corrupt> {
    p.refunds
        .iter_mut()
        .find(|r| r.id == refund_id && r.status == RefundStatus::Pending)
        .ok_or_else(|| {
            Corrupt(format!(
                "outcome for refund {refund_id} that is not pending"
            ))
        })
}

fn exceeds(a: &Money, b: &Money) -> Result<bool, Corrupt> {
    a.checked_cmp(b)
        .map(|o| o == std::cmp::Ordering::Greater)
        .map_err(|e| Corrupt(e.to_string()))
}

/// What must hold after every event.
pub fn check_invariants(p: &Payment) -> Result<(), String> {
    let exceeds = |a: &Money, b: &Money| exceeds(a, b).map_err(|c| c.0);
    if exceeds(&p.amount_authorized, &p.amount)? {
        return Err("authorized exceeds amount".into());
    }
    if exceeds(&p.amount_captured, &p.amount_authorized)? {
        return Err("captured exceeds authorized".into());
    }
    let refunded_and_pending = p
        .amount_refunded
        .checked_add(&p.amount_refund_pending())
        .map_err(|e| e.to_string())?;
    if exceeds(&refunded_and_pending, &p.amount_captured)? {
        return Err("refunded exceeds captured".into());
    }
    let captured = !p.amount_captured.is_zero();
    match p.status {
        PaymentStatus::Succeeded if !captured => Err("succeeded without a capture".into()),
        PaymentStatus::Succeeded => Ok(()),
        PaymentStatus::Processing
        | PaymentStatus::RequiresAction
        | PaymentStatus::Authorized
        | PaymentStatus::Failed
        | PaymentStatus::Canceled => {
            if captured {
                Err(format!("{} with money captured", p.status.as_str()))
            } else if p.refunds.iter().any(|r| r.status != RefundStatus::Failed) {
                Err("refunds on a payment that did not succeed".into())
            } else {
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests;
