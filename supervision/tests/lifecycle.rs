//! Ordered start, reverse-ordered shutdown with timeouts, snapshots, spec validation.

mod common;

use std::future::pending;
use std::time::Duration;

use actix::prelude::*;
use common::*;
use kassa_supervision::*;
// `actix::prelude` has a `Supervisor` too.
use kassa_supervision::Supervisor;
use tokio::time::Instant;

#[actix::test]
async fn children_start_in_order_and_stop_in_reverse_order_across_nesting() {
    let (probe, arbiter, events) = (Probe::default(), Arbiter::new(), EventBus::new());
    let inner = SupervisorSpec::new("inner", Strategy::OneForOne)
        .with_child(probe.worker("b", RestartType::Permanent, arbiter.handle()))
        .with_child(probe.worker("c", RestartType::Transient, arbiter.handle()));
    let spec = SupervisorSpec::new("root", Strategy::RestForOne)
        .with_child(probe.worker("a", RestartType::Permanent, arbiter.handle()))
        .with_child(ChildSpec::supervisor(inner))
        .with_child(probe.worker("d", RestartType::Permanent, arbiter.handle()));
    let (root, gave_up) = start_root(spec, &events);

    // The inner supervisor's children are up before the root's next child starts.
    assert_eq!(probe.log(), ["start:a", "start:b", "start:c", "start:d"]);
    for name in ["a", "b", "c", "d"] {
        ping(&probe, name).await;
    }

    let reason = shutdown_and_wait(&root).await.expect("root exits");

    assert_eq!(reason, ExitReason::Shutdown);
    let stops: Vec<String> = probe.log().into_iter().skip(4).collect();
    assert_eq!(stops, ["stop:d", "stop:c", "stop:b", "stop:a"]);
    assert!(gave_up.lock().is_none());
    let kinds: Vec<(String, EventKind)> = events
        .recent()
        .into_iter()
        .map(|e| (e.path, e.kind))
        .collect();
    assert_eq!(
        kinds.first(),
        Some(&("root".to_owned(), EventKind::Started))
    );
    assert_eq!(kinds.last(), Some(&("root".to_owned(), EventKind::Stopped)));
    assert!(kinds.contains(&("root/inner".to_owned(), EventKind::Stopped)));
    arbiter.stop();
}

#[actix::test]
async fn a_child_that_ignores_shutdown_is_waited_for_only_its_timeout() {
    let (probe, arbiter, events) = (Probe::default(), Arbiter::new(), EventBus::new());
    let timeout_ms = 200;
    let spec = SupervisorSpec::new("root", Strategy::OneForOne)
        .with_child(probe.worker("a", RestartType::Permanent, arbiter.handle()))
        .with_child(
            probe
                .worker_with(
                    "stuck",
                    RestartType::Permanent,
                    arbiter.handle(),
                    Behaviour::Stubborn,
                )
                .with_shutdown_timeout_ms(timeout_ms),
        );
    let (root, _) = start_root(spec, &events);
    let (_, mut rx) = events.subscribe();
    ping(&probe, "stuck").await;

    let began = Instant::now();
    let reason = shutdown_and_wait(&root).await.expect("root exits");

    assert_eq!(reason, ExitReason::Shutdown);
    assert!(began.elapsed() >= Duration::from_millis(timeout_ms));
    let given_up = next_event(&mut rx, "root/stuck", EventKind::Stopped).await;
    assert_eq!(
        given_up.reason.as_deref(),
        Some("did not stop within 200 ms; no longer waited for")
    );
    // Still stopped in reverse order: a only after stuck's timeout.
    next_event(&mut rx, "root/a", EventKind::Stopped).await;
    assert!(probe.log().contains(&"stop:a".to_owned()));
    arbiter.stop();
}

