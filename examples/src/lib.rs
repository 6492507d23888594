//! `kassa_client`: a small signed merchant client for Kassa's native HTTP API (docs/API.md).
//!
//! It is what the README example, the end-to-end tests and the load generator use to talk to a
//! running `kassa`. It speaks plain HTTP/1.1 through hyper's pooled client; TLS comes later.
//!
//! # Layout
//!
//! - [`sign`]: the request signature, `v1=<hex HMAC-SHA256(secret, "{t}.{METHOD}.{target}.{body}")>`.
//! - [`http`]: [`HttpClient`] (one pooled hyper client bound to a base URL, no authentication),
//!   [`Response`] and [`ClientError`].
//! - [`merchant`]: [`MerchantClient`], which signs every request as one merchant.
//! - [`admin`]: [`AdminClient`], which carries the operator's bearer token, and
//!   [`MerchantCredentials`].
//! - [`webhook`]: the callback signature, `t=<unix>,v1=<hex HMAC-SHA256(webhook_secret,
//!   "{t}.{body}")>` (Stripe's scheme): [`webhook_signature`] (Kassa signs with it) and
//!   [`verify_webhook`] (receivers check with it).
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), kassa_client::ClientError> {
//! use kassa_client::MerchantClient;
//! let merchant = MerchantClient::new("http://127.0.0.1:8080", "mch_123", "sk_secret");
//! let charge = serde_json::json!({
//!     "amount": "10.00", "currency": "USD", "merchant_order_id": "order-1",
//!     "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"},
//! });
//! let response = merchant.post_json("/v1/payments", &charge, Some("order-1")).await?;
//! println!("{} {}", response.status, response.json()?["status"]);
//! # Ok(()) }
//! ```

pub mod admin;
pub mod http;
pub mod merchant;
pub mod sign;
pub mod webhook;

pub use admin::{AdminClient, MerchantCredentials};
pub use http::{ClientError, HttpClient, Response};
pub use merchant::MerchantClient;
pub use sign::{sign_v1, unix_now};
pub use webhook::{WebhookError, verify_webhook, webhook_signature};
