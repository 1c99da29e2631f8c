//! Embedded, versioned migrations of the `shopfloor` schema, applied at
//! start in one transaction per migration under an advisory lock (so two
//! ingest processes starting together apply each migration once).

use tokio_postgres::Client;

use crate::error::IngestError;

/// One migration: its version (applied in order) and its SQL.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    /// Applied in increasing order; recorded in `shopfloor.schema_migrations`.
    pub version: i32,
    /// A short name for the log.
    pub name: &'static str,
    /// The SQL (several statements).
    pub sql: &'static str,
}

/// Every migration of this version of the crate.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "schema", sql: include_str!("../migrations/0001_schema.sql") },
    Migration { version: 2, name: "rollups", sql: include_str!("../migrations/0002_rollups.sql") },
    Migration { version: 3, name: "births", sql: include_str!("../migrations/0003_births.sql") },
    Migration {
        version: 4,
        name: "time_weighted",
        sql: include_str!("../migrations/0004_time_weighted.sql"),
    },
];

/// A fixed key for `pg_advisory_xact_lock`: the migrations of shopfloor.
const LOCK: i64 = 0x5348_4f50_4d49_4752; // "SHOPMIGR"

/// Where the samples live, chosen once by the first migration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Storage {
    /// Native range partitions by day and rollup tables the ingest maintains.
    Native,
    /// A TimescaleDB hypertable and continuous aggregates.
    TimescaleDb,
}

/// Whether a server can run TimescaleDB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimescaleDb {
    /// The extension is not installed on the server.
    NotInstalled,
    /// Installed, but not in `shared_preload_libraries`: it cannot be
    /// created (the server drops the connection that tries).
    NotPreloaded,
    /// Installed and preloaded.
    Available,
}

/// What the server says of TimescaleDB (see [`TimescaleDb`]).
pub async fn timescaledb_status(client: &Client) -> Result<TimescaleDb, IngestError> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),
                    current_setting('shared_preload_libraries')",
            &[],
        )
        .await
        .map_err(IngestError::db("look for TimescaleDB"))?;
    if !row.get::<_, bool>(0) {
        return Ok(TimescaleDb::NotInstalled);
    }
    let preloaded = row.get::<_, &str>(1).split(',').any(|lib| {
        let lib = lib.trim().trim_matches('"');
        lib.rsplit('/').next() == Some("timescaledb")
    });
    Ok(if preloaded { TimescaleDb::Available } else { TimescaleDb::NotPreloaded })
}

/// The storage a migrated database uses.
pub async fn storage(client: &Client) -> Result<Storage, IngestError> {
    let row = client
        .query_one("SELECT value FROM shopfloor.settings WHERE key = 'storage'", &[])
        .await
        .map_err(IngestError::db("read the storage from shopfloor.settings"))?;
    Ok(match row.get::<_, &str>(0) {
        "timescaledb" => Storage::TimescaleDb,
        _ => Storage::Native,
    })
}

/// Applies what is missing; returns the versions applied now (empty when
/// the schema was up to date). Uses TimescaleDB when the extension can be
/// created on this server.
pub async fn migrate(client: &mut Client) -> Result<Vec<i32>, IngestError> {
    migrate_with(client, true).await
}

/// [`migrate`], choosing whether a new schema may use TimescaleDB (with
/// `false`, native partitions even where the extension exists). The choice
/// is made once, by the first migration; later calls do not change it.
pub async fn migrate_with(client: &mut Client, timescaledb: bool) -> Result<Vec<i32>, IngestError> {
    // Without the preload, `CREATE EXTENSION timescaledb` is not an error
    // the migration can catch: the server answers FATAL and drops the
    // connection. So look first, and say how to turn it on.
    let new_schema = client
        .query_one("SELECT to_regclass('shopfloor.settings') IS NULL", &[])
        .await
        .map_err(IngestError::db("look for the shopfloor schema"))?
        .get::<_, bool>(0);
    let timescaledb = timescaledb && {
        let status = timescaledb_status(client).await?;
        if new_schema && status == TimescaleDb::NotPreloaded {
            tracing::warn!(
                "TimescaleDB is installed on this PostgreSQL server but not preloaded, so the \
                 samples go into native partitions. To use TimescaleDB, add \
                 `shared_preload_libraries = 'timescaledb'` to postgresql.conf, restart \
                 PostgreSQL and start with an empty database (the storage is chosen once, \
                 when the schema is made)"
            );
        }
        status == TimescaleDb::Available
    };
    client
        .batch_execute(if timescaledb {
            "SET shopfloor.timescaledb = 'on'"
        } else {
            "SET shopfloor.timescaledb = 'off'"
        })
        .await
        .map_err(IngestError::db("set shopfloor.timescaledb"))?;
    let mut applied = Vec::new();
    for m in MIGRATIONS {
        let tx = client.transaction().await.map_err(IngestError::db("start a migration"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
            .await
            .map_err(IngestError::db("take the migration lock"))?;
        tx.batch_execute(
            "CREATE SCHEMA IF NOT EXISTS shopfloor;
             CREATE TABLE IF NOT EXISTS shopfloor.schema_migrations (
                 version integer PRIMARY KEY,
                 name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );",
        )
        .await
        .map_err(IngestError::db("create shopfloor.schema_migrations"))?;
        let done = tx
            .query_opt(
                "SELECT 1 FROM shopfloor.schema_migrations WHERE version = $1",
                &[&m.version],
            )
            .await
            .map_err(IngestError::db("read shopfloor.schema_migrations"))?
            .is_some();
        if done {
            continue;
        }
        tx.batch_execute(m.sql).await.map_err(|e| IngestError::Database {
            what: format!("apply migration {} ({})", m.version, m.name),
            source: e,
        })?;
        tx.execute(
            "INSERT INTO shopfloor.schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await
        .map_err(IngestError::db("record a migration"))?;
        tx.commit().await.map_err(IngestError::db("commit a migration"))?;
        applied.push(m.version);
    }
    Ok(applied)
}
