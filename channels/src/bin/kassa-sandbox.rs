//! `kassa-sandbox`: runs the sandbox provider on its own until Ctrl-C.
//!
//! ```text
//! KASSA_SANDBOX_SECRET=… kassa-sandbox --addr 127.0.0.1:8089 --ledger sandbox.db
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use kassa_channels::sandbox::{self, DEV_API_SECRET, SandboxConfig};

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
    /// Milliseconds added to every answer.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let api_secret = match std::env::var("KASSA_SANDBOX_SECRET") {
        Ok(secret) if !secret.is_empty() => secret,
        _ => {
            tracing::warn!("KASSA_SANDBOX_SECRET is not set; using the public development secret");
            DEV_API_SECRET.to_owned()
        }
    };
    let handle = sandbox::start(SandboxConfig {
        addr: args.addr,
        ledger_path: args.ledger,
        api_secret,
        latency_ms: args.latency_ms,
    })
    .await
    .context("starting the sandbox")?;
    println!("kassa-sandbox listening on {}", handle.base_url());
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    handle.shutdown().await;
    Ok(())
}
