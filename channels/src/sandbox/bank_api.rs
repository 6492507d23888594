//! The `bank_transfer` protocol's endpoints (B2B transfers), the provider's side of
//! `crate::bank_transfer`.
//!
//! Test amounts: the bank always decides by itself, after the settle delay. Minor units ending
//! in `13` are `rejected` with `reason_code: account_closed`; every other amount is `settled`.
//! The debtor account must be a valid IBAN (2 letters, 2 check digits, up to 30 letters or
//! digits, ISO 13616 mod-97 check), e.g. `DE89370400440532013000`; it is never stored or
//! echoed (only hashed into the request's fingerprint).
//!
//! JSON both ways, signed with the `Bank-*` headers (`crate::bank_transfer::signature`);
//! errors are `{"error":{"code","message"}}`:
//!
//! | request                                                              | answer |
//! |----------------------------------------------------------------------|--------|
//! | `POST /bank/v1/transfers` `{"end_to_end_id","amount_minor","currency","debtor_account","debtor_name","remittance_info"}` | transfer, `accepted` |
//! | `POST /bank/v1/transfers/query` `{"end_to_end_id"}`                  | `{"found":true,"transfer":…}`, or `{"found":false}` and the key is closed |
//! | `POST /bank/v1/returns` `{"return_id","transfer_id","amount_minor","currency"}` | `completed`, or `refused` with `amount_exceeds_captured` |
//!
//! There is no cancel: a submitted transfer runs to its end. A transfer:
//! `{"transfer_id","end_to_end_id","status":"accepted"|"settled"|"rejected","reason_code"?,
//! "amount_minor","currency","returned_minor","created"}`.
//!
//! Callback (a decided transfer), when the behaviour's `callback_rate_percent` draw lets it
//! through (default 100), `POST {callback_url}` with the `Bank-*` headers (over `POST` and the
//! callback URL's path) and `{"event_id","event_type":"transfer.settled"|"transfer.rejected",
//! "transfer":…,"sent_at"}`. Any 2xx acknowledges it.

use std::sync::Arc;

use bytes::Bytes;
use hyper::Method;
use serde::{Deserialize, Serialize};

use super::State;
use super::async_ledger::{PaymentRecord, PaymentStatus, RefundStatus};
use super::callbacks::{Envelope, Rendered};
use super::channels::Channel;
use super::routes::{ApiError, not_found};
use super::settlement::{
    self, Creation, RefundAsk, check_amount, check_currency, check_description, check_key,
    check_optional_currency, json, parse_json,
};
use crate::bank_transfer::signature as bank_signature;
use crate::secret::Secret;

const CHANNEL: Channel = Channel::BankTransfer;
/// Why a test-amount transfer is rejected.
const REJECTED: &str = "account_closed";
/// The longest debtor name (ISO 20022's limit).
const DEBTOR_NAME_LEN_MAX: usize = 140;

pub(crate) async fn route(
    state: &Arc<State>,
    method: &Method,
    path: &str,
    body: &Bytes,
) -> Result<Bytes, ApiError> {
    match (method, path) {
        (&Method::POST, "/bank/v1/transfers") => submit(state, body).await,
        (&Method::POST, "/bank/v1/transfers/query") => query(state, body).await,
        (&Method::POST, "/bank/v1/returns") => give_back(state, body).await,
        _ => Err(not_found()),
    }
}

/// `POST /bank/v1/transfers`. The account is a [`Secret`] so no `Debug` can print it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferRequest {
    end_to_end_id: String,
    amount_minor: i64,
    currency: String,
    debtor_account: Secret<String>,
    debtor_name: String,
    #[serde(default)]
    remittance_info: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryRequest {
    end_to_end_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReturnRequest {
    return_id: String,
    transfer_id: String,
    amount_minor: i64,
    #[serde(default)]
    currency: Option<String>,
}

async fn submit(state: &Arc<State>, body: &Bytes) -> Result<Bytes, ApiError> {
    let request: TransferRequest = parse_json(body)?;
    check_key(&request.end_to_end_id)?;
    check_amount(request.amount_minor)?;
    check_currency(&request.currency)?;
    check_description(&request.remittance_info)?;
    if !iban_valid(request.debtor_account.expose()) {
        return Err(ApiError::bad_request(
            "invalid_account",
            "the debtor account is not a valid IBAN",
        ));
    }
    let name = request.debtor_name.trim();
    if name.is_empty() || name.len() > DEBTOR_NAME_LEN_MAX || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_debtor_name",
            "the debtor name must be 1 to 140 bytes without control characters",
        ));
    }
    let creation = Creation {
        channel: CHANNEL,
        key: request.end_to_end_id,
        amount_minor: request.amount_minor,
        currency: request.currency,
        description: request.remittance_info,
        payer_account: Some(request.debtor_account),
        payer_name: Some(request.debtor_name),
        test_failure: REJECTED,
    };
    let record = settlement::create(state, creation).await?;
    json(&TransferView::from(&record))
}

async fn query(state: &Arc<State>, body: &Bytes) -> Result<Bytes, ApiError> {
    let request: QueryRequest = parse_json(body)?;
    check_key(&request.end_to_end_id)?;
    let found = settlement::lookup(state, CHANNEL, request.end_to_end_id).await?;
    json(&QueryView {
        found: found.is_some(),
        transfer: found.as_ref().map(TransferView::from),
    })
}

