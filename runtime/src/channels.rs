//! The payment channels Kassa calls: the embedded sandbox provider (when no real provider is
//! configured) and one adapter + port per channel, gathered in [`ChannelPorts`].
//!
//! Each outbound channel (`card`, `qr_wallet`, `app_wallet`, `bank_transfer`) gets its own
//! [`ChannelAdapter`] (its own rate limits, bulkhead, breaker and connection pool, so a sick
//! channel never starves the others) from `channels.<name>` in the settings. A channel with
//! no `base_url` calls the in-process sandbox when `sandbox.enabled`, and is off otherwise.
//! Kassa's own `wallet` method is always on: it moves money inside the store.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use kassa_actors::channel_port::{AsyncPort, CardPort, ChannelPorts, WalletPort};
use kassa_actors::clock::Clock;
use kassa_actors::payment::Method;
use kassa_channels::card::CardChannel;
use kassa_channels::sandbox::{self, Behaviour, SandboxConfig, SandboxHandle};
use kassa_channels::{
    AdapterConfig, AppWalletChannel, BankTransferChannel, ChannelAdapter, Protocol, QrWalletChannel,
};
use kassa_config::{AdapterSettings, Settings};
use kassa_store::Store;

/// The channels whose provider answers over HTTP, with their protocol and method.
const OUTBOUND: [(&str, Protocol, Method); 4] = [
    ("card", Protocol::Card, Method::Card),
    ("qr_wallet", Protocol::QrWallet, Method::QrWallet),
    ("app_wallet", Protocol::AppWallet, Method::AppWallet),
    (
        "bank_transfer",
        Protocol::BankTransfer,
        Method::BankTransfer,
    ),
];

/// The secret `channel` signs with (its own, or the sandbox's).
pub fn channel_secret<'a>(settings: &'a Settings, channel: &str) -> Option<&'a str> {
    let (_, c) = settings
        .channels
        .all()
        .into_iter()
        .find(|(n, _)| *n == channel)?;
    Some(if c.api_secret.is_empty() {
        settings.sandbox.api_secret.as_str()
    } else {
        c.api_secret.as_str()
    })
}

fn adapter_config(c: &AdapterSettings) -> AdapterConfig {
    AdapterConfig {
        request_timeout_ms: c.request_timeout_ms,
        command_deadline_ms: c.command_deadline_ms,
        retry_attempts_max: c.retry_attempts_max,
        backoff_ms_min: c.backoff_ms_min,
        backoff_ms_max: c.backoff_ms_max,
        inflight_max: c.inflight_max,
        admitted_inflight_wait_ms_max: c.admitted_inflight_wait_ms_max,
        rate_per_s: c.rate_per_s,
        burst: c.burst,
        rate_wait_ms_max: c.rate_wait_ms_max,
        merchant_rate_per_s: (c.merchant_rate_per_s > 0).then_some(c.merchant_rate_per_s),
        breaker_window_size: c.breaker_window_size,
        breaker_min_calls: c.breaker_min_calls,
        breaker_failure_rate_percent: c.breaker_failure_rate_percent,
        breaker_open_ms: c.breaker_open_ms,
        breaker_half_open_probes: c.breaker_half_open_probes,
        ..AdapterConfig::default()
    }
}

/// Does any enabled channel call the in-process sandbox?
fn wants_sandbox(settings: &Settings) -> bool {
    settings.sandbox.enabled
        && settings
            .channels
            .all()
            .iter()
            .any(|(_, c)| c.enabled && c.base_url.is_empty())
}

