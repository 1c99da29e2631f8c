//! The bookkeeping of one server's configured nodes, sans-IO: what each
//! node is (resolved or not, its [`MetricInfo`], monitored or not), its
//! last value, what is to be told once as a problem, and whether data
//! flows; results of the session's requests and the current time in,
//! readings, births and events out.
//!
//! The async client ([`ServerLink`](crate::client::ServerLink)) makes the
//! requests (Read, TranslateBrowsePaths, CreateMonitoredItems…) and feeds
//! their answers here, the way it feeds the
//! [`Watchdog`](crate::watchdog::Watchdog) publish responses:
//!
//! ```text
//! connect, resolve   resolved(i, NodeId or why not)        per unresolved()
//! describe           described(i, Described)               per undescribed()
//! subscribe          monitor_groups(which) → monitored(i, subscription, item, status)
//! Resync             birth(bridged(), values, now)  → Online   (data flows from now)
//! data changes       changes(data, now)             → Data     (only while online)
//! Stale              offline()                                 (no Data until the next birth)
//! node check         watched() → gone(i, status, now); missing() → resolved, back(i, status)
//! session closed     session_closed()                          (every node resolved again)
//! every turn         node_problems()                → NodeProblem, each once
//! a write            write_target(metric, value)    → the node and the value to write
//! ```
//!
//! A data change carries the source's timestamp (the server's when the
//! source gives none, the bridge's when neither does); a bad status
//! without a value repeats the last value with the bad quality, since a
//! reading needs a value.

use std::collections::BTreeMap;
use std::time::Duration;

use opcua::types::{DataValue, NodeId, StatusCode, Variant};
use shopfloor_schemas::{Batch, Quality, Reading, Timestamp, Value};
use shopfloor_sparkplug::{DataType, Now};

use crate::config::NodeConfig;
use crate::convert;

/// What a metric is, learned from the server at connect.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricInfo {
    /// The metric name.
    pub name: String,
    /// Its Sparkplug type.
    pub datatype: DataType,
    /// Its engineering unit (EUInformation's display name), if the server has one.
    pub unit: Option<String>,
    /// Its EURange, if the server has one.
    pub range: Option<(f64, f64)>,
    /// On the write allow-list.
    pub writable: bool,
}

/// What a server link tells the application.
#[derive(Clone, Debug, PartialEq)]
pub enum ServerEvent {
    /// Data flows (first time, or after an outage): every bridged metric
    /// and its current value, read just now. Publish a birth with them.
    Online {
        /// The server's name.
        server: String,
        /// The metrics, in config order (nodes that could not be bridged left out).
        metrics: Vec<MetricInfo>,
        /// Their current values (source = the server's name).
        values: Batch,
    },
    /// Readings that changed (source = the server's name).
    Data(Batch),
    /// The server is unreachable or its subscriptions are silent: every
    /// metric is stale from now (publish a death).
    Offline {
        /// The server's name.
        server: String,
        /// Why, for the log.
        reason: String,
    },
    /// The server cannot be reached or refuses the bridge, with what to do
    /// about it (an untrusted certificate and which file to move where, a
    /// wrong password, a missing endpoint). Told once per distinct
    /// problem; the link keeps trying.
    Problem {
        /// The server's name.
        server: String,
        /// What is wrong and what to do.
        problem: String,
    },
    /// A node that cannot be bridged now, once per problem: an unknown
    /// NodeId, a browse path that leads nowhere, a type with no shopfloor
    /// value. It is tried again at each reconnect.
    NodeProblem {
        /// The server's name.
        server: String,
        /// The metric.
        metric: String,
        /// What is wrong.
        problem: String,
    },
}

/// Why a write was not done.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The metric is not configured on this server.
    #[error("{0:?} is not a metric of this server")]
    Unknown(String),
    /// The metric is not on the write allow-list.
    #[error("{0:?} is not writable: set writable = true on its node to allow writes")]
    NotAllowed(String),
    /// The node is not bridged now (unresolved, or the server is away).
    #[error("{0:?} cannot be written now: its server is not connected or the node is not resolved")]
    NotConnected(String),
    /// The value does not convert to the node's type.
    #[error("{value} does not fit {metric:?}, a {datatype:?}")]
    Convert {
        /// The metric.
        metric: String,
        /// Its type.
        datatype: DataType,
        /// The value offered.
        value: String,
    },
    /// Outside the node's EURange (checked before sending: a setpoint the
    /// instrument cannot mean is refused, whatever the server would do).
    #[error("{value} is outside {metric:?}'s EURange {low}..={high}")]
    OutOfRange {
        /// The metric.
        metric: String,
        /// The value offered.
        value: f64,
        /// The range's low end.
        low: f64,
        /// The range's high end.
        high: f64,
    },
    /// The server refused it with this status.
    #[error("the server refused the write: {0}")]
    Refused(StatusCode),
    /// The request failed (timeout, connection).
    #[error("the write failed: {0}")]
    Failed(String),
}

impl WriteError {
    /// The status a [`WriteResult`](shopfloor_schemas::WriteResult) carries:
    /// the server's status code name (`BadUserAccessDenied`), `Unreachable`
    /// when the request got no answer, or `Refused` when nothing was sent.
    pub fn status(&self) -> String {
        match self {
            Self::Refused(code) => code.sub_code().to_string(),
            Self::Failed(_) => "Unreachable".into(),
            _ => shopfloor_schemas::WriteResult::REFUSED.into(),
        }
    }
}

/// One configured node and what is known of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    config: NodeConfig,
    node_id: Option<NodeId>,
    monitored: Option<(u32, u32)>,
    info: Option<MetricInfo>,
    last: Option<Value>,
    problem: Option<String>,
    /// The problem last told as a [`ServerEvent::NodeProblem`].
    told: Option<String>,
}

