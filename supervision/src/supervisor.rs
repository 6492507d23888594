//! The [`Supervisor`] actor: starts its children in order, restarts them by strategy and restart
//! type when they exit, gives up (escalates) past its restart intensity, stops them in reverse
//! order, and reports its subtree as a [`NodeSnapshot`].
//!
//! - `supervisor/child.rs`: what it keeps per child (slot, generation, counters).
//! - `supervisor/work.rs`: exits, restart decisions, and the stop/start work queue.
//! - `supervisor/view.rs`: snapshots.
//!
//! Everything a supervisor does happens in its own handlers (one actor, one thread); stopping a
//! child is asynchronous (send [`Shutdown`], wait for its [`ChildExited`] or its
//! `shutdown_timeout_ms`), so pending steps wait in a small queue (see `work.rs`).

mod child;
mod view;
mod work;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use actix::dev::ToEnvelope;
use actix::prelude::*;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::{SupervisionError, check_name};
use crate::events::{EventBus, EventKind};
use crate::exit::{ChildExited, ExitGuard, ExitReason};
use crate::intensity::{RestartTracker, SplitMix64};
use crate::snapshot::{FailureSnapshot, GetSnapshot, NodeSnapshot};
use crate::spec::{Backoff, ChildKind, Intensity, RestartType, Strategy};

use child::Child;
use work::Work;

/// Most children one supervisor may have (count); keeps its bookkeeping and its stop queue small.
pub const CHILDREN_MAX: usize = 1_000;
/// Default time (ms) a worker gets to stop after [`Shutdown`] before the supervisor stops waiting.
pub const SHUTDOWN_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Added (ms) to the sum of a nested supervisor's children's shutdown timeouts to get its own.
pub const SUPERVISOR_SHUTDOWN_MARGIN_MS: u64 = 1_000;
/// Most [`WatchExit`] watchers one supervisor keeps (count).
pub const EXIT_WATCHERS_MAX: usize = 16;

/// Starts one incarnation of a child. It moves `ChildStart::guard` into the actor it starts
/// (on whatever arbiter it likes) and returns how to reach it. On `Err` it must leave nothing
/// running. A start error, or a panic in the function, counts as a crash of the child.
pub type StartFn = Arc<dyn Fn(ChildStart) -> Result<ChildRef, String> + Send + Sync>;

/// What a start function is given.
#[derive(Debug)]
pub struct ChildStart {
    /// The child's path, `parent_path/name`.
    pub path: String,
    /// Move it into the started actor's struct; it reports the actor's exit.
    pub guard: ExitGuard,
    /// The runtime's event bus (nested supervisors and dynamic children publish on it).
    pub events: EventBus,
}

/// How a supervisor reaches a running child.
#[derive(Clone)]
pub struct ChildRef {
    /// Asks the child to stop.
    pub shutdown: Recipient<Shutdown>,
    /// For nested supervisors and actors owning dynamic children: their own subtree.
    pub snapshot: Option<Recipient<GetSnapshot>>,
    /// Messages waiting, if the child counts them.
    pub mailbox_depth: Option<Arc<AtomicUsize>>,
}

impl ChildRef {
    pub fn new(shutdown: Recipient<Shutdown>) -> Self {
        Self {
            shutdown,
            snapshot: None,
            mailbox_depth: None,
        }
    }

    /// A worker actor that handles [`Shutdown`].
    pub fn worker<A>(addr: &Addr<A>) -> Self
    where
        A: Actor + Handler<Shutdown>,
        A::Context: ToEnvelope<A, Shutdown>,
    {
        Self::new(addr.clone().recipient())
    }

    /// An actor that also answers [`GetSnapshot`] (a nested or dynamic supervisor).
    pub fn with_snapshot(mut self, snapshot: Recipient<GetSnapshot>) -> Self {
        self.snapshot = Some(snapshot);
        self
    }

    pub fn with_mailbox_depth(mut self, depth: Arc<AtomicUsize>) -> Self {
        self.mailbox_depth = Some(depth);
        self
    }
}

