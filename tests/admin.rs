//! Operators: the admin token guards `/admin`, merchants made over HTTP or with the CLI can
//! charge, and `/healthz` answers (docs/API.md "Operators").

use harness::*;
use serde_json::json;

#[tokio::test]
async fn admin_merchants_requires_the_admin_token() {
    let kassa = Kassa::start_default().await;
    let http = HttpClient::new(kassa.base_url());
    let body = json!({"name": "Books Ltd"}).to_string().into_bytes();
    let json_type = ("Content-Type".to_owned(), "application/json".to_owned());
    let post = |headers: Vec<(String, String)>| {
        let http = http.clone();
        let body = body.clone();
        async move {
            http.send("POST", "/admin/merchants", &headers, body)
                .await
                .expect("POST /admin/merchants")
        }
    };

    let response = post(vec![json_type.clone()]).await;
    assert_error_in(
        &response,
        401,
        &["missing_credentials", "invalid_admin_token"],
    );
    let wrong = ("Authorization".to_owned(), "Bearer adm_wrong".to_owned());
    let response = post(vec![json_type.clone(), wrong]).await;
    assert_error(&response, 401, "invalid_admin_token");
    let not_bearer = ("Authorization".to_owned(), kassa.admin_token().to_owned());
    let response = post(vec![json_type.clone(), not_bearer]).await;
    assert_error_in(
        &response,
        401,
        &["missing_credentials", "invalid_admin_token"],
    );

    // A merchant's valid signature is no admin credential.
    let merchant = kassa.new_merchant("Signer Ltd").await;
    let headers = merchant.signed_headers(unix_now(), "POST", "/admin/merchants", &body);
    let response = post(headers).await;
    assert_eq!(
        response.status,
        401,
        "merchant credentials on /admin: {}",
        response.text()
    );
    assert_error_in(
        &response,
        401,
        &[
            "missing_credentials",
            "invalid_admin_token",
            "invalid_signature",
        ],
    );

    // With the token: 201 and the merchant object, secrets shown once.
    let webhook_url = "https://merchant.example/hooks/kassa";
    let response = kassa
        .admin()
        .send(
            "POST",
            "/admin/merchants",
            Some(
                json!({"name": "Books Ltd", "webhook_url": webhook_url})
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await
        .expect("POST /admin/merchants");
    let created = expect_status(&response, 201, "create merchant");
    assert!(
        created["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("mch_")),
        "{created}"
    );
    assert_eq!(created["object"], "merchant", "{created}");
    assert_eq!(created["name"], "Books Ltd", "{created}");
    assert_eq!(created["webhook_url"], webhook_url, "{created}");
    assert!(created["created"].is_i64(), "{created}");
    let credentials = MerchantCredentials::from_json("create merchant", &created)
        .expect("credentials in the merchant object");
    assert!(
        credentials.secret.starts_with("sk_"),
        "secret must start with sk_"
    );
    assert!(
        credentials.webhook_secret.starts_with("whsec_"),
        "whsec_ prefix"
    );

    // The new merchant can charge; another new merchant gets different credentials.
    let books = kassa.merchant(&credentials);
    charge_succeeded(&books, &usd_charge(CARD_SUCCEEDS)).await;
    let second = kassa.new_merchant_credentials("Second Ltd").await;
    assert_ne!(second.id, credentials.id);
    assert_ne!(second.secret, credentials.secret);
    assert_ne!(second.webhook_secret, credentials.webhook_secret);

    // A body without a name is refused.
    let response = kassa
        .admin()
        .send("POST", "/admin/merchants", Some(b"{}".to_vec()))
        .await
        .expect("POST /admin/merchants");
    let error = assert_error(&response, 400, "missing_field");
    assert_eq!(error["param"], "name", "{error}");
}

#[tokio::test]
async fn cli_creates_a_merchant_in_a_stopped_instance() {
    let mut kassa = Kassa::start_default().await;
    let before = kassa.new_merchant_credentials("Before Ltd").await;
    let status = kassa.stop().await;
    assert!(
        status.success(),
        "SIGTERM must end kassa gracefully (exit 0), got {status}"
    );

    let output = kassa
        .cli(&["merchant", "create", "--name", "CLI Books"])
        .await;
    output.assert_success();
    let created = output.json();
    assert!(
        created["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("mch_")),
        "{created}"
    );
    let credentials = output.merchant_credentials();
    assert_ne!(credentials.id, before.id);

    kassa.restart().await;
    let merchant = kassa.merchant(&credentials);
    let payment = charge_succeeded(&merchant, &usd_charge(CARD_SUCCEEDS)).await;
    assert_eq!(payment["amount_captured"], "10.00", "{payment}");
    // The merchant made over HTTP before the stop survived it.
    charge_succeeded(&kassa.merchant(&before), &usd_charge(CARD_SUCCEEDS)).await;
}

#[tokio::test]
async fn healthz_answers_ok() {
    let kassa = Kassa::start_default().await;
    let response = HttpClient::new(kassa.base_url())
        .send("GET", "/healthz", &[], Vec::new())
        .await
        .expect("GET /healthz");
    let body = expect_status(&response, 200, "GET /healthz");
    assert_eq!(body["status"], "ok", "{body}");
}
