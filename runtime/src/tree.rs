//! Kassa's supervision tree (docs/ADMIN.md), built on `kassa-supervision`.
//!
//! ```text
//! root (rest_for_one, 5 restarts / 60 s → the process exits non-zero)
//! ├── store-writer   worker    permanent  watches the journal store
//! ├── channels       one_for_one (3 / 5 s)
//! │   └── card, qr_wallet, app_wallet, bank_transfer   workers, one per enabled channel
//! ├── orders         one_for_one (10 / 10 s)
//! │   └── shard-N    simple_one_for_one (100 / 10 s), order actors transient
//! ├── notifier       one_for_all (3 / 5 s)  merchant callbacks (`notifier/`)
//! │   ├── outbox     worker    permanent  embedded: idle (order actors write the outbox rows);
//! │   │                                   rabbitmq: relays due deliveries to the broker
//! │   └── dispatcher worker    permanent  delivers webhooks, bounded per endpoint (embedded:
//! │                                       from the outbox; rabbitmq: from the work queue)
//! ├── janitor        worker    permanent  recovery scans, idempotency purge
//! └── http           worker    permanent  the accept loop
//! ```
//!
//! Why these strategies: the root's children are started in dependency order (the store
//! before anything that writes, channels before the orders that call them, the front-end
//! last), so the root is `rest_for_one`: when a child restarts, everything that depends on it
//! restarts after it, and nothing before it. Channel adapters and shards are independent of
//! their siblings (`one_for_one`). The notifier's outbox reader and dispatcher share what is
//! in flight between them, so one cannot restart without the other (`one_for_all`). Orders are
//! transient: a crash restarts them from the journal, passivation is a normal exit.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use kassa_actors::order_directory::ShardLimits;
use kassa_actors::payment_order::{InjectPanic, OrderDeps};
use kassa_supervision::{
    ChildRef, ChildSpec, ChildStart, ExitGuard, ExitReason, Intensity, RestartType, Shutdown,
    Strategy, SupervisorSpec,
};
use parking_lot::RwLock;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::app::App;
use crate::lease::ClusterLease;
use crate::notifier::{NotifierDuty, NotifierLoop};
use kassa_config::NotificationTransport;

pub const ROOT_INTENSITY: Intensity = Intensity::new(5, 60_000);
pub const CHANNELS_INTENSITY: Intensity = Intensity::new(3, 5_000);
pub const ORDERS_INTENSITY: Intensity = Intensity::new(10, 10_000);
pub const SHARD_INTENSITY: Intensity = Intensity::new(100, 10_000);
pub const NOTIFIER_INTENSITY: Intensity = Intensity::new(3, 5_000);
/// Consecutive failed store probes before the store watcher reports a crash.
const STORE_PROBE_FAILURES_MAX: u32 = 3;
const STORE_PROBE_EVERY_MS: u64 = 1_000;
const HTTP_CHECK_EVERY_MS: u64 = 200;

/// Workers that can be made to panic by path (drills), filled in as they start.
#[derive(Clone, Default)]
pub struct WorkerRegistry {
    workers: Arc<RwLock<HashMap<String, Recipient<InjectPanic>>>>,
}

impl WorkerRegistry {
    fn register(&self, path: &str, recipient: Recipient<InjectPanic>) {
        self.workers.write().insert(path.to_string(), recipient);
    }

    /// Makes the worker at `path` panic; false if there is none.
    pub fn inject_panic(&self, path: &str) -> bool {
        match self.workers.read().get(path) {
            Some(worker) => {
                worker.do_send(InjectPanic);
                true
            }
            None => false,
        }
    }
}

/// What a worker does besides being supervised.
pub trait Duty: std::any::Any + Unpin {
    fn started(&mut self, _ctx: &mut Context<Worker>) {}
    /// Asked to stop: finish what must be finished, then call `Worker::stop_now`.
    fn shutdown(&mut self, ctx: &mut Context<Worker>) {
        ctx.stop();
    }
}

/// A supervised leaf of the tree: its guard reports how it ended.
pub struct Worker {
    guard: ExitGuard,
    duty: Box<dyn Duty>,
}

impl Actor for Worker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // The duty runs with a context it can schedule on.
        let mut duty = std::mem::replace(&mut self.duty, Box::new(Idle));
        duty.started(ctx);
        self.duty = duty;
    }
}

impl Handler<Shutdown> for Worker {
    type Result = ();

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Context<Self>) {
        self.guard.set_reason(ExitReason::Shutdown);
        let mut duty = std::mem::replace(&mut self.duty, Box::new(Idle));
        duty.shutdown(ctx);
        self.duty = duty;
    }
}

