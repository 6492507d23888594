//! One request to an asynchronous channel (`/qr/`, `/app/`, `/bank/`): read the bounded body,
//! check the protocol's signature, meet the request's fate (the channel's own behaviour draw),
//! route, answer in JSON after the drawn latency. The same flow as the card channel's in
//! `routes`, on the channel's own behaviour, RNG and counters.
//!
//! The customer pages (`GET /qr/pay/{ref}`, `GET /app/pay/{ref}`) are unsigned, never chaotic
//! and never counted, like the card's 3-D Secure page.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};

use super::behaviour::Verdict;
use super::channels::{self, Channel};
use super::routes::{
    ApiError, HOLD_MS_MAX, HoldExpired, finish, injected_failure, not_found, read_body,
};
use super::stats::{Counter, Stats};
use super::{State, app_api, bank_api, qr_api, settlement};
use crate::card::signature::now_unix_s;

pub(crate) async fn handle(
    state: Arc<State>,
    channel: Channel,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, HoldExpired> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    if method == Method::GET
        && let Some(provider_ref) = customer_page(channel, &path)
    {
        let paid = request.uri().query() != Some("result=fail");
        let answer = settlement::customer_page(&state, channel, provider_ref, paid).await;
        return Ok(finish(&method, &path, answer));
    }
    let stats = channels::stats(&state, channel).clone();
    let fate = {
        let mut chaos = channels::chaos(&state, channel).lock();
        let limit = chaos.behaviour().max_requests_per_s;
        stats.request(now_unix_s(), limit);
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

/// The provider reference of a customer page of `channel`, if `path` is one.
fn customer_page(channel: Channel, path: &str) -> Option<&str> {
    let prefix = match channel {
        Channel::QrWallet => qr_api::PAY_PAGE_PREFIX,
        Channel::AppWallet => app_api::PAY_PAGE_PREFIX,
        Channel::BankTransfer | Channel::Card => return None,
    };
    path.strip_prefix(prefix)
}

/// Reads the bounded body and checks the channel's signature.
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
    let now_s = now_unix_s();
    let verified = match channel {
        Channel::QrWallet => qr_api::authenticate(state, &body, now_s),
        Channel::AppWallet => app_api::authenticate(
            state,
            &parts.headers,
            &parts.method,
            signed_path,
            &body,
            now_s,
        ),
        Channel::BankTransfer => bank_api::authenticate(
            state,
            &parts.headers,
            &parts.method,
            signed_path,
            &body,
            now_s,
        ),
        // Card requests never come here.
        Channel::Card => return Err(not_found()),
    };
    verified.map_err(|error| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            error.to_string(),
        )
    })?;
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
        Channel::QrWallet => qr_api::route(state, method, path, body).await,
        Channel::AppWallet => app_api::route(state, method, path, body).await,
        Channel::BankTransfer => bank_api::route(state, method, path, body).await,
        Channel::Card => Err(not_found()),
    }
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
