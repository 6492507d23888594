//! Kassa's payment domain and its actors.
//!
//! # Layout
//! - `money.rs`   — [`Money`] and [`Currency`]: `rust_decimal` amounts with ISO 4217 exponents.
//! - `payment.rs` — the order's state machine: plain data, `decide` and `apply`, no I/O.

pub mod money;
pub mod payment;

pub use money::{Currency, Money, MoneyError};
