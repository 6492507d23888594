//! The outbox on SQLite: events and their deliveries, both sides.
//!
//! Writes run on the writer inside a request savepoint: [`insert_events`] is part of an
//! append (so an event exists exactly when its transition does), [`record_attempt`] and
//! [`requeue_deliveries`] are writes of their own. Reads run on the read pool.
//!
//! The list queries build their WHERE clause from the filter and the cursors (row-value
//! comparisons on `(created_ms, id)`, so each shape is a range scan of a `*_newest` index);
//! the shapes are few, and `prepare_cached` keeps them.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use super::backend;
use crate::rows;
use crate::{
    AttemptOutcome, AttemptRecord, DeliveryFilter, DeliveryRecord, DeliveryStatus, EventRecord,
    ListQuery, Page, StoreError, StoreResult, UnixMs,
};

// ---- writes ----

/// Inserts each event that is not stored yet, with a pending delivery due at its
/// `created_ms`. An id already stored is left as it is (and its delivery too).
pub(super) fn insert_events(conn: &Connection, events: &[EventRecord]) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut insert_event = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO events (id, merchant_id, kind, object_id, created_ms, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(|e| backend("prepare event insert", e))?;
    let mut insert_delivery = conn
        .prepare_cached(
            "INSERT INTO deliveries (event_id, merchant_id, event_kind, status, attempts,
                                     next_attempt_ms, created_ms, updated_ms)
             VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?4, ?4)",
        )
        .map_err(|e| backend("prepare delivery insert", e))?;
    for event in events {
        let inserted = insert_event
            .execute(params![
                event.id,
                event.merchant_id,
                event.kind,
                event.object_id,
                event.created_ms,
                event.body,
            ])
            .map_err(|e| backend(format!("insert event {}", event.id), e))?;
        debug_assert!(inserted <= 1);
        if inserted == 0 {
            continue; // Already stored by an earlier append: one event, one delivery.
        }
        insert_delivery
            .execute(params![
                event.id,
                event.merchant_id,
                event.kind,
                event.created_ms
            ])
            .map(|rows| debug_assert_eq!(rows, 1))
            .map_err(|e| backend(format!("insert the delivery of event {}", event.id), e))?;
    }
    Ok(())
}

/// Records the attempt (not for `NoEndpoint`) and moves the delivery on if it is still
/// pending. The attempt number is the caller's: a repeated number replaces its row.
pub(super) fn record_attempt(
    conn: &Connection,
    attempt: &AttemptRecord,
    outcome: &AttemptOutcome,
) -> StoreResult<()> {
    let event_id = attempt.event_id.as_str();
    let Some(status) = delivery_status(conn, event_id)? else {
        return Err(StoreError::Corrupt(format!(
            "an attempt at event {event_id}, which has no delivery"
        )));
    };
    if *outcome != AttemptOutcome::NoEndpoint {
        insert_attempt(conn, attempt)?;
    }
    match status {
        DeliveryStatus::Pending => {}
        // A replay, an operator or a racing sender moved it on: the attempt is kept, the
        // delivery left as it is.
        DeliveryStatus::Delivered | DeliveryStatus::Dead | DeliveryStatus::NoEndpoint => {
            return Ok(());
        }
    }
    let (status, attempts_added, next_attempt_ms) = rows::delivery_update(outcome);
    let rows = conn
        .prepare_cached(
            "UPDATE deliveries SET
                 status = ?1,
                 attempts = attempts + ?2,
                 next_attempt_ms = COALESCE(?3, next_attempt_ms),
                 updated_ms = ?4,
                 last_http_status = ?5,
                 last_error = ?6,
                 handed_off = 0
             WHERE event_id = ?7 AND status = 'pending'",
        )
        .and_then(|mut update| {
            update.execute(params![
                status.as_str(),
                attempts_added,
                next_attempt_ms,
                attempt.at_ms,
                attempt.http_status,
                attempt.error,
                event_id,
            ])
        })
        .map_err(|e| backend(format!("update the delivery of event {event_id}"), e))?;
    // The writer is the only writer and it read `pending` above, in this transaction.
    if rows != 1 {
        return Err(StoreError::Corrupt(format!(
            "the delivery of event {event_id} changed under the writer"
        )));
    }
    Ok(())
}

