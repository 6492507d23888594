//! One keep-alive HTTP/1.1 connection per worker: hyper's `client::conn::http1`, no pool, no
//! executor machinery beyond the connection's own driver task. A failed exchange drops the
//! connection; the next request opens a new one.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How long opening a TCP connection and the HTTP handshake may take.
pub const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// How long one request may take, first byte sent to last body byte read. A synchronous charge
/// waits up to `payments.wait_ms_default` (5 s) inside Kassa, so this is well above it.
pub const REQUEST_TIMEOUT_MS: u64 = 15_000;
/// The largest response body read; larger is an I/O failure (Kassa's lists of 100 payments are
/// ~100 KiB).
pub const RESPONSE_BODY_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Where requests go.
#[derive(Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// `Host: 127.0.0.1:PORT`, pre-built.
    pub host: HeaderValue,
}

impl Target {
    pub fn new(addr: SocketAddr) -> Self {
        // An `ip:port` string is always a valid header value.
        let host = HeaderValue::from_str(&addr.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        Target { addr, host }
    }
}

/// A complete answer: status, whether it carried `Retry-After`, and the body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub retry_after: bool,
    pub body: Bytes,
}

/// Why an exchange produced no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// TCP connect or the HTTP handshake failed or timed out.
    Connect,
    /// The connection broke while sending or reading (reset, closed, body too large).
    Io,
    /// No complete answer within [`REQUEST_TIMEOUT_MS`].
    Timeout,
}

/// Opens a connection and spawns its driver; the driver ends when the connection closes.
pub async fn connect(target: &Target) -> Result<SendRequest<Full<Bytes>>, Failure> {
    let open = async {
        let stream = TcpStream::connect(target.addr)
            .await
            .map_err(|_| Failure::Connect)?;
        // Small requests on a keep-alive connection: never wait for Nagle.
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| Failure::Connect)?;
        tokio::spawn(async move {
            // The connection's end (EOF, reset) shows up as an error on the next request.
            let _ = connection.await;
        });
        Ok(sender)
    };
    tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), open)
        .await
        .unwrap_or(Err(Failure::Connect))
}

/// Sends `request` on `sender` and reads the whole answer, within [`REQUEST_TIMEOUT_MS`].
pub async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Result<Answer, Failure> {
    let work = async {
        sender.ready().await.map_err(|_| Failure::Io)?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|_| Failure::Io)?;
        let status = response.status().as_u16();
        let retry_after = response.headers().contains_key(http::header::RETRY_AFTER);
        let body = Limited::new(response.into_body(), RESPONSE_BODY_BYTES_MAX)
            .collect()
            .await
            .map_err(|_| Failure::Io)?
            .to_bytes();
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    };
    tokio::time::timeout(Duration::from_millis(REQUEST_TIMEOUT_MS), work)
        .await
        .unwrap_or(Err(Failure::Timeout))
}

/// A worker's connection: opened on first use, re-opened after any failure.
pub struct Conn {
    target: std::sync::Arc<Target>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    pub fn new(target: std::sync::Arc<Target>) -> Self {
        Conn {
            target,
            sender: None,
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// One request and its answer. On failure the connection is dropped (a half-read answer
    /// leaves it unusable); the next call reconnects.
    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<Answer, Failure> {
        let mut sender = match self.sender.take() {
            Some(sender) if !sender.is_closed() => sender,
            _ => connect(&self.target).await?,
        };
        let answer = exchange(&mut sender, request).await?;
        self.sender = Some(sender);
        Ok(answer)
    }
}
