//! A merchant's webhook endpoint: verifies `Kassa-Signature`, dedupes by event id, prints each
//! event once and answers 2xx.
//!
//! ```text
//! cargo run -p kassa-examples --example webhook_receiver -- --port 4242 --secret whsec_...
//! ```
//!
//! Create the merchant with `"webhook_url": "http://127.0.0.1:4242/webhooks"` (any path is
//! accepted) and give this receiver the `webhook_secret` it was handed. The secret can also come
//! from `KASSA_WEBHOOK_SECRET`. A bad or stale signature (older than 300 s) is answered 400 and
//! Kassa retries; a repeated event id is answered 200 again but not printed twice (deliveries
//! are at least once).

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kassa_client::webhook::{SIGNATURE_HEADER, WEBHOOK_TOLERANCE_S_DEFAULT};
use kassa_client::{unix_now, verify_webhook};

const PORT_DEFAULT: u16 = 4242;
/// The largest event body accepted.
const BODY_BYTES_MAX: usize = 1024 * 1024;
/// Event ids remembered for dedupe; the oldest are forgotten past it.
const SEEN_IDS_MAX: usize = 100_000;

/// Event ids already handled, oldest first.
#[derive(Default)]
struct Seen {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl Seen {
    /// True the first time `id` is seen.
    fn first_time(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() >= SEEN_IDS_MAX
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
        self.ids.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        true
    }
}

struct Receiver {
    secret: String,
    seen: Mutex<Seen>,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("webhook_receiver: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args() -> Result<(u16, String), String> {
    let mut port = PORT_DEFAULT;
    let mut secret = std::env::var("KASSA_WEBHOOK_SECRET").ok();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--port" => {
                port = value()?
                    .parse()
                    .map_err(|_| "--port must be a port number")?
            }
            "--secret" => secret = Some(value()?),
            "--help" | "-h" => {
                return Err("usage: webhook_receiver [--port N] --secret whsec_...".into());
            }
            other => return Err(format!("unknown flag {other} (try --help)")),
        }
    }
    let secret = secret.ok_or("give --secret (or KASSA_WEBHOOK_SECRET)")?;
    Ok((port, secret))
}

async fn run() -> Result<(), String> {
    let (port, secret) = parse_args()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("binding {addr}: {e}"))?;
    println!("listening for Kassa webhooks on http://{addr}/");
    let receiver = Arc::new(Receiver {
        secret,
        seen: Mutex::new(Seen::default()),
    });
    loop {
        let (stream, _) = listener
            .accept()
            .await
            .map_err(|e| format!("accepting: {e}"))?;
        let receiver = receiver.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let receiver = receiver.clone();
                async move { Ok::<_, Infallible>(receiver.handle(req).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("connection ended: {e}");
            }
        });
    }
}

fn answer(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}

impl Receiver {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let signature = req
            .headers()
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let Ok(body) = Limited::new(req.into_body(), BODY_BYTES_MAX)
            .collect()
            .await
        else {
            return answer(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n");
        };
        let body = body.to_bytes();
        let Some(signature) = signature else {
            return answer(StatusCode::BAD_REQUEST, "no Kassa-Signature\n");
        };
        // Verify against the raw bytes, before parsing anything.
        if let Err(e) = verify_webhook(
            &self.secret,
            &signature,
            &body,
            unix_now(),
            WEBHOOK_TOLERANCE_S_DEFAULT,
        ) {
            eprintln!("refused a callback: {e}");
            return answer(StatusCode::BAD_REQUEST, "bad signature\n");
        }
        let Ok(event) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return answer(StatusCode::BAD_REQUEST, "not JSON\n");
        };
        let id = event["id"].as_str().unwrap_or_default();
        let first = self
            .seen
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .first_time(id);
        if !first {
            println!("{id}: already handled (a redelivery)");
            return answer(StatusCode::OK, "{\"received\":true}");
        }
        let object = &event["data"]["object"];
        println!(
            "{id}: {} {} {} {} {}",
            event["type"].as_str().unwrap_or("?"),
            object["id"].as_str().unwrap_or("?"),
            object["status"].as_str().unwrap_or("?"),
            object["amount"].as_str().unwrap_or("?"),
            object["currency"].as_str().unwrap_or("?"),
        );
        answer(StatusCode::OK, "{\"received\":true}")
    }
}
