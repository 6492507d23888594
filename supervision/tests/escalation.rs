//! Restart intensity, escalation up the tree, and backoff.

mod common;

use std::time::Duration;

use actix::prelude::*;
use common::*;
use kassa_supervision::*;
use tokio::time::Instant;

/// root (one_for_one, `root_intensity`) ─┬─ inner (one_for_one, 1 restart / 60 s) ── w
///                                       └─ x
fn nested(probe: &Probe, arbiter: &Arbiter, root_intensity: Intensity) -> SupervisorSpec {
    let inner = SupervisorSpec::new("inner", Strategy::OneForOne)
        .with_intensity(Intensity::new(1, 60_000))
        .with_child(probe.worker("w", RestartType::Permanent, arbiter.handle()));
    SupervisorSpec::new("root", Strategy::OneForOne)
        .with_intensity(root_intensity)
        .with_child(ChildSpec::supervisor(inner))
        .with_child(probe.worker("x", RestartType::Permanent, arbiter.handle()))
}

/// Crash `w` twice: the second crash exceeds `inner`'s intensity.
async fn crash_loop_w(probe: &Probe, rx: &mut tokio::sync::broadcast::Receiver<SupervisionEvent>) {
    ping(probe, "w").await;
    probe.addr("w").do_send(Crash);
    next_event(rx, "root/inner/w", EventKind::Restarted).await;
    ping(probe, "w").await;
    probe.addr("w").do_send(Crash);
}

#[actix::test]
async fn a_crash_loop_escalates_and_the_parent_restarts_the_child_supervisor() {
    let (probe, arbiter, events) = (Probe::default(), Arbiter::new(), EventBus::new());
    let (root, gave_up) = start_root(nested(&probe, &arbiter, Intensity::new(3, 60_000)), &events);
    let (_, mut rx) = events.subscribe();
    let x_before = ping(&probe, "x").await;

    crash_loop_w(&probe, &mut rx).await;

    let gave = next_event(&mut rx, "root/inner", EventKind::GaveUp).await;
    let reason = gave.reason.unwrap_or_default();
    assert!(
        reason
            .starts_with("more than 1 restarts in 60000 ms; last: w panicked: injected fault in w"),
        "{reason}"
    );
    next_event(&mut rx, "root/inner", EventKind::Escalated).await;
    let crashed = next_event(&mut rx, "root/inner", EventKind::Crashed).await;
    assert!(
        crashed
            .reason
            .unwrap_or_default()
            .starts_with("escalated: more than 1 restarts")
    );
    next_event(&mut rx, "root/inner", EventKind::Restarted).await;

    // The new inner supervisor started w afresh; x was not touched; the root did not give up.
    assert_eq!(probe.starts("w"), 3);
    ping(&probe, "w").await;
    assert_eq!(ping(&probe, "x").await, x_before);
    assert_eq!(probe.starts("x"), 1);
    assert!(gave_up.lock().is_none());
    let node = snapshot(&root).await;
    assert_eq!(node.restarts_total, 1);
    let inner = &node.children[0];
    assert_eq!((inner.status, inner.restarts_total), (Status::Running, 0));
    assert_eq!(inner.children[0].status, Status::Running);
    arbiter.stop();
}

#[actix::test]
async fn escalation_reaches_the_root_and_calls_on_give_up() {
    let (probe, arbiter, events) = (Probe::default(), Arbiter::new(), EventBus::new());
    let (root, gave_up) = start_root(nested(&probe, &arbiter, Intensity::new(0, 60_000)), &events);
    let (_, mut rx) = events.subscribe();

    crash_loop_w(&probe, &mut rx).await;

    next_event(&mut rx, "root/inner", EventKind::Escalated).await;
    next_event(&mut rx, "root", EventKind::GaveUp).await;
    // The root stops its remaining children before it goes.
    next_event(&mut rx, "root/x", EventKind::Stopped).await;
    next_event(&mut rx, "root", EventKind::Escalated).await;
    eventually("on_give_up", || gave_up.lock().is_some()).await;
    match gave_up.lock().clone() {
        Some(ExitReason::Escalated(text)) => {
            assert!(
                text.contains("last: inner escalated: more than 1 restarts"),
                "{text}"
            )
        }
        other => panic!("expected Escalated, got {other:?}"),
    }
    eventually("the root to stop", || !root.connected()).await;
    assert_eq!(probe.starts("x"), 1);
    arbiter.stop();
}

#[actix::test]
async fn backoff_delays_each_restart_at_least_its_step() {
    let (probe, arbiter, events) = (Probe::default(), Arbiter::new(), EventBus::new());
    let min_ms = 150;
    let spec = SupervisorSpec::new("root", Strategy::OneForOne)
        .with_intensity(Intensity::new(5, 60_000))
        .with_backoff(Backoff::new(min_ms, 1_000, false))
        .with_child(probe.worker("a", RestartType::Permanent, arbiter.handle()))
        .with_child(probe.worker("b", RestartType::Permanent, arbiter.handle()));
    let (root, _) = start_root(spec, &events);
    let (_, mut rx) = events.subscribe();

    for attempt in 0..2u32 {
        ping(&probe, "a").await;
        let crashed_at = Instant::now();
        probe.addr("a").do_send(Crash);
        next_event(&mut rx, "root/a", EventKind::Crashed).await;
        // Meanwhile the child is `restarting`, its sibling untouched.
        let node = snapshot(&root).await;
        assert_eq!(node.children[0].status, Status::Restarting);
        assert_eq!(node.children[1].status, Status::Running);
        next_event(&mut rx, "root/a", EventKind::Restarted).await;
        let waited = crashed_at.elapsed();
        let step = Duration::from_millis(min_ms << attempt);
        assert!(
            waited >= step,
            "restart {attempt} after {waited:?}, before {step:?}"
        );
    }
    assert_eq!(probe.starts("b"), 1);
    arbiter.stop();
}

#[actix::test]
async fn shutdown_during_a_backoff_cancels_the_restart() {
    let (probe, arbiter, events) = (Probe::default(), Arbiter::new(), EventBus::new());
    let spec = SupervisorSpec::new("root", Strategy::OneForOne)
        .with_backoff(Backoff::new(60_000, 60_000, false))
        .with_child(probe.worker("a", RestartType::Permanent, arbiter.handle()))
        .with_child(probe.worker("b", RestartType::Permanent, arbiter.handle()));
    let (root, gave_up) = start_root(spec, &events);
    let (_, mut rx) = events.subscribe();
    ping(&probe, "a").await;
    probe.addr("a").do_send(Crash);
    next_event(&mut rx, "root/a", EventKind::Crashed).await;

    let reason = shutdown_and_wait(&root).await.expect("root exits");

    assert_eq!(reason, ExitReason::Shutdown);
    assert_eq!([probe.starts("a"), probe.starts("b")], [1, 1]);
    assert!(
        gave_up.lock().is_none(),
        "a requested shutdown is not a give-up"
    );
    arbiter.stop();
}
