//! What the stores spoken to over HTTP (InfluxDB, ClickHouse) share: rows
//! encoded into one buffer that remembers where each row ends and what it
//! came from, the requests run by ureq on a blocking thread, and the
//! writer that sends a [`Submission`] and, when the server refuses a
//! request for its data, halves it down to the rows at fault, which become
//! dead letters with the server's message.
//!
//! A store is a [`Dialect`]: how a submission is encoded, what request
//! writes a body, what an answer means. Everything else is here, once.

use std::hash::{Hash as _, Hasher as _};
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use shopfloor_schemas::{Batch, Reading};

use crate::copy::RowError;
use crate::error::IngestError;
use crate::sink::SinkWriter;
use crate::writer::{DeadLetter, Rejected, Submission, Written, refused_letter_for};

/// What a row was made from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// `batches[batch].readings[reading]`, or of `deaths` when `death`.
    Reading {
        /// Index of the batch.
        batch: usize,
        /// Index of the reading in it.
        reading: usize,
        /// From the deaths' stale rows.
        death: bool,
    },
    /// (Part of) a Sparkplug birth.
    Birth,
    /// A catalogue entry.
    Metric,
    /// A dead letter.
    DeadLetter,
}

/// Rows (each ending with `\n`), and where each ends and comes from.
#[derive(Debug, Default)]
pub struct Lines {
    pub(crate) buf: Vec<u8>,
    lines: Vec<(usize, Origin)>,
}

impl Lines {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The bytes of rows `range`.
    pub fn body(&self, range: std::ops::Range<usize>) -> &[u8] {
        if range.is_empty() {
            return &[];
        }
        let start = if range.start == 0 { 0 } else { self.lines[range.start - 1].0 };
        &self.buf[start..self.lines[range.end - 1].0]
    }

    /// What row `i` came from.
    pub fn origin(&self, i: usize) -> Origin {
        self.lines[i].1
    }

    /// Rows made from readings.
    pub fn readings(&self) -> u64 {
        self.lines.iter().filter(|(_, o)| matches!(o, Origin::Reading { .. })).count() as u64
    }

    /// Ends the row being written (adds its `\n`).
    pub(crate) fn end(&mut self, origin: Origin) {
        self.buf.push(b'\n');
        self.lines.push((self.buf.len(), origin));
    }

    /// A row for each reading of `batches` (or deaths, when `death`), which
    /// `row` writes into the buffer without its `\n`, or refuses before
    /// writing anything; the readings refused, by (batch, reading).
    pub(crate) fn write_readings(
        &mut self,
        batches: &[Batch],
        death: bool,
        mut row: impl FnMut(&mut Vec<u8>, &Batch, &Reading) -> Result<(), RowError>,
    ) -> Vec<(usize, usize, RowError)> {
        let mut refused = Vec::new();
        for (bi, b) in batches.iter().enumerate() {
            for (ri, r) in b.readings.iter().enumerate() {
                match row(&mut self.buf, b, r) {
                    Ok(()) => self.end(Origin::Reading { batch: bi, reading: ri, death }),
                    Err(e) => refused.push((bi, ri, e)),
                }
            }
        }
        refused
    }

    /// Ranges of whole rows of at most `max` bytes each (a longer row alone).
    pub fn chunks(&self, max: usize) -> Vec<std::ops::Range<usize>> {
        let mut out = Vec::new();
        let (mut start, mut bytes) = (0, 0);
        for i in 0..self.len() {
            let n = self.body(i..i + 1).len();
            if i > start && bytes + n > max {
                out.push(start..i);
                (start, bytes) = (i, 0);
            }
            bytes += n;
        }
        if start < self.len() {
            out.push(start..self.len());
        }
        out
    }
}

/// The readings and the deaths of `work` as `encode` (a store's
/// `encode_readings`) writes them; those it refuses, by [`Origin`].
pub(crate) fn encode_readings_and_deaths(
    work: &Submission,
    mut encode: impl FnMut(&[Batch], bool) -> Vec<(usize, usize, RowError)>,
) -> Vec<(Origin, RowError)> {
    let mut refused = Vec::new();
    for (batches, death) in [(&work.batches, false), (&work.deaths, true)] {
        for (batch, reading, e) in encode(batches, death) {
            refused.push((Origin::Reading { batch, reading, death }, e));
        }
    }
    refused
}

/// A reading of `batches` (or `deaths`) by its [`Origin`].
pub fn reading_at<'a>(
    batches: &'a [Batch],
    deaths: &'a [Batch],
    origin: Origin,
) -> Option<(&'a Batch, &'a Reading, bool)> {
    let Origin::Reading { batch, reading, death } = origin else { return None };
    let b = if death { deaths.get(batch)? } else { batches.get(batch)? };
    Some((b, b.readings.get(reading)?, death))
}

