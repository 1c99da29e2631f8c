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

use crate::copy::{CopyBuffer, RowError, Stored, pg_micros, quality_code, stored};
use crate::error::IngestError;
use crate::migrate::Storage;

const COLUMNS: &str = "(time, metric_id, value, value_text, quality)";
const UNIQUE_VIOLATION: &str = "23505";
const DUPLICATE_TABLE: &str = "42P07";
const DAY_MS: u64 = 86_400_000;
const MINUTE_MS: u64 = 60_000;

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

/// A message that cannot be used, for `shopfloor.dead_letters`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The MQTT topic.
    pub topic: String,
    /// The payload as received.
    pub payload: Vec<u8>,
    /// Why it cannot be used.
    pub error: String,
}

/// What a source says about one of its metrics (a Sparkplug birth: the
/// datatype, `engUnit`, and other properties), for `shopfloor.metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricInfo {
    /// The source, as in the readings.
    pub source: String,
    /// The metric's name.
    pub name: String,
    /// The datatype's name (Sparkplug's: `Double`, `Int32`, `Boolean`…).
    pub datatype: Option<String>,
    /// The engineering unit.
    pub unit: Option<String>,
    /// Other properties as a JSON object (`engLow`, `engHigh`…).
    pub properties: Option<String>,
}

/// The datatype recorded for a metric first seen with this value (when no
/// birth described it).
fn value_type(v: &shopfloor_schemas::Value) -> &'static str {
    use shopfloor_schemas::Value as V;
    match v {
        V::Bool(_) => "Boolean",
        V::I64(_) => "Int64",
        V::U64(_) => "UInt64",
        V::F64(_) => "Double",
        V::String(_) => "String",
        V::Bytes(_) => "Bytes",
        _ => "Unknown",
    }
}

/// What one transaction holds.
struct Tx<'a> {
    data: Option<bytes::Bytes>,
    /// Native storage: the rows' aggregates for `rollup_delta`.
    deltas: Option<&'a Deltas>,
    dead: &'a [DeadLetter],
}

/// The aggregate of a batch's numeric rows of one metric in one minute.
#[derive(Clone, Copy, Debug)]
struct Agg {
    min: f64,
    max: f64,
    sum: f64,
    count: i64,
    last: f64,
    last_ms: u64,
}

/// The aggregates of one batch by (metric id, minute since the epoch), as
/// the columns of `rollup_delta`.
#[derive(Debug, Default)]
struct Deltas {
    by_key: HashMap<(i32, u64), Agg>,
}

impl Deltas {
    fn add(&mut self, id: i32, ms: u64, x: f64) {
        self.by_key
            .entry((id, ms / MINUTE_MS))
            .and_modify(|a| {
                a.min = a.min.min(x);
                a.max = a.max.max(x);
                a.sum += x;
                a.count += 1;
                if ms >= a.last_ms {
                    (a.last, a.last_ms) = (x, ms);
                }
            })
            .or_insert(Agg { min: x, max: x, sum: x, count: 1, last: x, last_ms: ms });
    }
}

fn system_time(unix_ms: u64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms)
}

/// The batch's aggregates into `rollup_delta`, one statement.
async fn insert_deltas(
    tx: &tokio_postgres::Transaction<'_>,
    d: &Deltas,
) -> Result<(), IngestError> {
    let n = d.by_key.len();
    let (mut ids, mut buckets) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut mins, mut maxs, mut sums) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut counts, mut lasts, mut times) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    for (&(id, minute), a) in &d.by_key {
        ids.push(id);
        buckets.push(system_time(minute * MINUTE_MS));
        mins.push(a.min);
        maxs.push(a.max);
        sums.push(a.sum);
        counts.push(a.count);
        lasts.push(a.last);
        times.push(system_time(a.last_ms));
    }
    tx.execute(
        "INSERT INTO shopfloor.rollup_delta
         SELECT * FROM unnest($1::int4[], $2::timestamptz[], $3::float8[], $4::float8[],
                              $5::float8[], $6::int8[], $7::float8[], $8::timestamptz[])",
        &[&ids, &buckets, &mins, &maxs, &sums, &counts, &lasts, &times],
    )
    .await
    .map_err(IngestError::db("add to shopfloor.rollup_delta"))?;
    Ok(())
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
    storage: Option<Storage>,
    /// Reused from batch to batch.
    deltas: Deltas,
}

