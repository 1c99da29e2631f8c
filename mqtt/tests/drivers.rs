//! The MQTT drivers against a real Mosquitto from testkit: an edge node and
//! a host application talk through it, survive a broker kill -9, and replay
//! what was taken during the outage.

use std::time::Duration;

use shopfloor_mqtt::{Broker, DriverConfig, EdgeDriver, EdgeStats, HostDriver, Protocol};
use shopfloor_schemas::{Batch, Quality, Reading, Timestamp, Value};
use shopfloor_sparkplug::edge::MetricSpec;
use shopfloor_sparkplug::spool::{FileSpool, OpenReport, SpoolError};
use shopfloor_sparkplug::{
    DataType, EdgeEvent, EdgeNode, EdgeNodeConfig, HostConfig, HostEvent, StatePayload,
};
use shopfloor_testkit::Mosquitto;
use tokio::time::timeout;

mod support;
use support::{config, host_event, scada};

/// Node `Plant1/{edge_node}` with one metric, `temp`, waiting for
/// `primary_host` if any.
fn temp_node(edge_node: &str, primary_host: Option<&str>) -> EdgeNode {
    let mut c = EdgeNodeConfig::new("Plant1", edge_node);
    c.primary_host_id = primary_host.map(str::to_owned);
    c.metrics = vec![MetricSpec::new("temp", DataType::Double)];
    EdgeNode::new(c).unwrap()
}

fn edge(broker: &Mosquitto) -> EdgeDriver {
    EdgeDriver::spawn(temp_node("Gateway-7", Some("scada")), config("edge-7", broker))
}

fn host(broker: &Mosquitto) -> HostDriver {
    scada(config("scada", broker))
}

fn temp(ms: u64, v: f64) -> Batch {
    Batch::new("").with(Reading::new("temp", Timestamp::from_unix_ms(ms), v))
}

fn data_with(e: &HostEvent, v: f64) -> bool {
    matches!(e, HostEvent::Data(b) if b.readings.iter().any(|r| r.value == Value::F64(v) && r.quality == Quality::Good))
}

/// Publishes `temp` = `v` at `ms` and waits for the host to get it live.
async fn publish_and_see(e: &EdgeDriver, h: &mut HostDriver, what: &str, ms: u64, v: f64) {
    e.publish(temp(ms, v)).await.unwrap();
    host_event(h, what, |e| data_with(e, v)).await;
}

