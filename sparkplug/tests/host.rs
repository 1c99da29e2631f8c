//! The sans-IO host application, driven against the sans-IO edge node
//! through an in-memory broker (a quinn-`Pair`-style harness): no sockets,
//! no sleeps; time jumps to the next deadline.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use prost::Message as _;
use shopfloor_schemas::{Batch, Quality, Reading, Timestamp, Value};
use shopfloor_sparkplug::edge::{Message, MetricSpec, Publish};
use shopfloor_sparkplug::host::RebirthReason;
use shopfloor_sparkplug::{
    DataType, EdgeNode, EdgeNodeConfig, EncodeOptions, HostApplication, HostConfig, HostEvent,
    MessageType, Metric, MetricValue, Now, Payload, StatePayload, Topic,
};

struct Harness {
    edge: EdgeNode,
    host: HostApplication,
    ms: u64,
    base: Instant,
    /// Edge → host messages held back by the test.
    held: VecDeque<Publish>,
    drop_next: Option<MessageType>,
    hold_next: Option<MessageType>,
    events: Vec<HostEvent>,
}

impl Harness {
    fn new() -> Self {
        let mut edge = EdgeNodeConfig::new("G", "E");
        edge.metrics = vec![MetricSpec::new("temp", DataType::Double)];
        edge.devices = vec![("press-1".into(), vec![MetricSpec::new("count", DataType::Int32)])];
        Self {
            edge: EdgeNode::new(edge).unwrap(),
            host: HostApplication::new(HostConfig::new("scada")),
            ms: 1_000,
            base: Instant::now(),
            held: VecDeque::new(),
            drop_next: None,
            hold_next: None,
            events: Vec::new(),
        }
    }

    fn connected() -> Self {
        let mut t = Self::new();
        let now = t.now();
        t.host.will(now);
        t.host.handle_connected(now);
        t.edge.handle_connected(now);
        t.drive();
        t.events.clear();
        t
    }

    fn now(&self) -> Now {
        Now { instant: self.base + Duration::from_millis(self.ms), unix_ms: self.ms }
    }

    fn advance(&mut self, ms: u64) {
        self.ms += ms;
    }

    /// Passes messages both ways until both sides are quiet.
    fn drive(&mut self) {
        loop {
            let mut moved = false;
            while let Some(p) = self.edge.poll_transmit() {
                moved = true;
                let kind = Topic::parse(&p.topic).unwrap().message_type();
                if kind.is_some() && kind == self.drop_next {
                    self.drop_next = None;
                    continue;
                }
                if kind.is_some() && kind == self.hold_next {
                    self.hold_next = None;
                    self.held.push_back(p);
                    continue;
                }
                self.deliver_to_host(&p);
            }
            while let Some(p) = self.host.poll_transmit() {
                moved = true;
                let now = self.now();
                // STATE is for other edge nodes; commands go to ours.
                let _ = self.edge.handle_message(
                    &Message { retain: false, topic: p.topic, payload: p.payload },
                    now,
                );
            }
            while self.edge.poll_event().is_some() {}
            while let Some(e) = self.host.poll_event() {
                self.events.push(e);
            }
            if !moved {
                break;
            }
        }
    }

    fn deliver_to_host(&mut self, p: &Publish) {
        let now = self.now();
        let _ = self.host.handle_message(
            &Message { retain: false, topic: p.topic.clone(), payload: p.payload.clone() },
            now,
        );
    }

    fn release_held(&mut self) {
        while let Some(p) = self.held.pop_front() {
            self.deliver_to_host(&p);
        }
        self.drive();
    }

    fn publish_temp(&mut self, v: f64) {
        let now = self.now();
        let r = Reading::new("temp", Timestamp::from_unix_ms(self.ms), v);
        self.edge.publish(&Batch::new("").with(r), now).unwrap();
        self.drive();
    }

