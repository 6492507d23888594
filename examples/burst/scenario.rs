//! A worker: one connection, looping over scenarios; every request signed as a real merchant
//! with a fresh `Idempotency-Key` and `merchant_order_id`. Bodies are `format!`ed, answers
//! parsed only as far as needed (status; `id` and `status` of created objects).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::Full;
use kassa_client::{sign_v1, unix_now};
use serde::Deserialize;

use crate::cli::{Mix, Scenario};
use crate::conn::{Answer, Conn, Failure};
use crate::stats::{AckedPayment, AckedRefund, Acks, Expect, Live, Stats};

/// Payment ids a worker remembers for `read` (a ring; older ones are overwritten).
const KNOWN_IDS_MAX: usize = 256;
/// The test cards `card` cycles through, with the outcome each must end in.
const CARDS: [(&str, Expect); 3] = [
    ("4242424242424242", Expect::Succeeded),
    ("4000000000000002", Expect::Failed),
    ("4000000000009995", Expect::Failed),
];
/// The card the other scenarios pay with (succeeds).
const CARD_OK: &str = "4242424242424242";

static KASSA_MERCHANT: HeaderName = HeaderName::from_static("kassa-merchant");
static KASSA_TIMESTAMP: HeaderName = HeaderName::from_static("kassa-timestamp");
static KASSA_SIGNATURE: HeaderName = HeaderName::from_static("kassa-signature");
static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
static JSON: HeaderValue = HeaderValue::from_static("application/json");

/// A merchant the requests are signed as.
#[derive(Debug, Clone)]
pub struct Merchant {
    pub id: String,
    pub secret: String,
    id_header: HeaderValue,
}

impl Merchant {
    pub fn new(id: String, secret: String) -> Self {
        // Kassa's ids are ASCII; a broken one only makes that merchant's requests fail (401).
        let id_header = HeaderValue::from_str(&id)
            .unwrap_or_else(|_| HeaderValue::from_static("invalid-merchant-id"));
        Merchant {
            id,
            secret,
            id_header,
        }
    }
}

/// What every worker of a run shares (read-only).
#[derive(Debug)]
pub struct Shared {
    pub merchants: Vec<Merchant>,
    pub mix: Mix,
    /// Prefix of every `merchant_order_id` of this run.
    pub run_id: String,
    /// The target is baseline_server: answers carry no ids, nothing is acknowledged.
    pub baseline: bool,
    pub live: Arc<Live>,
}

#[derive(Deserialize)]
struct Created<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow, default)]
    status: Cow<'a, str>,
}

#[derive(Deserialize)]
struct ErrorBody<'a> {
    #[serde(borrow)]
    error: ErrorObject<'a>,
}

#[derive(Deserialize)]
struct ErrorObject<'a> {
    #[serde(borrow)]
    code: Cow<'a, str>,
}

/// One connection's loop state.
pub struct Worker {
    shared: Arc<Shared>,
    conn: Conn,
    index: u32,
    seq: u64,
    rng: u64,
    pub stats: Stats,
    pub acks: Acks,
    known: Vec<(u16, String)>,
}

impl Worker {
    pub fn new(shared: Arc<Shared>, conn: Conn, index: u32, seed: u64) -> Self {
        Worker {
            shared,
            conn,
            index,
            seq: 0,
            rng: seed | 1,
            stats: Stats::default(),
            acks: Acks::default(),
            known: Vec::new(),
        }
    }

