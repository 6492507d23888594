//! [`WebhookReceiver`]: a merchant's webhook endpoint under the test's control, for the
//! notification tests. It records every request (time, headers, body) and answers as its
//! [`Script`] says: a status, or never (the connection hangs until Kassa gives up).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

/// How the receiver answers one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    Status(u16),
    /// Never answer (Kassa's `webhook_timeout_ms` ends the attempt).
    Hang,
}

/// Chooses the reply from the event id and how many times this id was received before (0 for
/// the first delivery).
pub type Script = Arc<dyn Fn(&str, usize) -> Reply + Send + Sync>;

/// One request as received.
#[derive(Clone, Debug)]
pub struct Received {
    pub at: Instant,
    pub event_id_header: Option<String>,
    pub signature: Option<String>,
    pub content_type: Option<String>,
    pub user_agent: Option<String>,
    pub body: Bytes,
    /// The event id from the body (`""` if the body is not an event).
    pub event_id: String,
    pub reply: Reply,
}

struct State {
    script: Mutex<Script>,
    log: Mutex<Vec<Received>>,
}

/// A receiver on `127.0.0.1:<free port>`; stops when dropped.
pub struct WebhookReceiver {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn always(reply: Reply) -> Script {
    Arc::new(move |_, _| reply)
}

/// `503` for the first `failures` deliveries of each event, then `200`.
pub fn fail_first(failures: usize) -> Script {
    Arc::new(move |_, seen| {
        if seen < failures {
            Reply::Status(503)
        } else {
            Reply::Status(200)
        }
    })
}

impl WebhookReceiver {
    pub async fn start(script: Script) -> WebhookReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the webhook receiver");
        let addr = listener.local_addr().expect("receiver address");
        let state = Arc::new(State {
            script: Mutex::new(script),
            log: Mutex::new(Vec::new()),
        });
        let serving = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = serving.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, req).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        WebhookReceiver { addr, state, task }
    }

    /// The endpoint to give a merchant as `webhook_url`.
    pub fn url(&self) -> String {
        format!("http://{}/webhooks", self.addr)
    }

    pub fn set_script(&self, script: Script) {
        *self.state.script.lock().unwrap_or_else(|p| p.into_inner()) = script;
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.state
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The requests for `event_id`, in arrival order.
    pub fn received_for(&self, event_id: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.event_id == event_id)
            .collect()
    }

    /// Waits until at least `min` requests came in, whatever their event; panics naming
    /// `what` if `within` passes first.
    pub async fn wait_received(&self, what: &str, min: usize, within: Duration) {
        wait_count(what, min, within, || self.received().len()).await;
    }

    /// Waits until at least `min` requests for `event_id` came in; panics naming `what` if
    /// `within` passes first.
    pub async fn wait_received_for(
        &self,
        what: &str,
        event_id: &str,
        min: usize,
        within: Duration,
    ) {
        wait_count(what, min, within, || self.received_for(event_id).len()).await;
    }
}

/// Polls `count` until it reaches `min`, for at most `within`.
async fn wait_count(what: &str, min: usize, within: Duration, count: impl Fn() -> usize) {
    crate::poll_until(what, within, || async {
        let n = count();
        if n >= min {
            Ok(())
        } else {
            Err(format!("{n} requests"))
        }
    })
    .await;
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let at = Instant::now();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let event_id_header = header("kassa-event-id");
    let signature = header("kassa-signature");
    let content_type = header("content-type");
    let user_agent = header("user-agent");
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let event_id = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let reply = {
        let mut log = state.log.lock().unwrap_or_else(|p| p.into_inner());
        let seen = log.iter().filter(|r| r.event_id == event_id).count();
        let script = state
            .script
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let reply = script(&event_id, seen);
        log.push(Received {
            at,
            event_id_header,
            signature,
            content_type,
            user_agent,
            body,
            event_id,
            reply,
        });
        reply
    };
    match reply {
        Reply::Status(status) => {
            let mut response = Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}")));
            *response.status_mut() =
                hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
            response
        }
        Reply::Hang => {
            // Never answers: Kassa's webhook timeout ends the attempt and drops the connection,
            // which drops this future with it.
            std::future::pending::<Response<Full<Bytes>>>().await
        }
    }
}
