//! The OPC UA → Sparkplug B gateway (feature `mqtt`): one
//! [`ServerLink`] per configured server, one Sparkplug device per server
//! on one edge node. A server's device is defined when it first answers
//! (its DBIRTH carries each metric's datatype, `engUnit` from
//! EUInformation and `engLow`/`engHigh` from EURange), dies (DDEATH) the
//! moment the server is lost or falls silent, and is born again with
//! fresh values when data flows. A DCMD to a metric on the write
//! allow-list is written to its node; the outcome, the server's status
//! code included, is logged and published as a
//! [`WriteResult`] on
//! `shopfloor/writes/{group}/{edge}`, and a successful write comes
//! back as data.
//!
//! [`plain`] is the same with plain topics instead of Sparkplug.

use std::collections::HashMap;
use std::sync::Arc;

use shopfloor_mqtt::writes::{DEFAULT_CAPACITY, WriteQueues, edge_write};
use shopfloor_mqtt::{DriverConfig, EdgeDriver, EdgeStats, StatsHandle};
use shopfloor_schemas::{Value, WriteResult};
use shopfloor_sparkplug::edge::MetricSpec;
use shopfloor_sparkplug::payload::{PropertySet, PropertyValue};
use shopfloor_sparkplug::{EdgeNode, MetricValue};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::BridgeConfig;
use crate::client::{ClientTuning, MetricInfo, ServerEvent, ServerLink};

/// A metric as the Sparkplug birth describes it.
pub fn metric_spec(info: &MetricInfo) -> MetricSpec {
    let mut props = PropertySet::default();
    if let Some(unit) = &info.unit {
        props.set("engUnit", PropertyValue::Value(MetricValue::String(unit.clone())));
    }
    if let Some((low, high)) = info.range {
        props.set("engLow", PropertyValue::Value(MetricValue::Double(low)));
        props.set("engHigh", PropertyValue::Value(MetricValue::Double(high)));
    }
    MetricSpec {
        properties: (!props.0.is_empty()).then_some(props),
        ..MetricSpec::new(info.name.as_str(), info.datatype)
    }
}

/// The running gateway.
#[derive(Debug)]
pub struct Gateway {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    stats: StatsHandle,
}

impl Gateway {
    /// Starts a link per server of `config` and publishes through `node`
    /// (an edge node with no devices of its own for the servers: they are
    /// defined as they answer; add a spool with
    /// [`EdgeNode::with_spool`] if an outage must not cost readings).
    pub fn spawn(
        config: &BridgeConfig,
        node: EdgeNode,
        driver: DriverConfig,
        tuning: ClientTuning,
    ) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        let links: HashMap<String, Arc<ServerLink>> = config
            .servers
            .iter()
            .map(|s| {
                (s.name.clone(), Arc::new(ServerLink::spawn(s.clone(), tuning.clone(), tx.clone())))
            })
            .collect();
        let edge = EdgeDriver::spawn(node, driver);
        let (stop, stopped) = oneshot::channel();
        let stats = edge.stats_handle();
        let task = tokio::spawn(run(links, rx, edge, stopped));
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