    /// Jumps time to the host's next deadline and fires it.
    fn fire_timeout(&mut self) {
        let deadline = self.host.poll_timeout().expect("a deadline");
        let ms = u64::try_from(deadline.duration_since(self.base).as_millis()).unwrap();
        self.ms = self.ms.max(ms);
        let now = self.now();
        self.host.handle_timeout(now);
        self.drive();
    }

    fn data(&self) -> Vec<&Batch> {
        self.events
            .iter()
            .filter_map(|e| if let HostEvent::Data(b) = e { Some(b) } else { None })
            .collect()
    }

    fn rebirth_requests(&self) -> usize {
        self.events.iter().filter(|e| matches!(e, HostEvent::RebirthRequested { .. })).count()
    }
}

#[test]
fn births_and_data_become_batches() {
    let mut t = Harness::new();
    let now = t.now();
    let will = t.host.will(now).unwrap();
    assert_eq!((will.topic.as_str(), will.qos, will.retain), ("spBv1.0/STATE/scada", 1, true));
    assert_eq!(
        StatePayload::from_json(&will.payload).unwrap(),
        StatePayload { online: false, timestamp: 1_000 }
    );
    t.host.handle_connected(now);
    let birth = t.host.poll_transmit().unwrap();
    assert_eq!(
        StatePayload::from_json(&birth.payload).unwrap(),
        StatePayload { online: true, timestamp: 1_000 },
        "same T as the Will"
    );
    t.edge.handle_connected(now);
    t.drive();
    assert!(t.events.contains(&HostEvent::NodeOnline {
        group: "G".into(),
        edge_node: "E".into(),
        bd_seq: 0
    }));
    assert!(t.events.contains(&HostEvent::DeviceOnline {
        group: "G".into(),
        edge_node: "E".into(),
        device: "press-1".into()
    }));
    t.events.clear();
    t.advance(10);
    t.publish_temp(20.5);
    let now = t.now();
    t.edge
        .publish(
            &Batch::new("press-1").with(Reading::new(
                "count",
                Timestamp::from_unix_ms(1_010),
                -3_i64,
            )),
            now,
        )
        .unwrap();
    t.drive();
    let data = t.data();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0].source, "G/E");
    assert_eq!(
        (data[0].readings[0].metric.as_str(), &data[0].readings[0].value),
        ("temp", &Value::F64(20.5))
    );
    assert_eq!(data[1].source, "G/E/press-1");
    assert_eq!(data[1].readings[0].value, Value::I64(-3));
    assert_eq!(t.rebirth_requests(), 0);
}

#[test]
fn historical_metrics_come_apart_from_live_ones() {
    let mut t = Harness::connected();
    t.hold_next = Some(MessageType::NData);
    t.publish_temp(20.5);
    let held = t.held.pop_front().expect("the NDATA held back");
    let seq = shopfloor_sparkplug::proto::Payload::decode(&held.payload[..]).unwrap().seq;
    let mut old = Metric::new("temp", 500, MetricValue::Double(99.0));
    old.is_historical = true;
    let p = Payload {
        timestamp: Some(t.ms),
        seq,
        metrics: vec![old, Metric::new("temp", t.ms, MetricValue::Double(21.0))],
        ..Default::default()
    };
    t.deliver_to_host(&Publish {
        topic: held.topic.clone(),
        payload: p.encode(EncodeOptions::default()).into(),
        ..held
    });
    t.drive();
    let history: Vec<&Batch> = t
        .events
        .iter()
        .filter_map(|e| if let HostEvent::Historical(b) = e { Some(b) } else { None })
        .collect();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].source, "G/E");
    assert_eq!(history[0].readings.len(), 1);
    assert_eq!(history[0].readings[0].value, Value::F64(99.0));
    assert_eq!(history[0].readings[0].timestamp.unix_ms(), 500);
    let live = t.data();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].readings.len(), 1, "the replayed value is not live");
    assert_eq!(live[0].readings[0].value, Value::F64(21.0));
}