fn insert_attempt(conn: &Connection, attempt: &AttemptRecord) -> StoreResult<()> {
    let latency_ms = rows::stored_latency(attempt);
    conn.prepare_cached(
        "INSERT OR REPLACE INTO delivery_attempts
             (event_id, attempt, at_ms, http_status, latency_ms, error, response_excerpt)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut insert| {
        insert.execute(params![
            attempt.event_id,
            attempt.attempt,
            attempt.at_ms,
            attempt.http_status,
            latency_ms,
            attempt.error,
            attempt.response_excerpt,
        ])
    })
    .map(|rows| debug_assert_eq!(rows, 1))
    .map_err(|e| {
        backend(
            format!(
                "event {}: insert delivery attempt {}",
                attempt.event_id, attempt.attempt
            ),
            e,
        )
    })
}

/// Every matching delivery becomes pending, due at `now_ms`, attempts back to 0; returns how
/// many. One statement over every match: the admin layer bounds what a caller may requeue.
pub(super) fn requeue_deliveries(
    conn: &Connection,
    filter: &DeliveryFilter,
    now_ms: UnixMs,
) -> StoreResult<u64> {
    let mut clauses = Clauses::default();
    clauses.filter(filter);
    let sql = format!(
        "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_ms = ?, \
         updated_ms = ?, handed_off = 0 {}",
        clauses.where_sql()
    );
    let mut values = vec![Value::Integer(now_ms), Value::Integer(now_ms)];
    values.append(&mut clauses.values);
    let rows = conn
        .prepare_cached(&sql)
        .and_then(|mut update| update.execute(params_from_iter(values)))
        .map_err(|e| backend("requeue deliveries", e))?;
    Ok(u64::try_from(rows).unwrap_or(u64::MAX))
}

/// Marks each `(event_id, attempts)` as handed to the broker, if the delivery is still
/// pending at that many attempts (an attempt or a replay since then makes the mark stale).
/// Returns how many were marked.
pub(super) fn mark_handed_off(conn: &Connection, handoffs: &[(String, u32)]) -> StoreResult<u64> {
    let mut mark = conn
        .prepare_cached(
            "UPDATE deliveries SET handed_off = 1
             WHERE event_id = ?1 AND attempts = ?2 AND status = 'pending'",
        )
        .map_err(|e| backend("prepare the hand-off mark", e))?;
    let mut marked = 0u64;
    for (event_id, attempts) in handoffs {
        let rows = mark
            .execute(params![event_id, attempts])
            .map_err(|e| backend(format!("mark event {event_id} handed off"), e))?;
        marked += u64::try_from(rows).unwrap_or(0);
    }
    Ok(marked)
}

// ---- reads ----

macro_rules! event_columns {
    () => {
        "id, merchant_id, kind, object_id, created_ms, body"
    };
}

/// The event whose columns start at `first` (so a join can read it after the delivery's).
fn event_from_row(row: &Row<'_>, first: usize) -> rusqlite::Result<EventRecord> {
    Ok(EventRecord {
        id: row.get(first)?,
        merchant_id: row.get(first + 1)?,
        kind: row.get(first + 2)?,
        object_id: row.get(first + 3)?,
        created_ms: row.get(first + 4)?,
        body: row.get(first + 5)?,
    })
}

macro_rules! delivery_columns {
    () => {
        "event_id, merchant_id, event_kind, status, attempts, next_attempt_ms, created_ms,
         updated_ms, last_http_status, last_error"
    };
}

/// The number of columns `delivery_columns!` names.
const DELIVERY_COLUMNS: usize = 10;

