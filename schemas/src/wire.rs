//! The serde shape shared by the JSON and CBOR codecs.
//!
//! ```json
//! {"source": "plant1/press/press-3",
//!  "readings": [{"metric": "temperature", "timestamp": 1700000000000,
//!                "value": 71.5, "quality": "good"}]}
//! ```
//!
//! `type` appears beside `value` only where the value alone is ambiguous:
//! `"u64"` for unsigned integers, `"bytes"` for base64 text in JSON. Readers
//! accept it anywhere and infer it where it is absent.

use std::fmt;

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use bytes::Bytes;
use compact_str::CompactString;
use serde::de::{self, Deserializer, Visitor};
use serde::ser::{SerializeSeq, SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

use crate::error::{DecodeError, EncodeError, FieldPath, InvalidField, Problem};
use crate::model::{Batch, Quality, Reading, Timestamp, Value, ValueType};

/// Base64 that reads padded and unpadded input alike (peers differ).
const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub(crate) fn encode_json(batch: &Batch, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    for (i, r) in batch.readings.iter().enumerate() {
        if let Value::F64(v) = r.value
            && !v.is_finite()
        {
            return Err(
                InvalidField::new(FieldPath::Value(i), Problem::NonFinite { value: v }).into()
            );
        }
    }
    serde_json::to_writer(out, &BatchRef(batch)).map_err(|e| EncodeError::Internal(e.to_string()))
}

pub(crate) fn encode_cbor(batch: &Batch, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    ciborium::into_writer(&BatchRef(batch), out).map_err(|e| EncodeError::Internal(e.to_string()))
}

pub(crate) fn decode_json(payload: &[u8]) -> Result<Batch, DecodeError> {
    // One UTF-8 check of the whole payload, then serde_json's `str` reader,
    // which trusts it: checking each string separately was a fifth of the
    // decode time.
    let text = std::str::from_utf8(payload).map_err(|e| {
        let (line, column) = line_column(&payload[..e.valid_up_to()]);
        DecodeError::Json {
            line,
            column,
            detail: format!("invalid UTF-8 at byte {}", e.valid_up_to()),
        }
    })?;
    let wire: Decoded = serde_json::from_str(text).map_err(|e| DecodeError::Json {
        line: e.line(),
        column: e.column(),
        detail: e.to_string(),
    })?;
    wire.into_batch()
}

/// The 1-based line and column just after `before`, as serde_json counts them.
fn line_column(before: &[u8]) -> (usize, usize) {
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (line, column)
}

pub(crate) fn decode_cbor(payload: &[u8]) -> Result<Batch, DecodeError> {
    use ciborium::de::Error;
    // ciborium reads each string through this buffer and refuses longer ones.
    // No string can be longer than the payload, so this size accepts every
    // valid payload and turns an absurd length prefix into an error at once.
    let mut scratch = vec![0; payload.len()];
    let wire: Decoded = ciborium::de::from_reader_with_buffer(payload, &mut scratch).map_err(|e| match e {
        Error::Io(io) => DecodeError::Cbor {
            offset: None,
            detail: if io.kind() == std::io::ErrorKind::UnexpectedEof {
                "truncated: the input ended inside an item".to_owned()
            } else {
                io.to_string()
            },
        },
        Error::Syntax(offset) => {
            DecodeError::Cbor { offset: Some(offset), detail: "not well-formed CBOR".to_owned() }
        }
        // What ciborium says of a string longer than the scratch buffer.
        Error::Semantic(offset, detail) if detail.ends_with("expected str or bytes") => {
            DecodeError::Cbor {
                offset,
                detail: "a text or byte string longer than the payload (truncated, or an absurd length)"
                    .to_owned(),
            }
        }
        Error::Semantic(offset, detail) => DecodeError::Cbor { offset, detail },
        Error::RecursionLimitExceeded => {
            DecodeError::Cbor { offset: None, detail: "nested too deeply".to_owned() }
        }
    })?;
    wire.into_batch()
}

// ---- encoding: borrowed views, so nothing is cloned ----

struct BatchRef<'a>(&'a Batch);
struct ReadingsRef<'a>(&'a [Reading]);
struct ReadingRef<'a>(&'a Reading);
struct ValueRef<'a>(&'a Value);

impl Serialize for BatchRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Batch", 2)?;
        st.serialize_field("source", self.0.source.as_str())?;
        st.serialize_field("readings", &ReadingsRef(&self.0.readings))?;
        st.end()
    }
}

impl Serialize for ReadingsRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for r in self.0 {
            seq.serialize_element(&ReadingRef(r))?;
        }
        seq.end()
    }
}