impl Writer {
    /// A writer on a connection whose schema is migrated.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            ids: HashMap::new(),
            days: HashSet::new(),
            storage: None,
            deltas: Deltas::default(),
        }
    }

    /// The connection.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Writes every reading of `batches` in one transaction.
    pub async fn write(&mut self, batches: &[Batch]) -> Result<Written, IngestError> {
        self.write_all(batches, &[]).await
    }

    /// Writes every reading of `batches` and the dead letters `dead` in one
    /// transaction (with, on native storage, the rows' aggregates for the
    /// rollup maintenance): all of it is committed, or none.
    pub async fn write_all(
        &mut self,
        batches: &[Batch],
        dead: &[DeadLetter],
    ) -> Result<Written, IngestError> {
        let mut out = Written::default();
        let mut missing: Vec<(String, String, &'static str)> = Vec::new();
        for b in batches {
            let known = self.ids.get(b.source.as_str());
            for r in &b.readings {
                if known.is_none_or(|m| !m.contains_key(r.metric.as_str()))
                    && !missing
                        .iter()
                        .any(|(s, m, _)| s == b.source.as_str() && m == r.metric.as_str())
                {
                    missing.push((
                        b.source.to_string(),
                        r.metric.to_string(),
                        value_type(&r.value),
                    ));
                }
            }
        }
        if !missing.is_empty() {
            self.register(&missing).await?;
        }
        let native = self.storage().await? == Storage::Native;
        let rows: usize = batches.iter().map(|b| b.readings.len()).sum();
        let mut copy = CopyBuffer::with_capacity(rows * 40 + 64);
        let mut days = HashSet::new();
        let mut last_day = u64::MAX;
        let mut deltas = std::mem::take(&mut self.deltas);
        deltas.by_key.clear();
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
                let ms = r.timestamp.unix_ms();
                if let (true, Stored::Number(x)) = (native, &value) {
                    deltas.add(id, ms, *x);
                }
                let day = ms / DAY_MS;
                if day != last_day {
                    days.insert(day);
                    last_day = day;
                }
                copy.push(time, id, &value, quality_code(r.quality));
            }
        }
        let offered = copy.rows() as u64;
        if offered == 0 && dead.is_empty() {
            self.deltas = deltas;
            return Ok(out);
        }
        if native {
            for day in days {
                if !self.days.contains(&day) {
                    create_partition(&self.client, day).await?;
                    self.days.insert(day);
                }
            }
        }
        let tx = Tx {
            data: (offered > 0).then(|| copy.finish()),
            deltas: (native && offered > 0).then_some(&deltas),
            dead,
        };
        let result = match self.transact(&tx, false).await {
            Ok(rows) => Ok(rows),
            Err(e) if e.sqlstate() == Some(UNIQUE_VIOLATION) => {
                self.transact(&tx, true).await.inspect(|&rows| out.duplicates = offered - rows)
            }
            Err(e) => Err(e),
        };
        self.deltas = deltas;
        out.rows = result?;
        Ok(out)
    }

    /// The storage of the database (read once).
    async fn storage(&mut self) -> Result<Storage, IngestError> {
        if let Some(s) = self.storage {
            return Ok(s);
        }
        let s = crate::migrate::storage(&self.client).await?;
        self.storage = Some(s);
        Ok(s)
    }

    /// One transaction: the rows by COPY (straight into the table, or with
    /// `dedup` through a temporary table adding only rows not there yet),
    /// the rollup deltas, the dead letters. Returns the rows added.
    async fn transact(&mut self, w: &Tx<'_>, dedup: bool) -> Result<u64, IngestError> {
        let tx = self.client.transaction().await.map_err(IngestError::db("start a transaction"))?;
        let mut rows = 0;
        if let Some(data) = &w.data {
            let target = if dedup {
                tx.batch_execute(
                    "CREATE TEMP TABLE samples_in (LIKE shopfloor.samples) ON COMMIT DROP",
                )
                .await
                .map_err(IngestError::db("create a temporary table"))?;
                "samples_in"
            } else {
                "shopfloor.samples"
            };
            let sink = tx
                .copy_in(&format!("COPY {target} {COLUMNS} FROM STDIN (FORMAT binary)"))
                .await
                .map_err(IngestError::db("start COPY"))?;
            futures_util::pin_mut!(sink);
            sink.send(data.clone()).await.map_err(IngestError::db("send COPY data"))?;
            rows = sink.finish().await.map_err(IngestError::db("COPY into shopfloor.samples"))?;
            let columns = COLUMNS.trim_matches(['(', ')']);
            if dedup && w.deltas.is_some() {
                // Only the rows added count towards the rollups.
                let count: i64 = tx
                    .query_one(
                        &format!(
                            "WITH ins AS (
                               INSERT INTO shopfloor.samples {COLUMNS} SELECT {columns} FROM samples_in
                               ON CONFLICT DO NOTHING RETURNING metric_id, time, value),
                             d AS (
                               INSERT INTO shopfloor.rollup_delta
                               SELECT metric_id, date_trunc('minute', time, 'UTC'), min(value), max(value),
                                      sum(value), count(value),
                                      (array_agg(value ORDER BY time DESC))[1], max(time)
                               FROM ins WHERE value IS NOT NULL GROUP BY 1, 2 RETURNING 1)
                             SELECT count(*) FROM ins"
                        ),
                        &[],
                    )
                    .await
                    .map_err(IngestError::db("insert the new rows of a redelivered batch"))?
                    .get(0);
                rows = count as u64;
            } else if dedup {
                rows = tx
                    .execute(
                        &format!(
                            "INSERT INTO shopfloor.samples {COLUMNS} SELECT {columns} FROM samples_in ON CONFLICT DO NOTHING"
                        ),
                        &[],
                    )
                    .await
                    .map_err(IngestError::db("insert the new rows of a redelivered batch"))?;
            } else if let Some(d) = w.deltas {
                insert_deltas(&tx, d).await?;
            }
        }
        if !w.dead.is_empty() {
            let topics: Vec<&str> = w.dead.iter().map(|d| d.topic.as_str()).collect();
            let payloads: Vec<&[u8]> = w.dead.iter().map(|d| d.payload.as_slice()).collect();
            let errors: Vec<&str> = w.dead.iter().map(|d| d.error.as_str()).collect();
            tx.execute(
                "INSERT INTO shopfloor.dead_letters (topic, payload, error)
                 SELECT * FROM unnest($1::text[], $2::bytea[], $3::text[])",
                &[&topics, &payloads, &errors],
            )
            .await
            .map_err(IngestError::db("write dead letters"))?;
        }
        tx.commit().await.map_err(IngestError::db("commit"))?;
        Ok(rows)
    }

    /// Catalogue ids for (source, name, datatype) triples, created where
    /// missing (an existing entry keeps its datatype).
    async fn register(
        &mut self,
        keys: &[(String, String, &'static str)],
    ) -> Result<(), IngestError> {
        let sources: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
        let names: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
        let types: Vec<&str> = keys.iter().map(|k| k.2).collect();
        self.client
            .execute(
                "INSERT INTO shopfloor.metrics (source, name, datatype)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
                 ON CONFLICT (source, name) DO NOTHING",
                &[&sources, &names, &types],
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
    /// Keeps the latest Sparkplug birth (NBIRTH or DBIRTH: its topic and
    /// payload) of each edge node and device, for [`births`](Self::births)
    /// after a restart.
    pub async fn remember_births(
        &mut self,
        births: &[(String, Vec<u8>)],
    ) -> Result<(), IngestError> {
        if births.is_empty() {
            return Ok(());
        }
        let topics: Vec<&str> = births.iter().map(|(t, _)| t.as_str()).collect();
        let payloads: Vec<&[u8]> = births.iter().map(|(_, p)| p.as_slice()).collect();
        self.client
            .execute(
                "INSERT INTO shopfloor.sparkplug_births AS b (topic, payload)
                 SELECT DISTINCT ON (t) t, p
                 FROM unnest($1::text[], $2::bytea[]) WITH ORDINALITY AS k(t, p, o)
                 ORDER BY t, o DESC -- the latest birth wins
                 ON CONFLICT (topic) DO UPDATE SET payload = EXCLUDED.payload, received_at = now()",
                &[&topics, &payloads],
            )
            .await
            .map_err(IngestError::db("remember Sparkplug births"))?;
        Ok(())
    }

    /// The births kept by [`remember_births`](Self::remember_births), edge
    /// nodes' before devices', oldest first: replay them in this order.
    pub async fn births(client: &Client) -> Result<Vec<(String, Vec<u8>)>, IngestError> {
        let rows = client
            .query(
                "SELECT topic, payload FROM shopfloor.sparkplug_births
                 ORDER BY split_part(topic, '/', 3) = 'DBIRTH', received_at, topic",
                &[],
            )
            .await
            .map_err(IngestError::db("read the kept Sparkplug births"))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Records what sources say about their metrics (datatype, unit,
    /// properties): new entries are created, known ones updated with what
    /// is given (a rebirth may change a unit).
    pub async fn describe(&mut self, infos: &[MetricInfo]) -> Result<(), IngestError> {
        if infos.is_empty() {
            return Ok(());
        }
        let col = |f: fn(&MetricInfo) -> Option<&str>| -> Vec<Option<&str>> {
            infos.iter().map(f).collect()
        };
        let sources = col(|i| Some(i.source.as_str()));
        let names = col(|i| Some(i.name.as_str()));
        let types = col(|i| i.datatype.as_deref());
        let units = col(|i| i.unit.as_deref());
        let props = col(|i| i.properties.as_deref());
        let rows = self
            .client
            .query(
                "INSERT INTO shopfloor.metrics AS m (source, name, datatype, unit, properties)
                 SELECT DISTINCT ON (s, n) s, n, t, u, p::jsonb
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
                      WITH ORDINALITY AS k(s, n, t, u, p, o)
                 ORDER BY s, n, o DESC -- the latest birth wins
                 ON CONFLICT (source, name) DO UPDATE SET
                   datatype = coalesce(EXCLUDED.datatype, m.datatype),
                   unit = coalesce(EXCLUDED.unit, m.unit),
                   properties = coalesce(EXCLUDED.properties, m.properties)
                 RETURNING id, source, name",
                &[&sources, &names, &types, &units, &props],
            )
            .await
            .map_err(IngestError::db("describe metrics in the catalogue"))?;
        for row in rows {
            self.ids.entry(row.get(1)).or_default().insert(row.get(2), row.get(0));
        }
        Ok(())
    }
}

/// The daily partition holding `day` (days since the Unix epoch, UTC).
pub(crate) async fn create_partition(client: &Client, day: u64) -> Result<(), IngestError> {
    let (from, to) = (date(day), date(day + 1));
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS shopfloor.samples_{} PARTITION OF shopfloor.samples
         FOR VALUES FROM ('{from} 00:00:00+00') TO ('{to} 00:00:00+00')",
        from.replace('-', "")
    );
    match client.batch_execute(&sql).await {
        Ok(()) => Ok(()),
        // Another ingest process (or writer) made it at the same moment:
        // `IF NOT EXISTS` does not cover the race, which ends in either
        // error.
        Err(e)
            if matches!(e.code().map(|c| c.code()), Some(DUPLICATE_TABLE | UNIQUE_VIOLATION)) =>
        {
            Ok(())
        }
        Err(e) => Err(IngestError::Database {
            what: format!("create the partition for {from}"),
            source: e,
        }),
    }
}

/// `YYYY-MM-DD` of a day since the Unix epoch (proleptic Gregorian, UTC).
pub fn date(day: u64) -> String {
    let (y, m, d) = shopfloor_schemas::Timestamp::from_unix_ms(day * DAY_MS).utc_date();
    format!("{y:04}-{m:02}-{d:02}")
}