/// A delivery row as read; its status is checked by [`into_delivery`].
struct RawDelivery {
    record: DeliveryRecord,
    status: String,
}

fn raw_delivery(row: &Row<'_>) -> rusqlite::Result<RawDelivery> {
    Ok(RawDelivery {
        record: DeliveryRecord {
            event_id: row.get(0)?,
            merchant_id: row.get(1)?,
            event_kind: row.get(2)?,
            // Replaced by `into_delivery` with the status read.
            status: DeliveryStatus::Pending,
            attempts: row.get(4)?,
            next_attempt_ms: row.get(5)?,
            created_ms: row.get(6)?,
            updated_ms: row.get(7)?,
            last_http_status: row.get(8)?,
            last_error: row.get(9)?,
        },
        status: row.get(3)?,
    })
}

fn into_delivery(raw: RawDelivery) -> StoreResult<DeliveryRecord> {
    let RawDelivery { mut record, status } = raw;
    record.status = rows::delivery_status(&record.event_id, &status)?;
    Ok(record)
}

pub(super) fn get_event(
    conn: &Connection,
    merchant_id: Option<&str>,
    id: &str,
) -> StoreResult<Option<EventRecord>> {
    conn.prepare_cached(concat!(
        "SELECT ",
        event_columns!(),
        " FROM events WHERE id = ?1 AND (?2 IS NULL OR merchant_id = ?2)"
    ))
    .and_then(|mut select| {
        select
            .query_row(params![id, merchant_id], |row| event_from_row(row, 0))
            .optional()
    })
    .map_err(|e| backend(format!("get event {id}"), e))
}

/// One page of a merchant's events, newest first by `(created_ms, id)`.
pub(super) fn list_events(
    conn: &Connection,
    merchant_id: &str,
    query: &ListQuery,
) -> StoreResult<Page<EventRecord>> {
    let cursor = |id: &String| -> StoreResult<(i64, String)> {
        let created_ms = conn
            .prepare_cached("SELECT created_ms FROM events WHERE id = ?1 AND merchant_id = ?2")
            .and_then(|mut select| {
                select
                    .query_row([id, merchant_id], |row| row.get(0))
                    .optional()
            })
            .map_err(|e| backend(format!("look up cursor {id}"), e))?
            .ok_or_else(|| StoreError::UnknownCursor(id.clone()))?;
        Ok((created_ms, id.clone()))
    };
    let mut clauses = Clauses::default();
    clauses.push("merchant_id", Value::Text(merchant_id.to_owned()));
    let paging = Paging::new(query, cursor)?;
    paging.select(
        conn,
        concat!("SELECT ", event_columns!(), " FROM events"),
        "id",
        clauses,
        |row| event_from_row(row, 0),
    )
}

/// Pending deliveries due at `now_ms`, oldest due first, with their events.
pub(super) fn due_deliveries(
    conn: &Connection,
    now_ms: UnixMs,
    limit: u32,
) -> StoreResult<Vec<(DeliveryRecord, EventRecord)>> {
    let raw: Vec<(RawDelivery, EventRecord)> = conn
        .prepare_cached(
            "SELECT d.event_id, d.merchant_id, d.event_kind, d.status, d.attempts,
                    d.next_attempt_ms, d.created_ms, d.updated_ms, d.last_http_status,
                    d.last_error,
                    e.id, e.merchant_id, e.kind, e.object_id, e.created_ms, e.body
             FROM deliveries d JOIN events e ON e.id = d.event_id
             WHERE d.status = 'pending' AND d.next_attempt_ms <= ?1
             ORDER BY d.next_attempt_ms ASC, d.event_id ASC LIMIT ?2",
        )
        .and_then(|mut select| {
            select
                .query_map(params![now_ms, limit], |row| {
                    Ok((raw_delivery(row)?, event_from_row(row, DELIVERY_COLUMNS)?))
                })?
                .collect()
        })
        .map_err(|e| backend("list due deliveries", e))?;
    raw.into_iter()
        .map(|(delivery, event)| Ok((into_delivery(delivery)?, event)))
        .collect()
}

