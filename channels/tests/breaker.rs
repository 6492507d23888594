//! The circuit breaker on the adapter's call path, against a scripted local provider: it opens
//! on hard failures within its window, then fails calls fast without touching the provider,
//! lets a probe through after `breaker_open_ms`, closes when the probe succeeds and opens again
//! when it fails. Declines and rejections are answers, never failures.

use std::time::{Duration, Instant};

use kassa_channels::{
    AdapterConfig, BreakerState, CardChannel, ChannelAdapter, ChannelError, ChargeOutcome,
};
use scripted::{Mode, ScriptedServer, charge_request, wait_until};

const OPEN_MS: u64 = 200;

/// A breaker that opens after 5 calls at ≥ 50 % failures and probes with 2 calls after 200 ms;
/// one attempt per call so the provider's hits count calls.
fn config() -> AdapterConfig {
    AdapterConfig {
        request_timeout_ms: 2_000,
        retry_attempts_max: 1,
        backoff_ms_min: 1,
        backoff_ms_max: 5,
        inflight_max: 2_048,
        breaker_window_size: 10,
        breaker_min_calls: 5,
        breaker_failure_rate_percent: 50,
        breaker_open_ms: OPEN_MS,
        breaker_half_open_probes: 2,
        ..AdapterConfig::default()
    }
}

fn channel(server: &ScriptedServer, config: AdapterConfig) -> CardChannel {
    CardChannel::new(ChannelAdapter::new(&server.base_url, "secret", config).expect("valid"))
}

fn state(channel: &CardChannel) -> BreakerState {
    channel.adapter().health().breaker.state
}

/// Fails calls against the 503ing server until the breaker opens; returns how many it took.
async fn open_the_breaker(channel: &CardChannel) -> usize {
    for call in 1..=20 {
        let result = channel
            .charge(&charge_request(&format!("fail-{call}")))
            .await;
        assert_eq!(result, Err(ChannelError::Server { status: 503 }));
        if state(channel) == BreakerState::Open {
            return call;
        }
    }
    panic!("the breaker never opened");
}

