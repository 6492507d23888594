//! Wire types of the card protocol as Kassa sends and reads them, and their translation to and
//! from the domain-facing types in [`crate::card`].
//!
//! The protocol is JSON with amounts as integers in minor units. The sandbox keeps its own
//! copy of these shapes (`sandbox::wire`), as a real acquirer would, so the integration tests
//! check the contract rather than a shared struct.

use serde::{Deserialize, Serialize};

use super::{ChargeOutcome, ResolvedCharge};
use crate::error::ChannelError;

/// `POST /card/v1/charges`. Holds the PAN and CVC: the serialised body is never logged.
#[derive(Serialize)]
pub(crate) struct ChargeBody<'a> {
    pub idempotency_key: &'a str,
    pub amount_minor: i64,
    pub currency: &'a str,
    pub pan: &'a str,
    pub exp_month: u8,
    pub exp_year: u16,
    pub cvc: &'a str,
    pub capture: bool,
}

/// `POST /card/v1/charges/{id}/capture`.
#[derive(Serialize)]
pub(crate) struct CaptureBody<'a> {
    pub idempotency_key: &'a str,
    pub amount_minor: i64,
}

/// `POST /card/v1/charges/{id}/void`, `…/uncapture`, `…/reverse` and
/// `POST /card/v1/charges/resolve`.
#[derive(Serialize)]
pub(crate) struct KeyBody<'a> {
    pub idempotency_key: &'a str,
}

/// `POST /card/v1/refunds`.
#[derive(Serialize)]
pub(crate) struct RefundBody<'a> {
    pub idempotency_key: &'a str,
    pub charge_id: &'a str,
    pub amount_minor: i64,
    pub currency: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ChargeStatus {
    Succeeded,
    Authorized,
    Declined,
    RequiresAction,
}

/// A charge as the provider reports it.
#[derive(Debug, Deserialize)]
pub(crate) struct ChargeResponse {
    pub charge_id: String,
    pub status: ChargeStatus,
    pub decline_code: Option<String>,
    #[serde(default)]
    pub decline_message: Option<String>,
    pub amount_minor: i64,
    pub captured_minor: i64,
    pub refunded_minor: i64,
    pub currency: String,
    pub voided: bool,
    /// Absent from providers (and callbacks) that predate reversals: then nothing was reversed.
    #[serde(default)]
    pub reversed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RefundStatus {
    Succeeded,
    Failed,
}

/// A refund as the provider reports it.
#[derive(Debug, Deserialize)]
pub(crate) struct RefundResponse {
    pub refund_id: String,
    pub status: RefundStatus,
    pub failure_code: Option<String>,
}

/// The answer to `POST /card/v1/charges/resolve`.
#[derive(Debug, Deserialize)]
pub(crate) struct ResolveResponse {
    pub found: bool,
    pub charge: Option<ChargeResponse>,
}

/// `{"error":{"code","message"}}`, the provider's error body.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorResponse {
    pub error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ErrorDetail {
    pub code: String,
}

/// Parses a 2xx body. The error text names the expected shape, never the body's contents.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(
    body: &[u8],
    what: &str,
) -> Result<T, ChannelError> {
    serde_json::from_slice(body).map_err(|error| {
        ChannelError::Unreadable(format!(
            "{what} at line {} column {}: {:?}",
            error.line(),
            error.column(),
            error.classify()
        ))
    })
}

/// The `code` of a provider error body, or `unknown`.
pub(crate) fn error_code(body: &[u8]) -> String {
    serde_json::from_slice::<ErrorResponse>(body)
        .map(|response| response.error.code)
        .unwrap_or_else(|_| String::from("unknown"))
}

impl ChargeResponse {
    /// `base_url` is the provider's, for the cardholder's 3-D Secure page.
    pub(crate) fn into_outcome(self, base_url: &str) -> Result<ChargeOutcome, ChannelError> {
        Ok(match self.status {
            ChargeStatus::RequiresAction => ChargeOutcome::RequiresAction {
                redirect_url: format!("{base_url}/challenge/{}", self.charge_id),
                provider_ref: self.charge_id,
            },
            ChargeStatus::Succeeded => ChargeOutcome::Succeeded {
                provider_ref: self.charge_id,
            },
            ChargeStatus::Authorized => ChargeOutcome::Authorized {
                provider_ref: self.charge_id,
            },
            ChargeStatus::Declined => {
                let code = self.decline_code.ok_or_else(|| {
                    ChannelError::Unreadable("a declined charge without a decline_code".into())
                })?;
                let message = self
                    .decline_message
                    .unwrap_or_else(|| String::from("The card was declined."));
                ChargeOutcome::Declined { code, message }
            }
        })
    }

    pub(crate) fn into_resolved(self, base_url: &str) -> Result<ResolvedCharge, ChannelError> {
        let amount_minor = self.amount_minor;
        let captured_minor = self.captured_minor;
        let refunded_minor = self.refunded_minor;
        let voided = self.voided;
        let reversed = self.reversed;
        let currency = self.currency.clone();
        let outcome = self.into_outcome(base_url)?;
        Ok(ResolvedCharge {
            outcome,
            amount_minor,
            currency,
            captured_minor,
            refunded_minor,
            voided,
            reversed,
        })
    }
}
