//! The `kassa` binary's library: the hyper front-end, authentication, idempotency, the admin
//! API, and the wiring of the actor system. `main.rs` only parses the command line, loads the
//! settings, binds and calls [`server::run`].
//!
//! # Layout
//! - `server.rs`      — start-up, the accept loop, graceful shutdown, crash recovery scan.
//! - `channels.rs`    — the embedded sandbox's start and one adapter + port per channel.
//! - `router.rs`      — method + path → route; body limit, auth and idempotency around every call.
//! - `routes/`        — one file per resource: `payments.rs`, `refunds.rs`, `wallets.rs`,
//!   `callbacks.rs` (providers' reports), `admin.rs`.
//! - `http/`          — the error object (`error.rs`), merchant signatures and the admin token
//!   (`auth.rs`), bounded bodies (`body.rs`), strict JSON fields (`fields.rs`).
//! - `idempotency.rs` — `Idempotency-Key`: in-progress guard, durable replay, key reuse.
//! - `merchants.rs`   — merchant creation and the cache of their unsealed secrets.
//! - `crypto.rs`      — the master key and sealed secrets, ids, HMAC.
//! - `notifier/`      — merchant callbacks: the dispatcher loop (`mod.rs`), one signed attempt
//!   (`send.rs`), the retry schedule with jitter (`schedule.rs`).
//! - `lease.rs`       — scheduled work on one node of a cluster at a time (janitor, relay).
//! - `app.rs`         — the shared state and `ask`, which talks to an order actor with a deadline.
//! - `redis/`         — cluster mode's Redis: idempotency locks and replay cache, cluster-wide
//!   channel rate limits, its health (never the source of truth).

pub mod admin;
pub mod app;
pub mod channels;
pub mod crypto;
pub mod faults;
pub mod http;
pub mod http_server;
pub mod idempotency;
pub mod janitor;
pub mod lease;
pub mod merchants;
pub mod methods;
pub mod metrics;
pub mod notifier;
pub mod redis;
pub mod router;
pub mod routes;
pub mod server;
pub mod tree;
