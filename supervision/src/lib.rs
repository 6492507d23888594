//! OTP-style supervision for Kassa's actix actors: supervisor actors with restart strategies
//! (`one_for_one`, `one_for_all`, `rest_for_one`, and keyed dynamic children for
//! `simple_one_for_one`), restart types (`permanent`, `transient`, `temporary`), restart
//! intensity with escalation, optional backoff, a live event feed and a serialisable snapshot
//! of the tree for the operators (docs/ADMIN.md). The reference is OTP's `supervisor` module.
//!
//! # Layout
//!
//! - `spec.rs` — `Strategy`, `RestartType`, `ChildKind`, `Intensity`, `Backoff`.
//! - `exit.rs` — `ExitReason`, `ChildExited`, `ExitGuard` (a child's exit report, sent from its
//!   `Drop`) and `install_panic_hook`; the crash model on actix is written down there.
//! - `intensity.rs` — `RestartTracker` and `Backoff::delay_ms`: pure, time and randomness passed in.
//! - `events.rs` — `SupervisionEvent`, `EventBus` (broadcast + the 256 most recent events).
//! - `snapshot.rs` — `NodeSnapshot` (the admin `NODE`), `Status`, `GetSnapshot`.
//! - `supervisor.rs` — the `Supervisor` actor, `SupervisorSpec`, `ChildSpec`, `ChildRef`,
//!   `Shutdown`; `supervisor/{child,work,view}.rs` hold its per-child state, its restart
//!   decisions and stop/start queue, and its snapshots.
//! - `dynamic.rs` — `DynamicChildren`: the bookkeeping an order shard uses to be a
//!   `simple_one_for_one` supervisor of order actors.
//! - `error.rs` — `SupervisionError`.
//!
//! # How exits flow up
//!
//! ```text
//!  runtime ◀── on_give_up(reason) ── root: Supervisor      (its ExitGuard calls a callback)
//!                                     ▲       ▲       ▲
//!       ChildExited { child_id, generation, reason }, sent by each child's ExitGuard on Drop
//!                   ┌─────────────────┘       │       └─────────────────┐
//!          store-writer (worker)      orders: Supervisor           http (worker)
//!                                       ▲            ▲
//!                            ChildExited│            │ChildExited
//!                           shard-0: actor         shard-N …
//!                           + DynamicChildren
//!                                       ▲ ChildExited (child_id = order id)
//!                      order actors (transient), each holding an ExitGuard
//! ```
//!
//! A child's `ExitGuard` reports `Panicked`, the reason it was given, or `Normal` when the
//! actor is dropped. The supervisor restarts by restart type and strategy, counting each
//! restart against its intensity; past it, it stops its children in reverse order and exits
//! with `Escalated`, so its own guard reports to *its* parent, which applies its own strategy —
//! up to the root, whose "parent" is the runtime's callback. Every step is published on the
//! `EventBus` (`started`, `crashed`, `restarted`, `stopped`, `gave_up`, `escalated`).
//!
//! # Wiring (the runtime's side)
//!
//! `actix::prelude` also exports a `Supervisor` (its restart-in-place helper); import this
//! crate's by name (`use kassa_supervision::Supervisor;`) after a glob of the prelude.
//!
//! ```ignore
//! kassa_supervision::install_panic_hook();
//! let events = EventBus::new();
//! let spec = SupervisorSpec::new("root", Strategy::OneForOne)
//!     .with_child(ChildSpec::worker("store-writer", RestartType::Permanent, start_writer))
//!     .with_child(ChildSpec::supervisor(
//!         SupervisorSpec::new("orders", Strategy::OneForOne)
//!             .with_child(ChildSpec::dynamic("shard-0", start_shard(0))),
//!     ));
//! let root = Supervisor::start_root(spec, events.clone(), |reason| {
//!     tracing::error!(%reason, "supervision tree gave up");
//!     std::process::exit(1);
//! })?;
//! ```

mod dynamic;
mod error;
mod events;
mod exit;
mod intensity;
mod snapshot;
mod spec;
mod supervisor;

pub use dynamic::{
    DYNAMIC_CHILDREN_MAX_DEFAULT, DynamicChildren, DynamicDecision, DynamicSpec, Registration,
};
pub use error::SupervisionError;
pub use events::{
    EVENT_BUS_CAPACITY, EventBus, EventKind, RECENT_EVENTS_MAX, SupervisionEvent, unix_now_ms,
};
pub use exit::{ChildExited, ExitGuard, ExitReason, PANIC_MESSAGE_BYTES_MAX, install_panic_hook};
pub use intensity::{MAX_RESTARTS_LIMIT, RestartTracker, SplitMix64, Verdict};
pub use snapshot::{
    FailureSnapshot, GetSnapshot, NodeSnapshot, SNAPSHOT_LIMIT_DEFAULT, SNAPSHOT_LIMIT_MAX,
    SNAPSHOT_TIMEOUT_MS_DEFAULT, SNAPSHOT_TIMEOUT_MS_MIN, Status,
};
pub use spec::{Backoff, ChildKind, Intensity, RestartType, Strategy};
pub use supervisor::{
    CHILDREN_MAX, ChildRef, ChildSpec, ChildStart, EXIT_WATCHERS_MAX, SHUTDOWN_TIMEOUT_MS_DEFAULT,
    SUPERVISOR_SHUTDOWN_MARGIN_MS, Shutdown, StartFn, Supervisor, SupervisorSpec, WatchExit,
    shutdown_and_wait,
};
