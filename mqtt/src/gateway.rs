//! The loops both gateways (Modbus and OPC UA) run: a [`Source`] (a
//! poller, links to servers) hands its events over, and they go out
//! through an [`EdgeDriver`] ([`EdgeGateway`]: births, data, deaths) or on
//! plain topics ([`PlainGateway`]). A write (NCMD/DCMD, or a plain `/set`
//! command) goes into its device's [`WriteQueues`] queue, and each write's
//! outcome is published as a write result.

use std::future::Future;

use shopfloor_schemas::{Batch, Value, WriteResult};
use shopfloor_sparkplug::EdgeNode;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::plain::{Commands, PlainConfig, PlainPublisher, WriteCommand};
use crate::writes::{DEFAULT_CAPACITY, Refusal, WriteQueues, edge_write};
use crate::{Broker, DriverConfig, EdgeDriver, EdgeStats, StatsHandle, Stopped};

/// Where a gateway's readings come from.
pub trait Source: Send + 'static {
    /// What it hands over.
    type Event: Send;

    /// The next event; `None` once the source has ended (the gateway stops).
    fn next(&mut self) -> impl Future<Output = Option<Self::Event>> + Send;

    /// Stops it (the write queues have stopped already).
    fn shutdown(self) -> impl Future<Output = ()> + Send;
}

/// A [`Source`] for an [`EdgeGateway`].
pub trait EdgeSource: Source {
    /// Passes `event` on to the edge node: data, a device's birth or death.
    fn handle(
        &mut self,
        edge: &EdgeDriver,
        event: Self::Event,
    ) -> impl Future<Output = Result<(), Stopped>> + Send;
}

/// A [`Source`] for a [`PlainGateway`].
pub trait PlainSource: Source {
    /// What to publish for `event`, if anything.
    fn batch(&mut self, event: Self::Event) -> Option<Batch>;
}

/// A running Sparkplug gateway: a [`Source`] feeding an [`EdgeDriver`].
#[derive(Debug)]
pub struct EdgeGateway {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    stats: StatsHandle,
}

impl EdgeGateway {
    /// Starts an edge driver for `node` and passes the events of `source`
    /// on to it. A write to one of `devices` waits in that device's queue
    /// (writes to one device in the order they came; readings go on
    /// meanwhile) and is run by `write`, which returns the result to
    /// publish; a write to another device is refused with `unknown` (how
    /// the gateway calls it: "no such server").
    pub fn spawn<S, W, F>(
        source: S,
        node: EdgeNode,
        driver: DriverConfig,
        devices: Vec<String>,
        unknown: &'static str,
        write: W,
    ) -> Self
    where
        S: EdgeSource,
        W: Fn(String, String, Value) -> F + Clone + Send + 'static,
        F: Future<Output = WriteResult> + Send + 'static,
    {
        let edge = EdgeDriver::spawn(node, driver);
        let (stop, stopped) = oneshot::channel();
        let stats = edge.stats_handle();
        let task = tokio::spawn(run(source, edge, devices, unknown, write, stopped));
        Self { stop, task, stats }
    }

    /// The edge driver's counters, as they are now.
    pub fn stats(&self) -> EdgeStats {
        self.stats.get()
    }

    /// Each device and whether it is online now (for labelled metrics).
    pub fn devices(&self) -> Vec<(String, bool)> {
        self.stats.devices()
    }

    /// Stops the source, sends NDEATH, disconnects.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn run<S, W, F>(
    mut source: S,
    mut edge: EdgeDriver,
    devices: Vec<String>,
    unknown: &'static str,
    write: W,
    mut stop: oneshot::Receiver<()>,
) where
    S: EdgeSource,
    W: Fn(String, String, Value) -> F + Clone + Send + 'static,
    F: Future<Output = WriteResult> + Send + 'static,
{
    let (results_tx, mut results) = mpsc::channel::<WriteResult>(64);
    let queues = WriteQueues::new(
        devices,
        DEFAULT_CAPACITY,
        move |(device, metric, value): (String, String, Value)| {
            let (write, results) = (write.clone(), results_tx.clone());
            async move {
                let _ = results.send(write(device, metric, value).await).await;
            }
        },
    );
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(r) = results.recv() => {
                if edge.report_write(&r).await.is_err() {
                    break;
                }
            }
            e = source.next() => {
                let Some(e) = e else { break };
                if source.handle(&edge, e).await.is_err() {
                    break;
                }
            }
            e = edge.next_event() => {
                let Some(e) = e else { break };
                if let Some(r) = edge_write(&queues, e, unknown) {
                    tracing::warn!(device = r.device, metric = r.metric, "write refused: {}", r.message);
                    if edge.report_write(&r).await.is_err() {
                        break;
                    }
                }
            }
        }
    }
    queues.shutdown().await;
    source.shutdown().await;
    edge.shutdown().await;
}

/// A running plain-topic gateway: a [`Source`] publishing through a
/// [`PlainPublisher`].
#[derive(Debug)]
pub struct PlainGateway {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl PlainGateway {
    /// Connects to `broker` as `client_id` and publishes what `source`
    /// hands over on the topics of `config`. Writes are run by `write` as
    /// in [`EdgeGateway::spawn`], their results published on
    /// `shopfloor/writes/{site}/{area}`.
    pub fn spawn<S, W, F>(
        source: S,
        config: PlainConfig,
        broker: &Broker,
        client_id: &str,
        devices: Vec<String>,
        unknown: &'static str,
        write: W,
    ) -> Self
    where
        S: PlainSource,
        W: Fn(String, String, Value) -> F + Clone + Send + 'static,
        F: Future<Output = WriteResult> + Send + 'static,
    {
        let (out, commands) = PlainPublisher::spawn(config, broker, client_id);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run_plain(source, out, commands, devices, unknown, write, stopped));
        Self { stop, task }
    }

    /// Stops the source and disconnects.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn run_plain<S, W, F>(
    mut source: S,
    out: PlainPublisher,
    mut commands: Commands,
    devices: Vec<String>,
    unknown: &'static str,
    write: W,
    mut stop: oneshot::Receiver<()>,
) where
    S: PlainSource,
    W: Fn(String, String, Value) -> F + Clone + Send + 'static,
    F: Future<Output = WriteResult> + Send + 'static,
{
    let reporter = out.reporter();
    let queues = WriteQueues::new(devices, DEFAULT_CAPACITY, move |c: WriteCommand| {
        let (write, reporter) = (write.clone(), reporter.clone());
        async move {
            let _ = reporter.report_write(&write(c.machine, c.sensor, c.value).await).await;
        }
    });
    loop {
        tokio::select! {
            _ = &mut stop => break,
            e = source.next() => {
                let Some(e) = e else { break };
                let Some(batch) = source.batch(e) else { continue };
                if out.publish(&batch).await.is_err() {
                    break;
                }
            }
            c = commands.next() => {
                let Some(c) = c else { break };
                if let Err(r) = queues.submit(&c.machine.clone(), c) {
                    let message = match r {
                        Refusal::UnknownDevice(_) => unknown.to_owned(),
                        ref r => r.to_string(),
                    };
                    let c = r.into_job();
                    tracing::warn!(device = c.machine, metric = c.sensor, "write refused: {message}");
                    let _ = out.report_write(&c.failed(WriteResult::REFUSED, message)).await;
                }
            }
        }
    }
    queues.shutdown().await;
    source.shutdown().await;
    out.shutdown().await;
}
