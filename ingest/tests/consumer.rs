//! The delivery contract with real servers: N QoS 1 messages with unique
//! (metric, time) → exactly N rows, no duplicates, while things fail.

use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use shopfloor_ingest::{Ingest, IngestConfig, Input, Storage};
use shopfloor_schemas::{Batch, Codec, Reading, Timestamp, TopicTemplate, topic};
use shopfloor_testkit::{Mosquitto, Postgres};
use tokio::time::{Instant, timeout};
use tokio_postgres::Client;

mod support;
use support::{
    T0, broker, column, connect, expect_rows, ingest, message, pairs, publish, sparkplug,
};

fn config(broker: &Mosquitto, pg: &Postgres) -> IngestConfig {
    let mut c = IngestConfig::new(broker.host(), broker.port(), "ingest-1", pg.connection_string());
    c.inputs = vec![Input::Plain {
        template: TopicTemplate::parse(topic::defaults::READINGS).unwrap(),
        codec: Codec::Json,
    }];
    c.batch_readings = 200;
    c.batch_age = Duration::from_millis(50);
    c
}

const N: u64 = 2000;

async fn steady_state_exactly_n_rows(storage: Storage) {
    let (broker, pg) = (broker(), support::postgres(storage));
    let ingest = ingest(config(&broker, &pg)).await;
    publish(&broker, 0..N, 0, || {}).await;
    expect_rows(&pg, N as i64, 0).await;
    ingest.shutdown().await.unwrap();
    support::assert_storage(&connect(&pg).await, storage).await;
}

async fn malformed_messages_go_to_dead_letters_and_nothing_else(storage: Storage) {
    let (broker, pg) = (broker(), support::postgres(storage));
    let ingest = ingest(config(&broker, &pg)).await;
    // 1 % malformed.
    publish(&broker, 0..N, 100, || {}).await;
    expect_rows(&pg, (N - N / 100) as i64, (N / 100) as i64).await;
    let letters = connect(&pg)
        .await
        .query("SELECT topic, error FROM shopfloor.dead_letters", &[])
        .await
        .unwrap();
    assert!(
        letters
            .iter()
            .all(|r| r.get::<_, String>(1).contains("EOF") || !r.get::<_, String>(1).is_empty())
    );
    ingest.shutdown().await.unwrap();
    support::assert_storage(&connect(&pg).await, storage).await;
}

async fn an_ingest_crash_and_restart_loses_and_duplicates_nothing(storage: Storage) {
    let (broker, pg) = (broker(), support::postgres(storage));
    // The first process has seen its subscription once, so the broker keeps
    // the session while it is gone.
    let first = ingest(config(&broker, &pg)).await;
    publish(&broker, 0..10, 0, || {}).await;
    expect_rows(&pg, 10, 0).await;
    support::publish_aborting(&broker, 10..N, first).await;
    let second = Ingest::spawn(config(&broker, &pg));
    expect_rows(&pg, N as i64, 0).await;
    second.shutdown().await.unwrap();
    support::assert_storage(&connect(&pg).await, storage).await;
}

async fn a_postgres_restart_mid_stream_loses_nothing(storage: Storage) {
    let (broker, mut pg) = (broker(), support::postgres(storage));
    let ingest = ingest(config(&broker, &pg)).await;
    publish(&broker, 0..N, 0, || pg.restart().expect("restart postgres")).await;
    expect_rows(&pg, N as i64, 0).await;
    ingest.shutdown().await.unwrap();
    support::assert_storage(&connect(&pg).await, storage).await;
}

/// PostgreSQL kept down for 60 s while messages keep coming: nothing is
/// acked meanwhile, at most `max_pending` messages are held (the broker
/// keeps the rest), and the first batch commits within 10 s of the
/// database accepting connections again.
async fn postgres_down_for_60_s_loses_nothing_and_recovers_within_10_s(storage: Storage) {
    let (broker, mut pg) = (broker(), support::postgres(storage));
    let mut c = config(&broker, &pg);
    c.max_pending = 300;
    let ingest = ingest(c).await;
    publish(&broker, 0..N / 4, 0, || {}).await;
    expect_rows(&pg, (N / 4) as i64, 0).await;
    support::outage_of_60_s(&broker, &ingest, &mut pg, "PostgreSQL", N / 4..N, 300).await;
    expect_rows(&pg, N as i64, 0).await;
    ingest.shutdown().await.unwrap();
    support::assert_storage(&connect(&pg).await, storage).await;
}

