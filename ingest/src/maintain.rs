//! Upkeep of the storage, run by the ingest every few seconds on a
//! connection of its own:
//!
//! - native storage: the rollup tables (`rollup_1m`, `rollup_1h`) brought
//!   up to date with the time ranges the writers queued, daily partitions
//!   made ahead of the clock, and partitions past the retention dropped;
//! - TimescaleDB: once, the chunk interval and the compression and
//!   retention policies (the extension's jobs do the rest).
//!
//! Two ingest processes may run it at once: a transaction-level advisory
//! lock makes their rollup passes take turns (an older snapshot must never
//! overwrite a newer bucket).

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_postgres::Client;

use crate::error::IngestError;
use crate::migrate::{Storage, storage};
use crate::writer::date;

const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 86_400_000;
/// `pg_advisory_xact_lock` key of the rollup pass: "SHOPROLL".
const LOCK: i64 = 0x5348_4f50_524f_4c4c;
/// Queue entries taken per pass.
const QUEUE_TAKE: i64 = 10_000;

/// What to keep and how.
#[derive(Clone, Debug, PartialEq, Eq)]
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
}

impl Default for Retention {
    /// Keep everything, one-day chunks, compress after 7 days, 2 days ahead.
    fn default() -> Self {
        Self {
            samples: None,
            chunk_interval: Duration::from_secs(86_400),
            compress_after: Some(Duration::from_secs(7 * 86_400)),
            days_ahead: 2,
        }
    }
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pass {
    /// Queue entries taken.
    pub queued: u64,
    /// Disjoint minute-aligned ranges recomputed.
    pub ranges: u64,
    /// Minute buckets written (per metric).
    pub buckets_1m: u64,
    /// Hour buckets written (per metric).
    pub buckets_1h: u64,
    /// Partitions dropped by the retention.
    pub dropped: Vec<String>,
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

    /// One pass at wall-clock time `now` (Unix ms). Run it again until
    /// [`Pass::queued`] is zero to drain a long queue.
    pub async fn run(&mut self, client: &mut Client, now_ms: u64) -> Result<Pass, IngestError> {
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

    async fn rollups(&self, client: &mut Client) -> Result<Pass, IngestError> {
        let tx = client.transaction().await.map_err(IngestError::db("start a rollup pass"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
            .await
            .map_err(IngestError::db("take the rollup lock"))?;
        let taken = tx
            .query(
                "DELETE FROM shopfloor.rollup_queue WHERE id IN
                   (SELECT id FROM shopfloor.rollup_queue ORDER BY id LIMIT $1)
                 RETURNING lo, hi",
                &[&QUEUE_TAKE],
            )
            .await
            .map_err(IngestError::db("take the rollup queue"))?;
        let mut pass = Pass { queued: taken.len() as u64, ..Pass::default() };
        if taken.is_empty() {
            return Ok(pass);
        }
        let raw: Vec<(u64, u64)> = taken
            .iter()
            .map(|r| (unix_ms(r.get::<_, SystemTime>(0)), unix_ms(r.get::<_, SystemTime>(1))))
            .collect();
        for (from, to) in merge(&raw, MINUTE_MS) {
            pass.ranges += 1;
            pass.buckets_1m += tx
                .execute(
                    "INSERT INTO shopfloor.rollup_1m
                     SELECT metric_id, date_trunc('minute', time, 'UTC'), min(value), max(value),
                            sum(value), count(value),
                            (array_agg(value ORDER BY time DESC))[1], max(time)
                     FROM shopfloor.samples
                     WHERE time >= $1 AND time < $2 AND value IS NOT NULL
                     GROUP BY 1, 2
                     ON CONFLICT (metric_id, bucket) DO UPDATE SET
                       min = EXCLUDED.min, max = EXCLUDED.max, sum = EXCLUDED.sum,
                       count = EXCLUDED.count, last = EXCLUDED.last,
                       last_time = EXCLUDED.last_time",
                    &[&system_time(from), &system_time(to)],
                )
                .await
                .map_err(IngestError::db("update shopfloor.rollup_1m"))?;
            let (h0, h1) = (from / HOUR_MS * HOUR_MS, to.div_ceil(HOUR_MS) * HOUR_MS);
            pass.buckets_1h += tx
                .execute(
                    "INSERT INTO shopfloor.rollup_1h
                     SELECT metric_id, date_trunc('hour', bucket, 'UTC'), min(min), max(max),
                            sum(sum), sum(count)::bigint,
                            (array_agg(last ORDER BY last_time DESC))[1], max(last_time)
                     FROM shopfloor.rollup_1m
                     WHERE bucket >= $1 AND bucket < $2
                     GROUP BY 1, 2
                     ON CONFLICT (metric_id, bucket) DO UPDATE SET
                       min = EXCLUDED.min, max = EXCLUDED.max, sum = EXCLUDED.sum,
                       count = EXCLUDED.count, last = EXCLUDED.last,
                       last_time = EXCLUDED.last_time",
                    &[&system_time(h0), &system_time(h1)],
                )
                .await
                .map_err(IngestError::db("update shopfloor.rollup_1h"))?;
        }
        tx.commit().await.map_err(IngestError::db("commit a rollup pass"))?;
        Ok(pass)
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

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn system_time(unix_ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(unix_ms)
}

/// Inclusive time ranges (Unix ms) widened to whole `step`s and merged:
/// disjoint, sorted, half-open `[from, to)` ranges covering every bucket
/// any input touches. Sans-IO.
pub fn merge(ranges: &[(u64, u64)], step: u64) -> Vec<(u64, u64)> {
    let mut r: Vec<(u64, u64)> = ranges
        .iter()
        .map(|&(lo, hi)| {
            let (lo, hi) = (lo.min(hi), lo.max(hi));
            (lo / step * step, (hi / step).saturating_add(1).saturating_mul(step))
        })
        .collect();
    r.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(r.len());
    for (from, to) in r {
        match out.last_mut() {
            Some(last) if from <= last.1 => last.1 = last.1.max(to),
            _ => out.push((from, to)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn ranges_widen_to_minutes_and_merge() {
        assert_eq!(merge(&[], MINUTE_MS), vec![]);
        assert_eq!(merge(&[(61_000, 61_000)], MINUTE_MS), vec![(60_000, 120_000)]);
        // Touching and overlapping ranges become one; a gap stays.
        assert_eq!(
            merge(&[(0, 59_999), (60_000, 60_000), (300_000, 301_000)], MINUTE_MS),
            vec![(0, 120_000), (300_000, 360_000)]
        );
        // Reversed input is taken as the same range.
        assert_eq!(merge(&[(130_000, 10_000)], MINUTE_MS), vec![(0, 180_000)]);
    }

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
        fn merged_ranges_cover_every_input_and_are_disjoint(
            input in proptest::collection::vec((0_u64..10_000_000, 0_u64..600_000), 0..40)
        ) {
            let ranges: Vec<(u64, u64)> = input.iter().map(|&(a, len)| (a, a + len)).collect();
            let out = merge(&ranges, MINUTE_MS);
            for w in out.windows(2) {
                prop_assert!(w[0].1 < w[1].0, "sorted, disjoint, not touching: {out:?}");
            }
            for &(from, to) in &out {
                prop_assert!(from % MINUTE_MS == 0 && to % MINUTE_MS == 0 && from < to);
                // Every output range holds some input.
                prop_assert!(ranges.iter().any(|&(lo, hi)| lo < to && hi >= from));
            }
            for &(lo, hi) in &ranges {
                prop_assert!(out.iter().any(|&(from, to)| from <= lo && hi < to), "{lo}..={hi} in {out:?}");
            }
        }

        #[test]
        fn days_round_trip(day in 0_u64..200_000) {
            prop_assert_eq!(day_of(&date(day).replace('-', "")), Some(day));
        }
    }
}
