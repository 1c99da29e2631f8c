#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod checker;
#[cfg(feature = "compression")]
pub mod compression;
pub mod convert;
mod datatype;
mod direct;
pub mod edge;
mod error;
pub mod host;
pub mod payload;
pub mod proto;
pub mod spool;
pub mod topic;
mod value;

pub use datatype::DataType;
pub use edge::{ConfigError, EdgeEvent, EdgeNode, EdgeNodeConfig, Now};
pub use error::DecodeError;
pub use host::{HostApplication, HostConfig, HostEvent};
pub use payload::{BirthTypes, EncodeOptions, Metric, Payload};
pub use topic::{MessageType, StatePayload, Topic, TopicError};
pub use value::{MetricValue, SignedEncoding, ValueError};