#[test]
fn host_requests_rebirth_after_seq_gap() {
    let mut t = Harness::connected();
    t.drop_next = Some(MessageType::NData);
    t.publish_temp(1.0); // this seq never reaches the host
    t.advance(10);
    t.publish_temp(2.0); // arrives after a gap
    assert!(t.host.poll_timeout().is_some(), "the gap starts the reorder timer");
    assert_eq!(t.rebirth_requests(), 0, "not before the timeout");
    t.fire_timeout();
    assert!(matches!(
        t.events.iter().find(|e| matches!(e, HostEvent::RebirthRequested { .. })),
        Some(HostEvent::RebirthRequested { reason: RebirthReason::SeqGap { missing }, .. }) if missing.len() == 1
    ));
    // The edge node honoured it: a new NBIRTH with the same bdSeq.
    assert_eq!(
        t.events.iter().filter(|e| matches!(e, HostEvent::NodeOnline { bd_seq: 0, .. })).count(),
        1
    );
    assert!(t.host.poll_timeout().is_none());
}

#[test]
fn a_gap_filled_in_time_needs_no_rebirth() {
    let mut t = Harness::connected();
    t.hold_next = Some(MessageType::NData);
    t.publish_temp(1.0);
    t.advance(10);
    t.publish_temp(2.0);
    assert!(t.host.poll_timeout().is_some());
    t.release_held();
    assert!(t.host.poll_timeout().is_none(), "the late message closed the gap");
    assert_eq!(t.rebirth_requests(), 0);
    // Both values were passed on, in arrival order.
    let values: Vec<&Value> = t.data().iter().map(|b| &b.readings[0].value).collect();
    assert_eq!(values, [&Value::F64(2.0), &Value::F64(1.0)]);
}

#[test]
fn a_late_will_of_an_old_session_does_not_kill_the_new_one() {
    let mut t = Harness::connected();
    t.publish_temp(20.0);
    let old_will = t.edge.will(); // bdSeq 0
    t.edge.handle_disconnected();
    let now = t.now();
    t.edge.handle_connected(now); // session 2, bdSeq 1
    t.drive();
    t.events.clear();
    t.deliver_to_host(&old_will);
    t.drive();
    assert_eq!(
        t.events,
        [HostEvent::StaleDeath { group: "G".into(), edge_node: "E".into(), bd_seq: Some(0) }]
    );
    t.events.clear();
    // The current session's death: offline, and every last value stale at host time.
    t.advance(500);
    let will = t.edge.will();
    t.deliver_to_host(&will);
    t.drive();
    assert!(
        t.events.contains(&HostEvent::NodeOffline { group: "G".into(), edge_node: "E".into() })
    );
    assert!(t.events.contains(&HostEvent::DeviceOffline {
        group: "G".into(),
        edge_node: "E".into(),
        device: "press-1".into()
    }));
    let stale = t.data();
    assert_eq!(stale.len(), 1, "only the node had values: {stale:?}");
    let r = &stale[0].readings[0];
    assert_eq!(
        (r.metric.as_str(), &r.value, r.quality, r.timestamp.unix_ms()),
        ("temp", &Value::F64(20.0), Quality::Stale, t.ms)
    );
}

#[test]
fn an_ndeath_with_a_newer_bdseq_still_means_dead() {
    // A later session died before this host saw its birth, or a peer (like
    // pysparkplug 0.6) sends its next bdSeq in the NDEATH: the node is gone.
    let mut t = Harness::connected();
    let mut config = EdgeNodeConfig::new("G", "E");
    config.bd_seq = 1;
    let next = EdgeNode::new(config).unwrap();
    let will = next.will();
    t.deliver_to_host(&will);
    t.drive();
    assert!(
        t.events.contains(&HostEvent::NodeOffline { group: "G".into(), edge_node: "E".into() }),
        "{:?}",
        t.events
    );
}

