//! `kassa-sandbox`: runs the sandbox provider on its own until Ctrl-C.
//!
//! ```text
//! KASSA_SANDBOX_SECRET=… kassa-sandbox --addr 127.0.0.1:8089 --ledger sandbox.db \
//!     --behaviour chaos.json --error-rate-percent 20 --seed 7
//! ```
//!
//! The behaviour starts from `--behaviour FILE` (JSON, the shape of `GET /sandbox/behaviour`)
//! or the default, and each behaviour flag given overrides its field. It can be replaced while
//! running with `PUT /sandbox/behaviour`. Those are the card channel's; each asynchronous
//! channel's starts from `--channel-behaviour CHANNEL=FILE` (e.g. `qr_wallet=qr.json`;
//! repeatable) or the default, and is replaced with `PUT /sandbox/channels/{channel}/behaviour`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Parser;
use kassa_channels::sandbox::{self, Behaviour, DEV_API_SECRET, SandboxConfig};

/// The sandbox card acquirer Kassa's tests and demos talk to.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8089")]
    addr: SocketAddr,
    /// SQLite ledger file; without it the ledger lives in memory.
    #[arg(long)]
    ledger: Option<PathBuf>,
    /// A fixed latency in milliseconds (sets both latency bounds).
    #[arg(long)]
    latency_ms: Option<u64>,
    /// The behaviour as a JSON file; flags below override its fields.
    #[arg(long, value_name = "FILE")]
    behaviour: Option<PathBuf>,
    /// One channel's behaviour as a JSON file (`qr_wallet`, `app_wallet`, `bank_transfer`;
    /// `card` replaces the behaviour above). Repeatable.
    #[arg(long, value_name = "CHANNEL=FILE")]
    channel_behaviour: Vec<String>,
    #[command(flatten)]
    overrides: BehaviourFlags,
}

/// One flag per [`Behaviour`] field the card channel uses (the asynchronous channels' fields
/// go in their `--channel-behaviour` files).
#[derive(Debug, clap::Args)]
struct BehaviourFlags {
    #[arg(long)]
    latency_ms_min: Option<u64>,
    #[arg(long)]
    latency_ms_max: Option<u64>,
    /// Percent of card calls answered 500/502/503 without doing the work.
    #[arg(long)]
    error_rate_percent: Option<u32>,
    /// Percent of card calls answered 429 (`Retry-After: 1`) without doing the work.
    #[arg(long)]
    rate_limit_rate_percent: Option<u32>,
    /// Percent of card calls done and then never answered.
    #[arg(long)]
    timeout_rate_percent: Option<u32>,
    /// Every card call answers 503.
    #[arg(long)]
    hard_down: bool,
    /// Count (not refuse) requests beyond this many per second.
    #[arg(long)]
    max_requests_per_s: Option<u32>,
    /// Seed of the behaviour's RNG.
    #[arg(long)]
    seed: Option<u64>,
    /// Where `charge.updated` callbacks go (http://).
    #[arg(long)]
    callback_url: Option<String>,
    #[arg(long)]
    callback_delay_ms_min: Option<u64>,
    #[arg(long)]
    callback_delay_ms_max: Option<u64>,
    /// Percent of callbacks sent twice.
    #[arg(long)]
    duplicate_callback_rate_percent: Option<u32>,
}

impl BehaviourFlags {
    fn apply(self, behaviour: &mut Behaviour) {
        fn set<T>(field: &mut T, flag: Option<T>) {
            if let Some(value) = flag {
                *field = value;
            }
        }
        set(&mut behaviour.latency_ms_min, self.latency_ms_min);
        set(&mut behaviour.latency_ms_max, self.latency_ms_max);
        set(&mut behaviour.error_rate_percent, self.error_rate_percent);
        set(
            &mut behaviour.rate_limit_rate_percent,
            self.rate_limit_rate_percent,
        );
        set(
            &mut behaviour.timeout_rate_percent,
            self.timeout_rate_percent,
        );
        behaviour.hard_down |= self.hard_down;
        if self.max_requests_per_s.is_some() {
            behaviour.max_requests_per_s = self.max_requests_per_s;
        }
        set(&mut behaviour.seed, self.seed);
        if self.callback_url.is_some() {
            behaviour.callback_url = self.callback_url;
        }
        set(
            &mut behaviour.callback_delay_ms_min,
            self.callback_delay_ms_min,
        );
        set(
            &mut behaviour.callback_delay_ms_max,
            self.callback_delay_ms_max,
        );
        set(
            &mut behaviour.duplicate_callback_rate_percent,
            self.duplicate_callback_rate_percent,
        );
    }
}

/// A behaviour JSON file.
fn read_behaviour(path: &Path) -> anyhow::Result<Behaviour> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the behaviour file {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("parsing the behaviour file {}", path.display()))
}

/// The behaviour file (or the default), then `--latency-ms`, then each behaviour flag given.
fn load_behaviour(
    file: Option<&Path>,
    latency_ms: Option<u64>,
    overrides: BehaviourFlags,
) -> anyhow::Result<Behaviour> {
    let mut behaviour = match file {
        Some(path) => read_behaviour(path)?,
        None => Behaviour::default(),
    };
    if let Some(latency_ms) = latency_ms {
        behaviour.latency_ms_min = latency_ms;
        behaviour.latency_ms_max = latency_ms;
    }
    overrides.apply(&mut behaviour);
    behaviour.validate()?;
    Ok(behaviour)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let Args {
        addr,
        ledger,
        latency_ms,
        behaviour,
        channel_behaviour,
        overrides,
    } = Args::parse();
    let behaviour = load_behaviour(behaviour.as_deref(), latency_ms, overrides)?;
    let api_secret = match std::env::var("KASSA_SANDBOX_SECRET") {
        Ok(secret) if !secret.is_empty() => secret,
        _ => {
            tracing::warn!("KASSA_SANDBOX_SECRET is not set; using the public development secret");
            DEV_API_SECRET.to_owned()
        }
    };
    let handle = sandbox::start_with_behaviour(
        SandboxConfig {
            addr,
            ledger_path: ledger,
            api_secret,
            latency_ms: 0,
        },
        behaviour,
    )
    .await
    .context("starting the sandbox")?;
    for spec in channel_behaviour {
        let (channel, file) = spec
            .split_once('=')
            .with_context(|| format!("--channel-behaviour {spec:?} is not CHANNEL=FILE"))?;
        let behaviour = read_behaviour(Path::new(file))?;
        handle
            .set_channel_behaviour(channel, behaviour)
            .with_context(|| format!("the behaviour of channel {channel:?}"))?;
    }
    println!("kassa-sandbox listening on {}", handle.base_url());
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    handle.shutdown().await;
    Ok(())
}
