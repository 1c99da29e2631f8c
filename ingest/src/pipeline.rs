//! Writes on two connections in turn, so one batch streams its write
//! while the one before waits for its commit: for PostgreSQL a commit's
//! flush is the largest cost of a batch that is not COPY itself.
//!
//! Batches go to the connections round-robin and each comes back as a
//! [`Ticket`]; the caller awaits tickets in the order it submitted them,
//! so what it does after a commit (acknowledge MQTT messages) keeps the
//! order of arrival. A failed write is retried on its connection with a
//! capped backoff (reconnecting when the connection has gone) until it
//! commits: a ticket only ever reports a commit. Any [`Sink`] works; the
//! PostgreSQL one is [`Database`].
//!
//! Two batches in flight can hold the same (metric, time) only after a
//! redelivery; in PostgreSQL one then waits for the other and takes the
//! `ON CONFLICT` path, or PostgreSQL breaks a deadlock by failing one,
//! which is retried.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use shopfloor_schemas::Batch;
use tokio::sync::{mpsc, oneshot};

use crate::error::IngestError;
use crate::migrate::migrate_with;
use crate::sink::{Sink, SinkWriter};
use crate::writer::{DeadLetter, MetricInfo, Submission, Writer, Written};
use shopfloor_mqtt::AbortOnDrop;

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Database {
    /// The connection string (`host=… user=… dbname=…` or a URL). Its
    /// `sslmode` decides TLS: `disable`, `prefer` (the default: TLS when
    /// the server offers it) or `require`.
    pub url: String,
    /// The password, when not in `url` (set through the driver, so no
    /// quoting of the string is involved).
    pub password: Option<String>,
    /// TLS settings: `None` encrypts without checking the server's
    /// certificate, as libpq's `sslmode=require` does; settings from
    /// `shopfloor_mqtt::tls_client_config` with the server's CA check its
    /// certificate and host name (libpq's `verify-full`).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Whether a new schema may use TimescaleDB (see [`migrate_with`]).
    pub timescaledb: bool,
    /// Metrics the catalogue may hold at most (see
    /// [`Writer::set_max_catalogue`]).
    pub max_catalogue: u64,
}

impl Database {
    /// `url`, TimescaleDB where available, a catalogue of at most
    /// [`MAX_CATALOGUE`](crate::writer::MAX_CATALOGUE) metrics.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            password: None,
            tls: None,
            timescaledb: true,
            max_catalogue: crate::writer::MAX_CATALOGUE,
        }
    }

    /// A writer on `client`, with this database's limits.
    pub(crate) fn writer(&self, client: tokio_postgres::Client) -> Writer {
        let mut w = Writer::new(client);
        w.set_max_catalogue(self.max_catalogue);
        w
    }
}

/// Retry delays for the database: from 100 ms, doubling, at most 2 s, so a
/// database back up is used within a few seconds.
pub fn db_backoff(failures: u32) -> Duration {
    crate::sink::backoff(failures)
}

/// Connects and migrates, retrying with [`db_backoff`] until it works.
pub async fn connect(db: &Database) -> tokio_postgres::Client {
    let mut failures = 0_u32;
    loop {
        match try_connect(db).await {
            Ok(c) => return c,
            Err(e) => tracing::warn!("{e}"),
        }
        failures += 1;
        tokio::time::sleep(db_backoff(failures)).await;
    }
}

/// PostgreSQL or TimescaleDB: one transaction per submission, committed
/// before the ticket reports it.
impl Sink for Database {
    type Writer = Writer;

    fn kind(&self) -> &'static str {
        "PostgreSQL"
    }

    async fn connect(&self) -> Result<Writer, IngestError> {
        Ok(self.writer(try_connect(self).await?))
    }

    async fn births(&self) -> Result<Vec<(String, Vec<u8>)>, IngestError> {
        Writer::births(&try_connect(self).await?).await
    }
}

impl SinkWriter for Writer {
    async fn submit(&mut self, work: &Submission) -> Result<Written, IngestError> {
        Self::submit(self, work).await
    }

    fn is_closed(&self) -> bool {
        self.client().is_closed()
    }
}

/// Opens a connection: `url` with `password` set apart, over TLS as its
/// `sslmode` asks (see [`Database::tls`]). The connection is driven by a
/// task of its own, which logs how it ended when that was an error.
pub async fn open(
    url: &str,
    password: Option<&str>,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = url.parse()?;
    if let Some(p) = password {
        config.password(p);
    }
    let tls = tls.map_or_else(shopfloor_mqtt::tls_unverified_config, Arc::clone);
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new((*tls).clone());
    let (client, conn) = config.connect(tls).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::warn!("PostgreSQL connection: {}", crate::error::pg_message(&e));
        }
    });
    Ok(client)
}