    /// Stops the links, sends NDEATH, disconnects.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn run(
    links: HashMap<String, Arc<ServerLink>>,
    mut events: mpsc::Receiver<ServerEvent>,
    mut edge: EdgeDriver,
    mut stop: oneshot::Receiver<()>,
) {
    // Devices defined and alive now.
    let mut alive: HashMap<String, bool> = HashMap::new();
    let (results_tx, mut results) = mpsc::channel::<WriteResult>(64);
    // Writes wait for the server (data keeps flowing meanwhile), one
    // server's in the order they came.
    let queues = {
        let links = links.clone();
        WriteQueues::new(
            links.keys().cloned().collect::<Vec<_>>(),
            DEFAULT_CAPACITY,
            move |(device, metric, value): (String, String, Value)| {
                let (link, results) = (links.get(&device).cloned(), results_tx.clone());
                async move {
                    let result = match link {
                        Some(link) => write(&link, &device, &metric, value).await,
                        None => WriteResult::refused(
                            &device,
                            &metric,
                            value.to_string(),
                            "no such server",
                        ),
                    };
                    let _ = results.send(result).await;
                }
            },
        )
    };
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(r) = results.recv() => {
                if edge.report_write(&r).await.is_err() {
                    break;
                }
            }
            e = events.recv() => {
                let Some(e) = e else { break };
                let sent = match e {
                    ServerEvent::Online { server, metrics, values } => {
                        tracing::info!(server, metrics = metrics.len(), "server online: birth");
                        let specs = metrics.iter().map(metric_spec).collect();
                        alive.insert(server.clone(), true);
                        edge.define_device(server, specs, values.readings).await
                    }
                    ServerEvent::Data(batch) if alive.get(batch.source.as_str()) == Some(&true) => {
                        edge.publish(batch).await
                    }
                    ServerEvent::Data(_) => Ok(()),
                    ServerEvent::Offline { server, reason } => {
                        tracing::warn!(server, "server offline ({reason}): its metrics are stale");
                        if alive.insert(server.clone(), false) == Some(true) {
                            edge.device_death(server).await
                        } else {
                            Ok(())
                        }
                    }
                    // The link logged it already, once: one line a problem.
                    ServerEvent::Problem { .. } => Ok(()),
                    ServerEvent::NodeProblem { server, metric, problem } => {
                        tracing::warn!(server, metric, "not bridged: {problem}");
                        Ok(())
                    }
                };
                if sent.is_err() {
                    break;
                }
            }
            e = edge.next_event() => {
                let Some(e) = e else { break };
                if let Some(r) = edge_write(&queues, e, "no such server") {
                    tracing::warn!(device = r.device, metric = r.metric, "write refused: {}", r.message);
                    if edge.report_write(&r).await.is_err() {
                        break;
                    }
                }
            }
        }
    }
    queues.shutdown().await;
    shutdown(links).await;
    edge.shutdown().await;
}

/// Writes `value` to `metric` of the server `device`, logs the outcome and
/// returns it as a result to publish.
async fn write(link: &ServerLink, device: &str, metric: &str, value: Value) -> WriteResult {
    match link.write(metric, value.clone()).await {
        Ok(()) => {
            tracing::info!(device, metric, %value, "written (Good)");
            WriteResult::done(device, metric, value.to_string(), "Good")
        }
        Err(e) => {
            tracing::warn!(device, metric, "write refused: {e}");
            WriteResult::failed(device, metric, value.to_string(), e.status(), e.to_string())
        }
    }
}

/// Stops every link at once (each says goodbye to its server within half
/// a second; one after the other, many servers would add up).
async fn shutdown(links: HashMap<String, Arc<ServerLink>>) {
    let stops =
        links.into_values().filter_map(|l| Arc::try_unwrap(l).ok()).map(ServerLink::shutdown);
    futures_util::future::join_all(stops).await;
}

/// Plain MQTT output (see [`shopfloor_mqtt::plain`]): each
/// reading as a one-reading batch on
/// `shopfloor/{site}/{area}/{server}/{metric}` (the server's name is the
/// `{machine}`), encoded with a schemas codec; a server that is lost or
/// falls silent has every last value published again as `Stale`. Writes
/// come in on a reading's topic plus `/set`; each outcome goes out on
/// `shopfloor/writes/{site}/{area}`.
///
/// There is no store and forward here: use the Sparkplug gateway with a
/// spool when a broker outage must not cost readings.
pub mod plain {
    use std::collections::HashMap;
    use std::sync::Arc;

    use shopfloor_mqtt::Broker;
    pub use shopfloor_mqtt::plain::PlainConfig;
    use shopfloor_mqtt::plain::{PlainPublisher, WriteCommand};
    use shopfloor_mqtt::writes::{DEFAULT_CAPACITY, Refusal, WriteQueues};
    use shopfloor_schemas::{Batch, Quality, Reading, Timestamp, WriteResult};
    use tokio::sync::{mpsc, oneshot};
    use tokio::task::JoinHandle;

    use crate::BridgeConfig;
    use crate::client::{ClientTuning, ServerEvent, ServerLink};

    /// Every node's topic renders (server and metric names become one
    /// topic level each, so they may not contain `/`, `+` or `#`).
    pub fn check(
        plain: &PlainConfig,
        config: &BridgeConfig,
    ) -> Result<(), shopfloor_mqtt::plain::PlainTopicError> {
        let names =
            config.servers.iter().flat_map(|s| s.nodes.iter().map(|n| (&*s.name, &*n.metric)));
        plain.check_as(("server", "metric"), names)
    }

