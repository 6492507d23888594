//! Supervision events (`started`, `crashed`, …) for the operators' live feed: one
//! [`EventBus`] per runtime, shared by every supervisor; each event is also logged.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// How far (in events) a live subscriber may fall behind before it gets `Lagged` and skips to
/// the newest; bounds the broadcast channel's memory.
pub const EVENT_BUS_CAPACITY: usize = 1_024;

/// How many recent events (count) a new subscriber is given first (docs/ADMIN.md: at most 256).
pub const RECENT_EVENTS_MAX: usize = 256;

/// What happened to the node at `path`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Started,
    Stopped,
    Crashed,
    Restarted,
    Escalated,
    GaveUp,
    Passivated,
}

/// One supervision event, as sent on `GET /admin/events`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisionEvent {
    /// Unix milliseconds.
    pub at: i64,
    pub path: String,
    pub kind: EventKind,
    pub reason: Option<String>,
}

impl SupervisionEvent {
    /// An event stamped with the wall clock now.
    pub fn now(path: impl Into<String>, kind: EventKind, reason: Option<String>) -> Self {
        Self {
            at: unix_now_ms(),
            path: path.into(),
            kind,
            reason,
        }
    }
}

/// Wall-clock unix milliseconds (0 if the clock is before 1970).
pub fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A cheap-to-clone handle: a broadcast channel of events plus the most recent ones, so a late
/// subscriber (the dashboard opening) first sees what just happened.
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<Inner>,
}

struct Inner {
    live: broadcast::Sender<SupervisionEvent>,
    /// At most [`RECENT_EVENTS_MAX`] events, oldest first. Publishing holds this lock while it
    /// sends, so a subscriber sees each event exactly once: in the replay or live.
    recent: Mutex<VecDeque<SupervisionEvent>>,
}

impl EventBus {
    pub fn new() -> Self {
        let (live, _) = broadcast::channel(EVENT_BUS_CAPACITY);
        Self {
            inner: Arc::new(Inner {
                live,
                recent: Mutex::new(VecDeque::with_capacity(RECENT_EVENTS_MAX)),
            }),
        }
    }

    /// Log the event, keep it among the recent ones and send it to every live subscriber.
    pub fn publish(&self, event: SupervisionEvent) {
        log(&event);
        let mut recent = self.inner.recent.lock();
        if recent.len() == RECENT_EVENTS_MAX {
            recent.pop_front();
        }
        recent.push_back(event.clone());
        // An error only means nobody is subscribed right now.
        let _ = self.inner.live.send(event);
    }

    /// Shorthand for `publish(SupervisionEvent::now(..))`.
    pub fn emit(&self, path: &str, kind: EventKind, reason: Option<String>) {
        self.publish(SupervisionEvent::now(path, kind, reason));
    }

    /// The recent events (oldest first) and a receiver for every event after them.
    pub fn subscribe(&self) -> (Vec<SupervisionEvent>, broadcast::Receiver<SupervisionEvent>) {
        let recent = self.inner.recent.lock();
        let receiver = self.inner.live.subscribe();
        (recent.iter().cloned().collect(), receiver)
    }

    /// The recent events, oldest first, without subscribing.
    pub fn recent(&self) -> Vec<SupervisionEvent> {
        self.inner.recent.lock().iter().cloned().collect()
    }
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("subscribers", &self.inner.live.receiver_count())
            .finish()
    }
}

fn log(event: &SupervisionEvent) {
    let reason = event.reason.as_deref().unwrap_or("");
    let path = event.path.as_str();
    match event.kind {
        EventKind::Started | EventKind::Restarted | EventKind::Stopped => {
            tracing::info!(path, kind = ?event.kind, reason, "supervision")
        }
        EventKind::Passivated => tracing::debug!(path, kind = ?event.kind, "supervision"),
        EventKind::Crashed => tracing::warn!(path, kind = ?event.kind, reason, "supervision"),
        EventKind::Escalated | EventKind::GaveUp => {
            tracing::error!(path, kind = ?event.kind, reason, "supervision")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_json_is_the_sse_payload() {
        let event = SupervisionEvent {
            at: 1_795_000_000_123,
            path: "root/orders/shard-0/pay_123".into(),
            kind: EventKind::GaveUp,
            reason: Some("panicked: injected fault".into()),
        };
        assert_eq!(
            serde_json::to_string(&event).unwrap(),
            r#"{"at":1795000000123,"path":"root/orders/shard-0/pay_123","kind":"gave_up","reason":"panicked: injected fault"}"#
        );
    }
}
