//! Inbound callbacks of the asynchronous channels: the one entry point behind Kassa's
//! `POST /callbacks/{channel}` for `qr_wallet`, `app_wallet` and `bank_transfer`.
//!
//! [`decode`] verifies the channel's signature FIRST (and, for `app_wallet`, opens the
//! encrypted resource), then reads the payment the callback reports. Its errors never quote the
//! body. [`acknowledgement`] is what Kassa answers once the report is safely taken; a provider
//! that does not get it sends the callback again (reports repeat, and may come late or out of
//! order, so the receiver applies them idempotently).
//!
//! | channel         | body                                   | signature                         | answer                |
//! |-----------------|----------------------------------------|-----------------------------------|-----------------------|
//! | `qr_wallet`     | form: the trade's fields, `notify_type=trade_status_sync` | `sign` parameter over the sorted form | `success` (text/plain) |
//! | `app_wallet`    | JSON event, `resource` AES-256-GCM-sealed transaction | `Wechatpay-*` headers over `POST` + `path` | `{"code":"SUCCESS"}` |
//! | `bank_transfer` | JSON event `transfer.settled` / `transfer.rejected` | `Bank-*` headers over `POST` + `path` | `{"received":true}` |
//!
//! `path` is the path the callback was received at, with its query when it has one (the
//! provider signs its callback URL's path and query). Keys are derived from the channel's
//! `api_secret` ([`crate::signing::derive_key`]).

use hyper::HeaderMap;

use crate::app_wallet::signature::{self as app_signature, AEAD_ALGORITHM, AeadError};
use crate::app_wallet::transformers::{Notification, Transaction};
use crate::bank_transfer::signature as bank_signature;
use crate::bank_transfer::transformers::Event;
use crate::outcome::{AsyncPayment, Reported};
use crate::qr_wallet::signature as qr_signature;
use crate::qr_wallet::transformers::Trade;
use crate::signing::SignatureError;

/// The channels [`decode`] handles.
pub const ASYNC_CHANNELS: &[&str] = &["qr_wallet", "app_wallet", "bank_transfer"];

/// `qr_wallet`'s callback kind.
pub const QR_NOTIFY_TYPE: &str = "trade_status_sync";
/// The prefix of `app_wallet`'s transaction event types (`TRANSACTION.SUCCESS`, …).
pub const APP_EVENT_PREFIX: &str = "TRANSACTION.";
/// `bank_transfer`'s event types.
pub const BANK_EVENT_TYPES: &[&str] = &["transfer.settled", "transfer.rejected"];

/// Why a callback was refused. Nothing in it comes from the callback's body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    /// The channel is not one of [`ASYNC_CHANNELS`].
    #[error("no asynchronous channel has this name")]
    UnknownChannel,
    /// The signature is missing, malformed, stale or wrong.
    #[error("callback signature: {0}")]
    Signature(#[from] SignatureError),
    /// `app_wallet`: the resource does not open (wrong key, or altered).
    #[error("callback resource: {0}")]
    Decrypt(#[from] AeadError),
    /// Signed, but not a payment report this decoder understands.
    #[error("the callback is not a payment report: {0}")]
    Unreadable(String),
    /// Signed, but of an event type this decoder does not handle.
    #[error("the callback's event type is not handled")]
    UnknownEvent,
}

impl InboundError {
    /// Whether the callback is not authentic: its signature is missing, malformed, stale or
    /// wrong, or (`app_wallet`) its sealed resource does not open, which the AEAD tag makes an
    /// authentication failure too. Such a callback deserves a 401, not a "malformed body".
    pub fn is_signature(&self) -> bool {
        match self {
            InboundError::Signature(_) | InboundError::Decrypt(_) => true,
            InboundError::UnknownChannel
            | InboundError::Unreadable(_)
            | InboundError::UnknownEvent => false,
        }
    }
}

/// Verifies and decodes one callback of `channel` received at `path`, at time `now_s`.
pub fn decode(
    channel: &str,
    api_secret: &[u8],
    headers: &HeaderMap,
    path: &str,
    body: &[u8],
    now_s: u64,
) -> Result<AsyncPayment, InboundError> {
    match channel {
        "qr_wallet" => decode_qr(api_secret, body, now_s),
        "app_wallet" => decode_app(api_secret, headers, path, body, now_s),
        "bank_transfer" => decode_bank(api_secret, headers, path, body, now_s),
        _ => Err(InboundError::UnknownChannel),
    }
}

/// The content type and body Kassa answers a callback of `channel` with, once it took it.
pub fn acknowledgement(channel: &str) -> (&'static str, &'static [u8]) {
    match channel {
        "qr_wallet" => ("text/plain", b"success"),
        "app_wallet" => ("application/json", br#"{"code":"SUCCESS"}"#),
        _ => ("application/json", br#"{"received":true}"#),
    }
}

fn decode_qr(api_secret: &[u8], body: &[u8], now_s: u64) -> Result<AsyncPayment, InboundError> {
    let key = qr_signature::signing_key(api_secret);
    let params = qr_signature::verify_form(&key, body, now_s)?;
    if params.get("notify_type").map(String::as_str) != Some(QR_NOTIFY_TYPE) {
        return Err(InboundError::UnknownEvent);
    }
    reported(Trade::from_params(&params).map_err(InboundError::Unreadable)?)
}

fn decode_app(
    api_secret: &[u8],
    headers: &HeaderMap,
    path: &str,
    body: &[u8],
    now_s: u64,
) -> Result<AsyncPayment, InboundError> {
    let key = app_signature::signing_key(api_secret);
    app_signature::verify(&key, headers, "POST", path, body, now_s)?;
    let notification: Notification = json(body, "event")?;
    if !notification.event_type.starts_with(APP_EVENT_PREFIX) {
        return Err(InboundError::UnknownEvent);
    }
    let resource = notification.resource;
    if resource.algorithm != AEAD_ALGORITHM {
        return Err(InboundError::Unreadable(
            "the resource's algorithm is not AEAD_AES_256_GCM".into(),
        ));
    }
    let plaintext = app_signature::open(
        &app_signature::aead_key(api_secret),
        &resource.nonce,
        &resource.associated_data,
        &resource.ciphertext,
    )?;
    reported(json::<Transaction>(&plaintext, "resource")?)
}

fn decode_bank(
    api_secret: &[u8],
    headers: &HeaderMap,
    path: &str,
    body: &[u8],
    now_s: u64,
) -> Result<AsyncPayment, InboundError> {
    let key = bank_signature::signing_key(api_secret);
    bank_signature::verify(&key, headers, "POST", path, body, now_s)?;
    let event: Event = json(body, "event")?;
    if !BANK_EVENT_TYPES.contains(&event.event_type.as_str()) {
        return Err(InboundError::UnknownEvent);
    }
    reported(event.transfer)
}

/// The payment a signed report holds; a report that does not hold together is unreadable.
fn reported<R: Reported>(report: R) -> Result<AsyncPayment, InboundError> {
    report
        .into_payment()
        .map_err(|error| InboundError::Unreadable(error.to_string()))
}

/// Parses JSON; the error names the part and the position, never the content.
fn json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, InboundError> {
    serde_json::from_slice(bytes).map_err(|error| {
        InboundError::Unreadable(format!(
            "the {what} at line {} column {}: {:?}",
            error.line(),
            error.column(),
            error.classify()
        ))
    })
}

#[cfg(test)]
mod tests;
