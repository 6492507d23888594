//! The front door's request limits (docs/API.md "Rate limits"): per merchant once its signature
//! verified, per client address before anything is read. Past one, `429 rate_limited` with
//! `Retry-After` and the error object; other merchants and other addresses are unaffected; the
//! operator's routes are never limited; once `Retry-After` has passed, requests are admitted
//! again.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use harness::*;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A limit small enough to hit with a handful of requests.
const RATE_PER_S: u32 = 1;
const BURST: u32 = 3;
/// How long past `Retry-After` admission may take (a loaded machine's scheduling).
const ADMISSION_SLACK: Duration = Duration::from_secs(5);
/// The whole exchange of one request from another source address.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Another loopback address than the one the tests' clients use: another client.
const OTHER_CLIENT_IP: &str = "127.0.0.2";

async fn list(merchant: &MerchantClient) -> Response {
    merchant
        .get("/v1/payments")
        .await
        .expect("GET /v1/payments")
}

/// Asserts a `429 rate_limited` with the error object and a whole-seconds `Retry-After`;
/// returns the wait it asks for.
fn assert_rate_limited(response: &Response) -> Duration {
    let error = assert_error(response, 429, "rate_limited");
    assert_eq!(error["type"], "rate_limit_error");
    let seconds: u64 = response
        .header("retry-after")
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("429 without a whole-seconds Retry-After: {response:?}"));
    assert!(seconds >= 1, "Retry-After {seconds}");
    Duration::from_secs(seconds)
}

/// Polls `send` until it is admitted; fails if that takes longer than `retry_after` (plus
/// slack), or if anything but a 2xx or a 429 comes back meanwhile.
async fn admitted_after<F, Fut>(retry_after: Duration, send: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let refused_at = Instant::now();
    poll_until("admitted again", retry_after + ADMISSION_SLACK, || async {
        let response = send().await;
        if response.is_success() {
            return Ok(());
        }
        assert_rate_limited(&response);
        Err(format!("still 429 after {:?}", refused_at.elapsed()))
    })
    .await;
}

#[tokio::test]
async fn a_merchant_past_its_limit_gets_429_and_others_are_unaffected() {
    let kassa = Kassa::start(
        KassaOptions::new()
            .env("KASSA_HTTP_MERCHANT_REQUESTS_PER_S", RATE_PER_S)
            .env("KASSA_HTTP_MERCHANT_BURST", BURST),
    )
    .await;
    let busy_credentials = kassa.new_merchant_credentials("Busy Ltd").await;
    let busy = kassa.merchant(&busy_credentials);
    let calm = kassa.new_merchant("Calm Ltd").await;

    // Requests that do not verify are not the merchant's: they spend none of its budget.
    let forged = MerchantClient::new(kassa.base_url(), &busy_credentials.id, "sk_forged");
    for _ in 0..BURST * 3 {
        assert_error(&list(&forged).await, 401, "invalid_signature");
    }

    for n in 0..BURST {
        assert_eq!(
            list(&busy).await.status,
            200,
            "request {n} is within the burst"
        );
    }
    let retry_after = assert_rate_limited(&list(&busy).await);
    // A payment past the limit is refused before anything exists, and the refusal is not
    // stored under its key: the same request is made once admitted.
    let key = unique("key");
    let charge = usd_charge(CARD_SUCCEEDS);
    assert_rate_limited(&post_payment(&busy, &charge, Some(&key)).await);
    for n in 0..BURST {
        assert_eq!(
            list(&calm).await.status,
            200,
            "another merchant, request {n}"
        );
    }
    // The operator's routes are never limited.
    assert_eq!(
        kassa
            .admin()
            .send("GET", "/admin/supervision", None)
            .await
            .expect("admin")
            .status,
        200
    );
    assert_refusals(&kassa, 2, 0).await;

    admitted_after(retry_after, || list(&busy)).await;
    // Poll until the bucket holds a cell for the payment too (polls spend cells as well).
    let created = poll_until(
        "the keyed payment to be admitted",
        retry_after + ADMISSION_SLACK,
        || async {
            let response = post_payment(&busy, &charge, Some(&key)).await;
            if response.status == 429 {
                return Err("still limited".to_owned());
            }
            Ok(response)
        },
    )
    .await;
    let payment = expect_status(&created, 201, "the payment once admitted");
    assert_eq!(payment["status"], "succeeded", "{payment}");
    assert_eq!(
        created.header("idempotent-replayed"),
        None,
        "the 429 was not stored"
    );
    assert!(list_all_payments(&calm).await.is_empty());
}

