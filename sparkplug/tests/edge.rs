//! The sans-IO edge node, driven through its transitions with no sockets and
//! no sleeps: time is a value the test passes in.

use bytes::Bytes;
use proptest::prelude::*;
use prost::Message as _;
use shopfloor_schemas::{Batch, Quality, Reading, Timestamp};
use shopfloor_sparkplug::edge::{Deadband, Message, MetricSpec, Publish, PublishError};
use shopfloor_sparkplug::{
    DataType, EdgeEvent, EdgeNode, EdgeNodeConfig, EncodeOptions, Metric, MetricValue, Now,
    Payload, StatePayload, proto,
};

const NCMD: &str = "spBv1.0/G/NCMD/E";

fn now(ms: u64) -> Now {
    Now::at_unix_ms(ms)
}

fn config() -> EdgeNodeConfig {
    let mut c = EdgeNodeConfig::new("G", "E");
    let mut temp = MetricSpec::new("temp", DataType::Double);
    temp.deadband = Deadband::Absolute(0.5);
    c.metrics = vec![temp];
    c.devices = vec![("press-1".into(), vec![MetricSpec::new("count", DataType::Int32)])];
    c
}

/// [`config`] with `change` made (the configuration is `#[non_exhaustive]`).
fn config_with(change: impl FnOnce(&mut EdgeNodeConfig)) -> EdgeNodeConfig {
    let mut c = config();
    change(&mut c);
    c
}

/// Everything the node sends now: transmits, then the whole replay.
fn drain(node: &mut EdgeNode) -> Vec<Publish> {
    let mut out: Vec<Publish> = std::iter::from_fn(|| node.poll_transmit()).collect();
    while let Some(p) = node.poll_replay(now(0)) {
        out.push(p);
    }
    out
}

fn transmits(node: &mut EdgeNode) -> Vec<Publish> {
    std::iter::from_fn(|| node.poll_transmit()).collect()
}

fn events(node: &mut EdgeNode) -> Vec<EdgeEvent> {
    std::iter::from_fn(|| node.poll_event()).collect()
}

fn raw(p: &Publish) -> proto::Payload {
    proto::Payload::decode(&p.payload[..]).unwrap()
}

fn reading(metric: &str, ms: u64, v: impl Into<shopfloor_schemas::Value>) -> Reading {
    Reading::new(metric, Timestamp::from_unix_ms(ms), v)
}

fn node_batch(r: Reading) -> Batch {
    Batch::new("").with(r)
}

fn online() -> EdgeNode {
    let mut n = EdgeNode::new(config()).unwrap();
    n.handle_connected(now(1));
    drain(&mut n);
    n
}

#[test]
fn will_and_births_follow_the_spec() {
    let mut n = EdgeNode::new(config_with(|c| c.bd_seq = 7)).unwrap();
    let will = n.will();
    assert_eq!((will.topic.as_str(), will.qos, will.retain), ("spBv1.0/G/NDEATH/E", 1, false));
    let w = raw(&will);
    assert_eq!(w.seq, None, "NDEATH carries no seq");
    assert_eq!(w.metrics.len(), 1);
    assert_eq!(w.metrics[0].name.as_deref(), Some("bdSeq"));
    assert_eq!(w.metrics[0].datatype, Some(DataType::Int64.as_u32()));
    assert_eq!(w.metrics[0].value, Some(proto::MetricValue::Long(7)));
    assert_eq!(n.subscriptions(), ["spBv1.0/G/NCMD/E", "spBv1.0/G/DCMD/E/+"]);

    n.handle_connected(now(1000));
    let out = drain(&mut n);
    assert_eq!(
        out.iter().map(|p| p.topic.as_str()).collect::<Vec<_>>(),
        ["spBv1.0/G/NBIRTH/E", "spBv1.0/G/DBIRTH/E/press-1"]
    );
    assert!(out.iter().all(|p| p.qos == 0 && !p.retain), "births are QoS 0, not retained");
    let nbirth = raw(&out[0]);
    assert_eq!((nbirth.seq, nbirth.timestamp), (Some(0), Some(1000)));
    let names: Vec<_> =
        nbirth.metrics.iter().map(|m| (m.name.clone().unwrap(), m.alias, m.datatype)).collect();
    assert_eq!(
        names,
        [
            ("bdSeq".into(), None, Some(4)),
            ("Node Control/Rebirth".into(), None, Some(11)),
            ("temp".into(), Some(1), Some(10)),
        ]
    );
    assert_eq!(
        nbirth.metrics[0].value,
        Some(proto::MetricValue::Long(7)),
        "bdSeq equals the Will's"
    );
    assert_eq!(nbirth.metrics[1].value, Some(proto::MetricValue::Boolean(false)));
    assert_eq!(nbirth.metrics[2].is_null, Some(true), "no value yet: null in the birth");
    assert!(nbirth.metrics.iter().all(|m| m.timestamp.is_some()));
    let dbirth = raw(&out[1]);
    assert_eq!(dbirth.seq, Some(1));
    assert_eq!(
        (dbirth.metrics[0].name.as_deref(), dbirth.metrics[0].alias),
        (Some("count"), Some(2))
    );
}

