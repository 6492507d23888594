//! The `qr_wallet` protocol's endpoints (Alipay-style), the provider's side of
//! `crate::qr_wallet`.
//!
//! Test amounts, when the wallet decides by itself (`auto_settle: true`, after the settle
//! delay): minor units ending in `13` end `TRADE_CLOSED` with `fail_code=payment_declined` (the
//! customer declined); every other amount ends `TRADE_SUCCESS`. Otherwise (the default) the
//! trade waits for its customer: `GET /qr/pay/{trade_no}` pays it, `GET
//! /qr/pay/{trade_no}?result=fail` declines it (`payment_declined`).
//!
//! Requests are `application/x-www-form-urlencoded`, signed inside the form
//! (`crate::qr_wallet::signature`); answers are JSON (errors `{"error":{"code","message"}}`):
//!
//! | request                                                                     | answer |
//! |-----------------------------------------------------------------------------|--------|
//! | `POST /qr/v1/trade/precreate` `out_trade_no`, `total_amount_minor`, `currency`, `subject` | trade, `WAIT_BUYER_PAY` with `qr_code` (the customer page) |
//! | `POST /qr/v1/trade/query` `out_trade_no`                                     | `{"found":true,"trade":…}`, or `{"found":false}` and the key is closed |
//! | `POST /qr/v1/trade/close` `out_trade_no`                                     | the trade (`TRADE_CLOSED`, `order_closed`, unless already decided); 404 `payment_not_found` (key closed) |
//! | `POST /qr/v1/trade/refund` `trade_no`, `out_request_no`, `refund_amount_minor`, `currency` | `REFUND_SUCCESS`, or `REFUND_FAIL` with `amount_exceeds_captured` |
//!
//! A trade: `{"trade_no","out_trade_no","trade_status":"WAIT_BUYER_PAY"|"TRADE_SUCCESS"|
//! "TRADE_CLOSED","total_amount_minor","currency","refund_amount_minor","qr_code"?,"fail_code"?}`.
//!
//! Callback (a decided trade), `POST {callback_url}`, a signed form with `notify_type=
//! trade_status_sync`, `notify_id` (the event id, the same for a duplicate) and the trade's
//! fields; it counts as delivered only when the answer is a 2xx whose body is `success`.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use hyper::header::HeaderValue;
use hyper::{Method, StatusCode};
use serde::Serialize;

use super::State;
use super::async_ledger::{PaymentRecord, PaymentStatus, RefundStatus};
use super::callbacks::{Envelope, Rendered};
use super::channels::Channel;
use super::routes::{ApiError, not_found};
use super::settlement::{
    self, Creation, RefundAsk, check_amount, check_currency, check_description, check_key,
    check_optional_currency, json,
};
use crate::qr_wallet::signature as qr_signature;

const CHANNEL: Channel = Channel::QrWallet;
/// The failure of a declined trade (test amounts, the customer page).
const DECLINED: &str = "payment_declined";
/// The failure of a trade closed unpaid by the merchant.
const CLOSED: &str = "order_closed";
/// The customer's page: `/qr/pay/{trade_no}`.
pub(crate) const PAY_PAGE_PREFIX: &str = "/qr/pay/";
/// The answer that acknowledges a callback.
const ACKNOWLEDGEMENT: &[u8] = b"success";

pub(crate) async fn route(
    state: &Arc<State>,
    method: &Method,
    path: &str,
    body: &Bytes,
) -> Result<Bytes, ApiError> {
    if method != Method::POST {
        return Err(not_found());
    }
    let params = Params::parse(body);
    match path {
        "/qr/v1/trade/precreate" => precreate(state, &params).await,
        "/qr/v1/trade/query" => query(state, &params).await,
        "/qr/v1/trade/close" => close(state, &params).await,
        "/qr/v1/trade/refund" => refund(state, &params).await,
        _ => Err(not_found()),
    }
}

async fn precreate(state: &Arc<State>, params: &Params) -> Result<Bytes, ApiError> {
    let key = params.text("out_trade_no")?;
    check_key(&key)?;
    let amount_minor = params.amount("total_amount_minor")?;
    let currency = params.text("currency")?;
    check_currency(&currency)?;
    let subject = params.optional("subject").unwrap_or_default();
    check_description(&subject)?;
    let creation = Creation {
        channel: CHANNEL,
        key,
        amount_minor,
        currency,
        description: subject,
        payer_account: None,
        payer_name: None,
        test_failure: DECLINED,
    };
    let record = settlement::create(state, creation).await?;
    json(&TradeView::new(state, &record))
}

async fn query(state: &Arc<State>, params: &Params) -> Result<Bytes, ApiError> {
    let key = params.text("out_trade_no")?;
    check_key(&key)?;
    let found = settlement::lookup(state, CHANNEL, key).await?;
    json(&QueryView {
        found: found.is_some(),
        trade: found.as_ref().map(|record| TradeView::new(state, record)),
    })
}

async fn close(state: &Arc<State>, params: &Params) -> Result<Bytes, ApiError> {
    let key = params.text("out_trade_no")?;
    check_key(&key)?;
    let record = settlement::close(state, CHANNEL, key, CLOSED).await?;
    json(&TradeView::new(state, &record))
}

