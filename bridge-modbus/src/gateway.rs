//! The Modbus → Sparkplug gateway (feature `mqtt`): a [`Poller`] feeding a
//! Sparkplug [`EdgeDriver`], one Sparkplug device per Modbus device.
//!
//! - The births carry every tag with its Sparkplug datatype and, as
//!   properties, its engineering unit (`engUnit`) and range (`engLow`,
//!   `engHigh`).
//! - DDATA carries what the poller publishes: report by exception with each
//!   tag's deadband, `Bad` quality after an exception answer.
//! - A device's DBIRTH waits for its first complete read (every tag read,
//!   or refused by the device), so that it carries each tag's current
//!   value, never nulls; so does the DBIRTH of a device that answers
//!   again. A device that stops answering gets a DDEATH (its metrics go
//!   stale at every host).
//! - A DCMD writes the tag (type, byte order, inverse scaling), reads it
//!   back and publishes the value read; a refused write is logged with the
//!   reason and the tag keeps its value.
//! - Writes to one device are applied in the order they arrived, through a
//!   bounded queue per device ([`shopfloor_mqtt::writes`]): a write that
//!   finds the queue full is refused with a write result.

use shopfloor_mqtt::gateway::{EdgeGateway, EdgeSource, Source, WriteFn, Writes};
use shopfloor_mqtt::{DriverConfig, EdgeDriver, Stopped};
use std::collections::{HashMap, HashSet};

use shopfloor_schemas::{Quality, Reading, Value, WriteResult};
use shopfloor_sparkplug::edge::{EdgeNode, EdgeNodeConfig, MetricSpec};
use shopfloor_sparkplug::payload::{PropertySet, PropertyValue};
use shopfloor_sparkplug::{ConfigError as SparkplugConfigError, DataType, MetricValue};

use crate::config::{RegisterMap, Tag, TagType};
use crate::poller::{Poller, Writer};
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
    let mut spec = MetricSpec::new(tag.name.as_str(), datatype(tag));
    spec.properties = (!props.0.is_empty()).then_some(props);
    spec
}

/// Each Modbus device as a Sparkplug device: its name and metrics.
pub fn device_specs(map: &RegisterMap) -> Vec<(String, Vec<MetricSpec>)> {
    map.devices.iter().map(|d| (d.name.clone(), d.tags.iter().map(metric_spec).collect())).collect()
}

/// The edge node's configuration. Its devices are not in it: the
/// [`Gateway`] defines each one ([`device_specs`]) when its first
/// complete read is in, so that the DBIRTH carries values.
pub fn edge_node_config(
    _map: &RegisterMap,
    group_id: impl Into<String>,
    edge_node_id: impl Into<String>,
) -> EdgeNodeConfig {
    EdgeNodeConfig::new(group_id, edge_node_id)
}

shopfloor_mqtt::edge_gateway! {
    /// The running gateway.
    pub struct Gateway;
}

impl Gateway {
    /// Starts polling `map` and publishing through an edge node built from
    /// `node` (see [`edge_node_config`]; add a spool with
    /// [`EdgeNode::with_spool`] to `node` before if you want one).
    pub fn spawn(map: &RegisterMap, node: EdgeNode, driver: DriverConfig) -> Self {
        let poller = Poller::spawn(map, 1024);
        let writes = writes(map, &poller);
        let specs = device_specs(map);
        let life = specs.iter().map(|(d, _)| (d.clone(), Life::unborn())).collect();
        let source = Devices { poller, life, specs: specs.into_iter().collect() };
        Self(EdgeGateway::spawn(source, node, driver, writes))
    }

    /// Checks the edge node configuration the gateway would build.
    pub fn check(
        map: &RegisterMap,
        group_id: &str,
        edge_node_id: &str,
    ) -> Result<(), SparkplugConfigError> {
        let mut c = edge_node_config(map, group_id, edge_node_id);
        c.devices = device_specs(map);
        EdgeNode::new(c).map(|_| ())
    }
}

/// Where a device is in its Sparkplug life.
enum Life {
    /// Not born (yet, or again): what its first complete read has so far.
    Unborn {
        values: HashMap<String, Reading>,
        answered: HashSet<String>,
    },
    Alive,
    Dead,
}

impl Life {
    fn unborn() -> Self {
        Self::Unborn { values: HashMap::new(), answered: HashSet::new() }
    }
}

/// The poller's outputs, and each device's life.
struct Devices {
    poller: Poller,
    life: HashMap<String, Life>,
    specs: HashMap<String, Vec<MetricSpec>>,
}

impl Source for Devices {
    type Event = (String, Output);

    async fn next(&mut self) -> Option<(String, Output)> {
        self.poller.next().await
    }

    async fn shutdown(self) {
        self.poller.shutdown().await;
    }
}

