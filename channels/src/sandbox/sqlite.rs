//! What the sandbox's two ledgers (`ledger`: cards; `async_ledger`: the asynchronous channels)
//! share about SQLite: how a connection is opened, the salt each keeps in its meta table, the
//! ids derived from keys, reading rows and the clock.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Params, Row, ToSql};
use sha2::{Digest, Sha256};

use super::SandboxError;
use crate::card::signature::now_unix_s;

const SALT_BYTES: usize = 16;
/// How long a writer waits for the file lock held by the other ledger's connection (or another
/// process, e.g. a second sandbox pointed at the same file) before failing.
const BUSY_TIMEOUT_MS: u64 = 5_000;
/// Prepared statements a ledger connection keeps (every statement of both ledgers fits).
const STATEMENT_CACHE_CAPACITY: usize = 64;

/// Opens the file at `path` (WAL, with a busy timeout, so several connections share it) or an
/// in-memory database, with foreign keys on.
pub(crate) fn open(path: Option<&Path>) -> rusqlite::Result<Connection> {
    let connection = match path {
        Some(path) => {
            let connection = Connection::open(path)?;
            // First: switching the journal mode takes the file lock another connection may hold.
            connection.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
            connection.pragma_update(None, "journal_mode", "WAL")?;
            // NORMAL in WAL mode survives a crash of the process, which is what the tests
            // restart; a power cut may lose the last commits of this test double.
            connection.pragma_update(None, "synchronous", "NORMAL")?;
            connection
        }
        None => Connection::open_in_memory()?,
    };
    connection.pragma_update(None, "foreign_keys", "ON")?;
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    Ok(connection)
}

/// `execute` and `query_row` through the connection's prepared-statement cache: the ledgers run
/// the same few statements for every call, and `Connection::execute` parses its SQL each time.
pub(crate) trait Cached {
    fn execute_cached(&self, sql: &str, params: impl Params) -> rusqlite::Result<usize>;
    fn query_row_cached<T>(
        &self,
        sql: &str,
        params: impl Params,
        read: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn execute_cached(&self, sql: &str, params: impl Params) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn query_row_cached<T>(
        &self,
        sql: &str,
        params: impl Params,
        read: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(params, read)
    }
}

/// A ledger's salt: drawn once and kept in the ledger, so its hashes are no lookup table.
pub(crate) struct Salt([u8; SALT_BYTES]);

impl Salt {
    /// The salt stored in `meta_table` (`name`, `value`), drawn and stored if there is none.
    pub(crate) fn load_or_create(
        connection: &Connection,
        meta_table: &str,
    ) -> Result<Self, SandboxError> {
        let stored: Option<Vec<u8>> = connection
            .query_row(
                &format!("SELECT value FROM {meta_table} WHERE name = 'salt'"),
                [],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(stored) = stored
            && let Ok(salt) = <[u8; SALT_BYTES]>::try_from(stored.as_slice())
        {
            return Ok(Self(salt));
        }
        let mut salt = [0u8; SALT_BYTES];
        getrandom::fill(&mut salt).map_err(|error| SandboxError::Entropy(error.to_string()))?;
        connection.execute(
            &format!("INSERT OR REPLACE INTO {meta_table} (name, value) VALUES ('salt', ?1)"),
            [salt.as_slice()],
        )?;
        Ok(Self(salt))
    }

    /// A SHA-256 that has hashed the salt.
    pub(crate) fn hasher(&self) -> Sha256 {
        let mut hasher = Sha256::new();
        hasher.update(self.0);
        hasher
    }

    /// Ids are derived from the (unique) key, so a replay can never mint a second id.
    pub(crate) fn derive_id(&self, prefix: &str, kind: &str, key: &str) -> String {
        let mut hasher = self.hasher();
        hasher.update(kind.as_bytes());
        hasher.update([0]);
        hasher.update(key.as_bytes());
        let digest = hex::encode(hasher.finalize());
        format!("{prefix}{}", &digest[..24])
    }
}

/// Every row `sql` (with the one parameter `param`) selects, read by `read`.
pub(crate) fn rows<T>(
    connection: &Connection,
    sql: &str,
    param: impl ToSql,
    read: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    connection
        .prepare_cached(sql)?
        .query_map([param], read)?
        .collect()
}

/// A text column that holds no value this version knows.
pub(crate) fn unknown_text(column: usize, name: &str) -> rusqlite::Error {
    rusqlite::Error::InvalidColumnType(column, name.to_owned(), rusqlite::types::Type::Text)
}

/// The unix time in seconds, as SQLite stores it.
pub(crate) fn unix_now() -> i64 {
    i64::try_from(now_unix_s()).unwrap_or(i64::MAX)
}
