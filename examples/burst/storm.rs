//! `--connections-burst N`: N connections opened at once; when every connect has finished
//! (or [`CONNECT_PHASE_TIMEOUT_S`] passed), each sends ONE signed async charge at the same
//! moment. Counts 2xx / 429 / 503 / other answers and connection failures.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use http::Method;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::conn::{Answer, Failure, Target, connect, exchange};
use crate::progress::{REDRAW_INTERVAL, Ticker};
use crate::scenario::{Shared, charge_body, count_error_code, is_2xx, parse_created, signed};
use crate::stats::{AckedPayment, Acks, Expect, Live, Stats};

/// How long the connect phase may take before the requests go anyway.
const CONNECT_PHASE_TIMEOUT_S: u64 = 30;

pub struct StormOutcome {
    pub stats: Stats,
    pub acks: Acks,
    /// Connections that were open when the requests went.
    pub connected: u64,
    /// From the go signal to the last answer.
    pub elapsed: Duration,
}

type TaskResult = (u16, Result<Answer, Failure>, Duration);

pub async fn run(shared: Arc<Shared>, target: Arc<Target>, connections: u32) -> StormOutcome {
    let finished_connecting = Arc::new(AtomicU32::new(0));
    let connected = Arc::new(AtomicU32::new(0));
    let all_tried = Arc::new(Notify::new());
    let (go, go_signal) = watch::channel(false);
    let mut tasks: JoinSet<TaskResult> = JoinSet::new();
    let merchants = shared.merchants.len() as u32;
    for index in 0..connections {
        let (shared, target) = (Arc::clone(&shared), Arc::clone(&target));
        let (tried, connected, all_tried) = (
            Arc::clone(&finished_connecting),
            Arc::clone(&connected),
            Arc::clone(&all_tried),
        );
        let mut go_signal = go_signal.clone();
        tasks.spawn(async move {
            let merchant = u16::try_from(index % merchants).unwrap_or(0);
            let sender = connect(&target).await;
            if sender.is_ok() {
                connected.fetch_add(1, Ordering::Relaxed);
            }
            if tried.fetch_add(1, Ordering::AcqRel) + 1 == connections {
                all_tried.notify_one();
            }
            // The sender side lives until every task has been released.
            let _ = go_signal.wait_for(|go| *go).await;
            let started = Instant::now();
            let mut sender = match sender {
                Ok(sender) => sender,
                Err(failure) => return (merchant, Err(failure), started.elapsed()),
            };
            let order = format!("{}-s-{index}", shared.run_id);
            let body = charge_body(&order, "4242424242424242", r#","async":true"#);
            let request = signed(
                &shared,
                &target.host,
                merchant,
                Method::POST,
                "/v1/payments",
                body.into(),
                Some(&order),
            );
            let result = match request {
                Some(request) => exchange(&mut sender, request).await,
                None => Err(Failure::Io),
            };
            (merchant, result, started.elapsed())
        });
    }
    let mut ticker = Ticker::default();
    let connect_phase = tokio::time::timeout(
        Duration::from_secs(CONNECT_PHASE_TIMEOUT_S),
        all_tried.notified(),
    );
    tokio::pin!(connect_phase);
    let mut tick = tokio::time::interval(REDRAW_INTERVAL);
    loop {
        tokio::select! {
            _ = &mut connect_phase => break,
            _ = tick.tick() => ticker.show(&format!(
                "[storm] connecting: {}/{connections} tried, {} open",
                finished_connecting.load(Ordering::Relaxed),
                connected.load(Ordering::Relaxed)
            )),
        }
    }
    let open = u64::from(connected.load(Ordering::Relaxed));
    let _ = go.send(true);
    let started = Instant::now();
    let (mut stats, mut acks, mut answers) = (Stats::default(), Acks::default(), 0u32);
    loop {
        tokio::select! {
            joined = tasks.join_next() => {
                let Some(joined) = joined else { break };
                answers += 1;
                let Ok((merchant, result, latency)) = joined else {
                    stats.io_errors += 1;
                    continue;
                };
                record(&mut stats, &mut acks, &shared.live, merchant, result, latency);
            }
            _ = tick.tick() => ticker.show(&format!(
                "[storm] {answers}/{connections} done, {:.1} s",
                started.elapsed().as_secs_f64()
            )),
        }
    }
    ticker.finish();
    StormOutcome {
        stats,
        acks,
        connected: open,
        elapsed: started.elapsed(),
    }
}

fn record(
    stats: &mut Stats,
    acks: &mut Acks,
    live: &Live,
    merchant: u16,
    result: Result<Answer, Failure>,
    latency: Duration,
) {
    live.count(result.as_ref().ok().map(|answer| answer.status));
    let answer = match result {
        Ok(answer) => answer,
        Err(failure) => return stats.failure(failure),
    };
    let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    stats.answer(answer.status, answer.retry_after, latency_us);
    if !is_2xx(&answer) {
        return count_error_code(stats, &answer.body);
    }
    if let Some((id, _status)) = parse_created(&answer.body) {
        acks.payments.push(AckedPayment {
            merchant,
            id,
            expect: Expect::Succeeded,
        });
    }
}
