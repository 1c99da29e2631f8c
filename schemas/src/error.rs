//! Errors of the codecs and of topic handling.

use std::fmt;

use crate::model::ValueType;

/// Where in a batch a problem is: the batch's source, or a field of the
/// reading at an index. Displays as `source`, `readings[3].metric`,
/// `readings[3].value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FieldPath {
    /// `Batch::source`.
    Source,
    /// The metric name of the reading at this index.
    Metric(usize),
    /// The value of the reading at this index.
    Value(usize),
    /// The quality of the reading at this index.
    Quality(usize),
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Source => f.write_str("source"),
            Self::Metric(i) => write!(f, "readings[{i}].metric"),
            Self::Value(i) => write!(f, "readings[{i}].value"),
            Self::Quality(i) => write!(f, "readings[{i}].quality"),
        }
    }
}

/// What is wrong with a field whose bytes parsed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// A string holds a NUL byte, which PostgreSQL `text` cannot store.
    #[error("contains a NUL byte at offset {offset} (PostgreSQL text cannot hold it)")]
    Nul {
        /// Byte offset of the NUL within the string.
        offset: usize,
    },
    /// A required string is empty.
    #[error("is empty")]
    Empty,
    /// A float is NaN or infinite and the format (JSON) cannot carry it.
    #[error(
        "is {value}, which JSON cannot carry (use CBOR or Protobuf, or send a bad-quality reading)"
    )]
    NonFinite {
        /// The value, as Rust prints it.
        value: f64,
    },
    /// A reading has no value.
    #[error("is missing")]
    Missing,
    /// A value's type does not match the type declared beside it.
    #[error("declared {declared} but the value is {found}")]
    TypeMismatch {
        /// The type declared in the payload.
        declared: ValueType,
        /// What the payload holds instead.
        found: &'static str,
    },
    /// An integer does not fit the declared type.
    #[error("{value} does not fit {declared}")]
    OutOfRange {
        /// The type declared in the payload.
        declared: ValueType,
        /// The value, as text.
        value: String,
    },
    /// A type name nobody knows.
    #[error("unknown value type {0:?} (expected bool, i64, u64, f64, string or bytes)")]
    UnknownType(String),
    /// A Protobuf quality number outside the enum.
    #[error("unknown quality {0} (expected 0 good, 1 uncertain, 2 bad or 3 stale)")]
    UnknownQuality(i32),
    /// A JSON bytes value that is not standard base64.
    #[error("is not valid base64: {0}")]
    Base64(String),
}

/// A field of a batch that parsed but breaks a rule: where, and what.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidField {
    /// Where the problem is.
    pub field: FieldPath,
    /// What the problem is.
    pub problem: Problem,
}

impl InvalidField {
    /// Bundles a place and a problem.
    pub const fn new(field: FieldPath, problem: Problem) -> Self {
        Self { field, problem }
    }
}

/// A payload that could not be decoded into a [`Batch`](crate::Batch).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes are not JSON of the documented shape (truncated input, a
    /// wrong type, invalid UTF-8, a missing field…).
    #[error("JSON payload malformed at line {line}, column {column}: {detail}")]
    Json {
        /// 1-based line of the error (0 when serde_json could not say).
        line: usize,
        /// 1-based column of the error (0 when serde_json could not say).
        column: usize,
        /// What serde_json found.
        detail: String,
    },
    /// The bytes are not a `shopfloor.v1.Batch` Protobuf message (truncated
    /// input, a length past the end, a wrong wire type, invalid UTF-8…).
    #[error("Protobuf payload malformed at byte {offset}, in {field}: {detail}")]
    Protobuf {
        /// Byte offset of the field (its key, or its length prefix) where
        /// decoding stopped.
        offset: usize,
        /// The field path, e.g. `Batch.readings[3].metric`.
        field: String,
        /// What is wrong.
        detail: String,
    },
    /// The bytes are not CBOR of the documented shape.
    #[error("CBOR payload malformed{}: {detail}", offset.map(|o| format!(" at byte {o}")).unwrap_or_default())]
    Cbor {
        /// Byte offset of the error, where ciborium knows it.
        offset: Option<usize>,
        /// What ciborium found.
        detail: String,
    },
    /// The payload parsed but a field breaks a rule.
    #[error(transparent)]
    Invalid(#[from] InvalidField),
}

