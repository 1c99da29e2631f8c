//! The per-item bookkeeping against every event sequence: unit tests and
//! a proptest.

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
            unit: Some("°C".into()), range: Some((0.0, 100.0)), ..of(Variant::Float(1.5))
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
            value: DataValue { status: Some(StatusCode::BadNodeIdUnknown), ..DataValue::null() },
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
    let ServerEvent::Online { server, metrics, values } = items.birth(&live, &values, at(1_000))
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
    let mut items = plc(&[("setpoint", 1000, true), ("count", 1000, false), ("flag", 1000, true)]);
    let write = |items: &Items, m: &str, v: Value| items.write_target(m, &v);
    assert_eq!(write(&items, "nope", Value::I64(1)), Err(WriteError::Unknown("nope".into())));
    assert_eq!(write(&items, "count", Value::I64(1)), Err(WriteError::NotAllowed("count".into())));
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