/// One signed request to `base_url` over a connection from `source` (another client address).
async fn send_from(
    source: IpAddr,
    base_url: &str,
    merchant: &MerchantClient,
    path: &str,
) -> Response {
    let server: SocketAddr = base_url
        .strip_prefix("http://")
        .and_then(|authority| authority.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("{base_url} is not http://ip:port"));
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {server}\r\nConnection: close\r\n");
    for (name, value) in merchant.signed_headers(unix_now(), "GET", path, b"") {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let exchange = async {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(source, 0))
            .unwrap_or_else(|e| panic!("binding {source}: {e}"));
        let mut stream = socket.connect(server).await.expect("connect");
        stream.write_all(head.as_bytes()).await.expect("write");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("read");
        answer
    };
    let answer = tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
        .await
        .expect("the exchange timed out");
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head}"));
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(
                HeaderName::from_bytes(name.trim().as_bytes()).expect("header name"),
                HeaderValue::from_str(value.trim()).expect("header value"),
            );
        }
    }
    Response {
        status,
        headers,
        body: Bytes::copy_from_slice(&answer[split + 4..]),
    }
}

#[tokio::test]
async fn an_address_past_its_limit_gets_429_before_anything_is_read_and_others_are_unaffected() {
    let kassa = Kassa::start(
        KassaOptions::new()
            .env("KASSA_HTTP_IP_REQUESTS_PER_S", RATE_PER_S)
            .env("KASSA_HTTP_IP_BURST", BURST),
    )
    .await;
    // The admin API is not limited: merchants are made whatever the address has spent.
    let first = kassa.new_merchant("First Ltd").await;
    let second = kassa.new_merchant("Second Ltd").await;
    let other_ip: IpAddr = OTHER_CLIENT_IP.parse().expect("an address");

    for n in 0..BURST {
        assert_eq!(
            list(&first).await.status,
            200,
            "request {n} is within the burst"
        );
    }
    // Past the address's limit every request from it is refused, whoever signs it, and before
    // it is authenticated (a request with no credentials gets the 429, not a 401).
    let retry_after = assert_rate_limited(&list(&first).await);
    assert_rate_limited(&list(&second).await);
    let unsigned = HttpClient::new(kassa.base_url())
        .send("GET", "/v1/payments", &[], Vec::new())
        .await
        .expect("unsigned");
    assert_rate_limited(&unsigned);
    let charge = post_payment(&first, &usd_charge(CARD_SUCCEEDS), Some(&unique("key"))).await;
    assert_rate_limited(&charge);

    // Another address has its own budget.
    for n in 0..BURST {
        let response = send_from(other_ip, kassa.base_url(), &first, "/v1/payments").await;
        assert_eq!(
            response.status,
            200,
            "other address, request {n}: {}",
            response.text()
        );
    }
    assert_rate_limited(&send_from(other_ip, kassa.base_url(), &second, "/v1/payments").await);

    // Probes, metrics and the operator's routes are not limited.
    let http = HttpClient::new(kassa.base_url());
    for path in ["/healthz", "/readyz"] {
        let response = http.send("GET", path, &[], Vec::new()).await.expect(path);
        assert_eq!(response.status, 200, "{path}");
    }
    assert_eq!(
        kassa
            .admin()
            .send("GET", "/admin/channels", None)
            .await
            .expect("admin")
            .status,
        200
    );
    assert_refusals(&kassa, 0, 5).await;

    admitted_after(retry_after, || list(&second)).await;
    let payments = poll_until(
        "a list once admitted",
        retry_after + ADMISSION_SLACK,
        || async {
            let response = list(&first).await;
            match response.status {
                429 => Err("still limited".to_owned()),
                _ => Ok(expect_status(&response, 200, "list")),
            }
        },
    )
    .await;
    assert_eq!(
        payments["data"],
        json!([]),
        "the refused charge made nothing"
    );
}

/// `kassa_http_rate_limited_total` by scope is `merchant` and `ip`.
async fn assert_refusals(kassa: &Kassa, merchant: u64, ip: u64) {
    for (scope, expected) in [("merchant", merchant), ("ip", ip)] {
        let series = format!("kassa_http_rate_limited_total{{scope=\"{scope}\"}}");
        assert_eq!(kassa.metric(&series).await, expected, "{scope}-scope 429s");
    }
}