/// A batch that cannot be encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A field breaks a rule (NUL byte, empty metric name, non-finite float
    /// in JSON).
    #[error(transparent)]
    Invalid(#[from] InvalidField),
    /// The serializer failed. Encoding into memory does not fail for valid
    /// batches, so this is a bug: please file it.
    #[error("internal encoder error, please file a bug: {0}")]
    Internal(String),
}

/// A codec name or MQTT content type that names no codec.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown codec {given:?}: expected json, protobuf or cbor, or a content type \
     application/json, application/x-protobuf or application/cbor"
)]
pub struct UnknownCodec {
    /// What was given.
    pub given: String,
}

/// An MQTT topic, topic filter or topic template that breaks a rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The topic is empty; MQTT requires at least one character.
    #[error("topic is empty")]
    Empty,
    /// Longer than MQTT's 65 535-byte limit.
    #[error("topic is {len} bytes long; MQTT allows at most 65535")]
    TooLong {
        /// Length in bytes.
        len: usize,
    },
    /// A NUL character, which MQTT forbids in topics.
    #[error("topic {topic:?} contains NUL at byte {offset}; MQTT forbids it")]
    Nul {
        /// The topic.
        topic: String,
        /// Byte offset of the NUL.
        offset: usize,
    },
    /// A `+` or `#` in a topic name one publishes to.
    #[error("topic {topic:?} has wildcard {wildcard:?} at byte {offset}; a publish topic cannot")]
    WildcardInName {
        /// The topic.
        topic: String,
        /// `'+'` or `'#'`.
        wildcard: char,
        /// Byte offset of the wildcard.
        offset: usize,
    },
    /// A filter wildcard that is not a whole level, or a `#` that is not last.
    #[error(
        "topic filter {filter:?}: level {level} ({text:?}) misuses a wildcard: \
         '+' must be a whole level and '#' a whole last level"
    )]
    BadWildcard {
        /// The filter.
        filter: String,
        /// 0-based level index.
        level: usize,
        /// The offending level.
        text: String,
    },
    /// A template level that mixes text and a placeholder or has unbalanced
    /// braces.
    #[error(
        "topic template {template:?}: level {level} ({text:?}) must be plain text or one \
         whole placeholder such as {{machine}}"
    )]
    BadPlaceholder {
        /// The template.
        template: String,
        /// 0-based level index.
        level: usize,
        /// The offending level.
        text: String,
    },
    /// A template level that is empty (`a//b`, a leading or trailing `/`).
    #[error(
        "topic template {template:?}: level {level} is empty (a doubled, leading or trailing '/')"
    )]
    EmptyLevel {
        /// The template.
        template: String,
        /// 0-based level index.
        level: usize,
    },
    /// The same placeholder twice in one template.
    #[error("topic template {template:?}: placeholder {{{name}}} appears twice")]
    DuplicatePlaceholder {
        /// The template.
        template: String,
        /// The placeholder's name.
        name: String,
    },
    /// Rendering found no value for a placeholder.
    #[error("topic template {template:?}: no value given for {{{name}}}")]
    MissingValue {
        /// The template.
        template: String,
        /// The placeholder's name.
        name: String,
    },
    /// A value that cannot stand in a topic level.
    #[error(
        "topic template {template:?}: value {value:?} for {{{name}}} cannot be a topic level: {reason}"
    )]
    BadValue {
        /// The template.
        template: String,
        /// The placeholder's name.
        name: String,
        /// The value given.
        value: String,
        /// Why it cannot.
        reason: &'static str,
    },
}