#[tokio::test]
async fn a_failing_channel_opens_the_breaker_and_calls_then_fail_fast() {
    let server = ScriptedServer::start(Mode::Fail).await;
    let channel = channel(&server, config());

    assert_eq!(open_the_breaker(&channel).await, 5, "min_calls, all failed");
    assert_eq!(server.hit_count(), 5);

    // Sequential calls: each refused at once, with the time left until a probe.
    let sequential = Instant::now();
    for call in 0..50 {
        let started = Instant::now();
        let result = channel
            .charge(&charge_request(&format!("fast-{call}")))
            .await;
        let elapsed = started.elapsed();
        let Err(ChannelError::CircuitOpen { retry_after_ms }) = result else {
            panic!("an open breaker refuses: {result:?}");
        };
        assert!((1..=OPEN_MS).contains(&retry_after_ms), "{retry_after_ms}");
        assert!(elapsed < Duration::from_millis(25), "{elapsed:?}");
        let error = ChannelError::CircuitOpen { retry_after_ms };
        assert!(error.is_retryable() && !error.outcome_unknown());
    }
    let sequential = sequential.elapsed();
    assert!(
        sequential < Duration::from_millis(50),
        "50 refusals took {sequential:?}"
    );
    // A thousand at once: all refused quickly, none reaches the provider.
    let started = Instant::now();
    let calls: Vec<_> = (0..1_000)
        .map(|call| {
            let channel = channel.clone();
            tokio::spawn(async move { channel.charge(&charge_request(&format!("c-{call}"))).await })
        })
        .collect();
    for call in calls {
        let result = call.await.expect("the task ran");
        assert!(
            matches!(result, Err(ChannelError::CircuitOpen { .. })),
            "{result:?}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_millis(OPEN_MS),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.hit_count(), 5, "the provider saw nothing more");

    let health = channel.adapter().health();
    assert_eq!(health.breaker.opens_total, 1);
    assert_eq!(health.calls_total, 5);
    assert_eq!(health.failures_total, 5);
    assert_eq!(health.rejected_open_total, 1_050);
    assert_eq!(health.inflight, 0);
    let json = serde_json::to_value(&health).expect("serialisable");
    assert_eq!(json["breaker"]["state"], "open");
    assert!(json["breaker"]["open_until_ms"].as_i64() > json["breaker"]["opened_at_ms"].as_i64());
}

#[tokio::test]
async fn after_open_ms_successful_probes_close_the_breaker() {
    let server = ScriptedServer::start(Mode::Fail).await;
    let channel = channel(&server, config());
    open_the_breaker(&channel).await;
    let opened = Instant::now();
    server.set(Mode::Succeed);

    assert!(
        wait_until(OPEN_MS * 10, || state(&channel) == BreakerState::HalfOpen).await,
        "the breaker lets probes through after breaker_open_ms"
    );
    assert!(opened.elapsed() >= Duration::from_millis(OPEN_MS - 20));
    let hits_before = server.hit_count();
    for probe in 0..2 {
        let result = channel
            .charge(&charge_request(&format!("probe-{probe}")))
            .await;
        assert!(
            matches!(result, Ok(ChargeOutcome::Succeeded { .. })),
            "{result:?}"
        );
    }
    assert_eq!(state(&channel), BreakerState::Closed);
    let result = channel.charge(&charge_request("after")).await;
    assert!(
        matches!(result, Ok(ChargeOutcome::Succeeded { .. })),
        "{result:?}"
    );
    assert_eq!(server.hit_count(), hits_before + 3);
    let health = channel.adapter().health().breaker;
    assert_eq!((health.opened_at_ms, health.open_until_ms), (None, None));
    assert_eq!(health.opens_total, 1);
}

#[tokio::test]
async fn a_failing_probe_opens_the_breaker_again() {
    let server = ScriptedServer::start(Mode::Fail).await;
    let channel = channel(&server, config());
    open_the_breaker(&channel).await;

    assert!(wait_until(OPEN_MS * 10, || state(&channel) == BreakerState::HalfOpen).await);
    let hits_before = server.hit_count();
    // The probe reaches the provider, so its error keeps saying "outcome unknown".
    let probe = channel.charge(&charge_request("probe")).await;
    assert_eq!(probe, Err(ChannelError::Server { status: 503 }));
    assert_eq!(state(&channel), BreakerState::Open);
    assert_eq!(channel.adapter().health().breaker.opens_total, 2);
    let refused = channel.charge(&charge_request("refused")).await;
    assert!(
        matches!(refused, Err(ChannelError::CircuitOpen { .. })),
        "{refused:?}"
    );
    assert_eq!(server.hit_count(), hits_before + 1);
}

#[tokio::test]
async fn half_open_lets_only_its_probes_through() {
    let server = ScriptedServer::start(Mode::Fail).await;
    let channel = channel(&server, config());
    open_the_breaker(&channel).await;
    server.set(Mode::Hang);
    assert!(wait_until(OPEN_MS * 10, || state(&channel) == BreakerState::HalfOpen).await);

    let probes: Vec<_> = (0..2)
        .map(|probe| {
            let channel = channel.clone();
            tokio::spawn(
                async move { channel.charge(&charge_request(&format!("p-{probe}"))).await },
            )
        })
        .collect();
    assert!(wait_until(2_000, || channel.adapter().inflight() == 2).await);
    let started = Instant::now();
    let third = channel.charge(&charge_request("third")).await;
    assert!(
        matches!(third, Err(ChannelError::CircuitOpen { .. })),
        "{third:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(25));
    // Cancelled probes free their slots: the breaker can probe again.
    for probe in probes {
        probe.abort();
    }
    assert!(wait_until(2_000, || channel.adapter().inflight() == 0).await);
    server.set(Mode::Succeed);
    for probe in 0..2 {
        let result = channel
            .charge(&charge_request(&format!("again-{probe}")))
            .await;
        assert!(result.is_ok(), "{result:?}");
    }
    assert_eq!(state(&channel), BreakerState::Closed);
}

#[tokio::test]
async fn an_opened_breaker_stops_further_retries_and_keeps_the_real_error() {
    let server = ScriptedServer::start(Mode::Fail).await;
    let channel = channel(
        &server,
        AdapterConfig {
            retry_attempts_max: 5,
            breaker_window_size: 2,
            breaker_min_calls: 2,
            breaker_failure_rate_percent: 100,
            ..config()
        },
    );

    let result = channel.charge(&charge_request("retried")).await;
    // The second attempt opened the breaker; the third was never sent. The call reports the
    // provider's 503 (outcome unknown), not "circuit open" (nothing sent), which would be false.
    assert_eq!(result, Err(ChannelError::Server { status: 503 }));
    assert!(result.is_err_and(|error| error.outcome_unknown()));
    assert_eq!(server.hit_count(), 2);
    assert_eq!(state(&channel), BreakerState::Open);
}

#[tokio::test]
async fn timeouts_count_as_failures() {
    let server = ScriptedServer::start(Mode::Hang).await;
    let channel = channel(
        &server,
        AdapterConfig {
            request_timeout_ms: 50,
            breaker_min_calls: 2,
            ..config()
        },
    );
    for call in 0..2 {
        let result = channel
            .charge(&charge_request(&format!("slow-{call}")))
            .await;
        assert_eq!(result, Err(ChannelError::Timeout));
    }
    assert_eq!(state(&channel), BreakerState::Open);
}

#[tokio::test]
async fn declines_rejections_and_provider_throttling_never_count_as_failures() {
    let server = ScriptedServer::start(Mode::Decline).await;
    let channel = channel(&server, config());

    for call in 0..30 {
        let result = channel
            .charge(&charge_request(&format!("declined-{call}")))
            .await;
        assert!(
            matches!(result, Ok(ChargeOutcome::Declined { .. })),
            "{result:?}"
        );
    }
    server.set(Mode::Reject);
    for call in 0..30 {
        let result = channel
            .charge(&charge_request(&format!("rejected-{call}")))
            .await;
        assert!(
            matches!(result, Err(ChannelError::Rejected { status: 400, .. })),
            "{result:?}"
        );
    }
    server.set(Mode::Throttle);
    for call in 0..30 {
        let result = channel
            .charge(&charge_request(&format!("throttled-{call}")))
            .await;
        assert!(
            matches!(result, Err(ChannelError::RateLimited { .. })),
            "{result:?}"
        );
    }
    let health = channel.adapter().health();
    assert_eq!(health.breaker.state, BreakerState::Closed);
    assert_eq!(health.breaker.failure_rate_percent, 0);
    assert_eq!(
        health.breaker.calls_in_window, 10,
        "answers fill the window; 429s do not"
    );
    assert_eq!(health.failures_total, 0);
    assert_eq!(health.calls_total, 90);
    assert_eq!(server.hit_count(), 90);
}

#[path = "common/scripted.rs"]
#[allow(dead_code)]
mod scripted;
