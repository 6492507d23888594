//! Operators' routes (docs/ADMIN.md): the supervision tree, actors, channels, events, faults,
//! webhook notifications (`notifications.rs`), plus the unauthenticated `/readyz` and `/metrics`.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::json;

use crate::app::App;
use crate::http::error::{ApiError, json_response};
use crate::http::fields::Fields;
use crate::http::{Body, auth, body};
use crate::metrics::Gauges;
use crate::routes::admin as merchants_admin;

/// Route label for metrics, from method and path segments after `/admin`.
pub fn route_label(method: &Method, rest: &[&str]) -> &'static str {
    match (method, rest) {
        (&Method::GET, [] | [""]) => "GET /admin/",
        (&Method::POST, ["merchants"]) => "POST /admin/merchants",
        (&Method::POST, ["merchants", _, "rotate_secret"]) => {
            "POST /admin/merchants/{id}/rotate_secret"
        }
        (&Method::GET, ["supervision"]) => "GET /admin/supervision",
        (&Method::GET, ["actors", ..]) => "GET /admin/actors/{path}",
        (&Method::GET, ["channels"]) => "GET /admin/channels",
        (&Method::GET, ["events"]) => "GET /admin/events",
        (&Method::POST, ["faults"]) => "POST /admin/faults",
        (&Method::GET, ["methods"]) => "GET /admin/methods",
        (&Method::PUT, ["methods", _, _]) => "PUT /admin/methods/{method}/{currency}",
        (&Method::GET, ["notifications"]) => "GET /admin/notifications",
        (&Method::POST, ["notifications", "replay"]) => "POST /admin/notifications/replay",
        (&Method::GET, ["notifications", _]) => "GET /admin/notifications/{event_id}",
        (&Method::POST, ["notifications", _, "replay"]) => {
            "POST /admin/notifications/{event_id}/replay"
        }
        _ => "unmatched",
    }
}

fn method_not_allowed(allowed: &str) -> ApiError {
    ApiError::invalid(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("use {allowed} here"),
    )
}

fn route_not_found() -> ApiError {
    ApiError::invalid(StatusCode::NOT_FOUND, "route_not_found", "no such route")
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    json_response(status, Bytes::from(value.to_string()))
}

/// `/admin/...` (everything behind the admin token).
pub async fn route(
    app: &Arc<App>,
    method: &Method,
    headers: &HeaderMap,
    rest: &[&str],
    query: Option<&str>,
    incoming: Incoming,
    declared_len: Option<u64>,
) -> Result<Response<Body>, ApiError> {
    if let [] | [""] = rest {
        // The page itself holds nothing secret; every call it makes carries the token.
        return match *method {
            Method::GET => Ok(dashboard_page()),
            _ => Err(method_not_allowed("GET")),
        };
    }
    auth::admin(headers, &app.settings.admin.token)?;
    let limit = body::Limits::of(&app.settings.http);
    match rest {
        ["merchants"] => {
            if method != Method::POST {
                return Err(method_not_allowed("POST"));
            }
            let body = body::read_limited(incoming, declared_len, limit).await?;
            let (status, body) = merchants_admin::create_merchant(app, &body).await?;
            Ok(json_response(status, body))
        }
        ["merchants", id, "rotate_secret"] => {
            if method != Method::POST {
                return Err(method_not_allowed("POST"));
            }
            let body = body::read_limited(incoming, declared_len, limit).await?;
            let (status, body) = merchants_admin::rotate_secret(app, id, &body).await?;
            Ok(json_response(status, body))
        }
        ["methods"] => match *method {
            Method::GET => Ok(json(StatusCode::OK, &methods_list(app))),
            _ => Err(method_not_allowed("GET")),
        },
        ["methods", name, currency] => {
            if method != Method::PUT {
                return Err(method_not_allowed("PUT"));
            }
            let body = body::read_limited(incoming, declared_len, limit).await?;
            put_method(app, name, currency, &body).await
        }
        ["channels"] => match *method {
            Method::GET => Ok(channels(app)),
            _ => Err(method_not_allowed("GET")),
        },
        ["notifications", rest @ ..] => {
            let body = body::read_limited(incoming, declared_len, limit);
            crate::admin::notifications::route(app, method, rest, query, body).await
        }
        ["faults"] => {
            if !app.settings.admin.faults_enabled {
                return Err(route_not_found());
            }
            if method != Method::POST {
                return Err(method_not_allowed("POST"));
            }
            let body = body::read_limited(incoming, declared_len, limit).await?;
            inject_fault(app, &body).await
        }
        _ => crate::admin::supervision::route(app, method, rest, query).await,
    }
}

