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

use crate::check::{name_error, row_error};
use crate::copy::{CopyBuffer, RowError, Stored, pg_micros, quality_code, stored};
use crate::error::IngestError;
use crate::migrate::Storage;

mod catalogue;
mod rollup;

pub use catalogue::MetricInfo;
use catalogue::*;
use rollup::*;

const COLUMNS: &str = "(time, metric_id, value, value_text, quality)";
const UNIQUE_VIOLATION: &str = "23505";
const DUPLICATE_TABLE: &str = "42P07";
const DAY_MS: u64 = 86_400_000;
const MINUTE_MS: u64 = 60_000;

/// A reading that cannot be stored, for the dead letters.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
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
#[non_exhaustive]
pub struct Written {
    /// Rows added.
    pub rows: u64,
    /// Rows offered that were there already (redeliveries).
    pub duplicates: u64,
    /// Readings that cannot be stored (not written; the caller dead-letters them).
    pub rejected: Vec<Rejected>,
    /// Dead letters written (those given, and readings PostgreSQL refused).
    pub dead_letters: u64,
}

/// A message that cannot be used, for `shopfloor.dead_letters`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The MQTT topic.
    pub topic: String,
    /// The payload as received.
    pub payload: Vec<u8>,
    /// Why it cannot be used.
    pub error: String,
}

impl DeadLetter {
    /// The message on `topic` with `payload`, unusable because of `error`.
    pub fn new(
        topic: impl Into<String>,
        payload: impl Into<Vec<u8>>,
        error: impl Into<String>,
    ) -> Self {
        Self { topic: topic.into(), payload: payload.into(), error: error.into() }
    }
}

/// What one transaction holds.
struct Tx<'a> {
    data: Option<bytes::Bytes>,
    /// Native storage: the rows' aggregates for `rollup_delta`.
    deltas: Option<&'a Deltas>,
    /// The stale rows of deaths: (metric id, death time in Unix ms, last
    /// value, quality), written after `data` (see [`write_deaths`]).
    deaths: &'a [(i32, u64, Stored<'a>, i16)],
    native: bool,
    dead: &'a [DeadLetter],
}

/// The rows of one write: readings, and the stale readings of deaths.
struct Rows<'a> {
    batches: &'a [Batch],
    deaths: &'a [Batch],
}

/// Everything one commit of the ingest holds, in the order it is written.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Submission {
    /// Sparkplug births (topic, payload) to keep (see [`Writer::remember_births`]).
    pub births: Vec<(String, Vec<u8>)>,
    /// What sources said about their metrics (see [`Writer::describe`]).
    pub metrics: Vec<MetricInfo>,
    /// Readings.
    pub batches: Vec<Batch>,
    /// The stale readings of deaths (Sparkplug NDEATH and DDEATH), written
    /// after `batches` so that each dead metric's latest row is stale:
    /// at the death's time, or 1 ms after the metric's latest row when that
    /// is not earlier (a death in the same millisecond as the last DATA);
    /// nothing when the latest row is stale already (a redelivered death).
    /// PostgreSQL writes the value of the metric's latest row (the one
    /// given when there is none): processes sharing a node's DATA each
    /// saw only part of it.
    pub deaths: Vec<Batch>,
    /// Messages that cannot be used.
    pub dead: Vec<DeadLetter>,
}

/// Text cannot hold NUL; a topic, or a reason quoting a hostile name, might.
fn no_nul(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') { s.replace('\0', "\\0").into() } else { s.into() }
}

fn count(batches: &[Batch]) -> usize {
    batches.iter().map(|b| b.readings.len()).sum()
}

