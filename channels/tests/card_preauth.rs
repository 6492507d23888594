//! The card pre-authorisation family end to end, over real HTTP against the sandbox on port 0:
//! preauth (`capture: false`), complete (`capture`), complete-revert (`uncapture`), cancel
//! (`void`), refund, and reversal (`reverse`, 冲正) — every valid and refused transition,
//! replays by key, callbacks, and the ledger file across restarts and a schema migration.

#[allow(dead_code)] // Only the callback receiver is used here.
#[path = "common/chaos.rs"]
mod chaos;
mod common;

use common::{
    SECRET, channel_for, charge_request, charges_with_key, fast_config, ledger, raw_request,
    start_sandbox, wait_until,
};
use hyper::{Method, StatusCode};
use kassa_channels::card::callback;
use kassa_channels::sandbox::Behaviour;
use kassa_channels::{
    CaptureOutcome, CardChannel, ChannelError, ChargeOutcome, RefundOutcome, RefundRequest,
    ResolvedCharge,
};
use serde_json::json;

const APPROVED: &str = "4242424242424242";
const DECLINED: &str = "4000000000000002";
const THREE_DS: &str = "4000000000003220";

fn refused(status: u16, code: &str) -> Result<ResolvedCharge, ChannelError> {
    Err(ChannelError::Rejected {
        status,
        code: code.to_owned(),
    })
}

fn refund_request(key: &str, provider_ref: &str, amount_minor: i64) -> RefundRequest {
    RefundRequest {
        idempotency_key: key.to_owned(),
        provider_ref: provider_ref.to_owned(),
        amount_minor,
        currency: "USD".to_owned(),
    }
}

/// A pre-authorisation of `amount_minor`; its provider reference.
async fn preauth(channel: &CardChannel, key: &str, amount_minor: i64) -> String {
    let outcome = channel
        .charge(&charge_request(key, APPROVED, amount_minor, false))
        .await
        .expect("an answer");
    let ChargeOutcome::Authorized { provider_ref } = outcome else {
        panic!("capture:false must authorise, got {outcome:?}");
    };
    provider_ref
}

/// An immediately captured charge of `amount_minor`; its provider reference.
async fn sale(channel: &CardChannel, key: &str, amount_minor: i64) -> String {
    let outcome = channel
        .charge(&charge_request(key, APPROVED, amount_minor, true))
        .await
        .expect("an answer");
    let ChargeOutcome::Succeeded { provider_ref } = outcome else {
        panic!("capture:true must succeed, got {outcome:?}");
    };
    provider_ref
}

/// `(captured, refunded, voided, reversed)` of a resolved charge.
fn totals(charge: &ResolvedCharge) -> (i64, i64, bool, bool) {
    (
        charge.captured_minor,
        charge.refunded_minor,
        charge.voided,
        charge.reversed,
    )
}

