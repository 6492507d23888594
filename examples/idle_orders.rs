//! `idle_orders`: what one live order actor costs in RSS, and that pushing many orders through
//! leaves RSS bounded by `orders.orders_live_max`, not by the order count (docs/PERFORMANCE.md,
//! "Memory").
//!
//! ```text
//! cargo build --release -p kassa -p kassa-examples --examples
//! # Per-actor cost: the same 100 000 async charges through two Kassas, one keeping every
//! # order live, one keeping at most 1 000; the RSS difference over the live difference.
//! target/release/examples/idle_orders --orders 100000
//! # Bounded: 1 000 000 orders through one Kassa keeping at most 10 000 live, RSS every 10 %.
//! target/release/examples/idle_orders --orders 1000000 --live-max 10000
//! ```
//!
//! Everything else in the two runs is the same (store caches, merchants, the idempotency
//! records, the sandbox's ledger), so the difference is the live actors: their state, mailbox,
//! task and the shard's bookkeeping. Orders idle for an hour before passivating, so none leave
//! by idleness during the run.

// burst's child-process helpers; idle_orders uses only part of them.
#[allow(dead_code)]
#[path = "burst/child.rs"]
mod child;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use kassa_client::{AdminClient, HttpClient, MerchantClient};

/// Concurrent charges in flight while orders are pushed.
const PUSH_CONCURRENCY_MAX: usize = 128;
/// How long Kassa may take to go quiet (every order settled, every write committed).
const SETTLE_TIMEOUT_S: u64 = 300;
/// How often the settle check samples `/metrics`.
const SETTLE_POLL_MS: u64 = 1_000;
/// Per-request timeout of the pushing client.
const REQUEST_TIMEOUT_MS: u64 = 30_000;
/// Orders kept live by the comparison run that measures everything but the actors.
const LIVE_MAX_SMALL: usize = 1_000;
/// An hour: no order passivates for being idle during a run.
const ORDER_IDLE_MS: &str = "3600000";

#[derive(Parser, Debug)]
#[command(about = "RSS per live order actor, and RSS bounded by orders_live_max")]
struct Args {
    /// The `kassa` binary to start (twice for the per-actor comparison).
    #[arg(long, default_value = "target/release/kassa")]
    kassa_bin: PathBuf,
    /// Orders (async card charges) pushed through each Kassa.
    #[arg(long, default_value_t = 100_000)]
    orders: usize,
    /// Bounded mode: one Kassa with this `orders_live_max`, RSS sampled as orders pass.
    /// Without it: the per-actor comparison.
    #[arg(long)]
    live_max: Option<usize>,
}

/// What a settled Kassa reports.
struct Settled {
    live: u64,
    rss_kib: u64,
}

pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    match getrandom::fill(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => u64::from(std::process::id()).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    match args.live_max {
        Some(live_max) => bounded(&args, live_max).await,
        None => per_actor(&args).await,
    }
}

async fn per_actor(args: &Args) -> Result<(), String> {
    let all = run(args, args.orders + LIVE_MAX_SMALL).await?;
    let few = run(args, LIVE_MAX_SMALL).await?;
    let actors = all.live.saturating_sub(few.live).max(1);
    let bytes = (all.rss_kib.saturating_sub(few.rss_kib) * 1024) / actors;
    println!(
        "live {} vs {}: RSS {} KiB vs {} KiB → {bytes} bytes ({:.2} KiB) per live order actor",
        all.live,
        few.live,
        all.rss_kib,
        few.rss_kib,
        bytes as f64 / 1024.0
    );
    Ok(())
}

async fn bounded(args: &Args, live_max: usize) -> Result<(), String> {
    let settled = run(args, live_max).await?;
    println!(
        "after {} orders: live {} (orders_live_max {live_max}), RSS {} KiB",
        args.orders, settled.live, settled.rss_kib
    );
    Ok(())
}

