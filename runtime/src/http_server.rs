//! The hyper accept loop: bounded connections, optional TLS, header timeout, graceful drain on
//! stop.
//!
//! It runs on the multi-threaded I/O runtime and is owned by the `http` worker of the
//! supervision tree, which restarts it (on the same listener) if it ever ends unexpectedly.
//!
//! Plain HTTP (the default) is HTTP/1.1. With `http.tls.cert_path` and `http.tls.key_path` the
//! port speaks TLS only (rustls, `ring`): ALPN picks HTTP/2 (`h2`) or HTTP/1.1 (`http/1.1`, also
//! for a client that offers no ALPN). The handshake runs in the connection's own task, bounded
//! by [`TLS_HANDSHAKE_TIMEOUT_MS`], while the connection holds its `http.connections_max` permit,
//! so a client that never finishes it only ever holds its own slot, and only for that long.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use kassa_channels::adapter::tls;
use kassa_config::HttpTlsSettings;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot};
use tokio_rustls::TlsAcceptor;

use crate::app::App;
use crate::http::PeerAddr;
use crate::router;

/// Largest request head hyper buffers, in bytes (HTTP/1.1).
const HEAD_BUFFER_BYTES_MAX: usize = 64 * 1024;
/// Largest request header list an HTTP/2 client may send, in bytes (the same bound).
const H2_HEADER_LIST_BYTES_MAX: u32 = 64 * 1024;
/// Requests one HTTP/2 connection may have open at once (each still takes its own
/// `http.requests_inflight_max` slot).
const H2_STREAMS_PER_CONNECTION_MAX: u32 = 256;
/// An idle HTTP/2 connection is pinged this often; one whose ping is not answered within
/// [`H2_KEEP_ALIVE_TIMEOUT_MS`] is closed (a vanished client frees its slot).
const H2_KEEP_ALIVE_INTERVAL_MS: u64 = 30_000;
const H2_KEEP_ALIVE_TIMEOUT_MS: u64 = 10_000;
/// The longest a TLS handshake may take, from accept to the client's `Finished`.
pub const TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// ALPN protocol ids, in the server's order of preference.
const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP1: &[u8] = b"http/1.1";
/// Connections past `http.connections_max` being answered 503 at once; past this many more,
/// further ones are closed unanswered.
const REFUSALS_INFLIGHT_MAX: usize = 1_024;
/// How long a refused connection's request head (and, over TLS, its handshake) is waited for
/// before the 503 goes out anyway.
const REFUSAL_READ_TIMEOUT_MS: u64 = 1_000;
/// The body answered on a connection past `http.connections_max` (docs/API.md's error object).
const REFUSAL_BODY: &str = r#"{"error":{"type":"api_error","code":"overloaded","message":"too many open connections; retry shortly","param":null}}"#;
/// Pause after a failed accept (e.g. out of file descriptors) before accepting again.
const ACCEPT_RETRY_MS: u64 = 10;

/// The front-end's TLS: one acceptor for served connections (ALPN `h2`, `http/1.1`) and one for
/// connections refused past `http.connections_max`, which offers `http/1.1` only because the
/// refusal is a fixed HTTP/1.1 answer.
#[derive(Clone)]
pub struct Tls {
    serve: TlsAcceptor,
    refuse: TlsAcceptor,
}

/// Reads `http.tls`'s certificate chain and key; `None` when TLS is off. The errors name the
/// setting and the file, never the key's contents.
pub fn load_tls(settings: &HttpTlsSettings) -> anyhow::Result<Option<Tls>> {
    if !settings.enabled() {
        return Ok(None);
    }
    let chain = tls::read_certificates(Path::new(&settings.cert_path), "the certificate chain")
        .context("http.tls.cert_path (KASSA_HTTP_TLS_CERT_PATH)")?;
    let key = tls::read_private_key(Path::new(&settings.key_path))
        .context("http.tls.key_path (KASSA_HTTP_TLS_KEY_PATH)")?;
    let config = |alpn: &[&[u8]]| -> anyhow::Result<TlsAcceptor> {
        let mut config = rustls::ServerConfig::builder_with_provider(tls::crypto_provider())
            .with_safe_default_protocol_versions()
            .context("the TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key.clone_key())
            .context("http.tls: the key does not fit the certificate, or is not usable")?;
        config.alpn_protocols = alpn.iter().map(|id| id.to_vec()).collect();
        Ok(TlsAcceptor::from(Arc::new(config)))
    };
    Ok(Some(Tls {
        serve: config(&[ALPN_H2, ALPN_HTTP1])?,
        refuse: config(&[ALPN_HTTP1])?,
    }))
}

/// `https` when the front-end serves TLS, else `http` (for the start-up line and logs).
pub fn scheme(settings: &HttpTlsSettings) -> &'static str {
    if settings.enabled() { "https" } else { "http" }
}

