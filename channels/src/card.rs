//! The card channel: charges, captures, voids, refunds and resolves against a card acquirer
//! that speaks the sandbox's card protocol.
//!
//! Pre-authorisation maps onto it as: preauth = [`CardChannel::charge`] with `capture: false`;
//! cancel = [`CardChannel::void`]; complete = [`CardChannel::capture`] (at most the authorised
//! amount); complete-revert = [`CardChannel::uncapture`] (the charge is authorised again and
//! can be completed again); refund = [`CardChannel::refund`] of what is captured; reversal
//! (冲正) = [`CardChannel::reverse`], which cancels the transaction whatever stage it reached.
//!
//! [`CardChannel`] is a thin translator. Each method builds a JSON body
//! (`card/transformers.rs`), hands it to the shared [`ChannelAdapter`] (which bounds, signs, times
//! out and retries it) and turns the answer into a domain outcome. A decline is an `Ok`
//! outcome; only a missing or unusable answer is a [`ChannelError`].
//!
//! Every write carries the caller's idempotency key; the adapter resends it unchanged, so a
//! retry returns the provider's first answer instead of charging again. When a call ends with
//! [`ChannelError::outcome_unknown`], [`CardChannel::resolve`] turns "did it go through?" into a
//! fact: either the charge, or a tombstone that guarantees the key can never charge.

pub mod callback;
mod card_data;
pub mod signature;
pub(crate) mod transformers;

use bytes::Bytes;
use hyper::Method;

pub use self::card_data::{CardData, brand, luhn_valid};
use self::transformers::{
    CaptureBody, ChargeBody, ChargeResponse, KeyBody, RefundBody, RefundResponse, RefundStatus,
    ResolveResponse, parse,
};
use crate::adapter::{ChannelAdapter, WireRequest};
use crate::error::ChannelError;

/// How long a provider reference may be before we refuse to put it in a URL.
const PROVIDER_REF_LEN_MAX: usize = 128;

/// A charge (or, with `capture: false`, an authorisation) of a card.
#[derive(Debug, Clone)]
pub struct ChargeRequest {
    /// Kassa's key for this charge (the order id); the provider deduplicates on it.
    pub idempotency_key: String,
    /// The amount in the currency's minor units.
    pub amount_minor: i64,
    /// ISO 4217 code, upper case.
    pub currency: String,
    /// The card.
    pub card: CardData,
    /// `true` to capture at once, `false` to only authorise.
    pub capture: bool,
}

/// What the provider did with a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// Authorised and captured.
    Succeeded {
        /// The provider's charge id.
        provider_ref: String,
    },
    /// Authorised only; capture or void it later.
    Authorized {
        /// The provider's charge id.
        provider_ref: String,
    },
    /// The issuer wants the cardholder to authenticate (3-D Secure) at `redirect_url` first;
    /// the outcome follows by callback, or by asking again ([`CardChannel::resolve`]).
    RequiresAction {
        /// The provider's charge id.
        provider_ref: String,
        /// The cardholder's challenge page.
        redirect_url: String,
    },
    /// The issuer said no. Not an error and never retried.
    Declined {
        /// `card_declined`, `insufficient_funds`, …
        code: String,
        /// A sentence fit for the merchant.
        message: String,
    },
}

/// A charge found by [`CardChannel::resolve`] or [`CardChannel::retrieve`], with its totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedCharge {
    /// What the charge came to. A voided authorisation stays `Authorized` with `voided: true`
    /// (a reversed 3-D Secure charge stays `RequiresAction` with `voided: true`);
    /// a reversed capture stays `Succeeded` with `reversed: true`; a reverted capture is
    /// `Authorized` again with nothing captured.
    pub outcome: ChargeOutcome,
    /// The amount charged or authorised, in minor units.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// How much of it is captured. A reversed charge keeps what it had captured, all returned.
    pub captured_minor: i64,
    /// How much of the captured amount is refunded.
    pub refunded_minor: i64,
    /// Whether the authorisation was voided (by a void, or by the reversal of an uncaptured
    /// charge).
    pub voided: bool,
    /// Whether the captured charge was reversed: all of `captured_minor` went back to the
    /// cardholder and nothing more can be refunded.
    pub reversed: bool,
}

/// The answer to [`CardChannel::resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveOutcome {
    /// The provider has a charge under the key.
    Found(ResolvedCharge),
    /// It had none, and has now tombstoned the key: no charge with it can ever succeed, so the
    /// payment can safely be marked as never charged.
    NotFound,
}

/// A capture the provider accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureOutcome {
    /// The provider's charge id.
    pub provider_ref: String,
    /// The captured total, in minor units.
    pub captured_minor: i64,
}

