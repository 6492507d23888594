//! The summary: printed for humans on stdout and, with `--json FILE`, written as JSON.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::child::Sample;
use crate::cli::Scenario;
use crate::receiver::ReceiverCounts;
use crate::stats::Stats;
use crate::verify::Check;

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl Latency {
    fn of(h: &hdrhistogram::Histogram<u64>) -> Latency {
        Latency {
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Journal {
    pub commits_per_s: f64,
    pub writes_per_s: f64,
    /// Commits (fsyncs) per journal append: below 1 when group commit batches appends.
    pub fsyncs_per_append: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    pub rss_before_kb: Option<u64>,
    pub rss_after_kb: Option<u64>,
    pub rss_peak_kb: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioCount {
    pub started: u64,
    pub completed: u64,
}

/// One target's run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub target: String,
    pub mode: String,
    pub connections: u32,
    pub duration_s: f64,
    pub requests: u64,
    pub throughput_per_s: f64,
    pub latency: Latency,
    /// Of the 2xx answers, and of the 429/503 ones (when any were shed).
    pub latency_admitted: Latency,
    pub latency_shed: Option<Latency>,
    pub statuses: BTreeMap<String, u64>,
    pub error_codes: BTreeMap<String, u64>,
    /// 429 and 503 answers (load shedding), and how many carried `Retry-After`.
    pub shed: u64,
    pub retry_after: u64,
    pub connect_errors: u64,
    pub io_errors: u64,
    pub timeouts: u64,
    /// Open loop: starts sent more than `LATE_THRESHOLD_US` late, and starts never sent.
    pub late: Option<u64>,
    pub unsent: Option<u64>,
    pub scenarios: BTreeMap<String, ScenarioCount>,
    pub journal: Option<Journal>,
    pub memory: Option<Memory>,
    /// CPU cores used on average over the window by the server and by this generator.
    pub server_cpu_cores: Option<f64>,
    pub client_cpu_cores: Option<f64>,
}

impl RunReport {
    pub fn new(
        target: &str,
        mode: String,
        connections: u32,
        stats: &Stats,
        window: (&Sample, &Sample),
    ) -> Self {
        let (before, after) = window;
        let seconds = (after.at - before.at).as_secs_f64().max(1e-9);
        let h = &stats.latency_us;
        let per_s = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?) as f64 / seconds);
        let journal = match (
            per_s(before.commits, after.commits),
            per_s(before.writes, after.writes),
        ) {
            (Some(commits_per_s), Some(writes_per_s)) => Some(Journal {
                commits_per_s,
                writes_per_s,
                fsyncs_per_append: if writes_per_s > 0.0 {
                    commits_per_s / writes_per_s
                } else {
                    0.0
                },
            }),
            _ => None,
        };
        let cores = |a: Option<f64>, b: Option<f64>| Some((b? - a?) / seconds);
        RunReport {
            target: target.to_owned(),
            mode,
            connections,
            duration_s: seconds,
            requests: stats.answers() + stats.failures(),
            throughput_per_s: stats.answers() as f64 / seconds,
            latency: Latency::of(h),
            latency_admitted: Latency::of(&stats.admitted_latency_us),
            latency_shed: (!stats.shed_latency_us.is_empty())
                .then(|| Latency::of(&stats.shed_latency_us)),
            statuses: stats
                .statuses
                .iter()
                .map(|(s, n)| (s.to_string(), *n))
                .collect(),
            error_codes: stats.error_codes.clone(),
            shed: stats.status_count(|s| s == 429 || s == 503),
            retry_after: stats.retry_after,
            connect_errors: stats.connect_errors,
            io_errors: stats.io_errors,
            timeouts: stats.timeouts,
            late: None,
            unsent: None,
            scenarios: Scenario::ALL
                .iter()
                .filter(|s| stats.started[s.index()] > 0)
                .map(|s| {
                    let count = ScenarioCount {
                        started: stats.started[s.index()],
                        completed: stats.completed[s.index()],
                    };
                    (s.name().to_owned(), count)
                })
                .collect(),
            journal,
            memory: before.rss_kb.map(|rss| Memory {
                rss_before_kb: Some(rss),
                rss_after_kb: after.rss_kb,
                rss_peak_kb: after.hwm_kb,
            }),
            server_cpu_cores: cores(before.server_cpu_s, after.server_cpu_s),
            client_cpu_cores: cores(before.client_cpu_s, after.client_cpu_s),
        }
    }

    pub fn print(&self) {
        let l = &self.latency;
        println!(
            "== {}: {}, {} connections",
            self.target, self.mode, self.connections
        );
        println!(
            "  requests     {} in {:.1} s = {:.0} req/s (answers)",
            self.requests, self.duration_s, self.throughput_per_s
        );
        println!(
            "  latency      p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {:.0} (µs)",
            l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us, l.mean_us
        );
        if let Some(shed) = &self.latency_shed {
            let a = &self.latency_admitted;
            println!(
                "    admitted   p50 {}  p99 {}  max {} (µs); shed p50 {}  p99 {}  max {} (µs)",
                a.p50_us, a.p99_us, a.max_us, shed.p50_us, shed.p99_us, shed.max_us
            );
        }
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        println!("  statuses     {}", statuses.join("  "));
        if !self.error_codes.is_empty() {
            let codes: Vec<String> = self
                .error_codes
                .iter()
                .map(|(c, n)| format!("{c}: {n}"))
                .collect();
            println!("  error codes  {}", codes.join("  "));
        }
        if self.shed > 0 {
            println!(
                "  shed         {} (429/503), {} with Retry-After",
                self.shed, self.retry_after
            );
        }
        println!(
            "  conn errors  connect {}  io {}  timeouts {}",
            self.connect_errors, self.io_errors, self.timeouts
        );
        if let (Some(late), Some(unsent)) = (self.late, self.unsent) {
            println!("  schedule     {late} starts sent late (> 2 ms), {unsent} never sent");
        }
        if !self.scenarios.is_empty() {
            let parts: Vec<String> = self
                .scenarios
                .iter()
                .map(|(name, c)| format!("{name} {}/{}", c.completed, c.started))
                .collect();
            println!("  scenarios    {} (completed/started)", parts.join("  "));
        }
        if let Some(j) = &self.journal {
            println!(
                "  journal      {:.0} commits/s, {:.0} appends/s, {:.3} fsyncs per append",
                j.commits_per_s, j.writes_per_s, j.fsyncs_per_append
            );
        }
        if let Some(m) = &self.memory {
            let mib = |kb: Option<u64>| {
                kb.map_or("?".to_owned(), |kb| format!("{:.1}", kb as f64 / 1024.0))
            };
            println!(
                "  server RSS   before {} MiB, after {} MiB, peak {} MiB",
                mib(m.rss_before_kb),
                mib(m.rss_after_kb),
                mib(m.rss_peak_kb)
            );
        }
        let cores = |c: Option<f64>| c.map_or("?".to_owned(), |c| format!("{c:.2}"));
        println!(
            "  cpu          server {} cores, generator {} cores",
            cores(self.server_cpu_cores),
            cores(self.client_cpu_cores)
        );
    }
}

/// Kassa's figures over the baseline's.
#[derive(Debug, Clone, Serialize)]
pub struct Ratios {
    pub throughput: f64,
    pub p50: f64,
    pub p99: f64,
}

impl Ratios {
    pub fn new(kassa: &RunReport, baseline: &RunReport) -> Ratios {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        Ratios {
            throughput: ratio(kassa.throughput_per_s, baseline.throughput_per_s),
            p50: ratio(kassa.latency.p50_us as f64, baseline.latency.p50_us as f64),
            p99: ratio(kassa.latency.p99_us as f64, baseline.latency.p99_us as f64),
        }
    }

    pub fn print(&self) {
        println!(
            "== kassa / baseline: throughput {:.3}x ({:.1} %), p50 {:.2}x, p99 {:.2}x",
            self.throughput,
            self.throughput * 100.0,
            self.p50,
            self.p99
        );
    }
}

/// Everything, for `--json`.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub baseline: Option<RunReport>,
    pub kassa: Option<RunReport>,
    pub ratios: Option<Ratios>,
    pub webhooks: Option<ReceiverCounts>,
    pub verify: Vec<Check>,
    pub pass: bool,
}

pub fn print_checks(checks: &[Check]) {
    println!("== verify");
    for check in checks {
        let verdict = match (check.pass, check.warn) {
            (false, _) => "FAIL",
            (true, true) => "WARN",
            (true, false) => "PASS",
        };
        println!("  {verdict}  {}: {}", check.name, check.detail);
    }
}