    /// xorshift64*: enough randomness for picking scenarios, no dependency.
    pub fn roll(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn pick(&mut self) -> Scenario {
        let roll = self.roll();
        self.shared.mix.pick(roll)
    }

    /// Runs one scenario whose first request was due at `due`; `record`: it counts in the
    /// measured window (acknowledged objects are kept either way).
    pub async fn run(&mut self, scenario: Scenario, due: Instant, record: bool) {
        self.seq += 1;
        let merchant =
            u16::try_from((u64::from(self.index) + self.seq) % self.shared.merchants.len() as u64)
                .unwrap_or(0);
        let order = format!("{}-{}-{}", self.shared.run_id, self.index, self.seq);
        let done = match scenario {
            Scenario::Async => self.charge_async(merchant, &order, due, record).await,
            Scenario::Card => {
                let (card, expect) = CARDS[(self.seq % CARDS.len() as u64) as usize];
                let body = charge_body(&order, card, "");
                let created = self.create(merchant, body, &order, expect, due, record);
                created.await.is_some()
            }
            Scenario::Manual => self.manual(merchant, &order, due, record).await,
            Scenario::Refund => self.refund(merchant, &order, due, record).await,
            Scenario::Read => match self.known_payment() {
                Some((merchant, id)) => {
                    let path = format!("/v1/payments/{id}");
                    let request = self.signed(merchant, Method::GET, &path, Bytes::new(), None);
                    self.step(request, due, record).await.is_some_and(is_2xx)
                }
                None => self.charge_async(merchant, &order, due, record).await,
            },
            Scenario::Bank => {
                let body = format!(
                    r#"{{"amount":"10.00","currency":"EUR","merchant_order_id":"{order}","method":"bank_transfer","bank_account":{{"number":"DE89370400440532013000","holder_name":"Buyer GmbH"}},"async":true}}"#
                );
                let created = self.create(merchant, body, &order, Expect::Succeeded, due, record);
                created.await.is_some()
            }
        };
        if record {
            self.stats.started[scenario.index()] += 1;
            if done {
                self.stats.completed[scenario.index()] += 1;
            }
        }
    }

    async fn charge_async(&mut self, merchant: u16, order: &str, due: Instant, rec: bool) -> bool {
        let body = charge_body(order, CARD_OK, r#","async":true"#);
        let created = self.create(merchant, body, order, Expect::Succeeded, due, rec);
        created.await.is_some()
    }

    async fn manual(&mut self, merchant: u16, order: &str, due: Instant, rec: bool) -> bool {
        let body = charge_body(order, CARD_OK, r#","capture":"manual""#);
        let expect = Expect::AuthorizedOrSucceeded;
        let Some((id, status)) = self.create(merchant, body, order, expect, due, rec).await else {
            return false;
        };
        if status != "authorized" {
            return false;
        }
        let path = format!("/v1/payments/{id}/capture");
        let key = format!("{order}-cap");
        let body = Bytes::from_static(br#"{"amount":"6.00"}"#);
        let request = self.signed(merchant, Method::POST, &path, body, Some(&key));
        let answer = self.step(request, Instant::now(), rec).await;
        if answer.as_ref().is_some_and(|a| a.status == 200)
            && let Some(acked) = self.acks.payments.iter_mut().rev().find(|p| p.id == id)
        {
            acked.expect = Expect::Succeeded;
        }
        answer.is_some_and(is_2xx)
    }

    async fn refund(&mut self, merchant: u16, order: &str, due: Instant, rec: bool) -> bool {
        let body = charge_body(order, CARD_OK, "");
        let created = self.create(merchant, body, order, Expect::Succeeded, due, rec);
        let Some((payment_id, status)) = created.await else {
            return false;
        };
        if status != "succeeded" {
            return false;
        }
        let body = format!(r#"{{"payment_id":"{payment_id}","amount":"3.00"}}"#);
        let key = format!("{order}-ref");
        let request = self.signed(
            merchant,
            Method::POST,
            "/v1/refunds",
            body.into(),
            Some(&key),
        );
        let Some(answer) = self.step(request, Instant::now(), rec).await else {
            return false;
        };
        if !is_2xx(&answer) {
            return false;
        }
        if !self.shared.baseline {
            let Ok(created) = serde_json::from_slice::<Created>(&answer.body) else {
                return false;
            };
            self.acks.refunds.push(AckedRefund {
                merchant,
                id: created.id.into_owned(),
                payment_id,
            });
        }
        true
    }

    /// `POST /v1/payments`; on a 2xx, remembers the payment and returns its id and status.
    async fn create(
        &mut self,
        merchant: u16,
        body: String,
        key: &str,
        expect: Expect,
        due: Instant,
        record: bool,
    ) -> Option<(String, String)> {
        let request = self.signed(
            merchant,
            Method::POST,
            "/v1/payments",
            body.into(),
            Some(key),
        );
        let answer = self.step(request, due, record).await?;
        if !is_2xx(&answer) {
            return None;
        }
        // The baseline's `{"ok":true}` fails this parse, as cheaply as Kassa's answer passes it.
        let parsed = serde_json::from_slice::<Created>(&answer.body);
        if self.shared.baseline {
            return Some((String::new(), "succeeded".to_owned()));
        }
        let created = parsed.ok()?;
        let id = created.id.into_owned();
        self.acks.payments.push(AckedPayment {
            merchant,
            id: id.clone(),
            expect,
        });
        if self.known.len() < KNOWN_IDS_MAX {
            self.known.push((merchant, id.clone()));
        } else {
            let slot = (self.seq as usize) % KNOWN_IDS_MAX;
            self.known[slot] = (merchant, id.clone());
        }
        Some((id, created.status.into_owned()))
    }

    fn known_payment(&mut self) -> Option<(u16, String)> {
        if self.known.is_empty() {
            return None;
        }
        let slot = (self.roll() % self.known.len() as u64) as usize;
        self.known.get(slot).cloned()
    }

    fn signed(
        &self,
        merchant: u16,
        method: Method,
        path: &str,
        body: Bytes,
        key: Option<&str>,
    ) -> Option<Request<Full<Bytes>>> {
        let host = &self.conn.target().host;
        signed(&self.shared, host, merchant, method, path, body, key)
    }

    /// Sends one request and counts its answer (latency from `since`) or its failure.
    async fn step(
        &mut self,
        request: Option<Request<Full<Bytes>>>,
        since: Instant,
        record: bool,
    ) -> Option<Answer> {
        let result = match request {
            Some(request) => self.conn.send(request).await,
            None => Err(Failure::Io),
        };
        let latency_us = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
        match result {
            Ok(answer) => {
                let ok = is_2xx(&answer);
                self.shared.live.count(Some(answer.status));
                if record {
                    self.stats
                        .answer(answer.status, answer.retry_after, latency_us);
                    if !ok {
                        count_error_code(&mut self.stats, &answer.body);
                    }
                }
                Some(answer)
            }
            Err(failure) => {
                self.shared.live.count(None);
                if record {
                    self.stats.failure(failure);
                }
                None
            }
        }
    }
}

/// A signed request as merchant `merchant`; `None` only if Kassa handed out an id that cannot
/// be a path.
pub fn signed(
    shared: &Shared,
    host: &HeaderValue,
    merchant: u16,
    method: Method,
    path: &str,
    body: Bytes,
    key: Option<&str>,
) -> Option<Request<Full<Bytes>>> {
    let merchant = shared.merchants.get(usize::from(merchant))?;
    let timestamp = unix_now();
    let signature = sign_v1(&merchant.secret, timestamp, method.as_str(), path, &body);
    let has_body = !body.is_empty();
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = method;
    *request.uri_mut() = Uri::try_from(path).ok()?;
    let headers = request.headers_mut();
    headers.insert(HOST, host.clone());
    headers.insert(KASSA_MERCHANT.clone(), merchant.id_header.clone());
    headers.insert(KASSA_TIMESTAMP.clone(), HeaderValue::from(timestamp));
    headers.insert(
        KASSA_SIGNATURE.clone(),
        HeaderValue::try_from(signature).ok()?,
    );
    if has_body {
        headers.insert(CONTENT_TYPE, JSON.clone());
    }
    if let Some(key) = key {
        headers.insert(IDEMPOTENCY_KEY.clone(), HeaderValue::try_from(key).ok()?);
    }
    Some(request)
}

/// `id` and `status` of a created object.
pub fn parse_created(body: &[u8]) -> Option<(String, String)> {
    let created = serde_json::from_slice::<Created>(body).ok()?;
    Some((created.id.into_owned(), created.status.into_owned()))
}

/// Counts `error.code` of a non-2xx answer (`unparsable` if it has none).
pub fn count_error_code(stats: &mut Stats, body: &[u8]) {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(body) => stats.error_code(&body.error.code),
        Err(_) => stats.error_code("unparsable"),
    }
}

pub fn is_2xx(answer: impl std::borrow::Borrow<Answer>) -> bool {
    (200..300).contains(&answer.borrow().status)
}

/// A USD card charge of 10.00; `extra` is appended inside the object (`,"async":true`).
pub fn charge_body(order: &str, card: &str, extra: &str) -> String {
    format!(
        r#"{{"amount":"10.00","currency":"USD","merchant_order_id":"{order}","method":"card","card":{{"number":"{card}","exp_month":12,"exp_year":2035,"cvc":"123"}}{extra}}}"#
    )
}
