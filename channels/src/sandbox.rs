//! The sandbox provider: a card acquirer's test mode, served over real HTTP.
//!
//! Kassa cannot reach real payment channels here, so this server plays one, the way payment
//! companies ship a test mode. Test card numbers decide the outcome, a SQLite ledger remembers
//! every charge, refund and tombstone by idempotency key (so a restarted sandbox still answers
//! a retry with the first answer), and `latency_ms` slows every answer down.
//!
//! Layout:
//!
//! * `server`: the accept loop, connection bounds and graceful shutdown;
//! * `routes`: authentication (`Sandbox-Signature`), routing, JSON errors, latency;
//! * `card_api`: the card protocol's endpoints, request checks and the test-card table;
//! * `ledger`: the SQLite ledger, where each check-and-write is one transaction;
//! * `wire`: the provider's JSON shapes.
//!
//! Endpoints: `POST /card/v1/charges`, `POST /card/v1/charges/{id}/capture`,
//! `POST /card/v1/charges/{id}/void`, `POST /card/v1/refunds`, `POST /card/v1/charges/resolve`,
//! `GET /card/v1/charges/{id}`, `GET /sandbox/ledger` and the unsigned `GET /healthz`.

mod card_api;
mod ledger;
mod routes;
mod server;
mod wire;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
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
    /// Added to every answer except `/healthz`, after the work is done (so a client that
    /// times out leaves a charge behind, as a slow real provider would).
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
}

/// The state every request handler shares.
pub(crate) struct State {
    pub ledger: ledger::Ledger,
    pub api_secret: Secret<String>,
    pub latency: Duration,
}

/// A running sandbox. Dropping it stops the server too, without waiting.
#[derive(Debug)]
pub struct SandboxHandle {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
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

/// Opens the ledger, binds `config.addr` and serves on a task of the current tokio runtime.
pub async fn start(config: SandboxConfig) -> Result<SandboxHandle, SandboxError> {
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
    let state = Arc::new(State {
        ledger,
        api_secret: Secret::new(config.api_secret),
        latency: Duration::from_millis(config.latency_ms),
    });
    let (shutdown_tx, shutdown_rx) = oneshot::channel();
    let task = tokio::spawn(server::serve(listener, state, shutdown_rx));
    tracing::info!(%addr, ledger = ?config.ledger_path, "sandbox provider listening");
    Ok(SandboxHandle {
        addr,
        shutdown: Some(shutdown_tx),
        task: Some(task),
    })
}
