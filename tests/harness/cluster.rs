//! Kassa nodes in cluster mode on the machine's services: [`ClusterEnv`] holds a fresh
//! PostgreSQL schema, RabbitMQ queue prefix and Redis key prefix (dropped afterwards) and the
//! environment that points a node at them; [`ClusterEnv::start_nodes`] starts several nodes
//! that share one sandbox acquirer, as nodes behind a load balancer share one real acquirer.

use crate::process::{Kassa, KassaOptions};
use crate::services::{self, BrokerPrefix, PostgresSchema, RedisPrefix};

/// A master key shared by every node of a cluster (merchant secrets are sealed with it).
pub const MASTER_KEY: &str = "4b61737361206b6173736120636c7573746572206d6173746572206b65792121";

/// The channels other than `card`, which nodes that do not host the sandbox turn off (the
/// tests' clusters pay by card).
const NON_CARD_CHANNELS: [&str; 3] = ["QR_WALLET", "APP_WALLET", "BANK_TRANSFER"];

/// The services a cluster node needs, and the environment that points a node at them.
pub struct ClusterEnv {
    pub schema: PostgresSchema,
    pub broker: BrokerPrefix,
    pub redis: RedisPrefix,
}

impl ClusterEnv {
    /// `None` (with the reason printed) when a service is missing on a developer machine;
    /// under `CI=true` a missing service fails the test instead.
    pub async fn new(test: &str) -> Option<ClusterEnv> {
        services::postgres(test).await?;
        services::rabbitmq(test).await?;
        services::redis(test).await?;
        Some(ClusterEnv {
            schema: PostgresSchema::new(),
            broker: BrokerPrefix::new(test),
            redis: RedisPrefix::new(test),
        })
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("KASSA_MODE", "cluster".into()),
            ("KASSA_POSTGRES_URL", services::POSTGRES_URL.into()),
            ("KASSA_POSTGRES_SCHEMA", self.schema.schema.clone()),
            ("KASSA_NOTIFICATIONS_TRANSPORT", "rabbitmq".into()),
            ("KASSA_AMQP_URL", services::AMQP_URL.into()),
            (
                "KASSA_NOTIFICATIONS_RABBITMQ_PREFIX",
                self.broker.prefix.clone(),
            ),
            ("KASSA_MASTER_KEY", MASTER_KEY.into()),
        ]
        .into_iter()
        .chain(self.redis.env())
        .collect()
    }

    pub fn options(&self) -> KassaOptions {
        self.env()
            .into_iter()
            .fold(KassaOptions::new(), |options, (key, value)| {
                options.env(key, value)
            })
    }

    /// Starts `count` nodes (at least one), each with `options` applied on top of the
    /// cluster's environment. Node 0 runs the sandbox acquirer on a fixed port; the others
    /// send their card calls there, so every node's charges land in one ledger.
    pub async fn start_nodes(
        &self,
        count: usize,
        options: impl Fn(KassaOptions) -> KassaOptions,
    ) -> Vec<Kassa> {
        assert!(count >= 1, "a cluster has at least one node");
        let sandbox = format!("127.0.0.1:{}", free_port());
        let mut nodes =
            vec![Kassa::start(options(self.options().env("KASSA_SANDBOX_ADDR", &sandbox))).await];
        for _ in 1..count {
            let mut node = self
                .options()
                .env("KASSA_SANDBOX_ENABLED", false)
                .env("KASSA_CHANNELS_CARD_BASE_URL", format!("http://{sandbox}"));
            for channel in NON_CARD_CHANNELS {
                node = node.env(&format!("KASSA_CHANNELS_{channel}_ENABLED"), false);
            }
            nodes.push(Kassa::start(options(node)).await);
        }
        nodes
    }
}

/// A port nothing listens on right now (for a node's sandbox the other nodes call).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}
