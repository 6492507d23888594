//! The asynchronous channels behind the port: `qr_wallet`, `app_wallet` and `bank_transfer`.
//!
//! Their payments are not decided while Kassa waits. A QR or app payment is created, the
//! customer pays on the provider's side, and the outcome arrives by signed callback or by
//! query; a bank transfer is accepted, and settles (or is rejected) much later. The order
//! `requires_action` (QR, app) or stays `processing` (transfer) meanwhile, and is asked about
//! on the re-drive schedule until the channel gives a final answer. A lookup of a key the
//! provider never saw closes it there, so "never paid" is a fact, not a timeout.

use futures::future::BoxFuture;
use kassa_channels::card::{RefundOutcome, RefundRequest};
use kassa_channels::error::ChannelError;
use kassa_channels::{
    AppWalletChannel, AsyncPayment, AsyncPaymentRequest, AsyncStatus, BankTransferChannel,
    ChannelAdapter, LookupOutcome, QrWalletChannel,
};

use super::{
    CallError, CallResult, ChannelPort, ChargeCall, Instrument, RefundCall, call_error,
    charge_answer, refund_answer, refund_request, run_on,
};
use crate::payment::{ChargeOutcome, Failure};

/// What the port needs of an asynchronous channel protocol.
pub trait AsyncProtocol: Clone + Send + Sync + 'static {
    fn create(
        &self,
        request: AsyncPaymentRequest,
    ) -> BoxFuture<'static, Result<AsyncPayment, ChannelError>>;
    fn lookup(&self, key: String) -> BoxFuture<'static, Result<LookupOutcome, ChannelError>>;
    fn cancel(&self, key: String) -> BoxFuture<'static, Result<AsyncPayment, ChannelError>>;
    fn refund(
        &self,
        request: RefundRequest,
    ) -> BoxFuture<'static, Result<RefundOutcome, ChannelError>>;
    /// The same protocol over another handle on the adapter (one with a rate permit taken).
    fn over(&self, adapter: ChannelAdapter) -> Self;
    fn adapter(&self) -> &ChannelAdapter;
}

macro_rules! async_protocol {
    ($channel:ty) => {
        impl AsyncProtocol for $channel {
            fn create(
                &self,
                request: AsyncPaymentRequest,
            ) -> BoxFuture<'static, Result<AsyncPayment, ChannelError>> {
                let channel = self.clone();
                Box::pin(async move { channel.create(&request).await })
            }
            fn lookup(
                &self,
                key: String,
            ) -> BoxFuture<'static, Result<LookupOutcome, ChannelError>> {
                let channel = self.clone();
                Box::pin(async move { channel.lookup(&key).await })
            }
            fn cancel(
                &self,
                key: String,
            ) -> BoxFuture<'static, Result<AsyncPayment, ChannelError>> {
                let channel = self.clone();
                Box::pin(async move { channel.cancel(&key).await })
            }
            fn refund(
                &self,
                request: RefundRequest,
            ) -> BoxFuture<'static, Result<RefundOutcome, ChannelError>> {
                let channel = self.clone();
                Box::pin(async move { channel.refund(&request).await })
            }
            fn over(&self, adapter: ChannelAdapter) -> Self {
                <$channel>::new(adapter)
            }
            fn adapter(&self) -> &ChannelAdapter {
                <$channel>::adapter(self)
            }
        }
    };
}

async_protocol!(QrWalletChannel);
async_protocol!(AppWalletChannel);
async_protocol!(BankTransferChannel);

/// An asynchronous channel's word on a payment, in the order's terms.
pub fn from_async(payment: AsyncPayment) -> ChargeOutcome {
    let provider_ref = payment.provider_ref;
    match payment.status {
        AsyncStatus::Pending {
            action_url: Some(redirect_url),
        } => ChargeOutcome::RequiresAction {
            provider_ref,
            redirect_url,
        },
        AsyncStatus::Pending { action_url: None } => ChargeOutcome::Submitted { provider_ref },
        AsyncStatus::Succeeded => ChargeOutcome::Succeeded { provider_ref },
        AsyncStatus::Failed { code, message } => {
            ChargeOutcome::Declined(Failure::new(code, message))
        }
    }
}

pub struct AsyncPort<P: AsyncProtocol> {
    protocol: P,
    io: tokio::runtime::Handle,
}

impl<P: AsyncProtocol> AsyncPort<P> {
    pub fn new(protocol: P, io: tokio::runtime::Handle) -> AsyncPort<P> {
        AsyncPort { protocol, io }
    }
}

impl<P: AsyncProtocol> ChannelPort for AsyncPort<P> {
    fn charge(&self, call: ChargeCall) -> CallResult<ChargeOutcome> {
        let protocol = match call.admission {
            Some(admission) => self.protocol.over(admission.into_adapter()),
            None => self.protocol.clone(),
        };
        let (payer_account, payer_name) = match call.instrument {
            Instrument::BankAccount {
                number,
                holder_name,
            } => (Some(number), Some(holder_name)),
            Instrument::Card(_) | Instrument::Nothing => (None, None),
        };
        let request = AsyncPaymentRequest {
            idempotency_key: call.order_id,
            amount_minor: call.amount.minor_units(),
            currency: call.amount.currency().code().to_string(),
            description: call.description,
            payer_account,
            payer_name,
        };
        run_on(&self.io, async move {
            charge_answer(protocol.create(request).await, from_async)
        })
    }

    fn resolve(&self, order_id: String) -> CallResult<ChargeOutcome> {
        let protocol = self.protocol.clone();
        run_on(&self.io, async move {
            match protocol.lookup(order_id).await.map_err(call_error)? {
                LookupOutcome::Found(payment) => Ok(from_async(payment)),
                LookupOutcome::NotFound => Ok(ChargeOutcome::NeverCharged),
            }
        })
    }

    fn void(&self, _key: String, order_id: String, _provider_ref: String) -> CallResult<()> {
        let protocol = self.protocol.clone();
        run_on(&self.io, async move {
            let closed = protocol.cancel(order_id).await.map_err(call_error)?;
            match closed.status {
                AsyncStatus::Failed { .. } => Ok(()),
                // The customer paid first: the cancel loses, and the payment's own outcome
                // (asked for next) makes it succeeded.
                AsyncStatus::Succeeded => Err(CallError::Refused(Failure::new(
                    "payment_already_completed",
                    "the customer paid before the payment could be canceled",
                ))),
                AsyncStatus::Pending { .. } => Err(CallError::Unknown(
                    "the channel has not closed the payment yet".into(),
                )),
            }
        })
    }

    fn refund(&self, call: RefundCall) -> CallResult<String> {
        let protocol = self.protocol.clone();
        run_on(&self.io, async move {
            refund_answer(protocol.refund(refund_request(call)).await)
        })
    }

    fn adapter(&self) -> Option<&ChannelAdapter> {
        Some(self.protocol.adapter())
    }
}
