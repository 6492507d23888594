//! The `qr_wallet` channel (Alipay-style): the customer scans a QR code and pays on the wallet's
//! side; the outcome comes back by a signed form callback or by asking.
//!
//! ```text
//! create ── POST /qr/v1/trade/precreate ──► WAIT_BUYER_PAY + qr_code (the customer's page)
//!                 customer pays ──► wallet ── callback (signed form) ──► Kassa answers `success`
//! lookup ── POST /qr/v1/trade/query  (out_trade_no; an unknown one is closed for good)
//! cancel ── POST /qr/v1/trade/close  (an unpaid trade closes; a paid one stays paid)
//! refund ── POST /qr/v1/trade/refund (trade_no, out_request_no = the refund's key)
//! ```
//!
//! Requests are `application/x-www-form-urlencoded`, signed inside the form by the adapter
//! ([`signature`]); answers are JSON; amounts are integers in minor units
//! (`total_amount_minor`), never decimals. `out_trade_no` is Kassa's idempotency key: the
//! wallet deduplicates on it. [`QrWalletChannel`] is a thin translator; the shared adapter
//! (built with [`crate::adapter::Protocol::QrWallet`]) bounds, signs, times out and retries.

pub mod signature;
pub(crate) mod transformers;

use self::transformers::{QueryResponse, RefundResponse, RefundStatus, Trade};
use crate::adapter::{ChannelAdapter, Protocol};
use crate::card::{RefundOutcome, RefundRequest};
use crate::error::ChannelError;
use crate::outcome::{
    AsyncPayment, AsyncPaymentRequest, LookupOutcome, checked_key, checked_reference,
    expect_protocol, lookup_outcome, own, parse, refund_outcome, send_form,
};

const PROTOCOL: Protocol = Protocol::QrWallet;

/// The wallet's endpoints.
const PRECREATE_PATH: &str = "/qr/v1/trade/precreate";
const QUERY_PATH: &str = "/qr/v1/trade/query";
const CLOSE_PATH: &str = "/qr/v1/trade/close";
const REFUND_PATH: &str = "/qr/v1/trade/refund";

/// The QR wallet channel. Cheap to clone: it is a handle on the shared adapter.
#[derive(Debug, Clone)]
pub struct QrWalletChannel {
    adapter: ChannelAdapter,
}

impl QrWalletChannel {
    /// A channel that calls through `adapter`, which must speak [`Protocol::QrWallet`] (calls
    /// through another adapter are refused locally with `adapter_protocol_mismatch`).
    pub fn new(adapter: ChannelAdapter) -> Self {
        Self { adapter }
    }

    /// The adapter, for its health figures and settings.
    pub fn adapter(&self) -> &ChannelAdapter {
        &self.adapter
    }

    /// Creates the trade (or returns the one already under the key): `Pending` with the QR
    /// code's URL as `action_url`, unless it was decided meanwhile.
    pub async fn create(
        &self,
        request: &AsyncPaymentRequest,
    ) -> Result<AsyncPayment, ChannelError> {
        let key = checked_key(&self.adapter, PROTOCOL, &request.idempotency_key)?;
        let amount = request.amount_minor.to_string();
        let params = [
            ("out_trade_no", key),
            ("total_amount_minor", amount.as_str()),
            ("currency", request.currency.as_str()),
            ("subject", request.description.as_str()),
        ];
        let body = send_form(&self.adapter, PRECREATE_PATH, &params).await?;
        own(parse::<Trade>(&body, "trade")?, key)
    }

    /// Asks for the trade under `idempotency_key`. Without one, the wallet closes the key:
    /// `NotFound` is final.
    pub async fn lookup(&self, idempotency_key: &str) -> Result<LookupOutcome, ChannelError> {
        let key = checked_key(&self.adapter, PROTOCOL, idempotency_key)?;
        let body = send_form(&self.adapter, QUERY_PATH, &[("out_trade_no", key)]).await?;
        let answer: QueryResponse = parse(&body, "query answer")?;
        lookup_outcome(answer.found, answer.trade, key)
    }

    /// Closes the unpaid trade under `idempotency_key` (it ends `Failed` with `order_closed`).
    /// A trade paid meanwhile is returned `Succeeded`. An unknown key is closed for good and
    /// answered `Rejected { status: 404, code: "payment_not_found" }`.
    pub async fn cancel(&self, idempotency_key: &str) -> Result<AsyncPayment, ChannelError> {
        let key = checked_key(&self.adapter, PROTOCOL, idempotency_key)?;
        let body = send_form(&self.adapter, CLOSE_PATH, &[("out_trade_no", key)]).await?;
        own(parse::<Trade>(&body, "trade")?, key)
    }

    /// Refunds part or all of a paid trade (`provider_ref` is its `trade_no`). More than is
    /// left is `Ok(RefundOutcome::Failed { code: "amount_exceeds_captured" })`.
    pub async fn refund(&self, request: &RefundRequest) -> Result<RefundOutcome, ChannelError> {
        expect_protocol(&self.adapter, PROTOCOL)?;
        let trade_no = checked_reference(&request.provider_ref, "invalid_provider_ref")?;
        let key = checked_reference(&request.idempotency_key, "invalid_idempotency_key")?;
        let amount = request.amount_minor.to_string();
        let params = [
            ("trade_no", trade_no),
            ("out_request_no", key),
            ("refund_amount_minor", amount.as_str()),
            ("currency", request.currency.as_str()),
        ];
        let body = send_form(&self.adapter, REFUND_PATH, &params).await?;
        let refund: RefundResponse = parse(&body, "refund")?;
        let succeeded = match refund.refund_status {
            RefundStatus::RefundSuccess => true,
            RefundStatus::RefundFail => false,
        };
        Ok(refund_outcome(
            succeeded,
            refund.refund_no,
            refund.fail_code,
        ))
    }
}
