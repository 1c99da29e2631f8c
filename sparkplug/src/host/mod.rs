//! The sans-IO Sparkplug B host application.
//!
//! ```text
//!  driver ──handle_message(msg)──►┌─────────────────┐──poll_transmit()──► STATE, rebirth requests (NCMD)
//!  driver ──handle_connected()───►│ HostApplication │──poll_event()─────► Batches, node/device lifecycle
//!  driver ──handle_timeout()─────►└─────────────────┘──poll_timeout()──► when to call handle_timeout
//! ```
//!
//! It opens no sockets and reads no clock. After every `handle_*` call, drain
//! [`HostApplication::poll_transmit`], then [`HostApplication::poll_event`],
//! then read [`HostApplication::poll_timeout`].
//!
//! What it does, per the 3.0 specification (chapter 5):
//! - publishes its STATE birth (`online`, QoS 1, retained) with the same
//!   timestamp as the Will registered for that connection, and re-publishes
//!   it if it ever sees its own STATE offline with that timestamp;
//! - tracks every edge node and device: births define names, aliases and
//!   datatypes; DATA is decoded with them into [`Batch`]es;
//! - checks `seq`: a gap starts the reorder timer; if the missing messages do
//!   not arrive in time, it asks for a rebirth. Out-of-order data is passed on
//!   as it arrives (a historian stores it; ingest is idempotent);
//! - shares DATA with other hosts when [`HostConfig::share`] is set: DATA
//!   through an MQTT shared subscription, births and deaths to every host,
//!   no `seq` check; [`HostApplication::missed_birth`] tells the driver
//!   when DATA needs a birth another host kept;
//! - correlates NDEATH by `bdSeq`: a late Will from an older session does not
//!   kill the new one (a newer `bdSeq` does: a later session died);
//! - on NDEATH, DDEATH or loss of its own connection, re-emits every last
//!   value of the affected metrics with [`Quality::Stale`], so a dead device
//!   is never silent;
//! - asks for a rebirth (NCMD `Node Control/Rebirth`) on data before a birth,
//!   an unknown alias or an unresolved gap, at most once per cooldown.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use shopfloor_schemas::{Batch, Quality, Reading, Timestamp};

use crate::convert::readings;
use crate::edge::{BDSEQ_METRIC, Message, Now, Publish, REBIRTH_METRIC};
use crate::payload::{BirthTypes, EncodeOptions, Metric, Payload};
use crate::topic::{MessageType, StatePayload, Topic};
use crate::value::MetricValue;
use crate::{DecodeError, TopicError};

mod types;

pub use types::{HostConfig, HostEvent, InboundError, RebirthReason};

#[derive(Debug, Default)]
struct DeviceState {
    online: bool,
    last: HashMap<String, Reading>,
}

#[derive(Debug)]
struct NodeState {
    online: bool,
    bd_seq: Option<u64>,
    /// The `seq` expected next; `None` when unknown (births replayed from
    /// a store: the next message's `seq` is taken as it comes).
    expected: Option<u8>,
    missing: BTreeSet<u8>,
    reorder_deadline: Option<Instant>,
    last_rebirth_request: Option<Instant>,
    types: BirthTypes,
    last: HashMap<String, Reading>,
    devices: HashMap<String, DeviceState>,
}

impl NodeState {
    fn new() -> Self {
        Self {
            online: false,
            bd_seq: None,
            expected: None,
            missing: BTreeSet::new(),
            reorder_deadline: None,
            last_rebirth_request: None,
            types: BirthTypes::new(),
            last: HashMap::new(),
            devices: HashMap::new(),
        }
    }
}

/// Sparkplug B host application. Opens no sockets and reads no clock.
/// After every `handle_*` call, drain [`poll_transmit`](Self::poll_transmit),
/// then [`poll_event`](Self::poll_event), then read
/// [`poll_timeout`](Self::poll_timeout).
#[derive(Debug)]
pub struct HostApplication {
    config: HostConfig,
    /// The timestamp of this connection's Will and STATE birth.
    state_ts: Option<u64>,
    nodes: HashMap<(String, String), NodeState>,
    transmits: VecDeque<Publish>,
    events: VecDeque<HostEvent>,
    /// Metrics with no reading: null values, nameless template members.
    skipped: u64,
    /// Last values kept, over all nodes and devices.
    tracked: usize,
    /// Readings not remembered: `max_tracked_metrics` was reached.
    untracked: u64,
}

