//! `GET /v1/events`: every transition a merchant cares about is an event, written in the same
//! store transaction as the transition (the outbox), listed newest first with cursors, readable
//! one by one, and only by its own merchant.

use harness::*;
use serde_json::{Value, json};

async fn events(merchant: &MerchantClient, query: &str) -> (Vec<Value>, bool) {
    let body = get_ok(merchant, &format!("/v1/events{query}")).await;
    assert_list(&body)
}

#[tokio::test]
async fn transitions_become_events_in_the_merchants_log() {
    let mut kassa = Kassa::start_default().await;
    let merchant = kassa.new_merchant("Events Ltd").await;

    let paid = charge_succeeded(&merchant, &usd_charge(CARD_SUCCEEDS)).await;
    let declined = post_payment(&merchant, &usd_charge(CARD_DECLINED), None).await;
    let declined = expect_status(&declined, 201, "declined");
    let refund = post_refund(
        &merchant,
        &json!({"payment_id": id_of(&paid), "amount": "4.00"}),
        None,
    )
    .await;
    let refund = expect_status(&refund, 201, "refund");

    let (data, has_more) = events(&merchant, "?limit=10").await;
    assert!(!has_more);
    let types: Vec<&str> = data.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["refund.succeeded", "payment.failed", "payment.succeeded"],
        "newest first: {data:?}"
    );
    for event in &data {
        assert_eq!(event["object"], "event", "{event}");
        assert!(event["id"].as_str().unwrap().starts_with("evt_"), "{event}");
        assert!(event["created"].is_i64(), "{event}");
    }
    assert_eq!(data[0]["data"]["object"]["id"], refund["id"]);
    assert_eq!(data[1]["data"]["object"]["id"], declined["id"]);
    assert_eq!(data[1]["data"]["object"]["failure_code"], "card_declined");
    assert_eq!(data[2]["data"]["object"]["status"], "succeeded");
    assert_payment_shape(&data[2]["data"]["object"]);

    // One by one, byte for byte the same object.
    let id = id_of(&data[2]);
    assert_eq!(
        get_ok(&merchant, &format!("/v1/events/{id}")).await,
        data[2]
    );
    // Cursors.
    let (after, _) = events(
        &merchant,
        &format!("?limit=1&starting_after={}", id_of(&data[0])),
    )
    .await;
    assert_eq!(after, vec![data[1].clone()]);

    // Another merchant sees none of them.
    let other = kassa.new_merchant("Other Ltd").await;
    assert!(events(&other, "").await.0.is_empty());
    let foreign = other.get(&format!("/v1/events/{id}")).await.expect("get");
    assert_error(&foreign, 404, "resource_missing");
    let resend = other
        .send("POST", &format!("/v1/events/{id}/resend"), None, None)
        .await
        .expect("resend");
    assert_error(&resend, 404, "resource_missing");
    // The owner may ask for a resend.
    let resend = merchant
        .send("POST", &format!("/v1/events/{id}/resend"), None, None)
        .await
        .expect("resend");
    assert_eq!(
        expect_status(&resend, 200, "resend")["event_id"],
        id.as_str()
    );

    // The log is durable: the same after a restart.
    kassa.restart().await;
    let merchant = merchant.with_base_url(kassa.base_url());
    assert_eq!(events(&merchant, "?limit=10").await.0, data);
}
