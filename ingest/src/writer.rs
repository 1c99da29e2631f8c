//! Batches into `shopfloor.samples`: catalogue ids, daily partitions made
//! ahead of the rows, then one binary COPY in one transaction.
//!
//! Idempotent on (metric, time): the common path is a plain COPY into the
//! table; when the batch collides with rows already there (a redelivery
//! after a crash or reconnect) the transaction fails with a unique
//! violation, and the batch is written again through a temporary table and
//! `INSERT … ON CONFLICT DO NOTHING`, which adds only what is new.

use std::collections::{HashMap, HashSet};

use futures_util::SinkExt as _;
use shopfloor_schemas::Batch;
use tokio_postgres::Client;

use crate::copy::{CopyBuffer, RowError, pg_micros, quality_code, stored};
use crate::error::IngestError;

const COLUMNS: &str = "(time, metric_id, value, value_text, quality)";
const UNIQUE_VIOLATION: &str = "23505";
const DUPLICATE_TABLE: &str = "42P07";
const DAY_MS: u64 = 86_400_000;

/// A reading that cannot be stored, for the dead letters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// The batch's source.
    pub source: String,
    /// The reading's metric.
    pub metric: String,
    /// Why.
    pub error: RowError,
}

/// What a write did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Rows added.
    pub rows: u64,
    /// Rows offered that were there already (redeliveries).
    pub duplicates: u64,
    /// Readings that cannot be stored (not written; the caller dead-letters them).
    pub rejected: Vec<Rejected>,
}

/// Writes batches over one connection. Keeps the catalogue ids and the
/// partitions it has seen.
#[derive(Debug)]
pub struct Writer {
    client: Client,
    /// Catalogue ids by source, then metric: looked up with `&str`, no
    /// allocation per reading.
    ids: HashMap<String, HashMap<String, i32>>,
    days: HashSet<u64>,
}

impl Writer {
    /// A writer on a connection whose schema is migrated.
    pub fn new(client: Client) -> Self {
        Self { client, ids: HashMap::new(), days: HashSet::new() }
    }

    /// The connection.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Writes every reading of `batches` in one transaction.
    pub async fn write(&mut self, batches: &[Batch]) -> Result<Written, IngestError> {
        let mut out = Written::default();
        let mut missing: Vec<(String, String)> = Vec::new();
        for b in batches {
            let known = self.ids.get(b.source.as_str());
            for r in &b.readings {
                if known.is_none_or(|m| !m.contains_key(r.metric.as_str()))
                    && !missing
                        .iter()
                        .any(|(s, m)| s == b.source.as_str() && m == r.metric.as_str())
                {
                    missing.push((b.source.to_string(), r.metric.to_string()));
                }
            }
        }
        if !missing.is_empty() {
            self.register(&missing).await?;
        }
        let rows: usize = batches.iter().map(|b| b.readings.len()).sum();
        let mut copy = CopyBuffer::with_capacity(rows * 40 + 64);
        let mut days = HashSet::new();
        let mut last_day = u64::MAX;
        for b in batches {
            // (A source with no readings was never registered.)
            let Some(ids) = self.ids.get(b.source.as_str()) else { continue };
            for r in &b.readings {
                let row = stored(&r.value).and_then(|v| Ok((v, pg_micros(r.timestamp.unix_ms())?)));
                let (value, time) = match row {
                    Ok(x) => x,
                    Err(error) => {
                        out.rejected.push(Rejected {
                            source: b.source.to_string(),
                            metric: r.metric.to_string(),
                            error,
                        });
                        continue;
                    }
                };
                let id = ids[r.metric.as_str()];
                let day = r.timestamp.unix_ms() / DAY_MS;
                if day != last_day {
                    days.insert(day);
                    last_day = day;
                }
                copy.push(time, id, &value, quality_code(r.quality));
            }
        }
        let offered = copy.rows() as u64;
        if offered == 0 {
            return Ok(out);
        }
        for day in days {
            if !self.days.contains(&day) {
                self.partition(day).await?;
                self.days.insert(day);
            }
        }
        let data = copy.finish();
        match self.copy_fast(data.clone()).await {
            Ok(rows) => out.rows = rows,
            Err(e) if e.sqlstate() == Some(UNIQUE_VIOLATION) => {
                out.rows = self.copy_dedup(data).await?;
                out.duplicates = offered - out.rows;
            }
            Err(e) => return Err(e),
        }
        Ok(out)
    }

