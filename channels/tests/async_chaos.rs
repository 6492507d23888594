//! Each channel's behaviour is its own: chaos on an asynchronous channel never touches the
//! card channel (or another), per-channel behaviour endpoints, per-channel stats, held
//! requests whose work was done, and retries that resend a signed form byte for byte.

#[path = "common/async_support.rs"]
mod async_support;
#[path = "common/chaos.rs"]
#[allow(dead_code)] // This file uses a few of the chaos helpers.
mod chaos;
mod common;

use std::collections::HashSet;

use async_support::{adapter, app, bank, bank_request, qr, request, set, start};
use chaos::{APPROVED, Api};
use common::{SECRET, channel_for, charge_request, fast_config};
use hyper::{Method, StatusCode};
use kassa_channels::sandbox::Behaviour;
use kassa_channels::{
    AdapterConfig, AppWalletChannel, AsyncStatus, BankTransferChannel, ChannelAdapter,
    ChannelError, ChargeOutcome, LookupOutcome, Protocol, QrWalletChannel,
};
use serde_json::json;

#[tokio::test]
async fn a_hard_down_qr_wallet_leaves_the_card_channel_serving() {
    let sandbox = start().await;
    set(
        &sandbox,
        "qr_wallet",
        Behaviour {
            hard_down: true,
            ..Behaviour::default()
        },
    );
    let qr = qr(&sandbox);
    let error = qr.create(&request("down-1", 100)).await.expect_err("down");
    assert_eq!(error, ChannelError::Server { status: 503 });
    assert!(error.outcome_unknown());

    let card = channel_for(&sandbox.base_url(), fast_config());
    let charged = card
        .charge(&charge_request("card-1", APPROVED, 500, true))
        .await
        .expect("the card channel serves");
    assert!(matches!(charged, ChargeOutcome::Succeeded { .. }));
    // The other asynchronous channels serve too.
    app(&sandbox)
        .create(&request("app-up", 100))
        .await
        .expect("served");
    bank(&sandbox)
        .create(&bank_request("bank-up", 100))
        .await
        .expect("served");

    let stats = sandbox.stats();
    let attempts = u64::from(fast_config().retry_attempts_max);
    assert_eq!(stats.channels["qr_wallet"].errors_injected, attempts);
    assert_eq!(stats.channels["qr_wallet"].requests_total, attempts);
    assert_eq!(stats.errors_injected, 0, "the card channel's counts");
    assert_eq!(stats.requests_total, 1);
    assert_eq!(stats.charges_total, 1);
    assert_eq!(stats.channels["card"], {
        let mut card = stats.clone();
        card.channels.clear();
        card
    });
    assert_eq!(stats.channels["app_wallet"].charges_total, 1);
    assert_eq!(stats.channels["bank_transfer"].charges_total, 1);
    assert_eq!(sandbox.behaviour(), Behaviour::default());
    assert!(
        sandbox
            .channel_behaviour("qr_wallet")
            .expect("known")
            .hard_down
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn behaviours_are_read_and_replaced_per_channel_over_http() {
    let sandbox = start().await;
    let api = Api::new(&sandbox);
    let reply = api
        .call(
            Method::PUT,
            "/sandbox/channels/bank_transfer/behaviour",
            &json!({ "callback_rate_percent": 25, "settle_delay_ms_max": 100 }).to_string(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["callback_rate_percent"], 25);
    let read = api
        .call(Method::GET, "/sandbox/channels/bank_transfer/behaviour", "")
        .await;
    assert_eq!(read.json, reply.json);
    assert_eq!(
        sandbox
            .channel_behaviour("bank_transfer")
            .map(|b| b.callback_rate_percent),
        Some(25)
    );
    // The defaults, documented: customers pay by hand, every outcome announced.
    let qr = api
        .call(Method::GET, "/sandbox/channels/qr_wallet/behaviour", "")
        .await;
    assert_eq!(qr.json["auto_settle"], false);
    assert_eq!(qr.json["callback_rate_percent"], 100);
    assert_eq!(qr.json["settle_delay_ms_min"], 0);

    // `card` is the old endpoint under a new name.
    let card = api
        .call(
            Method::PUT,
            "/sandbox/channels/card/behaviour",
            &json!({ "error_rate_percent": 5 }).to_string(),
        )
        .await;
    assert_eq!(card.status, StatusCode::OK);
    let old = api.call(Method::GET, "/sandbox/behaviour", "").await;
    assert_eq!(old.json["error_rate_percent"], 5);
    assert_eq!(sandbox.behaviour().error_rate_percent, 5);

    let unknown = api
        .call(Method::GET, "/sandbox/channels/crypto/behaviour", "")
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.json["error"]["code"], "unknown_channel");
    let out_of_bounds = api
        .call(
            Method::PUT,
            "/sandbox/channels/app_wallet/behaviour",
            &json!({ "callback_rate_percent": 101 }).to_string(),
        )
        .await;
    assert_eq!(out_of_bounds.status, StatusCode::UNPROCESSABLE_ENTITY);
    let unsigned = api
        .send(
            Method::PUT,
            "/sandbox/channels/app_wallet/behaviour",
            "{}",
            None,
        )
        .await;
    assert_eq!(unsigned.status, StatusCode::UNAUTHORIZED);
    assert!(
        sandbox
            .set_channel_behaviour("crypto", Behaviour::default())
            .is_err()
    );
    assert!(sandbox.channel_behaviour("crypto").is_none());
    assert!(
        sandbox
            .set_channel_behaviour(
                "qr_wallet",
                Behaviour {
                    settle_delay_ms_min: 5,
                    settle_delay_ms_max: 1,
                    ..Behaviour::default()
                }
            )
            .is_err()
    );
    let stats = api.stats().await;
    let names: HashSet<&str> = stats.channels.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        HashSet::from(["card", "qr_wallet", "app_wallet", "bank_transfer"])
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_held_request_did_its_work_and_a_lookup_finds_it() {
    let sandbox = start().await;
    set(
        &sandbox,
        "app_wallet",
        Behaviour {
            timeout_rate_percent: 100,
            ..Behaviour::default()
        },
    );
    let config = AdapterConfig {
        request_timeout_ms: 200,
        command_deadline_ms: 1_000,
        retry_attempts_max: 2,
        ..fast_config()
    };
    let channel = AppWalletChannel::new(
        ChannelAdapter::with_protocol(Protocol::AppWallet, &sandbox.base_url(), SECRET, config)
            .expect("a valid adapter"),
    );
    let error = channel
        .create(&request("held-1", 400))
        .await
        .expect_err("no answer");
    assert_eq!(error, ChannelError::Timeout);
    assert!(error.outcome_unknown());
    assert_eq!(sandbox.stats().channels["app_wallet"].timeouts_injected, 2);
    assert_eq!(sandbox.stats().timeouts_injected, 0);

    set(&sandbox, "app_wallet", Behaviour::default());
    let LookupOutcome::Found(found) = channel.lookup("held-1").await.expect("a lookup") else {
        panic!("the held create was done");
    };
    assert!(matches!(found.status, AsyncStatus::Pending { .. }));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn retried_forms_are_resent_as_signed_and_make_one_trade_per_key() {
    let sandbox = start().await;
    set(
        &sandbox,
        "qr_wallet",
        Behaviour {
            error_rate_percent: 30,
            seed: 31,
            ..Behaviour::default()
        },
    );
    let config = AdapterConfig {
        retry_attempts_max: 8,
        // Injected 5xx are the point here, not the breaker's reaction to them.
        breaker_failure_rate_percent: 100,
        ..fast_config()
    };
    let channel = QrWalletChannel::new(
        ChannelAdapter::with_protocol(Protocol::QrWallet, &sandbox.base_url(), SECRET, config)
            .expect("a valid adapter"),
    );
    let mut created = HashSet::new();
    for index in 0..20 {
        let key = format!("flaky-{index}");
        let trade = channel
            .create(&request(&key, 100))
            .await
            .expect("retried until served");
        assert!(created.insert(trade.provider_ref));
    }
    let stats = sandbox.stats().channels["qr_wallet"].clone();
    assert!(stats.errors_injected > 0, "{stats:?}");
    assert_eq!(stats.requests_total, 20 + stats.errors_injected);
    assert_eq!(stats.charges_total, 20);
    let ledger = common::ledger(&sandbox.base_url()).await;
    assert_eq!(ledger["async_payments"].as_array().map(Vec::len), Some(20));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn wrong_secrets_and_wrong_adapters_are_refused() {
    let sandbox = start().await;
    let base = sandbox.base_url();
    let wrong = |protocol| {
        ChannelAdapter::with_protocol(protocol, &base, "not the secret", fast_config())
            .expect("a valid adapter")
    };
    let unauthorised = Some(ChannelError::Rejected {
        status: 401,
        code: "invalid_signature".into(),
    });
    assert_eq!(
        QrWalletChannel::new(wrong(Protocol::QrWallet))
            .create(&request("w-1", 1))
            .await
            .err(),
        unauthorised
    );
    assert_eq!(
        AppWalletChannel::new(wrong(Protocol::AppWallet))
            .lookup("w-2")
            .await
            .err(),
        unauthorised
    );
    assert_eq!(
        BankTransferChannel::new(wrong(Protocol::BankTransfer))
            .create(&bank_request("w-3", 1))
            .await
            .err(),
        unauthorised
    );
    // A card adapter under a wallet channel is refused before anything is sent.
    let mismatched = QrWalletChannel::new(adapter(&sandbox, Protocol::Card));
    assert_eq!(
        mismatched.create(&request("w-4", 1)).await,
        Err(ChannelError::Rejected {
            status: 400,
            code: "adapter_protocol_mismatch".into()
        })
    );
    let stats = sandbox.stats();
    assert_eq!(stats.channels["qr_wallet"].requests_total, 1);
    assert_eq!(stats.channels["app_wallet"].requests_total, 1);
    assert_eq!(stats.channels["bank_transfer"].requests_total, 1);
    // Nothing was created or closed by the refused calls.
    let ledger = common::ledger(&base).await;
    assert_eq!(ledger["async_payments"].as_array().map(Vec::len), Some(0));
    assert!(
        app(&sandbox).create(&request("w-2", 5)).await.is_ok(),
        "a refused lookup closed no key"
    );
    sandbox.shutdown().await;
}

/// Kassa drives these calls from actors on any runtime: every future must be `Send` (checked
/// at compile time; the calls are never awaited here).
#[test]
fn every_async_channel_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let adapter = |protocol| {
        ChannelAdapter::with_protocol(protocol, "http://127.0.0.1:9", SECRET, fast_config())
            .expect("a valid adapter")
    };
    let qr = QrWalletChannel::new(adapter(Protocol::QrWallet));
    let app = AppWalletChannel::new(adapter(Protocol::AppWallet));
    let bank = BankTransferChannel::new(adapter(Protocol::BankTransfer));
    let payment = request("send-1", 1);
    let give_back = async_support::refund("send-r", "ref", 1, "CNY");
    assert_send(&qr.create(&payment));
    assert_send(&qr.lookup("k"));
    assert_send(&qr.cancel("k"));
    assert_send(&qr.refund(&give_back));
    assert_send(&app.create(&payment));
    assert_send(&app.lookup("k"));
    assert_send(&app.cancel("k"));
    assert_send(&app.refund(&give_back));
    assert_send(&bank.create(&payment));
    assert_send(&bank.lookup("k"));
    assert_send(&bank.cancel("k"));
    assert_send(&bank.refund(&give_back));
}