/// The first and the second half (by readings, in order) of rows and deaths.
type Part = (Vec<Batch>, Vec<Batch>);
fn halves(rows: Vec<Batch>, deaths: Vec<Batch>) -> (Part, Part) {
    let mut first = count(&rows).saturating_add(count(&deaths)) / 2;
    let (mut a, mut b): (Part, Part) = Default::default();
    for (list, death) in [(rows, false), (deaths, true)] {
        for batch in list {
            let n = batch.readings.len();
            let (to_a, to_b) = if n <= first {
                (Some(batch), None)
            } else if first == 0 {
                (None, Some(batch))
            } else {
                let mut head = batch;
                let tail =
                    Batch { source: head.source.clone(), readings: head.readings.split_off(first) };
                (Some(head), Some(tail))
            };
            first -= to_a.as_ref().map_or(0, |b| b.readings.len());
            let (pa, pb) = if death { (&mut a.1, &mut b.1) } else { (&mut a.0, &mut b.0) };
            pa.extend(to_a);
            pb.extend(to_b);
        }
    }
    (a, b)
}

/// The dead letter of one reading PostgreSQL refused: the source as topic,
/// the reading as a shopfloor JSON batch, PostgreSQL's message.
fn refused_letter(b: &Batch, death: bool, e: &IngestError) -> DeadLetter {
    refused_letter_for(b, death, &e.to_string())
}

/// The dead letter of readings a store refused for `reason`.
pub(crate) fn refused_letter_for(b: &Batch, death: bool, reason: &str) -> DeadLetter {
    let payload = shopfloor_schemas::Codec::Json
        .encode_batch(b)
        .unwrap_or_else(|_| format!("{b:?}").into_bytes());
    let what = if death { "the stale row of a death" } else { "a reading" };
    DeadLetter { topic: b.source.to_string(), payload, error: format!("{what} refused: {reason}") }
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
    /// Ids in `ids`; past `max_cached` the cache starts again at the
    /// next write (ids are read back from the catalogue), so hostile names
    /// cannot grow it.
    cached: usize,
    max_cached: usize,
    /// Entries the catalogue holds, as last counted plus what this writer
    /// added since (`None`: not counted yet).
    catalogue: Option<u64>,
    max_catalogue: u64,
    /// Metrics of the write under way refused for a full catalogue.
    refused: HashSet<(String, String)>,
}

/// Catalogue ids a writer keeps in memory by default (about 100 bytes each).
pub const MAX_CACHED_IDS: usize = 500_000;

/// Metrics the catalogue holds at most by default.
pub const MAX_CATALOGUE: u64 = 1_000_000;

