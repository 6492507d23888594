//! Kassa's typed settings.
//!
//! One TOML file (`kassa serve --config PATH`) plus `KASSA_*` environment
//! overrides; with neither, the defaults run the embedded mode (SQLite under
//! `./data`, the in-process sandbox channel, HTTP on 127.0.0.1:8080).
//!
//! # Layout
//! - `lib.rs`       — the [`Settings`] tree; every bound carries its unit in its name.
//! - `overrides.rs` — `KASSA_SECTION_KEY=value` environment overrides.
//! - `validate.rs`  — checks that name the offending key.
//!
//! Every key can be overridden from the environment: the variable is `KASSA_`
//! followed by the key's path in upper case, joined by `_`
//! (`http.addr` → `KASSA_HTTP_ADDR`, `channels.card.request_timeout_ms` →
//! `KASSA_CHANNELS_CARD_REQUEST_TIMEOUT_MS`). Short aliases: `KASSA_DATA_DIR` for
//! `KASSA_STORE_DATA_DIR`, `KASSA_AMQP_URL` for `KASSA_NOTIFICATIONS_RABBITMQ_URL`, `KASSA_POSTGRES_URL` for
//! `postgres.url`, `KASSA_REDIS_URL` for `redis.url`. `KASSA_MODE=cluster` runs on PostgreSQL,
//! with Redis as a shared cache and rate limiter.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod overrides;
mod validate;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("config file {path}: {reason}")]
    Parse { path: String, reason: String },
    #[error("config key `{key}` (from {source_name}): {reason}")]
    Invalid {
        key: String,
        source_name: String,
        reason: String,
    },
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// `embedded` (SQLite in `store.data_dir`) or `cluster` (PostgreSQL at `postgres.url`,
    /// shared by several nodes).
    pub mode: Mode,
    pub http: HttpSettings,
    /// Outbound TLS trust (the front-end's own certificate is `http.tls`).
    pub tls: TlsSettings,
    pub store: StoreSettings,
    /// The shared store in cluster mode.
    pub postgres: PostgresSettings,
    /// Cluster mode's shared cache and coordination (idempotency, rate limits); never the truth.
    pub redis: RedisSettings,
    pub admin: AdminSettings,
    pub payments: PaymentSettings,
    pub idempotency: IdempotencySettings,
    pub orders: OrderSettings,
    pub sandbox: SandboxSettings,
    pub channels: ChannelSettings,
    pub notifications: NotificationSettings,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One node: SQLite under `store.data_dir`.
    #[default]
    Embedded,
    /// Several nodes on one PostgreSQL database (`postgres.*`).
    Cluster,
}

/// The PostgreSQL store (cluster mode). The group-commit bounds are `store.*`'s.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresSettings {
    /// `postgres://user[:password]@host[:port]/database` (`KASSA_POSTGRES_URL` for short).
    pub url: String,
    /// The schema Kassa's tables live in (created if missing).
    pub schema: String,
    /// Read connections per node.
    pub pool_size_max: usize,
    /// The longest one statement may run, lock waits included.
    pub statement_timeout_ms: u64,
    pub connect_timeout_ms: u64,
}

impl Default for PostgresSettings {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/kassa".into(),
            schema: "kassa".into(),
            pool_size_max: 16,
            statement_timeout_ms: 10_000,
            connect_timeout_ms: 5_000,
        }
    }
}

impl std::fmt::Debug for PostgresSettings {
    /// The URL's password is not shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("url", &redact_url(&self.url))
            .field("schema", &self.schema)
            .field("pool_size_max", &self.pool_size_max)
            .field("statement_timeout_ms", &self.statement_timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .finish()
    }
}

