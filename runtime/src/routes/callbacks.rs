//! `POST /callbacks/{channel}`: a payment channel reports an outcome asynchronously.
//!
//! The channel's own signature is verified first (and, for `app_wallet`, the body decrypted);
//! an unsigned or badly signed callback is refused (401) and logged, and changes nothing. A
//! verified report becomes a message to the order, journaled like any outcome, so duplicates
//! and late or out-of-order reports are harmless. The answer is the one each channel expects
//! (`success` for `qr_wallet`, `{"code":"SUCCESS"}` for `app_wallet`, JSON otherwise): it tells
//! the channel to stop retrying.

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use kassa_actors::channel_port::{from_async, from_card};
use kassa_actors::payment::ChargeOutcome;
use kassa_actors::payment_order::Report;
use kassa_channels::card::callback::{self, CallbackError};
use kassa_channels::inbound;

use crate::app::App;
use crate::http::error::ApiError;

/// A callback's answer: status, content type, body.
pub type CallbackAnswer = Result<(StatusCode, &'static str, Bytes), ApiError>;

fn now_s() -> u64 {
    kassa_channels::card::signature::now_unix_s()
}

fn no_such_channel() -> ApiError {
    ApiError::invalid(StatusCode::NOT_FOUND, "route_not_found", "no such channel")
}

fn bad_signature(channel: &str, error: &dyn std::fmt::Display) -> ApiError {
    tracing::warn!(channel, error = %error, "rejected a channel callback: bad signature");
    ApiError::unauthorized(
        "invalid_signature",
        "the callback signature does not verify",
    )
}

pub async fn receive(
    app: &App,
    channel: &str,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> CallbackAnswer {
    let port_base_url = app
        .channels
        .adapters()
        .into_iter()
        .find(|(name, _)| *name == channel)
        .map(|(_, adapter)| adapter.base_url().to_string());
    let (Some(base_url), Some(secret)) = (
        port_base_url,
        crate::channels::channel_secret(&app.settings, channel),
    ) else {
        return Err(no_such_channel());
    };
    let (id, outcome) = if channel == "card" {
        let signature = headers
            .get("sandbox-signature")
            .and_then(|v| v.to_str().ok());
        let report =
            match callback::decode(&base_url, secret.as_bytes(), signature, path, body, now_s()) {
                Ok(report) => report,
                Err(CallbackError::Signature(e)) => return Err(bad_signature(channel, &e)),
                Err(e) => {
                    tracing::warn!(channel, error = %e, "rejected a channel callback");
                    return Err(ApiError::bad_request(
                        "invalid_body",
                        "the callback is not a charge report",
                    ));
                }
            };
        // A voided or reversed charge says nothing new about the charge's outcome.
        let outcome = (!report.charge.voided && !report.charge.reversed)
            .then(|| from_card(report.charge.outcome));
        (report.idempotency_key, outcome)
    } else {
        match inbound::decode(channel, secret.as_bytes(), headers, path, body, now_s()) {
            Ok(payment) => (payment.idempotency_key.clone(), Some(from_async(payment))),
            Err(e) if e.is_signature() => return Err(bad_signature(channel, &e)),
            Err(e) => {
                tracing::warn!(channel, error = %e, "rejected a channel callback");
                return Err(ApiError::bad_request(
                    "invalid_body",
                    "the callback is not a payment report",
                ));
            }
        }
    };
    if !id.starts_with("pay_") || id.len() > 64 {
        return Err(ApiError::not_found("payment", &id));
    }
    let status = match outcome {
        Some(outcome) => Some(apply(app, &id, outcome).await?),
        None => None,
    };
    if channel == "card" {
        let body = match status {
            Some(status) => {
                serde_json::json!({"received": true, "applied": true, "status": status})
            }
            None => serde_json::json!({"received": true, "applied": false}),
        };
        return Ok((StatusCode::OK, "application/json", body.to_string().into()));
    }
    let (content_type, ack) = inbound::acknowledgement(channel);
    Ok((StatusCode::OK, content_type, Bytes::from_static(ack)))
}

async fn apply(app: &App, id: &str, outcome: ChargeOutcome) -> Result<&'static str, ApiError> {
    let payment = app.ask(id, Report(outcome)).await.map_err(|e| {
        if e.code == "resource_missing" {
            ApiError::not_found("payment", id)
        } else {
            e
        }
    })?;
    tracing::info!(order_id = %id, status = payment.status.as_str(), "channel callback applied");
    Ok(payment.status.as_str())
}
