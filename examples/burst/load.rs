//! The timed run: `connections` workers, closed loop (each sends its next scenario as soon as
//! the previous answer is in) or open loop (scenario starts on a fixed schedule shared by all
//! workers, latency measured from each start's *intended* time, as wrk2 and oha do, so a
//! stalled server cannot hide its stall by slowing the client down).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::child::{Probe, Sample};
use crate::conn::{Conn, Target};
use crate::progress::{REDRAW_INTERVAL, Ticker};
use crate::scenario::{Shared, Worker};
use crate::stats::{Acks, Stats};

/// Open loop: a start picked up more than this after its intended time counts as late.
pub const LATE_THRESHOLD_US: u64 = 2_000;
/// The window req/s is shown over on the progress line.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub label: String,
    pub connections: u32,
    pub warmup: Duration,
    pub duration: Duration,
    /// Open loop: scenario starts per second in total.
    pub rate: Option<f64>,
}

/// What a run measured.
pub struct Outcome {
    pub stats: Stats,
    pub acks: Acks,
    /// Samples at the start and the end of the measured window.
    pub window: (Sample, Sample),
    /// Open loop: starts due in the measured window that were never sent (the run ended first).
    pub unsent: u64,
    /// Worker tasks that panicked (their counts are lost).
    pub panicked: u64,
}

/// The open-loop schedule: start `i` is due at `t0 + i / rate`.
struct Schedule {
    t0: Instant,
    interval_ns: f64,
    next: AtomicU64,
}

impl Schedule {
    fn due(&self, index: u64) -> Instant {
        self.t0 + Duration::from_nanos((index as f64 * self.interval_ns) as u64)
    }
}

pub async fn run(shared: Arc<Shared>, target: Arc<Target>, plan: &Plan, probe: &Probe) -> Outcome {
    let t0 = Instant::now();
    let measure_start = t0 + plan.warmup;
    let end = measure_start + plan.duration;
    let schedule = plan.rate.map(|rate| {
        Arc::new(Schedule {
            t0,
            interval_ns: 1e9 / rate,
            next: AtomicU64::new(0),
        })
    });
    let seed = crate::random_u64();
    let mut workers = JoinSet::new();
    for index in 0..plan.connections {
        let conn = Conn::new(Arc::clone(&target));
        let seed = seed ^ (u64::from(index) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let worker = Worker::new(Arc::clone(&shared), conn, index, seed);
        workers.spawn(work(worker, schedule.clone(), measure_start, end));
    }
    let collect = async {
        let (mut stats, mut acks, mut panicked) = (Stats::default(), Acks::default(), 0);
        while let Some(joined) = workers.join_next().await {
            match joined {
                Ok(worker) => {
                    stats.merge(&worker.stats);
                    acks.merge(worker.acks);
                }
                Err(_) => panicked += 1,
            }
        }
        (stats, acks, panicked)
    };
    let window = async {
        tokio::time::sleep_until(measure_start.into()).await;
        let first = probe.sample().await;
        tokio::time::sleep_until(end.into()).await;
        (first, probe.sample().await)
    };
    let both = async { tokio::join!(collect, window) };
    tokio::pin!(both);
    let mut ticker = Ticker::default();
    let mut tick = tokio::time::interval(REDRAW_INTERVAL);
    let mut history: VecDeque<(Instant, u64)> = VecDeque::new();
    let ((stats, acks, panicked), window) = loop {
        tokio::select! {
            out = &mut both => break out,
            _ = tick.tick() => {
                let line = progress_line(plan, &shared, t0, measure_start, end, &mut history);
                ticker.show(&line);
            }
        }
    };
    ticker.finish();
    let unsent = match plan.rate {
        Some(rate) => ((plan.duration.as_secs_f64() * rate) as u64).saturating_sub(stats.scheduled),
        None => 0,
    };
    Outcome {
        stats,
        acks,
        window,
        unsent,
        panicked,
    }
}

async fn work(
    mut worker: Worker,
    schedule: Option<Arc<Schedule>>,
    measure_start: Instant,
    end: Instant,
) -> Worker {
    match schedule {
        None => loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            let scenario = worker.pick();
            worker.run(scenario, now, now >= measure_start).await;
        },
        Some(schedule) => loop {
            let index = schedule.next.fetch_add(1, Ordering::Relaxed);
            let due = schedule.due(index);
            let now = Instant::now();
            // Past the end the run stops even with a backlog: what is left was never sent.
            if due >= end || now >= end {
                break;
            }
            let record = due >= measure_start;
            // A worker that is early sleeps; the timer wakes it up to ~1 ms late (tokio's
            // resolution). That lag is the client's, not the server's: the clock starts at
            // the actual send. A worker that is late (every connection was busy) starts the
            // clock at the intended time, so the server's slowness counts in full.
            let since = if due > now {
                tokio::time::sleep_until(due.into()).await;
                Instant::now()
            } else {
                if record && (now - due).as_micros() > u128::from(LATE_THRESHOLD_US) {
                    worker.stats.late += 1;
                }
                due
            };
            if record {
                worker.stats.scheduled += 1;
            }
            let scenario = worker.pick();
            worker.run(scenario, since, record).await;
        },
    }
    worker
}

fn progress_line(
    plan: &Plan,
    shared: &Shared,
    t0: Instant,
    measure_start: Instant,
    end: Instant,
    history: &mut VecDeque<(Instant, u64)>,
) -> String {
    let now = Instant::now();
    let requests = shared.live.requests.load(Ordering::Relaxed);
    let errors = shared.live.errors.load(Ordering::Relaxed);
    history.push_back((now, requests));
    while history.len() > 2 && now - history[1].0 >= RATE_WINDOW {
        history.pop_front();
    }
    let rate = match history.front() {
        Some(&(then, count)) if now > then => {
            (requests - count) as f64 / (now - then).as_secs_f64()
        }
        _ => 0.0,
    };
    let phase = if now < measure_start {
        "warmup"
    } else if now < end {
        "measuring"
    } else {
        "draining"
    };
    let total = (end - t0).as_secs_f64();
    let elapsed = (now - t0).as_secs_f64().min(total);
    format!(
        "[{}] {elapsed:5.1}/{total:.1} s {phase:<9} {rate:8.0} req/s  requests {requests}  errors {errors}",
        plan.label
    )
}
