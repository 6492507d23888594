//! A headless Chromium driven through chromedriver, over the W3C WebDriver protocol (plain
//! HTTP + JSON, no WebDriver crate), for the dashboard's browser test.
//!
//! [`Browser::start`] starts `chromedriver --port=N` on a free port in its own process group,
//! waits for `/status` to say ready, and opens a session with a fresh profile directory.
//! [`Browser::close`] ends the session; dropping a [`Browser`] SIGKILLs chromedriver's whole
//! process group (chromedriver and the Chromium it started), so a failing test leaves nothing
//! running.
//!
//! The tools are `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's `chromium` and
//! `chromium-driver`; `scripts/install-test-deps.sh` installs them), or `$CHROMIUM_BIN` and
//! `$CHROMEDRIVER_BIN`. [`tools_or_skip`] decides what a test does without them: skip with a
//! message on a laptop, fail under `CI=true`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kassa_client::HttpClient;
use serde_json::{Value, json};
use tokio::time::Instant;

const CHROMIUM_DEFAULT: &str = "/usr/bin/chromium";
const CHROMEDRIVER_DEFAULT: &str = "/usr/bin/chromedriver";
/// How long chromedriver may take to answer `/status` with `ready: true`.
const DRIVER_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause between `/status` probes.
const DRIVER_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How many free ports to try if chromedriver exits at once (another process took the port).
const DRIVER_START_ATTEMPTS_MAX: u32 = 3;
/// How long one WebDriver command may take (creating a session starts Chromium).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of chromedriver's log shown in an error.
const DRIVER_LOG_TAIL_LINES: usize = 30;

/// Chromium's flags: headless, no sandbox (containers), nothing phoning home, fixed size.
const CHROMIUM_ARGS: [&str; 10] = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
];

/// The two binaries a browser test needs.
#[derive(Debug, Clone)]
pub struct BrowserTools {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
}

impl BrowserTools {
    /// The binaries if both exist, else why not.
    pub fn find() -> Result<BrowserTools, String> {
        let pick = |var: &str, default: &str| {
            std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from)
        };
        let tools = BrowserTools {
            chromium: pick("CHROMIUM_BIN", CHROMIUM_DEFAULT),
            chromedriver: pick("CHROMEDRIVER_BIN", CHROMEDRIVER_DEFAULT),
        };
        let missing: Vec<String> = [&tools.chromium, &tools.chromedriver]
            .into_iter()
            .filter(|path| !path.is_file())
            .map(|path| path.display().to_string())
            .collect();
        if missing.is_empty() {
            Ok(tools)
        } else {
            Err(format!("{} not found", missing.join(" and ")))
        }
    }
}

/// The browser tools, or `None` after printing why `test` is skipped. Under `CI=true` a missing
/// tool fails the test instead: CI must run every test.
pub fn tools_or_skip(test: &str) -> Option<BrowserTools> {
    match BrowserTools::find() {
        Ok(tools) => Some(tools),
        Err(why) if std::env::var("CI").is_ok_and(|ci| ci == "true") => panic!(
            "{test}: {why}; CI=true requires the browser tests to run: \
             run scripts/install-test-deps.sh (installs chromium and chromium-driver)"
        ),
        Err(why) => {
            eprintln!(
                "SKIPPED {test}: {why} (run scripts/install-test-deps.sh to install chromium \
                 and chromium-driver)"
            );
            None
        }
    }
}