fn dashboard_page() -> Response<Body> {
    let body = http_body_util::Full::new(Bytes::from_static(dashboard::DASHBOARD_HTML.as_bytes()));
    let mut response = Response::new(http_body_util::BodyExt::boxed_unsync(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'",
        ),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

fn channels(app: &App) -> Response<Body> {
    let data: Vec<_> = app
        .channels
        .adapters()
        .into_iter()
        .map(|(name, adapter)| {
            let config = adapter.config();
            let mut channel = serde_json::to_value(adapter.health()).unwrap_or_else(|_| json!({}));
            channel["name"] = json!(name);
            channel["path"] = json!(format!("root/channels/{name}"));
            channel["base_url"] = json!(adapter.base_url());
            channel["request_timeout_ms"] = json!(config.request_timeout_ms);
            channel["retry_attempts_max"] = json!(config.retry_attempts_max);
            channel["backoff_ms_max"] = json!(config.backoff_ms_max);
            channel["rate_wait_ms_max"] = json!(config.rate_wait_ms_max);
            channel
        })
        .collect();
    json(StatusCode::OK, &json!({"object": "list", "data": data}))
}

/// Channel figures in Prometheus text, appended to the general metrics: one series per
/// channel (a handful, fixed by configuration).
fn channel_metrics(app: &App) -> String {
    let adapters = app.channels.adapters();
    let mut out = String::new();
    let mut family =
        |name: &str,
         kind: &str,
         help: &str,
         value: &dyn Fn(&str, &kassa_channels::AdapterHealth) -> String| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (channel, adapter) in &adapters {
                out.push_str(&value(channel, &adapter.health()));
            }
        };
    family(
        "kassa_channel_breaker_state",
        "gauge",
        "Circuit breaker: 0 closed, 1 half-open, 2 open.",
        &|channel, health| {
            let state = match health.breaker.state {
                kassa_channels::BreakerState::Closed => 0,
                kassa_channels::BreakerState::HalfOpen => 1,
                kassa_channels::BreakerState::Open => 2,
            };
            format!("kassa_channel_breaker_state{{channel=\"{channel}\"}} {state}\n")
        },
    );
    family(
        "kassa_channel_breaker_opens_total",
        "counter",
        "Times the breaker opened.",
        &|channel, health| {
            format!(
                "kassa_channel_breaker_opens_total{{channel=\"{channel}\"}} {}\n",
                health.breaker.opens_total
            )
        },
    );
    family(
        "kassa_channel_inflight",
        "gauge",
        "Calls in flight to the channel.",
        &|channel, health| {
            format!(
                "kassa_channel_inflight{{channel=\"{channel}\"}} {}\n",
                health.inflight
            )
        },
    );
    family(
        "kassa_channel_calls_total",
        "counter",
        "Attempts sent to the channel, and those that failed.",
        &|channel, health| {
            format!(
                "kassa_channel_calls_total{{channel=\"{channel}\",result=\"sent\"}} {}\n\
                 kassa_channel_calls_total{{channel=\"{channel}\",result=\"failed\"}} {}\n",
                health.calls_total, health.failures_total
            )
        },
    );
    family(
        "kassa_channel_rejected_total",
        "counter",
        "Calls refused before anything was sent.",
        &|channel, health| {
            format!(
                "kassa_channel_rejected_total{{channel=\"{channel}\",reason=\"breaker_open\"}} {}\n\
                 kassa_channel_rejected_total{{channel=\"{channel}\",reason=\"rate_limited\"}} {}\n\
                 kassa_channel_rejected_total{{channel=\"{channel}\",reason=\"inflight\"}} {}\n",
                health.rejected_open_total,
                health.rejected_rate_total,
                health.rejected_inflight_total
            )
        },
    );
    out
}

async fn inject_fault(app: &Arc<App>, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let Some(mut f) = Fields::parse(body, false)? else {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the request body is empty",
        ));
    };
    let kind = f.required_string("kind")?;
    let path = f.string("path")?;
    let count = f.unsigned("count")?;
    f.finish()?;
    match kind.as_str() {
        "store_error" => {
            let Some(faulty) = &app.faults else {
                return Err(route_not_found());
            };
            let count = u32::try_from(count.unwrap_or(1)).unwrap_or(u32::MAX);
            faulty.fail_next_appends(count);
        }
        "panic" => {
            let path = path.ok_or_else(|| {
                ApiError::bad_request("missing_field", "path is required for a panic")
                    .with_param("path")
            })?;
            crate::admin::supervision::inject_panic(app, &path).await?;
        }
        _ => {
            return Err(ApiError::unprocessable(
                "value_invalid",
                "kind must be panic or store_error",
            )
            .with_param("kind"));
        }
    }
    Ok(json(StatusCode::ACCEPTED, &json!({"injected": true})))
}

/// `GET /readyz`: the store answers and every permanent child of the tree is running.
pub async fn readyz(app: &App) -> Response<Body> {
    let store_ok = app.store.get_merchant("mch_readyz_probe").await.is_ok();
    let tree = crate::admin::supervision::readiness(app).await;
    let ready = store_ok && tree.is_ok();
    let mut checks = json!({
        "store": if store_ok { "ok" } else { "unavailable" },
        "supervision": match &tree { Ok(()) => "ok".to_string(), Err(not_running) => not_running.clone() },
        "notifications": notifications_check(app),
    });
    if let Some(redis) = redis_check(app) {
        checks["redis"] = json!(redis);
    }
    let (status, word) = if ready {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    };
    json(status, &json!({"status": word, "checks": checks}))
}