impl Item {
    /// Its configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Its NodeId on this session, once resolved.
    pub fn node_id(&self) -> Option<&NodeId> {
        self.node_id.as_ref()
    }

    /// Its subscription and monitored item ids, while monitored.
    pub fn monitored(&self) -> Option<(u32, u32)> {
        self.monitored
    }

    /// What it is, once described: only such nodes are bridged.
    pub fn info(&self) -> Option<&MetricInfo> {
        self.info.as_ref()
    }

    /// Its last value.
    pub fn last(&self) -> Option<&Value> {
        self.last.as_ref()
    }

    /// Why it cannot be bridged now, if it cannot.
    pub fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }
}

/// What the server said a node is: the answers to the Read of its Value,
/// DataType and ValueRank attributes, and its EngineeringUnits and
/// EURange properties where it has them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Described {
    /// Its Value attribute.
    pub value: DataValue,
    /// Its DataType attribute.
    pub data_type: DataValue,
    /// Its ValueRank attribute.
    pub value_rank: DataValue,
    /// Its engineering unit's display name.
    pub unit: Option<String>,
    /// Its EURange.
    pub range: Option<(f64, f64)>,
}

/// A monitored node the server no longer has.
#[derive(Clone, Debug, PartialEq)]
pub struct Gone {
    /// The subscription and monitored item to delete.
    pub monitored: Option<(u32, u32)>,
    /// Its last value, now bad (none if it never had one).
    pub reading: Option<Reading>,
}

/// The configured nodes of one server.
#[derive(Clone, Debug, PartialEq)]
pub struct Items {
    server: String,
    items: Vec<Item>,
    /// Data flows: births were sent and no Stale since.
    online: bool,
    /// The server problem told last, so that each is told once.
    told: Option<String>,
}

impl Items {
    /// The nodes of `server`, none resolved yet, offline.
    pub fn new(server: &str, nodes: &[NodeConfig]) -> Self {
        let items = nodes
            .iter()
            .map(|n| Item {
                config: n.clone(),
                node_id: None,
                monitored: None,
                info: None,
                last: None,
                problem: None,
                told: None,
            })
            .collect();
        Self { server: server.to_owned(), items, online: false, told: None }
    }

    /// Node `i`, in config order.
    pub fn get(&self, i: usize) -> Option<&Item> {
        self.items.get(i)
    }

    /// The nodes, in config order.
    pub fn iter(&self) -> impl Iterator<Item = &Item> {
        self.items.iter()
    }

    /// How many nodes there are.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// No nodes at all.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Data flows (a birth was made and no [`offline`](Self::offline) since).
    pub fn is_online(&self) -> bool {
        self.online
    }

    fn which(&self, f: impl Fn(&Item) -> bool) -> Vec<usize> {
        (0..self.items.len()).filter(|&i| f(&self.items[i])).collect()
    }

    /// The nodes without a NodeId on this session.
    pub fn unresolved(&self) -> Vec<usize> {
        self.which(|i| i.node_id.is_none())
    }

    /// The resolved nodes not described yet.
    pub fn undescribed(&self) -> Vec<usize> {
        self.which(|i| i.node_id.is_some() && i.info.is_none())
    }

    /// The described nodes: those a birth names.
    pub fn bridged(&self) -> Vec<usize> {
        self.which(|i| i.info.is_some())
    }

    /// The monitored nodes.
    pub fn watched(&self) -> Vec<usize> {
        self.which(|i| i.monitored.is_some())
    }

    /// The nodes not monitored.
    pub fn missing(&self) -> Vec<usize> {
        self.which(|i| i.monitored.is_none())
    }

    /// Node `i` resolved to a NodeId, or why not.
    pub fn resolved(&mut self, i: usize, result: Result<NodeId, String>) {
        let Some(item) = self.items.get_mut(i) else { return };
        match result {
            Ok(id) => {
                item.node_id = Some(id);
                item.problem = None;
            }
            Err(e) => item.problem = Some(format!("{}: {e}", item.config.node)),
        }
    }

    /// What node `i` is: its type from its value, else from its DataType
    /// (an array when its ValueRank is 0 or more); a node the server does
    /// not have is unresolved again, a type with no shopfloor value is a
    /// problem.
    pub fn described(&mut self, i: usize, d: Described) {
        let Some(item) = self.items.get_mut(i) else { return };
        let rank = match d.value_rank.value {
            Some(Variant::Int32(r)) => r,
            _ => -1,
        };
        let from_value = d.value.value.as_ref().and_then(convert::datatype);
        let from_type = match d.data_type.value.as_ref() {
            Some(Variant::NodeId(id)) if id.namespace == 0 => match id.identifier {
                opcua::types::Identifier::Numeric(n) => convert::datatype_of_type_id(n, rank >= 0),
                _ => None,
            },
            _ => None,
        };
        match from_value.or(from_type) {
            Some(datatype) => {
                item.info = Some(MetricInfo {
                    name: item.config.metric.clone(),
                    datatype,
                    unit: d.unit,
                    range: d.range,
                    writable: item.config.writable,
                });
            }
            None if d.value.status.is_some_and(|s| s == StatusCode::BadNodeIdUnknown) => {
                item.problem = Some(format!("{}: the server has no such node", item.config.node));
                item.node_id = None;
            }
            None => {
                let what = d
                    .value
                    .value
                    .as_ref()
                    .and_then(|v| convert::value(v).err())
                    .map_or_else(|| "its type is not known".to_owned(), |e| e.to_string());
                item.problem = Some(format!("{}: {what}", item.config.node));
            }
        }
    }

    /// Before (re)subscribing: no node is monitored.
    pub fn unmonitor_all(&mut self) {
        for item in &mut self.items {
            item.monitored = None;
        }
    }

