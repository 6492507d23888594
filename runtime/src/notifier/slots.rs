//! What a delivery loop has in flight: one task per attempt (or per message it moves), which
//! event and which endpoint each holds. Shared by the embedded dispatcher and the RabbitMQ
//! consumer; only the owning loop touches it, so no locks.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::task::{Id, JoinError, JoinSet};

/// What one task holds until it finishes.
struct Held {
    /// `None` for a task that holds no event (it only moves a message).
    event_id: Option<String>,
    /// `None` for a task that sends nothing (no endpoint, a store write, a deferral).
    endpoint: Option<String>,
}

#[derive(Default)]
pub(super) struct Slots {
    tasks: JoinSet<()>,
    held: HashMap<Id, Held>,
    events: HashSet<String>,
    by_endpoint: HashMap<String, usize>,
}

impl Slots {
    /// Tasks running (every kind).
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    pub fn holds_event(&self, event_id: &str) -> bool {
        self.events.contains(event_id)
    }

    /// Attempts in flight to `endpoint`.
    pub fn at_endpoint(&self, endpoint: &str) -> usize {
        self.by_endpoint.get(endpoint).copied().unwrap_or(0)
    }

    /// Runs `work` on `io`, holding `event_id` and (if any) a slot of `endpoint` until it ends.
    pub fn spawn(
        &mut self,
        io: &tokio::runtime::Handle,
        event_id: Option<&str>,
        endpoint: Option<String>,
        work: impl Future<Output = ()> + Send + 'static,
    ) {
        let handle = self.tasks.spawn_on(work, io);
        if let Some(endpoint) = &endpoint {
            *self.by_endpoint.entry(endpoint.clone()).or_default() += 1;
        }
        if let Some(event_id) = event_id {
            self.events.insert(event_id.to_owned());
        }
        self.held.insert(
            handle.id(),
            Held {
                event_id: event_id.map(str::to_owned),
                endpoint,
            },
        );
        assert_eq!(self.held.len(), self.tasks.len());
    }

    /// Waits for the next task to end and frees what it held; `None` when none runs.
    pub async fn join_next(&mut self) -> Option<()> {
        let done = self.tasks.join_next_with_id().await?;
        self.finished(done);
        Some(())
    }

    /// Frees whatever ended meanwhile, without waiting.
    pub fn reap(&mut self) {
        while let Some(done) = self.tasks.try_join_next_with_id() {
            self.finished(done);
        }
    }

    fn finished(&mut self, done: Result<(Id, ()), JoinError>) {
        let id = match done {
            Ok((id, ())) => id,
            Err(error) => {
                tracing::error!(%error, "notifier: a delivery task failed; the delivery stays due");
                error.id()
            }
        };
        let Some(held) = self.held.remove(&id) else {
            return;
        };
        if let Some(event_id) = &held.event_id {
            self.events.remove(event_id);
        }
        if let Some(endpoint) = held.endpoint
            && let Some(busy) = self.by_endpoint.get_mut(&endpoint)
        {
            assert!(*busy > 0, "an endpoint's in-flight count went below 0");
            *busy -= 1;
            if *busy == 0 {
                self.by_endpoint.remove(&endpoint);
            }
        }
    }

    /// Waits up to `bound` for the tasks in flight; the rest are abandoned (their deliveries
    /// stay due, or their messages go back to the queue, and are sent again after the restart).
    pub async fn drain(&mut self, bound: Duration) {
        let deadline = tokio::time::Instant::now() + bound;
        while !self.tasks.is_empty() {
            match tokio::time::timeout_at(deadline, self.tasks.join_next_with_id()).await {
                Ok(Some(done)) => self.finished(done),
                Ok(None) => break,
                Err(_elapsed) => {
                    tracing::warn!(
                        abandoned = self.tasks.len(),
                        "notifier: stopping with attempts in flight; they are sent again after the restart"
                    );
                    self.tasks.abort_all();
                    while let Some(done) = self.tasks.join_next_with_id().await {
                        self.finished(done);
                    }
                    break;
                }
            }
        }
    }
}
