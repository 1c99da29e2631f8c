//! Typed values: [`MetricValue`] and how each data type travels on the wire.
//!
//! Two traps live here (see the crate's `manual` notes):
//! - Int8, Int16 and Int32 travel in the unsigned 32-bit `int_value`, and
//!   peers disagree on how: Tahu Java sign-extends (-1 as Int8 is
//!   `0xFFFF_FFFF`), Tahu Python and srad zero-extend (`0xFF`). Decoding masks
//!   to the declared width and accepts both; encoding sign-extends by default
//!   ([`SignedEncoding`]).
//! - Arrays are packed little-endian in `bytes_value` (the 3.0 text; its
//!   FloatArray and DoubleArray examples are wrong, errata PR #436).

use bytes::{BufMut, Bytes, BytesMut};

use crate::datatype::DataType;
use crate::payload::{DataSet, Template};

/// A typed metric value: one variant per data type.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum MetricValue {
    /// [`DataType::Int8`].
    Int8(i8),
    /// [`DataType::Int16`].
    Int16(i16),
    /// [`DataType::Int32`].
    Int32(i32),
    /// [`DataType::Int64`].
    Int64(i64),
    /// [`DataType::UInt8`].
    UInt8(u8),
    /// [`DataType::UInt16`].
    UInt16(u16),
    /// [`DataType::UInt32`].
    UInt32(u32),
    /// [`DataType::UInt64`].
    UInt64(u64),
    /// [`DataType::Float`].
    Float(f32),
    /// [`DataType::Double`].
    Double(f64),
    /// [`DataType::Boolean`].
    Boolean(bool),
    /// [`DataType::String`].
    String(String),
    /// [`DataType::DateTime`]: UTC ms since the Unix epoch.
    DateTime(u64),
    /// [`DataType::Text`].
    Text(String),
    /// [`DataType::Uuid`], as text.
    Uuid(String),
    /// [`DataType::DataSet`] (boxed: inline it would double every metric's size).
    DataSet(Box<DataSet>),
    /// [`DataType::Bytes`].
    Bytes(Bytes),
    /// [`DataType::File`]: the bytes; name and type are in the metric's metadata.
    File(Bytes),
    /// [`DataType::Template`].
    Template(Box<Template>),
    /// [`DataType::Int8Array`].
    Int8Array(Vec<i8>),
    /// [`DataType::Int16Array`].
    Int16Array(Vec<i16>),
    /// [`DataType::Int32Array`].
    Int32Array(Vec<i32>),
    /// [`DataType::Int64Array`].
    Int64Array(Vec<i64>),
    /// [`DataType::UInt8Array`].
    UInt8Array(Vec<u8>),
    /// [`DataType::UInt16Array`].
    UInt16Array(Vec<u16>),
    /// [`DataType::UInt32Array`].
    UInt32Array(Vec<u32>),
    /// [`DataType::UInt64Array`].
    UInt64Array(Vec<u64>),
    /// [`DataType::FloatArray`].
    FloatArray(Vec<f32>),
    /// [`DataType::DoubleArray`].
    DoubleArray(Vec<f64>),
    /// [`DataType::BooleanArray`].
    BooleanArray(Vec<bool>),
    /// [`DataType::StringArray`]. No string may contain NUL (the separator).
    StringArray(Vec<String>),
    /// [`DataType::DateTimeArray`].
    DateTimeArray(Vec<u64>),
}

impl MetricValue {
    /// The value's data type.
    pub const fn datatype(&self) -> DataType {
        match self {
            Self::Int8(_) => DataType::Int8,
            Self::Int16(_) => DataType::Int16,
            Self::Int32(_) => DataType::Int32,
            Self::Int64(_) => DataType::Int64,
            Self::UInt8(_) => DataType::UInt8,
            Self::UInt16(_) => DataType::UInt16,
            Self::UInt32(_) => DataType::UInt32,
            Self::UInt64(_) => DataType::UInt64,
            Self::Float(_) => DataType::Float,
            Self::Double(_) => DataType::Double,
            Self::Boolean(_) => DataType::Boolean,
            Self::String(_) => DataType::String,
            Self::DateTime(_) => DataType::DateTime,
            Self::Text(_) => DataType::Text,
            Self::Uuid(_) => DataType::Uuid,
            Self::DataSet(_) => DataType::DataSet,
            Self::Bytes(_) => DataType::Bytes,
            Self::File(_) => DataType::File,
            Self::Template(_) => DataType::Template,
            Self::Int8Array(_) => DataType::Int8Array,
            Self::Int16Array(_) => DataType::Int16Array,
            Self::Int32Array(_) => DataType::Int32Array,
            Self::Int64Array(_) => DataType::Int64Array,
            Self::UInt8Array(_) => DataType::UInt8Array,
            Self::UInt16Array(_) => DataType::UInt16Array,
            Self::UInt32Array(_) => DataType::UInt32Array,
            Self::UInt64Array(_) => DataType::UInt64Array,
            Self::FloatArray(_) => DataType::FloatArray,
            Self::DoubleArray(_) => DataType::DoubleArray,
            Self::BooleanArray(_) => DataType::BooleanArray,
            Self::StringArray(_) => DataType::StringArray,
            Self::DateTimeArray(_) => DataType::DateTimeArray,
        }
    }
}