/// Redis in cluster mode: in-flight idempotency locks, a cache of finished responses, and the
/// channels' cluster-wide rate limits. Never the source of truth: when it cannot be reached,
/// Kassa goes on with the store and its local limits.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSettings {
    /// `redis://[user[:password]@]host[:port][/db]` (`KASSA_REDIS_URL` for short).
    pub url: String,
    /// Every key Kassa writes starts with `{key_prefix}:`; several installations (or test runs)
    /// share a Redis under different prefixes.
    pub key_prefix: String,
    /// The longest one command may take; past it the command counts as failed (and Kassa falls
    /// back until Redis answers again).
    pub command_timeout_ms: u64,
    /// The longest one connection attempt may take.
    pub connect_timeout_ms: u64,
    /// The longest wait between attempts to reach Redis again (the reconnect backoff's cap and
    /// the health probe's period).
    pub reconnect_ms_max: u64,
    /// How long a finished response stays in the replay cache (at most `idempotency.retention_h`).
    pub idempotency_cache_ttl_ms: u64,
    /// The lifetime of the cluster-wide lock on an `Idempotency-Key` in progress. Its node
    /// renews it every third of this while the request runs, so after a crash the key is free
    /// again within this time (at least 3 × `command_timeout_ms`).
    pub inflight_lock_ms: u64,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            key_prefix: "kassa".into(),
            command_timeout_ms: 250,
            connect_timeout_ms: 1_000,
            reconnect_ms_max: 2_000,
            idempotency_cache_ttl_ms: 3_600_000,
            inflight_lock_ms: 5_000,
        }
    }
}

impl std::fmt::Debug for RedisSettings {
    /// The URL's password is not shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redact_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("command_timeout_ms", &self.command_timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("reconnect_ms_max", &self.reconnect_ms_max)
            .field("idempotency_cache_ttl_ms", &self.idempotency_cache_ttl_ms)
            .field("inflight_lock_ms", &self.inflight_lock_ms)
            .finish()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    pub addr: String,
    /// HTTPS: with `tls.cert_path` and `tls.key_path` set the front-end serves TLS only
    /// (HTTP/2 or HTTP/1.1 by ALPN); both empty, plain HTTP/1.1.
    pub tls: HttpTlsSettings,
    pub body_limit_bytes: usize,
    pub header_read_timeout_ms: u64,
    /// How long a request body may take to arrive once its head is read (a body trickled in
    /// byte by byte — slowloris — is cut off with `408 body_timeout`).
    pub body_read_timeout_ms: u64,
    /// Whole-request deadline, from headers read to response ready.
    pub request_timeout_ms: u64,
    /// Open connections; one past it is answered `503` with `Retry-After` and closed.
    pub connections_max: usize,
    /// Connections the kernel queues before Kassa accepts them (`listen(2)`'s backlog; the
    /// kernel caps it at `net.core.somaxconn`). A burst of new connections larger than this
    /// waits on SYN retransmits instead of being accepted at once.
    pub accept_backlog: u32,
    /// Merchant API requests being handled at once; one past it is answered `503 overloaded`
    /// with `Retry-After` at once instead of queueing behind the others (admitted requests keep
    /// their latency). Health, metrics and the admin API are not counted.
    pub requests_inflight_max: usize,
    /// How far a request's `Kassa-Timestamp` may be from the server's clock.
    pub signature_window_s: i64,
    /// How long a graceful shutdown waits for in-flight requests.
    pub shutdown_grace_ms: u64,
    /// Requests per second each merchant may make (`/v1`, checked once its signature
    /// verified); past it and its burst, `429 rate_limited` with `Retry-After`. 0: no limit.
    pub merchant_requests_per_s: u32,
    /// Requests a merchant may make at once above its rate (the bucket's size).
    pub merchant_burst: u32,
    /// Requests per second from one client address (IPv4, or an IPv6 /64) to `/v1`, checked
    /// before anything is read; past it and its burst, `429 rate_limited`. 0: no limit (e.g.
    /// behind a proxy, where every request comes from the proxy's address).
    pub ip_requests_per_s: u32,
    /// Requests one address may make at once above its rate.
    pub ip_burst: u32,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:8080".into(),
            tls: HttpTlsSettings::default(),
            body_limit_bytes: 64 * 1024,
            header_read_timeout_ms: 5_000,
            body_read_timeout_ms: 10_000,
            request_timeout_ms: 60_000,
            connections_max: 20_000,
            accept_backlog: 4_096,
            requests_inflight_max: 4_096,
            signature_window_s: 300,
            shutdown_grace_ms: 10_000,
            // Safety nets out of a single node's way: one merchant may use all the ~2 600
            // writes/s a node commits (docs/PERFORMANCE.md), and a load generator on one
            // address may drive it flat out.
            merchant_requests_per_s: 5_000,
            merchant_burst: 10_000,
            ip_requests_per_s: 20_000,
            ip_burst: 40_000,
        }
    }
}

