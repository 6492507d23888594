//! OTP-style supervision for Kassa's actix actors.
//!
//! This crate will own supervisor actors, restart strategies (`one_for_one`, `one_for_all`,
//! `rest_for_one`, dynamic children), restart types (`permanent`, `transient`, `temporary`),
//! restart intensity with escalation, and a serialisable snapshot of the live tree for the
//! operators' dashboard.
//!
//! The foundation needs none of it yet: order actors are started on demand by
//! `kassa_actors::order_directory`, one shard per arbiter, and rebuild themselves from the
//! journal whenever they are started again. The supervision work builds the tree here.
