//! The live tree as data: the `NODE` of docs/ADMIN.md, and the message that asks a supervisor
//! (or an actor owning dynamic children) for it.

use actix::Message;
use serde::{Deserialize, Serialize};

use crate::spec::{ChildKind, Intensity, RestartType, Strategy};

/// Default number of dynamic children listed for an expanded node (docs/ADMIN.md).
pub const SNAPSHOT_LIMIT_DEFAULT: usize = 100;
/// Most dynamic children ever listed for one node (docs/ADMIN.md: `limit` is 1–1000).
pub const SNAPSHOT_LIMIT_MAX: usize = 1_000;
/// Total time (ms) a [`GetSnapshot`] sent with [`GetSnapshot::new`] may take. Each supervisor
/// gives its nested children half of what it got, so the whole tree answers within this.
pub const SNAPSHOT_TIMEOUT_MS_DEFAULT: u64 = 500;
/// Below this budget (ms) a supervisor no longer asks its children and reports what its own
/// bookkeeping knows.
pub const SNAPSHOT_TIMEOUT_MS_MIN: u64 = 5;

/// A node's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    /// Between a crash and the restart, backoff included.
    Restarting,
    Stopping,
    Stopped,
    /// Gave up after exceeding its restart intensity.
    Failed,
}

/// The last crash of a node or of one of its children.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureSnapshot {
    /// Unix milliseconds.
    pub at: i64,
    /// `ExitReason`'s display form, e.g. `panicked: injected fault`.
    pub reason: String,
}

/// One node of the supervision tree (docs/ADMIN.md `NODE`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSnapshot {
    pub path: String,
    pub name: String,
    pub kind: ChildKind,
    /// `None` for workers.
    pub strategy: Option<Strategy>,
    pub restart: RestartType,
    pub status: Status,
    /// Restarts inside the current intensity window: for a supervisor, the restarts it made;
    /// for a worker, its own restarts.
    pub restarts_window: u32,
    pub restarts_total: u64,
    /// `None` for workers.
    pub intensity: Option<Intensity>,
    pub last_failure: Option<FailureSnapshot>,
    /// Messages waiting, when the child publishes it (`ChildRef::mailbox_depth`).
    pub mailbox_depth: Option<u64>,
    /// Since the current incarnation started; 0 when not running.
    pub uptime_ms: u64,
    /// Children the node has (live dynamic children included), listed or not.
    pub child_count: usize,
    pub children: Vec<NodeSnapshot>,
    /// Whether `children` lists fewer than `child_count`.
    pub children_truncated: bool,
}

impl NodeSnapshot {
    /// The node at `path` in this subtree (`path` is the full path, e.g. `root/orders/shard-0`).
    pub fn find(&self, path: &str) -> Option<&NodeSnapshot> {
        if self.path == path {
            return Some(self);
        }
        let rest = path.strip_prefix(self.path.as_str())?;
        if !rest.starts_with('/') {
            return None;
        }
        self.children.iter().find_map(|child| child.find(path))
    }
}

/// Ask for a node's snapshot. Answered by [`crate::Supervisor`]; an actor owning dynamic
/// children answers it with [`crate::DynamicChildren::node_snapshot`].
#[derive(Clone, Debug, PartialEq, Eq, Message)]
#[rtype(result = "NodeSnapshot")]
pub struct GetSnapshot {
    /// List the dynamic children of the node with this name or path (e.g. `shard-3`); other
    /// dynamic nodes only report their `child_count`.
    pub expand: Option<String>,
    /// At most this many dynamic children listed (clamped to 1..=[`SNAPSHOT_LIMIT_MAX`]).
    pub limit: usize,
    /// Time budget for the whole answer, nested supervisors included.
    pub timeout_ms: u64,
}

impl GetSnapshot {
    /// With the default time budget ([`SNAPSHOT_TIMEOUT_MS_DEFAULT`]).
    pub fn new(expand: Option<String>, limit: usize) -> Self {
        Self {
            expand,
            limit,
            timeout_ms: SNAPSHOT_TIMEOUT_MS_DEFAULT,
        }
    }

    /// `limit` clamped to 1..=[`SNAPSHOT_LIMIT_MAX`].
    pub fn clamped_limit(&self) -> usize {
        self.limit.clamp(1, SNAPSHOT_LIMIT_MAX)
    }

    /// Whether the node `name` at `path` is the one to expand.
    pub fn expands(&self, name: &str, path: &str) -> bool {
        self.expand
            .as_deref()
            .is_some_and(|wanted| wanted == name || wanted == path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(path: &str, children: Vec<NodeSnapshot>) -> NodeSnapshot {
        NodeSnapshot {
            path: path.into(),
            name: path.rsplit('/').next().unwrap().into(),
            kind: ChildKind::Supervisor,
            strategy: Some(Strategy::SimpleOneForOne),
            restart: RestartType::Permanent,
            status: Status::Running,
            restarts_window: 0,
            restarts_total: 2,
            intensity: Some(Intensity::new(100, 10_000)),
            last_failure: Some(FailureSnapshot {
                at: 1_795_000_000_000,
                reason: "panicked: injected fault".into(),
            }),
            mailbox_depth: Some(0),
            uptime_ms: 52_000,
            child_count: children.len(),
            children,
            children_truncated: false,
        }
    }

    #[test]
    fn json_has_exactly_the_admin_node_fields() {
        let value = serde_json::to_value(node("root/orders/shard-0", vec![])).unwrap();
        let expected = serde_json::json!({
            "path": "root/orders/shard-0",
            "name": "shard-0",
            "kind": "supervisor",
            "strategy": "simple_one_for_one",
            "restart": "permanent",
            "status": "running",
            "restarts_window": 0,
            "restarts_total": 2,
            "intensity": {"max_restarts": 100, "period_ms": 10000},
            "last_failure": {"at": 1795000000000i64, "reason": "panicked: injected fault"},
            "mailbox_depth": 0,
            "uptime_ms": 52000,
            "child_count": 0,
            "children": [],
            "children_truncated": false
        });
        assert_eq!(value, expected);
    }

    #[test]
    fn find_walks_down_by_path() {
        let tree = node(
            "root",
            vec![node(
                "root/orders",
                vec![node("root/orders/shard-0", vec![])],
            )],
        );
        assert_eq!(
            tree.find("root/orders/shard-0").map(|n| n.name.as_str()),
            Some("shard-0")
        );
        assert!(tree.find("root/order").is_none());
        assert!(tree.find("rootx").is_none());
    }
}
