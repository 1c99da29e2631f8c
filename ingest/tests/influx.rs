//! The InfluxDB sink against a real InfluxDB (Debian's 1.6.7, started by
//! testkit) and a real Mosquitto: the same delivery tests as PostgreSQL's
//! (exact counts after redelivery, a server restart, a server down for
//! 60 s, bad input), and the births kept for a restart.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use shopfloor_ingest::influx::line::MAX_STRING;
use shopfloor_ingest::{
    InfluxConfig, InfluxSink, IngestConfig, Input, Sink, SinkWriter, Store, Submission,
};
use shopfloor_schemas::{Batch, Codec, Reading, Timestamp, TopicTemplate, Value, topic};
use shopfloor_testkit::{InfluxDb, Mosquitto};
use tokio::time::Instant;

mod support;
use support::{T0, broker, ingest, publish};

const DB: &str = "shopfloor";
const N: u64 = 2000;

fn influx() -> InfluxDb {
    InfluxDb::start().unwrap_or_else(|e| panic!("start InfluxDB: {e}"))
}

fn config(broker: &Mosquitto, db: &InfluxDb) -> IngestConfig {
    let mut c = IngestConfig::new(broker.host(), broker.port(), "ingest-influx", "");
    c.store = Store::InfluxDb(InfluxConfig::v1(db.url(), DB));
    c.inputs = vec![Input::Plain {
        template: TopicTemplate::parse(topic::defaults::READINGS).unwrap(),
        codec: Codec::Json,
    }];
    c.batch_readings = 200;
    c.batch_age = Duration::from_millis(50);
    c
}

/// The single number an InfluxQL `SELECT count(…)` answers (0 for no series).
fn count(db: &InfluxDb, q: &str) -> Option<i64> {
    let body = db.query(DB, q).ok()?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let series = &v["results"][0]["series"];
    if series.is_null() {
        return v["results"][0].get("error").is_none().then_some(0);
    }
    series[0]["values"][0][1].as_i64()
}

