//! The card channel behind the port, with the pre-authorisation family.

use kassa_channels::card::{
    CardChannel, ChargeOutcome as CardOutcome, ChargeRequest, ResolveOutcome,
};
use kassa_channels::{CardData, ChannelAdapter};

use super::{
    CallResult, ChannelPort, ChargeCall, Instrument, RefundCall, call_error, charge_answer,
    refund_answer, refund_request, run_on,
};
use crate::money::Money;
use crate::payment::{ChargeOutcome, Failure};

pub struct CardPort {
    channel: CardChannel,
    io: tokio::runtime::Handle,
}

impl CardPort {
    pub fn new(channel: CardChannel, io: tokio::runtime::Handle) -> CardPort {
        CardPort { channel, io }
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

/// A charge without card data cannot be sent; the order is failed as never charged.
fn card_of(instrument: Instrument) -> Option<CardData> {
    match instrument {
        Instrument::Card(card) => Some(card),
        Instrument::BankAccount { .. } | Instrument::Nothing => None,
    }
}

impl ChannelPort for CardPort {
    fn charge(&self, call: ChargeCall) -> CallResult<ChargeOutcome> {
        let channel = match call.admission {
            Some(admission) => CardChannel::new(admission.into_adapter()),
            None => self.channel.clone(),
        };
        let Some(card) = card_of(call.instrument) else {
            return Box::pin(async {
                Ok(ChargeOutcome::Declined(Failure::new(
                    "card_missing",
                    "a card payment needs a card",
                )))
            });
        };
        run_on(&self.io, async move {
            let request = ChargeRequest {
                idempotency_key: call.order_id,
                amount_minor: call.amount.minor_units(),
                currency: call.amount.currency().code().to_string(),
                card,
                capture: call.capture,
            };
            charge_answer(channel.charge(&request).await, from_card)
        })
    }

    fn resolve(&self, order_id: String) -> CallResult<ChargeOutcome> {
        let channel = self.channel.clone();
        run_on(&self.io, async move {
            match channel.resolve(&order_id).await.map_err(call_error)? {
                ResolveOutcome::Found(found) => Ok(from_card(found.outcome)),
                ResolveOutcome::NotFound => Ok(ChargeOutcome::NeverCharged),
            }
        })
    }

    fn capture(&self, key: String, provider_ref: String, amount: Money) -> CallResult<String> {
        let channel = self.channel.clone();
        run_on(&self.io, async move {
            let done = channel
                .capture(&key, &provider_ref, amount.minor_units())
                .await
                .map_err(call_error)?;
            Ok(done.provider_ref)
        })
    }

    fn void(&self, key: String, _order_id: String, provider_ref: String) -> CallResult<()> {
        let channel = self.channel.clone();
        run_on(&self.io, async move {
            channel.void(&key, &provider_ref).await.map_err(call_error)
        })
    }

    fn refund(&self, call: RefundCall) -> CallResult<String> {
        let channel = self.channel.clone();
        run_on(&self.io, async move {
            refund_answer(channel.refund(&refund_request(call)).await)
        })
    }

    fn uncapture(&self, key: String, provider_ref: String) -> CallResult<()> {
        let channel = self.channel.clone();
        run_on(&self.io, async move {
            channel
                .uncapture(&key, &provider_ref)
                .await
                .map(|_| ())
                .map_err(call_error)
        })
    }

    fn reverse(
        &self,
        key: String,
        order_id: String,
        provider_ref: Option<String>,
    ) -> CallResult<()> {
        let channel = self.channel.clone();
        run_on(&self.io, async move {
            let provider_ref = match provider_ref {
                Some(provider_ref) => provider_ref,
                // Outcome unknown: find the charge, or block its key so it can never happen.
                None => match channel.resolve(&order_id).await.map_err(call_error)? {
                    ResolveOutcome::NotFound => return Ok(()),
                    ResolveOutcome::Found(found) => match found.outcome {
                        CardOutcome::Declined { .. } => return Ok(()),
                        CardOutcome::Succeeded { provider_ref }
                        | CardOutcome::Authorized { provider_ref }
                        | CardOutcome::RequiresAction { provider_ref, .. } => provider_ref,
                    },
                },
            };
            channel
                .reverse(&key, &provider_ref)
                .await
                .map(|_| ())
                .map_err(call_error)
        })
    }

    fn adapter(&self) -> Option<&ChannelAdapter> {
        Some(self.channel.adapter())
    }
}
