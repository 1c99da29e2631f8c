//! Upkeep of the storage, run by the ingest every few seconds on a
//! connection of its own:
//!
//! - native storage: the rollup tables (`rollup_1m`, `rollup_1h`) brought
//!   up to date with the deltas the writers committed, daily partitions
//!   made ahead of the clock, and partitions past the retention dropped;
//! - TimescaleDB: once, the chunk interval and the compression and
//!   retention policies (the extension's jobs do the rest).
//!
//! Two ingest processes may run it at once: folding deltas is commutative
//! and a delta is deleted by the pass that folds it, and a transaction-level
//! advisory lock makes the passes take turns anyway.

use std::collections::HashSet;
use std::time::Duration;

use tokio_postgres::Client;

use crate::error::IngestError;
use crate::migrate::{Storage, storage};
use crate::writer::date;

const DAY_MS: u64 = 86_400_000;
/// `pg_advisory_xact_lock` key of the rollup pass: "SHOPROLL".
const LOCK: i64 = 0x5348_4f50_524f_4c4c;

/// What to keep and how.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    /// Drop samples older than this (native: whole days; TimescaleDB: a
    /// retention policy). `None` keeps everything. Rollups are kept.
    pub samples: Option<Duration>,
    /// TimescaleDB: the chunk interval of the samples hypertable.
    pub chunk_interval: Duration,
    /// TimescaleDB: compress chunks older than this (segmented by metric).
    /// `None`: no compression.
    pub compress_after: Option<Duration>,
    /// Native: daily partitions made ahead of today.
    pub days_ahead: u32,
    /// Dead letters older than this are deleted; `None` keeps them.
    pub dead_letters: Option<Duration>,
    /// Dead letters kept at most; the oldest go first.
    pub dead_letters_max: u64,
}

impl Default for Retention {
    /// Keep every sample, one-day chunks, compress after 7 days, 2 days
    /// ahead; dead letters for 30 days, at most 1 000 000.
    fn default() -> Self {
        Self {
            samples: None,
            chunk_interval: Duration::from_secs(86_400),
            compress_after: Some(Duration::from_secs(7 * 86_400)),
            days_ahead: 2,
            dead_letters: Some(Duration::from_secs(30 * 86_400)),
            dead_letters_max: 1_000_000,
        }
    }
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pass {
    /// Deltas folded (one per metric and minute per write).
    pub deltas: u64,
    /// Minute buckets written (per metric).
    pub buckets_1m: u64,
    /// Hour buckets written (per metric).
    pub buckets_1h: u64,
    /// Partitions dropped by the retention.
    pub dropped: Vec<String>,
    /// Dead letters deleted (too old, or past the cap).
    pub dead_letters_deleted: u64,
}

/// The upkeep of one database.
#[derive(Debug)]
pub struct Maintenance {
    retention: Retention,
    storage: Option<Storage>,
    days: HashSet<u64>,
    policies_set: bool,
}

impl Maintenance {
    /// Upkeep with these settings.
    pub fn new(retention: Retention) -> Self {
        Self { retention, storage: None, days: HashSet::new(), policies_set: false }
    }

    /// One pass at wall-clock time `now` (Unix ms).
    pub async fn run(&mut self, client: &mut Client, now_ms: u64) -> Result<Pass, IngestError> {
        let mut pass = self.storage_pass(client, now_ms).await?;
        pass.dead_letters_deleted = self.trim_dead_letters(client, now_ms).await?;
        Ok(pass)
    }

