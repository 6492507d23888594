//! The `bank_transfer` channel (B2B, large amounts): Kassa submits a transfer from the payer's
//! account; the bank accepts it at once and settles or rejects it later. The outcome may come
//! by callback, but a bank does not promise one: until asked, Kassa only knows "uncertain".
//!
//! ```text
//! create ── POST /bank/v1/transfers ──► accepted (Pending, no action URL)
//!                 … the bank settles or rejects … ── maybe a callback (Bank-Signature)
//! lookup ── POST /bank/v1/transfers/query (end_to_end_id; an unknown one is closed for good)
//! refund ── POST /bank/v1/returns         (a return transfer of a settled one)
//! cancel ── none: a submitted transfer cannot be recalled ─► Rejected 409 transfer_not_cancelable
//! ```
//!
//! JSON both ways, signed with the `Bank-*` headers by the adapter ([`signature`]); amounts are
//! integers in minor units. `end_to_end_id` is Kassa's idempotency key. The payer's account
//! number travels only in the request body and never reaches a log or an error.
//! [`BankTransferChannel`] is a thin translator; the shared adapter (built with
//! [`crate::adapter::Protocol::BankTransfer`]) bounds, signs, times out and retries.

pub mod signature;
pub(crate) mod transformers;

use hyper::Method;

use self::transformers::{
    QueryBody, QueryResponse, ReturnBody, ReturnResponse, ReturnStatus, Transfer, TransferBody,
};
use crate::adapter::{ChannelAdapter, Protocol};
use crate::card::{RefundOutcome, RefundRequest};
use crate::error::ChannelError;
use crate::outcome::{
    AsyncPayment, AsyncPaymentRequest, LookupOutcome, TRANSFER_NOT_CANCELABLE, checked_key,
    checked_reference, expect_protocol, local_rejection, lookup_outcome, own, parse,
    refund_outcome, send_json,
};

const PROTOCOL: Protocol = Protocol::BankTransfer;

const TRANSFERS_PATH: &str = "/bank/v1/transfers";
const QUERY_PATH: &str = "/bank/v1/transfers/query";
const RETURNS_PATH: &str = "/bank/v1/returns";

/// The bank transfer channel. Cheap to clone: it is a handle on the shared adapter.
#[derive(Debug, Clone)]
pub struct BankTransferChannel {
    adapter: ChannelAdapter,
}

impl BankTransferChannel {
    /// A channel that calls through `adapter`, which must speak [`Protocol::BankTransfer`]
    /// (calls through another adapter are refused locally with `adapter_protocol_mismatch`).
    pub fn new(adapter: ChannelAdapter) -> Self {
        Self { adapter }
    }

    /// The adapter, for its health figures and settings.
    pub fn adapter(&self) -> &ChannelAdapter {
        &self.adapter
    }

    /// Submits the transfer (or returns the one already under the key). The bank answers
    /// `Pending` (accepted); the outcome follows. `payer_account` and `payer_name` are
    /// required: without them the call is refused locally (`payer_account_required`,
    /// `payer_name_required`, nothing sent).
    pub async fn create(
        &self,
        request: &AsyncPaymentRequest,
    ) -> Result<AsyncPayment, ChannelError> {
        let key = checked_key(&self.adapter, PROTOCOL, &request.idempotency_key)?;
        let account = request
            .payer_account
            .as_ref()
            .ok_or_else(|| local_rejection("payer_account_required"))?;
        let name = request
            .payer_name
            .as_deref()
            .ok_or_else(|| local_rejection("payer_name_required"))?;
        let body = TransferBody {
            end_to_end_id: key,
            amount_minor: request.amount_minor,
            currency: &request.currency,
            debtor_account: account.expose(),
            debtor_name: name,
            remittance_info: &request.description,
        };
        let answer = send_json(
            &self.adapter,
            Method::POST,
            TRANSFERS_PATH.into(),
            Some(&body),
        )
        .await?;
        own::<Transfer>(parse(&answer, "transfer")?, key)
    }

    /// Asks for the transfer under `idempotency_key`. Without one, the bank closes the key:
    /// `NotFound` is final.
    pub async fn lookup(&self, idempotency_key: &str) -> Result<LookupOutcome, ChannelError> {
        let key = checked_key(&self.adapter, PROTOCOL, idempotency_key)?;
        let body = QueryBody { end_to_end_id: key };
        let answer = send_json(&self.adapter, Method::POST, QUERY_PATH.into(), Some(&body)).await?;
        let answer: QueryResponse = parse(&answer, "query answer")?;
        lookup_outcome(answer.found, answer.transfer, key)
    }

    /// A submitted transfer cannot be recalled: always
    /// `Rejected { status: 409, code: "transfer_not_cancelable" }`, decided locally (the
    /// protocol has no such request, so nothing is sent). Refund a settled transfer instead.
    pub async fn cancel(&self, idempotency_key: &str) -> Result<AsyncPayment, ChannelError> {
        checked_key(&self.adapter, PROTOCOL, idempotency_key)?;
        Err(ChannelError::Rejected {
            status: 409,
            code: TRANSFER_NOT_CANCELABLE.to_owned(),
        })
    }

    /// Returns part or all of a settled transfer (`provider_ref` is its `transfer_id`). More
    /// than is left is `Ok(RefundOutcome::Failed { code: "amount_exceeds_captured" })`.
    pub async fn refund(&self, request: &RefundRequest) -> Result<RefundOutcome, ChannelError> {
        expect_protocol(&self.adapter, PROTOCOL)?;
        let body = ReturnBody {
            return_id: checked_reference(&request.idempotency_key, "invalid_idempotency_key")?,
            transfer_id: checked_reference(&request.provider_ref, "invalid_provider_ref")?,
            amount_minor: request.amount_minor,
            currency: &request.currency,
        };
        let answer = send_json(
            &self.adapter,
            Method::POST,
            RETURNS_PATH.into(),
            Some(&body),
        )
        .await?;
        let answer: ReturnResponse = parse(&answer, "return")?;
        let succeeded = match answer.status {
            ReturnStatus::Completed => true,
            ReturnStatus::Refused => false,
        };
        Ok(refund_outcome(
            succeeded,
            answer.return_ref,
            answer.reason_code,
        ))
    }
}
