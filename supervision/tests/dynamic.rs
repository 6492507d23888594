//! `DynamicChildren`: decisions as plain data, then a shard actor built on it under a real
//! supervisor (the pattern the order shards follow).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use common::*;
use kassa_supervision::*;

fn transient(max_restarts: u32, period_ms: u64) -> DynamicChildren {
    let spec = DynamicSpec::new(RestartType::Transient)
        .with_intensity(Intensity::new(max_restarts, period_ms));
    DynamicChildren::new(spec, 7)
}

fn panicked() -> ExitReason {
    ExitReason::Panicked("injected fault".into())
}

#[test]
fn transient_children_are_restarted_only_after_abnormal_exits() {
    let mut children = transient(10, 10_000);
    let a = children.register("pay_a", 1_000).unwrap();
    let b = children.register("pay_b", 1_000).unwrap();
    assert!(!a.restarted && a.generation != b.generation);

    let decision = children.on_exit("pay_a", a.generation, &panicked(), 2_000);
    assert_eq!(decision, DynamicDecision::Restart { delay_ms: 0 });
    let again = children.register("pay_a", 2_001).unwrap();
    assert!(again.restarted && again.generation > b.generation);

    for normal in [ExitReason::Normal, ExitReason::Shutdown] {
        let b = children.register("pay_b", 3_000).unwrap();
        assert_eq!(
            children.on_exit("pay_b", b.generation, &normal, 3_000),
            DynamicDecision::Remove
        );
        assert!(!children.contains("pay_b"));
    }
    let failed = ExitReason::Failed("store down".into());
    assert_eq!(
        children.on_exit("pay_a", again.generation, &failed, 4_000),
        DynamicDecision::Restart { delay_ms: 0 }
    );
}

#[test]
fn permanent_and_temporary_follow_their_restart_type() {
    let mut permanent = DynamicChildren::new(DynamicSpec::new(RestartType::Permanent), 1);
    let g = permanent.register("k", 0).unwrap().generation;
    assert!(matches!(
        permanent.on_exit("k", g, &ExitReason::Normal, 0),
        DynamicDecision::Restart { .. }
    ));
    let mut temporary = DynamicChildren::new(DynamicSpec::new(RestartType::Temporary), 1);
    let g = temporary.register("k", 0).unwrap().generation;
    assert_eq!(
        temporary.on_exit("k", g, &panicked(), 0),
        DynamicDecision::Remove
    );
}

#[test]
fn stale_generations_and_unknown_keys_are_ignored() {
    let mut children = transient(10, 10_000);
    let first = children.register("pay_a", 0).unwrap();
    let second = children.register("pay_a", 1).unwrap(); // started again: old one is stale
    assert_eq!(
        children.on_exit("pay_a", first.generation, &panicked(), 2),
        DynamicDecision::Ignore
    );
    assert_eq!(
        children.on_exit("pay_zzz", second.generation, &panicked(), 2),
        DynamicDecision::Ignore
    );
    assert_eq!(children.generation("pay_a"), Some(second.generation));
}

#[test]
fn one_intensity_for_all_children_gives_up() {
    let mut children = transient(2, 10_000);
    let keys = ["pay_a", "pay_b", "pay_c"];
    let generations: Vec<u64> = keys
        .iter()
        .map(|k| children.register(k, 0).unwrap().generation)
        .collect();

    // Three different children, one crash each: the third restart exceeds 2 in 10 s.
    assert!(matches!(
        children.on_exit("pay_a", generations[0], &panicked(), 100),
        DynamicDecision::Restart { .. }
    ));
    assert!(matches!(
        children.on_exit("pay_b", generations[1], &panicked(), 200),
        DynamicDecision::Restart { .. }
    ));
    assert_eq!(
        children.on_exit("pay_c", generations[2], &panicked(), 300),
        DynamicDecision::GiveUp
    );
    assert!(children.gave_up());
    assert_eq!(
        children.register("pay_d", 400),
        Err(SupervisionError::GaveUp)
    );
}

