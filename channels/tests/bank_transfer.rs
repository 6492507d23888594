//! The `bank_transfer` channel end to end over real HTTP: `Bank-*` signed JSON, transfers
//! accepted at once and decided by the bank later, callbacks that may never come, lookups,
//! return transfers, and no cancel.

#[path = "common/async_support.rs"]
mod async_support;
mod common;

use async_support::{IBAN, bank, bank_request, decided, receive_callbacks, refund, set, start};
use common::SECRET;
use kassa_channels::inbound::InboundError;
use kassa_channels::sandbox::Behaviour;
use kassa_channels::signing::SignatureError;
use kassa_channels::{AsyncStatus, ChannelError, LookupOutcome, RefundOutcome, Secret};
use serde_json::Value;

#[tokio::test]
async fn a_transfer_is_accepted_then_settled_and_announced_by_a_signed_callback() {
    let sandbox = start().await;
    let receiver = receive_callbacks(
        &sandbox,
        "bank_transfer",
        0,
        Behaviour {
            settle_delay_ms_min: 20,
            settle_delay_ms_max: 50,
            ..Behaviour::default()
        },
    )
    .await;
    let channel = bank(&sandbox);
    let accepted = channel
        .create(&bank_request("bt-1", 25_000_000))
        .await
        .expect("accepted");
    assert_eq!(accepted.status, AsyncStatus::Pending { action_url: None });
    assert!(accepted.provider_ref.starts_with("bt_"));
    assert_eq!(
        channel
            .create(&bank_request("bt-1", 25_000_000))
            .await
            .map(|p| p.provider_ref),
        Ok(accepted.provider_ref.clone()),
        "the same key is the same transfer"
    );

    let callbacks = receiver.wait_for(1, 5_000).await;
    let reported = callbacks[0]
        .decode("bank_transfer", SECRET)
        .expect("a signed callback");
    assert_eq!(reported.status, AsyncStatus::Succeeded);
    assert_eq!(reported.provider_ref, accepted.provider_ref);
    let event: Value = serde_json::from_slice(&callbacks[0].body).expect("JSON");
    assert_eq!(event["event_type"], "transfer.settled");
    // Neither the callback nor any answer carries the account number.
    assert!(!String::from_utf8_lossy(&callbacks[0].body).contains(IBAN));
    assert_eq!(
        callbacks[0].decode("bank_transfer", "wrong secret"),
        Err(InboundError::Signature(SignatureError::Mismatch))
    );
    let mut tampered = callbacks[0].clone();
    tampered.body = String::from_utf8_lossy(&tampered.body)
        .replace("\"settled\"", "\"rejected\"")
        .into_bytes()
        .into();
    assert!(matches!(
        tampered.decode("bank_transfer", SECRET),
        Err(InboundError::Signature(SignatureError::Mismatch))
    ));
    assert_eq!(
        channel.lookup("bt-1").await,
        Ok(LookupOutcome::Found(reported.clone()))
    );
    let ledger = common::ledger(&sandbox.base_url()).await;
    assert!(!ledger.to_string().contains(IBAN));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn without_a_callback_only_a_lookup_learns_the_outcome() {
    let sandbox = start().await;
    let receiver = receive_callbacks(
        &sandbox,
        "bank_transfer",
        0,
        Behaviour {
            callback_rate_percent: 0,
            settle_delay_ms_min: 10,
            settle_delay_ms_max: 10,
            ..Behaviour::default()
        },
    )
    .await;
    let channel = bank(&sandbox);
    channel
        .create(&bank_request("bt-quiet", 77_013))
        .await
        .expect("accepted");
    let rejected = decided(5_000, || async {
        channel.lookup("bt-quiet").await.expect("lookup")
    })
    .await;
    assert!(
        matches!(rejected.status, AsyncStatus::Failed { ref code, .. } if code == "account_closed"),
        "{rejected:?}"
    );
    // The outcome was decided and its callback withheld: none is on its way.
    let stats = sandbox.stats().channels["bank_transfer"].clone();
    assert_eq!(stats.callbacks_withheld, 1);
    assert_eq!(stats.callbacks_queued, 0);
    assert_eq!(receiver.count(), 0);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn no_cancel_and_returns_only_once_settled() {
    let sandbox = start().await;
    set(
        &sandbox,
        "bank_transfer",
        Behaviour {
            settle_delay_ms_min: 60_000,
            settle_delay_ms_max: 60_000,
            ..Behaviour::default()
        },
    );
    let channel = bank(&sandbox);
    let slow = channel
        .create(&bank_request("bt-slow", 5_000))
        .await
        .expect("accepted");
    assert_eq!(
        channel.cancel("bt-slow").await,
        Err(ChannelError::Rejected {
            status: 409,
            code: "transfer_not_cancelable".into()
        })
    );
    assert_eq!(
        channel
            .refund(&refund("bt-ret-0", &slow.provider_ref, 1, "EUR"))
            .await,
        Err(ChannelError::Rejected {
            status: 409,
            code: "payment_not_refundable".into()
        })
    );

    set(&sandbox, "bank_transfer", Behaviour::default());
    channel
        .create(&bank_request("bt-fast", 5_000))
        .await
        .expect("accepted");
    let settled = decided(5_000, || async {
        channel.lookup("bt-fast").await.expect("lookup")
    })
    .await;
    assert_eq!(settled.status, AsyncStatus::Succeeded);
    let returned = channel
        .refund(&refund("bt-ret-1", &settled.provider_ref, 4_000, "EUR"))
        .await
        .expect("a return");
    assert!(
        matches!(returned, RefundOutcome::Succeeded { ref provider_ref } if provider_ref.starts_with("btrt_"))
    );
    assert_eq!(
        channel
            .refund(&refund("bt-ret-2", &settled.provider_ref, 1_001, "EUR"))
            .await,
        Ok(RefundOutcome::Failed {
            code: "amount_exceeds_captured".into()
        })
    );
    let Ok(LookupOutcome::Found(after)) = channel.lookup("bt-fast").await else {
        panic!("the transfer is found");
    };
    assert_eq!(after.refunded_minor, 4_000);
    // The slow one is still only accepted.
    assert!(matches!(
        channel.lookup("bt-slow").await,
        Ok(LookupOutcome::Found(ref p)) if p.status == AsyncStatus::Pending { action_url: None }
    ));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn payer_details_are_checked_and_never_echoed() {
    let sandbox = start().await;
    let channel = bank(&sandbox);
    let mut missing = bank_request("bt-no-account", 100);
    missing.payer_account = None;
    assert_eq!(
        channel.create(&missing).await,
        Err(ChannelError::Rejected {
            status: 400,
            code: "payer_account_required".into()
        })
    );
    let mut invalid = bank_request("bt-bad-account", 100);
    invalid.payer_account = Some(Secret::new("DE89370400440532013001".to_owned()));
    let error = channel.create(&invalid).await.expect_err("not an IBAN");
    assert_eq!(
        error,
        ChannelError::Rejected {
            status: 400,
            code: "invalid_account".into()
        }
    );
    assert!(!format!("{error:?} {invalid:?}").contains("532013001"));
    // Nothing was sent for the local refusal; one request for the invalid account.
    assert_eq!(sandbox.stats().channels["bank_transfer"].requests_total, 1);

    assert_eq!(
        channel.lookup("bt-never").await,
        Ok(LookupOutcome::NotFound)
    );
    assert_eq!(
        channel.create(&bank_request("bt-never", 100)).await,
        Err(ChannelError::Rejected {
            status: 409,
            code: "key_blocked".into()
        })
    );
    channel
        .create(&bank_request("bt-once", 100))
        .await
        .expect("accepted");
    let mut other_payer = bank_request("bt-once", 100);
    other_payer.payer_account = Some(Secret::new("GB82WEST12345698765432".to_owned()));
    assert_eq!(
        channel.create(&other_payer).await,
        Err(ChannelError::Rejected {
            status: 409,
            code: "idempotency_key_reused".into()
        })
    );
    sandbox.shutdown().await;
}