/// How signed 8-, 16- and 32-bit integers are written into the unsigned
/// 32-bit `int_value` field. Decoding accepts both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SignedEncoding {
    /// Two's complement in 32 bits: -1 as Int8 is `0xFFFF_FFFF`. What Tahu
    /// Java (the TCK-passing reference) sends.
    #[default]
    SignExtend,
    /// Two's complement in the declared width: -1 as Int8 is `0xFF`. What
    /// Tahu Python and srad send.
    ZeroExtend,
}

/// The scalar members that every value oneof of the schema shares (metric,
/// property, parameter, dataset element).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Scalar {
    Int(u32),
    Long(u64),
    Float(f32),
    Double(f64),
    Boolean(bool),
    String(String),
}

/// Why a wire value does not fit its declared type. The caller adds which
/// metric it was.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// The value is in a wire field the data type does not use.
    #[error("datatype {datatype} but the value is in {found}")]
    Mismatch {
        /// The declared type.
        datatype: DataType,
        /// The wire field that holds the value.
        found: &'static str,
    },
    /// An integer outside the declared type's range in both the zero- and the
    /// sign-extended reading.
    #[error("datatype {datatype} cannot hold {raw:#x}")]
    OutOfRange {
        /// The declared type.
        datatype: DataType,
        /// The wire bits.
        raw: u64,
    },
    /// A packed array whose bytes do not fit its element type.
    #[error("{datatype}: {reason}")]
    BadArray {
        /// The declared type.
        datatype: DataType,
        /// What is wrong.
        reason: String,
    },
    /// A type that has no value of its own here (Unknown, PropertySet, or a
    /// complex type where only basic ones are allowed).
    #[error("datatype {0} is not allowed here")]
    NotAllowed(DataType),
}

/// Reads a signed integer of `width` bits from wire bits that arrived
/// zero-extended (`raw < 2^width`) or sign-extended to `from` bits.
fn signed(raw: u64, from: u32, width: u32) -> Option<i64> {
    let shift = 64 - width;
    if width == 64 || raw >> width == 0 {
        return Some(((raw << shift) as i64) >> shift);
    }
    let extended = if from == 32 { i64::from(raw as u32 as i32) } else { raw as i64 };
    let min = -(1_i64 << (width - 1));
    (min..0).contains(&extended).then_some(extended)
}

fn unsigned(raw: u64, width: u32) -> Option<u64> {
    (width == 64 || raw >> width == 0).then_some(raw)
}

