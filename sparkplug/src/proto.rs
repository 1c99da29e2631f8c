//! The raw Sparkplug B messages of `sparkplug_b.proto` (proto2), written by
//! hand with prost derives: no `protoc` at build time.
//!
//! Field presence is kept: every proto2 `optional` field is an `Option`, so
//! `seq` absent (NDEATH, NCMD, DCMD) differs from `seq = 0` (NBIRTH). The
//! `extensions` ranges of the schema have no prost equivalent: extension
//! fields are skipped like any unknown field, and the `*Extension` value
//! members decode to an empty [`Extension`].
//!
//! `MetaData`, `DataSet` and `Template` are boxed: they are rare, and inline
//! they made every `Metric` ~500 bytes, which a 10-metric DDATA paid for in
//! moves (the decode benchmark showed it).
//!
//! The four `value` oneofs share their six scalar members, on other tags:
//! `value_oneof!` writes those once.
//!
//! This layer needs no context and checks nothing beyond the wire format;
//! [`crate::payload`] is the typed layer over it.

use bytes::Bytes;

/// A `value` oneof: the six scalar members every one of them has, on the
/// tags given in order (Int, Long, Float, Double, Boolean, String), then
/// the oneof's own members.
macro_rules! value_oneof {
    (
        $(#[$doc:meta])*
        pub enum $name:ident {
            scalars: [$int:tt, $long:tt, $float:tt, $double:tt, $boolean:tt, $string:tt],
            $($rest:tt)*
        }
    ) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum $name {
            /// Int8, Int16, Int32 (two's complement in 32 bits), UInt8–UInt32.
            #[prost(uint32, tag = $int)]
            Int(u32),
            /// Int64 (two's complement), UInt64, DateTime.
            #[prost(uint64, tag = $long)]
            Long(u64),
            /// Float.
            #[prost(float, tag = $float)]
            Float(f32),
            /// Double.
            #[prost(double, tag = $double)]
            Double(f64),
            /// Boolean.
            #[prost(bool, tag = $boolean)]
            Boolean(bool),
            /// String, Text, UUID.
            #[prost(string, tag = $string)]
            String(String),
            $($rest)*
        }
    };
}

/// `Payload`: one Sparkplug B message body.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Payload {
    /// Time of sending, UTC ms. Required by the specification on every
    /// message but STATE.
    #[prost(uint64, optional, tag = "1")]
    pub timestamp: Option<u64>,
    /// The metrics.
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
    /// Sequence number 0–255: present on NBIRTH, NDATA, DBIRTH, DDATA and
    /// DDEATH; absent on NDEATH, NCMD and DCMD.
    #[prost(uint64, optional, tag = "3")]
    pub seq: Option<u64>,
    /// Optional schema identifier; `SPBV1.0_COMPRESSED` marks a compressed
    /// payload (a Tahu convention).
    #[prost(string, optional, tag = "4")]
    pub uuid: Option<String>,
    /// Optional opaque body (the compressed inner payload, for example).
    #[prost(bytes = "bytes", optional, tag = "5")]
    pub body: Option<Bytes>,
}

/// `Payload.Metric`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    /// Name; in births always, in DATA and CMD only when aliases are not used.
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// Alias, tied to the name in the birth.
    #[prost(uint64, optional, tag = "2")]
    pub alias: Option<u64>,
    /// Time of acquisition, UTC ms.
    #[prost(uint64, optional, tag = "3")]
    pub timestamp: Option<u64>,
    /// The `DataType` number; required in births, usually absent in DATA.
    #[prost(uint32, optional, tag = "4")]
    pub datatype: Option<u32>,
    /// Not a real-time value (store and forward, batches).
    #[prost(bool, optional, tag = "5")]
    pub is_historical: Option<bool>,
    /// Not to be historised.
    #[prost(bool, optional, tag = "6")]
    pub is_transient: Option<bool>,
    /// The value is null (then `value` is absent).
    #[prost(bool, optional, tag = "7")]
    pub is_null: Option<bool>,
    /// Metadata (files, multi-part bytes).
    #[prost(message, optional, boxed, tag = "8")]
    pub metadata: Option<Box<MetaData>>,
    /// Properties, e.g. `Quality`, `engUnit`.
    #[prost(message, optional, tag = "9")]
    pub properties: Option<PropertySet>,
    /// The value, on the wire field its datatype selects.
    #[prost(oneof = "MetricValue", tags = "10, 11, 12, 13, 14, 15, 16, 17, 18, 19")]
    pub value: Option<MetricValue>,
}

value_oneof! {
    /// `Metric.value`.
    pub enum MetricValue {
        scalars: ["10", "11", "12", "13", "14", "15"],
        /// Bytes, File and the array types.
        #[prost(bytes = "bytes", tag = "16")]
        Bytes(Bytes),
        /// DataSet (boxed: rare, and large beside the scalars).
        #[prost(message, boxed, tag = "17")]
        DataSet(Box<DataSet>),
        /// Template, definition or instance (boxed likewise).
        #[prost(message, boxed, tag = "18")]
        Template(Box<Template>),
        /// An extension value (skipped content).
        #[prost(message, tag = "19")]
        Extension(Extension),
    }
}

