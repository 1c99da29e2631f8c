//! The sans-IO Sparkplug B edge node.
//!
//! ```text
//!  application ──publish(Batch)──►┌──────────┐──poll_transmit()──► MQTT publishes (births, data, deaths)
//!  driver ──handle_connected()───►│ EdgeNode │──poll_event()─────► writes (NCMD/DCMD), rebirths, host state
//!  driver ──handle_message(msg)──►└──────────┘◄─will()──────────── the NDEATH to register before CONNECT
//! ```
//!
//! It opens no sockets and reads no clock: the driver passes [`Now`] in.
//! After every `handle_*` or `publish` call, drain [`EdgeNode::poll_transmit`],
//! then [`EdgeNode::poll_event`].
//!
//! The session, per the 3.0 specification (chapter 5):
//! 1. Before each CONNECT the driver sets the Will to [`EdgeNode::will`]
//!    (NDEATH, QoS 1, the session's `bdSeq`), connects with a clean session,
//!    subscribes to [`EdgeNode::subscriptions`] and then calls
//!    [`EdgeNode::handle_connected`].
//! 2. With a primary host configured, the node waits for that host's STATE
//!    `online` before it births; a later valid `offline` makes it publish
//!    NDEATH and ask the driver to disconnect ([`EdgeEvent::Disconnect`]).
//! 3. The birth is an NBIRTH (`seq` 0, `bdSeq`, `Node Control/Rebirth`, every
//!    node metric with name, alias, datatype and current value) and a DBIRTH
//!    per device. Then what was stored while offline goes out as historical
//!    DATA, a chunk at a time through [`EdgeNode::poll_replay`], so that live
//!    data and commands are not held up behind a day of backlog.
//! 4. DATA carries only what changed beyond each metric's deadband (report by
//!    exception), by alias, without datatypes; `seq` counts every message
//!    modulo 256.
//! 5. [`EdgeNode::handle_disconnected`] moves `bdSeq` on for the next CONNECT.
//!
//! ## Store and forward
//! Readings taken while the node cannot send (offline, or waiting for its
//! primary host) go to a [`Spool`]: in memory by default, or a
//! [`FileSpool`](crate::spool::FileSpool) given to [`EdgeNode::with_spool`].
//! The spool is the one place the core touches storage (as rustls does with
//! its session store); a memory spool keeps the node free of I/O. Replayed
//! DATA is QoS 0, so the driver confirms it with a broker round trip and
//! calls [`EdgeNode::commit_replay`]; what was not confirmed when the
//! connection dropped is sent again after the next birth (at least once).

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use std::sync::Arc;

use shopfloor_schemas::{Batch, Codec, Quality, Reading, Value};

use crate::convert::QUALITY_PROPERTY;
use crate::datatype::DataType;
use crate::payload::{BirthTypes, EncodeOptions, Metric, Payload, PropertySet, PropertyValue};
use crate::spool::{MemorySpool, Spool, SpoolError, SpoolMark};
use crate::topic::{MessageType, StatePayload, Topic};
use crate::value::{MetricValue, SignedEncoding};

/// The name of the rebirth request metric (never aliased).
pub const REBIRTH_METRIC: &str = "Node Control/Rebirth";
/// The name of the birth/death sequence metric (never aliased).
pub const BDSEQ_METRIC: &str = "bdSeq";

/// The current time, read once per loop turn by the driver: a monotonic
/// instant for deadlines and wall-clock UTC ms for payloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time.
    pub instant: Instant,
    /// UTC ms since the Unix epoch.
    pub unix_ms: u64,
}

impl Now {
    /// The clocks now. Only drivers call this.
    #[allow(clippy::self_named_constructors, reason = "reads as the driver loop: Now::now()")]
    pub fn now() -> Self {
        Self { instant: Instant::now(), unix_ms: shopfloor_schemas::Timestamp::now().unix_ms() }
    }
}

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Session {
    Offline,
    AwaitingHost,
    Online { seq: u8 },
}

#[derive(Clone, Debug)]
struct MetricState {
    spec: MetricSpec,
    alias: u64,
    current: Option<(MetricValue, Quality, u64)>,
    sent: Option<(MetricValue, Quality)>,
}

#[derive(Clone, Debug)]
struct Group {
    /// `None` for the node itself.
    device: Option<String>,
    alive: bool,
    metrics: Vec<MetricState>,
    /// Where each metric is in `metrics`, by name: a device of an OPC UA
    /// server can have 10 000 metrics, and readings must not search them.
    index: HashMap<String, usize>,
    types: BirthTypes,
}

