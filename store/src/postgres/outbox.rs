//! The outbox on PostgreSQL: events and their deliveries, both sides.
//!
//! Writes run on the writer inside a request savepoint: [`insert_events`] is part of an
//! append (so an event exists exactly when its transition does), [`record_attempt`],
//! [`requeue_deliveries`] and [`mark_handed_off`] are writes of their own. Reads run on the
//! pool.
//!
//! The list queries build their WHERE clause from the filter and the cursors (row-value
//! comparisons on `(created_ms, id)`, each shape a range scan of a `*_newest` index), with
//! numbered parameters; the shapes are few, and `prepare_cached` keeps them per connection.

use deadpool_postgres::Client;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::{backend, execute, out_of_range, query, query_opt};
use crate::rows;
use crate::{
    AttemptOutcome, AttemptRecord, DeliveryFilter, DeliveryRecord, DeliveryStatus, EventRecord,
    ListQuery, Page, StoreError, StoreResult, UnixMs,
};

// ---- writes ----

/// Inserts each event that is not stored yet, with a pending delivery due at its
/// `created_ms`. An id already stored is left as it is (and its delivery too).
pub(super) async fn insert_events(client: &Client, events: &[EventRecord]) -> StoreResult<()> {
    for event in events {
        let inserted = execute(
            client,
            "INSERT INTO events (id, merchant_id, kind, object_id, created_ms, body)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (id) DO NOTHING",
            &[
                &event.id,
                &event.merchant_id,
                &event.kind,
                &event.object_id,
                &event.created_ms,
                &event.body,
            ],
        )
        .await
        .map_err(|e| backend(format!("insert event {}", event.id), e))?;
        debug_assert!(inserted <= 1);
        if inserted == 0 {
            continue; // Already stored by an earlier append: one event, one delivery.
        }
        execute(
            client,
            "INSERT INTO deliveries (event_id, merchant_id, event_kind, status, attempts,
                                     next_attempt_ms, created_ms, updated_ms)
             VALUES ($1, $2, $3, 'pending', 0, $4, $4, $4)",
            &[
                &event.id,
                &event.merchant_id,
                &event.kind,
                &event.created_ms,
            ],
        )
        .await
        .map(|rows| debug_assert_eq!(rows, 1))
        .map_err(|e| backend(format!("insert the delivery of event {}", event.id), e))?;
    }
    Ok(())
}