#[tokio::test]
async fn preauth_complete_revert_and_complete_again() {
    let sandbox = start_sandbox(0, None).await;
    let channel = channel_for(&sandbox.base_url(), fast_config());
    let id = preauth(&channel, "order-revert", 5_000).await;

    // Nothing captured yet: nothing to revert. More than authorised cannot be completed.
    assert_eq!(
        channel.uncapture("revert-early", &id).await,
        refused(409, "charge_not_revertible")
    );
    assert_eq!(
        channel.capture("complete-too-much", &id, 5_001).await,
        Err(ChannelError::Rejected {
            status: 422,
            code: "amount_exceeds_authorized".into()
        })
    );

    let first = channel
        .capture("complete-1", &id, 3_000)
        .await
        .expect("completed");
    assert_eq!(first.captured_minor, 3_000);

    let reverted = channel.uncapture("revert-1", &id).await.expect("reverted");
    assert_eq!(
        reverted.outcome,
        ChargeOutcome::Authorized {
            provider_ref: id.clone()
        }
    );
    assert_eq!(reverted.amount_minor, 5_000);
    assert_eq!(totals(&reverted), (0, 0, false, false));
    assert_eq!(
        channel.uncapture("revert-1", &id).await.as_ref(),
        Ok(&reverted),
        "the same key replays the revert"
    );
    assert_eq!(
        channel.uncapture("revert-again", &id).await,
        refused(409, "charge_not_revertible"),
        "an authorisation has no capture to revert"
    );

    // Authorised again: it can be completed again, up to the whole authorisation.
    assert_eq!(
        channel.capture("complete-2", &id, 5_000).await,
        Ok(CaptureOutcome {
            provider_ref: id.clone(),
            captured_minor: 5_000
        })
    );
    // Old keys replay their first answers, whatever happened since; nothing moves again.
    assert_eq!(channel.capture("complete-1", &id, 3_000).await, Ok(first));
    assert_eq!(channel.uncapture("revert-1", &id).await, Ok(reverted));
    let now = channel.retrieve(&id).await.expect("the charge");
    assert!(matches!(now.outcome, ChargeOutcome::Succeeded { .. }));
    assert_eq!(totals(&now), (5_000, 0, false, false));

    // A key belongs to one operation: a revert under a completion's key is refused.
    assert_eq!(
        channel.uncapture("complete-2", &id).await,
        refused(409, "idempotency_key_reused")
    );
    // The second completion can be reverted too, under its own key.
    let again = channel.uncapture("revert-2", &id).await.expect("reverted");
    assert_eq!(totals(&again), (0, 0, false, false));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn revert_is_refused_after_a_refund_a_void_or_a_reversal() {
    let sandbox = start_sandbox(0, None).await;
    let channel = channel_for(&sandbox.base_url(), fast_config());

    let refunded = preauth(&channel, "order-refunded", 2_000).await;
    channel
        .capture("complete-refunded", &refunded, 2_000)
        .await
        .expect("completed");
    let refund = channel
        .refund(&refund_request("refund-1", &refunded, 1))
        .await
        .expect("an answer");
    assert!(
        matches!(refund, RefundOutcome::Succeeded { .. }),
        "{refund:?}"
    );
    assert_eq!(
        channel.uncapture("revert-refunded", &refunded).await,
        refused(409, "charge_not_revertible")
    );

    let voided = preauth(&channel, "order-voided", 2_000).await;
    channel.void("void-1", &voided).await.expect("voided");
    assert_eq!(
        channel.uncapture("revert-voided", &voided).await,
        refused(409, "charge_not_revertible")
    );

    let reversed = sale(&channel, "order-reversed", 2_000).await;
    channel
        .reverse("reverse-1", &reversed)
        .await
        .expect("reversed");
    assert_eq!(
        channel.uncapture("revert-reversed", &reversed).await,
        refused(409, "charge_not_revertible")
    );

    assert_eq!(
        channel.uncapture("revert-missing", "ch_missing").await,
        refused(404, "charge_not_found")
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn reversal_of_an_authorisation_voids_it_once() {
    let sandbox = start_sandbox(0, None).await;
    let channel = channel_for(&sandbox.base_url(), fast_config());
    let id = preauth(&channel, "order-reverse-auth", 1_500).await;

    let voided = channel.reverse("reverse-1", &id).await.expect("reversed");
    assert_eq!(
        voided.outcome,
        ChargeOutcome::Authorized {
            provider_ref: id.clone()
        }
    );
    assert_eq!(totals(&voided), (0, 0, true, false));
    assert_eq!(
        channel.reverse("reverse-1", &id).await.as_ref(),
        Ok(&voided),
        "the same key replays the reversal"
    );
    assert_eq!(
        channel.reverse("reverse-2", &id).await,
        refused(409, "charge_not_reversible"),
        "a second reversal under another key is refused"
    );
    assert_eq!(
        channel.capture("complete-after", &id, 1_500).await,
        Err(ChannelError::Rejected {
            status: 409,
            code: "charge_not_capturable".into()
        })
    );
    assert_eq!(
        channel.void("void-after", &id).await,
        Err(ChannelError::Rejected {
            status: 409,
            code: "charge_not_voidable".into()
        })
    );

    // A charge voided by a void cannot be reversed either.
    let cancelled = preauth(&channel, "order-cancelled", 900).await;
    channel.void("void-1", &cancelled).await.expect("voided");
    assert_eq!(
        channel.reverse("reverse-cancelled", &cancelled).await,
        refused(409, "charge_not_reversible")
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn reversal_of_a_capture_returns_it_all_and_ends_refunds() {
    let sandbox = start_sandbox(0, None).await;
    let channel = channel_for(&sandbox.base_url(), fast_config());

    // A completed pre-authorisation (partly captured) and an immediate sale.
    let completed = preauth(&channel, "order-completed", 4_000).await;
    channel
        .capture("complete-1", &completed, 2_500)
        .await
        .expect("completed");
    let sold = sale(&channel, "order-sold", 1_200).await;

    for (id, captured) in [(&completed, 2_500), (&sold, 1_200)] {
        let reversed = channel
            .reverse(&format!("reverse-{id}"), id)
            .await
            .expect("reversed");
        assert_eq!(
            reversed.outcome,
            ChargeOutcome::Succeeded {
                provider_ref: id.clone()
            }
        );
        assert_eq!(totals(&reversed), (captured, 0, false, true));
        assert_eq!(
            channel.reverse(&format!("reverse-{id}"), id).await,
            Ok(reversed)
        );
        assert_eq!(
            channel.reverse(&format!("reverse-again-{id}"), id).await,
            refused(409, "charge_not_reversible")
        );
        assert_eq!(
            channel
                .refund(&refund_request(&format!("refund-{id}"), id, 100))
                .await,
            Ok(RefundOutcome::Failed {
                code: "charge_reversed".into()
            }),
            "nothing is left to refund after a reversal"
        );
        assert_eq!(
            channel.void(&format!("void-{id}"), id).await,
            Err(ChannelError::Rejected {
                status: 409,
                code: "charge_not_voidable".into()
            })
        );
    }

    // The ledger shows what happened: captured kept, nothing refunded, reversed.
    let snapshot = ledger(&sandbox.base_url()).await;
    for charge in snapshot["charges"].as_array().expect("charges") {
        assert_eq!(charge["reversed"], true, "{charge}");
        assert_eq!(charge["refunded_minor"], 0, "{charge}");
        assert_eq!(charge["voided"], false, "{charge}");
        assert!(charge["captured_minor"].as_i64() > Some(0), "{charge}");
    }
    let failed_refunds: Vec<&str> = snapshot["refunds"]
        .as_array()
        .expect("refunds")
        .iter()
        .map(|refund| refund["failure_code"].as_str().expect("a failure code"))
        .collect();
    assert_eq!(failed_refunds, ["charge_reversed", "charge_reversed"]);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn reversal_is_refused_with_refunds_or_after_a_decline() {
    let sandbox = start_sandbox(0, None).await;
    let channel = channel_for(&sandbox.base_url(), fast_config());

    let refunded = sale(&channel, "order-refunded", 1_000).await;
    channel
        .refund(&refund_request("refund-1", &refunded, 400))
        .await
        .expect("an answer");
    assert_eq!(
        channel.reverse("reverse-refunded", &refunded).await,
        refused(409, "charge_not_reversible")
    );
    let still = channel.retrieve(&refunded).await.expect("the charge");
    assert_eq!(totals(&still), (1_000, 400, false, false));

    let declined = channel
        .charge(&charge_request("order-declined", DECLINED, 1_000, true))
        .await
        .expect("an answer");
    assert!(
        matches!(declined, ChargeOutcome::Declined { .. }),
        "{declined:?}"
    );
    let charges = charges_with_key(&sandbox.base_url(), "order-declined").await;
    let id = charges[0]["charge_id"].as_str().expect("an id");
    assert_eq!(
        channel.reverse("reverse-declined", id).await,
        refused(409, "charge_not_reversible")
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn reversal_before_3ds_completes_voids_the_charge_for_good() {
    let sandbox = start_sandbox(0, None).await;
    let channel = channel_for(&sandbox.base_url(), fast_config());
    let outcome = channel
        .charge(&charge_request("order-3ds", THREE_DS, 1_000, true))
        .await
        .expect("an answer");
    let ChargeOutcome::RequiresAction { provider_ref, .. } = outcome else {
        panic!("the 3-D Secure card must ask for a challenge, got {outcome:?}");
    };

    let voided = channel
        .reverse("reverse-3ds", &provider_ref)
        .await
        .expect("reversed");
    assert!(matches!(
        voided.outcome,
        ChargeOutcome::RequiresAction { .. }
    ));
    assert_eq!(totals(&voided), (0, 0, true, false));

    // The cardholder passes the challenge afterwards: nothing is authorised or captured.
    let (status, charge) = raw_request(
        &sandbox.base_url(),
        Method::GET,
        &format!("/challenge/{provider_ref}?result=pass"),
        "",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{charge}");
    assert_eq!(
        (
            &charge["status"],
            &charge["captured_minor"],
            &charge["voided"]
        ),
        (&json!("requires_action"), &json!(0), &json!(true))
    );
    assert_eq!(
        channel.retrieve(&provider_ref).await,
        Ok(voided),
        "the challenge changed nothing"
    );
    assert_eq!(
        channel.reverse("reverse-3ds-again", &provider_ref).await,
        refused(409, "charge_not_reversible")
    );
    sandbox.shutdown().await;
}

/// Waits until the receiver has seen `expected` callbacks.
async fn settle(receiver: &chaos::Receiver, expected: usize) {
    assert!(
        wait_until(10_000, || receiver.count() == expected).await,
        "{} callbacks, expected {expected}",
        receiver.count()
    );
}

#[tokio::test]
async fn a_charge_updated_callback_follows_each_revert_and_reversal() {
    let receiver = chaos::Receiver::start(0).await;
    let sandbox = chaos::start(Behaviour {
        callback_url: Some(format!("{}/callbacks/card", receiver.base_url)),
        ..Behaviour::default()
    })
    .await;
    let channel = channel_for(&sandbox.base_url(), fast_config());
    let mut expected = 0;

    let id = preauth(&channel, "order-callbacks", 800).await;
    expected += 1;
    settle(&receiver, expected).await;
    channel.capture("complete-1", &id, 800).await.expect("ok");
    expected += 1;
    settle(&receiver, expected).await;
    channel.uncapture("revert-1", &id).await.expect("ok");
    expected += 1;
    settle(&receiver, expected).await;
    // A replay changes nothing and sends nothing.
    channel.uncapture("revert-1", &id).await.expect("ok");
    channel.capture("complete-2", &id, 800).await.expect("ok");
    expected += 1;
    settle(&receiver, expected).await;
    channel.reverse("reverse-1", &id).await.expect("ok");
    expected += 1;
    settle(&receiver, expected).await;

    let reports: Vec<ResolvedCharge> = receiver
        .received()
        .iter()
        .map(|received| {
            callback::decode(
                &sandbox.base_url(),
                SECRET.as_bytes(),
                received.signature.as_deref(),
                &received.path,
                &received.body,
                kassa_channels::card::signature::now_unix_s(),
            )
            .expect("a signed charge report")
            .charge
        })
        .collect();
    let seen: Vec<(i64, bool, bool)> = reports
        .iter()
        .map(|charge| (charge.captured_minor, charge.voided, charge.reversed))
        .collect();
    assert_eq!(
        seen,
        [
            (0, false, false),
            (800, false, false),
            (0, false, false),
            (800, false, false),
            (800, false, true)
        ]
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn reverts_and_reversals_survive_a_restart_of_the_ledger_file() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("sandbox.db");

    let first = start_sandbox(0, Some(path.clone())).await;
    let channel = channel_for(&first.base_url(), fast_config());
    let id = preauth(&channel, "order-durable", 3_000).await;
    channel.capture("complete-1", &id, 3_000).await.expect("ok");
    let reverted = channel.uncapture("revert-1", &id).await.expect("ok");
    first.shutdown().await;

    let second = start_sandbox(0, Some(path.clone())).await;
    let channel = channel_for(&second.base_url(), fast_config());
    assert_eq!(channel.uncapture("revert-1", &id).await, Ok(reverted));
    channel
        .capture("complete-2", &id, 2_000)
        .await
        .expect("completed again after the restart");
    let reversed = channel.reverse("reverse-1", &id).await.expect("ok");
    assert_eq!(totals(&reversed), (2_000, 0, false, true));
    second.shutdown().await;

    let third = start_sandbox(0, Some(path)).await;
    let channel = channel_for(&third.base_url(), fast_config());
    assert_eq!(channel.reverse("reverse-1", &id).await, Ok(reversed));
    assert_eq!(
        channel.reverse("reverse-2", &id).await,
        refused(409, "charge_not_reversible")
    );
    let charges = charges_with_key(&third.base_url(), "order-durable").await;
    assert_eq!(charges[0]["reversed"], true);
    assert_eq!(charges[0]["captured_minor"], 2_000);
    third.shutdown().await;
}

/// The version 2 ledger as it shipped (before reversals), with one captured charge.
const V2_LEDGER: &str = "
    CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
    CREATE TABLE charges (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, charge_id TEXT NOT NULL UNIQUE,
        idempotency_key TEXT NOT NULL UNIQUE, amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),
        currency TEXT NOT NULL, pan_fingerprint TEXT NOT NULL,
        card_bin TEXT NOT NULL CHECK (length(card_bin) = 6),
        card_last4 TEXT NOT NULL CHECK (length(card_last4) = 4),
        capture_requested INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('succeeded', 'authorized', 'declined', 'requires_action')),
        decline_code TEXT, captured_minor INTEGER NOT NULL DEFAULT 0,
        refunded_minor INTEGER NOT NULL DEFAULT 0, voided INTEGER NOT NULL DEFAULT 0,
        created_unix_s INTEGER NOT NULL,
        CHECK (0 <= refunded_minor AND refunded_minor <= captured_minor
               AND captured_minor <= amount_minor));
    CREATE TABLE charge_operations (
        idempotency_key TEXT PRIMARY KEY, charge_id TEXT NOT NULL REFERENCES charges (charge_id),
        kind TEXT NOT NULL CHECK (kind IN ('capture', 'void')), amount_minor INTEGER NOT NULL);
    CREATE TABLE refunds (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, refund_id TEXT NOT NULL UNIQUE,
        idempotency_key TEXT NOT NULL UNIQUE, charge_id TEXT NOT NULL REFERENCES charges (charge_id),
        amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),
        status TEXT NOT NULL CHECK (status IN ('succeeded', 'failed')), failure_code TEXT,
        created_unix_s INTEGER NOT NULL);
    CREATE TABLE tombstones (idempotency_key TEXT PRIMARY KEY, created_unix_s INTEGER NOT NULL);
    INSERT INTO charges (charge_id, idempotency_key, amount_minor, currency, pan_fingerprint,
        card_bin, card_last4, capture_requested, status, captured_minor, created_unix_s)
        VALUES ('ch_legacy', 'order-legacy', 700, 'USD', 'f', '424242', '4242', 0, 'succeeded', 700, 1);
    INSERT INTO charge_operations (idempotency_key, charge_id, kind, amount_minor)
        VALUES ('complete-legacy', 'ch_legacy', 'capture', 700);
    PRAGMA user_version = 2;
";

#[tokio::test]
async fn a_version_2_ledger_file_is_migrated_in_place() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("sandbox.db");
    rusqlite::Connection::open(&path)
        .expect("a new file")
        .execute_batch(V2_LEDGER)
        .expect("the old schema");

    let sandbox = start_sandbox(0, Some(path.clone())).await;
    let channel = channel_for(&sandbox.base_url(), fast_config());
    let before = channel.retrieve("ch_legacy").await.expect("the old charge");
    assert_eq!(totals(&before), (700, 0, false, false));
    let reverted = channel
        .uncapture("revert-legacy", "ch_legacy")
        .await
        .expect("an old capture can be reverted");
    assert_eq!(totals(&reverted), (0, 0, false, false));
    let reversed = channel
        .reverse("reverse-legacy", "ch_legacy")
        .await
        .expect("and the authorisation reversed");
    assert_eq!(totals(&reversed), (0, 0, true, false));
    sandbox.shutdown().await;

    let version: i64 = rusqlite::Connection::open(&path)
        .expect("the file")
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .expect("a version");
    assert_eq!(version, 3);
}
