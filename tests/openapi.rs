//! The OpenAPI document (docs/openapi.json) is the API Kassa serves: the binary serves the same
//! document at `GET /openapi.json`; the document describes exactly the routes of
//! `kassa_runtime::router::ROUTES` (the list the router labels its metrics by), each of them is
//! served and no other method is; and real responses of a scenario that reaches every
//! operation and every error status Kassa can be made to answer validate against the
//! document's response schemas and headers (JSON Schema 2020-12, as OpenAPI 3.1 defines them).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use harness::*;
use serde_json::{Value, json};

/// The document as kept in the repository.
const DOCUMENT_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
/// Methods a path may be asked with; those the document does not list must be refused with 405.
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
/// A sandbox card that needs 3-D Secure (`requires_action`).
const CARD_3DS: &str = "4000000000003220";
/// How long the scenario waits for asynchronous outcomes (events, rate-limit refusals).
const WAIT: Duration = Duration::from_secs(20);

fn document() -> Value {
    let text = std::fs::read_to_string(DOCUMENT_PATH)
        .unwrap_or_else(|error| panic!("reading {DOCUMENT_PATH}: {error}"));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{DOCUMENT_PATH}: {error}"))
}

/// Every (METHOD, template) the document describes.
fn documented_operations(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths is an object");
    paths
        .iter()
        .flat_map(|(template, item)| {
            let item = item.as_object().expect("a path item is an object");
            item.keys()
                .filter(|key| METHODS.iter().any(|m| m.eq_ignore_ascii_case(key)))
                .map(|method| (method.to_ascii_uppercase(), template.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Follows a local `$ref` (`#/components/...`), repeatedly.
fn resolve<'a>(doc: &'a Value, mut value: &'a Value) -> &'a Value {
    while let Some(reference) = value.get("$ref").and_then(Value::as_str) {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("only local references are used: {reference}"));
        value = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("{reference} does not resolve"));
    }
    value
}

/// Every `$ref` in `value`, anywhere.
fn references(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("$ref", Value::String(reference)) => out.push(reference.clone()),
                    _ => references(inner, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| references(item, out)),
        _ => {}
    }
}

/// A JSON Schema 2020-12 validator for `schema`, a schema of the document: the document's
/// components travel with it so its `#/components/...` references resolve.
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let mut root = serde_json::Map::new();
    root.insert(
        "$schema".into(),
        json!("https://json-schema.org/draft/2020-12/schema"),
    );
    root.insert("allOf".into(), json!([schema]));
    root.insert("components".into(), doc["components"].clone());
    jsonschema::draft202012::new(&Value::Object(root))
        .unwrap_or_else(|error| panic!("schema {schema} does not compile: {error}"))
}

/// `template` with `{id}` filled in.
fn concrete(template: &str, id: &str) -> String {
    template.replace("{id}", id)
}

/// Validates real responses against the document and remembers which (operation, status)
/// pairs it saw.
struct Conformance {
    doc: Value,
    seen: BTreeSet<(String, String, u16)>,
}

impl Conformance {
    fn new() -> Self {
        Conformance {
            doc: document(),
            seen: BTreeSet::new(),
        }
    }

    /// Panics unless `response` is one the document lists for `method template`: its status,
    /// `Content-Type`, body schema and headers. Returns the body.
    fn check(&mut self, method: &str, template: &str, response: &Response) -> Value {
        let what = format!("{method} {template} → {}", response.status);
        let operation = &self.doc["paths"][template][method.to_ascii_lowercase()];
        assert!(
            operation.is_object(),
            "{method} {template} is not documented"
        );
        let status = response.status.to_string();
        let documented = &operation["responses"][&status];
        assert!(
            documented.is_object(),
            "{what}: the document does not list this status; body {}",
            response.text()
        );
        let documented = resolve(&self.doc, documented);
        let content_type = response.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "{what}: Content-Type {content_type:?}"
        );
        let body: Value = response
            .json()
            .unwrap_or_else(|error| panic!("{what}: {error}"));
        let schema = &documented["content"]["application/json"]["schema"];
        assert!(schema.is_object(), "{what}: no JSON schema documented");
        let errors: Vec<String> = validator(&self.doc, schema)
            .iter_errors(&body)
            .map(|error| format!("  at {}: {error}", error.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{what}: the body does not match the document:\n{}\nbody: {body}",
            errors.join("\n")
        );
        let headers = documented["headers"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (name, header) in &headers {
            let header = resolve(&self.doc, header);
            match response.header(name) {
                None => assert!(
                    header["required"] != json!(true),
                    "{what}: required header {name} is missing"
                ),
                Some(value) => {
                    let value = match header["schema"]["type"].as_str() {
                        Some("integer") => value
                            .parse::<i64>()
                            .map(Value::from)
                            .unwrap_or_else(|_| panic!("{what}: {name}: {value:?} is no integer")),
                        _ => Value::from(value),
                    };
                    assert!(
                        validator(&self.doc, &header["schema"]).is_valid(&value),
                        "{what}: header {name}: {value} does not match {}",
                        header["schema"]
                    );
                }
            }
        }
        self.seen
            .insert((method.to_owned(), template.to_owned(), response.status));
        body
    }
}

/// A signed request for `method template` (with `{id}` filled in), checked against the document.
async fn call(
    conformance: &mut Conformance,
    merchant: &MerchantClient,
    method: &str,
    template: &str,
    id: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let target = concrete(template, id);
    // The document's template is the path; a query travels in the target only.
    let template = template.split_once('?').map_or(template, |(path, _)| path);
    let body = body.map(|body| body.to_string().into_bytes());
    let key = (method == "POST").then(|| unique("openapi-key"));
    let response = merchant
        .send(method, &target, body, key.as_deref())
        .await
        .unwrap_or_else(|error| panic!("{method} {target}: {error}"));
    let body = conformance.check(method, template, &response);
    (response.status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_is_the_kept_one_and_describes_every_route() {
    let kassa = Kassa::start_default().await;
    let http = HttpClient::new(kassa.base_url());

    // Served unauthenticated, byte for byte the file in the repository.
    let served = http
        .send("GET", "/openapi.json", &[], Vec::new())
        .await
        .expect("GET /openapi.json");
    assert_eq!(served.status, 200, "{}", served.text());
    assert_eq!(served.header("content-type"), Some("application/json"));
    let kept = std::fs::read(DOCUMENT_PATH).expect("reading docs/openapi.json");
    assert!(
        served.body.as_ref() == kept.as_slice(),
        "GET /openapi.json is not docs/openapi.json (rebuild kassa?)"
    );
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");

    // Every reference resolves and every schema compiles.
    let mut refs = Vec::new();
    references(&doc, &mut refs);
    for reference in &refs {
        resolve(&doc, &json!({ "$ref": reference }));
    }
    for (name, schema) in doc["components"]["schemas"].as_object().expect("schemas") {
        validator(
            &doc,
            &json!({ "$ref": format!("#/components/schemas/{name}") }),
        );
        assert!(schema.is_object(), "{name}");
    }

    // The currencies are the ones Kassa knows.
    let documented: BTreeSet<&str> = doc["components"]["schemas"]["Currency"]["enum"]
        .as_array()
        .expect("Currency is an enum")
        .iter()
        .map(|code| code.as_str().expect("a code"))
        .collect();
    let known: BTreeSet<&str> = kassa_actors::money::Currency::all()
        .map(|currency| currency.code())
        .collect();
    assert_eq!(documented, known, "Currency in docs/openapi.json");

    // The document and the router's list of routes are the same.
    let documented = documented_operations(&doc);
    let routed: BTreeSet<(String, String)> = kassa_runtime::router::ROUTES
        .iter()
        .map(|(method, template)| ((*method).to_owned(), (*template).to_owned()))
        .collect();
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty() && unrouted.is_empty(),
        "routes missing from docs/openapi.json: {undocumented:?}\n\
         documented but not in router::ROUTES: {unrouted:?}"
    );

    // And the live server agrees: each documented operation is served, and every other method
    // on a documented path is 405 with `Allow` naming exactly the documented ones.
    let merchant = kassa.new_merchant("openapi-routes").await;
    let mut by_path: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (method, template) in &documented {
        by_path.entry(template).or_default().insert(method);
    }
    for (template, methods) in &by_path {
        let target = concrete(template, "pay_0");
        for method in METHODS {
            let body = (method != "GET").then(|| b"{}".to_vec());
            let response = if template.starts_with("/v1") {
                merchant.send(method, &target, body, None).await
            } else {
                http.send(method, &target, &[], body.unwrap_or_default())
                    .await
            }
            .unwrap_or_else(|error| panic!("{method} {target}: {error}"));
            let code = response
                .json()
                .ok()
                .and_then(|body| body["error"]["code"].as_str().map(str::to_owned));
            if methods.contains(method) {
                assert!(
                    !matches!(
                        code.as_deref(),
                        Some("route_not_found" | "method_not_allowed")
                    ),
                    "{method} {template} is documented but not served: {}",
                    response.text()
                );
            } else {
                assert_error(&response, 405, "method_not_allowed");
                let allow: BTreeSet<&str> = response
                    .header("allow")
                    .unwrap_or_else(|| panic!("{method} {template}: 405 without Allow"))
                    .split(',')
                    .map(str::trim)
                    .collect();
                assert_eq!(&allow, methods, "{method} {template}: Allow");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_responses_match_the_document() {
    let options = KassaOptions::new()
        // One qr_wallet charge a second, no waiting for a token: the second is 429.
        .env("KASSA_CHANNELS_QR_WALLET_RATE_PER_S", 1)
        .env("KASSA_CHANNELS_QR_WALLET_BURST", 1)
        .env("KASSA_CHANNELS_QR_WALLET_RATE_WAIT_MS_MAX", 0)
        // No bank transfer channel: a bank transfer is 503 channel_unavailable.
        .env("KASSA_CHANNELS_BANK_TRANSFER_ENABLED", false);
    let kassa = Kassa::start(options).await;
    let http = HttpClient::new(kassa.base_url());
    let merchant = kassa.new_merchant("openapi-scenario").await;
    let other = kassa.new_merchant("openapi-other").await;
    let mut c = Conformance::new();
    let m = &merchant;

    // Unauthenticated probes.
    for template in ["/healthz", "/readyz", "/openapi.json"] {
        let response = http.send("GET", template, &[], Vec::new()).await.unwrap();
        assert_eq!(response.status, 200, "{template}: {}", response.text());
        c.check("GET", template, &response);
    }

    // Charges: each outcome of the sandbox's cards.
    let (status, paid) = call(
        &mut c,
        m,
        "POST",
        "/v1/payments",
        "",
        Some(usd_charge(CARD_SUCCEEDS)),
    )
    .await;
    assert_eq!((status, paid["status"].as_str()), (201, Some("succeeded")));
    let paid_id = paid["id"].as_str().unwrap().to_owned();
    let (_, declined) = call(
        &mut c,
        m,
        "POST",
        "/v1/payments",
        "",
        Some(usd_charge(CARD_DECLINED)),
    )
    .await;
    assert_eq!(declined["status"], "failed");
    let (_, action) = call(
        &mut c,
        m,
        "POST",
        "/v1/payments",
        "",
        Some(usd_charge(CARD_3DS)),
    )
    .await;
    assert_eq!(action["status"], "requires_action");
    let action_id = action["id"].as_str().unwrap().to_owned();
    let (status, _) = call(
        &mut c,
        m,
        "POST",
        "/v1/payments/{id}/confirm",
        &action_id,
        Some(json!({"wait_ms": 1000})),
    )
    .await;
    assert!(status == 200 || status == 202);
    let (_, canceled) = call(
        &mut c,
        m,
        "POST",
        "/v1/payments/{id}/cancel",
        &action_id,
        None,
    )
    .await;
    assert_eq!(canceled["status"], "canceled");
    let mut async_body = usd_charge(CARD_SUCCEEDS);
    async_body["async"] = json!(true);
    let (status, _) = call(&mut c, m, "POST", "/v1/payments", "", Some(async_body)).await;
    assert_eq!(status, 202);

    // A whole number written as a float is an integer (JSON Schema's, which the document
    // promises); a fraction is not. (Found by schemathesis: `exp_month: 10.0` was a 400.)
    let mut floats = usd_charge(CARD_SUCCEEDS);
    floats["card"]["exp_month"] = json!(12.0);
    floats["wait_ms"] = json!(5000.0);
    let (status, whole) = call(&mut c, m, "POST", "/v1/payments", "", Some(floats)).await;
    assert_eq!(
        (status, whole["card"]["exp_month"].as_u64()),
        (201, Some(12))
    );
    let mut fraction = usd_charge(CARD_SUCCEEDS);
    fraction["card"]["exp_month"] = json!(11.5);
    let (status, refused) = call(&mut c, m, "POST", "/v1/payments", "", Some(fraction)).await;
    assert_eq!(
        (status, refused["error"]["param"].as_str()),
        (400, Some("card.exp_month"))
    );

    // An idempotent replay carries Idempotent-Replayed; the same key on another body is 422.
    let body = usd_charge(CARD_SUCCEEDS).to_string().into_bytes();
    let key = unique("replay");
    let first = m
        .send("POST", "/v1/payments", Some(body.clone()), Some(&key))
        .await
        .unwrap();
    let again = m
        .send("POST", "/v1/payments", Some(body), Some(&key))
        .await
        .unwrap();
    c.check("POST", "/v1/payments", &first);
    c.check("POST", "/v1/payments", &again);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let reused = m
        .send(
            "POST",
            "/v1/payments",
            Some(usd_charge(CARD_SUCCEEDS).to_string().into_bytes()),
            Some(&key),
        )
        .await
        .unwrap();
    assert_error(&reused, 422, "idempotency_key_reused");
    c.check("POST", "/v1/payments", &reused);

    // Pre-authorisation: authorise, capture part, revert, complete again, refund, and the
    // refusals that follow.
    let mut manual = usd_charge(CARD_SUCCEEDS);
    manual["capture"] = json!("manual");
    let (_, preauth) = call(&mut c, m, "POST", "/v1/payments", "", Some(manual.clone())).await;
    assert_eq!(preauth["status"], "authorized");
    let preauth_id = preauth["id"].as_str().unwrap().to_owned();
    let (status, _) = call(
        &mut c,
        m,
        "POST",
        "/v1/payments/{id}/capture",
        &preauth_id,
        Some(json!({"amount": "20.00"})),
    )
    .await;
    assert_eq!(status, 422, "more than authorised");
    let (_, captured) = call(
        &mut c,
        m,
        "POST",
        "/v1/payments/{id}/capture",
        &preauth_id,
        Some(json!({"amount": "6.00"})),
    )
    .await;
    assert_eq!(captured["status"], "succeeded");
    let (_, reverted) = call(
        &mut c,
        m,
        "POST",
        "/v1/payments/{id}/complete_revert",
        &preauth_id,
        None,
    )
    .await;
    assert_eq!(reverted["status"], "authorized");
    let (_, completed) = call(
        &mut c,
        m,
        "POST",
        "/v1/payments/{id}/preauth_complete",
        &preauth_id,
        Some(json!({})),
    )
    .await;
    assert_eq!(completed["status"], "succeeded");
    let (status, refund) = call(&mut c, m, "POST", "/v1/refunds", "", Some(json!({"payment_id": preauth_id, "amount": "1.00", "reason": "requested_by_customer", "metadata": {"ticket": "t-1"}}))).await;
    assert_eq!(status, 201);
    let refund_id = refund["id"].as_str().unwrap().to_owned();
    call(&mut c, m, "GET", "/v1/refunds/{id}", &refund_id, None).await;
    let (status, _) = call(
        &mut c,
        m,
        "POST",
        "/v1/refunds",
        "",
        Some(json!({"payment_id": preauth_id, "amount": "100.00"})),
    )
    .await;
    assert_eq!(status, 422, "more than captured");
    let (status, _) = call(
        &mut c,
        m,
        "POST",
        "/v1/payments/{id}/complete_revert",
        &preauth_id,
        None,
    )
    .await;
    assert_eq!(status, 409, "complete_revert after a refund");
    let (status, _) = call(
        &mut c,
        m,
        "POST",
        "/v1/payments/{id}/reverse",
        &preauth_id,
        None,
    )
    .await;
    assert_eq!(status, 409, "reverse after a refund");
    let (status, _) = call(
        &mut c,
        m,
        "POST",
        "/v1/payments/{id}/preauth_cancel",
        &preauth_id,
        None,
    )
    .await;
    assert_eq!(status, 409, "cancel a succeeded payment");
    let (_, preauth2) = call(
        &mut c,
        m,
        "POST",
        "/v1/payments",
        "",
        Some({
            let mut b = manual.clone();
            b["merchant_order_id"] = json!(unique("order"));
            b
        }),
    )
    .await;
    let (_, voided) = call(
        &mut c,
        m,
        "POST",
        "/v1/payments/{id}/preauth_cancel",
        preauth2["id"].as_str().unwrap(),
        None,
    )
    .await;
    assert_eq!(voided["status"], "canceled");
    let (_, reversed) = call(
        &mut c,
        m,
        "POST",
        "/v1/payments/{id}/reverse",
        &paid_id,
        None,
    )
    .await;
    assert_eq!(reversed["reversed"], true);
    let (status, _) = call(
        &mut c,
        m,
        "POST",
        "/v1/payments/{id}/complete_revert",
        &paid_id,
        None,
    )
    .await;
    assert_eq!(status, 422, "complete_revert of an automatic capture");
    let (status, _) = call(
        &mut c,
        m,
        "POST",
        "/v1/payments/{id}/confirm",
        &paid_id,
        None,
    )
    .await;
    assert!(
        status == 409 || status == 200,
        "confirm of a canceled payment: {status}"
    );

    // Reads, lists and their errors.
    call(&mut c, m, "GET", "/v1/payments/{id}", &paid_id, None).await;
    let (_, page) = call(&mut c, m, "GET", "/v1/payments?limit=2", "", None).await;
    assert_eq!(page["has_more"], true);
    let last = page["data"][1]["id"].as_str().unwrap().to_owned();
    c.check(
        "GET",
        "/v1/payments",
        &m.get(&format!("/v1/payments?limit=2&starting_after={last}"))
            .await
            .unwrap(),
    );
    c.check(
        "GET",
        "/v1/payments",
        &m.get(&format!("/v1/payments?ending_before={last}"))
            .await
            .unwrap(),
    );
    let bad_limit = m.get("/v1/payments?limit=0").await.unwrap();
    assert_error(&bad_limit, 400, "invalid_query");
    c.check("GET", "/v1/payments", &bad_limit);
    let (status, _) = call(
        &mut c,
        m,
        "GET",
        "/v1/payments/{id}",
        "pay_000000000000000000000000",
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(&mut c, &other, "GET", "/v1/payments/{id}", &paid_id, None).await;
    assert_eq!(status, 404, "another merchant's payment");
    let (status, _) = call(
        &mut c,
        m,
        "POST",
        "/v1/payments/{id}/capture",
        "pay_000000000000000000000000",
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &mut c,
        m,
        "GET",
        "/v1/refunds/{id}",
        "re_000000000000000000000000",
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &mut c,
        m,
        "POST",
        "/v1/refunds",
        "",
        Some(json!({"payment_id": "pay_000000000000000000000000"})),
    )
    .await;
    assert_eq!(status, 404);

    // Events: the charges above produced some.
    let events = poll_until("three events", WAIT, || async {
        let response = m
            .get("/v1/events?limit=3")
            .await
            .map_err(|e| e.to_string())?;
        let body = response.json().map_err(|e| e.to_string())?;
        match body["data"].as_array().map(Vec::len) {
            Some(3) => Ok(response),
            other => Err(format!("{other:?} events")),
        }
    })
    .await;
    let events = c.check("GET", "/v1/events", &events);
    let event_id = events["data"][0]["id"].as_str().unwrap().to_owned();
    call(&mut c, m, "GET", "/v1/events/{id}", &event_id, None).await;
    let (_, delivery) = call(&mut c, m, "POST", "/v1/events/{id}/resend", &event_id, None).await;
    assert_eq!(delivery["status"], "pending");
    let (status, _) = call(&mut c, m, "GET", "/v1/events/{id}", "evt_missing_1", None).await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &mut c,
        m,
        "POST",
        "/v1/events/{id}/resend",
        "evt_missing_1",
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &mut c,
        m,
        "GET",
        "/v1/events?starting_after=evt_missing_1",
        "",
        None,
    )
    .await;
    assert_eq!(status, 400);

    // Wallets: create, move money both ways, pay from one, list, and the refusals.
    let (_, wallet) = call(
        &mut c,
        m,
        "POST",
        "/v1/wallets",
        "",
        Some(json!({"currency": "EUR", "customer_ref": "cus_1", "metadata": {"tier": "gold"}})),
    )
    .await;
    let wallet_id = wallet["id"].as_str().unwrap().to_owned();
    let (status, _) = call(
        &mut c,
        m,
        "POST",
        "/v1/wallets/{id}/top_ups",
        &wallet_id,
        Some(json!({"amount": "50.00", "currency": "EUR"})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = call(
        &mut c,
        m,
        "POST",
        "/v1/wallets/{id}/withdrawals",
        &wallet_id,
        Some(json!({"amount": "5.00", "currency": "EUR"})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = call(
        &mut c,
        m,
        "POST",
        "/v1/wallets/{id}/withdrawals",
        &wallet_id,
        Some(json!({"amount": "500.00", "currency": "EUR"})),
    )
    .await;
    assert_eq!(status, 422, "insufficient funds");
    let (status, _) = call(
        &mut c,
        m,
        "POST",
        "/v1/wallets/{id}/top_ups",
        &wallet_id,
        Some(json!({"amount": "5.00", "currency": "USD"})),
    )
    .await;
    assert_eq!(status, 422, "currency mismatch");
    let (status, wallet_payment) = call(&mut c, m, "POST", "/v1/payments", "", Some(json!({"amount": "7.50", "currency": "EUR", "merchant_order_id": unique("order"), "method": "wallet", "wallet_id": wallet_id}))).await;
    assert_eq!(
        (status, wallet_payment["status"].as_str()),
        (201, Some("succeeded"))
    );
    let (_, txs) = call(
        &mut c,
        m,
        "GET",
        "/v1/wallets/{id}/transactions",
        &wallet_id,
        None,
    )
    .await;
    assert_eq!(txs["data"].as_array().map(Vec::len), Some(3));
    call(&mut c, m, "GET", "/v1/wallets/{id}", &wallet_id, None).await;
    let (status, _) = call(&mut c, &other, "GET", "/v1/wallets/{id}", &wallet_id, None).await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &mut c,
        &other,
        "GET",
        "/v1/wallets/{id}/transactions",
        &wallet_id,
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &mut c,
        &other,
        "POST",
        "/v1/wallets/{id}/top_ups",
        &wallet_id,
        Some(json!({"amount": "1.00", "currency": "EUR"})),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &mut c,
        m,
        "POST",
        "/v1/wallets",
        "",
        Some(json!({"currency": "XXX"})),
    )
    .await;
    assert_eq!(status, 422);

    // Malformed and refused requests: 400, 401, 409, 413, 422.
    let not_json = m
        .send("POST", "/v1/payments", Some(b"not json".to_vec()), None)
        .await
        .unwrap();
    assert_error(&not_json, 400, "invalid_json");
    c.check("POST", "/v1/payments", &not_json);
    let unknown = m
        .send(
            "POST",
            "/v1/wallets",
            Some(br#"{"currency":"EUR","colour":"red"}"#.to_vec()),
            None,
        )
        .await
        .unwrap();
    assert_error(&unknown, 400, "unknown_field");
    c.check("POST", "/v1/wallets", &unknown);
    let mut headers = m.signed_headers(unix_now(), "GET", "/v1/payments", b"");
    headers[2].1 = "v1=00".into();
    let unsigned = m
        .send_raw("GET", "/v1/payments", &headers, Vec::new())
        .await
        .unwrap();
    assert_error(&unsigned, 401, "invalid_signature");
    c.check("GET", "/v1/payments", &unsigned);
    let stale = m.signed_headers(unix_now() - 3_600, "GET", "/v1/events", b"");
    let stale = m
        .send_raw("GET", "/v1/events", &stale, Vec::new())
        .await
        .unwrap();
    assert_error(&stale, 401, "timestamp_out_of_window");
    c.check("GET", "/v1/events", &stale);
    let mut duplicate = usd_charge(CARD_SUCCEEDS);
    duplicate["merchant_order_id"] = paid["merchant_order_id"].clone();
    let (status, _) = call(&mut c, m, "POST", "/v1/payments", "", Some(duplicate)).await;
    assert_eq!(status, 409);
    let (status, _) = call(
        &mut c,
        m,
        "POST",
        "/v1/payments",
        "",
        Some(charge_body(&unique("order"), "1.234", "USD", CARD_SUCCEEDS)),
    )
    .await;
    assert_eq!(status, 422);
    let huge = json!({"currency": "EUR", "customer_ref": "x".repeat(100 * 1024)})
        .to_string()
        .into_bytes();
    let headers = m.signed_headers(unix_now(), "POST", "/v1/wallets", &huge);
    let too_large = send_raw_http(kassa.base_url(), "POST", "/v1/wallets", &headers, huge)
        .await
        .unwrap();
    assert_error(&too_large, 413, "body_too_large");
    c.check("POST", "/v1/wallets", &too_large);

    // 429: the qr_wallet channel's rate limit; 503: a channel that is not there.
    let mut limited = None;
    for _ in 0..20 {
        let qr = json!({"amount": "10.00", "currency": "CNY", "merchant_order_id": unique("order"), "method": "qr_wallet"});
        let response = m.post_json("/v1/payments", &qr, None).await.unwrap();
        let status = response.status;
        c.check("POST", "/v1/payments", &response);
        if status == 429 {
            limited = Some(response);
            break;
        }
    }
    let limited = limited.expect("20 qr_wallet charges at 1/s: one is 429");
    assert_error(&limited, 429, "rate_limited");
    let (status, _) = call(&mut c, m, "POST", "/v1/payments", "", Some(json!({"amount": "100.00", "currency": "EUR", "merchant_order_id": unique("order"), "method": "bank_transfer", "bank_account": {"number": "DE89370400440532013000", "holder_name": "Buyer GmbH"}}))).await;
    assert_eq!(status, 503, "bank transfers are disabled");

    // Every operation answered at least once, and every error status Kassa can be made to give.
    let doc = document();
    let answered: BTreeSet<(String, String)> = c
        .seen
        .iter()
        .map(|(m, t, _)| (m.clone(), t.clone()))
        .collect();
    let missing: Vec<_> = documented_operations(&doc)
        .difference(&answered)
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "operations the scenario never reached: {missing:?}"
    );
    let statuses: BTreeSet<u16> = c.seen.iter().map(|(_, _, s)| *s).collect();
    for status in [200, 201, 202, 400, 401, 404, 409, 413, 422, 429, 503] {
        assert!(
            statuses.contains(&status),
            "no {status} was validated: {statuses:?}"
        );
    }
}
