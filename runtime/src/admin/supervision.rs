//! `/admin/supervision`, `/admin/actors/{path}`, `/admin/events`, and what readiness, metrics
//! and fault drills need from the supervision tree.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use kassa_actors::payment_order::{Get, InjectPanic};
use kassa_supervision::{GetSnapshot, NodeSnapshot, RestartType, Status};
use serde_json::json;
use tokio::sync::broadcast;

use crate::app::App;
use crate::http::Body;
use crate::http::error::{ApiError, json_response};

/// SSE keep-alive comment interval.
const SSE_KEEPALIVE_S: u64 = 15;
/// Journal entries shown with an order actor.
const ORDER_EVENTS_SHOWN_MAX: usize = 20;
/// Default and largest number of a shard's orders listed by `?expand=`.
const EXPAND_LIMIT_DEFAULT: usize = 100;
const EXPAND_LIMIT_MAX: usize = 1_000;

fn route_not_found() -> ApiError {
    ApiError::invalid(StatusCode::NOT_FOUND, "route_not_found", "no such route")
}

fn method_not_allowed() -> ApiError {
    ApiError::invalid(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "use GET here",
    )
}

async fn snapshot(
    app: &App,
    expand: Option<String>,
    limit: usize,
) -> Result<NodeSnapshot, ApiError> {
    let root = app
        .root
        .get()
        .ok_or_else(|| ApiError::unavailable("overloaded", "the tree is starting"))?;
    root.send(GetSnapshot::new(expand, limit))
        .await
        .map_err(|_| ApiError::unavailable("overloaded", "the supervision tree is restarting"))
}

fn query_params(query: Option<&str>) -> Result<(Option<String>, usize), ApiError> {
    let mut expand = None;
    let mut limit = EXPAND_LIMIT_DEFAULT;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("expand", value) if !value.is_empty() => expand = Some(value.to_string()),
            ("limit", value) => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=EXPAND_LIMIT_MAX).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "invalid_query",
                            format!("limit must be 1 to {EXPAND_LIMIT_MAX}"),
                        )
                    })?
            }
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    "use expand=shard-N and limit=N",
                ));
            }
        }
    }
    Ok((expand, limit))
}

pub async fn route(
    app: &App,
    method: &Method,
    rest: &[&str],
    query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    if !matches!(rest, ["supervision"] | ["events"] | ["actors", ..]) {
        return Err(route_not_found());
    }
    if method != Method::GET {
        return Err(method_not_allowed());
    }
    match rest {
        ["supervision"] => {
            let (expand, limit) = query_params(query)?;
            let root = snapshot(app, expand, limit).await?;
            let body = json!({"generated_at": app.now_ms(), "root": root});
            Ok(json_response(StatusCode::OK, Bytes::from(body.to_string())))
        }
        ["events"] => Ok(events(app)),
        ["actors", path @ ..] => actor(app, &path.join("/")).await,
        _ => Err(route_not_found()),
    }
}

/// The order id at the end of an order's tree path (`root/orders/shard-K/<id>`).
fn order_id(path: &str) -> Option<&str> {
    match path.split('/').collect::<Vec<_>>().as_slice() {
        ["root", "orders", shard, id] if shard.starts_with("shard-") && id.starts_with("pay_") => {
            Some(id)
        }
        _ => None,
    }
}

fn shard_index(path: &str) -> Option<usize> {
    path.strip_prefix("root/orders/shard-")?.parse().ok()
}

