//! One request: read the bounded body, check the signature, route, answer in JSON (after the
//! configured latency).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::ledger::LedgerError;
use super::wire::{ErrorDetail, ErrorView};
use super::{State, card_api};
use crate::card::signature::{self, SIGNATURE_HEADER};

/// The largest request body the sandbox reads.
const REQUEST_BODY_BYTES_MAX: usize = 64 * 1024;

/// An error answer: `{"error":{"code","message"}}` with its status. The message never quotes
/// the request.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub(crate) fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the sandbox failed",
        )
    }
}

impl From<LedgerError> for ApiError {
    fn from(error: LedgerError) -> Self {
        let message = error.to_string();
        let (status, code) = match &error {
            LedgerError::KeyReused => (StatusCode::CONFLICT, "idempotency_key_reused"),
            LedgerError::KeyBlocked => (StatusCode::CONFLICT, "key_blocked"),
            LedgerError::ChargeNotFound => (StatusCode::NOT_FOUND, "charge_not_found"),
            LedgerError::NotCapturable => (StatusCode::CONFLICT, "charge_not_capturable"),
            LedgerError::NotVoidable => (StatusCode::CONFLICT, "charge_not_voidable"),
            LedgerError::AmountExceedsAuthorized => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "amount_exceeds_authorized",
            ),
            LedgerError::CurrencyMismatch => {
                (StatusCode::UNPROCESSABLE_ENTITY, "currency_mismatch")
            }
            LedgerError::Storage(_) => {
                tracing::error!(%error, "sandbox ledger failed");
                return ApiError::internal();
            }
        };
        ApiError::new(status, code, message)
    }
}

pub(crate) async fn handle(state: Arc<State>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    if method == Method::GET && path == "/healthz" {
        return respond(StatusCode::OK, Bytes::from_static(br#"{"status":"ok"}"#));
    }
    let answer = authenticated(&state, request).await;
    if !state.latency.is_zero() {
        tokio::time::sleep(state.latency).await;
    }
    match answer {
        Ok(body) => respond(StatusCode::OK, body),
        Err(error) => {
            tracing::debug!(%method, %path, status = error.status.as_u16(), code = error.code, "sandbox refused a request");
            error_response(&error)
        }
    }
}

async fn authenticated(state: &Arc<State>, request: Request<Incoming>) -> Result<Bytes, ApiError> {
    let (parts, body) = request.into_parts();
    let body = read_body(body).await?;
    let signed_path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |path| path.as_str());
    let header = parts
        .headers
        .get(SIGNATURE_HEADER)
        .map(|value| value.to_str().unwrap_or(""));
    signature::verify(
        state.api_secret.expose().as_bytes(),
        header,
        parts.method.as_str(),
        signed_path,
        &body,
        signature::now_unix_s(),
    )
    .map_err(|error| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            error.to_string(),
        )
    })?;
    route(state, &parts.method, parts.uri.path(), &body).await
}

async fn route(
    state: &Arc<State>,
    method: &Method,
    path: &str,
    body: &Bytes,
) -> Result<Bytes, ApiError> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::POST, ["card", "v1", "charges"]) => card_api::create_charge(state, body).await,
        (&Method::POST, ["card", "v1", "charges", "resolve"]) => {
            card_api::resolve(state, body).await
        }
        (&Method::POST, ["card", "v1", "charges", id, "capture"]) => {
            card_api::capture(state, id, body).await
        }
        (&Method::POST, ["card", "v1", "charges", id, "void"]) => {
            card_api::void(state, id, body).await
        }
        (&Method::GET, ["card", "v1", "charges", id]) => card_api::retrieve(state, id).await,
        (&Method::POST, ["card", "v1", "refunds"]) => card_api::refund(state, body).await,
        (&Method::GET, ["sandbox", "ledger"]) => card_api::ledger(state).await,
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "route_not_found",
            "no such route",
        )),
    }
}

async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    match Limited::new(body, REQUEST_BODY_BYTES_MAX).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the request body exceeds 64 KiB",
        )),
        Err(_) => Err(ApiError::bad_request(
            "unreadable_body",
            "the request body could not be read",
        )),
    }
}

fn error_response(error: &ApiError) -> Response<Full<Bytes>> {
    let view = ErrorView {
        error: ErrorDetail {
            code: error.code,
            message: &error.message,
        },
    };
    let body = serde_json::to_vec(&view)
        .map(Bytes::from)
        .unwrap_or_else(|_| {
            Bytes::from_static(
                br#"{"error":{"code":"internal_error","message":"the sandbox failed"}}"#,
            )
        });
    respond(error.status, body)
}

fn respond(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