/// A basic-type value from its wire scalar. Liberal where peers differ:
/// both signed encodings, integers in either integer field, a float for a
/// double and a double for a float.
pub(crate) fn basic_from_wire(
    datatype: DataType,
    scalar: Scalar,
) -> Result<MetricValue, ValueError> {
    use DataType as T;
    // Matched by value: cloning the scalar (a String, for text) cost a
    // fifth of typing a DATA message.
    let other = |found: &'static str| {
        if datatype.is_basic() {
            ValueError::Mismatch { datatype, found }
        } else {
            ValueError::NotAllowed(datatype)
        }
    };
    let (raw, from) = match scalar {
        Scalar::Int(v) => (u64::from(v), 32),
        Scalar::Long(v) => (v, 64),
        Scalar::Float(v) => {
            return match datatype {
                T::Float => Ok(MetricValue::Float(v)),
                T::Double => Ok(MetricValue::Double(f64::from(v))),
                _ => Err(other("float_value")),
            };
        }
        Scalar::Double(v) => {
            return match datatype {
                T::Double => Ok(MetricValue::Double(v)),
                T::Float => Ok(MetricValue::Float(v as f32)),
                _ => Err(other("double_value")),
            };
        }
        Scalar::Boolean(v) => {
            return match datatype {
                T::Boolean => Ok(MetricValue::Boolean(v)),
                _ => Err(other("boolean_value")),
            };
        }
        Scalar::String(v) => {
            return match datatype {
                T::String => Ok(MetricValue::String(v)),
                T::Text => Ok(MetricValue::Text(v)),
                T::Uuid => Ok(MetricValue::Uuid(v)),
                _ => Err(other("string_value")),
            };
        }
    };
    let range = || ValueError::OutOfRange { datatype, raw };
    Ok(match datatype {
        T::Int8 => MetricValue::Int8(signed(raw, from, 8).ok_or_else(range)? as i8),
        T::Int16 => MetricValue::Int16(signed(raw, from, 16).ok_or_else(range)? as i16),
        T::Int32 => MetricValue::Int32(signed(raw, from, 32).ok_or_else(range)? as i32),
        T::Int64 => MetricValue::Int64(raw as i64),
        T::UInt8 => MetricValue::UInt8(unsigned(raw, 8).ok_or_else(range)? as u8),
        T::UInt16 => MetricValue::UInt16(unsigned(raw, 16).ok_or_else(range)? as u16),
        T::UInt32 => MetricValue::UInt32(unsigned(raw, 32).ok_or_else(range)? as u32),
        T::UInt64 => MetricValue::UInt64(raw),
        T::DateTime => MetricValue::DateTime(raw),
        t if !t.is_basic() => return Err(ValueError::NotAllowed(t)),
        _ => {
            return Err(ValueError::Mismatch {
                datatype,
                found: if from == 32 { "int_value" } else { "long_value" },
            });
        }
    })
}

/// The wire scalar of a basic-type value, or `None` for other types.
pub(crate) fn basic_to_wire(value: &MetricValue, signed: SignedEncoding) -> Option<Scalar> {
    let int = |sign_extended: i32, zero_extended: u32| {
        Scalar::Int(match signed {
            SignedEncoding::SignExtend => sign_extended as u32,
            SignedEncoding::ZeroExtend => zero_extended,
        })
    };
    Some(match value {
        MetricValue::Int8(v) => int(i32::from(*v), u32::from(*v as u8)),
        MetricValue::Int16(v) => int(i32::from(*v), u32::from(*v as u16)),
        MetricValue::Int32(v) => Scalar::Int(*v as u32),
        MetricValue::Int64(v) => Scalar::Long(*v as u64),
        MetricValue::UInt8(v) => Scalar::Int(u32::from(*v)),
        MetricValue::UInt16(v) => Scalar::Int(u32::from(*v)),
        MetricValue::UInt32(v) => Scalar::Int(*v),
        MetricValue::UInt64(v) | MetricValue::DateTime(v) => Scalar::Long(*v),
        MetricValue::Float(v) => Scalar::Float(*v),
        MetricValue::Double(v) => Scalar::Double(*v),
        MetricValue::Boolean(v) => Scalar::Boolean(*v),
        MetricValue::String(v) | MetricValue::Text(v) | MetricValue::Uuid(v) => {
            Scalar::String(v.clone())
        }
        _ => return None,
    })
}

