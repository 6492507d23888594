//! Restart strategies and restart types on real workers: who is restarted, who is left alone.

mod common;

use actix::prelude::*;
use common::*;
use kassa_supervision::*;

/// A root `strategy` supervisor over workers `a`, `b`, `c` (all `restart`) on one arbiter.
fn three_workers(
    strategy: Strategy,
    restart: RestartType,
    probe: &Probe,
    arbiter: &Arbiter,
) -> SupervisorSpec {
    SupervisorSpec::new("root", strategy)
        .with_intensity(Intensity::new(10, 5_000))
        .with_child(probe.worker("a", restart, arbiter.handle()))
        .with_child(probe.worker("b", restart, arbiter.handle()))
        .with_child(probe.worker("c", restart, arbiter.handle()))
}

/// Crash `victim` and wait until the supervisor has finished reacting: `expect_starts` are
/// the start counts of a, b, c afterwards.
async fn crash_and_settle(
    probe: &Probe,
    rx: &mut tokio::sync::broadcast::Receiver<SupervisionEvent>,
    victim: &str,
    expect_starts: [u64; 3],
) {
    ping(probe, victim).await;
    probe.addr(victim).do_send(Crash);
    next_event(rx, &format!("root/{victim}"), EventKind::Crashed).await;
    eventually("the restarts", || {
        ["a", "b", "c"].map(|n| probe.starts(n)) == expect_starts
    })
    .await;
    for name in ["a", "b", "c"] {
        ping(probe, name).await;
    }
}

#[actix::test]
async fn one_for_one_restarts_only_the_panicked_child() {
    let (probe, arbiter, events) = (Probe::default(), Arbiter::new(), EventBus::new());
    let spec = three_workers(
        Strategy::OneForOne,
        RestartType::Permanent,
        &probe,
        &arbiter,
    );
    let (_root, gave_up) = start_root(spec, &events);
    let (_, mut rx) = events.subscribe();
    let sibling_before = ping(&probe, "b").await;

    crash_and_settle(&probe, &mut rx, "a", [2, 1, 1]).await;

    let restarted = next_event(&mut rx, "root/a", EventKind::Restarted).await;
    assert_eq!(restarted.reason, None);
    // The sibling is the very same actor instance.
    assert_eq!(ping(&probe, "b").await, sibling_before);
    assert!(gave_up.lock().is_none());
    arbiter.stop();
}

#[actix::test]
async fn one_for_all_restarts_exactly_all_children() {
    let (probe, arbiter, events) = (Probe::default(), Arbiter::new(), EventBus::new());
    let spec = three_workers(
        Strategy::OneForAll,
        RestartType::Permanent,
        &probe,
        &arbiter,
    );
    let (_root, _) = start_root(spec, &events);
    let (_, mut rx) = events.subscribe();

    crash_and_settle(&probe, &mut rx, "b", [2, 2, 2]).await;

    // Siblings were stopped in reverse order, then everyone started in order.
    let log = probe.log();
    let tail: Vec<&str> = log[log.len() - 5..].iter().map(String::as_str).collect();
    assert_eq!(tail, ["stop:c", "stop:a", "start:a", "start:b", "start:c"]);
    // The siblings' expected exits were not counted as crashes: one restart decision.
    let root = snapshot(&_root).await;
    assert_eq!(root.restarts_total, 1);
    arbiter.stop();
}

#[actix::test]
async fn rest_for_one_restarts_the_crashed_child_and_those_after_it() {
    let (probe, arbiter, events) = (Probe::default(), Arbiter::new(), EventBus::new());
    let spec = three_workers(
        Strategy::RestForOne,
        RestartType::Permanent,
        &probe,
        &arbiter,
    );
    let (_root, _) = start_root(spec, &events);
    let (_, mut rx) = events.subscribe();
    let first_before = ping(&probe, "a").await;

    crash_and_settle(&probe, &mut rx, "b", [1, 2, 2]).await;

    let log = probe.log();
    let tail: Vec<&str> = log[log.len() - 3..].iter().map(String::as_str).collect();
    assert_eq!(tail, ["stop:c", "start:b", "start:c"]);
    assert_eq!(ping(&probe, "a").await, first_before);

    // Crashing the last one restarts only it.
    crash_and_settle(&probe, &mut rx, "c", [1, 2, 3]).await;
    arbiter.stop();
}

