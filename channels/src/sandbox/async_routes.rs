//! One request to an asynchronous channel (`/qr/`, `/app/`, `/bank/`): the customer pages, and
//! for the rest what `routes::serve` (the flow every channel's requests share, on the channel's
//! own behaviour, RNG and counters) asks of the channel: its signature check by protocol and
//! its routes.
//!
//! The customer pages (`GET /qr/pay/{ref}`, `GET /app/pay/{ref}`) are unsigned, never chaotic
//! and never counted, like the card's 3-D Secure page.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::http::request::Parts;
use hyper::{Method, Request, Response};

use super::channels::Channel;
use super::routes::{self, ApiError, HoldExpired, finish, not_found};
use super::{State, app_api, bank_api, qr_api, settlement};
use crate::app_wallet::signature as app_signature;
use crate::bank_transfer::signature as bank_signature;
use crate::qr_wallet::signature as qr_signature;
use crate::signing::SignatureError;

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
    routes::serve(state, channel, request).await
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

/// Checks the signature of a request to `signed_path` (with its query) by the channel's
/// protocol.
pub(crate) fn verify(
    state: &State,
    channel: Channel,
    parts: &Parts,
    signed_path: &str,
    body: &[u8],
    now_s: u64,
) -> Result<(), SignatureError> {
    let keys = &state.async_channels.keys;
    let (headers, method) = (&parts.headers, parts.method.as_str());
    match channel {
        // The form carries its signature (and its timestamp).
        Channel::QrWallet => {
            qr_signature::verify_form(keys.qr_sign.expose(), body, now_s).map(drop)
        }
        Channel::AppWallet => {
            let key = keys.app_sign.expose();
            app_signature::verify(key, headers, method, signed_path, body, now_s)
        }
        Channel::BankTransfer => {
            let key = keys.bank_sign.expose();
            bank_signature::verify(key, headers, method, signed_path, body, now_s)
        }
        // Card requests are verified by `routes` and never come here.
        Channel::Card => Err(SignatureError::Missing),
    }
}

pub(crate) async fn route(
    state: &Arc<State>,
    channel: Channel,
    method: &Method,
    path: &str,
    body: &Bytes,
) -> Result<Bytes, ApiError> {
    match channel {
        Channel::QrWallet => qr_api::route(state, method, path, body).await,
        Channel::AppWallet => app_api::route(state, method, path, body).await,
        Channel::BankTransfer => bank_api::route(state, method, path, body).await,
        Channel::Card => Err(not_found()),
    }
}