impl Group {
    fn new(
        device: Option<String>,
        alive: bool,
        metrics: Vec<MetricState>,
        types: BirthTypes,
    ) -> Self {
        let mut g = Self { device, alive, metrics, index: HashMap::new(), types };
        g.reindex();
        g
    }

    fn reindex(&mut self) {
        self.index =
            self.metrics.iter().enumerate().map(|(i, m)| (m.spec.name.clone(), i)).collect();
    }

    fn find(&self, metric: &str) -> Option<usize> {
        self.index.get(metric).copied()
    }
}

/// A point in the replay the driver can confirm with
/// [`EdgeNode::commit_replay`]: everything handed out by
/// [`EdgeNode::poll_replay`] before it was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayMark {
    /// Marks from before a disconnect are void.
    epoch: u64,
    mark: SpoolMark,
}

/// Sparkplug B edge-node session. Opens no sockets and reads no clock.
/// After every `handle_*` call and [`publish`](Self::publish), drain
/// [`poll_transmit`](Self::poll_transmit), then [`poll_event`](Self::poll_event).
#[derive(Debug)]
pub struct EdgeNode {
    group_id: String,
    edge_node_id: String,
    primary_host_id: Option<String>,
    bd_seq: u8,
    session: Session,
    /// The newest valid STATE timestamp of the primary host.
    host_state_ts: Option<u64>,
    groups: Vec<Group>,
    store: Box<dyn Spool>,
    replay_chunk: usize,
    /// Reading from the store after a birth.
    replaying: bool,
    /// Replay messages (group, metrics) read and not yet handed out; `seq`
    /// is given when they are.
    replay_out: VecDeque<(usize, Vec<Metric>)>,
    /// The spool's mark once `replay_out` is handed out.
    replay_chunk_mark: Option<SpoolMark>,
    /// Everything before this was handed to the driver.
    replay_handed: Option<SpoolMark>,
    /// Incremented by every rewind: older marks are void.
    epoch: u64,
    dropped: u64,
    signed: SignedEncoding,
    transmits: VecDeque<Publish>,
    events: VecDeque<EdgeEvent>,
}

impl EdgeNode {
    /// A node, offline, with aliases assigned (1, 2, … across the node and all
    /// its devices, as the specification wants them unique node-wide). The
    /// configuration is checked first: ids valid in topics, device ids and
    /// metric names unique, `bdSeq` and `Node Control/*` left to the node.
    pub fn new(config: EdgeNodeConfig) -> Result<Self, ConfigError> {
        let store = Box::new(MemorySpool::new(config.store_bytes));
        Self::with_spool(config, store)
    }

    /// Like [`new`](Self::new), with readings stored in `spool` (a
    /// [`FileSpool`](crate::spool::FileSpool) to survive restarts). What the
    /// spool holds from an earlier run is replayed after the first birth.
    pub fn with_spool(config: EdgeNodeConfig, spool: Box<dyn Spool>) -> Result<Self, ConfigError> {
        validate(&config)?;
        Ok(Self::unchecked(config, spool))
    }

