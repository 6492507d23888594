//! The `app_wallet` protocol's endpoints (WeChat Pay v3-style), the provider's side of
//! `crate::app_wallet`.
//!
//! Test amounts, when the wallet decides by itself (`auto_settle: true`, after the settle
//! delay): minor units ending in `13` end `PAYERROR` with `fail_code: payment_declined` (the
//! customer declined); every other amount ends `SUCCESS`. Otherwise (the default) the order
//! waits for its customer: `GET /app/pay/{prepay_id}` pays it, `GET
//! /app/pay/{prepay_id}?result=fail` declines it (`payment_declined`).
//!
//! JSON both ways, signed with the `Wechatpay-*` headers (`crate::app_wallet::signature`);
//! errors are `{"error":{"code","message"}}`:
//!
//! | request                                                              | answer |
//! |----------------------------------------------------------------------|--------|
//! | `POST /app/v3/pay/transactions/native` `{"out_trade_no","description","amount":{"total","currency"}}` | transaction, `NOTPAY` with `prepay_id` and `code_url` (the customer page) |
//! | `GET /app/v3/pay/transactions/out-trade-no/{out_trade_no}` (percent-encoded) | `{"found":true,"transaction":…}`, or `{"found":false}` and the key is closed |
//! | `POST /app/v3/pay/transactions/out-trade-no/{out_trade_no}/close` `{}` | the transaction (`CLOSED`, `order_closed`, unless already decided); 404 `payment_not_found` (key closed) |
//! | `POST /app/v3/refund/domestic/refunds` `{"prepay_id","out_refund_no","amount":{"refund","currency"}}` | `SUCCESS`, or `FAILED` with `amount_exceeds_captured` |
//!
//! A transaction: `{"prepay_id","out_trade_no","trade_state":"NOTPAY"|"SUCCESS"|"PAYERROR"|
//! "CLOSED","trade_state_desc","amount":{"total","currency","refunded"},"code_url"?,
//! "fail_code"?}`.
//!
//! Callback (a decided order), `POST {callback_url}` with the `Wechatpay-*` headers (over
//! `POST` and the callback URL's path) and `{"id","create_time","event_type":
//! "TRANSACTION.SUCCESS"|"TRANSACTION.PAYERROR","resource_type":"encrypt-resource","summary",
//! "resource":{"algorithm":"AEAD_AES_256_GCM","ciphertext","nonce","associated_data":
//! "transaction"}}`, the resource being the transaction sealed under the API-v3 key. Any 2xx
//! acknowledges it (Kassa answers `{"code":"SUCCESS"}`).

use std::sync::Arc;

use bytes::Bytes;
use hyper::Method;
use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};

use super::State;
use super::async_ledger::{PaymentRecord, PaymentStatus, RefundStatus};
use super::callbacks::{Envelope, Rendered};
use super::channels::Channel;
use super::routes::{ApiError, not_found};
use super::settlement::{
    self, Creation, RefundAsk, check_amount, check_currency, check_description, check_key,
    check_optional_currency, json, parse_json,
};
use crate::app_wallet::signature as app_signature;
use crate::signing;

const CHANNEL: Channel = Channel::AppWallet;
/// The failure of a declined order (test amounts, the customer page).
const DECLINED: &str = "payment_declined";
/// The failure of an order closed unpaid by the merchant.
const CLOSED: &str = "order_closed";
/// The customer's page: `/app/pay/{prepay_id}`.
pub(crate) const PAY_PAGE_PREFIX: &str = "/app/pay/";
/// What a callback's resource authenticates along with the transaction.
const ASSOCIATED_DATA: &str = "transaction";

