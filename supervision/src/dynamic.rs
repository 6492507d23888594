//! Bookkeeping for a `simple_one_for_one` supervisor: many children of one kind, keyed (order
//! actors keyed by order id) and started on demand by the actor that owns them (an order
//! shard). Plain data, no actor, no clock: the owner passes `now_ms` (unix milliseconds) in,
//! does the starting and stopping itself, and asks this struct what an exit means.
//!
//! As in OTP, ONE intensity tracker covers the whole dynamic supervisor: more than
//! `max_restarts` restarts of any of its children within `period_ms` and it gives up.
//!
//! The owner's side, in short:
//!
//! ```text
//! start key:   reg = children.register(key, now)?         guard = ExitGuard::new(me, key, reg.generation)
//! ChildExited: match children.on_exit(&id, gen, &reason, now) {
//!                  Restart { delay_ms } => run_later(delay_ms) → start key again (register again)
//!                  Remove               => forget the address
//!                  GiveUp               => stop every child, then stop myself with Escalated
//!                  Ignore               => stale generation or unknown key
//!              }
//! passivate:   children.remove(key); send it Shutdown; publish Passivated (not a crash)
//! GetSnapshot: children.node_snapshot(path, name, &request, uptime_ms, now)
//! ```

use std::collections::BTreeMap;

use crate::error::{SupervisionError, check_name};
use crate::exit::ExitReason;
use crate::intensity::{RestartTracker, SplitMix64, Verdict};
use crate::snapshot::{FailureSnapshot, GetSnapshot, NodeSnapshot, SNAPSHOT_LIMIT_MAX, Status};
use crate::spec::{Backoff, ChildKind, Intensity, RestartType, Strategy};

/// Default most live children (count) one dynamic supervisor keeps.
pub const DYNAMIC_CHILDREN_MAX_DEFAULT: usize = 100_000;

/// How a dynamic supervisor treats its children.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DynamicSpec {
    /// Order actors are `Transient`: a normal exit (passivation, done) is not restarted.
    pub restart: RestartType,
    pub intensity: Intensity,
    pub backoff: Option<Backoff>,
    /// Most live children; [`DynamicChildren::register`] refuses more.
    pub children_max: usize,
}

impl DynamicSpec {
    /// Default intensity, no backoff, [`DYNAMIC_CHILDREN_MAX_DEFAULT`] children.
    pub fn new(restart: RestartType) -> Self {
        Self {
            restart,
            intensity: Intensity::default(),
            backoff: None,
            children_max: DYNAMIC_CHILDREN_MAX_DEFAULT,
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

    pub fn with_children_max(mut self, children_max: usize) -> Self {
        self.children_max = children_max;
        self
    }
}

/// What the owner should do about an exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DynamicDecision {
    /// Start the child again after `delay_ms` (0 without backoff), with [`DynamicChildren::register`].
    Restart { delay_ms: u64 },
    /// Do not restart; the child is forgotten.
    Remove,
    /// Intensity exceeded: stop every child, then exit with `ExitReason::Escalated`.
    GiveUp,
    /// Not the current incarnation of a known child: nothing to do.
    Ignore,
}

/// A registered (started) incarnation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registration {
    /// Put it in the child's `ExitGuard`.
    pub generation: u64,
    /// Whether this start is a restart after [`DynamicDecision::Restart`].
    pub restarted: bool,
}

struct DynamicChild {
    generation: u64,
    /// Between `Restart` and the next `register`.
    restarting: bool,
    /// This child's restarts (its counters and its backoff attempt).
    tracker: RestartTracker,
    last_failure: Option<FailureSnapshot>,
    started_at_ms: u64,
}

/// The children of one dynamic supervisor. See the module docs for the owner's side.
pub struct DynamicChildren {
    spec: DynamicSpec,
    tracker: RestartTracker,
    /// Sorted by key, so a snapshot lists the same children each time.
    children: BTreeMap<String, DynamicChild>,
    next_generation: u64,
    rng: SplitMix64,
    gave_up: bool,
    last_failure: Option<FailureSnapshot>,
}

impl DynamicChildren {
    /// `rng_seed` drives backoff jitter (inject it so tests replay).
    pub fn new(spec: DynamicSpec, rng_seed: u64) -> Self {
        Self {
            tracker: RestartTracker::new(spec.intensity),
            spec,
            children: BTreeMap::new(),
            next_generation: 1,
            rng: SplitMix64::new(rng_seed),
            gave_up: false,
            last_failure: None,
        }
    }

    /// Record that the child `key` is being started (first time, or after `Restart`). A key
    /// that is already running gets a new generation (its old incarnation's exit becomes
    /// stale) without counting a restart.
    pub fn register(&mut self, key: &str, now_ms: u64) -> Result<Registration, SupervisionError> {
        if self.gave_up {
            return Err(SupervisionError::GaveUp);
        }
        let generation = self.next_generation;
        if let Some(child) = self.children.get_mut(key) {
            self.next_generation += 1; // u64: cannot overflow at any realistic start rate
            let restarted = child.restarting;
            if restarted {
                child.tracker.record(now_ms);
            }
            child.generation = generation;
            child.restarting = false;
            child.started_at_ms = now_ms;
            return Ok(Registration {
                generation,
                restarted,
            });
        }
        check_name(key)?;
        if self.children.len() >= self.spec.children_max {
            return Err(SupervisionError::DynamicFull {
                max: self.spec.children_max,
            });
        }
        self.next_generation += 1;
        self.children.insert(
            key.to_owned(),
            DynamicChild {
                generation,
                restarting: false,
                tracker: RestartTracker::new(self.spec.intensity),
                last_failure: None,
                started_at_ms: now_ms,
            },
        );
        Ok(Registration {
            generation,
            restarted: false,
        })
    }

