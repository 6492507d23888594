//! A supervisor's [`NodeSnapshot`]: its own bookkeeping for itself and its workers; nested and
//! dynamic supervisors are asked for theirs, each within a time budget.

use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::prelude::*;
use tokio::time::Instant;

use super::child::Child;
use super::{Phase, Supervisor};
use crate::exit::ExitReason;
use crate::snapshot::{GetSnapshot, NodeSnapshot, SNAPSHOT_TIMEOUT_MS_MIN, Status};
use crate::spec::{ChildKind, RestartType};

impl Supervisor {
    /// Answer [`GetSnapshot`]. Children that answer snapshots get half of `request.timeout_ms`
    /// as their own budget and are waited for at most that long, all at once; one that does not
    /// answer in time keeps the node this supervisor's bookkeeping gives it.
    pub(super) fn snapshot(&self, request: GetSnapshot) -> ResponseFuture<NodeSnapshot> {
        let now_ms = self.now_ms();
        let mut node = self.own_node(now_ms);
        let child_budget_ms = request.timeout_ms / 2;
        if child_budget_ms < SNAPSHOT_TIMEOUT_MS_MIN {
            return Box::pin(async move { node });
        }
        let deadline = Instant::now() + Duration::from_millis(child_budget_ms);
        // `send` queues each request now, so the children work on them concurrently.
        let asks: Vec<_> = self
            .children
            .iter()
            .enumerate()
            .filter_map(|(index, child)| {
                let recipient = child.child_ref()?.snapshot.as_ref()?;
                let ask = GetSnapshot {
                    expand: request.expand.clone(),
                    limit: request.limit,
                    timeout_ms: child_budget_ms,
                };
                Some((
                    index,
                    child.spec.restart,
                    child.status(),
                    recipient.send(ask),
                ))
            })
            .collect();
        Box::pin(async move {
            for (index, restart, status, ask) in asks {
                if let Ok(Ok(mut answer)) = tokio::time::timeout_at(deadline, ask).await {
                    answer.restart = restart;
                    if status != Status::Running {
                        answer.status = status;
                    }
                    node.children[index] = answer;
                }
            }
            node
        })
    }

    fn own_node(&self, now_ms: u64) -> NodeSnapshot {
        let status = match self.phase {
            Phase::Running => Status::Running,
            Phase::GivingUp => Status::Failed,
            Phase::ShuttingDown => Status::Stopping,
            Phase::Exited => match self.exit_reason {
                Some(ExitReason::Escalated(_)) => Status::Failed,
                _ => Status::Stopped,
            },
        };
        NodeSnapshot {
            path: self.path.clone(),
            name: self.name.clone(),
            kind: ChildKind::Supervisor,
            strategy: Some(self.strategy),
            // The parent, which knows, overwrites it; the root is permanent.
            restart: RestartType::Permanent,
            status,
            restarts_window: self.tracker.restarts_window(now_ms),
            restarts_total: self.tracker.restarts_total(),
            intensity: Some(self.tracker.intensity()),
            last_failure: self.last_failure.clone(),
            mailbox_depth: None,
            uptime_ms: millis(self.epoch.elapsed()),
            child_count: self.children.len(),
            children: self
                .children
                .iter()
                .map(|c| child_node(c, now_ms))
                .collect(),
            children_truncated: false,
        }
    }
}

/// What the supervisor itself knows of a child.
fn child_node(child: &Child, now_ms: u64) -> NodeSnapshot {
    let mailbox_depth = child
        .child_ref()
        .and_then(|c| c.mailbox_depth.as_ref())
        .map(|depth| depth.load(Ordering::Relaxed) as u64);
    NodeSnapshot {
        path: child.path.clone(),
        name: child.name().to_owned(),
        kind: child.spec.kind,
        strategy: None,
        restart: child.spec.restart,
        status: child.status(),
        restarts_window: child.tracker.restarts_window(now_ms),
        restarts_total: child.tracker.restarts_total(),
        intensity: None,
        last_failure: child.last_failure.clone(),
        mailbox_depth,
        uptime_ms: child.started_at.map(|at| millis(at.elapsed())).unwrap_or(0),
        child_count: 0,
        children: Vec::new(),
        children_truncated: false,
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