    /// Which of `which` can be monitored (resolved and described), by
    /// publishing interval: one subscription each.
    pub fn monitor_groups(&self, which: &[usize]) -> BTreeMap<Duration, Vec<usize>> {
        let mut groups: BTreeMap<Duration, Vec<usize>> = BTreeMap::new();
        for &i in which {
            if let Some(item) = self.items.get(i)
                && item.info.is_some()
                && item.node_id.is_some()
            {
                groups.entry(item.config.publishing_interval).or_default().push(i);
            }
        }
        groups
    }

    /// The server's answer to monitoring node `i` in `subscription`: good,
    /// it is monitored as `item`; refused, a problem (and unresolved again
    /// if the server has no such node).
    pub fn monitored(&mut self, i: usize, subscription: u32, item: u32, status: StatusCode) {
        let Some(it) = self.items.get_mut(i) else { return };
        if status.is_good() {
            it.monitored = Some((subscription, item));
            it.problem = None;
        } else {
            it.problem =
                Some(format!("{}: the server refused to monitor it: {status}", it.config.node));
            if status == StatusCode::BadNodeIdUnknown {
                it.node_id = None;
            }
        }
    }

    /// The node check read monitored node `i`'s NodeClass with this
    /// status: if the server no longer has it, it is unmonitored and
    /// unresolved, and its last value goes bad now.
    pub fn gone(&mut self, i: usize, status: Option<StatusCode>, now: Now) -> Option<Gone> {
        let status = status.unwrap_or(StatusCode::Good);
        if status != StatusCode::BadNodeIdUnknown && status != StatusCode::BadNodeIdInvalid {
            return None;
        }
        let item = self.items.get_mut(i)?;
        let monitored = item.monitored.take();
        item.problem = Some(format!("{}: the server no longer has this node", item.config.node));
        item.node_id = None;
        let reading = item.last.clone().map(|value| Reading {
            metric: item.config.metric.as_str().into(),
            timestamp: Timestamp::from_unix_ms(now.unix_ms),
            value,
            quality: Quality::Bad,
        });
        Some(Gone { monitored, reading })
    }

    /// The node check read missing node `i`'s NodeClass with this status:
    /// `true` when it exists (monitor it), else it is unresolved again.
    pub fn back(&mut self, i: usize, status: Option<StatusCode>) -> bool {
        let Some(item) = self.items.get_mut(i) else { return false };
        if status.is_none_or(|s| s.is_good()) {
            true
        } else {
            item.node_id = None;
            false
        }
    }

    /// The session was closed: NodeIds are resolved again on the next.
    pub fn session_closed(&mut self) {
        for item in &mut self.items {
            item.node_id = None;
        }
    }

    /// Data flows again: `values` are the current values read of the
    /// nodes `live` (as [`bridged`](Self::bridged) gave them). Returns the
    /// birth: every bridged metric in config order with a reading each
    /// (a bad placeholder of its type for one with no value yet). Online
    /// from now, and any server problem may be told again.
    pub fn birth(&mut self, live: &[usize], values: &[DataValue], now: Now) -> ServerEvent {
        let now_ts = Timestamp::from_unix_ms(now.unix_ms);
        let mut metrics = Vec::new();
        let mut batch = Batch::new(self.server.as_str());
        for (&i, dv) in live.iter().zip(values) {
            let Some(item) = self.items.get_mut(i) else { continue };
            let Some(info) = item.info.clone() else { continue };
            let datatype = info.datatype;
            metrics.push(info);
            match reading(item, dv, now_ts) {
                Some(r) => batch.readings.push(r),
                None => batch.readings.push(Reading {
                    metric: item.config.metric.as_str().into(),
                    timestamp: now_ts,
                    value: placeholder(datatype),
                    quality: Quality::Bad,
                }),
            }
        }
        self.online = true;
        self.told = None;
        ServerEvent::Online { server: self.server.clone(), metrics, values: batch }
    }

    /// Data no longer flows (the watchdog's Stale): no readings until the
    /// next [`birth`](Self::birth).
    pub fn offline(&mut self) {
        self.online = false;
    }

    /// Data changes of nodes (by index) as readings, while online; `None`
    /// when offline or none gives a reading.
    pub fn changes(
        &mut self,
        data: impl IntoIterator<Item = (usize, DataValue)>,
        now: Now,
    ) -> Option<Batch> {
        if !self.online {
            return None;
        }
        let now_ts = Timestamp::from_unix_ms(now.unix_ms);
        let mut batch = Batch::new(self.server.as_str());
        for (i, dv) in data {
            let Some(item) = self.items.get_mut(i) else { continue };
            if let Some(r) = reading(item, &dv, now_ts) {
                batch.readings.push(r);
            }
        }
        (!batch.readings.is_empty()).then_some(batch)
    }

    /// A problem of the server (cannot connect, refused): the event to
    /// send, unless it is the one told last.
    pub fn server_problem(&mut self, problem: String) -> Option<ServerEvent> {
        if self.told.as_deref() == Some(problem.as_str()) {
            return None;
        }
        self.told = Some(problem.clone());
        Some(ServerEvent::Problem { server: self.server.clone(), problem })
    }

    /// The node problems not told yet, each once until it changes.
    pub fn node_problems(&mut self) -> Vec<ServerEvent> {
        let mut out = Vec::new();
        for item in &mut self.items {
            if let Some(p) = &item.problem
                && item.told.as_ref() != Some(p)
            {
                item.told = Some(p.clone());
                out.push(ServerEvent::NodeProblem {
                    server: self.server.clone(),
                    metric: item.config.metric.clone(),
                    problem: p.clone(),
                });
            }
        }
        out
    }

