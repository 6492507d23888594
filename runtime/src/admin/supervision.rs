//! `/admin/supervision`, `/admin/actors/{path}`, `/admin/events`, and what readiness and
//! metrics need from the supervision tree.

use http::{Method, Response, StatusCode};
use kassa_actors::payment_order::InjectPanic;

use crate::app::App;
use crate::http::Body;
use crate::http::error::ApiError;

fn route_not_found() -> ApiError {
    ApiError::invalid(StatusCode::NOT_FOUND, "route_not_found", "no such route")
}

pub async fn route(
    _app: &App,
    _method: &Method,
    _rest: &[&str],
    _query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    Err(route_not_found())
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

pub async fn inject_panic(app: &App, path: &str) -> Result<(), ApiError> {
    let Some(id) = order_id(path) else {
        return Err(ApiError::not_found("actor", path).with_param("path"));
    };
    let addr = app.directory.order(id).await?;
    addr.do_send(InjectPanic);
    Ok(())
}

pub async fn readiness(_app: &App) -> Result<(), String> {
    Ok(())
}

pub async fn restarts_by_path(_app: &App) -> Vec<(String, u64)> {
    Vec::new()
}