    /// Deletes dead letters past the retention or the cap. Both walk the
    /// primary key from the oldest (ids grow with arrival), so the cost is
    /// the rows deleted, not the table.
    async fn trim_dead_letters(&self, client: &Client, now_ms: u64) -> Result<u64, IngestError> {
        let r = &self.retention;
        let mut deleted = client
            .execute(
                "DELETE FROM shopfloor.dead_letters
                 WHERE id <= (SELECT max(id) FROM shopfloor.dead_letters) - $1",
                &[&i64::try_from(r.dead_letters_max).unwrap_or(i64::MAX)],
            )
            .await
            .map_err(IngestError::db("delete dead letters past the cap"))?;
        if let Some(keep) = r.dead_letters {
            let cutoff = std::time::UNIX_EPOCH
                + Duration::from_millis(now_ms.saturating_sub(keep.as_millis() as u64));
            deleted += client
                .execute(
                    "DELETE FROM shopfloor.dead_letters
                     WHERE id < coalesce((SELECT id FROM shopfloor.dead_letters
                                          WHERE received_at >= $1 ORDER BY id LIMIT 1),
                                         (SELECT max(id) + 1 FROM shopfloor.dead_letters))",
                    &[&cutoff],
                )
                .await
                .map_err(IngestError::db("delete dead letters past their retention"))?;
        }
        Ok(deleted)
    }

    async fn storage_pass(
        &mut self,
        client: &mut Client,
        now_ms: u64,
    ) -> Result<Pass, IngestError> {
        let storage = match self.storage {
            Some(s) => s,
            None => *self.storage.insert(storage(client).await?),
        };
        match storage {
            Storage::TimescaleDb => {
                if !self.policies_set {
                    self.timescale_policies(client).await?;
                    self.policies_set = true;
                }
                Ok(Pass::default())
            }
            _ => {
                let today = now_ms / DAY_MS;
                for day in today..=today + u64::from(self.retention.days_ahead) {
                    if !self.days.contains(&day) {
                        crate::writer::create_partition(client, day).await?;
                        self.days.insert(day);
                    }
                }
                let mut pass = self.rollups(client).await?;
                if let Some(keep) = self.retention.samples {
                    pass.dropped = self.drop_old(client, now_ms, keep).await?;
                }
                Ok(pass)
            }
        }
    }

