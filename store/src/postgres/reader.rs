//! The read queries of the journal, the projections, merchants, methods and idempotency
//! records. They run on a pooled connection (and some on the writer's, inside its
//! transaction); each is one statement, so it sees every commit that finished before it.

use deadpool_postgres::Client;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::{backend, query, query_opt};
use crate::rows;
use crate::{
    IdempotencyRecord, JournalEntry, ListQuery, MerchantRecord, MethodRecord, Page, PaymentRow,
    RefundRow, StoreError, StoreResult,
};

/// The order's last journal seq, 0 if it has none.
pub(super) async fn last_seq(client: &Client, order_id: &str) -> StoreResult<u64> {
    let seq: i64 = query_opt(
        client,
        "SELECT COALESCE(MAX(seq), 0)::bigint FROM journal WHERE order_id = $1",
        &[&order_id],
    )
    .await
    .and_then(|row| row.map_or(Ok(0), |row| row.try_get(0)))
    .map_err(|e| backend(format!("order {order_id}: read last seq"), e))?;
    rows::last_seq(order_id, seq)
}

/// The order's journal in seq order; checks it is numbered 1, 2, … without gaps.
pub(super) async fn load_journal(
    client: &Client,
    order_id: &str,
) -> StoreResult<Vec<JournalEntry>> {
    let rows = query(
        client,
        "SELECT seq, kind, body, at_ms FROM journal WHERE order_id = $1 ORDER BY seq",
        &[&order_id],
    )
    .await
    .map_err(|e| backend(format!("order {order_id}: load journal"), e))?;
    rows.iter()
        .enumerate()
        .map(|(index, row)| {
            let read = || -> Result<(i64, String, String, i64), tokio_postgres::Error> {
                Ok((
                    row.try_get(0)?,
                    row.try_get(1)?,
                    row.try_get(2)?,
                    row.try_get(3)?,
                ))
            };
            let row = read().map_err(|e| backend(format!("order {order_id}: load journal"), e))?;
            rows::journal_entry(order_id, index, row)
        })
        .collect()
}

macro_rules! payment_columns {
    () => {
        "id, merchant_id, merchant_order_id, status, created_ms, body, awaiting_channel"
    };
}

fn payment_from_row(row: &Row) -> Result<PaymentRow, tokio_postgres::Error> {
    Ok(PaymentRow {
        id: row.try_get(0)?,
        merchant_id: row.try_get(1)?,
        merchant_order_id: row.try_get(2)?,
        status: row.try_get(3)?,
        created_ms: row.try_get(4)?,
        body: row.try_get(5)?,
        awaiting_channel: row.try_get(6)?,
    })
}

pub(super) async fn get_payment(client: &Client, id: &str) -> StoreResult<Option<PaymentRow>> {
    query_opt(
        client,
        concat!(
            "SELECT ",
            payment_columns!(),
            " FROM payments WHERE id = $1"
        ),
        &[&id],
    )
    .await
    .and_then(|row| row.as_ref().map(payment_from_row).transpose())
    .map_err(|e| backend(format!("get payment {id}"), e))
}

/// The position of cursor `id` in `merchant_id`'s list: its `created_ms`.
async fn cursor_position(client: &Client, merchant_id: &str, id: &str) -> StoreResult<i64> {
    query_opt(
        client,
        "SELECT created_ms FROM payments WHERE id = $1 AND merchant_id = $2",
        &[&id, &merchant_id],
    )
    .await
    .and_then(|row| row.map(|row| row.try_get(0)).transpose())
    .map_err(|e| backend(format!("look up cursor {id}"), e))?
    .ok_or_else(|| StoreError::UnknownCursor(id.to_owned()))
}

