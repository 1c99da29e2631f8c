#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod consumer;
pub mod copy;
mod error;
pub mod maintain;
pub mod migrate;
pub mod pipeline;
pub mod writer;

pub use consumer::{Ingest, IngestConfig, Input, Stats};
pub use error::IngestError;
pub use maintain::{Maintenance, Retention};
pub use migrate::{MIGRATIONS, Storage, migrate, migrate_with, storage};
pub use pipeline::{Database, Pipeline, Ticket};
pub use writer::{DeadLetter, MetricInfo, Rejected, Writer, Written};
