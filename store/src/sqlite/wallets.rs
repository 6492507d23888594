//! Wallets on SQLite: the writes (run by the writer inside a request savepoint) and the reads
//! (run on the read pool, and by the writer on its own connection).
//!
//! A move reads the wallet, its last movement and the key's history, then inserts the movement
//! and updates the balance, all on the writer's one connection inside one transaction: moves are
//! serialised by the writer thread, so the balance a move checks is the balance it changes.

use std::collections::BTreeMap;

use rusqlite::{Connection, ErrorCode, OptionalExtension, params};

use super::backend;
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
pub(super) fn create_wallet(conn: &Connection, wallet: &WalletRecord) -> StoreResult<()> {
    debug_assert_eq!(wallet.balance_minor, 0, "checked before queueing");
    let metadata = metadata_json(&wallet.metadata)?;
    let result = conn
        .prepare_cached(
            "INSERT INTO wallets (id, merchant_id, currency, balance_minor, customer_ref, metadata,
                                  created_ms, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .and_then(|mut insert| {
            insert.execute(params![
                wallet.id,
                wallet.merchant_id,
                wallet.currency,
                wallet.balance_minor,
                wallet.customer_ref,
                metadata,
                wallet.created_ms,
                wallet.updated_ms,
            ])
        });
    match result {
        Ok(rows) => {
            debug_assert_eq!(rows, 1);
            Ok(())
        }
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => Err(
            StoreError::Conflict(format!("wallet {} already exists", wallet.id)),
        ),
        Err(e) => Err(backend(format!("insert wallet {}", wallet.id), e)),
    }
}

/// Checks and applies one move; [`WalletMoveOutcome`] gives the order of the checks.
pub(super) fn move_wallet(conn: &Connection, m: &WalletMove) -> StoreResult<WalletMoveOutcome> {
    debug_assert!(m.amount_minor > 0, "checked before queueing");
    let Some(wallet) = balance(conn, &m.wallet_id)? else {
        return Ok(WalletMoveOutcome::WalletNotFound);
    };
    if wallet.merchant_id != m.merchant_id {
        return Ok(WalletMoveOutcome::WalletNotFound);
    }
    if let Some(earlier) = wallet_movement(conn, &m.key)? {
        return Ok(replayed(earlier, m));
    }
    if is_key_closed(conn, &m.key)? {
        return Ok(WalletMoveOutcome::KeyClosed);
    }
    if wallet.currency != m.currency {
        return Ok(WalletMoveOutcome::CurrencyMismatch {
            wallet_currency: wallet.currency,
        });
    }
    let last = last_movement(conn, &m.wallet_id)?;
    let movement = match plan_move(m, &wallet, last)? {
        Ok(movement) => movement,
        Err(refused) => return Ok(refused),
    };
    insert_movement(conn, &movement, last.0 + 1)?;
    set_balance(conn, m, wallet.balance_minor, movement.balance_after_minor)?;
    Ok(WalletMoveOutcome::Applied(movement))
}

fn insert_movement(conn: &Connection, movement: &WalletMovement, seq: i64) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO wallet_movements
             (key, wallet_id, seq, kind, amount_minor, balance_after_minor, reference, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .and_then(|mut insert| {
        insert.execute(params![
            movement.key,
            movement.wallet_id,
            seq,
            movement.kind.as_str(),
            movement.amount_minor,
            movement.balance_after_minor,
            movement.reference,
            movement.at_ms,
        ])
    })
    .map(|rows| debug_assert_eq!(rows, 1))
    .map_err(|e| {
        backend(
            format!("wallet {}: insert movement {seq}", movement.wallet_id),
            e,
        )
    })
}

/// Compare-and-set of the balance: it must still be `before` (the writer is the only writer,
/// so anything else is corruption).
fn set_balance(conn: &Connection, m: &WalletMove, before: i64, after: i64) -> StoreResult<()> {
    let rows = conn
        .prepare_cached(
            "UPDATE wallets SET balance_minor = ?1, updated_ms = MAX(updated_ms, ?2)
             WHERE id = ?3 AND balance_minor = ?4",
        )
        .and_then(|mut update| update.execute(params![after, m.at_ms, m.wallet_id, before]))
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
pub(super) fn close_wallet_key(
    conn: &Connection,
    key: &str,
) -> StoreResult<Option<WalletMovement>> {
    if let Some(movement) = wallet_movement(conn, key)? {
        return Ok(Some(movement));
    }
    conn.prepare_cached("INSERT INTO wallet_closed_keys (key) VALUES (?1) ON CONFLICT DO NOTHING")
        .and_then(|mut insert| insert.execute([key]))
        .map_err(|e| backend("close a wallet key", e))?;
    Ok(None)
}

// ---- reads ----

fn balance(conn: &Connection, wallet_id: &str) -> StoreResult<Option<Balance>> {
    conn.prepare_cached("SELECT merchant_id, currency, balance_minor FROM wallets WHERE id = ?1")
        .and_then(|mut select| {
            select
                .query_row([wallet_id], |row| {
                    Ok(Balance {
                        merchant_id: row.get(0)?,
                        currency: row.get(1)?,
                        balance_minor: row.get(2)?,
                    })
                })
                .optional()
        })
        .map_err(|e| backend(format!("read wallet {wallet_id}"), e))
}

/// `(seq, balance_after_minor)` of the wallet's last movement; `(0, 0)` before the first.
fn last_movement(conn: &Connection, wallet_id: &str) -> StoreResult<(i64, i64)> {
    conn.prepare_cached(
        "SELECT seq, balance_after_minor FROM wallet_movements
         WHERE wallet_id = ?1 ORDER BY seq DESC LIMIT 1",
    )
    .and_then(|mut select| {
        select
            .query_row([wallet_id], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()
    })
    .map(Option::unwrap_or_default)
    .map_err(|e| backend(format!("wallet {wallet_id}: read last movement"), e))
}

fn is_key_closed(conn: &Connection, key: &str) -> StoreResult<bool> {
    conn.prepare_cached("SELECT 1 FROM wallet_closed_keys WHERE key = ?1")
        .and_then(|mut select| select.exists([key]))
        .map_err(|e| backend("look up a closed wallet key", e))
}

pub(super) fn get_wallet(
    conn: &Connection,
    merchant_id: &str,
    id: &str,
) -> StoreResult<Option<WalletRecord>> {
    let row: Option<(WalletRecord, String)> = conn
        .prepare_cached(
            "SELECT id, merchant_id, currency, balance_minor, customer_ref, created_ms,
                    updated_ms, metadata
             FROM wallets WHERE id = ?1 AND merchant_id = ?2",
        )
        .and_then(|mut select| {
            select
                .query_row([id, merchant_id], |row| {
                    let wallet = WalletRecord {
                        id: row.get(0)?,
                        merchant_id: row.get(1)?,
                        currency: row.get(2)?,
                        balance_minor: row.get(3)?,
                        customer_ref: row.get(4)?,
                        metadata: BTreeMap::new(),
                        created_ms: row.get(5)?,
                        updated_ms: row.get(6)?,
                    };
                    Ok((wallet, row.get(7)?))
                })
                .optional()
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

fn raw_movement(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawMovement> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
    ))
}

pub(super) fn wallet_movement(conn: &Connection, key: &str) -> StoreResult<Option<WalletMovement>> {
    conn.prepare_cached(concat!(movement_select!(), " WHERE key = ?1"))
        .and_then(|mut select| select.query_row([key], raw_movement).optional())
        .map_err(|e| backend("get a wallet movement", e))?
        .map(into_movement)
        .transpose()
}

/// The `seq` of cursor `key` in `wallet_id`'s movements.
fn cursor_seq(conn: &Connection, wallet_id: &str, key: &str) -> StoreResult<i64> {
    conn.prepare_cached("SELECT seq FROM wallet_movements WHERE key = ?1 AND wallet_id = ?2")
        .and_then(|mut select| {
            select
                .query_row([key, wallet_id], |row| row.get(0))
                .optional()
        })
        .map_err(|e| backend(format!("wallet {wallet_id}: look up a cursor"), e))?
        .ok_or_else(|| StoreError::UnknownCursor(key.to_owned()))
}

/// One page of a wallet's movements, newest (highest `seq`) first.
pub(super) fn list_wallet_movements(
    conn: &Connection,
    wallet_id: &str,
    query: &ListQuery,
) -> StoreResult<Page<WalletMovement>> {
    let limit = page_limit(query);
    let fetch = fetch_rows(limit);
    // Seqs start at 1, so 0 and i64::MAX bound "no cursor" without a second query shape.
    let below = match &query.starting_after {
        Some(key) => cursor_seq(conn, wallet_id, key)?,
        None => i64::MAX,
    };
    let above = match &query.ending_before {
        Some(key) => cursor_seq(conn, wallet_id, key)?,
        None => 0,
    };
    let oldest_first = oldest_first(query);
    let sql = if oldest_first {
        concat!(
            movement_select!(),
            " WHERE wallet_id = ?1 AND seq < ?2 AND seq > ?3 ORDER BY seq ASC LIMIT ?4"
        )
    } else {
        concat!(
            movement_select!(),
            " WHERE wallet_id = ?1 AND seq < ?2 AND seq > ?3 ORDER BY seq DESC LIMIT ?4"
        )
    };
    let raw: Vec<RawMovement> = conn
        .prepare_cached(sql)
        .and_then(|mut select| {
            select
                .query_map(params![wallet_id, below, above, fetch], raw_movement)?
                .collect()
        })
        .map_err(|e| backend(format!("wallet {wallet_id}: list movements"), e))?;
    convert_page(page(raw, limit, oldest_first), into_movement)
}