#[test]
fn the_window_slides() {
    let mut children = transient(1, 1_000);
    let g = children.register("pay_a", 0).unwrap().generation;
    assert!(matches!(
        children.on_exit("pay_a", g, &panicked(), 0),
        DynamicDecision::Restart { .. }
    ));
    let g = children.register("pay_a", 10).unwrap().generation;
    // 1 001 ms later the first restart has left the window.
    assert!(matches!(
        children.on_exit("pay_a", g, &panicked(), 1_001),
        DynamicDecision::Restart { .. }
    ));
}

#[test]
fn passivation_removes_without_counting_a_restart() {
    let mut children = transient(0, 10_000);
    let g = children.register("pay_a", 0).unwrap().generation;
    assert!(children.remove("pay_a"));
    assert!(!children.remove("pay_a"));
    // Its exit arrives afterwards and means nothing.
    assert_eq!(
        children.on_exit("pay_a", g, &ExitReason::Shutdown, 5),
        DynamicDecision::Ignore
    );
    assert!(children.is_empty());
    let request = GetSnapshot::new(None, 10);
    let node = children.node_snapshot("root/orders/shard-0", "shard-0", &request, 5, 5);
    assert_eq!((node.restarts_total, node.last_failure), (0, None));
    assert!(!children.gave_up());
}

#[test]
fn backoff_grows_per_child() {
    let spec = DynamicSpec::new(RestartType::Transient)
        .with_intensity(Intensity::new(10, 60_000))
        .with_backoff(Backoff::new(100, 1_000, false));
    let mut children = DynamicChildren::new(spec, 3);
    let mut delays = Vec::new();
    for at in 0..3 {
        let g = children.register("pay_a", at).unwrap().generation;
        match children.on_exit("pay_a", g, &panicked(), at) {
            DynamicDecision::Restart { delay_ms } => delays.push(delay_ms),
            other => panic!("expected a restart, got {other:?}"),
        }
    }
    assert_eq!(delays, [100, 200, 400]);
}

#[test]
fn snapshots_list_up_to_the_limit_and_say_when_truncated() {
    let mut children = transient(10, 10_000);
    for n in 0..5 {
        children.register(&format!("pay_{n}"), 1_000).unwrap();
    }
    let g = children.generation("pay_1").unwrap();
    children.on_exit("pay_1", g, &panicked(), 1_500);
    assert_eq!(children.len(), 5);

    let (nodes, truncated) = children.snapshot_children("root/orders/shard-0", 3, 2_000);
    let paths: Vec<&str> = nodes.iter().map(|n| n.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "root/orders/shard-0/pay_0",
            "root/orders/shard-0/pay_1",
            "root/orders/shard-0/pay_2"
        ]
    );
    assert!(truncated);
    assert_eq!(nodes[0].uptime_ms, 1_000);
    assert_eq!(
        (nodes[1].status, nodes[1].restarts_total),
        (Status::Restarting, 0)
    );
    assert_eq!(nodes[1].last_failure.as_ref().map(|f| f.at), Some(1_500));
    assert_eq!(nodes[0].kind, ChildKind::Worker);
    assert_eq!(nodes[0].restart, RestartType::Transient);
    let (all, truncated) = children.snapshot_children("root/orders/shard-0", 5, 2_000);
    assert_eq!((all.len(), truncated), (5, false));

    // The shard's own node: children only when expanded.
    let plain = GetSnapshot::new(None, 2);
    let node = children.node_snapshot("root/orders/shard-0", "shard-0", &plain, 9, 2_000);
    assert_eq!(node.strategy, Some(Strategy::SimpleOneForOne));
    assert_eq!(
        (
            node.child_count,
            node.children.len(),
            node.children_truncated
        ),
        (5, 0, true)
    );
    assert_eq!((node.restarts_total, node.restarts_window), (1, 1));
    let expanded = GetSnapshot::new(Some("shard-0".into()), 2);
    let node = children.node_snapshot("root/orders/shard-0", "shard-0", &expanded, 9, 2_000);
    assert_eq!((node.children.len(), node.children_truncated), (2, true));
    let by_path = GetSnapshot::new(Some("root/orders/shard-0".into()), 0);
    let node = children.node_snapshot("root/orders/shard-0", "shard-0", &by_path, 9, 2_000);
    assert_eq!(node.children.len(), 1, "limit clamped to at least 1");
}

