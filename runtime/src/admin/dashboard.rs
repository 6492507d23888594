//! `GET /admin/`: the operators' dashboard, one self-contained HTML page (no build step, no
//! external resources) compiled into the binary.
//!
//! The page draws the supervision tree from `GET /admin/supervision`, follows
//! `GET /admin/events` (server-sent events, read with `fetch()` so it can send the bearer token)
//! and shows `GET /readyz`; see docs/ADMIN.md. It needs a CSP that allows its inline script and
//! style and same-origin requests only: `default-src 'self'; script-src 'self' 'unsafe-inline';
//! style-src 'self' 'unsafe-inline'`.

/// The page, served with `Content-Type: text/html; charset=utf-8`.
pub const DASHBOARD_HTML: &str = include_str!("dashboard.html");
