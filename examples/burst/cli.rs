//! Command-line options and the scenario mix.

use std::path::PathBuf;
use std::str::FromStr;

use clap::Parser;

/// Extra help after the options: how to build what `burst` runs.
const AFTER_HELP: &str = "\
Build first (release profile; burst finds baseline_server next to itself):
  cargo build --release -p kassa -p kassa-examples --examples

Examples:
  target/release/examples/burst --baseline -c 64 -d 5 --mix async=100
  target/release/examples/burst --rate 2000 --baseline
  target/release/examples/burst --mix async=50,card=20,manual=10,refund=10,read=10
  target/release/examples/burst --connections-burst 2000
  target/release/examples/burst --url http://127.0.0.1:8080 --admin-token $KASSA_ADMIN_TOKEN";

/// A burst load generator for Kassa (and a bare-hyper baseline to compare it with).
#[derive(Parser, Debug, Clone)]
#[command(name = "burst", after_help = AFTER_HELP)]
pub struct Args {
    /// The `kassa` binary to start (in a fresh temp data dir) unless --url is given.
    #[arg(long, default_value = "target/release/kassa")]
    pub kassa_bin: PathBuf,
    /// Extra environment for the started Kassa (repeatable), after burst's own settings.
    #[arg(long = "kassa-env", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub kassa_env: Vec<(String, String)>,
    /// Drive an already running Kassa instead of starting one (needs --admin-token).
    #[arg(long, requires = "admin_token")]
    pub url: Option<String>,
    /// The running Kassa's admin token (merchants are created through /admin/merchants).
    #[arg(long, env = "KASSA_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Merchants to create; requests are spread round-robin over them.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub merchants: u16,
    /// Connections (one worker each, keep-alive).
    #[arg(short = 'c', long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    pub connections: u32,
    /// Measured seconds.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before the measured window (not counted).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Open loop: scenario starts per second in total, on a fixed schedule; latency is
    /// measured from each request's intended send time. Without it: closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Scenario weights: async, card, manual, refund, read, bank.
    #[arg(long, default_value = "async=70,card=20,read=10")]
    pub mix: Mix,
    /// tokio worker threads of the generator. Default 1: on a 2-core box every cycle the
    /// generator takes is one Kassa does not get; one thread drives ~15-25k req/s.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: u16,
    /// A preset: `baseline` is the same as --baseline.
    #[arg(long, value_enum)]
    pub scenario: Option<Preset>,
    /// First drive the bare-hyper baseline_server with the same client, connections and
    /// duration, then Kassa; print Kassa's figures as ratios of the baseline's.
    #[arg(long)]
    pub baseline: bool,
    /// Drive only the baseline server.
    #[arg(long, conflicts_with = "baseline")]
    pub baseline_only: bool,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Skip the verify step after the burst.
    #[arg(long)]
    pub no_verify: bool,
    /// Instead of a timed run: open N connections at once, each sending one async charge.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=200_000))]
    pub connections_burst: Option<u32>,
    /// Keep the started Kassa's temp data dir (and its log) instead of deleting it.
    #[arg(long)]
    pub keep_data: bool,
}

impl Args {
    pub fn with_baseline(&self) -> bool {
        self.baseline || self.baseline_only || self.scenario == Some(Preset::Baseline)
    }

    /// Refuses combinations clap cannot express.
    pub fn check(&self) -> Result<(), String> {
        if !(self.duration > 0.0 && self.duration <= DURATION_S_MAX) {
            return Err(format!("--duration must be in (0, {DURATION_S_MAX}] s"));
        }
        if !(self.warmup >= 0.0 && self.warmup <= DURATION_S_MAX) {
            return Err(format!("--warmup must be in [0, {DURATION_S_MAX}] s"));
        }
        if let Some(rate) = self.rate
            && !(rate > 0.0 && rate <= RATE_PER_S_MAX)
        {
            return Err(format!(
                "--rate must be in (0, {RATE_PER_S_MAX}] per second"
            ));
        }
        if self.baseline_only && self.connections_burst.is_some() {
            return Err("--connections-burst drives Kassa; drop --baseline-only".into());
        }
        Ok(())
    }
}

/// The longest run (and warmup) accepted, in seconds.
pub const DURATION_S_MAX: f64 = 3_600.0;
/// The highest open-loop rate accepted, per second.
pub const RATE_PER_S_MAX: f64 = 1_000_000.0;

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    Baseline,
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

/// What one scenario does (each HTTP request counts in latency and throughput).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    /// `POST /v1/payments` with `"async": true` (202).
    Async,
    /// A synchronous card charge (201), cycling the success / declined / insufficient cards.
    Card,
    /// A `capture: manual` charge, then a partial capture.
    Manual,
    /// A synchronous charge, then a partial refund.
    Refund,
    /// `GET /v1/payments/{id}` of a payment created earlier (an async charge if none yet).
    Read,
    /// An async bank transfer (202; the sandbox's bank settles it within a second). Async
    /// because a synchronous one waits out the whole `wait_ms` (5 s) before its 202.
    Bank,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::Async,
        Scenario::Card,
        Scenario::Manual,
        Scenario::Refund,
        Scenario::Read,
        Scenario::Bank,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Async => "async",
            Scenario::Card => "card",
            Scenario::Manual => "manual",
            Scenario::Refund => "refund",
            Scenario::Read => "read",
            Scenario::Bank => "bank",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Weighted scenarios, e.g. `async=70,card=20,read=10`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    weights: Vec<(Scenario, u32)>,
    total: u32,
}

impl Mix {
    /// Only async charges (what the baseline run sends).
    pub fn async_only() -> Mix {
        Mix {
            weights: vec![(Scenario::Async, 100)],
            total: 100,
        }
    }

    /// The scenario for a uniform draw `roll` (any u64).
    pub fn pick(&self, roll: u64) -> Scenario {
        let mut point = u32::try_from(roll % u64::from(self.total)).unwrap_or(0);
        for &(scenario, weight) in &self.weights {
            if point < weight {
                return scenario;
            }
            point -= weight;
        }
        Scenario::Async
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .weights
            .iter()
            .map(|(scenario, weight)| format!("{}={weight}", scenario.name()))
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut weights: Vec<(Scenario, u32)> = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part.split_once('=').unwrap_or((part, "1"));
            let scenario = Scenario::ALL
                .into_iter()
                .find(|s| s.name() == name.trim())
                .ok_or_else(|| {
                    format!("unknown scenario {name:?} (async, card, manual, refund, read, bank)")
                })?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("weight of {name} is not a number: {weight:?}"))?;
            if weight > 1_000_000 {
                return Err(format!("weight of {name} is above 1000000"));
            }
            if weights.iter().any(|(s, _)| *s == scenario) {
                return Err(format!("{name} appears twice in the mix"));
            }
            if weight > 0 {
                weights.push((scenario, weight));
            }
        }
        let total = weights.iter().map(|(_, w)| w).sum();
        if total == 0 {
            return Err("the mix has no scenario with a weight above 0".into());
        }
        Ok(Mix { weights, total })
    }
}
