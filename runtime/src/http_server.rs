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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot};

use crate::app::App;
use crate::http::PeerAddr;
use crate::router;

/// Largest request head hyper buffers, in bytes.
const HEAD_BUFFER_BYTES_MAX: usize = 64 * 1024;
/// Connections past `http.connections_max` being answered 503 at once; past this many more,
/// further ones are closed unanswered.
const REFUSALS_INFLIGHT_MAX: usize = 1_024;
/// How long a refused connection's request head is waited for before the 503 goes out anyway.
const REFUSAL_READ_TIMEOUT_MS: u64 = 1_000;
/// The body answered on a connection past `http.connections_max` (docs/API.md's error object).
const REFUSAL_BODY: &str = r#"{"error":{"type":"api_error","code":"overloaded","message":"too many open connections; retry shortly","param":null}}"#;
/// Pause after a failed accept (e.g. out of file descriptors) before accepting again.
const ACCEPT_RETRY_MS: u64 = 10;

/// Serves until `stop` fires (or its sender is dropped), then drains in-flight requests for at
/// most `http.shutdown_grace_ms`.
pub async fn serve(listener: Arc<TcpListener>, app: Arc<App>, mut stop: oneshot::Receiver<()>) {
    let http = app.settings.http.clone();
    // Streams (the event stream) follow this loop: they end when it stops.
    app.closing.send_replace(false);
    let connections = Arc::new(Semaphore::new(http.connections_max));
    let refusals = Arc::new(Semaphore::new(REFUSALS_INFLIGHT_MAX));
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
            match refusals.clone().try_acquire_owned() {
                Ok(refusal) => {
                    tokio::spawn(async move {
                        refuse(stream).await;
                        drop(refusal);
                    });
                }
                // Past even the refusals' bound: the connection is closed unanswered.
                Err(_) => drop(stream),
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(PeerAddr(peer));
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

/// Answers a connection past `http.connections_max` with a 503 carrying [`REFUSAL_BODY`] and
/// `Retry-After`, and closes it. The request
/// head is read first (for at most [`REFUSAL_READ_TIMEOUT_MS`]): closing with unread bytes
/// would reset the connection and the client would never see the answer.
async fn refuse(mut stream: TcpStream) {
    let mut head = [0u8; 4_096];
    let read = tokio::time::timeout(
        Duration::from_millis(REFUSAL_READ_TIMEOUT_MS),
        stream.read(&mut head),
    );
    let _ = read.await;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{REFUSAL_BODY}",
        REFUSAL_BODY.len()
    );
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
}
