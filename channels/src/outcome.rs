//! The domain-facing types of the asynchronous channels (`qr_wallet`, `app_wallet`,
//! `bank_transfer`): a payment is created, stays [`AsyncStatus::Pending`] while the customer or
//! the bank decides, and its outcome arrives later, by callback ([`crate::inbound::decode`]) or
//! by asking ([`LookupOutcome`]).
//!
//! Each channel's client ([`crate::QrWalletChannel`], [`crate::AppWalletChannel`],
//! [`crate::BankTransferChannel`]) has the same four calls: `create` (idempotent by key),
//! `lookup` (by key; an unknown key is closed for good), `cancel` and `refund`.
//!
//! Failure codes a payment can end with: [`PAYMENT_DECLINED`] (the customer declined, or paid
//! and the wallet refused), [`ORDER_CLOSED`] (closed unpaid, by `cancel`), [`ACCOUNT_CLOSED`]
//! (the bank rejected the transfer). Refund failures use the card channel's
//! `amount_exceeds_captured`.

use bytes::Bytes;
use hyper::Method;

use crate::adapter::{ChannelAdapter, Protocol, WireRequest};
use crate::card::RefundOutcome;
use crate::error::ChannelError;
use crate::secret::Secret;

/// The customer declined the payment (or the wallet refused it).
pub const PAYMENT_DECLINED: &str = "payment_declined";
/// The order was closed unpaid.
pub const ORDER_CLOSED: &str = "order_closed";
/// The payer's bank account is closed: the bank rejected the transfer.
pub const ACCOUNT_CLOSED: &str = "account_closed";
/// `bank_transfer` has no cancel: a submitted transfer runs to its end.
pub const TRANSFER_NOT_CANCELABLE: &str = "transfer_not_cancelable";
/// A refund larger than what is left of the paid amount.
pub const AMOUNT_EXCEEDS_CAPTURED: &str = "amount_exceeds_captured";

/// How long a provider reference or an idempotency key may be before we refuse to send it.
pub(crate) const REFERENCE_LEN_MAX: usize = 255;

/// A payment to create on an asynchronous channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsyncPaymentRequest {
    /// Kassa's key for this payment (the order id); the provider deduplicates on it and it is
    /// the provider's "merchant order number" (`out_trade_no`, `end_to_end_id`).
    pub idempotency_key: String,
    /// The amount in the currency's minor units.
    pub amount_minor: i64,
    /// ISO 4217 code, upper case.
    pub currency: String,
    /// What the customer sees on the wallet's page or the bank statement.
    pub description: String,
    /// `bank_transfer` only (required there): the payer's account number (IBAN-like).
    pub payer_account: Option<Secret<String>>,
    /// `bank_transfer` only (required there): the account holder's name.
    pub payer_name: Option<String>,
}

/// Where an asynchronous payment stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AsyncStatus {
    /// Waiting for the customer (at `action_url`, the wallet's QR code or pay link) or for the
    /// bank (no action URL).
    Pending {
        /// The page the customer pays on, when there is one.
        action_url: Option<String>,
    },
    /// Paid (or settled).
    Succeeded,
    /// Over without the money: declined, closed unpaid, or rejected by the bank.
    Failed {
        /// [`PAYMENT_DECLINED`], [`ORDER_CLOSED`], [`ACCOUNT_CLOSED`], …
        code: String,
        /// A sentence fit for the merchant.
        message: String,
    },
}

/// An asynchronous payment as the provider reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsyncPayment {
    /// The provider's id for the payment; refunds name it.
    pub provider_ref: String,
    /// Kassa's key for it.
    pub idempotency_key: String,
    /// The amount in minor units.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Where it stands.
    pub status: AsyncStatus,
    /// How much of it was given back, in minor units.
    pub refunded_minor: i64,
}

/// The answer to a channel's `lookup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupOutcome {
    /// The provider has a payment under the key.
    Found(AsyncPayment),
    /// The provider had nothing under the key AND has now closed the key, so no payment with
    /// it can ever succeed: a final answer.
    NotFound,
}

/// A sentence for a failure code.
pub fn failure_message(code: &str) -> &'static str {
    match code {
        PAYMENT_DECLINED => "The customer declined the payment.",
        ORDER_CLOSED => "The order was closed before it was paid.",
        ACCOUNT_CLOSED => "The payer's bank account is closed; the transfer was rejected.",
        _ => "The payment failed.",
    }
}

/// A [`AsyncStatus::Failed`] with its message.
pub(crate) fn failed(code: String) -> AsyncStatus {
    let message = failure_message(&code).to_owned();
    AsyncStatus::Failed { code, message }
}

/// Refuses (locally, nothing sent) an adapter built for another protocol: its signatures would
/// only earn a 401.
pub(crate) fn expect_protocol(
    adapter: &ChannelAdapter,
    protocol: Protocol,
) -> Result<(), ChannelError> {
    if adapter.protocol() == protocol {
        Ok(())
    } else {
        Err(local_rejection("adapter_protocol_mismatch"))
    }
}

/// The key of a call through `adapter`, which must speak `protocol`, checked before sending.
pub(crate) fn checked_key<'a>(
    adapter: &ChannelAdapter,
    protocol: Protocol,
    key: &'a str,
) -> Result<&'a str, ChannelError> {
    expect_protocol(adapter, protocol)?;
    checked_reference(key, "invalid_idempotency_key")
}

