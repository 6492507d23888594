//! `/admin/notifications`: the webhook delivery queue for operators — list (dead letters among
//! them), one delivery with every attempt, and replay (one, or by filter). A replay puts the
//! deliveries back in the queue, due now, for a new round of the schedule, and wakes the
//! dispatcher.

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use kassa_store::{AttemptRecord, DeliveryFilter, DeliveryRecord, DeliveryStatus, ListQuery};
use serde_json::{Value, json};

use crate::app::App;
use crate::http::Body;
use crate::http::error::{ApiError, json_response};
use crate::http::fields::Fields;

/// The longest `merchant` / id accepted in a filter (ids are far shorter).
const ID_CHARS_MAX: usize = 128;

fn json(status: StatusCode, value: &Value) -> Response<Body> {
    json_response(status, Bytes::from(value.to_string()))
}

fn method_not_allowed(allowed: &str) -> ApiError {
    ApiError::invalid(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("use {allowed} here"),
    )
}

/// Routes `rest` (the segments after `/admin/notifications`); `body` is read only for POSTs.
pub async fn route(
    app: &App,
    method: &Method,
    rest: &[&str],
    query: Option<&str>,
    body: impl std::future::Future<Output = Result<Bytes, ApiError>>,
) -> Result<Response<Body>, ApiError> {
    match rest {
        [] => match *method {
            Method::GET => list(app, query).await,
            _ => Err(method_not_allowed("GET")),
        },
        ["replay"] => match *method {
            Method::POST => replay_matching(app, &body.await?).await,
            _ => Err(method_not_allowed("POST")),
        },
        [event_id] => match *method {
            Method::GET => retrieve(app, event_id).await,
            _ => Err(method_not_allowed("GET")),
        },
        [event_id, "replay"] => match *method {
            Method::POST => replay_one(app, event_id).await,
            _ => Err(method_not_allowed("POST")),
        },
        _ => Err(ApiError::invalid(
            StatusCode::NOT_FOUND,
            "route_not_found",
            "no such route",
        )),
    }
}

/// `GET /admin/notifications?status=&merchant=&limit=&starting_after=&ending_before=`.
async fn list(app: &App, query: Option<&str>) -> Result<Response<Body>, ApiError> {
    let (filter, page_query) = list_params(query)?;
    let page = app.store.list_deliveries(filter, page_query).await?;
    let data: Vec<Value> = page.rows.iter().map(delivery_json).collect();
    Ok(json(
        StatusCode::OK,
        &json!({"object": "list", "data": data, "has_more": page.has_more}),
    ))
}

fn list_params(query: Option<&str>) -> Result<(DeliveryFilter, ListQuery), ApiError> {
    let bad = |message: String| ApiError::bad_request("invalid_query", message);
    let mut filter = DeliveryFilter::default();
    let mut rest = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("status", value) => filter.status = Some(status(value).map_err(|e| bad(e.into()))?),
            ("merchant", value) if !value.is_empty() && value.len() <= ID_CHARS_MAX => {
                filter.merchant_id = Some(value.to_string());
            }
            ("merchant", _) => return Err(bad("merchant must be a merchant id".into())),
            _ => rest.push(pair),
        }
    }
    let page = crate::routes::payments::list_query(Some(&rest.join("&")))?;
    Ok((filter, page))
}

fn status(name: &str) -> Result<DeliveryStatus, &'static str> {
    DeliveryStatus::from_name(name)
        .ok_or("status must be one of pending, delivered, dead, no_endpoint")
}

/// `GET /admin/notifications/{event_id}`: the delivery, its event and every attempt.
async fn retrieve(app: &App, event_id: &str) -> Result<Response<Body>, ApiError> {
    let Some(delivery) = app.store.get_delivery(event_id).await? else {
        return Err(ApiError::not_found("notification", event_id));
    };
    let attempts = app.store.delivery_attempts(event_id).await?;
    let event = app.store.get_event(None, event_id).await?;
    let mut body = delivery_json(&delivery);
    body["attempts"] = attempts.iter().map(attempt_json).collect();
    body["event"] = event
        .and_then(|e| serde_json::from_str(&e.body).ok())
        .unwrap_or(Value::Null);
    Ok(json(StatusCode::OK, &body))
}