/// One WebDriver session in a headless Chromium, with the chromedriver serving it.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    http: HttpClient,
    session: Option<String>,
    /// Holds Chromium's profile (`--user-data-dir`) and chromedriver's log.
    dir: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session. Err says what failed, with the tail
    /// of chromedriver's log.
    pub async fn start(tools: &BrowserTools) -> Result<Browser, String> {
        let dir = tempfile::Builder::new()
            .prefix("kassa-browser-")
            .tempdir()
            .map_err(|error| format!("creating a temp dir: {error}"))?;
        let mut last_error = String::new();
        for _ in 0..DRIVER_START_ATTEMPTS_MAX {
            let (mut driver, port) = spawn_driver(&tools.chromedriver, dir.path())?;
            let http =
                HttpClient::new(&format!("http://127.0.0.1:{port}")).with_timeout(COMMAND_TIMEOUT);
            match wait_ready(&mut driver, &http, dir.path()).await {
                Ok(()) => {
                    let mut browser = Browser {
                        driver,
                        http,
                        session: None,
                        dir,
                    };
                    browser.new_session(&tools.chromium).await?;
                    return Ok(browser);
                }
                Err(error) => {
                    last_error = error;
                    kill_group(&mut driver);
                }
            }
        }
        Err(format!(
            "chromedriver did not become ready in {DRIVER_START_ATTEMPTS_MAX} attempts: \
             {last_error}"
        ))
    }

    async fn new_session(&mut self, chromium: &Path) -> Result<(), String> {
        let profile = self.dir.path().join("profile");
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|arg| (*arg).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": {"script": 10_000, "pageLoad": 30_000, "implicit": 0},
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": args,
            },
        }}});
        let value = self.command("POST", "/session", Some(capabilities)).await?;
        let id = value["sessionId"]
            .as_str()
            .ok_or_else(|| format!("new session: no sessionId in {value}"))?;
        self.session = Some(id.to_owned());
        Ok(())
    }

    /// Sends one WebDriver command; returns its `value`, or Err with the WebDriver error.
    async fn command(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut headers = Vec::new();
        if body.is_some() {
            headers.push((
                "Content-Type".to_owned(),
                "application/json; charset=utf-8".to_owned(),
            ));
        }
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let response = self
            .http
            .send(method, path, &headers, body)
            .await
            .map_err(|error| format!("WebDriver {method} {path}: {error}"))?;
        let parsed = response
            .json()
            .map_err(|error| format!("WebDriver {method} {path}: {error}"))?;
        if !response.is_success() {
            let error = &parsed["value"];
            return Err(format!(
                "WebDriver {method} {path} answered {}: {} {}",
                response.status, error["error"], error["message"]
            ));
        }
        Ok(parsed["value"].clone())
    }

    /// A command on the current session (`/session/{id}{path}`).
    async fn session_command(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let id = self.session.as_deref().ok_or("no WebDriver session")?;
        self.command(method, &format!("/session/{id}{path}"), body)
            .await
    }

    /// Loads `url` and waits for the document to load.
    pub async fn navigate(&self, url: &str) -> Result<(), String> {
        self.session_command("POST", "/url", Some(json!({ "url": url })))
            .await
            .map(drop)
    }

    /// Runs `script` (a function body: `return …;`) synchronously in the page with `args`
    /// (`arguments[0]`, …) and returns its result as JSON.
    pub async fn execute(&self, script: &str, args: &[Value]) -> Result<Value, String> {
        self.session_command(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// The page as a PNG.
    pub async fn screenshot(&self) -> Result<Vec<u8>, String> {
        let value = self.session_command("GET", "/screenshot", None).await?;
        let encoded = value
            .as_str()
            .ok_or_else(|| format!("screenshot: not a string: {value}"))?;
        decode_base64(encoded)
    }

    /// Saves a PNG of the page to `path` (creating its directory).
    pub async fn save_screenshot(&self, path: &Path) -> Result<(), String> {
        let png = self.screenshot().await?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|error| format!("creating {}: {error}", parent.display()))?;
        }
        std::fs::write(path, png).map_err(|error| format!("writing {}: {error}", path.display()))
    }

    /// The browser's console entries since the last call, as `"LEVEL source: message"` lines
    /// (chromedriver's `goog:loggingPrefs` log; `source` is `javascript`, `network`,
    /// `security`, …).
    pub async fn console_log(&self) -> Result<Vec<String>, String> {
        let value = self
            .session_command("POST", "/se/log", Some(json!({"type": "browser"})))
            .await?;
        let entries = value.as_array().map(Vec::as_slice).unwrap_or_default();
        Ok(entries
            .iter()
            .map(|entry| {
                format!(
                    "{} {}: {}",
                    entry["level"].as_str().unwrap_or("?"),
                    entry["source"].as_str().unwrap_or("?"),
                    entry["message"].as_str().unwrap_or_default()
                )
            })
            .collect())
    }

    /// Ends the session (Chromium quits), then stops chromedriver.
    pub async fn close(mut self) -> Result<(), String> {
        let result = match self.session.take() {
            Some(id) => self
                .command("DELETE", &format!("/session/{id}"), None)
                .await
                .map(drop),
            None => Ok(()),
        };
        kill_group(&mut self.driver);
        result
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.driver);
    }
}