    fn unchecked(config: EdgeNodeConfig, store: Box<dyn Spool>) -> Self {
        let mut next_alias = 1;
        let mut group = |device: Option<String>, specs: Vec<MetricSpec>| {
            let mut types = BirthTypes::new();
            let metrics = specs
                .into_iter()
                .map(|spec| {
                    let alias = next_alias;
                    next_alias += 1;
                    types.insert(&spec.name, Some(alias), spec.datatype);
                    MetricState { spec, alias, current: None, sent: None }
                })
                .collect();
            Group::new(device, true, metrics, types)
        };
        let mut groups = vec![group(None, config.metrics)];
        groups[0].types.insert(REBIRTH_METRIC, None, DataType::Boolean);
        for (device, specs) in config.devices {
            groups.push(group(Some(device), specs));
        }
        Self {
            group_id: config.group_id,
            edge_node_id: config.edge_node_id,
            primary_host_id: config.primary_host_id,
            bd_seq: config.bd_seq,
            session: Session::Offline,
            host_state_ts: None,
            groups,
            store,
            replay_chunk: config.replay_chunk.max(1),
            replaying: false,
            replay_out: VecDeque::new(),
            replay_chunk_mark: None,
            replay_handed: None,
            epoch: 0,
            dropped: 0,
            signed: config.signed,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The Sparkplug group id.
    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    /// The edge node id.
    pub fn edge_node_id(&self) -> &str {
        &self.edge_node_id
    }

    /// The `bdSeq` of the current (or next) session. Persist it.
    pub fn bd_seq(&self) -> u8 {
        self.bd_seq
    }

    /// Whether the node has birthed and publishes DATA.
    pub fn is_online(&self) -> bool {
        matches!(self.session, Session::Online { .. })
    }

    /// How many readings wait in the store (including those replayed and
    /// not yet confirmed).
    pub fn stored(&self) -> u64 {
        self.store.readings()
    }

    /// Bytes the store holds.
    pub fn stored_bytes(&self) -> u64 {
        self.store.bytes()
    }

    /// Readings dropped so far (store full, or not replayable).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The Will to register with the next CONNECT: NDEATH with this session's
    /// `bdSeq`, QoS 1, not retained, no `seq`.
    pub fn will(&self) -> Publish {
        self.ndeath()
    }

    /// The filters to subscribe to (QoS 1) before [`handle_connected`](Self::handle_connected):
    /// NCMD, DCMD for every device, and the primary host's STATE.
    pub fn subscriptions(&self) -> Vec<String> {
        let mut out = vec![self.topic(MessageType::NCmd, None)];
        // One filter for every device's DCMD, those defined at run time
        // (define_device) included; commands to unknown devices are ignored.
        out.push(self.topic(MessageType::DCmd, Some("+")));
        if let Some(h) = &self.primary_host_id {
            out.push(format!("{}/STATE/{h}", crate::topic::NAMESPACE));
        }
        out
    }

    /// The connection is up and the subscriptions are acknowledged: birth
    /// now, or wait for the primary host.
    pub fn handle_connected(&mut self, now: Now) {
        if self.primary_host_id.is_some() {
            // The retained STATE arrives again after every subscription.
            self.host_state_ts = None;
            self.session = Session::AwaitingHost;
        } else {
            self.birth(now);
        }
    }

    /// The connection is gone. The next CONNECT uses the next `bdSeq`.
    pub fn handle_disconnected(&mut self) {
        if self.session != Session::Offline {
            self.bd_seq = self.bd_seq.wrapping_add(1);
            self.events.push_back(EdgeEvent::Offline);
        }
        self.session = Session::Offline;
        self.stop_replay();
        for g in &mut self.groups {
            for m in &mut g.metrics {
                m.sent = None;
            }
        }
    }

    /// Replay stops; what was handed out and not confirmed is read again.
    fn stop_replay(&mut self) {
        self.replaying = false;
        self.replay_out.clear();
        self.replay_chunk_mark = None;
        self.replay_handed = None;
        self.epoch += 1;
        self.store.rewind();
    }

    /// Queues an explicit NDEATH before an intentional disconnect (the
    /// specification asks for it first). Then disconnect and call
    /// [`handle_disconnected`](Self::handle_disconnected).
    pub fn disconnect(&mut self) {
        if self.session != Session::Offline {
            self.transmits.push_back(self.ndeath());
        }
    }

    /// Handles an inbound message: STATE of the primary host, NCMD, DCMD.
    /// Messages for other nodes are ignored.
    pub fn handle_message(&mut self, msg: &Message, now: Now) -> Result<(), InboundError> {
        match Topic::parse(&msg.topic)? {
            Topic::State { host_id } => {
                if self.primary_host_id.as_deref() == Some(host_id.as_str()) {
                    let state = StatePayload::from_json(&msg.payload).map_err(|source| {
                        InboundError::State { topic: msg.topic.clone(), source }
                    })?;
                    self.handle_state(state, now);
                }
                Ok(())
            }
            Topic::Edge { group_id, message_type, edge_node_id, device_id }
                if group_id == self.group_id && edge_node_id == self.edge_node_id =>
            {
                let group = match (message_type, &device_id) {
                    (MessageType::NCmd, None) => 0,
                    (MessageType::DCmd, Some(d)) => match self.group_index(d) {
                        Some(i) => i,
                        None => return Ok(()),
                    },
                    _ => return Ok(()),
                };
                let payload = Payload::decode(&msg.payload, &self.groups[group].types)
                    .map_err(|source| InboundError::Payload { topic: msg.topic.clone(), source })?;
                for m in payload.metrics {
                    let (Some(name), Some(value)) = (m.name, m.value) else { continue };
                    if group == 0 && &*name == REBIRTH_METRIC {
                        if value == MetricValue::Boolean(true) && self.is_online() {
                            self.birth(now);
                            self.events.push_back(EdgeEvent::Rebirth);
                        }
                        continue;
                    }
                    self.events.push_back(EdgeEvent::Write {
                        device: device_id.clone(),
                        metric: name.to_string(),
                        value,
                    });
                }
                Ok(())
            }
            Topic::Edge { .. } => Ok(()),
        }
    }

    fn handle_state(&mut self, state: StatePayload, now: Now) {
        // A STATE older than the newest one seen is stale (a late retained
        // message or Will) and changes nothing.
        if self.host_state_ts.is_some_and(|t| state.timestamp < t) {
            return;
        }
        self.host_state_ts = Some(state.timestamp);
        match (state.online, self.session) {
            (true, Session::AwaitingHost) => {
                self.birth(now);
                self.events.push_back(EdgeEvent::HostOnline);
            }
            (false, Session::Online { .. }) => {
                self.transmits.push_back(self.ndeath());
                self.session = Session::AwaitingHost;
                self.stop_replay();
                self.events.push_back(EdgeEvent::Disconnect);
            }
            _ => {}
        }
    }

    /// Takes readings: `batch.source` is a device id, or `""` for the node's
    /// own metrics. Online, what changed beyond its deadband goes out as DATA;
    /// offline, it is stored and replayed as historical after the next birth.
    pub fn publish(&mut self, batch: &Batch, now: Now) -> Result<(), PublishError> {
        let g = if batch.source.is_empty() {
            0
        } else {
            self.group_index(&batch.source)
                .ok_or_else(|| PublishError::UnknownDevice(batch.source.to_string()))?
        };
        if !self.groups[g].alive {
            return Err(PublishError::DeviceDead(batch.source.to_string()));
        }
        // Check everything first, so that a refused batch changes nothing.
        let mut updates = Vec::with_capacity(batch.readings.len());
        for r in &batch.readings {
            let m = self.groups[g].find(&r.metric).ok_or_else(|| PublishError::UnknownMetric {
                device: batch.source.to_string(),
                metric: r.metric.to_string(),
            })?;
            let metrics = &self.groups[g].metrics;
            let datatype = metrics[m].spec.datatype;
            let value = to_metric_value(datatype, &r.value).ok_or_else(|| PublishError::Type {
                metric: r.metric.to_string(),
                datatype,
                value: format!("{:?}", r.value),
            })?;
            updates.push((m, value, r.quality, r.timestamp.unix_ms()));
        }
        let online = self.is_online();
        let mut out = Vec::new();
        let mut offline = Batch::new(batch.source.clone());
        for (i, (m, value, quality, ts)) in updates.into_iter().enumerate() {
            let state = &mut self.groups[g].metrics[m];
            // The birth reports the newest value by time, whatever order
            // readings arrive in.
            if state.current.as_ref().is_none_or(|(_, _, t)| ts >= *t) {
                state.current = Some((value.clone(), quality, ts));
            }
            if !changed(state.spec.deadband, state.sent.as_ref(), &value, quality) {
                continue;
            }
            state.sent = Some((value.clone(), quality));
            if online {
                out.push(data_metric(state.alias, ts, value, quality, false));
            } else {
                offline.readings.push(batch.readings[i].clone());
            }
        }
        if !out.is_empty() {
            // A metric's values in time order within the message
            // (tck-id-operational-behavior-data-publish-nbirth-order).
            out.sort_by_key(|m| m.timestamp);
            self.send_data(g, out, now);
        }
        if !offline.readings.is_empty() {
            self.store_batch(&offline)?;
        }
        Ok(())
    }

    fn store_batch(&mut self, batch: &Batch) -> Result<(), PublishError> {
        // Readings were checked against the configuration: they encode.
        let record = Codec::Protobuf.encode_batch(batch).unwrap_or_default();
        let n = u32::try_from(batch.readings.len()).unwrap_or(u32::MAX);
        let dropped = self.store.push(&record, n).map_err(|e| PublishError::Store(Arc::new(e)))?;
        self.count_dropped(dropped);
        Ok(())
    }

    fn count_dropped(&mut self, n: u64) {
        if n > 0 {
            self.dropped += n;
            self.events.push_back(EdgeEvent::Dropped { total: self.dropped });
        }
    }

    /// Whether stored readings wait to be replayed: the driver calls
    /// [`poll_replay`](Self::poll_replay) when it has nothing else to do.
    pub fn replay_pending(&self) -> bool {
        self.is_online() && self.replaying
    }

    /// The next historical DATA message from the store, after a birth. Each
    /// step reads about `replay_chunk` readings, in the order they were
    /// stored, and sends one message per device with its readings sorted by
    /// time. `None` when the store is drained (or replay stopped on a store
    /// error, reported as [`EdgeEvent::StoreFailed`]).
    pub fn poll_replay(&mut self, now: Now) -> Option<Publish> {
        if !self.replay_pending() {
            return None;
        }
        if self.replay_out.is_empty() {
            self.fill_replay();
        }
        let (g, metrics) = self.replay_out.pop_front()?;
        if self.replay_out.is_empty() {
            self.replay_handed = self.replay_chunk_mark.take().or(self.replay_handed);
        }
        self.data_publish(g, metrics, now)
    }

    /// What has been handed out by [`poll_replay`](Self::poll_replay) so far;
    /// give it to [`commit_replay`](Self::commit_replay) once the broker has
    /// confirmed it (a round trip after the last of it was written).
    pub fn replay_mark(&self) -> Option<ReplayMark> {
        self.replay_handed.map(|mark| ReplayMark { epoch: self.epoch, mark })
    }

    /// The broker has what was handed out before `mark`: the store forgets
    /// it. A mark from before a disconnect is ignored.
    pub fn commit_replay(&mut self, mark: ReplayMark) {
        if mark.epoch != self.epoch {
            return;
        }
        if let Err(e) = self.store.commit(mark.mark) {
            self.events.push_back(EdgeEvent::StoreFailed { message: e.to_string() });
        }
    }

    /// Makes the store durable (fsync for a file spool). The driver calls it
    /// about once a second.
    pub fn sync_store(&mut self) -> Result<(), SpoolError> {
        self.store.sync()
    }

    fn fill_replay(&mut self) {
        // (group, readings) in the order groups first appear.
        let mut chunk: Vec<(usize, Vec<Metric>)> = Vec::new();
        let mut taken = 0;
        let mut lost = 0;
        while taken < self.replay_chunk {
            let (record, n) = match self.store.read() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    let corrupt = matches!(e, SpoolError::Corrupt { .. });
                    self.events.push_back(EdgeEvent::StoreFailed { message: e.to_string() });
                    if corrupt {
                        continue;
                    }
                    self.replaying = false;
                    break;
                }
            };
            taken += n as usize;
            let Ok(batch) = Codec::Protobuf.decode_batch(&record) else {
                lost += u64::from(n);
                continue;
            };
            for r in &batch.readings {
                match self.stored_metric(&batch.source, r) {
                    Some((g, m)) => match chunk.iter_mut().find(|(cg, _)| *cg == g) {
                        Some((_, ms)) => ms.push(m),
                        None => chunk.push((g, vec![m])),
                    },
                    None => lost += 1,
                }
            }
        }
        self.count_dropped(lost);
        if taken == 0 {
            self.replaying = false;
        }
        for (g, mut metrics) in chunk {
            metrics.sort_by_key(|m| m.timestamp);
            self.replay_out.push_back((g, metrics));
        }
        self.replay_chunk_mark = Some(self.store.mark());
    }