/// A refund of (part of) a captured charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    /// Kassa's key for this refund (the refund id).
    pub idempotency_key: String,
    /// The provider's charge id.
    pub provider_ref: String,
    /// The amount to give back, in minor units.
    pub amount_minor: i64,
    /// ISO 4217 code; must be the charge's.
    pub currency: String,
}

/// What the provider did with a refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundOutcome {
    /// The money is on its way back.
    Succeeded {
        /// The provider's refund id.
        provider_ref: String,
    },
    /// Refused, e.g. `amount_exceeds_captured` or `charge_reversed`. Not an error and never
    /// retried.
    Failed {
        /// The provider's failure code.
        code: String,
    },
}

/// The card channel. Cheap to clone: it is a handle on the shared adapter.
#[derive(Debug, Clone)]
pub struct CardChannel {
    adapter: ChannelAdapter,
}

impl CardChannel {
    /// A card channel that calls through `adapter`.
    pub fn new(adapter: ChannelAdapter) -> Self {
        Self { adapter }
    }

    /// The adapter, for its health figures (`inflight`) and settings.
    pub fn adapter(&self) -> &ChannelAdapter {
        &self.adapter
    }

    /// Charges (or authorises) a card. A decline is `Ok(ChargeOutcome::Declined { .. })`.
    pub async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, ChannelError> {
        let body = ChargeBody {
            idempotency_key: &request.idempotency_key,
            amount_minor: request.amount_minor,
            currency: &request.currency,
            pan: request.card.number().expose(),
            exp_month: request.card.exp_month(),
            exp_year: request.card.exp_year(),
            cvc: request.card.cvc().expose(),
            capture: request.capture,
        };
        let response = self.post("/card/v1/charges".into(), &body).await?;
        parse::<ChargeResponse>(&response, "charge")?.into_outcome(self.adapter.base_url())
    }

    /// Captures `amount_minor` (at most the authorised amount) of an authorisation.
    pub async fn capture(
        &self,
        idempotency_key: &str,
        provider_ref: &str,
        amount_minor: i64,
    ) -> Result<CaptureOutcome, ChannelError> {
        let path = format!("/card/v1/charges/{}/capture", checked_ref(provider_ref)?);
        let body = CaptureBody {
            idempotency_key,
            amount_minor,
        };
        let charge: ChargeResponse = parse(&self.post(path, &body).await?, "charge")?;
        Ok(CaptureOutcome {
            provider_ref: charge.charge_id,
            captured_minor: charge.captured_minor,
        })
    }

    /// Voids an uncaptured authorisation, or a charge still waiting for 3-D Secure.
    pub async fn void(
        &self,
        idempotency_key: &str,
        provider_ref: &str,
    ) -> Result<(), ChannelError> {
        let path = format!("/card/v1/charges/{}/void", checked_ref(provider_ref)?);
        let charge: ChargeResponse = parse(
            &self.post(path, &KeyBody { idempotency_key }).await?,
            "charge",
        )?;
        if charge.voided {
            Ok(())
        } else {
            Err(ChannelError::Unreadable(
                "the provider accepted the void but reports the charge as not voided".into(),
            ))
        }
    }

    /// Reverts the capture of a pre-authorisation (the same day, before settlement): the
    /// charge is `Authorized` again with nothing captured, and can be captured again with a new
    /// key. Only a captured charge with nothing refunded, not voided and not reversed
    /// qualifies; otherwise `Rejected { status: 409, code: "charge_not_revertible" }`. The same
    /// key replays the first answer.
    pub async fn uncapture(
        &self,
        idempotency_key: &str,
        provider_ref: &str,
    ) -> Result<ResolvedCharge, ChannelError> {
        let path = format!("/card/v1/charges/{}/uncapture", checked_ref(provider_ref)?);
        let charge = self.charge_operation(path, idempotency_key).await?;
        let reverted = matches!(charge.outcome, ChargeOutcome::Authorized { .. })
            && charge.captured_minor == 0
            && !charge.voided;
        if reverted {
            Ok(charge)
        } else {
            Err(ChannelError::Unreadable(
                "the provider accepted the capture revert but reports the charge as captured"
                    .into(),
            ))
        }
    }