impl HostApplication {
    /// A host that knows no nodes yet.
    pub fn new(config: HostConfig) -> Self {
        Self {
            config,
            state_ts: None,
            nodes: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            skipped: 0,
            tracked: 0,
            untracked: 0,
        }
    }

    fn check_size(&self, msg: &Message, payload: &Payload) -> Result<(), InboundError> {
        let (metrics, limit) = (payload.metrics.len(), self.config.max_metrics_per_payload);
        if metrics > limit {
            return Err(InboundError::TooManyMetrics { topic: msg.topic.clone(), metrics, limit });
        }
        Ok(())
    }

    /// Forgets where every node's `seq` stands: the next message of each
    /// sets it. For a host that replays births from a store after a restart
    /// (ingest): the queued DATA that follows continues a sequence the
    /// stored birth knows nothing of, and is no gap.
    pub fn resync_seq(&mut self) {
        for node in self.nodes.values_mut() {
            node.expected = None;
            node.missing.clear();
            node.reorder_deadline = None;
        }
    }

    /// Readings passed on but not remembered for a death's stale values,
    /// because [`HostConfig::max_tracked_metrics`] was reached (a counter).
    pub fn untracked_readings(&self) -> u64 {
        self.untracked
    }

    /// Metrics received that became no reading: null values, and template
    /// members without a name (a counter; template definitions and the
    /// plumbing, `bdSeq` and `Node Control/*`, are not counted).
    pub fn skipped_metrics(&self) -> u64 {
        self.skipped
    }

    fn state_topic(&self) -> String {
        format!("{}/STATE/{}", crate::topic::NAMESPACE, self.config.host_id)
    }

    fn state(&self, online: bool, timestamp: u64) -> Publish {
        Publish {
            topic: self.state_topic(),
            qos: 1,
            retain: true,
            payload: StatePayload { online, timestamp }.to_json().into(),
        }
    }

    /// The Will for the next CONNECT (STATE offline, QoS 1, retained), or
    /// `None` when this host publishes no STATE. Its timestamp is reused by
    /// the STATE birth of the same connection, as the specification requires.
    pub fn will(&mut self, now: Now) -> Option<Publish> {
        if !self.config.publish_state {
            return None;
        }
        self.state_ts = Some(now.unix_ms);
        Some(self.state(false, now.unix_ms))
    }

    /// The filters to subscribe to (QoS 1): every followed group's messages,
    /// and this host's own STATE. With [`HostConfig::share`], the groups'
    /// births and deaths, and their DATA through the shared subscription.
    pub fn subscriptions(&self) -> Vec<String> {
        let ns = crate::topic::NAMESPACE;
        let groups: Vec<&str> = match &self.config.groups {
            None => vec!["+"],
            Some(groups) => groups.iter().map(String::as_str).collect(),
        };
        let mut out = Vec::new();
        for g in groups {
            match &self.config.share {
                None => out.push(format!("{ns}/{g}/#")),
                Some(share) => {
                    for t in ["NBIRTH", "DBIRTH", "NDEATH", "DDEATH"] {
                        out.push(format!("{ns}/{g}/{t}/#"));
                    }
                    for t in ["NDATA", "DDATA"] {
                        out.push(format!("$share/{share}/{ns}/{g}/{t}/#"));
                    }
                }
            }
        }
        out.push(self.state_topic());
        out
    }

    /// Whether `topic` is DATA, a DBIRTH or a DDEATH of an edge node in a
    /// followed group whose birth this host has never seen: a host sharing
    /// DATA ([`HostConfig::share`]) that missed it (it was away, the broker
    /// dropped it) asks this before handling a message, and loads the
    /// birth another host kept. A node seen born and then dead is not
    /// missed: its DATA waits for its next birth.
    pub fn missed_birth(&self, topic: &str) -> bool {
        let Ok(Topic::Edge { group_id, message_type, edge_node_id, .. }) = Topic::parse(topic)
        else {
            return false;
        };
        matches!(
            message_type,
            MessageType::NData | MessageType::DData | MessageType::DBirth | MessageType::DDeath
        ) && self.config.groups.as_ref().is_none_or(|g| g.contains(&group_id))
            && self.nodes.get(&(group_id, edge_node_id)).is_none_or(|n| n.bd_seq.is_none())
    }

