//! The card channel's rate limit and circuit breaker, seen from a merchant and at the sandbox:
//! past the limit (or while the breaker is open) a new payment is refused up front with 429 /
//! 503 and `Retry-After`, creating nothing; the sandbox never sees more than the limit; a
//! failing channel opens the breaker, calls then fail fast (no thread or memory held per
//! call), other channels keep working, and it closes after recovery.

use std::time::{Duration, Instant};

use futures::StreamExt;
use harness::*;
use serde_json::{Value, json};

async fn channel_named(kassa: &Kassa, name: &str) -> Value {
    let response = kassa
        .admin()
        .send("GET", "/admin/channels", None)
        .await
        .expect("channels");
    let channels = expect_status(&response, 200, "/admin/channels");
    channels["data"]
        .as_array()
        .expect("channels")
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no {name} channel in {channels}"))
}

async fn card_channel(kassa: &Kassa) -> Value {
    channel_named(kassa, "card").await
}

fn assert_refused(response: &kassa_client::Response, status: u16, code: &str) {
    assert_error(response, status, code);
    let retry = response
        .header("retry-after")
        .unwrap_or_else(|| panic!("{status} without Retry-After"));
    assert!(
        retry.parse::<u64>().is_ok_and(|s| s >= 1),
        "Retry-After {retry}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_above_the_channel_limit_is_refused_up_front_and_never_exceeds_it() {
    const RATE: u64 = 50;
    const BURST: u64 = 10;
    let kassa = Kassa::start(
        KassaOptions::new()
            .env("KASSA_CHANNELS_CARD_RATE_PER_S", RATE)
            .env("KASSA_CHANNELS_CARD_BURST", BURST)
            .env("KASSA_CHANNELS_CARD_RATE_WAIT_MS_MAX", 100),
    )
    .await;
    let merchant = kassa.new_merchant("Burst Ltd").await;
    let started = Instant::now();
    let answers: Vec<kassa_client::Response> = futures::stream::iter(0..400)
        .map(|_| {
            let merchant = merchant.clone();
            async move { post_payment(&merchant, &usd_charge(CARD_SUCCEEDS), None).await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let created = answers.iter().filter(|r| r.status == 201).count();
    let refused: Vec<_> = answers.iter().filter(|r| r.status == 429).collect();
    assert_eq!(created + refused.len(), answers.len(), "only 201 or 429");
    assert!(
        !refused.is_empty(),
        "a burst 8x the limit must be refused in part"
    );
    for response in &refused {
        assert_refused(response, 429, "rate_limited");
    }
    // Refused requests created nothing.
    assert_eq!(list_all_payments(&merchant).await.len(), created);
    // At the sandbox: never more than the limit (plus its burst) in any second.
    let stats = sandbox_call(&kassa, "GET", "/sandbox/stats", None).await;
    for second in stats["requests_by_second"].as_array().unwrap() {
        let n = second[1].as_u64().unwrap();
        assert!(
            n <= RATE + BURST,
            "{n} calls in one second at the sandbox: {stats}"
        );
    }
    eprintln!(
        "400 requests in {elapsed:?}: {created} created, {} refused with 429",
        refused.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_channel_opens_the_breaker_calls_fail_fast_and_it_closes_after_recovery() {
    let kassa = Kassa::start(
        KassaOptions::new()
            .env("KASSA_CHANNELS_CARD_BREAKER_WINDOW_SIZE", 10)
            .env("KASSA_CHANNELS_CARD_BREAKER_MIN_CALLS", 5)
            .env("KASSA_CHANNELS_CARD_BREAKER_OPEN_MS", 1_000)
            .env("KASSA_CHANNELS_CARD_BREAKER_HALF_OPEN_PROBES", 2)
            .env("KASSA_CHANNELS_CARD_RETRY_ATTEMPTS_MAX", 1)
            .env("KASSA_ORDERS_REDRIVE_SCHEDULE_MS", "300,600"),
    )
    .await;
    let merchant = kassa.new_merchant("Outage Ltd").await;
    sandbox_call(
        &kassa,
        "PUT",
        "/sandbox/behaviour",
        Some(json!({"hard_down": true})),
    )
    .await;

    // Charges reach the failing channel until the breaker opens; then they are refused up front.
    let mut created_during_outage = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut body = usd_charge(CARD_SUCCEEDS);
        body["wait_ms"] = 100.into();
        let response = post_payment(&merchant, &body, None).await;
        if response.status == 503 {
            assert_refused(&response, 503, "channel_unavailable");
            break;
        }
        let payment = expect_status(&response, 202, "charge to a failing channel");
        created_during_outage.push(id_of(&payment));
        assert!(Instant::now() < deadline, "the breaker never opened");
    }
    assert!(
        !created_during_outage.is_empty(),
        "the first charges reached the channel"
    );
    let channel = card_channel(&kassa).await;
    assert_eq!(channel["breaker"]["state"], "open", "{channel}");
    // It opened only after its minimum of failed calls (charges and the resolves re-driving them).
    assert!(
        channel["failures_total"].as_u64().unwrap() >= 5,
        "{channel}"
    );
    // While open, calls fail fast and nothing reaches the channel.
    let before = sandbox_call(&kassa, "GET", "/sandbox/stats", None).await["requests_total"]
        .as_u64()
        .unwrap();
    let (threads_before, rss_before) = process_figures(&kassa);
    let fast = Instant::now();
    let mut refusals = 0;
    for _ in 0..200 {
        let response = post_payment(&merchant, &usd_charge(CARD_SUCCEEDS), None).await;
        if response.status != 503 {
            break; // the open period ended during the loop: fine, it is checked below
        }
        refusals += 1;
    }
    let (threads_after, rss_after) = process_figures(&kassa);
    eprintln!(
        "{refusals} refusals: threads {threads_before} -> {threads_after}, rss {rss_before} -> {rss_after} KiB"
    );
    // Failing fast holds nothing: no thread per refused call, no memory kept per call.
    assert!(
        threads_after <= threads_before + 2,
        "threads grew: {threads_before} -> {threads_after}"
    );
    assert!(
        rss_after <= rss_before + 16 * 1024,
        "memory grew: {rss_before} -> {rss_after} KiB"
    );

    // Other channels are unaffected: a QR payment goes through while the card breaker is open.
    let qr = json!({"amount": "10.00", "currency": "USD", "method": "qr_wallet",
        "merchant_order_id": unique("qr")});
    let response = post_payment(&merchant, &qr, None).await;
    let qr = expect_status(&response, 201, "QR payment during the card outage");
    assert_eq!(qr["status"], "requires_action", "{qr}");
    let qr_channel = channel_named(&kassa, "qr_wallet").await;
    assert_eq!(qr_channel["breaker"]["state"], "closed", "{qr_channel}");
    let after = sandbox_call(&kassa, "GET", "/sandbox/stats", None).await["requests_total"]
        .as_u64()
        .unwrap();
    eprintln!(
        "{refusals} refusals (and one QR payment) in {:?}; card sandbox calls while open: {}",
        fast.elapsed(),
        after - before
    );

    // The channel recovers: after the open period, probes succeed and the breaker closes.
    sandbox_call(
        &kassa,
        "PUT",
        "/sandbox/behaviour",
        Some(json!({"hard_down": false})),
    )
    .await;
    let closed = poll_until("the breaker to close", Duration::from_secs(30), || {
        let merchant = merchant.clone();
        let kassa = &kassa;
        async move {
            let response = post_payment(&merchant, &usd_charge(CARD_SUCCEEDS), None).await;
            let channel = card_channel(kassa).await;
            if response.status == 201 && channel["breaker"]["state"] == "closed" {
                Ok(channel)
            } else {
                Err(format!("{} / {}", response.status, channel["breaker"]))
            }
        }
    })
    .await;
    assert!(
        closed["breaker"]["opens_total"].as_u64().unwrap() >= 1,
        "{closed}"
    );
    // Orders created during the outage end as facts: never charged (the channel said so).
    for id in &created_during_outage {
        let settled = wait_until_settled(&merchant, id, Duration::from_secs(30)).await;
        assert_eq!(settled["status"], "failed", "{settled}");
        assert_eq!(settled["failure_code"], "processing_error", "{settled}");
    }
}

/// The Kassa process's thread count and resident memory (KiB), from /proc.
fn process_figures(kassa: &Kassa) -> (usize, u64) {
    let pid = kassa.pid().expect("kassa is running");
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|entries| entries.count())
        .unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0);
    (threads, rss)
}