/// Records the attempt (not for `NoEndpoint`) and moves the delivery on if it is still
/// pending. The attempt number is the caller's: a repeated number replaces its row. The
/// delivery's row is locked first, so another node cannot move it on in between.
pub(super) async fn record_attempt(
    client: &Client,
    attempt: &AttemptRecord,
    outcome: &AttemptOutcome,
) -> StoreResult<()> {
    let event_id = attempt.event_id.as_str();
    let status: Option<String> = query_opt(
        client,
        "SELECT status FROM deliveries WHERE event_id = $1 FOR UPDATE",
        &[&event_id],
    )
    .await
    .and_then(|row| row.map(|row| row.try_get(0)).transpose())
    .map_err(|e| backend(format!("get the delivery of event {event_id}"), e))?;
    let Some(status) = status else {
        return Err(StoreError::Corrupt(format!(
            "an attempt at event {event_id}, which has no delivery"
        )));
    };
    let status = rows::delivery_status(event_id, &status)?;
    if *outcome != AttemptOutcome::NoEndpoint {
        insert_attempt(client, attempt).await?;
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
    let rows = execute(
        client,
        "UPDATE deliveries SET
             status = $1,
             attempts = attempts + $2,
             next_attempt_ms = COALESCE($3::bigint, next_attempt_ms),
             updated_ms = $4,
             last_http_status = $5,
             last_error = $6,
             handed_off = FALSE
         WHERE event_id = $7 AND status = 'pending'",
        &[
            &status.as_str(),
            &attempts_added,
            &next_attempt_ms,
            &attempt.at_ms,
            &attempt.http_status.map(i32::from),
            &attempt.error,
            &event_id,
        ],
    )
    .await
    .map_err(|e| backend(format!("update the delivery of event {event_id}"), e))?;
    // The row is locked by this transaction and was read `pending` above.
    if rows != 1 {
        return Err(StoreError::Corrupt(format!(
            "the delivery of event {event_id} changed under the writer"
        )));
    }
    Ok(())
}

async fn insert_attempt(client: &Client, attempt: &AttemptRecord) -> StoreResult<()> {
    let latency_ms = rows::stored_latency(attempt);
    execute(
        client,
        "INSERT INTO delivery_attempts
             (event_id, attempt, at_ms, http_status, latency_ms, error, response_excerpt)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (event_id, attempt) DO UPDATE SET
             at_ms = excluded.at_ms, http_status = excluded.http_status,
             latency_ms = excluded.latency_ms, error = excluded.error,
             response_excerpt = excluded.response_excerpt",
        &[
            &attempt.event_id,
            &i64::from(attempt.attempt),
            &attempt.at_ms,
            &attempt.http_status.map(i32::from),
            &latency_ms,
            &attempt.error,
            &attempt.response_excerpt,
        ],
    )
    .await
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
pub(super) async fn requeue_deliveries(
    client: &Client,
    filter: &DeliveryFilter,
    now_ms: UnixMs,
) -> StoreResult<u64> {
    let mut clauses = Clauses::default();
    clauses.values.push(Value::Integer(now_ms)); // $1
    clauses.filter(filter);
    let sql = format!(
        "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_ms = $1, \
         updated_ms = $1, handed_off = FALSE {}",
        clauses.where_sql()
    );
    execute(client, &sql, &clauses.params())
        .await
        .map_err(|e| backend("requeue deliveries", e))
}

/// Marks each `(event_id, attempts)` as handed to the broker, if the delivery is still
/// pending at that many attempts (an attempt or a replay since then makes the mark stale).
/// Returns how many were marked.
pub(super) async fn mark_handed_off(
    client: &Client,
    handoffs: &[(String, u32)],
) -> StoreResult<u64> {
    let mut marked = 0u64;
    for (event_id, attempts) in handoffs {
        marked += execute(
            client,
            "UPDATE deliveries SET handed_off = TRUE
             WHERE event_id = $1 AND attempts = $2 AND status = 'pending'",
            &[event_id, &i64::from(*attempts)],
        )
        .await
        .map_err(|e| backend(format!("mark event {event_id} handed off"), e))?;
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
fn event_from_row(row: &Row, first: usize) -> Result<EventRecord, tokio_postgres::Error> {
    Ok(EventRecord {
        id: row.try_get(first)?,
        merchant_id: row.try_get(first + 1)?,
        kind: row.try_get(first + 2)?,
        object_id: row.try_get(first + 3)?,
        created_ms: row.try_get(first + 4)?,
        body: row.try_get(first + 5)?,
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

/// A delivery row as read; its status and numbers are checked by [`into_delivery`].
struct RawDelivery {
    record: DeliveryRecord,
    status: String,
    attempts: i64,
    last_http_status: Option<i32>,
}

fn raw_delivery(row: &Row) -> Result<RawDelivery, tokio_postgres::Error> {
    Ok(RawDelivery {
        record: DeliveryRecord {
            event_id: row.try_get(0)?,
            merchant_id: row.try_get(1)?,
            event_kind: row.try_get(2)?,
            // Replaced by `into_delivery` with the values read.
            status: DeliveryStatus::Pending,
            attempts: 0,
            next_attempt_ms: row.try_get(5)?,
            created_ms: row.try_get(6)?,
            updated_ms: row.try_get(7)?,
            last_http_status: None,
            last_error: row.try_get(9)?,
        },
        status: row.try_get(3)?,
        attempts: row.try_get(4)?,
        last_http_status: row.try_get(8)?,
    })
}

fn into_delivery(raw: RawDelivery) -> StoreResult<DeliveryRecord> {
    let RawDelivery {
        mut record,
        status,
        attempts,
        last_http_status,
    } = raw;
    record.status = rows::delivery_status(&record.event_id, &status)?;
    record.attempts = u32::try_from(attempts).map_err(|_| {
        out_of_range(format!(
            "the delivery of event {}: attempts",
            record.event_id
        ))
    })?;
    record.last_http_status = last_http_status
        .map(u16::try_from)
        .transpose()
        .map_err(|_| {
            out_of_range(format!(
                "the delivery of event {}: last HTTP status",
                record.event_id
            ))
        })?;
    Ok(record)
}

pub(super) async fn get_event(
    client: &Client,
    merchant_id: Option<&str>,
    id: &str,
) -> StoreResult<Option<EventRecord>> {
    query_opt(
        client,
        concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE id = $1 AND ($2::text IS NULL OR merchant_id = $2::text)"
        ),
        &[&id, &merchant_id],
    )
    .await
    .and_then(|row| row.map(|row| event_from_row(&row, 0)).transpose())
    .map_err(|e| backend(format!("get event {id}"), e))
}

/// One page of a merchant's events, newest first by `(created_ms, id)`.
pub(super) async fn list_events(
    client: &Client,
    merchant_id: &str,
    query_: &ListQuery,
) -> StoreResult<Page<EventRecord>> {
    let mut clauses = Clauses::default();
    clauses.push("merchant_id", Value::Text(merchant_id.to_owned()));
    let paging = Paging::resolve(
        client,
        query_,
        "SELECT created_ms FROM events WHERE id = $1 AND merchant_id = $2",
        &merchant_id,
    )
    .await?;
    let rows = paging
        .select(
            client,
            concat!("SELECT ", event_columns!(), " FROM events"),
            "id",
            clauses,
        )
        .await?;
    rows::convert_page(rows, |row| {
        event_from_row(&row, 0).map_err(|e| backend("list events", e))
    })
}

/// Pending deliveries due at `now_ms`, oldest due first, with their events.
pub(super) async fn due_deliveries(
    client: &Client,
    now_ms: UnixMs,
    limit: u32,
) -> StoreResult<Vec<(DeliveryRecord, EventRecord)>> {
    let raw: Vec<(RawDelivery, EventRecord)> = query(
        client,
        "SELECT d.event_id, d.merchant_id, d.event_kind, d.status, d.attempts,
                d.next_attempt_ms, d.created_ms, d.updated_ms, d.last_http_status,
                d.last_error,
                e.id, e.merchant_id, e.kind, e.object_id, e.created_ms, e.body
         FROM deliveries d JOIN events e ON e.id = d.event_id
         WHERE d.status = 'pending' AND d.next_attempt_ms <= $1
         ORDER BY d.next_attempt_ms ASC, d.event_id ASC LIMIT $2",
        &[&now_ms, &i64::from(limit)],
    )
    .await
    .and_then(|rows| {
        rows.iter()
            .map(|row| Ok((raw_delivery(row)?, event_from_row(row, DELIVERY_COLUMNS)?)))
            .collect()
    })
    .map_err(|e| backend("list due deliveries", e))?;
    raw.into_iter()
        .map(|(delivery, event)| Ok((into_delivery(delivery)?, event)))
        .collect()
}

/// Pending deliveries due at `now_ms` with no message in the broker, oldest due first: what
/// the broker relay publishes.
pub(super) async fn relay_due(
    client: &Client,
    now_ms: UnixMs,
    limit: u32,
) -> StoreResult<Vec<DeliveryRecord>> {
    let raw: Vec<RawDelivery> = query(
        client,
        concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM deliveries
             WHERE status = 'pending' AND NOT handed_off AND next_attempt_ms <= $1
             ORDER BY next_attempt_ms ASC, event_id ASC LIMIT $2"
        ),
        &[&now_ms, &i64::from(limit)],
    )
    .await
    .and_then(|rows| rows.iter().map(raw_delivery).collect())
    .map_err(|e| backend("list deliveries to relay", e))?;
    raw.into_iter().map(into_delivery).collect()
}

pub(super) async fn next_delivery_due(client: &Client) -> StoreResult<Option<UnixMs>> {
    query_opt(
        client,
        "SELECT MIN(next_attempt_ms) FROM deliveries WHERE status = 'pending'",
        &[],
    )
    .await
    .and_then(|row| row.map_or(Ok(None), |row| row.try_get(0)))
    .map_err(|e| backend("read the next delivery due", e))
}

pub(super) async fn get_delivery(
    client: &Client,
    event_id: &str,
) -> StoreResult<Option<DeliveryRecord>> {
    query_opt(
        client,
        concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM deliveries WHERE event_id = $1"
        ),
        &[&event_id],
    )
    .await
    .and_then(|row| row.as_ref().map(raw_delivery).transpose())
    .map_err(|e| backend(format!("get the delivery of event {event_id}"), e))?
    .map(into_delivery)
    .transpose()
}

/// One page of the deliveries matching `filter`, newest first by `(created_ms, event_id)`.
/// A cursor must be a delivery (of the filter's merchant, if it names one); its status may
/// have changed since the previous page.
pub(super) async fn list_deliveries(
    client: &Client,
    filter: &DeliveryFilter,
    query_: &ListQuery,
) -> StoreResult<Page<DeliveryRecord>> {
    let merchant_id = filter.merchant_id.as_deref();
    let mut clauses = Clauses::default();
    clauses.filter(filter);
    let paging = Paging::resolve(
        client,
        query_,
        "SELECT created_ms FROM deliveries
         WHERE event_id = $1 AND ($2::text IS NULL OR merchant_id = $2::text)",
        &merchant_id,
    )
    .await?;
    let rows = paging
        .select(
            client,
            concat!("SELECT ", delivery_columns!(), " FROM deliveries"),
            "event_id",
            clauses,
        )
        .await?;
    let raw = rows::convert_page(rows, |row| {
        raw_delivery(&row).map_err(|e| backend("list deliveries", e))
    })?;
    rows::convert_page(raw, into_delivery)
}

/// Every attempt of one delivery, oldest (lowest number) first.
pub(super) async fn delivery_attempts(
    client: &Client,
    event_id: &str,
) -> StoreResult<Vec<AttemptRecord>> {
    let rows = query(
        client,
        "SELECT event_id, attempt, at_ms, http_status, error, response_excerpt, latency_ms
         FROM delivery_attempts WHERE event_id = $1 ORDER BY attempt ASC",
        &[&event_id],
    )
    .await
    .map_err(|e| backend(format!("list the attempts of event {event_id}"), e))?;
    rows.iter()
        .map(|row| {
            let read = || -> Result<_, tokio_postgres::Error> {
                let attempt: i64 = row.try_get(1)?;
                let http_status: Option<i32> = row.try_get(3)?;
                let latency_ms: i64 = row.try_get(6)?;
                let record = AttemptRecord {
                    event_id: row.try_get(0)?,
                    attempt: 0,
                    at_ms: row.try_get(2)?,
                    http_status: None,
                    latency_ms: 0,
                    error: row.try_get(4)?,
                    response_excerpt: row.try_get(5)?,
                };
                Ok((record, attempt, http_status, latency_ms))
            };
            let (mut record, attempt, http_status, latency_ms) =
                read().map_err(|e| backend(format!("list the attempts of event {event_id}"), e))?;
            record.attempt = u32::try_from(attempt)
                .map_err(|_| out_of_range(format!("event {event_id}: attempt {attempt}")))?;
            record.http_status = http_status.map(u16::try_from).transpose().map_err(|_| {
                out_of_range(format!("event {event_id}: attempt {attempt}'s HTTP status"))
            })?;
            record.latency_ms = rows::attempt_latency(event_id, record.attempt, latency_ms)?;
            Ok(record)
        })
        .collect()
}

// ---- query building ----

/// A parameter of a built query.
enum Value {
    Integer(i64),
    Text(String),
}

/// WHERE clauses joined by AND, with their parameters in order (`$1` is `values[0]`).
#[derive(Default)]
struct Clauses {
    sql: Vec<String>,
    values: Vec<Value>,
}

impl Clauses {
    /// `column = $n`, the next parameter being `value`.
    fn push(&mut self, column: &'static str, value: Value) {
        self.values.push(value);
        self.sql.push(format!("{column} = ${}", self.values.len()));
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

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.values
            .iter()
            .map(|value| match value {
                Value::Integer(n) => n as &(dyn ToSql + Sync),
                Value::Text(s) => s as &(dyn ToSql + Sync),
            })
            .collect()
    }
}

/// A newest-first page request with its cursors resolved to `(created_ms, id)`.
struct Paging {
    limit: u32,
    after: Option<(i64, String)>,
    before: Option<(i64, String)>,
}

impl Paging {
    /// Resolves the query's cursors with `cursor_sql`, which reads the `created_ms` of row
    /// `$1` if `$2` (`owner`) may page through it; another id is an unknown cursor.
    async fn resolve(
        client: &Client,
        query: &ListQuery,
        cursor_sql: &str,
        owner: &(dyn ToSql + Sync),
    ) -> StoreResult<Self> {
        let cursor = async |id: &String| -> StoreResult<(i64, String)> {
            let created_ms = query_opt(client, cursor_sql, &[id, owner])
                .await
                .and_then(|row| row.map(|row| row.try_get(0)).transpose())
                .map_err(|e| backend(format!("look up cursor {id}"), e))?
                .ok_or_else(|| StoreError::UnknownCursor(id.clone()))?;
            Ok((created_ms, id.clone()))
        };
        let after = match &query.starting_after {
            Some(id) => Some(cursor(id).await?),
            None => None,
        };
        let before = match &query.ending_before {
            Some(id) => Some(cursor(id).await?),
            None => None,
        };
        Ok(Self {
            limit: rows::page_limit(query),
            after,
            before,
        })
    }

    /// Runs `select` (which has no WHERE) with `clauses` and the cursor bounds, ordered by
    /// `(created_ms, id_column)`. `ending_before` alone pages backwards: it reads the rows just
    /// above the cursor oldest first, then returns them newest first like every page.
    async fn select(
        self,
        client: &Client,
        select: &str,
        id_column: &str,
        mut clauses: Clauses,
    ) -> StoreResult<Page<Row>> {
        let oldest_first = self.before.is_some() && self.after.is_none();
        let mut where_sql = clauses.where_sql();
        for (bound, op) in [(self.after, '<'), (self.before, '>')] {
            let Some((created_ms, id)) = bound else {
                continue;
            };
            clauses.values.push(Value::Integer(created_ms));
            clauses.values.push(Value::Text(id));
            let n = clauses.values.len();
            where_sql = format!(
                "{where_sql} {} (created_ms, {id_column}) {op} (${}, ${n})",
                if where_sql.is_empty() { "WHERE" } else { "AND" },
                n - 1
            );
        }
        let order = if oldest_first { "ASC" } else { "DESC" };
        clauses
            .values
            .push(Value::Integer(rows::fetch_rows(self.limit)));
        let sql = format!(
            "{select} {where_sql} ORDER BY created_ms {order}, {id_column} {order} LIMIT ${}",
            clauses.values.len()
        );
        let rows = query(client, &sql, &clauses.params())
            .await
            .map_err(|e| backend("list outbox rows", e))?;
        Ok(rows::page(rows, self.limit, oldest_first))
    }
}
