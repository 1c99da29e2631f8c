//! The reading model: [`Reading`], [`Value`], [`Quality`], [`Batch`], [`Timestamp`].

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use crate::error::{FieldPath, InvalidField, Problem};

/// A point in time as UTC milliseconds since the Unix epoch, the unit Sparkplug
/// B uses on the wire (`uint64` timestamps) and every shopfloor crate uses in
/// memory. PostgreSQL stores it as `timestamptz`.
///
/// ```
/// use shopfloor_schemas::Timestamp;
/// let t = Timestamp::from_unix_ms(1_700_000_000_000);
/// assert_eq!(t.unix_ms(), 1_700_000_000_000);
/// ```
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch, 1970-01-01T00:00:00Z.
    pub const UNIX_EPOCH: Self = Self(0);

    /// The UTC calendar date, `(year, month, day)` (proleptic Gregorian).
    pub fn utc_date(self) -> (i64, u32, u32) {
        // Howard Hinnant's civil_from_days.
        let z = (self.0 / 86_400_000) as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        (yoe + era * 400 + i64::from(m <= 2), m, d)
    }

    /// RFC 3339 in UTC with milliseconds: `2026-11-27T08:30:00.123Z`.
    pub fn to_rfc3339(self) -> String {
        let (y, m, d) = self.utc_date();
        let ms_of_day = self.0 % 86_400_000;
        let (h, min, s, ms) = (
            ms_of_day / 3_600_000,
            ms_of_day / 60_000 % 60,
            ms_of_day / 1000 % 60,
            ms_of_day % 1000,
        );
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{ms:03}Z")
    }

    /// A timestamp from milliseconds since the Unix epoch.
    pub const fn from_unix_ms(ms: u64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn unix_ms(self) -> u64 {
        self.0
    }

    /// The wall clock now, truncated to whole milliseconds. A clock set before
    /// 1970 gives [`Timestamp::UNIX_EPOCH`]. Sans-IO cores never call this:
    /// their callers pass the time in.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        let ms = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        Self(u64::try_from(ms).unwrap_or(u64::MAX))
    }
}

impl From<Timestamp> for SystemTime {
    fn from(t: Timestamp) -> Self {
        UNIX_EPOCH + Duration::from_millis(t.0)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ms", self.0)
    }
}

/// How far a reading can be trusted. It travels with the value from the
/// device to the database and the alarm engine.
///
/// | `Quality`   | OPC UA status code (severity bits 31..30)              | Sparkplug `Quality` property (Int32) |
/// |-------------|--------------------------------------------------------|--------------------------------------|
/// | `Good`      | `Good` (`0x0000_0000`); any code with severity `00`    | `192` (GOOD)                         |
/// | `Uncertain` | `Uncertain` (`0x4000_0000`); any code with severity `01` | sent as `0` (BAD), see below       |
/// | `Bad`       | `Bad` (`0x8000_0000`); any code with severity `10`/`11` | `0` (BAD)                           |
/// | `Stale`     | `UncertainLastUsableValue` (`0x4090_0000`); also read from `BadNoCommunication` (`0x8031_0000`) | `500` (STALE) |
///
/// The Sparkplug 3.0 specification allows only 0, 192 and 500 for the
/// `Quality` property (`tck-id-payloads-propertyset-quality-value`); these
/// are Ignition's codes, which come from OPC DA's quality byte (good `0xC0`,
/// uncertain `0x40`, bad `0x00`). There is no uncertain value, so
/// [`Quality::to_sparkplug`] sends uncertain as BAD: a host that knows only
/// three values must not take an uncertain reading for a good one. When
/// reading, [`Quality::from_sparkplug`] is liberal and also understands OPC DA
/// quality bytes that some peers send (`0x40..=0x7F` is uncertain).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Quality {
    /// The value is trustworthy.
    #[default]
    #[serde(alias = "GOOD", alias = "Good")]
    Good,
    /// The value is usable but may be wrong (sensor out of calibration,
    /// engineering units exceeded, a substituted value).
    #[serde(alias = "UNCERTAIN", alias = "Uncertain")]
    Uncertain,
    /// The value must not be used (device fault, exception response,
    /// conversion failure).
    #[serde(alias = "BAD", alias = "Bad")]
    Bad,
    /// The value was good once but its source has stopped reporting (device
    /// offline, Sparkplug death certificate). A dead device makes its metrics
    /// stale, never silent.
    #[serde(alias = "STALE", alias = "Stale")]
    Stale,
}

