//! The backends the store tests run on, and what a test needs from each.
//!
//! A case is an `async fn(Backend)`; [`on_both_backends!`] makes one `#[tokio::test]` per
//! backend of it (`on_sqlite::<case>`, `on_postgres::<case>`). A [`Backend`] is a place to
//! open stores: a temporary directory for SQLite (removed when the backend drops), or a fresh
//! schema `kassa_test_<random hex>` for PostgreSQL (dropped, `CASCADE`, when it drops).
//!
//! PostgreSQL is at `KASSA_TEST_POSTGRES_URL` (default [`POSTGRES_URL_DEFAULT`]). When it
//! cannot be reached, a PostgreSQL case fails under `CI=true` and otherwise prints
//! `SKIPPED <test>: PostgreSQL at <url> unavailable: <why>` to stderr and passes.

#![allow(dead_code)] // Each test file uses part of this module.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kassa_store::{PostgresConfig, PostgresStore, SqliteConfig, SqliteStore, Store};
use tempfile::TempDir;

pub const POSTGRES_URL_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/test";
/// How long a test waits to reach PostgreSQL before calling it unavailable.
const POSTGRES_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// How long a test's lock waits may last: a parked writer waits at most this.
const STATEMENT_TIMEOUT_MS: u64 = 60_000;

/// Makes one `#[tokio::test]` per backend of each case (`async fn case(backend: Backend)`).
/// The test file declares `#[macro_use] mod common;`.
macro_rules! on_both_backends {
    (worker_threads = $threads:literal; $($case:ident),+ $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = $threads)]
                async fn $case() {
                    super::$case(crate::common::Backend::sqlite()).await;
                }
            )+
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = $threads)]
                async fn $case() {
                    let test = concat!(module_path!(), "::", stringify!($case));
                    if let Some(backend) = crate::common::Backend::postgres(test).await {
                        super::$case(backend).await;
                    }
                }
            )+
        }
    };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// Bounds a test changes from the defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tune {
    pub write_queue_max: Option<usize>,
    /// SQLite's `readers`, PostgreSQL's `pool_size_max`.
    pub readers: Option<usize>,
}

/// Where a test's stores live; see the module docs.
pub struct Backend {
    place: Place,
}

enum Place {
    Sqlite(TempDir),
    Postgres(PgSchema),
}

impl Backend {
    pub fn sqlite() -> Self {
        Self {
            place: Place::Sqlite(TempDir::new().expect("temp dir")),
        }
    }

