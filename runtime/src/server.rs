//! `run(listener, settings, shutdown)`: wires Kassa together and serves until `shutdown`.
//!
//! Start-up order: store (journal) → master key → sandbox provider (embedded mode) → card
//! channel → actor system (order shards) → recovery of orders the channel still owes an
//! answer → HTTP. Shutdown runs it backwards: stop accepting, let in-flight requests finish
//! (bounded by `http.shutdown_grace_ms`), stop the actors, then commit and close the journal.
//! Every state a client was told about is already durable, and every channel call left in
//! flight is re-driven from the journal at the next start, so nothing is lost in between.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use kassa_actors::channel_port::CardPort;
use kassa_actors::clock::{Clock, SystemClock};
use kassa_actors::order_directory::OrderDirectory;
use kassa_actors::payment_order::OrderDeps;
use kassa_channels::card::CardChannel;
use kassa_channels::sandbox::{self, SandboxConfig, SandboxHandle};
use kassa_channels::{AdapterConfig, ChannelAdapter};
use kassa_config::Settings;
use kassa_store::{SqliteConfig, SqliteStore, Store};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::app::App;
use crate::crypto::Sealer;
use crate::faults::FaultyStore;
use crate::idempotency::Idempotency;
use crate::merchants::Merchants;
use crate::metrics::Metrics;
use crate::router;

/// The actix system on its own thread, with the order shards on their arbiters.
struct ActorSystem {
    system: actix::System,
    thread: std::thread::JoinHandle<()>,
}

impl ActorSystem {
    fn start(
        deps: Arc<OrderDeps>,
        shards: usize,
        live_max: usize,
    ) -> anyhow::Result<(ActorSystem, OrderDirectory)> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("kassa-actors".into())
            .spawn(move || {
                let runner = actix::System::new();
                runner.block_on(async {
                    let (directory, arbiters) = OrderDirectory::start(deps, shards, live_max);
                    // The receiver waits for exactly this message; if it is gone, start-up failed anyway.
                    let _ = tx.send((actix::System::current(), directory, arbiters.len()));
                });
                if let Err(e) = runner.run() {
                    tracing::error!(error = %e, "actor system stopped with an error");
                }
            })?;
        let (system, directory, arbiters) = rx.recv().context("actor system failed to start")?;
        tracing::info!(shards = arbiters, "order shards started");
        Ok((ActorSystem { system, thread }, directory))
    }

    async fn stop(self) {
        self.system.stop();
        let thread = self.thread;
        // Joining blocks; do it off the async threads.
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

/// Everything `run` started, to be stopped in reverse.
struct Running {
    app: Arc<App>,
    actors: ActorSystem,
    sandbox: Option<SandboxHandle>,
}

pub fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    let config = SqliteConfig {
        path: settings.store_path(),
        group_commit_batch_max: settings.store.group_commit_batch_max,
        write_queue_max: settings.store.write_queue_max,
        readers: settings.store.readers,
        busy_timeout_ms: settings.store.busy_timeout_ms,
    };
    let store = SqliteStore::open(config)
        .with_context(|| format!("opening the store at {}", settings.store_path().display()))?;
    Ok(Arc::new(store))
}

pub fn open_sealer(settings: &Settings) -> anyhow::Result<Arc<Sealer>> {
    let from_env = std::env::var("KASSA_MASTER_KEY").ok();
    let sealer = Sealer::load_or_create(&settings.master_key_path(), from_env.as_deref())
        .context("loading the master key")?;
    Ok(Arc::new(sealer))
}

