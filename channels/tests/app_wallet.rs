//! The `app_wallet` channel end to end over real HTTP: `Wechatpay-*` signed JSON, the pay link,
//! AES-256-GCM callbacks decoded by `inbound::decode`, lookups by (percent-encoded) key,
//! refunds, close.

#[path = "common/async_support.rs"]
mod async_support;
mod common;

use async_support::{
    action_url, app, customer, decided, receive_callbacks, refund, request, set, start,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::SECRET;
use hyper::header::HeaderValue;
use kassa_channels::app_wallet::signature as app_signature;
use kassa_channels::card::signature::now_unix_s;
use kassa_channels::inbound::{self, InboundError};
use kassa_channels::sandbox::Behaviour;
use kassa_channels::signing::SignatureError;
use kassa_channels::{AsyncStatus, ChannelError, LookupOutcome, RefundOutcome};
use serde_json::Value;

#[tokio::test]
async fn an_order_paid_in_the_app_is_reported_by_an_encrypted_signed_callback() {
    let sandbox = start().await;
    let receiver = receive_callbacks(
        &sandbox,
        "app_wallet",
        0,
        Behaviour {
            duplicate_callback_rate_percent: 100,
            seed: 9,
            ..Behaviour::default()
        },
    )
    .await;
    let channel = app(&sandbox);
    let created = channel
        .create(&request("app-pay-1", 880))
        .await
        .expect("created");
    assert!(created.provider_ref.starts_with("wx_"), "{created:?}");
    let action_url = action_url(&created);
    assert!(action_url.ends_with(&format!("/app/pay/{}", created.provider_ref)));
    assert_eq!(
        channel.create(&request("app-pay-1", 880)).await,
        Ok(created.clone())
    );

    customer(action_url, false).await;
    let LookupOutcome::Found(paid) = channel.lookup("app-pay-1").await.expect("lookup") else {
        panic!("found");
    };
    assert_eq!(paid.status, AsyncStatus::Succeeded);

    // Duplicated: two copies, one event id, the same payment.
    let callbacks = receiver.wait_for(2, 5_000).await;
    let ids: Vec<Value> = callbacks
        .iter()
        .map(|callback| {
            serde_json::from_slice::<Value>(&callback.body).expect("JSON")["id"].clone()
        })
        .collect();
    assert_eq!(ids[0], ids[1]);
    for callback in &callbacks {
        assert_eq!(callback.decode("app_wallet", SECRET), Ok(paid.clone()));
        let event: Value = serde_json::from_slice(&callback.body).expect("JSON");
        assert_eq!(event["event_type"], "TRANSACTION.SUCCESS");
        assert_eq!(event["resource"]["algorithm"], "AEAD_AES_256_GCM");
        // The transaction travels only sealed.
        assert!(!String::from_utf8_lossy(&callback.body).contains("app-pay-1"));
    }

    let callback = &callbacks[0];
    // Another secret: the signature fails first.
    assert_eq!(
        callback.decode("app_wallet", "not the secret"),
        Err(InboundError::Signature(SignatureError::Mismatch))
    );
    // A changed signature header.
    let mut headers = callback.headers.clone();
    headers.insert(
        app_signature::SIGNATURE_HEADER,
        HeaderValue::from_static("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
    );
    assert_eq!(
        inbound::decode(
            "app_wallet",
            SECRET.as_bytes(),
            &headers,
            &callback.path,
            &callback.body,
            now_unix_s()
        ),
        Err(InboundError::Signature(SignatureError::Mismatch))
    );
    // A changed ciphertext, re-signed with the right key (as a forger holding the signing key
    // but not the API-v3 key would): the resource does not open.
    let mut event: Value = serde_json::from_slice(&callback.body).expect("JSON");
    let mut sealed = BASE64
        .decode(event["resource"]["ciphertext"].as_str().expect("text"))
        .expect("base64");
    sealed[3] ^= 0x20;
    event["resource"]["ciphertext"] = Value::from(BASE64.encode(sealed));
    let body = event.to_string();
    let now = now_unix_s();
    let key = app_signature::signing_key(SECRET.as_bytes());
    let signature = app_signature::signature(
        &key,
        now,
        "nonce-1",
        "POST",
        &callback.path,
        body.as_bytes(),
    );
    let mut headers = callback.headers.clone();
    headers.insert(app_signature::TIMESTAMP_HEADER, HeaderValue::from(now));
    headers.insert(
        app_signature::NONCE_HEADER,
        HeaderValue::from_static("nonce-1"),
    );
    headers.insert(
        app_signature::SIGNATURE_HEADER,
        HeaderValue::from_str(&signature).expect("ASCII"),
    );
    assert_eq!(
        inbound::decode(
            "app_wallet",
            SECRET.as_bytes(),
            &headers,
            &callback.path,
            body.as_bytes(),
            now
        ),
        Err(InboundError::Decrypt(app_signature::AeadError::Open))
    );

    let stats = sandbox.stats().channels["app_wallet"].clone();
    assert_eq!(stats.callbacks_duplicated, 1);
    assert_eq!(stats.callbacks_queued, 2);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn keys_with_any_visible_character_work_in_paths_and_unknown_ones_are_closed() {
    let sandbox = start().await;
    let channel = app(&sandbox);
    let odd_key = "ord/2024?x=1&y=%41#z";
    let created = channel
        .create(&request(odd_key, 700))
        .await
        .expect("created");
    assert_eq!(created.idempotency_key, odd_key);
    assert!(matches!(
        channel.lookup(odd_key).await,
        Ok(LookupOutcome::Found(ref p)) if p.provider_ref == created.provider_ref
    ));
    assert_eq!(
        channel.lookup("app-never").await,
        Ok(LookupOutcome::NotFound)
    );
    assert_eq!(
        channel.create(&request("app-never", 700)).await,
        Err(ChannelError::Rejected {
            status: 409,
            code: "key_blocked".into()
        })
    );
    // Refused locally, nothing sent: a key the providers would refuse.
    assert_eq!(
        channel.lookup("has space").await,
        Err(ChannelError::Rejected {
            status: 400,
            code: "invalid_idempotency_key".into()
        })
    );
    assert_eq!(sandbox.stats().channels["app_wallet"].requests_total, 4);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn declines_refunds_and_close() {
    let sandbox = start().await;
    set(
        &sandbox,
        "app_wallet",
        Behaviour {
            auto_settle: true,
            settle_delay_ms_min: 5,
            settle_delay_ms_max: 20,
            ..Behaviour::default()
        },
    );
    let channel = app(&sandbox);
    channel
        .create(&request("app-13", 2_013))
        .await
        .expect("created");
    channel
        .create(&request("app-ok", 2_000))
        .await
        .expect("created");
    let declined = decided(5_000, || async {
        channel.lookup("app-13").await.expect("lookup")
    })
    .await;
    assert!(
        matches!(declined.status, AsyncStatus::Failed { ref code, .. } if code == "payment_declined"),
        "{declined:?}"
    );
    let paid = decided(5_000, || async {
        channel.lookup("app-ok").await.expect("lookup")
    })
    .await;
    assert_eq!(paid.status, AsyncStatus::Succeeded);

    let full = channel
        .refund(&refund("app-rf-1", &paid.provider_ref, 2_000, "CNY"))
        .await
        .expect("refund");
    assert!(matches!(full, RefundOutcome::Succeeded { .. }), "{full:?}");
    assert_eq!(
        channel
            .refund(&refund("app-rf-2", &paid.provider_ref, 1, "CNY"))
            .await,
        Ok(RefundOutcome::Failed {
            code: "amount_exceeds_captured".into()
        })
    );
    assert_eq!(
        channel
            .refund(&refund("app-rf-3", &paid.provider_ref, 1, "USD"))
            .await,
        Err(ChannelError::Rejected {
            status: 422,
            code: "currency_mismatch".into()
        })
    );

    // Orders waiting for their customer close; a paid one stays paid.
    set(&sandbox, "app_wallet", Behaviour::default());
    channel
        .create(&request("app-close", 90))
        .await
        .expect("created");
    let closed = channel.cancel("app-close").await.expect("closed");
    assert!(
        matches!(closed.status, AsyncStatus::Failed { ref code, .. } if code == "order_closed"),
        "{closed:?}"
    );
    assert_eq!(
        channel
            .cancel("app-ok")
            .await
            .map(|payment| payment.refunded_minor),
        Ok(2_000)
    );
    sandbox.shutdown().await;
}