pub(crate) async fn route(
    state: &Arc<State>,
    method: &Method,
    path: &str,
    body: &Bytes,
) -> Result<Bytes, ApiError> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::POST, ["app", "v3", "pay", "transactions", "native"]) => {
            create(state, body).await
        }
        (&Method::GET, ["app", "v3", "pay", "transactions", "out-trade-no", key]) => {
            query(state, decoded(key)?).await
        }
        (
            &Method::POST,
            [
                "app",
                "v3",
                "pay",
                "transactions",
                "out-trade-no",
                key,
                "close",
            ],
        ) => close(state, decoded(key)?).await,
        (&Method::POST, ["app", "v3", "refund", "domestic", "refunds"]) => {
            refund(state, body).await
        }
        _ => Err(not_found()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    out_trade_no: String,
    #[serde(default)]
    description: String,
    amount: AmountRequest,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AmountRequest {
    total: i64,
    currency: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefundRequest {
    prepay_id: String,
    out_refund_no: String,
    amount: RefundAmountRequest,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefundAmountRequest {
    refund: i64,
    #[serde(default)]
    currency: Option<String>,
}

async fn create(state: &Arc<State>, body: &Bytes) -> Result<Bytes, ApiError> {
    let request: CreateRequest = parse_json(body)?;
    check_key(&request.out_trade_no)?;
    check_amount(request.amount.total)?;
    check_currency(&request.amount.currency)?;
    check_description(&request.description)?;
    let creation = Creation {
        channel: CHANNEL,
        key: request.out_trade_no,
        amount_minor: request.amount.total,
        currency: request.amount.currency,
        description: request.description,
        payer_account: None,
        payer_name: None,
        test_failure: DECLINED,
    };
    let record = settlement::create(state, creation).await?;
    json(&TransactionView::new(state, &record))
}

async fn query(state: &Arc<State>, key: String) -> Result<Bytes, ApiError> {
    let found = settlement::lookup(state, CHANNEL, key).await?;
    json(&QueryView {
        found: found.is_some(),
        transaction: found
            .as_ref()
            .map(|record| TransactionView::new(state, record)),
    })
}

async fn close(state: &Arc<State>, key: String) -> Result<Bytes, ApiError> {
    let record = settlement::close(state, CHANNEL, key, CLOSED).await?;
    json(&TransactionView::new(state, &record))
}

async fn refund(state: &Arc<State>, body: &Bytes) -> Result<Bytes, ApiError> {
    let request: RefundRequest = parse_json(body)?;
    check_key(&request.out_refund_no)?;
    check_amount(request.amount.refund)?;
    check_optional_currency(request.amount.currency.as_deref())?;
    let ask = RefundAsk {
        channel: CHANNEL,
        key: request.out_refund_no,
        provider_ref: request.prepay_id,
        amount_minor: request.amount.refund,
        currency: request.amount.currency,
    };
    let refund = settlement::refund(state, ask).await?;
    json(&RefundView {
        refund_id: &refund.refund_ref,
        out_refund_no: &refund.idempotency_key,
        prepay_id: &refund.provider_ref,
        status: match refund.status {
            RefundStatus::Succeeded => "SUCCESS",
            RefundStatus::Failed => "FAILED",
        },
        amount: RefundAmountView {
            refund: refund.amount_minor,
        },
        fail_code: refund.failure_code.as_deref(),
    })
}

/// A percent-decoded key from a path segment, checked like any key.
fn decoded(segment: &str) -> Result<String, ApiError> {
    let key = percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| ApiError::bad_request("invalid_idempotency_key", "out_trade_no is not UTF-8"))?
        .into_owned();
    check_key(&key)?;
    Ok(key)
}

/// A transaction as the wallet shows it.
#[derive(Serialize)]
pub(crate) struct TransactionView<'a> {
    prepay_id: &'a str,
    out_trade_no: &'a str,
    trade_state: &'static str,
    trade_state_desc: &'static str,
    amount: AmountView<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fail_code: Option<&'a str>,
}

#[derive(Serialize)]
struct AmountView<'a> {
    total: i64,
    currency: &'a str,
    refunded: i64,
}