#[test]
fn data_goes_by_exception_by_alias_with_seq() {
    let mut n = online();
    n.publish(&node_batch(reading("temp", 10, 20.0)), now(10)).unwrap();
    let out = drain(&mut n);
    assert_eq!(out[0].topic, "spBv1.0/G/NDATA/E");
    let d = raw(&out[0]);
    assert_eq!(d.seq, Some(2));
    let m = &d.metrics[0];
    assert_eq!(
        (m.name.as_deref(), m.alias, m.datatype, m.timestamp),
        (None, Some(1), None, Some(10))
    );
    assert_eq!(m.value, Some(proto::MetricValue::Double(20.0)));
    // Within the 0.5 deadband: nothing.
    n.publish(&node_batch(reading("temp", 11, 20.4)), now(11)).unwrap();
    assert!(drain(&mut n).is_empty());
    // Beyond it: sent, seq 3.
    n.publish(&node_batch(reading("temp", 12, 20.6)), now(12)).unwrap();
    assert_eq!(raw(&drain(&mut n)[0]).seq, Some(3));
    // A quality change goes out even with the same value, with the property.
    n.publish(&node_batch(reading("temp", 13, 20.6).with_quality(Quality::Stale)), now(13))
        .unwrap();
    let out = drain(&mut n);
    let q = raw(&out[0]).metrics[0].properties.clone().unwrap();
    assert_eq!(q.keys, ["Quality"]);
    assert_eq!(
        q.values[0].value,
        Some(
            proto::PropertyValue {
                r#type: Some(3),
                is_null: None,
                value: Some(proto::PropertyValueValue::Int(500))
            }
            .value
            .unwrap()
        )
    );
    // Device data goes to DDATA with the device's alias.
    n.publish(&Batch::new("press-1").with(reading("count", 14, -4_i64)), now(14)).unwrap();
    let out = drain(&mut n);
    assert_eq!(out[0].topic, "spBv1.0/G/DDATA/E/press-1");
    assert_eq!(raw(&out[0]).metrics[0].value, Some(proto::MetricValue::Int(-4_i32 as u32)));
}

/// Within a session a metric's timestamps never go back: a live reading
/// older than what was published (in the birth or in DATA) is superseded
/// and not sent; the same time again is. A new session starts afresh.
#[test]
fn published_timestamps_never_decrease_within_a_session() {
    let mut n = EdgeNode::new(config()).unwrap();
    // A value read before the birth (an OPC UA Read at connect, say).
    n.publish(&node_batch(reading("temp", 1_000, 20.0)), now(1)).unwrap();
    n.handle_connected(now(2));
    let birth = drain(&mut n);
    let temp = raw(&birth[0]).metrics.iter().find(|m| m.name.as_deref() == Some("temp")).cloned();
    assert_eq!(temp.unwrap().timestamp, Some(1_000));
    // The subscription's first notification: sampled earlier, sent later.
    n.publish(&node_batch(reading("temp", 800, 25.0)), now(3)).unwrap();
    assert!(drain(&mut n).is_empty(), "older than the birth's value: not sent");
    n.publish(&node_batch(reading("temp", 1_000, 26.0)), now(4)).unwrap();
    n.publish(&node_batch(reading("temp", 1_200, 30.0)), now(5)).unwrap();
    n.publish(&node_batch(reading("temp", 1_100, 35.0)), now(6)).unwrap();
    let sent: Vec<_> = drain(&mut n).iter().map(|p| raw(p).metrics[0].timestamp.unwrap()).collect();
    assert_eq!(sent, [1_000, 1_200], "the same time again is sent, an older one is not");
    // Offline readings are history, replayed after the next birth whatever
    // their time; the new session's live data starts afresh.
    n.handle_disconnected();
    n.publish(&node_batch(reading("temp", 900, 40.0)), now(7)).unwrap();
    n.handle_connected(now(8));
    let out = drain(&mut n);
    assert!(
        out.iter().any(|p| raw(p).metrics.iter().any(|m| m.timestamp == Some(900))),
        "replayed"
    );
}

/// For hosts that cannot type an alias from the birth (Tahu JS): DATA
/// carries each metric's datatype when the node is told to.
#[test]
fn datatypes_in_data_on_request() {
    let mut n = EdgeNode::new(config_with(|c| c.datatypes_in_data = true)).unwrap();
    n.handle_connected(now(1));
    drain(&mut n);
    n.publish(&node_batch(reading("temp", 10, 20.0)), now(10)).unwrap();
    n.publish(&Batch::new("press-1").with(reading("count", 11, 3_i64)), now(11)).unwrap();
    let out = drain(&mut n);
    let types: Vec<_> = out.iter().map(|p| raw(p).metrics[0].datatype).collect();
    assert_eq!(types, [Some(DataType::Double.as_u32()), Some(DataType::Int32.as_u32())]);
    assert_eq!(raw(&out[0]).metrics[0].alias, Some(1), "still by alias");
}

