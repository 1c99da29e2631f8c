//! A conformance checker: feed it the MQTT traffic of a Sparkplug system
//! (what a monitoring subscriber sees, plus the Wills of CONNECT packets
//! where you know them) and it reports every violation it can observe, each
//! tagged with the specification's tck-id.
//!
//! It opens no sockets and keeps only per-node sequence and birth state.
//! [`CHECKED`] lists the tck-ids it checks; `CONFORMANCE.md` marks them
//! *checked*.
//!
//! ```
//! use shopfloor_sparkplug::checker::{Checker, Observed};
//!
//! let mut checker = Checker::new();
//! // An NDATA published with QoS 1 and no payload timestamp.
//! let payload = shopfloor_sparkplug::Payload { seq: Some(1), ..Default::default() }
//!     .encode(Default::default());
//! let found = checker.observe(&Observed { topic: "spBv1.0/G/NDATA/E", payload: &payload, qos: 1, retain: false });
//! let ids: Vec<&str> = found.iter().map(|v| v.tck_id.unwrap_or("?")).collect();
//! assert!(ids.contains(&"tck-id-payloads-ndata-qos"));
//! assert!(ids.contains(&"tck-id-payloads-ndata-timestamp"));
//! ```

use std::collections::{HashMap, HashSet};

use prost::Message as _;

use crate::datatype::DataType;
use crate::edge::{BDSEQ_METRIC, REBIRTH_METRIC};
use crate::proto;
use crate::topic::{MessageType, StatePayload, Topic, TopicError};

/// One MQTT message as observed.
#[derive(Clone, Copy, Debug)]
pub struct Observed<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The payload.
    pub payload: &'a [u8],
    /// The QoS it was published with.
    pub qos: u8,
    /// The retain flag.
    pub retain: bool,
}

/// A rule broken by an observed message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The specification's id of the rule; `None` when the payload could not
    /// be decoded at all.
    pub tck_id: Option<&'static str>,
    /// Whether the rule is a MUST (else a SHOULD).
    pub must: bool,
    /// The topic of the message.
    pub topic: String,
    /// What was seen.
    pub detail: String,
}