impl Writer {
    /// A writer on a connection whose schema is migrated.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            ids: HashMap::new(),
            days: HashSet::new(),
            storage: None,
            deltas: Deltas::default(),
            cached: 0,
            max_cached: MAX_CACHED_IDS,
            catalogue: None,
            max_catalogue: MAX_CATALOGUE,
            refused: HashSet::new(),
        }
    }

    /// Metrics (source and name) the catalogue may hold (default
    /// [`MAX_CATALOGUE`]): readings of a new metric past it are refused
    /// ([`RowError::CatalogueFull`], a dead letter), births' descriptions
    /// of new metrics past it are left out. Other writers on the same
    /// database count too (the catalogue is counted again near the limit).
    pub fn set_max_catalogue(&mut self, n: u64) {
        self.max_catalogue = n;
    }

    /// The connection.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Catalogue ids kept in memory at most (default [`MAX_CACHED_IDS`]);
    /// past it the cache starts again at the next write.
    pub fn set_max_cached_ids(&mut self, n: usize) {
        self.max_cached = n;
    }

    /// Catalogue ids in memory now.
    pub fn cached_ids(&self) -> usize {
        self.cached
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
        self.write_rows(&Rows { batches, deaths: &[] }, dead).await
    }

    /// Writes a [`Submission`]: the births kept, the metrics described, then
    /// the rows, the deaths and the dead letters in one transaction.
    ///
    /// When PostgreSQL refuses the data itself ([`IngestError::is_data_error`]:
    /// a value or time it cannot hold, a constraint), writing the same rows
    /// again would fail forever. The rows are then bisected, each half in a
    /// transaction of its own and in order, down to the rows at fault, which
    /// go to the dead letters with PostgreSQL's message; the rest is
    /// committed. Any other error is returned, for the caller to retry.
    pub async fn submit(&mut self, s: &Submission) -> Result<Written, IngestError> {
        self.remember_births(&s.births).await?;
        self.describe(&s.metrics).await?;
        let rows = Rows { batches: &s.batches, deaths: &s.deaths };
        match self.write_rows(&rows, &s.dead).await {
            Err(e) if e.is_data_error() => {
                tracing::warn!("{e}: finding the rows at fault");
                let mut out = Written::default();
                self.bisect(s.batches.clone(), s.deaths.clone(), &s.dead, &mut out).await?;
                Ok(out)
            }
            other => other,
        }
    }

    /// Writes `parts` (readings tagged as rows or deaths, in order) by
    /// halves until each refused reading stands alone; those become dead
    /// letters. `dead` goes with the first transaction that commits.
    async fn bisect(
        &mut self,
        rows: Vec<Batch>,
        deaths: Vec<Batch>,
        dead: &[DeadLetter],
        out: &mut Written,
    ) -> Result<(), IngestError> {
        // Work list of (rows, deaths) pieces, in order.
        let mut todo = vec![(rows, deaths)];
        let mut dead = dead;
        while let Some((rows, deaths)) = todo.pop() {
            let n = count(&rows) + count(&deaths);
            if n == 0 {
                continue;
            }
            match self.write_rows(&Rows { batches: &rows, deaths: &deaths }, dead).await {
                Ok(w) => {
                    dead = &[];
                    out.rows += w.rows;
                    out.duplicates += w.duplicates;
                    out.dead_letters += w.dead_letters;
                    out.rejected.extend(w.rejected);
                }
                Err(e) if e.is_data_error() && n == 1 => {
                    let (b, death) = match rows.into_iter().next() {
                        Some(b) => (b, false),
                        None => (deaths.into_iter().next().unwrap_or_default(), true),
                    };
                    let letter = refused_letter(&b, death, &e);
                    tracing::warn!(source = %b.source, "dead-lettered: {}", letter.error);
                    self.write_rows(
                        &Rows { batches: &[], deaths: &[] },
                        std::slice::from_ref(&letter),
                    )
                    .await?;
                    out.dead_letters += 1;
                }
                Err(e) if e.is_data_error() => {
                    // Halves in order: the second pushed first, popped last.
                    let ((r1, d1), (r2, d2)) = halves(rows, deaths);
                    todo.push((r2, d2));
                    todo.push((r1, d1));
                }
                Err(e) => return Err(e),
            }
        }
        if !dead.is_empty() {
            self.write_rows(&Rows { batches: &[], deaths: &[] }, dead).await?;
        }
        Ok(())
    }

    /// Writes rows, deaths and dead letters in one transaction.
    async fn write_rows(
        &mut self,
        rows: &Rows<'_>,
        dead: &[DeadLetter],
    ) -> Result<Written, IngestError> {
        let mut out = Written::default();
        // Past the bound, the cache starts again (before this write, so
        // every id it needs is there until it ends).
        if self.cached > self.max_cached {
            self.ids.clear();
            self.cached = 0;
        }
        self.refused.clear();
        let mut missing: Vec<(String, String, &'static str)> = Vec::new();
        for b in rows.batches.iter().chain(rows.deaths) {
            let known = self.ids.get(b.source.as_str());
            for r in &b.readings {
                if known.is_none_or(|m| !m.contains_key(r.metric.as_str()))
                    && row_error(&b.source, r).is_none()
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
        let n: usize = rows.batches.iter().map(|b| b.readings.len()).sum();
        let mut copy = CopyBuffer::with_capacity(n * 40 + 64);
        let mut days = HashSet::new();
        let mut last_day = u64::MAX;
        let mut deltas = std::mem::take(&mut self.deltas);
        deltas.by_key.clear();
        let mut death_rows = Vec::new();
        for (b, death) in
            rows.batches.iter().map(|b| (b, false)).chain(rows.deaths.iter().map(|b| (b, true)))
        {
            // (A source with no readings was never registered; one refused
            // for a full catalogue has an empty map.)
            let empty = HashMap::new();
            let ids = self.ids.get(b.source.as_str()).unwrap_or(&empty);
            for r in &b.readings {
                let ms = r.timestamp.unix_ms();
                // `stored` once per reading: it encodes bytes as base64.
                let row = match name_error(&b.source, r) {
                    Some(e) => Err(e),
                    None => stored(&r.value).and_then(|v| Ok((v, pg_micros(ms)?))),
                };
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
                // Registered above; a catalogue that lost the entry
                // meanwhile (a DBA's DELETE) is not worth a panic.
                let Some(&id) = ids.get(r.metric.as_str()) else {
                    let key = (b.source.to_string(), r.metric.to_string());
                    let error = if self.refused.contains(&key) {
                        RowError::CatalogueFull { limit: self.max_catalogue }
                    } else {
                        RowError::Unsupported("no catalogue entry".into())
                    };
                    out.rejected.push(Rejected { source: key.0, metric: key.1, error });
                    continue;
                };
                if death {
                    death_rows.push((id, ms, value, quality_code(r.quality)));
                    continue;
                }
                if let (true, Some(x)) = (native, value.number()) {
                    deltas.add(id, ms, x);
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
        if offered == 0 && dead.is_empty() && death_rows.is_empty() {
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
            deaths: &death_rows,
            native,
            dead,
        };
        let result = match self.transact(&tx, false).await {
            Ok(rows) => Ok(rows),
            Err(e) if e.sqlstate() == Some(UNIQUE_VIOLATION) => self
                .transact(&tx, true)
                .await
                .inspect(|&(copied, _)| out.duplicates = offered - copied),
            Err(e) => Err(e),
        };
        self.deltas = deltas;
        let (copied, stale) = result?;
        out.rows = copied + stale;
        out.dead_letters = dead.len() as u64;
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
    /// the rollup deltas, the stale rows of deaths, the dead letters.
    /// Returns the rows added by COPY and the stale rows added.
    async fn transact(&mut self, w: &Tx<'_>, dedup: bool) -> Result<(u64, u64), IngestError> {
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
            rows = copy_in(&tx, target, data.clone()).await?;
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
        let stale =
            if w.deaths.is_empty() { 0 } else { write_deaths(&tx, w.deaths, w.native).await? };
        if !w.dead.is_empty() {
            let topics: Vec<_> = w.dead.iter().map(|d| no_nul(&d.topic)).collect();
            let payloads: Vec<&[u8]> = w.dead.iter().map(|d| d.payload.as_slice()).collect();
            let errors: Vec<_> = w.dead.iter().map(|d| no_nul(&d.error)).collect();
            tx.execute(
                "INSERT INTO shopfloor.dead_letters (topic, payload, error)
                 SELECT * FROM unnest($1::text[], $2::bytea[], $3::text[])",
                &[&topics, &payloads, &errors],
            )
            .await
            .map_err(IngestError::db("write dead letters"))?;
        }
        tx.commit().await.map_err(IngestError::db("commit"))?;
        Ok((rows, stale))
    }
}

/// Binary COPY `data` into `target` (the samples' columns); the rows added.
async fn copy_in(
    tx: &tokio_postgres::Transaction<'_>,
    target: &str,
    data: bytes::Bytes,
) -> Result<u64, IngestError> {
    let sink = tx
        .copy_in(&format!("COPY {target} {COLUMNS} FROM STDIN (FORMAT binary)"))
        .await
        .map_err(IngestError::db("start COPY"))?;
    futures_util::pin_mut!(sink);
    sink.send(data).await.map_err(IngestError::db("send COPY data"))?;
    sink.finish().await.map_err(IngestError::db("COPY into shopfloor.samples"))
}

/// Writes the stale rows of deaths after the rows before them (same
/// transaction; the ingest runs a transaction holding a death alone, so
/// nothing written later is visible here): per dead metric, at the death's
/// time or 1 ms after the metric's latest row when that is not earlier,
/// and nothing when the latest row is stale already (a redelivered death,
/// or a metric that died before). Returns the rows added.
/// The advisory lock deaths are written under.
const DEATHS_LOCK: i64 = i64::from_be_bytes(*b"shopdead");

async fn write_deaths(
    tx: &tokio_postgres::Transaction<'_>,
    deaths: &[(i32, u64, Stored<'_>, i16)],
    native: bool,
) -> Result<u64, IngestError> {
    const STALE: i16 = quality_code(shopfloor_schemas::Quality::Stale);
    let ids: Vec<i32> = deaths.iter().map(|d| d.0).collect();
    // Ingest processes sharing a node's DATA each get its death, at their
    // own receive time: one at a time, the second finds the latest rows
    // stale and writes nothing (a lock held until this commit; writes
    // without deaths never take it).
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DEATHS_LOCK])
        .await
        .map_err(IngestError::db("wait for other ingest processes writing a death"))?;
    let latest = tx
        .query(
            "SELECT l.time, l.quality, l.value, l.value_text
             FROM unnest($1::int4[]) WITH ORDINALITY AS k(id, i)
             LEFT JOIN LATERAL (
               SELECT time, quality, value, value_text FROM shopfloor.samples s
               WHERE s.metric_id = k.id ORDER BY time DESC LIMIT 1) l ON true
             ORDER BY k.i",
            &[&ids],
        )
        .await
        .map_err(IngestError::db("read the latest rows of the metrics of a death"))?;
    let mut copy = CopyBuffer::with_capacity(deaths.len() * 40 + 64);
    let mut deltas = Deltas::default();
    let mut days = HashSet::new();
    let mut seen = HashSet::new();
    for ((id, death_ms, value, quality), row) in deaths.iter().zip(&latest) {
        let (time, q): (Option<std::time::SystemTime>, Option<i16>) = (row.get(0), row.get(1));
        if q == Some(STALE) || !seen.insert(*id) {
            continue;
        }
        let latest_ms = time
            .map(|t| t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64));
        let ms = match latest_ms {
            Some(l) if l >= *death_ms => l + 1,
            _ => *death_ms,
        };
        let Ok(micros) = pg_micros(ms) else { continue };
        // The stored latest value: what the host remembers may be older
        // when other ingest processes share the node's DATA.
        let value = match (time, row.get::<_, Option<f64>>(2), row.get::<_, Option<String>>(3)) {
            (None, ..) => value.clone(),
            (Some(_), Some(approx), Some(exact)) => Stored::Integer { approx, exact },
            (Some(_), None, Some(text)) => Stored::Text(text.into()),
            (Some(_), Some(x), None) => Stored::Number(x),
            (Some(_), None, None) => value.clone(),
        };
        let value = &value;
        if native {
            days.insert(ms / DAY_MS);
            if let Some(x) = value.number() {
                deltas.add(*id, ms, x);
            }
        }
        copy.push(micros, *id, value, *quality);
    }
    if copy.rows() == 0 {
        return Ok(0);
    }
    for day in days {
        create_partition(tx, day).await?;
    }
    let rows = copy_in(tx, "shopfloor.samples", copy.finish()).await?;
    if native && !deltas.by_key.is_empty() {
        insert_deltas(tx, &deltas).await?;
    }
    Ok(rows)
}

/// The daily partition holding `day` (days since the Unix epoch, UTC).
pub(crate) async fn create_partition(
    client: &impl tokio_postgres::GenericClient,
    day: u64,
) -> Result<(), IngestError> {
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
