//! `kassa-channels`: everything between Kassa and the payment channels it calls.
//!
//! The crate owns the outbound side of a payment (calling a channel, and knowing when a call
//! may be retried or left uncertain) and the sandbox provider that plays the channels' side in
//! tests, demos and load runs. It uses plain data (amounts as `i64` minor units, currencies as
//! ISO 4217 codes) and knows nothing about orders or actors.
//!
//! # Layout
//!
//! * [`adapter`]: the shared [`ChannelAdapter`]. Every call to a channel goes through its one
//!   generic path: circuit breaker, rate limits, bulkhead (`inflight_max`), per-attempt
//!   timeout, bounded retries with exponential backoff and full jitter, request signing.
//!   Limits, retries and timeouts live there once, never in a protocol module. Its
//!   [`ChannelAdapter::health`] is what operators see of a channel.
//! * [`breaker`]: the circuit breaker, a pure state machine over injected time.
//! * `limiter.rs`: the channel's and its merchants' rate limits (`governor`), with a bounded
//!   wait, and the hook for a cluster-wide limit ([`SharedLimiter`]).
//! * One module per channel protocol, each a thin translator between domain types and its wire
//!   format: [`card`] (JSON, minor units, `Sandbox-Signature`) with its wire types in
//!   `card/transformers.rs`; the asynchronous channels [`qr_wallet`] (Alipay-style signed
//!   forms), [`app_wallet`] (WeChat Pay v3-style JSON, `Wechatpay-*` signatures, AES-256-GCM
//!   callbacks) and [`bank_transfer`] (B2B JSON, `Bank-*` signatures, outcome learnt later),
//!   each with `signature.rs` (both sides of its scheme) and `transformers.rs` (its wire
//!   types).
//! * [`outcome`]: the asynchronous channels' domain types ([`AsyncPaymentRequest`],
//!   [`AsyncPayment`], [`AsyncStatus`], [`LookupOutcome`]) and failure codes.
//! * [`inbound`]: the one decoder for the asynchronous channels' callbacks (signature first,
//!   then the payment) and what Kassa answers them.
//! * [`signing`]: [`derive_key`], which turns a channel's one `api_secret` into each protocol's
//!   keys, and the signature checks the asynchronous protocols share.
//! * [`error`]: [`ChannelError`], which says whether a failure is retryable and whether the
//!   provider may have acted anyway.
//! * [`secret`]: [`Secret`], which keeps card data and secrets out of every log and debug print.
//! * [`sandbox`]: the sandbox provider, a separate hyper server with a SQLite ledger, test
//!   cards, idempotency by key and tombstones; `src/bin/kassa-sandbox.rs` runs it alone.
//!
//! # One charge
//!
//! ```text
//! order actor ── CardChannel::charge(&ChargeRequest) ──► ChannelAdapter::send ──HTTP──► sandbox
//!            ◄── Ok(ChargeOutcome) | Err(ChannelError { retryable?, outcome_unknown? }) ◄──┘
//! ```
//!
//! When the error says `outcome_unknown`, the caller later calls [`CardChannel::resolve`] with
//! the same key: the provider either returns the charge or tombstones the key, so "did it go
//! through?" becomes a fact and nothing is ever charged twice.
//!
//! # One asynchronous payment
//!
//! ```text
//! order actor ── QrWalletChannel::create ──► adapter ──► wallet: Pending { action_url }
//! customer ──────────────────────────────────────────► pays on the wallet's page
//! wallet ── POST /callbacks/qr_wallet ──► inbound::decode ──► AsyncPayment (Succeeded)
//! janitor ── QrWalletChannel::lookup(key) ──► Found(AsyncPayment) | NotFound (key closed)
//! ```
//!
//! The same four calls (`create`, `lookup`, `cancel`, `refund`) on [`AppWalletChannel`] and
//! [`BankTransferChannel`]; a bank transfer has no customer page and no cancel, and its
//! callback may never come, so `lookup` is how its outcome is learnt for sure.

pub mod adapter;
pub mod app_wallet;
pub mod bank_transfer;
pub mod breaker;
pub mod card;
pub mod error;
pub mod inbound;
mod limiter;
pub mod outcome;
pub mod qr_wallet;
pub mod sandbox;
pub mod secret;
pub mod signing;

pub use adapter::{AdapterConfig, AdapterHealth, ChannelAdapter, Protocol};
pub use app_wallet::AppWalletChannel;
pub use bank_transfer::BankTransferChannel;
pub use breaker::{BreakerHealth, BreakerState};
pub use card::{
    CaptureOutcome, CardChannel, CardData, ChargeOutcome, ChargeRequest, RefundOutcome,
    RefundRequest, ResolveOutcome, ResolvedCharge, brand, luhn_valid,
};
pub use error::{AdapterConfigError, CardDataError, ChannelError};
pub use inbound::{ASYNC_CHANNELS, InboundError};
pub use limiter::{SharedCheck, SharedLimiter, SharedVerdict};
pub use outcome::{AsyncPayment, AsyncPaymentRequest, AsyncStatus, LookupOutcome};
pub use qr_wallet::QrWalletChannel;
pub use sandbox::{SandboxConfig, SandboxError, SandboxHandle};
pub use secret::Secret;
pub use signing::derive_key;
