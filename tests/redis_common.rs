//! What the Redis tests share (included with `#[path]`): nodes in cluster mode on PostgreSQL,
//! RabbitMQ and Redis under a key prefix of their own, and what operators see of Redis.

#![allow(dead_code)] // Each test binary uses its own part of this file.

use std::time::Duration;

use harness::cluster::ClusterEnv;
use harness::services::{self, RedisPrefix};
use harness::*;
use serde_json::Value;

/// How long Redis' state may take to show (a probe runs every `reconnect_ms_max`).
pub const STATE_WAIT: Duration = Duration::from_secs(30);
/// The probe period the tests run with, so an outage and a recovery show quickly.
pub const RECONNECT_MS_MAX: u64 = 300;

/// Nodes sharing one database, one broker prefix and one Redis prefix. Fields drop in order:
/// the nodes stop before their schema, queues and keys are deleted.
pub struct RedisCluster {
    pub nodes: Vec<Kassa>,
    pub redis: RedisPrefix,
    _services: ClusterEnv,
}

impl RedisCluster {
    /// `count` nodes on the machine's Redis (`redis_url: None`) or on the one at `redis_url`,
    /// each with `tweak` applied; `None` (reason printed) when a service is missing, except
    /// under `CI=true`.
    pub async fn start(
        test: &str,
        redis_url: Option<String>,
        count: usize,
        tweak: impl Fn(KassaOptions) -> KassaOptions,
    ) -> Option<RedisCluster> {
        let services = ClusterEnv::new(test).await?;
        let redis = match redis_url {
            Some(url) => RedisPrefix::on(&url, test),
            None => {
                services::redis(test).await?;
                RedisPrefix::new(test)
            }
        };
        let env = redis.env();
        let nodes = services
            .start_nodes(count, |options| {
                let options = env
                    .iter()
                    .fold(options, |options, (key, value)| options.env(key, value))
                    .env("KASSA_REDIS_RECONNECT_MS_MAX", RECONNECT_MS_MAX);
                tweak(options)
            })
            .await;
        Some(RedisCluster {
            nodes,
            redis,
            _services: services,
        })
    }

    /// A merchant created through node 0, and a client for it on every node.
    pub async fn merchant(&self, name: &str) -> (MerchantCredentials, Vec<MerchantClient>) {
        let credentials = self.nodes[0]
            .admin()
            .create_merchant(name, None)
            .await
            .expect("creating a merchant");
        let clients = self
            .nodes
            .iter()
            .map(|node| node.merchant(&credentials))
            .collect();
        (credentials, clients)
    }

    /// Waits until every node reports `kassa_redis_connected` as `connected`.
    pub async fn wait_connected(&self, connected: bool) {
        let want = u64::from(connected);
        let what = format!("every node to report kassa_redis_connected {want}");
        poll_until(&what, STATE_WAIT, || async {
            let mut seen = Vec::new();
            for node in &self.nodes {
                seen.push(node.metric("kassa_redis_connected").await);
            }
            if seen.iter().all(|&value| value == want) {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        })
        .await;
    }
}

/// `GET /readyz`: its status and `checks`.
pub async fn readyz(node: &Kassa) -> (u16, Value) {
    let response = HttpClient::new(node.base_url())
        .send("GET", "/readyz", &[], Vec::new())
        .await
        .expect("GET /readyz");
    let body = response.json().expect("/readyz answers JSON");
    (response.status, body["checks"].clone())
}

/// `kassa_redis_fallbacks_total{use}` of `node`.
pub async fn fallbacks(node: &Kassa, used_for: &str) -> u64 {
    node.metric(&format!(
        "kassa_redis_fallbacks_total{{use=\"{used_for}\"}}"
    ))
    .await
}
