//! Wallets on PostgreSQL: the writes (run by the writer inside a request savepoint) and the
//! reads (run on the pool, and by the writer inside its transaction).
//!
//! A move reads the wallet, its last movement and the key's history, then inserts the
//! movement and updates the balance, like SQLite's. Because other nodes may write the same
//! schema, it first locks what it decides on: the key (a transaction-scoped advisory lock,
//! which `close_wallet_key` takes too, so a key is either closed or moves money, once) and
//! the wallet's row (`FOR UPDATE`, so the balance it checks is the balance it changes). The
//! locks are held to the batch's COMMIT.

use std::collections::BTreeMap;

use deadpool_postgres::Client;
use tokio_postgres::Row;

use super::{backend, execute, is_unique_violation, query, query_opt};
use crate::rows::{
    Balance, RawMovement, convert_page, fetch_rows, into_movement, metadata_json, oldest_first,
    page, page_limit, parse_metadata, plan_move, replayed,
};
use crate::{
    ListQuery, Page, StoreError, StoreResult, WalletMove, WalletMoveOutcome, WalletMovement,
    WalletRecord,
};

// ---- writes ----

/// Inserts a wallet; an existing id is [`StoreError::Conflict`].
pub(super) async fn create_wallet(client: &Client, wallet: &WalletRecord) -> StoreResult<()> {
    debug_assert_eq!(wallet.balance_minor, 0, "checked before queueing");
    let metadata = metadata_json(&wallet.metadata)?;
    let result = execute(
        client,
        "INSERT INTO wallets (id, merchant_id, currency, balance_minor, customer_ref, metadata,
                              created_ms, updated_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &wallet.id,
            &wallet.merchant_id,
            &wallet.currency,
            &wallet.balance_minor,
            &wallet.customer_ref,
            &metadata,
            &wallet.created_ms,
            &wallet.updated_ms,
        ],
    )
    .await;
    match result {
        Ok(rows) => {
            debug_assert_eq!(rows, 1);
            Ok(())
        }
        Err(e) if is_unique_violation(&e, "wallets_pkey") => Err(StoreError::Conflict(format!(
            "wallet {} already exists",
            wallet.id
        ))),
        Err(e) => Err(backend(format!("insert wallet {}", wallet.id), e)),
    }
}

/// Checks and applies one move; [`WalletMoveOutcome`] gives the order of the checks.
pub(super) async fn move_wallet(client: &Client, m: &WalletMove) -> StoreResult<WalletMoveOutcome> {
    debug_assert!(m.amount_minor > 0, "checked before queueing");
    lock_key(client, &m.key).await?;
    let Some(wallet) = balance_for_update(client, &m.wallet_id).await? else {
        return Ok(WalletMoveOutcome::WalletNotFound);
    };
    if wallet.merchant_id != m.merchant_id {
        return Ok(WalletMoveOutcome::WalletNotFound);
    }
    if let Some(earlier) = wallet_movement(client, &m.key).await? {
        return Ok(replayed(earlier, m));
    }
    if is_key_closed(client, &m.key).await? {
        return Ok(WalletMoveOutcome::KeyClosed);
    }
    if wallet.currency != m.currency {
        return Ok(WalletMoveOutcome::CurrencyMismatch {
            wallet_currency: wallet.currency,
        });
    }
    let last = last_movement(client, &m.wallet_id).await?;
    let movement = match plan_move(m, &wallet, last)? {
        Ok(movement) => movement,
        Err(refused) => return Ok(refused),
    };
    insert_movement(client, &movement, last.0 + 1).await?;
    set_balance(
        client,
        m,
        wallet.balance_minor,
        movement.balance_after_minor,
    )
    .await?;
    Ok(WalletMoveOutcome::Applied(movement))
}

/// Serialises everything done under `key` across nodes until the transaction ends.
async fn lock_key(client: &Client, key: &str) -> StoreResult<()> {
    execute(
        client,
        "SELECT pg_advisory_xact_lock(hashtextextended('kassa-wallet-key:' || $1::text, 0))",
        &[&key],
    )
    .await
    .map(|_| ())
    .map_err(|e| backend("lock a wallet key", e))
}

