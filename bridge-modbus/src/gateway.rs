//! The Modbus → Sparkplug gateway (feature `mqtt`): a [`Poller`] feeding a
//! Sparkplug [`EdgeDriver`], one Sparkplug device per Modbus device.
//!
//! - The births carry every tag with its Sparkplug datatype and, as
//!   properties, its engineering unit (`engUnit`) and range (`engLow`,
//!   `engHigh`).
//! - DDATA carries what the poller publishes: report by exception with each
//!   tag's deadband, `Bad` quality after an exception answer.
//! - A device that stops answering gets a DDEATH (its metrics go stale at
//!   every host); the first answer after that, a DBIRTH.
//! - A DCMD writes the tag (type, byte order, inverse scaling), reads it
//!   back and publishes the value read; a refused write is logged with the
//!   reason and the tag keeps its value.

use shopfloor_sparkplug::edge::{EdgeEvent, EdgeNode, EdgeNodeConfig, MetricSpec};
use shopfloor_sparkplug::mqtt::{DriverConfig, EdgeDriver, EdgeStats};
use shopfloor_sparkplug::payload::{PropertySet, PropertyValue};
use shopfloor_sparkplug::{ConfigError as SparkplugConfigError, DataType, MetricValue};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::{RegisterMap, Tag, TagType};
use crate::poller::Poller;
use crate::session::Output;

/// The Sparkplug type a tag's readings have.
pub fn datatype(tag: &Tag) -> DataType {
    if tag.is_scaled() {
        return DataType::Double;
    }
    match tag.kind {
        TagType::Bool | TagType::Bit(_) => DataType::Boolean,
        TagType::I8 { .. } => DataType::Int8,
        TagType::U8 { .. } => DataType::UInt8,
        TagType::I16 => DataType::Int16,
        TagType::U16 => DataType::UInt16,
        TagType::I32 => DataType::Int32,
        TagType::U32 => DataType::UInt32,
        TagType::I64 => DataType::Int64,
        TagType::U64 => DataType::UInt64,
        TagType::F32 => DataType::Float,
        TagType::F64 => DataType::Double,
        TagType::String(_) => DataType::String,
    }
}

/// A tag as a Sparkplug metric: its datatype and its unit and range as
/// properties. (Deadbands are applied by the poller, before the node.)
pub fn metric_spec(tag: &Tag) -> MetricSpec {
    let mut props = PropertySet::default();
    if let Some(unit) = &tag.unit {
        props.set("engUnit", PropertyValue::Value(MetricValue::String(unit.clone())));
    }
    if let Some(low) = tag.min {
        props.set("engLow", PropertyValue::Value(MetricValue::Double(low)));
    }
    if let Some(high) = tag.max {
        props.set("engHigh", PropertyValue::Value(MetricValue::Double(high)));
    }
    MetricSpec {
        properties: (!props.0.is_empty()).then_some(props),
        ..MetricSpec::new(tag.name.as_str(), datatype(tag))
    }
}

/// An edge node configuration with one Sparkplug device per Modbus device.
pub fn edge_node_config(
    map: &RegisterMap,
    group_id: impl Into<String>,
    edge_node_id: impl Into<String>,
) -> EdgeNodeConfig {
    let mut c = EdgeNodeConfig::new(group_id, edge_node_id);
    c.devices = map
        .devices
        .iter()
        .map(|d| (d.name.clone(), d.tags.iter().map(metric_spec).collect()))
        .collect();
    c
}

/// The running gateway.
#[derive(Debug)]
pub struct Gateway {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    stats: std::sync::Arc<std::sync::Mutex<EdgeStats>>,
}

impl Gateway {
    /// Starts polling `map` and publishing through an edge node built from
    /// `node` (see [`edge_node_config`]; add a spool with
    /// [`EdgeNode::with_spool`] to `node` before if you want one).
    pub fn spawn(map: &RegisterMap, node: EdgeNode, driver: DriverConfig) -> Self {
        let poller = Poller::spawn(map, 1024);
        let edge = EdgeDriver::spawn(node, driver);
        let (stop, stopped) = oneshot::channel();
        let stats = std::sync::Arc::default();
        let task = tokio::spawn(run(poller, edge, stopped, std::sync::Arc::clone(&stats)));
        Self { stop, task, stats }
    }

    /// Checks the edge node configuration the gateway would build.
    pub fn check(
        map: &RegisterMap,
        group_id: &str,
        edge_node_id: &str,
    ) -> Result<(), SparkplugConfigError> {
        EdgeNode::new(edge_node_config(map, group_id, edge_node_id)).map(|_| ())
    }

