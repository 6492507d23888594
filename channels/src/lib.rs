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
//!   wait.
//! * One module per channel protocol, each a thin translator between domain types and its wire
//!   format: [`card`] (JSON, minor units, `Sandbox-Signature`) with its wire types in
//!   `card/transformers.rs`.
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

pub mod adapter;
pub mod breaker;
pub mod card;
pub mod error;
mod limiter;
pub mod sandbox;
pub mod secret;

pub use adapter::{AdapterConfig, AdapterHealth, ChannelAdapter};
pub use breaker::{BreakerHealth, BreakerState};
pub use card::{
    CaptureOutcome, CardChannel, CardData, ChargeOutcome, ChargeRequest, RefundOutcome,
    RefundRequest, ResolveOutcome, ResolvedCharge, brand, luhn_valid,
};
pub use error::{AdapterConfigError, CardDataError, ChannelError};
pub use sandbox::{SandboxConfig, SandboxError, SandboxHandle};
pub use secret::Secret;