    /// Checks a write of `value` to `metric`: configured, on the
    /// allow-list, bridged now, of a type that fits and inside the EURange.
    /// Returns the node and the value to write.
    pub fn write_target(
        &self,
        metric: &str,
        value: &Value,
    ) -> Result<(NodeId, Variant), WriteError> {
        let Some(item) = self.items.iter().find(|i| i.config.metric == metric) else {
            return Err(WriteError::Unknown(metric.to_owned()));
        };
        if !item.config.writable {
            return Err(WriteError::NotAllowed(metric.to_owned()));
        }
        let (Some(node_id), Some(info), true) =
            (item.node_id.clone(), item.info.as_ref(), self.online)
        else {
            return Err(WriteError::NotConnected(metric.to_owned()));
        };
        let Some(variant) = convert::to_variant(info.datatype, value) else {
            return Err(WriteError::Convert {
                metric: metric.to_owned(),
                datatype: info.datatype,
                value: format!("{value:?}"),
            });
        };
        if let (Some((low, high)), Some(x)) = (info.range, value.as_f64())
            && !matches!(value, Value::Bool(_))
            && low <= high
            && !(low..=high).contains(&x)
        {
            return Err(WriteError::OutOfRange { metric: metric.to_owned(), value: x, low, high });
        }
        Ok((node_id, variant))
    }
}

/// A data change as a reading; a bad status with no value repeats the
/// last value with the bad quality (a reading needs a value).
fn reading(item: &mut Item, dv: &DataValue, now: Timestamp) -> Option<Reading> {
    let s = convert::sample(dv, now);
    if let Some(u) = s.unsupported {
        item.problem = Some(u.to_string());
    }
    let value = match s.value {
        Some(v) => {
            item.last = Some(v.clone());
            v
        }
        None => item.last.clone()?,
    };
    Some(Reading {
        metric: item.config.metric.as_str().into(),
        timestamp: s.timestamp,
        value,
        quality: s.quality,
    })
}

/// A value of type `t` for a birth that has none yet.
fn placeholder(t: DataType) -> Value {
    match t {
        DataType::Boolean => Value::Bool(false),
        DataType::String | DataType::Text => Value::String(String::new()),
        DataType::Bytes => Value::Bytes(Vec::new().into()),
        DataType::UInt64 => Value::U64(0),
        DataType::Float | DataType::Double => Value::F64(0.0),
        _ => Value::I64(0),
    }
}

#[cfg(test)]
mod tests {

    use opcua::types::{DateTime, DateTimeUtc};
    use proptest::prelude::*;

    use super::*;
    use crate::config::{Deadband, Namespace, NodeRef};

    fn node(metric: &str, interval_ms: u64, writable: bool) -> NodeConfig {
        NodeConfig {
            metric: metric.into(),
            node: NodeRef::Id { namespace: Namespace::Index(2), identifier: format!("s={metric}") },
            sampling_interval: Duration::from_millis(100),
            queue_size: 10,
            publishing_interval: Duration::from_millis(interval_ms),
            deadband: Deadband::None,
            writable,
        }
    }

    /// Server "plc" with these nodes (metric, publishing interval in ms, writable).
    fn plc(nodes: &[(&str, u64, bool)]) -> Items {
        let nodes: Vec<NodeConfig> = nodes.iter().map(|&(m, ms, w)| node(m, ms, w)).collect();
        Items::new("plc", &nodes)
    }

    fn at(unix_ms: u64) -> Now {
        Now::at_unix_ms(unix_ms)
    }

    fn id(n: u32) -> NodeId {
        NodeId::new(2, n)
    }

    fn of(v: Variant) -> Described {
        Described { value: DataValue::value_only(v), ..Described::default() }
    }

    fn change(v: Option<Variant>, status: StatusCode, source_ms: Option<i64>) -> DataValue {
        DataValue {
            value: v,
            status: Some(status),
            source_timestamp: source_ms
                .and_then(DateTimeUtc::from_timestamp_millis)
                .map(DateTime::from),
            ..DataValue::null()
        }
    }

    /// Three nodes (a writable Double at 1 s, an Int32 at 1 s, a String
    /// at 5 s), resolved, described and monitored.
    fn bridged() -> Items {
        let mut items = plc(&[("temp", 1000, true), ("count", 1000, false), ("mode", 5000, false)]);
        let variants = [Variant::Double(1.0), Variant::Int32(1), Variant::from("auto")];
        for (i, v) in variants.into_iter().enumerate() {
            items.resolved(i, Ok(id(i as u32)));
            items.described(i, of(v));
            items.monitored(i, 1, i as u32 + 10, StatusCode::Good);
        }
        items
    }

    /// A batch's readings as (metric, time, value, quality).
    fn seen(batch: &Batch) -> Vec<(&str, u64, Value, Quality)> {
        batch
            .readings
            .iter()
            .map(|r| (r.metric.as_str(), r.timestamp.unix_ms(), r.value.clone(), r.quality))
            .collect()
    }

    fn online() -> Items {
        let mut items = bridged();
        let live = items.bridged();
        let values: Vec<DataValue> = live.iter().map(|_| DataValue::null()).collect();
        items.birth(&live, &values, at(1_000));
        items
    }

    #[test]
    fn resolving_keeps_the_node_id_or_says_why_not() {
        let mut items = plc(&[("a", 1000, false), ("b", 1000, false)]);
        assert_eq!(items.unresolved(), [0, 1]);
        items.resolved(0, Ok(id(1)));
        items.resolved(1, Err("the server has no namespace \"x\"".into()));
        items.resolved(7, Ok(id(7)));
        assert_eq!(items.unresolved(), [1]);
        assert_eq!(items.get(0).and_then(Item::node_id), Some(&id(1)));
        assert_eq!(
            items.get(1).and_then(Item::problem),
            Some("ns=2;s=b: the server has no namespace \"x\"")
        );
        // Resolved later: the problem is over.
        items.resolved(1, Ok(id(2)));
        assert_eq!((items.unresolved(), items.get(1).and_then(Item::problem)), (vec![], None));
        assert_eq!(items.undescribed(), [0, 1]);
        items.session_closed();
        assert_eq!(items.unresolved(), [0, 1], "a new session resolves again");
    }

