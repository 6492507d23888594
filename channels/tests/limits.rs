//! The adapter's rate limits against a scripted local provider that records when each request
//! arrived: a burst far above the limit never exceeds it at the provider, calls that cannot get
//! a permit within `rate_wait_ms_max` fail fast with `RateLimitedLocally` (never a timeout),
//! and one merchant's burst does not use up another merchant's limit.

use std::time::{Duration, Instant};

use kassa_channels::{AdapterConfig, CardChannel, ChannelAdapter, ChannelError, ChargeOutcome};
use scripted::{Hit, Mode, ScriptedServer, charge_request};

fn config(rate_per_s: u32, burst: u32, rate_wait_ms_max: u64) -> AdapterConfig {
    AdapterConfig {
        request_timeout_ms: 2_000,
        retry_attempts_max: 1,
        inflight_max: 4_096,
        rate_per_s,
        burst,
        rate_wait_ms_max,
        ..AdapterConfig::default()
    }
}

#[tokio::test]
async fn a_whole_command_is_bounded_by_its_deadline_not_attempts_times_timeout() {
    let server = ScriptedServer::start(Mode::Hang).await;
    let config = AdapterConfig {
        request_timeout_ms: 200,
        command_deadline_ms: 500,
        retry_attempts_max: 10,
        backoff_ms_min: 10,
        backoff_ms_max: 20,
        ..AdapterConfig::default()
    };
    let channel = CardChannel::new(adapter(&server, config));
    let started = Instant::now();
    let error = channel
        .charge(&charge_request("deadline"))
        .await
        .expect_err("the provider never answers");
    let elapsed = started.elapsed();
    assert!(matches!(error, ChannelError::Timeout), "{error:?}");
    assert!(error.outcome_unknown(), "an attempt was in flight");
    // Ten attempts of 200 ms would take over 2 s; the command stops at its 500 ms deadline.
    assert!(
        elapsed >= Duration::from_millis(480) && elapsed < Duration::from_millis(900),
        "{elapsed:?}"
    );
    assert!(
        server.hit_count() <= 3,
        "{} attempts within 500 ms",
        server.hit_count()
    );
}

fn adapter(server: &ScriptedServer, config: AdapterConfig) -> ChannelAdapter {
    ChannelAdapter::new(&server.base_url, "secret", config).expect("valid")
}

/// How each call of a burst ended, and how long it took.
#[derive(Default)]
struct Tally {
    succeeded: usize,
    refused: usize,
    slowest_refusal: Duration,
}

/// Sends `calls` charges at once through `channel`; every call must succeed or be refused
/// by the local limit with a usable `retry_after_ms`.
async fn burst(channel: &CardChannel, prefix: &str, calls: usize) -> Tally {
    let tasks: Vec<_> = (0..calls)
        .map(|call| {
            let channel = channel.clone();
            let request = charge_request(&format!("{prefix}-{call}"));
            tokio::spawn(async move {
                let started = Instant::now();
                let result = channel.charge(&request).await;
                (result, started.elapsed())
            })
        })
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        match task.await.expect("the task ran") {
            (Ok(ChargeOutcome::Succeeded { .. }), _) => tally.succeeded += 1,
            (Err(ChannelError::RateLimitedLocally { retry_after_ms }), elapsed) => {
                assert!(retry_after_ms >= 1);
                let error = ChannelError::RateLimitedLocally { retry_after_ms };
                assert!(error.is_retryable() && !error.outcome_unknown());
                tally.refused += 1;
                tally.slowest_refusal = tally.slowest_refusal.max(elapsed);
            }
            (other, elapsed) => {
                panic!("neither an answer nor a local refusal: {other:?} after {elapsed:?}")
            }
        }
    }
    tally
}

/// The most requests that arrived within any `window` (a sliding window over the arrivals).
fn most_within(hits: &[Hit], window: Duration) -> usize {
    let mut arrivals: Vec<Instant> = hits.iter().map(|hit| hit.at).collect();
    arrivals.sort();
    let mut most = 0;
    let mut first = 0;
    for last in 0..arrivals.len() {
        while arrivals[last].duration_since(arrivals[first]) >= window {
            first += 1;
        }
        most = most.max(last - first + 1);
    }
    most
}

