//! What the edge node takes and gives: its configuration, the time, messages, events and errors.

use super::*;

/// The clocks, read once per loop turn by the driver (the one clock type
/// every shopfloor core takes; it lives in `shopfloor_schemas`).
pub use shopfloor_schemas::Now;

/// An MQTT publish the driver must send: plain data, like quinn's `Transmit`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    /// The topic.
    pub topic: String,
    /// QoS 0 or 1.
    pub qos: u8,
    /// The retain flag.
    pub retain: bool,
    /// The encoded payload.
    pub payload: Bytes,
}

/// An inbound MQTT message for the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The topic.
    pub topic: String,
    /// The payload.
    pub payload: Bytes,
    /// The broker delivered it as a retained message (it was stored and
    /// may be old): an edge node refuses retained NCMD and DCMD.
    pub retain: bool,
}

impl Message {
    /// A message delivered live (not retained).
    pub fn new(topic: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self { topic: topic.into(), payload: payload.into(), retain: false }
    }
}

/// When a changed value is worth sending (report by exception).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Deadband {
    /// Every change is sent.
    #[default]
    None,
    /// Send when the value moved more than this from the last sent value.
    Absolute(f64),
    /// Send when the value moved more than this percentage of the last sent
    /// value's magnitude.
    Percent(f64),
}

/// A metric the node or a device reports. All of them appear in the birth.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct MetricSpec {
    /// The name.
    pub name: String,
    /// The Sparkplug type.
    pub datatype: DataType,
    /// Report-by-exception threshold for numeric values.
    pub deadband: Deadband,
    /// Properties sent in the birth (`engUnit`, …).
    pub properties: Option<PropertySet>,
}

impl MetricSpec {
    /// A metric with no deadband and no properties.
    pub fn new(name: impl Into<String>, datatype: DataType) -> Self {
        Self { name: name.into(), datatype, deadband: Deadband::None, properties: None }
    }
}

/// How the node is set up.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EdgeNodeConfig {
    /// The Sparkplug group id.
    pub group_id: String,
    /// The edge node id.
    pub edge_node_id: String,
    /// Wait for this host application's STATE before birthing.
    pub primary_host_id: Option<String>,
    /// `bdSeq` of the first session; persist [`EdgeNode::bd_seq`] across
    /// restarts so that it increments on every CONNECT.
    pub bd_seq: u8,
    /// The node's own metrics.
    pub metrics: Vec<MetricSpec>,
    /// Devices and their metrics.
    pub devices: Vec<(String, Vec<MetricSpec>)>,
    /// Bytes of readings the default in-memory store keeps while offline;
    /// beyond it the oldest are dropped and counted. (A spool given to
    /// [`EdgeNode::with_spool`] has its own bound.)
    pub store_bytes: u64,
    /// About this many readings (4096 by default) are read from the store
    /// per replay step and sent as one DATA message per device.
    pub replay_chunk: usize,
    /// How signed integers are encoded.
    pub signed: SignedEncoding,
    /// Send each metric's datatype in NDATA/DDATA too (births always carry
    /// it). Off by default: the specification says DATA SHOULD NOT
    /// (`tck-id-payloads-metric-datatype-not-req`), and every host decodes
    /// an alias with the birth's type. Turn it on for a host that cannot:
    /// Eclipse Tahu's JavaScript decoder (`sparkplug-payload` 1.0.3) reads
    /// no value from a metric that has an alias and no datatype.
    pub datatypes_in_data: bool,
}

impl EdgeNodeConfig {
    /// A node with no metrics yet, no primary host, a 64 MiB store in memory
    /// (about a million readings).
    pub fn new(group_id: impl Into<String>, edge_node_id: impl Into<String>) -> Self {
        Self {
            group_id: group_id.into(),
            edge_node_id: edge_node_id.into(),
            primary_host_id: None,
            bd_seq: 0,
            metrics: Vec::new(),
            devices: Vec::new(),
            store_bytes: 64 << 20,
            replay_chunk: 4096,
            signed: SignedEncoding::SignExtend,
            datatypes_in_data: false,
        }
    }
}

