#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod consumer;
pub mod copy;
mod error;
pub mod migrate;
pub mod writer;

pub use consumer::{Ingest, IngestConfig, Input, Stats};
pub use error::IngestError;
pub use migrate::{MIGRATIONS, migrate};
pub use writer::{Rejected, Writer, Written};
