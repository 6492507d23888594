//! `/v1/refunds`: create and retrieve.

use std::collections::BTreeMap;

use http::StatusCode;
use kassa_actors::money::Money;
use kassa_actors::payment::{NewRefund, RefundReason, RefundStatus};
use kassa_actors::payment_order::{Get, RefundPayment};
use kassa_actors::views::refund_json;

use crate::app::App;
use crate::crypto::{derived_id, random_id, sha256_hex};
use crate::http::error::ApiError;
use crate::http::fields::Fields;
use crate::merchants::Merchant;
use crate::routes::Answer;

/// A `POST /v1/refunds` body, parsed and checked. The amount stays text: its currency is
/// the payment's, known only once the payment is found.
pub struct RefundRequest {
    pub payment_id: String,
    pub amount: Option<String>,
    pub reason: Option<RefundReason>,
    pub metadata: BTreeMap<String, String>,
    pub is_async: bool,
    pub wait_ms: Option<u64>,
}

/// Parses a `POST /v1/refunds` body: every 400/422 it can answer before looking anything up.
pub fn parse_create_refund(body: &[u8]) -> Result<RefundRequest, ApiError> {
    let Some(mut f) = Fields::parse(body, false)? else {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the request body is empty",
        ));
    };
    let payment_id = f.required_string("payment_id")?;
    let amount = f.amount("amount", false)?;
    let reason = f.string("reason")?;
    let metadata = f.metadata()?;
    let is_async = f.boolean("async")?.unwrap_or(false);
    let wait_ms = f.unsigned("wait_ms")?;
    f.finish()?;
    let reason = match reason.as_deref() {
        None => None,
        Some("duplicate") => Some(RefundReason::Duplicate),
        Some("fraudulent") => Some(RefundReason::Fraudulent),
        Some("requested_by_customer") => Some(RefundReason::RequestedByCustomer),
        Some(_) => {
            return Err(ApiError::unprocessable(
                "value_invalid",
                "reason must be duplicate, fraudulent or requested_by_customer",
            )
            .with_param("reason"));
        }
    };
    Ok(RefundRequest {
        payment_id,
        amount,
        reason,
        metadata,
        is_async,
        wait_ms,
    })
}

pub async fn create(app: &App, merchant: &Merchant, body: &[u8], key: Option<&str>) -> Answer {
    let RefundRequest {
        payment_id,
        amount,
        reason,
        metadata,
        is_async,
        wait_ms,
    } = parse_create_refund(body)?;
    let wait_ms = app.wait_ms(wait_ms)?;
    let missing = || ApiError::not_found("payment", &payment_id).with_param("payment_id");
    if !payment_id.starts_with("pay_") || payment_id.len() > 64 {
        return Err(missing());
    }
    let payment = app
        .ask(
            &payment_id,
            Get {
                merchant_id: Some(merchant.id.clone()),
            },
        )
        .await
        .map_err(|e| {
            if e.code == "resource_missing" {
                missing()
            } else {
                e
            }
        })?;
    let amount = amount
        .map(|a| Money::parse_positive(&a, payment.currency()))
        .transpose()?;
    let id = match key {
        Some(key) => derived_id("re_", &["refund", &merchant.id, key]),
        None => random_id("re_").map_err(|_| ApiError::internal())?,
    };
    let refund = NewRefund {
        id,
        amount,
        reason,
        metadata,
        fingerprint: sha256_hex(&[body]),
    };
    let msg = RefundPayment {
        merchant_id: merchant.id.clone(),
        refund,
        settle: !is_async,
    };
    let reply = app.ask(&payment_id, msg).await?;
    let refund_id = reply.refund_id.clone().ok_or_else(ApiError::internal)?;
    let payment = if is_async {
        reply.payment
    } else {
        app.settle(reply, wait_ms).await
    };
    let refund = payment.refund(&refund_id).ok_or_else(ApiError::internal)?;
    let status = match refund.status {
        RefundStatus::Pending => StatusCode::ACCEPTED,
        RefundStatus::Succeeded | RefundStatus::Failed if is_async => StatusCode::ACCEPTED,
        RefundStatus::Succeeded | RefundStatus::Failed => StatusCode::CREATED,
    };
    Ok((status, refund_json(&payment, refund).into()))
}

pub async fn retrieve(app: &App, merchant: &Merchant, id: &str) -> Answer {
    match app.store.get_refund(id).await? {
        Some(row) if row.merchant_id == merchant.id => Ok((StatusCode::OK, row.body.into())),
        Some(_) | None => Err(ApiError::not_found("refund", id)),
    }
}