#[test]
fn ddeath_makes_device_metrics_stale_at_its_timestamp() {
    let mut t = Harness::connected();
    let now = t.now();
    t.edge
        .publish(
            &Batch::new("press-1").with(Reading::new(
                "count",
                Timestamp::from_unix_ms(t.ms),
                5_i64,
            )),
            now,
        )
        .unwrap();
    t.drive();
    t.events.clear();
    t.advance(100);
    let now = t.now();
    t.edge.device_death("press-1", now).unwrap();
    t.drive();
    assert_eq!(
        t.events[0],
        HostEvent::DeviceOffline {
            group: "G".into(),
            edge_node: "E".into(),
            device: "press-1".into()
        }
    );
    let r = &t.data()[0].readings[0];
    assert_eq!(
        (r.quality, r.timestamp.unix_ms(), &r.value),
        (Quality::Stale, t.ms, &Value::I64(5))
    );
}

#[test]
fn data_before_birth_and_unknown_aliases_ask_for_rebirth_once_per_cooldown() {
    let mut t = Harness::new();
    let now = t.now();
    t.host.handle_connected(now);
    while t.host.poll_transmit().is_some() {}
    let data = Payload {
        timestamp: Some(1),
        seq: Some(5),
        metrics: vec![Metric::new("x", 1, MetricValue::Double(1.0))],
        ..Default::default()
    };
    let msg = Message {
        retain: false,
        topic: "spBv1.0/G/NDATA/E".into(),
        payload: data.encode(EncodeOptions::default()).into(),
    };
    t.host.handle_message(&msg, now).unwrap();
    let rebirth = t.host.poll_transmit().expect("a rebirth request");
    assert_eq!(
        (rebirth.topic.as_str(), rebirth.qos, rebirth.retain),
        ("spBv1.0/G/NCMD/E", 0, false)
    );
    let p = shopfloor_sparkplug::proto::Payload::decode(&rebirth.payload[..]).unwrap();
    assert_eq!(p.metrics[0].name.as_deref(), Some("Node Control/Rebirth"));
    assert_eq!(p.metrics[0].value, Some(shopfloor_sparkplug::proto::MetricValue::Boolean(true)));
    assert_eq!(p.seq, None, "NCMD carries no seq");
    // Within the cooldown: no second request.
    t.advance(1_000);
    t.host.handle_message(&msg, t.now()).unwrap();
    assert!(t.host.poll_transmit().is_none());
    t.advance(5_000);
    t.host.handle_message(&msg, t.now()).unwrap();
    assert!(t.host.poll_transmit().is_some(), "after the cooldown");

    // An alias the birth never defined.
    let mut t = Harness::connected();
    let mut m = Metric::new("", t.ms, MetricValue::Double(1.0));
    (m.name, m.alias) = (None, Some(99));
    let bad =
        Payload { timestamp: Some(t.ms), seq: Some(2), metrics: vec![m], ..Default::default() };
    let err = t.host.handle_message(
        &Message {
            retain: false,
            topic: "spBv1.0/G/NDATA/E".into(),
            payload: bad.encode(EncodeOptions::DEFAULT.with_datatypes(false)).into(),
        },
        t.now(),
    );
    assert!(err.is_err());
    t.drive();
    assert!(t.events.iter().any(|e| matches!(
        e,
        HostEvent::RebirthRequested { reason: RebirthReason::UnknownMetric(_), .. }
    )));
}

#[test]
fn own_stale_offline_state_is_answered_with_online() {
    let mut t = Harness::new();
    let now = t.now();
    let will = t.host.will(now).unwrap();
    t.host.handle_connected(now);
    while t.host.poll_transmit().is_some() {}
    // The broker replays our own stale Will (same T): say online again.
    t.host
        .handle_message(
            &Message { retain: false, topic: will.topic.clone(), payload: will.payload.clone() },
            now,
        )
        .unwrap();
    let again = t.host.poll_transmit().unwrap();
    assert_eq!(
        StatePayload::from_json(&again.payload).unwrap(),
        StatePayload { online: true, timestamp: 1_000 }
    );
    // An offline with another timestamp is not ours to answer.
    let other = StatePayload { online: false, timestamp: 5 }.to_json();
    t.host
        .handle_message(&Message { retain: false, topic: will.topic, payload: other.into() }, now)
        .unwrap();
    assert!(t.host.poll_transmit().is_none());
    // A standby host publishes no STATE at all.
    let mut config = HostConfig::new("standby");
    config.publish_state = false;
    let mut standby = HostApplication::new(config);
    assert!(standby.will(now).is_none());
    standby.handle_connected(now);
    assert!(standby.poll_transmit().is_none());
}

