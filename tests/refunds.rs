//! Refunds: the sum of refunds never exceeds what was captured, whatever the concurrency;
//! partial and default amounts; reading refunds back (docs/API.md "Refunds").

use std::time::Duration;

use futures::future::join_all;
use harness::*;
use serde_json::{Value, json};

const CONCURRENT_REFUNDS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_refunds_never_exceed_captured() {
    let kassa = Kassa::start_default().await;
    let merchant = kassa.new_merchant("Books Ltd").await;
    let payment = charge_succeeded(&merchant, &usd_charge(CARD_SUCCEEDS)).await;
    let payment_id = id_of(&payment);
    assert_eq!(payment["amount_captured"], "10.00", "{payment}");

    let refunds = (0..CONCURRENT_REFUNDS).map(|i| {
        let merchant = merchant.clone();
        let body = json!({"payment_id": payment_id, "amount": "1.00"});
        let key = unique(&format!("refund-{i}"));
        tokio::spawn(async move { post_refund(&merchant, &body, Some(&key)).await })
    });
    let responses: Vec<Response> = join_all(refunds)
        .await
        .into_iter()
        .map(|joined| joined.expect("refund task panicked"))
        .collect();

    let mut succeeded = Vec::new();
    let mut refused = 0;
    for response in &responses {
        match response.status {
            201 => {
                let refund = response.json().expect("refund json");
                assert_refund_shape(&refund);
                assert_eq!(refund["status"], "succeeded", "{refund}");
                assert_eq!(refund["payment_id"], payment_id.as_str(), "{refund}");
                succeeded.push(refund);
            }
            _ => {
                assert_error(response, 422, "refund_exceeds_captured");
                refused += 1;
            }
        }
    }
    assert_eq!(succeeded.len(), 10, "exactly ten 1.00 refunds fit in 10.00");
    assert_eq!(refused, CONCURRENT_REFUNDS - 10);
    let refunded: i128 = succeeded
        .iter()
        .map(|refund| minor_units(refund["amount"].as_str().unwrap_or_default(), 2))
        .sum();
    assert_eq!(refunded, 1000, "succeeded refunds sum to 10.00");

    let payment = get_payment(&merchant, &payment_id).await;
    assert_eq!(payment["amount_refunded"], "10.00", "{payment}");
    assert_eq!(payment["amount_captured"], "10.00", "{payment}");
    for refund in &succeeded {
        let read = get_ok(&merchant, &format!("/v1/refunds/{}", id_of(refund))).await;
        assert_eq!(read["status"], "succeeded", "{read}");
        assert_eq!(read["amount"], "1.00", "{read}");
    }
    // Nothing is left to refund.
    let response = post_refund(&merchant, &json!({"payment_id": payment_id}), None).await;
    assert_error(&response, 422, "refund_exceeds_captured");
}

#[tokio::test]
async fn partial_refund_then_the_default_amount_is_the_remainder() {
    let kassa = Kassa::start_default().await;
    let merchant = kassa.new_merchant("Books Ltd").await;
    let payment = charge_succeeded(&merchant, &usd_charge(CARD_SUCCEEDS)).await;
    let payment_id = id_of(&payment);

    let body = json!({
        "payment_id": payment_id, "amount": "3.00", "reason": "requested_by_customer",
        "metadata": {"ticket": "t-1"},
    });
    let response = post_refund(&merchant, &body, None).await;
    let partial = expect_status(&response, 201, "partial refund");
    assert_refund_shape(&partial);
    assert_eq!(partial["status"], "succeeded", "{partial}");
    assert_eq!(partial["amount"], "3.00", "{partial}");
    assert_eq!(partial["currency"], "USD", "{partial}");
    assert_eq!(partial["payment_id"], payment_id.as_str(), "{partial}");
    assert_eq!(partial["reason"], "requested_by_customer", "{partial}");
    assert_eq!(partial["metadata"], json!({"ticket": "t-1"}), "{partial}");
    assert_eq!(
        get_payment(&merchant, &payment_id).await["amount_refunded"],
        "3.00"
    );

    // More than what is left is refused and changes nothing.
    let response = post_refund(
        &merchant,
        &json!({"payment_id": payment_id, "amount": "7.01"}),
        None,
    )
    .await;
    assert_error(&response, 422, "refund_exceeds_captured");
    assert_eq!(
        get_payment(&merchant, &payment_id).await["amount_refunded"],
        "3.00"
    );

    let response = post_refund(&merchant, &json!({"payment_id": payment_id}), None).await;
    let rest = expect_status(&response, 201, "refund of the remainder");
    assert_refund_shape(&rest);
    assert_eq!(
        rest["amount"], "7.00",
        "the default is what is still refundable: {rest}"
    );
    assert_eq!(rest["status"], "succeeded", "{rest}");
    assert_eq!(rest["reason"], Value::Null, "{rest}");
    assert_ne!(rest["id"], partial["id"]);

    let payment = get_payment(&merchant, &payment_id).await;
    assert_eq!(payment["amount_refunded"], "10.00", "{payment}");
    assert_eq!(payment["status"], "succeeded", "{payment}");

    for refund in [&partial, &rest] {
        let read = get_ok(&merchant, &format!("/v1/refunds/{}", id_of(refund))).await;
        assert_eq!(
            &read, refund,
            "GET /v1/refunds/{{id}} shows what POST answered"
        );
    }
    let response = post_refund(
        &merchant,
        &json!({"payment_id": payment_id, "amount": "0.01"}),
        None,
    )
    .await;
    assert_error(&response, 422, "refund_exceeds_captured");
}

