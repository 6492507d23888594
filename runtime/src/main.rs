//! `kassa`: parse the command line, load the settings, bind, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kassa_config::Settings;

#[derive(Parser)]
#[command(
    name = "kassa",
    version,
    about = "Kassa: an actor-based payment processing runtime"
)]
struct Cli {
    /// A TOML settings file; KASSA_* environment variables override it.
    #[arg(long, global = true, env = "KASSA_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (embedded mode by default: SQLite under KASSA_DATA_DIR, in-process sandbox).
    Serve,
    /// Create or upgrade the store's schema and exit (cluster mode: the PostgreSQL schema at
    /// KASSA_POSTGRES_URL; embedded: the SQLite file under KASSA_DATA_DIR). Safe to run from
    /// several nodes at once; `serve` runs it too.
    Migrate,
    /// Manage merchants directly in the data directory.
    Merchant {
        #[command(subcommand)]
        action: MerchantAction,
    },
}

#[derive(Subcommand)]
enum MerchantAction {
    /// Create a merchant and print its id and secrets (shown once) as JSON.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        webhook_url: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("KASSA_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let settings = match Settings::from_env(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("kassa: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("kassa: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve => serve(settings).await,
            Command::Migrate => migrate(settings).await,
            Command::Merchant {
                action: MerchantAction::Create { name, webhook_url },
            } => create_merchant(settings, name, webhook_url).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kassa: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let addr = settings.http_addr()?;
    let listener = listen(addr, settings.http.accept_backlog).map_err(|e| {
        anyhow::anyhow!("cannot listen on {addr} (http.addr / KASSA_HTTP_ADDR): {e}")
    })?;
    kassa_runtime::server::run(listener, settings, shutdown_signal()).await
}

/// Binds `addr` with a listen backlog of `backlog` connections (tokio's `bind` uses 1 024,
/// which a burst of thousands of new connections overflows).
fn listen(addr: std::net::SocketAddr, backlog: u32) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    use kassa_config::Mode;
    match settings.mode {
        Mode::Cluster => {
            let config = kassa_runtime::server::postgres_config(&settings);
            let report = kassa_store::postgres::migrate(&config).await?;
            println!(
                "schema {}: version {} -> {} (applied: {:?})",
                config.schema, report.from_version, report.to_version, report.applied
            );
        }
        Mode::Embedded => {
            std::fs::create_dir_all(&settings.store.data_dir)?;
            let store = kassa_runtime::server::open_store(&settings).await?;
            store.shutdown().await?;
            println!("{}: up to date", settings.store_path().display());
        }
    }
    Ok(())
}

async fn create_merchant(
    settings: Settings,
    name: String,
    webhook_url: Option<String>,
) -> anyhow::Result<()> {
    use kassa_actors::clock::{Clock, SystemClock};
    use kassa_runtime::merchants::Merchants;
    use kassa_runtime::server::{open_sealer, open_store};

    if let Some(url) = &webhook_url {
        kassa_runtime::routes::admin::check_webhook_url(url)
            .map_err(|e| anyhow::anyhow!(e.message))?;
    }
    std::fs::create_dir_all(&settings.store.data_dir)?;
    let store = open_store(&settings).await?;
    let merchants = Merchants::new(store.clone(), open_sealer(&settings)?);
    let created = merchants
        .create(&name, webhook_url, SystemClock.now_ms())
        .await?;
    println!("{}", serde_json::to_string_pretty(&created)?);
    store.shutdown().await?;
    Ok(())
}
