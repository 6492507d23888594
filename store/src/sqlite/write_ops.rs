//! The statements of each write, run by the writer inside a request savepoint.
//!
//! Each function either succeeds or returns an error and leaves the savepoint
//! for the writer to roll back; none of them commits. Error messages name ids,
//! never bodies.

use rusqlite::{Connection, ErrorCode, OptionalExtension, params};

use super::{backend, i64_from_seq, outbox, reader};
use crate::{
    Append, AppendError, IdempotencyRecord, MerchantRecord, MethodRecord, PaymentRow, RefundRow,
    StoreError, StoreResult, UnixMs,
};

/// Checks `expected_seq`, inserts the entries, upserts the projections, and inserts the
/// events with their pending deliveries (the outbox), all in the caller's savepoint.
pub(super) fn append(conn: &Connection, append: &Append) -> Result<(), AppendError> {
    let order_id = append.order_id.as_str();
    let current_seq = reader::last_seq(conn, order_id)?;
    if current_seq != append.expected_seq {
        return Err(AppendError::SeqConflict {
            order_id: order_id.to_owned(),
            expected_seq: append.expected_seq,
            current_seq,
        });
    }
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO journal (order_id, seq, kind, body, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(|e| backend("prepare journal insert", e))?;
    for entry in &append.entries {
        // The handle checked the numbering before queueing (`check_numbering`).
        debug_assert!(entry.seq > append.expected_seq);
        let seq = i64_from_seq(entry.seq)?;
        insert
            .execute(params![order_id, seq, entry.kind, entry.body, entry.at_ms])
            .map_err(|e| backend(format!("order {order_id}: insert journal seq {seq}"), e))?;
    }
    if let Some(payment) = &append.payment {
        upsert_payment(conn, payment)?;
    }
    for refund in &append.refunds {
        upsert_refund(conn, refund)?;
    }
    outbox::insert_events(conn, &append.events)?;
    Ok(())
}

fn upsert_payment(conn: &Connection, payment: &PaymentRow) -> Result<(), AppendError> {
    let mut upsert = conn
        .prepare_cached(
            "INSERT INTO payments (id, merchant_id, merchant_order_id, status, created_ms, body,
                                   awaiting_channel)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (id) DO UPDATE SET
                 awaiting_channel = excluded.awaiting_channel,
                 merchant_id = excluded.merchant_id,
                 merchant_order_id = excluded.merchant_order_id,
                 status = excluded.status,
                 created_ms = excluded.created_ms,
                 body = excluded.body",
        )
        .map_err(|e| backend("prepare payment upsert", e))?;
    let result = upsert.execute(params![
        payment.id,
        payment.merchant_id,
        payment.merchant_order_id,
        payment.status,
        payment.created_ms,
        payment.body,
        payment.awaiting_channel,
    ]);
    match result {
        Ok(rows) => {
            debug_assert_eq!(rows, 1);
            Ok(())
        }
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
            // The only unique key besides `id` is (merchant_id, merchant_order_id).
            match payment_with_merchant_order_id(conn, payment)? {
                Some(existing_payment_id) => Err(AppendError::DuplicateMerchantOrderId {
                    existing_payment_id,
                }),
                None => Err(backend(format!("upsert payment {}", payment.id), e).into()),
            }
        }
        Err(e) => Err(backend(format!("upsert payment {}", payment.id), e).into()),
    }
}

/// The id of another payment that already holds `payment`'s (merchant, merchant_order_id).
fn payment_with_merchant_order_id(
    conn: &Connection,
    payment: &PaymentRow,
) -> StoreResult<Option<String>> {
    conn.prepare_cached(
        "SELECT id FROM payments WHERE merchant_id = ?1 AND merchant_order_id = ?2 AND id <> ?3",
    )
    .and_then(|mut select| {
        select
            .query_row(
                params![payment.merchant_id, payment.merchant_order_id, payment.id],
                |row| row.get(0),
            )
            .optional()
    })
    .map_err(|e| {
        backend(
            format!(
                "look up the holder of payment {}'s merchant_order_id",
                payment.id
            ),
            e,
        )
    })
}

fn upsert_refund(conn: &Connection, refund: &RefundRow) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO refunds (id, payment_id, merchant_id, status, created_ms, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (id) DO UPDATE SET
             payment_id = excluded.payment_id,
             merchant_id = excluded.merchant_id,
             status = excluded.status,
             created_ms = excluded.created_ms,
             body = excluded.body",
    )
    .and_then(|mut upsert| {
        upsert.execute(params![
            refund.id,
            refund.payment_id,
            refund.merchant_id,
            refund.status,
            refund.created_ms,
            refund.body,
        ])
    })
    .map(|rows| debug_assert_eq!(rows, 1))
    .map_err(|e| {
        backend(
            format!(
                "upsert refund {} of payment {}",
                refund.id, refund.payment_id
            ),
            e,
        )
    })
}

