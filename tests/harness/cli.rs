//! One-shot runs of the `kassa` binary (`kassa merchant create --name N`, ...).

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use kassa_client::MerchantCredentials;

/// How long one CLI run may take.
pub const CLI_TIMEOUT_MS: u64 = 60_000;

/// What a CLI run printed and how it exited.
#[derive(Debug)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// Panics (with stderr) unless the run exited 0.
    pub fn assert_success(&self) -> &Self {
        assert!(
            self.status.success(),
            "kassa CLI exited with {}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// stdout parsed as one JSON value; panics if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|error| {
            panic!(
                "kassa CLI stdout is not one JSON value ({error}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// The merchant credentials a `kassa merchant create` printed; panics if they are missing.
    pub fn merchant_credentials(&self) -> MerchantCredentials {
        MerchantCredentials::from_json("kassa merchant create", &self.json())
            .unwrap_or_else(|error| panic!("{error}"))
    }
}

/// Runs `kassa <args>` once with `env` (inherited `KASSA_*` variables are removed first) and
/// waits for it to exit; panics if it cannot start or runs longer than [`CLI_TIMEOUT_MS`].
pub async fn run_cli(args: &[&str], env: &[(&str, &str)]) -> CliOutput {
    let binary = tokio::task::spawn_blocking(crate::binary::kassa_bin)
        .await
        .expect("building kassa panicked");
    let mut command = tokio::process::Command::new(binary);
    command.args(args);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("KASSA_") {
            command.env_remove(key);
        }
    }
    command
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let run = command.output();
    let output = tokio::time::timeout(Duration::from_millis(CLI_TIMEOUT_MS), run)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "`kassa {}` ran longer than {CLI_TIMEOUT_MS} ms",
                args.join(" ")
            )
        })
        .unwrap_or_else(|error| panic!("running `kassa {}` failed: {error}", args.join(" ")));
    CliOutput {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
