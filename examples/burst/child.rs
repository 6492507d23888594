//! The processes `burst` drives: a `kassa serve` in a fresh temp data dir, or baseline_server;
//! both print `listening on http://ADDR` first. Children are SIGKILLed when dropped (Ctrl-C and
//! panics included). [`Probe`] samples a target's `/metrics`, RSS and CPU time.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// How long a child may take to print its `listening on` line.
const START_TIMEOUT_S: u64 = 60;
/// How long one `GET /metrics` may take.
const METRICS_TIMEOUT_MS: u64 = 5_000;
/// Rate limit and burst given to every channel the scenarios use: high enough never to throttle.
const CHANNEL_RATE_PER_S: &str = "1000000";
/// Clock ticks per second of /proc/PID/stat times (`getconf CLK_TCK`, 100 on Linux).
const CLOCK_TICKS_PER_S: f64 = 100.0;
/// Raises the child's open-files limit (hard limit if 65536 is above it), then runs it.
const RAISE_NOFILE: &str =
    r#"ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$0" "$@""#;

/// A temp dir removed on drop (unless kept).
pub struct TempDir {
    pub path: PathBuf,
    pub keep: bool,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("kept Kassa's data dir and log: {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A running child that listens on `addr`. Field order matters: the child dies before its
/// data dir is removed.
pub struct Process {
    child: Child,
    pub pid: Option<u32>,
    pub addr: SocketAddr,
    pub base_url: String,
    pub dir: Option<TempDir>,
}

impl Process {
    /// SIGKILL and reap.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    /// Whether the process has exited (and how), without waiting.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(error) => Some(format!("unknown ({error})")),
        }
    }
}

/// Starts `kassa serve` on 127.0.0.1:0 in a new temp data dir, with channel rate limits out of
/// the way and `extra` environment last. Inherited `KASSA_*` variables are removed.
pub async fn start_kassa(
    bin: &Path,
    admin_token: &str,
    extra: &[(String, String)],
    keep: bool,
) -> Result<Process, String> {
    if !bin.is_file() {
        return Err(format!(
            "{} not found: build it with `cargo build --release -p kassa` or pass --kassa-bin",
            bin.display()
        ));
    }
    let path = std::env::temp_dir().join(format!(
        "kassa-burst-{}-{:08x}",
        std::process::id(),
        crate::random_u64() as u32
    ));
    let data = path.join("data");
    std::fs::create_dir_all(&data).map_err(|e| format!("creating {}: {e}", data.display()))?;
    let dir = TempDir { path, keep };
    let log_path = dir.path.join("kassa.log");
    let log = std::fs::File::create(&log_path).map_err(|e| format!("creating the log: {e}"))?;
    let stderr = log
        .try_clone()
        .map_err(|e| format!("sharing the log: {e}"))?;
    let mut command = Command::new("sh");
    command.arg("-c").arg(RAISE_NOFILE).arg(bin).arg("serve");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("KASSA_") {
            command.env_remove(key);
        }
    }
    command
        .env("KASSA_HTTP_ADDR", "127.0.0.1:0")
        .env("KASSA_SANDBOX_ADDR", "127.0.0.1:0")
        .env("KASSA_DATA_DIR", &data)
        .env("KASSA_ADMIN_TOKEN", admin_token);
    for channel in ["CARD", "BANK_TRANSFER"] {
        command
            .env(
                format!("KASSA_CHANNELS_{channel}_RATE_PER_S"),
                CHANNEL_RATE_PER_S,
            )
            .env(
                format!("KASSA_CHANNELS_{channel}_BURST"),
                CHANNEL_RATE_PER_S,
            );
    }
    command.envs(extra.iter().map(|(k, v)| (k, v)));
    command.stderr(Stdio::from(stderr));
    let sink = tokio::fs::File::from_std(log);
    let (child, addr) = spawn_listening(command, sink).await.map_err(|error| {
        let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "{error}\n--- {} ---\n{}",
            log_path.display(),
            tail.join("\n")
        )
    })?;
    Ok(Process {
        pid: child.id(),
        child,
        addr,
        base_url: format!("http://{addr}"),
        dir: Some(dir),
    })
}

