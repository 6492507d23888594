//! `burst`: a load generator for Kassa, with a bare-hyper baseline to compare against.
//!
//! ```text
//! cargo build --release -p kassa -p kassa-examples --examples
//! target/release/examples/burst --baseline -c 64 -d 5 --mix async=100   # closed loop, vs baseline
//! target/release/examples/burst --mix card=100                            # synchronous card charges
//! target/release/examples/burst --rate 2000 --baseline                    # open loop at 2000/s
//! target/release/examples/burst --mix async=50,card=20,manual=10,refund=10,read=10
//! target/release/examples/burst --connections-burst 2000                  # 2000 connections at once
//! target/release/examples/burst --url http://127.0.0.1:8080 --admin-token "$KASSA_ADMIN_TOKEN"
//! ```
//!
//! (or `cargo run --release -p kassa-examples --example burst -- OPTIONS`.)
//!
//! **Target.** Without `--url`, burst starts `--kassa-bin` (default `target/release/kassa`)
//! itself: a fresh temp data dir, `127.0.0.1:0`, a random admin token, the card and
//! bank-transfer rate limits raised out of the way, a high open-files limit, then any
//! `--kassa-env KEY=VALUE`. The child is SIGKILLed when burst exits (Ctrl-C and panics too).
//! It creates `--merchants` merchants whose webhooks go to an in-process receiver.
//!
//! **Client.** One hyper HTTP/1.1 keep-alive connection per worker (`-c`), every request
//! signed as a real merchant with a fresh `Idempotency-Key` and `merchant_order_id`. The
//! generator runs on `--threads` tokio threads (default 1: on a 2-core box each cycle it takes
//! is one Kassa does not get; the report shows the cores each side used).
//!
//! **Modes.** Closed loop (default) for `--duration` s after `--warmup` s; open loop with
//! `--rate` (scenario starts per second on a fixed schedule, latency from the intended start:
//! coordinated omission corrected; late and never-sent starts are reported);
//! `--connections-burst N`. `--baseline` first drives `baseline_server` (found next to this
//! binary) with the same client, connections and duration, sending the async charge (same
//! size, signed the same way), and prints Kassa's throughput and p50/p99 as ratios of it.
//!
//! **Report.** HdrHistogram latencies (µs, 3 significant figures), statuses, `error.code`s,
//! shedding, connection errors, Kassa's journal commits/appends per second (`/metrics`), RSS
//! and CPU; `--json FILE` writes it all. Then the verify step (see `burst/verify.rs`; skip with
//! `--no-verify`) prints PASS/FAIL per invariant; any FAIL exits 1.

#[path = "burst/child.rs"]
mod child;
#[path = "burst/cli.rs"]
mod cli;
#[path = "burst/conn.rs"]
mod conn;
#[path = "burst/listing.rs"]
mod listing;
#[path = "burst/load.rs"]
mod load;
#[path = "burst/progress.rs"]
mod progress;
#[path = "burst/receiver.rs"]
mod receiver;
#[path = "burst/report.rs"]
mod report;
#[path = "burst/scenario.rs"]
mod scenario;
#[path = "burst/stats.rs"]
mod stats;
#[path = "burst/storm.rs"]
mod storm;
#[path = "burst/verify.rs"]
mod verify;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use kassa_client::AdminClient;

use crate::child::Probe;
use crate::cli::{Args, Mix};
use crate::conn::Target;
use crate::load::Plan;
use crate::report::{Ratios, Report, RunReport};
use crate::scenario::{Merchant, Shared};
use crate::stats::Acks;
use crate::verify::Check;

/// Open files the generator needs beyond its connections (receiver, verify pool, children).
const SPARE_FILES: u64 = 512;

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(message) = args.check() {
        eprintln!("burst: {message}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(args.threads))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("burst: starting the runtime: {error}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async {
        tokio::select! {
            code = run(args) => code,
            _ = tokio::signal::ctrl_c() => {
                // Dropping `run` drops the children, which kills them.
                eprintln!("\nburst: interrupted");
                ExitCode::from(130)
            }
        }
    })
}