impl Quality {
    /// Every quality, in declaration order.
    pub const ALL: [Self; 4] = [Self::Good, Self::Uncertain, Self::Bad, Self::Stale];

    /// The Sparkplug `Quality` property value: 192, 0 or 500. Uncertain is
    /// sent as 0 (BAD); see the table on [`Quality`].
    pub const fn to_sparkplug(self) -> i32 {
        match self {
            Self::Good => 192,
            Self::Uncertain | Self::Bad => 0,
            Self::Stale => 500,
        }
    }

    /// Reads a Sparkplug `Quality` property value. 192 is good, 500 stale and
    /// 0 bad, as the specification says; other values are read as OPC DA
    /// quality bytes (`0xC0..=0xFF` good, `0x40..=0x7F` uncertain, the rest
    /// bad), which is what peers that send them mean.
    pub const fn from_sparkplug(code: i32) -> Self {
        match code {
            192..=255 => Self::Good,
            500 => Self::Stale,
            64..=127 => Self::Uncertain,
            _ => Self::Bad,
        }
    }

    /// The OPC UA status code this quality is published as.
    pub const fn to_opcua_status(self) -> u32 {
        match self {
            Self::Good => 0x0000_0000,
            Self::Uncertain => 0x4000_0000,
            Self::Bad => 0x8000_0000,
            Self::Stale => 0x4090_0000,
        }
    }

    /// Classifies an OPC UA status code by its severity bits (Part 4, 7.39),
    /// except `UncertainLastUsableValue` and `BadNoCommunication`, which say
    /// that the source stopped reporting and so are [`Quality::Stale`]. The
    /// info bits (the low 16) are ignored.
    pub const fn from_opcua_status(code: u32) -> Self {
        match code & 0xFFFF_0000 {
            0x4090_0000 | 0x8031_0000 => Self::Stale,
            _ => match code >> 30 {
                0 => Self::Good,
                1 => Self::Uncertain,
                _ => Self::Bad,
            },
        }
    }

    /// The lower-case name used in JSON and configuration: `good`,
    /// `uncertain`, `bad` or `stale`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Good => "good",
            Self::Uncertain => "uncertain",
            Self::Bad => "bad",
            Self::Stale => "stale",
        }
    }

    /// Whether the value may be used as it is.
    pub const fn is_good(self) -> bool {
        matches!(self, Self::Good)
    }
}

impl fmt::Display for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reading's value.
///
/// Six types cover what Modbus, OPC UA and Sparkplug scalars carry; narrower
/// integers and `f32` widen without loss (`i16` → [`Value::I64`], `f32` →
/// [`Value::F64`]), and the bridges keep the device's own type in their
/// metadata.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// A boolean (coil, discrete input, digital I/O).
    Bool(bool),
    /// A signed integer.
    I64(i64),
    /// An unsigned integer too large for `i64`, or a counter that must stay
    /// unsigned.
    U64(u64),
    /// A floating-point number. JSON cannot carry NaN or the infinities; CBOR
    /// and Protobuf can.
    F64(f64),
    /// Text. It may not contain NUL bytes, which PostgreSQL `text` cannot hold.
    String(String),
    /// Raw bytes.
    Bytes(Bytes),
}

impl Value {
    /// The value's type.
    pub const fn value_type(&self) -> ValueType {
        match self {
            Self::Bool(_) => ValueType::Bool,
            Self::I64(_) => ValueType::I64,
            Self::U64(_) => ValueType::U64,
            Self::F64(_) => ValueType::F64,
            Self::String(_) => ValueType::String,
            Self::Bytes(_) => ValueType::Bytes,
        }
    }

    /// The value as `f64` where it is a number or a boolean (1.0 / 0.0), for
    /// trends and limit checks. Integers beyond 2^53 lose precision.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::Bool(b) => Some(if b { 1.0 } else { 0.0 }),
            Self::I64(v) => Some(v as f64),
            Self::U64(v) => Some(v as f64),
            Self::F64(v) => Some(v),
            Self::String(_) | Self::Bytes(_) => None,
        }
    }
}

