//! The statements of each write, run by the writer inside a request savepoint.
//!
//! Each function either succeeds or returns an error and leaves the savepoint for the writer
//! to roll back; none of them commits. A statement that fails puts PostgreSQL's transaction
//! in an aborted state until the savepoint is rolled back, so a function that must look
//! something up after an expected failure (the holder of a merchant order id) runs the
//! failing statement inside a savepoint of its own. Error messages name ids, never bodies.

use deadpool_postgres::Client;

use super::{backend, execute, i64_from_seq, is_unique_violation, outbox, query_opt, reader};
use crate::{
    Append, AppendError, IdempotencyRecord, MerchantRecord, MethodRecord, PaymentRow, RefundRow,
    StoreError, StoreResult, UnixMs,
};

/// Checks `expected_seq`, inserts the entries, upserts the projections, and inserts the
/// events with their pending deliveries (the outbox), all in the caller's savepoint.
///
/// The check reads the order's last seq; the insert then skips any `(order_id, seq)` already
/// taken, so a concurrent writer that took one (another node, committing after the read) is
/// answered like a stale seq: [`AppendError::SeqConflict`] with the seq the journal is at.
pub(super) async fn append(client: &Client, append: &Append) -> Result<(), AppendError> {
    let order_id = append.order_id.as_str();
    let current_seq = reader::last_seq(client, order_id).await?;
    if current_seq != append.expected_seq {
        return Err(AppendError::SeqConflict {
            order_id: order_id.to_owned(),
            expected_seq: append.expected_seq,
            current_seq,
        });
    }
    if !append.entries.is_empty() {
        // The handle checked the numbering before queueing (`check_numbering`).
        let seqs = append
            .entries
            .iter()
            .map(|entry| i64_from_seq(entry.seq))
            .collect::<StoreResult<Vec<_>>>()?;
        let kinds: Vec<&str> = append.entries.iter().map(|e| e.kind.as_str()).collect();
        let bodies: Vec<&str> = append.entries.iter().map(|e| e.body.as_str()).collect();
        let at_ms: Vec<i64> = append.entries.iter().map(|e| e.at_ms).collect();
        let inserted = execute(
            client,
            "INSERT INTO journal (order_id, seq, kind, body, at_ms)
             SELECT $1::text, seq, kind, body, at_ms
             FROM unnest($2::bigint[], $3::text[], $4::text[], $5::bigint[])
                  AS entry (seq, kind, body, at_ms)
             ON CONFLICT (order_id, seq) DO NOTHING",
            &[&order_id, &seqs, &kinds, &bodies, &at_ms],
        )
        .await
        .map_err(|e| backend(format!("order {order_id}: insert journal entries"), e))?;
        if inserted != seqs.len() as u64 {
            // Another writer committed these seqs after the check above.
            let current_seq = reader::last_seq(client, order_id).await?;
            return Err(AppendError::SeqConflict {
                order_id: order_id.to_owned(),
                expected_seq: append.expected_seq,
                current_seq,
            });
        }
    }
    if let Some(payment) = &append.payment {
        upsert_payment(client, payment).await?;
    }
    for refund in &append.refunds {
        upsert_refund(client, refund).await?;
    }
    outbox::insert_events(client, &append.events).await?;
    Ok(())
}

/// The savepoint around the payment upsert, so a taken merchant order id can be looked up.
const PAYMENT_SAVEPOINT: &str = "SAVEPOINT payment";
const PAYMENT_RELEASE: &str = "RELEASE SAVEPOINT payment";
const PAYMENT_ROLLBACK_TO: &str = "ROLLBACK TO SAVEPOINT payment; RELEASE SAVEPOINT payment";

async fn upsert_payment(client: &Client, payment: &PaymentRow) -> Result<(), AppendError> {
    let context = || format!("upsert payment {}", payment.id);
    client
        .batch_execute(PAYMENT_SAVEPOINT)
        .await
        .map_err(|e| backend(context(), e))?;
    let result = execute(
        client,
        "INSERT INTO payments (id, merchant_id, merchant_order_id, status, created_ms, body,
                               awaiting_channel)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (id) DO UPDATE SET
             awaiting_channel = excluded.awaiting_channel,
             merchant_id = excluded.merchant_id,
             merchant_order_id = excluded.merchant_order_id,
             status = excluded.status,
             created_ms = excluded.created_ms,
             body = excluded.body",
        &[
            &payment.id,
            &payment.merchant_id,
            &payment.merchant_order_id,
            &payment.status,
            &payment.created_ms,
            &payment.body,
            &payment.awaiting_channel,
        ],
    )
    .await;
    match result {
        Ok(rows) => {
            debug_assert_eq!(rows, 1);
            client
                .batch_execute(PAYMENT_RELEASE)
                .await
                .map_err(|e| backend(context(), e))?;
            Ok(())
        }
        Err(e) if is_unique_violation(&e, "payments_merchant_order") => {
            client
                .batch_execute(PAYMENT_ROLLBACK_TO)
                .await
                .map_err(|e| backend(context(), e))?;
            match payment_with_merchant_order_id(client, payment).await? {
                Some(existing_payment_id) => Err(AppendError::DuplicateMerchantOrderId {
                    existing_payment_id,
                }),
                None => Err(backend(context(), e).into()),
            }
        }
        // The request savepoint is rolled back by the writer, this one with it.
        Err(e) => Err(backend(context(), e).into()),
    }
}

