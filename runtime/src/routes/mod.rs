//! One file per resource; each handler takes the parsed request and answers `(status, body)`.

pub mod admin;
pub mod callbacks;
pub mod events;
pub mod payments;
pub mod refunds;
pub mod wallets;

use bytes::Bytes;
use http::StatusCode;

use crate::http::error::ApiError;

pub type Answer = Result<(StatusCode, Bytes), ApiError>;

/// A list object over stored JSON bodies, without re-parsing them.
pub fn list_body(bodies: impl Iterator<Item = String>, has_more: bool) -> Bytes {
    let mut out = String::from(r#"{"object":"list","data":["#);
    for (i, body) in bodies.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&body);
    }
    out.push_str(r#"],"has_more":"#);
    out.push_str(if has_more { "true" } else { "false" });
    out.push('}');
    Bytes::from(out)
}
