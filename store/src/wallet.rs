//! The company's stored-value wallets: balances and the journal of every movement.
//!
//! A wallet belongs to one merchant and holds one currency. Its balance changes only through
//! [`crate::Store::move_wallet`], which in ONE transaction checks the move, appends a
//! [`WalletMovement`] (numbered per wallet, with the balance after it) and updates the balance,
//! so `balance_minor` is always the sum of the wallet's movements and never negative.
//!
//! # Keys
//! Every move carries a key, unique across all wallets. The same key with the same move is a
//! replay (answered with the movement it made); the same key with another move is refused; a key
//! closed by [`crate::Store::close_wallet_key`] can never move money. The key is also the
//! movement's public id: writers derive it (`wtx_…`) from what makes the move unique, e.g. the
//! merchant and its `Idempotency-Key`, or the payment id and the leg.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::UnixMs;

/// Longest movement key the store accepts (the API's `Idempotency-Key` is at most 255
/// characters; keys are derived from it, never equal to it).
pub const WALLET_MOVE_KEY_BYTES_MAX: usize = 255;

/// A wallet as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalletRecord {
    /// `wal_…`
    pub id: String,
    pub merchant_id: String,
    /// ISO 4217 code.
    pub currency: String,
    /// In the currency's minor units; never negative. A new wallet starts at 0: money only
    /// enters through a movement.
    pub balance_minor: i64,
    /// The merchant's reference for the wallet's holder.
    pub customer_ref: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub created_ms: UnixMs,
    /// When the balance last changed (or `created_ms`).
    pub updated_ms: UnixMs,
}

/// What a movement does. `TopUp` and `Refund` credit the wallet; `Withdrawal` and `Payment`
/// debit it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WalletMovementKind {
    TopUp,
    Withdrawal,
    Payment,
    Refund,
}

impl WalletMovementKind {
    pub const ALL: [WalletMovementKind; 4] = [
        WalletMovementKind::TopUp,
        WalletMovementKind::Withdrawal,
        WalletMovementKind::Payment,
        WalletMovementKind::Refund,
    ];

    /// The stored (and API) name: `top_up`, `withdrawal`, `payment`, `refund`.
    pub fn as_str(self) -> &'static str {
        match self {
            WalletMovementKind::TopUp => "top_up",
            WalletMovementKind::Withdrawal => "withdrawal",
            WalletMovementKind::Payment => "payment",
            WalletMovementKind::Refund => "refund",
        }
    }

    pub fn from_name(name: &str) -> Option<WalletMovementKind> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// True for the kinds that add to the balance.
    pub fn is_credit(self) -> bool {
        match self {
            WalletMovementKind::TopUp | WalletMovementKind::Refund => true,
            WalletMovementKind::Withdrawal | WalletMovementKind::Payment => false,
        }
    }
}

/// A request to move money in or out of a wallet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalletMove {
    /// Unique across all wallets; see the module docs. At most [`WALLET_MOVE_KEY_BYTES_MAX`].
    pub key: String,
    pub wallet_id: String,
    /// The merchant asking: another merchant's wallet is [`WalletMoveOutcome::WalletNotFound`].
    pub merchant_id: String,
    pub kind: WalletMovementKind,
    /// Positive, in the currency's minor units.
    pub amount_minor: i64,
    /// Must be the wallet's currency.
    pub currency: String,
    /// The payment or refund this move belongs to, if any.
    pub reference: Option<String>,
    pub at_ms: UnixMs,
}

/// A movement as journaled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalletMovement {
    pub key: String,
    pub wallet_id: String,
    pub kind: WalletMovementKind,
    /// Positive, in the currency's minor units.
    pub amount_minor: i64,
    /// The wallet's balance right after this movement; never negative.
    pub balance_after_minor: i64,
    pub reference: Option<String>,
    pub at_ms: UnixMs,
}

/// What [`crate::Store::move_wallet`] did. Only `Applied` changed anything.
///
/// The checks run in this order, the first that fails answering: the wallet exists and is the
/// merchant's (`WalletNotFound`); the key's history (`Replayed`, `KeyReused`, `KeyClosed`); the
/// currency (`CurrencyMismatch`); the balance, for debits (`InsufficientFunds`). A refused move
/// does not use its key up: the same key may move money later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalletMoveOutcome {
    /// The movement was journaled and the balance changed.
    Applied(WalletMovement),
    /// The key was seen before with the same wallet, kind and amount: nothing changed; this is
    /// the movement it made then.
    Replayed(WalletMovement),
    /// A debit larger than the balance: nothing changed.
    InsufficientFunds {
        balance_minor: i64,
    },
    /// No such wallet, or it belongs to another merchant.
    WalletNotFound,
    CurrencyMismatch {
        wallet_currency: String,
    },
    /// The key was used for a different move.
    KeyReused,
    /// The key was closed by [`crate::Store::close_wallet_key`]; it can never move money.
    KeyClosed,
}
