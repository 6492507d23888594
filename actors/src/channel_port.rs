//! What an order actor needs from a payment channel, and the bridge to the card channel.
//!
//! The order actor only knows [`ChannelPort`]: five calls, each keyed by an idempotency key
//! that Kassa derives from the order (so a re-drive after a crash can never act twice), each
//! answering with a fact or with [`CallError::Unknown`]. Rate limits, retries, timeouts and
//! bulkheads live once, in `kassa_channels::adapter`, under this bridge.

use futures::future::BoxFuture;
use kassa_channels::ChannelAdapter;
use kassa_channels::card::{
    CardChannel, CardData, ChargeOutcome as CardOutcome, ChargeRequest, RefundOutcome,
    RefundRequest, ResolveOutcome,
};
use kassa_channels::error::ChannelError;

use crate::money::Money;
use crate::payment::{ChargeOutcome, Failure};

/// A charge to send: the order id is the channel's idempotency key.
#[derive(Debug)]
pub struct ChargeCall {
    pub order_id: String,
    pub amount: Money,
    pub capture: bool,
    pub card: CardData,
    /// The room the channel made for this charge before the order existed, if any.
    pub admission: Option<Admission>,
}

/// Room a channel made for one new charge (its rate permit), taken before the order exists so
/// that a busy or broken channel is answered 429/503 with nothing created.
#[derive(Debug)]
pub struct Admission(ChannelAdapter);

impl Admission {
    pub fn card(admitted: ChannelAdapter) -> Admission {
        Admission(admitted)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    /// The channel definitively refused the operation; nothing happened there.
    Refused(Failure),
    /// No usable answer: the channel may or may not have acted. Ask again with the same key.
    Unknown(String),
}

pub trait ChannelPort: Send + Sync + 'static {
    fn charge(&self, call: ChargeCall) -> BoxFuture<'static, Result<ChargeOutcome, CallError>>;
    /// Turns "did the charge under this key happen?" into a fact; blocks the key if it did not.
    fn resolve(&self, order_id: String) -> BoxFuture<'static, Result<ChargeOutcome, CallError>>;
    /// Returns the provider's reference for the capture.
    fn capture(
        &self,
        key: String,
        provider_ref: String,
        amount: Money,
    ) -> BoxFuture<'static, Result<String, CallError>>;
    fn void(&self, key: String, provider_ref: String) -> BoxFuture<'static, Result<(), CallError>>;
    /// Returns the provider's reference for the refund.
    fn refund(
        &self,
        key: String,
        provider_ref: String,
        amount: Money,
    ) -> BoxFuture<'static, Result<String, CallError>>;
}

/// The card channel behind the port. Calls run on `io`, the multi-threaded runtime, so an
/// order actor's arbiter thread only ever waits for a join handle.
pub struct CardPort {
    channel: CardChannel,
    io: tokio::runtime::Handle,
}

impl CardPort {
    pub fn new(channel: CardChannel, io: tokio::runtime::Handle) -> CardPort {
        CardPort { channel, io }
    }

    fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, CallError>> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, CallError>> {
        let handle = self.io.spawn(fut);
        Box::pin(async move {
            handle
                .await
                .unwrap_or_else(|e| Err(CallError::Unknown(format!("channel task failed: {e}"))))
        })
    }
}

/// The card protocol's outcome in the order's terms.
pub fn from_card(outcome: CardOutcome) -> ChargeOutcome {
    match outcome {
        CardOutcome::RequiresAction {
            provider_ref,
            redirect_url,
        } => ChargeOutcome::RequiresAction {
            provider_ref,
            redirect_url,
        },
        CardOutcome::Succeeded { provider_ref } => ChargeOutcome::Succeeded { provider_ref },
        CardOutcome::Authorized { provider_ref } => ChargeOutcome::Authorized { provider_ref },
        CardOutcome::Declined { code, message } => {
            ChargeOutcome::Declined(Failure { code, message })
        }
    }
}

/// A channel error either refuses for sure (a 4xx the provider answered) or leaves the outcome open.
fn call_error(error: ChannelError) -> CallError {
    match error {
        ChannelError::Rejected { status, code } => CallError::Refused(Failure::new(
            "channel_refused",
            format!("the payment channel refused the request ({status} {code})"),
        )),
        other => CallError::Unknown(other.to_string()),
    }
}

impl ChannelPort for CardPort {
    fn charge(&self, call: ChargeCall) -> BoxFuture<'static, Result<ChargeOutcome, CallError>> {
        let channel = match &call.admission {
            Some(Admission(admitted)) => CardChannel::new(admitted.clone()),
            None => self.channel.clone(),
        };
        self.run(async move {
            let request = ChargeRequest {
                idempotency_key: call.order_id,
                amount_minor: call.amount.minor_units(),
                currency: call.amount.currency().code().to_string(),
                card: call.card,
                capture: call.capture,
            };
            match channel.charge(&request).await {
                Ok(outcome) => Ok(from_card(outcome)),
                // The key was blocked by an earlier resolve: this charge can never happen.
                Err(ChannelError::Rejected { code, .. }) if code == "key_blocked" => {
                    Ok(ChargeOutcome::NeverCharged)
                }
                Err(ChannelError::Rejected { code, .. }) => {
                    Ok(ChargeOutcome::Declined(Failure::new(
                        "processing_error",
                        format!("the payment channel refused the charge ({code})"),
                    )))
                }
                Err(other) => Err(call_error(other)),
            }
        })
    }

    fn resolve(&self, order_id: String) -> BoxFuture<'static, Result<ChargeOutcome, CallError>> {
        let channel = self.channel.clone();
        self.run(async move {
            match channel.resolve(&order_id).await.map_err(call_error)? {
                ResolveOutcome::Found(found) => Ok(from_card(found.outcome)),
                ResolveOutcome::NotFound => Ok(ChargeOutcome::NeverCharged),
            }
        })
    }

    fn capture(
        &self,
        key: String,
        provider_ref: String,
        amount: Money,
    ) -> BoxFuture<'static, Result<String, CallError>> {
        let channel = self.channel.clone();
        self.run(async move {
            let done = channel
                .capture(&key, &provider_ref, amount.minor_units())
                .await
                .map_err(call_error)?;
            Ok(done.provider_ref)
        })
    }

    fn void(&self, key: String, provider_ref: String) -> BoxFuture<'static, Result<(), CallError>> {
        let channel = self.channel.clone();
        self.run(async move { channel.void(&key, &provider_ref).await.map_err(call_error) })
    }

    fn refund(
        &self,
        key: String,
        provider_ref: String,
        amount: Money,
    ) -> BoxFuture<'static, Result<String, CallError>> {
        let channel = self.channel.clone();
        self.run(async move {
            let request = RefundRequest {
                idempotency_key: key,
                provider_ref,
                amount_minor: amount.minor_units(),
                currency: amount.currency().code().to_string(),
            };
            match channel.refund(&request).await.map_err(call_error)? {
                RefundOutcome::Succeeded { provider_ref } => Ok(provider_ref),
                RefundOutcome::Failed { code } => Err(CallError::Refused(Failure::new(
                    code,
                    "the payment channel refused the refund",
                ))),
            }
        })
    }
}