/// The tck-ids this checker checks.
pub const CHECKED: &[&str] = &[
    "tck-id-topic-structure",
    "tck-id-topic-structure-namespace-valid-group-id",
    "tck-id-topic-structure-namespace-valid-edge-node-id",
    "tck-id-topic-structure-namespace-valid-device-id",
    "tck-id-topic-structure-namespace-device-id-associated-message-types",
    "tck-id-topic-structure-namespace-device-id-non-associated-message-types",
    "tck-id-topics-nbirth-mqtt",
    "tck-id-topics-nbirth-seq-num",
    "tck-id-topics-nbirth-timestamp",
    "tck-id-topics-nbirth-metrics",
    "tck-id-topics-nbirth-bdseq-included",
    "tck-id-topics-nbirth-bdseq-matching",
    "tck-id-topics-nbirth-rebirth-metric",
    "tck-id-topics-ndata-mqtt",
    "tck-id-topics-ndata-seq-num",
    "tck-id-topics-ndata-timestamp",
    "tck-id-topics-ndeath-payload",
    "tck-id-topics-ndeath-seq",
    "tck-id-topics-ncmd-mqtt",
    "tck-id-topics-ncmd-timestamp",
    "tck-id-topics-dbirth-mqtt",
    "tck-id-topics-dbirth-seq",
    "tck-id-topics-dbirth-timestamp",
    "tck-id-topics-dbirth-metrics",
    "tck-id-topics-ddata-mqtt",
    "tck-id-topics-ddata-seq-num",
    "tck-id-topics-ddata-timestamp",
    "tck-id-topics-ddeath-mqtt",
    "tck-id-topics-ddeath-seq-num",
    "tck-id-topics-dcmd-mqtt",
    "tck-id-topics-dcmd-timestamp",
    "tck-id-host-topic-phid-birth-qos",
    "tck-id-host-topic-phid-birth-retain",
    "tck-id-host-topic-phid-birth-payload",
    "tck-id-host-topic-phid-death-qos",
    "tck-id-host-topic-phid-death-retain",
    "tck-id-host-topic-phid-death-payload",
    "tck-id-payloads-sequence-num-always-included",
    "tck-id-payloads-sequence-num-req-nbirth",
    "tck-id-payloads-sequence-num-incrementing",
    "tck-id-payloads-name-requirement",
    "tck-id-payloads-alias-uniqueness",
    "tck-id-payloads-alias-birth-requirement",
    "tck-id-payloads-alias-data-cmd-requirement",
    "tck-id-payloads-name-birth-data-requirement",
    "tck-id-payloads-metric-datatype-value",
    "tck-id-payloads-metric-datatype-req",
    "tck-id-payloads-metric-datatype-not-req",
    "tck-id-payloads-propertyset-keys-array-size",
    "tck-id-payloads-propertyset-values-array-size",
    "tck-id-payloads-metric-propertyvalue-type-value",
    "tck-id-payloads-metric-propertyvalue-type-req",
    "tck-id-payloads-propertyset-quality-value-type",
    "tck-id-payloads-propertyset-quality-value-value",
    "tck-id-payloads-dataset-column-size",
    "tck-id-payloads-dataset-column-num-headers",
    "tck-id-payloads-dataset-types-num",
    "tck-id-payloads-dataset-types-value",
    "tck-id-payloads-dataset-parameter-type-req",
    "tck-id-payloads-nbirth-timestamp",
    "tck-id-payloads-nbirth-seq",
    "tck-id-payloads-nbirth-bdseq",
    "tck-id-payloads-nbirth-bdseq-repeat",
    "tck-id-payloads-nbirth-rebirth-req",
    "tck-id-payloads-nbirth-qos",
    "tck-id-payloads-nbirth-retain",
    "tck-id-payloads-dbirth-timestamp",
    "tck-id-payloads-dbirth-seq",
    "tck-id-payloads-dbirth-seq-inc",
    "tck-id-payloads-dbirth-qos",
    "tck-id-payloads-dbirth-retain",
    "tck-id-payloads-ndata-timestamp",
    "tck-id-payloads-ndata-seq",
    "tck-id-payloads-ndata-seq-inc",
    "tck-id-payloads-ndata-qos",
    "tck-id-payloads-ndata-retain",
    "tck-id-payloads-ddata-timestamp",
    "tck-id-payloads-ddata-seq",
    "tck-id-payloads-ddata-seq-inc",
    "tck-id-payloads-ddata-qos",
    "tck-id-payloads-ddata-retain",
    "tck-id-payloads-ncmd-timestamp",
    "tck-id-payloads-ncmd-seq",
    "tck-id-payloads-ncmd-qos",
    "tck-id-payloads-ncmd-retain",
    "tck-id-payloads-dcmd-timestamp",
    "tck-id-payloads-dcmd-seq",
    "tck-id-payloads-dcmd-qos",
    "tck-id-payloads-dcmd-retain",
    "tck-id-payloads-ndeath-seq",
    "tck-id-payloads-ndeath-will-message-qos",
    "tck-id-payloads-ndeath-will-message-retain",
    "tck-id-payloads-ndeath-bdseq",
    "tck-id-payloads-ddeath-timestamp",
    "tck-id-payloads-ddeath-seq",
    "tck-id-payloads-ddeath-seq-inc",
    "tck-id-payloads-state-will-message-qos",
    "tck-id-payloads-state-will-message-retain",
    "tck-id-payloads-state-will-message-payload",
    "tck-id-payloads-state-birth-payload",
    "tck-id-topics-ncmd-payload",
    "tck-id-topics-dcmd-payload",
    "tck-id-topics-nbirth-templates",
    "tck-id-case-sensitivity-sparkplug-ids",
    "tck-id-case-sensitivity-metric-names",
    "tck-id-operational-behavior-data-publish-nbirth-order",
    "tck-id-operational-behavior-data-publish-dbirth-order",
    "tck-id-operational-behavior-data-commands-ncmd-metric-name",
    "tck-id-operational-behavior-data-commands-dcmd-metric-name",
    "tck-id-payloads-dbirth-order",
    "tck-id-payloads-ndata-order",
    "tck-id-payloads-ddata-order",
    "tck-id-payloads-template-definition-nbirth-only",
    "tck-id-payloads-template-definition-is-definition",
    "tck-id-payloads-template-definition-ref",
    "tck-id-payloads-template-definition-members",
    "tck-id-payloads-template-definition-nbirth",
    "tck-id-payloads-template-definition-parameters",
    "tck-id-payloads-template-instance-is-definition",
    "tck-id-payloads-template-instance-ref",
    "tck-id-payloads-template-instance-members",
    "tck-id-payloads-template-instance-members-birth",
    "tck-id-payloads-template-instance-parameters",
    "tck-id-payloads-template-ref-definition",
    "tck-id-payloads-template-ref-instance",
    "tck-id-payloads-template-is-definition",
    "tck-id-payloads-template-is-definition-definition",
    "tck-id-payloads-template-is-definition-instance",
    "tck-id-payloads-template-parameter-name-required",
    "tck-id-payloads-template-parameter-type-value",
    "tck-id-payloads-template-parameter-type-req",
];

#[derive(Debug, Default)]
struct NodeState {
    /// The `seq` of the node's last message, once a birth was seen.
    last_seq: Option<u8>,
    /// `bdSeq` of the Will registered with the current connection, if known.
    will_bd_seq: Option<u64>,
    /// `bdSeq` of the last NBIRTH.
    birth_bd_seq: Option<u64>,
    /// The metric each alias names, from the current births (a device that
    /// births again repeats its own aliases; another metric may not).
    aliases: HashMap<u64, String>,
    /// Metric names of the current births: the node's (`None`) and each
    /// device's.
    names: HashMap<Option<String>, HashSet<String>>,
    /// Template definitions of the current NBIRTH: members and parameters.
    templates: HashMap<String, TemplateDef>,
    /// `Some(true)` after an NBIRTH, `Some(false)` after an NDEATH, `None`
    /// when the checker joined in the middle.
    online: Option<bool>,
    /// Whether DATA was published since the NBIRTH.
    data_since_birth: bool,
}

