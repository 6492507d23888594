//! Abusive clients (docs/API.md "Limits"): a request head trickled in (slowloris) is cut off
//! at `http.header_read_timeout_ms`, a body trickled in gets `408 body_timeout` at
//! `http.body_read_timeout_ms`, an oversized head is refused — and none of them keeps the
//! server from answering everyone else meanwhile.

use std::time::{Duration, Instant};

use harness::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEADER_READ_TIMEOUT_MS: u64 = 1_000;
const BODY_READ_TIMEOUT_MS: u64 = 1_000;
/// How long after its timeout the server may take to act on it.
const SLACK: Duration = Duration::from_secs(5);
/// The trickle: one byte per this long, well under each timeout.
const TRICKLE_INTERVAL: Duration = Duration::from_millis(100);
/// Slow clients held open at once while the others are served.
const SLOW_CLIENTS: usize = 50;

async fn start() -> Kassa {
    Kassa::start(
        KassaOptions::new()
            .env("KASSA_HTTP_HEADER_READ_TIMEOUT_MS", HEADER_READ_TIMEOUT_MS)
            .env("KASSA_HTTP_BODY_READ_TIMEOUT_MS", BODY_READ_TIMEOUT_MS),
    )
    .await
}

fn authority(kassa: &Kassa) -> String {
    kassa
        .base_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

/// Writes `prefix`, then one byte of `trickle` per [`TRICKLE_INTERVAL`] (cycling), reading
/// meanwhile; returns what the server sent before closing and when it closed. Panics if the
/// server neither answers nor closes within `give_up`.
async fn trickle(
    addr: &str,
    prefix: &[u8],
    trickle: &[u8],
    give_up: Duration,
) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let stream = TcpStream::connect(addr).await.expect("connecting");
    let (mut reader, mut writer) = stream.into_split();
    let prefix = prefix.to_vec();
    let trickle = trickle.to_vec();
    let writer = tokio::spawn(async move {
        if writer.write_all(&prefix).await.is_err() {
            return;
        }
        for byte in trickle.iter().cycle() {
            tokio::time::sleep(TRICKLE_INTERVAL).await;
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(give_up, async {
        let mut buffer = [0u8; 4_096];
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    writer.abort();
    assert!(
        read.is_ok(),
        "the server kept a trickling client for {give_up:?}; it sent {:?}",
        String::from_utf8_lossy(&answer)
    );
    (answer, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_head_is_cut_off_and_others_are_served_meanwhile() {
    let kassa = start().await;
    let merchant = kassa.new_merchant("Patient Ltd").await;
    let addr = authority(&kassa);
    let timeout = Duration::from_millis(HEADER_READ_TIMEOUT_MS);
    let slow: Vec<_> = (0..SLOW_CLIENTS)
        .map(|_| {
            let addr = addr.clone();
            tokio::spawn(async move {
                trickle(
                    &addr,
                    b"POST /v1/payments HTTP/1.1\r\nHost: kassa\r\nX-Slow: ",
                    b"abcdefgh",
                    timeout + SLACK,
                )
                .await
            })
        })
        .collect();
    // Meanwhile a real merchant is served.
    let payment = charge_succeeded(&merchant, &usd_charge(CARD_SUCCEEDS)).await;
    assert_eq!(payment["status"], "succeeded");
    for client in slow {
        let (answer, closed_after) = client.await.expect("a slow client");
        let answer = String::from_utf8_lossy(&answer);
        // hyper closes the connection (with a 408 or without an answer), never a 2xx.
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "a trickled head got: {answer}"
        );
        assert!(
            closed_after >= timeout - TRICKLE_INTERVAL,
            "closed after {closed_after:?}, before the {timeout:?} head timeout"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_gets_408_body_timeout() {
    let kassa = start().await;
    let merchant = kassa.new_merchant("Patient Ltd").await;
    let addr = authority(&kassa);
    let timeout = Duration::from_millis(BODY_READ_TIMEOUT_MS);
    let head = b"POST /v1/payments HTTP/1.1\r\nHost: kassa\r\nContent-Type: application/json\r\n\
                 Content-Length: 400\r\n\r\n{\"amount\":";
    let slow: Vec<_> = (0..SLOW_CLIENTS)
        .map(|_| {
            let addr = addr.clone();
            tokio::spawn(async move { trickle(&addr, head, b" ", timeout + SLACK).await })
        })
        .collect();
    let payment = charge_succeeded(&merchant, &usd_charge(CARD_SUCCEEDS)).await;
    assert_eq!(payment["status"], "succeeded");
    for client in slow {
        let (answer, answered_after) = client.await.expect("a slow client");
        let answer = String::from_utf8_lossy(&answer).into_owned();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        let error: serde_json::Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("408 body is the error object ({e}): {answer}"));
        assert_eq!(error["error"]["code"], "body_timeout", "{answer}");
        assert_eq!(error["error"]["type"], "invalid_request_error", "{answer}");
        assert!(
            answered_after >= timeout - TRICKLE_INTERVAL,
            "answered after {answered_after:?}, before the {timeout:?} body timeout"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_head_is_refused_without_reading_on() {
    let kassa = start().await;
    let addr = authority(&kassa);
    // Larger than the 64 KiB head buffer, sent at once.
    let mut request = b"GET /v1/payments HTTP/1.1\r\nHost: kassa\r\n".to_vec();
    for i in 0..2_000 {
        request.extend_from_slice(format!("X-Padding-{i}: {}\r\n", "p".repeat(40)).as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    let mut stream = TcpStream::connect(&addr).await.expect("connecting");
    let _ = stream.write_all(&request).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(SLACK, stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(read.is_ok(), "the server neither answered nor closed");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "an oversized head got: {answer}"
    );
    // The server is fine afterwards.
    let health = kassa_client::HttpClient::new(kassa.base_url())
        .send("GET", "/healthz", &[], Vec::new())
        .await
        .expect("healthz");
    assert_eq!(health.status, 200);
}