/// The `*ValueExtension` messages: their content is extensions only, which
/// prost skips.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Extension {}

/// `Payload.MetaData`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetaData {
    /// Part of a multi-part bytes value.
    #[prost(bool, optional, tag = "1")]
    pub is_multi_part: Option<bool>,
    /// Content or media type.
    #[prost(string, optional, tag = "2")]
    pub content_type: Option<String>,
    /// Size of the file, string or whole multi-part value.
    #[prost(uint64, optional, tag = "3")]
    pub size: Option<u64>,
    /// Part number of a multi-part value.
    #[prost(uint64, optional, tag = "4")]
    pub seq: Option<u64>,
    /// File name.
    #[prost(string, optional, tag = "5")]
    pub file_name: Option<String>,
    /// File type (xml, json, txt…).
    #[prost(string, optional, tag = "6")]
    pub file_type: Option<String>,
    /// MD5 of the data.
    #[prost(string, optional, tag = "7")]
    pub md5: Option<String>,
    /// Anything else.
    #[prost(string, optional, tag = "8")]
    pub description: Option<String>,
}

/// `Payload.PropertySet`: parallel lists of keys and values.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PropertySet {
    /// Property names.
    #[prost(string, repeated, tag = "1")]
    pub keys: Vec<String>,
    /// Property values, one per key.
    #[prost(message, repeated, tag = "2")]
    pub values: Vec<PropertyValue>,
}

/// `Payload.PropertySetList`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PropertySetList {
    /// The sets.
    #[prost(message, repeated, tag = "1")]
    pub propertyset: Vec<PropertySet>,
}

/// `Payload.PropertyValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PropertyValue {
    /// The `DataType` number (basic types, 20 PropertySet, 21 PropertySetList).
    #[prost(uint32, optional, tag = "1")]
    pub r#type: Option<u32>,
    /// The value is null.
    #[prost(bool, optional, tag = "2")]
    pub is_null: Option<bool>,
    /// The value.
    #[prost(oneof = "PropertyValueValue", tags = "3, 4, 5, 6, 7, 8, 9, 10, 11")]
    pub value: Option<PropertyValueValue>,
}

value_oneof! {
    /// `PropertyValue.value`.
    pub enum PropertyValueValue {
        scalars: ["3", "4", "5", "6", "7", "8"],
        /// A nested property set.
        #[prost(message, tag = "9")]
        PropertySet(PropertySet),
        /// A list of property sets.
        #[prost(message, tag = "10")]
        PropertySets(PropertySetList),
        /// An extension value (skipped content).
        #[prost(message, tag = "11")]
        Extension(Extension),
    }
}

/// `Payload.DataSet`: a table with typed columns.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DataSet {
    /// Number of columns.
    #[prost(uint64, optional, tag = "1")]
    pub num_of_columns: Option<u64>,
    /// Column names.
    #[prost(string, repeated, tag = "2")]
    pub columns: Vec<String>,
    /// Column `DataType` numbers (basic types only).
    #[prost(uint32, repeated, packed = "false", tag = "3")]
    pub types: Vec<u32>,
    /// The rows.
    #[prost(message, repeated, tag = "4")]
    pub rows: Vec<Row>,
}

/// `DataSet.Row`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Row {
    /// One element per column.
    #[prost(message, repeated, tag = "1")]
    pub elements: Vec<DataSetValue>,
}

/// `DataSet.DataSetValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DataSetValue {
    /// The value.
    #[prost(oneof = "DataSetValueValue", tags = "1, 2, 3, 4, 5, 6, 7")]
    pub value: Option<DataSetValueValue>,
}

value_oneof! {
    /// `DataSetValue.value`.
    pub enum DataSetValueValue {
        scalars: ["1", "2", "3", "4", "5", "6"],
        /// An extension value (skipped content).
        #[prost(message, tag = "7")]
        Extension(Extension),
    }
}

/// `Payload.Template`: a definition (NBIRTH only) or an instance.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Template {
    /// Version, to catch mismatches.
    #[prost(string, optional, tag = "1")]
    pub version: Option<String>,
    /// Members.
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
    /// Parameters.
    #[prost(message, repeated, tag = "3")]
    pub parameters: Vec<Parameter>,
    /// For an instance: the definition's name.
    #[prost(string, optional, tag = "4")]
    pub template_ref: Option<String>,
    /// Whether this is a definition. The specification requires it present.
    #[prost(bool, optional, tag = "5")]
    pub is_definition: Option<bool>,
}

/// `Template.Parameter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Parameter {
    /// Name.
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// `DataType` number (basic types).
    #[prost(uint32, optional, tag = "2")]
    pub r#type: Option<u32>,
    /// The value.
    #[prost(oneof = "ParameterValue", tags = "3, 4, 5, 6, 7, 8, 9")]
    pub value: Option<ParameterValue>,
}

value_oneof! {
    /// `Parameter.value`.
    pub enum ParameterValue {
        scalars: ["3", "4", "5", "6", "7", "8"],
        /// An extension value (skipped content).
        #[prost(message, tag = "9")]
        Extension(Extension),
    }
}