/// Waits until the edge driver has noticed that its broker is gone.
async fn edge_offline(e: &mut EdgeDriver) {
    timeout(Duration::from_secs(20), async {
        while e.next_event().await.expect("edge driver alive") != EdgeEvent::Offline {}
    })
    .await
    .expect("the edge node noticed the broker's death");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_and_host_talk_through_mosquitto() {
    let broker = Mosquitto::start().expect("start mosquitto");
    let mut h = host(&broker);
    let e = edge(&broker);
    host_event(&mut h, "NodeOnline", |e| matches!(e, HostEvent::NodeOnline { bd_seq: 0, .. }))
        .await;
    e.publish(temp(1_700_000_000_000, 21.5)).await.unwrap();
    let got = host_event(&mut h, "data 21.5", |e| data_with(e, 21.5)).await;
    let HostEvent::Data(batch) = got else { unreachable!() };
    assert_eq!(batch.source, "Plant1/Gateway-7");
    assert_eq!(batch.readings[0].timestamp.unix_ms(), 1_700_000_000_000);
    // A clean shutdown sends NDEATH first: the host marks the node offline
    // and its last value stale.
    e.shutdown().await;
    host_event(&mut h, "NodeOffline", |e| matches!(e, HostEvent::NodeOffline { .. })).await;
    host_event(&mut h, "stale 21.5", |e| {
        matches!(e, HostEvent::Data(b) if b.readings.iter().any(|r| r.value == Value::F64(21.5) && r.quality == Quality::Stale))
    })
    .await;
    assert_eq!(h.dropped_events(), 0);
    h.shutdown().await;
    // Mosquitto logs each CONNECT: p5 is MQTT 5, c1 a clean start
    // (tck-id-principles-persistence-clean-session-50,
    // tck-id-message-flow-phid-sparkplug-clean-session-50).
    let log = broker.log();
    for client in ["edge-7", "scada"] {
        assert!(log.contains(&format!("as {client} (p5, c1,")), "{client} CONNECT:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_kill9_ends_in_a_rebirth_and_replays_the_outage() {
    let mut broker = Mosquitto::start().expect("start mosquitto");
    let mut h = host(&broker);
    let mut e = edge(&broker);
    host_event(&mut h, "first birth", |e| matches!(e, HostEvent::NodeOnline { bd_seq: 0, .. }))
        .await;
    publish_and_see(&e, &mut h, "data 1.0", 1_000, 1.0).await;

    broker.kill9();
    // Wait until the edge driver has noticed, so the next reading is stored.
    edge_offline(&mut e).await;
    e.publish(temp(2_000, 2.0)).await.unwrap();
    broker.start_again().expect("restart mosquitto");

    // The next session: bdSeq 1, a new birth, then the stored reading as history.
    host_event(&mut h, "rebirth with bdSeq 1", |e| {
        matches!(e, HostEvent::NodeOnline { bd_seq: 1, .. })
    })
    .await;
    let got = host_event(&mut h, "replayed 2.0", |e| matches!(e, HostEvent::Historical(b) if b.readings.iter().any(|r| r.value == Value::F64(2.0)))).await;
    let HostEvent::Historical(batch) = got else { unreachable!() };
    let r = batch.readings.iter().find(|r| r.value == Value::F64(2.0)).unwrap();
    assert_eq!(r.timestamp.unix_ms(), 2_000, "the reading keeps its own time");
    publish_and_see(&e, &mut h, "live data after the outage", 3_000, 3.0).await;
    e.shutdown().await;
    h.shutdown().await;
}

fn edge_on(brokers: &[&Mosquitto], primary_host: Option<&str>) -> EdgeDriver {
    let mut d = config("edge-9", brokers[0]);
    d.connection.fallback = brokers[1..].iter().map(|b| Broker::new(b.host(), b.port())).collect();
    EdgeDriver::spawn(temp_node("Gateway-9", primary_host), d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_first_broker_fails_over_to_the_next() {
    let mut first = Mosquitto::start().expect("start mosquitto");
    let second = Mosquitto::start().expect("start mosquitto");
    first.stop();
    let mut h = host(&second);
    let e = edge_on(&[&first, &second], None);
    host_event(&mut h, "a birth on the second broker", |e| {
        matches!(e, HostEvent::NodeOnline { .. })
    })
    .await;
    publish_and_see(&e, &mut h, "data on the second broker", 5_000, 5.0).await;
    e.shutdown().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_host_going_offline_moves_the_edge_to_the_next_server() {
    let first = Mosquitto::start().expect("start mosquitto");
    let second = Mosquitto::start().expect("start mosquitto");
    let mut h1 = host(&first);
    let e = edge_on(&[&first, &second], Some("scada"));
    host_event(&mut h1, "a birth on the first broker", |e| {
        matches!(e, HostEvent::NodeOnline { bd_seq: 0, .. })
    })
    .await;
    // The host leaves the first broker with STATE offline: the edge node
    // publishes NDEATH there and moves on (tck-id-operational-behavior-
    // edge-node-termination-host-offline).
    h1.shutdown().await;
    let mut h2 = host(&second);
    host_event(&mut h2, "a birth on the second broker", |e| {
        matches!(e, HostEvent::NodeOnline { bd_seq: 1, .. })
    })
    .await;
    publish_and_see(&e, &mut h2, "data on the second broker", 6_000, 6.0).await;
    e.shutdown().await;
    h2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_and_host_over_tls_with_credentials() {
    let broker = Mosquitto::builder()
        .tls(true)
        .user("edge", "edge-secret")
        .user("scada", "scada-secret")
        .start()
        .expect("start mosquitto with TLS");
    let tls_port = broker.tls_port().expect("a TLS listener");
    let tls = broker.tls_client_config().expect("a client config trusting the test CA");
    let over_tls = |client_id: &str, user: &str, password: &str| {
        let mut b = Broker::new(broker.host(), tls_port);
        b.tls = Some(tls.clone());
        b.credentials = Some((user.into(), password.into()));
        let mut c = DriverConfig::new(client_id, b);
        c.backoff_min = Duration::from_millis(50);
        c.backoff_max = Duration::from_millis(400);
        c
    };
    let mut h = scada(over_tls("scada", "scada", "scada-secret"));
    let e = EdgeDriver::spawn(
        temp_node("Gateway-T", Some("scada")),
        over_tls("edge-t", "edge", "edge-secret"),
    );
    host_event(&mut h, "a birth over TLS", |e| matches!(e, HostEvent::NodeOnline { .. })).await;
    publish_and_see(&e, &mut h, "data over TLS", 7_000, 7.0).await;
    e.shutdown().await;
    h.shutdown().await;

    // A wrong password never gets a session: no birth reaches the host.
    let mut h = scada(over_tls("scada-2", "scada", "scada-secret"));
    let intruder =
        EdgeDriver::spawn(temp_node("Gateway-X", None), over_tls("edge-x", "edge", "wrong"));
    let got = timeout(Duration::from_secs(2), async {
        loop {
            if let Some(HostEvent::NodeOnline { edge_node, .. }) = h.next_event().await
                && edge_node == "Gateway-X"
            {
                return;
            }
        }
    })
    .await;
    assert!(got.is_err(), "an edge node with a wrong password birthed");
    intruder.abort();
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_and_host_over_mqtt_3_1_1() {
    let broker = Mosquitto::start().expect("start mosquitto");
    let v311 = |id: &str| {
        let mut c = config(id, &broker);
        c.connection.protocol = Protocol::V311;
        c
    };
    let mut h = scada(v311("scada-311"));
    let node = || temp_node("Gateway-311", Some("scada"));
    let e = EdgeDriver::spawn(node(), v311("edge-311"));
    host_event(&mut h, "NodeOnline over 3.1.1", |e| matches!(e, HostEvent::NodeOnline { .. }))
        .await;
    publish_and_see(&e, &mut h, "data over 3.1.1", 7_000, 7.0).await;
    // A clean shutdown: NDEATH is published, and no DISCONNECT is sent
    // (3.1.1's DISCONNECT would discard the Will).
    e.shutdown().await;
    host_event(&mut h, "NodeOffline from NDEATH", |e| matches!(e, HostEvent::NodeOffline { .. }))
        .await;
    // A crash: the broker publishes the Will (NDEATH) registered in the
    // 3.1.1 CONNECT.
    let e = EdgeDriver::spawn(node(), v311("edge-311"));
    host_event(&mut h, "NodeOnline again", |e| matches!(e, HostEvent::NodeOnline { .. })).await;
    e.abort();
    host_event(&mut h, "NodeOffline from the Will", |e| matches!(e, HostEvent::NodeOffline { .. }))
        .await;
    h.shutdown().await;
    // Mosquitto logs each CONNECT: p2 is MQTT 3.1.1, c1 a clean session
    // (tck-id-principles-persistence-clean-session-311,
    // tck-id-message-flow-phid-sparkplug-clean-session-311).
    let log = broker.log();
    for client in ["edge-311", "scada-311"] {
        assert!(log.contains(&format!("as {client} (p2, c1,")), "{client} CONNECT:\n{log}");
    }
}

/// Waits for `cond` on the edge driver's counters, at most 30 s.
async fn stats_until(e: &EdgeDriver, what: &str, cond: impl Fn(EdgeStats) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = e.stats();
        if cond(s) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within 30 s ({s:?})");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens the spool once the crashed driver's task has let go of it.
async fn reopen(dir: &std::path::Path) -> (FileSpool, OpenReport) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match FileSpool::open(dir, 64 << 20) {
            Ok(s) => return s,
            Err(SpoolError::Locked(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

const SENSORS: usize = 120;
const SECONDS: u64 = 100;

fn plant_edge(spool: FileSpool, broker: &Mosquitto) -> EdgeDriver {
    let mut c = EdgeNodeConfig::new("Plant1", "Gateway-S");
    c.metrics =
        (0..SENSORS).map(|i| MetricSpec::new(format!("s{i:03}"), DataType::Double)).collect();
    EdgeDriver::spawn(EdgeNode::with_spool(c, Box::new(spool)).unwrap(), config("edge-s", broker))
}

/// The plant's 120 sensors at 1 Hz through a broker outage and an edge
/// crash: every reading taken offline reaches the host after the restart,
/// and the spool is empty once the broker has confirmed them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_spool_carries_an_outage_across_an_edge_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start().expect("start mosquitto");
    let (spool, report) = FileSpool::open(dir.path(), 64 << 20).unwrap();
    assert_eq!(report.readings, 0);
    let mut e = plant_edge(spool, &broker);
    stats_until(&e, "online", |s| s.online).await;
    broker.kill9();
    edge_offline(&mut e).await;
    let value = |sec: u64, i: usize| (sec * 1000 + i as u64) as f64;
    for sec in 0..SECONDS {
        let mut b = Batch::new("");
        for i in 0..SENSORS {
            let ts = Timestamp::from_unix_ms(1_000_000 + sec * 1000);
            b.readings.push(Reading::new(format!("s{i:03}"), ts, value(sec, i)));
        }
        e.publish(b).await.unwrap();
    }
    let total = SENSORS as u64 * SECONDS;
    stats_until(&e, "all readings stored", |s| s.stored == total).await;
    e.abort();

    broker.start_again().expect("restart mosquitto");
    let mut h = host(&broker);
    // This edge has no primary host to wait for: it births and replays as
    // soon as it connects, and QoS 0 DATA reaches only subscribers there
    // are. The host says STATE online once subscribed; wait for that, or a
    // replay that beats the host's SUBSCRIBE is gone (0 of 12 000 seen).
    assert!(retained_state(&broker).await.online, "the host is online");
    let (spool, report) = reopen(dir.path()).await;
    assert_eq!((report.readings, report.truncated_bytes), (total, 0));
    let mut e = plant_edge(spool, &broker);
    let mut seen = std::collections::HashSet::new();
    timeout(Duration::from_secs(60), async {
        while (seen.len() as u64) < total {
            let HostEvent::Historical(b) = h.next_event().await.expect("host driver alive") else {
                continue;
            };
            for r in b.readings {
                let i: usize = r.metric[1..].parse().unwrap();
                let sec = (r.timestamp.unix_ms() - 1_000_000) / 1000;
                if r.quality == Quality::Good && r.value == Value::F64(value(sec, i)) {
                    seen.insert((i, sec));
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {total} readings replayed within 60 s", seen.len()));
    // This edge has no primary host: the driver says its replay was unwatched.
    let started = timeout(Duration::from_secs(10), async {
        loop {
            if let EdgeEvent::ReplayStarted { stored, watched } =
                e.next_event().await.expect("edge driver alive")
            {
                return (stored, watched);
            }
        }
    });
    assert_eq!(started.await.expect("a ReplayStarted event"), (total, false));
    stats_until(&e, "the replay confirmed and forgotten", |s| s.stored == 0).await;
    assert_eq!(e.stats().dropped_readings, 0);
    e.shutdown().await;
    h.shutdown().await;
    let (_, report) = reopen(dir.path()).await;
    assert_eq!((report.readings, report.segments), (0, 0), "nothing left to send");
}

/// The retained STATE of host `scada` on `broker`, read by a plain client.
async fn retained_state(broker: &Mosquitto) -> StatePayload {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let mut o = MqttOptions::new(format!("reader-{}", broker.port()), broker.host(), broker.port());
    o.set_clean_start(true);
    let (client, mut eventloop) = AsyncClient::new(o, 10);
    client.subscribe("spBv1.0/STATE/scada", QoS::AtLeastOnce).await.unwrap();
    let state = timeout(Duration::from_secs(20), async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = eventloop.poll().await.unwrap() {
                return StatePayload::from_json(&p.payload).unwrap();
            }
        }
    });
    state.await.expect("a retained STATE within 20 s")
}

fn edge_named(node: &str, broker: &Mosquitto) -> EdgeDriver {
    EdgeDriver::spawn(temp_node(node, Some("scada")), config(&format!("edge-{node}"), broker))
}

fn online(e: &HostEvent, node: &str, bd: u64) -> bool {
    matches!(e, HostEvent::NodeOnline { edge_node, bd_seq, .. } if edge_node == node && *bd_seq == bd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_on_every_broker_keeps_a_state_per_server() {
    let mut first = Mosquitto::start().expect("start mosquitto");
    let second = Mosquitto::start().expect("start mosquitto");
    let mut d = config("scada", &first);
    d.connection.fallback = vec![Broker::new(second.host(), second.port())];
    let mut h = HostDriver::spawn_on_every_broker(&HostConfig::new("scada"), d);
    // Each edge node waits for the host's STATE on its own broker.
    let a = edge_named("Gateway-A", &first);
    let b = edge_named("Gateway-B", &second);
    let (mut seen_a, mut seen_b) = (false, false);
    while !(seen_a && seen_b) {
        let e = host_event(&mut h, "both nodes online", |e| {
            online(e, "Gateway-A", 0) || online(e, "Gateway-B", 0)
        })
        .await;
        seen_a |= online(&e, "Gateway-A", 0);
        seen_b |= online(&e, "Gateway-B", 0);
    }
    let (before_1, before_2) = (retained_state(&first).await, retained_state(&second).await);
    assert!(before_1.online && before_2.online);

    // The first broker dies and comes back: the host's session there starts
    // over with a new STATE timestamp; the second server's is untouched.
    first.kill9();
    first.start_again().expect("restart mosquitto");
    host_event(&mut h, "Gateway-A back on the first broker", |e| online(e, "Gateway-A", 1)).await;
    let (after_1, after_2) = (retained_state(&first).await, retained_state(&second).await);
    assert!(after_1.online && after_1.timestamp > before_1.timestamp, "{before_1:?} → {after_1:?}");
    assert_eq!(after_2, before_2, "the second server's STATE is its own");
    a.shutdown().await;
    b.shutdown().await;
    h.shutdown().await;
}