impl fmt::Debug for ChildRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildRef")
            .field("snapshot", &self.snapshot.is_some())
            .field("mailbox_depth", &self.mailbox_depth)
            .finish_non_exhaustive()
    }
}

/// Every child handles it by stopping (it may finish in-flight work first) — for a worker,
/// `guard.set_reason(ExitReason::Shutdown); ctx.stop()`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Be told (once) the reason the supervisor exited. Answers `false`, dropping the sender, if
/// [`EXIT_WATCHERS_MAX`] watchers are already waiting. If the supervisor dies without a reason
/// (it panicked), the sender is dropped.
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct WatchExit(pub oneshot::Sender<ExitReason>);

/// One child of a supervisor.
#[derive(Clone)]
pub struct ChildSpec {
    /// Unique among its siblings; the last segment of its path.
    pub name: String,
    pub kind: ChildKind,
    pub restart: RestartType,
    /// Time the child gets to stop after [`Shutdown`]; then the supervisor stops waiting for it.
    pub shutdown_timeout_ms: u64,
    pub start: StartFn,
}

impl ChildSpec {
    /// A worker with [`SHUTDOWN_TIMEOUT_MS_DEFAULT`].
    pub fn worker(
        name: impl Into<String>,
        restart: RestartType,
        start: impl Fn(ChildStart) -> Result<ChildRef, String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            kind: ChildKind::Worker,
            restart,
            shutdown_timeout_ms: SHUTDOWN_TIMEOUT_MS_DEFAULT,
            start: Arc::new(start),
        }
    }

    /// A nested, permanent supervisor. Its shutdown timeout is the sum of its children's plus
    /// [`SUPERVISOR_SHUTDOWN_MARGIN_MS`], so it has time to stop them all one by one.
    pub fn supervisor(spec: SupervisorSpec) -> Self {
        let shutdown_timeout_ms = spec
            .children
            .iter()
            .fold(SUPERVISOR_SHUTDOWN_MARGIN_MS, |sum, child| {
                sum.saturating_add(child.shutdown_timeout_ms)
            });
        let name = spec.name.clone();
        Self {
            name,
            kind: ChildKind::Supervisor,
            restart: RestartType::Permanent,
            shutdown_timeout_ms,
            start: Arc::new(move |start: ChildStart| {
                Supervisor::start_child_supervisor(spec.clone(), start)
            }),
        }
    }

    /// An actor owning dynamic children (an order shard): a permanent `supervisor` child whose
    /// start function returns a [`ChildRef`] with a snapshot recipient.
    pub fn dynamic(
        name: impl Into<String>,
        start: impl Fn(ChildStart) -> Result<ChildRef, String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            kind: ChildKind::Supervisor,
            ..Self::worker(name, RestartType::Permanent, start)
        }
    }

    pub fn with_restart(mut self, restart: RestartType) -> Self {
        self.restart = restart;
        self
    }

    pub fn with_shutdown_timeout_ms(mut self, shutdown_timeout_ms: u64) -> Self {
        self.shutdown_timeout_ms = shutdown_timeout_ms;
        self
    }
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("restart", &self.restart)
            .field("shutdown_timeout_ms", &self.shutdown_timeout_ms)
            .finish_non_exhaustive()
    }
}

/// A supervisor: its name (its path segment), strategy, intensity, optional backoff and its
/// children in start order.
#[derive(Clone, Debug)]
pub struct SupervisorSpec {
    pub name: String,
    /// `OneForOne`, `OneForAll` or `RestForOne`.
    pub strategy: Strategy,
    pub intensity: Intensity,
    pub backoff: Option<Backoff>,
    pub children: Vec<ChildSpec>,
}

impl SupervisorSpec {
    /// Default intensity, no backoff, no children yet.
    pub fn new(name: impl Into<String>, strategy: Strategy) -> Self {
        Self {
            name: name.into(),
            strategy,
            intensity: Intensity::default(),
            backoff: None,
            children: Vec::new(),
        }
    }