    #[test]
    fn a_node_is_described_by_its_value_else_its_data_type() {
        let mut items = plc(&[
            ("v", 1000, true),
            ("t", 1000, false),
            ("arr", 1000, false),
            ("gone", 1000, false),
            ("odd", 1000, false),
            ("unknown", 1000, false),
        ]);
        for i in 0..items.len() {
            items.resolved(i, Ok(id(i as u32)));
        }
        items.described(
            0,
            Described {
                unit: Some("°C".into()),
                range: Some((0.0, 100.0)),
                ..of(Variant::Float(1.5))
            },
        );
        let double_type = Variant::NodeId(Box::new(NodeId::new(0, 11_u32)));
        let bad_value =
            DataValue { status: Some(StatusCode::BadWaitingForInitialData), ..DataValue::null() };
        items.described(
            1,
            Described {
                value: bad_value.clone(),
                data_type: DataValue::value_only(double_type.clone()),
                ..Described::default()
            },
        );
        items.described(
            2,
            Described {
                value: bad_value,
                data_type: DataValue::value_only(double_type),
                value_rank: DataValue::value_only(Variant::Int32(1)),
                ..Described::default()
            },
        );
        items.described(
            3,
            Described {
                value: DataValue {
                    status: Some(StatusCode::BadNodeIdUnknown),
                    ..DataValue::null()
                },
                ..Described::default()
            },
        );
        items.described(4, of(Variant::NodeId(Box::new(NodeId::new(1, 1_u32)))));
        items.described(5, Described::default());
        items.described(9, of(Variant::Double(1.0)));
        let info = |i: usize| items.get(i).and_then(Item::info).cloned();
        assert_eq!(
            info(0),
            Some(MetricInfo {
                name: "v".into(),
                datatype: DataType::Float,
                unit: Some("°C".into()),
                range: Some((0.0, 100.0)),
                writable: true,
            })
        );
        assert_eq!(info(1).map(|m| m.datatype), Some(DataType::Double));
        assert_eq!(info(2).map(|m| m.datatype), Some(DataType::String), "arrays are text");
        assert_eq!(items.bridged(), [0, 1, 2]);
        let problem = |i: usize| items.get(i).and_then(Item::problem).unwrap_or_default();
        assert_eq!(problem(3), "ns=2;s=gone: the server has no such node");
        assert_eq!(items.unresolved(), [3], "an unknown node is resolved again");
        assert!(problem(4).starts_with("ns=2;s=odd: ") && problem(4).contains("NodeId"));
        assert_eq!(problem(5), "ns=2;s=unknown: its type is not known");
    }

    #[test]
    fn monitoring_groups_by_interval_and_keeps_the_servers_answer() {
        let mut items =
            plc(&[("a", 1000, false), ("b", 5000, false), ("c", 1000, false), ("d", 1000, false)]);
        for i in 0..3 {
            items.resolved(i, Ok(id(i as u32)));
            items.described(i, of(Variant::Double(0.0)));
        }
        items.resolved(3, Ok(id(3)));
        let groups = items.monitor_groups(&[0, 1, 2, 3, 99]);
        assert_eq!(
            groups.into_iter().collect::<Vec<_>>(),
            [(Duration::from_secs(1), vec![0, 2]), (Duration::from_secs(5), vec![1])],
            "undescribed and unknown nodes are left out"
        );
        items.monitored(0, 1, 100, StatusCode::Good);
        items.monitored(1, 2, 101, StatusCode::BadFilterNotAllowed);
        items.monitored(2, 1, 102, StatusCode::BadNodeIdUnknown);
        items.monitored(42, 1, 1, StatusCode::Good);
        assert_eq!(items.get(0).and_then(Item::monitored), Some((1, 100)));
        assert_eq!(items.watched(), [0]);
        assert_eq!(items.missing(), [1, 2, 3]);
        assert_eq!(
            items.get(1).and_then(Item::problem),
            Some("ns=2;s=b: the server refused to monitor it: BadFilterNotAllowed")
        );
        assert!(items.get(1).and_then(Item::node_id).is_some(), "refused, still resolved");
        assert_eq!(items.unresolved(), [2], "an unknown node is resolved again");
        // Monitored after all: the problem is over.
        items.monitored(1, 2, 103, StatusCode::Good);
        assert_eq!(items.get(1).and_then(Item::problem), None);
        items.unmonitor_all();
        assert_eq!(items.watched(), Vec::<usize>::new());
    }