#[actix::test]
async fn transient_child_is_restarted_after_a_panic_but_not_after_a_normal_exit() {
    let (probe, arbiter, events) = (Probe::default(), Arbiter::new(), EventBus::new());
    let spec = three_workers(
        Strategy::OneForOne,
        RestartType::Transient,
        &probe,
        &arbiter,
    );
    let (root, _) = start_root(spec, &events);
    let (_, mut rx) = events.subscribe();

    crash_and_settle(&probe, &mut rx, "a", [2, 1, 1]).await;

    probe.addr("b").do_send(ExitWith(ExitReason::Normal));
    let stopped = next_event(&mut rx, "root/b", EventKind::Stopped).await;
    assert_eq!(stopped.reason.as_deref(), Some("normal"));
    probe.addr("c").do_send(ExitWith(ExitReason::Shutdown));
    next_event(&mut rx, "root/c", EventKind::Stopped).await;

    let node = snapshot(&root).await;
    let statuses: Vec<Status> = node.children.iter().map(|c| c.status).collect();
    assert_eq!(
        statuses,
        [Status::Running, Status::Stopped, Status::Stopped]
    );
    assert_eq!([probe.starts("b"), probe.starts("c")], [1, 1]);
    assert_eq!(node.restarts_total, 1);

    // A failure (not a panic) is abnormal too.
    probe
        .addr("a")
        .do_send(ExitWith(ExitReason::Failed("lost its store".into())));
    next_event(&mut rx, "root/a", EventKind::Restarted).await;
    assert_eq!(probe.starts("a"), 3);
    arbiter.stop();
}

#[actix::test]
async fn temporary_child_is_never_restarted_and_is_removed() {
    let (probe, arbiter, events) = (Probe::default(), Arbiter::new(), EventBus::new());
    let spec = SupervisorSpec::new("root", Strategy::OneForAll)
        .with_child(probe.worker("a", RestartType::Permanent, arbiter.handle()))
        .with_child(probe.worker("t", RestartType::Temporary, arbiter.handle()))
        .with_child(probe.worker("b", RestartType::Permanent, arbiter.handle()))
        .with_child(probe.worker("u", RestartType::Temporary, arbiter.handle()));
    let (root, _) = start_root(spec, &events);
    let (_, mut rx) = events.subscribe();

    // A temporary child's crash restarts nothing, not even under one_for_all.
    ping(&probe, "t").await;
    probe.addr("t").do_send(Crash);
    next_event(&mut rx, "root/t", EventKind::Crashed).await;
    let names: Vec<String> = snapshot(&root)
        .await
        .children
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["a", "b", "u"]);

    // A sibling's crash stops the other temporary child and does not restart it (OTP).
    ping(&probe, "a").await;
    probe.addr("a").do_send(Crash);
    next_event(&mut rx, "root/b", EventKind::Restarted).await;
    let node = snapshot(&root).await;
    let names: Vec<&str> = node.children.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(["a", "t", "b", "u"].map(|n| probe.starts(n)), [2, 1, 2, 1]);
    arbiter.stop();
}

#[actix::test]
async fn a_start_error_counts_as_a_crash_and_is_retried() {
    let (probe, arbiter, events) = (Probe::default(), Arbiter::new(), EventBus::new());
    probe.fail_next_starts("b", 2);
    let spec = three_workers(
        Strategy::OneForOne,
        RestartType::Permanent,
        &probe,
        &arbiter,
    );
    let (root, gave_up) = start_root(spec, &events);

    // Still in order: c waits until b, on its third try, has started.
    assert_eq!(
        probe.log(),
        [
            "start:a",
            "start-failed:b",
            "start-failed:b",
            "start:b",
            "start:c"
        ]
    );
    let node = snapshot(&root).await;
    assert_eq!(node.restarts_total, 2);
    let b = &node.children[1];
    assert_eq!(b.status, Status::Running);
    assert_eq!(
        b.last_failure.as_ref().map(|f| f.reason.as_str()),
        Some("failed: start failed: b refused to start")
    );
    assert!(gave_up.lock().is_none());
    arbiter.stop();
}

#[actix::test]
async fn a_panicking_start_function_is_a_failed_start_not_a_dead_supervisor() {
    install_panic_hook();
    let events = EventBus::new();
    let (_, mut rx) = events.subscribe();
    let tries = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = tries.clone();
    let spec = SupervisorSpec::new("root", Strategy::OneForOne)
        .with_intensity(Intensity::new(2, 60_000))
        .with_child(ChildSpec::worker(
            "bad",
            RestartType::Permanent,
            move |_start: ChildStart| -> Result<ChildRef, String> {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                panic!("cannot build it")
            },
        ));
    let (root, gave_up) = start_root(spec, &events);

    let crashed = next_event(&mut rx, "root/bad", EventKind::Crashed).await;
    assert_eq!(
        crashed.reason.as_deref(),
        Some("panicked: in start function: cannot build it")
    );
    // 1 start + 2 restarts allowed, the third restart exceeds the intensity.
    next_event(&mut rx, "root", EventKind::GaveUp).await;
    eventually("the root's give-up", || gave_up.lock().is_some()).await;
    assert_eq!(tries.load(std::sync::atomic::Ordering::SeqCst), 3);
    eventually("the root to stop", || !root.connected()).await;
}
