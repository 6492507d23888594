//! The hyper accept loop: bounded connections, header timeout, graceful drain on stop.
//!
//! It runs on the multi-threaded I/O runtime and is owned by the `http` worker of the
//! supervision tree, which restarts it (on the same listener) if it ever ends unexpectedly.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};

use crate::app::App;
use crate::router;

/// Largest request head hyper buffers, in bytes.
const HEAD_BUFFER_BYTES_MAX: usize = 64 * 1024;
/// Pause after a failed accept (e.g. out of file descriptors) before accepting again.
const ACCEPT_RETRY_MS: u64 = 10;

/// Serves until `stop` fires (or its sender is dropped), then drains in-flight requests for at
/// most `http.shutdown_grace_ms`.
pub async fn serve(listener: Arc<TcpListener>, app: Arc<App>, mut stop: oneshot::Receiver<()>) {
    let http = app.settings.http.clone();
    // Streams (the event stream) follow this loop: they end when it stops.
    app.closing.send_replace(false);
    let connections = Arc::new(Semaphore::new(http.connections_max));
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(ACCEPT_RETRY_MS)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = http.connections_max, "connection limit reached; refusing");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(router::handle(app, req).await) }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_millis(http.header_read_timeout_ms))
            .max_buf_size(HEAD_BUFFER_BYTES_MAX)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    tracing::info!("http: no new connections; finishing in-flight requests");
    app.closing.send_replace(true);
    let grace = Duration::from_millis(http.shutdown_grace_ms);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within the grace period");
    }
}
