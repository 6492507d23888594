//! Idempotency by key: one charge per key whatever the concurrency, conflicting reuse refused,
//! tombstones from `resolve`, and all of it surviving a sandbox restart.

mod common;

use common::{channel_for, charge_request, charges_with_key, fast_config, start_sandbox};
use kassa_channels::{AdapterConfig, ChannelError, ChargeOutcome, ResolveOutcome};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_charges_with_one_key_make_one_charge() {
    let sandbox = start_sandbox(0, None).await;
    let channel = channel_for(&sandbox.base_url(), fast_config());
    let request = charge_request("order-burst", "4242424242424242", 4_200, true);

    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let channel = channel.clone();
        let request = request.clone();
        calls.spawn(async move { channel.charge(&request).await });
    }
    let mut refs = Vec::new();
    while let Some(result) = calls.join_next().await {
        match result.expect("the task ran").expect("an answer") {
            ChargeOutcome::Succeeded { provider_ref } => refs.push(provider_ref),
            other => panic!("every caller must see the one success, got {other:?}"),
        }
    }
    assert_eq!(refs.len(), 20);
    assert!(
        refs.iter().all(|r| *r == refs[0]),
        "one charge id for all: {refs:?}"
    );

    let charges = charges_with_key(&sandbox.base_url(), "order-burst").await;
    assert_eq!(charges.len(), 1, "{charges:?}");
    assert_eq!(charges[0]["captured_minor"], 4_200);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_key_reused_for_a_different_charge_is_refused() {
    let sandbox = start_sandbox(0, None).await;
    let channel = channel_for(&sandbox.base_url(), fast_config());
    channel
        .charge(&charge_request(
            "order-reuse",
            "4242424242424242",
            1_000,
            true,
        ))
        .await
        .expect("an answer");

    let reused = ChannelError::Rejected {
        status: 409,
        code: "idempotency_key_reused".into(),
    };
    let other_amount = charge_request("order-reuse", "4242424242424242", 1_001, true);
    assert_eq!(channel.charge(&other_amount).await, Err(reused.clone()));
    let mut other_currency = charge_request("order-reuse", "4242424242424242", 1_000, true);
    other_currency.currency = "EUR".into();
    assert_eq!(channel.charge(&other_currency).await, Err(reused.clone()));
    let other_card = charge_request("order-reuse", "5555555555554444", 1_000, true);
    assert_eq!(channel.charge(&other_card).await, Err(reused));

    assert_eq!(
        charges_with_key(&sandbox.base_url(), "order-reuse")
            .await
            .len(),
        1
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn resolve_tombstones_a_missing_key_forever() {
    let sandbox = start_sandbox(0, None).await;
    let channel = channel_for(&sandbox.base_url(), fast_config());

    assert_eq!(
        channel.resolve("order-lost").await,
        Ok(ResolveOutcome::NotFound)
    );
    let late = channel
        .charge(&charge_request("order-lost", "4242424242424242", 900, true))
        .await;
    assert_eq!(
        late,
        Err(ChannelError::Rejected {
            status: 409,
            code: "key_blocked".into()
        })
    );
    assert_eq!(
        channel.resolve("order-lost").await,
        Ok(ResolveOutcome::NotFound)
    );
    assert!(
        charges_with_key(&sandbox.base_url(), "order-lost")
            .await
            .is_empty()
    );

    // A key that did charge resolves to its charge, and stays chargeable (as a replay).
    let ChargeOutcome::Succeeded { provider_ref } = channel
        .charge(&charge_request(
            "order-known",
            "4242424242424242",
            900,
            true,
        ))
        .await
        .expect("an answer")
    else {
        panic!("4242… must succeed");
    };
    let ResolveOutcome::Found(found) = channel.resolve("order-known").await.expect("an answer")
    else {
        panic!("the charge exists");
    };
    assert_eq!(
        found.outcome,
        ChargeOutcome::Succeeded {
            provider_ref: provider_ref.clone()
        }
    );
    assert_eq!((found.amount_minor, found.captured_minor), (900, 900));
    assert_eq!(found.currency, "USD");
    let replay = channel
        .charge(&charge_request(
            "order-known",
            "4242424242424242",
            900,
            true,
        ))
        .await;
    assert_eq!(replay, Ok(ChargeOutcome::Succeeded { provider_ref }));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn the_ledger_file_keeps_idempotency_across_a_restart() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("sandbox.db");

    let first = start_sandbox(0, Some(path.clone())).await;
    let channel = channel_for(&first.base_url(), fast_config());
    let request = charge_request("order-durable", "4242424242424242", 3_300, true);
    let before = channel.charge(&request).await.expect("an answer");
    assert_eq!(
        channel.resolve("order-never").await,
        Ok(ResolveOutcome::NotFound)
    );
    first.shutdown().await;

    let second = start_sandbox(0, Some(path)).await;
    let channel = channel_for(&second.base_url(), AdapterConfig::default());
    let after = channel.charge(&request).await.expect("an answer");
    assert_eq!(
        before, after,
        "the same key must return the same charge id after a restart"
    );
    assert_eq!(
        charges_with_key(&second.base_url(), "order-durable")
            .await
            .len(),
        1
    );
    let blocked = channel
        .charge(&charge_request(
            "order-never",
            "4242424242424242",
            100,
            true,
        ))
        .await;
    assert_eq!(
        blocked,
        Err(ChannelError::Rejected {
            status: 409,
            code: "key_blocked".into()
        }),
        "tombstones survive the restart too"
    );
    second.shutdown().await;
}