#[test]
fn losing_the_broker_makes_everything_stale() {
    let mut t = Harness::connected();
    t.publish_temp(7.0);
    t.events.clear();
    t.advance(50);
    let now = t.now();
    t.host.handle_disconnected(now);
    t.drive();
    assert!(
        t.events.contains(&HostEvent::NodeOffline { group: "G".into(), edge_node: "E".into() })
    );
    let r = &t.data()[0].readings[0];
    assert_eq!(
        (r.quality, &r.value, r.timestamp.unix_ms()),
        (Quality::Stale, &Value::F64(7.0), t.ms)
    );
}

proptest! {
    /// Whatever order a complete run of DATA arrives in (within the reorder
    /// window), every message is passed on and no gap stays open.
    #[test]
    fn any_arrival_order_of_a_complete_run_closes_every_gap(order in Just((0..40_usize).collect::<Vec<_>>()).prop_shuffle(), start in 0_u64..300) {
        let mut t = Harness::connected();
        // Start anywhere in the seq space, so runs cross 255 → 0.
        for _ in 0..start {
            t.advance(1);
            t.publish_temp(t.ms as f64);
        }
        t.events.clear();
        let mut msgs = Vec::new();
        for _ in 0..40 {
            t.advance(1);
            let now = t.now();
            let r = Reading::new("temp", Timestamp::from_unix_ms(t.ms), t.ms as f64);
            t.edge.publish(&Batch::new("").with(r), now).unwrap();
            msgs.push(t.edge.poll_transmit().unwrap());
        }
        for i in order {
            t.deliver_to_host(&msgs[i]);
        }
        t.drive();
        prop_assert_eq!(t.data().len(), 40);
        prop_assert!(t.host.poll_timeout().is_none());
        prop_assert_eq!(t.rebirth_requests(), 0);
    }
}

#[test]
fn subscribes_before_its_state_and_dies_with_the_time_of_leaving() {
    let t = Harness::new();
    let mut host = t.host;
    // The driver subscribes to these on CONNACK and calls handle_connected
    // on the SUBACK: its own STATE topic and the namespace, before STATE.
    assert_eq!(host.subscriptions(), ["spBv1.0/+/#", "spBv1.0/STATE/scada"]);
    let at = |ms: u64| Now { instant: t.base + Duration::from_millis(ms), unix_ms: ms };
    let will = host.will(at(1_000)).unwrap();
    assert_eq!(host.poll_transmit(), None, "nothing is published before the subscriptions");
    host.handle_connected(at(1_000));
    let birth = host.poll_transmit().unwrap();
    assert_eq!(StatePayload::from_json(&birth.payload).unwrap().timestamp, 1_000);
    assert_eq!(will.payload, StatePayload { online: false, timestamp: 1_000 }.to_json());
    // Leaving on purpose: the death carries the time of leaving, QoS 1, retained.
    host.disconnect(at(7_500));
    let death = host.poll_transmit().unwrap();
    assert_eq!((death.topic.as_str(), death.qos, death.retain), ("spBv1.0/STATE/scada", 1, true));
    assert_eq!(
        StatePayload::from_json(&death.payload).unwrap(),
        StatePayload { online: false, timestamp: 7_500 }
    );
}

