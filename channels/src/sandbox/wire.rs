//! The sandbox's JSON shapes, as the provider defines them. Kassa's side keeps its own copy in
//! `card::transformers`; the integration tests hold the two together.

use serde::{Deserialize, Serialize};

use super::ledger::{ChargeRecord, ChargeStatus, RefundRecord, RefundStatus};
use crate::secret::Secret;

/// `POST /card/v1/charges`. The card fields are [`Secret`]s so no `Debug` can print them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChargeRequest {
    pub idempotency_key: String,
    pub amount_minor: i64,
    pub currency: String,
    pub pan: Secret<String>,
    pub exp_month: u8,
    pub exp_year: u16,
    pub cvc: Secret<String>,
    pub capture: bool,
}

/// `POST /card/v1/charges/{id}/capture`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CaptureRequest {
    pub idempotency_key: String,
    pub amount_minor: i64,
}

/// `POST /card/v1/charges/{id}/void`, `…/uncapture`, `…/reverse` and
/// `POST /card/v1/charges/resolve`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyRequest {
    pub idempotency_key: String,
}

/// `POST /card/v1/refunds`. `currency` is optional; when given it must be the charge's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RefundRequest {
    pub idempotency_key: String,
    pub charge_id: String,
    pub amount_minor: i64,
    #[serde(default)]
    pub currency: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct CardView {
    pub bin: String,
    pub last4: String,
}

/// A charge as the provider shows it. Never the PAN: `card` is bin and last4. A reversed
/// charge keeps its status and `captured_minor` (what it had taken), with `reversed: true`
/// saying all of it was given back.
#[derive(Debug, Serialize)]
pub(crate) struct ChargeView {
    pub charge_id: String,
    pub idempotency_key: String,
    pub status: &'static str,
    pub decline_code: Option<String>,
    pub decline_message: Option<&'static str>,
    pub amount_minor: i64,
    pub captured_minor: i64,
    pub refunded_minor: i64,
    pub currency: String,
    pub voided: bool,
    pub reversed: bool,
    pub card: CardView,
    pub created: i64,
}

impl From<ChargeRecord> for ChargeView {
    fn from(record: ChargeRecord) -> Self {
        let status = match record.status {
            ChargeStatus::Succeeded => "succeeded",
            ChargeStatus::Authorized => "authorized",
            ChargeStatus::Declined => "declined",
            ChargeStatus::RequiresAction => "requires_action",
        };
        let decline_message = record.decline_code.as_deref().map(decline_message);
        Self {
            charge_id: record.charge_id,
            idempotency_key: record.idempotency_key,
            status,
            decline_code: record.decline_code,
            decline_message,
            amount_minor: record.amount_minor,
            captured_minor: record.captured_minor,
            refunded_minor: record.refunded_minor,
            currency: record.currency,
            voided: record.voided,
            reversed: record.reversed,
            card: CardView {
                bin: record.card_bin,
                last4: record.card_last4,
            },
            created: record.created_unix_s,
        }
    }
}

fn decline_message(code: &str) -> &'static str {
    match code {
        "insufficient_funds" => "The card has insufficient funds.",
        "authentication_failed" => "The cardholder did not pass 3-D Secure authentication.",
        _ => "The card was declined.",
    }
}

/// A refund as the provider shows it.
#[derive(Debug, Serialize)]
pub(crate) struct RefundView {
    pub refund_id: String,
    pub idempotency_key: String,
    pub charge_id: String,
    pub status: &'static str,
    pub failure_code: Option<String>,
    pub amount_minor: i64,
    pub created: i64,
}

impl From<RefundRecord> for RefundView {
    fn from(record: RefundRecord) -> Self {
        let status = match record.status {
            RefundStatus::Succeeded => "succeeded",
            RefundStatus::Failed => "failed",
        };
        Self {
            refund_id: record.refund_id,
            idempotency_key: record.idempotency_key,
            charge_id: record.charge_id,
            status,
            failure_code: record.failure_code,
            amount_minor: record.amount_minor,
            created: record.created_unix_s,
        }
    }
}

/// The answer to `POST /card/v1/charges/resolve`.
#[derive(Debug, Serialize)]
pub(crate) struct ResolveView {
    pub found: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub charge: Option<ChargeView>,
}

/// `GET /sandbox/ledger`.
#[derive(Debug, Serialize)]
pub(crate) struct LedgerView {
    pub charges: Vec<ChargeView>,
    pub refunds: Vec<RefundView>,
}

/// `{"error":{"code","message"}}`.
#[derive(Debug, Serialize)]
pub(crate) struct ErrorView<'a> {
    pub error: ErrorDetail<'a>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ErrorDetail<'a> {
    pub code: &'a str,
    pub message: &'a str,
}