/// Unpacks an array type from `bytes_value`.
pub(crate) fn array_from_bytes(datatype: DataType, b: &[u8]) -> Result<MetricValue, ValueError> {
    use DataType as T;
    fn chunks<const N: usize, T>(
        datatype: DataType,
        b: &[u8],
        f: impl Fn([u8; N]) -> T,
    ) -> Result<Vec<T>, ValueError> {
        let (whole, rest) = b.as_chunks::<N>();
        if !rest.is_empty() {
            return Err(ValueError::BadArray {
                datatype,
                reason: format!("{} bytes is not a whole number of {N}-byte elements", b.len()),
            });
        }
        Ok(whole.iter().map(|c| f(*c)).collect())
    }
    Ok(match datatype {
        T::Int8Array => MetricValue::Int8Array(b.iter().map(|&x| x as i8).collect()),
        T::UInt8Array => MetricValue::UInt8Array(b.to_vec()),
        T::Int16Array => MetricValue::Int16Array(chunks(datatype, b, i16::from_le_bytes)?),
        T::Int32Array => MetricValue::Int32Array(chunks(datatype, b, i32::from_le_bytes)?),
        T::Int64Array => MetricValue::Int64Array(chunks(datatype, b, i64::from_le_bytes)?),
        T::UInt16Array => MetricValue::UInt16Array(chunks(datatype, b, u16::from_le_bytes)?),
        T::UInt32Array => MetricValue::UInt32Array(chunks(datatype, b, u32::from_le_bytes)?),
        T::UInt64Array => MetricValue::UInt64Array(chunks(datatype, b, u64::from_le_bytes)?),
        T::FloatArray => MetricValue::FloatArray(chunks(datatype, b, f32::from_le_bytes)?),
        T::DoubleArray => MetricValue::DoubleArray(chunks(datatype, b, f64::from_le_bytes)?),
        T::DateTimeArray => MetricValue::DateTimeArray(chunks(datatype, b, u64::from_le_bytes)?),
        T::BooleanArray => {
            let bad = |reason: String| ValueError::BadArray { datatype, reason };
            let Some((count, bits)) = b.split_first_chunk::<4>() else {
                return Err(bad(format!("{} bytes cannot hold the 4-byte count", b.len())));
            };
            let count = u32::from_le_bytes(*count) as usize;
            if bits.len() < count.div_ceil(8) {
                return Err(bad(format!(
                    "{count} booleans need {} bytes, {} given",
                    count.div_ceil(8),
                    bits.len()
                )));
            }
            MetricValue::BooleanArray(
                (0..count).map(|i| bits[i / 8] >> (7 - i % 8) & 1 == 1).collect(),
            )
        }
        T::StringArray => {
            // Each string ends with NUL; a missing last terminator is forgiven.
            let body = b.strip_suffix(&[0]).unwrap_or(b);
            if body.is_empty() && b.len() <= 1 {
                return Ok(MetricValue::StringArray(if b.is_empty() {
                    Vec::new()
                } else {
                    vec![String::new()]
                }));
            }
            let strings = body
                .split(|&x| x == 0)
                .map(|s| String::from_utf8(s.to_vec()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ValueError::BadArray {
                    datatype,
                    reason: format!("a string is not UTF-8: {e}"),
                })?;
            MetricValue::StringArray(strings)
        }
        t => return Err(ValueError::NotAllowed(t)),
    })
}

/// Packs an array value for `bytes_value`, or `None` for other types.
pub(crate) fn array_to_bytes(value: &MetricValue) -> Option<Bytes> {
    fn pack<T: Copy, const N: usize>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Bytes {
        let mut out = BytesMut::with_capacity(v.len() * N);
        for x in v {
            out.put_slice(&f(*x));
        }
        out.freeze()
    }
    Some(match value {
        MetricValue::Int8Array(v) => v.iter().map(|&x| x as u8).collect::<Vec<u8>>().into(),
        MetricValue::UInt8Array(v) => Bytes::copy_from_slice(v),
        MetricValue::Int16Array(v) => pack(v, i16::to_le_bytes),
        MetricValue::Int32Array(v) => pack(v, i32::to_le_bytes),
        MetricValue::Int64Array(v) => pack(v, i64::to_le_bytes),
        MetricValue::UInt16Array(v) => pack(v, u16::to_le_bytes),
        MetricValue::UInt32Array(v) => pack(v, u32::to_le_bytes),
        MetricValue::UInt64Array(v) | MetricValue::DateTimeArray(v) => pack(v, u64::to_le_bytes),
        MetricValue::FloatArray(v) => pack(v, f32::to_le_bytes),
        MetricValue::DoubleArray(v) => pack(v, f64::to_le_bytes),
        MetricValue::BooleanArray(v) => {
            let mut out = BytesMut::with_capacity(4 + v.len().div_ceil(8));
            out.put_u32_le(u32::try_from(v.len()).unwrap_or(u32::MAX));
            for chunk in v.chunks(8) {
                out.put_u8(
                    chunk
                        .iter()
                        .enumerate()
                        .fold(0, |byte, (i, &bit)| byte | (u8::from(bit) << (7 - i))),
                );
            }
            out.freeze()
        }
        MetricValue::StringArray(v) => {
            let mut out = BytesMut::with_capacity(v.iter().map(|s| s.len() + 1).sum());
            for s in v {
                out.put_slice(s.as_bytes());
                out.put_u8(0);
            }
            out.freeze()
        }
        _ => return None,
    })
}