/// `POST /admin/notifications/{event_id}/replay`.
async fn replay_one(app: &App, event_id: &str) -> Result<Response<Body>, ApiError> {
    if app.store.get_delivery(event_id).await?.is_none() {
        return Err(ApiError::not_found("notification", event_id));
    }
    let filter = DeliveryFilter {
        event_id: Some(event_id.to_string()),
        ..DeliveryFilter::default()
    };
    requeue(app, filter).await
}

/// `POST /admin/notifications/replay` with `{"status": "dead", "merchant": "mch_…"}` (either
/// or both), or `{"all": true}`. An empty filter is refused: replaying everything is asked for
/// by name.
async fn replay_matching(app: &App, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let Some(mut f) = Fields::parse(body, false)? else {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the request body is empty",
        ));
    };
    let status_name = f.bounded_string("status", ID_CHARS_MAX, false)?;
    let merchant = f.bounded_string("merchant", ID_CHARS_MAX, false)?;
    let all = f.boolean("all")?.unwrap_or(false);
    f.finish()?;
    let status = match status_name {
        Some(name) => Some(status(&name).map_err(|message| {
            ApiError::unprocessable("value_invalid", message).with_param("status")
        })?),
        None => None,
    };
    if status.is_none() && merchant.is_none() && !all {
        return Err(ApiError::unprocessable(
            "filter_required",
            "give status and/or merchant, or {\"all\": true} to replay every delivery",
        ));
    }
    if all && (status.is_some() || merchant.is_some()) {
        return Err(ApiError::unprocessable(
            "value_invalid",
            "all cannot be combined with status or merchant",
        )
        .with_param("all"));
    }
    let filter = DeliveryFilter {
        status,
        merchant_id: merchant,
        event_id: None,
    };
    requeue(app, filter).await
}

async fn requeue(app: &App, filter: DeliveryFilter) -> Result<Response<Body>, ApiError> {
    let shown = format!("{filter:?}");
    let requeued = app.store.requeue_deliveries(filter, app.now_ms()).await?;
    if requeued > 0 {
        app.notifier_wake();
    }
    tracing::info!(target: "audit", filter = %shown, requeued,
        "webhook deliveries replayed by an operator");
    Ok(json(
        StatusCode::OK,
        &json!({"object": "replay", "requeued": requeued}),
    ))
}

fn delivery_json(d: &DeliveryRecord) -> Value {
    json!({
        "object": "notification",
        "event_id": d.event_id,
        "merchant": d.merchant_id,
        "event_type": d.event_kind,
        "status": d.status.as_str(),
        "attempts_this_round": d.attempts,
        "next_attempt_ms": (d.status == DeliveryStatus::Pending).then_some(d.next_attempt_ms),
        "last_http_status": d.last_http_status,
        "last_error": d.last_error,
        "created_ms": d.created_ms,
        "updated_ms": d.updated_ms,
    })
}

fn attempt_json(a: &AttemptRecord) -> Value {
    json!({
        "attempt": a.attempt,
        "at_ms": a.at_ms,
        "http_status": a.http_status,
        "latency_ms": a.latency_ms,
        "error": a.error,
        "response": a.response_excerpt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_params_take_filters_and_cursors() {
        let (filter, page) = list_params(Some(
            "status=dead&merchant=mch_1&limit=5&starting_after=evt_9",
        ))
        .unwrap();
        assert_eq!(filter.status, Some(DeliveryStatus::Dead));
        assert_eq!(filter.merchant_id.as_deref(), Some("mch_1"));
        assert_eq!(page.limit, 5);
        assert_eq!(page.starting_after.as_deref(), Some("evt_9"));
        assert!(list_params(Some("status=lost")).is_err());
        assert!(list_params(Some("merchant=")).is_err());
        assert!(list_params(Some("colour=red")).is_err());
        assert_eq!(list_params(None).unwrap().1.limit, 10);
    }
}