#[test]
fn rebirth_on_request_keeps_bdseq_and_resets_seq() {
    let mut n = online();
    n.publish(&node_batch(reading("temp", 10, 20.0)), now(10)).unwrap();
    drain(&mut n);
    let request = Payload {
        metrics: vec![Metric::new("Node Control/Rebirth", 20, MetricValue::Boolean(true))],
        ..Default::default()
    };
    n.handle_message(&Message::new(NCMD, request.encode(EncodeOptions::default())), now(20))
        .unwrap();
    let out = drain(&mut n);
    assert_eq!(
        out.iter().map(|p| p.topic.as_str()).collect::<Vec<_>>(),
        ["spBv1.0/G/NBIRTH/E", "spBv1.0/G/DBIRTH/E/press-1"]
    );
    let b = raw(&out[0]);
    assert_eq!(b.seq, Some(0));
    assert_eq!(b.metrics[0].value, Some(proto::MetricValue::Long(0)), "same bdSeq as the session");
    assert_eq!(
        b.metrics[2].value,
        Some(proto::MetricValue::Double(20.0)),
        "the birth carries the current value"
    );
    assert_eq!(events(&mut n), [EdgeEvent::Rebirth]);
}

#[test]
fn commands_surface_as_typed_writes() {
    let mut n = online();
    // A host writes by alias without datatype, as the spec advises.
    let by_alias = |alias, value| {
        let mut m = Metric::new("x", 5, value);
        (m.name, m.alias) = (None, Some(alias));
        Payload { timestamp: Some(5), metrics: vec![m], ..Default::default() }
            .encode(EncodeOptions::DEFAULT.with_datatypes(false))
    };
    n.handle_message(&Message::new(NCMD, by_alias(1, MetricValue::Double(5.0))), now(5)).unwrap();
    n.handle_message(
        &Message::new("spBv1.0/G/DCMD/E/press-1", by_alias(2, MetricValue::Int32(-9))),
        now(6),
    )
    .unwrap();
    // Commands for other nodes are not ours.
    n.handle_message(&Message::new("spBv1.0/G/NCMD/other", Bytes::from_static(b"\xff")), now(7))
        .unwrap();
    assert_eq!(
        events(&mut n),
        [
            EdgeEvent::Write {
                device: None,
                metric: "temp".into(),
                value: MetricValue::Double(5.0)
            },
            EdgeEvent::Write {
                device: Some("press-1".into()),
                metric: "count".into(),
                value: MetricValue::Int32(-9)
            },
        ]
    );
    // A malformed command is an error and changes nothing.
    let err =
        n.handle_message(&Message::new(NCMD, Bytes::from_static(b"\x12\x05")), now(8)).unwrap_err();
    assert!(err.to_string().contains("spBv1.0/G/NCMD/E"), "{err}");
    assert!(events(&mut n).is_empty() && drain(&mut n).is_empty());
}

/// A retained NCMD or DCMD is old news the broker kept: its writes are
/// refused with the reason (for a write result), and a retained rebirth
/// request births nothing.
#[test]
fn retained_commands_are_refused_never_written() {
    let mut n = online();
    let cmd = |name: &str, value| {
        Payload {
            timestamp: Some(5),
            metrics: vec![Metric::new(name, 5, value)],
            ..Default::default()
        }
        .encode(EncodeOptions::default())
    };
    let dcmd = Message {
        retain: true,
        topic: "spBv1.0/G/DCMD/E/press-1".into(),
        payload: cmd("count", MetricValue::Int32(3)).into(),
    };
    n.handle_message(&dcmd, now(5)).unwrap();
    let rebirth = Message {
        retain: true,
        topic: NCMD.into(),
        payload: cmd("Node Control/Rebirth", MetricValue::Boolean(true)).into(),
    };
    n.handle_message(&rebirth, now(6)).unwrap();
    let e = events(&mut n);
    let [EdgeEvent::WriteRefused { device, metric, value, reason }] = &e[..] else {
        panic!("one refusal: {e:?}")
    };
    assert_eq!(
        (device.as_deref(), metric.as_str(), value),
        (Some("press-1"), "count", &MetricValue::Int32(3))
    );
    assert!(reason.contains("retained"), "{reason}");
    assert!(transmits(&mut n).is_empty(), "no rebirth");
    // The same command live is a write.
    n.handle_message(&Message { retain: false, ..dcmd }, now(7)).unwrap();
    assert!(matches!(&events(&mut n)[..], [EdgeEvent::Write { .. }]));
}

fn state(online: bool, ts: u64) -> Message {
    Message::new("spBv1.0/STATE/scada", StatePayload { online, timestamp: ts }.to_json())
}