async fn actor(app: &App, path: &str) -> Result<Response<Body>, ApiError> {
    let missing = || ApiError::not_found("actor", path);
    let body = match order_id(path) {
        Some(id) => {
            let node = app.directory.order_node(id).await.ok_or_else(missing)?;
            let addr = app.directory.order(id).await?;
            let payment = addr
                .send(Get { merchant_id: None })
                .await
                .map_err(|_| missing())??;
            let journal = app.store.load_journal(id).await?;
            let last_events: Vec<_> = journal
                .iter()
                .rev()
                .take(ORDER_EVENTS_SHOWN_MAX)
                .rev()
                .map(|e| json!({"seq": e.seq, "kind": e.kind, "at": e.at_ms}))
                .collect();
            let mut value = serde_json::to_value(&node).map_err(|_| ApiError::internal())?;
            value["order"] = json!({
                "status": payment.status.as_str(),
                "seq": payment.seq,
                "awaiting_channel": payment.awaits_channel(),
                "amount": payment.amount.to_string(),
                "currency": payment.currency().code(),
                "last_events": last_events,
            });
            value
        }
        None => {
            let expand = shard_index(path).map(|i| format!("shard-{i}"));
            let root = snapshot(app, expand, EXPAND_LIMIT_DEFAULT).await?;
            let mut node = root.find(path).cloned().ok_or_else(missing)?;
            for child in &mut node.children {
                child.children.clear();
            }
            serde_json::to_value(&node).map_err(|_| ApiError::internal())?
        }
    };
    Ok(json_response(StatusCode::OK, Bytes::from(body.to_string())))
}

fn sse(kind: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}

/// `GET /admin/events`: recent events, then live ones, until the client leaves or Kassa stops.
fn events(app: &App) -> Response<Body> {
    let (recent, receiver) = app.events.subscribe();
    let closing = app.closing.subscribe();
    let first: Vec<Bytes> = recent
        .iter()
        .filter_map(|e| serde_json::to_string(e).ok())
        .map(|data| sse("supervision", &data))
        .collect();
    let live = futures::stream::unfold(
        (receiver, closing),
        |(mut receiver, mut closing)| async move {
            let keepalive = tokio::time::sleep(Duration::from_secs(SSE_KEEPALIVE_S));
            let chunk = tokio::select! {
                next = receiver.recv() => match next {
                    Ok(event) => sse("supervision", &serde_json::to_string(&event).unwrap_or_default()),
                    Err(broadcast::error::RecvError::Lagged(missed)) => sse("lagged", &json!({"missed": missed}).to_string()),
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                () = keepalive => Bytes::from_static(b": keep-alive\n\n"),
                _ = closing.wait_for(|closing| *closing) => return None,
            };
            Some((chunk, (receiver, closing)))
        },
    );
    let stream = futures::stream::iter(first)
        .chain(live)
        .map(|chunk| Ok::<_, Infallible>(Frame::data(chunk)));
    let mut response = Response::new(StreamBody::new(stream).boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    response
}

pub async fn inject_panic(app: &App, path: &str) -> Result<(), ApiError> {
    if let Some(id) = order_id(path) {
        let addr = app.directory.order(id).await?;
        addr.do_send(InjectPanic);
        return Ok(());
    }
    let injected = match shard_index(path) {
        Some(index) => app.directory.inject_shard_panic(index),
        None => app.workers.inject_panic(path),
    };
    if injected {
        Ok(())
    } else {
        Err(ApiError::not_found("actor", path).with_param("path"))
    }
}

/// Every permanent node of the tree is running (order actors aside); else what is not.
pub async fn readiness(app: &App) -> Result<(), String> {
    let root = snapshot(app, None, 1)
        .await
        .map_err(|_| "the supervision tree is not answering".to_string())?;
    let mut down = Vec::new();
    collect_down(&root, &mut down);
    if down.is_empty() {
        Ok(())
    } else {
        Err(format!("not running: {}", down.join(", ")))
    }
}

fn collect_down(node: &NodeSnapshot, down: &mut Vec<String>) {
    let required = match node.restart {
        RestartType::Permanent => true,
        RestartType::Transient | RestartType::Temporary => false,
    };
    let running = match node.status {
        Status::Running => true,
        Status::Restarting | Status::Stopping | Status::Stopped | Status::Failed => false,
    };
    if required && !running {
        down.push(node.path.clone());
    }
    for child in &node.children {
        collect_down(child, down);
    }
}

pub async fn restarts_by_path(app: &App) -> Vec<(String, u64)> {
    let Ok(root) = snapshot(app, None, 1).await else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut stack = vec![&root];
    while let Some(node) = stack.pop() {
        out.push((node.path.clone(), node.restarts_total));
        stack.extend(node.children.iter());
    }
    out.sort();
    out
}