    /// The connection is up and subscribed: publish the STATE birth.
    pub fn handle_connected(&mut self, now: Now) {
        if self.config.publish_state {
            let ts = *self.state_ts.get_or_insert(now.unix_ms);
            self.transmits.push_back(self.state(true, ts));
        }
    }

    /// The connection is gone: every known metric becomes stale (the host
    /// can no longer vouch for any of them), stamped with the host's time.
    pub fn handle_disconnected(&mut self, now: Now) {
        let keys: Vec<(String, String)> = self.nodes.keys().cloned().collect();
        for (group, edge) in keys {
            self.node_died(&group, &edge, now.unix_ms);
        }
    }

    /// Before an intentional disconnect: STATE offline with the current time.
    pub fn disconnect(&mut self, now: Now) {
        if self.config.publish_state {
            self.transmits.push_back(self.state(false, now.unix_ms));
        }
    }

    /// The next deadline: call [`handle_timeout`](Self::handle_timeout) then.
    /// It changes when a `seq` gap opens or closes.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.nodes.values().filter_map(|n| n.reorder_deadline).min()
    }

    /// Deadlines have passed: request rebirths for gaps still open.
    pub fn handle_timeout(&mut self, now: Now) {
        let expired: Vec<(String, String)> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.reorder_deadline.is_some_and(|d| d <= now.instant))
            .map(|(k, _)| k.clone())
            .collect();
        for (group, edge) in expired {
            let Some(node) = self.nodes.get_mut(&(group.clone(), edge.clone())) else { continue };
            node.reorder_deadline = None;
            let missing = std::mem::take(&mut node.missing).into_iter().collect();
            self.request_rebirth(&group, &edge, RebirthReason::SeqGap { missing }, now);
        }
    }

    /// The next publish for the driver to send, in order.
    pub fn poll_transmit(&mut self) -> Option<Publish> {
        self.transmits.pop_front()
    }

    /// Every publish waiting to be sent, in order: [`poll_transmit`]
    /// until it gives `None`.
    ///
    /// [`poll_transmit`]: Self::poll_transmit
    pub fn drain_transmits(&mut self) -> impl Iterator<Item = Publish> + '_ {
        self.transmits.drain(..)
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<HostEvent> {
        self.events.pop_front()
    }

    /// Handles one inbound message.
    pub fn handle_message(&mut self, msg: &Message, now: Now) -> Result<(), InboundError> {
        let (group, message_type, edge, device) = match Topic::parse(&msg.topic)? {
            Topic::State { host_id } => {
                self.handle_state(&host_id, &msg.payload);
                return Ok(());
            }
            Topic::Edge { group_id, message_type, edge_node_id, device_id } => {
                (group_id, message_type, edge_node_id, device_id)
            }
        };
        if self.config.groups.as_ref().is_some_and(|g| !g.contains(&group)) {
            return Ok(());
        }
        let key = (group.clone(), edge.clone());
        match message_type {
            MessageType::NCmd | MessageType::DCmd => Ok(()),
            MessageType::NBirth => self.handle_nbirth(msg, key),
            MessageType::NDeath => {
                let payload = Payload::decode(&msg.payload, &BirthTypes::new())
                    .map_err(|source| InboundError::Payload { topic: msg.topic.clone(), source })?;
                self.check_size(msg, &payload)?;
                let bd_seq = bd_seq_of(&payload);
                let current = self.nodes.get(&key).filter(|n| n.online).and_then(|n| n.bd_seq);
                if let (Some(current), Some(bd)) = (current, bd_seq)
                    && is_current_or_newer(bd, current)
                {
                    self.node_died(&group, &edge, now.unix_ms);
                } else {
                    self.events.push_back(HostEvent::StaleDeath { group, edge_node: edge, bd_seq });
                }
                Ok(())
            }
            MessageType::DBirth | MessageType::NData | MessageType::DData | MessageType::DDeath => {
                if !self.nodes.get(&key).is_some_and(|n| n.online) {
                    self.request_rebirth(&group, &edge, RebirthReason::NoBirth, now);
                    return Ok(());
                }
                let types = if message_type == MessageType::DBirth {
                    BirthTypes::new()
                } else {
                    self.nodes[&key].types.clone()
                };
                let payload = match Payload::decode(&msg.payload, &types) {
                    Ok(p) => p,
                    Err(source) => {
                        let reason = match &source {
                            DecodeError::UnknownAlias { metric, .. }
                            | DecodeError::NoDatatype { metric } => {
                                RebirthReason::UnknownMetric(metric.clone())
                            }
                            other => RebirthReason::Malformed(other.to_string()),
                        };
                        self.request_rebirth(&group, &edge, reason, now);
                        return Err(InboundError::Payload { topic: msg.topic.clone(), source });
                    }
                };
                self.check_size(msg, &payload)?;
                self.check_seq(&key, payload.seq, now);
                let source = match &device {
                    Some(d) => format!("{group}/{edge}/{d}"),
                    None => format!("{group}/{edge}"),
                };
                let Some(node) = self.nodes.get_mut(&key) else { return Ok(()) };
                match (message_type, device) {
                    (MessageType::DBirth, Some(d)) => {
                        let limit = self.config.max_devices_per_node;
                        if !node.devices.contains_key(&d) && node.devices.len() >= limit {
                            return Err(InboundError::TooManyDevices {
                                topic: msg.topic.clone(),
                                limit,
                            });
                        }
                        let new = payload
                            .metrics
                            .iter()
                            .filter_map(|m| m.name.as_deref())
                            .filter(|n| !node.types.contains(n))
                            .count();
                        let (metrics, limit) =
                            (node.types.len() + new, self.config.max_metrics_per_node);
                        if metrics > limit {
                            return Err(InboundError::TooManyNodeMetrics {
                                topic: msg.topic.clone(),
                                metrics,
                                limit,
                            });
                        }
                        node.types.add_birth(&payload);
                        let dev = node.devices.entry(d.clone()).or_default();
                        dev.online = true;
                        self.tracked -= dev.last.len();
                        dev.last.clear();
                        self.events.push_back(HostEvent::DeviceOnline {
                            group,
                            edge_node: edge,
                            device: d.clone(),
                        });
                        self.emit(&key, Some(&d), &payload, &source);
                    }
                    (MessageType::DDeath, Some(d)) => {
                        let ts = payload.timestamp.unwrap_or(now.unix_ms);
                        // A device never seen has no values to make stale
                        // (and is not tracked for a death).
                        let stale = match node.devices.get_mut(&d) {
                            Some(dev) => {
                                dev.online = false;
                                stale_batch(&source, &dev.last, ts)
                            }
                            None => Batch::new(source.as_str()),
                        };
                        self.events.push_back(HostEvent::DeviceOffline {
                            group,
                            edge_node: edge,
                            device: d,
                        });
                        if !stale.readings.is_empty() {
                            self.events.push_back(HostEvent::Data(stale));
                        }
                    }
                    (_, d) => self.emit(&key, d.as_deref(), &payload, &source),
                }
                Ok(())
            }
        }
    }

    fn handle_state(&mut self, host_id: &str, payload: &[u8]) {
        // Our own STATE offline with this connection's timestamp is the
        // broker replaying a stale Will: say online again, same timestamp.
        if host_id != self.config.host_id || !self.config.publish_state {
            return;
        }
        if let (Ok(s), Some(ts)) = (StatePayload::from_json(payload), self.state_ts)
            && !s.online
            && s.timestamp == ts
        {
            self.transmits.push_back(self.state(true, ts));
        }
    }

    fn handle_nbirth(&mut self, msg: &Message, key: (String, String)) -> Result<(), InboundError> {
        let payload = Payload::decode(&msg.payload, &BirthTypes::new())
            .map_err(|source| InboundError::Payload { topic: msg.topic.clone(), source })?;
        self.check_size(msg, &payload)?;
        let Some(bd_seq) = bd_seq_of(&payload) else {
            return Err(InboundError::Birth {
                topic: msg.topic.clone(),
                reason: "NBIRTH without a bdSeq metric",
            });
        };
        let Some(seq) = payload.seq else {
            return Err(InboundError::Birth {
                topic: msg.topic.clone(),
                reason: "NBIRTH without seq",
            });
        };
        if !self.nodes.contains_key(&key) && self.nodes.len() >= self.config.max_nodes {
            return Err(InboundError::TooManyNodes {
                topic: msg.topic.clone(),
                limit: self.config.max_nodes,
            });
        }
        let types = BirthTypes::from_birth(&payload);
        if types.len() > self.config.max_metrics_per_node {
            return Err(InboundError::TooManyNodeMetrics {
                topic: msg.topic.clone(),
                metrics: types.len(),
                limit: self.config.max_metrics_per_node,
            });
        }
        let (group, edge) = key.clone();
        let node = self.nodes.entry(key.clone()).or_insert_with(NodeState::new);
        node.online = true;
        node.bd_seq = Some(bd_seq);
        node.expected = Some((seq as u8).wrapping_add(1));
        node.missing.clear();
        node.reorder_deadline = None;
        node.types = types;
        self.tracked -= node.last.len();
        node.last.clear();
        for d in node.devices.values_mut() {
            // Devices must birth again after their node.
            d.online = false;
        }
        self.events.push_back(HostEvent::NodeOnline {
            group: group.clone(),
            edge_node: edge.clone(),
            bd_seq,
        });
        let source = format!("{group}/{edge}");
        self.emit(&key, None, &payload, &source);
        Ok(())
    }

    /// Tracks `seq`: a jump ahead opens a gap and starts the reorder timer; a
    /// late message fills its place; a closed gap stops the timer.
    fn check_seq(&mut self, key: &(String, String), seq: Option<u64>, now: Now) {
        if self.config.share.is_some() {
            return;
        }
        let Some(node) = self.nodes.get_mut(key) else { return };
        let Some(seq) = seq.and_then(|s| u8::try_from(s).ok()) else { return };
        let Some(expected) = node.expected else {
            node.expected = Some(seq.wrapping_add(1));
            return;
        };
        let ahead = seq.wrapping_sub(expected);
        if ahead == 0 {
            node.expected = Some(seq.wrapping_add(1));
        } else if node.missing.remove(&seq) {
            // A late message filled its place.
        } else if ahead < 128 {
            for i in 0..ahead {
                node.missing.insert(expected.wrapping_add(i));
            }
            node.expected = Some(seq.wrapping_add(1));
        }
        if node.missing.is_empty() {
            node.reorder_deadline = None;
        } else if node.reorder_deadline.is_none() {
            node.reorder_deadline = Some(now.instant + self.config.reorder_timeout);
        }
    }

    /// Readings of a payload as a `Data` event, remembering each metric's
    /// last reading for staleness later. Node Control metrics and `bdSeq` are
    /// session plumbing, not process data.
    fn emit(
        &mut self,
        key: &(String, String),
        device: Option<&str>,
        payload: &Payload,
        source: &str,
    ) {
        let Some(node) = self.nodes.get_mut(key) else { return };
        // DATA of a device without a birth is tracked while the node has
        // room for one more device.
        let room = node.devices.len() < self.config.max_devices_per_node;
        let mut nowhere = HashMap::new();
        let (last, track) = match device {
            Some(d) if room || node.devices.contains_key(d) => {
                (&mut node.devices.entry(d.to_owned()).or_default().last, true)
            }
            Some(_) => (&mut nowhere, false),
            None => (&mut node.last, true),
        };
        let (mut live, mut history) = (Batch::new(source), Batch::new(source));
        let mut one = Vec::new();
        for m in payload.metrics.iter().filter(|m| !is_plumbing(m)) {
            self.skipped += readings(m, payload.timestamp, &mut one) as u64;
            for r in one.drain(..) {
                if m.is_historical {
                    history.readings.push(r);
                    continue;
                }
                match last.get_mut(r.metric.as_str()) {
                    Some(old) if r.timestamp >= old.timestamp => *old = r.clone(),
                    Some(_) => {}
                    None if track && self.tracked < self.config.max_tracked_metrics => {
                        last.insert(r.metric.to_string(), r.clone());
                        self.tracked += 1;
                    }
                    None => self.untracked += 1,
                }
                live.readings.push(r);
            }
        }
        if !history.readings.is_empty() {
            self.events.push_back(HostEvent::Historical(history));
        }
        if !live.readings.is_empty() {
            self.events.push_back(HostEvent::Data(live));
        }
    }

    fn node_died(&mut self, group: &str, edge: &str, ts: u64) {
        let Some(node) = self.nodes.get_mut(&(group.to_owned(), edge.to_owned())) else { return };
        if !node.online {
            return;
        }
        node.online = false;
        node.reorder_deadline = None;
        node.missing.clear();
        let mut batches = vec![stale_batch(&format!("{group}/{edge}"), &node.last, ts)];
        let mut devices: Vec<String> = Vec::new();
        for (d, dev) in &mut node.devices {
            if dev.online {
                dev.online = false;
                devices.push(d.clone());
                batches.push(stale_batch(&format!("{group}/{edge}/{d}"), &dev.last, ts));
            }
        }
        self.events.push_back(HostEvent::NodeOffline {
            group: group.to_owned(),
            edge_node: edge.to_owned(),
        });
        devices.sort();
        for d in devices {
            self.events.push_back(HostEvent::DeviceOffline {
                group: group.to_owned(),
                edge_node: edge.to_owned(),
                device: d,
            });
        }
        self.events
            .extend(batches.into_iter().filter(|b| !b.readings.is_empty()).map(HostEvent::Data));
    }

    fn request_rebirth(&mut self, group: &str, edge: &str, reason: RebirthReason, now: Now) {
        let key = (group.to_owned(), edge.to_owned());
        if !self.nodes.contains_key(&key) && self.nodes.len() >= self.config.max_nodes {
            return;
        }
        let node = self.nodes.entry(key).or_insert_with(NodeState::new);
        let cooldown = self.config.rebirth_cooldown;
        if node.last_rebirth_request.is_some_and(|t| now.instant < t + cooldown) {
            return;
        }
        node.last_rebirth_request = Some(now.instant);
        let p = Payload {
            timestamp: Some(now.unix_ms),
            metrics: vec![Metric::new(REBIRTH_METRIC, now.unix_ms, MetricValue::Boolean(true))],
            ..Payload::default()
        };
        self.transmits.push_back(Publish {
            topic: format!("{}/{group}/NCMD/{edge}", crate::topic::NAMESPACE),
            qos: MessageType::NCmd.qos(),
            retain: false,
            payload: p.encode(EncodeOptions::default()).into(),
        });
        self.events.push_back(HostEvent::RebirthRequested {
            group: group.to_owned(),
            edge_node: edge.to_owned(),
            reason,
        });
    }
}