impl Handler<InjectPanic> for Worker {
    type Result = ();

    fn handle(&mut self, _msg: InjectPanic, _ctx: &mut Context<Self>) {
        panic!("injected fault in worker {}", self.guard.child_id());
    }
}

impl Worker {
    /// Reports `reason` to the supervisor and stops.
    pub(crate) fn fail(&mut self, ctx: &mut Context<Self>, reason: String) {
        self.guard.set_reason(ExitReason::Failed(reason));
        ctx.stop();
    }
}

fn worker_spec(
    name: &str,
    registry: &WorkerRegistry,
    make: impl Fn() -> Box<dyn Duty> + Send + Sync + 'static,
) -> ChildSpec {
    let registry = registry.clone();
    ChildSpec::worker(name, RestartType::Permanent, move |start: ChildStart| {
        let path = start.path.clone();
        let addr = Worker {
            guard: start.guard,
            duty: make(),
        }
        .start();
        registry.register(&path, addr.clone().recipient());
        Ok(ChildRef::worker(&addr))
    })
}

/// Does nothing but stay up: the channel adapters' places, and the notifier's outbox with the
/// embedded transport (the order actors write it themselves).
struct Idle;

impl Duty for Idle {}

/// Probes the store (a read through the pool) and reports a crash when it stops answering.
struct StoreWatch {
    app: Arc<App>,
    failures: u32,
}

impl Duty for StoreWatch {
    fn started(&mut self, ctx: &mut Context<Worker>) {
        let app = self.app.clone();
        ctx.run_interval(
            Duration::from_millis(STORE_PROBE_EVERY_MS),
            move |_worker, ctx| {
                let probe = app.store.get_merchant("mch_store_probe");
                ctx.spawn(probe.into_actor(_worker).map(|answer, worker, ctx| {
                let Some(watch) = worker.duty_mut::<StoreWatch>() else { return };
                match answer {
                    Ok(_) => watch.failures = 0,
                    Err(e) => {
                        watch.failures += 1;
                        tracing::warn!(error = %e, failures = watch.failures, "store probe failed");
                        if watch.failures >= STORE_PROBE_FAILURES_MAX {
                            worker.fail(ctx, format!("store not answering: {e}"));
                        }
                    }
                }
            }));
            },
        );
    }
}

/// Re-drives orders a channel still owes an answer (at start and every
/// `orders.janitor_interval_ms`) and purges expired idempotency keys, while this node holds
/// the `janitor` lease (always, in embedded mode).
struct Janitor {
    app: Arc<App>,
}

impl Duty for Janitor {
    fn started(&mut self, ctx: &mut Context<Worker>) {
        let app = self.app.clone();
        let lease = crate::janitor::lease(&app);
        let rescan = move |app: Arc<App>, lease: Arc<ClusterLease>, ctx: &mut Context<Worker>| {
            ctx.spawn(on_worker(crate::janitor::recover_owed_orders(app, lease)));
        };
        rescan(app.clone(), lease.clone(), ctx);
        let every = Duration::from_millis(app.settings.orders.janitor_interval_ms);
        let (for_scan, scan_lease) = (app.clone(), lease.clone());
        ctx.run_interval(every, move |_, ctx| {
            rescan(for_scan.clone(), scan_lease.clone(), ctx)
        });
        let purge_every = Duration::from_secs(app.settings.idempotency.purge_interval_s);
        ctx.run_interval(purge_every, move |_, ctx| {
            let purge = crate::janitor::purge_idempotency(app.clone(), lease.clone());
            ctx.spawn(on_worker(purge));
        });
    }
}

/// Owns the accept loop: restarts it if it ends, drains it on shutdown.
struct HttpFrontEnd {
    app: Arc<App>,
    listener: Arc<TcpListener>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Duty for HttpFrontEnd {
    fn started(&mut self, ctx: &mut Context<Worker>) {
        let (stop, stopped) = oneshot::channel();
        let serve = crate::http_server::serve(self.listener.clone(), self.app.clone(), stopped);
        self.task = Some(self.app.io.spawn(serve));
        self.stop = Some(stop);
        ctx.run_interval(Duration::from_millis(HTTP_CHECK_EVERY_MS), |worker, ctx| {
            let ended = worker
                .duty_mut::<HttpFrontEnd>()
                .and_then(|http| {
                    http.task
                        .as_ref()
                        .map(|t| t.is_finished() && http.stop.is_some())
                })
                .unwrap_or(false);
            if ended {
                worker.fail(ctx, "the accept loop ended unexpectedly".into());
            }
        });
    }

    fn shutdown(&mut self, ctx: &mut Context<Worker>) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            // Stop only once the in-flight requests are drained.
            Some(task) => {
                ctx.spawn(
                    on_worker(async move {
                        let _ = task.await;
                    })
                    .map(|(), _worker, ctx: &mut Context<Worker>| ctx.stop()),
                );
            }
            None => ctx.stop(),
        }
    }
}