    /// A stored reading as a historical DATA metric, if the node still has
    /// its metric and type.
    fn stored_metric(&self, source: &str, r: &Reading) -> Option<(usize, Metric)> {
        let g = if source.is_empty() { 0 } else { self.group_index(source)? };
        let m = &self.groups[g].metrics[self.groups[g].find(&r.metric)?];
        let value = to_metric_value(m.spec.datatype, &r.value)?;
        Some((g, data_metric(m.alias, r.timestamp.unix_ms(), value, r.quality, true)))
    }

    /// A device stopped responding: DDEATH (when online). Its readings are
    /// refused until [`device_birth`](Self::device_birth).
    pub fn device_death(&mut self, device: &str, now: Now) -> Result<(), PublishError> {
        let g = self
            .group_index(device)
            .ok_or_else(|| PublishError::UnknownDevice(device.to_owned()))?;
        if !self.groups[g].alive {
            return Ok(());
        }
        self.groups[g].alive = false;
        if let Some(seq) = self.next_seq() {
            let p = Payload {
                timestamp: Some(now.unix_ms),
                seq: Some(seq.into()),
                ..Payload::default()
            };
            self.push(MessageType::DDeath, Some(g), &p, false);
        }
        Ok(())
    }

    /// A device is back: DBIRTH with its current values (when online).
    pub fn device_birth(&mut self, device: &str, now: Now) -> Result<(), PublishError> {
        let g = self
            .group_index(device)
            .ok_or_else(|| PublishError::UnknownDevice(device.to_owned()))?;
        self.groups[g].alive = true;
        if self.is_online() {
            self.send_birth(g, now);
        }
        Ok(())
    }

