//! [`Kassa`]: one `kassa serve` process under test.
//!
//! The harness owns a temp dir per instance: `data/` is `KASSA_DATA_DIR`, `kassa.log` collects
//! the process's stdout and stderr across restarts (drained by two threads, so the pipes never
//! fill). A restart keeps the data dir and the admin token and gets a new port. Dropping a
//! `Kassa` SIGKILLs the process; if the test is panicking, the log's tail is printed, the temp
//! dir is kept for inspection and the log is copied to `tests/artefacts/`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kassa_client::{AdminClient, MerchantClient, MerchantCredentials};
use tokio::sync::oneshot;

use crate::cli::{CliOutput, run_cli};

/// How long `kassa serve` may take to print its `listening on` line.
pub const START_TIMEOUT_MS_DEFAULT: u64 = 60_000;
/// How long `kassa serve` may take to exit after SIGTERM.
pub const STOP_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// How often [`Kassa::stop`] checks whether the process has exited.
const STOP_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Lines of the log shown in panic messages.
const LOG_TAIL_LINES: usize = 60;

/// How to start an instance: extra environment and timeouts.
#[derive(Debug, Clone)]
pub struct KassaOptions {
    env: Vec<(String, String)>,
    start_timeout: Duration,
    stop_timeout: Duration,
}

impl Default for KassaOptions {
    fn default() -> Self {
        KassaOptions {
            env: Vec::new(),
            start_timeout: Duration::from_millis(START_TIMEOUT_MS_DEFAULT),
            stop_timeout: Duration::from_millis(STOP_TIMEOUT_MS_DEFAULT),
        }
    }
}

impl KassaOptions {
    pub fn new() -> Self {
        Self::default()
    }

    /// An extra environment variable for `kassa serve` (e.g. `KASSA_SANDBOX_LATENCY_MS`). Set
    /// after the harness's own, so it can override them.
    pub fn env(mut self, key: &str, value: impl ToString) -> Self {
        self.env.push((key.to_owned(), value.to_string()));
        self
    }

    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }
}

/// The log file both drain threads append to.
#[derive(Debug)]
struct Log {
    path: PathBuf,
    file: Mutex<File>,
}

impl Log {
    fn line(&self, stream: &str, line: &[u8]) {
        let mut text = format!("[{stream}] ").into_bytes();
        text.extend_from_slice(line);
        if !text.ends_with(b"\n") {
            text.push(b'\n');
        }
        // A poisoned lock only means another drain thread panicked mid-write; keep logging.
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        // Losing a log line must not fail the test; the log is for humans.
        let _ = file.write_all(&text);
    }
}

/// One `kassa serve` process (or a stopped one, between [`Kassa::stop`] and [`Kassa::restart`]).
#[derive(Debug)]
pub struct Kassa {
    options: KassaOptions,
    root: tempfile::TempDir,
    admin_token: String,
    log: Arc<Log>,
    child: Option<Child>,
    base_url: String,
    starts: u32,
}

impl Kassa {
    /// Builds (once) and starts `kassa serve` on a fresh data dir; returns once it printed its
    /// `listening on` line. Panics with the log's tail if it does not within the start timeout.
    pub async fn start(options: KassaOptions) -> Kassa {
        let root = tempfile::Builder::new()
            .prefix("kassa-e2e-")
            .tempdir()
            .expect("creating a temp dir");
        std::fs::create_dir(root.path().join("data")).expect("creating the data dir");
        let log_path = root.path().join("kassa.log");
        let file = File::create(&log_path).expect("creating the log file");
        let mut kassa = Kassa {
            options,
            root,
            admin_token: random_token(),
            log: Arc::new(Log {
                path: log_path,
                file: Mutex::new(file),
            }),
            child: None,
            base_url: String::new(),
            starts: 0,
        };
        kassa.spawn().await;
        kassa
    }

    /// Starts with default options.
    pub async fn start_default() -> Kassa {
        Self::start(KassaOptions::new()).await
    }

    /// `http://127.0.0.1:PORT` (or `https://` when it serves TLS) of the current run.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// `KASSA_DATA_DIR`, kept across restarts.
    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    pub fn log_path(&self) -> &Path {
        &self.log.path
    }

    /// Everything the process wrote to stdout and stderr so far, across restarts.
    pub fn log_contents(&self) -> String {
        std::fs::read_to_string(&self.log.path).unwrap_or_default()
    }