#[derive(Debug, Default)]
struct TemplateDef {
    members: HashSet<String>,
    parameters: HashSet<String>,
}

/// Checks observed Sparkplug traffic. See the module documentation.
#[derive(Debug, Default)]
pub struct Checker {
    nodes: HashMap<(String, String), NodeState>,
    /// Every group, edge node and device id seen, by its lower case.
    ids: HashMap<String, String>,
}

struct Report<'a> {
    topic: &'a str,
    found: Vec<Violation>,
}

impl Report<'_> {
    fn must(&mut self, ok: bool, id: &'static str, detail: impl FnOnce() -> String) {
        self.unless(ok, true, id, detail);
    }

    fn should(&mut self, ok: bool, id: &'static str, detail: impl FnOnce() -> String) {
        self.unless(ok, false, id, detail);
    }

    /// Reports a violation of rule `id` (a MUST or a SHOULD) unless `ok`.
    fn unless(&mut self, ok: bool, must: bool, id: &'static str, detail: impl FnOnce() -> String) {
        if !ok {
            self.found.push(Violation {
                tck_id: Some(id),
                must,
                topic: self.topic.to_owned(),
                detail: detail(),
            });
        }
    }
}

fn bd_seq(p: &proto::Payload) -> Option<u64> {
    p.metrics.iter().find(|m| m.name.as_deref() == Some(BDSEQ_METRIC)).and_then(|m| match m.value {
        Some(proto::MetricValue::Long(v)) => Some(v),
        Some(proto::MetricValue::Int(v)) => Some(v.into()),
        _ => None,
    })
}

impl Checker {
    /// A checker that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks a Will registered in a CONNECT packet: an edge node's NDEATH or
    /// a host's STATE. `qos` and `retain` are the Will's.
    pub fn observe_will(&mut self, msg: &Observed<'_>) -> Vec<Violation> {
        let mut r = Report { topic: msg.topic, found: Vec::new() };
        match Topic::parse(msg.topic) {
            Ok(Topic::Edge {
                group_id, message_type: MessageType::NDeath, edge_node_id, ..
            }) => {
                r.must(msg.qos == 1, "tck-id-payloads-ndeath-will-message-qos", || {
                    format!("Will QoS {}", msg.qos)
                });
                r.must(!msg.retain, "tck-id-payloads-ndeath-will-message-retain", || {
                    "Will retained".into()
                });
                if let Ok(p) = proto::Payload::decode(msg.payload) {
                    let node = self.nodes.entry((group_id, edge_node_id)).or_default();
                    node.will_bd_seq = bd_seq(&p);
                    r.must(p.seq.is_none(), "tck-id-payloads-ndeath-seq", || {
                        "the Will carries a seq".into()
                    });
                }
            }
            Ok(Topic::State { .. }) => {
                r.must(msg.qos == 1, "tck-id-payloads-state-will-message-qos", || {
                    format!("Will QoS {}", msg.qos)
                });
                r.must(msg.retain, "tck-id-payloads-state-will-message-retain", || {
                    "Will not retained".into()
                });
                let state = StatePayload::from_json(msg.payload);
                r.must(
                    state.is_ok_and(|s| !s.online),
                    "tck-id-payloads-state-will-message-payload",
                    || "not {\"online\": false, \"timestamp\": …}".into(),
                );
            }
            _ => r.must(false, "tck-id-topic-structure", || {
                "a Will on a topic that is no NDEATH or STATE".into()
            }),
        }
        r.found
    }

