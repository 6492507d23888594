//! Reading request bodies within `http.body_limit_bytes` and `http.body_read_timeout_ms`.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::http::error::ApiError;

/// The bounds every body is read within.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub bytes_max: usize,
    /// From the end of the head to the last body byte: a client trickling a body in (slowloris)
    /// holds a connection and a request slot no longer than this.
    pub read_timeout: Duration,
}

impl Limits {
    pub fn of(http: &kassa_config::HttpSettings) -> Limits {
        Limits {
            bytes_max: http.body_limit_bytes,
            read_timeout: Duration::from_millis(http.body_read_timeout_ms),
        }
    }
}

pub async fn read_limited(
    body: Incoming,
    declared_len: Option<u64>,
    limits: Limits,
) -> Result<Bytes, ApiError> {
    let limit_bytes = limits.bytes_max;
    let too_large = || {
        ApiError::invalid(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request bodies are limited to {limit_bytes} bytes"),
        )
    };
    if declared_len.is_some_and(|len| len > limit_bytes as u64) {
        return Err(too_large());
    }
    let read = tokio::time::timeout(
        limits.read_timeout,
        Limited::new(body, limit_bytes).collect(),
    );
    match read.await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large())
        }
        Ok(Err(_)) => Err(ApiError::bad_request(
            "invalid_body",
            "the request body could not be read",
        )),
        Err(_elapsed) => Err(ApiError::invalid(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body did not arrive within {} ms",
                limits.read_timeout.as_millis()
            ),
        )),
    }
}
