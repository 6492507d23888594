//! Kassa's own stored-value wallets behind the port: a payment debits the customer's wallet,
//! a refund credits it back, both in the store, both idempotent by key (`wtx_` + the order
//! id, `wtx_` + the refund id), both one transaction that never takes a balance below zero.
//!
//! Nothing leaves the process, so there is no adapter, no rate limit and no breaker; the one
//! uncertainty left is a crash between the debit and the order's journal, which `resolve`
//! settles the way a provider would: the movement under the key, or a tombstone on the key.

use std::sync::Arc;

use kassa_store::{Store, WalletMove, WalletMoveOutcome, WalletMovementKind};

use super::{CallError, CallResult, ChannelPort, ChargeCall, RefundCall};
use crate::payment::{ChargeOutcome, Failure};

pub struct WalletPort {
    store: Arc<dyn Store>,
    clock: Arc<dyn crate::clock::Clock>,
}

impl WalletPort {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn crate::clock::Clock>) -> WalletPort {
        WalletPort { store, clock }
    }
}

/// The wallet transaction id (and idempotency key) of a payment's debit or a refund's credit:
/// `wtx_` and the payment's or refund's id, so a retry or a resolve finds the same movement.
fn movement_key(reference: &str) -> String {
    format!("wtx_{reference}")
}

fn store_unknown(error: impl std::fmt::Display) -> CallError {
    CallError::Unknown(format!("the wallet store did not answer: {error}"))
}

impl ChannelPort for WalletPort {
    fn charge(&self, call: ChargeCall) -> CallResult<ChargeOutcome> {
        let Some(wallet_id) = call.wallet_id else {
            return Box::pin(async {
                Ok(ChargeOutcome::Declined(Failure::new(
                    "wallet_missing",
                    "a wallet payment needs a wallet",
                )))
            });
        };
        let moved = self.store.move_wallet(WalletMove {
            key: movement_key(&call.order_id),
            wallet_id,
            merchant_id: call.merchant_id,
            kind: WalletMovementKind::Payment,
            amount_minor: call.amount.minor_units(),
            currency: call.amount.currency().code().to_string(),
            reference: Some(call.order_id),
            at_ms: self.clock.now_ms(),
        });
        Box::pin(async move {
            Ok(match moved.await.map_err(store_unknown)? {
                WalletMoveOutcome::Applied(movement) | WalletMoveOutcome::Replayed(movement) => {
                    ChargeOutcome::Succeeded {
                        provider_ref: movement.key,
                    }
                }
                WalletMoveOutcome::InsufficientFunds { .. } => ChargeOutcome::Declined(
                    Failure::new("insufficient_funds", "the wallet's balance is too low"),
                ),
                WalletMoveOutcome::WalletNotFound => {
                    ChargeOutcome::Declined(Failure::new("wallet_not_found", "no such wallet"))
                }
                WalletMoveOutcome::CurrencyMismatch { wallet_currency } => {
                    ChargeOutcome::Declined(Failure::new(
                        "currency_mismatch",
                        format!("the wallet holds {wallet_currency}"),
                    ))
                }
                WalletMoveOutcome::KeyReused => ChargeOutcome::Declined(Failure::new(
                    "processing_error",
                    "the wallet refused the payment (key reused)",
                )),
                WalletMoveOutcome::KeyClosed => ChargeOutcome::NeverCharged,
            })
        })
    }

    fn resolve(&self, order_id: String) -> CallResult<ChargeOutcome> {
        let closed = self.store.close_wallet_key(&movement_key(&order_id));
        Box::pin(async move {
            Ok(match closed.await.map_err(store_unknown)? {
                Some(movement) => ChargeOutcome::Succeeded {
                    provider_ref: movement.key,
                },
                None => ChargeOutcome::NeverCharged,
            })
        })
    }

    fn void(&self, _key: String, _order_id: String, _provider_ref: String) -> CallResult<()> {
        super::not_supported("voids")
    }

    fn refund(&self, call: RefundCall) -> CallResult<String> {
        // `provider_ref` is the payment's debit: its wallet is where the money goes back.
        let store = self.store.clone();
        let at_ms = self.clock.now_ms();
        let RefundCall {
            key,
            merchant_id,
            provider_ref,
            amount,
        } = call;
        Box::pin(async move {
            let debit = store
                .wallet_movement(&provider_ref)
                .await
                .map_err(store_unknown)?
                .ok_or_else(|| {
                    CallError::Refused(Failure::new(
                        "wallet_payment_not_found",
                        "the wallet payment to refund is not in the store",
                    ))
                })?;
            let credited = store
                .move_wallet(WalletMove {
                    key: movement_key(&key),
                    wallet_id: debit.wallet_id,
                    merchant_id,
                    kind: WalletMovementKind::Refund,
                    amount_minor: amount.minor_units(),
                    currency: amount.currency().code().to_string(),
                    reference: Some(key),
                    at_ms,
                })
                .await
                .map_err(store_unknown)?;
            match credited {
                WalletMoveOutcome::Applied(m) | WalletMoveOutcome::Replayed(m) => Ok(m.key),
                other => Err(CallError::Refused(Failure::new(
                    "wallet_refund_refused",
                    format!("the wallet refused the refund ({other:?})"),
                ))),
            }
        })
    }
}
