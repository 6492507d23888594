//! The machine's services for service-backed tests (../shared/SERVICES.md): RabbitMQ on
//! 127.0.0.1:5672, PostgreSQL on 127.0.0.1:5432, Redis on 127.0.0.1:6379.
//!
//! [`rabbitmq`], [`postgres`] and [`redis`] check that the service answers; without it a test
//! skips with a printed reason, except under `CI=true`, where a missing service fails the test.
//! [`BrokerPrefix`] gives each Kassa instance its own exchange and queue names,
//! [`PostgresSchema`] its own schema and [`RedisPrefix`] its own Redis keys; each is deleted
//! when dropped, so no test sees what another left behind. [`OwnRedis`] is a `redis-server` of
//! the test's own, for tests that kill and restart Redis.

use std::time::Duration;

use lapin::options::{ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

/// The broker the project's machines run (SERVICES.md).
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// How long the check for the broker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The database the project's machines run (SERVICES.md: trust auth, database `test`).
pub const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A missing service: fail under `CI=true`, else print why `test` is skipped.
fn missing(test: &str, why: String) -> Option<()> {
    if in_ci() {
        panic!("{test}: {why}; CI=true requires it (./scripts/services.sh starts it)");
    }
    eprintln!("SKIPPED {test}: {why} (./scripts/services.sh starts it)");
    None
}

async fn postgres_client() -> Result<tokio_postgres::Client, String> {
    let connect = tokio_postgres::connect(POSTGRES_URL, tokio_postgres::NoTls);
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok((client, connection))) => {
            tokio::spawn(connection);
            Ok(client)
        }
        Ok(Err(error)) => Err(format!("PostgreSQL at {POSTGRES_URL}: {error}")),
        Err(_) => Err(format!("PostgreSQL at {POSTGRES_URL}: no answer")),
    }
}

/// `Some(())` when PostgreSQL answers; otherwise `None` after printing why `test` is skipped.
/// Under `CI=true` a missing database fails the test instead.
pub async fn postgres(test: &str) -> Option<()> {
    match postgres_client().await {
        Ok(_) => Some(()),
        Err(why) => missing(test, why),
    }
}

/// A fresh schema name for `postgres.schema`; the schema (created by Kassa) is dropped on drop.
pub struct PostgresSchema {
    pub schema: String,
}

impl PostgresSchema {
    pub fn new() -> PostgresSchema {
        let random: [u8; 6] = rand_bytes();
        PostgresSchema {
            schema: format!("kassa_e2e_{}", hex::encode(random)),
        }
    }
}

impl Default for PostgresSchema {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PostgresSchema {
    fn drop(&mut self) {
        let drop_schema = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
        on_own_runtime(async move {
            if let Ok(client) = postgres_client().await {
                let _ = client.batch_execute(&drop_schema).await;
            }
        });
    }
}

/// How long a clean-up (dropping a schema, queues or keys) may take: a service that stops
/// answering leaves litter behind instead of hanging the test run.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `work` to completion, or for at most [`CLEANUP_TIMEOUT`], on a thread and runtime of
/// its own (drop may run inside or outside a runtime).
fn on_own_runtime(work: impl Future<Output = ()> + Send + 'static) {
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for a clean-up");
        if runtime
            .block_on(async move { tokio::time::timeout(CLEANUP_TIMEOUT, work).await })
            .is_err()
        {
            eprintln!("a clean-up did not finish within {CLEANUP_TIMEOUT:?}; left as it is");
        }
    });
    let _ = thread.join();
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|ci| ci == "true")
}

async fn connect() -> Result<Connection, String> {
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio::current());
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(AMQP_URL, properties)).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(format!("RabbitMQ at {AMQP_URL}: {error}")),
        Err(_) => Err(format!("RabbitMQ at {AMQP_URL}: no answer")),
    }
}

