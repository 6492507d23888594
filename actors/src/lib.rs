//! Kassa's payment domain and its actors.
//!
//! # Layout
//! - `money.rs`           — [`Money`] and [`Currency`]: `rust_decimal` amounts with ISO 4217 exponents.
//! - `payment.rs`         — the order's state machine: plain data, `decide` and `apply`, no I/O.
//! - `views.rs`           — the API objects (payment, refund) built from an order's state.
//! - `payment_order.rs`   — `PaymentOrder`, the actor that owns one order: messages, journal, replies;
//!   `payment_order/channel_work.rs` starts and re-drives its channel calls.
//! - `order_directory.rs` — shards orders over arbiters and starts order actors on demand.
//! - `channel_port.rs`    — what an order needs from a channel, and the bridges to each channel.
//! - `events.rs`          — the merchant-facing events (the outbox rows) an order's transitions raise.
//! - `clock.rs`           — injected time.

pub mod channel_port;
pub mod clock;
pub mod events;
pub mod money;
pub mod order_directory;
pub mod payment;
pub mod payment_order;
pub mod views;

pub use money::{Currency, Money, MoneyError};
