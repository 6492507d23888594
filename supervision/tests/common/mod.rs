//! Test workers and helpers shared by the supervision tests: real actix actors on real
//! arbiters, a probe that records what happened, and polling with a deadline.

#![allow(dead_code)] // each test file uses a different part

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use kassa_supervision::*;
// `actix::prelude` has a `Supervisor` too.
use kassa_supervision::Supervisor;
use parking_lot::Mutex;
use tokio::sync::broadcast;
use tokio::time::Instant;

/// Default deadline for a condition in these tests.
pub const WAIT_MS: u64 = 5_000;

/// Records starts, stops and the live address of each test worker.
#[derive(Clone, Default)]
pub struct Probe {
    inner: Arc<Mutex<ProbeState>>,
}

#[derive(Default)]
struct ProbeState {
    log: Vec<String>,
    starts: HashMap<String, u64>,
    instances: u64,
    addrs: HashMap<String, Addr<TestWorker>>,
    fail_starts: HashMap<String, u32>,
}

impl Probe {
    pub fn log(&self) -> Vec<String> {
        self.inner.lock().log.clone()
    }

    pub fn push(&self, entry: String) {
        self.inner.lock().log.push(entry);
    }

    /// Start-function calls that returned a running worker.
    pub fn starts(&self, name: &str) -> u64 {
        self.inner.lock().starts.get(name).copied().unwrap_or(0)
    }

    pub fn addr(&self, name: &str) -> Addr<TestWorker> {
        self.inner
            .lock()
            .addrs
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("no worker {name} started"))
    }

    /// The next `count` starts of `name` fail with an error.
    pub fn fail_next_starts(&self, name: &str, count: u32) {
        self.inner.lock().fail_starts.insert(name.to_owned(), count);
    }

    /// A worker child on `arbiter` that records itself here.
    pub fn worker(&self, name: &str, restart: RestartType, arbiter: ArbiterHandle) -> ChildSpec {
        self.worker_with(name, restart, arbiter, Behaviour::Obedient)
    }

    pub fn worker_with(
        &self,
        name: &str,
        restart: RestartType,
        arbiter: ArbiterHandle,
        behaviour: Behaviour,
    ) -> ChildSpec {
        let probe = self.clone();
        let owned = name.to_owned();
        ChildSpec::worker(name, restart, move |start: ChildStart| {
            probe.start_worker(&owned, &arbiter, behaviour, start)
        })
    }

    fn start_worker(
        &self,
        name: &str,
        arbiter: &ArbiterHandle,
        behaviour: Behaviour,
        start: ChildStart,
    ) -> Result<ChildRef, String> {
        let mut state = self.inner.lock();
        if let Some(left) = state.fail_starts.get_mut(name)
            && *left > 0
        {
            *left -= 1;
            state.log.push(format!("start-failed:{name}"));
            return Err(format!("{name} refused to start"));
        }
        state.instances += 1;
        let instance = state.instances;
        *state.starts.entry(name.to_owned()).or_default() += 1;
        state.log.push(format!("start:{name}"));
        let worker = TestWorker {
            name: name.to_owned(),
            instance,
            guard: start.guard,
            probe: self.clone(),
            behaviour,
        };
        let addr = TestWorker::start_in_arbiter(arbiter, move |_| worker);
        state.addrs.insert(name.to_owned(), addr.clone());
        Ok(ChildRef::worker(&addr))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Stops on `Shutdown`.
    Obedient,
    /// Ignores `Shutdown`.
    Stubborn,
}

pub struct TestWorker {
    name: String,
    instance: u64,
    guard: ExitGuard,
    probe: Probe,
    behaviour: Behaviour,
}

impl Actor for TestWorker {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        self.probe.push(format!("stop:{}", self.name));
    }
}

/// Panic inside the handler.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Crash;

impl Handler<Crash> for TestWorker {
    type Result = ();

    fn handle(&mut self, _: Crash, _: &mut Self::Context) {
        panic!("injected fault in {}", self.name);
    }
}

/// Stop with this reason.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ExitWith(pub ExitReason);

impl Handler<ExitWith> for TestWorker {
    type Result = ();

    fn handle(&mut self, ExitWith(reason): ExitWith, ctx: &mut Self::Context) {
        self.guard.set_reason(reason);
        ctx.stop();
    }
}

/// Which incarnation answers.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct Ping;

impl Handler<Ping> for TestWorker {
    type Result = u64;

    fn handle(&mut self, _: Ping, _: &mut Self::Context) -> u64 {
        self.instance
    }
}

impl Handler<Shutdown> for TestWorker {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        if self.behaviour == Behaviour::Obedient {
            self.guard.set_reason(ExitReason::Shutdown);
            ctx.stop();
        }
    }
}

/// Poll `condition` until it holds or `WAIT_MS` passes.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Poll an async `probe` until it returns `Some` or `WAIT_MS` passes.
pub async fn eventually_some<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The next event on `rx` with this path and kind (others are skipped), within `WAIT_MS`.
pub async fn next_event(
    rx: &mut broadcast::Receiver<SupervisionEvent>,
    path: &str,
    kind: EventKind,
) -> SupervisionEvent {
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(event)) if event.path == path && event.kind == kind => return event,
            Ok(Ok(_)) => {}
            Ok(Err(error)) => panic!("event bus: {error}"),
            Err(_) => panic!("timed out waiting for {kind:?} of {path}"),
        }
    }
}

/// A worker's current incarnation once it answers.
pub async fn ping(probe: &Probe, name: &str) -> u64 {
    let probe = probe.clone();
    eventually_some(&format!("{name} to answer"), || {
        let addr = probe.addr(name);
        async move { addr.send(Ping).await.ok() }
    })
    .await
}

/// The root's snapshot.
pub async fn snapshot(root: &Addr<Supervisor>) -> NodeSnapshot {
    root.send(GetSnapshot::new(None, SNAPSHOT_LIMIT_DEFAULT))
        .await
        .expect("root answers snapshots")
}

/// What the root's `on_give_up` received, if it was called.
pub type GaveUp = Arc<Mutex<Option<ExitReason>>>;

/// Start a root on the current arbiter; the returned cell records a give-up.
pub fn start_root(spec: SupervisorSpec, events: &EventBus) -> (Addr<Supervisor>, GaveUp) {
    install_panic_hook();
    let gave_up = GaveUp::default();
    let cell = gave_up.clone();
    let root = Supervisor::start_root(spec, events.clone(), move |reason| {
        *cell.lock() = Some(reason);
    })
    .expect("valid spec");
    (root, gave_up)
}