async fn refund(state: &Arc<State>, params: &Params) -> Result<Bytes, ApiError> {
    let trade_no = params.text("trade_no")?;
    let key = params.text("out_request_no")?;
    check_key(&key)?;
    let amount_minor = params.amount("refund_amount_minor")?;
    let currency = params.optional("currency");
    check_optional_currency(currency.as_deref())?;
    let ask = RefundAsk {
        channel: CHANNEL,
        key,
        provider_ref: trade_no,
        amount_minor,
        currency,
    };
    let refund = settlement::refund(state, ask).await?;
    json(&RefundView {
        refund_no: &refund.refund_ref,
        out_request_no: &refund.idempotency_key,
        trade_no: &refund.provider_ref,
        refund_status: match refund.status {
            RefundStatus::Succeeded => "REFUND_SUCCESS",
            RefundStatus::Failed => "REFUND_FAIL",
        },
        refund_amount_minor: refund.amount_minor,
        fail_code: refund.failure_code.as_deref(),
    })
}

/// A verified form's parameters (the signature check refused repeated names).
struct Params(BTreeMap<String, String>);

impl Params {
    fn parse(body: &[u8]) -> Self {
        Self(form_urlencoded::parse(body).into_owned().collect())
    }

    fn optional(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }

    fn text(&self, name: &'static str) -> Result<String, ApiError> {
        self.optional(name).ok_or_else(|| {
            ApiError::bad_request(
                "missing_parameter",
                format!("the `{name}` parameter is required"),
            )
        })
    }

    fn amount(&self, name: &'static str) -> Result<i64, ApiError> {
        let amount = self.text(name)?.parse::<i64>().map_err(|_| {
            ApiError::bad_request("invalid_amount", format!("`{name}` must be an integer"))
        })?;
        check_amount(amount)?;
        Ok(amount)
    }
}

/// A trade as the wallet shows it.
#[derive(Serialize)]
pub(crate) struct TradeView<'a> {
    trade_no: &'a str,
    out_trade_no: &'a str,
    trade_status: &'static str,
    total_amount_minor: i64,
    currency: &'a str,
    refund_amount_minor: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    qr_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fail_code: Option<&'a str>,
}

impl<'a> TradeView<'a> {
    pub(crate) fn new(state: &State, record: &'a PaymentRecord) -> Self {
        let trade_status = match record.status {
            PaymentStatus::Pending => "WAIT_BUYER_PAY",
            PaymentStatus::Succeeded => "TRADE_SUCCESS",
            PaymentStatus::Failed => "TRADE_CLOSED",
        };
        let qr_code = settlement::pay_page(state, PAY_PAGE_PREFIX, record);
        Self {
            trade_no: &record.provider_ref,
            out_trade_no: &record.idempotency_key,
            trade_status,
            total_amount_minor: record.amount_minor,
            currency: &record.currency,
            refund_amount_minor: record.refunded_minor,
            qr_code,
            fail_code: record.failure_code.as_deref(),
        }
    }
}

#[derive(Serialize)]
struct QueryView<'a> {
    found: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    trade: Option<TradeView<'a>>,
}

#[derive(Serialize)]
struct RefundView<'a> {
    refund_no: &'a str,
    out_request_no: &'a str,
    trade_no: &'a str,
    refund_status: &'static str,
    refund_amount_minor: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    fail_code: Option<&'a str>,
}

/// The `trade_status_sync` callback of a decided trade.
pub(crate) fn envelope(record: PaymentRecord, event_id: Arc<str>) -> Arc<dyn Envelope> {
    Arc::new(TradeStatusSync { record, event_id })
}

struct TradeStatusSync {
    record: PaymentRecord,
    event_id: Arc<str>,
}

impl Envelope for TradeStatusSync {
    fn render(&self, state: &State, _path: &str, now_s: u64) -> Result<Rendered, &'static str> {
        let view = TradeView::new(state, &self.record);
        let total = view.total_amount_minor.to_string();
        let refunded = view.refund_amount_minor.to_string();
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("notify_type", crate::inbound::QR_NOTIFY_TYPE)
            .append_pair("notify_id", &self.event_id)
            .append_pair("trade_no", view.trade_no)
            .append_pair("out_trade_no", view.out_trade_no)
            .append_pair("trade_status", view.trade_status)
            .append_pair("total_amount_minor", &total)
            .append_pair("currency", view.currency)
            .append_pair("refund_amount_minor", &refunded);
        if let Some(code) = view.fail_code {
            form.append_pair("fail_code", code);
        }
        let key = state.async_channels.keys.qr_sign.expose();
        let body = qr_signature::sign_form(key, form.finish().as_bytes(), now_s)
            .map_err(|_| "the callback form could not be signed")?;
        Ok(Rendered {
            content_type: "application/x-www-form-urlencoded",
            headers: Vec::<(&'static str, HeaderValue)>::new(),
            body: Bytes::from(body),
        })
    }

    fn acknowledged(&self, status: StatusCode, body: &[u8]) -> bool {
        status.is_success() && body.trim_ascii() == ACKNOWLEDGEMENT
    }
}