impl Worker {
    pub(crate) fn duty_mut<D: Duty>(&mut self) -> Option<&mut D> {
        let duty: &mut dyn std::any::Any = &mut *self.duty;
        duty.downcast_mut::<D>()
    }
}

/// A future run on a worker's arbiter without touching the worker.
fn on_worker<F: Future<Output = ()> + 'static>(fut: F) -> impl ActorFuture<Worker, Output = ()> {
    actix::fut::wrap_future::<_, Worker>(fut)
}

/// Everything the tree's start functions need.
pub struct TreeParts {
    pub app: Arc<App>,
    pub listener: Arc<TcpListener>,
    pub order_deps: Arc<OrderDeps>,
    /// One per shard; must be created inside the actix system.
    pub shard_arbiters: Vec<actix::dev::ArbiterHandle>,
}

pub fn root_spec(parts: TreeParts) -> SupervisorSpec {
    let TreeParts {
        app,
        listener,
        order_deps,
        shard_arbiters,
    } = parts;
    let registry = app.workers.clone();
    let shards = shard_arbiters.len().max(1);
    let limits = ShardLimits {
        live_max: app.settings.orders.orders_live_max.div_ceil(shards).max(1),
        intensity: SHARD_INTENSITY,
    };
    let mut orders =
        SupervisorSpec::new("orders", Strategy::OneForOne).with_intensity(ORDERS_INTENSITY);
    for (index, arbiter) in shard_arbiters.into_iter().enumerate() {
        orders =
            orders.with_child(
                app.directory
                    .shard_spec(index, arbiter, order_deps.clone(), limits),
            );
    }
    let mut channels =
        SupervisorSpec::new("channels", Strategy::OneForOne).with_intensity(CHANNELS_INTENSITY);
    for (name, _) in app.channels.adapters() {
        channels = channels.with_child(worker_spec(name, &registry, || Box::new(Idle)));
    }
    let store_app = app.clone();
    let janitor_app = app.clone();
    let http_app = app.clone();
    let notifier_app = app.clone();
    let relay_app = app.clone();
    // Embedded: the order actors write the outbox and the dispatcher reads it. RabbitMQ: the
    // outbox worker relays it to the broker and the dispatcher consumes from there.
    let (relay, dispatch): (Option<NotifierLoop>, NotifierLoop) =
        match app.settings.notifications.transport {
            NotificationTransport::Embedded => (None, crate::notifier::embedded_dispatcher),
            NotificationTransport::Rabbitmq => (
                Some(crate::notifier::rabbitmq_relay),
                crate::notifier::rabbitmq_consumer,
            ),
        };
    let http_grace_ms = app.settings.http.shutdown_grace_ms;
    SupervisorSpec::new("root", Strategy::RestForOne)
        .with_intensity(ROOT_INTENSITY)
        .with_child(worker_spec("store-writer", &registry, move || {
            Box::new(StoreWatch {
                app: store_app.clone(),
                failures: 0,
            })
        }))
        .with_child(ChildSpec::supervisor(channels))
        .with_child(ChildSpec::supervisor(orders))
        .with_child(ChildSpec::supervisor(
            SupervisorSpec::new("notifier", Strategy::OneForAll)
                .with_intensity(NOTIFIER_INTENSITY)
                .with_child(worker_spec("outbox", &registry, move || match relay {
                    Some(run) => Box::new(NotifierDuty::new(relay_app.clone(), run)),
                    None => Box::new(Idle),
                }))
                .with_child(worker_spec("dispatcher", &registry, move || {
                    Box::new(NotifierDuty::new(notifier_app.clone(), dispatch))
                })),
        ))
        .with_child(worker_spec("janitor", &registry, move || {
            Box::new(Janitor {
                app: janitor_app.clone(),
            })
        }))
        .with_child(
            worker_spec("http", &registry, move || {
                Box::new(HttpFrontEnd {
                    app: http_app.clone(),
                    listener: listener.clone(),
                    stop: None,
                    task: None,
                })
            })
            .with_shutdown_timeout_ms(http_grace_ms + 1_000),
        )
}
