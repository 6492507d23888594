//! Backend-neutral reading of stored rows: the conversions and checks both backends apply to
//! what a query returned, the paging both lists share, and what a wallet move or a delivery
//! attempt decides from what it read. The queries stay in each backend (their SQL and
//! parameter syntax differ); what they read is handed here as plain values.

use std::collections::BTreeMap;

use crate::{
    AttemptOutcome, AttemptRecord, DeliveryFilter, DeliveryStatus, JournalEntry, ListQuery, Page,
    StoreError, StoreResult, UnixMs, WalletMove, WalletMoveOutcome, WalletMovement,
    WalletMovementKind,
};

/// A journal seq as SQLite's INTEGER and PostgreSQL's BIGINT store it.
pub(crate) fn i64_from_seq(seq: u64) -> StoreResult<i64> {
    i64::try_from(seq).map_err(|_| StoreError::Corrupt(format!("seq {seq} exceeds i64")))
}

// ---- journal ----

/// The journal entry at `index` of an order's journal read in seq order, checked to be
/// numbered `index + 1` (the journal has no gaps).
pub(crate) fn journal_entry(
    order_id: &str,
    index: usize,
    (seq, kind, body, at_ms): (i64, String, String, i64),
) -> StoreResult<JournalEntry> {
    let expected = u64::try_from(index).map_or(u64::MAX, |i| i.saturating_add(1));
    if i64_from_seq(expected)? != seq {
        return Err(StoreError::Corrupt(format!(
            "order {order_id}: journal seq {seq} where {expected} was expected"
        )));
    }
    Ok(JournalEntry {
        seq: expected,
        kind,
        body,
        at_ms,
    })
}

/// An order's last seq as read (0 for none), which is never negative.
pub(crate) fn last_seq(order_id: &str, seq: i64) -> StoreResult<u64> {
    u64::try_from(seq)
        .map_err(|_| StoreError::Corrupt(format!("order {order_id}: negative seq {seq}")))
}

// ---- paging ----

/// Largest page a list returns, whatever the caller asks.
pub(crate) const LIST_LIMIT_MAX: u32 = 100;

/// The rows a page holds: the caller's limit, within 1..=[`LIST_LIMIT_MAX`].
pub(crate) fn page_limit(query: &ListQuery) -> u32 {
    query.limit.clamp(1, LIST_LIMIT_MAX)
}

/// The rows to fetch for a page of `limit`: one more tells whether there are more.
pub(crate) fn fetch_rows(limit: u32) -> i64 {
    i64::from(limit) + 1
}

/// `ending_before` alone pages backwards: the query reads the rows just above the cursor
/// oldest first, and [`page`] turns them newest first like every page.
pub(crate) fn oldest_first(query: &ListQuery) -> bool {
    query.ending_before.is_some() && query.starting_after.is_none()
}

/// The page out of at most `limit + 1` fetched rows, newest first.
pub(crate) fn page<T>(mut rows: Vec<T>, limit: u32, oldest_first: bool) -> Page<T> {
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    if oldest_first {
        rows.reverse();
    }
    Page { rows, has_more }
}

/// Converts every row of a page, keeping its order and `has_more`.
pub(crate) fn convert_page<R, T>(
    page: Page<R>,
    convert: impl FnMut(R) -> StoreResult<T>,
) -> StoreResult<Page<T>> {
    Ok(Page {
        rows: page
            .rows
            .into_iter()
            .map(convert)
            .collect::<StoreResult<_>>()?,
        has_more: page.has_more,
    })
}

// ---- wallets ----

/// A wallet's metadata as stored: a JSON object of strings.
pub(crate) fn metadata_json(metadata: &BTreeMap<String, String>) -> StoreResult<String> {
    serde_json::to_string(metadata)
        .map_err(|_| StoreError::Corrupt("wallet metadata does not serialise".into()))
}

/// Wallet `id`'s stored metadata, read back.
pub(crate) fn parse_metadata(id: &str, metadata: &str) -> StoreResult<BTreeMap<String, String>> {
    serde_json::from_str(metadata)
        .map_err(|_| StoreError::Corrupt(format!("wallet {id}: metadata is not a string map")))
}

/// A movement row as read (`key, wallet_id, kind, amount_minor, balance_after_minor,
/// reference, at_ms`); `kind` is checked by [`into_movement`].
pub(crate) type RawMovement = (String, String, String, i64, i64, Option<String>, i64);

pub(crate) fn into_movement(raw: RawMovement) -> StoreResult<WalletMovement> {
    let (key, wallet_id, kind, amount_minor, balance_after_minor, reference, at_ms) = raw;
    let kind = WalletMovementKind::from_name(&kind)
        .ok_or_else(|| StoreError::Corrupt(format!("wallet {wallet_id}: unknown movement kind")))?;
    Ok(WalletMovement {
        key,
        wallet_id,
        kind,
        amount_minor,
        balance_after_minor,
        reference,
        at_ms,
    })
}