/// `Some(())` when RabbitMQ answers; otherwise `None` after printing why `test` is skipped.
/// Under `CI=true` a missing broker fails the test instead.
pub async fn rabbitmq(test: &str) -> Option<()> {
    match connect().await {
        Ok(connection) => {
            let _ = connection.close(200, "checked").await;
            Some(())
        }
        Err(why) => missing(test, why),
    }
}

/// A fresh `notifications.rabbitmq.prefix`; its exchanges and queues are deleted on drop.
pub struct BrokerPrefix {
    pub prefix: String,
}

impl BrokerPrefix {
    pub fn new(test: &str) -> BrokerPrefix {
        let random: [u8; 6] = rand_bytes();
        BrokerPrefix {
            prefix: format!("kassa-test-{test}-{}", hex::encode(random)),
        }
    }

    /// Messages waiting in one of the prefix's queues (`work`, `dead`, `delay.<ms>ms`).
    pub async fn queue_length(&self, queue: &str) -> Result<u32, String> {
        let connection = connect().await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| e.to_string())?;
        let passive = QueueDeclareOptions {
            passive: true,
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let name = format!("{}.{queue}", self.prefix);
        let declared = channel
            .queue_declare(name.as_str(), passive, FieldTable::default())
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        let _ = connection.close(200, "measured").await;
        Ok(declared.message_count())
    }
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("OS randomness");
    bytes
}

impl Drop for BrokerPrefix {
    /// Deletes every queue and exchange under the prefix (on a thread of its own: drop may run
    /// inside or outside a runtime). Queue names are Kassa's (`notifier/broker.rs`): the work
    /// and dead-letter queues and one `delay.<ms>ms` queue per delay; delay queues are found by
    /// asking for the ones the tests' schedules use.
    fn drop(&mut self) {
        let prefix = self.prefix.clone();
        on_own_runtime(async move { delete_prefix(&prefix).await });
    }
}

/// Delays the tests configure (schedules and the busy delay), whose queues may exist.
const TEST_DELAYS_MS: [u64; 8] = [100, 200, 400, 800, 1_000, 2_000, 5_000, 60_000];

