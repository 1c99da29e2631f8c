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
mod tests;
