//! What an order actor needs from a payment channel, and the bridges to each channel.
//!
//! The order actor only knows [`ChannelPort`]: a handful of calls, each keyed by an
//! idempotency key that Kassa derives from the order (so a re-drive after a crash can never
//! act twice), each answering with a fact or with [`CallError::Unknown`]. Rate limits,
//! retries, timeouts and bulkheads live once, in `kassa_channels::adapter`, under the bridges.
//!
//! [`ChannelPorts`] holds one port per payment method; an order asks it for its method's port
//! on every call. The bridges:
//!
//! * `card.rs`: the card channel, with the pre-authorisation family (capture, void,
//!   complete_revert, reversal);
//! * `async_wallets.rs`: the channels whose customer pays, or whose bank settles, after the
//!   order exists (`qr_wallet`, `app_wallet`, `bank_transfer`);
//! * `wallet.rs`: Kassa's own stored-value wallets, debited and credited in the store.

mod async_wallets;
mod card;
mod wallet;

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use kassa_channels::card::CardData;
use kassa_channels::error::ChannelError;
use kassa_channels::{ChannelAdapter, Secret};

pub use self::async_wallets::{AsyncPort, AsyncProtocol, from_async};
pub use self::card::{CardPort, from_card};
pub use self::wallet::WalletPort;
use crate::money::Money;
use crate::payment::{ChargeOutcome, Failure, Method};

/// What the customer pays with, as far as the channel needs it. Card data and account numbers
/// travel here, beside the order, never inside it.
#[derive(Debug)]
pub enum Instrument {
    Card(CardData),
    BankAccount {
        number: Secret<String>,
        holder_name: String,
    },
    /// The customer pays at the provider (QR code, wallet app), or Kassa debits its own wallet.
    Nothing,
}

/// A charge to send: the order id is the channel's idempotency key.
#[derive(Debug)]
pub struct ChargeCall {
    pub order_id: String,
    pub merchant_id: String,
    pub amount: Money,
    pub capture: bool,
    pub instrument: Instrument,
    /// What the customer sees at the provider (a QR payment's subject).
    pub description: String,
    /// The stored-value wallet to debit (`method: wallet`).
    pub wallet_id: Option<String>,
    /// The room the channel made for this charge before the order existed, if any.
    pub admission: Option<Admission>,
}

/// Room a channel made for one new charge (its rate permit), taken before the order exists so
/// that a busy or broken channel is answered 429/503 with nothing created.
#[derive(Debug)]
pub struct Admission(ChannelAdapter);

impl Admission {
    pub fn new(admitted: ChannelAdapter) -> Admission {
        Admission(admitted)
    }

    fn into_adapter(self) -> ChannelAdapter {
        self.0
    }
}

/// A refund to send: the refund id is the channel's idempotency key.
#[derive(Clone, Debug)]
pub struct RefundCall {
    pub key: String,
    pub merchant_id: String,
    /// The provider's reference of the payment being refunded.
    pub provider_ref: String,
    pub amount: Money,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    /// The channel definitively refused the operation; nothing happened there.
    Refused(Failure),
    /// No usable answer: the channel may or may not have acted. Ask again with the same key.
    Unknown(String),
}

pub type CallResult<T> = BoxFuture<'static, Result<T, CallError>>;

fn not_supported<T: Send + 'static>(what: &str) -> CallResult<T> {
    let failure = Failure::new(
        "operation_unsupported",
        format!("the payment channel does not support {what}"),
    );
    Box::pin(async move { Err(CallError::Refused(failure)) })
}

pub trait ChannelPort: Send + Sync + 'static {
    fn charge(&self, call: ChargeCall) -> CallResult<ChargeOutcome>;
    /// Turns "what became of the charge under this key?" into a fact; blocks the key if the
    /// channel never saw it.
    fn resolve(&self, order_id: String) -> CallResult<ChargeOutcome>;
    /// Returns the provider's reference for the capture.
    fn capture(&self, key: String, provider_ref: String, amount: Money) -> CallResult<String> {
        let _ = (key, provider_ref, amount);
        not_supported("captures")
    }
    /// Voids an authorisation, or closes a payment the customer has not made yet.
    fn void(&self, key: String, order_id: String, provider_ref: String) -> CallResult<()>;
    /// Returns the provider's reference for the refund.
    fn refund(&self, call: RefundCall) -> CallResult<String>;
    /// `complete_revert`: undoes a pre-authorisation's completion.
    fn uncapture(&self, key: String, provider_ref: String) -> CallResult<()> {
        let _ = (key, provider_ref);
        not_supported("completion reverts")
    }
    /// `reversal`: undoes the whole transaction; `provider_ref` is `None` while the charge's
    /// outcome is unknown (the port finds it under the order's key first).
    fn reverse(
        &self,
        key: String,
        order_id: String,
        provider_ref: Option<String>,
    ) -> CallResult<()> {
        let _ = (key, order_id, provider_ref);
        not_supported("reversals")
    }
    /// The shared adapter under this port (`None` for channels inside Kassa).
    fn adapter(&self) -> Option<&ChannelAdapter> {
        None
    }
}