#[test]
fn waits_for_the_primary_host_and_leaves_with_it() {
    let mut n = EdgeNode::new(config_with(|c| c.primary_host_id = Some("scada".into()))).unwrap();
    assert!(n.subscriptions().contains(&"spBv1.0/STATE/scada".to_owned()));
    n.handle_connected(now(1));
    assert!(drain(&mut n).is_empty(), "no birth before the host is online");
    n.handle_message(&state(false, 50), now(2)).unwrap();
    assert!(drain(&mut n).is_empty());
    // Another host's STATE changes nothing.
    n.handle_message(
        &Message::new(
            "spBv1.0/STATE/other",
            StatePayload { online: true, timestamp: 60 }.to_json(),
        ),
        now(2),
    )
    .unwrap();
    assert!(drain(&mut n).is_empty());
    n.handle_message(&state(true, 100), now(3)).unwrap();
    assert_eq!(drain(&mut n).len(), 2);
    assert_eq!(events(&mut n), [EdgeEvent::HostOnline]);
    // A stale offline (older than the online) is ignored.
    n.handle_message(&state(false, 90), now(4)).unwrap();
    assert!(n.is_online() && drain(&mut n).is_empty());
    // A valid offline: NDEATH, then the driver must disconnect.
    n.handle_message(&state(false, 200), now(5)).unwrap();
    let out = drain(&mut n);
    assert_eq!(out[0].topic, "spBv1.0/G/NDEATH/E");
    assert_eq!(events(&mut n), [EdgeEvent::Disconnect]);
    assert!(!n.is_online());
    // Bad STATE JSON is an error.
    assert!(
        n.handle_message(
            &Message::new("spBv1.0/STATE/scada", Bytes::from_static(b"ONLINE")),
            now(6)
        )
        .is_err()
    );
}

#[test]
fn stored_readings_replay_as_history_in_time_order() {
    let mut n = EdgeNode::new(config()).unwrap();
    for (ms, v) in [(30, 3.0), (10, 1.0), (20, 2.0)] {
        n.publish(&node_batch(reading("temp", ms, v)), now(ms)).unwrap();
    }
    n.publish(&Batch::new("press-1").with(reading("count", 15, 7_i64)), now(15)).unwrap();
    assert_eq!(n.stored(), 4);
    assert!(drain(&mut n).is_empty(), "nothing is sent while offline");
    n.handle_connected(now(100));
    let births = transmits(&mut n);
    assert_eq!(births.len(), 2, "the births go out first, the replay after them");
    assert!(n.replay_pending());
    let out: Vec<Publish> = births.into_iter().chain(drain(&mut n)).collect();
    assert!(!n.replay_pending());
    let topics: Vec<_> = out.iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(
        topics,
        [
            "spBv1.0/G/NBIRTH/E",
            "spBv1.0/G/DBIRTH/E/press-1",
            "spBv1.0/G/NDATA/E",
            "spBv1.0/G/DDATA/E/press-1",
        ]
    );
    let seqs: Vec<_> = out.iter().map(|p| raw(p).seq.unwrap()).collect();
    assert_eq!(seqs, [0, 1, 2, 3]);
    let history: Vec<Vec<(u64, bool)>> = out[2..]
        .iter()
        .map(|p| {
            raw(p)
                .metrics
                .iter()
                .map(|m| (m.timestamp.unwrap(), m.is_historical.unwrap_or(false)))
                .collect()
        })
        .collect();
    // One message per device, each in time order.
    assert_eq!(history, [vec![(10, true), (20, true), (30, true)], vec![(15, true)]]);
    // The birth carries the latest stored value as the current one.
    assert_eq!(raw(&out[0]).metrics[2].value, Some(proto::MetricValue::Double(3.0)));
    // Handed out, not yet confirmed by the driver: still held.
    assert_eq!(n.stored(), 4);
    n.commit_replay(n.replay_mark().unwrap());
    assert_eq!(n.stored(), 0);
}

/// The bytes one stored batch of one reading takes in the store.
fn record_bytes(b: &Batch) -> u64 {
    shopfloor_schemas::Codec::Protobuf.encode_batch(b).unwrap().len() as u64
        + shopfloor_sparkplug::spool::RECORD_OVERHEAD
}

#[test]
fn a_full_store_drops_the_oldest_and_counts() {
    let two = 2 * record_bytes(&node_batch(reading("temp", 1, 1.0)));
    let mut n = EdgeNode::new(config_with(|c| c.store_bytes = two)).unwrap();
    for ms in 1..=4 {
        n.publish(&node_batch(reading("temp", ms, ms as f64)), now(ms)).unwrap();
    }
    assert_eq!(events(&mut n), [EdgeEvent::Dropped { total: 1 }, EdgeEvent::Dropped { total: 2 }]);
    assert_eq!((n.stored(), n.dropped(), n.stored_bytes()), (2, 2, two));
    n.handle_connected(now(10));
    let out = drain(&mut n);
    let replayed: Vec<u64> =
        out[2..].iter().flat_map(|p| raw(p).metrics).map(|m| m.timestamp.unwrap()).collect();
    assert_eq!(replayed, [3, 4]);
}