async fn run(args: Args) -> ExitCode {
    match try_run(&args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("burst: error: {message}");
            ExitCode::from(2)
        }
    }
}

/// 64 random bits (a fixed fallback if the OS has no randomness: ids still carry the pid).
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    match getrandom::fill(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => u64::from(std::process::id()).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    }
}

fn raise_nofile(args: &Args) {
    let needed = u64::from(args.connections_burst.unwrap_or(args.connections)) + SPARE_FILES;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < needed => eprintln!(
            "burst: warning: open-files limit {limit} < {needed} needed; raise the hard limit \
             (ulimit -Hn) or lower the connections"
        ),
        Ok(_) => {}
        Err(error) => eprintln!("burst: warning: could not raise the open-files limit: {error}"),
    }
}

async fn try_run(args: &Args) -> Result<bool, String> {
    raise_nofile(args);
    let run_id = format!("b{:08x}", random_u64() as u32);
    let mut report = Report::default();
    if args.with_baseline() {
        let server = child::start_baseline().await?;
        eprintln!("burst: baseline_server at {}", server.base_url);
        // Fake merchants with Kassa-sized secrets: signing costs the same.
        let merchants = (0..args.merchants)
            .map(|i| Merchant::new(format!("mch_baseline{i}"), format!("sk_{:064x}", i)))
            .collect();
        let shared = shared(merchants, Mix::async_only(), &run_id, true);
        let probe = Probe {
            metrics_base_url: None,
            pid: server.pid,
        };
        let target = Arc::new(Target::new(server.addr));
        let (run, _) = drive(args, "baseline", shared, target, &probe).await;
        server.stop().await;
        run.print();
        report.baseline = Some(run);
    }
    if args.baseline_only {
        report.pass = true;
        write_json(args, &report)?;
        return Ok(true);
    }

    let admin_token = match &args.admin_token {
        Some(token) if args.url.is_some() => token.clone(),
        _ => format!("adm_{:016x}{:016x}", random_u64(), random_u64()),
    };
    let mut kassa = match &args.url {
        Some(_) => None,
        None => {
            let started = child::start_kassa(
                &args.kassa_bin,
                &admin_token,
                &args.kassa_env,
                args.keep_data,
            );
            Some(started.await?)
        }
    };
    let base_url = match (&args.url, &kassa) {
        (Some(url), _) => url.trim_end_matches('/').to_owned(),
        (None, Some(process)) => process.base_url.clone(),
        (None, None) => unreachable!("a Kassa was started above when there is no --url"),
    };
    eprintln!("burst: Kassa at {base_url}");
    let receiver = receiver::Receiver::start()
        .await
        .map_err(|e| format!("starting the webhook receiver: {e}"))?;
    let admin = AdminClient::new(&base_url, &admin_token);
    let mut merchants = Vec::new();
    let mut webhook_secrets = Vec::new();
    for index in 0..usize::from(args.merchants) {
        let name = format!("burst {run_id} #{index}");
        let credentials = admin
            .create_merchant(&name, Some(&receiver.url(index)))
            .await
            .map_err(|e| format!("creating merchant {index}: {e}"))?;
        merchants.push(Merchant::new(credentials.id, credentials.secret));
        webhook_secrets.push(credentials.webhook_secret);
    }
    receiver.set_secrets(webhook_secrets);
    let addr = resolve(&base_url).await?;
    let probe = Probe {
        metrics_base_url: Some(base_url.clone()),
        pid: kassa.as_ref().and_then(|process| process.pid),
    };
    let mix = match args.connections_burst {
        Some(_) => Mix::async_only(),
        None => args.mix.clone(),
    };
    let shared = shared(merchants.clone(), mix, &run_id, false);
    let target = Arc::new(Target::new(addr));
    let (run, acks) = drive(args, "kassa", Arc::clone(&shared), target, &probe).await;
    run.print();
    if let Some(baseline) = &report.baseline {
        let ratios = Ratios::new(&run, baseline);
        ratios.print();
        report.ratios = Some(ratios);
    }
    report.kassa = Some(run);

    let mut checks = vec![no_internal_errors(&shared)];
    if !args.no_verify {
        checks.extend(verify::verify(&base_url, &merchants, &acks, &receiver).await);
    }
    if let Some(process) = kassa.as_mut() {
        let exited = process.exited();
        checks.push(Check {
            name: "Kassa still running".into(),
            pass: exited.is_none(),
            warn: false,
            detail: exited.map_or("alive".into(), |status| format!("exited: {status}")),
        });
    }
    report::print_checks(&checks);
    report.webhooks = Some(receiver.counts());
    report.pass = checks.iter().all(|check| check.pass);
    report.verify = checks;
    println!("== {}", if report.pass { "PASS" } else { "FAIL" });
    write_json(args, &report)?;
    if let Some(mut process) = kassa {
        // A failed run keeps Kassa's data dir and log for a look (the path is printed).
        if let Some(dir) = process.dir.as_mut().filter(|_| !report.pass) {
            dir.keep = true;
        }
        process.stop().await;
    }
    Ok(report.pass)
}

