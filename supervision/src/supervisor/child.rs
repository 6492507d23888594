//! What a supervisor keeps per child.

use actix::SpawnHandle;
use tokio::time::Instant;

use super::{ChildRef, ChildSpec};
use crate::intensity::RestartTracker;
use crate::snapshot::{FailureSnapshot, Status};
use crate::spec::Intensity;

/// Whether a child's current incarnation runs.
pub(super) enum Slot {
    /// Started as incarnation `generation`.
    Running { generation: u64, child: ChildRef },
    /// Sent [`super::Shutdown`]; `timer` fires after its `shutdown_timeout_ms`.
    Stopping {
        generation: u64,
        child: ChildRef,
        timer: SpawnHandle,
    },
    /// Not running: not started yet, stopped, exited, or waiting for a restart.
    Down,
}

pub(super) struct Child {
    pub(super) spec: ChildSpec,
    /// `parent_path/name`.
    pub(super) path: String,
    pub(super) slot: Slot,
    /// A restart of this child is decided and not done yet (status `restarting`).
    pub(super) restarting: bool,
    /// Incarnations started so far; the first start is `Started`, later ones `Restarted`.
    pub(super) starts: u64,
    /// This child's own restarts (for its node's counters and its backoff attempt).
    pub(super) tracker: RestartTracker,
    pub(super) last_failure: Option<FailureSnapshot>,
    pub(super) started_at: Option<Instant>,
}

impl Child {
    pub(super) fn new(parent_path: &str, spec: ChildSpec, intensity: Intensity) -> Self {
        Self {
            path: format!("{parent_path}/{}", spec.name),
            spec,
            slot: Slot::Down,
            restarting: false,
            starts: 0,
            tracker: RestartTracker::new(intensity),
            last_failure: None,
            started_at: None,
        }
    }

    pub(super) fn name(&self) -> &str {
        &self.spec.name
    }

    pub(super) fn status(&self) -> Status {
        match self.slot {
            Slot::Running { .. } => Status::Running,
            Slot::Stopping { .. } => Status::Stopping,
            Slot::Down if self.restarting => Status::Restarting,
            Slot::Down => Status::Stopped,
        }
    }

    /// The running (or stopping) incarnation.
    pub(super) fn child_ref(&self) -> Option<&ChildRef> {
        match &self.slot {
            Slot::Running { child, .. } | Slot::Stopping { child, .. } => Some(child),
            Slot::Down => None,
        }
    }

    pub(super) fn is_down(&self) -> bool {
        matches!(self.slot, Slot::Down)
    }
}
