//! The Sparkplug `DataType` numbers (specification §6.4.16).

use std::fmt;

/// A metric, property or column type, as numbered on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
#[non_exhaustive]
pub enum DataType {
    /// Placeholder for future expansion; no value can have it.
    Unknown = 0,
    /// Signed 8-bit integer, in `int_value`.
    Int8 = 1,
    /// Signed 16-bit integer, in `int_value`.
    Int16 = 2,
    /// Signed 32-bit integer, in `int_value`.
    Int32 = 3,
    /// Signed 64-bit integer, in `long_value`.
    Int64 = 4,
    /// Unsigned 8-bit integer, in `int_value`.
    UInt8 = 5,
    /// Unsigned 16-bit integer, in `int_value`.
    UInt16 = 6,
    /// Unsigned 32-bit integer, in `int_value`.
    UInt32 = 7,
    /// Unsigned 64-bit integer, in `long_value`.
    UInt64 = 8,
    /// 32-bit float, in `float_value`.
    Float = 9,
    /// 64-bit float, in `double_value`.
    Double = 10,
    /// Boolean, in `boolean_value`.
    Boolean = 11,
    /// UTF-8 string, in `string_value`.
    String = 12,
    /// UTC ms since the Unix epoch, in `long_value`.
    DateTime = 13,
    /// UTF-8 text, in `string_value`.
    Text = 14,
    /// A UUID as a string, in `string_value`.
    Uuid = 15,
    /// A table, in `dataset_value`.
    DataSet = 16,
    /// Raw bytes, in `bytes_value`.
    Bytes = 17,
    /// A file's bytes, in `bytes_value`, described by the metric's metadata.
    File = 18,
    /// A template definition or instance, in `template_value`.
    Template = 19,
    /// A property set (property values only).
    PropertySet = 20,
    /// A list of property sets (property values only).
    PropertySetList = 21,
    /// Packed little-endian `i8`s, in `bytes_value`.
    Int8Array = 22,
    /// Packed little-endian `i16`s, in `bytes_value`.
    Int16Array = 23,
    /// Packed little-endian `i32`s, in `bytes_value`.
    Int32Array = 24,
    /// Packed little-endian `i64`s, in `bytes_value`.
    Int64Array = 25,
    /// Packed `u8`s, in `bytes_value`.
    UInt8Array = 26,
    /// Packed little-endian `u16`s, in `bytes_value`.
    UInt16Array = 27,
    /// Packed little-endian `u32`s, in `bytes_value`.
    UInt32Array = 28,
    /// Packed little-endian `u64`s, in `bytes_value`.
    UInt64Array = 29,
    /// Packed little-endian IEEE 754 `f32`s, in `bytes_value`.
    FloatArray = 30,
    /// Packed little-endian IEEE 754 `f64`s, in `bytes_value`.
    DoubleArray = 31,
    /// A 4-byte little-endian count, then the booleans packed eight to a
    /// byte, most significant bit first, in `bytes_value`.
    BooleanArray = 32,
    /// NUL-terminated UTF-8 strings, concatenated, in `bytes_value`.
    StringArray = 33,
    /// Packed little-endian `u64` ms timestamps, in `bytes_value`.
    DateTimeArray = 34,
}

impl DataType {
    /// Every data type, in number order.
    pub const ALL: [Self; 35] = [
        Self::Unknown,
        Self::Int8,
        Self::Int16,
        Self::Int32,
        Self::Int64,
        Self::UInt8,
        Self::UInt16,
        Self::UInt32,
        Self::UInt64,
        Self::Float,
        Self::Double,
        Self::Boolean,
        Self::String,
        Self::DateTime,
        Self::Text,
        Self::Uuid,
        Self::DataSet,
        Self::Bytes,
        Self::File,
        Self::Template,
        Self::PropertySet,
        Self::PropertySetList,
        Self::Int8Array,
        Self::Int16Array,
        Self::Int32Array,
        Self::Int64Array,
        Self::UInt8Array,
        Self::UInt16Array,
        Self::UInt32Array,
        Self::UInt64Array,
        Self::FloatArray,
        Self::DoubleArray,
        Self::BooleanArray,
        Self::StringArray,
        Self::DateTimeArray,
    ];

    /// The type with this wire number, if there is one.
    pub fn from_u32(n: u32) -> Option<Self> {
        Self::ALL.get(usize::try_from(n).ok()?).copied()
    }

    /// The wire number.
    pub const fn as_u32(self) -> u32 {
        self as u32
    }

    /// Whether this is one of the basic types (Int8 to UUID) that dataset
    /// columns, template parameters and property values may have.
    pub const fn is_basic(self) -> bool {
        matches!(self as u32, 1..=15)
    }

    /// Whether this is one of the packed array types (Int8Array to
    /// DateTimeArray).
    pub const fn is_array(self) -> bool {
        matches!(self as u32, 22..=34)
    }

    /// The name the specification uses, e.g. `Int8`, `UUID`, `DateTimeArray`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Unknown => "Unknown",
            Self::Int8 => "Int8",
            Self::Int16 => "Int16",
            Self::Int32 => "Int32",
            Self::Int64 => "Int64",
            Self::UInt8 => "UInt8",
            Self::UInt16 => "UInt16",
            Self::UInt32 => "UInt32",
            Self::UInt64 => "UInt64",
            Self::Float => "Float",
            Self::Double => "Double",
            Self::Boolean => "Boolean",
            Self::String => "String",
            Self::DateTime => "DateTime",
            Self::Text => "Text",
            Self::Uuid => "UUID",
            Self::DataSet => "DataSet",
            Self::Bytes => "Bytes",
            Self::File => "File",
            Self::Template => "Template",
            Self::PropertySet => "PropertySet",
            Self::PropertySetList => "PropertySetList",
            Self::Int8Array => "Int8Array",
            Self::Int16Array => "Int16Array",
            Self::Int32Array => "Int32Array",
            Self::Int64Array => "Int64Array",
            Self::UInt8Array => "UInt8Array",
            Self::UInt16Array => "UInt16Array",
            Self::UInt32Array => "UInt32Array",
            Self::UInt64Array => "UInt64Array",
            Self::FloatArray => "FloatArray",
            Self::DoubleArray => "DoubleArray",
            Self::BooleanArray => "BooleanArray",
            Self::StringArray => "StringArray",
            Self::DateTimeArray => "DateTimeArray",
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), *self as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_and_match_positions() {
        for (i, t) in DataType::ALL.iter().enumerate() {
            assert_eq!(t.as_u32() as usize, i);
            assert_eq!(DataType::from_u32(t.as_u32()), Some(*t));
        }
        assert_eq!(DataType::from_u32(35), None);
        assert_eq!(DataType::from_u32(u32::MAX), None);
        assert!(DataType::Uuid.is_basic() && !DataType::DataSet.is_basic());
        assert!(DataType::DateTimeArray.is_array() && !DataType::PropertySetList.is_array());
        assert_eq!(DataType::Uuid.to_string(), "UUID (15)");
    }
}