async fn start(settings: Settings) -> anyhow::Result<Running> {
    std::fs::create_dir_all(&settings.store.data_dir)
        .with_context(|| format!("creating data dir {}", settings.store.data_dir.display()))?;
    let store = {
        let settings = settings.clone();
        tokio::task::spawn_blocking(move || open_store(&settings)).await??
    };
    let sealer = open_sealer(&settings)?;

    let (sandbox, base_url) = if settings.channels.card.base_url.is_empty() {
        let handle = sandbox::start(SandboxConfig {
            addr: settings.sandbox_addr()?,
            ledger_path: Some(settings.sandbox_ledger_path()),
            api_secret: settings.sandbox.api_secret.clone(),
            latency_ms: settings.sandbox.latency_ms,
        })
        .await
        .context("starting the sandbox provider")?;
        let url = handle.base_url();
        tracing::info!(%url, "sandbox provider started");
        (Some(handle), url)
    } else {
        (None, settings.channels.card.base_url.clone())
    };
    let card = &settings.channels.card;
    let adapter = ChannelAdapter::new(
        &base_url,
        settings.sandbox.api_secret.clone(),
        AdapterConfig {
            request_timeout_ms: card.request_timeout_ms,
            retry_attempts_max: card.retry_attempts_max,
            backoff_ms_min: card.backoff_ms_min,
            backoff_ms_max: card.backoff_ms_max,
            inflight_max: card.inflight_max,
        },
    )
    .context("configuring the card channel")?;
    let channel = Arc::new(CardPort::new(
        CardChannel::new(adapter.clone()),
        tokio::runtime::Handle::current(),
    ));
    let faults = settings.admin.faults_enabled.then(|| {
        tracing::warn!(
            "fault injection is enabled (admin.faults_enabled): for drills and tests only"
        );
        Arc::new(FaultyStore::new(store.clone()))
    });
    let store: Arc<dyn Store> = match &faults {
        Some(faulty) => faulty.clone(),
        None => store,
    };

    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let deps = Arc::new(OrderDeps {
        store: store.clone(),
        channel,
        clock: clock.clone(),
        mailbox_capacity: settings.orders.mailbox_capacity,
        idle_ms: settings.orders.order_idle_ms,
    });
    let (actors, directory) = ActorSystem::start(
        deps,
        settings.orders.shard_count(),
        settings.orders.orders_live_max,
    )?;
    let app = Arc::new(App {
        metrics: Metrics::new(),
        faults,
        card_adapter: adapter,
        merchants: Merchants::new(store.clone(), sealer),
        idempotency: Idempotency::new(store.clone()),
        store,
        directory,
        clock,
        settings,
    });
    tokio::spawn(recover_owed_orders(app.clone()));
    tokio::spawn(purge_idempotency(app.clone()));
    Ok(Running {
        app,
        actors,
        sandbox,
    })
}

/// Activates every order whose journal says the channel still owes an answer; each one
/// re-drives its own work (same idempotency keys) as it loads.
async fn recover_owed_orders(app: Arc<App>) {
    let batch = app.settings.orders.recovery_batch_max;
    match app.store.payment_ids_awaiting_channel(batch).await {
        Ok(ids) => {
            if !ids.is_empty() {
                tracing::info!(
                    orders = ids.len(),
                    "re-driving orders a channel still owes an answer"
                );
            }
            for id in ids {
                if let Err(e) = app.directory.order(&id).await {
                    tracing::warn!(order_id = %id, error = %e, "could not activate order for recovery");
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "recovery scan failed"),
    }
}

async fn purge_idempotency(app: Arc<App>) {
    let every = Duration::from_secs(app.settings.idempotency.purge_interval_s);
    let retention_ms =
        i64::try_from(app.settings.idempotency.retention_h).unwrap_or(i64::MAX / 4) * 3_600_000;
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        match app
            .store
            .purge_idempotency(app.now_ms().saturating_sub(retention_ms))
            .await
        {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "expired idempotency keys purged"),
            Err(e) => tracing::warn!(error = %e, "idempotency purge failed"),
        }
    }
}

/// Serves HTTP on `listener` until `shutdown` resolves, then stops gracefully.
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let running = start(settings).await?;
    let app = running.app.clone();
    let http = app.settings.http.clone();
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "kassa serving");
    // The one line on stdout: scripts and the end-to-end harness wait for it.
    println!("listening on http://{addr}");

    let connections = Arc::new(Semaphore::new(http.connections_max));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = http.connections_max, "connection limit reached; refusing");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(router::handle(app, req).await) }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_millis(http.header_read_timeout_ms))
            .max_buf_size(64 * 1024)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("shutting down: no new connections; finishing in-flight requests");
    if tokio::time::timeout(
        Duration::from_millis(http.shutdown_grace_ms),
        graceful.shutdown(),
    )
    .await
    .is_err()
    {
        tracing::warn!("in-flight requests did not finish within the grace period");
    }
    running.actors.stop().await;
    if let Some(sandbox) = running.sandbox {
        sandbox.shutdown().await;
    }
    app.store.shutdown().await.context("closing the store")?;
    tracing::info!("kassa stopped");
    Ok(())
}