fn shared(merchants: Vec<Merchant>, mix: Mix, run_id: &str, baseline: bool) -> Arc<Shared> {
    Arc::new(Shared {
        merchants,
        mix,
        run_id: run_id.to_owned(),
        baseline,
        live: Arc::default(),
    })
}

/// Runs the configured load (timed or connection storm) against `target`.
async fn drive(
    args: &Args,
    label: &str,
    shared: Arc<Shared>,
    target: Arc<Target>,
    probe: &Probe,
) -> (RunReport, Acks) {
    if let Some(connections) = args.connections_burst {
        let before = probe.sample().await;
        let outcome = storm::run(shared, target, connections).await;
        let after = probe.sample().await;
        let mode = format!(
            "connections burst: {} of {connections} connected, all answered in {:.2} s",
            outcome.connected,
            outcome.elapsed.as_secs_f64()
        );
        let mut run = RunReport::new(label, mode, connections, &outcome.stats, (&before, &after));
        // Throughput over the burst itself, not over the probe's window.
        run.duration_s = outcome.elapsed.as_secs_f64().max(1e-9);
        run.throughput_per_s = outcome.stats.answers() as f64 / run.duration_s;
        return (run, outcome.acks);
    }
    let plan = Plan {
        label: label.to_owned(),
        connections: args.connections,
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
        rate: args.rate,
    };
    let outcome = load::run(Arc::clone(&shared), target, &plan, probe).await;
    if outcome.panicked > 0 {
        eprintln!("burst: warning: {} worker tasks panicked", outcome.panicked);
    }
    let mode = match args.rate {
        Some(rate) => format!("open loop at {rate}/s, mix {}", shared.mix),
        None => format!("closed loop, mix {}", shared.mix),
    };
    let (before, after) = &outcome.window;
    let mut run = RunReport::new(
        label,
        mode,
        args.connections,
        &outcome.stats,
        (before, after),
    );
    if args.rate.is_some() {
        run.late = Some(outcome.stats.late);
        run.unsent = Some(outcome.unsent);
    }
    (run, outcome.acks)
}

fn no_internal_errors(shared: &Shared) -> Check {
    let internal = shared.live.internal_errors.load(Ordering::Relaxed);
    Check {
        name: "no 5xx answers besides 503 shedding".into(),
        pass: internal == 0,
        warn: false,
        detail: format!("{internal} answers 500-599 (503 excluded), warmup included"),
    }
}

async fn resolve(base_url: &str) -> Result<SocketAddr, String> {
    let authority = base_url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{base_url}: only http:// URLs are supported"))?
        .split('/')
        .next()
        .unwrap_or_default();
    tokio::net::lookup_host(authority)
        .await
        .map_err(|e| format!("resolving {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority} resolves to nothing"))
}

fn write_json(args: &Args, report: &Report) -> Result<(), String> {
    let Some(path) = &args.json else {
        return Ok(());
    };
    let text = serde_json::to_string_pretty(report).map_err(|e| format!("encoding JSON: {e}"))?;
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    eprintln!("burst: wrote {}", path.display());
    Ok(())
}
