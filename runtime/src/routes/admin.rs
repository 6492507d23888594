//! `/admin`: operators' routes (admin token, never merchant credentials).

use http::StatusCode;

use crate::app::App;
use crate::http::error::ApiError;
use crate::http::fields::Fields;
use crate::merchants::{ROTATION_OVERLAP_S_DEFAULT, ROTATION_OVERLAP_S_MAX};
use crate::routes::Answer;

pub const MERCHANT_NAME_CHARS_MAX: usize = 200;
pub const WEBHOOK_URL_CHARS_MAX: usize = 2_048;

pub async fn create_merchant(app: &App, body: &[u8]) -> Answer {
    let Some(mut f) = Fields::parse(body, false)? else {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the request body is empty",
        ));
    };
    let name = f
        .bounded_string("name", MERCHANT_NAME_CHARS_MAX, true)?
        .unwrap_or_default();
    let webhook_url = f.bounded_string("webhook_url", WEBHOOK_URL_CHARS_MAX, false)?;
    f.finish()?;
    if let Some(url) = &webhook_url {
        check_webhook_url(url)?;
    }
    let created = app
        .merchants
        .create(&name, webhook_url, app.now_ms())
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "merchant creation failed");
            ApiError::internal()
        })?;
    let body = serde_json::to_vec(&created).map_err(|_| ApiError::internal())?;
    Ok((StatusCode::CREATED, body.into()))
}

/// `POST /admin/merchants/{id}/rotate_secret`, body empty or `{"overlap_s": N}`: a new
/// secret, shown once; the old one verifies for `overlap_s` more seconds.
pub async fn rotate_secret(app: &App, id: &str, body: &[u8]) -> Answer {
    let overlap_s = match Fields::parse(body, true)? {
        Some(mut f) => {
            let overlap_s = f.unsigned("overlap_s")?;
            f.finish()?;
            overlap_s
        }
        None => None,
    };
    let overlap_s = check_overlap_s(overlap_s)?;
    let rotated = app
        .merchants
        .rotate_secret(id, overlap_s, app.now_ms())
        .await
        .map_err(|e| {
            tracing::error!(error = %e, merchant = %id, "secret rotation failed");
            ApiError::internal()
        })?
        .ok_or_else(|| ApiError::not_found("merchant", id))?;
    let body = serde_json::to_vec(&rotated).map_err(|_| ApiError::internal())?;
    Ok((StatusCode::OK, body.into()))
}

/// The overlap a rotation asked for (default [`ROTATION_OVERLAP_S_DEFAULT`]), at most
/// [`ROTATION_OVERLAP_S_MAX`].
pub fn check_overlap_s(asked: Option<u64>) -> Result<u64, ApiError> {
    match asked {
        None => Ok(ROTATION_OVERLAP_S_DEFAULT),
        Some(s) if s <= ROTATION_OVERLAP_S_MAX => Ok(s),
        Some(_) => Err(ApiError::unprocessable(
            "value_invalid",
            format!("overlap_s must be at most {ROTATION_OVERLAP_S_MAX} (seconds)"),
        )
        .with_param("overlap_s")),
    }
}

pub fn check_webhook_url(url: &str) -> Result<(), ApiError> {
    let parsed: http::Uri = url.parse().map_err(|_| {
        ApiError::unprocessable("value_invalid", "webhook_url is not a URL")
            .with_param("webhook_url")
    })?;
    match (parsed.scheme_str(), parsed.host()) {
        (Some("http" | "https"), Some(_)) => Ok(()),
        _ => Err(ApiError::unprocessable(
            "value_invalid",
            "webhook_url must be an http(s) URL with a host",
        )
        .with_param("webhook_url")),
    }
}
