//! The sandbox's channels: which requests belong to which, and what each asynchronous channel
//! keeps for itself (its behaviour and RNG, its counters), next to the card channel's, which
//! live where they always did (`State::chaos`, `State::stats`).
//!
//! | channel         | path prefix | behaviour                                             |
//! |-----------------|-------------|-------------------------------------------------------|
//! | `card`          | `/card/`    | `/sandbox/behaviour` = `/sandbox/channels/card/behaviour` |
//! | `qr_wallet`     | `/qr/`      | `/sandbox/channels/qr_wallet/behaviour`               |
//! | `app_wallet`    | `/app/`     | `/sandbox/channels/app_wallet/behaviour`              |
//! | `bank_transfer` | `/bank/`    | `/sandbox/channels/bank_transfer/behaviour`           |

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Semaphore;

use super::async_ledger::AsyncLedger;
use super::behaviour::{Behaviour, Chaos, InvalidBehaviour};
use super::stats::{Stats, StatsView};
use super::{SandboxError, State};
use crate::app_wallet::signature as app_signature;
use crate::bank_transfer::signature as bank_signature;
use crate::qr_wallet::signature as qr_signature;
use crate::secret::Secret;

/// Settlement timers pending at once (orders the provider decides by itself after a delay).
/// Beyond it an order gets no timer and is decided when it is next read or written.
pub const SETTLEMENT_TIMERS_MAX: usize = 4_096;

/// A channel the sandbox plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Channel {
    Card,
    QrWallet,
    AppWallet,
    BankTransfer,
}

impl Channel {
    pub(crate) const ALL: [Channel; 4] = [
        Channel::Card,
        Channel::QrWallet,
        Channel::AppWallet,
        Channel::BankTransfer,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Channel::Card => "card",
            Channel::QrWallet => "qr_wallet",
            Channel::AppWallet => "app_wallet",
            Channel::BankTransfer => "bank_transfer",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|channel| channel.name() == name)
    }

    /// The asynchronous channel whose path prefix `path` is under.
    pub(crate) fn of_async_path(path: &str) -> Option<Self> {
        [
            ("/qr/", Channel::QrWallet),
            ("/app/", Channel::AppWallet),
            ("/bank/", Channel::BankTransfer),
        ]
        .into_iter()
        .find(|(prefix, _)| path.starts_with(prefix))
        .map(|(_, channel)| channel)
    }
}

/// One asynchronous channel's behaviour (with its RNG) and counters.
pub(crate) struct Side {
    /// Locked briefly, never across an `.await`.
    pub chaos: Mutex<Chaos>,
    pub stats: Arc<Stats>,
}

impl Side {
    fn new() -> Self {
        Self {
            chaos: Mutex::new(Chaos::new(Behaviour::default())),
            stats: Arc::new(Stats::new()),
        }
    }
}

/// The keys the asynchronous protocols derive from the sandbox's one `api_secret`.
pub(crate) struct Keys {
    pub qr_sign: Secret<[u8; 32]>,
    pub app_sign: Secret<[u8; 32]>,
    pub app_aead: Secret<[u8; 32]>,
    pub bank_sign: Secret<[u8; 32]>,
}

/// What the asynchronous channels share: their ledger, keys and settlement timers.
pub(crate) struct AsyncChannels {
    qr_wallet: Side,
    app_wallet: Side,
    bank_transfer: Side,
    pub ledger: AsyncLedger,
    pub keys: Keys,
    /// `http://<addr>`: the customer pages' links are under it.
    pub base_url: String,
    /// One permit per pending settlement timer ([`SETTLEMENT_TIMERS_MAX`]).
    pub settlement_slots: Arc<Semaphore>,
}

impl AsyncChannels {
    /// Opens the asynchronous ledger (in the card ledger's file, or in memory) and derives the
    /// keys. Every channel starts with the default behaviour.
    pub(crate) fn open(
        ledger_path: Option<&Path>,
        base_url: String,
        api_secret: &str,
    ) -> Result<Self, SandboxError> {
        let secret = api_secret.as_bytes();
        Ok(Self {
            qr_wallet: Side::new(),
            app_wallet: Side::new(),
            bank_transfer: Side::new(),
            ledger: AsyncLedger::open(ledger_path)?,
            keys: Keys {
                qr_sign: Secret::new(qr_signature::signing_key(secret)),
                app_sign: Secret::new(app_signature::signing_key(secret)),
                app_aead: Secret::new(app_signature::aead_key(secret)),
                bank_sign: Secret::new(bank_signature::signing_key(secret)),
            },
            base_url,
            settlement_slots: Arc::new(Semaphore::new(SETTLEMENT_TIMERS_MAX)),
        })
    }

    /// The channel's own side; `None` for the card channel (its side is `State`'s).
    pub(crate) fn side(&self, channel: Channel) -> Option<&Side> {
        match channel {
            Channel::Card => None,
            Channel::QrWallet => Some(&self.qr_wallet),
            Channel::AppWallet => Some(&self.app_wallet),
            Channel::BankTransfer => Some(&self.bank_transfer),
        }
    }
}

/// The channel's behaviour and RNG.
pub(crate) fn chaos(state: &State, channel: Channel) -> &Mutex<Chaos> {
    match state.async_channels.side(channel) {
        Some(side) => &side.chaos,
        None => &state.chaos,
    }
}

/// The channel's counters.
pub(crate) fn stats(state: &State, channel: Channel) -> &Arc<Stats> {
    match state.async_channels.side(channel) {
        Some(side) => &side.stats,
        None => &state.stats,
    }
}

/// The channel's behaviour in force.
pub(crate) fn behaviour(state: &State, channel: Channel) -> Behaviour {
    chaos(state, channel).lock().behaviour().clone()
}

/// Checks and replaces the channel's behaviour (and reseeds its RNG).
pub(crate) fn replace_behaviour(
    state: &State,
    channel: Channel,
    behaviour: Behaviour,
) -> Result<(), InvalidBehaviour> {
    behaviour.validate()?;
    tracing::info!(
        channel = channel.name(),
        ?behaviour,
        "sandbox behaviour replaced"
    );
    chaos(state, channel).lock().replace(behaviour);
    Ok(())
}

/// `GET /sandbox/stats`: the card channel's counters at the top level, every channel's under
/// `channels`.
pub(crate) fn stats_view(state: &State, now_s: u64) -> StatsView {
    let mut view = state.stats.view(now_s);
    let channels: BTreeMap<String, StatsView> = Channel::ALL
        .into_iter()
        .map(|channel| (channel.name().to_owned(), stats(state, channel).view(now_s)))
        .collect();
    view.channels = channels;
    view
}