    /// Checks one published message.
    pub fn observe(&mut self, msg: &Observed<'_>) -> Vec<Violation> {
        let mut r = Report { topic: msg.topic, found: Vec::new() };
        if !msg.topic.starts_with("spBv1.0/") {
            return r.found;
        }
        let topic = match Topic::parse(msg.topic) {
            Ok(t) => t,
            Err(e) => {
                let id = match &e {
                    TopicError::DeviceIdMissing(_) => {
                        "tck-id-topic-structure-namespace-device-id-associated-message-types"
                    }
                    TopicError::DeviceIdUnexpected(_) => {
                        "tck-id-topic-structure-namespace-device-id-non-associated-message-types"
                    }
                    TopicError::BadId { which: "group_id", .. }
                    | TopicError::EmptyId("group_id") => {
                        "tck-id-topic-structure-namespace-valid-group-id"
                    }
                    TopicError::BadId { which: "edge_node_id", .. }
                    | TopicError::EmptyId("edge_node_id") => {
                        "tck-id-topic-structure-namespace-valid-edge-node-id"
                    }
                    TopicError::BadId { which: "device_id", .. }
                    | TopicError::EmptyId("device_id") => {
                        "tck-id-topic-structure-namespace-valid-device-id"
                    }
                    _ => "tck-id-topic-structure",
                };
                r.must(false, id, || e.to_string());
                return r.found;
            }
        };
        let (group, kind, edge, device) = match topic {
            Topic::State { .. } => {
                self.check_state(msg, &mut r);
                return r.found;
            }
            Topic::Edge { group_id, message_type, edge_node_id, device_id } => {
                (group_id, message_type, edge_node_id, device_id)
            }
        };
        if matches!(kind, MessageType::NBirth | MessageType::DBirth) {
            let mut id = |scope: String| {
                let seen = self.ids.entry(scope.to_lowercase()).or_insert_with(|| scope.clone());
                r.should(*seen == scope, "tck-id-case-sensitivity-sparkplug-ids", || {
                    format!("{scope:?} differs from {seen:?} only in case")
                });
            };
            id(group.clone());
            id(format!("{group}/{edge}"));
            if let Some(d) = &device {
                id(format!("{group}/{edge}/{d}"));
            }
        }
        let Ok(p) = proto::Payload::decode(msg.payload) else {
            r.found.push(Violation {
                tck_id: None,
                must: true,
                topic: msg.topic.to_owned(),
                detail: "the payload is not a Sparkplug B protobuf Payload".into(),
            });
            return r.found;
        };
        use MessageType as T;
        // QoS and retain.
        let (qos_id, retain_id, mqtt_id) = match kind {
            T::NBirth => (
                "tck-id-payloads-nbirth-qos",
                "tck-id-payloads-nbirth-retain",
                "tck-id-topics-nbirth-mqtt",
            ),
            T::NData => (
                "tck-id-payloads-ndata-qos",
                "tck-id-payloads-ndata-retain",
                "tck-id-topics-ndata-mqtt",
            ),
            T::DBirth => (
                "tck-id-payloads-dbirth-qos",
                "tck-id-payloads-dbirth-retain",
                "tck-id-topics-dbirth-mqtt",
            ),
            T::DData => (
                "tck-id-payloads-ddata-qos",
                "tck-id-payloads-ddata-retain",
                "tck-id-topics-ddata-mqtt",
            ),
            T::NCmd => (
                "tck-id-payloads-ncmd-qos",
                "tck-id-payloads-ncmd-retain",
                "tck-id-topics-ncmd-mqtt",
            ),
            T::DCmd => (
                "tck-id-payloads-dcmd-qos",
                "tck-id-payloads-dcmd-retain",
                "tck-id-topics-dcmd-mqtt",
            ),
            T::DDeath => (
                "tck-id-topics-ddeath-mqtt",
                "tck-id-topics-ddeath-mqtt",
                "tck-id-topics-ddeath-mqtt",
            ),
            // An NDEATH published directly (not as the Will) has no QoS rule.
            T::NDeath => ("", "", ""),
        };
        if !qos_id.is_empty() {
            r.must(msg.qos == 0, qos_id, || format!("QoS {}", msg.qos));
            r.must(!msg.retain, retain_id, || "retained".into());
            if msg.qos != 0 || msg.retain {
                r.must(false, mqtt_id, || format!("QoS {}, retain {}", msg.qos, msg.retain));
            }
        }
        // Payload timestamp.
        let ts_ids: &[&'static str] = match kind {
            T::NBirth => &["tck-id-payloads-nbirth-timestamp", "tck-id-topics-nbirth-timestamp"],
            T::DBirth => &["tck-id-payloads-dbirth-timestamp", "tck-id-topics-dbirth-timestamp"],
            T::NData => &["tck-id-payloads-ndata-timestamp", "tck-id-topics-ndata-timestamp"],
            T::DData => &["tck-id-payloads-ddata-timestamp", "tck-id-topics-ddata-timestamp"],
            T::NCmd => &["tck-id-payloads-ncmd-timestamp", "tck-id-topics-ncmd-timestamp"],
            T::DCmd => &["tck-id-payloads-dcmd-timestamp", "tck-id-topics-dcmd-timestamp"],
            T::DDeath => &["tck-id-payloads-ddeath-timestamp"],
            T::NDeath => &[],
        };
        for id in ts_ids {
            r.must(p.timestamp.is_some(), id, || "no payload timestamp".into());
        }
        // One lookup per message; both checks work on the node's state.
        let node = self.nodes.entry((group, edge)).or_default();
        Self::check_order(node, kind, device.as_deref(), &mut r);
        Self::check_seq(node, kind, &p, &mut r);
        Self::check_metrics(node, kind, &p, &mut r);
        Self::check_names(node, kind, device, &p, &mut r);
        r.found
    }