/// The part of a wallet a move needs.
pub(crate) struct Balance {
    pub(crate) merchant_id: String,
    pub(crate) currency: String,
    pub(crate) balance_minor: i64,
}

/// What an earlier movement under the move's key answers: the same move is replayed, any
/// other is refused.
pub(crate) fn replayed(earlier: WalletMovement, m: &WalletMove) -> WalletMoveOutcome {
    let same = earlier.wallet_id == m.wallet_id
        && earlier.kind == m.kind
        && earlier.amount_minor == m.amount_minor;
    if same {
        WalletMoveOutcome::Replayed(earlier)
    } else {
        WalletMoveOutcome::KeyReused
    }
}

/// The last checks of a move whose key is fresh and whose currency matches: the wallet's
/// balance must be what its last movement `(last_seq, last_balance)` left, and a debit must
/// be covered. `Ok(Ok(movement))` is the movement to insert (as seq `last_seq + 1`) and
/// whose balance to set; `Ok(Err(outcome))` refuses the move.
pub(crate) fn plan_move(
    m: &WalletMove,
    wallet: &Balance,
    (last_seq, last_balance): (i64, i64),
) -> StoreResult<Result<WalletMovement, WalletMoveOutcome>> {
    if last_balance != wallet.balance_minor {
        return Err(StoreError::Corrupt(format!(
            "wallet {}: balance {} but movement {last_seq} left {last_balance}",
            m.wallet_id, wallet.balance_minor
        )));
    }
    let balance_after_minor = if m.kind.is_credit() {
        wallet
            .balance_minor
            .checked_add(m.amount_minor)
            .ok_or_else(|| {
                StoreError::LimitExceeded(format!(
                    "wallet {}: balance would exceed i64 minor units",
                    m.wallet_id
                ))
            })?
    } else if m.amount_minor > wallet.balance_minor {
        return Ok(Err(WalletMoveOutcome::InsufficientFunds {
            balance_minor: wallet.balance_minor,
        }));
    } else {
        wallet.balance_minor - m.amount_minor
    };
    debug_assert!(balance_after_minor >= 0);
    Ok(Ok(WalletMovement {
        key: m.key.clone(),
        wallet_id: m.wallet_id.clone(),
        kind: m.kind,
        amount_minor: m.amount_minor,
        balance_after_minor,
        reference: m.reference.clone(),
        at_ms: m.at_ms,
    }))
}

// ---- the outbox ----

/// A delivery's stored status, by name.
pub(crate) fn delivery_status(event_id: &str, status: &str) -> StoreResult<DeliveryStatus> {
    DeliveryStatus::from_name(status).ok_or_else(|| {
        StoreError::Corrupt(format!("the delivery of event {event_id}: unknown status"))
    })
}

/// How an attempt's outcome moves a pending delivery on: its new status, the attempts it
/// adds, and its next attempt's due time (`None` keeps the stored one).
pub(crate) fn delivery_update(outcome: &AttemptOutcome) -> (DeliveryStatus, i64, Option<UnixMs>) {
    match outcome {
        AttemptOutcome::Delivered => (DeliveryStatus::Delivered, 1, None),
        AttemptOutcome::Retry { next_attempt_ms } => {
            (DeliveryStatus::Pending, 1, Some(*next_attempt_ms))
        }
        AttemptOutcome::Dead => (DeliveryStatus::Dead, 1, None),
        AttemptOutcome::NoEndpoint => (DeliveryStatus::NoEndpoint, 0, None),
    }
}

/// An attempt's latency as stored (a signed 64-bit integer; longer is stored as the most).
pub(crate) fn stored_latency(attempt: &AttemptRecord) -> i64 {
    // The handle cut the excerpt before queueing (`check_attempt`).
    debug_assert!(attempt.response_excerpt.len() <= crate::ATTEMPT_RESPONSE_BYTES_MAX);
    i64::try_from(attempt.latency_ms).unwrap_or(i64::MAX)
}

/// A stored latency read back, which is never negative.
pub(crate) fn attempt_latency(event_id: &str, attempt: u32, latency_ms: i64) -> StoreResult<u64> {
    u64::try_from(latency_ms).map_err(|_| {
        StoreError::Corrupt(format!(
            "event {event_id}: attempt {attempt} has a negative latency"
        ))
    })
}

/// The columns a [`DeliveryFilter`] pins and their values, in the order both backends bind
/// them.
pub(crate) fn filter_columns(filter: &DeliveryFilter) -> Vec<(&'static str, String)> {
    let mut columns = Vec::new();
    if let Some(status) = filter.status {
        columns.push(("status", status.as_str().to_owned()));
    }
    if let Some(merchant_id) = &filter.merchant_id {
        columns.push(("merchant_id", merchant_id.clone()));
    }
    if let Some(event_id) = &filter.event_id {
        columns.push(("event_id", event_id.clone()));
    }
    columns
}