    /// Reverses (冲正) a charge whatever stage it reached: an uncaptured authorisation, or a
    /// charge still waiting for 3-D Secure, comes back voided (`voided: true`; the challenge
    /// can no longer complete it); a capture with nothing refunded is given back whole
    /// (`reversed: true`, `captured_minor` still what was taken). A charge with refunds,
    /// declined, or already voided or reversed under another key is
    /// `Rejected { status: 409, code: "charge_not_reversible" }`. The same key replays the
    /// first answer.
    pub async fn reverse(
        &self,
        idempotency_key: &str,
        provider_ref: &str,
    ) -> Result<ResolvedCharge, ChannelError> {
        let path = format!("/card/v1/charges/{}/reverse", checked_ref(provider_ref)?);
        let charge = self.charge_operation(path, idempotency_key).await?;
        if charge.voided || charge.reversed {
            Ok(charge)
        } else {
            Err(ChannelError::Unreadable(
                "the provider accepted the reversal but reports the charge as neither voided nor \
                 reversed"
                    .into(),
            ))
        }
    }

    /// Refunds part or all of a captured charge. Refunding more than is left is
    /// `Ok(RefundOutcome::Failed { code: "amount_exceeds_captured" })`, refunding a reversed
    /// charge `Ok(RefundOutcome::Failed { code: "charge_reversed" })`.
    pub async fn refund(&self, request: &RefundRequest) -> Result<RefundOutcome, ChannelError> {
        let body = RefundBody {
            idempotency_key: &request.idempotency_key,
            charge_id: &request.provider_ref,
            amount_minor: request.amount_minor,
            currency: &request.currency,
        };
        let refund: RefundResponse = parse(
            &self.post("/card/v1/refunds".into(), &body).await?,
            "refund",
        )?;
        match refund.status {
            RefundStatus::Succeeded => Ok(RefundOutcome::Succeeded {
                provider_ref: refund.refund_id,
            }),
            RefundStatus::Failed => Ok(RefundOutcome::Failed {
                code: refund
                    .failure_code
                    .unwrap_or_else(|| String::from("unknown")),
            }),
        }
    }

    /// Asks whether a charge with `idempotency_key` exists. If not, the provider tombstones
    /// the key, so the answer `NotFound` is final: the charge did not and never will happen.
    pub async fn resolve(&self, idempotency_key: &str) -> Result<ResolveOutcome, ChannelError> {
        let response = self
            .post(
                "/card/v1/charges/resolve".into(),
                &KeyBody { idempotency_key },
            )
            .await?;
        let resolved: ResolveResponse = parse(&response, "resolve answer")?;
        match (resolved.found, resolved.charge) {
            (true, Some(charge)) => Ok(ResolveOutcome::Found(
                charge.into_resolved(self.adapter.base_url())?,
            )),
            (false, None) => Ok(ResolveOutcome::NotFound),
            (true, None) | (false, Some(_)) => Err(ChannelError::Unreadable(
                "resolve answer disagrees with itself about `found`".into(),
            )),
        }
    }

    /// Reads a charge by the provider's id.
    pub async fn retrieve(&self, provider_ref: &str) -> Result<ResolvedCharge, ChannelError> {
        let request = WireRequest {
            method: Method::GET,
            path: format!("/card/v1/charges/{}", checked_ref(provider_ref)?),
            body: Bytes::new(),
        };
        let response = self.adapter.send(request).await?;
        parse::<ChargeResponse>(&response.body, "charge")?.into_resolved(self.adapter.base_url())
    }

    /// Posts `{"idempotency_key"}` to a charge operation's `path` and reads the charge back.
    async fn charge_operation(
        &self,
        path: String,
        idempotency_key: &str,
    ) -> Result<ResolvedCharge, ChannelError> {
        let response = self.post(path, &KeyBody { idempotency_key }).await?;
        parse::<ChargeResponse>(&response, "charge")?.into_resolved(self.adapter.base_url())
    }

    async fn post<T: serde::Serialize>(
        &self,
        path: String,
        body: &T,
    ) -> Result<Bytes, ChannelError> {
        // Serialising these plain structs (strings and integers) cannot fail; if it ever did,
        // nothing was sent, so a `Rejected` says "do not retry" truthfully.
        let body = serde_json::to_vec(body).map_err(|_| ChannelError::Rejected {
            status: 400,
            code: String::from("unserialisable_request"),
        })?;
        let request = WireRequest {
            method: Method::POST,
            path,
            body: Bytes::from(body),
        };
        Ok(self.adapter.send(request).await?.body)
    }
}

/// A provider reference goes into a URL path, so it must be a plain id. An odd one is refused
/// locally (nothing is sent) as a 400.
fn checked_ref(provider_ref: &str) -> Result<&str, ChannelError> {
    let plain = provider_ref
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain && !provider_ref.is_empty() && provider_ref.len() <= PROVIDER_REF_LEN_MAX {
        Ok(provider_ref)
    } else {
        Err(ChannelError::Rejected {
            status: 400,
            code: String::from("invalid_provider_ref"),
        })
    }
}
