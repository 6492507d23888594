//! Payment methods as data (docs/ADMIN.md): each (method, currency) has a channel and limits;
//! operators change them through the admin API; payments outside them are refused with a
//! clear code and create nothing; the terms survive a restart.

use harness::*;
use serde_json::{Value, json};

async fn admin(
    kassa: &Kassa,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> kassa_client::Response {
    let body = body.map(|b| b.to_string().into_bytes());
    kassa
        .admin()
        .send(method, path, body)
        .await
        .expect("admin call")
}

fn charge(amount: &str, currency: &str) -> Value {
    charge_body(&unique("order"), amount, currency, CARD_SUCCEEDS)
}

#[tokio::test]
async fn method_terms_decide_what_is_accepted_and_operators_can_change_them() {
    let mut kassa = Kassa::start_default().await;
    let merchant = kassa.new_merchant("Methods Ltd").await;

    // Seeded defaults: card in every currency, limits by the currency's exponent (and the
    // other methods beside it).
    let list = expect_status(
        &admin(&kassa, "GET", "/admin/methods", None).await,
        200,
        "list methods",
    );
    let usd = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["method"] == "card" && m["currency"] == "USD")
        .cloned()
        .unwrap();
    assert_eq!(usd["channel"], "card", "{usd}");
    assert_eq!(usd["min_amount"], "0.01", "{usd}");
    assert_eq!(usd["max_amount"], "1000000.00", "{usd}");
    let over = post_payment(&merchant, &charge("1000000.01", "USD"), None).await;
    assert_error(&over, 422, "amount_over_limit");

    // An operator narrows USD and turns EUR off.
    let narrowed = json!({"channel": "card", "min_amount": "1.00", "max_amount": "500.00"});
    let changed = expect_status(
        &admin(&kassa, "PUT", "/admin/methods/card/USD", Some(narrowed)).await,
        200,
        "put",
    );
    assert_eq!(changed["max_amount"], "500.00", "{changed}");
    let off =
        json!({"channel": "card", "min_amount": "0.01", "max_amount": "10.00", "enabled": false});
    expect_status(
        &admin(&kassa, "PUT", "/admin/methods/card/EUR", Some(off)).await,
        200,
        "disable EUR",
    );
    let check = |kassa_merchant: MerchantClient| async move {
        assert_error(
            &post_payment(&kassa_merchant, &charge("0.50", "USD"), None).await,
            422,
            "amount_under_limit",
        );
        assert_error(
            &post_payment(&kassa_merchant, &charge("500.01", "USD"), None).await,
            422,
            "amount_over_limit",
        );
        assert_error(
            &post_payment(&kassa_merchant, &charge("5.00", "EUR"), None).await,
            422,
            "method_unsupported",
        );
        charge_succeeded(&kassa_merchant, &charge("500.00", "USD")).await;
    };
    check(merchant.clone()).await;
    // Refused payments created nothing: only the accepted one exists.
    assert_eq!(list_all_payments(&merchant).await.len(), 1);

    // Bad terms are refused; merchants cannot change methods.
    let bad = json!({"channel": "carrier-pigeon", "min_amount": "1.00", "max_amount": "2.00"});
    assert_error(
        &admin(&kassa, "PUT", "/admin/methods/card/USD", Some(bad)).await,
        422,
        "value_invalid",
    );
    // A method is carried by the channel of its own protocol only.
    let elsewhere = json!({"channel": "qr_wallet", "min_amount": "1.00", "max_amount": "2.00"});
    assert_error(
        &admin(&kassa, "PUT", "/admin/methods/card/USD", Some(elsewhere)).await,
        422,
        "value_invalid",
    );
    let inverted = json!({"channel": "card", "min_amount": "9.00", "max_amount": "2.00"});
    assert_error(
        &admin(&kassa, "PUT", "/admin/methods/card/USD", Some(inverted)).await,
        422,
        "value_invalid",
    );
    let by_merchant = merchant
        .get("/admin/methods")
        .await
        .expect("merchant on admin");
    assert_error_in(
        &by_merchant,
        401,
        &["invalid_admin_token", "missing_credentials"],
    );

    // The terms are data in the store: they survive a restart.
    kassa.restart().await;
    check(merchant.with_base_url(kassa.base_url())).await;
}
