//! Card data hygiene: a run with every sandbox test card (successes, declines, a 3-D Secure
//! challenge, manual capture, refunds, malformed cards, debug logging) leaves no full card
//! number and no CVC in any log line, any file of the data dir (the SQLite database and its
//! WAL, the sandbox's ledger), any HTTP response, or any webhook Kassa delivered. Kassa keeps a
//! card as brand, BIN and last four digits only (docs/API.md "Card data").

use std::path::Path;

use harness::webhooks::{Reply, WebhookReceiver, always};
use harness::*;
use serde_json::{Value, json};

/// The sandbox's 3-D Secure challenge card.
const CARD_CHALLENGE: &str = "4000000000003220";
/// A Mastercard number the sandbox approves.
const CARD_MASTERCARD: &str = "5555555555554444";
/// A CVC unlikely to occur by chance next to a `cvc` key.
const CVC: &str = "731";
/// A malformed number (fails the Luhn check): must not be echoed either.
const CARD_BAD_LUHN: &str = "4242424242424241";

/// Every full number the run sends.
const NUMBERS: [&str; 6] = [
    CARD_SUCCEEDS,
    CARD_DECLINED,
    CARD_INSUFFICIENT_FUNDS,
    CARD_CHALLENGE,
    CARD_MASTERCARD,
    CARD_BAD_LUHN,
];

fn charge(number: &str, capture: &str) -> Value {
    let mut body = usd_charge(number);
    body["card"]["cvc"] = json!(CVC);
    body["capture"] = json!(capture);
    body
}

/// Where a full number or the CVC shows up in `haystack` (`where_` names it), as messages.
fn leaks(where_: &str, haystack: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(haystack);
    let mut found = Vec::new();
    for number in NUMBERS {
        // As sent, and grouped in fours as people write it.
        let grouped: Vec<&str> = number
            .as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect();
        for form in [number.to_owned(), grouped.join(" "), grouped.join("-")] {
            if text.contains(&form) {
                found.push(format!("{where_}: full card number {form}"));
            }
        }
    }
    // The CVC next to its name, in any serialisation (JSON, form, Debug, log fields).
    let lower = text.to_ascii_lowercase();
    for (at, _) in lower.match_indices("cvc") {
        let after: String = lower[at + 3..].chars().take(8).collect();
        if after.contains(CVC) {
            found.push(format!("{where_}: cvc {CVC} near byte {at}"));
        }
    }
    found
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)
        .expect("reading the data dir")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_full_card_number_or_cvc_in_logs_files_responses_or_webhooks() {
    let receiver = WebhookReceiver::start(always(Reply::Status(200))).await;
    // Debug logging: the most Kassa ever writes about a request.
    let mut kassa = Kassa::start(KassaOptions::new().env("RUST_LOG", "debug")).await;
    let credentials = kassa
        .admin()
        .create_merchant("Hygiene Ltd", Some(&receiver.url()))
        .await
        .expect("creating a merchant");
    let merchant = kassa.merchant(&credentials);
    let mut responses: Vec<(String, Response)> = Vec::new();

    for number in [
        CARD_SUCCEEDS,
        CARD_DECLINED,
        CARD_INSUFFICIENT_FUNDS,
        CARD_CHALLENGE,
        CARD_MASTERCARD,
    ] {
        let response =
            post_payment(&merchant, &charge(number, "automatic"), Some(&unique("k"))).await;
        assert_eq!(response.status, 201, "{}", response.text());
        responses.push((format!("charge {number}"), response));
    }
    // Manual capture, a refund, and reads of everything.
    let authorized = post_payment(&merchant, &charge(CARD_SUCCEEDS, "manual"), None).await;
    let payment = expect_status(&authorized, 201, "manual charge");
    let id = id_of(&payment);
    let captured = merchant
        .post_json(&format!("/v1/payments/{id}/capture"), &json!({}), None)
        .await
        .expect("capture");
    responses.push(("capture".into(), captured));
    let refund = post_refund(
        &merchant,
        &json!({"payment_id": id, "amount": "1.00"}),
        None,
    )
    .await;
    responses.push(("refund".into(), refund));
    responses.push(("manual charge".into(), authorized));
    for path in [
        format!("/v1/payments/{id}"),
        "/v1/payments".into(),
        "/v1/events".into(),
    ] {
        let read = merchant.get(&path).await.expect("read");
        responses.push((format!("GET {path}"), read));
    }
    // Refused cards: the error names the field, never the number or the CVC.
    let mut bad_luhn = charge(CARD_BAD_LUHN, "automatic");
    bad_luhn["card"]["cvc"] = json!(CVC);
    let mut bad_cvc = charge(CARD_SUCCEEDS, "automatic");
    bad_cvc["card"]["cvc"] = json!(format!("{CVC}x"));
    let mut expired = charge(CARD_SUCCEEDS, "automatic");
    expired["card"]["exp_year"] = json!(2001);
    for (what, body) in [
        ("bad luhn", bad_luhn),
        ("bad cvc", bad_cvc),
        ("expired", expired),
    ] {
        let response = post_payment(&merchant, &body, None).await;
        assert_eq!(response.status, 422, "{what}: {}", response.text());
        responses.push((what.into(), response));
    }

    // Every event delivered before looking at the webhooks.
    let events = list_all(&merchant, "/v1/events").await.len();
    assert!(events >= 6, "{events} events");
    poll_until(
        "every event delivered",
        std::time::Duration::from_secs(60),
        || async {
            let delivered = receiver.received().len();
            if delivered >= events {
                Ok(())
            } else {
                Err(format!("{delivered} of {events}"))
            }
        },
    )
    .await;
    // Stopped gracefully, so the database is as it stays on disk.
    kassa.stop().await;

    let mut found = Vec::new();
    for (what, response) in &responses {
        found.extend(leaks(
            &format!("response to {what}"),
            response.text().as_bytes(),
        ));
        assert_no_card_data(response, CARD_SUCCEEDS);
    }
    for received in receiver.received() {
        found.extend(leaks("webhook", &received.body));
    }
    let log = kassa.log_contents();
    assert!(
        log.lines().count() > 20,
        "debug logging produced the log:\n{log}"
    );
    for (n, line) in log.lines().enumerate() {
        found.extend(leaks(&format!("log line {}", n + 1), line.as_bytes()));
    }
    let data = files(&kassa.data_dir());
    assert!(
        data.iter()
            .any(|f| f.extension().is_some_and(|e| e == "db" || e == "sqlite")),
        "the data dir holds the database: {data:?}"
    );
    for file in &data {
        let bytes = std::fs::read(file).expect("reading a data file");
        found.extend(leaks(&file.display().to_string(), &bytes));
    }
    assert!(found.is_empty(), "card data leaked:\n{}", found.join("\n"));
}
