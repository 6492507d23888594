//! The shared adapter's bounds: bounded retries of retryable failures only, timeouts that say
//! "outcome unknown", the in-flight bulkhead, and calls from several current-thread runtimes.

mod common;

use common::{CountingServer, channel_for, charge_request, fast_config, start_sandbox, wait_until};
use hyper::StatusCode;
use kassa_channels::{AdapterConfig, CardChannel, ChannelError, ChargeOutcome, ResolveOutcome};

#[tokio::test]
async fn a_503_is_retried_exactly_up_to_the_attempt_bound() {
    let server = CountingServer::start(StatusCode::SERVICE_UNAVAILABLE, None).await;
    let config = AdapterConfig {
        retry_attempts_max: 4,
        ..fast_config()
    };
    let channel = channel_for(&server.base_url, config);

    let result = channel
        .charge(&charge_request("order-503", "4242424242424242", 100, true))
        .await;
    assert_eq!(result, Err(ChannelError::Server { status: 503 }));
    assert!(result.as_ref().is_err_and(ChannelError::outcome_unknown));
    assert_eq!(server.hits(), 4, "one first attempt and three retries");
}

#[tokio::test]
async fn a_rejection_is_never_retried() {
    let server = CountingServer::start(StatusCode::BAD_REQUEST, None).await;
    let channel = channel_for(
        &server.base_url,
        AdapterConfig {
            retry_attempts_max: 5,
            ..fast_config()
        },
    );

    let result = channel.resolve("order-400").await;
    assert_eq!(
        result,
        Err(ChannelError::Rejected {
            status: 400,
            code: "scripted".into()
        })
    );
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn a_429_is_retried_when_retry_after_fits_the_ceiling() {
    let server = CountingServer::start(StatusCode::TOO_MANY_REQUESTS, Some(0)).await;
    let channel = channel_for(
        &server.base_url,
        AdapterConfig {
            retry_attempts_max: 3,
            ..fast_config()
        },
    );

    let result = channel.resolve("order-429").await;
    assert_eq!(
        result,
        Err(ChannelError::RateLimited {
            retry_after_ms: Some(0)
        })
    );
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn a_retry_after_beyond_the_backoff_ceiling_is_handed_to_the_caller() {
    let server = CountingServer::start(StatusCode::TOO_MANY_REQUESTS, Some(30)).await;
    let channel = channel_for(
        &server.base_url,
        AdapterConfig {
            retry_attempts_max: 3,
            ..fast_config()
        },
    );

    let result = channel.resolve("order-429-long").await;
    assert_eq!(
        result,
        Err(ChannelError::RateLimited {
            retry_after_ms: Some(30_000)
        })
    );
    assert_eq!(
        server.hits(),
        1,
        "waiting 30 s exceeds backoff_ms_max, so no retry"
    );
}

#[tokio::test]
async fn connection_refused_is_retried_then_reported_as_not_sent() {
    // Bind, learn the port, and close it again so nothing listens there.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let channel = channel_for(&format!("http://{addr}"), fast_config());

    let result = channel
        .charge(&charge_request(
            "order-refused",
            "4242424242424242",
            100,
            true,
        ))
        .await;
    let Err(error) = result else {
        panic!("nothing listens, so the call must fail: {result:?}");
    };
    assert!(matches!(error, ChannelError::Connect(_)), "{error:?}");
    assert!(error.is_retryable());
    assert!(
        !error.outcome_unknown(),
        "a refused connection sent nothing"
    );
}

#[tokio::test]
async fn a_slow_provider_times_out_with_an_unknown_outcome_that_resolve_settles() {
    let sandbox = start_sandbox(300, None).await;
    let impatient = AdapterConfig {
        request_timeout_ms: 50,
        retry_attempts_max: 2,
        ..fast_config()
    };
    let channel = channel_for(&sandbox.base_url(), impatient);

    let result = channel
        .charge(&charge_request("order-slow", "4242424242424242", 800, true))
        .await;
    assert_eq!(result, Err(ChannelError::Timeout));
    assert!(result.as_ref().is_err_and(ChannelError::outcome_unknown));

    // The provider did act (the latency comes after the work): resolve turns the unknown into
    // a fact, and the retry did not charge twice.
    let patient = channel_for(&sandbox.base_url(), fast_config());
    let ResolveOutcome::Found(found) = patient.resolve("order-slow").await.expect("an answer")
    else {
        panic!("the slow charge was recorded");
    };
    assert!(
        matches!(found.outcome, ChargeOutcome::Succeeded { .. }),
        "{found:?}"
    );
    assert_eq!(
        common::charges_with_key(&sandbox.base_url(), "order-slow")
            .await
            .len(),
        1
    );
    sandbox.shutdown().await;
}

/// A channel with one in-flight slot, held by a charge under `key` to the (slow) sandbox at
/// `base_url`; returns the channel and that charge's task.
async fn one_slot_held(
    base_url: &str,
    key: &'static str,
) -> (
    CardChannel,
    tokio::task::JoinHandle<Result<ChargeOutcome, ChannelError>>,
) {
    let channel = channel_for(
        base_url,
        AdapterConfig {
            inflight_max: 1,
            ..fast_config()
        },
    );
    let held = {
        let channel = channel.clone();
        tokio::spawn(async move {
            channel
                .charge(&charge_request(key, "4242424242424242", 100, true))
                .await
        })
    };
    assert!(
        wait_until(2_000, || channel.adapter().inflight() == 1).await,
        "the first call must hold the only permit"
    );
    (channel, held)
}

#[tokio::test]
async fn an_admitted_call_waits_for_a_bulkhead_slot_instead_of_being_refused() {
    let sandbox = start_sandbox(300, None).await;
    let (channel, first) = one_slot_held(&sandbox.base_url(), "order-held").await;
    // An accepted payment's call (its rate permit taken at admission) waits for the slot.
    let admitted = CardChannel::new(
        channel
            .adapter()
            .admit_new_work()
            .await
            .expect("admitted while the breaker is closed"),
    );
    let second = admitted
        .charge(&charge_request(
            "order-admitted",
            "4242424242424242",
            100,
            true,
        ))
        .await;
    assert!(
        matches!(second, Ok(ChargeOutcome::Succeeded { .. })),
        "{second:?}"
    );
    let first = first.await.expect("the task ran");
    assert!(
        matches!(first, Ok(ChargeOutcome::Succeeded { .. })),
        "{first:?}"
    );
    assert_eq!(
        common::charges_with_key(&sandbox.base_url(), "order-admitted")
            .await
            .len(),
        1
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn the_bulkhead_refuses_calls_beyond_inflight_max() {
    let sandbox = start_sandbox(300, None).await;
    let (channel, first) = one_slot_held(&sandbox.base_url(), "order-first").await;
    let second = channel
        .charge(&charge_request(
            "order-second",
            "4242424242424242",
            100,
            true,
        ))
        .await;
    assert_eq!(second, Err(ChannelError::Overloaded));
    assert!(!ChannelError::Overloaded.outcome_unknown());

    let first = first.await.expect("the task ran");
    assert!(
        matches!(first, Ok(ChargeOutcome::Succeeded { .. })),
        "{first:?}"
    );
    assert_eq!(channel.adapter().inflight(), 0, "the permit is returned");
    assert!(
        common::charges_with_key(&sandbox.base_url(), "order-second")
            .await
            .is_empty()
    );
    sandbox.shutdown().await;
}

fn assert_send<T: Send>(value: T) -> T {
    value
}

/// Order actors run on actix arbiters, which are current-thread tokio runtimes on their own
/// threads. One adapter must serve callers on several of them, including after one stops.
#[test]
fn one_adapter_serves_several_current_thread_runtimes() {
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let sandbox = server_runtime.block_on(start_sandbox(0, None));
    let channel = channel_for(&sandbox.base_url(), fast_config());

    for arbiter in 0..3 {
        let channel = channel.clone();
        let outcome = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            let request = charge_request(
                &format!("order-arbiter-{arbiter}"),
                "4242424242424242",
                100,
                true,
            );
            // The futures the actors hold must be `Send`.
            runtime.block_on(assert_send(channel.charge(&request)))
            // The runtime, and the pooled connection it drove, is dropped here.
        })
        .join()
        .expect("the arbiter thread");
        assert!(
            matches!(outcome, Ok(ChargeOutcome::Succeeded { .. })),
            "arbiter {arbiter}: {outcome:?}"
        );
    }
    server_runtime.block_on(sandbox.shutdown());
}