/// Timestamps of the historical metrics in `out`.
fn history(out: &[Publish]) -> Vec<u64> {
    out.iter()
        .flat_map(|p| raw(p).metrics)
        .filter(|m| m.is_historical == Some(true))
        .map(|m| m.timestamp.unwrap())
        .collect()
}

fn store_offline(n: &mut EdgeNode, range: std::ops::RangeInclusive<u64>) {
    for ms in range {
        // 1.0 apart: each beyond the 0.5 deadband.
        n.publish(&node_batch(reading("temp", ms, ms as f64)), now(ms)).unwrap();
    }
}

/// A node replaying `replay_chunk` messages a step that stored `stored`
/// offline and connected at `at`, and the births it sent.
fn replaying(
    replay_chunk: usize,
    stored: std::ops::RangeInclusive<u64>,
    at: u64,
) -> (EdgeNode, Vec<Publish>) {
    let mut n = EdgeNode::new(config_with(|c| c.replay_chunk = replay_chunk)).unwrap();
    store_offline(&mut n, stored);
    n.handle_connected(now(at));
    let births = transmits(&mut n);
    (n, births)
}

#[test]
fn replay_goes_a_chunk_at_a_time_and_live_data_takes_the_next_seq() {
    let (mut n, births) = replaying(2, 1..=5, 100);
    assert_eq!(births.len(), 2);
    let first = n.poll_replay(now(101)).unwrap();
    assert_eq!(history(std::slice::from_ref(&first)), [1, 2]);
    assert_eq!(raw(&first).seq, Some(2));
    // Live data between two replay steps: its own message, the next seq.
    n.publish(&node_batch(reading("temp", 102, 50.0)), now(102)).unwrap();
    let live = transmits(&mut n);
    assert_eq!(live.len(), 1);
    assert_eq!(raw(&live[0]).seq, Some(3));
    assert_eq!(raw(&live[0]).metrics[0].is_historical, None);
    let rest = drain(&mut n);
    assert_eq!(history(&rest), [3, 4, 5]);
    assert_eq!(rest.iter().map(|p| raw(p).seq.unwrap()).collect::<Vec<_>>(), [4, 5]);
}

#[test]
fn unconfirmed_replay_is_sent_again_after_a_reconnect() {
    let (mut n, _) = replaying(2, 1..=6, 100);
    // Two steps handed out; the broker confirmed the first only.
    n.poll_replay(now(101)).unwrap();
    let confirmed = n.replay_mark().unwrap();
    n.poll_replay(now(102)).unwrap();
    let late = n.replay_mark().unwrap();
    n.commit_replay(confirmed);
    assert_eq!(n.stored(), 4);
    n.handle_disconnected();
    // A confirmation from the old connection means nothing now.
    n.commit_replay(late);
    assert_eq!(n.stored(), 4);
    store_offline(&mut n, 7..=7);
    n.handle_connected(now(200));
    let out = drain(&mut n);
    assert_eq!(history(&out), [3, 4, 5, 6, 7], "at least once: 3 and 4 again, then the rest");
    n.commit_replay(n.replay_mark().unwrap());
    assert_eq!(n.stored(), 0);
}

#[test]
fn a_mark_covers_only_what_was_handed_out() {
    let mut n = EdgeNode::new(config_with(|c| c.replay_chunk = 10)).unwrap();
    store_offline(&mut n, 1..=3);
    n.publish(&Batch::new("press-1").with(reading("count", 4, 1_i64)), now(4)).unwrap();
    n.handle_connected(now(100));
    transmits(&mut n);
    assert_eq!(n.replay_mark(), None, "nothing handed out yet");
    // One chunk, two messages (node and device): the first handed out is
    // not enough to confirm the chunk.
    n.poll_replay(now(101)).unwrap();
    assert_eq!(n.replay_mark(), None);
    n.poll_replay(now(102)).unwrap();
    n.commit_replay(n.replay_mark().unwrap());
    assert_eq!(n.stored(), 0);
}

#[test]
fn host_offline_during_replay_rewinds_it() {
    let mut c = config();
    c.primary_host_id = Some("scada".into());
    c.replay_chunk = 1;
    let mut n = EdgeNode::new(c).unwrap();
    store_offline(&mut n, 1..=3);
    n.handle_connected(now(10));
    n.handle_message(&state(true, 11), now(11)).unwrap();
    transmits(&mut n);
    n.poll_replay(now(12)).unwrap();
    n.handle_message(&state(false, 13), now(13)).unwrap();
    assert!(!n.replay_pending());
    assert_eq!(n.poll_replay(now(14)), None);
    n.handle_message(&state(true, 15), now(15)).unwrap();
    let out = drain(&mut n);
    assert_eq!(history(&out), [1, 2, 3]);
}

