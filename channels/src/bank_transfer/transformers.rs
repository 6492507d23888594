//! Wire types of the `bank_transfer` protocol as Kassa sends and reads them, and their
//! translation to the domain types in [`crate::outcome`]. JSON both ways, amounts as integers
//! in minor units.
//!
//! The sandbox keeps its own copy of these shapes (`sandbox::bank_api`), as a real bank would.

use serde::{Deserialize, Serialize};

use crate::error::ChannelError;
use crate::outcome::{self, AsyncPayment, AsyncStatus, Reported};

/// `POST /bank/v1/transfers`. Holds the payer's account number: the serialised body is never
/// logged.
#[derive(Serialize)]
pub(crate) struct TransferBody<'a> {
    pub end_to_end_id: &'a str,
    pub amount_minor: i64,
    pub currency: &'a str,
    pub debtor_account: &'a str,
    pub debtor_name: &'a str,
    pub remittance_info: &'a str,
}

/// `POST /bank/v1/transfers/query`.
#[derive(Serialize)]
pub(crate) struct QueryBody<'a> {
    pub end_to_end_id: &'a str,
}

/// `POST /bank/v1/returns`: a return transfer of (part of) a settled one.
#[derive(Serialize)]
pub(crate) struct ReturnBody<'a> {
    pub return_id: &'a str,
    pub transfer_id: &'a str,
    pub amount_minor: i64,
    pub currency: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TransferStatus {
    /// Submitted and accepted for processing; the outcome is not known yet.
    Accepted,
    Settled,
    Rejected,
}

/// A transfer as the bank reports it.
#[derive(Debug, Deserialize)]
pub(crate) struct Transfer {
    pub transfer_id: String,
    pub end_to_end_id: String,
    pub status: TransferStatus,
    #[serde(default)]
    pub reason_code: Option<String>,
    pub amount_minor: i64,
    pub currency: String,
    pub returned_minor: i64,
}

/// The answer to a query.
#[derive(Debug, Deserialize)]
pub(crate) struct QueryResponse {
    pub found: bool,
    #[serde(default)]
    pub transfer: Option<Transfer>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ReturnStatus {
    Completed,
    Refused,
}

/// The answer to a return.
#[derive(Debug, Deserialize)]
pub(crate) struct ReturnResponse {
    pub return_ref: String,
    pub status: ReturnStatus,
    #[serde(default)]
    pub reason_code: Option<String>,
}

/// A callback: `{"event_id","event_type":"transfer.settled"|"transfer.rejected","transfer",
/// "sent_at"}`.
#[derive(Debug, Deserialize)]
pub(crate) struct Event {
    pub event_type: String,
    pub transfer: Transfer,
}

impl Reported for Transfer {
    const ANOTHER_KEY: &'static str = "transfer (another end_to_end_id)";

    fn key(&self) -> &str {
        &self.end_to_end_id
    }

    fn into_payment(self) -> Result<AsyncPayment, ChannelError> {
        if self.amount_minor <= 0 || !(0..=self.amount_minor).contains(&self.returned_minor) {
            return Err(outcome::inconsistent("transfer amounts"));
        }
        let status = match self.status {
            TransferStatus::Accepted => AsyncStatus::Pending { action_url: None },
            TransferStatus::Settled => AsyncStatus::Succeeded,
            TransferStatus::Rejected => outcome::failed(
                self.reason_code
                    .ok_or_else(|| outcome::inconsistent("rejected transfer (no reason_code)"))?,
            ),
        };
        Ok(AsyncPayment {
            provider_ref: self.transfer_id,
            idempotency_key: self.end_to_end_id,
            amount_minor: self.amount_minor,
            currency: self.currency,
            status,
            refunded_minor: self.returned_minor,
        })
    }
}
