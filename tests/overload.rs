//! Load shedding (docs/API.md "Errors", docs/PERFORMANCE.md "Overload"): past
//! `http.requests_inflight_max` a merchant request is answered `503 overloaded` with
//! `Retry-After` at once, while the admitted ones finish normally; past
//! `http.connections_max` a new connection gets the same answer instead of a silent close.

use std::time::Duration;

use harness::*;
use serde_json::json;

/// How long the sandbox takes per card call: long enough that the admitted charges are still
/// in progress while the test knocks.
const SANDBOX_LATENCY_MS: u64 = 2_000;
const INFLIGHT_MAX: usize = 3;
const IN_PROGRESS_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn requests_past_the_inflight_bound_are_shed_at_once_and_the_admitted_ones_finish() {
    let kassa = Kassa::start(
        KassaOptions::new()
            .env("KASSA_SANDBOX_LATENCY_MS", SANDBOX_LATENCY_MS)
            .env("KASSA_HTTP_REQUESTS_INFLIGHT_MAX", INFLIGHT_MAX),
    )
    .await;
    let merchant = kassa.new_merchant("Busy Ltd").await;

    // Fill every slot with a synchronous charge that waits for the slow sandbox.
    let admitted: Vec<_> = (0..INFLIGHT_MAX)
        .map(|i| {
            let merchant = merchant.clone();
            tokio::spawn(async move {
                let body = usd_charge(CARD_SUCCEEDS);
                post_payment(&merchant, &body, Some(&format!("admitted-{i}"))).await
            })
        })
        .collect();
    poll_until("every slot taken", IN_PROGRESS_TIMEOUT, || async {
        match kassa.metric("kassa_http_requests_inflight").await {
            n if n == INFLIGHT_MAX as u64 => Ok(()),
            n => Err(format!("{n} in flight")),
        }
    })
    .await;

    // One more is refused at once, with Retry-After, and creates nothing.
    let mut shed = usd_charge(CARD_SUCCEEDS);
    shed["merchant_order_id"] = json!(unique("shed"));
    let refused = post_payment(&merchant, &shed, Some("shed-key")).await;
    assert_error(&refused, 503, "overloaded");
    assert_eq!(refused.header("retry-after"), Some("1"), "{refused:?}");
    assert!(
        admitted.iter().all(|charge| !charge.is_finished()),
        "the refusal waited for an admitted charge to finish"
    );

    // The admitted ones finish as if nothing happened.
    for charge in admitted {
        let response = charge.await.expect("an admitted charge");
        let payment = expect_status(&response, 201, "an admitted charge");
        assert_eq!(payment["status"], "succeeded", "{payment}");
    }
    assert_eq!(kassa.metric("kassa_http_requests_inflight").await, 0);

    // The shed request left nothing behind: the same key and order id now go through.
    let retried = post_payment(&merchant, &shed, Some("shed-key")).await;
    let payment = expect_status(&retried, 201, "the shed charge, retried");
    assert_eq!(payment["status"], "succeeded", "{payment}");
    assert_eq!(
        kassa
            .metric(r#"kassa_http_requests_total{route="POST /v1/payments",status="503"}"#)
            .await,
        1
    );
}

#[tokio::test]
async fn a_connection_past_the_limit_is_answered_503_not_dropped() {
    let kassa = Kassa::start(KassaOptions::new().env("KASSA_HTTP_CONNECTIONS_MAX", 1)).await;
    // One idle keep-alive connection holds the only slot.
    let holder = tokio::net::TcpStream::connect(kassa.base_url().trim_start_matches("http://"))
        .await
        .expect("the first connection");
    // Accepted connections are counted once accepted: wait until the holder's is.
    poll_until("the holder accepted", IN_PROGRESS_TIMEOUT, || async {
        let answer = send_raw_http(kassa.base_url(), "GET", "/healthz", &[], Vec::new()).await?;
        match answer.status {
            503 => Ok(answer),
            status => Err(format!("{status}: the slot is still free")),
        }
    })
    .await;
    let answer = send_raw_http(kassa.base_url(), "GET", "/healthz", &[], Vec::new())
        .await
        .expect("an answer past the limit");
    assert_error(&answer, 503, "overloaded");
    assert_eq!(answer.header("retry-after"), Some("1"), "{answer:?}");
    drop(holder);
    poll_until("the slot freed", IN_PROGRESS_TIMEOUT, || async {
        let answer = send_raw_http(kassa.base_url(), "GET", "/healthz", &[], Vec::new()).await?;
        match answer.status {
            200 => Ok(()),
            status => Err(format!("{status}")),
        }
    })
    .await;
}