/// A node naming new metrics in every DATA cannot grow the host without
/// bound: past `max_tracked_metrics` the readings still flow, are counted,
/// and are not remembered for the death's stale values.
#[test]
fn last_values_kept_are_bounded() {
    let (mut host, now) = bare_host(|c| c.max_tracked_metrics = 100);
    let mut birth = Payload { timestamp: Some(1_000), seq: Some(0), ..Default::default() };
    birth.metrics.push(Metric::new("bdSeq", 1_000, MetricValue::Int64(0)));
    host.handle_message(&node_message("NBIRTH", birth), now).unwrap();
    let mut data = Payload { timestamp: Some(2_000), seq: Some(1), ..Default::default() };
    for i in 0..1_000 {
        data.metrics.push(Metric::new(format!("m{i}"), 2_000, MetricValue::Double(1.0)));
    }
    host.handle_message(&node_message("NDATA", data), now).unwrap();
    let mut readings = 0;
    while let Some(e) = host.poll_event() {
        if let HostEvent::Data(b) = e {
            readings += b.readings.len();
        }
    }
    assert_eq!(readings, 1_000, "every reading flows");
    assert_eq!(host.untracked_readings(), 900);
    let mut death = Payload { timestamp: Some(3_000), ..Default::default() };
    death.metrics.push(Metric::new("bdSeq", 3_000, MetricValue::Int64(0)));
    host.handle_message(&node_message("NDEATH", death), now).unwrap();
    let stale: usize = std::iter::from_fn(|| host.poll_event())
        .filter_map(|e| match e {
            HostEvent::Data(b) => Some(b.readings.len()),
            _ => None,
        })
        .sum();
    assert_eq!(stale, 100, "the death makes stale what was kept");
}

/// A payload with more metrics than `max_metrics_per_payload` is refused
/// whole, births and DATA alike; smaller ones pass.
#[test]
fn payloads_past_the_metric_limit_are_refused() {
    let (mut host, now) = bare_host(|c| c.max_metrics_per_payload = 10);
    let payload = |seq: u64, n: usize| {
        let mut p = Payload { timestamp: Some(1_000), seq: Some(seq), ..Default::default() };
        p.metrics.push(Metric::new("bdSeq", 1_000, MetricValue::Int64(0)));
        for i in 1..n {
            p.metrics.push(Metric::new(format!("m{i}"), 1_000, MetricValue::Double(1.0)));
        }
        p
    };
    let e = host.handle_message(&node_message("NBIRTH", payload(0, 11)), now).unwrap_err();
    assert!(e.to_string().contains("11 metrics in one payload, more than the 10 allowed"), "{e}");
    assert!(host.handle_message(&node_message("NBIRTH", payload(0, 10)), now).is_ok());
    let e = host.handle_message(&node_message("NDATA", payload(1, 11)), now).unwrap_err();
    assert!(matches!(
        e,
        shopfloor_sparkplug::host::InboundError::TooManyMetrics { metrics: 11, .. }
    ));
}