/// Displays the value as a person reads it: `true`, `-3`, `71.5`, text as it
/// is, bytes as hex (`0x00ff`).
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bool(v) => write!(f, "{v}"),
            Self::I64(v) => write!(f, "{v}"),
            Self::U64(v) => write!(f, "{v}"),
            Self::F64(v) => write!(f, "{v}"),
            Self::String(v) => f.write_str(v),
            Self::Bytes(v) => {
                f.write_str("0x")?;
                v.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }
    }
}

/// `From` each type a [`Value`] variant holds.
macro_rules! value_from {
    ($($t:ty => $variant:ident),+) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Self::$variant(v)
            }
        }
    )+};
}

value_from!(bool => Bool, i64 => I64, u64 => U64, f64 => F64, String => String, Bytes => Bytes);

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Self::String(v.to_owned())
    }
}

/// The type of a [`Value`], as named in JSON (`"type": "u64"`) and in
/// configuration files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ValueType {
    /// [`Value::Bool`]; also read from `boolean`.
    #[serde(alias = "boolean")]
    Bool,
    /// [`Value::I64`]; also read from `int` and `integer`.
    #[serde(alias = "int", alias = "integer")]
    I64,
    /// [`Value::U64`]; also read from `uint`.
    #[serde(alias = "uint")]
    U64,
    /// [`Value::F64`]; also read from `float`, `double` and `number`.
    #[serde(alias = "float", alias = "double", alias = "number")]
    F64,
    /// [`Value::String`]; also read from `str` and `text`.
    #[serde(alias = "str", alias = "text")]
    String,
    /// [`Value::Bytes`].
    Bytes,
}

impl ValueType {
    /// The lower-case name: `bool`, `i64`, `u64`, `f64`, `string` or `bytes`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Bool => "bool",
            Self::I64 => "i64",
            Self::U64 => "u64",
            Self::F64 => "f64",
            Self::String => "string",
            Self::Bytes => "bytes",
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ValueType {
    type Err = Problem;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "bool" | "boolean" => Self::Bool,
            "i64" | "int" | "integer" => Self::I64,
            "u64" | "uint" => Self::U64,
            "f64" | "float" | "double" | "number" => Self::F64,
            "string" | "str" | "text" => Self::String,
            "bytes" => Self::Bytes,
            _ => return Err(Problem::UnknownType(s.to_owned())),
        })
    }
}

/// One value of one metric at one time, with its quality.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    /// The metric's name within its source, e.g. `temperature` or
    /// `spindle/speed`. Never empty, never contains NUL. Names up to 24 bytes
    /// are stored inline, without a heap allocation.
    pub metric: CompactString,
    /// When the value was sampled at the source, in UTC ms since the Unix epoch.
    pub timestamp: Timestamp,
    /// The value.
    pub value: Value,
    /// How far the value can be trusted.
    pub quality: Quality,
}

impl Reading {
    /// A reading of good quality.
    pub fn new(
        metric: impl Into<CompactString>,
        timestamp: Timestamp,
        value: impl Into<Value>,
    ) -> Self {
        Self { metric: metric.into(), timestamp, value: value.into(), quality: Quality::Good }
    }

    /// The same reading with another quality.
    #[must_use]
    pub fn with_quality(mut self, quality: Quality) -> Self {
        self.quality = quality;
        self
    }
}

/// Readings from one source, the unit every codec encodes and every crate
/// passes along.
///
/// `source` says where the readings came from: a device, a machine or an edge
/// node, e.g. `plant1/press/press-3`. It may be empty when the transport says
/// it instead (the MQTT topic, say).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    /// Where the readings came from. Never contains NUL. Stored inline up to
    /// 24 bytes, like [`Reading::metric`].
    pub source: CompactString,
    /// The readings, in the order they were taken.
    pub readings: Vec<Reading>,
}

impl Batch {
    /// An empty batch from `source`.
    pub fn new(source: impl Into<CompactString>) -> Self {
        Self { source: source.into(), readings: Vec::new() }
    }

    /// Adds a reading, builder style.
    #[must_use]
    pub fn with(mut self, reading: Reading) -> Self {
        self.readings.push(reading);
        self
    }