    /// The process id of the running server, if any.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_)) | Err(_)) | None => false,
        }
    }

    /// The exit status if the process has exited on its own (and reaps it); `None` while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        self.log
            .line("harness", format!("exited: {status}").as_bytes());
        Some(status)
    }

    /// One series of `GET /metrics` (its whole name with labels, e.g.
    /// `kassa_notifier_broker_connected{role="relay"}`); panics if it is missing.
    pub async fn metric(&self, series: &str) -> u64 {
        let response = kassa_client::HttpClient::new(self.base_url())
            .send("GET", "/metrics", &[], Vec::new())
            .await
            .expect("GET /metrics");
        assert_eq!(response.status, 200, "GET /metrics");
        let text = response.text();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
    }

    /// An operator client for the current run.
    pub fn admin(&self) -> AdminClient {
        AdminClient::new(&self.base_url, &self.admin_token)
    }

    /// Creates a merchant through `POST /admin/merchants`; panics if that fails.
    pub async fn new_merchant_credentials(&self, name: &str) -> MerchantCredentials {
        self.admin()
            .create_merchant(name, None)
            .await
            .unwrap_or_else(|error| panic!("creating merchant {name:?} failed: {error}"))
    }

    /// Creates a merchant and returns a client signed as it.
    pub async fn new_merchant(&self, name: &str) -> MerchantClient {
        let credentials = self.new_merchant_credentials(name).await;
        self.merchant(&credentials)
    }

    /// A client for existing credentials against the current run.
    pub fn merchant(&self, credentials: &MerchantCredentials) -> MerchantClient {
        MerchantClient::new(&self.base_url, &credentials.id, &credentials.secret)
    }

    /// SIGKILL, no warning; waits until the process is gone. No-op if it is not running.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` is SIGKILL on unix. It fails only if the child was already reaped.
            let _ = child.kill();
            let status = child.wait().expect("waiting for the killed kassa");
            self.log
                .line("harness", format!("killed (SIGKILL): {status}").as_bytes());
        }
    }

    /// SIGTERM, then waits (up to the stop timeout) for a graceful exit; returns the exit status.
    /// Panics with the log's tail if the process does not exit in time (it is SIGKILLed then).
    pub async fn stop(&mut self) -> ExitStatus {
        let Some(child) = self.child.as_mut() else {
            panic!("stop(): kassa is not running\n{}", self.log_tail());
        };
        let pid = libc::pid_t::try_from(child.id()).expect("pids fit in pid_t");
        // SAFETY: `kill` has no memory-safety preconditions; `pid` is our own unreaped child,
        // so it cannot name another process.
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(sent, 0, "sending SIGTERM to kassa (pid {pid}) failed");
        let deadline = tokio::time::Instant::now() + self.options.stop_timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    self.log
                        .line("harness", format!("stopped: {status}").as_bytes());
                    return status;
                }
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(STOP_POLL_INTERVAL).await;
                }
                Ok(None) => break,
                Err(error) => panic!("waiting for kassa (pid {pid}) failed: {error}"),
            }
        }
        self.kill9();
        panic!(
            "kassa did not exit within {:?} of SIGTERM (SIGKILLed it)\n{}",
            self.options.stop_timeout,
            self.log_tail()
        );
    }

    /// Starts again on the same data dir and admin token (new port). If the process is still
    /// running it is stopped gracefully first (SIGTERM).
    pub async fn restart(&mut self) {
        if self.is_running() {
            self.stop().await;
        }
        self.kill9(); // reaps a process that exited on its own
        self.spawn().await;
    }

    /// Sets (or replaces) an environment variable for the next [`Kassa::restart`].
    pub fn set_env(&mut self, key: &str, value: impl ToString) {
        self.options.env.retain(|(k, _)| k != key);
        self.options.env.push((key.to_owned(), value.to_string()));
    }

    /// The in-process sandbox's base URL of the current run, from its start-up log line.
    pub fn sandbox_url(&self) -> String {
        let log = self.log_contents();
        let line = log
            .lines()
            .rev()
            .find(|line| line.contains("sandbox provider started"))
            .unwrap_or_else(|| panic!("no sandbox start line in the log:\n{}", self.log_tail()));
        let url = line.split("url=").nth(1).unwrap_or_default();
        url.split_whitespace().next().unwrap_or_default().to_owned()
    }

    /// Runs `kassa <args>` once against this instance's data dir and admin token.
    pub async fn cli(&self, args: &[&str]) -> CliOutput {
        let data_dir = self.data_dir();
        let data_dir = data_dir.to_str().expect("temp dir paths are UTF-8");
        run_cli(
            args,
            &[
                ("KASSA_DATA_DIR", data_dir),
                ("KASSA_ADMIN_TOKEN", &self.admin_token),
            ],
        )
        .await
    }

    /// The last lines of the log, framed for a panic message.
    pub fn log_tail(&self) -> String {
        let contents = self.log_contents();
        let lines: Vec<&str> = contents.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
        format!(
            "--- last {} lines of {} ---\n{}\n--- end of log ---",
            tail.len(),
            self.log.path.display(),
            tail.join("\n")
        )
    }

    async fn spawn(&mut self) {
        assert!(self.child.is_none(), "spawn(): kassa is already running");
        let binary = tokio::task::spawn_blocking(crate::binary::kassa_bin)
            .await
            .expect("building kassa panicked");
        self.starts += 1;
        self.log.line(
            "harness",
            format!("=== start #{}: {} serve ===", self.starts, binary.display()).as_bytes(),
        );
        let mut command = Command::new(binary);
        command.arg("serve");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("KASSA_") {
                command.env_remove(key);
            }
        }
        command
            .env("KASSA_HTTP_ADDR", "127.0.0.1:0")
            .env("KASSA_DATA_DIR", self.data_dir())
            .env("KASSA_ADMIN_TOKEN", &self.admin_token)
            .env("RUST_LOG", "info")
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("spawning {} failed: {error}", binary.display()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (listening_tx, listening_rx) = oneshot::channel();
        drain(stdout, "stdout", Arc::clone(&self.log), Some(listening_tx));
        drain(stderr, "stderr", Arc::clone(&self.log), None);
        self.child = Some(child);

        match tokio::time::timeout(self.options.start_timeout, listening_rx).await {
            Ok(Ok(base_url)) => self.base_url = base_url,
            Ok(Err(_closed)) => {
                // stdout closed without the line: the process is exiting or has exited.
                let status = match self.child.take().map(|mut child| child.wait()) {
                    Some(Ok(status)) => status.to_string(),
                    Some(Err(error)) => format!("unknown: {error}"),
                    None => "unknown".to_owned(),
                };
                panic!(
                    "kassa serve closed stdout without printing `listening on http(s)://...` \
                     ({status})\n{}",
                    self.log_tail()
                );
            }
            Err(_elapsed) => {
                self.kill9();
                panic!(
                    "kassa serve did not print `listening on http(s)://...` within {:?} \
                     (SIGKILLed it)\n{}",
                    self.options.start_timeout,
                    self.log_tail()
                );
            }
        }
    }
}