    /// Defines (or redefines) a device's metrics at run time and births it
    /// with `values` (readings of its metrics), for devices whose metrics
    /// are only known once they answer (an OPC UA server's nodes and
    /// types). A device with the same metric names and types keeps its
    /// aliases; one with other metrics dies (DDEATH) and is born with new
    /// aliases (taken after the largest, so they stay unique node-wide); a
    /// new device is added. Readings of metrics the device no longer has
    /// are refused from then on. Metrics without a reading in `values` are
    /// born with their last value, or null.
    pub fn define_device(
        &mut self,
        device: &str,
        specs: Vec<MetricSpec>,
        values: &[Reading],
        now: Now,
    ) -> Result<(), ConfigError> {
        let check = EdgeNodeConfig {
            devices: vec![(device.to_owned(), specs.clone())],
            ..EdgeNodeConfig::new(self.group_id.clone(), self.edge_node_id.clone())
        };
        validate(&check)?;
        let existing = self.group_index(device);
        let same = existing.is_some_and(|g| {
            self.groups[g].metrics.len() == specs.len()
                && self.groups[g]
                    .metrics
                    .iter()
                    .zip(&specs)
                    .all(|(m, s)| m.spec.name == s.name && m.spec.datatype == s.datatype)
        });
        let g = match existing {
            Some(g) if same => {
                for (m, s) in self.groups[g].metrics.iter_mut().zip(specs) {
                    m.spec = s;
                }
                g
            }
            Some(g) => {
                if self.groups[g].alive {
                    let _ = self.device_death(device, now);
                }
                self.replace_metrics(g, specs);
                g
            }
            None => {
                self.groups.push(Group::new(
                    Some(device.to_owned()),
                    false,
                    Vec::new(),
                    BirthTypes::new(),
                ));
                let g = self.groups.len() - 1;
                self.replace_metrics(g, specs);
                g
            }
        };
        for r in values {
            let Some(i) = self.groups[g].find(&r.metric) else { continue };
            let m = &mut self.groups[g].metrics[i];
            if let Some(v) = to_metric_value(m.spec.datatype, &r.value) {
                m.current = Some((v, r.quality, r.timestamp.unix_ms()));
            }
        }
        self.groups[g].alive = true;
        if self.is_online() {
            self.send_birth(g, now);
        }
        Ok(())
    }