/// One page of `merchant_id`'s payments, newest first by `(created_ms, id)`.
pub(super) async fn list_payments(
    client: &Client,
    merchant_id: &str,
    query: &ListQuery,
) -> StoreResult<Page<PaymentRow>> {
    let limit = rows::page_limit(query);
    let fetch = rows::fetch_rows(limit);
    let after = match &query.starting_after {
        Some(id) => Some((cursor_position(client, merchant_id, id).await?, id.as_str())),
        None => None,
    };
    let before = match &query.ending_before {
        Some(id) => Some((cursor_position(client, merchant_id, id).await?, id.as_str())),
        None => None,
    };
    // Row-value comparisons keep each case a range scan of payments_by_merchant_newest.
    let (rows, oldest_first) = match (after, before) {
        (None, None) => (
            select_payments(
                client,
                concat!(
                    "SELECT ",
                    payment_columns!(),
                    " FROM payments WHERE merchant_id = $1
                     ORDER BY created_ms DESC, id DESC LIMIT $2"
                ),
                &[&merchant_id, &fetch],
            )
            .await?,
            false,
        ),
        (Some((after_ms, after_id)), None) => (
            select_payments(
                client,
                concat!(
                    "SELECT ",
                    payment_columns!(),
                    " FROM payments WHERE merchant_id = $1 AND (created_ms, id) < ($2, $3)
                     ORDER BY created_ms DESC, id DESC LIMIT $4"
                ),
                &[&merchant_id, &after_ms, &after_id, &fetch],
            )
            .await?,
            false,
        ),
        (None, Some((before_ms, before_id))) => (
            select_payments(
                client,
                concat!(
                    "SELECT ",
                    payment_columns!(),
                    " FROM payments WHERE merchant_id = $1 AND (created_ms, id) > ($2, $3)
                     ORDER BY created_ms ASC, id ASC LIMIT $4"
                ),
                &[&merchant_id, &before_ms, &before_id, &fetch],
            )
            .await?,
            true,
        ),
        (Some((after_ms, after_id)), Some((before_ms, before_id))) => (
            select_payments(
                client,
                concat!(
                    "SELECT ",
                    payment_columns!(),
                    " FROM payments WHERE merchant_id = $1
                         AND (created_ms, id) < ($2, $3) AND (created_ms, id) > ($4, $5)
                     ORDER BY created_ms DESC, id DESC LIMIT $6"
                ),
                &[
                    &merchant_id,
                    &after_ms,
                    &after_id,
                    &before_ms,
                    &before_id,
                    &fetch,
                ],
            )
            .await?,
            false,
        ),
    };
    Ok(rows::page(rows, limit, oldest_first))
}

