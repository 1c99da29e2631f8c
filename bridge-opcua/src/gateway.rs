//! The OPC UA → Sparkplug B gateway (feature `mqtt`): one
//! [`ServerLink`] per configured server, one Sparkplug device per server
//! on one edge node. A server's device is defined when it first answers
//! (its DBIRTH carries each metric's datatype, `engUnit` from
//! EUInformation and `engLow`/`engHigh` from EURange), dies (DDEATH) the
//! moment the server is lost or falls silent, and is born again with
//! fresh values when data flows. A DCMD to a metric on the write
//! allow-list is written to its node; the outcome, the server's status
//! code included, is logged, and a successful write comes back as data.

use std::collections::HashMap;
use std::sync::Arc;

use shopfloor_sparkplug::edge::MetricSpec;
use shopfloor_sparkplug::mqtt::{DriverConfig, EdgeDriver, EdgeStats};
use shopfloor_sparkplug::payload::{PropertySet, PropertyValue};
use shopfloor_sparkplug::{EdgeEvent, EdgeNode, MetricValue};
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
    stats: Arc<std::sync::Mutex<EdgeStats>>,
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
        let stats = Arc::default();
        let task = tokio::spawn(run(links, rx, edge, stopped, Arc::clone(&stats)));
        Self { stop, task, stats }
    }

    /// The edge driver's counters as of the gateway's last turn.
    pub fn stats(&self) -> EdgeStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
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
    stats: Arc<std::sync::Mutex<EdgeStats>>,
) {
    // Devices defined and alive now.
    let mut alive: HashMap<String, bool> = HashMap::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
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
                    ServerEvent::Problem { server, problem } => {
                        tracing::warn!(server, "{problem}");
                        Ok(())
                    }
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
                if let EdgeEvent::Write { device: Some(device), metric, value } = e {
                    let Some(link) = links.get(&device).cloned() else { continue };
                    // Writes wait for the server; data must keep flowing.
                    tokio::spawn(async move {
                        let Some(v) = value.to_value() else {
                            tracing::warn!(device, metric, "write of a value with no reading type refused");
                            return;
                        };
                        match link.write(&metric, v).await {
                            Ok(()) => tracing::info!(device, metric, "written (Good)"),
                            Err(e) => tracing::warn!(device, metric, "write refused: {e}"),
                        }
                    });
                }
            }
        }
        if let Ok(mut s) = stats.lock() {
            *s = edge.stats();
        }
    }
    for (_, link) in links {
        if let Ok(link) = Arc::try_unwrap(link) {
            link.shutdown().await;
        }
    }
    edge.shutdown().await;
}