    fn replace_metrics(&mut self, g: usize, specs: Vec<MetricSpec>) {
        let mut next_alias =
            self.groups.iter().flat_map(|g| g.metrics.iter().map(|m| m.alias)).max().unwrap_or(0)
                + 1;
        let mut types = BirthTypes::new();
        self.groups[g].metrics = specs
            .into_iter()
            .map(|spec| {
                let alias = next_alias;
                next_alias += 1;
                types.insert(&spec.name, Some(alias), spec.datatype);
                MetricState { spec, alias, current: None, sent: None }
            })
            .collect();
        self.groups[g].types = types;
        self.groups[g].reindex();
    }

    /// The next publish for the driver to send, in order.
    pub fn poll_transmit(&mut self) -> Option<Publish> {
        self.transmits.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<EdgeEvent> {
        self.events.pop_front()
    }

    fn group_index(&self, device: &str) -> Option<usize> {
        self.groups.iter().position(|g| g.device.as_deref() == Some(device))
    }

    fn topic(&self, t: MessageType, device: Option<&str>) -> String {
        match device {
            Some(d) => format!(
                "{}/{}/{t}/{}/{d}",
                crate::topic::NAMESPACE,
                self.group_id,
                self.edge_node_id
            ),
            None => {
                format!("{}/{}/{t}/{}", crate::topic::NAMESPACE, self.group_id, self.edge_node_id)
            }
        }
    }

    fn ndeath(&self) -> Publish {
        let bd = Metric {
            datatype: DataType::Int64,
            ..Metric::new(BDSEQ_METRIC, 0, MetricValue::Int64(self.bd_seq.into()))
        };
        let p = Payload { metrics: vec![Metric { timestamp: None, ..bd }], ..Payload::default() };
        Publish {
            topic: self.topic(MessageType::NDeath, None),
            qos: MessageType::NDeath.qos(),
            retain: false,
            payload: p.encode(EncodeOptions { signed: self.signed, datatypes: true }).into(),
        }
    }

    fn next_seq(&mut self) -> Option<u8> {
        match &mut self.session {
            Session::Online { seq } => {
                let s = *seq;
                *seq = seq.wrapping_add(1);
                Some(s)
            }
            _ => None,
        }
    }

    fn push(&mut self, t: MessageType, group: Option<usize>, p: &Payload, datatypes: bool) {
        let publish = self.publish_of(t, group, p, datatypes);
        self.transmits.push_back(publish);
    }

    fn publish_of(
        &self,
        t: MessageType,
        group: Option<usize>,
        p: &Payload,
        datatypes: bool,
    ) -> Publish {
        let device = group.and_then(|g| self.groups[g].device.as_deref());
        Publish {
            topic: self.topic(t, device),
            qos: t.qos(),
            retain: t.retain(),
            payload: p.encode(EncodeOptions { signed: self.signed, datatypes }).into(),
        }
    }

    /// NBIRTH (seq 0) and every live device's DBIRTH; the store replays
    /// after them through [`poll_replay`](Self::poll_replay).
    fn birth(&mut self, now: Now) {
        if self.is_online() {
            // A rebirth: replay starts over from what is not confirmed.
            self.stop_replay();
        }
        self.session = Session::Online { seq: 0 };
        self.send_birth(0, now);
        for g in 1..self.groups.len() {
            if self.groups[g].alive {
                self.send_birth(g, now);
            }
        }
        self.replaying = true;
    }

    fn send_birth(&mut self, g: usize, now: Now) {
        let Some(seq) = self.next_seq() else { return };
        let mut metrics = Vec::new();
        if g == 0 {
            metrics.push(Metric::new(
                BDSEQ_METRIC,
                now.unix_ms,
                MetricValue::Int64(self.bd_seq.into()),
            ));
            metrics.push(Metric::new(REBIRTH_METRIC, now.unix_ms, MetricValue::Boolean(false)));
        }
        for m in &mut self.groups[g].metrics {
            let (value, quality, ts) = match &m.current {
                Some((v, q, t)) => (Some(v.clone()), *q, *t),
                None => (None, Quality::Good, now.unix_ms),
            };
            m.sent = value.clone().map(|v| (v, quality));
            let mut properties = m.spec.properties.clone();
            if quality != Quality::Good {
                properties.get_or_insert_with(PropertySet::default).set(
                    QUALITY_PROPERTY,
                    PropertyValue::Value(MetricValue::Int32(quality.to_sparkplug())),
                );
            }
            metrics.push(Metric {
                name: Some(m.spec.name.as_str().into()),
                alias: Some(m.alias),
                timestamp: Some(ts),
                datatype: m.spec.datatype,
                is_historical: false,
                is_transient: false,
                value,
                properties,
                metadata: None,
            });
        }
        let p = Payload {
            timestamp: Some(now.unix_ms),
            seq: Some(seq.into()),
            metrics,
            ..Payload::default()
        };
        let t = if g == 0 { MessageType::NBirth } else { MessageType::DBirth };
        self.push(t, Some(g), &p, true);
    }

    fn send_data(&mut self, g: usize, metrics: Vec<Metric>, now: Now) {
        if let Some(p) = self.data_publish(g, metrics, now) {
            self.transmits.push_back(p);
        }
    }

    /// NDATA or DDATA with the next `seq` (`None` when offline).
    fn data_publish(&mut self, g: usize, metrics: Vec<Metric>, now: Now) -> Option<Publish> {
        let seq = self.next_seq()?;
        let p = Payload {
            timestamp: Some(now.unix_ms),
            seq: Some(seq.into()),
            metrics,
            ..Payload::default()
        };
        let t = if g == 0 { MessageType::NData } else { MessageType::DData };
        Some(self.publish_of(t, Some(g), &p, false))
    }
}

fn validate(c: &EdgeNodeConfig) -> Result<(), ConfigError> {
    use crate::topic::check_id;
    let id = |key: &str, which: &'static str, value: &str| {
        check_id(which, value).map_err(|source| ConfigError::Id { key: key.to_owned(), source })
    };
    id("group_id", "group_id", &c.group_id)?;
    id("edge_node_id", "edge_node_id", &c.edge_node_id)?;
    if let Some(h) = &c.primary_host_id {
        id("primary_host_id", "host_id", h)?;
    }
    let unique_names = |key: String, specs: &[MetricSpec]| -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for m in specs {
            if m.name.is_empty() {
                return Err(ConfigError::EmptyMetricName { key });
            }
            if !seen.insert(m.name.as_str()) {
                return Err(ConfigError::DuplicateMetric { key, name: m.name.clone() });
            }
        }
        Ok(())
    };
    unique_names("metrics".into(), &c.metrics)?;
    if let Some(m) =
        c.metrics.iter().find(|m| m.name == BDSEQ_METRIC || m.name.starts_with("Node Control/"))
    {
        return Err(ConfigError::ReservedMetric { name: m.name.clone() });
    }
    let mut devices = std::collections::HashSet::new();
    for (index, (device, specs)) in c.devices.iter().enumerate() {
        id(&format!("devices[{index}]"), "device_id", device)?;
        if !devices.insert(device.as_str()) {
            return Err(ConfigError::DuplicateDevice { index, id: device.clone() });
        }
        unique_names(format!("devices[{index}].metrics"), specs)?;
    }
    Ok(())
}

