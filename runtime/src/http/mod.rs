//! HTTP plumbing shared by the routes: errors, auth, bodies, strict JSON fields.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;

/// Every response body: a full buffer, or a stream (server-sent events).
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The client's address, put on every request by the accept loop (per-IP limits, logs).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub std::net::SocketAddr);

pub mod admission;
pub mod auth;
pub mod body;
pub mod error;
pub mod fields;
pub mod rate_limit;
