//! The sandbox provider: the test mode of a card acquirer, two wallets and a bank, served over
//! real HTTP.
//!
//! Kassa cannot reach real payment channels here, so this server plays them, the way payment
//! companies ship a test mode. Test card numbers decide the outcome, a SQLite ledger remembers
//! every charge, refund and tombstone by idempotency key (so a restarted sandbox still answers
//! a retry with the first answer), and a [`Behaviour`] makes the card channel as sick as a test
//! needs: latency, injected 5xx and 429, held connections ("timeouts", after the work), a hard
//! outage, and late or duplicate `charge.updated` callbacks. The behaviour is set at start and
//! replaced at runtime (`PUT /sandbox/behaviour` or [`SandboxHandle::set_behaviour`]); its
//! seed makes a run reproducible. `GET /sandbox/stats` counts what happened.
//!
//! It also plays three asynchronous channels, each with its own protocol, signature scheme
//! (keys derived from the one `api_secret`, [`crate::signing::derive_key`]), behaviour, RNG
//! and counters: `qr_wallet` (Alipay-style, `/qr/`), `app_wallet` (WeChat Pay v3-style,
//! `/app/`) and `bank_transfer` (B2B, `/bank/`). Their payments wait for a customer page
//! (`GET /qr/pay/{ref}`, `GET /app/pay/{ref}`, unsigned) or are decided by the provider itself
//! after a settle delay (the test-amount rule: minor units ending in `13` fail), and their
//! outcomes go out as each protocol's signed callbacks. Each channel's behaviour is
//! `GET`/`PUT /sandbox/channels/{channel}/behaviour` or [`SandboxHandle::set_channel_behaviour`]
//! (`card` there is the same as `/sandbox/behaviour`).
//!
//! Layout:
//!
//! * `server`: the accept loop, connection bounds and graceful shutdown;
//! * `routes`: authentication (`Sandbox-Signature`, or the channel's protocol), each channel's
//!   verdict from its behaviour, routing, JSON errors, latency, held requests;
//! * `behaviour`: [`Behaviour`], its bounds, the seeded RNG and the per-request draw (no I/O);
//! * `stats`: the counters behind `GET /sandbox/stats`;
//! * `callbacks`: the bounded, delayed sender of every channel's signed callbacks
//!   (`charge.updated`, and each asynchronous protocol's envelope);
//! * `control`: `GET`/`PUT /sandbox/behaviour`, `GET`/`PUT
//!   /sandbox/channels/{channel}/behaviour` and `GET /sandbox/stats`;
//! * `requests`: what every protocol's endpoints share: JSON bodies and answers, field checks,
//!   ledger work on the blocking pool;
//! * `card_api`: the card protocol's endpoints, request checks and the test-card table;
//! * `ledger`: the SQLite ledger, where each check-and-write is one transaction;
//! * `wire`: the provider's JSON shapes;
//! * `channels`: which paths belong to which channel, each asynchronous channel's behaviour and
//!   counters, its derived keys;
//! * `async_routes`: the asynchronous channels' requests: signature by protocol, routes, the
//!   unsigned customer pages;
//! * `settlement`: what the asynchronous channels share: the ledger calls, settlement timers,
//!   outcome callbacks, the test-amount rule, `GET /sandbox/ledger`;
//! * `qr_api`, `app_api`, `bank_api`: each asynchronous protocol's endpoints, wire shapes and
//!   callback envelope;
//! * `async_ledger`: the asynchronous payments, refunds and tombstones, in their own tables of
//!   the same SQLite file.
//! * `sqlite`: what both ledgers share: opening the file, the salt, derived ids, reading rows.
//!
//! Endpoints: `POST /card/v1/charges`, `POST /card/v1/charges/{id}/capture`,
//! `POST /card/v1/charges/{id}/void`, `POST /card/v1/charges/{id}/uncapture`,
//! `POST /card/v1/charges/{id}/reverse`, `POST /card/v1/refunds`, `POST /card/v1/charges/resolve`,
//! `GET /card/v1/charges/{id}` (the card behaviour applies to these); the asynchronous
//! channels' endpoints (listed in `qr_api`, `app_api`, `bank_api`; their channel's behaviour
//! applies); `GET /sandbox/ledger` (card `charges`/`refunds`, `async_payments`/`async_refunds`),
//! `GET`/`PUT /sandbox/behaviour`, `GET`/`PUT /sandbox/channels/{channel}/behaviour`,
//! `GET /sandbox/stats`; and the unsigned `GET /healthz`, `GET /challenge/{id}`,
//! `GET /qr/pay/{ref}` and `GET /app/pay/{ref}`.

