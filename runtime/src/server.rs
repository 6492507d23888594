//! `run(listener, settings, shutdown)`: wires Kassa together and serves until `shutdown`.
//!
//! Start-up: store (journal) → master key → sandbox provider (embedded mode) → Redis (cluster
//! mode; a node starts without it) → the channels (`channels.rs`; in cluster mode their rate
//! limits are shared through Redis) → the supervision tree (`tree.rs`), whose children start
//! in order: store watcher, channels, order shards, notifier, janitor (which re-drives orders a
//! channel still owes an answer), and last the HTTP accept loop. Shutdown stops the tree in reverse: the front-end
//! drains in-flight requests (bounded by `http.shutdown_grace_ms`), then the rest stop, then
//! the journal commits what is queued and closes. Every state a client was told about is
//! already durable, and channel calls left in flight are re-driven from the journal at the
//! next start, so nothing is lost in between.

use std::future::Future;
use std::sync::Arc;

use actix::Addr;
use anyhow::Context as _;
use kassa_actors::clock::{Clock, SystemClock};
use kassa_actors::order_directory::OrderDirectory;
use kassa_actors::payment_order::OrderDeps;
use kassa_channels::sandbox::SandboxHandle;
use kassa_config::Settings;
use kassa_config::{Mode, redact_url};
use kassa_store::{PostgresConfig, PostgresStore, SqliteConfig, SqliteStore, Store};
use kassa_supervision::{EventBus, Supervisor, install_panic_hook, shutdown_and_wait};
use tokio::net::TcpListener;

use crate::app::App;
use crate::crypto::Sealer;
use crate::faults::FaultyStore;
use crate::idempotency::Idempotency;
use crate::merchants::Merchants;
use crate::metrics::Metrics;
use crate::redis::{Redis, RedisRateLimiter};
use crate::tree::{self, TreeParts, WorkerRegistry};

/// The actix system on its own thread, running the supervision tree.
struct ActorSystem {
    system: actix::System,
    thread: std::thread::JoinHandle<()>,
    root: Addr<Supervisor>,
}

impl ActorSystem {
    /// Starts the system, one arbiter per shard, and the tree; returns once every child of the
    /// tree has started (in order).
    fn start(
        app: Arc<App>,
        listener: Arc<TcpListener>,
        order_deps: Arc<OrderDeps>,
    ) -> anyhow::Result<ActorSystem> {
        let shards = app.directory.shard_count();
        let events = app.events.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("kassa-actors".into())
            .spawn(move || {
                let runner = actix::System::new();
                runner.block_on(async {
                    let shard_arbiters = (0..shards)
                        .map(|_| actix::Arbiter::new().handle())
                        .collect();
                    let spec = tree::root_spec(TreeParts {
                        app,
                        listener,
                        order_deps,
                        shard_arbiters,
                    });
                    let root = Supervisor::start_root(spec, events, |reason| {
                        tracing::error!(%reason, "the supervision tree gave up; exiting");
                        eprintln!("kassa: the supervision tree gave up: {reason}");
                        std::process::exit(70);
                    });
                    // The receiver waits for exactly this message; if it is gone, start-up failed anyway.
                    let _ = tx.send(root.map(|root| (actix::System::current(), root)));
                });
                if let Err(e) = runner.run() {
                    tracing::error!(error = %e, "actor system stopped with an error");
                }
            })?;
        let (system, root) = rx.recv().context("actor system failed to start")??;
        Ok(ActorSystem {
            system,
            thread,
            root,
        })
    }

