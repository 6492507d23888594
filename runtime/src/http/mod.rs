//! HTTP plumbing shared by the routes: errors, auth, bodies, strict JSON fields.

pub mod auth;
pub mod body;
pub mod error;
pub mod fields;