/// Connects and migrates, once.
pub async fn try_connect(db: &Database) -> Result<tokio_postgres::Client, IngestError> {
    let mut client = open(&db.url, db.password.as_deref(), db.tls.as_ref())
        .await
        .map_err(IngestError::db("connect"))?;
    let applied = migrate_with(&mut client, db.timescaledb).await?;
    if !applied.is_empty() {
        tracing::info!(?applied, "migrations applied");
    }
    Ok(client)
}

struct Job {
    work: Submission,
    done: oneshot::Sender<Written>,
}

/// A commit to come: resolves to what the write did, or to an error if
/// the pipeline was dropped first.
#[derive(Debug)]
pub struct Ticket(oneshot::Receiver<Written>);

impl Future for Ticket {
    type Output = Result<Written, Stopped>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map_err(|_| Stopped)
    }
}

/// The pipeline stopped before a batch committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the write pipeline stopped before the batch committed")]
pub struct Stopped;

/// Writers on `connections` connections, fed in turn.
#[derive(Debug)]
pub struct Pipeline {
    workers: Vec<mpsc::Sender<Job>>,
    tasks: Vec<AbortOnDrop>,
    next: usize,
}

impl Pipeline {
    /// Connects `connections` writers (at least one) to `sink`, making its
    /// schema ready first; retries until the store answers.
    pub async fn connect<S: Sink>(sink: &S, connections: usize) -> Self {
        let mut workers = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..connections.max(1) {
            let writer = crate::sink::connect(sink).await;
            // One job waiting per connection besides the one it writes.
            let (tx, rx) = mpsc::channel(1);
            tasks.push(AbortOnDrop(tokio::spawn(work(writer, sink.clone(), rx))));
            workers.push(tx);
        }
        Self { workers, tasks, next: 0 }
    }

    /// The number of connections.
    pub fn connections(&self) -> usize {
        self.workers.len()
    }

    /// Hands a batch to the next connection; waits only when that
    /// connection has a batch writing and another waiting. Await the
    /// tickets in the order they were given to keep commits in order.
    pub async fn submit(&mut self, batches: Vec<Batch>, dead: Vec<DeadLetter>) -> Ticket {
        self.submit_described(batches, dead, Vec::new()).await
    }

    /// [`submit`](Self::submit), with what sources said about their
    /// metrics (recorded in the catalogue before the rows).
    pub async fn submit_described(
        &mut self,
        batches: Vec<Batch>,
        dead: Vec<DeadLetter>,
        metrics: Vec<MetricInfo>,
    ) -> Ticket {
        self.submit_with_births(batches, dead, metrics, Vec::new()).await
    }

    /// [`submit_described`](Self::submit_described), with Sparkplug births
    /// (topic, payload) to keep before the rows are committed (see
    /// [`Writer::remember_births`]).
    pub async fn submit_with_births(
        &mut self,
        batches: Vec<Batch>,
        dead: Vec<DeadLetter>,
        metrics: Vec<MetricInfo>,
        births: Vec<(String, Vec<u8>)>,
    ) -> Ticket {
        self.submit_all(Submission { births, metrics, batches, deaths: Vec::new(), dead }).await
    }

    /// Hands a whole [`Submission`] to the next connection (see
    /// [`Writer::submit`]: data PostgreSQL refuses is isolated and
    /// dead-lettered, anything else retried until it commits).
    pub async fn submit_all(&mut self, work: Submission) -> Ticket {
        let (done, ticket) = oneshot::channel();
        let worker = &self.workers[self.next];
        self.next = (self.next + 1) % self.workers.len();
        // A worker only ends when the pipeline is dropped; if it has, the
        // ticket reports `Stopped`.
        let _ = worker.send(Job { work, done }).await;
        Ticket(ticket)
    }

    /// Stops the writers; batches not committed yet are abandoned.
    pub fn abort(self) {
        drop(self.tasks);
    }
}

async fn work<S: Sink>(mut writer: S::Writer, sink: S, mut jobs: mpsc::Receiver<Job>) {
    while let Some(mut job) = jobs.recv().await {
        let mut failures = 0;
        let written = loop {
            match writer.submit(&job.work).await {
                Ok(w) => break w,
                // The rows were isolated already: what is left is the
                // births or metric descriptions, which would fail forever.
                Err(e) if e.is_data_error() => {
                    tracing::warn!(
                        "{e}; the batch's Sparkplug births and metric descriptions are dropped"
                    );
                    job.work.births.clear();
                    job.work.metrics.clear();
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!("{e}; retrying");
                    tokio::time::sleep(db_backoff(failures)).await;
                    if writer.is_closed() {
                        writer = crate::sink::connect(&sink).await;
                    }
                }
            }
        };
        for r in &written.rejected {
            tracing::warn!(source = r.source, metric = r.metric, "not stored: {}", r.error);
        }
        let _ = job.done.send(written);
    }
}