/// What an answer to a write means.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Answer {
    /// Written.
    Written,
    /// Some row is refused for its data, with the server's message: the
    /// same rows would fail again.
    Refused(String),
    /// The body is too large (413): send less at once.
    TooLarge,
    /// Anything else: try again later.
    Failed {
        /// The status.
        status: u16,
        /// The server's message, with a hint where one helps.
        message: String,
    },
}

/// A submission as a store's requests.
#[derive(Debug, Default)]
pub struct Encoded<T> {
    /// Births, descriptions and readings, each part one table (or request
    /// kind), written in this order.
    pub parts: Vec<(T, Lines)>,
    /// Readings the store cannot hold, with why.
    pub refused: Vec<(Origin, RowError)>,
}

/// How one store encodes and writes (the sans-IO half of an HTTP sink).
pub trait Dialect: Send + Sync + 'static {
    /// Where a part goes (a table, a precision).
    type Table: Copy + Send + Sync + std::fmt::Debug + 'static;

    /// The store's name, for messages.
    const STORE: &'static str;

    /// Births, descriptions and readings of `work`.
    fn encode(&self, work: &Submission, now_ms: u64) -> Encoded<Self::Table>;

    /// Dead letters at times `first_ns`, `first_ns + 1`… (distinct).
    fn dead_letters(&self, dead: &[DeadLetter], first_ns: u64) -> (Self::Table, Lines);

    /// The request writing `body` (rows of one part) to `table`.
    fn write_request(
        &self,
        table: Self::Table,
        body: Vec<u8>,
    ) -> Result<Request<Vec<u8>>, http::Error>;

    /// What an answer to a write means.
    fn answer(&self, status: u16, body: &str) -> Answer;

    /// The database written to, for messages.
    fn database(&self) -> &str;

    /// Bytes per request at most.
    fn max_body(&self) -> usize;
}

/// Why a store's answer to its births query cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BirthsError {
    /// The answer is not the JSON the server sends.
    #[error("the answer is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// The server answered the query with an error: its message.
    #[error("{0}")]
    Server(String),
    /// A row without its three fields (topic, payload, receive time).
    #[error("a births row without three fields: {0:?}")]
    Row(String),
    /// A birth's payload is not base64.
    #[error("the birth of {topic}: {why}")]
    Payload {
        /// The birth's topic.
        topic: String,
        /// What the decoder says.
        why: String,
    },
    /// A birth's receive time is not a number.
    #[error("the birth of {topic}: received_ms: {source}")]
    Received {
        /// The birth's topic.
        topic: String,
        /// What the parser says.
        source: std::num::ParseIntError,
    },
}

/// An HTTP store's configuration that cannot be used ([`InfluxConfig::check`],
/// [`ClickHouseConfig::check`]): the key, its value and what to give.
///
/// [`InfluxConfig::check`]: crate::InfluxConfig::check
/// [`ClickHouseConfig::check`]: crate::ClickHouseConfig::check
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key} {value:?}: {fix}")]
#[non_exhaustive]
pub struct StoreConfigError {
    /// The key (`url`, `database`, `measurement`).
    pub key: &'static str,
    /// Its value.
    pub value: String,
    /// What is wrong, and what to give instead.
    pub fix: String,
}

impl StoreConfigError {
    pub(crate) fn new(key: &'static str, value: &str, fix: impl Into<String>) -> Self {
        Self { key, value: value.to_owned(), fix: fix.into() }
    }
}

/// `url` is `http://host[:port]`.
pub(crate) fn check_url(url: &str) -> Result<(), StoreConfigError> {
    let uri: http::Uri =
        url.parse().map_err(|e| StoreConfigError::new("url", url, format!("{e}")))?;
    if !matches!(uri.scheme_str(), Some("http")) || uri.host().is_none() {
        return Err(StoreConfigError::new(
            "url",
            url,
            "give http://host:port (https is not supported yet: put the server behind a TLS proxy on the same host)",
        ));
    }
    Ok(())
}

/// The configuration of a store spoken to over HTTP.
pub trait HttpConfig: Send + Sync + 'static {
    /// An agent for the store's server.
    fn agent(&self) -> HttpStore;
}

/// Writes to the store `C` configures ([`InfluxSink`](crate::InfluxSink),
/// [`ClickHouseSink`](crate::ClickHouseSink)). Cheap to clone (one HTTP
/// agent, its connections pooled).
#[derive(Debug)]
pub struct HttpSink<C> {
    pub(crate) config: Arc<C>,
    pub(crate) http: HttpStore,
}

