//! From an HTTP request to a route: per-IP limit, method and path, body limit,
//! authentication, per-merchant limit, idempotency, then the handler. Every failure becomes
//! the error object; a panic in a handler becomes a 500, never a dropped connection.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::app::App;
use crate::http::error::{ApiError, json_response};
use crate::http::rate_limit::{self, Scope};
use crate::http::{Body, PeerAddr, auth, body};
use crate::idempotency::{Begin, fingerprint};
use crate::routes::{Answer, events, payments, refunds};

enum Endpoint<'a> {
    CreatePayment,
    ListPayments,
    GetPayment(&'a str),
    CapturePayment(&'a str),
    CancelPayment(&'a str),
    ConfirmPayment(&'a str),
    /// `complete_revert` and `reversal` (card pre-authorisation commands).
    UndoPayment(&'a str, kassa_actors::payment_order::UndoKind),
    CreateRefund,
    GetRefund(&'a str),
    ListEvents,
    GetEvent(&'a str),
    ResendEvent(&'a str),
    CreateWallet,
    GetWallet(&'a str),
    TopUpWallet(&'a str),
    WithdrawFromWallet(&'a str),
    ListWalletTransactions(&'a str),
}

fn route_not_found() -> ApiError {
    ApiError::invalid(StatusCode::NOT_FOUND, "route_not_found", "no such route")
}

fn method_not_allowed(allowed: &'static str) -> ApiError {
    ApiError::method_not_allowed(allowed)
}

fn endpoint<'a>(method: &Method, segments: &[&'a str]) -> Result<Endpoint<'a>, ApiError> {
    let only = |allowed: &'static str, e: Endpoint<'a>| {
        if method.as_str() == allowed {
            Ok(e)
        } else {
            Err(method_not_allowed(allowed))
        }
    };
    match segments {
        ["payments"] if method == Method::GET => Ok(Endpoint::ListPayments),
        ["payments"] if method == Method::POST => Ok(Endpoint::CreatePayment),
        ["payments"] => Err(method_not_allowed("GET, POST")),
        ["payments", id] => only("GET", Endpoint::GetPayment(id)),
        ["payments", id, "capture"] => only("POST", Endpoint::CapturePayment(id)),
        ["payments", id, "cancel"] => only("POST", Endpoint::CancelPayment(id)),
        ["payments", id, "confirm"] => only("POST", Endpoint::ConfirmPayment(id)),
        // The pre-authorisation family by name: preauth_complete is a capture, preauth_cancel
        // a cancel; preauth is `POST /v1/payments` with `capture: manual`, preauth_refund a refund.
        ["payments", id, "preauth_complete"] => only("POST", Endpoint::CapturePayment(id)),
        ["payments", id, "preauth_cancel"] => only("POST", Endpoint::CancelPayment(id)),
        ["payments", id, "complete_revert"] => only(
            "POST",
            Endpoint::UndoPayment(id, kassa_actors::payment_order::UndoKind::CompleteRevert),
        ),
        ["payments", id, "reverse"] => only(
            "POST",
            Endpoint::UndoPayment(id, kassa_actors::payment_order::UndoKind::Reversal),
        ),
        ["refunds"] => only("POST", Endpoint::CreateRefund),
        ["refunds", id] => only("GET", Endpoint::GetRefund(id)),
        ["events"] => only("GET", Endpoint::ListEvents),
        ["events", id] => only("GET", Endpoint::GetEvent(id)),
        ["events", id, "resend"] => only("POST", Endpoint::ResendEvent(id)),
        ["wallets"] => only("POST", Endpoint::CreateWallet),
        ["wallets", id] => only("GET", Endpoint::GetWallet(id)),
        ["wallets", id, "top_ups"] => only("POST", Endpoint::TopUpWallet(id)),
        ["wallets", id, "withdrawals"] => only("POST", Endpoint::WithdrawFromWallet(id)),
        ["wallets", id, "transactions"] => only("GET", Endpoint::ListWalletTransactions(id)),
        _ => Err(route_not_found()),
    }
}

/// Declares the public routes once: [`ROUTES`] (what the OpenAPI document must describe) and
/// the metrics label of each (`"METHOD /template"`), indexed by [`Route`].
macro_rules! public_routes {
    ($($name:ident => $method:literal $template:literal,)*) => {
        /// Every route of the merchant API and the unauthenticated probes, as
        /// (method, path template): docs/openapi.json describes exactly these (tests/openapi.rs).
        /// The operator API (`/admin`, `/metrics`) and the channels' callbacks are not in it.
        pub const ROUTES: &[(&str, &str)] = &[$(($method, $template),)*];
        const ROUTE_LABELS: &[&str] = &[$(concat!($method, " ", $template),)*];
        #[derive(Clone, Copy)]
        enum Route {
            $($name,)*
        }
    };
}

public_routes! {
    Healthz => "GET" "/healthz",
    Readyz => "GET" "/readyz",
    OpenApi => "GET" "/openapi.json",
    CreatePayment => "POST" "/v1/payments",
    ListPayments => "GET" "/v1/payments",
    GetPayment => "GET" "/v1/payments/{id}",
    CapturePayment => "POST" "/v1/payments/{id}/capture",
    CancelPayment => "POST" "/v1/payments/{id}/cancel",
    ConfirmPayment => "POST" "/v1/payments/{id}/confirm",
    PreauthComplete => "POST" "/v1/payments/{id}/preauth_complete",
    PreauthCancel => "POST" "/v1/payments/{id}/preauth_cancel",
    CompleteRevert => "POST" "/v1/payments/{id}/complete_revert",
    Reverse => "POST" "/v1/payments/{id}/reverse",
    CreateRefund => "POST" "/v1/refunds",
    GetRefund => "GET" "/v1/refunds/{id}",
    ListEvents => "GET" "/v1/events",
    GetEvent => "GET" "/v1/events/{id}",
    ResendEvent => "POST" "/v1/events/{id}/resend",
    CreateWallet => "POST" "/v1/wallets",
    GetWallet => "GET" "/v1/wallets/{id}",
    TopUpWallet => "POST" "/v1/wallets/{id}/top_ups",
    WithdrawFromWallet => "POST" "/v1/wallets/{id}/withdrawals",
    ListWalletTransactions => "GET" "/v1/wallets/{id}/transactions",
}

/// The OpenAPI document of the merchant API, served at `GET /openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../../docs/openapi.json");

/// The route template of a request, for metrics (bounded: static strings only).
fn route_label(method: &Method, path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let route = match segments.as_slice() {
        ["healthz"] => Route::Healthz,
        ["readyz"] => Route::Readyz,
        ["openapi.json"] => Route::OpenApi,
        ["metrics"] => return "GET /metrics",
        ["admin", rest @ ..] => return crate::admin::route_label(method, rest),
        ["callbacks", "card"] => return "POST /callbacks/card",
        ["callbacks", "qr_wallet"] => return "POST /callbacks/qr_wallet",
        ["callbacks", "app_wallet"] => return "POST /callbacks/app_wallet",
        ["callbacks", "bank_transfer"] => return "POST /callbacks/bank_transfer",
        ["v1", rest @ ..] => match endpoint(method, rest) {
            Ok(Endpoint::CreatePayment) => Route::CreatePayment,
            Ok(Endpoint::ListPayments) => Route::ListPayments,
            Ok(Endpoint::GetPayment(_)) => Route::GetPayment,
            // The pre-authorisation aliases share their handler, not their label.
            Ok(Endpoint::CapturePayment(_)) if rest.last() == Some(&"preauth_complete") => {
                Route::PreauthComplete
            }
            Ok(Endpoint::CapturePayment(_)) => Route::CapturePayment,
            Ok(Endpoint::CancelPayment(_)) if rest.last() == Some(&"preauth_cancel") => {
                Route::PreauthCancel
            }
            Ok(Endpoint::CancelPayment(_)) => Route::CancelPayment,
            Ok(Endpoint::ConfirmPayment(_)) => Route::ConfirmPayment,
            Ok(Endpoint::UndoPayment(_, kassa_actors::payment_order::UndoKind::CompleteRevert)) => {
                Route::CompleteRevert
            }
            Ok(Endpoint::UndoPayment(_, kassa_actors::payment_order::UndoKind::Reversal)) => {
                Route::Reverse
            }
            Ok(Endpoint::CreateRefund) => Route::CreateRefund,
            Ok(Endpoint::GetRefund(_)) => Route::GetRefund,
            Ok(Endpoint::ListEvents) => Route::ListEvents,
            Ok(Endpoint::GetEvent(_)) => Route::GetEvent,
            Ok(Endpoint::ResendEvent(_)) => Route::ResendEvent,
            Ok(Endpoint::CreateWallet) => Route::CreateWallet,
            Ok(Endpoint::GetWallet(_)) => Route::GetWallet,
            Ok(Endpoint::TopUpWallet(_)) => Route::TopUpWallet,
            Ok(Endpoint::WithdrawFromWallet(_)) => Route::WithdrawFromWallet,
            Ok(Endpoint::ListWalletTransactions(_)) => Route::ListWalletTransactions,
            Err(_) => return "unmatched",
        },
        _ => return "unmatched",
    };
    ROUTE_LABELS[route as usize]
}

pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let label = route_label(&method, &path);
    let deadline = Duration::from_millis(app.settings.http.request_timeout_ms);
    let routed =
        tokio::time::timeout(deadline, AssertUnwindSafe(route(&app, req)).catch_unwind()).await;
    let response = match routed {
        Ok(Ok(Ok(response))) => response,
        Ok(Ok(Err(error))) => error.into_response(),
        Ok(Err(_panic)) => {
            tracing::error!(%method, %path, "request handler panicked");
            ApiError::internal().into_response()
        }
        Err(_elapsed) => {
            ApiError::unavailable("overloaded", "the request took too long; retry").into_response()
        }
    };
    let elapsed = started.elapsed();
    app.metrics
        .observe_request(label, response.status().as_u16(), elapsed);
    // Per request at debug: an access log line per request costs more than the request itself
    // under a burst; `kassa_http_requests_total` and the latency histogram count every one.
    tracing::debug!(%method, %path, status = response.status().as_u16(),
        latency_us = elapsed.as_micros() as u64, "request");
    response
}

async fn route(app: &Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let (parts, incoming) = req.into_parts();
    let path = parts.uri.path();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let declared_len = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let limit = body::Limits::of(&app.settings.http);
    match segments.as_slice() {
        ["healthz"] => match parts.method {
            Method::GET => Ok(json_response(
                StatusCode::OK,
                Bytes::from_static(br#"{"status":"ok"}"#),
            )),
            _ => Err(method_not_allowed("GET")),
        },
        ["readyz"] => match parts.method {
            Method::GET => Ok(crate::admin::readyz(app).await),
            _ => Err(method_not_allowed("GET")),
        },
        ["openapi.json"] => match parts.method {
            Method::GET => Ok(json_response(
                StatusCode::OK,
                Bytes::from_static(OPENAPI_JSON.as_bytes()),
            )),
            _ => Err(method_not_allowed("GET")),
        },
        ["metrics"] => match parts.method {
            Method::GET => Ok(crate::admin::metrics(app).await),
            _ => Err(method_not_allowed("GET")),
        },
        ["callbacks", channel] => {
            if parts.method != Method::POST {
                return Err(method_not_allowed("POST"));
            }
            let body = body::read_limited(incoming, declared_len, limit).await?;
            let (status, content_type, body) =
                crate::routes::callbacks::receive(app, channel, path, &parts.headers, &body)
                    .await?;
            let mut response = json_response(status, body);
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(content_type),
            );
            Ok(response)
        }
        ["admin", rest @ ..] => {
            crate::admin::route(
                app,
                &parts.method,
                &parts.headers,
                rest,
                parts.uri.query(),
                incoming,
                declared_len,
            )
            .await
        }
        ["v1", rest @ ..] => {
            let limits = &app.front_limits;
            // Per client address first: nothing of the request is read yet.
            if let Some(PeerAddr(peer)) = parts.extensions.get::<PeerAddr>()
                && let Err(wait) = limits.check_ip(peer.ip())
            {
                app.metrics.rate_limited.count(Scope::Ip);
                return Err(rate_limit::refused(Scope::Ip, wait));
            }
            let _admitted = app.admission.admit()?;
            let endpoint = endpoint(&parts.method, rest)?;
            let body = body::read_limited(incoming, declared_len, limit).await?;
            let path_and_query = parts.uri.path_and_query().map_or(path, |pq| pq.as_str());
            let merchant = auth::merchant(
                &app.merchants,
                &parts.headers,
                parts.method.as_str(),
                path_and_query,
                &body,
                app.now_ms(),
                app.settings.http.signature_window_s,
            )
            .await?;
            // Per merchant once the signature verified: nobody spends another's budget.
            if let Err(wait) = limits.check_merchant(&merchant.id) {
                app.metrics.rate_limited.count(Scope::Merchant);
                return Err(rate_limit::refused(Scope::Merchant, wait));
            }
            let key = parts
                .headers
                .get("idempotency-key")
                .map(|v| v.to_str().unwrap_or("\u{0}"));
            let key = key.filter(|_| parts.method == Method::POST);
            let Some(key) = key else {
                let (status, body) =
                    dispatch(app, &merchant, endpoint, &body, None, parts.uri.query()).await?;
                return Ok(json_response(status, body));
            };
            let fp = fingerprint(parts.method.as_str(), path_and_query, &body);
            match app.idempotency.begin(&merchant.id, key, fp).await? {
                Begin::Replay { status, body } => Ok(replayed(status, body)),
                Begin::Fresh(guard) => {
                    let answer = dispatch(app, &merchant, endpoint, &body, Some(key), None).await;
                    let (status, body) = match answer {
                        Ok(ok) => ok,
                        // "Try again" answers are not kept: the same key may be retried.
                        Err(e)
                            if e.status.is_server_error()
                                || e.status == StatusCode::TOO_MANY_REQUESTS =>
                        {
                            return Ok(e.into_response());
                        }
                        // Errors that say what is wrong with the request are answers too.
                        Err(e) => (e.status, e.body()),
                    };
                    let (status, body, was_replay) = app
                        .idempotency
                        .finish(guard, status, body, app.now_ms())
                        .await?;
                    Ok(if was_replay {
                        replayed(status, body)
                    } else {
                        json_response(status, body)
                    })
                }
            }
        }
        _ => Err(route_not_found()),
    }
}

fn replayed(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut response = json_response(status, body);
    response.headers_mut().insert(
        "idempotent-replayed",
        header::HeaderValue::from_static("true"),
    );
    response
}

async fn dispatch(
    app: &App,
    merchant: &crate::merchants::Merchant,
    endpoint: Endpoint<'_>,
    body: &[u8],
    key: Option<&str>,
    query: Option<&str>,
) -> Answer {
    match endpoint {
        Endpoint::CreatePayment => payments::create(app, merchant, body, key).await,
        Endpoint::ListPayments => payments::list(app, merchant, query).await,
        Endpoint::GetPayment(id) => payments::retrieve(app, merchant, id).await,
        Endpoint::CapturePayment(id) => payments::capture(app, merchant, id, body, key).await,
        Endpoint::CancelPayment(id) => payments::cancel(app, merchant, id, body, key).await,
        Endpoint::ConfirmPayment(id) => payments::confirm(app, merchant, id, body).await,
        Endpoint::UndoPayment(id, kind) => payments::undo(app, merchant, id, kind, body, key).await,
        Endpoint::CreateRefund => refunds::create(app, merchant, body, key).await,
        Endpoint::GetRefund(id) => refunds::retrieve(app, merchant, id).await,
        Endpoint::ListEvents => events::list(app, merchant, query).await,
        Endpoint::GetEvent(id) => events::retrieve(app, merchant, id).await,
        Endpoint::ResendEvent(id) => events::resend(app, merchant, id).await,
        Endpoint::CreateWallet => crate::routes::wallets::create(app, merchant, body, key).await,
        Endpoint::GetWallet(id) => crate::routes::wallets::retrieve(app, merchant, id).await,
        Endpoint::TopUpWallet(id) => {
            crate::routes::wallets::top_up(app, merchant, id, body, key).await
        }
        Endpoint::WithdrawFromWallet(id) => {
            crate::routes::wallets::withdraw(app, merchant, id, body, key).await
        }
        Endpoint::ListWalletTransactions(id) => {
            crate::routes::wallets::transactions(app, merchant, id, query).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_public_route_is_served_and_labelled_by_its_template() {
        for (method, template) in ROUTES {
            let method = Method::from_bytes(method.as_bytes()).expect("a method");
            let path = template.replace("{id}", "x_1");
            assert_eq!(
                route_label(&method, &path),
                format!("{method} {template}"),
                "{method} {path}"
            );
            if let ["v1", rest @ ..] = &path.trim_matches('/').split('/').collect::<Vec<_>>()[..] {
                assert!(
                    endpoint(&method, rest).is_ok(),
                    "{method} {path} is not served"
                );
            }
        }
        assert_eq!(route_label(&Method::DELETE, "/v1/payments"), "unmatched");
        assert_eq!(route_label(&Method::GET, "/v1/nothing"), "unmatched");
    }

    #[test]
    fn the_openapi_document_is_json() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).expect("valid JSON");
        assert_eq!(doc["info"]["title"], "Kassa merchant API");
    }
}