impl Serialize for ReadingRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        // The type is written only where the value alone would read back as
        // another type: an unsigned integer (integers read as i64 when they
        // fit), and bytes in JSON (written as base64 text).
        let ty = match r.value {
            Value::U64(_) => Some(ValueType::U64),
            Value::Bytes(_) if s.is_human_readable() => Some(ValueType::Bytes),
            _ => None,
        };
        let mut st = s.serialize_struct("Reading", if ty.is_some() { 5 } else { 4 })?;
        st.serialize_field("metric", r.metric.as_str())?;
        st.serialize_field("timestamp", &r.timestamp.unix_ms())?;
        st.serialize_field("value", &ValueRef(&r.value))?;
        if let Some(ty) = ty {
            st.serialize_field("type", ty.as_str())?;
        }
        st.serialize_field("quality", r.quality.as_str())?;
        st.end()
    }
}

impl Serialize for ValueRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Bool(v) => s.serialize_bool(*v),
            Value::I64(v) => s.serialize_i64(*v),
            Value::U64(v) => s.serialize_u64(*v),
            Value::F64(v) => s.serialize_f64(*v),
            Value::String(v) => s.serialize_str(v),
            Value::Bytes(v) if s.is_human_readable() => s.serialize_str(&STANDARD.encode(v)),
            Value::Bytes(v) => s.serialize_bytes(v),
        }
    }
}

// ---- decoding: straight into the model, one pass, no intermediate structs ----
//
// A field that parses but breaks a rule (a type mismatch, say) is not a serde
// error, which could carry text only: the visitors keep the typed problem and
// its reading index, consume the rest of the input, and hand it back.

/// What the JSON and CBOR deserializers produce.
struct Decoded(Result<Batch, InvalidField>);

impl Decoded {
    fn into_batch(self) -> Result<Batch, DecodeError> {
        self.0.map_err(DecodeError::Invalid)
    }
}

impl<'de> Deserialize<'de> for Decoded {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(BatchVisitor)
    }
}

/// Declares a field-name enum whose unknown names map to `Other`.
macro_rules! keys {
    ($name:ident { $($variant:ident = $text:literal),* $(,)? }) => {
        enum $name { $($variant,)* Other }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a field name")
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$name, E> {
                        Ok(match v { $($text => $name::$variant,)* _ => $name::Other })
                    }
                    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<$name, E> {
                        Ok(std::str::from_utf8(v).map_or($name::Other, |s| match s {
                            $($text => $name::$variant,)*
                            _ => $name::Other,
                        }))
                    }
                }
                d.deserialize_identifier(V)
            }
        }
    };
}

keys!(BatchKey { Source = "source", Readings = "readings" });
keys!(ReadingKey { Metric = "metric", Timestamp = "timestamp", Value = "value", Type = "type", Quality = "quality" });

/// Reads the value of a key into its `slot`; a key met twice is an error.
fn field<'de, A: de::MapAccess<'de>, T: Deserialize<'de>>(
    map: &mut A,
    slot: &mut Option<T>,
    name: &'static str,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

struct BatchVisitor;

impl<'de> Visitor<'de> for BatchVisitor {
    type Value = Decoded;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a batch: a map with \"readings\" and optionally \"source\"")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Decoded, A::Error> {
        let mut source: Option<CompactString> = None;
        let mut readings: Option<Readings> = None;
        while let Some(key) = map.next_key::<BatchKey>()? {
            match key {
                BatchKey::Source => field(&mut map, &mut source, "source")?,
                BatchKey::Readings => field(&mut map, &mut readings, "readings")?,
                BatchKey::Other => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        let readings = readings.ok_or_else(|| de::Error::missing_field("readings"))?;
        Ok(Decoded(
            readings.0.map(|readings| Batch { source: source.unwrap_or_default(), readings }),
        ))
    }
}

struct Readings(Result<Vec<Reading>, InvalidField>);

impl<'de> Deserialize<'de> for Readings {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Readings;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of readings")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Readings, A::Error> {
                // Trust a size hint only as far as a small allocation goes.
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
                while let Some(item) = seq.next_element::<ReadingItem>()? {
                    match item.0 {
                        Ok(r) => out.push(r),
                        Err(problem) => {
                            let field = FieldPath::Value(out.len());
                            while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                            return Ok(Readings(Err(InvalidField::new(field, problem))));
                        }
                    }
                }
                Ok(Readings(Ok(out)))
            }
        }
        d.deserialize_seq(V)
    }
}

/// A reading, or what is wrong with its value.
struct ReadingItem(Result<Reading, Problem>);

