//! The write path behind a trait: where the ingest's batches go, and what
//! "committed" means there.
//!
//! Every store keeps the same contract towards the consumer, which
//! acknowledges MQTT only after a [`Ticket`](crate::Ticket) reports the
//! write, in arrival order:
//! - [`SinkWriter::submit`] returns only once the store has durably
//!   accepted the whole [`Submission`]: PostgreSQL committed the
//!   transaction; InfluxDB answered 204 (its WAL is written and synced
//!   before it answers); ClickHouse answered 200 to the INSERT.
//! - Writes are idempotent on (source, metric, time): a redelivery after a
//!   crash or reconnect adds nothing a query can see (how each store gets
//!   there is in its module and in the crate README's table of sinks).
//! - Data the store refuses is isolated to its readings, which come back
//!   in [`Written::rejected`] and are written as dead letters with the
//!   store's message; their neighbours are stored.
//! - Any other failure is an `Err`: the pipeline retries the same
//!   submission with a capped backoff, on a new connection when
//!   [`SinkWriter::is_closed`] says so; memory stays bounded because the
//!   consumer reads nothing more while a batch is not written.

use std::future::Future;

use crate::error::IngestError;
use crate::writer::{Submission, Written};

/// A store the ingest can write to: PostgreSQL/TimescaleDB
/// ([`Database`](crate::Database)), InfluxDB ([`InfluxSink`](crate::influx::InfluxSink)),
/// ClickHouse ([`ClickHouseSink`](crate::clickhouse::ClickHouseSink)). Cloned into each
/// writing task.
pub trait Sink: Clone + Send + Sync + 'static {
    /// One connection's writer.
    type Writer: SinkWriter;

    /// What the store is, for logs (`PostgreSQL`, `InfluxDB`).
    fn kind(&self) -> &'static str;

    /// Connects once and makes the schema ready (migrations, the database,
    /// tables). An error is logged by the caller and retried.
    fn connect(&self) -> impl Future<Output = Result<Self::Writer, IngestError>> + Send;

    /// The Sparkplug births kept by [`Submission::births`] in earlier runs,
    /// edge nodes' before devices', oldest first (the order to replay them
    /// in). Connects on its own.
    fn births(&self) -> impl Future<Output = Result<Vec<(String, Vec<u8>)>, IngestError>> + Send;
}

/// Writes submissions over one connection, one at a time.
pub trait SinkWriter: Send + 'static {
    /// Writes a whole [`Submission`] durably (see the module's contract).
    fn submit(
        &mut self,
        work: &Submission,
    ) -> impl Future<Output = Result<Written, IngestError>> + Send;

    /// Whether the connection is gone: the pipeline connects again before
    /// the next try.
    fn is_closed(&self) -> bool;
}

/// Retry delays for a store: from 100 ms, doubling, at most 2 s, so a
/// store back up is used within a few seconds.
pub fn backoff(failures: u32) -> std::time::Duration {
    std::time::Duration::from_millis(100)
        .saturating_mul(1 << failures.min(5))
        .min(std::time::Duration::from_secs(2))
}

/// Connects with [`Sink::connect`], retrying with [`backoff`] until it works.
pub async fn connect<S: Sink>(sink: &S) -> S::Writer {
    let mut failures = 0_u32;
    loop {
        match sink.connect().await {
            Ok(w) => return w,
            Err(e) => tracing::warn!("{e}"),
        }
        failures += 1;
        tokio::time::sleep(backoff(failures)).await;
    }
}

/// The kept births ([`Sink::births`]), waiting while the store is
/// unreachable; another failure is logged and gives none.
pub async fn births<S: Sink>(sink: &S) -> Vec<(String, Vec<u8>)> {
    let mut failures = 0_u32;
    loop {
        match sink.births().await {
            Ok(b) => return b,
            Err(e) if e.is_unreachable() => tracing::warn!("{e}"),
            Err(e) => {
                tracing::warn!(
                    "{e}: DATA queued while ingest was away needs a rebirth to be named"
                );
                return Vec::new();
            }
        }
        failures += 1;
        tokio::time::sleep(backoff(failures)).await;
    }
}

/// Which store an ingest writes to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Store {
    /// PostgreSQL or TimescaleDB at `IngestConfig::database`.
    #[default]
    Postgres,
    /// InfluxDB over HTTP ([`InfluxSink`](crate::influx::InfluxSink)).
    InfluxDb(crate::influx::InfluxConfig),
    /// ClickHouse over HTTP ([`ClickHouseSink`](crate::clickhouse::ClickHouseSink)).
    ClickHouse(crate::clickhouse::ClickHouseConfig),
}