    /// A fresh schema on the test server, or `None` (after saying so) when it is unavailable
    /// outside CI.
    pub async fn postgres(test: &str) -> Option<Self> {
        let url = postgres_url();
        let probe = tokio::time::timeout(
            Duration::from_millis(POSTGRES_CONNECT_TIMEOUT_MS),
            tokio_postgres::connect(&url, tokio_postgres::NoTls),
        )
        .await;
        let why = match probe {
            Ok(Ok((client, connection))) => {
                drop(connection);
                drop(client);
                None
            }
            Ok(Err(e)) => Some(match std::error::Error::source(&e) {
                Some(source) => format!("{e}: {source}"),
                None => e.to_string(),
            }),
            Err(_) => Some(format!(
                "no connection within {POSTGRES_CONNECT_TIMEOUT_MS} ms"
            )),
        };
        if let Some(why) = why {
            let shown = redacted(&url);
            if in_ci() {
                panic!("{test}: PostgreSQL at {shown} unavailable (CI=true): {why}");
            }
            eprintln!("SKIPPED {test}: PostgreSQL at {shown} unavailable: {why}");
            return None;
        }
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).expect("random schema name");
        let schema = format!("kassa_test_{}", hex::encode(random));
        Some(Self {
            place: Place::Postgres(PgSchema { url, schema }),
        })
    }

    pub fn kind(&self) -> Kind {
        match self.place {
            Place::Sqlite(_) => Kind::Sqlite,
            Place::Postgres(_) => Kind::Postgres,
        }
    }

    /// A store with the default bounds.
    pub async fn open(&self) -> Arc<dyn Store> {
        self.open_with(Tune::default()).await
    }

    pub async fn open_with(&self, tune: Tune) -> Arc<dyn Store> {
        match &self.place {
            Place::Sqlite(_) => {
                Arc::new(SqliteStore::open(self.sqlite_config(tune)).expect("open sqlite store"))
            }
            Place::Postgres(_) => Arc::new(
                PostgresStore::open(self.postgres_config(tune))
                    .await
                    .expect("open postgres store"),
            ),
        }
    }

    /// The SQLite file's settings (a missing parent directory: `open` must create it).
    pub fn sqlite_config(&self, tune: Tune) -> SqliteConfig {
        let Place::Sqlite(dir) = &self.place else {
            panic!("not a sqlite backend");
        };
        let mut config = SqliteConfig::new(dir.path().join("nested/data/kassa.db"));
        config.busy_timeout_ms = 30_000;
        if let Some(n) = tune.write_queue_max {
            config.write_queue_max = n;
        }
        if let Some(n) = tune.readers {
            config.readers = n;
        }
        config
    }

    pub fn sqlite_path(&self) -> PathBuf {
        self.sqlite_config(Tune::default()).path
    }

    /// The test schema's settings.
    pub fn postgres_config(&self, tune: Tune) -> PostgresConfig {
        let Place::Postgres(pg) = &self.place else {
            panic!("not a postgres backend");
        };
        let mut config = PostgresConfig::new(pg.url.clone());
        config.schema = pg.schema.clone();
        config.statement_timeout_ms = STATEMENT_TIMEOUT_MS;
        if let Some(n) = tune.write_queue_max {
            config.write_queue_max = n;
        }
        if let Some(n) = tune.readers {
            config.pool_size_max = n;
        }
        config
    }

    /// A client of the test server (outside any store), for what a test checks directly.
    pub async fn postgres_client(&self) -> tokio_postgres::Client {
        let Place::Postgres(pg) = &self.place else {
            panic!("not a postgres backend");
        };
        pg.connect().await
    }

    /// Takes the journal's write lock from outside the store, so the store's writer waits
    /// on its next append (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: `LOCK TABLE journal`).
    pub async fn hold_write_lock(&self) -> WriteLock {
        match &self.place {
            Place::Sqlite(_) => {
                let conn = rusqlite::Connection::open(self.sqlite_path())
                    .expect("open blocker connection");
                conn.execute_batch("BEGIN IMMEDIATE")
                    .expect("take the write lock");
                WriteLock::Sqlite(conn)
            }
            Place::Postgres(pg) => {
                let client = pg.connect().await;
                client
                    .batch_execute(&format!(
                        "BEGIN; LOCK TABLE \"{}\".journal IN EXCLUSIVE MODE",
                        pg.schema
                    ))
                    .await
                    .expect("take the journal lock");
                WriteLock::Postgres(client)
            }
        }
    }
}

/// A write lock held outside the store; see [`Backend::hold_write_lock`].
pub enum WriteLock {
    Sqlite(rusqlite::Connection),
    Postgres(tokio_postgres::Client),
}

impl WriteLock {
    pub async fn release(self) {
        match self {
            WriteLock::Sqlite(conn) => conn
                .execute_batch("ROLLBACK")
                .expect("release the write lock"),
            WriteLock::Postgres(client) => client
                .batch_execute("ROLLBACK")
                .await
                .expect("release the journal lock"),
        }
    }
}

/// A test's schema, dropped with everything in it when the test ends.
struct PgSchema {
    url: String,
    schema: String,
}

impl PgSchema {
    async fn connect(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connect to the test server");
        tokio::spawn(connection);
        client
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        // On a thread of its own with a runtime of its own: the test's runtime may be
        // single-threaded or stopping.
        let url = self.url.clone();
        let schema = self.schema.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!(
                        "SET lock_timeout = '30s'; DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                    ))
                    .await
                    .map_err(|e| format!("{e}: {:?}", e.as_db_error().map(|d| d.message())))
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(why)) => eprintln!("could not drop test schema {}: {why}", self.schema),
            Err(_) => eprintln!("dropping test schema {} panicked", self.schema),
        }
    }
}

fn postgres_url() -> String {
    std::env::var("KASSA_TEST_POSTGRES_URL").unwrap_or_else(|_| POSTGRES_URL_DEFAULT.to_owned())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// `url` without its password, to print.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}