/// Store and forward reaches a host only if the host is subscribed when the
/// history goes out (Sparkplug DATA is QoS 0). With a primary host, nothing
/// goes (no birth, no history) until its STATE says online, whatever the
/// driver polls meanwhile; the history follows the births, and the event
/// says a host was watching.
#[test]
fn with_a_primary_host_history_waits_for_its_state_online() {
    let mut c = config();
    c.primary_host_id = Some("scada".into());
    let mut n = EdgeNode::new(c).unwrap();
    store_offline(&mut n, 1..=3);
    n.handle_connected(now(10));
    for ms in 11..20 {
        assert!(!n.replay_pending());
        assert_eq!(n.poll_replay(now(ms)), None, "history before the host is online");
        assert!(transmits(&mut n).is_empty(), "a birth before the host is online");
    }
    // The host's offline STATE (retained from its last session) changes nothing.
    n.handle_message(&state(false, 5), now(20)).unwrap();
    assert!(drain(&mut n).is_empty());
    n.handle_message(&state(true, 21), now(21)).unwrap();
    let out = drain(&mut n);
    let topics: Vec<_> = out.iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(topics[..2], ["spBv1.0/G/NBIRTH/E", "spBv1.0/G/DBIRTH/E/press-1"]);
    assert_eq!(history(&out), [1, 2, 3]);
    assert_eq!(
        events(&mut n),
        [EdgeEvent::ReplayStarted { stored: 3, watched: true }, EdgeEvent::HostOnline]
    );
}

/// Without a primary host the node births and replays as soon as it is
/// connected: nothing tells it a host is listening, so the event says the
/// replay is unwatched (the driver logs a warning naming `primary_host_id`).
/// The store-and-forward test once lost all 12 000 readings this way: its
/// host subscribed after the replay had gone.
#[test]
fn without_a_primary_host_history_goes_at_once_and_says_it_is_unwatched() {
    let mut n = EdgeNode::new(config()).unwrap();
    store_offline(&mut n, 1..=2);
    n.handle_connected(now(10));
    assert!(n.replay_pending());
    assert_eq!(history(&drain(&mut n)), [1, 2]);
    assert_eq!(events(&mut n), [EdgeEvent::ReplayStarted { stored: 2, watched: false }]);
    // An empty store starts no replay and says nothing.
    let mut n = EdgeNode::new(config()).unwrap();
    n.handle_connected(now(10));
    drain(&mut n);
    assert_eq!(events(&mut n), []);
}

#[test]
fn a_rebirth_during_replay_starts_it_over_after_the_births() {
    let (mut n, _) = replaying(1, 1..=3, 10);
    n.poll_replay(now(11)).unwrap();
    let rebirth = Payload {
        timestamp: Some(12),
        metrics: vec![Metric::new("Node Control/Rebirth", 12, MetricValue::Boolean(true))],
        ..Payload::default()
    };
    let payload = rebirth.encode(EncodeOptions::default());
    n.handle_message(&Message::new(NCMD, payload), now(12)).unwrap();
    let out = drain(&mut n);
    assert_eq!(out[0].topic, "spBv1.0/G/NBIRTH/E");
    assert_eq!(raw(&out[0]).seq, Some(0));
    assert_eq!(history(&out), [1, 2, 3]);
}

#[test]
fn stored_readings_of_a_metric_no_longer_configured_are_dropped_and_counted() {
    use shopfloor_sparkplug::spool::{MemorySpool, Spool};
    let mut spool = MemorySpool::new(1 << 20);
    let old = Batch::new("")
        .with(reading("temp", 1, 1.0))
        .with(reading("gone", 2, 2.0))
        .with(reading("temp", 3, "not a number"));
    let record = shopfloor_schemas::Codec::Protobuf.encode_batch(&old).unwrap();
    spool.push(&record, 3).unwrap();
    spool.push(b"\xff\xff not a batch", 4).unwrap();
    let mut n = EdgeNode::with_spool(config(), Box::new(spool)).unwrap();
    assert_eq!(n.stored(), 7);
    n.handle_connected(now(10));
    let out = drain(&mut n);
    assert_eq!(history(&out), [1]);
    assert_eq!(
        events(&mut n),
        [EdgeEvent::ReplayStarted { stored: 7, watched: false }, EdgeEvent::Dropped { total: 6 }]
    );
}

#[test]
fn bdseq_moves_on_with_each_connect() {
    let mut n = online();
    n.disconnect();
    let out = drain(&mut n);
    assert_eq!(out[0].topic, "spBv1.0/G/NDEATH/E", "an intentional disconnect sends NDEATH first");
    n.handle_disconnected();
    assert_eq!(raw(&n.will()).metrics[0].value, Some(proto::MetricValue::Long(1)));
    n.handle_connected(now(5));
    assert_eq!(raw(&drain(&mut n)[0]).metrics[0].value, Some(proto::MetricValue::Long(1)));
    // A failed attempt (no session) does not use a number up.
    n.handle_disconnected();
    n.handle_disconnected();
    assert_eq!(n.bd_seq(), 2);
    // 255 wraps to 0.
    let mut n = EdgeNode::new(config_with(|c| c.bd_seq = 255)).unwrap();
    n.handle_connected(now(1));
    n.handle_disconnected();
    assert_eq!(n.bd_seq(), 0);
}