    /// Births before data: DBIRTHs right after the NBIRTH, DATA only once
    /// the births are out. Judged only when the checker saw the NBIRTH (or
    /// the NDEATH) itself.
    fn check_order(
        node: &mut NodeState,
        kind: MessageType,
        device: Option<&str>,
        r: &mut Report<'_>,
    ) {
        use MessageType as T;
        let born = |node: &NodeState, d: &str| node.names.contains_key(&Some(d.to_owned()));
        match kind {
            T::NBirth => {
                node.online = Some(true);
                node.data_since_birth = false;
            }
            T::NDeath => node.online = Some(false),
            T::DBirth => {
                let d = device.unwrap_or_default();
                let late = node.online == Some(true) && node.data_since_birth && !born(node, d);
                r.must(!late, "tck-id-payloads-dbirth-order", || {
                    format!("DBIRTH of {d:?} after DATA; device births follow the NBIRTH at once")
                });
            }
            T::NData | T::DData => {
                let (id, before) = if kind == T::NData {
                    ("tck-id-payloads-ndata-order", node.online == Some(false))
                } else {
                    let d = device.unwrap_or_default();
                    let unborn = node.online == Some(true) && !born(node, d);
                    ("tck-id-payloads-ddata-order", node.online == Some(false) || unborn)
                };
                r.must(!before, id, || "DATA before the births it belongs to".into());
                node.data_since_birth = true;
            }
            _ => {}
        }
    }

    /// Metric names: no two in a birth alike but for case; commands name
    /// metrics of the birth; a command carries metrics; a metric's values in
    /// one NBIRTH/NDATA (DBIRTH/DDATA) in time order.
    fn check_names(
        node: &mut NodeState,
        kind: MessageType,
        device: Option<String>,
        p: &proto::Payload,
        r: &mut Report<'_>,
    ) {
        use MessageType as T;
        match kind {
            T::NBirth | T::DBirth => {
                let mut lower: HashMap<String, &str> = HashMap::new();
                for name in p.metrics.iter().filter_map(|m| m.name.as_deref()) {
                    if let Some(other) = lower.insert(name.to_lowercase(), name)
                        && other != name
                    {
                        r.should(false, "tck-id-case-sensitivity-metric-names", || {
                            format!("metrics {other:?} and {name:?} differ only in case")
                        });
                    }
                }
                if kind == T::NBirth {
                    node.names.clear();
                }
                let names = p.metrics.iter().filter_map(|m| m.name.clone()).collect();
                node.names.insert(device.clone(), names);
            }
            T::NCmd | T::DCmd => {
                let (payload_id, name_id) = if kind == T::NCmd {
                    (
                        "tck-id-topics-ncmd-payload",
                        "tck-id-operational-behavior-data-commands-ncmd-metric-name",
                    )
                } else {
                    (
                        "tck-id-topics-dcmd-payload",
                        "tck-id-operational-behavior-data-commands-dcmd-metric-name",
                    )
                };
                r.must(!p.metrics.is_empty(), payload_id, || "a command without metrics".into());
                if let Some(names) = node.names.get(&device) {
                    for m in &p.metrics {
                        let name = m
                            .name
                            .clone()
                            .or_else(|| m.alias.and_then(|a| node.aliases.get(&a).cloned()));
                        let known = name.as_ref().is_some_and(|n| names.contains(n));
                        r.should(known, name_id, || {
                            format!("{name:?} (alias {:?}) is not in the birth", m.alias)
                        });
                    }
                }
            }
            _ => {}
        }
        if matches!(kind, T::NBirth | T::NData | T::DBirth | T::DData) {
            let id = if matches!(kind, T::NBirth | T::NData) {
                "tck-id-operational-behavior-data-publish-nbirth-order"
            } else {
                "tck-id-operational-behavior-data-publish-dbirth-order"
            };
            let mut last: HashMap<(Option<&str>, Option<u64>), u64> = HashMap::new();
            for m in p.metrics.iter().filter(|m| m.is_historical != Some(true)) {
                let Some(ts) = m.timestamp else { continue };
                let key = (m.name.as_deref(), m.alias);
                if let Some(prev) = last.insert(key, ts) {
                    r.must(prev <= ts, id, || {
                        format!("{key:?}: a value at {ts} after one at {prev}")
                    });
                }
            }
        }
    }

    fn check_state(&mut self, msg: &Observed<'_>, r: &mut Report<'_>) {
        match StatePayload::from_json(msg.payload) {
            Ok(s) if s.online => {
                r.must(msg.qos == 1, "tck-id-host-topic-phid-birth-qos", || {
                    format!("QoS {}", msg.qos)
                });
                r.must(msg.retain, "tck-id-host-topic-phid-birth-retain", || "not retained".into());
            }
            Ok(_) => {
                r.must(msg.qos == 1, "tck-id-host-topic-phid-death-qos", || {
                    format!("QoS {}", msg.qos)
                });
                r.must(msg.retain, "tck-id-host-topic-phid-death-retain", || "not retained".into());
            }
            Err(e) => {
                for id in
                    ["tck-id-host-topic-phid-birth-payload", "tck-id-payloads-state-birth-payload"]
                {
                    r.must(false, id, || format!("not the STATE JSON: {e}"));
                }
            }
        }
    }

