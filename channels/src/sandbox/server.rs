//! The accept loop: one HTTP/1.1 connection task per client, bounded, with graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;

use super::{State, routes};

/// Open connections at once; the next client waits in the listen backlog.
const CONNECTIONS_MAX: usize = 1_024;
/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// How long shutdown waits for requests in flight before cutting connections.
const SHUTDOWN_GRACE_MS: u64 = 5_000;
/// The pause after a failed `accept` (e.g. out of file descriptors) so the loop cannot spin.
const ACCEPT_ERROR_PAUSE_MS: u64 = 50;

pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let graceful = GracefulShutdown::new();
    let connection_slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let mut connections = JoinSet::new();
    loop {
        // Reap finished connection tasks so the set stays as small as the open connections.
        while connections.try_join_next().is_some() {}
        let slot = tokio::select! {
            // A send or a dropped handle both mean stop.
            _ = &mut shutdown => break,
            slot = connection_slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "sandbox accept failed");
                    tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_PAUSE_MS)).await;
                    continue;
                }
            },
        };
        // Best effort: a socket that refuses NODELAY still works.
        let _ = stream.set_nodelay(true);
        let handler_state = state.clone();
        let service = service_fn(move |request| {
            let state = handler_state.clone();
            // An `Err` (a held request that expired) closes the connection without an answer.
            routes::handle(state, request)
        });
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_millis(HEADER_READ_TIMEOUT_MS));
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        connections.spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "sandbox connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    // Releases held requests and abandons pending callbacks, so shutdown does not wait on them.
    state.stopping.send_replace(true);
    let grace = Duration::from_millis(SHUTDOWN_GRACE_MS);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("sandbox shutdown grace period elapsed; closing connections");
    }
    connections.shutdown().await;
    tracing::info!("sandbox provider stopped");
}
