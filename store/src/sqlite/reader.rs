//! The read side: a bounded pool of read-only connections and the queries they run.
//!
//! A read takes a semaphore permit (so at most `readers` reads run, and the rest
//! wait asynchronously), then checks a connection out on a `spawn_blocking`
//! thread. Each query is its own read transaction, started after the caller
//! asked, so it sees every write whose future already resolved (WAL snapshot).

use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, Row, params};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::backend;
use crate::rows;
use crate::{
    IdempotencyRecord, JournalEntry, ListQuery, MerchantRecord, MethodRecord, Page, PaymentRow,
    RefundRow, StoreError, StoreResult,
};

pub(super) struct ReadPool {
    /// Idle connections. Invariant: at least as many as the semaphore's free permits.
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl ReadPool {
    pub(super) fn new(connections: Vec<Connection>) -> Self {
        let permits = Arc::new(Semaphore::new(connections.len()));
        Self {
            idle: Mutex::new(connections),
            permits,
        }
    }

    /// Runs `query` on a pooled connection. `Closed` after [`ReadPool::close`].
    pub(super) async fn run<T, F>(self: &Arc<Self>, query: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || Checkout::take(pool, permit)?.run(query))
            .await
            .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }

    /// Refuses new reads and closes idle connections; busy ones close when returned.
    pub(super) fn close(&self) {
        self.permits.close();
        self.idle.lock().clear();
    }
}

/// A connection out of the pool; goes back (or is closed) on drop, panics included.
struct Checkout {
    pool: Arc<ReadPool>,
    conn: Option<Connection>,
    // Dropped after `Drop::drop` returned the connection, keeping the pool invariant.
    _permit: OwnedSemaphorePermit,
}

impl Checkout {
    fn take(pool: Arc<ReadPool>, permit: OwnedSemaphorePermit) -> StoreResult<Self> {
        let conn = pool.idle.lock().pop();
        match conn {
            Some(conn) => Ok(Self {
                pool,
                conn: Some(conn),
                _permit: permit,
            }),
            // Only after close(), which also closed the semaphore under us.
            None => Err(StoreError::Closed),
        }
    }

    fn run<T>(&self, query: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        match &self.conn {
            Some(conn) => query(conn),
            // `conn` is Some from `take` until `drop`; this arm is never taken.
            None => Err(StoreError::Closed),
        }
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let mut idle = self.pool.idle.lock();
            // Checked under the lock `close` clears under, so a closed pool stays empty.
            if !self.pool.permits.is_closed() {
                idle.push(conn);
            }
        }
    }
}

// ---- queries (also used by the writer on its own connection) ----

/// The order's last journal seq, 0 if it has none.
pub(super) fn last_seq(conn: &Connection, order_id: &str) -> StoreResult<u64> {
    let seq: i64 = conn
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM journal WHERE order_id = ?1")
        .and_then(|mut select| select.query_row([order_id], |row| row.get(0)))
        .map_err(|e| backend(format!("order {order_id}: read last seq"), e))?;
    rows::last_seq(order_id, seq)
}

/// The order's journal in seq order; checks it is numbered 1, 2, … without gaps.
pub(super) fn load_journal(conn: &Connection, order_id: &str) -> StoreResult<Vec<JournalEntry>> {
    // One order's journal is tens of entries; it is read whole, like the domain replays it.
    let rows: Vec<(i64, String, String, i64)> = conn
        .prepare_cached(
            "SELECT seq, kind, body, at_ms FROM journal WHERE order_id = ?1 ORDER BY seq",
        )
        .and_then(|mut select| {
            select
                .query_map([order_id], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })?
                .collect()
        })
        .map_err(|e| backend(format!("order {order_id}: load journal"), e))?;
    rows.into_iter()
        .enumerate()
        .map(|(index, row)| rows::journal_entry(order_id, index, row))
        .collect()
}

macro_rules! payment_columns {
    () => {
        "id, merchant_id, merchant_order_id, status, created_ms, body, awaiting_channel"
    };
}

fn payment_from_row(row: &Row<'_>) -> rusqlite::Result<PaymentRow> {
    Ok(PaymentRow {
        id: row.get(0)?,
        merchant_id: row.get(1)?,
        merchant_order_id: row.get(2)?,
        status: row.get(3)?,
        created_ms: row.get(4)?,
        body: row.get(5)?,
        awaiting_channel: row.get(6)?,
    })
}