    /// The running plain gateway.
    #[derive(Debug)]
    pub struct PlainGateway {
        stop: oneshot::Sender<()>,
        task: JoinHandle<()>,
    }

    impl PlainGateway {
        /// Starts a link per server of `config` and publishes to `broker`
        /// as `client_id`.
        pub fn spawn(
            config: &BridgeConfig,
            plain: PlainConfig,
            broker: &Broker,
            client_id: &str,
            tuning: ClientTuning,
        ) -> Self {
            let (tx, mut events) = mpsc::channel(4096);
            let links: HashMap<String, Arc<ServerLink>> = config
                .servers
                .iter()
                .map(|s| {
                    let link = ServerLink::spawn(s.clone(), tuning.clone(), tx.clone());
                    (s.name.clone(), Arc::new(link))
                })
                .collect();
            let (out, mut commands) = PlainPublisher::spawn(plain, broker, client_id);
            let (stop, mut stopped) = oneshot::channel();
            // Writes wait for the server (data keeps flowing meanwhile),
            // one server's in the order they came.
            let queues = {
                let (links, reporter) = (links.clone(), out.reporter());
                WriteQueues::new(
                    links.keys().cloned().collect::<Vec<_>>(),
                    DEFAULT_CAPACITY,
                    move |c: WriteCommand| {
                        let (link, reporter) = (links.get(&c.machine).cloned(), reporter.clone());
                        async move {
                            let result = match link {
                                Some(link) => {
                                    super::write(&link, &c.machine, &c.sensor, c.value).await
                                }
                                None => WriteResult::refused(
                                    &c.machine,
                                    &c.sensor,
                                    c.value.to_string(),
                                    "no such server",
                                ),
                            };
                            let _ = reporter.report_write(&result).await;
                        }
                    },
                )
            };
            let task = tokio::spawn(async move {
                // Each server's last values, published again as stale when it is lost.
                let mut last: HashMap<String, HashMap<String, Reading>> = HashMap::new();
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        e = events.recv() => {
                            let Some(e) = e else { break };
                            let batch = match e {
                                ServerEvent::Online { server, values, .. } => {
                                    tracing::info!(server, "server online");
                                    let l = last.entry(server).or_default();
                                    l.clear();
                                    remember(l, &values);
                                    values
                                }
                                ServerEvent::Data(batch) => {
                                    remember(last.entry(batch.source.to_string()).or_default(), &batch);
                                    batch
                                }
                                ServerEvent::Offline { server, reason } => {
                                    tracing::warn!(server, "server offline ({reason}): its metrics are stale");
                                    let now = Timestamp::now();
                                    let mut stale = Batch::new(server.as_str());
                                    for r in last.get_mut(&server).into_iter().flat_map(|l| l.values_mut()) {
                                        r.timestamp = now;
                                        r.quality = Quality::Stale;
                                        stale.readings.push(r.clone());
                                    }
                                    stale
                                }
                                // The link logged it already, once.
                                ServerEvent::Problem { .. } => continue,
                                ServerEvent::NodeProblem { server, metric, problem } => {
                                    tracing::warn!(server, metric, "not bridged: {problem}");
                                    continue;
                                }
                            };
                            if out.publish(&batch).await.is_err() {
                                break;
                            }
                        }
                        c = commands.next() => {
                            let Some(c) = c else { break };
                            if let Err(r) = queues.submit(&c.machine.clone(), c) {
                                let message = match r {
                                    Refusal::UnknownDevice(_) => "no such server".to_owned(),
                                    ref r => r.to_string(),
                                };
                                let c = r.into_job();
                                tracing::warn!(server = c.machine, metric = c.sensor, "write refused: {message}");
                                let _ = out.reporter().report_write(&c.failed(WriteResult::REFUSED, message)).await;
                            }
                        }
                    }
                }
                queues.shutdown().await;
                super::shutdown(links).await;
                out.shutdown().await;
            });
            Self { stop, task }
        }

        /// Stops the links and disconnects.
        pub async fn shutdown(self) {
            let _ = self.stop.send(());
            let _ = self.task.await;
        }
    }

    fn remember(last: &mut HashMap<String, Reading>, batch: &Batch) {
        for r in &batch.readings {
            last.insert(r.metric.to_string(), r.clone());
        }
    }
}