/// The id of another payment that already holds `payment`'s (merchant, merchant_order_id).
async fn payment_with_merchant_order_id(
    client: &Client,
    payment: &PaymentRow,
) -> StoreResult<Option<String>> {
    query_opt(
        client,
        "SELECT id FROM payments WHERE merchant_id = $1 AND merchant_order_id = $2 AND id <> $3",
        &[
            &payment.merchant_id,
            &payment.merchant_order_id,
            &payment.id,
        ],
    )
    .await
    .and_then(|row| row.map(|row| row.try_get(0)).transpose())
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

async fn upsert_refund(client: &Client, refund: &RefundRow) -> StoreResult<()> {
    execute(
        client,
        "INSERT INTO refunds (id, payment_id, merchant_id, status, created_ms, body)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (id) DO UPDATE SET
             payment_id = excluded.payment_id,
             merchant_id = excluded.merchant_id,
             status = excluded.status,
             created_ms = excluded.created_ms,
             body = excluded.body",
        &[
            &refund.id,
            &refund.payment_id,
            &refund.merchant_id,
            &refund.status,
            &refund.created_ms,
            &refund.body,
        ],
    )
    .await
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
pub(super) async fn put_merchant(client: &Client, merchant: &MerchantRecord) -> StoreResult<()> {
    let result = execute(
        client,
        "INSERT INTO merchants
             (id, name, secret_sealed, webhook_url, webhook_secret_sealed, created_ms,
              previous_secret_sealed, previous_secret_expires_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &merchant.id,
            &merchant.name,
            &merchant.secret_sealed,
            &merchant.webhook_url,
            &merchant.webhook_secret_sealed,
            &merchant.created_ms,
            &merchant.previous_secret_sealed,
            &merchant.previous_secret_expires_ms,
        ],
    )
    .await;
    match result {
        Ok(rows) => {
            debug_assert_eq!(rows, 1);
            Ok(())
        }
        Err(e) if is_unique_violation(&e, "merchants_pkey") => Err(StoreError::Backend(format!(
            "merchant {} already exists",
            merchant.id
        ))),
        Err(e) => Err(backend(format!("insert merchant {}", merchant.id), e)),
    }
}

/// The current secret becomes the previous one (until `previous_expires_ms`) and
/// `secret_sealed` the current one, in one statement (SQL reads the row's old values on the
/// right-hand side). Answers the rows changed: 0 for an unknown merchant.
pub(super) async fn rotate_merchant_secret(
    client: &Client,
    id: &str,
    secret_sealed: &[u8],
    previous_expires_ms: UnixMs,
) -> StoreResult<u64> {
    execute(
        client,
        "UPDATE merchants
            SET previous_secret_sealed = secret_sealed,
                previous_secret_expires_ms = $3,
                secret_sealed = $2
          WHERE id = $1",
        &[&id, &secret_sealed, &previous_expires_ms],
    )
    .await
    .map_err(|e| backend(format!("rotate the secret of merchant {id}"), e))
}

/// Inserts `record` unless (merchant, key) is taken; returns what is stored afterwards.
pub(super) async fn put_idempotency(
    client: &Client,
    record: &IdempotencyRecord,
) -> StoreResult<IdempotencyRecord> {
    let context = || {
        format!(
            "insert idempotency record of merchant {}",
            record.merchant_id
        )
    };
    let inserted = execute(
        client,
        "INSERT INTO idempotency (merchant_id, key, fingerprint, status, body, created_ms)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (merchant_id, key) DO NOTHING",
        &[
            &record.merchant_id,
            &record.key,
            &record.fingerprint,
            &i32::from(record.status),
            &record.body,
            &record.created_ms,
        ],
    )
    .await
    .map_err(|e| backend(context(), e))?;
    if inserted == 1 {
        return Ok(record.clone());
    }
    // Taken: a new statement sees the record that holds the key (committed before it).
    reader::get_idempotency(client, &record.merchant_id, &record.key)
        .await?
        .ok_or_else(|| {
            StoreError::Corrupt(format!(
                "idempotency record of merchant {} vanished after insert",
                record.merchant_id
            ))
        })
}

/// Deletes at most `rows_max` records created before `before_ms`; returns how many.
pub(super) async fn purge_idempotency(
    client: &Client,
    before_ms: UnixMs,
    rows_max: u32,
) -> StoreResult<u64> {
    let deleted = execute(
        client,
        "DELETE FROM idempotency WHERE (merchant_id, key) IN
             (SELECT merchant_id, key FROM idempotency WHERE created_ms < $1 LIMIT $2)",
        &[&before_ms, &i64::from(rows_max)],
    )
    .await
    .map_err(|e| backend("purge idempotency records", e))?;
    debug_assert!(deleted <= u64::from(rows_max));
    Ok(deleted)
}

/// Inserts or replaces the terms of (method, currency).
pub(super) async fn put_method(client: &Client, method: &MethodRecord) -> StoreResult<()> {
    execute(
        client,
        "INSERT INTO methods (method, currency, channel, min_minor, max_minor, enabled, updated_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (method, currency) DO UPDATE SET
             channel = excluded.channel, min_minor = excluded.min_minor,
             max_minor = excluded.max_minor, enabled = excluded.enabled,
             updated_ms = excluded.updated_ms",
        &[
            &method.method,
            &method.currency,
            &method.channel,
            &method.min_minor,
            &method.max_minor,
            &method.enabled,
            &method.updated_ms,
        ],
    )
    .await
    .map(|_| ())
    .map_err(|e| {
        backend(
            format!("put method {} {}", method.method, method.currency),
            e,
        )
    })
}