async fn a_broker_restart_mid_stream_loses_nothing(storage: Storage) {
    let (mut broker, pg) = (broker(), support::postgres(storage));
    let ingest = ingest(config(&broker, &pg)).await;
    publish(&broker, 0..N / 2, 0, || {}).await;
    // Persistence on: the ingest's session, and what it has not acked yet,
    // survive the restart; acks queued for the old connection are dropped.
    broker.restart().expect("restart mosquitto");
    publish(&broker, N / 2..N, 0, || {}).await;
    expect_rows(&pg, N as i64, 0).await;
    ingest.shutdown().await.unwrap();
    support::assert_storage(&connect(&pg).await, storage).await;
}

async fn a_network_cut_between_ingest_and_broker_loses_nothing(storage: Storage) {
    let (broker, pg) = (broker(), support::postgres(storage));
    let proxy = shopfloor_testkit::FaultProxy::start(broker.addr()).expect("a fault proxy");
    let mut c = config(&broker, &pg);
    c.mqtt.broker.port = proxy.port();
    let ingest = ingest(c).await;
    // Cut twice while messages flow: acks queued for a dead connection are
    // dropped, the broker redelivers, the write absorbs the duplicates.
    let mut cuts = 0;
    publish(&broker, 0..N, 0, || {
        proxy.cut();
        cuts += 1;
    })
    .await;
    proxy.cut();
    assert_eq!(cuts, 1);
    expect_rows(&pg, N as i64, 0).await;
    ingest.shutdown().await.unwrap();
    support::assert_storage(&connect(&pg).await, storage).await;
}