pub(super) fn get_payment(conn: &Connection, id: &str) -> StoreResult<Option<PaymentRow>> {
    conn.prepare_cached(concat!(
        "SELECT ",
        payment_columns!(),
        " FROM payments WHERE id = ?1"
    ))
    .and_then(|mut select| select.query_row([id], payment_from_row).optional())
    .map_err(|e| backend(format!("get payment {id}"), e))
}

/// The position of cursor `id` in `merchant_id`'s list: `(created_ms, id)`.
fn cursor_position(conn: &Connection, merchant_id: &str, id: &str) -> StoreResult<i64> {
    conn.prepare_cached("SELECT created_ms FROM payments WHERE id = ?1 AND merchant_id = ?2")
        .and_then(|mut select| {
            select
                .query_row([id, merchant_id], |row| row.get(0))
                .optional()
        })
        .map_err(|e| backend(format!("look up cursor {id}"), e))?
        .ok_or_else(|| StoreError::UnknownCursor(id.to_owned()))
}

/// One page of `merchant_id`'s payments, newest first by `(created_ms, id)`.
pub(super) fn list_payments(
    conn: &Connection,
    merchant_id: &str,
    query: &ListQuery,
) -> StoreResult<Page<PaymentRow>> {
    let limit = rows::page_limit(query);
    let fetch = rows::fetch_rows(limit);
    let after = match &query.starting_after {
        Some(id) => Some((cursor_position(conn, merchant_id, id)?, id.as_str())),
        None => None,
    };
    let before = match &query.ending_before {
        Some(id) => Some((cursor_position(conn, merchant_id, id)?, id.as_str())),
        None => None,
    };
    // Row-value comparisons keep each case a range scan of payments_by_merchant_newest.
    let (rows, oldest_first) = match (after, before) {
        (None, None) => (
            select_payments(
                conn,
                concat!(
                    "SELECT ",
                    payment_columns!(),
                    " FROM payments WHERE merchant_id = ?1
                     ORDER BY created_ms DESC, id DESC LIMIT ?2"
                ),
                params![merchant_id, fetch],
            )?,
            false,
        ),
        (Some((after_ms, after_id)), None) => (
            select_payments(
                conn,
                concat!(
                    "SELECT ",
                    payment_columns!(),
                    " FROM payments WHERE merchant_id = ?1 AND (created_ms, id) < (?2, ?3)
                     ORDER BY created_ms DESC, id DESC LIMIT ?4"
                ),
                params![merchant_id, after_ms, after_id, fetch],
            )?,
            false,
        ),
        (None, Some((before_ms, before_id))) => (
            select_payments(
                conn,
                concat!(
                    "SELECT ",
                    payment_columns!(),
                    " FROM payments WHERE merchant_id = ?1 AND (created_ms, id) > (?2, ?3)
                     ORDER BY created_ms ASC, id ASC LIMIT ?4"
                ),
                params![merchant_id, before_ms, before_id, fetch],
            )?,
            true,
        ),
        (Some((after_ms, after_id)), Some((before_ms, before_id))) => (
            select_payments(
                conn,
                concat!(
                    "SELECT ",
                    payment_columns!(),
                    " FROM payments WHERE merchant_id = ?1
                         AND (created_ms, id) < (?2, ?3) AND (created_ms, id) > (?4, ?5)
                     ORDER BY created_ms DESC, id DESC LIMIT ?6"
                ),
                params![merchant_id, after_ms, after_id, before_ms, before_id, fetch],
            )?,
            false,
        ),
    };
    Ok(rows::page(rows, limit, oldest_first))
}