    #[test]
    fn a_birth_names_every_bridged_metric_with_a_value_of_its_type() {
        let mut items = bridged();
        items.resolved(3, Ok(id(3)));
        let live = items.bridged();
        assert_eq!(live, [0, 1, 2]);
        let values = [
            change(Some(Variant::Double(21.5)), StatusCode::Good, Some(900)),
            change(None, StatusCode::BadSensorFailure, None),
            change(None, StatusCode::BadWaitingForInitialData, None),
        ];
        assert!(!items.is_online());
        let ServerEvent::Online { server, metrics, values } =
            items.birth(&live, &values, at(1_000))
        else {
            panic!("a birth is Online")
        };
        assert!(items.is_online());
        assert_eq!(server, "plc");
        let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["temp", "count", "mode"]);
        assert_eq!(values.source.as_str(), "plc");
        assert_eq!(
            seen(&values),
            [
                ("temp", 900, Value::F64(21.5), Quality::Good),
                ("count", 1_000, Value::I64(0), Quality::Bad),
                ("mode", 1_000, Value::String(String::new()), Quality::Bad),
            ]
        );
        assert_eq!(items.get(0).and_then(Item::last), Some(&Value::F64(21.5)));
        assert_eq!(items.get(1).and_then(Item::last), None, "a placeholder is no value");
    }

    #[test]
    fn placeholders_have_the_metrics_type() {
        use DataType as T;
        let cases = [
            (T::Boolean, Value::Bool(false)),
            (T::String, Value::String(String::new())),
            (T::Text, Value::String(String::new())),
            (T::Bytes, Value::Bytes(Vec::new().into())),
            (T::UInt64, Value::U64(0)),
            (T::Float, Value::F64(0.0)),
            (T::Double, Value::F64(0.0)),
            (T::Int32, Value::I64(0)),
            (T::UInt32, Value::I64(0)),
        ];
        for (t, want) in cases {
            assert_eq!(placeholder(t), want, "{t:?}");
        }
    }

    #[test]
    fn data_changes_are_readings_only_while_online() {
        let mut items = bridged();
        let good = || vec![(0, change(Some(Variant::Double(2.0)), StatusCode::Good, Some(1_500)))];
        assert_eq!(items.changes(good(), at(2_000)), None, "no readings before the birth");
        let live = items.bridged();
        items.birth(&live, &[], at(2_000));
        let batch = items.changes(good(), at(2_000)).expect("online");
        assert_eq!(batch.source.as_str(), "plc");
        assert_eq!(
            batch.readings,
            [Reading {
                metric: "temp".into(),
                timestamp: Timestamp::from_unix_ms(1_500),
                value: Value::F64(2.0),
                quality: Quality::Good,
            }]
        );
        items.offline();
        assert_eq!(items.changes(good(), at(3_000)), None, "stale: nothing until the next birth");
    }

    #[test]
    fn a_bad_change_without_a_value_repeats_the_last_value() {
        let mut items = online();
        let batch = items.changes(
            [
                // Never had a value: nothing to say.
                (1, change(None, StatusCode::BadSensorFailure, Some(1_100))),
                (0, change(Some(Variant::Double(4.0)), StatusCode::Good, Some(1_200))),
                (0, change(None, StatusCode::BadSensorFailure, None)),
                (0, change(None, StatusCode::UncertainLastUsableValue, Some(1_400))),
                // Unknown items are left out.
                (3, change(Some(Variant::Double(1.0)), StatusCode::Good, None)),
                (usize::MAX, change(None, StatusCode::Good, None)),
            ],
            at(1_300),
        );
        assert_eq!(
            seen(&batch.expect("readings")),
            [
                ("temp", 1_200, Value::F64(4.0), Quality::Good),
                ("temp", 1_300, Value::F64(4.0), Quality::Bad),
                ("temp", 1_400, Value::F64(4.0), Quality::Uncertain),
            ]
        );
        assert_eq!(
            items.changes([(1, change(None, StatusCode::BadSensorFailure, None))], at(1_500)),
            None,
            "no reading: no batch"
        );
    }

    #[test]
    fn a_value_with_no_shopfloor_type_is_bad_and_a_node_problem_once() {
        let mut items = online();
        items.changes([(2, change(Some(Variant::from("manual")), StatusCode::Good, None))], at(1));
        let odd = Variant::NodeId(Box::new(NodeId::new(1, 1_u32)));
        let batch = items.changes([(2, change(Some(odd.clone()), StatusCode::Good, None))], at(2));
        let r = &batch.expect("the last value, bad").readings[0];
        assert_eq!((&r.value, r.quality), (&Value::String("manual".into()), Quality::Bad));
        let problems = items.node_problems();
        assert_eq!(problems.len(), 1);
        let ServerEvent::NodeProblem { server, metric, problem } = &problems[0] else {
            panic!("{problems:?}")
        };
        assert_eq!((server.as_str(), metric.as_str()), ("plc", "mode"));
        assert!(problem.contains("NodeId"), "{problem}");
        items.changes([(2, change(Some(odd), StatusCode::Good, None))], at(3));
        assert_eq!(items.node_problems(), [], "told once");
    }

    #[test]
    fn node_problems_are_told_once_each_until_they_change() {
        let mut items = plc(&[("a", 1000, false), ("b", 1000, false)]);
        assert_eq!(items.node_problems(), []);
        items.resolved(0, Err("no".into()));
        items.resolved(1, Err("no".into()));
        let metrics = |events: Vec<ServerEvent>| -> Vec<(String, String)> {
            events
                .into_iter()
                .filter_map(|e| match e {
                    ServerEvent::NodeProblem { metric, problem, .. } => Some((metric, problem)),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(
            metrics(items.node_problems()),
            [("a".into(), "ns=2;s=a: no".into()), ("b".into(), "ns=2;s=b: no".into())]
        );
        items.resolved(0, Err("no".into()));
        assert_eq!(items.node_problems(), [], "the same problem again: not told");
        items.resolved(0, Err("still no".into()));
        assert_eq!(metrics(items.node_problems()), [("a".into(), "ns=2;s=a: still no".into())]);
    }

    #[test]
    fn server_problems_are_told_once_until_data_flows() {
        let mut items = bridged();
        let told = |e: Option<ServerEvent>| match e {
            Some(ServerEvent::Problem { server, problem }) => Some((server, problem)),
            _ => None,
        };
        assert_eq!(
            told(items.server_problem("refused".into())),
            Some(("plc".into(), "refused".into()))
        );
        assert_eq!(told(items.server_problem("refused".into())), None);
        assert_eq!(
            told(items.server_problem("untrusted".into())),
            Some(("plc".into(), "untrusted".into()))
        );
        assert_eq!(
            told(items.server_problem("refused".into())),
            Some(("plc".into(), "refused".into()))
        );
        items.birth(&[], &[], at(1));
        assert_eq!(
            told(items.server_problem("refused".into())),
            Some(("plc".into(), "refused".into())),
            "after a birth, a problem is news again"
        );
    }

    #[test]
    fn a_deleted_node_goes_bad_with_its_last_value() {
        let mut items = online();
        items.changes([(0, change(Some(Variant::Double(7.0)), StatusCode::Good, Some(5)))], at(5));
        assert_eq!(items.gone(0, None, at(10)), None, "Good: still there");
        assert_eq!(items.gone(0, Some(StatusCode::BadTimeout), at(10)), None);
        assert_eq!(
            items.gone(0, Some(StatusCode::BadNodeIdUnknown), at(10)),
            Some(Gone {
                monitored: Some((1, 10)),
                reading: Some(Reading {
                    metric: "temp".into(),
                    timestamp: Timestamp::from_unix_ms(10),
                    value: Value::F64(7.0),
                    quality: Quality::Bad,
                }),
            })
        );
        let item = items.get(0).expect("configured");
        assert_eq!((item.monitored(), item.node_id()), (None, None));
        assert_eq!(item.problem(), Some("ns=2;s=temp: the server no longer has this node"));
        assert_eq!(
            items.gone(1, Some(StatusCode::BadNodeIdInvalid), at(11)),
            Some(Gone { monitored: Some((1, 11)), reading: None }),
            "never had a value: nothing to make bad"
        );
        assert_eq!(items.gone(9, Some(StatusCode::BadNodeIdUnknown), at(11)), None);
        assert_eq!(items.missing(), [0, 1]);
        // Back: resolved again and found.
        items.resolved(0, Ok(id(0)));
        assert!(items.back(0, None));
        assert!(items.back(0, Some(StatusCode::Good)));
        assert!(!items.back(0, Some(StatusCode::BadNodeIdUnknown)));
        assert_eq!(items.get(0).and_then(Item::node_id), None, "not there: resolved again");
        assert!(!items.back(9, None));
    }

    #[test]
    fn writes_are_checked_before_they_are_sent() {
        let mut items =
            plc(&[("setpoint", 1000, true), ("count", 1000, false), ("flag", 1000, true)]);
        let write = |items: &Items, m: &str, v: Value| items.write_target(m, &v);
        assert_eq!(write(&items, "nope", Value::I64(1)), Err(WriteError::Unknown("nope".into())));
        assert_eq!(
            write(&items, "count", Value::I64(1)),
            Err(WriteError::NotAllowed("count".into()))
        );
        assert_eq!(
            write(&items, "setpoint", Value::F64(1.0)),
            Err(WriteError::NotConnected("setpoint".into())),
            "not resolved"
        );
        items.resolved(0, Ok(id(0)));
        items.described(0, Described { range: Some((0.0, 100.0)), ..of(Variant::Double(1.0)) });
        items.resolved(2, Ok(id(2)));
        items.described(2, Described { range: Some((0.0, 1.0)), ..of(Variant::Boolean(true)) });
        assert_eq!(
            write(&items, "setpoint", Value::F64(1.0)),
            Err(WriteError::NotConnected("setpoint".into())),
            "not online"
        );
        items.birth(&[], &[], at(1));
        assert_eq!(write(&items, "setpoint", Value::F64(50.0)), Ok((id(0), Variant::Double(50.0))));
        assert_eq!(write(&items, "setpoint", Value::I64(100)), Ok((id(0), Variant::Double(100.0))));
        assert_eq!(
            write(&items, "setpoint", Value::F64(100.5)),
            Err(WriteError::OutOfRange {
                metric: "setpoint".into(),
                value: 100.5,
                low: 0.0,
                high: 100.0
            })
        );
        assert!(matches!(
            write(&items, "setpoint", Value::String("x".into())),
            Err(WriteError::Convert { datatype: DataType::Double, .. })
        ));
        assert_eq!(
            write(&items, "flag", Value::Bool(true)),
            Ok((id(2), Variant::Boolean(true))),
            "a boolean is never out of range"
        );
        items.offline();
        assert_eq!(
            write(&items, "setpoint", Value::F64(1.0)),
            Err(WriteError::NotConnected("setpoint".into()))
        );
    }

    /// What the shell may feed the core.
    #[derive(Clone, Debug)]
    enum Op {
        Resolve(usize, bool),
        Describe(usize, u8),
        Monitor(usize, bool),
        Data(Vec<(usize, Option<u8>, u8, Option<i64>)>),
        Birth(Vec<(Option<u8>, u8)>),
        Offline,
        Gone(usize, u8),
        Back(usize, u8),
        SessionClosed,
        Problems,
        Unmonitor,
    }

    fn variant(k: u8) -> Variant {
        match k % 5 {
            0 => Variant::Double(f64::from(k)),
            1 => Variant::Int32(i32::from(k)),
            2 => Variant::Boolean(k.is_multiple_of(2)),
            3 => Variant::from(format!("s{k}")),
            _ => Variant::NodeId(Box::new(NodeId::new(1, u32::from(k)))),
        }
    }

    fn status(k: u8) -> StatusCode {
        [
            StatusCode::Good,
            StatusCode::UncertainLastUsableValue,
            StatusCode::BadSensorFailure,
            StatusCode::BadNodeIdUnknown,
            StatusCode::BadNodeIdInvalid,
            StatusCode::BadCommunicationError,
        ][usize::from(k) % 6]
    }

    fn op() -> impl Strategy<Value = Op> {
        let i = 0_usize..5;
        prop_oneof![
            (i.clone(), any::<bool>()).prop_map(|(i, ok)| Op::Resolve(i, ok)),
            (i.clone(), any::<u8>()).prop_map(|(i, k)| Op::Describe(i, k)),
            (i.clone(), any::<bool>()).prop_map(|(i, ok)| Op::Monitor(i, ok)),
            proptest::collection::vec(
                (
                    0_usize..5,
                    proptest::option::of(any::<u8>()),
                    any::<u8>(),
                    proptest::option::of(-10_i64..100_000)
                ),
                0..6
            )
            .prop_map(Op::Data),
            proptest::collection::vec((proptest::option::of(any::<u8>()), any::<u8>()), 0..5)
                .prop_map(Op::Birth),
            Just(Op::Offline),
            (i.clone(), any::<u8>()).prop_map(|(i, k)| Op::Gone(i, k)),
            (i, any::<u8>()).prop_map(|(i, k)| Op::Back(i, k)),
            Just(Op::SessionClosed),
            Just(Op::Problems),
            Just(Op::Unmonitor),
        ]
    }

    proptest! {
        /// Any sequence of answers, data changes, statuses, births and
        /// reconnects: no panic; readings only while online, only of
        /// configured metrics, each the change's value (or the last one
        /// when it has none) with the change's quality (bad when its
        /// value has no shopfloor type); a birth names exactly the
        /// bridged metrics in config order; each node problem told once.
        #[test]
        fn the_bookkeeping_holds_whatever_the_session_says(ops in proptest::collection::vec(op(), 1..60)) {
            let nodes = [node("a", 1000, true), node("b", 1000, false), node("c", 2000, true)];
            let mut items = Items::new("plc", &nodes);
            // The model: each node's last value.
            let mut last: Vec<Option<Value>> = vec![None; nodes.len()];
            let mut online = false;
            let mut clock = 0_u64;
            let expect = |i: usize, dv: &DataValue, last: &mut Vec<Option<Value>>| -> Option<(Value, Quality)> {
                let slot = last.get_mut(i)?;
                let converted = dv.value.as_ref().map(convert::value);
                let quality = match converted {
                    Some(Err(_)) => Quality::Bad,
                    _ => convert::quality(dv.status.unwrap_or(StatusCode::Good)),
                };
                if let Some(Ok(v)) = converted {
                    *slot = Some(v);
                }
                slot.clone().map(|v| (v, quality))
            };
            for op in ops {
                clock += 7;
                let now = at(clock);
                match op {
                    Op::Resolve(i, ok) => {
                        items.resolved(i, if ok { Ok(id(i as u32)) } else { Err("no".into()) });
                    }
                    Op::Describe(i, k) => items.described(i, of(variant(k))),
                    Op::Monitor(i, ok) => {
                        items.monitored(i, 1, i as u32, if ok { StatusCode::Good } else { StatusCode::BadNodeIdUnknown });
                    }
                    Op::Data(changes) => {
                        let data: Vec<(usize, DataValue)> = changes
                            .iter()
                            .map(|&(i, v, s, ts)| (i, change(v.map(variant), status(s), ts)))
                            .collect();
                        let mut want = Vec::new();
                        if online {
                            for (i, dv) in &data {
                                if let Some((v, q)) = expect(*i, dv, &mut last) {
                                    want.push((nodes[*i].metric.clone(), v, q));
                                }
                            }
                        }
                        let got = items.changes(data, now);
                        prop_assert!(online || got.is_none(), "readings while offline");
                        let got: Vec<(String, Value, Quality)> = got
                            .map(|b| b.readings.into_iter().map(|r| (r.metric.to_string(), r.value, r.quality)).collect())
                            .unwrap_or_default();
                        prop_assert_eq!(got, want);
                    }
                    Op::Birth(values) => {
                        let live = items.bridged();
                        let values: Vec<DataValue> = values
                            .iter()
                            .map(|&(v, s)| change(v.map(variant), status(s), None))
                            .collect();
                        let answered: Vec<usize> = live.iter().copied().take(values.len()).collect();
                        for (&i, dv) in answered.iter().zip(&values) {
                            expect(i, dv, &mut last);
                        }
                        let ServerEvent::Online { metrics, values: batch, .. } = items.birth(&live, &values, now) else {
                            return Err(TestCaseError::fail("a birth is Online"));
                        };
                        online = true;
                        let names: Vec<String> = answered.iter().map(|&i| nodes[i].metric.clone()).collect();
                        let metric_names: Vec<String> = metrics.iter().map(|m| m.name.clone()).collect();
                        let reading_names: Vec<String> = batch.readings.iter().map(|r| r.metric.to_string()).collect();
                        prop_assert_eq!(&metric_names, &names);
                        prop_assert_eq!(&reading_names, &names);
                        prop_assert!(items.is_online());
                    }
                    Op::Offline => {
                        items.offline();
                        online = false;
                    }
                    Op::Gone(i, s) => {
                        let status = status(s);
                        let had = items.get(i).and_then(Item::monitored);
                        let gone = items.gone(i, Some(status), now);
                        let missing = matches!(status, StatusCode::BadNodeIdUnknown | StatusCode::BadNodeIdInvalid);
                        prop_assert_eq!(gone.is_some(), missing && i < nodes.len());
                        if let Some(g) = gone {
                            prop_assert_eq!(g.monitored, had);
                            prop_assert_eq!(g.reading.map(|r| (r.value, r.quality, r.timestamp.unix_ms())), last[i].clone().map(|v| (v, Quality::Bad, clock)));
                            prop_assert!(items.get(i).and_then(Item::node_id).is_none());
                        }
                    }
                    Op::Back(i, s) => {
                        items.back(i, Some(status(s)));
                    }
                    Op::SessionClosed => {
                        items.session_closed();
                        prop_assert_eq!(items.unresolved().len(), nodes.len());
                    }
                    Op::Problems => {
                        let told = items.node_problems();
                        let known = told.iter().all(|e| matches!(e, ServerEvent::NodeProblem { metric, .. } if nodes.iter().any(|n| &n.metric == metric)));
                        prop_assert!(known, "a problem of no configured node");
                        prop_assert_eq!(items.node_problems(), vec![], "told twice");
                    }
                    Op::Unmonitor => items.unmonitor_all(),
                }
                prop_assert_eq!(items.is_online(), online);
                // Whatever happened, what is bridged and monitored stays consistent.
                for (i, item) in items.iter().enumerate() {
                    prop_assert_eq!(item.last(), last[i].as_ref());
                    if let Some(info) = item.info() {
                        prop_assert_eq!(&info.name, &nodes[i].metric);
                        prop_assert_eq!(info.writable, nodes[i].writable);
                    }
                }
            }
        }
    }
}