/// The notifier's transport, for `/readyz`. A broker outage does not make Kassa unready:
/// payments go on and their events wait in the outbox.
fn notifications_check(app: &App) -> &'static str {
    match app.settings.notifications.transport {
        kassa_config::NotificationTransport::Embedded => "ok",
        kassa_config::NotificationTransport::Rabbitmq => match app.metrics.broker.connected() {
            (true, true) => "ok",
            _ => "degraded: the broker is unreachable; events wait in the outbox",
        },
    }
}

/// Redis, for `/readyz` in cluster mode (`None` in embedded mode, which has none). An outage
/// does not make Kassa unready: the store and the local limits carry on without it.
fn redis_check(app: &App) -> Option<&'static str> {
    let redis = app.redis.as_ref()?;
    Some(if redis.connected() {
        "ok"
    } else {
        "degraded: Redis is unreachable; idempotency uses the store alone, rate limits are per node"
    })
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(app: &App) -> Response<Body> {
    let stats = app.store.stats();
    let orders_live = app.directory.live_orders().await.iter().sum::<usize>() as u64;
    let gauges = Gauges {
        orders_live,
        journal_commits: stats.commits,
        journal_writes: stats.writes,
        journal_batch_writes_max: stats.batch_writes_max,
        journal_queue_depth: stats.queue_depth,
        restarts_by_path: crate::admin::supervision::restarts_by_path(app).await,
        ready: crate::admin::supervision::readiness(app).await.is_ok(),
        http_requests_inflight: app.admission.inflight() as u64,
    };
    let mut response = Response::new(http_body_util::BodyExt::boxed_unsync(
        http_body_util::Full::new(Bytes::from(
            app.metrics.render(&gauges) + &channel_metrics(app),
        )),
    ));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

pub mod dashboard;
pub mod notifications;
pub mod supervision;

fn method_json(record: &kassa_store::MethodRecord) -> serde_json::Value {
    let amount = |minor: i64| {
        kassa_actors::money::Currency::from_code(&record.currency)
            .and_then(|c| kassa_actors::money::Money::from_minor(minor, c))
            .map(|m| m.to_string())
            .unwrap_or_default()
    };
    json!({
        "object": "method",
        "method": record.method,
        "currency": record.currency,
        "channel": record.channel,
        "min_amount": amount(record.min_minor),
        "max_amount": amount(record.max_minor),
        "enabled": record.enabled,
        "updated": record.updated_ms.div_euclid(1_000),
    })
}

fn methods_list(app: &App) -> serde_json::Value {
    let data: Vec<_> = app.methods.list().iter().map(method_json).collect();
    json!({"object": "list", "data": data, "has_more": false})
}

/// `PUT /admin/methods/{method}/{currency}`: replace one method's terms (audited).
async fn put_method(
    app: &App,
    name: &str,
    currency: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    use kassa_actors::money::{Currency, Money};
    if !crate::methods::METHODS.contains(&name) {
        return Err(
            ApiError::unprocessable("method_unsupported", "no such method").with_param("method"),
        );
    }
    let currency =
        Currency::from_code(currency).map_err(|e| ApiError::from(e).with_param("currency"))?;
    let Some(mut f) = Fields::parse(body, false)? else {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the request body is empty",
        ));
    };
    let channel = f.required_string("channel")?;
    let min = f.amount("min_amount", true)?.unwrap_or_default();
    let max = f.amount("max_amount", true)?.unwrap_or_default();
    let enabled = f.boolean("enabled")?.unwrap_or(true);
    f.finish()?;
    if !crate::methods::CHANNELS.contains(&channel.as_str()) {
        return Err(
            ApiError::unprocessable("value_invalid", "no such channel").with_param("channel")
        );
    }
    // Each method speaks one protocol, carried by the one channel of that name.
    if channel != name {
        return Err(ApiError::unprocessable(
            "value_invalid",
            format!("the {name} method is carried by the {name} channel"),
        )
        .with_param("channel"));
    }
    let min = Money::parse_positive(&min, currency)
        .map_err(|e| ApiError::from(e).with_param("min_amount"))?;
    let max = Money::parse_positive(&max, currency)
        .map_err(|e| ApiError::from(e).with_param("max_amount"))?;
    if min.minor_units() > max.minor_units() {
        return Err(
            ApiError::unprocessable("value_invalid", "min_amount exceeds max_amount")
                .with_param("min_amount"),
        );
    }
    let record = kassa_store::MethodRecord {
        method: name.to_string(),
        currency: currency.code().to_string(),
        channel,
        min_minor: min.minor_units(),
        max_minor: max.minor_units(),
        enabled,
        updated_ms: app.now_ms(),
    };
    app.methods.put(record.clone()).await?;
    tracing::info!(target: "audit", method = %record.method, currency = %record.currency,
        channel = %record.channel, min_minor = record.min_minor, max_minor = record.max_minor,
        enabled = record.enabled, "payment method terms changed by an operator");
    Ok(json(StatusCode::OK, &method_json(&record)))
}
