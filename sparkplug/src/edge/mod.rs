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

use bytes::Bytes;
use std::sync::Arc;

use shopfloor_schemas::{Batch, Codec, Quality, Reading, Value};

use crate::convert::QUALITY_PROPERTY;
use crate::datatype::DataType;
use crate::payload::{BirthTypes, EncodeOptions, Metric, Payload, PropertySet, PropertyValue};
use crate::spool::{MemorySpool, Spool, SpoolError, SpoolMark};
use crate::topic::{MessageType, StatePayload, Topic};
use crate::value::{MetricValue, SignedEncoding};

mod convert;
mod devices;
mod replay;
mod types;

use convert::{changed, data_metric, to_metric_value, validate};
pub use replay::ReplayMark;
pub use types::{
    ConfigError, Deadband, EdgeEvent, EdgeNodeConfig, InboundError, Message, MetricSpec, Now,
    Publish, PublishError,
};

/// The name of the rebirth request metric (never aliased).
pub const REBIRTH_METRIC: &str = "Node Control/Rebirth";
/// The name of the birth/death sequence metric (never aliased).
pub const BDSEQ_METRIC: &str = "bdSeq";

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
    /// The newest timestamp published for it in this session (birth or
    /// DATA): a live reading older than that is superseded and not sent,
    /// so that a metric's timestamps never go back within a session.
    sent_at: Option<u64>,
}

/// The states of new metrics, aliased from `next_alias` on (left past
/// them), and their birth types.
fn metric_states(specs: Vec<MetricSpec>, next_alias: &mut u64) -> (Vec<MetricState>, BirthTypes) {
    let mut types = BirthTypes::new();
    let metrics = specs
        .into_iter()
        .map(|spec| {
            let alias = *next_alias;
            *next_alias += 1;
            types.insert(&spec.name, Some(alias), spec.datatype);
            MetricState { spec, alias, current: None, sent: None, sent_at: None }
        })
        .collect();
    (metrics, types)
}

/// A payload of the session: sent `now`, numbered `seq`.
fn session_payload(now: Now, seq: u8, metrics: Vec<Metric>) -> Payload {
    Payload { timestamp: Some(now.unix_ms), seq: Some(seq.into()), metrics, ..Payload::default() }
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
    datatypes_in_data: bool,
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
            let (metrics, types) = metric_states(specs, &mut next_alias);
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
            datatypes_in_data: config.datatypes_in_data,
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

    /// The node's devices, in the order configured, and whether each is
    /// alive (born, and not dead since).
    pub fn devices(&self) -> impl Iterator<Item = (&str, bool)> + '_ {
        self.groups.iter().filter_map(|g| g.device.as_deref().map(|d| (d, g.alive)))
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
                m.sent_at = None;
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
                    // A retained command is old news the broker kept: never
                    // acted on (a rebirth request included), writes refused.
                    if msg.retain {
                        if !(group == 0 && &*name == REBIRTH_METRIC) {
                            self.events.push_back(EdgeEvent::WriteRefused {
                                device: device_id.clone(),
                                metric: name.to_string(),
                                value,
                                reason: "the command was retained (stored by the broker, maybe long ago): \
                                         commands must be sent with retain = false"
                                    .into(),
                            });
                        }
                        continue;
                    }
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
            payload: p
                .encode(EncodeOptions {
                    signed: self.signed,
                    datatypes: datatypes || self.datatypes_in_data,
                })
                .into(),
        }
    }
}