/// The front-end's certificate and key (`[http.tls]`). Both set: HTTPS; both empty: plain
/// HTTP. Paths, not contents, so the key never sits in the settings (or a log of them).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpTlsSettings {
    /// A PEM file with the certificate chain, leaf first (`KASSA_HTTP_TLS_CERT_PATH`).
    pub cert_path: String,
    /// A PEM file with the private key: PKCS#8, PKCS#1 or SEC1 (`KASSA_HTTP_TLS_KEY_PATH`).
    pub key_path: String,
}

impl HttpTlsSettings {
    /// Whether the front-end serves HTTPS.
    pub fn enabled(&self) -> bool {
        !self.cert_path.is_empty()
    }
}

/// Outbound TLS (`[tls]`): what Kassa trusts when it calls out over `https://` (channels,
/// merchants' webhooks, the sandbox's callbacks). Certificates are always verified.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// A PEM bundle of CA certificates trusted in addition to the built-in Mozilla roots
    /// (a private CA, or a `kassa dev-cert` certificate); empty: the Mozilla roots alone
    /// (`KASSA_TLS_EXTRA_CA_PATH`).
    pub extra_ca_path: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    pub data_dir: PathBuf,
    /// Most writes that share one transaction (group commit).
    pub group_commit_batch_max: usize,
    /// Writes waiting for the writer before new ones are refused (503).
    pub write_queue_max: usize,
    pub readers: usize,
    pub busy_timeout_ms: u64,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            group_commit_batch_max: 512,
            write_queue_max: 65_536,
            readers: 4,
            busy_timeout_ms: 5_000,
        }
    }
}

#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Bearer token for `/admin`. Empty disables the admin API; Kassa refuses
    /// to start on a non-loopback address without one.
    pub token: String,
    /// Enables `POST /admin/faults` (drills and tests: make an actor panic, a journal
    /// append fail). Never on in production.
    pub faults_enabled: bool,
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = if self.token.is_empty() {
            "<unset>"
        } else {
            "***"
        };
        f.debug_struct("AdminSettings")
            .field("token", &shown)
            .field("faults_enabled", &self.faults_enabled)
            .finish()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentSettings {
    /// How long a synchronous `POST /v1/payments` waits for the channel's outcome.
    pub wait_ms_default: u64,
    /// The most a request may ask for with `wait_ms`.
    pub wait_ms_max: u64,
}