/// Starts Kassa with `live_max`, pushes `args.orders` async charges (printing RSS every
/// tenth), waits until it is quiet and reads the live orders and RSS.
async fn run(args: &Args, live_max: usize) -> Result<Settled, String> {
    let token = format!("idle-orders-{:016x}", random_u64());
    let env = vec![
        (
            "KASSA_ORDERS_ORDERS_LIVE_MAX".to_owned(),
            live_max.to_string(),
        ),
        (
            "KASSA_ORDERS_ORDER_IDLE_MS".to_owned(),
            ORDER_IDLE_MS.to_owned(),
        ),
        (
            "KASSA_HTTP_REQUESTS_INFLIGHT_MAX".to_owned(),
            "100000".to_owned(),
        ),
    ];
    let kassa = child::start_kassa(&args.kassa_bin, &token, &env, false).await?;
    let probe = child::Probe {
        metrics_base_url: Some(kassa.base_url.clone()),
        pid: kassa.pid,
    };
    let admin = AdminClient::new(&kassa.base_url, &token);
    let credentials = admin
        .create_merchant("Idle Orders Ltd", None)
        .await
        .map_err(|e| e.to_string())?;
    let http =
        HttpClient::new(&kassa.base_url).with_timeout(Duration::from_millis(REQUEST_TIMEOUT_MS));
    let merchant = MerchantClient::with_http(http, &credentials.id, &credentials.secret);
    eprintln!("orders_live_max {live_max}: pushing {} orders", args.orders);
    let started = Instant::now();
    let tenth = (args.orders / 10).max(1);
    let mut answered = 0usize;
    let mut refused = 0usize;
    let mut pushes = futures::stream::iter(0..args.orders)
        .map(|i| push(&merchant, i))
        .buffer_unordered(PUSH_CONCURRENCY_MAX);
    while let Some(accepted) = pushes.next().await {
        answered += 1;
        refused += usize::from(!accepted);
        if answered.is_multiple_of(tenth) {
            let sample = probe.sample().await;
            eprintln!(
                "  {answered:>8} orders  {:>6.1} s  RSS {:>8} KiB  live {}",
                started.elapsed().as_secs_f64(),
                sample.rss_kb.unwrap_or(0),
                live_orders(&kassa.base_url).await.unwrap_or(0)
            );
        }
    }
    if refused > 0 {
        return Err(format!(
            "{refused} of {} charges were not accepted",
            args.orders
        ));
    }
    let settled = settle(&kassa.base_url, &probe).await?;
    kassa.stop().await;
    Ok(settled)
}

/// One async card charge; `true` when Kassa accepted it (202).
async fn push(merchant: &MerchantClient, i: usize) -> bool {
    let order = format!("idle-{i}-{:08x}", random_u64() as u32);
    let body = serde_json::json!({
        "amount": "10.00", "currency": "USD", "merchant_order_id": order, "async": true,
        "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"},
    });
    merchant
        .post_json("/v1/payments", &body, Some(&order))
        .await
        .is_ok_and(|response| response.status == 202)
}

/// Waits until the journal has taken no write for one poll (every order settled, every
/// notification recorded), then reads the live orders and RSS.
async fn settle(base_url: &str, probe: &child::Probe) -> Result<Settled, String> {
    let deadline = Instant::now() + Duration::from_secs(SETTLE_TIMEOUT_S);
    let mut last_writes = None;
    loop {
        tokio::time::sleep(Duration::from_millis(SETTLE_POLL_MS)).await;
        let sample = probe.sample().await;
        if sample.writes.is_some() && sample.writes == last_writes {
            return Ok(Settled {
                live: live_orders(base_url).await.unwrap_or(0),
                rss_kib: sample.rss_kb.unwrap_or(0),
            });
        }
        if Instant::now() > deadline {
            return Err(format!("Kassa still writing after {SETTLE_TIMEOUT_S} s"));
        }
        last_writes = sample.writes;
    }
}

async fn live_orders(base_url: &str) -> Option<u64> {
    let response = HttpClient::new(base_url)
        .send("GET", "/metrics", &[], Vec::new())
        .await
        .ok()?;
    response
        .text()
        .lines()
        .find_map(|line| line.strip_prefix("kassa_orders_live "))
        .and_then(|value| value.trim().parse().ok())
}
