//! Reads for the verify step: a signed GET with bounded retries, cursor pagination over
//! `/v1/payments` and `/v1/events` (`limit` + `starting_after`, newest first, `has_more`), and
//! money strings as integers.

use std::time::Duration;

use kassa_client::MerchantClient;
use serde_json::Value;

/// Attempts of one verify GET when Kassa sheds (429/503) or the connection fails.
const GET_ATTEMPTS_MAX: u32 = 5;
/// Pause between those attempts.
const GET_RETRY_DELAY_MS: u64 = 200;
/// Objects per list page (the API's maximum).
pub const LIST_PAGE_LIMIT: u32 = 100;
/// Pages read per list at most (10 million objects).
const LIST_PAGES_MAX: u32 = 100_000;

/// A signed GET's status and JSON body; retried on shedding, 5xx and transport errors.
pub async fn get_json(client: &MerchantClient, path: &str) -> Result<(u16, Value), String> {
    let mut last = String::new();
    for attempt in 0..GET_ATTEMPTS_MAX {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(GET_RETRY_DELAY_MS)).await;
        }
        match client.get(path).await {
            Ok(response) if response.status == 429 || response.status >= 500 => {
                last = format!("GET {path}: {} {}", response.status, response.text());
            }
            Ok(response) => {
                let body = response.json().unwrap_or(Value::Null);
                return Ok((response.status, body));
            }
            Err(error) => last = error.to_string(),
        }
    }
    Err(last)
}

/// Every object of a list endpoint (`/v1/payments`, `/v1/events`), following `has_more`.
pub async fn list_all(client: &MerchantClient, path: &str) -> Result<Vec<Value>, String> {
    let mut objects = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..LIST_PAGES_MAX {
        let target = match &after {
            Some(id) => format!("{path}?limit={LIST_PAGE_LIMIT}&starting_after={id}"),
            None => format!("{path}?limit={LIST_PAGE_LIMIT}"),
        };
        let (status, body) = get_json(client, &target).await?;
        if status != 200 {
            return Err(format!("GET {target}: {status} {body}"));
        }
        let Some(Value::Array(page)) = body.get("data").cloned() else {
            return Err(format!("GET {target}: no data array"));
        };
        let has_more = body.get("has_more").and_then(Value::as_bool) == Some(true);
        after = page
            .last()
            .and_then(|last| last.get("id"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        objects.extend(page);
        if !has_more || after.is_none() {
            return Ok(objects);
        }
    }
    Err(format!("{path}: more than {LIST_PAGES_MAX} pages"))
}

/// `"10.00"` → 10000 (thousandths, so every currency exponent up to 3 compares exactly).
pub fn money_thousandths(text: &str) -> Option<i64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let fraction: i64 = format!("{fraction:0<3}").parse().ok()?;
    whole.checked_mul(1000)?.checked_add(fraction)
}

/// A string field of a JSON object, or "".
pub fn str_field<'a>(object: &'a Value, name: &str) -> &'a str {
    object.get(name).and_then(Value::as_str).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_parses_to_thousandths() {
        assert_eq!(money_thousandths("10.00"), Some(10_000));
        assert_eq!(money_thousandths("3"), Some(3_000));
        assert_eq!(money_thousandths("1.250"), Some(1_250));
        assert_eq!(money_thousandths("1.2345"), None);
        assert_eq!(money_thousandths("x"), None);
    }
}