    pub fn with_intensity(mut self, intensity: Intensity) -> Self {
        self.intensity = intensity;
        self
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// Appends a child (children start in the order they are added).
    pub fn with_child(mut self, child: ChildSpec) -> Self {
        self.children.push(child);
        self
    }

    /// Names are valid and unique, at most [`CHILDREN_MAX`] children, and not `SimpleOneForOne`.
    pub fn validate(&self) -> Result<(), SupervisionError> {
        check_name(&self.name)?;
        if self.strategy == Strategy::SimpleOneForOne {
            return Err(SupervisionError::DynamicStrategy {
                supervisor: self.name.clone(),
            });
        }
        if self.children.len() > CHILDREN_MAX {
            return Err(SupervisionError::TooManyChildren {
                supervisor: self.name.clone(),
                count: self.children.len(),
                max: CHILDREN_MAX,
            });
        }
        for (index, child) in self.children.iter().enumerate() {
            check_name(&child.name)?;
            if self.children[..index].iter().any(|c| c.name == child.name) {
                return Err(SupervisionError::DuplicateChild {
                    supervisor: self.name.clone(),
                    child: child.name.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Where the supervisor is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    /// Exceeded its intensity: stopping its children, then exits with `Escalated`.
    GivingUp,
    /// Asked to stop: stopping its children, then exits with `Shutdown`.
    ShuttingDown,
    /// `ctx.stop()` called.
    Exited,
}

/// A supervisor actor. Start the root with [`Supervisor::start_root`]; nested supervisors are
/// children made with [`ChildSpec::supervisor`].
pub struct Supervisor {
    path: String,
    name: String,
    strategy: Strategy,
    backoff: Option<Backoff>,
    /// Children in start order. Temporary children are removed when they exit.
    children: Vec<Child>,
    /// Restarts this supervisor made, against its intensity.
    tracker: RestartTracker,
    events: EventBus,
    is_root: bool,
    phase: Phase,
    work: Work,
    next_generation: u64,
    last_failure: Option<FailureSnapshot>,
    rng: SplitMix64,
    /// Monotonic origin of the `now_ms` given to the trackers.
    epoch: Instant,
    /// Reports this supervisor's exit to its parent (or to the root's callback).
    exit: ExitGuard,
    exit_reason: Option<ExitReason>,
    exit_watchers: Vec<oneshot::Sender<ExitReason>>,
}

impl Supervisor {
    /// Start the root supervisor on the current arbiter (call it inside a running actix
    /// `System`). Its children are started, in order, before this returns. `on_give_up` stands
    /// in for a parent: it is called once if the root exits abnormally (it gave up after
    /// exceeding its intensity, or it panicked), never after a requested [`Shutdown`].
    pub fn start_root(
        spec: SupervisorSpec,
        events: EventBus,
        on_give_up: impl FnOnce(ExitReason) + Send + 'static,
    ) -> Result<Addr<Supervisor>, SupervisionError> {
        spec.validate()?;
        let path = spec.name.clone();
        let exit = ExitGuard::with_callback(
            path.clone(),
            Box::new(move |reason: ExitReason| {
                if reason.is_abnormal() {
                    on_give_up(reason);
                }
            }),
        );
        Ok(Supervisor::create(move |ctx| {
            let mut supervisor = Supervisor::new(spec, path, events, exit, true);
            supervisor.boot(ctx);
            supervisor
        }))
    }

    /// Start a nested supervisor for its parent (the body of [`ChildSpec::supervisor`]'s start
    /// function), on the current arbiter; its own children are started before this returns.
    pub fn start_child_supervisor(
        spec: SupervisorSpec,
        start: ChildStart,
    ) -> Result<ChildRef, String> {
        spec.validate().map_err(|e| e.to_string())?;
        let ChildStart {
            path,
            guard,
            events,
        } = start;
        let addr = Supervisor::create(move |ctx| {
            let mut supervisor = Supervisor::new(spec, path, events, guard, false);
            supervisor.boot(ctx);
            supervisor
        });
        Ok(ChildRef::new(addr.clone().recipient()).with_snapshot(addr.recipient()))
    }

    fn new(
        spec: SupervisorSpec,
        path: String,
        events: EventBus,
        exit: ExitGuard,
        is_root: bool,
    ) -> Self {
        let epoch = Instant::now();
        let children = spec
            .children
            .into_iter()
            .map(|child_spec| Child::new(&path, child_spec, spec.intensity))
            .collect();
        let seed = seed_from(&path);
        Self {
            name: spec.name,
            strategy: spec.strategy,
            backoff: spec.backoff,
            children,
            tracker: RestartTracker::new(spec.intensity),
            events,
            is_root,
            phase: Phase::Running,
            work: Work::default(),
            next_generation: 1,
            last_failure: None,
            rng: SplitMix64::new(seed),
            epoch,
            exit,
            exit_reason: None,
            exit_watchers: Vec::new(),
            path,
        }
    }

    /// Milliseconds since this supervisor was made (monotonic), for the restart trackers.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn emit(&self, path: &str, kind: EventKind, reason: Option<String>) {
        self.events.emit(path, kind, reason);
    }
}

/// A jitter seed that differs between supervisors and runs; jitter needs spread, not secrecy.
fn seed_from(path: &str) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    path.bytes().fold(u64::from(nanos), |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01B3)
    })
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    /// Children were already started in `boot`, inside `create`, so that a parent's ordered
    /// start covers the whole subtree.
    fn started(&mut self, _ctx: &mut Self::Context) {}

    /// Keep it trivial: it may run while the thread unwinds (see `exit.rs`).
    fn stopped(&mut self, _ctx: &mut Self::Context) {
        // actix has no links: if this supervisor dies with children still up (it panicked, or
        // stopped waiting for one), ask them to stop rather than leave them orphaned.
        for child in &self.children {
            if let Some(child_ref) = child.child_ref() {
                child_ref.shutdown.do_send(Shutdown);
            }
        }
        if std::thread::panicking() {
            // No reason to give: dropping the senders tells the watchers it died.
            self.exit_watchers.clear();
            return;
        }
        let reason = self.exit_reason.clone().unwrap_or(ExitReason::Normal);
        for watcher in self.exit_watchers.drain(..) {
            let _ = watcher.send(reason.clone());
        }
    }
}

impl Handler<ChildExited> for Supervisor {
    type Result = ();

    fn handle(&mut self, exit: ChildExited, ctx: &mut Self::Context) {
        self.on_child_exited(exit, ctx);
        self.drive(ctx);
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        self.shut_down(ctx);
        self.drive(ctx);
    }
}

impl Handler<WatchExit> for Supervisor {
    type Result = bool;

    fn handle(&mut self, WatchExit(watcher): WatchExit, _: &mut Self::Context) -> bool {
        if self.exit_watchers.len() >= EXIT_WATCHERS_MAX {
            return false;
        }
        self.exit_watchers.push(watcher);
        true
    }
}

impl Handler<GetSnapshot> for Supervisor {
    type Result = ResponseFuture<NodeSnapshot>;

    fn handle(&mut self, request: GetSnapshot, _: &mut Self::Context) -> Self::Result {
        self.snapshot(request)
    }
}

/// Ask `supervisor` to shut down and wait until it has exited; its reason.
/// The wait is bounded by the children's shutdown timeouts.
pub async fn shutdown_and_wait(
    supervisor: &Addr<Supervisor>,
) -> Result<ExitReason, SupervisionError> {
    let (tx, rx) = oneshot::channel();
    match supervisor.send(WatchExit(tx)).await {
        Ok(true) => {}
        Ok(false) => {
            return Err(SupervisionError::TooManyWatchers {
                max: EXIT_WATCHERS_MAX,
            });
        }
        Err(_) => return Err(SupervisionError::Gone),
    }
    supervisor.do_send(Shutdown);
    rx.await.map_err(|_| SupervisionError::Gone)
}