/// The connection builders: HTTP/1.1 (plain, or TLS with ALPN `http/1.1` or none) and HTTP/2
/// (TLS with ALPN `h2`).
struct Builders {
    http1: auto::Builder<TokioExecutor>,
    http2: auto::Builder<TokioExecutor>,
}

impl Builders {
    fn new(header_read_timeout: Duration) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .max_buf_size(HEAD_BUFFER_BYTES_MAX);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(H2_STREAMS_PER_CONNECTION_MAX)
            .max_header_list_size(H2_HEADER_LIST_BYTES_MAX)
            .keep_alive_interval(Duration::from_millis(H2_KEEP_ALIVE_INTERVAL_MS))
            .keep_alive_timeout(Duration::from_millis(H2_KEEP_ALIVE_TIMEOUT_MS));
        Self {
            http1: builder.clone().http1_only(),
            http2: builder.http2_only(),
        }
    }
}

/// Serves until `stop` fires (or its sender is dropped), then drains in-flight requests for at
/// most `http.shutdown_grace_ms`.
pub async fn serve(listener: Arc<TcpListener>, app: Arc<App>, mut stop: oneshot::Receiver<()>) {
    let http = app.settings.http.clone();
    let tls = match load_tls(&http.tls) {
        Ok(tls) => tls,
        Err(e) => {
            // `kassa serve` checked the files at start; they changed since.
            tracing::error!(error = %format!("{e:#}"), "http: cannot load the TLS certificate");
            return;
        }
    };
    // Streams (the event stream) follow this loop: they end when it stops.
    app.closing.send_replace(false);
    let header_read_timeout = Duration::from_millis(http.header_read_timeout_ms);
    let builders = Arc::new(Builders::new(header_read_timeout));
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
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        match tls {
                            None => refuse(stream).await,
                            Some(tls) => refuse_tls(&tls.refuse, stream).await,
                        }
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
        let builders = builders.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => {
                    let io = TokioIo::new(stream);
                    serve_connection(&builders.http1, io, app, peer, watcher).await;
                }
                Some(tls) => {
                    let handshake = tokio::time::timeout(
                        Duration::from_millis(TLS_HANDSHAKE_TIMEOUT_MS),
                        tls.serve.accept(stream),
                    );
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            let h2 = stream.get_ref().1.alpn_protocol() == Some(ALPN_H2);
                            let builder = if h2 { &builders.http2 } else { &builders.http1 };
                            let io =
                                TokioIo::new(FirstByteDeadline::new(stream, header_read_timeout));
                            serve_connection(builder, io, app, peer, watcher).await;
                        }
                        // A client that does not trust the certificate, or plain HTTP on
                        // the TLS port: nothing to answer (the client hears TLS's alert).
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(
                            %peer,
                            timeout_ms = TLS_HANDSHAKE_TIMEOUT_MS,
                            "TLS handshake timed out"
                        ),
                    }
                }
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

/// Serves one connection (HTTP/1.1 or HTTP/2, as `builder` says) until it ends or the graceful
/// shutdown closes it. Every request carries the client's address ([`PeerAddr`]).
async fn serve_connection<I>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    app: Arc<App>,
    peer: SocketAddr,
    watcher: Watcher,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(PeerAddr(peer));
        let app = app.clone();
        async move { Ok::<_, Infallible>(router::handle(app, req).await) }
    });
    if let Err(e) = watcher.watch(builder.serve_connection(io, service)).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Answers a connection past `http.connections_max` with a 503 carrying [`REFUSAL_BODY`] and
/// `Retry-After`, and closes it. The request
/// head is read first (for at most [`REFUSAL_READ_TIMEOUT_MS`]): closing with unread bytes
/// would reset the connection and the client would never see the answer.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
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

/// [`refuse`] over TLS: the handshake (ALPN `http/1.1` only) within
/// [`REFUSAL_READ_TIMEOUT_MS`], then the same 503.
async fn refuse_tls(acceptor: &TlsAcceptor, stream: TcpStream) {
    let handshake = tokio::time::timeout(
        Duration::from_millis(REFUSAL_READ_TIMEOUT_MS),
        acceptor.accept(stream),
    );
    if let Ok(Ok(stream)) = handshake.await {
        refuse(stream).await;
    }
}

/// A stream whose reads fail with `TimedOut` when the client sends nothing within `deadline`
/// of the TLS handshake's end. HTTP/1.1 has hyper's header timeout for this; HTTP/2 has none
/// for its preface, so without this a client could finish the handshake, stay silent and keep
/// its connection slot.
struct FirstByteDeadline<S> {
    inner: S,
    /// `None` once the first byte arrived.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> FirstByteDeadline<S> {
    fn new(inner: S, deadline: Duration) -> Self {
        Self {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(deadline))),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstByteDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.deadline = None;
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if expired {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no request after the TLS handshake",
                    )))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstByteDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