mod app_api;
mod async_ledger;
mod async_routes;
mod bank_api;
mod behaviour;
mod callbacks;
mod card_api;
pub(crate) mod channels;
mod control;
mod ledger;
mod qr_api;
mod requests;
mod routes;
mod server;
mod settlement;
mod sqlite;
mod stats;
mod wire;

pub use behaviour::{
    Behaviour, CALLBACK_DELAY_MS_LIMIT, CALLBACK_URL_LEN_MAX, InvalidBehaviour, LATENCY_MS_LIMIT,
    SETTLE_DELAY_MS_LIMIT,
};
pub use callbacks::{
    CALLBACK_ATTEMPT_TIMEOUT_MS, CALLBACK_ATTEMPTS_MAX, CALLBACK_RETRY_PAUSE_MS,
    CALLBACKS_QUEUED_MAX,
};
pub use channels::SETTLEMENT_TIMERS_MAX;
pub use routes::HOLD_MS_MAX;
pub use stats::{REQUESTS_BY_SECOND_WINDOW_S, StatsView};

/// The channels whose behaviour `/sandbox/channels/{channel}/behaviour` and
/// [`SandboxHandle::set_channel_behaviour`] address.
pub const SANDBOX_CHANNELS: &[&str] = &["card", "qr_wallet", "app_wallet", "bank_transfer"];

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::secret::Secret;

/// The secret the sandbox and Kassa's dev settings share when none is configured. Public on
/// purpose: it protects nothing.
pub const DEV_API_SECRET: &str = "kassa-sandbox-dev-secret-not-for-production";

/// How the sandbox runs.
#[derive(Clone)]
pub struct SandboxConfig {
    /// Where to listen; `127.0.0.1:0` picks a free port.
    pub addr: SocketAddr,
    /// The SQLite ledger file; `None` keeps the ledger in memory (lost on shutdown).
    pub ledger_path: Option<PathBuf>,
    /// The secret requests are signed with, shared with Kassa's adapter.
    pub api_secret: String,
    /// A fixed latency added to every card answer, after the work is done (so a client that
    /// times out leaves a charge behind, as a slow real provider would). Kept for
    /// compatibility: it means `latency_ms_min = latency_ms_max = latency_ms`, and applies when
    /// the behaviour given to [`start_with_behaviour`] asks for no latency of its own.
    pub latency_ms: u64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ledger_path: None,
            api_secret: DEV_API_SECRET.to_owned(),
            latency_ms: 0,
        }
    }
}

impl fmt::Debug for SandboxConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxConfig")
            .field("addr", &self.addr)
            .field("ledger_path", &self.ledger_path)
            .field("api_secret", &"***")
            .field("latency_ms", &self.latency_ms)
            .finish()
    }
}

