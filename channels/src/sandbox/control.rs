//! The sandbox's own endpoints, for tests and operators: read and replace the behaviour while
//! running, and read the counters. Signed like every request, never chaotic, never delayed.
//!
//! * `GET /sandbox/behaviour` → the [`Behaviour`] as JSON;
//! * `PUT /sandbox/behaviour` with a [`Behaviour`] (missing fields take their defaults) →
//!   the behaviour now in force; 422 `invalid_behaviour` when a bound fails;
//! * `GET /sandbox/stats` → [`super::StatsView`].

use std::sync::Arc;

use bytes::Bytes;
use hyper::StatusCode;

use super::State;
use super::behaviour::Behaviour;
use super::routes::ApiError;
use crate::card::signature::now_unix_s;

pub(crate) fn behaviour(state: &Arc<State>) -> Result<Bytes, ApiError> {
    let behaviour = state.chaos.lock().behaviour().clone();
    json(&behaviour)
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
    json(&state.stats.view(now_unix_s()))
}

fn json<T: serde::Serialize>(value: &T) -> Result<Bytes, ApiError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|_| ApiError::internal())
}
