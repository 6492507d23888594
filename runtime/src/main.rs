//! `kassa`: parse the command line, load the settings, bind, run.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
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
    /// Write a self-signed certificate and key for local HTTPS (cert.pem, key.pem; valid for
    /// localhost, 127.0.0.1, ::1 and every --host) and print the settings that use them.
    /// For development only: no client trusts it unless told to.
    DevCert {
        /// The directory to write cert.pem and key.pem into (created if missing).
        #[arg(long, default_value = "dev-cert")]
        out: PathBuf,
        /// Another DNS name or IP address the certificate is valid for (repeatable).
        #[arg(long = "host", value_name = "NAME")]
        hosts: Vec<String>,
        /// Replace an existing cert.pem / key.pem.
        #[arg(long)]
        force: bool,
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
    /// Give a merchant a new secret and print it (shown once) as JSON; the old secret keeps
    /// verifying for --overlap-s seconds (default a day, at most a week; 0 ends it at once).
    RotateSecret {
        /// The merchant's id (`mch_…`).
        #[arg(long)]
        id: String,
        #[arg(long)]
        overlap_s: Option<u64>,
    },
}

/// Names every `kassa dev-cert` certificate is valid for, before the `--host`s.
const DEV_CERT_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

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

    // Needs no settings (and must work where the settings are not valid yet).
    if let Command::DevCert { out, hosts, force } = &cli.command {
        return match dev_cert(out, hosts, *force) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kassa dev-cert: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
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
            // Handled above, before the settings are loaded.
            Command::DevCert { .. } => Ok(()),
            Command::Merchant {
                action: MerchantAction::Create { name, webhook_url },
            } => create_merchant(settings, name, webhook_url).await,
            Command::Merchant {
                action: MerchantAction::RotateSecret { id, overlap_s },
            } => rotate_merchant_secret(settings, id, overlap_s).await,
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
    // Both TLS sides are checked before anything starts, so a wrong path is a clear start-up
    // error rather than a restarting worker.
    kassa_runtime::http_server::load_tls(&settings.http.tls)?;
    let extra_ca = &settings.tls.extra_ca_path;
    let extra_cas = kassa_channels::adapter::tls::install_extra_ca(
        (!extra_ca.is_empty()).then(|| std::path::Path::new(extra_ca)),
    )
    .context("tls.extra_ca_path (KASSA_TLS_EXTRA_CA_PATH)")?;
    if extra_cas > 0 {
        tracing::info!(extra_cas, path = %extra_ca, "outbound TLS trusts extra CAs");
    }
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

/// `kassa merchant rotate-secret`: like `POST /admin/merchants/{id}/rotate_secret`, on the
/// store directly. A running node that cached the merchant sees the new secret at its first
/// use (a failed verification re-reads the merchant); the old one stops at the overlap's end.
async fn rotate_merchant_secret(
    settings: Settings,
    id: String,
    overlap_s: Option<u64>,
) -> anyhow::Result<()> {
    use kassa_actors::clock::{Clock, SystemClock};
    use kassa_runtime::merchants::Merchants;
    use kassa_runtime::server::{open_sealer, open_store};

    let overlap_s = kassa_runtime::routes::admin::check_overlap_s(overlap_s)
        .map_err(|e| anyhow::anyhow!(e.message))?;
    std::fs::create_dir_all(&settings.store.data_dir)?;
    let store = open_store(&settings).await?;
    let merchants = Merchants::new(store.clone(), open_sealer(&settings)?);
    let rotated = merchants
        .rotate_secret(&id, overlap_s, SystemClock.now_ms())
        .await;
    store.shutdown().await?;
    match rotated? {
        Some(rotated) => {
            println!("{}", serde_json::to_string_pretty(&rotated)?);
            Ok(())
        }
        None => Err(anyhow::anyhow!("no merchant {id}")),
    }
}

/// `kassa dev-cert`: a self-signed certificate (no CA) and its key, for local HTTPS. The key is
/// written with mode 0600 and never printed.
fn dev_cert(out: &std::path::Path, hosts: &[String], force: bool) -> anyhow::Result<()> {
    let mut names: Vec<String> = DEV_CERT_NAMES.iter().map(|name| name.to_string()).collect();
    for host in hosts {
        if !names.contains(host) {
            names.push(host.clone());
        }
    }
    let generated = rcgen::generate_simple_self_signed(names.clone())
        .with_context(|| format!("generating a certificate for {names:?}"))?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let out = std::fs::canonicalize(out).with_context(|| format!("resolving {}", out.display()))?;
    let cert_path = out.join("cert.pem");
    let key_path = out.join("key.pem");
    if !force {
        for path in [&cert_path, &key_path] {
            if path.exists() {
                anyhow::bail!("{} exists; pass --force to replace it", path.display());
            }
        }
    }
    write_file(
        &key_path,
        generated.signing_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_file(&cert_path, generated.cert.pem().as_bytes(), 0o644)?;
    let (cert, key) = (cert_path.display(), key_path.display());
    println!(
        "wrote {cert} (self-signed certificate for {})",
        names.join(", ")
    );
    println!("wrote {key} (its private key, mode 0600)");
    println!();
    println!("serve HTTPS with it:");
    println!("  export KASSA_HTTP_TLS_CERT_PATH={cert}");
    println!("  export KASSA_HTTP_TLS_KEY_PATH={key}");
    println!("trust it in a client (it is its own CA; for local use only):");
    println!("  curl --cacert {cert} https://localhost:8080/healthz");
    println!("  export KASSA_TLS_EXTRA_CA_PATH={cert}   # another Kassa calling this host");
    Ok(())
}

/// Writes `bytes` to `path` (replacing it) with permissions `mode` on unix.
fn write_file(path: &std::path::Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        options.mode(mode);
        // `mode` applies only to a new file; an existing one (`--force`) is narrowed first.
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("setting the permissions of {}", path.display()))?;
        }
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