/// What the node tells the application or driver.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum EdgeEvent {
    /// A host wrote a metric (NCMD for the node, DCMD for a device).
    Write {
        /// The device, or `None` for the node.
        device: Option<String>,
        /// The metric's name.
        metric: String,
        /// The value written.
        value: MetricValue,
    },
    /// A write that was not done: the command came retained (stored by
    /// the broker, so possibly hours old: a setpoint would be written
    /// again at every reconnect). Report it as a refused write result.
    WriteRefused {
        /// The device, or `None` for the node.
        device: Option<String>,
        /// The metric's name.
        metric: String,
        /// The value the command carried.
        value: MetricValue,
        /// Why.
        reason: String,
    },
    /// A rebirth was published because a host asked for it.
    Rebirth,
    /// The primary host is online: the node birthed.
    HostOnline,
    /// The primary host went offline: NDEATH is queued; the driver must
    /// disconnect and try the next server.
    Disconnect,
    /// The connection is gone; readings are stored until the next birth.
    Offline,
    /// Stored readings were dropped: the store was full, or a stored reading
    /// names a metric the node no longer has (after a configuration change
    /// across a restart).
    Dropped {
        /// How many, in total so far.
        total: u64,
    },
    /// The store failed (a disk error, or a damaged record that was
    /// skipped). Replay stops until the next birth.
    StoreFailed {
        /// What happened, with the file.
        message: String,
    },
    /// A birth went out with stored readings waiting: they follow as
    /// historical DATA. Without a primary host (`watched == false`) nothing
    /// told the node that a host application is subscribed, and Sparkplug
    /// DATA is QoS 0: a host that subscribes later never sees them. Store
    /// and forward is only sure with `primary_host_id` set.
    ReplayStarted {
        /// Readings in the store at the birth.
        stored: u64,
        /// Whether a primary host said it is online before the birth.
        watched: bool,
    },
}

/// Why [`EdgeNode::publish`] refused a batch. Nothing of it was taken,
/// except for [`Store`](Self::Store).
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The batch's source names no configured device.
    #[error("no device {0:?} is configured (use \"\" for the node's own metrics)")]
    UnknownDevice(String),
    /// A reading names no configured metric.
    #[error("{device:?} has no metric {metric:?} in its birth")]
    UnknownMetric {
        /// The device (`""` for the node).
        device: String,
        /// The metric.
        metric: String,
    },
    /// A value that does not fit the metric's Sparkplug type.
    #[error("metric {metric:?} is {datatype} and cannot hold {value}")]
    Type {
        /// The metric.
        metric: String,
        /// Its type.
        datatype: DataType,
        /// The value given.
        value: String,
    },
    /// The device is dead (after [`EdgeNode::device_death`]).
    #[error("device {0:?} is dead; call device_birth first")]
    DeviceDead(String),
    /// Offline, and the store could not take the readings: they are lost.
    #[error("readings not stored: {0}")]
    Store(#[source] Arc<SpoolError>),
}

/// A node configuration the specification or the wire cannot carry. Each
/// variant names the key and what to change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An id that cannot stand in a Sparkplug topic.
    #[error("{key}: {source}")]
    Id {
        /// Which setting (`group_id`, `edge_node_id`, `devices[2]`, `primary_host_id`).
        key: String,
        /// Why.
        #[source]
        source: crate::topic::TopicError,
    },
    /// Two devices with one id (tck-id-topic-structure-namespace-unique-device-id).
    #[error(
        "devices[{index}]: device id {id:?} is used twice; device ids must be unique within an edge node"
    )]
    DuplicateDevice {
        /// Position of the second one.
        index: usize,
        /// The id.
        id: String,
    },
    /// Two metrics with one name in the node or one device.
    #[error("{key}: metric {name:?} is declared twice; a name is one metric")]
    DuplicateMetric {
        /// `metrics` or `devices[i].metrics`.
        key: String,
        /// The name.
        name: String,
    },
    /// A node metric named like the session metrics the node adds itself.
    #[error(
        "metrics: {name:?} is reserved: the edge node publishes bdSeq and Node Control/* itself"
    )]
    ReservedMetric {
        /// The name.
        name: String,
    },
    /// A metric name that is empty.
    #[error("{key}: a metric name is empty")]
    EmptyMetricName {
        /// `metrics` or `devices[i].metrics`.
        key: String,
    },
}

/// Why an inbound message was refused. The node's state is unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InboundError {
    /// The topic is not a Sparkplug topic.
    #[error(transparent)]
    Topic(#[from] crate::topic::TopicError),
    /// The payload does not decode.
    #[error("{topic}: {source}")]
    Payload {
        /// The topic.
        topic: String,
        /// Why.
        #[source]
        source: crate::DecodeError,
    },
    /// A STATE payload that is not the 3.0 JSON.
    #[error("{topic}: not a STATE payload: {source}")]
    State {
        /// The topic.
        topic: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}
