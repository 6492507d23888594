//! Merchant callbacks end to end over the RabbitMQ transport, against the real broker on
//! 127.0.0.1:5672: the cases of `notifications/cases.rs` (the same as the embedded transport's:
//! schedule, dead letters and replay, no head-of-line blocking, Stripe-compatible signatures,
//! SIGKILL mid-delivery). Each instance has its own queue prefix, deleted afterwards. Without a
//! broker the tests skip with a printed reason; under `CI=true` they fail.

#[path = "notifications/common.rs"]
mod common;

#[path = "notifications/cases.rs"]
mod cases;

const TRANSPORT: common::Transport = common::Transport::RabbitMq;