/// Waits until `readings` holds `n` points and `dead_letters` `dead`
/// (at most 60 s), then that nothing more arrives.
async fn expect_points(db: &InfluxDb, n: i64, dead: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let read = || {
        (
            count(db, "SELECT count(quality) FROM readings").unwrap_or(-1),
            count(db, "SELECT count(error) FROM dead_letters").unwrap_or(-1),
        )
    };
    let mut got = read();
    while got != (n, dead) {
        assert!(
            Instant::now() < deadline,
            "{got:?} points and dead letters, expected {:?}",
            (n, dead)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        got = read();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(read(), (n, dead), "points kept coming");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_crash_and_redelivery_write_each_point_once() {
    let (broker, db) = (broker(), influx());
    let first = ingest(config(&broker, &db)).await;
    publish(&broker, 0..10, 0, || {}).await;
    expect_points(&db, 10, 0).await;
    let mut first = Some(first);
    publish(&broker, 10..N, 0, || {
        if let Some(i) = first.take() {
            i.abort();
        }
    })
    .await;
    let second = ingest(config(&broker, &db)).await;
    expect_points(&db, N as i64, 0).await;
    // The values are the readings' own: message i holds i at T0 + i.
    let body = db.query(DB, "SELECT sum(value), min(time) FROM readings").unwrap();
    let sum = (0..N).sum::<u64>() as f64;
    assert!(body.contains(&format!("{sum}")), "{body}");
    second.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_influxdb_crash_mid_stream_loses_nothing() {
    let (broker, mut db) = (broker(), influx());
    let ingest = ingest(config(&broker, &db)).await;
    publish(&broker, 0..N, 0, || {
        db.kill9();
        db.start_again().expect("start InfluxDB again");
    })
    .await;
    expect_points(&db, N as i64, 0).await;
    ingest.shutdown().await.unwrap();
}

/// InfluxDB away for 60 s while messages keep coming: nothing is acked
/// meanwhile, at most `max_pending` messages are held, and writing starts
/// again within 10 s of its return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb_down_for_60_s_loses_nothing_and_recovers_within_10_s() {
    let (broker, mut db) = (broker(), influx());
    let mut c = config(&broker, &db);
    c.max_pending = 300;
    let ingest = ingest(c).await;
    publish(&broker, 0..N / 4, 0, || {}).await;
    expect_points(&db, (N / 4) as i64, 0).await;
    let down = Instant::now();
    db.stop();
    let committed = ingest.stats().messages.load(Relaxed);
    publish(&broker, N / 4..N, 0, || {}).await;
    let mut most_held = 0;
    while down.elapsed() < Duration::from_secs(60) {
        most_held = most_held.max(ingest.stats().held.load(Relaxed));
        assert_eq!(ingest.stats().messages.load(Relaxed), committed, "nothing commits while down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(most_held > 0 && most_held <= 300, "held {most_held} messages (max_pending 300)");
    assert_eq!(
        ingest.stats().link.connects.load(Relaxed),
        1,
        "no MQTT reconnect during the outage"
    );
    db.start_again().expect("start InfluxDB again");
    let up = Instant::now();
    while ingest.stats().messages.load(Relaxed) == committed {
        assert!(
            up.elapsed() < Duration::from_secs(10),
            "no write within 10 s of InfluxDB's return"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "InfluxDB down {:.0} s; first write {:.2} s after it came back (limit 10 s); at most {most_held} messages held",
        up.duration_since(down).as_secs_f64(),
        up.elapsed().as_secs_f64()
    );
    expect_points(&db, N as i64, 0).await;
    ingest.shutdown().await.unwrap();
}

/// Malformed messages and readings InfluxDB cannot hold are dead letters
/// with a reason; every other reading of the same messages is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_goes_to_dead_letters_and_the_rest_is_stored() {
    let (broker, db) = (broker(), influx());
    let mut c = config(&broker, &db);
    // Far enough that the sink's own limit (2262) is the one that refuses.
    c.max_ahead = Duration::from_secs(400 * 365 * 86_400);
    let ingest = ingest(c).await;
    // 1 % malformed.
    publish(&broker, 0..N, 100, || {}).await;
    expect_points(&db, (N - N / 100) as i64, (N / 100) as i64).await;
    // Readings of one message InfluxDB cannot hold, beside good ones.
    let t = Timestamp::from_unix_ms(T0);
    let hostile = Batch::new("x")
        .with(Reading::new("good", t, 1.0))
        .with(Reading::new("trail\\", t, 2.0))
        .with(Reading::new("long", t, "x".repeat(MAX_STRING + 1)))
        .with(Reading::new("far", Timestamp::from_unix_ms(9_300_000_000_000), 3.0))
        .with(Reading::new("good too", t, Value::I64(i64::MAX)));
    publish_raw(
        &broker,
        "shopfloor/plant1/press/m9/x",
        Codec::Json.encode_batch(&hostile).unwrap(),
    )
    .await;
    expect_points(&db, (N - N / 100) as i64 + 2, (N / 100) as i64 + 3).await;
    let letters = db.query(DB, "SELECT error FROM dead_letters WHERE error =~ /InfluxDB/").unwrap();
    for what in ["ends with a backslash", "more than the 65536", "past 2262-04-11"] {
        assert!(letters.contains(what), "no dead letter saying {what:?}: {letters}");
    }
    let exact = db.query(DB, "SELECT value_text FROM readings WHERE metric = 'good too'").unwrap();
    assert!(exact.contains(&i64::MAX.to_string()), "{exact}");
    ingest.shutdown().await.unwrap();
}

async fn publish_raw(broker: &Mosquitto, topic: &str, payload: Vec<u8>) {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let (client, mut events) =
        AsyncClient::new(MqttOptions::new("raw-publisher", broker.host(), broker.port()), 10);
    client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        while !matches!(events.poll().await, Ok(Event::Incoming(Packet::PubAck(_)))) {}
    })
    .await
    .expect("a PUBACK");
}

/// What the server refuses (here a field type conflict with points
/// written by someone else) is found line by line: those readings are
/// dead letters with InfluxDB's message, their neighbours are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_refusal_is_isolated_to_its_readings() {
    let db = influx();
    let sink = InfluxSink::new(InfluxConfig::v1(db.url(), DB));
    let mut w = sink.connect().await.unwrap();
    // Another writer made `value` an integer in the `other` measurement.
    let mut c = InfluxConfig::v1(db.url(), DB);
    c.measurement = "other".into();
    let other = InfluxSink::new(c);
    assert_eq!(raw_write(&db, "other,source=s,metric=m value=1i 1795737600000\n"), 204);
    let mut ow = other.connect().await.unwrap();
    let t = |ms| Timestamp::from_unix_ms(T0 + ms);
    // Numbers conflict with the integer `value`; the text has no `value`.
    let batch = Batch::new("s")
        .with(Reading::new("a", t(1), 1.5))
        .with(Reading::new("mode", t(2), "auto"))
        .with(Reading::new("b", t(3), 3.5));
    let mut work = Submission::default();
    work.batches = vec![batch];
    let written = ow.submit(&work).await.unwrap();
    assert_eq!(
        (written.rows, written.rejected.len(), written.dead_letters),
        (1, 2, 2),
        "{written:?}"
    );
    let metrics: Vec<&str> = written.rejected.iter().map(|r| r.metric.as_str()).collect();
    assert_eq!(metrics, ["a", "b"]);
    assert!(written.rejected[0].error.to_string().contains("field type conflict"), "{written:?}");
    assert_eq!(count(&db, "SELECT count(value_text) FROM other"), Some(1));
    assert_eq!(count(&db, "SELECT count(error) FROM dead_letters"), Some(2));
    // The readings measurement has no conflict: all three are stored.
    let written = w.submit(&work).await.unwrap();
    assert_eq!((written.rows, written.rejected.len()), (3, 0));
    assert_eq!(count(&db, "SELECT count(quality) FROM readings"), Some(3));
}

/// A plain HTTP write, as another program would make it.
fn raw_write(db: &InfluxDb, body: &str) -> u16 {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", db.port())).unwrap();
    write!(
        s,
        "POST /write?db={DB}&precision=ms HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// Births are kept, whole (a large one in parts) and in replay order, and
/// a newer birth of the same topic replaces the older.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparkplug_births_are_kept_for_a_restart() {
    let db = influx();
    let sink = InfluxSink::new(InfluxConfig::v1(db.url(), DB));
    let mut w = sink.connect().await.unwrap();
    let big: Vec<u8> = (0..200_000_u32).map(|i| (i % 251) as u8).collect();
    let mut work = Submission::default();
    work.births = vec![
        ("spBv1.0/G/DBIRTH/E/d1".into(), b"device".to_vec()),
        ("spBv1.0/G/NBIRTH/E".into(), big.clone()),
    ];
    w.submit(&work).await.unwrap();
    work.births = vec![("spBv1.0/G/DBIRTH/E/d1".into(), b"device, born again".to_vec())];
    w.submit(&work).await.unwrap();
    let births = sink.births().await.unwrap();
    assert_eq!(
        births,
        [
            ("spBv1.0/G/NBIRTH/E".to_owned(), big),
            ("spBv1.0/G/DBIRTH/E/d1".to_owned(), b"device, born again".to_vec()),
        ]
    );
}