async fn delete_prefix(prefix: &str) {
    let Ok(connection) = connect().await else {
        return;
    };
    let mut queues = vec![format!("{prefix}.work"), format!("{prefix}.dead")];
    queues.extend(
        TEST_DELAYS_MS
            .iter()
            .map(|ms| format!("{prefix}.delay.{ms}ms")),
    );
    for queue in queues {
        // A channel per delete: deleting a queue that does not exist closes the channel.
        let Ok(channel) = connection.create_channel().await else {
            break;
        };
        let _ = channel
            .queue_delete(queue.as_str(), QueueDeleteOptions::default())
            .await;
    }
    for exchange in [format!("{prefix}.deliveries"), format!("{prefix}.delays")] {
        let Ok(channel) = connection.create_channel().await else {
            break;
        };
        let _ = channel
            .exchange_delete(exchange.as_str(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = connection.close(200, "cleaned up").await;
}

/// The Redis the project's machines run (SERVICES.md: no password, nothing kept on disk).
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// A connection to the Redis at `url`, within [`CONNECT_TIMEOUT`].
async fn redis_connection(url: &str) -> Result<redis::aio::MultiplexedConnection, String> {
    let client = redis::Client::open(url).map_err(|e| format!("Redis at {url}: {e}"))?;
    let connect = client.get_multiplexed_async_connection();
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(format!("Redis at {url}: {error}")),
        Err(_) => Err(format!("Redis at {url}: no answer")),
    }
}

/// `PING` → `PONG` from the Redis at `url`.
pub async fn redis_ping(url: &str) -> Result<(), String> {
    let mut connection = redis_connection(url).await?;
    let ping = redis::cmd("PING");
    match tokio::time::timeout(CONNECT_TIMEOUT, ping.query_async::<String>(&mut connection)).await {
        Ok(Ok(_pong)) => Ok(()),
        Ok(Err(error)) => Err(format!("Redis at {url}: {error}")),
        Err(_) => Err(format!("Redis at {url}: no answer to PING")),
    }
}

/// `Some(())` when the machine's Redis answers; otherwise `None` after printing why `test` is
/// skipped. Under `CI=true` a missing Redis fails the test instead.
pub async fn redis(test: &str) -> Option<()> {
    match redis_ping(REDIS_URL).await {
        Ok(()) => Some(()),
        Err(why) => missing(test, why),
    }
}

/// A fresh `redis.key_prefix` on the Redis at `url`; its keys are deleted on drop.
pub struct RedisPrefix {
    pub prefix: String,
    url: String,
}

impl RedisPrefix {
    /// A prefix on the machine's Redis.
    pub fn new(test: &str) -> RedisPrefix {
        Self::on(REDIS_URL, test)
    }

    /// A prefix on the Redis at `url`.
    pub fn on(url: &str, test: &str) -> RedisPrefix {
        let random: [u8; 6] = rand_bytes();
        RedisPrefix {
            prefix: format!("kassa-test-{test}-{}", hex::encode(random)),
            url: url.to_string(),
        }
    }

    /// The environment that points a node at this Redis under this prefix.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("KASSA_REDIS_URL", self.url.clone()),
            ("KASSA_REDIS_KEY_PREFIX", self.prefix.clone()),
        ]
    }

    /// The keys under the prefix matching `pattern` (after `prefix:`, e.g. `idemdone:*`), sorted.
    pub async fn keys(&self, pattern: &str) -> Result<Vec<String>, String> {
        let mut connection = redis_connection(&self.url).await?;
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:{pattern}", self.prefix))
            .query_async(&mut connection)
            .await
            .map_err(|e| e.to_string())?;
        keys.sort();
        Ok(keys)
    }

    /// Runs one command on this Redis (a test reading or planting a key).
    pub async fn command<T: redis::FromRedisValue>(
        &self,
        command: &redis::Cmd,
    ) -> Result<T, String> {
        let mut connection = redis_connection(&self.url).await?;
        command
            .query_async(&mut connection)
            .await
            .map_err(|e| e.to_string())
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        let (url, pattern) = (self.url.clone(), format!("{}:*", self.prefix));
        on_own_runtime(async move {
            let Ok(mut connection) = redis_connection(&url).await else {
                return;
            };
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(&pattern)
                .query_async(&mut connection)
                .await
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: Result<u64, _> = redis::cmd("DEL")
                    .arg(keys)
                    .query_async(&mut connection)
                    .await;
            }
        });
    }
}

/// How long a test's own `redis-server` may take to answer after it starts.
const OWN_REDIS_START_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a starting `redis-server` is pinged until it answers (within the timeout above).
const OWN_REDIS_PING_INTERVAL: Duration = Duration::from_millis(20);

/// A `redis-server` of the test's own on a free port, keeping nothing on disk, so the test can
/// kill and restart it without disturbing any other test. Killed on drop.
pub struct OwnRedis {
    port: u16,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    /// Starts one; `None` (with the reason printed) when `redis-server` cannot run on a
    /// developer machine; under `CI=true` that fails the test instead.
    pub async fn start(test: &str) -> Option<OwnRedis> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("its address").port();
        drop(listener);
        let mut redis = OwnRedis { port, child: None };
        match redis.spawn().await {
            Ok(()) => Some(redis),
            Err(why) => {
                missing(test, why);
                None
            }
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, as a crash or a pulled cable would stop it; returns once it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty: it kept nothing); returns once it answers.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn()
            .await
            .expect("restarting the test's redis-server");
    }

    async fn spawn(&mut self) -> Result<(), String> {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir", "/tmp"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run redis-server: {e}"))?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + OWN_REDIS_START_TIMEOUT;
        loop {
            let answer = redis_ping(&self.url()).await;
            match answer {
                Ok(()) => return Ok(()),
                Err(why) if tokio::time::Instant::now() >= deadline => {
                    self.kill();
                    return Err(format!("redis-server on port {}: {why}", self.port));
                }
                Err(_) => tokio::time::sleep(OWN_REDIS_PING_INTERVAL).await,
            }
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
