#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod check;
pub mod clickhouse;
pub mod consumer;
pub mod copy;
mod error;
pub mod gate;
pub mod http;
pub mod influx;
pub mod maintain;
pub mod migrate;
pub mod pipeline;
pub mod sink;
pub mod writer;

pub use check::TimeWindow;
pub use clickhouse::{ClickHouseConfig, ClickHouseSink};
pub use consumer::{Ingest, IngestConfig, Input, Stats};
pub use error::{IngestError, pg_message};
pub use influx::{InfluxApi, InfluxConfig, InfluxSink};
pub use maintain::{Maintenance, Retention};
pub use migrate::{
    MIGRATIONS, Storage, TimescaleDb, migrate, migrate_with, storage, timescaledb_status,
};
pub use pipeline::{Database, Pipeline, Ticket};
pub use sink::{Sink, SinkWriter, Store};
pub use writer::{DeadLetter, MetricInfo, Rejected, Submission, Writer, Written};
