//! The `qr_wallet` channel end to end over real HTTP: signed forms to the sandbox, the
//! customer page, signed form callbacks decoded by `inbound::decode`, lookups, refunds, close.

#[path = "common/async_support.rs"]
mod async_support;
mod common;

use async_support::{
    action_url, customer, decided, qr, receive_callbacks, refund, request, set, start,
};
use common::SECRET;
use hyper::StatusCode;
use kassa_channels::inbound::InboundError;
use kassa_channels::sandbox::Behaviour;
use kassa_channels::signing::SignatureError;
use kassa_channels::{AsyncStatus, ChannelError, LookupOutcome, RefundOutcome};

#[tokio::test]
async fn a_trade_paid_on_the_customer_page_is_reported_by_a_signed_callback() {
    let sandbox = start().await;
    let receiver = receive_callbacks(&sandbox, "qr_wallet", 0, Behaviour::default()).await;
    let channel = qr(&sandbox);

    let created = channel
        .create(&request("qr-pay-1", 1_250))
        .await
        .expect("created");
    let action_url = action_url(&created);
    assert!(action_url.contains("/qr/pay/"), "{action_url}");
    assert_eq!(
        (created.amount_minor, created.currency.as_str()),
        (1_250, "CNY")
    );
    assert_eq!(created.idempotency_key, "qr-pay-1");
    // The same key is the same trade.
    assert_eq!(
        channel.create(&request("qr-pay-1", 1_250)).await,
        Ok(created.clone())
    );
    assert!(matches!(
        channel.lookup("qr-pay-1").await,
        Ok(LookupOutcome::Found(ref p)) if matches!(p.status, AsyncStatus::Pending { .. })
    ));

    let (status, page) = customer(action_url, false).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["trade_status"], "TRADE_SUCCESS");

    let LookupOutcome::Found(paid) = channel.lookup("qr-pay-1").await.expect("a lookup") else {
        panic!("the trade exists");
    };
    assert_eq!(paid.status, AsyncStatus::Succeeded);
    assert_eq!(paid.provider_ref, created.provider_ref);

    let callbacks = receiver.wait_for(1, 5_000).await;
    let callback = &callbacks[0];
    assert_eq!(
        callback.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    assert_eq!(callback.decode("qr_wallet", SECRET), Ok(paid.clone()));
    // Tampered, or checked with another secret: refused before anything is read.
    let tampered = kassa_channels::inbound::decode(
        "qr_wallet",
        SECRET.as_bytes(),
        &callback.headers,
        &callback.path,
        String::from_utf8_lossy(&callback.body)
            .replace("total_amount_minor=1250", "total_amount_minor=1")
            .as_bytes(),
        kassa_channels::card::signature::now_unix_s(),
    );
    assert_eq!(
        tampered,
        Err(InboundError::Signature(SignatureError::Mismatch))
    );
    assert_eq!(
        callback.decode("qr_wallet", "another secret"),
        Err(InboundError::Signature(SignatureError::Mismatch))
    );
    // Answered `success`, so delivered once; the card channel saw nothing.
    assert!(
        common::wait_until(5_000, || {
            sandbox.stats().channels["qr_wallet"].callbacks_delivered == 1
        })
        .await
    );
    let stats = sandbox.stats();
    assert_eq!(stats.callbacks_queued, 0);
    assert_eq!(stats.requests_total, 0);
    assert_eq!(stats.channels["qr_wallet"].charges_total, 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_callback_not_answered_success_is_sent_again() {
    let sandbox = start().await;
    let receiver = receive_callbacks(&sandbox, "qr_wallet", 1, Behaviour::default()).await;
    let channel = qr(&sandbox);
    let created = channel
        .create(&request("qr-retry-1", 300))
        .await
        .expect("created");
    let url = action_url(&created);
    customer(url, true).await;
    let callbacks = receiver.wait_for(2, 5_000).await;
    let first = callbacks[0].decode("qr_wallet", SECRET).expect("signed");
    let second = callbacks[1].decode("qr_wallet", SECRET).expect("signed");
    assert_eq!(first, second);
    assert!(
        matches!(first.status, AsyncStatus::Failed { ref code, .. } if code == "payment_declined"),
        "{first:?}"
    );
    assert!(
        common::wait_until(5_000, || {
            sandbox.stats().channels["qr_wallet"].callbacks_delivered == 1
        })
        .await
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn under_auto_settle_the_test_amount_decides() {
    let sandbox = start().await;
    set(
        &sandbox,
        "qr_wallet",
        Behaviour {
            auto_settle: true,
            settle_delay_ms_min: 10,
            settle_delay_ms_max: 40,
            ..Behaviour::default()
        },
    );
    let channel = qr(&sandbox);
    let paid = channel
        .create(&request("qr-auto-ok", 1_000))
        .await
        .expect("created");
    let declined = channel
        .create(&request("qr-auto-13", 1_013))
        .await
        .expect("created");
    assert!(matches!(paid.status, AsyncStatus::Pending { .. }));
    assert!(matches!(declined.status, AsyncStatus::Pending { .. }));

    let paid = decided(5_000, || async {
        channel.lookup("qr-auto-ok").await.expect("lookup")
    })
    .await;
    assert_eq!(paid.status, AsyncStatus::Succeeded);
    let declined = decided(5_000, || async {
        channel.lookup("qr-auto-13").await.expect("lookup")
    })
    .await;
    assert!(
        matches!(declined.status, AsyncStatus::Failed { ref code, .. } if code == "payment_declined"),
        "{declined:?}"
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_lookup_of_an_unknown_key_is_final() {
    let sandbox = start().await;
    let channel = qr(&sandbox);
    assert_eq!(
        channel.lookup("qr-never").await,
        Ok(LookupOutcome::NotFound)
    );
    assert_eq!(
        channel.create(&request("qr-never", 100)).await,
        Err(ChannelError::Rejected {
            status: 409,
            code: "key_blocked".into()
        })
    );
    // A different request under a used key is refused too.
    channel
        .create(&request("qr-used", 100))
        .await
        .expect("created");
    assert_eq!(
        channel.create(&request("qr-used", 200)).await,
        Err(ChannelError::Rejected {
            status: 409,
            code: "idempotency_key_reused".into()
        })
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn refunds_stay_within_the_paid_amount_and_close_ends_unpaid_trades() {
    let sandbox = start().await;
    let channel = qr(&sandbox);
    let trade = channel
        .create(&request("qr-refund", 1_000))
        .await
        .expect("created");
    // Nothing to refund before the customer pays.
    assert_eq!(
        channel
            .refund(&refund("qr-rf-0", &trade.provider_ref, 100, "CNY"))
            .await,
        Err(ChannelError::Rejected {
            status: 409,
            code: "payment_not_refundable".into()
        })
    );
    let url = action_url(&trade);
    customer(url, false).await;
    let first = channel
        .refund(&refund("qr-rf-1", &trade.provider_ref, 600, "CNY"))
        .await
        .expect("a refund");
    let RefundOutcome::Succeeded { provider_ref } = &first else {
        panic!("{first:?}");
    };
    assert_eq!(
        channel
            .refund(&refund("qr-rf-1", &trade.provider_ref, 600, "CNY"))
            .await,
        Ok(first.clone()),
        "a replayed refund is the first one"
    );
    assert_eq!(
        channel
            .refund(&refund("qr-rf-2", &trade.provider_ref, 401, "CNY"))
            .await,
        Ok(RefundOutcome::Failed {
            code: "amount_exceeds_captured".into()
        })
    );
    assert!(provider_ref.starts_with("qrrf_"));
    let LookupOutcome::Found(after) = channel.lookup("qr-refund").await.expect("lookup") else {
        panic!("found");
    };
    assert_eq!(after.refunded_minor, 600);
    // A paid trade stays paid when closed.
    assert_eq!(
        channel.cancel("qr-refund").await.map(|p| p.status),
        Ok(AsyncStatus::Succeeded)
    );

    let unpaid = channel
        .create(&request("qr-close", 500))
        .await
        .expect("created");
    let closed = channel.cancel("qr-close").await.expect("closed");
    assert_eq!(closed.provider_ref, unpaid.provider_ref);
    assert!(
        matches!(closed.status, AsyncStatus::Failed { ref code, .. } if code == "order_closed"),
        "{closed:?}"
    );
    // The customer comes too late.
    let url = action_url(&unpaid);
    let (_, page) = customer(url, false).await;
    assert_eq!(page["trade_status"], "TRADE_CLOSED");
    // Closing an unknown key closes it for good.
    assert_eq!(
        channel.cancel("qr-ghost").await,
        Err(ChannelError::Rejected {
            status: 404,
            code: "payment_not_found".into()
        })
    );
    assert!(matches!(
        channel.create(&request("qr-ghost", 100)).await,
        Err(ChannelError::Rejected { status: 409, ref code }) if code == "key_blocked"
    ));
    let ledger = common::ledger(&sandbox.base_url()).await;
    let payments = ledger["async_payments"].as_array().expect("a list");
    assert_eq!(payments.len(), 2);
    assert_eq!(payments[0]["channel"], "qr_wallet");
    assert_eq!(payments[0]["status"], "succeeded");
    assert_eq!(payments[0]["refunded_minor"], 600);
    assert_eq!(payments[1]["failure_code"], "order_closed");
    assert_eq!(ledger["async_refunds"].as_array().map(Vec::len), Some(2));
    assert!(ledger["charges"].is_array() && ledger["refunds"].is_array());
    sandbox.shutdown().await;
}