    async fn stop(self) {
        if let Err(e) = shutdown_and_wait(&self.root).await {
            tracing::warn!(error = %e, "supervision tree did not shut down cleanly");
        }
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

/// The store `settings.mode` asks for: SQLite under the data dir (embedded), or PostgreSQL
/// (cluster; its migrations run first, safely from several nodes at once).
pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    match settings.mode {
        Mode::Embedded => {
            let config = SqliteConfig {
                path: settings.store_path(),
                group_commit_batch_max: settings.store.group_commit_batch_max,
                write_queue_max: settings.store.write_queue_max,
                readers: settings.store.readers,
                busy_timeout_ms: settings.store.busy_timeout_ms,
            };
            let path = settings.store_path();
            let store = tokio::task::spawn_blocking(move || SqliteStore::open(config))
                .await?
                .with_context(|| format!("opening the store at {}", path.display()))?;
            Ok(Arc::new(store))
        }
        Mode::Cluster => {
            let config = postgres_config(settings);
            let store = PostgresStore::open(config).await.with_context(|| {
                format!(
                    "opening the PostgreSQL store at {} (schema {})",
                    redact_url(&settings.postgres.url),
                    settings.postgres.schema
                )
            })?;
            Ok(Arc::new(store))
        }
    }
}

/// The PostgreSQL store's settings (`postgres.*`, group commit from `store.*`).
pub fn postgres_config(settings: &Settings) -> PostgresConfig {
    let postgres = &settings.postgres;
    PostgresConfig {
        url: postgres.url.clone(),
        schema: postgres.schema.clone(),
        pool_size_max: postgres.pool_size_max,
        group_commit_batch_max: settings.store.group_commit_batch_max,
        write_queue_max: settings.store.write_queue_max,
        statement_timeout_ms: postgres.statement_timeout_ms,
        connect_timeout_ms: postgres.connect_timeout_ms,
    }
}

pub fn open_sealer(settings: &Settings) -> anyhow::Result<Arc<Sealer>> {
    let from_env = std::env::var("KASSA_MASTER_KEY").ok();
    let sealer = Sealer::load_or_create(&settings.master_key_path(), from_env.as_deref())
        .context("loading the master key")?;
    Ok(Arc::new(sealer))
}

async fn start(settings: Settings, listener: Arc<TcpListener>) -> anyhow::Result<Running> {
    let http_addr = listener.local_addr()?;
    std::fs::create_dir_all(&settings.store.data_dir)
        .with_context(|| format!("creating data dir {}", settings.store.data_dir.display()))?;
    let store = open_store(&settings).await?;
    let sealer = open_sealer(&settings)?;

    let sandbox = crate::channels::start_sandbox(&settings, http_addr).await?;
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
    let notifier_due = Arc::new(tokio::sync::Notify::new());
    let metrics = Metrics::new();
    let redis = start_redis(&settings, &metrics).await?;
    let channels = Arc::new(crate::channels::ports(
        &settings,
        sandbox.as_ref().map(|s| s.base_url()).as_deref(),
        store.clone(),
        clock.clone(),
    )?);
    if let Some(redis) = &redis {
        share_rate_limits(&channels, redis);
    }
    let deps = Arc::new(OrderDeps {
        store: store.clone(),
        channels: channels.clone(),
        clock: clock.clone(),
        mailbox_capacity: settings.orders.mailbox_capacity,
        idle_ms: settings.orders.order_idle_ms,
        redrive_schedule_ms: settings.orders.redrive_schedule_ms.clone(),
        redrive_attempts_max: settings.orders.redrive_attempts_max,
        events_appended: notifier_due.clone(),
        shared_journal: settings.mode == Mode::Cluster,
    });
    let directory = OrderDirectory::new(settings.orders.shard_count());
    let methods = crate::methods::Methods::load(store.clone(), clock.now_ms())
        .await
        .context("loading payment methods")?;
    let app = Arc::new(App {
        metrics,
        faults,
        channels,
        merchants: Merchants::new(store.clone(), sealer),
        methods,
        idempotency: Idempotency::new(store.clone(), redis.clone()),
        admission: crate::http::admission::Admission::new(settings.http.requests_inflight_max),
        front_limits: crate::http::rate_limit::FrontLimits::new(&settings.http),
        redis,
        store,
        directory,
        clock,
        notifier_due,
        events: EventBus::new(),
        workers: WorkerRegistry::default(),
        io: tokio::runtime::Handle::current(),
        root: std::sync::OnceLock::new(),
        closing: tokio::sync::watch::Sender::new(false),
        settings,
    });
    let actors = ActorSystem::start(app.clone(), listener, deps)?;
    let _ = app.root.set(actors.root.clone());
    tracing::info!(
        shards = app.directory.shard_count(),
        "supervision tree started"
    );
    Ok(Running {
        app,
        actors,
        sandbox,
    })
}

/// Redis in cluster mode (`None` in embedded mode, which never connects to it). Unreachable
/// at start is not an error: the node runs on the store and its local limits until it answers.
async fn start_redis(settings: &Settings, metrics: &Metrics) -> anyhow::Result<Option<Arc<Redis>>> {
    match settings.mode {
        Mode::Embedded => Ok(None),
        Mode::Cluster => Ok(Some(
            Redis::start(&settings.redis, metrics.redis.clone()).await?,
        )),
    }
}

/// Every channel's rate limits, shared by the cluster through Redis (with the same rates and
/// bursts as each node's local ones).
fn share_rate_limits(channels: &kassa_actors::channel_port::ChannelPorts, redis: &Arc<Redis>) {
    for (name, adapter) in channels.adapters() {
        let limiter = RedisRateLimiter::new(redis.clone(), name, adapter.config());
        adapter.share_rate_limits(Arc::new(limiter));
    }
}

/// Serves HTTP on `listener` until `shutdown` resolves, then stops gracefully.
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    install_panic_hook();
    let addr = listener.local_addr()?;
    let running = start(settings, Arc::new(listener)).await?;
    tracing::info!(%addr, "kassa serving");
    // The one line on stdout: scripts and the end-to-end harness wait for it.
    let scheme = crate::http_server::scheme(&running.app.settings.http.tls);
    println!("listening on {scheme}://{addr}");
    shutdown.await;
    tracing::info!("shutting down");
    let Running {
        app,
        actors,
        sandbox,
    } = running;
    actors.stop().await;
    if let Some(redis) = &app.redis {
        redis.stop();
    }
    if let Some(sandbox) = sandbox {
        sandbox.shutdown().await;
    }
    app.store.shutdown().await.context("closing the store")?;
    tracing::info!("kassa stopped");
    Ok(())
}