#[test]
fn device_death_and_birth() {
    let mut n = online();
    n.device_death("press-1", now(50)).unwrap();
    let out = drain(&mut n);
    assert_eq!(out[0].topic, "spBv1.0/G/DDEATH/E/press-1");
    let d = raw(&out[0]);
    assert_eq!((d.seq, d.timestamp), (Some(2), Some(50)));
    assert!(matches!(
        n.publish(&Batch::new("press-1").with(reading("count", 51, 1_i64)), now(51)),
        Err(PublishError::DeviceDead(d)) if d == "press-1"
    ));
    n.device_birth("press-1", now(52)).unwrap();
    let out = drain(&mut n);
    assert_eq!(out[0].topic, "spBv1.0/G/DBIRTH/E/press-1");
    assert_eq!(raw(&out[0]).seq, Some(3));
}

#[test]
fn refused_batches_change_nothing() {
    let mut n = online();
    let cases = [
        (Batch::new("nope").with(reading("count", 1, 1_i64)), "no device \"nope\""),
        (node_batch(reading("pressure", 1, 1.0)), "no metric \"pressure\""),
        (
            Batch::new("press-1").with(reading("count", 1, 10_000_000_000_i64)),
            "is Int32 (3) and cannot hold",
        ),
        (node_batch(reading("temp", 1, "hot")), "is Double (10) and cannot hold"),
        // One bad reading refuses the whole batch.
        (node_batch(reading("temp", 1, 5.0)).with(reading("nope", 1, 1.0)), "no metric \"nope\""),
    ];
    for (batch, needle) in cases {
        let err = n.publish(&batch, now(1)).unwrap_err();
        assert!(err.to_string().contains(needle), "{err}");
    }
    assert!(drain(&mut n).is_empty());
    n.publish(&node_batch(reading("temp", 2, 5.0)), now(2)).unwrap();
    assert_eq!(raw(&drain(&mut n)[0]).seq, Some(2), "refused batches used no seq");
}

proptest! {
    /// seq counts every message modulo 256, whatever the mix of node and
    /// device data.
    #[test]
    fn seq_wraps_at_256(to_device in proptest::collection::vec(any::<bool>(), 1..600)) {
        let mut n = online();
        // After NBIRTH (seq 0) and DBIRTH (seq 1), data starts at 2.
        for (expected, (i, device)) in (2_u64..).zip(to_device.iter().enumerate()) {
            let ms = 10 + i as u64;
            let batch = if *device {
                Batch::new("press-1").with(reading("count", ms, i as i64))
            } else {
                node_batch(reading("temp", ms, i as f64))
            };
            n.publish(&batch, now(ms)).unwrap();
            let out = drain(&mut n);
            prop_assert_eq!(out.len(), 1);
            prop_assert_eq!(raw(&out[0]).seq, Some(expected % 256));
        }
    }
}

#[test]
fn configurations_the_wire_cannot_carry_are_refused_with_the_key() {
    use shopfloor_sparkplug::ConfigError;
    let cases: Vec<(EdgeNodeConfig, &str)> = vec![
        (config_with(|c| c.group_id = "G+1".into()), "group_id: group_id \"G+1\" contains '+'"),
        (config_with(|c| c.edge_node_id = String::new()), "edge_node_id: edge_node_id is empty"),
        (
            config_with(|c| c.primary_host_id = Some("scada/1".into())),
            "primary_host_id: host_id \"scada/1\" contains '/'",
        ),
        (
            config_with(|c| c.devices = vec![("d#".into(), vec![])]),
            "devices[0]: device_id \"d#\" contains '#'",
        ),
        (
            config_with(|c| c.devices = vec![("d".into(), vec![]), ("d".into(), vec![])]),
            "devices[1]: device id \"d\" is used twice",
        ),
        (
            config_with(|c| {
                c.metrics = vec![
                    MetricSpec::new("t", DataType::Double),
                    MetricSpec::new("t", DataType::Int32),
                ]
            }),
            "metrics: metric \"t\" is declared twice",
        ),
        (
            config_with(|c| {
                c.devices = vec![("d".into(), vec![MetricSpec::new("", DataType::Int32)])]
            }),
            "devices[0].metrics: a metric name is empty",
        ),
        (
            config_with(|c| c.metrics = vec![MetricSpec::new("bdSeq", DataType::Int64)]),
            "\"bdSeq\" is reserved",
        ),
        (
            config_with(|c| {
                c.metrics = vec![MetricSpec::new("Node Control/Reboot", DataType::Boolean)]
            }),
            "\"Node Control/Reboot\" is reserved",
        ),
    ];
    for (c, needle) in cases {
        let err: ConfigError = EdgeNode::new(c).unwrap_err();
        assert!(err.to_string().contains(needle), "{err} lacks {needle:?}");
    }
    // The same metric name on two devices is fine (names are per device).
    let ok = config_with(|c| {
        c.devices = vec![
            ("a".into(), vec![MetricSpec::new("t", DataType::Double)]),
            ("b".into(), vec![MetricSpec::new("t", DataType::Double)]),
        ]
    });
    assert!(EdgeNode::new(ok).is_ok());
}