async fn sparkplug_births_data_and_death_become_rows(storage: Storage) {
    use shopfloor_mqtt::{Broker, DriverConfig, EdgeDriver};
    use shopfloor_sparkplug::edge::MetricSpec;
    use shopfloor_sparkplug::{DataType, EdgeNode, EdgeNodeConfig};
    let (broker, pg) = (broker(), support::postgres(storage));
    let mut c = config(&broker, &pg);
    c.inputs = vec![sparkplug()];
    let ingest = ingest(c).await;
    let mut node = EdgeNodeConfig::new("Plant1", "Gateway-7");
    let mut pressure = MetricSpec::new("Pressure", DataType::Double);
    let mut props = shopfloor_sparkplug::payload::PropertySet::default();
    for (k, v) in [
        ("engUnit", shopfloor_sparkplug::MetricValue::String("bar".into())),
        ("engHigh", shopfloor_sparkplug::MetricValue::Double(250.0)),
    ] {
        props.set(k, shopfloor_sparkplug::payload::PropertyValue::Value(v));
    }
    pressure.properties = Some(props);
    node.devices = vec![("press-1".into(), vec![pressure])];
    let edge = EdgeDriver::spawn(
        EdgeNode::new(node).unwrap(),
        DriverConfig::new("gw-7", Broker::new(broker.host(), broker.port())),
    );
    for i in 0..50 {
        let b = Batch::new("press-1").with(Reading::new(
            "Pressure",
            Timestamp::from_unix_ms(T0 + i),
            i as f64,
        ));
        edge.publish(b).await.unwrap();
    }
    let client = connect(&pg).await;
    wait_until(
        &client,
        "SELECT count(*) FROM shopfloor.readings WHERE source = 'Plant1/Gateway-7/press-1' AND metric = 'Pressure' AND quality = 'good'",
        "all 50 Sparkplug readings",
        |n| n >= 50,
    )
    .await;
    // The catalogue holds what the birth said: datatype, unit, range.
    let row = client
        .query_one(
            "SELECT datatype, unit, (properties->>'engHigh')::float8 FROM shopfloor.metrics
             WHERE source = 'Plant1/Gateway-7/press-1' AND name = 'Pressure'",
            &[],
        )
        .await
        .unwrap();
    let described: (String, String, f64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(described, ("Double".to_owned(), "bar".to_owned(), 250.0));

    // DATA that cannot be named goes to the dead letters: an alias no birth
    // declared, and DATA from a node never born.
    let raw = |alias: u64| {
        use prost::Message as _;
        use shopfloor_sparkplug::proto;
        proto::Payload {
            timestamp: Some(T0),
            seq: Some(0),
            metrics: vec![proto::Metric {
                alias: Some(alias),
                timestamp: Some(T0),
                // No datatype, as in real DATA: only a birth could name it.
                value: Some(proto::MetricValue::Double(1.0)),
                ..Default::default()
            }],
            ..Default::default()
        }
        .encode_to_vec()
    };
    let (p, mut events) =
        AsyncClient::new(MqttOptions::new("raw", broker.host(), broker.port()), 10);
    let poll = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    for topic in ["spBv1.0/Plant1/DDATA/Gateway-7/press-1", "spBv1.0/Plant2/NDATA/Ghost"] {
        p.publish(topic, QoS::AtLeastOnce, false, raw(999)).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let topics: Vec<String> =
            column(&client, "SELECT topic FROM shopfloor.dead_letters ORDER BY id").await;
        if topics.len() == 2 {
            assert_eq!(
                topics,
                ["spBv1.0/Plant1/DDATA/Gateway-7/press-1", "spBv1.0/Plant2/NDATA/Ghost"]
            );
            break;
        }
        assert!(Instant::now() < deadline, "dead letters within 30 s: {topics:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    poll.abort();

    // The node dies: its last values are written again, stale.
    edge.shutdown().await;
    wait_until(
        &client,
        "SELECT count(*) FROM shopfloor.readings WHERE quality = 'stale' AND metric = 'Pressure'",
        "a stale reading after the NDEATH",
        |n| n >= 1,
    )
    .await;
    ingest.shutdown().await.unwrap();
    support::assert_storage(&connect(&pg).await, storage).await;
}

async fn two_instances_share_the_load_with_exact_counts(storage: Storage) {
    use std::sync::atomic::Ordering::Relaxed;
    let (broker, pg) = (broker(), support::postgres(storage));
    let mut a = config(&broker, &pg);
    a.share = Some("ingest".into());
    let mut b = a.clone();
    b.mqtt.client_id = "ingest-2".into();
    let (a, b) = (ingest(a).await, ingest(b).await);
    publish(&broker, 0..N, 0, || {}).await;
    expect_rows(&pg, N as i64, 0).await;
    // Both took part, and no message went to both.
    let (ma, mb) = (a.stats().messages.load(Relaxed), b.stats().messages.load(Relaxed));
    assert!(ma > 0 && mb > 0, "one instance did everything: {ma} and {mb}");
    assert_eq!(ma + mb, N, "each message to one instance");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    support::assert_storage(&connect(&pg).await, storage).await;
}

/// Sparkplug DATA names metrics by alias only, and is QoS 0. With the
/// broker queueing QoS 0 for ingest's persistent session (the shipped
/// `queue_qos0_messages true`), DATA published while ingest was away waits
/// for it; the births ingest kept let the restarted ingest name it, instead
/// of dead-lettering it and losing the gap.
async fn sparkplug_data_queued_while_ingest_was_away_is_named_after_a_restart(storage: Storage) {
    use shopfloor_mqtt::{Broker, DriverConfig, EdgeDriver};
    use shopfloor_sparkplug::edge::MetricSpec;
    use shopfloor_sparkplug::{DataType, EdgeNode, EdgeNodeConfig};
    let broker = Mosquitto::builder()
        .persistence(true)
        .max_queued_messages(100_000)
        .config_line("queue_qos0_messages true")
        .start()
        .expect("start mosquitto");
    let pg = support::postgres(storage);
    let mut c = config(&broker, &pg);
    c.inputs = vec![sparkplug()];
    let first = ingest(c.clone()).await;
    let mut node = EdgeNodeConfig::new("Plant1", "Gateway-9");
    node.devices = vec![("oven-1".into(), vec![MetricSpec::new("Temperature", DataType::Double)])];
    let edge = EdgeDriver::spawn(
        EdgeNode::new(node).unwrap(),
        DriverConfig::new("gw-9", Broker::new(broker.host(), broker.port())),
    );
    let reading = |i: u64| {
        Batch::new("oven-1").with(Reading::new(
            "Temperature",
            Timestamp::from_unix_ms(T0 + i),
            i as f64,
        ))
    };
    for i in 0..20 {
        edge.publish(reading(i)).await.unwrap();
    }
    expect_rows(&pg, 20, 0).await;
    first.shutdown().await.unwrap();

    // While ingest is away: 30 more, seen on the broker by a watcher.
    let (watcher, mut events) =
        AsyncClient::new(MqttOptions::new("watcher", broker.host(), broker.port()), 100);
    watcher.subscribe("spBv1.0/Plant1/DDATA/#", QoS::AtMostOnce).await.unwrap();
    let mut subscribed = false;
    while !subscribed {
        if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.unwrap() {
            subscribed = true;
        }
    }
    for i in 20..50 {
        edge.publish(reading(i)).await.unwrap();
    }
    let seen = timeout(Duration::from_secs(30), async {
        let mut n = 0;
        while n < 30 {
            if let Event::Incoming(Packet::Publish(_)) = events.poll().await.unwrap() {
                n += 1;
            }
        }
    })
    .await;
    assert!(seen.is_ok(), "the 30 DDATA did not reach the broker within 30 s");

    let second = ingest(c).await;
    expect_rows(&pg, 50, 0).await;
    second.shutdown().await.unwrap();
    edge.shutdown().await;
    support::assert_storage(&connect(&pg).await, storage).await;
}

/// A Sparkplug payload, encoded as a peer would (prost, the official
/// message layout): metrics (name, alias, datatype, timestamp, value).
fn sp_payload(
    seq: Option<u64>,
    ts: u64,
    metrics: Vec<shopfloor_sparkplug::proto::Metric>,
) -> Vec<u8> {
    use prost::Message as _;
    shopfloor_sparkplug::proto::Payload { timestamp: Some(ts), seq, metrics, ..Default::default() }
        .encode_to_vec()
}

fn sp_metric(
    name: Option<&str>,
    alias: u64,
    ts: u64,
    value: f64,
) -> shopfloor_sparkplug::proto::Metric {
    shopfloor_sparkplug::proto::Metric {
        name: name.map(Into::into),
        alias: Some(alias),
        timestamp: Some(ts),
        // Double (10) in births; DATA names by alias only.
        datatype: name.map(|_| 10),
        value: Some(shopfloor_sparkplug::proto::MetricValue::Double(value)),
        ..Default::default()
    }
}

fn bd_seq(n: u64) -> shopfloor_sparkplug::proto::Metric {
    shopfloor_sparkplug::proto::Metric {
        name: Some("bdSeq".into()),
        datatype: Some(4), // Int64
        value: Some(shopfloor_sparkplug::proto::MetricValue::Long(n)),
        ..Default::default()
    }
}

/// A raw MQTT publisher: every message QoS 1 and acknowledged, in order.
struct Raw {
    client: AsyncClient,
    poll: tokio::task::JoinHandle<()>,
}

impl Raw {
    fn new(broker: &Mosquitto, id: &str) -> Self {
        let (client, mut events) =
            AsyncClient::new(MqttOptions::new(id, broker.host(), broker.port()), 100);
        let poll = tokio::spawn(async move { while events.poll().await.is_ok() {} });
        Self { client, poll }
    }

    async fn send(&self, topic: &str, payload: Vec<u8>) {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
    }

    /// QoS 0, as Sparkplug publishes: a subscriber away misses it.
    async fn send_qos0(&self, topic: &str, payload: Vec<u8>) {
        self.client.publish(topic, QoS::AtMostOnce, false, payload).await.unwrap();
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        self.poll.abort();
    }
}

/// Sparkplug shared by two processes: DATA through `$share`, births and
/// deaths to both. B was away (its connection cut and refused) while the
/// node was born, QoS 0, so it never got the birth: it loads the one A
/// kept when the node's DATA reaches it. Every reading is stored once and
/// named, none is a dead letter, and the death's stale rows carry each
/// metric's latest value whichever process wrote them.
async fn sparkplug_data_shared_by_two_instances_is_named_by_both(storage: Storage) {
    use std::sync::atomic::Ordering::Relaxed;
    let (broker, pg) = (broker(), support::postgres(storage));
    let proxy = shopfloor_testkit::FaultProxy::start(broker.addr()).expect("a fault proxy");
    let mut a = config(&broker, &pg);
    a.inputs = vec![sparkplug()];
    a.share = Some("ingest".into());
    let mut b = a.clone();
    b.mqtt.client_id = "ingest-2".into();
    b.mqtt.broker.port = proxy.port();
    let (a, b) = (ingest(a).await, ingest(b).await);
    let subscribed = b.stats().link.subscribed.load(Relaxed);

    // B away; the node is born meanwhile.
    proxy.refuse();
    proxy.cut();
    let edge = Raw::new(&broker, "edge");
    let nbirth = sp_payload(Some(0), T0, vec![bd_seq(0), sp_metric(Some("uptime"), 1, T0, 0.0)]);
    edge.send_qos0("spBv1.0/G/NBIRTH/E", nbirth).await;
    let dbirth = sp_payload(Some(1), T0, vec![sp_metric(Some("t"), 2, T0, -1.0)]);
    edge.send_qos0("spBv1.0/G/DBIRTH/E/d", dbirth).await;
    let client = connect(&pg).await;
    wait_for(&client, "SELECT count(*) FROM shopfloor.sparkplug_births", 2).await;
    proxy.resume();
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.stats().link.subscribed.load(Relaxed) < 2 * subscribed {
        assert!(Instant::now() < deadline, "B did not subscribe again within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // DATA by alias only, shared: both name theirs.
    for i in 0..N {
        let data = sp_payload(
            Some((2 + i) % 256),
            T0 + 1 + i,
            vec![sp_metric(None, 2, T0 + 1 + i, i as f64)],
        );
        edge.send("spBv1.0/G/DDATA/E/d", data).await;
    }
    expect_rows(&pg, N as i64 + 2, 0).await;
    let (ma, mb) = (a.stats().messages.load(Relaxed), b.stats().messages.load(Relaxed));
    assert!(ma > 2 && mb > 0, "one instance did all the DATA: {ma} and {mb}");
    assert_eq!(ma + mb, N + 2, "each DATA to one instance, the births to A only");

    // The death reaches both; one writes each stale row, with the latest value.
    edge.send("spBv1.0/G/NDEATH/E", sp_payload(None, T0 + N + 10, vec![bd_seq(0)])).await;
    expect_rows(&pg, N as i64 + 4, 0).await;
    let stale: Vec<(String, f64)> = pairs(
        &client,
        "SELECT metric, value FROM shopfloor.readings WHERE quality = 'stale' ORDER BY metric",
    )
    .await;
    assert_eq!(stale, [("t".to_owned(), (N - 1) as f64), ("uptime".to_owned(), 0.0)]);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    support::assert_storage(&connect(&pg).await, storage).await;
}

/// Polls `sql` (one bigint) until it is `want`, at most 30 s.
async fn wait_for(client: &Client, sql: &str, want: i64) {
    wait_until(client, sql, &want.to_string(), |n| n == want).await;
}

/// Polls `sql` (one bigint) until `done` holds for it (it is `expected`),
/// at most 30 s.
async fn wait_until(client: &Client, sql: &str, expected: &str, done: impl Fn(i64) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = client.query_one(sql, &[]).await.map(|r| r.get(0)).unwrap_or(-1);
        if done(n) {
            return;
        }
        assert!(Instant::now() < deadline, "{sql}: {n}, expected {expected} within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The reproductions of the ingest stall: a birth with a NUL in a metric
/// name, and a timestamp in the year 294 277. Before, each made the
/// writer retry its batch forever, and nothing after it was stored.
async fn no_single_message_stalls_the_ingest(storage: Storage) {
    let (broker, pg) = (broker(), support::postgres(storage));
    let mut c = config(&broker, &pg);
    c.inputs.push(sparkplug());
    let ingest = ingest(c).await;
    let raw = Raw::new(&broker, "hostile");
    let now = now_ms();
    // A birth: one good metric, one whose name holds a NUL.
    raw.send(
        "spBv1.0/G/NBIRTH/bad-birth",
        sp_payload(
            Some(0),
            now,
            vec![
                bd_seq(0),
                sp_metric(Some("good"), 1, now, 1.0),
                sp_metric(Some("ba\0d"), 2, now, 2.0),
            ],
        ),
    )
    .await;
    // DATA in the year 294 277.
    raw.send(
        "spBv1.0/G/NDATA/bad-birth",
        sp_payload(Some(1), now, vec![sp_metric(None, 1, 9_224_318_100_000_000, 3.0)]),
    )
    .await;
    // The same on a plain topic.
    let far = Batch::new("x").with(Reading::new(
        "s1",
        Timestamp::from_unix_ms(9_224_318_100_000_000),
        1.0,
    ));
    raw.send("shopfloor/p/a/m/s1", Codec::Json.encode_batch(&far).unwrap()).await;
    // Two days ahead: a time PostgreSQL holds, outside the window.
    let ahead = Batch::new("x").with(Reading::new(
        "s2",
        Timestamp::from_unix_ms(now + 2 * 86_400_000),
        1.0,
    ));
    raw.send("shopfloor/p/a/m/s2", Codec::Json.encode_batch(&ahead).unwrap()).await;
    // 200 KiB of junk: a dead letter keeping the first 64 KiB.
    raw.send("shopfloor/p/a/m/junk", vec![b'x'; 200 << 10]).await;
    // Births and readings of others after them are stored.
    raw.send(
        "spBv1.0/G/NBIRTH/next",
        sp_payload(Some(0), now, vec![bd_seq(0), sp_metric(Some("t"), 1, now, 5.0)]),
    )
    .await;
    let (t, p) = message(1, false);
    raw.send(&t, p).await;
    let client = connect(&pg).await;
    wait_for(
        &client,
        "SELECT count(*) FROM shopfloor.readings WHERE (source, metric) IN (('G/bad-birth', 'good'), ('G/next', 't'), ('plant1/press/m1', 's1'))",
        3,
    )
    .await;
    wait_for(&client, "SELECT count(*) FROM shopfloor.dead_letters", 5).await;
    // The birth is dead-lettered for its bad metric (its good one stored),
    // and so are both far-future readings; the reasons say what was wrong.
    let errors: Vec<(String, String)> =
        pairs(&client, "SELECT topic, error FROM shopfloor.dead_letters ORDER BY id").await;
    let row = client
        .query_one(
            "SELECT length(payload), error FROM shopfloor.dead_letters WHERE topic = 'shopfloor/p/a/m/junk'",
            &[],
        )
        .await
        .unwrap();
    let junk: (i32, String) = (row.get(0), row.get(1));
    assert_eq!(junk.0, 64 << 10);
    assert!(junk.1.contains("payload of 204800 bytes, the first 65536 kept"), "{}", junk.1);
    let errors: Vec<(String, String)> =
        errors.into_iter().filter(|e| e.0 != "shopfloor/p/a/m/junk").collect();
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert_eq!(errors[0].0, "spBv1.0/G/NBIRTH/bad-birth");
    assert!(
        errors[0].1.starts_with("1 of 2 readings cannot be stored") && errors[0].1.contains("NUL"),
        "{errors:?}"
    );
    assert!(errors[1].1.contains("outside what PostgreSQL can store"), "{errors:?}");
    assert_eq!(errors[2].0, "shopfloor/p/a/m/s1");
    assert!(errors[2].1.contains("outside what PostgreSQL can store"), "{errors:?}");
    assert_eq!(errors[3].0, "shopfloor/p/a/m/s2");
    assert!(errors[3].1.contains("ahead of the latest accepted"), "{errors:?}");
    // The catalogue holds no name PostgreSQL would refuse, and the ingest
    // counted what it dead-lettered.
    assert_eq!(ingest.stats().dead_letters.load(std::sync::atomic::Ordering::Relaxed), 5);
    ingest.shutdown().await.unwrap();
    support::assert_storage(&connect(&pg).await, storage).await;
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// After any death, the latest row of every metric of the dead device or
/// node is stale: a death in the same millisecond as the last DATA (which
/// was dropped as a duplicate of (metric, time)), one later, one whose
/// time is before the last DATA, and a redelivered death adds nothing.
async fn a_death_is_never_lost(storage: Storage) {
    let (broker, pg) = (broker(), support::postgres(storage));
    let mut c = config(&broker, &pg);
    c.inputs = vec![sparkplug()];
    let ingest = ingest(c).await;
    let raw = Raw::new(&broker, "edge");
    let client = connect(&pg).await;
    let t = now_ms() - 60_000;
    let latest = |source: &str| {
        format!(
            "SELECT count(*) FROM shopfloor.readings r WHERE source = '{source}'
             AND quality = 'stale' AND time = (SELECT max(time) FROM shopfloor.readings x
                                               WHERE x.source = r.source AND x.metric = r.metric)"
        )
    };
    let stale_rows = |source: &str| {
        format!(
            "SELECT count(*) FROM shopfloor.readings WHERE source = '{source}' AND quality = 'stale'"
        )
    };
    raw.send(
        "spBv1.0/G/NBIRTH/e",
        sp_payload(Some(0), t, vec![bd_seq(7), sp_metric(Some("n"), 1, t, 1.0)]),
    )
    .await;
    // DDEATH in the same millisecond as the device's last DATA.
    raw.send(
        "spBv1.0/G/DBIRTH/e/d1",
        sp_payload(
            Some(1),
            t,
            vec![sp_metric(Some("a"), 2, t, 1.0), sp_metric(Some("b"), 3, t, 2.0)],
        ),
    )
    .await;
    raw.send(
        "spBv1.0/G/DDATA/e/d1",
        sp_payload(
            Some(2),
            t + 10,
            vec![sp_metric(None, 2, t + 10, 3.0), sp_metric(None, 3, t + 10, 4.0)],
        ),
    )
    .await;
    raw.send("spBv1.0/G/DDEATH/e/d1", sp_payload(Some(3), t + 10, vec![])).await;
    wait_for(&client, &latest("G/e/d1"), 2).await;
    // A redelivery of the same death: nothing more.
    raw.send("spBv1.0/G/DDEATH/e/d1", sp_payload(Some(3), t + 10, vec![])).await;
    // A second device: a death later than its DATA, and a death whose
    // time is before its last DATA (the edge's clock and the device's).
    raw.send(
        "spBv1.0/G/DBIRTH/e/d2",
        sp_payload(Some(5), t, vec![sp_metric(Some("c"), 4, t, 1.0)]),
    )
    .await;
    raw.send(
        "spBv1.0/G/DDATA/e/d2",
        sp_payload(Some(6), t + 20, vec![sp_metric(None, 4, t + 20, 2.0)]),
    )
    .await;
    raw.send("spBv1.0/G/DDEATH/e/d2", sp_payload(Some(7), t + 5, vec![])).await;
    wait_for(&client, &latest("G/e/d2"), 1).await;
    raw.send(
        "spBv1.0/G/DBIRTH/e/d2",
        sp_payload(Some(8), t + 30, vec![sp_metric(Some("c"), 4, t + 30, 5.0)]),
    )
    .await;
    raw.send("spBv1.0/G/DDEATH/e/d2", sp_payload(Some(9), t + 40, vec![])).await;
    // The node dies (NDEATH, same bdSeq; the host dates it on arrival)
    // before the time of its last DATA.
    let now = now_ms() + 5_000;
    raw.send("spBv1.0/G/NDATA/e", sp_payload(Some(10), now, vec![sp_metric(None, 1, now, 9.0)]))
        .await;
    raw.send("spBv1.0/G/NDEATH/e", sp_payload(None, now, vec![bd_seq(7)])).await;
    wait_for(&client, &latest("G/e"), 1).await;
    raw.send("spBv1.0/G/NDEATH/e", sp_payload(None, now, vec![bd_seq(7)])).await;
    // Settled: every metric's latest row stale; one stale row per death
    // and metric, the redeliveries none.
    // A marker: DATA of a node never born is a dead letter, once
    // everything before it is handled.
    raw.send("spBv1.0/G/NDATA/ghost", sp_payload(Some(0), now, vec![sp_metric(None, 1, now, 1.0)]))
        .await;
    wait_for(&client, "SELECT count(*) FROM shopfloor.dead_letters", 1).await;
    wait_for(&client, &latest("G/e/d1"), 2).await;
    wait_for(&client, &stale_rows("G/e/d1"), 2).await;
    wait_for(&client, &latest("G/e/d2"), 1).await;
    wait_for(&client, &stale_rows("G/e/d2"), 2).await;
    wait_for(&client, &latest("G/e"), 1).await;
    wait_for(&client, &stale_rows("G/e"), 1).await;
    // Where they landed: 1 ms after the DATA of the same millisecond, or
    // of a later time; at its own time when later.
    let times: Vec<(String, i64)> = pairs(
        &client,
        "SELECT source || '/' || metric, (extract(epoch from time) * 1000)::int8 FROM shopfloor.readings
         WHERE quality = 'stale' ORDER BY 1, 2",
    )
    .await;
    let t = t as i64;
    assert_eq!(
        times,
        [
            ("G/e/d1/a".to_owned(), t + 11),
            ("G/e/d1/b".to_owned(), t + 11),
            ("G/e/d2/c".to_owned(), t + 21),
            ("G/e/d2/c".to_owned(), t + 40),
            ("G/e/n".to_owned(), now as i64 + 1),
        ]
    );
    ingest.shutdown().await.unwrap();
    support::assert_storage(&connect(&pg).await, storage).await;
}

/// Stopping works in every state: here while PostgreSQL refuses every
/// connection (before, the ingest retried its connection forever and
/// ignored the stop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_works_while_the_database_is_refused() {
    let broker = broker();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let c = IngestConfig::new(
        broker.host(),
        broker.port(),
        "ingest-stop",
        format!("host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=2"),
    );
    let ingest = Ingest::spawn(c);
    tokio::time::sleep(Duration::from_millis(500)).await; // let it fail a few times
    let t0 = Instant::now();
    timeout(Duration::from_secs(1), ingest.shutdown())
        .await
        .expect("the ingest stops within 1 s while the database is refused")
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(1));
}

/// PostgreSQL over TLS, as the connection string's `sslmode` asks:
/// `require` encrypts without checking the certificate (libpq's meaning),
/// a CA checks the server's certificate and name, a wrong CA is refused
/// with the reason, `disable` stays plain; a password given apart needs
/// no quoting. The ingest itself writes over checked TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_as_sslmode_asks() {
    use shopfloor_ingest::pipeline::open;
    let pg = Postgres::builder().tls().start().expect("start postgresql with TLS");
    let dir = tempfile::tempdir().unwrap();
    let (ca, other) = pg.ca_files(dir.path()).unwrap();
    let checked = shopfloor_mqtt::tls_client_config(&ca, None).unwrap();
    let wrong = shopfloor_mqtt::tls_client_config(&other, None).unwrap();
    let url = |mode: &str| {
        format!("host=localhost port={} user=postgres dbname=postgres sslmode={mode}", pg.port())
    };
    let ssl = |c: Client| async move {
        c.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
            .await
            .unwrap()
            .get::<_, bool>(0)
    };
    assert!(ssl(open(&url("require"), None, None).await.unwrap()).await, "require");
    let quoted = Some("it's a \\ 'password'");
    assert!(ssl(open(&url("prefer"), quoted, Some(&checked)).await.unwrap()).await, "checked");
    assert!(!ssl(open(&url("disable"), None, None).await.unwrap()).await, "disable");
    let e = open(&url("require"), None, Some(&wrong)).await.unwrap_err();
    let why = shopfloor_ingest::pg_message(&e);
    assert!(why.contains("certificate"), "{why}");

    let broker = broker();
    let mut c = config(&broker, &pg);
    c.database = format!("{} sslmode=require application_name=ingest-tls", pg.connection_string());
    c.database_tls = Some(checked);
    let ingest = ingest(c).await;
    publish(&broker, 0..100, 0, || {}).await;
    expect_rows(&pg, 100, 0).await;
    let (all, tls) = pg.tls_sessions("ingest-tls").await.unwrap();
    assert!(all > 0 && tls == all, "{tls} of the ingest's {all} connections over TLS");
    ingest.shutdown().await.unwrap();
}

on_both_storages!(
    no_single_message_stalls_the_ingest,
    a_death_is_never_lost,
    steady_state_exactly_n_rows,
    malformed_messages_go_to_dead_letters_and_nothing_else,
    an_ingest_crash_and_restart_loses_and_duplicates_nothing,
    a_postgres_restart_mid_stream_loses_nothing,
    postgres_down_for_60_s_loses_nothing_and_recovers_within_10_s,
    a_broker_restart_mid_stream_loses_nothing,
    a_network_cut_between_ingest_and_broker_loses_nothing,
    sparkplug_births_data_and_death_become_rows,
    two_instances_share_the_load_with_exact_counts,
    sparkplug_data_queued_while_ingest_was_away_is_named_after_a_restart,
    sparkplug_data_shared_by_two_instances_is_named_by_both,
);
