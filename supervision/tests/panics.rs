//! The crash model everything rests on, checked on real arbiters: a panic inside an actix
//! handler drops that actor (so its `ExitGuard` reports `Panicked` with the message), and the
//! arbiter thread and the other actors on it keep running.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use actix::prelude::*;
use common::eventually;
use kassa_supervision::{ChildExited, ExitGuard, ExitReason, install_panic_hook};
use parking_lot::Mutex;

/// Collects the exits reported to it.
#[derive(Default)]
struct Collector {
    exits: Arc<Mutex<Vec<ChildExited>>>,
}

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<ChildExited> for Collector {
    type Result = ();

    fn handle(&mut self, exit: ChildExited, _: &mut Self::Context) {
        self.exits.lock().push(exit);
    }
}

struct Fragile {
    name: &'static str,
    _guard: ExitGuard,
    log: Arc<Mutex<Vec<String>>>,
    handled: Arc<AtomicUsize>,
    panic_in_started: bool,
}

impl Actor for Fragile {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Self::Context) {
        if self.panic_in_started {
            panic!("injected fault in started of {}", self.name);
        }
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        self.log.lock().push(format!("stopping:{}", self.name));
        Running::Stop
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.log.lock().push(format!("stopped:{}", self.name));
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Crash;

impl Handler<Crash> for Fragile {
    type Result = ();

    fn handle(&mut self, _: Crash, _: &mut Self::Context) {
        panic!("injected fault in {}", self.name);
    }
}

#[derive(Message)]
#[rtype(result = "String")]
struct Ping;

impl Handler<Ping> for Fragile {
    type Result = String;

    fn handle(&mut self, _: Ping, _: &mut Self::Context) -> String {
        self.handled.fetch_add(1, Ordering::SeqCst);
        self.name.to_owned()
    }
}

/// Blocks the arbiter's thread until released, so messages pile up behind it.
#[derive(Message)]
#[rtype(result = "()")]
struct Block(mpsc::Receiver<()>);

impl Handler<Block> for Fragile {
    type Result = ();

    fn handle(&mut self, Block(release): Block, _: &mut Self::Context) {
        let _ = release.recv();
    }
}

struct Fixture {
    collector: Addr<Collector>,
    exits: Arc<Mutex<Vec<ChildExited>>>,
    log: Arc<Mutex<Vec<String>>>,
    handled: Arc<AtomicUsize>,
}

impl Fixture {
    fn new() -> Self {
        install_panic_hook();
        let collector = Collector::default();
        let exits = collector.exits.clone();
        Self {
            collector: collector.start(),
            exits,
            log: Arc::default(),
            handled: Arc::default(),
        }
    }

    fn start(
        &self,
        arbiter: &ArbiterHandle,
        name: &'static str,
        generation: u64,
        panic_in_started: bool,
    ) -> Addr<Fragile> {
        let actor = Fragile {
            name,
            _guard: ExitGuard::new(self.collector.clone().recipient(), name, generation),
            log: self.log.clone(),
            handled: self.handled.clone(),
            panic_in_started,
        };
        Fragile::start_in_arbiter(arbiter, move |_| actor)
    }

    fn exit_of(&self, name: &str) -> Option<ChildExited> {
        self.exits
            .lock()
            .iter()
            .find(|e| e.child_id == name)
            .cloned()
    }

    async fn wait_exit(&self, name: &str) -> ChildExited {
        eventually(&format!("the exit of {name}"), || {
            self.exit_of(name).is_some()
        })
        .await;
        self.exit_of(name).expect("just seen")
    }
}

fn panic_message(exit: &ChildExited) -> &str {
    match &exit.reason {
        ExitReason::Panicked(message) => message,
        other => panic!("expected a panic, got {other:?}"),
    }
}

#[actix::test]
async fn panic_in_a_handler_drops_the_actor_and_its_guard_reports_it() {
    let fixture = Fixture::new();
    let arbiter = Arbiter::new();
    let fragile = fixture.start(&arbiter.handle(), "fragile", 7, false);
    let neighbour = fixture.start(&arbiter.handle(), "neighbour", 8, false);
    assert_eq!(neighbour.send(Ping).await.unwrap(), "neighbour");

    fragile.do_send(Crash);
    let exit = fixture.wait_exit("fragile").await;

    assert_eq!(exit.generation, 7);
    let message = panic_message(&exit);
    assert!(
        message.starts_with("injected fault in fragile at "),
        "{message}"
    );
    assert!(
        message.contains("panics.rs"),
        "location recorded: {message}"
    );
    // The panicked actor is gone: its mailbox is closed.
    assert!(matches!(
        fragile.send(Ping).await,
        Err(MailboxError::Closed)
    ));
    // The arbiter's thread carries on: its other actor answers and new ones start on it.
    assert_eq!(neighbour.send(Ping).await.unwrap(), "neighbour");
    let newcomer = fixture.start(&arbiter.handle(), "newcomer", 9, false);
    assert_eq!(newcomer.send(Ping).await.unwrap(), "newcomer");
    assert!(fixture.exit_of("neighbour").is_none());
    // actix's ContextFut::drop ran the stop hooks during the unwind.
    let log = fixture.log.lock().clone();
    assert!(log.contains(&"stopping:fragile".to_owned()), "{log:?}");
    assert!(log.contains(&"stopped:fragile".to_owned()), "{log:?}");
    arbiter.stop();
}

#[actix::test]
async fn messages_queued_behind_a_panic_are_dropped_not_handled() {
    let fixture = Fixture::new();
    let arbiter = Arbiter::new();
    let fragile = fixture.start(&arbiter.handle(), "fragile", 1, false);
    let (release, blocked) = mpsc::channel();
    fragile.do_send(Block(blocked));
    fragile.do_send(Crash);
    let pings: Vec<_> = (0..3).map(|_| fragile.send(Ping)).collect();
    release.send(()).unwrap();

    let exit = fixture.wait_exit("fragile").await;
    assert!(panic_message(&exit).starts_with("injected fault in fragile"));
    for ping in pings {
        assert!(matches!(ping.await, Err(MailboxError::Closed)));
    }
    assert_eq!(fixture.handled.load(Ordering::SeqCst), 0);
    arbiter.stop();
}

#[actix::test]
async fn panic_in_started_is_reported_the_same_way() {
    let fixture = Fixture::new();
    let arbiter = Arbiter::new();
    let _doomed = fixture.start(&arbiter.handle(), "doomed", 3, true);
    let exit = fixture.wait_exit("doomed").await;
    assert!(panic_message(&exit).starts_with("injected fault in started of doomed"));
    let survivor = fixture.start(&arbiter.handle(), "survivor", 4, false);
    assert_eq!(survivor.send(Ping).await.unwrap(), "survivor");
    arbiter.stop();
}

#[actix::test]
async fn a_stopped_actor_reports_normal_unless_told_otherwise() {
    let fixture = Fixture::new();
    let arbiter = Arbiter::new();
    let quiet = fixture.start(&arbiter.handle(), "quiet", 5, false);
    drop(quiet); // last address gone: actix stops the actor
    let exit = fixture.wait_exit("quiet").await;
    assert_eq!(exit.reason, ExitReason::Normal);
    arbiter.stop();
}