    fn check_seq(node: &mut NodeState, kind: MessageType, p: &proto::Payload, r: &mut Report<'_>) {
        use MessageType as T;
        match kind {
            T::NDeath | T::NCmd | T::DCmd => {
                let id = match kind {
                    T::NDeath => "tck-id-payloads-ndeath-seq",
                    T::NCmd => "tck-id-payloads-ncmd-seq",
                    _ => "tck-id-payloads-dcmd-seq",
                };
                r.must(p.seq.is_none(), id, || format!("seq {:?} present", p.seq));
                if kind == T::NDeath {
                    r.must(p.seq.is_none(), "tck-id-topics-ndeath-seq", || {
                        format!("seq {:?} present", p.seq)
                    });
                    node.last_seq = None;
                }
            }
            T::NBirth => {
                let ok = p.seq.is_some_and(|s| s <= 255);
                r.must(ok, "tck-id-payloads-nbirth-seq", || format!("seq {:?}", p.seq));
                r.must(ok, "tck-id-payloads-sequence-num-req-nbirth", || {
                    format!("seq {:?}", p.seq)
                });
                // Chapter 4 wants exactly 0 where chapter 6 allows 0..=255.
                r.must(p.seq == Some(0), "tck-id-topics-nbirth-seq-num", || {
                    format!("seq {:?}, not 0", p.seq)
                });
                node.last_seq = p.seq.and_then(|s| u8::try_from(s).ok());
            }
            T::DBirth | T::NData | T::DData | T::DDeath => {
                let (present, inc, topics) = match kind {
                    T::DBirth => (
                        "tck-id-payloads-dbirth-seq",
                        "tck-id-payloads-dbirth-seq-inc",
                        "tck-id-topics-dbirth-seq",
                    ),
                    T::NData => (
                        "tck-id-payloads-ndata-seq",
                        "tck-id-payloads-ndata-seq-inc",
                        "tck-id-topics-ndata-seq-num",
                    ),
                    T::DData => (
                        "tck-id-payloads-ddata-seq",
                        "tck-id-payloads-ddata-seq-inc",
                        "tck-id-topics-ddata-seq-num",
                    ),
                    _ => (
                        "tck-id-payloads-ddeath-seq",
                        "tck-id-payloads-ddeath-seq-inc",
                        "tck-id-topics-ddeath-seq-num",
                    ),
                };
                r.must(p.seq.is_some(), present, || "no seq".into());
                r.must(p.seq.is_some(), "tck-id-payloads-sequence-num-always-included", || {
                    "no seq".into()
                });
                if let (Some(last), Some(seq)) = (node.last_seq, p.seq) {
                    let want = u64::from(last.wrapping_add(1));
                    for id in [inc, topics, "tck-id-payloads-sequence-num-incrementing"] {
                        r.must(seq == want, id, || {
                            format!("seq {seq} after {last}, expected {want}")
                        });
                    }
                }
                if let Some(seq) = p.seq.and_then(|s| u8::try_from(s).ok()) {
                    node.last_seq = Some(seq);
                }
            }
        }
    }