#[test]
fn the_number_of_live_children_is_bounded() {
    let spec = DynamicSpec::new(RestartType::Transient).with_children_max(2);
    let mut children = DynamicChildren::new(spec, 0);
    children.register("a", 0).unwrap();
    children.register("b", 0).unwrap();
    assert_eq!(
        children.register("c", 0),
        Err(SupervisionError::DynamicFull { max: 2 })
    );
    children
        .register("a", 1)
        .expect("a known key restarts, it does not add");
}

// ---- A shard actor built on DynamicChildren, under a real supervisor ----

struct Order {
    _guard: ExitGuard,
}

impl Actor for Order {
    type Context = Context<Self>;
}

impl Handler<Shutdown> for Order {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        self._guard.set_reason(ExitReason::Shutdown);
        ctx.stop();
    }
}

impl Handler<Crash> for Order {
    type Result = ();

    fn handle(&mut self, _: Crash, _: &mut Self::Context) {
        panic!("injected fault");
    }
}

struct Shard {
    path: String,
    name: String,
    children: DynamicChildren,
    orders: HashMap<String, Addr<Order>>,
    events: EventBus,
    guard: ExitGuard,
    started: tokio::time::Instant,
}

impl Shard {
    fn now_ms() -> u64 {
        unix_now_ms() as u64
    }

    fn start_order(&mut self, key: &str, ctx: &mut Context<Self>) {
        let Ok(registration) = self.children.register(key, Self::now_ms()) else {
            return;
        };
        let guard = ExitGuard::new(ctx.address().recipient(), key, registration.generation);
        let addr = Order { _guard: guard }.start();
        self.orders.insert(key.to_owned(), addr);
        let kind = if registration.restarted {
            EventKind::Restarted
        } else {
            EventKind::Started
        };
        self.events
            .emit(&format!("{}/{key}", self.path), kind, None);
    }
}