#[tokio::test]
async fn a_burst_far_above_the_limit_never_exceeds_it_at_the_provider() {
    const RATE_PER_S: u32 = 100;
    const BURST: u32 = 10;
    const WAIT_MS: u64 = 100;
    let server = ScriptedServer::start(Mode::Succeed).await;
    let adapter = adapter(&server, config(RATE_PER_S, BURST, WAIT_MS));
    let channel = CardChannel::new(adapter.clone());

    // 12 waves of 100 calls, 100 ms apart: 1 000 calls per second against a limit of 100.
    let started = Instant::now();
    let mut waves = Vec::new();
    for wave in 0..12 {
        let channel = channel.clone();
        waves.push(tokio::spawn(async move {
            burst(&channel, &format!("w{wave}"), 100).await
        }));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut succeeded = 0;
    let mut refused = 0;
    let mut slowest_refusal = Duration::ZERO;
    for wave in waves {
        let tally = wave.await.expect("the wave ran");
        succeeded += tally.succeeded;
        refused += tally.refused;
        slowest_refusal = slowest_refusal.max(tally.slowest_refusal);
    }
    let elapsed = started.elapsed();

    let hits = server.hits();
    assert_eq!(
        hits.len(),
        succeeded,
        "only permitted calls reach the provider"
    );
    assert_eq!(succeeded + refused, 1_200);
    // GCRA: at most the burst plus one cell per 1/rate seconds in any window; 3 of slack for
    // arrival jitter between the permit and the provider's clock.
    let most_in_a_second = most_within(&hits, Duration::from_secs(1));
    assert!(
        most_in_a_second <= (BURST + RATE_PER_S) as usize + 3,
        "{most_in_a_second} requests within one second"
    );
    // And the limit was used, not starved: about rate × time (+ burst) went through.
    let expected = RATE_PER_S as f64 * elapsed.as_secs_f64();
    assert!(
        succeeded as f64 >= expected * 0.8,
        "{succeeded} of ~{expected}"
    );
    // Refusals came within the wait bound (plus scheduling slack), never as timeouts.
    assert!(
        slowest_refusal < Duration::from_millis(WAIT_MS + 150),
        "{slowest_refusal:?}"
    );
    let health = adapter.health();
    assert_eq!(health.rejected_rate_total, refused as u64);
    assert_eq!(health.calls_total, succeeded as u64);
    assert_eq!((health.rate_per_s, health.burst), (RATE_PER_S, BURST));
}

#[tokio::test]
async fn calls_that_cannot_get_a_permit_within_the_bound_fail_fast() {
    // One request per second: after the first, nothing can be served within the 200 ms bound.
    let server = ScriptedServer::start(Mode::Succeed).await;
    let channel = CardChannel::new(adapter(&server, config(1, 1, 200)));
    let first = channel.charge(&charge_request("first")).await;
    assert!(
        matches!(first, Ok(ChargeOutcome::Succeeded { .. })),
        "{first:?}"
    );

    let started = Instant::now();
    let tally = burst(&channel, "late", 50).await;
    assert_eq!((tally.succeeded, tally.refused), (0, 50));
    // Refused at once: waiting could not have helped, so none of them waited out the bound.
    assert!(
        tally.slowest_refusal < Duration::from_millis(100),
        "{:?}",
        tally.slowest_refusal
    );
    assert!(started.elapsed() < Duration::from_millis(200));
    assert_eq!(server.hit_count(), 1);

    let Err(ChannelError::RateLimitedLocally { retry_after_ms }) =
        channel.charge(&charge_request("hint")).await
    else {
        panic!("still over the limit");
    };
    assert!((1..=1_000).contains(&retry_after_ms), "{retry_after_ms}");
}

#[tokio::test]
async fn a_call_within_the_bound_waits_for_its_permit() {
    // 20 per second: the second call's permit comes after ~50 ms, within the 300 ms bound.
    let server = ScriptedServer::start(Mode::Succeed).await;
    let channel = CardChannel::new(adapter(&server, config(20, 1, 300)));
    let tally = burst(&channel, "queued", 4).await;
    assert_eq!((tally.succeeded, tally.refused), (4, 0));
    let hits = server.hits();
    let spread = most_within(&hits, Duration::from_millis(40));
    assert!(
        spread <= 2,
        "{spread} of the queued calls arrived within 40 ms"
    );
}

#[tokio::test]
async fn one_merchants_burst_does_not_use_up_another_merchants_limit() {
    let server = ScriptedServer::start(Mode::Succeed).await;
    let adapter = adapter(
        &server,
        AdapterConfig {
            merchant_rate_per_s: Some(5),
            ..config(1_000, 100, 50)
        },
    );
    let noisy = CardChannel::new(adapter.for_merchant("mch_noisy"));
    let quiet = CardChannel::new(adapter.for_merchant("mch_quiet"));
    assert_eq!(noisy.adapter().merchant(), Some("mch_noisy"));

    let noisy_tally = burst(&noisy, "noisy", 100).await;
    // The merchant's burst is min(channel burst, its rate) = 5, plus what refills in 50 ms.
    assert!(
        (5..=6).contains(&noisy_tally.succeeded),
        "{}",
        noisy_tally.succeeded
    );
    assert_eq!(noisy_tally.succeeded + noisy_tally.refused, 100);

    let quiet_tally = burst(&quiet, "quiet", 5).await;
    assert_eq!((quiet_tally.succeeded, quiet_tally.refused), (5, 0));
    // A handle without a merchant meets only the channel's limit.
    let unkeyed = burst(&CardChannel::new(adapter.clone()), "unkeyed", 20).await;
    assert_eq!(unkeyed.succeeded, 20);

    let by_merchant = |prefix: &str| {
        server
            .hits()
            .iter()
            .filter(|hit| hit.idempotency_key.starts_with(prefix))
            .count()
    };
    assert_eq!(by_merchant("noisy-"), noisy_tally.succeeded);
    assert_eq!(by_merchant("quiet-"), 5);
    assert_eq!(adapter.health().merchant_rate_per_s, Some(5));
}

#[path = "common/scripted.rs"]
#[allow(dead_code)]
mod scripted;
