//! What a supervisor is told: its strategy, its children's restart types and kinds, how many
//! restarts it tolerates (intensity) and how long it waits before one (backoff).
//!
//! The names and their JSON spelling follow OTP's `supervisor` module and docs/ADMIN.md.

use serde::{Deserialize, Serialize};

/// Which children a supervisor restarts when one of them has to be restarted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Only the child that exited.
    OneForOne,
    /// Every child: the others are stopped (reverse start order), then all start again in order.
    OneForAll,
    /// The child that exited and every child started after it.
    RestForOne,
    /// Many children of one kind, started on demand and keyed (order actors); see
    /// [`crate::DynamicChildren`]. A [`crate::Supervisor`] refuses it: the owning actor does the
    /// starting itself.
    SimpleOneForOne,
}

/// When a child that exited is started again (OTP's `restart` of a child spec).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartType {
    /// Always restarted, whatever the reason.
    Permanent,
    /// Restarted only after an abnormal exit ([`crate::ExitReason::is_abnormal`]).
    Transient,
    /// Never restarted; removed from the supervisor when it exits, and not restarted either when
    /// a sibling's exit makes a `one_for_all` / `rest_for_one` supervisor restart the others.
    Temporary,
}

/// What a child is, for the tree and for shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildKind {
    Worker,
    Supervisor,
}

/// Maximum restart intensity: more than `max_restarts` restarts within `period_ms` and the
/// supervisor gives up (stops its children and exits with [`crate::ExitReason::Escalated`]).
///
/// Default: 3 restarts in 5 000 ms. OTP's own default is 1 in 5 s; Kassa's workers rebuild their
/// state from the journal on start, so a couple of quick restarts are cheap and a little more
/// tolerance keeps one bad message from escalating to the root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intensity {
    pub max_restarts: u32,
    pub period_ms: u64,
}

impl Intensity {
    pub const DEFAULT_MAX_RESTARTS: u32 = 3;
    pub const DEFAULT_PERIOD_MS: u64 = 5_000;

    pub const fn new(max_restarts: u32, period_ms: u64) -> Self {
        Self {
            max_restarts,
            period_ms,
        }
    }
}

impl Default for Intensity {
    fn default() -> Self {
        Self::new(Self::DEFAULT_MAX_RESTARTS, Self::DEFAULT_PERIOD_MS)
    }
}

/// Delay before a restart (not in OTP, which restarts at once): `min_ms` for the first restart
/// in the intensity window, doubling per further restart, capped at `max_ms`; with `jitter`, a
/// uniformly random delay between `min_ms` and that value. See [`Backoff::delay_ms`].
///
/// Default: 100 ms to 10 000 ms with jitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    pub min_ms: u64,
    pub max_ms: u64,
    pub jitter: bool,
}

impl Backoff {
    pub const DEFAULT_MIN_MS: u64 = 100;
    pub const DEFAULT_MAX_MS: u64 = 10_000;

    pub const fn new(min_ms: u64, max_ms: u64, jitter: bool) -> Self {
        Self {
            min_ms,
            max_ms,
            jitter,
        }
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Self::DEFAULT_MIN_MS, Self::DEFAULT_MAX_MS, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_names_are_the_admin_api_names() {
        let json = serde_json::to_string(&[
            Strategy::OneForOne,
            Strategy::OneForAll,
            Strategy::RestForOne,
            Strategy::SimpleOneForOne,
        ])
        .unwrap();
        assert_eq!(
            json,
            r#"["one_for_one","one_for_all","rest_for_one","simple_one_for_one"]"#
        );
        let json = serde_json::to_string(&[
            RestartType::Permanent,
            RestartType::Transient,
            RestartType::Temporary,
        ])
        .unwrap();
        assert_eq!(json, r#"["permanent","transient","temporary"]"#);
        let json = serde_json::to_string(&[ChildKind::Worker, ChildKind::Supervisor]).unwrap();
        assert_eq!(json, r#"["worker","supervisor"]"#);
        let json = serde_json::to_string(&Intensity::new(100, 10_000)).unwrap();
        assert_eq!(json, r#"{"max_restarts":100,"period_ms":10000}"#);
        let back: Backoff =
            serde_json::from_str(r#"{"min_ms":5,"max_ms":50,"jitter":false}"#).unwrap();
        assert_eq!(back, Backoff::new(5, 50, false));
    }
}
