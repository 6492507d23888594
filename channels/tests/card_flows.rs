//! The card protocol end to end: a sandbox on port 0 driven through the adapter.

mod common;

use common::{channel_for, charge_request, fast_config, ledger, start_sandbox};
use kassa_channels::{
    CaptureOutcome, ChannelError, ChargeOutcome, RefundOutcome, RefundRequest, ResolveOutcome,
};

fn refund_request(key: &str, provider_ref: &str, amount_minor: i64) -> RefundRequest {
    RefundRequest {
        idempotency_key: key.to_owned(),
        provider_ref: provider_ref.to_owned(),
        amount_minor,
        currency: "USD".to_owned(),
    }
}

#[tokio::test]
async fn the_three_test_cards_decide_the_outcome() {
    let sandbox = start_sandbox(0, None).await;
    let channel = channel_for(&sandbox.base_url(), fast_config());

    let success = channel
        .charge(&charge_request("order-ok", "4242424242424242", 1_250, true))
        .await
        .expect("an answer");
    let ChargeOutcome::Succeeded { provider_ref } = success else {
        panic!("4242… must succeed, got {success:?}");
    };
    assert!(provider_ref.starts_with("ch_"), "{provider_ref}");

    let declined = channel
        .charge(&charge_request(
            "order-declined",
            "4000000000000002",
            1_250,
            true,
        ))
        .await
        .expect("a decline is an answer, not an error");
    assert!(
        matches!(&declined, ChargeOutcome::Declined { code, .. } if code == "card_declined"),
        "{declined:?}"
    );

    let broke = channel
        .charge(&charge_request(
            "order-broke",
            "4000000000009995",
            1_250,
            true,
        ))
        .await
        .expect("a decline is an answer, not an error");
    assert!(
        matches!(&broke, ChargeOutcome::Declined { code, .. } if code == "insufficient_funds"),
        "{broke:?}"
    );

    // Any other Luhn-valid number succeeds; a non-Luhn one is a 400 the adapter does not retry.
    let other = channel
        .charge(&charge_request("order-mc", "5555555555554444", 100, true))
        .await
        .expect("an answer");
    assert!(
        matches!(other, ChargeOutcome::Succeeded { .. }),
        "{other:?}"
    );
    let typo = channel
        .charge(&charge_request("order-typo", "4242424242424241", 100, true))
        .await;
    assert_eq!(
        typo,
        Err(ChannelError::Rejected {
            status: 400,
            code: "invalid_card_number".into()
        })
    );

    let charges = ledger(&sandbox.base_url()).await;
    let statuses: Vec<&str> = charges["charges"]
        .as_array()
        .expect("list")
        .iter()
        .map(|charge| charge["status"].as_str().expect("status"))
        .collect();
    assert_eq!(statuses, ["succeeded", "declined", "declined", "succeeded"]);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn authorize_then_partial_capture_then_refund() {
    let sandbox = start_sandbox(0, None).await;
    let channel = channel_for(&sandbox.base_url(), fast_config());

    let outcome = channel
        .charge(&charge_request(
            "order-auth",
            "4242424242424242",
            5_000,
            false,
        ))
        .await
        .expect("an answer");
    let ChargeOutcome::Authorized { provider_ref } = outcome else {
        panic!("capture:false must authorise, got {outcome:?}");
    };

    // More than authorised is refused (422), and not retried.
    let too_much = channel.capture("cap-too-much", &provider_ref, 5_001).await;
    assert_eq!(
        too_much,
        Err(ChannelError::Rejected {
            status: 422,
            code: "amount_exceeds_authorized".into()
        })
    );

    let captured = channel
        .capture("cap-1", &provider_ref, 3_000)
        .await
        .expect("a partial capture");
    assert_eq!(
        captured,
        CaptureOutcome {
            provider_ref: provider_ref.clone(),
            captured_minor: 3_000
        }
    );
    // The same capture key again is the same capture, not a second one.
    let replayed = channel
        .capture("cap-1", &provider_ref, 3_000)
        .await
        .expect("replay");
    assert_eq!(replayed, captured);
    // A second capture with a new key is refused: the authorisation is spent.
    let second = channel.capture("cap-2", &provider_ref, 1_000).await;
    assert_eq!(
        second,
        Err(ChannelError::Rejected {
            status: 409,
            code: "charge_not_capturable".into()
        })
    );

    let refunded = channel
        .refund(&refund_request("refund-1", &provider_ref, 1_000))
        .await
        .expect("an answer");
    assert!(
        matches!(refunded, RefundOutcome::Succeeded { ref provider_ref } if provider_ref.starts_with("rf_"))
    );
    let over = channel
        .refund(&refund_request("refund-2", &provider_ref, 2_001))
        .await
        .expect("a failed refund is an answer");
    assert_eq!(
        over,
        RefundOutcome::Failed {
            code: "amount_exceeds_captured".into()
        }
    );

    let state = channel.retrieve(&provider_ref).await.expect("the charge");
    assert_eq!(
        (
            state.amount_minor,
            state.captured_minor,
            state.refunded_minor,
            state.voided
        ),
        (5_000, 3_000, 1_000, false)
    );
    assert!(matches!(state.outcome, ChargeOutcome::Succeeded { .. }));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn void_releases_an_authorisation_once() {
    let sandbox = start_sandbox(0, None).await;
    let channel = channel_for(&sandbox.base_url(), fast_config());

    let ChargeOutcome::Authorized { provider_ref } = channel
        .charge(&charge_request(
            "order-void",
            "4242424242424242",
            700,
            false,
        ))
        .await
        .expect("an answer")
    else {
        panic!("capture:false must authorise");
    };
    channel.void("void-1", &provider_ref).await.expect("voided");
    // Replaying the void key is fine; capturing or voiding again with a new key is not.
    channel
        .void("void-1", &provider_ref)
        .await
        .expect("replayed void");
    assert_eq!(
        channel.void("void-2", &provider_ref).await,
        Err(ChannelError::Rejected {
            status: 409,
            code: "charge_not_voidable".into()
        })
    );
    assert_eq!(
        channel.capture("cap-after-void", &provider_ref, 700).await,
        Err(ChannelError::Rejected {
            status: 409,
            code: "charge_not_capturable".into()
        })
    );
    let ResolveOutcome::Found(resolved) = channel.resolve("order-void").await.expect("resolved")
    else {
        panic!("the voided charge exists");
    };
    assert!(resolved.voided);
    assert_eq!(resolved.captured_minor, 0);

    // A captured charge cannot be voided.
    let ChargeOutcome::Succeeded {
        provider_ref: captured,
    } = channel
        .charge(&charge_request(
            "order-captured",
            "4242424242424242",
            700,
            true,
        ))
        .await
        .expect("an answer")
    else {
        panic!("capture:true must succeed");
    };
    assert_eq!(
        channel.void("void-captured", &captured).await,
        Err(ChannelError::Rejected {
            status: 409,
            code: "charge_not_voidable".into()
        })
    );
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refunds_never_exceed_the_captured_amount() {
    let sandbox = start_sandbox(0, None).await;
    let channel = channel_for(&sandbox.base_url(), fast_config());
    let ChargeOutcome::Succeeded { provider_ref } = channel
        .charge(&charge_request(
            "order-refunds",
            "4242424242424242",
            1_000,
            true,
        ))
        .await
        .expect("an answer")
    else {
        panic!("4242… must succeed");
    };

    let mut refunds = tokio::task::JoinSet::new();
    for index in 0..5 {
        let channel = channel.clone();
        let request = refund_request(&format!("refund-{index}"), &provider_ref, 300);
        refunds.spawn(async move { channel.refund(&request).await });
    }
    let mut succeeded = 0;
    let mut failed = 0;
    while let Some(result) = refunds.join_next().await {
        match result.expect("the task ran").expect("an answer") {
            RefundOutcome::Succeeded { .. } => succeeded += 1,
            RefundOutcome::Failed { code } => {
                assert_eq!(code, "amount_exceeds_captured");
                failed += 1;
            }
        }
    }
    assert_eq!(
        (succeeded, failed),
        (3, 2),
        "3 × 300 fit in 1000, the other two must fail"
    );

    let state = channel.retrieve(&provider_ref).await.expect("the charge");
    assert_eq!(state.refunded_minor, 900);
    assert!(state.refunded_minor <= state.captured_minor);
    let ledger = ledger(&sandbox.base_url()).await;
    let refunded_in_ledger: i64 = ledger["refunds"]
        .as_array()
        .expect("list")
        .iter()
        .filter(|refund| refund["status"] == "succeeded")
        .map(|refund| refund["amount_minor"].as_i64().expect("integer"))
        .sum();
    assert_eq!(refunded_in_ledger, 900);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_refund_in_another_currency_is_rejected() {
    let sandbox = start_sandbox(0, None).await;
    let channel = channel_for(&sandbox.base_url(), fast_config());
    let ChargeOutcome::Succeeded { provider_ref } = channel
        .charge(&charge_request(
            "order-eur",
            "4242424242424242",
            1_000,
            true,
        ))
        .await
        .expect("an answer")
    else {
        panic!("4242… must succeed");
    };
    let mut request = refund_request("refund-eur", &provider_ref, 100);
    request.currency = "EUR".into();
    assert_eq!(
        channel.refund(&request).await,
        Err(ChannelError::Rejected {
            status: 422,
            code: "currency_mismatch".into()
        })
    );
    sandbox.shutdown().await;
}
