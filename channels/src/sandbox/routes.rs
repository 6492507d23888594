//! One request: read the bounded body, check the signature, meet the request's fate (the
//! behaviour's draw), route, answer in JSON after the drawn latency.
//!
//! Channel requests (`/card/…`, and through `async_routes` `/qr/`, `/app/`, `/bank/`) are
//! counted and chaotic, each on its channel's own behaviour and counters ([`serve`]);
//! `/healthz` and `/sandbox/…` never are.
//! An injected 5xx or 429 is decided before the work (nothing is charged); a held request
//! ("timeout") does the work first and then never answers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};

use super::behaviour::Verdict;
use super::channels::{self, Channel};
use super::ledger::LedgerError;
use super::stats::{Counter, Stats};
use super::wire::{ErrorDetail, ErrorView};
use super::{State, async_routes, card_api, control, settlement};
use crate::card::signature::{self, SIGNATURE_HEADER};

/// The largest request body the sandbox reads.
const REQUEST_BODY_BYTES_MAX: usize = 64 * 1024;
/// The longest a held ("timed out") request is kept open when its client does not give up.
pub const HOLD_MS_MAX: u64 = 60_000;
/// `Retry-After` on an injected 429, in seconds.
const RATE_LIMIT_RETRY_AFTER_S: u64 = 1;
/// Requests under this prefix are the card channel's, and the behaviour applies to them.
const CARD_PATH_PREFIX: &str = "/card/";
/// The cardholder's 3-D Secure page, `/challenge/{charge_id}` (unsigned).
pub const CHALLENGE_PATH_PREFIX: &str = "/challenge/";

/// An error answer: `{"error":{"code","message"}}` with its status. The message never quotes
/// the request.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// `Retry-After` in seconds, when the answer carries one.
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }

    pub(crate) fn rate_limited() -> Self {
        Self {
            retry_after_s: Some(RATE_LIMIT_RETRY_AFTER_S),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests; retry after the Retry-After delay",
            )
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
            LedgerError::NotRevertible => (StatusCode::CONFLICT, "charge_not_revertible"),
            LedgerError::NotReversible => (StatusCode::CONFLICT, "charge_not_reversible"),
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

/// The service's error: a held request whose hold ran out (or the sandbox is stopping). hyper
/// closes the connection without an answer, which is what a lost answer looks like.
#[derive(Debug)]
pub(crate) struct HoldExpired;

impl std::fmt::Display for HoldExpired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a held request was closed without an answer")
    }
}

impl std::error::Error for HoldExpired {}

pub(crate) async fn handle(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, HoldExpired> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    if method == Method::GET && path == "/healthz" {
        return Ok(respond(
            StatusCode::OK,
            Bytes::from_static(br#"{"status":"ok"}"#),
        ));
    }
    if method == Method::GET
        && let Some(charge_id) = path.strip_prefix(CHALLENGE_PATH_PREFIX)
    {
        let passed = request.uri().query() != Some("result=fail");
        let answer = card_api::challenge(&state, charge_id, passed).await;
        return Ok(finish(&method, &path, answer));
    }
    if let Some(channel) = Channel::of_async_path(&path) {
        return async_routes::handle(state, channel, request).await;
    }
    if !path.starts_with(CARD_PATH_PREFIX) {
        // The sandbox's own endpoints, signed like the card channel's: never chaotic, never
        // delayed, never counted.
        let answer = match authenticate(&state, Channel::Card, request).await {
            Ok((parts, body)) => {
                route_sandbox(&state, &parts.method, parts.uri.path(), &body).await
            }
            Err(error) => Err(error),
        };
        return Ok(finish(&method, &path, answer));
    }
    serve(state, Channel::Card, request).await
}

/// A request to a channel's API: counted, its fate drawn from the channel's behaviour,
/// authenticated by the channel's protocol, routed, answered after the drawn latency. An
/// injected 5xx or 429 is decided before the work; a held request does the work first.
pub(crate) async fn serve(
    state: Arc<State>,
    channel: Channel,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, HoldExpired> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let stats = channels::stats(&state, channel).clone();
    let fate = {
        let mut chaos = channels::chaos(&state, channel).lock();
        let limit = chaos.behaviour().max_requests_per_s;
        stats.request(signature::now_unix_s(), limit);
        chaos.draw()
    };
    let answer = match authenticate(&state, channel, request).await {
        // A request that fails authentication is refused whatever its fate.
        Err(error) => Err(error),
        Ok((parts, body)) => match fate.verdict {
            Verdict::Serve => route(&state, channel, &parts, &body).await,
            Verdict::Fail(status) => {
                stats.bump(Counter::ErrorsInjected);
                Err(injected_failure(status))
            }
            Verdict::RateLimit => {
                stats.bump(Counter::RateLimitedInjected);
                Err(ApiError::rate_limited())
            }
            Verdict::Hold => {
                stats.bump(Counter::TimeoutsInjected);
                // The work first: the provider acted, only its answer is lost.
                let _lost = route(&state, channel, &parts, &body).await;
                return Err(hold(&state, &stats).await);
            }
        },
    };
    if !fate.latency.is_zero() {
        tokio::time::sleep(fate.latency).await;
    }
    Ok(finish(&method, &path, answer))
}

/// Holds a request without answering until [`HOLD_MS_MAX`] passes or the sandbox stops,
/// counted in the channel's `connections_held`. When the client gives up first, hyper drops
/// this future with the connection.
async fn hold(state: &Arc<State>, stats: &Arc<Stats>) -> HoldExpired {
    let _held = stats.hold();
    let mut stopping = state.stopping.subscribe();
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(HOLD_MS_MAX)) => {}
        // A stop, or a dropped sender (which also means stop).
        _ = stopping.wait_for(|stopped| *stopped) => {}
    }
    HoldExpired
}

