//! The sandbox's configurable behaviour, over real HTTP: injected 5xx and 429 (nothing
//! charged), held connections (charged, never answered), a hard outage switched at runtime,
//! per-second request counts, and late, duplicate, signed callbacks to a local receiver.

#[path = "common/chaos.rs"]
mod chaos;
mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chaos::{
    APPROVED, Api, ChildGuard, DECLINED, Receiver, Reply, charge_body, charge_many, ledger_keys,
    raw_charge, start, timed,
};
use common::{SECRET, wait_until};
use hyper::{Method, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kassa_channels::card::signature;
use kassa_channels::sandbox::{Behaviour, StatsView};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn injected_errors_and_429s_follow_their_rates_and_charge_nothing() {
    let behaviour = Behaviour {
        error_rate_percent: 20,
        rate_limit_rate_percent: 10,
        seed: 2_024,
        ..Behaviour::default()
    };
    let sandbox = start(behaviour.clone()).await;
    let api = Api::new(&sandbox);
    let calls = 500;
    let replies = charge_many(&api, "rate", calls).await;

    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for (_, reply) in &replies {
        *by_status.entry(reply.status.as_u16()).or_default() += 1;
        match reply.status.as_u16() {
            200 => assert_eq!(reply.json["status"], "succeeded"),
            429 => assert_eq!(reply.retry_after.as_deref(), Some("1"), "{reply:?}"),
            500 | 502 | 503 => assert!(reply.json["error"]["code"].is_string()),
            other => panic!("unexpected status {other}: {}", reply.json),
        }
    }
    let errors: usize = [500, 502, 503]
        .iter()
        .map(|status| by_status.get(status).copied().unwrap_or(0))
        .sum();
    let limited = by_status.get(&429).copied().unwrap_or(0);
    // 20 % and 10 % of 500, within about four standard deviations.
    assert!(errors.abs_diff(100) <= 35, "{by_status:?}");
    assert!(limited.abs_diff(50) <= 25, "{by_status:?}");
    for status in [500, 502, 503] {
        assert!(by_status.contains_key(&status), "{by_status:?}");
    }

    // Exactly the calls answered 200 were charged; no 5xx or 429 left a charge behind.
    let answered_ok: HashSet<String> = replies
        .iter()
        .filter(|(_, reply)| reply.status == StatusCode::OK)
        .map(|(key, _)| key.clone())
        .collect();
    assert_eq!(ledger_keys(&sandbox.base_url()).await, answered_ok);

    let stats = api.stats().await;
    assert_eq!(stats.requests_total, calls as u64);
    assert_eq!(stats.errors_injected, errors as u64);
    assert_eq!(stats.rate_limited_injected, limited as u64);
    assert_eq!(stats.charges_total, answered_ok.len() as u64);
    assert_eq!(stats.timeouts_injected, 0);

    // The same seed and the same calls give the same answers.
    let again = start(behaviour).await;
    let replayed = charge_many(&Api::new(&again), "rate", calls).await;
    let statuses = |replies: &[(String, Reply)]| -> Vec<StatusCode> {
        replies.iter().map(|(_, reply)| reply.status).collect()
    };
    assert_eq!(statuses(&replies), statuses(&replayed));
    again.shutdown().await;
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_timed_out_call_is_charged_and_resolve_finds_it() {
    let sandbox = start(Behaviour {
        timeout_rate_percent: 100,
        ..Behaviour::default()
    })
    .await;
    let mut stream = raw_charge(&sandbox, "held-1").await;

    // The work is done and the connection is held.
    assert!(
        wait_until(5_000, || {
            let stats = sandbox.stats();
            stats.timeouts_injected == 1 && stats.connections_held == 1 && stats.charges_total == 1
        })
        .await,
        "{:?}",
        sandbox.stats()
    );
    assert!(ledger_keys(&sandbox.base_url()).await.contains("held-1"));
    // No answer comes; the client gives up.
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buffer)).await;
    assert!(read.is_err(), "the sandbox must not answer: {read:?}");
    drop(stream);
    assert!(
        wait_until(5_000, || sandbox.stats().connections_held == 0).await,
        "the hold ends when the client goes away"
    );

    // Once the provider behaves, resolve finds the charge the lost answer was about.
    let api = Api::new(&sandbox);
    let reply = api.put_behaviour(&json!({})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    let reply = api
        .call(
            Method::POST,
            "/card/v1/charges/resolve",
            r#"{"idempotency_key":"held-1"}"#,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["found"], true);
    assert_eq!(reply.json["charge"]["status"], "succeeded");
    // A retry with the key replays the one charge.
    let retry = api.charge("held-1", APPROVED, true).await;
    assert_eq!(retry.json["charge_id"], reply.json["charge"]["charge_id"]);
    assert_eq!(sandbox.stats().charges_total, 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn shutdown_releases_held_connections_without_an_answer() {
    let sandbox = start(Behaviour {
        timeout_rate_percent: 100,
        ..Behaviour::default()
    })
    .await;
    let mut stream = raw_charge(&sandbox, "held-at-shutdown").await;
    assert!(wait_until(5_000, || sandbox.stats().connections_held == 1).await);
    let started = Instant::now();
    sandbox.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown must not wait out the hold"
    );
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buffer))
        .await
        .expect("the connection is closed");
    assert!(
        read.is_err() || buffer.is_empty(),
        "closed without an answer: {}",
        String::from_utf8_lossy(&buffer)
    );
}

#[tokio::test]
async fn hard_down_answers_503_until_switched_off_at_runtime() {
    let sandbox = start(Behaviour::default()).await;
    let api = Api::new(&sandbox);

    let reply = api.put_behaviour(&json!({ "hard_down": true })).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["hard_down"], true);
    let read = api.call(Method::GET, "/sandbox/behaviour", "").await;
    assert_eq!(read.json, reply.json);

    for index in 0..20 {
        let reply = api.charge(&format!("down-{index}"), APPROVED, true).await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            reply.json
        );
    }
    let lookup = api.call(Method::GET, "/card/v1/charges/ch_x", "").await;
    assert_eq!(lookup.status, StatusCode::SERVICE_UNAVAILABLE);
    // The sandbox's own endpoints keep working.
    assert!(ledger_keys(&sandbox.base_url()).await.is_empty());
    assert_eq!(api.stats().await.errors_injected, 21);

    let reply = api.put_behaviour(&json!({ "hard_down": false })).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    let reply = api.charge("up-1", APPROVED, true).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(
        ledger_keys(&sandbox.base_url()).await,
        HashSet::from(["up-1".to_owned()])
    );

    // In process, the same switch.
    sandbox
        .set_behaviour(Behaviour {
            hard_down: true,
            ..Behaviour::default()
        })
        .expect("a valid behaviour");
    assert!(sandbox.behaviour().hard_down);
    let reply = api.charge("down-again", APPROVED, true).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    sandbox
        .set_behaviour(Behaviour::default())
        .expect("a valid behaviour");
    assert_eq!(
        api.charge("up-2", APPROVED, true).await.status,
        StatusCode::OK
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn behaviour_changes_must_be_signed_and_within_bounds() {
    let sandbox = start(Behaviour::default()).await;
    let api = Api::new(&sandbox);
    let body = json!({ "hard_down": true }).to_string();

    let unsigned = api
        .send(Method::PUT, "/sandbox/behaviour", &body, None)
        .await;
    assert_eq!(unsigned.status, StatusCode::UNAUTHORIZED);
    let wrong = signature::header_value(
        b"not the secret",
        signature::now_unix_s(),
        "PUT",
        "/sandbox/behaviour",
        body.as_bytes(),
    );
    let badly_signed = api
        .send(Method::PUT, "/sandbox/behaviour", &body, Some(wrong))
        .await;
    assert_eq!(badly_signed.status, StatusCode::UNAUTHORIZED);

    let out_of_bounds = api
        .put_behaviour(&json!({ "error_rate_percent": 70, "timeout_rate_percent": 40 }))
        .await;
    assert_eq!(out_of_bounds.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(out_of_bounds.json["error"]["code"], "invalid_behaviour");
    let unknown_field = api.put_behaviour(&json!({ "hard_dwon": true })).await;
    assert_eq!(unknown_field.status, StatusCode::BAD_REQUEST);
    let not_http = api
        .put_behaviour(&json!({ "callback_url": "ftp://example.com/hooks" }))
        .await;
    assert_eq!(not_http.status, StatusCode::UNPROCESSABLE_ENTITY);

    assert_eq!(sandbox.behaviour(), Behaviour::default(), "nothing changed");
    assert!(
        sandbox
            .set_behaviour(Behaviour {
                latency_ms_min: 2,
                latency_ms_max: 1,
                ..Behaviour::default()
            })
            .is_err()
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn stats_count_every_card_request_in_its_second() {
    let limit = 5;
    let sandbox = start(Behaviour {
        max_requests_per_s: Some(limit),
        ..Behaviour::default()
    })
    .await;
    let api = Api::new(&sandbox);
    // (second before sending, second after the answer) for each card request.
    let mut windows: Vec<(u64, u64)> = Vec::new();
    for index in 0..40 {
        let before_s = signature::now_unix_s();
        let reply = match index % 4 {
            0 => api.charge(&format!("count-{index}"), APPROVED, true).await,
            1 => api.charge(&format!("count-{index}"), DECLINED, true).await,
            2 => {
                api.call(Method::GET, "/card/v1/charges/ch_missing", "")
                    .await
            }
            _ => api.send(Method::POST, "/card/v1/charges", "{}", None).await,
        };
        assert_ne!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        windows.push((before_s, signature::now_unix_s()));
        // The sandbox's own endpoints and /healthz are never counted.
        if index % 10 == 0 {
            api.call(Method::GET, "/sandbox/behaviour", "").await;
            api.call(Method::GET, "/sandbox/stats", "").await;
            api.send(Method::GET, "/healthz", "", None).await;
        }
    }
    // A concurrent burst.
    let api = Arc::new(api);
    let mut burst = tokio::task::JoinSet::new();
    for index in 0..30 {
        let api = api.clone();
        burst.spawn(async move {
            let before_s = signature::now_unix_s();
            let reply = api.charge(&format!("burst-{index}"), APPROVED, true).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
            (before_s, signature::now_unix_s())
        });
    }
    while let Some(window) = burst.join_next().await {
        windows.push(window.expect("the burst task"));
    }

    let stats = api.stats().await;
    assert_eq!(stats.requests_total, 70);
    let by_second: BTreeMap<u64, u64> = stats
        .requests_by_second
        .iter()
        .map(|[second, count]| (*second, *count))
        .collect();
    assert_eq!(by_second.values().sum::<u64>(), 70, "{by_second:?}");
    // Each second holds at least the requests that started and ended in it, and at most those
    // whose window covers it.
    let first_s = windows
        .iter()
        .map(|(before, _)| *before)
        .min()
        .expect("some");
    let last_s = windows.iter().map(|(_, after)| *after).max().expect("some");
    for second in first_s..=last_s {
        let at_least = windows
            .iter()
            .filter(|(before, after)| *before == second && *after == second)
            .count() as u64;
        let at_most = windows
            .iter()
            .filter(|(before, after)| (*before..=*after).contains(&second))
            .count() as u64;
        let counted = by_second.get(&second).copied().unwrap_or(0);
        assert!(
            (at_least..=at_most).contains(&counted),
            "second {second}: {counted} not in {at_least}..={at_most}"
        );
    }
    assert!(
        by_second
            .keys()
            .all(|second| (first_s..=last_s).contains(second))
    );
    let over_limit: u64 = by_second
        .values()
        .map(|count| count.saturating_sub(u64::from(limit)))
        .sum();
    assert_eq!(stats.requests_over_limit, over_limit);
    assert!(over_limit > 0, "a burst of 30 is over 5 per second");
    assert_eq!(stats.charges_total, 20 + 30);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn each_charge_change_sends_a_signed_late_callback_some_twice() {
    let receiver = Receiver::start(0).await;
    let callback_path = "/hooks/sandbox?source=chaos-test";
    let (delay_ms_min, delay_ms_max) = (50, 400);
    let sandbox = start(Behaviour {
        callback_url: Some(format!("{}{callback_path}", receiver.base_url)),
        callback_delay_ms_min: delay_ms_min,
        callback_delay_ms_max: delay_ms_max,
        duplicate_callback_rate_percent: 30,
        seed: 11,
        ..Behaviour::default()
    })
    .await;
    let api = Api::new(&sandbox);

    let mut changes = Vec::new();
    for index in 0..40 {
        let body = charge_body(&format!("cb-ok-{index}"), APPROVED, true);
        changes.push(timed(&api, Method::POST, "/card/v1/charges", &body).await);
    }
    for index in 0..10 {
        let body = charge_body(&format!("cb-declined-{index}"), DECLINED, true);
        changes.push(timed(&api, Method::POST, "/card/v1/charges", &body).await);
    }
    for index in 0..10 {
        let body = charge_body(&format!("cb-auth-{index}"), APPROVED, false);
        let authorized = timed(&api, Method::POST, "/card/v1/charges", &body).await;
        let id = authorized.charge["charge_id"]
            .as_str()
            .expect("an id")
            .to_owned();
        changes.push(authorized);
        let next = if index % 2 == 0 {
            let body =
                json!({ "idempotency_key": format!("cb-cap-{index}"), "amount_minor": 1_000 });
            timed(
                &api,
                Method::POST,
                &format!("/card/v1/charges/{id}/capture"),
                &body.to_string(),
            )
            .await
        } else {
            let body = json!({ "idempotency_key": format!("cb-void-{index}") });
            timed(
                &api,
                Method::POST,
                &format!("/card/v1/charges/{id}/void"),
                &body.to_string(),
            )
            .await
        };
        changes.push(next);
    }
    // A replayed key changes nothing, so it sends nothing.
    let replay = api.charge("cb-ok-0", APPROVED, true).await;
    assert_eq!(replay.json, changes[0].charge);
    assert_eq!(changes.len(), 70);

    let expected = |stats: &StatsView| 70 + stats.callbacks_duplicated as usize;
    assert!(
        wait_until(15_000, || {
            let stats = sandbox.stats();
            receiver.count() >= expected(&stats)
                && stats.callbacks_delivered == stats.callbacks_queued
        })
        .await,
        "{} received, {:?}",
        receiver.count(),
        sandbox.stats()
    );
    let stats = sandbox.stats();
    let received = receiver.received();
    assert_eq!(received.len(), expected(&stats));
    assert_eq!(stats.callbacks_queued as usize, received.len());
    assert_eq!(stats.callbacks_failed + stats.callbacks_dropped, 0);
    // 30 % of 70 is 21; the seed fixes the draw, the tolerance keeps the test about the rate.
    assert!(
        stats.callbacks_duplicated.abs_diff(21) <= 12,
        "{}",
        stats.callbacks_duplicated
    );

    let mut copies_by_event: HashMap<String, Vec<(Instant, Value)>> = HashMap::new();
    for callback in &received {
        assert_eq!(callback.path, callback_path);
        let header = callback.signature.as_deref();
        signature::verify(
            SECRET.as_bytes(),
            header,
            "POST",
            callback_path,
            &callback.body,
            signature::now_unix_s(),
        )
        .expect("every callback is signed with the API secret");
        let event: Value = serde_json::from_slice(&callback.body).expect("JSON");
        assert_eq!(event["type"], "charge.updated");
        let sent_at = event["sent_at"].as_u64().expect("sent_at");
        assert!(sent_at.abs_diff(signature::now_unix_s()) <= 60);
        let id = event["id"].as_str().expect("an event id").to_owned();
        assert!(id.starts_with("evt_"), "{id}");
        copies_by_event
            .entry(id)
            .or_default()
            .push((callback.at, event["charge"].clone()));
    }
    assert_eq!(copies_by_event.len(), 70, "one event per change");
    let duplicated = copies_by_event
        .values()
        .filter(|copies| copies.len() == 2)
        .count();
    assert_eq!(duplicated as u64, stats.callbacks_duplicated);
    assert!(copies_by_event.values().all(|copies| copies.len() <= 2));

    // Each change's callback carries the charge exactly as the call answered it, and arrives
    // no sooner than the minimum delay and not long after the maximum.
    let slack = Duration::from_millis(1_500);
    for change in &changes {
        let matching: Vec<&Vec<(Instant, Value)>> = copies_by_event
            .values()
            .filter(|copies| copies[0].1 == change.charge)
            .collect();
        assert_eq!(matching.len(), 1, "{}", change.charge);
        for (at, charge) in matching[0] {
            assert_eq!(charge, &change.charge, "a duplicate is the same event");
            assert!(
                at.duration_since(change.sent) >= Duration::from_millis(delay_ms_min),
                "too early"
            );
            assert!(
                at.saturating_duration_since(change.answered)
                    <= Duration::from_millis(delay_ms_max) + slack,
                "too late"
            );
        }
    }
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_failing_receiver_gets_at_most_three_attempts() {
    // Two failures, then a success: delivered on the third attempt.
    let flaky = Receiver::start(2).await;
    let sandbox = start(Behaviour {
        callback_url: Some(format!("{}/hooks", flaky.base_url)),
        ..Behaviour::default()
    })
    .await;
    let api = Api::new(&sandbox);
    assert_eq!(
        api.charge("retry-1", APPROVED, true).await.status,
        StatusCode::OK
    );
    assert!(wait_until(10_000, || sandbox.stats().callbacks_delivered == 1).await);
    assert_eq!(flaky.count(), 3);
    let bodies: HashSet<Value> = flaky
        .received()
        .iter()
        .map(|callback| {
            let mut event: Value = serde_json::from_slice(&callback.body).expect("JSON");
            event["sent_at"] = Value::Null;
            event
        })
        .collect();
    assert_eq!(bodies.len(), 1, "every attempt carries the same event");

    // Always failing: three attempts, then it is abandoned and counted.
    let broken = Receiver::start(usize::MAX).await;
    sandbox
        .set_behaviour(Behaviour {
            callback_url: Some(format!("{}/hooks", broken.base_url)),
            ..Behaviour::default()
        })
        .expect("a valid behaviour");
    assert_eq!(
        api.charge("retry-2", APPROVED, true).await.status,
        StatusCode::OK
    );
    assert!(wait_until(10_000, || sandbox.stats().callbacks_failed == 1).await);
    assert_eq!(broken.count(), 3);
    assert_eq!(sandbox.stats().callbacks_delivered, 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn latency_is_drawn_between_its_bounds() {
    let sandbox = start(Behaviour {
        latency_ms_min: 40,
        latency_ms_max: 120,
        seed: 5,
        ..Behaviour::default()
    })
    .await;
    let api = Api::new(&sandbox);
    let mut took = Vec::new();
    for index in 0..12 {
        let started = Instant::now();
        let reply = api.charge(&format!("slow-{index}"), APPROVED, true).await;
        assert_eq!(reply.status, StatusCode::OK);
        took.push(started.elapsed());
    }
    assert!(
        took.iter()
            .all(|elapsed| *elapsed >= Duration::from_millis(40)),
        "{took:?}"
    );
    let fastest = took.iter().min().expect("some");
    let slowest = took.iter().max().expect("some");
    assert!(
        *slowest > *fastest + Duration::from_millis(10),
        "latency varies: {took:?}"
    );
    // The sandbox's own endpoints are never delayed.
    let started = Instant::now();
    api.call(Method::GET, "/sandbox/stats", "").await;
    assert!(started.elapsed() < Duration::from_millis(40));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn the_binary_takes_its_behaviour_from_a_file_and_flags() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("behaviour.json");
    std::fs::write(
        &file,
        json!({ "error_rate_percent": 5, "seed": 99, "max_requests_per_s": 50 }).to_string(),
    )
    .expect("write the behaviour");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kassa-sandbox"))
        .args(["--addr", "127.0.0.1:0", "--behaviour"])
        .arg(&file)
        .args(["--rate-limit-rate-percent", "7"])
        .env("KASSA_SANDBOX_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let guard = ChildGuard(child);
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("a line");
        line
    })
    .await
    .expect("the reader");
    let base_url = line
        .trim()
        .strip_prefix("kassa-sandbox listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();
    let api = Api {
        base_url,
        client: Client::builder(TokioExecutor::new()).build_http(),
    };
    let reply = api.call(Method::GET, "/sandbox/behaviour", "").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    let behaviour: Behaviour = serde_json::from_value(reply.json).expect("a behaviour");
    assert_eq!(
        behaviour,
        Behaviour {
            error_rate_percent: 5,
            rate_limit_rate_percent: 7,
            seed: 99,
            max_requests_per_s: Some(50),
            ..Behaviour::default()
        }
    );
    drop(guard);
}