impl<C> Clone for HttpSink<C> {
    fn clone(&self) -> Self {
        Self { config: Arc::clone(&self.config), http: self.http.clone() }
    }
}

impl<C: HttpConfig> HttpSink<C> {
    /// A sink for `config` (nothing is sent until
    /// [`Sink::connect`](crate::Sink::connect)).
    pub fn new(config: C) -> Self {
        Self { http: config.agent(), config: Arc::new(config) }
    }

    /// The configuration.
    pub fn config(&self) -> &C {
        &self.config
    }

    /// The births `parse` finds in `body`, the answer to reading them
    /// (`what`); an error with the parser's words if it finds none.
    pub(crate) fn births_in(
        &self,
        body: &str,
        what: &str,
        parse: impl FnOnce(&str) -> Result<Vec<(String, Vec<u8>)>, BirthsError>,
    ) -> Result<Vec<(String, Vec<u8>)>, IngestError> {
        parse(body).map_err(|e| IngestError::Http {
            store: self.http.store,
            what: what.into(),
            status: Some(200),
            message: e.to_string(),
        })
    }
}

/// An HTTP agent for one store: connections pooled, each request run on a
/// blocking thread with a timeout.
#[derive(Clone)]
pub struct HttpStore {
    store: &'static str,
    url: String,
    agent: ureq::Agent,
}

impl std::fmt::Debug for HttpStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpStore").field("store", &self.store).field("url", &self.url).finish()
    }
}

impl HttpStore {
    /// An agent for `store` at `url`, each request at most `timeout`.
    pub fn new(store: &'static str, url: &str, timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Self { store, url: url.to_owned(), agent }
    }

    /// Sends `request`; the status and (the first MiB of) the body.
    pub async fn run(
        &self,
        request: Result<Request<Vec<u8>>, http::Error>,
        what: &str,
    ) -> Result<(u16, String), IngestError> {
        let fail = |status, message| IngestError::Http {
            store: self.store,
            what: what.to_owned(),
            status,
            message,
        };
        let request = request.map_err(|e| fail(None, e.to_string()))?;
        let agent = self.agent.clone();
        let done = tokio::task::spawn_blocking(move || -> Result<(u16, String), ureq::Error> {
            let mut r = agent.run(request)?;
            let status = r.status().as_u16();
            let body =
                r.body_mut().with_config().limit(1 << 20).read_to_string().unwrap_or_default();
            Ok((status, body))
        })
        .await;
        match done {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(fail(None, format!("{e} ({})", self.url))),
            Err(e) => Err(fail(None, e.to_string())),
        }
    }