    /// Folds the deltas the writers committed into the minute and hour
    /// tables, in one statement.
    async fn rollups(&self, client: &mut Client) -> Result<Pass, IngestError> {
        const COMBINE: &str = "min = least(t.min, EXCLUDED.min), max = greatest(t.max, EXCLUDED.max),
               sum = t.sum + EXCLUDED.sum, count = t.count + EXCLUDED.count,
               last = CASE WHEN EXCLUDED.last_time >= t.last_time THEN EXCLUDED.last ELSE t.last END,
               last_time = greatest(t.last_time, EXCLUDED.last_time)";
        let tx = client.transaction().await.map_err(IngestError::db("start a rollup pass"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
            .await
            .map_err(IngestError::db("take the rollup lock"))?;
        let row = tx
            .query_one(
                &format!(
                    "WITH d AS (DELETE FROM shopfloor.rollup_delta RETURNING *),
                     m AS (
                       INSERT INTO shopfloor.rollup_1m AS t
                       SELECT metric_id, bucket, min(min), max(max), sum(sum), sum(count)::bigint,
                              (array_agg(last ORDER BY last_time DESC))[1], max(last_time)
                       FROM d GROUP BY 1, 2
                       ON CONFLICT (metric_id, bucket) DO UPDATE SET {COMBINE} RETURNING 1),
                     h AS (
                       INSERT INTO shopfloor.rollup_1h AS t
                       SELECT metric_id, date_trunc('hour', bucket, 'UTC'), min(min), max(max),
                              sum(sum), sum(count)::bigint,
                              (array_agg(last ORDER BY last_time DESC))[1], max(last_time)
                       FROM d GROUP BY 1, 2
                       ON CONFLICT (metric_id, bucket) DO UPDATE SET {COMBINE} RETURNING 1)
                     SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM m), (SELECT count(*) FROM h)"
                ),
                &[],
            )
            .await
            .map_err(IngestError::db("fold shopfloor.rollup_delta into the rollups"))?;
        tx.commit().await.map_err(IngestError::db("commit a rollup pass"))?;
        let n = |i: usize| row.get::<_, i64>(i) as u64;
        Ok(Pass { deltas: n(0), buckets_1m: n(1), buckets_1h: n(2), ..Pass::default() })
    }

    /// Drops the daily partitions wholly older than `keep`.
    async fn drop_old(
        &self,
        client: &Client,
        now_ms: u64,
        keep: Duration,
    ) -> Result<Vec<String>, IngestError> {
        let cutoff_day = now_ms.saturating_sub(keep.as_millis() as u64) / DAY_MS;
        let rows = client
            .query(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = 'shopfloor.samples'::regclass",
                &[],
            )
            .await
            .map_err(IngestError::db("list the partitions of shopfloor.samples"))?;
        let mut dropped = Vec::new();
        for row in rows {
            let name: String = row.get(0);
            // Partitions this crate made: samples_YYYYMMDD, holding that day.
            let Some(day) = name.strip_prefix("samples_").and_then(day_of) else { continue };
            if day < cutoff_day {
                client
                    .batch_execute(&format!("DROP TABLE IF EXISTS shopfloor.{name}"))
                    .await
                    .map_err(IngestError::db("drop a partition past the retention"))?;
                tracing::info!(partition = name, "dropped: older than the retention");
                dropped.push(name);
            }
        }
        Ok(dropped)
    }

    async fn timescale_policies(&self, client: &Client) -> Result<(), IngestError> {
        let r = &self.retention;
        let secs = |d: Duration| format!("{} seconds", d.as_secs().max(1));
        client
            .execute(
                "SELECT set_chunk_time_interval('shopfloor.samples', $1::text::interval)",
                &[&secs(r.chunk_interval)],
            )
            .await
            .map_err(IngestError::db("set the chunk interval of shopfloor.samples"))?;
        client
            .batch_execute(
                "SELECT remove_compression_policy('shopfloor.samples', if_exists => true);
                 SELECT remove_retention_policy('shopfloor.samples', if_exists => true);",
            )
            .await
            .map_err(IngestError::db("reset the TimescaleDB policies"))?;
        if let Some(after) = r.compress_after {
            client
                .batch_execute(
                    "ALTER TABLE shopfloor.samples SET (timescaledb.compress,
                       timescaledb.compress_segmentby = 'metric_id',
                       timescaledb.compress_orderby = 'time DESC')",
                )
                .await
                .map_err(IngestError::db("enable compression on shopfloor.samples"))?;
            client
                .execute(
                    "SELECT add_compression_policy('shopfloor.samples', $1::text::interval)",
                    &[&secs(after)],
                )
                .await
                .map_err(IngestError::db("add the compression policy"))?;
        }
        if let Some(keep) = r.samples {
            client
                .execute(
                    "SELECT add_retention_policy('shopfloor.samples', $1::text::interval)",
                    &[&secs(keep)],
                )
                .await
                .map_err(IngestError::db("add the retention policy"))?;
        }
        Ok(())
    }
}

/// The day (since the Unix epoch) of `YYYYMMDD`.
fn day_of(s: &str) -> Option<u64> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (y, m, d) =
        (s[..4].parse::<i64>().ok()?, s[4..6].parse::<i64>().ok()?, s[6..].parse::<i64>().ok()?);
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let day = u64::try_from(days).ok()?;
    // Only a real date round-trips.
    (date(day).replace('-', "") == s).then_some(day)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn partition_names_give_their_day() {
        assert_eq!(day_of("19700101"), Some(0));
        assert_eq!(day_of("20261127"), Some(1_795_737_600_000 / DAY_MS));
        for bad in ["2026112", "2026-11-2", "20261340", "20260230", "abcdefgh", "default"] {
            assert_eq!(day_of(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn days_round_trip(day in 0_u64..200_000) {
            prop_assert_eq!(day_of(&date(day).replace('-', "")), Some(day));
        }
    }
}