async fn select_payments(
    client: &Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> StoreResult<Vec<PaymentRow>> {
    query(client, sql, params)
        .await
        .and_then(|rows| rows.iter().map(payment_from_row).collect())
        .map_err(|e| backend("list payments", e))
}

/// Reads the first column of every row as a string.
fn ids(rows: Vec<Row>) -> Result<Vec<String>, tokio_postgres::Error> {
    rows.iter().map(|row| row.try_get(0)).collect()
}

/// Ids of payments in `status`, oldest first, at most `limit`.
pub(super) async fn payment_ids_in_status(
    client: &Client,
    status: &str,
    limit: u32,
) -> StoreResult<Vec<String>> {
    query(
        client,
        "SELECT id FROM payments WHERE status = $1 ORDER BY created_ms ASC, id ASC LIMIT $2",
        &[&status, &i64::from(limit)],
    )
    .await
    .and_then(ids)
    .map_err(|e| backend(format!("list payment ids in status {status}"), e))
}

pub(super) async fn payment_ids_awaiting_channel(
    client: &Client,
    limit: u32,
) -> StoreResult<Vec<String>> {
    query(
        client,
        "SELECT id FROM payments WHERE awaiting_channel ORDER BY created_ms ASC, id ASC LIMIT $1",
        &[&i64::from(limit)],
    )
    .await
    .and_then(ids)
    .map_err(|e| backend("list payment ids awaiting a channel", e))
}

pub(super) async fn get_refund(client: &Client, id: &str) -> StoreResult<Option<RefundRow>> {
    query_opt(
        client,
        "SELECT id, payment_id, merchant_id, status, created_ms, body FROM refunds WHERE id = $1",
        &[&id],
    )
    .await
    .and_then(|row| {
        row.map(|row| {
            Ok(RefundRow {
                id: row.try_get(0)?,
                payment_id: row.try_get(1)?,
                merchant_id: row.try_get(2)?,
                status: row.try_get(3)?,
                created_ms: row.try_get(4)?,
                body: row.try_get(5)?,
            })
        })
        .transpose()
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

fn merchant_from_row(row: &Row) -> Result<MerchantRecord, tokio_postgres::Error> {
    Ok(MerchantRecord {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        secret_sealed: row.try_get(2)?,
        webhook_url: row.try_get(3)?,
        webhook_secret_sealed: row.try_get(4)?,
        created_ms: row.try_get(5)?,
        previous_secret_sealed: row.try_get(6)?,
        previous_secret_expires_ms: row.try_get(7)?,
    })
}

pub(super) async fn get_merchant(client: &Client, id: &str) -> StoreResult<Option<MerchantRecord>> {
    query_opt(
        client,
        concat!(merchant_select!(), " WHERE id = $1"),
        &[&id],
    )
    .await
    .and_then(|row| row.as_ref().map(merchant_from_row).transpose())
    .map_err(|e| backend(format!("get merchant {id}"), e))
}

/// Every merchant, oldest first.
pub(super) async fn list_merchants(client: &Client) -> StoreResult<Vec<MerchantRecord>> {
    query(
        client,
        concat!(merchant_select!(), " ORDER BY created_ms, id"),
        &[],
    )
    .await
    .and_then(|rows| rows.iter().map(merchant_from_row).collect())
    .map_err(|e| backend("list merchants", e))
}

pub(super) async fn get_idempotency(
    client: &Client,
    merchant_id: &str,
    key: &str,
) -> StoreResult<Option<IdempotencyRecord>> {
    let row = query_opt(
        client,
        "SELECT merchant_id, key, fingerprint, status, body, created_ms
         FROM idempotency WHERE merchant_id = $1 AND key = $2",
        &[&merchant_id, &key],
    )
    .await
    .and_then(|row| {
        row.map(|row| {
            let status: i32 = row.try_get(3)?;
            let record = IdempotencyRecord {
                merchant_id: row.try_get(0)?,
                key: row.try_get(1)?,
                fingerprint: row.try_get(2)?,
                status: 0,
                body: row.try_get(4)?,
                created_ms: row.try_get(5)?,
            };
            Ok((record, status))
        })
        .transpose()
    })
    .map_err(|e| {
        backend(
            format!("get idempotency record of merchant {merchant_id}"),
            e,
        )
    })?;
    let Some((mut record, status)) = row else {
        return Ok(None);
    };
    record.status = u16::try_from(status).map_err(|_| {
        StoreError::Corrupt(format!(
            "idempotency record of merchant {merchant_id}: status {status} is out of range"
        ))
    })?;
    Ok(Some(record))
}

pub(super) async fn list_methods(client: &Client) -> StoreResult<Vec<MethodRecord>> {
    query(
        client,
        "SELECT method, currency, channel, min_minor, max_minor, enabled, updated_ms
         FROM methods ORDER BY method, currency",
        &[],
    )
    .await
    .and_then(|rows| {
        rows.iter()
            .map(|row| {
                Ok(MethodRecord {
                    method: row.try_get(0)?,
                    currency: row.try_get(1)?,
                    channel: row.try_get(2)?,
                    min_minor: row.try_get(3)?,
                    max_minor: row.try_get(4)?,
                    enabled: row.try_get(5)?,
                    updated_ms: row.try_get(6)?,
                })
            })
            .collect()
    })
    .map_err(|e| backend("list methods", e))
}
