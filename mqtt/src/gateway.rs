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

use crate::plain::{Commands, PlainConfig, PlainPublisher};
use crate::writes::{DEFAULT_CAPACITY, WriteQueues, edge_write};
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

/// How a gateway runs a write: device, metric and value to the result to
/// publish (the write done, or why not). Any such closure is one.
pub trait WriteFn: Fn(String, String, Value) -> Self::Done + Clone + Send + 'static {
    /// The write under way.
    type Done: Future<Output = WriteResult> + Send + 'static;
}

impl<W, F> WriteFn for W
where
    W: Fn(String, String, Value) -> F + Clone + Send + 'static,
    F: Future<Output = WriteResult> + Send + 'static,
{
    type Done = F;
}

/// A gateway's writes: a write to one of its devices waits in that
/// device's queue (writes to one device in the order they came; readings
/// go on meanwhile) and is run by a [`WriteFn`]; a write to another device
/// is refused.
#[derive(Debug)]
pub struct Writes<W> {
    devices: Vec<String>,
    unknown: &'static str,
    write: W,
}

impl<W: WriteFn> Writes<W> {
    /// A queue for each of `devices`, run by `write`; `unknown` says how
    /// the gateway calls a device it does not have ("no such server").
    pub fn new(devices: Vec<String>, unknown: &'static str, write: W) -> Self {
        Self { devices, unknown, write }
    }

    /// Starts the queues; `report` publishes each write's result. Returns
    /// them and what `unknown` was.
    fn start<R, F>(self, report: R) -> (WriteQueues<(String, String, Value)>, &'static str)
    where
        R: Fn(WriteResult) -> F + Clone + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let write = self.write;
        let queues = WriteQueues::new(
            self.devices,
            DEFAULT_CAPACITY,
            move |(device, metric, value): (String, String, Value)| {
                let (write, report) = (write.clone(), report.clone());
                async move {
                    let result = write(device, metric, value).await;
                    report(result).await;
                }
            },
        );
        (queues, self.unknown)
    }
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
    /// on to it; a write from a host (NCMD/DCMD) goes to `writes`, and its
    /// result is published on the edge node's write results topic.
    pub fn spawn<S: EdgeSource, W: WriteFn>(
        source: S,
        node: EdgeNode,
        driver: DriverConfig,
        writes: Writes<W>,
    ) -> Self {
        let edge = EdgeDriver::spawn(node, driver);
        let (stop, stopped) = oneshot::channel();
        let stats = edge.stats_handle();
        let task = tokio::spawn(run(source, edge, writes, stopped));
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

async fn run<S: EdgeSource, W: WriteFn>(
    mut source: S,
    mut edge: EdgeDriver,
    writes: Writes<W>,
    mut stop: oneshot::Receiver<()>,
) {
    let (results_tx, mut results) = mpsc::channel::<WriteResult>(64);
    let (queues, unknown) = writes.start(move |r| {
        let results = results_tx.clone();
        async move {
            let _ = results.send(r).await;
        }
    });
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
    /// hands over on the topics of `config`; a write command goes to
    /// `writes`, and its result is published on
    /// `shopfloor/writes/{site}/{area}`.
    pub fn spawn<S: PlainSource, W: WriteFn>(
        source: S,
        config: PlainConfig,
        broker: &Broker,
        client_id: &str,
        writes: Writes<W>,
    ) -> Self {
        let (out, commands) = PlainPublisher::spawn(config, broker, client_id);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run_plain(source, out, commands, writes, stopped));
        Self { stop, task }
    }

    /// Stops the source and disconnects.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn run_plain<S: PlainSource, W: WriteFn>(
    mut source: S,
    out: PlainPublisher,
    mut commands: Commands,
    writes: Writes<W>,
    mut stop: oneshot::Receiver<()>,
) {
    let reporter = out.reporter();
    let (queues, unknown) = writes.start(move |r| {
        let reporter = reporter.clone();
        async move {
            let _ = reporter.report_write(&r).await;
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
                if let Some(r) = queues.submit_write(c.machine, c.sensor, c.value, unknown) {
                    tracing::warn!(device = r.device, metric = r.metric, "write refused: {}", r.message);
                    let _ = out.report_write(&r).await;
                }
            }
        }
    }
    queues.shutdown().await;
    source.shutdown().await;
    out.shutdown().await;
}

/// Declares a bridge's Sparkplug gateway type: a wrapper of an
/// [`EdgeGateway`](crate::gateway::EdgeGateway) (its field `0`) with its `stats`, `devices` and
/// `shutdown`, so that the bridge adds only its own `spawn`.
///
/// ```
/// shopfloor_mqtt::edge_gateway! {
///     /// The running gateway.
///     pub struct Gateway;
/// }
/// ```
#[macro_export]
macro_rules! edge_gateway {
    ($(#[$meta:meta])* $vis:vis struct $name:ident;) => {
        $(#[$meta])*
        #[derive(Debug)]
        $vis struct $name($crate::gateway::EdgeGateway);

        impl $name {
            /// The edge driver's counters, as they are now.
            pub fn stats(&self) -> $crate::EdgeStats {
                self.0.stats()
            }

            /// Each device and whether it is online now (for labelled
            /// metrics).
            pub fn devices(&self) -> ::std::vec::Vec<(::std::string::String, bool)> {
                self.0.devices()
            }

            /// Stops reading, sends NDEATH, disconnects.
            pub async fn shutdown(self) {
                self.0.shutdown().await;
            }
        }
    };
}

/// Declares a bridge's plain gateway type: a wrapper of a
/// [`PlainGateway`](crate::gateway::PlainGateway) (its field `0`) with its
/// `shutdown`, so that the bridge adds only its own `spawn`.
///
/// ```
/// shopfloor_mqtt::plain_gateway! {
///     /// The running plain gateway.
///     pub struct PlainGateway;
/// }
/// ```
#[macro_export]
macro_rules! plain_gateway {
    ($(#[$meta:meta])* $vis:vis struct $name:ident;) => {
        $(#[$meta])*
        #[derive(Debug)]
        $vis struct $name($crate::gateway::PlainGateway);

        impl $name {
            /// Stops reading and disconnects.
            pub async fn shutdown(self) {
                self.0.shutdown().await;
            }
        }
    };
}