/// Remote input cannot make the host follow unbounded nodes, devices or
/// metric names: the birth past each limit is refused with its reason,
/// rebirths of what is followed still pass, and DATA from a node the host
/// has no room for asks for no rebirth.
#[test]
fn nodes_devices_and_names_per_node_are_bounded() {
    use shopfloor_sparkplug::host::InboundError;
    let (mut host, now) = bare_host(|c| {
        c.max_nodes = 2;
        c.max_devices_per_node = 2;
        c.max_metrics_per_node = 5;
    });
    let msg = |topic: &str, seq: u64, names: &[&str]| {
        let mut p = Payload { timestamp: Some(1_000), seq: Some(seq), ..Default::default() };
        if topic.contains("NBIRTH") {
            p.metrics.push(Metric::new("bdSeq", 1_000, MetricValue::Int64(0)));
        }
        for n in names {
            p.metrics.push(Metric::new(*n, 1_000, MetricValue::Double(1.0)));
        }
        Message {
            retain: false,
            topic: topic.into(),
            payload: p.encode(EncodeOptions::default()).into(),
        }
    };
    host.handle_message(&msg("spBv1.0/G/NBIRTH/E", 0, &["m1"]), now).unwrap();
    host.handle_message(&msg("spBv1.0/G/NBIRTH/E2", 0, &[]), now).unwrap();
    let e = host.handle_message(&msg("spBv1.0/G/NBIRTH/E3", 0, &[]), now).unwrap_err();
    assert!(matches!(e, InboundError::TooManyNodes { limit: 2, .. }), "{e}");
    assert!(e.to_string().contains("max_nodes"), "{e}");
    // A rebirth of a node followed already passes.
    host.handle_message(&msg("spBv1.0/G/NBIRTH/E", 0, &["m1"]), now).unwrap();
    let _ = host.drain_transmits().count();
    while host.poll_event().is_some() {}
    // DATA of a node there is no room for: nothing named, no rebirth asked.
    let _ = host.handle_message(&msg("spBv1.0/G/NDATA/X", 1, &["m"]), now);
    assert_eq!(host.drain_transmits().count(), 0, "no state, no rebirth request for G/X");
    assert!(std::iter::from_fn(|| host.poll_event()).all(|e| !matches!(e, HostEvent::Data(_))));

    // Names per node: bdSeq and m1 are 2; a and b make 4.
    host.handle_message(&msg("spBv1.0/G/DBIRTH/E/D1", 1, &["a", "b"]), now).unwrap();
    // A device rebirth names nothing new.
    host.handle_message(&msg("spBv1.0/G/DBIRTH/E/D1", 2, &["a", "b"]), now).unwrap();
    let e = host.handle_message(&msg("spBv1.0/G/DBIRTH/E/D2", 3, &["c", "d"]), now).unwrap_err();
    assert!(matches!(e, InboundError::TooManyNodeMetrics { metrics: 6, limit: 5, .. }), "{e}");
    host.handle_message(&msg("spBv1.0/G/DBIRTH/E/D2", 4, &["c"]), now).unwrap();
    // Devices per node.
    let e = host.handle_message(&msg("spBv1.0/G/DBIRTH/E/D3", 5, &[]), now).unwrap_err();
    assert!(matches!(e, InboundError::TooManyDevices { limit: 2, .. }), "{e}");
    // An NBIRTH alone past the names limit is refused too.
    let e = host
        .handle_message(&msg("spBv1.0/G/NBIRTH/E2", 0, &["1", "2", "3", "4", "5"]), now)
        .unwrap_err();
    assert!(matches!(e, InboundError::TooManyNodeMetrics { metrics: 6, .. }), "{e}");
}

/// A host that replays a stored birth (ingest after a restart) and then
/// reads queued DATA: the DATA continues a sequence the birth knows nothing
/// of. After `resync_seq` that is no gap; a gap after it still is.
#[test]
fn resync_takes_the_next_seq_as_it_comes() {
    let (mut host, now) = bare_host(|_| {});
    let payload = |seq: u64, name: Option<&str>| {
        let mut p = Payload { timestamp: Some(1_000), seq: Some(seq), ..Default::default() };
        if name.is_some() {
            p.metrics.push(Metric::new("bdSeq", 1_000, MetricValue::Int64(0)));
        }
        p.metrics.push(Metric::new(name.unwrap_or("x"), 1_000, MetricValue::Double(1.0)));
        p
    };
    host.handle_message(&node_message("NBIRTH", payload(0, Some("x"))), now).unwrap();
    host.resync_seq();
    host.handle_message(&node_message("NDATA", payload(57, None)), now).unwrap();
    assert_eq!(host.poll_timeout(), None, "the first DATA after a resync is no gap");
    host.handle_message(&node_message("NDATA", payload(58, None)), now).unwrap();
    assert_eq!(host.poll_timeout(), None);
    host.handle_message(&node_message("NDATA", payload(60, None)), now).unwrap();
    assert!(host.poll_timeout().is_some(), "59 is missing: the reorder timer runs");
}