pub(crate) fn injected_failure(status: u16) -> ApiError {
    match status {
        502 => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            "the provider's upstream failed",
        ),
        503 => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "the provider is unavailable",
        ),
        _ => ApiError::internal(),
    }
}

pub(crate) fn finish(
    method: &Method,
    path: &str,
    answer: Result<Bytes, ApiError>,
) -> Response<Full<Bytes>> {
    match answer {
        Ok(body) => respond(StatusCode::OK, body),
        Err(error) => {
            tracing::debug!(%method, %path, status = error.status.as_u16(), code = error.code, "sandbox refused a request");
            error_response(&error)
        }
    }
}

/// Reads the bounded body and checks the channel's signature (`Sandbox-Signature` for the
/// card channel and the sandbox's own endpoints).
async fn authenticate(
    state: &Arc<State>,
    channel: Channel,
    request: Request<Incoming>,
) -> Result<(Parts, Bytes), ApiError> {
    let (parts, body) = request.into_parts();
    let body = read_body(body).await?;
    let signed_path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |path| path.as_str());
    let now_s = signature::now_unix_s();
    let verified = match channel {
        Channel::Card => {
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
                now_s,
            )
            .map_err(|error| error.to_string())
        }
        Channel::QrWallet | Channel::AppWallet | Channel::BankTransfer => {
            async_routes::verify(state, channel, &parts, signed_path, &body, now_s)
                .map_err(|error| error.to_string())
        }
    };
    verified
        .map_err(|message| ApiError::new(StatusCode::UNAUTHORIZED, "invalid_signature", message))?;
    Ok((parts, body))
}

async fn route(
    state: &Arc<State>,
    channel: Channel,
    parts: &Parts,
    body: &Bytes,
) -> Result<Bytes, ApiError> {
    let (method, path) = (&parts.method, parts.uri.path());
    match channel {
        Channel::Card => route_card(state, method, path, body).await,
        Channel::QrWallet | Channel::AppWallet | Channel::BankTransfer => {
            async_routes::route(state, channel, method, path, body).await
        }
    }
}

async fn route_card(
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
        (&Method::POST, ["card", "v1", "charges", id, "uncapture"]) => {
            card_api::uncapture(state, id, body).await
        }
        (&Method::POST, ["card", "v1", "charges", id, "reverse"]) => {
            card_api::reverse(state, id, body).await
        }
        (&Method::GET, ["card", "v1", "charges", id]) => card_api::retrieve(state, id).await,
        (&Method::POST, ["card", "v1", "refunds"]) => card_api::refund(state, body).await,
        _ => Err(not_found()),
    }
}

async fn route_sandbox(
    state: &Arc<State>,
    method: &Method,
    path: &str,
    body: &Bytes,
) -> Result<Bytes, ApiError> {
    if let Some(channel) = control::channel_behaviour_path(path) {
        return control::channel_behaviour(state, method, channel, body);
    }
    match (method, path) {
        (&Method::GET, "/sandbox/ledger") => settlement::ledger(state).await,
        (&Method::GET, "/sandbox/behaviour") => control::behaviour(state),
        (&Method::PUT, "/sandbox/behaviour") => control::replace_behaviour(state, body),
        (&Method::GET, "/sandbox/stats") => control::stats(state),
        _ => Err(not_found()),
    }
}

pub(crate) fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "route_not_found", "no such route")
}

pub(crate) async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
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
    let mut response = respond(error.status, body);
    if let Some(seconds) = error.retry_after_s {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn respond(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