impl EdgeSource for Devices {
    async fn handle(
        &mut self,
        edge: &EdgeDriver,
        (device, output): (String, Output),
    ) -> Result<(), Stopped> {
        let Some(state) = self.life.get_mut(&device) else { return Ok(()) };
        match (state, output) {
            (Life::Alive, Output::Readings(batch)) => edge.publish(batch).await,
            (Life::Unborn { values, answered }, Output::Readings(batch)) => {
                // Stale readings are the last values of a device
                // that stopped answering: no birth from them.
                for r in batch.readings.into_iter().filter(|r| r.quality != Quality::Stale) {
                    answered.insert(r.metric.to_string());
                    values.insert(r.metric.to_string(), r);
                }
                born(&mut self.life, &device, &self.specs, edge).await
            }
            (Life::Unborn { answered, .. }, Output::TagError { tag, .. }) => {
                answered.insert(tag);
                born(&mut self.life, &device, &self.specs, edge).await
            }
            (state @ Life::Alive, Output::Unreachable { .. }) => {
                *state = Life::Dead;
                edge.device_death(device).await
            }
            (state @ Life::Dead, Output::Reachable) => {
                // Born again once its values are in.
                *state = Life::unborn();
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Births `device` (DBIRTH with its values) once every tag of its first
/// complete read has answered, a value or a refusal.
async fn born(
    life: &mut HashMap<String, Life>,
    device: &str,
    specs: &HashMap<String, Vec<MetricSpec>>,
    edge: &EdgeDriver,
) -> Result<(), Stopped> {
    let (Some(Life::Unborn { values, answered }), Some(specs)) =
        (life.get_mut(device), specs.get(device))
    else {
        return Ok(());
    };
    if !specs.iter().all(|s| answered.contains(s.name.as_str())) {
        return Ok(());
    }
    let values = std::mem::take(values).into_values().collect();
    life.insert(device.to_owned(), Life::Alive);
    edge.define_device(device, specs.clone(), values).await
}

/// The writes to the devices of `map`, on `poller`'s lines (polling goes
/// on meanwhile).
fn writes(map: &RegisterMap, poller: &Poller) -> Writes<impl WriteFn + use<>> {
    let writer = poller.writer();
    let devices = map.devices.iter().map(|d| d.name.clone()).collect();
    Writes::new(devices, "no such device in this gateway", move |device, metric, value| {
        write(writer.clone(), device, metric, value)
    })
}

/// Writes `value` to `metric` of `device`, logs the outcome and returns it
/// as a write result.
async fn write(writer: Writer, device: String, metric: String, value: Value) -> WriteResult {
    let (device, metric) = (device.as_str(), metric.as_str());
    let result = match writer.write(device, metric, value.clone()).await {
        Ok(read_back) => {
            tracing::info!(device, metric, %read_back, "written");
            WriteResult::done(device, metric, value.to_string(), "Good")
        }
        Err(e) => WriteResult::failed(device, metric, value.to_string(), e.status(), e.to_string()),
    };
    if !result.ok {
        tracing::warn!(device, metric, "write refused: {}", result.message);
    }
    result
}

/// Plain MQTT output (see [`shopfloor_mqtt::plain`]): each
/// reading as a one-reading [`Batch`](shopfloor_schemas::Batch) on its own
/// topic, encoded with a schemas codec and labelled with the MQTT 5 content
/// type; writes come in on the reading's topic plus `/set`, and each one's
/// outcome goes out on `shopfloor/writes/{site}/{area}`.
///
/// Readings go out at QoS 1. There is no store and forward here: while the
/// broker is away, publishes queue in the MQTT client up to its capacity,
/// then polling waits (use the Sparkplug gateway with a spool when an outage
/// must not cost readings).
pub mod plain {
    use shopfloor_mqtt::Broker;
    use shopfloor_mqtt::gateway::{self, PlainSource, Source};
    pub use shopfloor_mqtt::plain::PlainConfig;
    use shopfloor_schemas::Batch;

    use crate::config::RegisterMap;
    use crate::poller::Poller;
    use crate::session::Output;

    /// Every tag's topic renders (tag names become one topic level each,
    /// so they may not contain `/`, `+` or `#`).
    pub fn check(
        config: &PlainConfig,
        map: &RegisterMap,
    ) -> Result<(), shopfloor_mqtt::plain::PlainTopicError> {
        let names = map.devices.iter().flat_map(|d| d.tags.iter().map(|t| (&*d.name, &*t.name)));
        config.check_as(("device", "tag"), names)
    }

    shopfloor_mqtt::plain_gateway! {
        /// The running plain gateway.
        pub struct PlainGateway;
    }

    impl PlainGateway {
        /// Starts polling `map` and publishing to `broker` as `client_id`.
        pub fn spawn(
            map: &RegisterMap,
            config: PlainConfig,
            broker: &Broker,
            client_id: &str,
        ) -> Self {
            let poller = Poller::spawn(map, 1024);
            let writes = super::writes(map, &poller);
            Self(gateway::PlainGateway::spawn(poller, config, broker, client_id, writes))
        }
    }

    impl Source for Poller {
        type Event = (String, Output);

        async fn next(&mut self) -> Option<(String, Output)> {
            Self::next(self).await
        }

        async fn shutdown(self) {
            Self::shutdown(self).await;
        }
    }

    /// Only readings go out on plain topics.
    impl PlainSource for Poller {
        fn batch(&mut self, (_, output): (String, Output)) -> Option<Batch> {
            match output {
                Output::Readings(batch) => Some(batch),
                _ => None,
            }
        }
    }
}