impl Default for PaymentSettings {
    fn default() -> Self {
        Self {
            wait_ms_default: 5_000,
            wait_ms_max: 30_000,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencySettings {
    pub retention_h: u64,
    /// How often expired keys are purged.
    pub purge_interval_s: u64,
}

impl Default for IdempotencySettings {
    fn default() -> Self {
        Self {
            retention_h: 24,
            purge_interval_s: 600,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrderSettings {
    /// Arbiters (threads) order actors are sharded over; 0 = one per core.
    pub shards: usize,
    /// Commands one order actor may have queued before senders are told to back off.
    pub mailbox_capacity: usize,
    /// How long a command may wait for its order actor's answer.
    pub command_timeout_ms: u64,
    /// Processing orders re-driven at start (crash recovery), at most this many per scan.
    pub recovery_batch_max: u32,
    /// An order actor idle this long passivates (stops; reactivated from its journal on demand).
    pub order_idle_ms: u64,
    /// Live order actors across all shards; past it the least recently used are passivated.
    pub orders_live_max: usize,
    /// How often the janitor re-scans for orders a channel still owes an answer.
    pub janitor_interval_ms: u64,
    /// Delays before asking a channel again for an outcome it did not give (a timeout, an
    /// unreadable answer), in order; the last one repeats.
    pub redrive_schedule_ms: Vec<u64>,
    /// Attempts before an order stops asking on its own (the janitor's scans go on).
    pub redrive_attempts_max: u32,
}

impl Default for OrderSettings {
    fn default() -> Self {
        Self {
            shards: 0,
            mailbox_capacity: 256,
            command_timeout_ms: 30_000,
            recovery_batch_max: 1_000,
            order_idle_ms: 60_000,
            orders_live_max: 100_000,
            janitor_interval_ms: 60_000,
            redrive_schedule_ms: vec![10_000, 60_000, 300_000, 3_600_000],
            redrive_attempts_max: 48,
        }
    }
}

impl OrderSettings {
    pub fn shard_count(&self) -> usize {
        if self.shards > 0 {
            self.shards
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxSettings {
    /// Start the sandbox provider in-process (embedded mode's channels).
    pub enabled: bool,
    /// Port 0 picks a free port, so several Kassa instances can run side by side.
    pub addr: String,
    /// Artificial latency added to every sandbox answer (the lower bound when
    /// `latency_ms_max` is larger).
    pub latency_ms: u64,
    /// Upper bound of a uniform latency range; 0 = exactly `latency_ms`.
    pub latency_ms_max: u64,
    /// Shared secret between the card adapter and the sandbox.
    pub api_secret: String,
    /// Chaos for drills and tests (percent of card calls): 5xx and 429 answers (nothing
    /// charged), and timeouts (charged, answer never sent).
    pub error_rate_percent: u32,
    pub rate_limit_rate_percent: u32,
    pub timeout_rate_percent: u32,
    /// Send signed asynchronous callbacks of every charge change to this Kassa's
    /// `/callbacks/card`, after a delay up to `callback_delay_ms_max`, some twice.
    pub callbacks: bool,
    pub callback_delay_ms_max: u64,
    pub duplicate_callback_rate_percent: u32,
    /// Seed of the chaos draws (reproducible runs).
    pub seed: u64,
    /// The channels the chaos knobs above apply to (each draws on its own).
    pub chaos_channels: Vec<String>,
    /// QR and app-wallet customers pay by themselves, after up to `settle_delay_ms_max` (amounts
    /// ending in 13 minor units are declined); `false` waits for the sandbox's pay page.
    pub customer_auto_pay: bool,
    /// The longest a customer takes to pay, or a bank to settle a transfer.
    pub settle_delay_ms_max: u64,
    /// Share of bank-transfer outcomes the bank reports by callback; the rest are only learnt
    /// by asking.
    pub bank_callback_rate_percent: u32,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            addr: "127.0.0.1:0".into(),
            latency_ms: 0,
            latency_ms_max: 0,
            api_secret: "sandbox-dev-secret".into(),
            error_rate_percent: 0,
            rate_limit_rate_percent: 0,
            timeout_rate_percent: 0,
            callbacks: false,
            callback_delay_ms_max: 0,
            duplicate_callback_rate_percent: 0,
            seed: 0,
            chaos_channels: vec!["card".into()],
            customer_auto_pay: false,
            settle_delay_ms_max: 1_000,
            bank_callback_rate_percent: 100,
        }
    }
}

impl std::fmt::Debug for SandboxSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxSettings")
            .field("enabled", &self.enabled)
            .field("addr", &self.addr)
            .field("latency_ms", &self.latency_ms)
            .field("latency_ms_max", &self.latency_ms_max)
            .field("error_rate_percent", &self.error_rate_percent)
            .field("rate_limit_rate_percent", &self.rate_limit_rate_percent)
            .field("timeout_rate_percent", &self.timeout_rate_percent)
            .field("callbacks", &self.callbacks)
            .field("api_secret", &"***")
            .finish()
    }
}

/// Merchant callbacks (webhooks): the retry schedule and the bounds of the dispatcher.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationSettings {
    /// Delays before attempt 1, 2, … of one round; its length is the attempts per round, after
    /// which the delivery is dead (until a replay). The first must be 0: an event's delivery is
    /// due as soon as the event is written.
    pub schedule_ms: Vec<u64>,
    /// Each retry delay is moved by up to this share of itself, either way.
    pub jitter_percent: u32,
    /// Only a 2xx answer within this time counts as delivered.
    pub webhook_timeout_ms: u64,
    /// Attempts in flight to one endpoint at once.
    pub endpoint_inflight_max: usize,
    /// Attempts in flight to all endpoints at once (with RabbitMQ, also the consumer's
    /// prefetch: messages held unacknowledged).
    pub inflight_max: usize,
    /// The longest a due delivery waits when no wake-up came.
    pub poll_interval_ms: u64,
    /// Due deliveries read per scan.
    pub batch_max: u32,
    /// How deliveries travel: `embedded` (the outbox table and timers in this process) or
    /// `rabbitmq` (the outbox relayed to a broker; retries wait in its delay queues).
    pub transport: NotificationTransport,
    /// The broker, when `transport = "rabbitmq"`.
    pub rabbitmq: RabbitMqSettings,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotificationTransport {
    #[default]
    Embedded,
    Rabbitmq,
}

impl NotificationTransport {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationTransport::Embedded => "embedded",
            NotificationTransport::Rabbitmq => "rabbitmq",
        }
    }
}

/// The RabbitMQ transport of the notifier: where the broker is, what its queues are called,
/// and the bounds of each queue (every queue Kassa declares has one).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RabbitMqSettings {
    /// `amqp://user:password@host:port/vhost` (`KASSA_AMQP_URL` for short).
    pub url: String,
    /// Exchanges and queues are named `{prefix}.…`; several Kassa installations (or test runs)
    /// share a broker under different prefixes.
    pub prefix: String,
    /// Messages the work queue may hold; past it the relay leaves events in the outbox.
    pub work_queue_length_max: u64,
    /// Messages each delay queue may hold; a retry refused by a full one waits in the outbox.
    pub delay_queue_length_max: u64,
    /// Dead letters kept in the final dead-letter queue (oldest dropped first; the store keeps
    /// every dead delivery regardless).
    pub dead_letter_queue_length_max: u64,
    /// A message for an endpoint already at `endpoint_inflight_max` goes back through a delay
    /// queue of this many ms instead of holding a consumer slot.
    pub endpoint_busy_delay_ms: u64,
    /// Reconnect backoff: from `reconnect_ms_min`, doubling, up to `reconnect_ms_max`.
    pub reconnect_ms_min: u64,
    pub reconnect_ms_max: u64,
    /// The longest one publish waits for the broker's confirm.
    pub confirm_timeout_ms: u64,
}

impl Default for RabbitMqSettings {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            prefix: "kassa".into(),
            work_queue_length_max: 1_000_000,
            delay_queue_length_max: 1_000_000,
            dead_letter_queue_length_max: 100_000,
            endpoint_busy_delay_ms: 1_000,
            reconnect_ms_min: 100,
            reconnect_ms_max: 5_000,
            confirm_timeout_ms: 10_000,
        }
    }
}