fn data_metric(
    alias: u64,
    ts: u64,
    value: MetricValue,
    quality: Quality,
    historical: bool,
) -> Metric {
    let mut m = Metric::new("", ts, value);
    m.name = None;
    m.alias = Some(alias);
    m.is_historical = historical;
    if quality != Quality::Good {
        let mut p = PropertySet::default();
        p.set(QUALITY_PROPERTY, PropertyValue::Value(MetricValue::Int32(quality.to_sparkplug())));
        m.properties = Some(p);
    }
    m
}

/// Report by exception: a quality change always counts; a numeric change
/// counts beyond the deadband; any other change counts.
fn changed(
    deadband: Deadband,
    sent: Option<&(MetricValue, Quality)>,
    value: &MetricValue,
    quality: Quality,
) -> bool {
    let Some((last, last_quality)) = sent else { return true };
    if *last_quality != quality {
        return true;
    }
    match (numeric(last), numeric(value), deadband) {
        (Some(a), Some(b), Deadband::Absolute(d)) => (b - a).abs() > d,
        (Some(a), Some(b), Deadband::Percent(p)) => (b - a).abs() > a.abs() * p / 100.0,
        _ => last != value,
    }
}

fn numeric(v: &MetricValue) -> Option<f64> {
    Some(match *v {
        MetricValue::Int8(x) => x.into(),
        MetricValue::Int16(x) => x.into(),
        MetricValue::Int32(x) => x.into(),
        MetricValue::Int64(x) => x as f64,
        MetricValue::UInt8(x) => x.into(),
        MetricValue::UInt16(x) => x.into(),
        MetricValue::UInt32(x) => x.into(),
        MetricValue::UInt64(x) => x as f64,
        MetricValue::Float(x) => x.into(),
        MetricValue::Double(x) => x,
        _ => return None,
    })
}

