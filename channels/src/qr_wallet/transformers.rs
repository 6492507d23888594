//! Wire types of the `qr_wallet` protocol as Kassa reads them, and their translation to the
//! domain types in [`crate::outcome`]. Requests are signed forms (built in `qr_wallet.rs`);
//! answers are JSON; callbacks are signed forms with the trade's fields.
//!
//! The sandbox keeps its own copy of these shapes (`sandbox::qr_api`), as a real wallet would.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::ChannelError;
use crate::outcome::{self, AsyncPayment, AsyncStatus, ORDER_CLOSED, Reported};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum TradeStatus {
    /// Created, waiting for the customer to scan and pay.
    WaitBuyerPay,
    /// Paid.
    TradeSuccess,
    /// Paid, and past the refund window.
    TradeFinished,
    /// Closed unpaid (declined, or closed by the merchant).
    TradeClosed,
}

impl TradeStatus {
    fn from_wire(text: &str) -> Option<Self> {
        match text {
            "WAIT_BUYER_PAY" => Some(TradeStatus::WaitBuyerPay),
            "TRADE_SUCCESS" => Some(TradeStatus::TradeSuccess),
            "TRADE_FINISHED" => Some(TradeStatus::TradeFinished),
            "TRADE_CLOSED" => Some(TradeStatus::TradeClosed),
            _ => None,
        }
    }
}

/// A trade as the wallet reports it (the answer to precreate, query and close).
#[derive(Debug, Deserialize)]
pub(crate) struct Trade {
    pub trade_no: String,
    pub out_trade_no: String,
    pub trade_status: TradeStatus,
    pub total_amount_minor: i64,
    pub currency: String,
    pub refund_amount_minor: i64,
    #[serde(default)]
    pub qr_code: Option<String>,
    #[serde(default)]
    pub fail_code: Option<String>,
}

/// The answer to `POST /qr/v1/trade/query`.
#[derive(Debug, Deserialize)]
pub(crate) struct QueryResponse {
    pub found: bool,
    #[serde(default)]
    pub trade: Option<Trade>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum RefundStatus {
    RefundSuccess,
    RefundFail,
}

/// The answer to `POST /qr/v1/trade/refund`.
#[derive(Debug, Deserialize)]
pub(crate) struct RefundResponse {
    pub refund_no: String,
    pub refund_status: RefundStatus,
    #[serde(default)]
    pub fail_code: Option<String>,
}

impl Trade {
    /// The trade in a callback's (verified) parameters. The error names the field, never its
    /// value.
    pub(crate) fn from_params(params: &BTreeMap<String, String>) -> Result<Self, String> {
        let text = |name: &str| {
            params
                .get(name)
                .cloned()
                .ok_or_else(|| format!("the `{name}` parameter is missing"))
        };
        let number = |name: &str| {
            text(name)?
                .parse::<i64>()
                .map_err(|_| format!("the `{name}` parameter is not an integer"))
        };
        let trade_status = TradeStatus::from_wire(&text("trade_status")?)
            .ok_or_else(|| String::from("the `trade_status` parameter is not a known status"))?;
        Ok(Trade {
            trade_no: text("trade_no")?,
            out_trade_no: text("out_trade_no")?,
            trade_status,
            total_amount_minor: number("total_amount_minor")?,
            currency: text("currency")?,
            refund_amount_minor: number("refund_amount_minor")?,
            qr_code: params.get("qr_code").cloned(),
            fail_code: params.get("fail_code").cloned(),
        })
    }
}

impl Reported for Trade {
    const ANOTHER_KEY: &'static str = "trade (another out_trade_no)";

    fn key(&self) -> &str {
        &self.out_trade_no
    }

    fn into_payment(self) -> Result<AsyncPayment, ChannelError> {
        if self.total_amount_minor <= 0
            || !(0..=self.total_amount_minor).contains(&self.refund_amount_minor)
        {
            return Err(outcome::inconsistent("trade amounts"));
        }
        let status = match self.trade_status {
            TradeStatus::WaitBuyerPay => AsyncStatus::Pending {
                action_url: self.qr_code,
            },
            TradeStatus::TradeSuccess | TradeStatus::TradeFinished => AsyncStatus::Succeeded,
            TradeStatus::TradeClosed => {
                outcome::failed(self.fail_code.unwrap_or_else(|| ORDER_CLOSED.to_owned()))
            }
        };
        Ok(AsyncPayment {
            provider_ref: self.trade_no,
            idempotency_key: self.out_trade_no,
            amount_minor: self.total_amount_minor,
            currency: self.currency,
            status,
            refunded_minor: self.refund_amount_minor,
        })
    }
}