    /// Checks what every codec requires of a batch, and PostgreSQL of its
    /// text: no NUL byte in the source, metric names or string values, and no
    /// empty metric name. Decoders run it on what they decode and encoders on
    /// what they send.
    pub fn validate(&self) -> Result<(), InvalidField> {
        check_text(&self.source, FieldPath::Source)?;
        for (i, r) in self.readings.iter().enumerate() {
            if r.metric.is_empty() {
                return Err(InvalidField::new(FieldPath::Metric(i), Problem::Empty));
            }
            check_text(&r.metric, FieldPath::Metric(i))?;
            if let Value::String(s) = &r.value {
                check_text(s, FieldPath::Value(i))?;
            }
        }
        Ok(())
    }
}

fn check_text(s: &str, field: FieldPath) -> Result<(), InvalidField> {
    match memchr::memchr(0, s.as_bytes()) {
        Some(offset) => Err(InvalidField::new(field, Problem::Nul { offset })),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparkplug_quality_codes() {
        assert_eq!(Quality::Good.to_sparkplug(), 192);
        assert_eq!(Quality::Bad.to_sparkplug(), 0);
        assert_eq!(Quality::Stale.to_sparkplug(), 500);
        assert_eq!(Quality::Uncertain.to_sparkplug(), 0, "Sparkplug has no uncertain");
        for q in [Quality::Good, Quality::Bad, Quality::Stale] {
            assert_eq!(Quality::from_sparkplug(q.to_sparkplug()), q);
        }
        // OPC DA quality bytes that some peers send.
        assert_eq!(Quality::from_sparkplug(0xC0), Quality::Good);
        assert_eq!(Quality::from_sparkplug(0xD8), Quality::Good);
        assert_eq!(Quality::from_sparkplug(0x40), Quality::Uncertain);
        assert_eq!(Quality::from_sparkplug(0x18), Quality::Bad);
        assert_eq!(Quality::from_sparkplug(-1), Quality::Bad);
        assert_eq!(Quality::from_sparkplug(501), Quality::Bad);
    }

    #[test]
    fn opcua_status_codes() {
        for q in Quality::ALL {
            assert_eq!(Quality::from_opcua_status(q.to_opcua_status()), q);
        }
        assert_eq!(Quality::from_opcua_status(0x0000_0000), Quality::Good);
        assert_eq!(Quality::from_opcua_status(0x00A2_0000), Quality::Good); // GoodClamped
        assert_eq!(Quality::from_opcua_status(0x4093_0000), Quality::Uncertain); // SubNormal
        assert_eq!(Quality::from_opcua_status(0x4090_0400), Quality::Stale); // LastUsableValue + info bits
        assert_eq!(Quality::from_opcua_status(0x8031_0000), Quality::Stale); // BadNoCommunication
        assert_eq!(Quality::from_opcua_status(0x8032_0000), Quality::Bad); // BadWaitingForInitialData
        assert_eq!(Quality::from_opcua_status(0x808A_0000), Quality::Bad); // BadNodeIdUnknown
        assert_eq!(Quality::from_opcua_status(0xC000_0000), Quality::Bad); // reserved severity 11
    }

    #[test]
    fn timestamps_convert_to_system_time() {
        let t = Timestamp::from_unix_ms(1_700_000_000_123);
        assert_eq!(Timestamp::from(SystemTime::from(t)), t);
        assert!(Timestamp::now() > t);
        assert_eq!(Timestamp::from(UNIX_EPOCH - Duration::from_secs(1)), Timestamp::UNIX_EPOCH);
    }

    #[test]
    fn value_types_parse_by_name_and_alias() {
        for (s, t) in [
            ("f64", ValueType::F64),
            ("double", ValueType::F64),
            ("int", ValueType::I64),
            ("boolean", ValueType::Bool),
        ] {
            assert_eq!(s.parse::<ValueType>().unwrap(), t);
        }
        assert!("decimal".parse::<ValueType>().is_err());
        assert_eq!(Value::from(true).as_f64(), Some(1.0));
        assert_eq!(Value::from("x").as_f64(), None);
        assert_eq!(Value::from(7_u64).value_type(), ValueType::U64);
        let shown: Vec<String> = [
            Value::from(true),
            Value::from(-3_i64),
            Value::from(71.5),
            Value::from("ok"),
            Value::from(Bytes::from_static(&[0, 0xff])),
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(shown, ["true", "-3", "71.5", "ok", "0x00ff"]);
    }
}