/// Hosts sharing DATA: births, deaths and STATE come to each, DATA
/// through the shared subscription; each sees part of a node's `seq`, so
/// a skipped number is no gap. `missed_birth` says when DATA needs a
/// birth another host kept.
#[test]
fn a_host_sharing_data_subscribes_births_apart_and_takes_no_gap_for_a_rebirth() {
    let (mut host, now) = bare_host(|c| {
        c.share = Some("ingest".into());
        c.groups = Some(vec!["G".into()]);
    });
    assert_eq!(
        host.subscriptions(),
        [
            "spBv1.0/G/NBIRTH/#",
            "spBv1.0/G/DBIRTH/#",
            "spBv1.0/G/NDEATH/#",
            "spBv1.0/G/DDEATH/#",
            "$share/ingest/spBv1.0/G/NDATA/#",
            "$share/ingest/spBv1.0/G/DDATA/#",
            "spBv1.0/STATE/scada",
        ]
    );
    let (plain, _) = bare_host(|_| {});
    assert_eq!(plain.subscriptions(), ["spBv1.0/+/#", "spBv1.0/STATE/scada"]);

    let payload = |seq: u64, birth: bool| {
        let mut p = Payload { timestamp: Some(1_000 + seq), seq: Some(seq), ..Default::default() };
        if birth {
            p.metrics.push(Metric::new("bdSeq", 1_000, MetricValue::Int64(3)));
        }
        p.metrics.push(Metric::new("x", 1_000 + seq, MetricValue::Double(seq as f64)));
        p
    };
    assert!(host.missed_birth("spBv1.0/G/NDATA/E"), "no birth yet");
    assert!(host.missed_birth("spBv1.0/G/DDATA/E/d"));
    assert!(host.missed_birth("spBv1.0/G/DBIRTH/E/d"));
    assert!(!host.missed_birth("spBv1.0/G/NBIRTH/E"), "a birth names itself");
    assert!(!host.missed_birth("spBv1.0/H/NDATA/E"), "a group not followed is not ours");
    assert!(!host.missed_birth("plant/x"), "not Sparkplug");
    // DATA before a birth asks for one, and is still missing it.
    let _ = host.handle_message(&node_message("NDATA", payload(1, false)), now);
    assert!(host.missed_birth("spBv1.0/G/NDATA/E"));
    assert_eq!(host.drain_transmits().count(), 1, "a rebirth request");
    host.handle_message(&node_message("NBIRTH", payload(0, true)), now).unwrap();
    assert!(!host.missed_birth("spBv1.0/G/NDATA/E"));
    // The other hosts took 1 to 4 and 6 to 9.
    for seq in [5, 10, 12] {
        host.handle_message(&node_message("NDATA", payload(seq, false)), now).unwrap();
    }
    assert_eq!(host.poll_timeout(), None, "no reorder timer: a skipped seq is another host's");
    assert!(host.drain_transmits().next().is_none(), "no rebirth request");
    let values: Vec<f64> = std::iter::from_fn(|| host.poll_event())
        .filter_map(|e| if let HostEvent::Data(b) = e { Some(b) } else { None })
        .flat_map(|b| b.readings)
        .filter_map(|r| r.value.as_f64())
        .collect();
    assert_eq!(values, [0.0, 5.0, 10.0, 12.0]);
    // Dead is not missed: its DATA waits for the next birth.
    let mut death = Payload { timestamp: Some(2_000), ..Default::default() };
    death.metrics.push(Metric::new("bdSeq", 2_000, MetricValue::Int64(3)));
    host.handle_message(&node_message("NDEATH", death), now).unwrap();
    assert!(!host.missed_birth("spBv1.0/G/NDATA/E"));
}

/// A host without STATE, connected at 1 s, for tests that feed it raw
/// messages of node `G/E`; `tune` adjusts its configuration.
fn bare_host(tune: impl FnOnce(&mut HostConfig)) -> (HostApplication, Now) {
    let mut config = HostConfig::new("scada");
    config.publish_state = false;
    tune(&mut config);
    let mut host = HostApplication::new(config);
    let now = Now { instant: Instant::now(), unix_ms: 1_000 };
    host.handle_connected(now);
    (host, now)
}

/// A message of node `G/E` of type `kind`.
fn node_message(kind: &str, p: Payload) -> Message {
    Message {
        retain: false,
        topic: format!("spBv1.0/G/{kind}/E"),
        payload: p.encode(EncodeOptions::default()).into(),
    }
}
