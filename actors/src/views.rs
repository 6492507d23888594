//! The API objects merchants see (docs/API.md), built from an order's state.
//!
//! The same JSON is stored as the order's projection row, so `GET` and list answers come
//! straight from the store, byte for byte what the order actor last made durable.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::payment::{CaptureMode, Method, Payment, Refund, RefundReason};

#[derive(Serialize)]
struct CardView<'a> {
    brand: &'a str,
    bin: &'a str,
    last4: &'a str,
    exp_month: u8,
    exp_year: u16,
}

#[derive(Serialize)]
struct BankAccountView<'a> {
    last4: &'a str,
    holder_name: &'a str,
}

/// What the merchant must have the customer do next: authenticate (3-D Secure), or pay by
/// scanning a QR code or in the wallet app.
#[derive(Serialize)]
struct NextAction<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    url: &'a str,
}

#[derive(Serialize)]
struct PaymentView<'a> {
    id: &'a str,
    object: &'static str,
    merchant_order_id: &'a str,
    amount: String,
    currency: &'static str,
    method: &'static str,
    status: &'static str,
    amount_authorized: String,
    amount_captured: String,
    amount_refunded: String,
    capture: CaptureMode,
    card: Option<CardView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bank_account: Option<BankAccountView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wallet_id: Option<&'a str>,
    /// Canceled by a reversal.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    reversed: bool,
    failure_code: Option<&'a str>,
    failure_message: Option<&'a str>,
    next_action: Option<NextAction<'a>>,
    description: Option<&'a str>,
    created: i64,
    updated: i64,
    metadata: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct RefundView<'a> {
    id: &'a str,
    object: &'static str,
    payment_id: &'a str,
    amount: String,
    currency: &'static str,
    status: &'static str,
    reason: Option<RefundReason>,
    failure_code: Option<&'a str>,
    created: i64,
    metadata: &'a BTreeMap<String, String>,
}

fn unix_s(ms: i64) -> i64 {
    ms.div_euclid(1_000)
}

fn to_json(value: &impl Serialize) -> String {
    // Plain structs of strings and integers always serialise.
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_string())
}

pub fn payment_json(p: &Payment) -> String {
    let failure = p.failure.as_ref();
    to_json(&PaymentView {
        id: &p.id,
        object: "payment",
        merchant_order_id: &p.merchant_order_id,
        amount: p.amount.to_string(),
        currency: p.currency().code(),
        method: p.method.as_str(),
        status: p.status.as_str(),
        amount_authorized: p.amount_authorized.to_string(),
        amount_captured: p.amount_captured.to_string(),
        amount_refunded: p.amount_refunded.to_string(),
        capture: p.capture,
        card: p.card.as_ref().map(|card| CardView {
            brand: &card.brand,
            bin: &card.bin,
            last4: &card.last4,
            exp_month: card.exp_month,
            exp_year: card.exp_year,
        }),
        bank_account: p.bank_account.as_ref().map(|account| BankAccountView {
            last4: &account.last4,
            holder_name: &account.holder_name,
        }),
        wallet_id: p.wallet_id.as_deref(),
        reversed: p.reversed,
        failure_code: failure.map(|f| f.code.as_str()),
        failure_message: failure.map(|f| f.message.as_str()),
        next_action: p.next_action_url.as_deref().map(|url| NextAction {
            kind: match p.method {
                Method::QrWallet => "display_qr_code",
                Method::AppWallet => "open_wallet_app",
                Method::Card | Method::BankTransfer | Method::Wallet => "redirect_to_url",
            },
            url,
        }),
        description: p.description.as_deref(),
        created: unix_s(p.created_ms),
        updated: unix_s(p.updated_ms),
        metadata: &p.metadata,
    })
}

pub fn refund_json(p: &Payment, r: &Refund) -> String {
    to_json(&RefundView {
        id: &r.id,
        object: "refund",
        payment_id: &p.id,
        amount: r.amount.to_string(),
        currency: p.currency().code(),
        status: r.status.as_str(),
        reason: r.reason,
        failure_code: r.failure.as_ref().map(|f| f.code.as_str()),
        created: unix_s(r.created_ms),
        metadata: &r.metadata,
    })
}
