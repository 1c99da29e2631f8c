//! Binary COPY data for `shopfloor.samples`, encoded by hand into one
//! buffer (tokio-postgres' `BinaryCopyInWriter` encodes field by field
//! through its type machinery and is many times slower: rust-postgres #1114).
//! Sans-IO: rows in, bytes out.
//!
//! The format (PostgreSQL manual, COPY, "Binary Format"): a signature and
//! two 32-bit header words, then per row a 16-bit field count and each field
//! as a 32-bit length (−1 for NULL) and its bytes in network order, then a
//! 16-bit −1.

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use shopfloor_schemas::{Quality, Value};

/// Milliseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
pub const PG_EPOCH_MS: i64 = 946_684_800_000;

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// The stored form of a quality (`shopfloor.samples.quality`).
pub const fn quality_code(q: Quality) -> i16 {
    match q {
        Quality::Good => 0,
        Quality::Bad => 2,
        Quality::Stale => 3,
        // Uncertain, and any quality a later schemas version adds.
        _ => 1,
    }
}

/// A value as the samples table holds it: a number, a text, or both NULL.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Stored<'a> {
    /// `value` (numbers; booleans as 0 and 1).
    Number(f64),
    /// `value_text`.
    Text(std::borrow::Cow<'a, str>),
    /// An integer a double cannot hold exactly (beyond ±2^53): `value` holds
    /// the nearest double (for rollups and plots), `value_text` the exact
    /// decimal.
    Integer {
        /// The nearest double.
        approx: f64,
        /// The exact decimal.
        exact: String,
    },
}

impl Stored<'_> {
    /// The number in `value`, if any.
    pub fn number(&self) -> Option<f64> {
        match self {
            Self::Number(x) | Self::Integer { approx: x, .. } => Some(*x),
            Self::Text(_) => None,
        }
    }
}

/// 2^63 as a double.
const TWO_63: f64 = 9_223_372_036_854_775_808.0;

/// An integer as stored: a plain number when the double is exact.
fn integer<'a, T: Copy + PartialEq + std::fmt::Display>(
    x: T,
    approx: f64,
    back: impl Fn(f64) -> Option<T>,
) -> Stored<'a> {
    if back(approx) == Some(x) {
        Stored::Number(approx)
    } else {
        Stored::Integer { approx, exact: x.to_string() }
    }
}

/// Why a value cannot be stored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RowError {
    /// PostgreSQL text cannot hold a NUL character.
    #[error("the text holds a NUL character at byte {0}, which PostgreSQL text cannot store")]
    Nul(usize),
    /// A kind of value this version cannot store.
    #[error("a value of a kind the samples table cannot hold: {0}")]
    Unsupported(String),
    /// Outside the range `timestamptz` holds.
    #[error("timestamp {0} ms is outside what PostgreSQL can store")]
    Time(u64),
    /// A source or metric name with a NUL character.
    #[error(
        "the {what} name holds a NUL character at byte {at}, which PostgreSQL text cannot store"
    )]
    NulInName {
        /// `source` or `metric`.
        what: &'static str,
        /// The byte offset of the NUL.
        at: usize,
    },
    /// Further ahead of the clock than the ingest accepts.
    #[error(
        "timestamp {ms} ms is ahead of the latest accepted ({limit} ms: the clock plus the window)"
    )]
    Ahead {
        /// The reading's time, Unix ms.
        ms: u64,
        /// The latest time accepted when it arrived.
        limit: u64,
    },
    /// Older than the ingest accepts (the retention).
    #[error("timestamp {ms} ms is older than the retention horizon ({horizon} ms)")]
    Old {
        /// The reading's time, Unix ms.
        ms: u64,
        /// The oldest time accepted when it arrived.
        horizon: u64,
    },
    /// A metric new to the catalogue, which holds its limit already.
    #[error(
        "a new metric, and the catalogue holds {limit} metrics already (max_catalogue_metrics)"
    )]
    CatalogueFull {
        /// The limit.
        limit: u64,
    },
    /// A store other than PostgreSQL cannot hold it, or refused it.
    #[error("{store}: {reason}")]
    Refused {
        /// The store (`InfluxDB`, `ClickHouse`).
        store: &'static str,
        /// Why, in the store's words where it said.
        reason: String,
    },
}

