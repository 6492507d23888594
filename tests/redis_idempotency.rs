//! Idempotency across a cluster with Redis (127.0.0.1:6379 under a key prefix of the test's
//! own, with PostgreSQL and RabbitMQ): one `Idempotency-Key` raced through two nodes makes one
//! payment, every other answer is a 409 or a byte-identical replay, on either node; a key locked
//! by another node (a lock planted in Redis) is a 409 until the lock goes, and a finished key is
//! replayed from the store even while a stale lock lingers.
//!
//! Without the services the tests skip with a printed reason; under `CI=true` they fail.

#[path = "redis_common.rs"]
mod common;

use std::time::Duration;

use common::*;
use harness::*;
use serde_json::json;

/// Requests racing with one key, alternating between the two nodes.
const RACERS: usize = 12;
/// The sandbox acquirer's latency: the first request is still running when the others land.
const SANDBOX_LATENCY_MS: u64 = 400;
const WAIT: Duration = Duration::from_secs(30);

fn replayed(response: &Response) -> bool {
    response.header("Idempotent-Replayed") == Some("true")
}

#[tokio::test]
async fn one_key_raced_through_two_nodes_makes_one_payment() {
    let latency =
        |options: KassaOptions| options.env("KASSA_SANDBOX_LATENCY_MS", SANDBOX_LATENCY_MS);
    let Some(cluster) = RedisCluster::start("idem-race", None, 2, latency).await else {
        return;
    };
    cluster.wait_connected(true).await;
    let (credentials, clients) = cluster.merchant("Race Ltd").await;
    let key = unique("race");
    let body = usd_charge(CARD_SUCCEEDS);

    let sends = (0..RACERS).map(|i| post_payment(&clients[i % 2], &body, Some(&key)));
    let answers = futures::future::join_all(sends).await;

    let fresh: Vec<&Response> = answers
        .iter()
        .filter(|r| r.status == 201 && !replayed(r))
        .collect();
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(fresh.len(), 1, "one request does the work: {statuses:?}");
    let original = fresh[0];
    let mut conflicts = 0;
    for answer in &answers {
        match answer.status {
            201 => assert_eq!(answer.body, original.body, "a replay is the same bytes"),
            409 => {
                assert_error(answer, 409, "idempotency_request_in_progress");
                conflicts += 1;
            }
            _ => panic!("unexpected answer {}: {}", answer.status, answer.text()),
        }
    }
    assert!(conflicts > 0, "the race was real: {statuses:?}");

    // Afterwards both nodes replay it byte for byte (from Redis' cache), and free the lock.
    for client in &clients {
        let again = post_payment(client, &body, Some(&key)).await;
        assert_eq!(again.status, 201, "{}", again.text());
        assert!(replayed(&again));
        assert_eq!(again.body, original.body);
    }
    let done = format!("{}:idemdone:{}:{key}", cluster.redis.prefix, credentials.id);
    assert_eq!(cluster.redis.keys("idemdone:*").await, Ok(vec![done]));
    poll_until("the in-flight lock to be released", WAIT, || async {
        match cluster.redis.keys("idem:*").await? {
            locks if locks.is_empty() => Ok(()),
            locks => Err(format!("{locks:?}")),
        }
    })
    .await;
    // Another body under the key is refused on the cache's fast path too.
    let mut other = body.clone();
    other["amount"] = json!("11.00");
    assert_error(
        &post_payment(&clients[1], &other, Some(&key)).await,
        422,
        "idempotency_key_reused",
    );

    // One payment, charged once by the acquirer.
    assert_eq!(list_all_payments(&clients[0]).await.len(), 1);
    let ledger = sandbox_call(&cluster.nodes[0], "GET", "/sandbox/ledger", None).await;
    let charges = ledger["charges"].as_array().expect("the sandbox's charges");
    assert_eq!(charges.len(), 1, "{ledger}");
}

#[tokio::test]
async fn a_key_locked_elsewhere_waits_and_the_store_has_the_last_word() {
    let Some(cluster) = RedisCluster::start("idem-lock", None, 2, |options| options).await else {
        return;
    };
    cluster.wait_connected(true).await;
    let (credentials, clients) = cluster.merchant("Lock Ltd").await;
    let key = unique("locked");
    let body = usd_charge(CARD_SUCCEEDS);
    let lock = format!("{}:idem:{}:{key}", cluster.redis.prefix, credentials.id);
    let done = format!("{}:idemdone:{}:{key}", cluster.redis.prefix, credentials.id);
    let plant_lock = || async {
        let set = redis::cmd("SET")
            .arg(&lock)
            .arg("another-node")
            .arg("PX")
            .arg(60_000)
            .clone();
        cluster
            .redis
            .command::<()>(&set)
            .await
            .expect("planting a lock");
    };

    // Another node holds the key: both nodes say "in progress", and nothing is created.
    plant_lock().await;
    for client in &clients {
        let refused = post_payment(client, &body, Some(&key)).await;
        assert_error(&refused, 409, "idempotency_request_in_progress");
    }
    assert!(list_all_payments(&clients[0]).await.is_empty());

    // Once it is gone the key works, and the other node's token was never touched meanwhile.
    let token: Option<String> = cluster
        .redis
        .command(redis::cmd("GET").arg(&lock))
        .await
        .expect("reading the lock");
    assert_eq!(token.as_deref(), Some("another-node"));
    let delete = redis::cmd("DEL").arg(&lock).clone();
    cluster
        .redis
        .command::<u64>(&delete)
        .await
        .expect("deleting");
    let created = post_payment(&clients[1], &body, Some(&key)).await;
    let created = expect_status(&created, 201, "the charge once the lock is gone");
    assert_eq!(created["status"], "succeeded", "{created}");

    // A stale lock and no cached answer: the store's stored response is replayed anyway, and
    // goes back into the cache.
    poll_until("the node's own lock to be released", WAIT, || async {
        let exists: u64 = cluster
            .redis
            .command(redis::cmd("EXISTS").arg(&lock))
            .await?;
        if exists == 0 {
            Ok(())
        } else {
            Err("still locked".into())
        }
    })
    .await;
    plant_lock().await;
    let evict = redis::cmd("DEL").arg(&done).clone();
    cluster
        .redis
        .command::<u64>(&evict)
        .await
        .expect("evicting");
    let replay = post_payment(&clients[0], &body, Some(&key)).await;
    assert_eq!(replay.status, 201, "{}", replay.text());
    assert!(replayed(&replay));
    assert_eq!(id_of(&replay.json().expect("JSON")), id_of(&created));
    assert_eq!(cluster.redis.keys("idemdone:*").await, Ok(vec![done]));
    assert_eq!(list_all_payments(&clients[0]).await.len(), 1);
}