/// Starts baseline_server (next to this executable) on 127.0.0.1:0.
pub async fn start_baseline() -> Result<Process, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding this executable: {e}"))?;
    let bin = exe.with_file_name("baseline_server");
    if !bin.is_file() {
        return Err(format!(
            "{} not found: build it with `cargo build --release -p kassa-examples --examples`",
            bin.display()
        ));
    }
    let mut command = Command::new("sh");
    command.arg("-c").arg(RAISE_NOFILE).arg(&bin);
    command
        .args(["--addr", "127.0.0.1:0"])
        .stderr(Stdio::inherit());
    let (child, addr) = spawn_listening(command, tokio::io::sink()).await?;
    Ok(Process {
        pid: child.id(),
        child,
        addr,
        base_url: format!("http://{addr}"),
        dir: None,
    })
}

async fn spawn_listening(
    mut command: Command,
    sink: impl tokio::io::AsyncWrite + Unpin + Send + 'static,
) -> Result<(Child, SocketAddr), String> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|e| format!("spawning: {e}"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or("the child's stdout is not piped")?;
    let mut lines = BufReader::new(stdout);
    let wait = async {
        let mut line = String::new();
        loop {
            line.clear();
            match lines.read_line(&mut line).await {
                Ok(0) | Err(_) => return Err("exited before `listening on http://...`".to_owned()),
                Ok(_) => {}
            }
            if let Some(addr) = line.trim().strip_prefix("listening on http://") {
                return addr
                    .trim_end_matches('/')
                    .parse::<SocketAddr>()
                    .map_err(|e| format!("bad address in {line:?}: {e}"));
            }
        }
    };
    let addr = tokio::time::timeout(Duration::from_secs(START_TIMEOUT_S), wait)
        .await
        .map_err(|_| format!("no `listening on` line within {START_TIMEOUT_S} s"))??;
    tokio::spawn(drain(lines, sink));
    Ok((child, addr))
}

/// Copies the rest of the child's stdout to `sink`, so the pipe never fills.
async fn drain(mut lines: BufReader<ChildStdout>, mut sink: impl tokio::io::AsyncWrite + Unpin) {
    let mut line = Vec::new();
    while let Ok(n) = lines.read_until(b'\n', &mut line).await {
        if n == 0 || sink.write_all(&line).await.is_err() {
            break;
        }
        line.clear();
    }
}

/// What [`Probe::sample`] reads.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub commits: Option<u64>,
    pub writes: Option<u64>,
    pub rss_kb: Option<u64>,
    pub hwm_kb: Option<u64>,
    pub server_cpu_s: Option<f64>,
    pub client_cpu_s: Option<f64>,
}

/// Where to sample: Kassa's `/metrics` (any Kassa) and the server's /proc entry (a local child).
#[derive(Debug, Clone, Default)]
pub struct Probe {
    pub metrics_base_url: Option<String>,
    pub pid: Option<u32>,
}

impl Probe {
    pub async fn sample(&self) -> Sample {
        let (commits, writes) = match &self.metrics_base_url {
            Some(base_url) => journal_counters(base_url).await,
            None => (None, None),
        };
        let status = self.pid.and_then(|pid| read_proc(pid, "status"));
        let field = |name: &str| status.as_deref().and_then(|text| status_kb(text, name));
        Sample {
            at: Instant::now(),
            commits,
            writes,
            rss_kb: field("VmRSS:"),
            hwm_kb: field("VmHWM:"),
            server_cpu_s: self.pid.and_then(|pid| cpu_seconds(&pid.to_string())),
            client_cpu_s: cpu_seconds("self"),
        }
    }
}

async fn journal_counters(base_url: &str) -> (Option<u64>, Option<u64>) {
    let client = kassa_client::HttpClient::new(base_url)
        .with_timeout(Duration::from_millis(METRICS_TIMEOUT_MS));
    let Ok(response) = client.send("GET", "/metrics", &[], Vec::new()).await else {
        return (None, None);
    };
    let text = response.text();
    let metric = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .map(|value| value as u64)
    };
    (
        metric("kassa_journal_commits_total"),
        metric("kassa_journal_writes_total"),
    )
}

fn read_proc(pid: u32, file: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()
}

/// `VmRSS:    1234 kB` → 1234.
fn status_kb(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// utime + stime of /proc/{who}/stat, in seconds.
fn cpu_seconds(who: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{who}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3 (`state`);
    // utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / CLOCK_TICKS_PER_S)
}
