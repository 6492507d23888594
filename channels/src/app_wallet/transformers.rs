//! Wire types of the `app_wallet` protocol as Kassa sends and reads them, and their translation
//! to the domain types in [`crate::outcome`]. JSON both ways; amounts are integers in minor
//! units (`amount.total`), as WeChat Pay's are in fen.
//!
//! The sandbox keeps its own copy of these shapes (`sandbox::app_api`), as a real wallet would.

use serde::{Deserialize, Serialize};

use crate::error::ChannelError;
use crate::outcome::{self, AsyncPayment, AsyncStatus, ORDER_CLOSED, PAYMENT_DECLINED, Reported};

/// `POST /app/v3/pay/transactions/native`.
#[derive(Serialize)]
pub(crate) struct CreateBody<'a> {
    pub out_trade_no: &'a str,
    pub description: &'a str,
    pub amount: AmountBody<'a>,
}

#[derive(Serialize)]
pub(crate) struct AmountBody<'a> {
    pub total: i64,
    pub currency: &'a str,
}

/// `POST /app/v3/refund/domestic/refunds`.
#[derive(Serialize)]
pub(crate) struct RefundBody<'a> {
    pub prepay_id: &'a str,
    pub out_refund_no: &'a str,
    pub amount: RefundAmountBody<'a>,
}

#[derive(Serialize)]
pub(crate) struct RefundAmountBody<'a> {
    pub refund: i64,
    pub currency: &'a str,
}

/// The empty body of a close.
#[derive(Serialize)]
pub(crate) struct Empty {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum TradeState {
    /// Not paid yet.
    Notpay,
    Success,
    /// The payment failed (the customer declined, or the wallet refused).
    Payerror,
    /// Closed unpaid.
    Closed,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Amount {
    pub total: i64,
    pub currency: String,
    #[serde(default)]
    pub refunded: i64,
}

/// A transaction as the wallet reports it (create, query, close, and inside callbacks).
#[derive(Debug, Deserialize)]
pub(crate) struct Transaction {
    pub prepay_id: String,
    pub out_trade_no: String,
    pub trade_state: TradeState,
    pub amount: Amount,
    #[serde(default)]
    pub code_url: Option<String>,
    #[serde(default)]
    pub fail_code: Option<String>,
}

/// The answer to `GET /app/v3/pay/transactions/out-trade-no/{out_trade_no}`.
#[derive(Debug, Deserialize)]
pub(crate) struct QueryResponse {
    pub found: bool,
    #[serde(default)]
    pub transaction: Option<Transaction>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum RefundStatus {
    Success,
    Failed,
}

/// The answer to a refund.
#[derive(Debug, Deserialize)]
pub(crate) struct RefundResponse {
    pub refund_id: String,
    pub status: RefundStatus,
    #[serde(default)]
    pub fail_code: Option<String>,
}

/// A callback: `{"id","create_time","event_type","resource_type","summary","resource":{…}}`.
#[derive(Debug, Deserialize)]
pub(crate) struct Notification {
    pub event_type: String,
    pub resource: Resource,
}

/// The encrypted transaction inside a callback.
#[derive(Debug, Deserialize)]
pub(crate) struct Resource {
    pub algorithm: String,
    pub ciphertext: String,
    pub nonce: String,
    #[serde(default)]
    pub associated_data: String,
}

impl Reported for Transaction {
    const ANOTHER_KEY: &'static str = "transaction (another out_trade_no)";

    fn key(&self) -> &str {
        &self.out_trade_no
    }

    fn into_payment(self) -> Result<AsyncPayment, ChannelError> {
        let amount = self.amount;
        if amount.total <= 0 || !(0..=amount.total).contains(&amount.refunded) {
            return Err(outcome::inconsistent("transaction amounts"));
        }
        let status = match self.trade_state {
            TradeState::Notpay => AsyncStatus::Pending {
                action_url: self.code_url,
            },
            TradeState::Success => AsyncStatus::Succeeded,
            TradeState::Payerror => outcome::failed(
                self.fail_code
                    .unwrap_or_else(|| PAYMENT_DECLINED.to_owned()),
            ),
            TradeState::Closed => {
                outcome::failed(self.fail_code.unwrap_or_else(|| ORDER_CLOSED.to_owned()))
            }
        };
        Ok(AsyncPayment {
            provider_ref: self.prepay_id,
            idempotency_key: self.out_trade_no,
            amount_minor: amount.total,
            currency: amount.currency,
            status,
            refunded_minor: amount.refunded,
        })
    }
}