#[test]
fn a_batch_out_of_time_order_is_sent_in_time_order() {
    let mut n = online();
    let b = node_batch(reading("temp", 30, 3.0)).with(reading("temp", 10, 1.0));
    n.publish(&b, now(31)).unwrap();
    let out = drain(&mut n);
    let ts: Vec<u64> = raw(&out[0]).metrics.iter().map(|m| m.timestamp.unwrap()).collect();
    assert_eq!(ts, [10, 30]);
}

/// A device whose metrics are learned at run time (an OPC UA server):
/// born with its values and fresh aliases; redefined with other metrics,
/// it dies and is born again; with the same ones it keeps its aliases.
#[test]
fn devices_defined_at_run_time_are_born_with_their_values() {
    let mut n = online();
    let specs =
        vec![MetricSpec::new("t", DataType::Double), MetricSpec::new("on", DataType::Boolean)];
    let values = [reading("t", 50, 21.5), reading("on", 50, true).with_quality(Quality::Uncertain)];
    n.define_device("opc-1", specs.clone(), &values, now(60)).unwrap();
    let out = transmits(&mut n);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].topic, "spBv1.0/G/DBIRTH/E/opc-1");
    let birth = raw(&out[0]);
    let aliases: Vec<u64> = birth.metrics.iter().map(|m| m.alias.unwrap()).collect();
    assert_eq!(aliases, [3, 4], "after the node's 1 and press-1's 2");
    assert_eq!(birth.metrics[0].value, Some(proto::MetricValue::Double(21.5)));
    assert_eq!(birth.metrics[0].timestamp, Some(50));
    assert!(birth.metrics[1].properties.is_some(), "the uncertain quality is in the birth");
    // Data flows by alias.
    n.publish(&Batch::new("opc-1").with(reading("t", 70, 22.0)), now(70)).unwrap();
    let data = transmits(&mut n);
    assert_eq!(data[0].topic, "spBv1.0/G/DDATA/E/opc-1");
    assert_eq!(raw(&data[0]).metrics[0].alias, Some(3));

    // Same metrics again (after an outage): no death, same aliases.
    n.device_death("opc-1", now(80)).unwrap();
    transmits(&mut n);
    n.define_device("opc-1", specs, &[reading("t", 90, 23.0)], now(90)).unwrap();
    let out = transmits(&mut n);
    assert_eq!(out.len(), 1);
    let birth = raw(&out[0]);
    assert_eq!(birth.metrics.iter().map(|m| m.alias.unwrap()).collect::<Vec<_>>(), [3, 4]);
    assert_eq!(birth.metrics[0].value, Some(proto::MetricValue::Double(23.0)));

    // Other metrics: death, then a birth with new aliases; old metrics refused.
    let other = vec![MetricSpec::new("t", DataType::Float)];
    n.define_device("opc-1", other, &[reading("t", 100, 1.5)], now(100)).unwrap();
    let out = transmits(&mut n);
    let topics: Vec<&str> = out.iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(topics, ["spBv1.0/G/DDEATH/E/opc-1", "spBv1.0/G/DBIRTH/E/opc-1"]);
    assert_eq!(raw(&out[1]).metrics[0].alias, Some(5));
    assert!(matches!(
        n.publish(&Batch::new("opc-1").with(reading("on", 110, false)), now(110)),
        Err(PublishError::UnknownMetric { .. })
    ));
    // Bad definitions are refused.
    assert!(n.define_device("a/b", vec![], &[], now(120)).is_err());
    let dup = vec![MetricSpec::new("x", DataType::Double), MetricSpec::new("x", DataType::Double)];
    assert!(n.define_device("opc-2", dup, &[], now(120)).is_err());
}

/// `devices()` lists each device with whether it is alive: what a
/// gateway's per-device metric shows.
#[test]
fn devices_are_listed_alive_until_their_death_and_again_after_birth() {
    let mut node = EdgeNode::new(config()).unwrap();
    assert_eq!(node.devices().collect::<Vec<_>>(), [("press-1", true)]);
    node.handle_connected(now(0));
    drain(&mut node);
    node.device_death("press-1", now(10)).unwrap();
    assert_eq!(node.devices().collect::<Vec<_>>(), [("press-1", false)]);
    node.device_birth("press-1", now(20)).unwrap();
    assert_eq!(node.devices().collect::<Vec<_>>(), [("press-1", true)]);
}