impl Drop for Kassa {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            self.root.disable_cleanup(true);
            let saved = save_artefact(&self.log.path);
            eprintln!(
                "kassa e2e: test failed; kept the data dir and log in {}{saved}\n{}",
                self.root.path().display(),
                self.log_tail()
            );
        }
    }
}

/// Copies a failed test's log to `tests/artefacts/<test>-<pid>.log` (ignored by git, easy for
/// CI to upload); returns a note saying where, or why not.
fn save_artefact(log: &Path) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("artefacts");
    let test = std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .replace("::", "-");
    let target = dir.join(format!("{test}-{}.log", std::process::id()));
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::copy(log, &target)) {
        Ok(_) => format!("; log copied to {}", target.display()),
        Err(error) => format!("; could not copy the log to {}: {error}", target.display()),
    }
}

/// Copies `stream` line by line into the log until EOF; on stdout, the first
/// `listening on <url>` line is also sent to `listening`. Detached: it ends when the pipe closes.
fn drain(
    stream: impl Read + Send + 'static,
    name: &'static str,
    log: Arc<Log>,
    mut listening: Option<oneshot::Sender<String>>,
) {
    std::thread::Builder::new()
        .name(format!("kassa-{name}"))
        .spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                log.line(name, &line);
                let text = String::from_utf8_lossy(&line);
                if let Some(url) = text.trim().strip_prefix("listening on ")
                    && let Some(sender) = listening.take()
                {
                    // The receiver is gone only if start() already gave up.
                    let _ = sender.send(url.trim().trim_end_matches('/').to_owned());
                }
            }
        })
        .expect("spawning a log drain thread");
}

/// 32 random bytes, hex: the admin token of one instance.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    format!("adm_{}", hex::encode(bytes))
}