/// A channel error either refuses for sure (a 4xx the provider answered) or leaves the outcome open.
fn call_error(error: ChannelError) -> CallError {
    match error {
        ChannelError::Rejected { status, code } => CallError::Refused(Failure::new(
            code.clone(),
            format!("the payment channel refused the request ({status} {code})"),
        )),
        other => CallError::Unknown(other.to_string()),
    }
}

/// A new payment's answer from a channel, in the order's terms: refused outright means never
/// charged (declined, or never possible once an earlier resolve blocked the key); no usable
/// answer leaves the outcome open.
fn charge_answer<T>(
    answer: Result<T, ChannelError>,
    outcome: impl FnOnce(T) -> ChargeOutcome,
) -> Result<ChargeOutcome, CallError> {
    match answer {
        Ok(answer) => Ok(outcome(answer)),
        Err(ChannelError::Rejected { code, .. }) if code == "key_blocked" => {
            Ok(ChargeOutcome::NeverCharged)
        }
        Err(ChannelError::Rejected { code, .. }) => Ok(ChargeOutcome::Declined(Failure::new(
            "processing_error",
            format!("the payment channel refused the payment ({code})"),
        ))),
        Err(other) => Err(call_error(other)),
    }
}

/// A refund's answer: the provider's reference, or its refusal.
fn refund_answer(
    answer: Result<kassa_channels::card::RefundOutcome, ChannelError>,
) -> Result<String, CallError> {
    match answer.map_err(call_error)? {
        kassa_channels::card::RefundOutcome::Succeeded { provider_ref } => Ok(provider_ref),
        kassa_channels::card::RefundOutcome::Failed { code } => Err(CallError::Refused(
            Failure::new(code, "the payment channel refused the refund"),
        )),
    }
}

/// The refund request a channel protocol takes.
fn refund_request(call: RefundCall) -> kassa_channels::card::RefundRequest {
    kassa_channels::card::RefundRequest {
        idempotency_key: call.key,
        provider_ref: call.provider_ref,
        amount_minor: call.amount.minor_units(),
        currency: call.amount.currency().code().to_string(),
    }
}

/// Runs a channel call on `io`, the multi-threaded runtime, so an order actor's arbiter
/// thread only ever waits for a join handle.
fn run_on<T: Send + 'static>(
    io: &tokio::runtime::Handle,
    fut: impl Future<Output = Result<T, CallError>> + Send + 'static,
) -> CallResult<T> {
    let handle = io.spawn(fut);
    Box::pin(async move {
        handle
            .await
            .unwrap_or_else(|e| Err(CallError::Unknown(format!("channel task failed: {e}"))))
    })
}

/// A method with no channel configured: every call is "unknown", so orders wait (and are
/// asked about again) rather than being failed by a configuration gap.
struct Unconfigured(Method);

impl Unconfigured {
    fn unknown<T: Send + 'static>(&self) -> CallResult<T> {
        let reason = format!("no channel is configured for {}", self.0.as_str());
        Box::pin(async move { Err(CallError::Unknown(reason)) })
    }
}

impl ChannelPort for Unconfigured {
    fn charge(&self, _call: ChargeCall) -> CallResult<ChargeOutcome> {
        self.unknown()
    }
    fn resolve(&self, _order_id: String) -> CallResult<ChargeOutcome> {
        self.unknown()
    }
    fn void(&self, _key: String, _order_id: String, _provider_ref: String) -> CallResult<()> {
        self.unknown()
    }
    fn refund(&self, _call: RefundCall) -> CallResult<String> {
        self.unknown()
    }
}

/// One port per payment method.
#[derive(Default)]
pub struct ChannelPorts {
    ports: HashMap<Method, Arc<dyn ChannelPort>>,
}

impl ChannelPorts {
    pub fn new() -> ChannelPorts {
        ChannelPorts::default()
    }

    pub fn with(mut self, method: Method, port: Arc<dyn ChannelPort>) -> ChannelPorts {
        self.ports.insert(method, port);
        self
    }

    pub fn is_configured(&self, method: Method) -> bool {
        self.ports.contains_key(&method)
    }

    /// The method's port; an unconfigured method gets one that answers "unknown" to everything.
    pub fn get(&self, method: Method) -> Arc<dyn ChannelPort> {
        self.ports
            .get(&method)
            .cloned()
            .unwrap_or_else(|| Arc::new(Unconfigured(method)))
    }

    /// Room for one new charge at the method's channel, counted against `merchant` too. `None`
    /// for a channel without an adapter (Kassa's own wallet).
    pub async fn admit(
        &self,
        method: Method,
        merchant: &str,
    ) -> Result<Option<Admission>, ChannelError> {
        let Some(adapter) = self.ports.get(&method).and_then(|p| p.adapter()) else {
            return Ok(None);
        };
        let admitted = adapter.for_merchant(merchant).admit_new_work().await?;
        Ok(Some(Admission::new(admitted)))
    }

    /// The adapters, by method name, for operators (`/admin/channels`, metrics).
    pub fn adapters(&self) -> Vec<(&'static str, ChannelAdapter)> {
        let mut out: Vec<_> = self
            .ports
            .iter()
            .filter_map(|(method, port)| port.adapter().map(|a| (method.as_str(), a.clone())))
            .collect();
        out.sort_by_key(|(name, _)| *name);
        out
    }
}