    /// The child `key`'s incarnation `generation` exited with `reason` at `now_ms`.
    pub fn on_exit(
        &mut self,
        key: &str,
        generation: u64,
        reason: &ExitReason,
        now_ms: u64,
    ) -> DynamicDecision {
        let Some(child) = self.children.get_mut(key) else {
            return DynamicDecision::Ignore;
        };
        if child.generation != generation || child.restarting {
            return DynamicDecision::Ignore;
        }
        if reason.is_abnormal() {
            let failure = FailureSnapshot {
                at: i64::try_from(now_ms).unwrap_or(i64::MAX),
                reason: reason.to_string(),
            };
            child.last_failure = Some(failure.clone());
            self.last_failure = Some(failure);
        }
        let restart = match self.spec.restart {
            RestartType::Permanent => true,
            RestartType::Transient => reason.is_abnormal(),
            RestartType::Temporary => false,
        };
        if !restart || self.gave_up {
            self.children.remove(key);
            return DynamicDecision::Remove;
        }
        let attempt = child.tracker.restarts_window(now_ms);
        if self.tracker.record(now_ms) == Verdict::GiveUp {
            self.gave_up = true;
            self.children.remove(key);
            return DynamicDecision::GiveUp;
        }
        child.restarting = true;
        let delay_ms = match self.spec.backoff {
            Some(backoff) => backoff.delay_ms(attempt, self.rng.next_u64()),
            None => 0,
        };
        DynamicDecision::Restart { delay_ms }
    }

    /// Forget a child that stops on purpose (passivation): not an exit to decide on, not a
    /// restart. Returns whether it was known. Its later `ChildExited` is then `Ignore`d.
    pub fn remove(&mut self, key: &str) -> bool {
        self.children.remove(key).is_some()
    }

    /// Live children (running or waiting for a restart).
    pub fn len(&self) -> usize {
        self.children.len()
    }

    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.children.contains_key(key)
    }

    /// The current generation of `key`, if known.
    pub fn generation(&self, key: &str) -> Option<u64> {
        self.children.get(key).map(|c| c.generation)
    }

    /// Whether the intensity was exceeded.
    pub fn gave_up(&self) -> bool {
        self.gave_up
    }

    /// Keys of all live children, sorted (for stopping them all).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.children.keys().map(String::as_str)
    }

    /// Up to `limit` (at most [`SNAPSHOT_LIMIT_MAX`]) children as worker nodes under
    /// `parent_path`, in key order, and whether there were more.
    pub fn snapshot_children(
        &self,
        parent_path: &str,
        limit: usize,
        now_ms: u64,
    ) -> (Vec<NodeSnapshot>, bool) {
        let limit = limit.min(SNAPSHOT_LIMIT_MAX);
        let nodes = self
            .children
            .iter()
            .take(limit)
            .map(|(key, child)| self.child_node(parent_path, key, child, now_ms))
            .collect();
        (nodes, self.children.len() > limit)
    }

    /// One child's node (for `GET /admin/actors/{path}`).
    pub fn child_snapshot(
        &self,
        parent_path: &str,
        key: &str,
        now_ms: u64,
    ) -> Option<NodeSnapshot> {
        let child = self.children.get(key)?;
        Some(self.child_node(parent_path, key, child, now_ms))
    }

    /// The owner's own node: a `simple_one_for_one` supervisor at `path`, listing its children
    /// only if `request` expands it (by `name` or `path`).
    pub fn node_snapshot(
        &self,
        path: &str,
        name: &str,
        request: &GetSnapshot,
        uptime_ms: u64,
        now_ms: u64,
    ) -> NodeSnapshot {
        let (children, _) = if request.expands(name, path) {
            self.snapshot_children(path, request.clamped_limit(), now_ms)
        } else {
            (Vec::new(), false)
        };
        NodeSnapshot {
            path: path.to_owned(),
            name: name.to_owned(),
            kind: ChildKind::Supervisor,
            strategy: Some(Strategy::SimpleOneForOne),
            restart: RestartType::Permanent,
            status: if self.gave_up {
                Status::Failed
            } else {
                Status::Running
            },
            restarts_window: self.tracker.restarts_window(now_ms),
            restarts_total: self.tracker.restarts_total(),
            intensity: Some(self.tracker.intensity()),
            last_failure: self.last_failure.clone(),
            mailbox_depth: None,
            uptime_ms,
            child_count: self.children.len(),
            children_truncated: children.len() < self.children.len(),
            children,
        }
    }

    fn child_node(
        &self,
        parent_path: &str,
        key: &str,
        child: &DynamicChild,
        now_ms: u64,
    ) -> NodeSnapshot {
        NodeSnapshot {
            path: format!("{parent_path}/{key}"),
            name: key.to_owned(),
            kind: ChildKind::Worker,
            strategy: None,
            restart: self.spec.restart,
            status: if child.restarting {
                Status::Restarting
            } else {
                Status::Running
            },
            restarts_window: child.tracker.restarts_window(now_ms),
            restarts_total: child.tracker.restarts_total(),
            intensity: None,
            last_failure: child.last_failure.clone(),
            mailbox_depth: None,
            uptime_ms: if child.restarting {
                0
            } else {
                now_ms.saturating_sub(child.started_at_ms)
            },
            child_count: 0,
            children: Vec::new(),
            children_truncated: false,
        }
    }
}
