//! Scheduled work that runs on one node of a cluster at a time: the janitor (recovery scans,
//! idempotency purge) and the outbox relay each hold a lease in the store
//! ([`kassa_store::Store::try_lease`]) and renew it every round; a node that does not hold it
//! skips the round. A holder that dies stops renewing, and another node takes the lease once
//! it lapses (after `ttl_ms`).
//!
//! The lease saves work; correctness never depends on it. Two holders at once (a stalled
//! holder whose lease lapsed) re-drive an order twice with the same channel keys, or publish a
//! delivery twice, which consumers drop: both are already safe.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use kassa_store::Store;

/// A lease lasts this many rounds of its work: one missed renewal does not hand it over.
pub const LEASE_ROUNDS: u64 = 3;
/// The shortest lease, whatever the round.
pub const LEASE_TTL_MS_MIN: u64 = 1_000;

/// This process's name as a lease holder: host, pid and a random part (a restarted node on
/// the same host and pid is another holder).
pub fn node_id() -> &'static str {
    static NODE_ID: OnceLock<String> = OnceLock::new();
    NODE_ID.get_or_init(|| {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "host".to_owned());
        let random = crate::crypto::random_bytes::<4>()
            .map(hex::encode)
            .unwrap_or_default();
        format!("{host}:{}:{random}", std::process::id())
    })
}

/// One named lease, as this node sees it.
pub struct ClusterLease {
    name: &'static str,
    ttl_ms: u64,
    held: AtomicBool,
}

impl ClusterLease {
    /// A lease renewed every `round_ms`.
    pub fn new(name: &'static str, round_ms: u64) -> ClusterLease {
        ClusterLease {
            name,
            ttl_ms: round_ms.saturating_mul(LEASE_ROUNDS).max(LEASE_TTL_MS_MIN),
            held: AtomicBool::new(false),
        }
    }

    /// Takes or renews the lease: true while this node holds it. A store that cannot answer
    /// counts as not held (the round is skipped, and retried next round).
    pub async fn hold(&self, store: &dyn Store) -> bool {
        let held = match store.try_lease(self.name, node_id(), self.ttl_ms).await {
            Ok(fence) => fence,
            Err(error) => {
                tracing::warn!(lease = self.name, %error, "cannot renew the lease; skipping this round");
                None
            }
        };
        let was_held = self.held.swap(held.is_some(), Ordering::AcqRel);
        match (was_held, held) {
            (false, Some(fence)) => {
                tracing::info!(lease = self.name, node = node_id(), fence, "took the lease");
            }
            (true, None) => tracing::warn!(lease = self.name, "lost the lease to another node"),
            _ => {}
        }
        held.is_some()
    }
}