impl Actor for Shard {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
struct Open(&'static str);

impl Handler<Open> for Shard {
    type Result = ();

    fn handle(&mut self, Open(key): Open, ctx: &mut Self::Context) {
        self.start_order(key, ctx);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct CrashOrder(&'static str);

impl Handler<CrashOrder> for Shard {
    type Result = ();

    fn handle(&mut self, CrashOrder(key): CrashOrder, _: &mut Self::Context) {
        if let Some(order) = self.orders.get(key) {
            order.do_send(Crash);
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Passivate(&'static str);

impl Handler<Passivate> for Shard {
    type Result = ();

    fn handle(&mut self, Passivate(key): Passivate, _: &mut Self::Context) {
        if self.children.remove(key) {
            if let Some(order) = self.orders.remove(key) {
                order.do_send(Shutdown);
            }
            self.events
                .emit(&format!("{}/{key}", self.path), EventKind::Passivated, None);
        }
    }
}

impl Handler<ChildExited> for Shard {
    type Result = ();

    fn handle(&mut self, exit: ChildExited, ctx: &mut Self::Context) {
        let path = format!("{}/{}", self.path, exit.child_id);
        let now = Self::now_ms();
        match self
            .children
            .on_exit(&exit.child_id, exit.generation, &exit.reason, now)
        {
            DynamicDecision::Ignore => {}
            DynamicDecision::Restart { delay_ms } => {
                self.events
                    .emit(&path, EventKind::Crashed, Some(exit.reason.to_string()));
                let key = exit.child_id.clone();
                ctx.run_later(Duration::from_millis(delay_ms), move |shard, ctx| {
                    shard.start_order(&key, ctx)
                });
            }
            DynamicDecision::Remove => {
                self.orders.remove(&exit.child_id);
            }
            DynamicDecision::GiveUp => {
                self.events
                    .emit(&self.path, EventKind::GaveUp, Some(exit.reason.to_string()));
                for (_, order) in self.orders.drain() {
                    order.do_send(Shutdown);
                }
                self.guard.set_reason(ExitReason::Escalated(format!(
                    "order crash loop: {}",
                    exit.reason
                )));
                ctx.stop();
            }
        }
    }
}

impl Handler<Shutdown> for Shard {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        for (_, order) in self.orders.drain() {
            order.do_send(Shutdown);
        }
        self.guard.set_reason(ExitReason::Shutdown);
        ctx.stop();
    }
}

impl Handler<GetSnapshot> for Shard {
    type Result = MessageResult<GetSnapshot>;

    fn handle(&mut self, request: GetSnapshot, _: &mut Self::Context) -> Self::Result {
        let uptime_ms = self.started.elapsed().as_millis() as u64;
        MessageResult(self.children.node_snapshot(
            &self.path,
            &self.name,
            &request,
            uptime_ms,
            Self::now_ms(),
        ))
    }
}

#[actix::test]
async fn a_shard_built_on_dynamic_children_under_a_supervisor() {
    let events = EventBus::new();
    let arbiter = Arbiter::new();
    let shard_arbiter = arbiter.handle();
    let shards: std::sync::Arc<parking_lot::Mutex<Vec<Addr<Shard>>>> = Default::default();
    let started = shards.clone();
    let orders = SupervisorSpec::new("orders", Strategy::OneForOne).with_child(ChildSpec::dynamic(
        "shard-0",
        move |start: ChildStart| {
            let spec =
                DynamicSpec::new(RestartType::Transient).with_intensity(Intensity::new(1, 60_000));
            let shard = Shard {
                name: "shard-0".into(),
                path: start.path,
                children: DynamicChildren::new(spec, 42),
                orders: HashMap::new(),
                events: start.events,
                guard: start.guard,
                started: tokio::time::Instant::now(),
            };
            let addr = Shard::start_in_arbiter(&shard_arbiter, move |_| shard);
            started.lock().push(addr.clone());
            Ok(ChildRef::worker(&addr).with_snapshot(addr.recipient()))
        },
    ));
    let spec =
        SupervisorSpec::new("root", Strategy::OneForOne).with_child(ChildSpec::supervisor(orders));
    let (root, gave_up) = start_root(spec, &events);
    let (_, mut rx) = events.subscribe();
    let shard = shards.lock()[0].clone();

    for key in ["pay_1", "pay_2", "pay_3"] {
        shard.do_send(Open(key));
    }
    next_event(&mut rx, "root/orders/shard-0/pay_3", EventKind::Started).await;
    shard.do_send(CrashOrder("pay_2"));
    next_event(&mut rx, "root/orders/shard-0/pay_2", EventKind::Restarted).await;
    shard.do_send(Passivate("pay_3"));
    next_event(&mut rx, "root/orders/shard-0/pay_3", EventKind::Passivated).await;

    let tree = root
        .send(GetSnapshot::new(Some("shard-0".into()), 1))
        .await
        .unwrap();
    let node = tree
        .find("root/orders/shard-0")
        .expect("the shard is in the tree");
    assert_eq!(
        (node.kind, node.strategy),
        (ChildKind::Supervisor, Some(Strategy::SimpleOneForOne))
    );
    assert_eq!(
        (
            node.child_count,
            node.children.len(),
            node.children_truncated
        ),
        (2, 1, true)
    );
    assert_eq!(node.children[0].path, "root/orders/shard-0/pay_1");
    assert_eq!(node.restarts_total, 1);
    assert_eq!(
        node.last_failure
            .as_ref()
            .map(|f| f.reason.starts_with("panicked: injected fault")),
        Some(true)
    );
    let tree = root.send(GetSnapshot::new(None, 100)).await.unwrap();
    let node = tree.find("root/orders/shard-0").unwrap();
    assert_eq!((node.child_count, node.children.len()), (2, 0));

    // Past its intensity the shard escalates; `orders` restarts it with no children.
    shard.do_send(CrashOrder("pay_1"));
    next_event(&mut rx, "root/orders/shard-0", EventKind::GaveUp).await;
    let crashed = next_event(&mut rx, "root/orders/shard-0", EventKind::Crashed).await;
    assert!(
        crashed
            .reason
            .unwrap_or_default()
            .starts_with("escalated: order crash loop")
    );
    next_event(&mut rx, "root/orders/shard-0", EventKind::Restarted).await;
    assert_eq!(shards.lock().len(), 2);
    let tree = root.send(GetSnapshot::new(None, 100)).await.unwrap();
    let node = tree.find("root/orders/shard-0").unwrap();
    assert_eq!(
        (node.status, node.child_count, node.restarts_total),
        (Status::Running, 0, 0)
    );
    assert!(gave_up.lock().is_none());
    arbiter.stop();
}
