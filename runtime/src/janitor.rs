//! The janitor's work: re-drive orders a channel still owes an answer, purge expired
//! idempotency keys. Run by the `janitor` worker of the supervision tree, on one node of a
//! cluster at a time (the `janitor` lease, `lease.rs`).

use std::sync::Arc;

use crate::app::App;
use crate::lease::ClusterLease;

/// The janitor's lease, renewed every `orders.janitor_interval_ms`.
pub fn lease(app: &App) -> Arc<ClusterLease> {
    Arc::new(ClusterLease::new(
        "janitor",
        app.settings.orders.janitor_interval_ms,
    ))
}

/// Activates every order whose journal says the channel still owes an answer; each one
/// re-drives its own work (same idempotency keys) as it loads.
pub async fn recover_owed_orders(app: Arc<App>, lease: Arc<ClusterLease>) {
    if !lease.hold(app.store.as_ref()).await {
        return;
    }
    let batch = app.settings.orders.recovery_batch_max;
    match app.store.payment_ids_awaiting_channel(batch).await {
        Ok(ids) => {
            if !ids.is_empty() {
                tracing::info!(
                    orders = ids.len(),
                    "re-driving orders a channel still owes an answer"
                );
            }
            for id in ids {
                if let Err(e) = app.directory.wake(&id).await {
                    tracing::warn!(order_id = %id, error = %e, "could not activate order for recovery");
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "recovery scan failed"),
    }
}

pub async fn purge_idempotency(app: Arc<App>, lease: Arc<ClusterLease>) {
    if !lease.hold(app.store.as_ref()).await {
        return;
    }
    let retention_ms =
        i64::try_from(app.settings.idempotency.retention_h).unwrap_or(i64::MAX / 4) * 3_600_000;
    match app
        .store
        .purge_idempotency(app.now_ms().saturating_sub(retention_ms))
        .await
    {
        Ok(0) => {}
        Ok(purged) => tracing::info!(purged, "expired idempotency keys purged"),
        Err(e) => tracing::warn!(error = %e, "idempotency purge failed"),
    }
}
