//! 3-D Secure (`requires_action`): the sandbox card 4000000000003220 needs the cardholder to
//! authenticate at the issuer's page first. The merchant sends the customer to
//! `next_action.url`, then confirms; Kassa asks the channel and answers with the outcome.

use harness::*;
use kassa_client::HttpClient;
use serde_json::{Value, json};

const CARD_3DS: &str = "4000000000003220";

/// The cardholder visits the challenge page (unsigned, as a browser would).
async fn authenticate(url: &str, pass: bool) {
    let (base, path) = url.split_at(url.find("/challenge/").expect("a challenge URL"));
    let path = if pass {
        path.to_owned()
    } else {
        format!("{path}?result=fail")
    };
    let response = HttpClient::new(base)
        .send("GET", &path, &[], Vec::new())
        .await
        .expect("challenge page");
    assert_eq!(response.status, 200, "{}", response.text());
}

async fn confirm(merchant: &MerchantClient, id: &str) -> Value {
    let response = merchant
        .send("POST", &format!("/v1/payments/{id}/confirm"), None, None)
        .await
        .expect("confirm");
    expect_status(&response, 200, "confirm")
}

async fn charge_needing_action(merchant: &MerchantClient, body: Value) -> (String, String) {
    let response = post_payment(merchant, &body, None).await;
    let payment = expect_status(&response, 201, "3-D Secure charge");
    assert_eq!(payment["status"], "requires_action", "{payment}");
    assert_eq!(
        payment["next_action"]["type"], "redirect_to_url",
        "{payment}"
    );
    let url = payment["next_action"]["url"]
        .as_str()
        .expect("next_action.url")
        .to_owned();
    (id_of(&payment), url)
}

#[tokio::test]
async fn the_cardholder_authenticates_and_the_merchant_confirms() {
    let kassa = Kassa::start_default().await;
    let merchant = kassa.new_merchant("Secure Ltd").await;

    // Passed: the charge completes as it would have without the challenge.
    let (id, url) = charge_needing_action(&merchant, usd_charge(CARD_3DS)).await;
    // Confirming before the cardholder acted changes nothing.
    assert_eq!(confirm(&merchant, &id).await["status"], "requires_action");
    authenticate(&url, true).await;
    let done = confirm(&merchant, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["amount_captured"], "10.00", "{done}");
    assert_eq!(done["next_action"], Value::Null, "{done}");
    assert_eq!(
        confirm(&merchant, &id).await,
        done,
        "confirming again is harmless"
    );

    // Failed authentication: declined, nothing captured.
    let (id, url) = charge_needing_action(&merchant, usd_charge(CARD_3DS)).await;
    authenticate(&url, false).await;
    let failed = confirm(&merchant, &id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["failure_code"], "authentication_failed", "{failed}");
    assert_eq!(failed["amount_captured"], "0.00", "{failed}");

    // A manual-capture payment is authorised after the challenge, then captured.
    let mut manual = usd_charge(CARD_3DS);
    manual["capture"] = json!("manual");
    let (id, url) = charge_needing_action(&merchant, manual).await;
    authenticate(&url, true).await;
    assert_eq!(confirm(&merchant, &id).await["status"], "authorized");
    let captured = merchant
        .send("POST", &format!("/v1/payments/{id}/capture"), None, None)
        .await
        .expect("capture");
    assert_eq!(
        expect_status(&captured, 200, "capture")["status"],
        "succeeded"
    );

    // A customer who never comes back: the merchant cancels; nothing was taken.
    let (id, _url) = charge_needing_action(&merchant, usd_charge(CARD_3DS)).await;
    let canceled = merchant
        .send("POST", &format!("/v1/payments/{id}/cancel"), None, None)
        .await
        .expect("cancel");
    let canceled = expect_status(&canceled, 200, "cancel");
    assert_eq!(canceled["status"], "canceled", "{canceled}");
    assert_eq!(canceled["next_action"], Value::Null, "{canceled}");
}