    async fn copy_fast(&mut self, data: bytes::Bytes) -> Result<u64, IngestError> {
        let tx = self.client.transaction().await.map_err(IngestError::db("start a transaction"))?;
        let sink = tx
            .copy_in(&format!("COPY shopfloor.samples {COLUMNS} FROM STDIN (FORMAT binary)"))
            .await
            .map_err(IngestError::db("start COPY into shopfloor.samples"))?;
        futures_util::pin_mut!(sink);
        sink.send(data).await.map_err(IngestError::db("send COPY data"))?;
        let rows = sink.finish().await.map_err(IngestError::db("COPY into shopfloor.samples"))?;
        tx.commit().await.map_err(IngestError::db("commit the COPY"))?;
        Ok(rows)
    }

    /// The slow path after a collision: through a temporary table, adding
    /// only rows that are not there yet.
    async fn copy_dedup(&mut self, data: bytes::Bytes) -> Result<u64, IngestError> {
        let tx = self.client.transaction().await.map_err(IngestError::db("start a transaction"))?;
        tx.batch_execute("CREATE TEMP TABLE samples_in (LIKE shopfloor.samples) ON COMMIT DROP")
            .await
            .map_err(IngestError::db("create a temporary table"))?;
        let sink = tx
            .copy_in(&format!("COPY samples_in {COLUMNS} FROM STDIN (FORMAT binary)"))
            .await
            .map_err(IngestError::db("start COPY into a temporary table"))?;
        futures_util::pin_mut!(sink);
        sink.send(data).await.map_err(IngestError::db("send COPY data"))?;
        sink.finish().await.map_err(IngestError::db("COPY into a temporary table"))?;
        let rows = tx
            .execute(
                &format!(
                    "INSERT INTO shopfloor.samples {COLUMNS} SELECT {} FROM samples_in ON CONFLICT DO NOTHING",
                    COLUMNS.trim_matches(['(', ')'])
                ),
                &[],
            )
            .await
            .map_err(IngestError::db("insert the new rows of a redelivered batch"))?;
        tx.commit().await.map_err(IngestError::db("commit the redelivered batch"))?;
        Ok(rows)
    }

    /// Catalogue ids for (source, name) pairs, created where missing.
    async fn register(&mut self, keys: &[(String, String)]) -> Result<(), IngestError> {
        let sources: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
        let names: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
        self.client
            .execute(
                "INSERT INTO shopfloor.metrics (source, name)
                 SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT (source, name) DO NOTHING",
                &[&sources, &names],
            )
            .await
            .map_err(IngestError::db("add metrics to the catalogue"))?;
        let rows = self
            .client
            .query(
                "SELECT m.id, m.source, m.name FROM shopfloor.metrics m
                 JOIN unnest($1::text[], $2::text[]) AS k(source, name)
                   ON m.source = k.source AND m.name = k.name",
                &[&sources, &names],
            )
            .await
            .map_err(IngestError::db("read catalogue ids"))?;
        for row in rows {
            self.ids.entry(row.get(1)).or_default().insert(row.get(2), row.get(0));
        }
        Ok(())
    }

    /// The daily partition holding `day` (days since the Unix epoch, UTC).
    async fn partition(&self, day: u64) -> Result<(), IngestError> {
        let (from, to) = (date(day), date(day + 1));
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS shopfloor.samples_{} PARTITION OF shopfloor.samples
             FOR VALUES FROM ('{from} 00:00:00+00') TO ('{to} 00:00:00+00')",
            from.replace('-', "")
        );
        match self.client.batch_execute(&sql).await {
            Ok(()) => Ok(()),
            // Another ingest process made it at the same moment.
            Err(e) if e.code().map(|c| c.code()) == Some(DUPLICATE_TABLE) => Ok(()),
            Err(e) => Err(IngestError::Database {
                what: format!("create the partition for {from}"),
                source: e,
            }),
        }
    }
}

/// `YYYY-MM-DD` of a day since the Unix epoch (proleptic Gregorian, UTC).
pub fn date(day: u64) -> String {
    // Howard Hinnant's civil_from_days.
    let z = day as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}
