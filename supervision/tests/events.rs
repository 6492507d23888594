//! The event bus: replay of recent events to a late subscriber, bounded memory, lag.

mod common;

use actix::prelude::*;
use common::*;
use kassa_supervision::*;
use tokio::sync::broadcast::error::RecvError;

fn event(n: usize) -> SupervisionEvent {
    SupervisionEvent {
        at: n as i64,
        path: format!("root/p{n}"),
        kind: EventKind::Crashed,
        reason: Some(format!("panicked: {n}")),
    }
}

#[tokio::test]
async fn a_late_subscriber_gets_the_recent_events_then_live_ones() {
    let bus = EventBus::new();
    for n in 0..3 {
        bus.publish(event(n));
    }

    let (recent, mut live) = bus.subscribe();
    bus.clone().publish(event(3));

    assert_eq!(recent, (0..3).map(event).collect::<Vec<_>>());
    assert_eq!(live.recv().await.unwrap(), event(3));
    assert!(live.try_recv().is_err(), "nothing twice");
}

#[tokio::test]
async fn the_recent_buffer_is_bounded_and_keeps_the_newest() {
    let bus = EventBus::new();
    let published = RECENT_EVENTS_MAX + 44;
    for n in 0..published {
        bus.publish(event(n));
    }

    let (recent, _) = bus.subscribe();

    assert_eq!(recent.len(), RECENT_EVENTS_MAX);
    assert_eq!(recent.first(), Some(&event(44)));
    assert_eq!(recent.last(), Some(&event(published - 1)));
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_is_told_and_skips_to_the_newest() {
    let bus = EventBus::new();
    let (_, mut live) = bus.subscribe();
    let published = EVENT_BUS_CAPACITY + 5;
    for n in 0..published {
        bus.publish(event(n));
    }

    assert_eq!(live.recv().await, Err(RecvError::Lagged(5)));
    assert_eq!(live.recv().await.unwrap(), event(5));
}

#[tokio::test]
async fn subscribing_while_events_are_published_misses_none_and_repeats_none() {
    let bus = EventBus::new();
    let publisher = bus.clone();
    let total = 200;
    let thread = std::thread::spawn(move || {
        for n in 0..total {
            publisher.publish(event(n));
        }
    });
    // Subscribe somewhere in the middle of the stream.
    while bus.recent().len() < 20 {
        std::thread::yield_now();
    }
    let (recent, mut live) = bus.subscribe();
    thread.join().unwrap();

    let mut seen: Vec<usize> = recent.iter().map(|e| e.at as usize).collect();
    while let Ok(e) = live.try_recv() {
        seen.push(e.at as usize);
    }
    assert_eq!(seen, (0..total).collect::<Vec<_>>());
}

#[actix::test]
async fn a_supervisors_events_are_replayed_to_a_late_subscriber() {
    let (probe, arbiter, events) = (Probe::default(), Arbiter::new(), EventBus::new());
    let spec = SupervisorSpec::new("root", Strategy::OneForOne).with_child(probe.worker(
        "a",
        RestartType::Permanent,
        arbiter.handle(),
    ));
    let (_root, _) = start_root(spec, &events);
    ping(&probe, "a").await;
    probe.addr("a").do_send(Crash);
    eventually("the restart", || probe.starts("a") == 2).await;

    let (recent, _) = events.subscribe();

    let kinds: Vec<(&str, EventKind)> = recent.iter().map(|e| (e.path.as_str(), e.kind)).collect();
    assert_eq!(
        kinds,
        [
            ("root", EventKind::Started),
            ("root/a", EventKind::Started),
            ("root/a", EventKind::Crashed),
            ("root/a", EventKind::Restarted),
        ]
    );
    let json = serde_json::to_value(&recent[2]).unwrap();
    assert_eq!(json["kind"], "crashed");
    assert!(
        json["reason"]
            .as_str()
            .unwrap()
            .starts_with("panicked: injected fault in a")
    );
    arbiter.stop();
}
