//! The error object of DESIGN.md §4, and the mapping from every internal error to it.
//!
//! Messages are written for merchants; no internal names, no stack traces, no card data.

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use kassa_actors::MoneyError;
use kassa_actors::payment::Rejection;
use kassa_actors::payment_order::OrderError;
use serde::Serialize;

use crate::http::Body;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
    pub param: Option<String>,
    pub retry_after_s: Option<u64>,
    /// The methods the path serves, for the `Allow` header of a 405 (RFC 9110 §15.5.6).
    pub allow: Option<&'static str>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    code: &'a str,
    message: &'a str,
    param: Option<&'a str>,
}

impl ApiError {
    fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            kind,
            code,
            message: message.into(),
            param: None,
            retry_after_s: None,
            allow: None,
        }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// 400, 404, 405, 409, 413 and 422 about the request itself.
    pub fn invalid(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(status, "invalid_request_error", code, message)
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::invalid(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::invalid(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        let shown: String = id.chars().take(64).collect();
        ApiError::invalid(
            StatusCode::NOT_FOUND,
            "resource_missing",
            format!("no such {what}: '{shown}'"),
        )
        .with_param("id")
    }

    /// 405 for a method the path does not serve; `allowed` is what it does (`"GET, POST"`),
    /// sent as `Allow` too.
    pub fn method_not_allowed(allowed: &'static str) -> Self {
        let mut e = ApiError::invalid(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("use {allowed} here"),
        );
        e.allow = Some(allowed);
        e
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            code,
            message,
        )
    }

    pub fn idempotency(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(status, "idempotency_error", code, message)
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "api_error", code, message);
        e.retry_after_s = Some(1);
        e
    }

    /// 429, or 503 when `unavailable`, with `Retry-After` rounded up to whole seconds.
    pub fn retry_later(
        unavailable: bool,
        code: &'static str,
        message: impl Into<String>,
        retry_after_ms: u64,
    ) -> Self {
        let (status, kind) = if unavailable {
            (StatusCode::SERVICE_UNAVAILABLE, "api_error")
        } else {
            (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error")
        };
        let mut e = ApiError::new(status, kind, code, message);
        e.retry_after_s = Some(retry_after_ms.div_ceil(1_000).max(1));
        e
    }

    pub fn internal() -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "internal_error",
            "an internal error occurred; it has been logged",
        )
    }

    pub fn body(&self) -> Bytes {
        let envelope = Envelope {
            error: ErrorBody {
                kind: self.kind,
                code: self.code,
                message: &self.message,
                param: self.param.as_deref(),
            },
        };
        // Strings only: serialisation cannot fail.
        Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default())
    }

    pub fn into_response(self) -> Response<Body> {
        let mut response = json_response(self.status, self.body());
        if let Some(seconds) = self.retry_after_s {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, seconds.into());
        }
        if let Some(allow) = self.allow {
            response
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static(allow));
        }
        response
    }
}

pub fn json_response(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

impl From<MoneyError> for ApiError {
    fn from(e: MoneyError) -> Self {
        ApiError::unprocessable(e.code(), e.to_string()).with_param("amount")
    }
}

impl From<OrderError> for ApiError {
    fn from(e: OrderError) -> Self {
        match e {
            OrderError::Rejected(rejection) => rejection.into(),
            OrderError::DuplicateMerchantOrderId {
                existing_payment_id,
            } => ApiError::invalid(
                StatusCode::CONFLICT,
                "duplicate_merchant_order_id",
                format!("merchant_order_id is already used by payment {existing_payment_id}"),
            )
            .with_param("merchant_order_id"),
            OrderError::Conflict => {
                ApiError::unavailable("overloaded", "the payment was changed concurrently; retry")
            }
            OrderError::Unavailable(reason) => {
                tracing::warn!(%reason, "order unavailable");
                ApiError::unavailable("overloaded", "Kassa is busy; retry shortly")
            }
            OrderError::Internal(reason) => {
                tracing::error!(%reason, "order failed");
                ApiError::internal()
            }
        }
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        let message = r.to_string();
        match r {
            Rejection::NotFound => {
                ApiError::invalid(StatusCode::NOT_FOUND, "resource_missing", message)
            }
            // `AlreadyApplied` is answered with the order's state before it gets here.
            Rejection::Exists { .. }
            | Rejection::RefundExists { .. }
            | Rejection::AlreadyApplied => ApiError::idempotency(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request",
            ),
            Rejection::UnexpectedState { .. } | Rejection::InProgress { .. } => {
                ApiError::invalid(StatusCode::CONFLICT, "payment_unexpected_state", message)
            }
            Rejection::CaptureExceedsAuthorized { .. } => {
                ApiError::unprocessable("capture_exceeds_authorized", message).with_param("amount")
            }
            Rejection::RefundExceedsCaptured { .. } => {
                ApiError::unprocessable("refund_exceeds_captured", message).with_param("amount")
            }
            Rejection::CurrencyMismatch { .. } => {
                ApiError::unprocessable("currency_mismatch", message).with_param("currency")
            }
            Rejection::TooManyRefunds => ApiError::unprocessable("refund_limit_reached", message),
            Rejection::NotPreauth { .. } => {
                ApiError::unprocessable("payment_not_preauthorization", message)
            }
            Rejection::HasRefunds { .. } => {
                ApiError::invalid(StatusCode::CONFLICT, "payment_has_refunds", message)
            }
        }
    }
}

impl From<kassa_store::StoreError> for ApiError {
    fn from(e: kassa_store::StoreError) -> Self {
        match e {
            kassa_store::StoreError::Overloaded | kassa_store::StoreError::Closed => {
                ApiError::unavailable("overloaded", "Kassa is busy; retry shortly")
            }
            kassa_store::StoreError::UnknownCursor(_) => ApiError::bad_request(
                "invalid_query",
                "the cursor does not name one of your objects",
            ),
            other => {
                tracing::error!(error = %other, "store failed");
                ApiError::internal()
            }
        }
    }
}
