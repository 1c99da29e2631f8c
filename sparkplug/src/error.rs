//! Errors of the payload codec.

use crate::value::ValueError;

/// A payload that cannot be decoded or typed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes are not a protobuf `Payload`.
    #[error("not a Sparkplug B payload: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// A datatype number the specification does not define.
    #[error("metric {metric}: unknown datatype {datatype}")]
    UnknownDatatype {
        /// Which metric (name, alias or position).
        metric: String,
        /// The number on the wire.
        datatype: u32,
    },
    /// No datatype on the wire and none known from the birth.
    #[error("metric {metric}: no datatype in the payload and none known from a birth")]
    NoDatatype {
        /// Which metric.
        metric: String,
    },
    /// An alias that no birth defined: the host should request a rebirth.
    #[error("metric {metric}: alias {alias} is not in the birth (request a rebirth)")]
    UnknownAlias {
        /// Which metric.
        metric: String,
        /// The alias.
        alias: u64,
    },
    /// A metric with neither name nor alias.
    #[error("{metric}: a metric needs a name or an alias")]
    Anonymous {
        /// Its position.
        metric: String,
    },
    /// A value that does not fit its datatype.
    #[error("metric {metric}: {source}")]
    Value {
        /// Which metric.
        metric: String,
        /// What is wrong.
        #[source]
        source: ValueError,
    },
    /// A compressed payload that cannot be unwrapped (feature `compression`).
    #[error("compressed payload: {reason}")]
    Compression {
        /// What is wrong.
        reason: String,
    },
    /// A malformed property set.
    #[error("metric {metric}: property {key:?}: {reason}")]
    Property {
        /// Which metric.
        metric: String,
        /// The property's key (empty when the set as a whole is wrong).
        key: String,
        /// What is wrong.
        reason: String,
    },
}
