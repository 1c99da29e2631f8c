#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod mapping;
mod node;
mod path;
#[cfg(feature = "protobuf")]
mod protobuf;
mod spec;
mod time;

pub use error::{MappingError, SpecError};
pub use mapping::{Mapped, Mapping, MetricUnit};
pub use spec::{Format, MappingSpec, QualityCodes, compile_all};