/// Why the sandbox could not start.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The listener could not be bound.
    #[error("could not listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The ledger could not be opened or migrated.
    #[error("could not open the sandbox ledger: {0}")]
    Ledger(#[from] rusqlite::Error),
    /// The ledger's salt could not be drawn from the OS.
    #[error("no randomness for the ledger salt: {0}")]
    Entropy(String),
    /// The behaviour breaks one of its bounds.
    #[error(transparent)]
    Behaviour(#[from] InvalidBehaviour),
}

/// The state every request handler shares.
pub(crate) struct State {
    pub ledger: ledger::Ledger,
    pub api_secret: Secret<String>,
    /// The behaviour in force and its RNG. Locked briefly, never across an `.await`.
    pub chaos: Mutex<behaviour::Chaos>,
    pub stats: Arc<stats::Stats>,
    pub callbacks: callbacks::Callbacks,
    /// Turns `true` when the server stops: held requests and pending callbacks end.
    pub stopping: watch::Sender<bool>,
    /// The asynchronous channels: their behaviours, counters, ledger, keys and timers.
    pub async_channels: channels::AsyncChannels,
}

/// A running sandbox. Dropping it stops the server too, without waiting.
pub struct SandboxHandle {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for SandboxHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl SandboxHandle {
    /// The address it listens on (the real port when `0` was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, ready for [`crate::adapter::ChannelAdapter::new`].
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The behaviour in force.
    pub fn behaviour(&self) -> Behaviour {
        self.state.chaos.lock().behaviour().clone()
    }

    /// Replaces the behaviour (and reseeds its RNG), as `PUT /sandbox/behaviour` does.
    pub fn set_behaviour(&self, behaviour: Behaviour) -> Result<(), InvalidBehaviour> {
        behaviour.validate()?;
        self.state.chaos.lock().replace(behaviour);
        Ok(())
    }

    /// One channel's behaviour (`card`, `qr_wallet`, `app_wallet`, `bank_transfer`), as
    /// `GET /sandbox/channels/{channel}/behaviour` shows it; `None` for an unknown channel.
    pub fn channel_behaviour(&self, channel: &str) -> Option<Behaviour> {
        let channel = channels::Channel::from_name(channel)?;
        Some(channels::behaviour(&self.state, channel))
    }

    /// Replaces one channel's behaviour (and reseeds its RNG), as
    /// `PUT /sandbox/channels/{channel}/behaviour` does; `card` is [`Self::set_behaviour`].
    pub fn set_channel_behaviour(
        &self,
        channel: &str,
        behaviour: Behaviour,
    ) -> Result<(), InvalidBehaviour> {
        let channel = channels::Channel::from_name(channel).ok_or_else(|| {
            InvalidBehaviour(String::from(
                "unknown channel: expected card, qr_wallet, app_wallet or bank_transfer",
            ))
        })?;
        channels::replace_behaviour(&self.state, channel, behaviour)
    }

    /// The counters, as `GET /sandbox/stats` shows them: the card channel's at the top level,
    /// every channel's under `channels`.
    pub fn stats(&self) -> StatsView {
        channels::stats_view(&self.state, crate::card::signature::now_unix_s())
    }

    /// Stops accepting, lets requests in flight finish (bounded), closes the ledger.
    pub async fn shutdown(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            // The server may already have stopped; then there is nobody to tell.
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take()
            && let Err(error) = task.await
        {
            tracing::error!(%error, "the sandbox server task failed");
        }
    }
}

/// Opens the ledger, binds `config.addr` and serves on a task of the current tokio runtime,
/// with the default (well-behaved) behaviour plus `config.latency_ms`.
pub async fn start(config: SandboxConfig) -> Result<SandboxHandle, SandboxError> {
    start_with_behaviour(config, Behaviour::default()).await
}

/// [`start`] with a behaviour from the first request on. When `behaviour` asks for no latency
/// (`latency_ms_max == 0`), `config.latency_ms` is its fixed latency.
pub async fn start_with_behaviour(
    config: SandboxConfig,
    mut behaviour: Behaviour,
) -> Result<SandboxHandle, SandboxError> {
    if behaviour.latency_ms_max == 0 {
        behaviour.latency_ms_min = config.latency_ms;
        behaviour.latency_ms_max = config.latency_ms;
    }
    behaviour.validate()?;
    // Opening blocks briefly (a file open and a schema check), once, before serving anything.
    let ledger = ledger::Ledger::open(config.ledger_path.as_deref())?;
    let listener = TcpListener::bind(config.addr)
        .await
        .map_err(|source| SandboxError::Bind {
            addr: config.addr,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| SandboxError::Bind {
        addr: config.addr,
        source,
    })?;
    let async_channels = channels::AsyncChannels::open(
        config.ledger_path.as_deref(),
        format!("http://{addr}"),
        &config.api_secret,
    )?;
    let state = Arc::new(State {
        ledger,
        api_secret: Secret::new(config.api_secret),
        chaos: Mutex::new(behaviour::Chaos::new(behaviour)),
        stats: Arc::new(stats::Stats::new()),
        callbacks: callbacks::Callbacks::new(CALLBACKS_QUEUED_MAX),
        stopping: watch::Sender::new(false),
        async_channels,
    });
    // Orders a previous run left to be decided by time get their timers again.
    settlement::resume(&state).await;
    let (shutdown_tx, shutdown_rx) = oneshot::channel();
    let task = tokio::spawn(server::serve(listener, state.clone(), shutdown_rx));
    tracing::info!(%addr, ledger = ?config.ledger_path, "sandbox provider listening");
    Ok(SandboxHandle {
        addr,
        state,
        shutdown: Some(shutdown_tx),
        task: Some(task),
    })
}