/// Whether an NDEATH's `bdSeq` is the session's or a newer one (modulo 256).
/// Older is a late Will from a past session and must not kill this one. Newer
/// cannot be that: it means a later session of the node died (a birth this
/// host missed), or a peer that puts its next `bdSeq` in its explicit NDEATH
/// (pysparkplug 0.6 does); either way the node is gone.
fn is_current_or_newer(bd_seq: u64, current: u64) -> bool {
    (bd_seq as u8).wrapping_sub(current as u8) < 128
}

fn is_plumbing(m: &Metric) -> bool {
    m.name.as_deref().is_some_and(|n| {
        n == BDSEQ_METRIC || n.starts_with("Node Control/") || n.starts_with("Device Control/")
    })
}

fn bd_seq_of(p: &Payload) -> Option<u64> {
    p.metrics.iter().find(|m| m.name.as_deref() == Some(BDSEQ_METRIC)).and_then(|m| match m.value {
        Some(MetricValue::Int64(v)) => u64::try_from(v).ok(),
        Some(MetricValue::UInt64(v)) => Some(v),
        Some(MetricValue::Int32(v)) => u64::try_from(v).ok(),
        Some(MetricValue::UInt32(v)) => Some(v.into()),
        _ => None,
    })
}

/// The last readings again, stale, at `ts`.
fn stale_batch(source: &str, last: &HashMap<String, Reading>, ts: u64) -> Batch {
    let mut readings: Vec<Reading> = last
        .values()
        .map(|r| Reading {
            timestamp: Timestamp::from_unix_ms(ts),
            quality: Quality::Stale,
            ..r.clone()
        })
        .collect();
    readings.sort_by(|a, b| a.metric.cmp(&b.metric));
    Batch { source: source.into(), readings }
}