    /// The edge driver's counters as of the gateway's last turn.
    pub fn stats(&self) -> EdgeStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }

    /// Stops polling, sends NDEATH, disconnects.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn run(
    mut poller: Poller,
    mut edge: EdgeDriver,
    mut stop: oneshot::Receiver<()>,
    stats: std::sync::Arc<std::sync::Mutex<EdgeStats>>,
) {
    let writer = poller.writer();
    let mut dead = std::collections::HashSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            o = poller.next() => {
                let Some((device, output)) = o else { break };
                let sent = match output {
                    Output::Readings(batch) if !dead.contains(&device) => edge.publish(batch).await,
                    Output::Unreachable { .. } => {
                        dead.insert(device.clone());
                        edge.device_death(device).await
                    }
                    Output::Reachable if dead.remove(&device) => edge.device_birth(device).await,
                    _ => Ok(()),
                };
                if sent.is_err() {
                    break;
                }
            }
            e = edge.next_event() => {
                let Some(e) = e else { break };
                if let EdgeEvent::Write { device: Some(device), metric, value } = e {
                    let writer = writer.clone();
                    // Writes wait for the line; the poller's outputs must
                    // keep flowing meanwhile.
                    tokio::spawn(async move {
                        let Some(v) = value.to_value() else {
                            tracing::warn!(device, metric, "write of a value with no reading type refused");
                            return;
                        };
                        match writer.write(&device, &metric, v).await {
                            Ok(read_back) => tracing::info!(device, metric, ?read_back, "written"),
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
    poller.shutdown().await;
    edge.shutdown().await;
}

/// Plain MQTT output: each reading as a one-reading [`Batch`] on its own
/// topic, encoded with a schemas [`Codec`] and labelled with the MQTT 5
/// content type; writes come in on the reading's topic plus `/set`.
///
/// Readings go out at QoS 1. There is no store and forward here: while the
/// broker is away, publishes queue in the MQTT client up to its capacity,
/// then polling waits (use the Sparkplug gateway with a spool when an outage
/// must not cost readings).
pub mod plain {
    use std::sync::Arc;

    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    use rumqttc::{TlsConfiguration, Transport};
    use shopfloor_schemas::{Batch, Codec, TopicTemplate};
    use shopfloor_sparkplug::mqtt::Broker;
    use tokio::sync::{mpsc, oneshot};
    use tokio::task::JoinHandle;

    use crate::config::RegisterMap;
    use crate::poller::{Poller, Writer};
    use crate::session::Output;

    /// Where plain readings go.
    #[derive(Clone, Debug)]
    pub struct PlainConfig {
        /// The `{site}` of the topic template.
        pub site: String,
        /// The `{area}`.
        pub area: String,
        /// The payload codec.
        pub codec: Codec,
        /// The topic template (`{machine}` is the device, `{sensor}` the tag).
        pub template: TopicTemplate,
    }

    impl PlainConfig {
        /// The default template, `shopfloor/{site}/{area}/{machine}/{sensor}`, JSON.
        pub fn new(site: impl Into<String>, area: impl Into<String>) -> Self {
            Self {
                site: site.into(),
                area: area.into(),
                codec: Codec::Json,
                template: TopicTemplate::parse(shopfloor_schemas::topic::defaults::READINGS)
                    .expect("the default template parses"),
            }
        }

        fn topic(&self, machine: &str, sensor: &str) -> Result<String, String> {
            self.template
                .render(&[
                    ("site", &self.site),
                    ("area", &self.area),
                    ("machine", machine),
                    ("sensor", sensor),
                ])
                .map_err(|e| e.to_string())
        }

        /// Every tag's topic renders (tag names become one topic level each,
        /// so they may not contain `/`, `+` or `#`).
        pub fn check(&self, map: &RegisterMap) -> Result<(), String> {
            for d in &map.devices {
                for t in &d.tags {
                    self.topic(&d.name, &t.name).map_err(|e| {
                        format!(
                            "device {:?}, tag {:?}: {e}; with plain topics a tag name is one topic level (rename it, or use the Sparkplug gateway)",
                            d.name, t.name
                        )
                    })?;
                }
            }
            Ok(())
        }
    }

    /// The running plain gateway.
    #[derive(Debug)]
    pub struct PlainGateway {
        stop: oneshot::Sender<()>,
        task: JoinHandle<()>,
    }

    impl PlainGateway {
        /// Starts polling `map` and publishing to `broker` as `client_id`.
        pub fn spawn(
            map: &RegisterMap,
            config: PlainConfig,
            broker: &Broker,
            client_id: &str,
        ) -> Self {
            let mut o = MqttOptions::new(client_id, &broker.host, broker.port);
            o.set_keep_alive(std::time::Duration::from_secs(10));
            if let Some((user, password)) = &broker.credentials {
                o.set_credentials(user, password);
            }
            if let Some(tls) = &broker.tls {
                o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(Arc::clone(
                    tls,
                ))));
            }
            let (client, mut eventloop) = AsyncClient::new(o, 1024);
            // Commands from the event loop; it must never wait on us.
            let (commands, mut incoming) =
                mpsc::channel::<(String, Option<String>, bytes::Bytes)>(64);
            let filter = format!("{}/set", config.template.filter());
            let sub = client.clone();
            let events = tokio::spawn(async move {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            let (c, f) = (sub.clone(), filter.clone());
                            tokio::spawn(async move { c.subscribe(f, QoS::AtLeastOnce).await });
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            let topic = String::from_utf8_lossy(&p.topic).into_owned();
                            let ct = p.properties.and_then(|pr| pr.content_type);
                            if commands.try_send((topic, ct, p.payload)).is_err() {
                                tracing::warn!("write command dropped: too many waiting");
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!("MQTT: {e}");
                            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        }
                    }
                }
            });
            let poller = Poller::spawn(map, 1024);
            let (stop, mut stopped) = oneshot::channel();
            let task = tokio::spawn(async move {
                let writer = poller.writer();
                let mut poller = poller;
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        o = poller.next() => {
                            let Some((device, Output::Readings(batch))) = o else {
                                if o.is_none() { break }
                                continue;
                            };
                            publish(&client, &config, &device, &batch).await;
                        }
                        c = incoming.recv() => {
                            let Some((topic, ct, payload)) = c else { break };
                            command(&writer, &config, &topic, ct.as_deref(), &payload);
                        }
                    }
                }
                poller.shutdown().await;
                let _ = client.disconnect().await;
                events.abort();
            });
            Self { stop, task }
        }

        /// Stops polling and disconnects.
        pub async fn shutdown(self) {
            let _ = self.stop.send(());
            let _ = self.task.await;
        }
    }

    async fn publish(client: &AsyncClient, config: &PlainConfig, device: &str, batch: &Batch) {
        for r in &batch.readings {
            let topic = match config.topic(device, &r.metric) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(device, tag = %r.metric, "not published: {e}");
                    continue;
                }
            };
            let one = Batch::new(device).with(r.clone());
            let payload = match config.codec.encode_batch(&one) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(device, tag = %r.metric, "not encodable: {e}");
                    continue;
                }
            };
            let props = PublishProperties {
                content_type: Some(config.codec.content_type().into()),
                ..PublishProperties::default()
            };
            if client
                .publish_with_properties(topic, QoS::AtLeastOnce, false, payload, props)
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// A write command: `<reading topic>/set` with a one-reading batch.
    fn command(
        writer: &Writer,
        config: &PlainConfig,
        topic: &str,
        ct: Option<&str>,
        payload: &[u8],
    ) {
        let Some(base) = topic.strip_suffix("/set") else { return };
        let Some(caps) = config.template.matches(base) else { return };
        let (Some(machine), Some(sensor)) = (caps.get("machine"), caps.get("sensor")) else {
            return;
        };
        if caps.get("site").is_some_and(|s| s != config.site)
            || caps.get("area").is_some_and(|a| a != config.area)
        {
            return;
        }
        let codec = match ct.map(Codec::from_content_type).unwrap_or(Ok(Codec::Json)) {
            Ok(c) => c,
            Err(e) => return tracing::warn!(topic, "write refused: {e}"),
        };
        let value = match codec.decode_batch(payload) {
            Ok(b) => match b.readings.into_iter().next() {
                Some(r) => r.value,
                None => return tracing::warn!(topic, "write refused: the batch has no reading"),
            },
            Err(e) => return tracing::warn!(topic, "write refused: {e}"),
        };
        let (writer, machine, sensor, topic) =
            (writer.clone(), machine.to_owned(), sensor.to_owned(), topic.to_owned());
        tokio::spawn(async move {
            match writer.write(&machine, &sensor, value).await {
                Ok(v) => tracing::info!(topic, ?v, "written"),
                Err(e) => tracing::warn!(topic, "write refused: {e}"),
            }
        });
    }
}