/// Pending deliveries due at `now_ms` with no message in the broker, oldest due first: what
/// the broker relay publishes.
pub(super) fn relay_due(
    conn: &Connection,
    now_ms: UnixMs,
    limit: u32,
) -> StoreResult<Vec<DeliveryRecord>> {
    let raw: Vec<RawDelivery> = conn
        .prepare_cached(concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM deliveries
             WHERE status = 'pending' AND handed_off = 0 AND next_attempt_ms <= ?1
             ORDER BY next_attempt_ms ASC, event_id ASC LIMIT ?2"
        ))
        .and_then(|mut select| {
            select
                .query_map(params![now_ms, limit], raw_delivery)?
                .collect()
        })
        .map_err(|e| backend("list deliveries to relay", e))?;
    raw.into_iter().map(into_delivery).collect()
}

pub(super) fn next_delivery_due(conn: &Connection) -> StoreResult<Option<UnixMs>> {
    conn.prepare_cached("SELECT MIN(next_attempt_ms) FROM deliveries WHERE status = 'pending'")
        .and_then(|mut select| select.query_row([], |row| row.get(0)))
        .map_err(|e| backend("read the next delivery due", e))
}

fn delivery_status(conn: &Connection, event_id: &str) -> StoreResult<Option<DeliveryStatus>> {
    get_delivery(conn, event_id).map(|delivery| delivery.map(|d| d.status))
}

pub(super) fn get_delivery(
    conn: &Connection,
    event_id: &str,
) -> StoreResult<Option<DeliveryRecord>> {
    conn.prepare_cached(concat!(
        "SELECT ",
        delivery_columns!(),
        " FROM deliveries WHERE event_id = ?1"
    ))
    .and_then(|mut select| select.query_row([event_id], raw_delivery).optional())
    .map_err(|e| backend(format!("get the delivery of event {event_id}"), e))?
    .map(into_delivery)
    .transpose()
}

/// One page of the deliveries matching `filter`, newest first by `(created_ms, event_id)`.
/// A cursor must be a delivery (of the filter's merchant, if it names one); its status may
/// have changed since the previous page.
pub(super) fn list_deliveries(
    conn: &Connection,
    filter: &DeliveryFilter,
    query: &ListQuery,
) -> StoreResult<Page<DeliveryRecord>> {
    let merchant_id = filter.merchant_id.as_deref();
    let cursor = |id: &String| -> StoreResult<(i64, String)> {
        let created_ms = conn
            .prepare_cached(
                "SELECT created_ms FROM deliveries
                 WHERE event_id = ?1 AND (?2 IS NULL OR merchant_id = ?2)",
            )
            .and_then(|mut select| {
                select
                    .query_row(params![id, merchant_id], |row| row.get(0))
                    .optional()
            })
            .map_err(|e| backend(format!("look up cursor {id}"), e))?
            .ok_or_else(|| StoreError::UnknownCursor(id.clone()))?;
        Ok((created_ms, id.clone()))
    };
    let mut clauses = Clauses::default();
    clauses.filter(filter);
    let paging = Paging::new(query, cursor)?;
    let raw = paging.select(
        conn,
        concat!("SELECT ", delivery_columns!(), " FROM deliveries"),
        "event_id",
        clauses,
        raw_delivery,
    )?;
    rows::convert_page(raw, into_delivery)
}

