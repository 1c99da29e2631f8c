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
//! | arrays (Int8Array…DateTimeArray) | `String`: a JSON array (`[1,2,3]`, `["a","b"]`; DateTime as ms) |
//! | DataSet | `String`: JSON `{"columns":[…],"types":[…],"rows":[[…],…]}` |
//! | Template instance | one reading per member, named `Instance/Member` (nested: `A/B/C`) |
//!
//! The JSON is for queries (`value_text::jsonb` in PostgreSQL); a
//! non-finite float in it is `null`. Template definitions (NBIRTH) are
//! descriptions, not readings. Null values have no `Value`: they are left
//! out of the batch ([`Payload::to_batch`] says how many).
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
    /// Metrics left out: null values, and members without a name.
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
            skipped += readings(m, self.timestamp, &mut batch.readings);
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

/// The readings of one metric, pushed onto `out`: one, or one per member
/// of a template instance (recursively, named `Instance/Member`), or none
/// for a template definition. Returns how many were left out (null values,
/// members without a name).
pub fn readings(m: &Metric, payload_timestamp: Option<u64>, out: &mut Vec<Reading>) -> usize {
    let Some(MetricValue::Template(t)) = &m.value else {
        return match reading(m, payload_timestamp) {
            Some(r) => {
                out.push(r);
                0
            }
            None => 1,
        };
    };
    if t.is_definition {
        return 0;
    }
    let Some(prefix) = name_of(m) else { return 1 };
    let ts = m.timestamp.or(payload_timestamp);
    let parent_quality = quality(m);
    let mut skipped = 0;
    for member in &t.metrics {
        if member.name.is_none() {
            skipped += 1;
            continue;
        }
        let from = out.len();
        skipped += readings(member, ts, out);
        // Named after the member (nested ones `Member/Sub` already).
        for r in &mut out[from..] {
            r.metric = format!("{prefix}/{}", r.metric).into();
            if r.quality == Quality::Good {
                r.quality = parent_quality;
            }
        }
    }
    skipped
}

fn name_of(m: &Metric) -> Option<CompactString> {
    match (&m.name, m.alias) {
        (Some(n), _) => Some(CompactString::from(&**n)),
        (None, Some(a)) => Some(format!("alias {a}").into()),
        (None, None) => None,
    }
}

/// The reading of one metric, or `None` if its value has no [`Value`] (a
/// null value, a template: see [`readings`]).
pub fn reading(m: &Metric, payload_timestamp: Option<u64>) -> Option<Reading> {
    let value = m.value.as_ref()?.to_stored_value()?;
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
    /// The value a reading stores: [`to_value`](Self::to_value), and arrays
    /// and datasets as JSON text (see the [module](self) table). `None` for
    /// templates (flattened by [`readings`]).
    pub fn to_stored_value(&self) -> Option<Value> {
        if let Some(v) = self.to_value() {
            return Some(v);
        }
        let mut j = String::new();
        match self {
            Self::Int8Array(v) => json_array(&mut j, v, json_display),
            Self::Int16Array(v) => json_array(&mut j, v, json_display),
            Self::Int32Array(v) => json_array(&mut j, v, json_display),
            Self::Int64Array(v) => json_array(&mut j, v, json_display),
            Self::UInt8Array(v) => json_array(&mut j, v, json_display),
            Self::UInt16Array(v) => json_array(&mut j, v, json_display),
            Self::UInt32Array(v) => json_array(&mut j, v, json_display),
            Self::UInt64Array(v) | Self::DateTimeArray(v) => {
                json_array(&mut j, v, json_display);
            }
            Self::FloatArray(v) => json_array(&mut j, v, |j, x| json_float(j, f64::from(*x))),
            Self::DoubleArray(v) => json_array(&mut j, v, |j, x| json_float(j, *x)),
            Self::BooleanArray(v) => json_array(&mut j, v, json_display),
            Self::StringArray(v) => json_array(&mut j, v, |j, x| json_string(j, x)),
            Self::DataSet(d) => {
                j.push_str("{\"columns\":");
                json_array(&mut j, &d.columns, |j, (name, _)| json_string(j, name));
                j.push_str(",\"types\":");
                json_array(&mut j, &d.columns, |j, (_, t)| json_string(j, t.name()));
                j.push_str(",\"rows\":");
                json_array(&mut j, &d.rows, |j, row| {
                    json_array(j, row, |j, e| match e.as_ref().and_then(Self::to_value) {
                        Some(Value::Bool(b)) => json_display(j, &b),
                        Some(Value::I64(x)) => json_display(j, &x),
                        Some(Value::U64(x)) => json_display(j, &x),
                        Some(Value::F64(x)) => json_float(j, x),
                        Some(Value::String(s)) => json_string(j, &s),
                        _ => j.push_str("null"),
                    });
                });
                j.push('}');
            }
            _ => return None,
        }
        Some(Value::String(j))
    }

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

fn json_array<T>(j: &mut String, items: &[T], mut each: impl FnMut(&mut String, &T)) {
    j.push('[');
    for (i, x) in items.iter().enumerate() {
        if i > 0 {
            j.push(',');
        }
        each(j, x);
    }
    j.push(']');
}

fn json_display(j: &mut String, x: &impl std::fmt::Display) {
    use std::fmt::Write as _;
    let _ = write!(j, "{x}");
}

/// A JSON number, or `null` for NaN and the infinities (JSON has none).
fn json_float(j: &mut String, x: f64) {
    if x.is_finite() {
        // `{:?}` keeps a fraction or exponent, so 1.0 stays a float.
        json_display(j, &format_args!("{x:?}"));
    } else {
        j.push_str("null");
    }
}

/// A JSON string: quotes, backslashes and control characters escaped.
fn json_string(j: &mut String, s: &str) {
    use std::fmt::Write as _;
    j.push('"');
    for c in s.chars() {
        match c {
            '"' => j.push_str("\\\""),
            '\\' => j.push_str("\\\\"),
            '\n' => j.push_str("\\n"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(j, "\\u{:04x}", u32::from(c));
            }
            c => j.push(c),
        }
    }
    j.push('"');
}
