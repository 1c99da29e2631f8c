//! Conversion between Sparkplug payloads and `shopfloor_schemas` batches, so
//! that bridges and ingest never touch protobuf.
//!
//! | Sparkplug | `Value` |
//! |---|---|
//! | Int8–Int64, UInt8–UInt32 | `I64` |
//! | UInt64, DateTime | `U64` |
//! | Float, Double | `F64` |
//! | Boolean | `Bool` |
//! | String, Text, UUID | `String` |
//! | Bytes, File | `Bytes` |
//!
//! Datasets, templates, arrays and null values have no `Value`: they are
//! left out of the batch ([`Payload::to_batch`] says how many).
//! The `Quality` property (Int32: 192 good, 0 bad, 500 stale) becomes the
//! reading's quality, and back.

use shopfloor_schemas::{Batch, CompactString, Quality, Reading, Timestamp, Value};

use crate::payload::{Metric, Payload, PropertySet, PropertyValue};
use crate::value::MetricValue;

/// The well-known property key for a metric's quality.
pub const QUALITY_PROPERTY: &str = "Quality";

/// What [`Payload::to_batch`] made of a payload.
#[derive(Clone, Debug, PartialEq)]
pub struct ToBatch {
    /// The readings.
    pub batch: Batch,
    /// Metrics left out: null values, datasets, templates, arrays.
    pub skipped: usize,
}

impl Payload {
    /// The scalar metrics as a batch from `source`. A metric's timestamp is
    /// its own, else the payload's, else 0; its name is its name, else
    /// `alias N` (decode with the birth's table to get names).
    pub fn to_batch(&self, source: impl Into<CompactString>) -> ToBatch {
        let mut batch = Batch::new(source);
        batch.readings.reserve(self.metrics.len());
        let mut skipped = 0;
        for m in &self.metrics {
            match reading(m, self.timestamp) {
                Some(r) => batch.readings.push(r),
                None => skipped += 1,
            }
        }
        ToBatch { batch, skipped }
    }

    /// A payload of named metrics from a batch, for NDATA/DDATA (or a birth:
    /// set aliases and use [`crate::EncodeOptions`] with datatypes). `seq` and
    /// the payload timestamp are left for the edge node to set. A reading
    /// whose quality is not good carries a `Quality` property.
    pub fn from_batch(batch: &Batch) -> Self {
        let metrics = batch
            .readings
            .iter()
            .map(|r| {
                let value = match &r.value {
                    Value::Bool(v) => MetricValue::Boolean(*v),
                    Value::I64(v) => MetricValue::Int64(*v),
                    Value::U64(v) => MetricValue::UInt64(*v),
                    Value::F64(v) => MetricValue::Double(*v),
                    Value::String(v) => MetricValue::String(v.clone()),
                    Value::Bytes(v) => MetricValue::Bytes(v.clone()),
                    // `Value` is non-exhaustive; a new variant travels as text.
                    other => MetricValue::String(other.to_string()),
                };
                let mut m = Metric::new(r.metric.as_str(), r.timestamp.unix_ms(), value);
                if r.quality != Quality::Good {
                    let mut p = PropertySet::default();
                    p.set(
                        QUALITY_PROPERTY,
                        PropertyValue::Value(MetricValue::Int32(r.quality.to_sparkplug())),
                    );
                    m.properties = Some(p);
                }
                m
            })
            .collect();
        Self { metrics, ..Self::default() }
    }
}

/// The reading of one metric, or `None` if its value has no [`Value`].
pub fn reading(m: &Metric, payload_timestamp: Option<u64>) -> Option<Reading> {
    let value = m.value.as_ref()?.to_value()?;
    let metric: CompactString = match (&m.name, m.alias) {
        (Some(n), _) => CompactString::from(&**n),
        (None, Some(a)) => format!("alias {a}").into(),
        (None, None) => return None,
    };
    Some(Reading {
        metric,
        timestamp: Timestamp::from_unix_ms(m.timestamp.or(payload_timestamp).unwrap_or(0)),
        value,
        quality: quality(m),
    })
}

/// A metric's quality from its `Quality` property; good when there is none.
pub fn quality(m: &Metric) -> Quality {
    let code = m.properties.as_ref().and_then(|p| match p.get(QUALITY_PROPERTY)? {
        PropertyValue::Value(MetricValue::Int32(v)) => Some(*v),
        PropertyValue::Value(MetricValue::Int64(v)) => i32::try_from(*v).ok(),
        PropertyValue::Value(MetricValue::UInt32(v)) => i32::try_from(*v).ok(),
        _ => None,
    });
    code.map_or(Quality::Good, Quality::from_sparkplug)
}

impl MetricValue {
    /// The reading model's value, or `None` for what it has no value for
    /// (datasets, templates, arrays, property sets).
    pub fn to_value(&self) -> Option<Value> {
        Some(match self {
            Self::Int8(v) => Value::I64(i64::from(*v)),
            Self::Int16(v) => Value::I64(i64::from(*v)),
            Self::Int32(v) => Value::I64(i64::from(*v)),
            Self::Int64(v) => Value::I64(*v),
            Self::UInt8(v) => Value::I64(i64::from(*v)),
            Self::UInt16(v) => Value::I64(i64::from(*v)),
            Self::UInt32(v) => Value::I64(i64::from(*v)),
            Self::UInt64(v) | Self::DateTime(v) => Value::U64(*v),
            Self::Float(v) => Value::F64(f64::from(*v)),
            Self::Double(v) => Value::F64(*v),
            Self::Boolean(v) => Value::Bool(*v),
            Self::String(v) | Self::Text(v) | Self::Uuid(v) => Value::String(v.clone()),
            Self::Bytes(v) | Self::File(v) => Value::Bytes(v.clone()),
            _ => return None,
        })
    }
}