/// Inserts a merchant; an existing id is an error.
pub(super) fn put_merchant(conn: &Connection, merchant: &MerchantRecord) -> StoreResult<()> {
    let result = conn
        .prepare_cached(
            "INSERT INTO merchants
                 (id, name, secret_sealed, webhook_url, webhook_secret_sealed, created_ms,
                  previous_secret_sealed, previous_secret_expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .and_then(|mut insert| {
            insert.execute(params![
                merchant.id,
                merchant.name,
                merchant.secret_sealed,
                merchant.webhook_url,
                merchant.webhook_secret_sealed,
                merchant.created_ms,
                merchant.previous_secret_sealed,
                merchant.previous_secret_expires_ms,
            ])
        });
    match result {
        Ok(rows) => {
            debug_assert_eq!(rows, 1);
            Ok(())
        }
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => Err(
            StoreError::Backend(format!("merchant {} already exists", merchant.id)),
        ),
        Err(e) => Err(backend(format!("insert merchant {}", merchant.id), e)),
    }
}

/// The current secret becomes the previous one (until `previous_expires_ms`) and
/// `secret_sealed` the current one, in one statement (SQL reads the row's old values on the
/// right-hand side). Answers the rows changed: 0 for an unknown merchant.
pub(super) fn rotate_merchant_secret(
    conn: &Connection,
    id: &str,
    secret_sealed: &[u8],
    previous_expires_ms: UnixMs,
) -> StoreResult<u64> {
    conn.prepare_cached(
        "UPDATE merchants
            SET previous_secret_sealed = secret_sealed,
                previous_secret_expires_ms = ?3,
                secret_sealed = ?2
          WHERE id = ?1",
    )
    .and_then(|mut update| update.execute(params![id, secret_sealed, previous_expires_ms]))
    .map(|rows| rows as u64)
    .map_err(|e| backend(format!("rotate the secret of merchant {id}"), e))
}

/// Inserts `record` unless (merchant, key) is taken; returns what is stored afterwards.
pub(super) fn put_idempotency(
    conn: &Connection,
    record: &IdempotencyRecord,
) -> StoreResult<IdempotencyRecord> {
    conn.prepare_cached(
        "INSERT INTO idempotency (merchant_id, key, fingerprint, status, body, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (merchant_id, key) DO NOTHING",
    )
    .and_then(|mut insert| {
        insert.execute(params![
            record.merchant_id,
            record.key,
            record.fingerprint,
            record.status,
            record.body,
            record.created_ms,
        ])
    })
    .map_err(|e| {
        backend(
            format!(
                "insert idempotency record of merchant {}",
                record.merchant_id
            ),
            e,
        )
    })?;
    reader::get_idempotency(conn, &record.merchant_id, &record.key)?.ok_or_else(|| {
        StoreError::Corrupt(format!(
            "idempotency record of merchant {} vanished after insert",
            record.merchant_id
        ))
    })
}

/// Deletes at most `rows_max` records created before `before_ms`; returns how many.
pub(super) fn purge_idempotency(
    conn: &Connection,
    before_ms: UnixMs,
    rows_max: u32,
) -> StoreResult<u64> {
    let deleted = conn
        .prepare_cached(
            "DELETE FROM idempotency WHERE rowid IN
                 (SELECT rowid FROM idempotency WHERE created_ms < ?1 LIMIT ?2)",
        )
        .and_then(|mut delete| delete.execute(params![before_ms, rows_max]))
        .map_err(|e| backend("purge idempotency records", e))?;
    debug_assert!(deleted <= rows_max as usize);
    Ok(u64::try_from(deleted).unwrap_or(u64::MAX))
}

/// Inserts or replaces the terms of (method, currency).
pub(super) fn put_method(conn: &Connection, method: &MethodRecord) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO methods (method, currency, channel, min_minor, max_minor, enabled, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (method, currency) DO UPDATE SET
             channel = excluded.channel, min_minor = excluded.min_minor,
             max_minor = excluded.max_minor, enabled = excluded.enabled,
             updated_ms = excluded.updated_ms",
    )
    .and_then(|mut upsert| {
        upsert.execute(params![
            method.method,
            method.currency,
            method.channel,
            method.min_minor,
            method.max_minor,
            method.enabled,
            method.updated_ms,
        ])
    })
    .map(|_| ())
    .map_err(|e| {
        backend(
            format!("put method {} {}", method.method, method.currency),
            e,
        )
    })
}