#[tokio::test]
async fn refunds_are_bounded_by_captured_not_authorized() {
    let kassa = Kassa::start_default().await;
    let merchant = kassa.new_merchant("Books Ltd").await;
    let mut body = usd_charge(CARD_SUCCEEDS);
    body["capture"] = json!("manual");
    let authorized = expect_status(&post_payment(&merchant, &body, None).await, 201, "manual");
    let payment_id = id_of(&authorized);
    let response = merchant
        .send(
            "POST",
            &format!("/v1/payments/{payment_id}/capture"),
            Some(json!({"amount": "6.00"}).to_string().into_bytes()),
            None,
        )
        .await
        .expect("capture");
    expect_status(&response, 200, "partial capture");

    let response = post_refund(
        &merchant,
        &json!({"payment_id": payment_id, "amount": "6.01"}),
        None,
    )
    .await;
    assert_error(&response, 422, "refund_exceeds_captured");
    let response = post_refund(&merchant, &json!({"payment_id": payment_id}), None).await;
    let refund = expect_status(&response, 201, "refund of everything captured");
    assert_eq!(refund["amount"], "6.00", "{refund}");
    let payment = get_payment(&merchant, &payment_id).await;
    assert_eq!(payment["amount_refunded"], "6.00", "{payment}");
    assert_eq!(payment["amount_captured"], "6.00", "{payment}");

    // A declined payment captured nothing, so nothing can be refunded.
    let declined = post_payment(&merchant, &usd_charge(CARD_DECLINED), None).await;
    let declined = expect_status(&declined, 201, "declined charge");
    let response = post_refund(&merchant, &json!({"payment_id": id_of(&declined)}), None).await;
    assert!(
        [409, 422].contains(&response.status),
        "refunding a failed payment must be refused: {} {}",
        response.status,
        response.text()
    );
    assert_error_in(
        &response,
        response.status,
        &["refund_exceeds_captured", "payment_unexpected_state"],
    );
    assert_eq!(
        get_payment(&merchant, &id_of(&declined)).await["amount_refunded"],
        "0.00"
    );
}

#[tokio::test]
async fn async_refund_answers_202_pending_then_succeeds() {
    let kassa = Kassa::start_default().await;
    let merchant = kassa.new_merchant("Books Ltd").await;
    let payment = charge_succeeded(&merchant, &usd_charge(CARD_SUCCEEDS)).await;
    let body = json!({"payment_id": id_of(&payment), "amount": "2.50", "async": true});
    let response = post_refund(&merchant, &body, None).await;
    let refund = expect_status(&response, 202, "async refund");
    assert_refund_shape(&refund);
    assert_eq!(refund["status"], "pending", "{refund}");
    let path = format!("/v1/refunds/{}", id_of(&refund));
    let done = poll_until("the refund to succeed", Duration::from_secs(30), || async {
        let refund = get_ok(&merchant, &path).await;
        if refund["status"] == "succeeded" {
            Ok(refund)
        } else {
            Err(refund.to_string())
        }
    })
    .await;
    assert_eq!(done["amount"], "2.50", "{done}");
    let payment = get_payment(&merchant, &id_of(&payment)).await;
    assert_eq!(payment["amount_refunded"], "2.50", "{payment}");
}