fn select_payments(
    conn: &Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> StoreResult<Vec<PaymentRow>> {
    conn.prepare_cached(sql)
        .and_then(|mut select| select.query_map(params, payment_from_row)?.collect())
        .map_err(|e| backend("list payments", e))
}

/// Ids of payments in `status`, oldest first, at most `limit`.
pub(super) fn payment_ids_in_status(
    conn: &Connection,
    status: &str,
    limit: u32,
) -> StoreResult<Vec<String>> {
    conn.prepare_cached(
        "SELECT id FROM payments WHERE status = ?1 ORDER BY created_ms ASC, id ASC LIMIT ?2",
    )
    .and_then(|mut select| {
        select
            .query_map(params![status, limit], |row| row.get(0))?
            .collect()
    })
    .map_err(|e| backend(format!("list payment ids in status {status}"), e))
}

pub(super) fn payment_ids_awaiting_channel(
    conn: &Connection,
    limit: u32,
) -> StoreResult<Vec<String>> {
    conn.prepare_cached(
        "SELECT id FROM payments WHERE awaiting_channel = 1 ORDER BY created_ms ASC, id ASC LIMIT ?1",
    )
    .and_then(|mut select| select.query_map(params![limit], |row| row.get(0))?.collect())
    .map_err(|e| backend("list payment ids awaiting a channel".to_string(), e))
}

pub(super) fn get_refund(conn: &Connection, id: &str) -> StoreResult<Option<RefundRow>> {
    conn.prepare_cached(
        "SELECT id, payment_id, merchant_id, status, created_ms, body FROM refunds WHERE id = ?1",
    )
    .and_then(|mut select| {
        select
            .query_row([id], |row| {
                Ok(RefundRow {
                    id: row.get(0)?,
                    payment_id: row.get(1)?,
                    merchant_id: row.get(2)?,
                    status: row.get(3)?,
                    created_ms: row.get(4)?,
                    body: row.get(5)?,
                })
            })
            .optional()
    })
    .map_err(|e| backend(format!("get refund {id}"), e))
}

macro_rules! merchant_select {
    () => {
        "SELECT id, name, secret_sealed, webhook_url, webhook_secret_sealed, created_ms,
                previous_secret_sealed, previous_secret_expires_ms
         FROM merchants"
    };
}

fn merchant_from_row(row: &Row<'_>) -> rusqlite::Result<MerchantRecord> {
    Ok(MerchantRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        secret_sealed: row.get(2)?,
        webhook_url: row.get(3)?,
        webhook_secret_sealed: row.get(4)?,
        created_ms: row.get(5)?,
        previous_secret_sealed: row.get(6)?,
        previous_secret_expires_ms: row.get(7)?,
    })
}

pub(super) fn get_merchant(conn: &Connection, id: &str) -> StoreResult<Option<MerchantRecord>> {
    conn.prepare_cached(concat!(merchant_select!(), " WHERE id = ?1"))
        .and_then(|mut select| select.query_row([id], merchant_from_row).optional())
        .map_err(|e| backend(format!("get merchant {id}"), e))
}

/// Every merchant, oldest first. Merchants are onboarded by hand: tens to thousands.
pub(super) fn list_merchants(conn: &Connection) -> StoreResult<Vec<MerchantRecord>> {
    conn.prepare_cached(concat!(merchant_select!(), " ORDER BY created_ms, id"))
        .and_then(|mut select| select.query_map([], merchant_from_row)?.collect())
        .map_err(|e| backend("list merchants", e))
}

pub(super) fn get_idempotency(
    conn: &Connection,
    merchant_id: &str,
    key: &str,
) -> StoreResult<Option<IdempotencyRecord>> {
    conn.prepare_cached(
        "SELECT merchant_id, key, fingerprint, status, body, created_ms
         FROM idempotency WHERE merchant_id = ?1 AND key = ?2",
    )
    .and_then(|mut select| {
        select
            .query_row([merchant_id, key], |row| {
                Ok(IdempotencyRecord {
                    merchant_id: row.get(0)?,
                    key: row.get(1)?,
                    fingerprint: row.get(2)?,
                    status: row.get(3)?,
                    body: row.get(4)?,
                    created_ms: row.get(5)?,
                })
            })
            .optional()
    })
    .map_err(|e| {
        backend(
            format!("get idempotency record of merchant {merchant_id}"),
            e,
        )
    })
}

pub(super) fn list_methods(conn: &Connection) -> StoreResult<Vec<MethodRecord>> {
    conn.prepare_cached(
        "SELECT method, currency, channel, min_minor, max_minor, enabled, updated_ms
         FROM methods ORDER BY method, currency",
    )
    .and_then(|mut select| {
        select
            .query_map([], |row| {
                Ok(MethodRecord {
                    method: row.get(0)?,
                    currency: row.get(1)?,
                    channel: row.get(2)?,
                    min_minor: row.get(3)?,
                    max_minor: row.get(4)?,
                    enabled: row.get(5)?,
                    updated_ms: row.get(6)?,
                })
            })?
            .collect()
    })
    .map_err(|e| backend("list methods", e))
}
