//! `POST /callbacks/{channel}`: a payment channel reports an outcome asynchronously.
//!
//! The channel's own signature is verified first; an unsigned or badly signed callback is
//! refused (401) and logged, and changes nothing. A verified report becomes a message to the
//! order, journaled like any outcome, so duplicates and late or out-of-order reports are
//! harmless. Answering 2xx tells the channel to stop retrying.

use http::{HeaderMap, StatusCode};
use kassa_actors::channel_port::from_card;
use kassa_actors::payment_order::Report;
use kassa_channels::card::callback::{self, CallbackError};

use crate::app::App;
use crate::http::error::ApiError;
use crate::routes::Answer;

fn now_s() -> u64 {
    kassa_channels::card::signature::now_unix_s()
}

pub async fn receive(
    app: &App,
    channel: &str,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Answer {
    if channel != "card" {
        return Err(ApiError::invalid(
            StatusCode::NOT_FOUND,
            "route_not_found",
            "no such channel",
        ));
    }
    let signature = headers
        .get("sandbox-signature")
        .and_then(|v| v.to_str().ok());
    let secret = app.settings.sandbox.api_secret.as_bytes();
    let base_url = app.card_adapter.base_url();
    let report = match callback::decode(base_url, secret, signature, path, body, now_s()) {
        Ok(report) => report,
        Err(CallbackError::Signature(e)) => {
            tracing::warn!(channel, error = %e, "rejected a channel callback: bad signature");
            return Err(ApiError::unauthorized(
                "invalid_signature",
                "the callback signature does not verify",
            ));
        }
        Err(e) => {
            tracing::warn!(channel, error = %e, "rejected a channel callback");
            return Err(ApiError::bad_request(
                "invalid_body",
                "the callback is not a charge report",
            ));
        }
    };
    let id = report.idempotency_key;
    if !id.starts_with("pay_") || id.len() > 64 {
        return Err(ApiError::not_found("payment", &id));
    }
    // A voided authorisation says nothing about the charge's outcome: nothing to apply.
    if report.charge.voided {
        return Ok((
            StatusCode::OK,
            r#"{"received":true,"applied":false}"#.into(),
        ));
    }
    let outcome = from_card(report.charge.outcome);
    let payment = app.ask(&id, Report(outcome)).await.map_err(|e| {
        if e.code == "resource_missing" {
            ApiError::not_found("payment", &id)
        } else {
            e
        }
    })?;
    tracing::info!(order_id = %id, status = payment.status.as_str(), "channel callback applied");
    let body =
        serde_json::json!({"received": true, "applied": true, "status": payment.status.as_str()});
    Ok((StatusCode::OK, body.to_string().into()))
}
