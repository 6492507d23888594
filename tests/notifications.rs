//! Merchant callbacks end to end over the embedded transport (the outbox table and the
//! in-process dispatcher): the cases of `notifications/cases.rs`.

#[path = "notifications/common.rs"]
mod common;

#[path = "notifications/cases.rs"]
mod cases;

const TRANSPORT: common::Transport = common::Transport::Embedded;