async fn give_back(state: &Arc<State>, body: &Bytes) -> Result<Bytes, ApiError> {
    let request: ReturnRequest = parse_json(body)?;
    check_key(&request.return_id)?;
    check_amount(request.amount_minor)?;
    check_optional_currency(request.currency.as_deref())?;
    let ask = RefundAsk {
        channel: CHANNEL,
        key: request.return_id,
        provider_ref: request.transfer_id,
        amount_minor: request.amount_minor,
        currency: request.currency,
    };
    let refund = settlement::refund(state, ask).await?;
    json(&ReturnView {
        return_ref: &refund.refund_ref,
        return_id: &refund.idempotency_key,
        transfer_id: &refund.provider_ref,
        status: match refund.status {
            RefundStatus::Succeeded => "completed",
            RefundStatus::Failed => "refused",
        },
        reason_code: refund.failure_code.as_deref(),
        amount_minor: refund.amount_minor,
    })
}

/// ISO 13616: 2 upper-case letters, 2 check digits, 11 to 30 upper-case letters or digits, and
/// the number (country code and check digits moved to the end, letters as 10–35) mod 97 is 1.
fn iban_valid(iban: &str) -> bool {
    let bytes = iban.as_bytes();
    let shaped = (15..=34).contains(&bytes.len())
        && bytes[..2].iter().all(u8::is_ascii_uppercase)
        && bytes[2..4].iter().all(u8::is_ascii_digit)
        && bytes[4..]
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if !shaped {
        return false;
    }
    let mut remainder: u32 = 0;
    for &byte in bytes[4..].iter().chain(&bytes[..4]) {
        let value = if byte.is_ascii_digit() {
            u32::from(byte - b'0')
        } else {
            u32::from(byte - b'A') + 10
        };
        remainder = if value >= 10 {
            (remainder * 100 + value) % 97
        } else {
            (remainder * 10 + value) % 97
        };
    }
    remainder == 1
}

/// A transfer as the bank shows it.
#[derive(Serialize)]
struct TransferView<'a> {
    transfer_id: &'a str,
    end_to_end_id: &'a str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason_code: Option<&'a str>,
    amount_minor: i64,
    currency: &'a str,
    returned_minor: i64,
    created: i64,
}

impl<'a> From<&'a PaymentRecord> for TransferView<'a> {
    fn from(record: &'a PaymentRecord) -> Self {
        Self {
            transfer_id: &record.provider_ref,
            end_to_end_id: &record.idempotency_key,
            status: match record.status {
                PaymentStatus::Pending => "accepted",
                PaymentStatus::Succeeded => "settled",
                PaymentStatus::Failed => "rejected",
            },
            reason_code: record.failure_code.as_deref(),
            amount_minor: record.amount_minor,
            currency: &record.currency,
            returned_minor: record.refunded_minor,
            created: record.created_unix_s,
        }
    }
}

#[derive(Serialize)]
struct QueryView<'a> {
    found: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    transfer: Option<TransferView<'a>>,
}

#[derive(Serialize)]
struct ReturnView<'a> {
    return_ref: &'a str,
    return_id: &'a str,
    transfer_id: &'a str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason_code: Option<&'a str>,
    amount_minor: i64,
}

/// The `transfer.settled` / `transfer.rejected` callback of a decided transfer.
pub(crate) fn envelope(record: PaymentRecord, event_id: Arc<str>) -> Arc<dyn Envelope> {
    Arc::new(TransferEvent { record, event_id })
}

struct TransferEvent {
    record: PaymentRecord,
    event_id: Arc<str>,
}

#[derive(Serialize)]
struct EventView<'a> {
    event_id: &'a str,
    event_type: &'static str,
    transfer: TransferView<'a>,
    sent_at: u64,
}

impl Envelope for TransferEvent {
    fn render(&self, state: &State, path: &str, now_s: u64) -> Result<Rendered, &'static str> {
        let event_type = match self.record.status {
            PaymentStatus::Succeeded => "transfer.settled",
            PaymentStatus::Failed => "transfer.rejected",
            PaymentStatus::Pending => "transfer.accepted",
        };
        let body = serde_json::to_vec(&EventView {
            event_id: &self.event_id,
            event_type,
            transfer: TransferView::from(&self.record),
            sent_at: now_s,
        })
        .map_err(|_| "the event could not be serialised")?;
        let key = state.async_channels.keys.bank_sign.expose();
        let headers = bank_signature::signed_headers(key, now_s, "POST", path, &body)
            .map_err(|_| "unprintable signature")?;
        Ok(Rendered {
            content_type: "application/json",
            headers,
            body: Bytes::from(body),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ibans_are_checked_by_shape_and_mod_97() {
        for valid in [
            "DE89370400440532013000",
            "GB82WEST12345698765432",
            "NL91ABNA0417164300",
            "FR1420041010050500013M02606",
        ] {
            assert!(iban_valid(valid), "{valid}");
        }
        for invalid in [
            "DE89370400440532013001",
            "de89370400440532013000",
            "DE8937040044053201300",
            "DE89 3704 0044 0532 0130 00",
            "",
            "DE",
            "1234567890123456",
        ] {
            assert!(!iban_valid(invalid), "{invalid}");
        }
    }

    #[test]
    fn the_account_never_shows_in_debug() {
        let request: TransferRequest = serde_json::from_str(
            r#"{"end_to_end_id":"k","amount_minor":1,"currency":"EUR",
            "debtor_account":"DE89370400440532013000","debtor_name":"Ada"}"#,
        )
        .expect("a transfer request");
        assert!(!format!("{request:?}").contains("370400440532013000"));
    }
}
