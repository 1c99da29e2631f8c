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
use std::future::Future;
use std::sync::Arc;

use shopfloor_mqtt::gateway::{EdgeGateway, EdgeSource, Source, WriteFn, Writes};
use shopfloor_mqtt::{DriverConfig, EdgeDriver, Stopped};
use shopfloor_schemas::{Value, WriteResult};
use shopfloor_sparkplug::edge::MetricSpec;
use shopfloor_sparkplug::payload::{PropertySet, PropertyValue};
use shopfloor_sparkplug::{EdgeNode, MetricValue};
use tokio::sync::mpsc;

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
    let mut spec = MetricSpec::new(info.name.as_str(), info.datatype);
    spec.properties = (!props.0.is_empty()).then_some(props);
    spec
}

shopfloor_mqtt::edge_gateway! {
    /// The running gateway.
    pub struct Gateway;
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
        let source = Servers::spawn(config, &tuning);
        let writes = source.writes();
        Self(EdgeGateway::spawn(source, node, driver, writes))
    }
}

/// The servers' events, and what the gateway keeps of them (`S`).
struct Servers<S> {
    events: mpsc::Receiver<ServerEvent>,
    links: HashMap<String, Arc<ServerLink>>,
    state: S,
}

impl<S: Default> Servers<S> {
    /// Starts a link per server of `config`.
    fn spawn(config: &BridgeConfig, tuning: &ClientTuning) -> Self {
        let (tx, events) = mpsc::channel(4096);
        let links = config
            .servers
            .iter()
            .map(|s| {
                (s.name.clone(), Arc::new(ServerLink::spawn(s.clone(), tuning.clone(), tx.clone())))
            })
            .collect();
        Self { events, links, state: S::default() }
    }
}

impl<S> Servers<S> {
    /// The writes to the servers, each on its link (data keeps flowing
    /// meanwhile).
    fn writes(&self) -> Writes<impl WriteFn + use<S>> {
        let links = self.links.clone();
        let devices = links.keys().cloned().collect();
        Writes::new(devices, "no such server", move |d, m, v| write_to(&links, d, m, v))
    }
}

impl<S: Send + 'static> Source for Servers<S> {
    type Event = ServerEvent;

    async fn next(&mut self) -> Option<ServerEvent> {
        self.events.recv().await
    }

    async fn shutdown(self) {
        shutdown(self.links).await;
    }
}

/// For the Sparkplug gateway: which servers are defined and alive now.
impl EdgeSource for Servers<HashMap<String, bool>> {
    async fn handle(&mut self, edge: &EdgeDriver, e: ServerEvent) -> Result<(), Stopped> {
        match e {
            ServerEvent::Online { server, metrics, values } => {
                tracing::info!(server, metrics = metrics.len(), "server online: birth");
                let specs = metrics.iter().map(metric_spec).collect();
                self.state.insert(server.clone(), true);
                edge.define_device(server, specs, values.readings).await
            }
            ServerEvent::Data(batch) if self.state.get(batch.source.as_str()) == Some(&true) => {
                edge.publish(batch).await
            }
            ServerEvent::Data(_) => Ok(()),
            ServerEvent::Offline { server, reason } => {
                tracing::warn!(server, "server offline ({reason}): its metrics are stale");
                if self.state.insert(server.clone(), false) == Some(true) {
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
        }
    }
}

/// Writes `value` to `metric` of the server `device` of `links` (see
/// [`write`]); refused when there is no such server.
fn write_to(
    links: &HashMap<String, Arc<ServerLink>>,
    device: String,
    metric: String,
    value: Value,
) -> impl Future<Output = WriteResult> + Send + use<> {
    let link = links.get(&device).cloned();
    async move {
        match link {
            Some(link) => write(&link, &device, &metric, value).await,
            None => WriteResult::refused(&device, &metric, value.to_string(), "no such server"),
        }
    }
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

    use shopfloor_mqtt::Broker;
    use shopfloor_mqtt::gateway::{self, PlainSource};
    pub use shopfloor_mqtt::plain::PlainConfig;
    use shopfloor_schemas::{Batch, Quality, Reading, Timestamp};

    use super::Servers;
    use crate::BridgeConfig;
    use crate::client::{ClientTuning, ServerEvent};

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

    shopfloor_mqtt::plain_gateway! {
        /// The running plain gateway.
        pub struct PlainGateway;
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
            let source = Servers::spawn(config, &tuning);
            let writes = source.writes();
            Self(gateway::PlainGateway::spawn(source, plain, broker, client_id, writes))
        }
    }

    /// For plain topics: each server's last values, published again as
    /// stale when it is lost.
    impl PlainSource for Servers<HashMap<String, HashMap<String, Reading>>> {
        fn batch(&mut self, e: ServerEvent) -> Option<Batch> {
            let last = &mut self.state;
            Some(match e {
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
                ServerEvent::Problem { .. } => return None,
                ServerEvent::NodeProblem { server, metric, problem } => {
                    tracing::warn!(server, metric, "not bridged: {problem}");
                    return None;
                }
            })
        }
    }

    fn remember(last: &mut HashMap<String, Reading>, batch: &Batch) {
        for r in &batch.readings {
            last.insert(r.metric.to_string(), r.clone());
        }
    }
}