#[actix::test]
async fn the_snapshot_matches_the_running_tree() {
    let (probe, arbiter, events) = (Probe::default(), Arbiter::new(), EventBus::new());
    let inner = SupervisorSpec::new("inner", Strategy::RestForOne)
        .with_intensity(Intensity::new(7, 9_000))
        .with_child(probe.worker("c", RestartType::Temporary, arbiter.handle()));
    let spec = SupervisorSpec::new("root", Strategy::OneForOne)
        .with_intensity(Intensity::new(4, 6_000))
        .with_child(probe.worker("a", RestartType::Permanent, arbiter.handle()))
        .with_child(probe.worker("b", RestartType::Transient, arbiter.handle()))
        .with_child(ChildSpec::supervisor(inner));
    let (root, _) = start_root(spec, &events);
    let (_, mut rx) = events.subscribe();
    ping(&probe, "a").await;
    probe.addr("a").do_send(Crash);
    next_event(&mut rx, "root/a", EventKind::Restarted).await;

    let node = snapshot(&root).await;

    assert_eq!(
        (node.path.as_str(), node.kind, node.strategy, node.status),
        (
            "root",
            ChildKind::Supervisor,
            Some(Strategy::OneForOne),
            Status::Running
        )
    );
    assert_eq!(node.intensity, Some(Intensity::new(4, 6_000)));
    assert_eq!((node.restarts_window, node.restarts_total), (1, 1));
    assert_eq!((node.child_count, node.children_truncated), (3, false));
    let summary: Vec<_> = node
        .children
        .iter()
        .map(|c| (c.path.as_str(), c.kind, c.strategy, c.restart, c.status))
        .collect();
    assert_eq!(
        summary,
        [
            (
                "root/a",
                ChildKind::Worker,
                None,
                RestartType::Permanent,
                Status::Running
            ),
            (
                "root/b",
                ChildKind::Worker,
                None,
                RestartType::Transient,
                Status::Running
            ),
            (
                "root/inner",
                ChildKind::Supervisor,
                Some(Strategy::RestForOne),
                RestartType::Permanent,
                Status::Running
            ),
        ]
    );
    let a = &node.children[0];
    assert_eq!((a.restarts_window, a.restarts_total), (1, 1));
    let failure = a.last_failure.as_ref().expect("a crashed");
    assert!(
        failure
            .reason
            .starts_with("panicked: injected fault in a at ")
    );
    assert!((failure.at - unix_now_ms()).abs() < 60_000);
    assert_eq!(node.last_failure.as_ref(), Some(failure));
    assert!(node.children[1].last_failure.is_none());
    let inner = &node.children[2];
    assert_eq!(inner.intensity, Some(Intensity::new(7, 9_000)));
    assert_eq!(inner.children.len(), 1);
    assert_eq!(
        (inner.children[0].path.as_str(), inner.children[0].restart),
        ("root/inner/c", RestartType::Temporary)
    );
    assert_eq!(node.find("root/inner/c"), Some(&inner.children[0]));
    // It is the admin API's JSON.
    let json = serde_json::to_value(&node).unwrap();
    assert_eq!(json["children"][2]["strategy"], "rest_for_one");
    assert_eq!(json["children"][0]["strategy"], serde_json::Value::Null);
    arbiter.stop();
}

/// Answers `GetSnapshot` never.
struct Mute {
    _guard: ExitGuard,
}

impl Actor for Mute {
    type Context = Context<Self>;
}

impl Handler<Shutdown> for Mute {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<GetSnapshot> for Mute {
    type Result = ResponseFuture<NodeSnapshot>;

    fn handle(&mut self, _: GetSnapshot, _: &mut Self::Context) -> Self::Result {
        Box::pin(pending())
    }
}

#[actix::test]
async fn a_child_that_never_answers_cannot_hang_the_snapshot() {
    let (probe, arbiter, events) = (Probe::default(), Arbiter::new(), EventBus::new());
    let mute_arbiter = arbiter.handle();
    let spec = SupervisorSpec::new("root", Strategy::OneForOne)
        .with_child(ChildSpec::dynamic("mute", move |start: ChildStart| {
            let mute = Mute {
                _guard: start.guard,
            };
            let addr = Mute::start_in_arbiter(&mute_arbiter, move |_| mute);
            Ok(ChildRef::worker(&addr).with_snapshot(addr.recipient()))
        }))
        .with_child(probe.worker("a", RestartType::Permanent, arbiter.handle()));
    let (root, _) = start_root(spec, &events);
    ping(&probe, "a").await;

    let began = Instant::now();
    let node = root
        .send(GetSnapshot {
            expand: None,
            limit: 10,
            timeout_ms: 200,
        })
        .await
        .unwrap();

    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_millis(2_000),
        "{took:?}"
    );
    let names: Vec<_> = node
        .children
        .iter()
        .map(|c| (c.name.as_str(), c.status))
        .collect();
    assert_eq!(names, [("mute", Status::Running), ("a", Status::Running)]);
    assert_eq!(node.children[0].kind, ChildKind::Supervisor);
    assert_eq!(node.restarts_total, 0, "mute was never restarted");
    arbiter.stop();
}

#[actix::test]
async fn invalid_specs_are_refused() {
    let probe = Probe::default();
    let arbiter = Arbiter::new();
    let worker = |name: &str| probe.worker(name, RestartType::Permanent, arbiter.handle());
    let start =
        |spec: SupervisorSpec| Supervisor::start_root(spec, EventBus::new(), |_| {}).map(|_| ());

    let dynamic = SupervisorSpec::new("root", Strategy::SimpleOneForOne);
    assert!(matches!(
        start(dynamic),
        Err(SupervisionError::DynamicStrategy { .. })
    ));
    let twins = SupervisorSpec::new("root", Strategy::OneForOne)
        .with_child(worker("a"))
        .with_child(worker("a"));
    assert!(matches!(
        start(twins),
        Err(SupervisionError::DuplicateChild { .. })
    ));
    let slash = SupervisorSpec::new("root", Strategy::OneForOne).with_child(worker("a/b"));
    assert!(matches!(
        start(slash),
        Err(SupervisionError::InvalidName { .. })
    ));
    assert_eq!(probe.log(), Vec::<String>::new(), "nothing was started");
    arbiter.stop();
}
