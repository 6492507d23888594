//! The `app_wallet` channel (WeChat Pay v3-style): the wallet answers a new order with a
//! `prepay_id` and a pay link; the customer pays in the wallet app; the outcome comes back by
//! an encrypted, signed JSON callback or by asking.
//!
//! ```text
//! create ── POST /app/v3/pay/transactions/native ──► NOTPAY + prepay_id + code_url
//!                 customer pays ──► wallet ── callback (AES-256-GCM resource, Wechatpay-*
//!                 signature) ──► Kassa answers {"code":"SUCCESS"}
//! lookup ── GET  /app/v3/pay/transactions/out-trade-no/{key}        (an unknown key is closed)
//! cancel ── POST /app/v3/pay/transactions/out-trade-no/{key}/close  (a paid order stays paid)
//! refund ── POST /app/v3/refund/domestic/refunds (prepay_id, out_refund_no = the refund's key)
//! ```
//!
//! JSON both ways, signed with the `Wechatpay-*` headers by the adapter ([`signature`]);
//! amounts are integers in minor units. The key goes into URL paths percent-encoded.
//! [`AppWalletChannel`] is a thin translator; the shared adapter (built with
//! [`crate::adapter::Protocol::AppWallet`]) bounds, signs, times out and retries.

pub mod signature;
pub(crate) mod transformers;

use hyper::Method;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use self::transformers::{
    AmountBody, CreateBody, Empty, QueryResponse, RefundAmountBody, RefundBody, RefundResponse,
    RefundStatus, Transaction,
};
use crate::adapter::{ChannelAdapter, Protocol};
use crate::card::{RefundOutcome, RefundRequest};
use crate::error::ChannelError;
use crate::outcome::{
    AsyncPayment, AsyncPaymentRequest, LookupOutcome, checked_key, checked_reference,
    expect_protocol, lookup_outcome, own, parse, refund_outcome, send_json,
};

const PROTOCOL: Protocol = Protocol::AppWallet;

const CREATE_PATH: &str = "/app/v3/pay/transactions/native";
const BY_KEY_PATH: &str = "/app/v3/pay/transactions/out-trade-no/";
const REFUND_PATH: &str = "/app/v3/refund/domestic/refunds";

/// What stays unescaped in a path segment: RFC 3986's unreserved characters.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The app wallet channel. Cheap to clone: it is a handle on the shared adapter.
#[derive(Debug, Clone)]
pub struct AppWalletChannel {
    adapter: ChannelAdapter,
}

impl AppWalletChannel {
    /// A channel that calls through `adapter`, which must speak [`Protocol::AppWallet`] (calls
    /// through another adapter are refused locally with `adapter_protocol_mismatch`).
    pub fn new(adapter: ChannelAdapter) -> Self {
        Self { adapter }
    }

    /// The adapter, for its health figures and settings.
    pub fn adapter(&self) -> &ChannelAdapter {
        &self.adapter
    }

    /// Creates the order (or returns the one already under the key): `Pending` with the pay
    /// link as `action_url`, unless it was decided meanwhile.
    pub async fn create(
        &self,
        request: &AsyncPaymentRequest,
    ) -> Result<AsyncPayment, ChannelError> {
        let key = checked_key(&self.adapter, PROTOCOL, &request.idempotency_key)?;
        let body = CreateBody {
            out_trade_no: key,
            description: &request.description,
            amount: AmountBody {
                total: request.amount_minor,
                currency: &request.currency,
            },
        };
        let answer =
            send_json(&self.adapter, Method::POST, CREATE_PATH.into(), Some(&body)).await?;
        own::<Transaction>(parse(&answer, "transaction")?, key)
    }

    /// Asks for the order under `idempotency_key`. Without one, the wallet closes the key:
    /// `NotFound` is final.
    pub async fn lookup(&self, idempotency_key: &str) -> Result<LookupOutcome, ChannelError> {
        let key = checked_key(&self.adapter, PROTOCOL, idempotency_key)?;
        let path = format!("{BY_KEY_PATH}{}", utf8_percent_encode(key, PATH_SEGMENT));
        let answer = send_json::<Empty>(&self.adapter, Method::GET, path, None).await?;
        let answer: QueryResponse = parse(&answer, "query answer")?;
        lookup_outcome(answer.found, answer.transaction, key)
    }

    /// Closes the unpaid order under `idempotency_key` (it ends `Failed` with `order_closed`).
    /// An order paid meanwhile is returned `Succeeded`. An unknown key is closed for good and
    /// answered `Rejected { status: 404, code: "payment_not_found" }`.
    pub async fn cancel(&self, idempotency_key: &str) -> Result<AsyncPayment, ChannelError> {
        let key = checked_key(&self.adapter, PROTOCOL, idempotency_key)?;
        let path = format!(
            "{BY_KEY_PATH}{}/close",
            utf8_percent_encode(key, PATH_SEGMENT)
        );
        let answer = send_json(&self.adapter, Method::POST, path, Some(&Empty {})).await?;
        own::<Transaction>(parse(&answer, "transaction")?, key)
    }

    /// Refunds part or all of a paid order (`provider_ref` is its `prepay_id`). More than is
    /// left is `Ok(RefundOutcome::Failed { code: "amount_exceeds_captured" })`.
    pub async fn refund(&self, request: &RefundRequest) -> Result<RefundOutcome, ChannelError> {
        expect_protocol(&self.adapter, PROTOCOL)?;
        let body = RefundBody {
            prepay_id: checked_reference(&request.provider_ref, "invalid_provider_ref")?,
            out_refund_no: checked_reference(&request.idempotency_key, "invalid_idempotency_key")?,
            amount: RefundAmountBody {
                refund: request.amount_minor,
                currency: &request.currency,
            },
        };
        let answer =
            send_json(&self.adapter, Method::POST, REFUND_PATH.into(), Some(&body)).await?;
        let refund: RefundResponse = parse(&answer, "refund")?;
        let succeeded = match refund.status {
            RefundStatus::Success => true,
            RefundStatus::Failed => false,
        };
        Ok(refund_outcome(
            succeeded,
            refund.refund_id,
            refund.fail_code,
        ))
    }
}