    fn check_metrics(
        node: &mut NodeState,
        kind: MessageType,
        p: &proto::Payload,
        r: &mut Report<'_>,
    ) {
        use MessageType as T;
        let birth = matches!(kind, T::NBirth | T::DBirth);
        let data = matches!(kind, T::NData | T::DData);
        let cmd = matches!(kind, T::NCmd | T::DCmd);
        if kind == T::NBirth {
            node.aliases.clear();
            node.templates.clear();
            // Definitions first: instances in the same NBIRTH may come before them.
            for m in &p.metrics {
                if let (Some(name), Some(proto::MetricValue::Template(t))) = (&m.name, &m.value)
                    && t.is_definition == Some(true)
                {
                    let def = TemplateDef {
                        members: t.metrics.iter().filter_map(|m| m.name.clone()).collect(),
                        parameters: t.parameters.iter().filter_map(|p| p.name.clone()).collect(),
                    };
                    node.templates.insert(name.clone(), def);
                }
            }
            let bd = bd_seq(p);
            r.must(bd.is_some(), "tck-id-payloads-nbirth-bdseq", || "no bdSeq metric".into());
            r.must(bd.is_some(), "tck-id-topics-nbirth-bdseq-included", || {
                "no bdSeq metric".into()
            });
            if let (Some(will), Some(bd)) = (node.will_bd_seq, bd) {
                for id in
                    ["tck-id-payloads-nbirth-bdseq-repeat", "tck-id-topics-nbirth-bdseq-matching"]
                {
                    r.must(will == bd, id, || format!("bdSeq {bd}, the Will's is {will}"));
                }
            }
            node.birth_bd_seq = bd;
            let rebirth = p.metrics.iter().find(|m| m.name.as_deref() == Some(REBIRTH_METRIC));
            let ok = rebirth.is_some_and(|m| {
                m.datatype == Some(DataType::Boolean.as_u32())
                    && m.value == Some(proto::MetricValue::Boolean(false))
            });
            for id in ["tck-id-payloads-nbirth-rebirth-req", "tck-id-topics-nbirth-rebirth-metric"]
            {
                r.must(ok, id, || "no Node Control/Rebirth Boolean false".into());
            }
        }
        if kind == T::NDeath {
            r.must(
                p.metrics.len() == 1 && bd_seq(p).is_some(),
                "tck-id-topics-ndeath-payload",
                || format!("{} metrics; only bdSeq allowed", p.metrics.len()),
            );
            if let (Some(birth), Some(death)) = (node.birth_bd_seq, bd_seq(p)) {
                r.should(birth == death, "tck-id-payloads-ndeath-bdseq", || {
                    format!(
                        "bdSeq {death}, the birth's is {birth} (a late Will of an older session?)"
                    )
                });
            }
        }
        let uses_aliases = p.metrics.iter().any(|m| m.alias.is_some());
        for (i, m) in p.metrics.iter().enumerate() {
            let id = || {
                m.name.clone().unwrap_or_else(|| {
                    m.alias.map_or_else(|| format!("metrics[{i}]"), |a| format!("alias {a}"))
                })
            };
            if let Some(t) = m.datatype {
                r.must(
                    DataType::from_u32(t).is_some(),
                    "tck-id-payloads-metric-datatype-value",
                    || format!("{}: datatype {t}", id()),
                );
            }
            if birth {
                r.must(m.datatype.is_some(), "tck-id-payloads-metric-datatype-req", || {
                    format!("{}: no datatype", id())
                });
                let complete = m.name.is_some()
                    && m.datatype.is_some()
                    && (m.value.is_some() || m.is_null == Some(true));
                let topics_id = if kind == T::NBirth {
                    "tck-id-topics-nbirth-metrics"
                } else {
                    "tck-id-topics-dbirth-metrics"
                };
                r.must(complete, topics_id, || {
                    format!("{}: needs name, datatype and a value (or is_null)", id())
                });
                if let Some(a) = m.alias {
                    let name = m.name.clone().unwrap_or_default();
                    let clash = node.aliases.get(&a).filter(|owner| **owner != name).cloned();
                    r.must(clash.is_none(), "tck-id-payloads-alias-uniqueness", || {
                        format!(
                            "alias {a} names {name:?} but already {:?}",
                            clash.unwrap_or_default()
                        )
                    });
                    node.aliases.insert(a, name);
                    r.must(m.name.is_some(), "tck-id-payloads-alias-birth-requirement", || {
                        format!("alias {a} without a name")
                    });
                }
            }
            if birth || data {
                r.must(
                    m.timestamp.is_some(),
                    "tck-id-payloads-name-birth-data-requirement",
                    || format!("{}: no timestamp", id()),
                );
            }
            if data || cmd {
                r.should(m.datatype.is_none(), "tck-id-payloads-metric-datatype-not-req", || {
                    format!("{}: datatype in DATA/CMD", id())
                });
                if m.alias.is_some() {
                    r.must(m.name.is_none(), "tck-id-payloads-alias-data-cmd-requirement", || {
                        format!("{}: name beside an alias", id())
                    });
                }
            }
            if !uses_aliases {
                r.must(m.name.is_some(), "tck-id-payloads-name-requirement", || {
                    format!("metrics[{i}]: no name and no aliases")
                });
            }
            if let Some(props) = &m.properties {
                check_properties(props, birth, &id(), r);
            }
            if let Some(proto::MetricValue::DataSet(ds)) = &m.value {
                check_dataset(ds, &id(), r);
            }
            if let Some(proto::MetricValue::Template(t)) = &m.value {
                check_template(t, &id(), kind, &node.templates, r);
            }
        }
    }
}

fn check_properties(p: &proto::PropertySet, birth: bool, metric: &str, r: &mut Report<'_>) {
    let same = p.keys.len() == p.values.len();
    for id in [
        "tck-id-payloads-propertyset-keys-array-size",
        "tck-id-payloads-propertyset-values-array-size",
    ] {
        r.must(same, id, || format!("{metric}: {} keys, {} values", p.keys.len(), p.values.len()));
    }
    for (k, v) in p.keys.iter().zip(&p.values) {
        if let Some(t) = v.r#type {
            r.must(
                DataType::from_u32(t).is_some(),
                "tck-id-payloads-metric-propertyvalue-type-value",
                || format!("{metric}: property {k:?} type {t}"),
            );
        } else if birth {
            r.must(false, "tck-id-payloads-metric-propertyvalue-type-req", || {
                format!("{metric}: property {k:?} has no type")
            });
        }
        if k == "Quality" {
            r.must(v.r#type == Some(3), "tck-id-payloads-propertyset-quality-value-type", || {
                format!("{metric}: Quality type {:?}, not 3 (Int32)", v.r#type)
            });
            let ok = matches!(v.value, Some(proto::PropertyValueValue::Int(0 | 192 | 500)));
            r.must(ok, "tck-id-payloads-propertyset-quality-value-value", || {
                format!("{metric}: Quality value {:?}, not 0, 192 or 500", v.value)
            });
        }
    }
}