    /// [`run`](Self::run), and an error unless the answer is 2xx.
    pub async fn run_ok(
        &self,
        request: Result<Request<Vec<u8>>, http::Error>,
        what: &str,
        message: impl Fn(&str) -> String,
    ) -> Result<String, IngestError> {
        let (status, body) = self.run(request, what).await?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        Err(IngestError::Http {
            store: self.store,
            what: what.to_owned(),
            status: Some(status),
            message: message(&body),
        })
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The last dead-letter stamp handed out in this process.
static LAST_STAMP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// `n` consecutive nanosecond stamps from `now` on, after every stamp
/// handed out before in this process: the pipeline's writers submit at
/// the same moment, and two dead letters with one stamp would be one
/// (InfluxDB overwrites the point, ClickHouse merges the rows).
fn reserve_stamps(now: u64, n: u64) -> u64 {
    use std::sync::atomic::Ordering::Relaxed;
    let mut first = now;
    let _ = LAST_STAMP.fetch_update(Relaxed, Relaxed, |last| {
        first = now.max(last.saturating_add(1));
        Some(first.saturating_add(n.saturating_sub(1)))
    });
    first
}

fn fingerprint(dead: &[DeadLetter]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dead.hash(&mut h);
    h.finish()
}

/// One writer of an HTTP store.
#[derive(Debug)]
pub struct HttpWriter<D> {
    dialect: Arc<D>,
    http: HttpStore,
    closed: bool,
    /// The dead letters of a submission that failed (a fingerprint) and
    /// their first time: its retry on this writer writes them at the same
    /// times, so none doubles.
    dead_stamp: Option<(u64, u64)>,
}

impl<D: Dialect> HttpWriter<D> {
    /// A writer for `dialect` through `http`.
    pub fn new(dialect: Arc<D>, http: HttpStore) -> Self {
        Self { dialect, http, closed: false, dead_stamp: None }
    }

    /// Sends `lines` to `table` in requests of at most `max_body` bytes; a
    /// request refused for its data is halved down to the rows at fault.
    /// Returns those rows with the server's message.
    async fn send(
        &mut self,
        table: D::Table,
        lines: &Lines,
    ) -> Result<Vec<(usize, String)>, IngestError> {
        let mut refused = Vec::new();
        // Ranges to send, the next last.
        let mut todo = lines.chunks(self.dialect.max_body().max(1));
        todo.reverse();
        while let Some(range) = todo.pop() {
            let body = lines.body(range.clone()).to_vec();
            let request = self.dialect.write_request(table, body);
            let (status, text) =
                self.http.run(request, "write").await.inspect_err(|_| self.closed = true)?;
            match self.dialect.answer(status, &text) {
                Answer::Written => {}
                Answer::Refused(m) if range.len() == 1 => refused.push((range.start, m)),
                Answer::TooLarge if range.len() == 1 => refused.push((
                    range.start,
                    "the row alone is larger than the server takes (413 Request Entity Too Large)"
                        .into(),
                )),
                Answer::Refused(_) | Answer::TooLarge => {
                    let mid = range.start + range.len() / 2;
                    todo.push(mid..range.end);
                    todo.push(range.start..mid);
                }
                Answer::Failed { status, message } => {
                    // A missing database is made again at the next connect.
                    self.closed |= status == 404;
                    return Err(IngestError::Http {
                        store: D::STORE,
                        what: format!("write to {} ({table:?})", self.dialect.database()),
                        status: Some(status),
                        message,
                    });
                }
            }
        }
        Ok(refused)
    }
}

impl<D: Dialect> SinkWriter for HttpWriter<D> {
    async fn submit(&mut self, work: &Submission) -> Result<Written, IngestError> {
        let now = now_ns();
        let encoded = self.dialect.encode(work, now / 1_000_000);
        let mut refused = encoded.refused;
        let mut rows = 0;
        for (table, lines) in &encoded.parts {
            rows += lines.readings();
            for (i, message) in self.send(*table, lines).await? {
                match lines.origin(i) {
                    o @ Origin::Reading { .. } => {
                        rows -= 1;
                        refused.push((o, RowError::Refused { store: D::STORE, reason: message }));
                    }
                    other => tracing::warn!("{} refused a row ({other:?}): {message}", D::STORE),
                }
            }
        }
        let mut dead = work.dead.clone();
        let mut rejected = Vec::with_capacity(refused.len());
        for (origin, error) in refused {
            let Some((b, r, death)) = reading_at(&work.batches, &work.deaths, origin) else {
                continue;
            };
            let one = Batch::new(b.source.clone()).with(r.clone());
            dead.push(refused_letter_for(&one, death, &error.to_string()));
            rejected.push(Rejected {
                source: b.source.to_string(),
                metric: r.metric.to_string(),
                error,
            });
        }
        let mut written = Written { rows, duplicates: 0, rejected, dead_letters: 0 };
        if !dead.is_empty() {
            let fp = fingerprint(&dead);
            let first = match self.dead_stamp {
                Some((f, t)) if f == fp => t,
                _ => reserve_stamps(now, dead.len() as u64),
            };
            self.dead_stamp = Some((fp, first));
            let (table, letters) = self.dialect.dead_letters(&dead, first);
            let lost = self.send(table, &letters).await?;
            for (_, m) in &lost {
                tracing::warn!("{} refused a dead letter: {m}", D::STORE);
            }
            written.dead_letters = (dead.len() - lost.len()) as u64;
        }
        // Written: the next submission's dead letters are new ones, even
        // when they are equal to these (the same malformed message again).
        self.dead_stamp = None;
        Ok(written)
    }

    fn is_closed(&self) -> bool {
        self.closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_hold_whole_rows_up_to_the_limit() {
        let mut l = Lines::default();
        for row in ["aaaa", "bb", "cccccccc", "d"] {
            l.buf.extend_from_slice(row.as_bytes());
            l.end(Origin::Metric);
        }
        // Rows of 5, 3, 9 and 2 bytes.
        assert_eq!(l.chunks(8), [0..2, 2..3, 3..4]);
        assert_eq!(l.chunks(100), vec![0..4]);
        assert_eq!(l.chunks(1), [0..1, 1..2, 2..3, 3..4]);
        assert!(Lines::default().chunks(10).is_empty());
    }

    #[test]
    fn stamps_never_repeat_in_a_process() {
        let a = reserve_stamps(1_000, 3);
        let b = reserve_stamps(1_000, 2);
        let c = reserve_stamps(0, 1);
        assert!(b >= a + 3 && c >= b + 2, "{a} {b} {c}");
        let far = reserve_stamps(u64::MAX / 2, 1);
        assert_eq!(far, u64::MAX / 2);
    }
}