async fn insert_movement(client: &Client, movement: &WalletMovement, seq: i64) -> StoreResult<()> {
    execute(
        client,
        "INSERT INTO wallet_movements
             (key, wallet_id, seq, kind, amount_minor, balance_after_minor, reference, at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &movement.key,
            &movement.wallet_id,
            &seq,
            &movement.kind.as_str(),
            &movement.amount_minor,
            &movement.balance_after_minor,
            &movement.reference,
            &movement.at_ms,
        ],
    )
    .await
    .map(|rows| debug_assert_eq!(rows, 1))
    .map_err(|e| {
        backend(
            format!("wallet {}: insert movement {seq}", movement.wallet_id),
            e,
        )
    })
}

/// Compare-and-set of the balance: it must still be `before` (the row is locked, so anything
/// else is corruption).
async fn set_balance(client: &Client, m: &WalletMove, before: i64, after: i64) -> StoreResult<()> {
    let rows = execute(
        client,
        "UPDATE wallets SET balance_minor = $1, updated_ms = GREATEST(updated_ms, $2)
         WHERE id = $3 AND balance_minor = $4",
        &[&after, &m.at_ms, &m.wallet_id, &before],
    )
    .await
    .map_err(|e| backend(format!("wallet {}: update balance", m.wallet_id), e))?;
    if rows != 1 {
        return Err(StoreError::Corrupt(format!(
            "wallet {}: balance changed under the writer",
            m.wallet_id
        )));
    }
    Ok(())
}

/// The movement under `key`, or else closes the key for good.
pub(super) async fn close_wallet_key(
    client: &Client,
    key: &str,
) -> StoreResult<Option<WalletMovement>> {
    lock_key(client, key).await?;
    if let Some(movement) = wallet_movement(client, key).await? {
        return Ok(Some(movement));
    }
    execute(
        client,
        "INSERT INTO wallet_closed_keys (key) VALUES ($1) ON CONFLICT DO NOTHING",
        &[&key],
    )
    .await
    .map_err(|e| backend("close a wallet key", e))?;
    Ok(None)
}

// ---- reads ----

/// The wallet's owner, currency and balance, its row locked to the end of the transaction.
async fn balance_for_update(client: &Client, wallet_id: &str) -> StoreResult<Option<Balance>> {
    query_opt(
        client,
        "SELECT merchant_id, currency, balance_minor FROM wallets WHERE id = $1 FOR UPDATE",
        &[&wallet_id],
    )
    .await
    .and_then(|row| {
        row.map(|row| {
            Ok(Balance {
                merchant_id: row.try_get(0)?,
                currency: row.try_get(1)?,
                balance_minor: row.try_get(2)?,
            })
        })
        .transpose()
    })
    .map_err(|e| backend(format!("read wallet {wallet_id}"), e))
}

/// `(seq, balance_after_minor)` of the wallet's last movement; `(0, 0)` before the first.
async fn last_movement(client: &Client, wallet_id: &str) -> StoreResult<(i64, i64)> {
    query_opt(
        client,
        "SELECT seq, balance_after_minor FROM wallet_movements
         WHERE wallet_id = $1 ORDER BY seq DESC LIMIT 1",
        &[&wallet_id],
    )
    .await
    .and_then(|row| {
        row.map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .transpose()
    })
    .map(Option::unwrap_or_default)
    .map_err(|e| backend(format!("wallet {wallet_id}: read last movement"), e))
}

async fn is_key_closed(client: &Client, key: &str) -> StoreResult<bool> {
    query_opt(
        client,
        "SELECT 1 FROM wallet_closed_keys WHERE key = $1",
        &[&key],
    )
    .await
    .map(|row| row.is_some())
    .map_err(|e| backend("look up a closed wallet key", e))
}

