//! `/v1/events`: the merchant's event log (the outbox), one event, and a resend.
//!
//! Events are written by the order actors in the same store transaction as the transition
//! they report (`actors/src/events.rs`); the bodies here are byte for byte what the webhook
//! posts. A resend puts the event's delivery back in the notifier's queue, due now.

use http::StatusCode;
use kassa_store::DeliveryFilter;

use crate::app::App;
use crate::http::error::ApiError;
use crate::merchants::Merchant;
use crate::routes::payments::list_query;
use crate::routes::{Answer, list_body};

pub async fn list(app: &App, merchant: &Merchant, query: Option<&str>) -> Answer {
    let page = app
        .store
        .list_events(&merchant.id, list_query(query)?)
        .await?;
    Ok((
        StatusCode::OK,
        list_body(page.rows.into_iter().map(|event| event.body), page.has_more),
    ))
}

pub async fn retrieve(app: &App, merchant: &Merchant, id: &str) -> Answer {
    match app.store.get_event(Some(&merchant.id), id).await? {
        Some(event) => Ok((StatusCode::OK, event.body.into())),
        None => Err(ApiError::not_found("event", id)),
    }
}

/// `POST /v1/events/{id}/resend`: deliver the event to the merchant's endpoint again (at least
/// once more), whatever became of earlier attempts.
pub async fn resend(app: &App, merchant: &Merchant, id: &str) -> Answer {
    if app.store.get_event(Some(&merchant.id), id).await?.is_none() {
        return Err(ApiError::not_found("event", id));
    }
    let filter = DeliveryFilter {
        event_id: Some(id.to_string()),
        merchant_id: Some(merchant.id.clone()),
        status: None,
    };
    app.store.requeue_deliveries(filter, app.now_ms()).await?;
    app.notifier_wake();
    let body = serde_json::json!({"object": "event_delivery", "event_id": id, "status": "pending"});
    Ok((StatusCode::OK, body.to_string().into()))
}