/// A provider's wire report of one payment (a trade, a transaction, a transfer).
pub(crate) trait Reported {
    /// What an answer about another key is, in the error.
    const ANOTHER_KEY: &'static str;

    /// Kassa's key the report is about.
    fn key(&self) -> &str;

    /// The payment it reports, if the report holds together.
    fn into_payment(self) -> Result<AsyncPayment, ChannelError>;
}

/// The reported payment, if it is the one asked about under `key`.
pub(crate) fn own<R: Reported>(report: R, key: &str) -> Result<AsyncPayment, ChannelError> {
    if report.key() != key {
        return Err(inconsistent(R::ANOTHER_KEY));
    }
    report.into_payment()
}

/// A query's answer (`found`, and the report when found) about `key`.
pub(crate) fn lookup_outcome<R: Reported>(
    found: bool,
    report: Option<R>,
    key: &str,
) -> Result<LookupOutcome, ChannelError> {
    match (found, report) {
        (true, Some(report)) => Ok(LookupOutcome::Found(own(report, key)?)),
        (false, None) => Ok(LookupOutcome::NotFound),
        (true, None) | (false, Some(_)) => Err(inconsistent("query answer")),
    }
}

/// A refund's answer: succeeded under the provider's `refund_ref`, or failed with its code.
pub(crate) fn refund_outcome(
    succeeded: bool,
    refund_ref: String,
    failure_code: Option<String>,
) -> RefundOutcome {
    if succeeded {
        RefundOutcome::Succeeded {
            provider_ref: refund_ref,
        }
    } else {
        RefundOutcome::Failed {
            code: failure_code.unwrap_or_else(|| String::from("unknown")),
        }
    }
}

/// A refusal decided before anything was sent: never retried, and nothing happened.
pub(crate) fn local_rejection(code: &str) -> ChannelError {
    ChannelError::Rejected {
        status: 400,
        code: code.to_owned(),
    }
}

/// A key or a reference must be 1 to 255 visible ASCII characters (the providers' rule), checked
/// before sending so a refusal costs nothing.
pub(crate) fn checked_reference<'a>(value: &'a str, code: &str) -> Result<&'a str, ChannelError> {
    let visible = value.bytes().all(|b| b.is_ascii_graphic());
    if visible && !value.is_empty() && value.len() <= REFERENCE_LEN_MAX {
        Ok(value)
    } else {
        Err(local_rejection(code))
    }
}

/// Sends a JSON body (`POST`) or nothing (`GET`) through the adapter; the 2xx answer's body.
pub(crate) async fn send_json<T: serde::Serialize>(
    adapter: &ChannelAdapter,
    method: Method,
    path: String,
    body: Option<&T>,
) -> Result<Bytes, ChannelError> {
    let body = match body {
        // Serialising these plain structs (strings and integers) cannot fail; if it ever did,
        // nothing was sent, so a `Rejected` says "do not retry" truthfully.
        Some(body) => Bytes::from(
            serde_json::to_vec(body).map_err(|_| local_rejection("unserialisable_request"))?,
        ),
        None => Bytes::new(),
    };
    let request = WireRequest { method, path, body };
    Ok(adapter.send(request).await?.body)
}

/// Sends a form body (`POST`) through the adapter, which signs it; the 2xx answer's body.
pub(crate) async fn send_form(
    adapter: &ChannelAdapter,
    path: &str,
    params: &[(&str, &str)],
) -> Result<Bytes, ChannelError> {
    // The serializer is not `Send` (it may hold an encoding override), so it is gone before
    // the `.await`: the call's future stays `Send`.
    let body = {
        let mut form = form_urlencoded::Serializer::new(String::new());
        for (name, value) in params {
            form.append_pair(name, value);
        }
        form.finish()
    };
    let request = WireRequest {
        method: Method::POST,
        path: path.to_owned(),
        body: Bytes::from(body),
    };
    Ok(adapter.send(request).await?.body)
}

/// Parses a 2xx JSON body, as the card channel does: the error names the expected shape and
/// the position, never the body's contents.
pub(crate) use crate::card::transformers::parse;

/// A provider answer that contradicts itself or the request: the provider may have acted, so
/// the outcome is unknown.
pub(crate) fn inconsistent(what: &str) -> ChannelError {
    ChannelError::Unreadable(format!("the provider's {what} is inconsistent"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payer_account_never_shows_in_debug() {
        let request = AsyncPaymentRequest {
            idempotency_key: "pay_1".into(),
            amount_minor: 100,
            currency: "EUR".into(),
            description: "invoice 7".into(),
            payer_account: Some(Secret::new("DE89370400440532013000".into())),
            payer_name: Some("Ada Lovelace".into()),
        };
        let printed = format!("{request:?}");
        assert!(!printed.contains("DE89370400440532013000"), "{printed}");
        assert!(!printed.contains("532013000"), "{printed}");
    }

    #[test]
    fn references_are_checked_before_sending() {
        assert_eq!(checked_reference("pay_1", "bad"), Ok("pay_1"));
        for bad in ["", "has space", "tab\t", "é"] {
            assert!(checked_reference(bad, "bad").is_err(), "{bad:?}");
        }
        assert!(checked_reference(&"k".repeat(256), "bad").is_err());
    }
}
