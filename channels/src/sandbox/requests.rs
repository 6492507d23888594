//! What every protocol's endpoints do alike with a request and its answer: parse a JSON body
//! without ever echoing it, serialise the answer, check the fields the protocols share, and
//! run ledger work on the blocking pool.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::State;
use super::routes::ApiError;

/// The longest idempotency key (or merchant order number) accepted, in bytes.
const IDEMPOTENCY_KEY_LEN_MAX: usize = 255;

/// Runs ledger work on the blocking pool (SQLite calls block), available on every runtime.
pub(crate) async fn on_blocking_pool<T, E, F>(state: &Arc<State>, work: F) -> Result<T, ApiError>
where
    F: FnOnce(&State) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
    ApiError: From<E>,
{
    let state = state.clone();
    tokio::task::spawn_blocking(move || work(&state))
        .await
        .map_err(|error| {
            tracing::error!(%error, "sandbox ledger task failed");
            ApiError::internal()
        })?
        .map_err(ApiError::from)
}

/// Parses a JSON request body. The error names the position, never the content: a body may
/// hold a card or an account number.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|error| {
        let (code, what) = match error.classify() {
            serde_json::error::Category::Data => {
                ("invalid_request", "does not match the endpoint's schema")
            }
            serde_json::error::Category::Io
            | serde_json::error::Category::Syntax
            | serde_json::error::Category::Eof => ("invalid_json", "is not valid JSON"),
        };
        ApiError::bad_request(
            code,
            format!(
                "the body {what} (line {}, column {})",
                error.line(),
                error.column()
            ),
        )
    })
}

/// Serialises an answer.
pub(crate) fn json<T: Serialize>(value: &T) -> Result<Bytes, ApiError> {
    serde_json::to_vec(value).map(Bytes::from).map_err(|error| {
        tracing::error!(%error, "sandbox answer could not be serialised");
        ApiError::internal()
    })
}

/// A key must be 1 to [`IDEMPOTENCY_KEY_LEN_MAX`] visible ASCII characters; `message` says so
/// in the protocol's words.
pub(crate) fn check_key(key: &str, message: &'static str) -> Result<(), ApiError> {
    let visible = key.bytes().all(|b| b.is_ascii_graphic());
    if visible && !key.is_empty() && key.len() <= IDEMPOTENCY_KEY_LEN_MAX {
        Ok(())
    } else {
        Err(ApiError::bad_request("invalid_idempotency_key", message))
    }
}

/// An amount must be a positive number of minor units; `message` says so in the protocol's
/// words.
pub(crate) fn check_amount(amount_minor: i64, message: &'static str) -> Result<(), ApiError> {
    if amount_minor > 0 {
        Ok(())
    } else {
        Err(ApiError::bad_request("invalid_amount", message))
    }
}

pub(crate) fn check_currency(currency: &str) -> Result<(), ApiError> {
    if currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_currency",
            "currency must be an upper-case ISO 4217 code",
        ))
    }
}

/// Checks `currency` when the request names one.
pub(crate) fn check_optional_currency(currency: Option<&str>) -> Result<(), ApiError> {
    currency.map_or(Ok(()), check_currency)
}