impl<'de> Deserialize<'de> for ReadingItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ReadingItem;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a reading: a map with \"metric\", \"timestamp\" and \"value\"")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<ReadingItem, A::Error> {
                let mut metric: Option<CompactString> = None;
                let mut timestamp: Option<u64> = None;
                let mut value: Option<Scalar> = None;
                let mut ty: Option<ValueType> = None;
                let mut quality: Option<Quality> = None;
                while let Some(key) = map.next_key::<ReadingKey>()? {
                    match key {
                        ReadingKey::Metric => field(&mut map, &mut metric, "metric")?,
                        ReadingKey::Timestamp => field(&mut map, &mut timestamp, "timestamp")?,
                        ReadingKey::Value => field(&mut map, &mut value, "value")?,
                        ReadingKey::Type => field(&mut map, &mut ty, "type")?,
                        ReadingKey::Quality => field(&mut map, &mut quality, "quality")?,
                        ReadingKey::Other => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                let metric = metric.ok_or_else(|| de::Error::missing_field("metric"))?;
                let timestamp = timestamp.ok_or_else(|| de::Error::missing_field("timestamp"))?;
                let value = value.ok_or_else(|| de::Error::missing_field("value"))?;
                Ok(ReadingItem(value.into_value(ty).map(|value| Reading {
                    metric,
                    timestamp: Timestamp::from_unix_ms(timestamp),
                    value,
                    quality: quality.unwrap_or_default(),
                })))
            }
        }
        d.deserialize_map(V)
    }
}

/// A value as the format gave it, before the declared type is applied.
enum Scalar {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
}

impl Scalar {
    const fn kind(&self) -> &'static str {
        match self {
            Self::Bool(_) => "a boolean",
            Self::Int(_) | Self::UInt(_) => "an integer",
            Self::Float(_) => "a float",
            Self::Str(_) => "a string",
            Self::Bytes(_) => "a byte string",
        }
    }

    fn into_value(self, ty: Option<ValueType>) -> Result<Value, Problem> {
        let out_of_range = |declared, value: &dyn fmt::Display| Problem::OutOfRange {
            declared,
            value: value.to_string(),
        };
        Ok(match (ty, self) {
            (None | Some(ValueType::Bool), Self::Bool(b)) => Value::Bool(b),
            (None | Some(ValueType::I64), Self::Int(v)) => Value::I64(v),
            (None, Self::UInt(v)) => i64::try_from(v).map_or(Value::U64(v), Value::I64),
            (Some(ValueType::I64), Self::UInt(v)) => {
                Value::I64(i64::try_from(v).map_err(|_| out_of_range(ValueType::I64, &v))?)
            }
            (Some(ValueType::U64), Self::UInt(v)) => Value::U64(v),
            (Some(ValueType::U64), Self::Int(v)) => {
                Value::U64(u64::try_from(v).map_err(|_| out_of_range(ValueType::U64, &v))?)
            }
            (None | Some(ValueType::F64), Self::Float(v)) => Value::F64(v),
            // People type `"type": "f64", "value": 3`.
            (Some(ValueType::F64), Self::Int(v)) => Value::F64(v as f64),
            (Some(ValueType::F64), Self::UInt(v)) => Value::F64(v as f64),
            (None | Some(ValueType::String), Self::Str(s)) => Value::String(s),
            (None | Some(ValueType::Bytes), Self::Bytes(b)) => Value::Bytes(Bytes::from(b)),
            (Some(ValueType::Bytes), Self::Str(s)) => Value::Bytes(Bytes::from(
                BASE64_LENIENT.decode(s.as_bytes()).map_err(|e| Problem::Base64(e.to_string()))?,
            )),
            (Some(declared), found) => {
                return Err(Problem::TypeMismatch { declared, found: found.kind() });
            }
        })
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a boolean, number, string or byte string")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar::UInt(v))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Scalar, E> {
        if let Ok(v) = i64::try_from(v) {
            Ok(Scalar::Int(v))
        } else if let Ok(v) = u64::try_from(v) {
            Ok(Scalar::UInt(v))
        } else {
            Err(E::custom(format_args!("integer {v} is outside the 64-bit range")))
        }
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Scalar, E> {
        u64::try_from(v)
            .map(Scalar::UInt)
            .map_err(|_| E::custom(format_args!("integer {v} is outside the 64-bit range")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Scalar, E> {
        Ok(Scalar::Bytes(v.to_vec()))
    }
    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Scalar, E> {
        Ok(Scalar::Bytes(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
        Err(E::custom(
            "null is not a value: send the reading with quality \"bad\" and a value, or leave it out",
        ))
    }
    fn visit_none<E: de::Error>(self) -> Result<Scalar, E> {
        self.visit_unit()
    }
}
