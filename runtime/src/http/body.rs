//! Reading request bodies within `http.body_limit_bytes`.

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::http::error::ApiError;

pub async fn read_limited(
    body: Incoming,
    declared_len: Option<u64>,
    limit_bytes: usize,
) -> Result<Bytes, ApiError> {
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
    match Limited::new(body, limit_bytes).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large())
        }
        Err(_) => Err(ApiError::bad_request(
            "invalid_body",
            "the request body could not be read",
        )),
    }
}