/// Starts the embedded sandbox provider with each channel's behaviour from `sandbox.*`, its
/// callbacks aimed at this Kassa (`http_addr`). `None` when no channel needs it.
pub async fn start_sandbox(
    settings: &Settings,
    http_addr: SocketAddr,
) -> anyhow::Result<Option<SandboxHandle>> {
    if !wants_sandbox(settings) {
        return Ok(None);
    }
    let sb = &settings.sandbox;
    // Callbacks come back to Kassa's own front-end, over TLS when it serves TLS (the sandbox's
    // callback client then needs Kassa's certificate trusted: `tls.extra_ca_path`).
    let scheme = if settings.http.tls.cert_path.is_empty() {
        "http"
    } else {
        "https"
    };
    let behaviour_of = |channel: &str| {
        let chaotic = sb.chaos_channels.iter().any(|c| c == channel);
        let pick = |value: u32| if chaotic { value } else { 0 };
        Behaviour {
            latency_ms_min: sb.latency_ms,
            latency_ms_max: sb.latency_ms_max.max(sb.latency_ms),
            error_rate_percent: pick(sb.error_rate_percent),
            rate_limit_rate_percent: pick(sb.rate_limit_rate_percent),
            timeout_rate_percent: pick(sb.timeout_rate_percent),
            seed: sb.seed,
            callback_url: sb
                .callbacks
                .then(|| format!("{scheme}://{http_addr}/callbacks/{channel}")),
            callback_delay_ms_max: sb.callback_delay_ms_max,
            duplicate_callback_rate_percent: sb.duplicate_callback_rate_percent,
            settle_delay_ms_max: sb.settle_delay_ms_max,
            auto_settle: sb.customer_auto_pay || channel == "bank_transfer",
            callback_rate_percent: if channel == "bank_transfer" {
                sb.bank_callback_rate_percent
            } else {
                100
            },
            ..Behaviour::default()
        }
    };
    let handle = sandbox::start_with_behaviour(
        SandboxConfig {
            addr: settings.sandbox_addr()?,
            ledger_path: Some(settings.sandbox_ledger_path()),
            api_secret: sb.api_secret.clone(),
            latency_ms: 0,
        },
        behaviour_of("card"),
    )
    .await
    .context("starting the sandbox provider")?;
    for (channel, _, _) in &OUTBOUND[1..] {
        handle
            .set_channel_behaviour(channel, behaviour_of(channel))
            .with_context(|| format!("configuring the sandbox's {channel} channel"))?;
    }
    tracing::info!(url = %handle.base_url(), "sandbox provider started");
    Ok(Some(handle))
}

/// One port per method: an adapter per enabled outbound channel, and the wallet.
pub fn ports(
    settings: &Settings,
    sandbox_url: Option<&str>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<ChannelPorts> {
    let io = tokio::runtime::Handle::current();
    let mut ports =
        ChannelPorts::new().with(Method::Wallet, Arc::new(WalletPort::new(store, clock)));
    for (name, protocol, method) in OUTBOUND {
        let (_, c) = settings
            .channels
            .all()
            .into_iter()
            .find(|(n, _)| *n == name)
            .context("a channel without settings")?;
        let base_url = match (c.enabled, c.base_url.is_empty(), sandbox_url) {
            (false, _, _) => continue,
            (true, false, _) => c.base_url.clone(),
            (true, true, Some(url)) => url.to_string(),
            (true, true, None) => {
                tracing::info!(channel = name, "channel off: no base_url and no sandbox");
                continue;
            }
        };
        let secret = channel_secret(settings, name)
            .unwrap_or_default()
            .to_string();
        let adapter = ChannelAdapter::with_protocol(protocol, &base_url, secret, adapter_config(c))
            .with_context(|| format!("configuring the {name} channel"))?;
        ports = match protocol {
            Protocol::Card => ports.with(
                method,
                Arc::new(CardPort::new(CardChannel::new(adapter), io.clone())),
            ),
            Protocol::QrWallet => ports.with(
                method,
                Arc::new(AsyncPort::new(QrWalletChannel::new(adapter), io.clone())),
            ),
            Protocol::AppWallet => ports.with(
                method,
                Arc::new(AsyncPort::new(AppWalletChannel::new(adapter), io.clone())),
            ),
            Protocol::BankTransfer => ports.with(
                method,
                Arc::new(AsyncPort::new(
                    BankTransferChannel::new(adapter),
                    io.clone(),
                )),
            ),
        };
    }
    Ok(ports)
}