impl<'a> TransactionView<'a> {
    pub(crate) fn new(state: &State, record: &'a PaymentRecord) -> Self {
        let (trade_state, trade_state_desc) = match (record.status, record.failure_code.as_deref())
        {
            (PaymentStatus::Pending, _) => ("NOTPAY", "not paid yet"),
            (PaymentStatus::Succeeded, _) => ("SUCCESS", "paid"),
            (PaymentStatus::Failed, Some(CLOSED)) => ("CLOSED", "closed unpaid"),
            (PaymentStatus::Failed, _) => ("PAYERROR", "the payment failed"),
        };
        let code_url = settlement::pay_page(state, PAY_PAGE_PREFIX, record);
        Self {
            prepay_id: &record.provider_ref,
            out_trade_no: &record.idempotency_key,
            trade_state,
            trade_state_desc,
            amount: AmountView {
                total: record.amount_minor,
                currency: &record.currency,
                refunded: record.refunded_minor,
            },
            code_url,
            fail_code: record.failure_code.as_deref(),
        }
    }
}

#[derive(Serialize)]
struct QueryView<'a> {
    found: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    transaction: Option<TransactionView<'a>>,
}

#[derive(Serialize)]
struct RefundView<'a> {
    refund_id: &'a str,
    out_refund_no: &'a str,
    prepay_id: &'a str,
    status: &'static str,
    amount: RefundAmountView,
    #[serde(skip_serializing_if = "Option::is_none")]
    fail_code: Option<&'a str>,
}

#[derive(Serialize)]
struct RefundAmountView {
    refund: i64,
}

/// The `TRANSACTION.*` callback of a decided order.
pub(crate) fn envelope(record: PaymentRecord, event_id: Arc<str>) -> Arc<dyn Envelope> {
    Arc::new(TransactionEvent { record, event_id })
}

struct TransactionEvent {
    record: PaymentRecord,
    event_id: Arc<str>,
}

#[derive(Serialize)]
struct EventView<'a> {
    id: &'a str,
    create_time: String,
    event_type: &'static str,
    resource_type: &'static str,
    summary: &'static str,
    resource: ResourceView,
}

#[derive(Serialize)]
struct ResourceView {
    algorithm: &'static str,
    ciphertext: String,
    nonce: String,
    associated_data: &'static str,
}

impl Envelope for TransactionEvent {
    fn render(&self, state: &State, path: &str, now_s: u64) -> Result<Rendered, &'static str> {
        let transaction = serde_json::to_vec(&TransactionView::new(state, &self.record))
            .map_err(|_| "the transaction could not be serialised")?;
        let keys = &state.async_channels.keys;
        // 6 random bytes are the 12 hex characters the resource nonce must have.
        let nonce = signing::random_hex(app_signature::AEAD_NONCE_LEN / 2);
        let ciphertext = app_signature::seal(
            keys.app_aead.expose(),
            &nonce,
            ASSOCIATED_DATA,
            &transaction,
        )
        .map_err(|_| "the resource could not be sealed")?;
        let (event_type, summary) = match self.record.status {
            PaymentStatus::Succeeded => ("TRANSACTION.SUCCESS", "the payment succeeded"),
            PaymentStatus::Failed => ("TRANSACTION.PAYERROR", "the payment failed"),
            PaymentStatus::Pending => ("TRANSACTION.NOTPAY", "the payment is not paid yet"),
        };
        let body = serde_json::to_vec(&EventView {
            id: &self.event_id,
            create_time: now_s.to_string(),
            event_type,
            resource_type: "encrypt-resource",
            summary,
            resource: ResourceView {
                algorithm: app_signature::AEAD_ALGORITHM,
                ciphertext,
                nonce,
                associated_data: ASSOCIATED_DATA,
            },
        })
        .map_err(|_| "the event could not be serialised")?;
        let headers =
            app_signature::signed_headers(keys.app_sign.expose(), now_s, "POST", path, &body)
                .map_err(|_| "unprintable header")?;
        Ok(Rendered {
            content_type: "application/json",
            headers,
            body: Bytes::from(body),
        })
    }
}
