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