impl std::fmt::Debug for RabbitMqSettings {
    /// The URL's credentials are not shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMqSettings")
            .field("url", &redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("work_queue_length_max", &self.work_queue_length_max)
            .field("delay_queue_length_max", &self.delay_queue_length_max)
            .field(
                "dead_letter_queue_length_max",
                &self.dead_letter_queue_length_max,
            )
            .finish_non_exhaustive()
    }
}

/// `scheme://user:***@host/…`: a URL fit for a log line (no password).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".into();
    };
    match rest.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_string(),
    }
}

impl Default for NotificationSettings {
    fn default() -> Self {
        Self {
            // Stripe-like: 15 attempts over about three days.
            schedule_ms: vec![
                0, 60_000, 300_000, 600_000, 600_000, 1_800_000, 3_600_000, 3_600_000, 3_600_000,
                10_800_000, 21_600_000, 21_600_000, 43_200_000, 86_400_000, 86_400_000,
            ],
            jitter_percent: 10,
            webhook_timeout_ms: 10_000,
            endpoint_inflight_max: 4,
            inflight_max: 256,
            poll_interval_ms: 1_000,
            batch_max: 200,
            transport: NotificationTransport::Embedded,
            rabbitmq: RabbitMqSettings::default(),
        }
    }
}

/// One adapter's settings per outbound channel. Kassa's own `wallet` method needs none.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelSettings {
    pub card: AdapterSettings,
    pub qr_wallet: AdapterSettings,
    pub app_wallet: AdapterSettings,
    pub bank_transfer: AdapterSettings,
}