/// Why `value` cannot be stored, if it cannot (what [`stored`] refuses),
/// without encoding it.
pub fn value_error(value: &Value) -> Option<RowError> {
    match value {
        Value::F64(_) | Value::I64(_) | Value::U64(_) | Value::Bool(_) | Value::Bytes(_) => None,
        Value::String(s) => memchr::memchr(0, s.as_bytes()).map(RowError::Nul),
        other => Some(RowError::Unsupported(format!("{other:?}"))),
    }
}

/// How a reading's value is stored.
pub fn stored(value: &Value) -> Result<Stored<'_>, RowError> {
    if let Some(e) = value_error(value) {
        return Err(e);
    }
    Ok(match value {
        Value::F64(x) => Stored::Number(*x),
        // Exact up to 2^53; `as` back saturates, so 2^63 (the nearest
        // double to i64::MAX) must not pass for i64::MAX: below 2^63 (and
        // 2^64) only.
        Value::I64(x) => integer(*x, *x as f64, |f| (f < TWO_63).then_some(f as i64)),
        Value::U64(x) => integer(*x, *x as f64, |f| (f < 2.0 * TWO_63).then_some(f as u64)),
        Value::Bool(b) => Stored::Number(if *b { 1.0 } else { 0.0 }),
        Value::String(s) => Stored::Text(std::borrow::Cow::Borrowed(s.as_str())),
        Value::Bytes(b) => Stored::Text(std::borrow::Cow::Owned(
            base64::engine::general_purpose::STANDARD.encode(b),
        )),
        other => return Err(RowError::Unsupported(format!("{other:?}"))),
    })
}

/// The first Unix ms `timestamptz` cannot hold: 294277-01-01 00:00 UTC.
const PG_END_MS: u64 = 9_224_318_016_000_000;

/// Microseconds since PostgreSQL's epoch, for a UTC ms timestamp. Refuses
/// the last day `timestamptz` holds too, so that the day's partition (whose
/// upper bound is the next midnight) can be made.
pub fn pg_micros(unix_ms: u64) -> Result<i64, RowError> {
    if unix_ms >= PG_END_MS - 86_400_000 {
        return Err(RowError::Time(unix_ms));
    }
    // Below the bound, so it fits an i64 in µs.
    Ok((unix_ms as i64 - PG_EPOCH_MS) * 1000)
}

/// Rows being encoded.
#[derive(Debug)]
pub struct CopyBuffer {
    buf: BytesMut,
    rows: usize,
}

impl Default for CopyBuffer {
    fn default() -> Self {
        Self::with_capacity(64 * 1024)
    }
}

impl CopyBuffer {
    /// An empty buffer (the header written) with room for `bytes`.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = BytesMut::with_capacity(bytes.max(32));
        buf.put_slice(SIGNATURE);
        buf.put_i32(0); // flags: no OIDs
        buf.put_i32(0); // no header extension
        Self { buf, rows: 0 }
    }

    /// Adds a row: `time` in µs since 2000-01-01 UTC.
    pub fn push(&mut self, time: i64, metric_id: i32, value: &Stored<'_>, quality: i16) {
        self.buf.put_i16(5);
        self.buf.put_i32(8);
        self.buf.put_i64(time);
        self.buf.put_i32(4);
        self.buf.put_i32(metric_id);
        match value {
            Stored::Number(x) => {
                self.buf.put_i32(8);
                self.buf.put_f64(*x);
                self.buf.put_i32(-1);
            }
            Stored::Integer { approx, exact } => {
                self.buf.put_i32(8);
                self.buf.put_f64(*approx);
                self.buf.put_i32(i32::try_from(exact.len()).unwrap_or(i32::MAX));
                self.buf.put_slice(exact.as_bytes());
            }
            Stored::Text(t) => {
                self.buf.put_i32(-1);
                self.buf.put_i32(i32::try_from(t.len()).unwrap_or(i32::MAX));
                self.buf.put_slice(t.as_bytes());
            }
        }
        self.buf.put_i32(2);
        self.buf.put_i16(quality);
        self.rows += 1;
    }

    /// Rows pushed.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The COPY data, trailer included.
    pub fn finish(mut self) -> Bytes {
        self.buf.put_i16(-1);
        self.buf.freeze()
    }
}