/// A reading's value as the metric's Sparkplug type, if it fits.
fn to_metric_value(datatype: DataType, v: &Value) -> Option<MetricValue> {
    use DataType as T;
    let int = || match *v {
        Value::I64(x) => Some(i128::from(x)),
        Value::U64(x) => Some(i128::from(x)),
        Value::Bool(b) => Some(i128::from(b)),
        _ => None,
    };
    Some(match datatype {
        T::Int8 => MetricValue::Int8(i8::try_from(int()?).ok()?),
        T::Int16 => MetricValue::Int16(i16::try_from(int()?).ok()?),
        T::Int32 => MetricValue::Int32(i32::try_from(int()?).ok()?),
        T::Int64 => MetricValue::Int64(i64::try_from(int()?).ok()?),
        T::UInt8 => MetricValue::UInt8(u8::try_from(int()?).ok()?),
        T::UInt16 => MetricValue::UInt16(u16::try_from(int()?).ok()?),
        T::UInt32 => MetricValue::UInt32(u32::try_from(int()?).ok()?),
        T::UInt64 => MetricValue::UInt64(u64::try_from(int()?).ok()?),
        T::DateTime => MetricValue::DateTime(u64::try_from(int()?).ok()?),
        T::Float => MetricValue::Float(v.as_f64()? as f32),
        T::Double => MetricValue::Double(v.as_f64()?),
        T::Boolean => match v {
            Value::Bool(b) => MetricValue::Boolean(*b),
            _ => MetricValue::Boolean(v.as_f64()? != 0.0),
        },
        T::String | T::Text | T::Uuid => {
            let Value::String(s) = v else { return None };
            match datatype {
                T::Text => MetricValue::Text(s.clone()),
                T::Uuid => MetricValue::Uuid(s.clone()),
                _ => MetricValue::String(s.clone()),
            }
        }
        T::Bytes | T::File => {
            let Value::Bytes(b) = v else { return None };
            if datatype == T::File {
                MetricValue::File(b.clone())
            } else {
                MetricValue::Bytes(b.clone())
            }
        }
        _ => return None,
    })
}