/// Polls chromedriver's `GET /status` until `value.ready` is true, it exits, or the deadline.
async fn wait_ready(driver: &mut Child, http: &HttpClient, dir: &Path) -> Result<(), String> {
    let deadline = Instant::now() + DRIVER_READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = driver.try_wait() {
            return Err(format!("chromedriver exited ({status})\n{}", log_tail(dir)));
        }
        let last = match http.send("GET", "/status", &[], Vec::new()).await {
            Ok(response) => match response.json() {
                Ok(body) if body["value"]["ready"] == true => return Ok(()),
                Ok(body) => format!("not ready: {body}"),
                Err(error) => error.to_string(),
            },
            Err(error) => error.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "no ready /status within {DRIVER_READY_TIMEOUT:?}; last: {last}\n{}",
                log_tail(dir)
            ));
        }
        tokio::time::sleep(DRIVER_POLL_INTERVAL).await;
    }
}

/// SIGKILLs chromedriver's process group (it and the Chromium it started) and reaps it.
fn kill_group(driver: &mut Child) {
    if let Ok(Some(_)) = driver.try_wait() {
        return;
    }
    match libc::pid_t::try_from(driver.id()) {
        // SAFETY: `kill` has no memory-safety preconditions. The group id is our unreaped
        // child's pid, and spawn_driver made that child the leader of a new group, so the group
        // holds only chromedriver and what it started.
        Ok(pid) => unsafe {
            libc::kill(-pid, libc::SIGKILL);
        },
        Err(_) => {
            // Not reachable on Linux (pids fit in pid_t); still, stop the driver itself.
            let _ = driver.kill();
        }
    }
    // The group is gone or going; a wait error means it was already reaped.
    let _ = driver.wait();
}

fn log_tail(dir: &Path) -> String {
    let path = dir.join("chromedriver.log");
    let log = std::fs::read_to_string(&path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    let tail = &lines[lines.len().saturating_sub(DRIVER_LOG_TAIL_LINES)..];
    format!(
        "--- chromedriver log ({}) ---\n{}\n---",
        path.display(),
        tail.join("\n")
    )
}

/// Starts `chromedriver --port=N` on a port that was free a moment ago, as the leader of a new
/// process group, logging to `<dir>/chromedriver.log`.
fn spawn_driver(chromedriver: &Path, dir: &Path) -> Result<(Child, u16), String> {
    use std::os::unix::process::CommandExt;

    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_err(|error| format!("finding a free port: {error}"))?
        .port();
    let log_path = dir.join("chromedriver.log");
    let log = std::fs::File::create(&log_path)
        .map_err(|error| format!("creating {}: {error}", log_path.display()))?;
    let log_err = log
        .try_clone()
        .map_err(|error| format!("cloning the log handle: {error}"))?;
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(|error| format!("starting {}: {error}", chromedriver.display()))?;
    Ok((child, port))
}

/// Standard base64 (with padding; whitespace ignored), as WebDriver sends screenshots.
pub fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    fn sextet(byte: u8) -> Option<u32> {
        match byte {
            b'A'..=b'Z' => Some(u32::from(byte - b'A')),
            b'a'..=b'z' => Some(u32::from(byte - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(byte - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let bytes: Vec<u8> = text
        .bytes()
        .filter(|byte| !byte.is_ascii_whitespace())
        .collect();
    let data = bytes
        .strip_suffix(b"==")
        .or_else(|| bytes.strip_suffix(b"="));
    let data = data.unwrap_or(&bytes);
    let mut out = Vec::with_capacity(data.len() / 4 * 3 + 2);
    for chunk in data.chunks(4) {
        let mut bits = 0u32;
        for &byte in chunk {
            let value = sextet(byte).ok_or_else(|| format!("invalid base64 byte {byte:#04x}"))?;
            bits = bits << 6 | value;
        }
        // 4 sextets → 3 bytes, 3 → 2, 2 → 1; one alone is not valid base64.
        let (bytes_out, shift) = match chunk.len() {
            4 => (3, 0),
            3 => (2, 6),
            2 => (1, 12),
            _ => return Err("truncated base64".to_owned()),
        };
        let bits = bits << shift;
        out.extend_from_slice(&bits.to_be_bytes()[1..=bytes_out]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::decode_base64;

    #[test]
    fn base64_round_trips_known_values() {
        assert_eq!(decode_base64("").unwrap(), b"");
        assert_eq!(decode_base64("Zg==").unwrap(), b"f");
        assert_eq!(decode_base64("Zm8=").unwrap(), b"fo");
        assert_eq!(decode_base64("Zm9v").unwrap(), b"foo");
        assert_eq!(decode_base64("Zm9vYmFy\n").unwrap(), b"foobar");
        assert_eq!(decode_base64("iVBORw0KGgo=").unwrap(), b"\x89PNG\r\n\x1a\n");
        assert!(decode_base64("Zm9v!").is_err());
        assert!(decode_base64("Z").is_err());
    }
}