pub(super) async fn get_wallet(
    client: &Client,
    merchant_id: &str,
    id: &str,
) -> StoreResult<Option<WalletRecord>> {
    let row: Option<(WalletRecord, String)> = query_opt(
        client,
        "SELECT id, merchant_id, currency, balance_minor, customer_ref, created_ms,
                updated_ms, metadata
         FROM wallets WHERE id = $1 AND merchant_id = $2",
        &[&id, &merchant_id],
    )
    .await
    .and_then(|row| {
        row.map(|row| {
            let wallet = WalletRecord {
                id: row.try_get(0)?,
                merchant_id: row.try_get(1)?,
                currency: row.try_get(2)?,
                balance_minor: row.try_get(3)?,
                customer_ref: row.try_get(4)?,
                metadata: BTreeMap::new(),
                created_ms: row.try_get(5)?,
                updated_ms: row.try_get(6)?,
            };
            Ok((wallet, row.try_get(7)?))
        })
        .transpose()
    })
    .map_err(|e| backend(format!("get wallet {id}"), e))?;
    let Some((mut wallet, metadata)) = row else {
        return Ok(None);
    };
    wallet.metadata = parse_metadata(id, &metadata)?;
    Ok(Some(wallet))
}

macro_rules! movement_select {
    () => {
        "SELECT key, wallet_id, kind, amount_minor, balance_after_minor, reference, at_ms
         FROM wallet_movements"
    };
}

fn raw_movement(row: &Row) -> Result<RawMovement, tokio_postgres::Error> {
    Ok((
        row.try_get(0)?,
        row.try_get(1)?,
        row.try_get(2)?,
        row.try_get(3)?,
        row.try_get(4)?,
        row.try_get(5)?,
        row.try_get(6)?,
    ))
}

pub(super) async fn wallet_movement(
    client: &Client,
    key: &str,
) -> StoreResult<Option<WalletMovement>> {
    query_opt(
        client,
        concat!(movement_select!(), " WHERE key = $1"),
        &[&key],
    )
    .await
    .and_then(|row| row.as_ref().map(raw_movement).transpose())
    .map_err(|e| backend("get a wallet movement", e))?
    .map(into_movement)
    .transpose()
}

/// The `seq` of cursor `key` in `wallet_id`'s movements.
async fn cursor_seq(client: &Client, wallet_id: &str, key: &str) -> StoreResult<i64> {
    query_opt(
        client,
        "SELECT seq FROM wallet_movements WHERE key = $1 AND wallet_id = $2",
        &[&key, &wallet_id],
    )
    .await
    .and_then(|row| row.map(|row| row.try_get(0)).transpose())
    .map_err(|e| backend(format!("wallet {wallet_id}: look up a cursor"), e))?
    .ok_or_else(|| StoreError::UnknownCursor(key.to_owned()))
}

/// One page of a wallet's movements, newest (highest `seq`) first.
pub(super) async fn list_wallet_movements(
    client: &Client,
    wallet_id: &str,
    query_: &ListQuery,
) -> StoreResult<Page<WalletMovement>> {
    let limit = page_limit(query_);
    let fetch = fetch_rows(limit);
    // Seqs start at 1, so 0 and i64::MAX bound "no cursor" without a second query shape.
    let below = match &query_.starting_after {
        Some(key) => cursor_seq(client, wallet_id, key).await?,
        None => i64::MAX,
    };
    let above = match &query_.ending_before {
        Some(key) => cursor_seq(client, wallet_id, key).await?,
        None => 0,
    };
    let oldest_first = oldest_first(query_);
    let sql = if oldest_first {
        concat!(
            movement_select!(),
            " WHERE wallet_id = $1 AND seq < $2 AND seq > $3 ORDER BY seq ASC LIMIT $4"
        )
    } else {
        concat!(
            movement_select!(),
            " WHERE wallet_id = $1 AND seq < $2 AND seq > $3 ORDER BY seq DESC LIMIT $4"
        )
    };
    let raw: Vec<RawMovement> = query(client, sql, &[&wallet_id, &below, &above, &fetch])
        .await
        .and_then(|rows| rows.iter().map(raw_movement).collect())
        .map_err(|e| backend(format!("wallet {wallet_id}: list movements"), e))?;
    convert_page(page(raw, limit, oldest_first), into_movement)
}
