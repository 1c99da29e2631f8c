#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod codec;
mod error;
mod model;
mod now;
mod protobuf;
pub mod topic;
mod wire;
mod write;

pub use codec::Codec;
/// The string type of [`Reading::metric`] (re-exported from `compact_str`).
pub use compact_str::CompactString;
pub use error::{
    DecodeError, EncodeError, FieldPath, InvalidField, Problem, TopicError, UnknownCodec,
};
pub use model::{Batch, Quality, Reading, Timestamp, Value, ValueType};
pub use now::Now;
pub use topic::{Captures, TopicTemplate};
pub use write::WriteResult;

/// The Protobuf schema of the [`Codec::Protobuf`] payload
/// (`shopfloor.v1.Batch`), for peers that generate code from it.
pub const PROTO_FILE: &str = include_str!("../proto/shopfloor.proto");
