//! `harness`: starts the real `kassa` binary and talks HTTP to it, for the end-to-end tests in
//! `tests/*.rs`. The tests are written against docs/API.md, not against Kassa's internals.
//!
//! # Layout
//!
//! - [`binary`]: finds the `kassa` binary (`KASSA_BIN`), or builds it once per test process with
//!   `cargo build -p kassa --bin kassa` into the target dir the tests run from.
//! - [`process`]: [`Kassa`], one running `kassa serve` with its own temp data dir and admin token:
//!   start, SIGKILL, SIGTERM, restart on the same data, logs.
//! - [`cli`]: [`run_cli`], one-shot `kassa <subcommand>` runs (e.g. `kassa merchant create`).
//! - [`api`]: request bodies, sandbox test cards, and assertions on the shapes docs/API.md fixes
//!   (error object, payment, refund, list).
//! - [`raw`]: [`send_raw_http`], a bare HTTP/1.1 exchange for requests the server may answer
//!   before reading them (413 on a huge body), which hyper's client reports as a broken pipe.
//! - [`browser`]: [`browser::Browser`], a headless Chromium driven through chromedriver
//!   (W3C WebDriver over HTTP), for the dashboard test; skips without the tools unless `CI=true`.
//! - [`poll`]: [`poll_until`], waiting for a condition with a deadline (tests never sleep a fixed
//!   time in place of a condition).
//! - [`cluster`]: [`cluster::ClusterEnv`], nodes in cluster mode on a fresh PostgreSQL schema,
//!   RabbitMQ prefix and Redis key prefix, several of them sharing one sandbox acquirer.
//! - [`services`]: the machine's services (PostgreSQL, RabbitMQ, Redis, and `OwnRedis`, a
//!   test's own `redis-server` it may kill and restart): skip with a reason on a laptop without
//!   them, fail under `CI=true`; fresh schemas and prefixes per instance, deleted afterwards.
//! - [`verify`]: the invariants checked after a hostile run: the acquirer's ledger against
//!   Kassa's payments (nothing charged twice, refunds ≤ captures), every event delivered.
//! - [`tls`]: [`tls::HttpsClient`], requests to a Kassa serving HTTPS over the HTTP version ALPN
//!   negotiates, trusting only the test's CA; TLS configurations for the test's own endpoints.
//! - [`webhooks`]: [`webhooks::WebhookReceiver`], a merchant's webhook endpoint whose answers the
//!   test scripts (a status, or hanging), recording every request.
//!
//! # The server's side of the contract
//!
//! `kassa serve` reads `KASSA_HTTP_ADDR` (the harness passes `127.0.0.1:0`), `KASSA_DATA_DIR` and
//! `KASSA_ADMIN_TOKEN`, logs to stderr, and once it serves prints exactly one line to stdout:
//! `listening on http://127.0.0.1:PORT` (`https://` when it serves TLS). SIGTERM shuts it down
//! gracefully.

pub mod api;
pub mod binary;
pub mod browser;
pub mod cli;
pub mod cluster;
pub mod poll;
pub mod process;
pub mod raw;
pub mod services;
pub mod tls;
pub mod verify;
pub mod webhooks;

pub use api::*;
pub use binary::kassa_bin;
pub use cli::{CliOutput, run_cli};
pub use kassa_client::{
    AdminClient, ClientError, HttpClient, MerchantClient, MerchantCredentials, Response, sign_v1,
    unix_now,
};
pub use poll::{poll_until, within};
pub use process::{Kassa, KassaOptions};
pub use raw::send_raw_http;