/// Every attempt of one delivery, oldest (lowest number) first.
pub(super) fn delivery_attempts(
    conn: &Connection,
    event_id: &str,
) -> StoreResult<Vec<AttemptRecord>> {
    let rows: Vec<(AttemptRecord, i64)> = conn
        .prepare_cached(
            "SELECT event_id, attempt, at_ms, http_status, error, response_excerpt, latency_ms
             FROM delivery_attempts WHERE event_id = ?1 ORDER BY attempt ASC",
        )
        .and_then(|mut select| {
            select
                .query_map([event_id], |row| {
                    let attempt = AttemptRecord {
                        event_id: row.get(0)?,
                        attempt: row.get(1)?,
                        at_ms: row.get(2)?,
                        http_status: row.get(3)?,
                        latency_ms: 0,
                        error: row.get(4)?,
                        response_excerpt: row.get(5)?,
                    };
                    Ok((attempt, row.get(6)?))
                })?
                .collect()
        })
        .map_err(|e| backend(format!("list the attempts of event {event_id}"), e))?;
    rows.into_iter()
        .map(|(mut attempt, latency_ms)| {
            attempt.latency_ms = rows::attempt_latency(event_id, attempt.attempt, latency_ms)?;
            Ok(attempt)
        })
        .collect()
}

// ---- query building ----

/// WHERE clauses joined by AND, with their `?` values in order.
#[derive(Default)]
struct Clauses {
    sql: Vec<String>,
    values: Vec<Value>,
}

impl Clauses {
    /// `column = ?`, the value being `value`.
    fn push(&mut self, column: &'static str, value: Value) {
        self.sql.push(format!("{column} = ?"));
        self.values.push(value);
    }

    fn filter(&mut self, filter: &DeliveryFilter) {
        for (column, value) in rows::filter_columns(filter) {
            self.push(column, Value::Text(value));
        }
    }

    /// `WHERE a AND b …`, or nothing when there is no clause.
    fn where_sql(&self) -> String {
        if self.sql.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.sql.join(" AND "))
        }
    }
}

/// A newest-first page request with its cursors resolved to `(created_ms, id)`.
struct Paging {
    limit: u32,
    after: Option<(i64, String)>,
    before: Option<(i64, String)>,
}

impl Paging {
    fn new(
        query: &ListQuery,
        cursor: impl Fn(&String) -> StoreResult<(i64, String)>,
    ) -> StoreResult<Self> {
        Ok(Self {
            limit: rows::page_limit(query),
            after: query.starting_after.as_ref().map(&cursor).transpose()?,
            before: query.ending_before.as_ref().map(&cursor).transpose()?,
        })
    }

    /// Runs `select` (which has no WHERE) with `clauses` and the cursor bounds, ordered by
    /// `(created_ms, id_column)`. `ending_before` alone pages backwards: it reads the rows just
    /// above the cursor oldest first, then returns them newest first like every page.
    fn select<T>(
        self,
        conn: &Connection,
        select: &str,
        id_column: &str,
        mut clauses: Clauses,
        from_row: impl Fn(&Row<'_>) -> rusqlite::Result<T>,
    ) -> StoreResult<Page<T>> {
        let oldest_first = self.before.is_some() && self.after.is_none();
        let mut where_sql = clauses.where_sql();
        for (bound, op) in [(self.after, '<'), (self.before, '>')] {
            let Some((created_ms, id)) = bound else {
                continue;
            };
            where_sql = format!(
                "{where_sql} {} (created_ms, {id_column}) {op} (?, ?)",
                if where_sql.is_empty() { "WHERE" } else { "AND" }
            );
            clauses.values.push(Value::Integer(created_ms));
            clauses.values.push(Value::Text(id));
        }
        let order = if oldest_first { "ASC" } else { "DESC" };
        let sql = format!(
            "{select} {where_sql} ORDER BY created_ms {order}, {id_column} {order} LIMIT ?"
        );
        clauses
            .values
            .push(Value::Integer(rows::fetch_rows(self.limit)));
        let rows: Vec<T> = conn
            .prepare_cached(&sql)
            .and_then(|mut stmt| {
                stmt.query_map(params_from_iter(clauses.values), &from_row)?
                    .collect()
            })
            .map_err(|e| backend("list outbox rows", e))?;
        Ok(rows::page(rows, self.limit, oldest_first))
    }
}