fn check_dataset(ds: &proto::DataSet, metric: &str, r: &mut Report<'_>) {
    r.must(
        !ds.types.is_empty() || ds.columns.is_empty(),
        "tck-id-payloads-dataset-parameter-type-req",
        || format!("{metric}: a DataSet without types"),
    );
    let same = ds.columns.len() == ds.types.len();
    for id in ["tck-id-payloads-dataset-types-num", "tck-id-payloads-dataset-column-num-headers"] {
        r.must(same, id, || {
            format!("{metric}: {} columns, {} types", ds.columns.len(), ds.types.len())
        });
    }
    r.must(
        ds.num_of_columns == Some(ds.columns.len() as u64),
        "tck-id-payloads-dataset-column-size",
        || {
            format!(
                "{metric}: num_of_columns {:?} for {} columns",
                ds.num_of_columns,
                ds.columns.len()
            )
        },
    );
    for &t in &ds.types {
        r.must(DataType::from_u32(t).is_some(), "tck-id-payloads-dataset-types-value", || {
            format!("{metric}: column type {t}")
        });
    }
}

/// A template value: a definition (in an NBIRTH, no `template_ref`) or an
/// instance of a definition of the node's NBIRTH.
fn check_template(
    t: &proto::Template,
    metric: &str,
    kind: MessageType,
    defs: &HashMap<String, TemplateDef>,
    r: &mut Report<'_>,
) {
    let birth = matches!(kind, MessageType::NBirth | MessageType::DBirth);
    r.must(t.is_definition.is_some(), "tck-id-payloads-template-is-definition", || {
        format!("{metric}: template without is_definition")
    });
    for p in &t.parameters {
        r.must(p.name.is_some(), "tck-id-payloads-template-parameter-name-required", || {
            format!("{metric}: a parameter without a name")
        });
        if birth {
            r.must(p.r#type.is_some(), "tck-id-payloads-template-parameter-type-req", || {
                format!("{metric}: parameter {:?} without a type", p.name)
            });
        }
        if let Some(ty) = p.r#type {
            let basic = DataType::from_u32(ty).is_some_and(DataType::is_basic);
            r.must(basic, "tck-id-payloads-template-parameter-type-value", || {
                format!("{metric}: parameter {:?} of type {ty}, not a basic type", p.name)
            });
        }
    }
    match &t.template_ref {
        None if t.is_definition == Some(false) => {
            for id in
                ["tck-id-payloads-template-instance-ref", "tck-id-payloads-template-ref-instance"]
            {
                r.must(false, id, || format!("{metric}: an instance without template_ref"));
            }
        }
        None => {
            // A definition.
            for id in [
                "tck-id-payloads-template-definition-is-definition",
                "tck-id-payloads-template-is-definition-definition",
            ] {
                r.must(t.is_definition == Some(true), id, || {
                    format!(
                        "{metric}: no template_ref (a definition) but is_definition is not true"
                    )
                });
            }
            r.must(
                kind == MessageType::NBirth,
                "tck-id-payloads-template-definition-nbirth-only",
                || format!("{metric}: a template definition outside an NBIRTH"),
            );
        }
        Some(reference) => {
            if t.is_definition == Some(true) {
                for id in [
                    "tck-id-payloads-template-definition-ref",
                    "tck-id-payloads-template-ref-definition",
                ] {
                    r.must(false, id, || format!("{metric}: a definition with template_ref"));
                }
            }
            for id in [
                "tck-id-payloads-template-instance-is-definition",
                "tck-id-payloads-template-is-definition-instance",
            ] {
                r.must(t.is_definition != Some(true), id, || {
                    format!("{metric}: an instance of {reference:?} marked as a definition")
                });
            }
            let Some(def) = defs.get(reference) else {
                for id in [
                    "tck-id-payloads-template-definition-nbirth",
                    "tck-id-topics-nbirth-templates",
                    "tck-id-payloads-template-ref-instance",
                ] {
                    r.must(false, id, || {
                        format!("{metric}: no definition {reference:?} in the NBIRTH")
                    });
                }
                return;
            };
            let names: HashSet<&str> = t.metrics.iter().filter_map(|m| m.name.as_deref()).collect();
            for name in &names {
                for id in [
                    "tck-id-payloads-template-instance-members",
                    "tck-id-payloads-template-definition-members",
                ] {
                    r.must(def.members.contains(*name), id, || {
                        format!("{metric}: member {name:?} is not in {reference:?}")
                    });
                }
            }
            if birth {
                let missing: Vec<&String> =
                    def.members.iter().filter(|m| !names.contains(m.as_str())).collect();
                r.must(
                    missing.is_empty(),
                    "tck-id-payloads-template-instance-members-birth",
                    || format!("{metric}: members {missing:?} of {reference:?} missing in a birth"),
                );
            }
            for p in t.parameters.iter().filter_map(|p| p.name.as_ref()) {
                for id in [
                    "tck-id-payloads-template-definition-parameters",
                    "tck-id-payloads-template-instance-parameters",
                ] {
                    r.must(def.parameters.contains(p), id, || {
                        format!("{metric}: parameter {p:?} is not in {reference:?}")
                    });
                }
            }
        }
    }
    for m in &t.metrics {
        if let Some(proto::MetricValue::Template(inner)) = &m.value {
            let name = m.name.as_deref().unwrap_or("?");
            check_template(inner, &format!("{metric}/{name}"), kind, defs, r);
        }
    }
}
