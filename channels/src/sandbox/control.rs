//! The sandbox's own endpoints, for tests and operators: read and replace the behaviour while
//! running, and read the counters. Signed like every request, never chaotic, never delayed.
//!
//! * `GET /sandbox/behaviour` → the [`Behaviour`] as JSON;
//! * `PUT /sandbox/behaviour` with a [`Behaviour`] (missing fields take their defaults) →
//!   the behaviour now in force; 422 `invalid_behaviour` when a bound fails;
//! * `GET`/`PUT /sandbox/channels/{channel}/behaviour`, the same for one channel (`card`,
//!   `qr_wallet`, `app_wallet`, `bank_transfer`; `card` is `/sandbox/behaviour`); 404
//!   `unknown_channel` for another name;
//! * `GET /sandbox/stats` → [`super::StatsView`]: the card channel's counters at the top level,
//!   every channel's under `channels`.

use std::sync::Arc;

use bytes::Bytes;
use hyper::StatusCode;

use hyper::Method;

use super::State;
use super::behaviour::Behaviour;
use super::channels::{self, Channel};
use super::routes::ApiError;
use crate::card::signature::now_unix_s;

pub(crate) fn behaviour(state: &Arc<State>) -> Result<Bytes, ApiError> {
    let behaviour = state.chaos.lock().behaviour().clone();
    json(&behaviour)
}

/// The channel name in `/sandbox/channels/{channel}/behaviour`, if `path` is one.
pub(crate) fn channel_behaviour_path(path: &str) -> Option<&str> {
    path.strip_prefix("/sandbox/channels/")?
        .strip_suffix("/behaviour")
}

/// `GET`/`PUT /sandbox/channels/{channel}/behaviour`.
pub(crate) fn channel_behaviour(
    state: &Arc<State>,
    method: &Method,
    name: &str,
    body: &Bytes,
) -> Result<Bytes, ApiError> {
    let channel = Channel::from_name(name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_channel",
            "no such channel: card, qr_wallet, app_wallet or bank_transfer",
        )
    })?;
    match *method {
        Method::GET => json(&channels::behaviour(state, channel)),
        Method::PUT => {
            let behaviour = parse_behaviour(body)?;
            channels::replace_behaviour(state, channel, behaviour.clone()).map_err(|error| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_behaviour",
                    error.0,
                )
            })?;
            json(&behaviour)
        }
        _ => Err(super::routes::not_found()),
    }
}

fn parse_behaviour(body: &Bytes) -> Result<Behaviour, ApiError> {
    serde_json::from_slice(body).map_err(|error| {
        ApiError::bad_request(
            "invalid_json",
            format!(
                "the body is not a behaviour (line {}, column {})",
                error.line(),
                error.column()
            ),
        )
    })
}

pub(crate) fn replace_behaviour(state: &Arc<State>, body: &Bytes) -> Result<Bytes, ApiError> {
    let behaviour: Behaviour = serde_json::from_slice(body).map_err(|error| {
        ApiError::bad_request(
            "invalid_json",
            format!(
                "the body is not a behaviour (line {}, column {})",
                error.line(),
                error.column()
            ),
        )
    })?;
    behaviour.validate().map_err(|error| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_behaviour",
            error.0,
        )
    })?;
    tracing::info!(?behaviour, "sandbox behaviour replaced");
    state.chaos.lock().replace(behaviour.clone());
    json(&behaviour)
}

pub(crate) fn stats(state: &Arc<State>) -> Result<Bytes, ApiError> {
    json(&channels::stats_view(state, now_unix_s()))
}

fn json<T: serde::Serialize>(value: &T) -> Result<Bytes, ApiError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|_| ApiError::internal())
}