impl ChannelSettings {
    /// Every channel, by name, in a fixed order.
    pub fn all(&self) -> [(&'static str, &AdapterSettings); 4] {
        [
            ("card", &self.card),
            ("qr_wallet", &self.qr_wallet),
            ("app_wallet", &self.app_wallet),
            ("bank_transfer", &self.bank_transfer),
        ]
    }
}

/// The card channel's settings (kept as a name: they are every channel's now).
pub type CardChannelSettings = AdapterSettings;

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdapterSettings {
    /// `false` leaves the channel out: its methods are refused, its orders wait.
    pub enabled: bool,
    /// The provider's base URL; empty means the in-process sandbox (when `sandbox.enabled`;
    /// otherwise the channel is off).
    pub base_url: String,
    /// The secret requests and callbacks are signed with; empty means `sandbox.api_secret`.
    pub api_secret: String,
    pub request_timeout_ms: u64,
    /// Every attempt, wait and backoff of one channel command together.
    pub command_deadline_ms: u64,
    pub retry_attempts_max: u32,
    pub backoff_ms_min: u64,
    pub backoff_ms_max: u64,
    pub inflight_max: usize,
    /// How long the channel call of an accepted payment waits for one of the `inflight_max`
    /// slots (nothing has been sent yet; a new payment past the bound is refused instead).
    pub admitted_inflight_wait_ms_max: u64,
    /// Calls per second to the channel, and the burst above it.
    pub rate_per_s: u32,
    pub burst: u32,
    /// How long a new payment may wait for a rate permit before it is refused (429).
    pub rate_wait_ms_max: u64,
    /// Per-merchant calls per second on this channel; 0 = no per-merchant limit.
    pub merchant_rate_per_s: u32,
    /// Circuit breaker: over the last `breaker_window_size` calls (at least
    /// `breaker_min_calls`), a failure rate of `breaker_failure_rate_percent` opens it for
    /// `breaker_open_ms`; then `breaker_half_open_probes` calls test the channel.
    pub breaker_window_size: u32,
    pub breaker_min_calls: u32,
    pub breaker_failure_rate_percent: u32,
    pub breaker_open_ms: u64,
    pub breaker_half_open_probes: u32,
}

impl std::fmt::Debug for AdapterSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdapterSettings")
            .field("enabled", &self.enabled)
            .field("base_url", &self.base_url)
            .field("api_secret", &"***")
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("rate_per_s", &self.rate_per_s)
            .finish_non_exhaustive()
    }
}

impl Default for AdapterSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            base_url: String::new(),
            api_secret: String::new(),
            request_timeout_ms: 3_000,
            command_deadline_ms: 10_000,
            retry_attempts_max: 3,
            backoff_ms_min: 50,
            backoff_ms_max: 1_000,
            inflight_max: 256,
            admitted_inflight_wait_ms_max: 30_000,
            rate_per_s: 1_000,
            burst: 100,
            rate_wait_ms_max: 200,
            merchant_rate_per_s: 0,
            breaker_window_size: 50,
            breaker_min_calls: 20,
            breaker_failure_rate_percent: 50,
            breaker_open_ms: 5_000,
            breaker_half_open_probes: 3,
        }
    }
}

impl Settings {
    /// Defaults, then the file (if any), then `KASSA_*` variables from `env`; validated.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut tree =
            toml::Table::try_from(Settings::default()).map_err(|e| ConfigError::Parse {
                path: "<defaults>".into(),
                reason: e.to_string(),
            })?;
        let mut source = "defaults".to_string();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
            let from_file: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::Parse {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?;
            overrides::merge(&mut tree, from_file, "")?;
            source = path.display().to_string();
        }
        overrides::apply_env(&mut tree, env)?;
        let settings: Settings =
            toml::Value::Table(tree)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: source,
                    reason: e.to_string(),
                })?;
        validate::check(&settings)?;
        Ok(settings)
    }

    /// Defaults plus the process environment.
    pub fn from_env(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Settings::load(file, std::env::vars())
    }

    pub fn http_addr(&self) -> Result<SocketAddr, ConfigError> {
        validate::socket_addr("http.addr", &self.http.addr)
    }

    pub fn sandbox_addr(&self) -> Result<SocketAddr, ConfigError> {
        validate::socket_addr("sandbox.addr", &self.sandbox.addr)
    }

    pub fn store_path(&self) -> PathBuf {
        self.store.data_dir.join("kassa.db")
    }

    pub fn sandbox_ledger_path(&self) -> PathBuf {
        self.store.data_dir.join("sandbox-ledger.db")
    }

    pub fn master_key_path(&self) -> PathBuf {
        self.store.data_dir.join("master.key")
    }
}

#[cfg(test)]
mod tests;
