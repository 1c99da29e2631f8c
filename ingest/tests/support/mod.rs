//! Both storage kinds for the ingest's tests: each test runs on native
//! partitions and on TimescaleDB (a server with the extension preloaded).
//! Without TimescaleDB installed, the TimescaleDB half fails, naming how
//! to install it: it never passes by testing native storage twice.

#![allow(dead_code, unreachable_pub)] // Each test file uses a part.

use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use shopfloor_ingest::{Ingest, IngestConfig, Input, Storage};
use shopfloor_schemas::{Batch, Codec, Reading, Timestamp};
use shopfloor_sparkplug::HostConfig;
use shopfloor_testkit::{Mosquitto, Postgres, Service};
use tokio::time::{Instant, timeout};
use tokio_postgres::{Client, NoTls};

/// A server for `storage`; TimescaleDB is preloaded for
/// [`Storage::TimescaleDb`] (and telemetry off).
pub fn postgres(storage: Storage) -> Postgres {
    let b = Postgres::builder();
    let b = match storage {
        Storage::TimescaleDb => b.timescaledb(),
        _ => b,
    };
    b.start().unwrap_or_else(|e| {
        eprintln!("\n\n=== {storage:?} ingest tests cannot run: {e} ===\n\n");
        panic!("start PostgreSQL for {storage:?}: {e}")
    })
}

/// Whether the ingest should make a TimescaleDB schema for `storage`.
pub fn timescaledb(storage: Storage) -> bool {
    storage == Storage::TimescaleDb
}

/// The migrated schema really uses `storage` (not a silent fallback).
pub async fn assert_storage(client: &Client, storage: Storage) {
    let got = shopfloor_ingest::storage(client).await.expect("read the storage");
    assert_eq!(got, storage, "the schema was made for another storage kind");
}

/// `#[tokio::test]`s `native::NAME` and `timescaledb::NAME` that call
/// `NAME(Storage::…)` of the file.
#[macro_export]
macro_rules! on_both_storages {
    ($($name:ident),* $(,)?) => {
        mod native {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(shopfloor_ingest::Storage::Native).await
                }
            )*
        }
        mod timescaledb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(shopfloor_ingest::Storage::TimescaleDb).await
                }
            )*
        }
    };
}

/// The first reading's time: 2026-11-27 00:00 UTC.
pub const T0: u64 = 1_795_737_600_000;

/// A broker that keeps the ingest's session and what it holds while the
/// ingest or the broker is away ([`Mosquitto::durable`]).
pub fn broker() -> Mosquitto {
    Mosquitto::durable().start().expect("start mosquitto")
}

/// A client of `pg`'s database, its connection driven by a task.
pub async fn connect(pg: &Postgres) -> Client {
    let (client, conn) =
        tokio_postgres::connect(&pg.connection_string(), NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

/// The one value `sql` selects.
pub async fn value<T>(client: &Client, sql: &str) -> T
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// The rows of `sql`, one column each.
pub async fn column<T>(client: &Client, sql: &str) -> Vec<T>
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    client.query(sql, &[]).await.unwrap().iter().map(|r| r.get(0)).collect()
}

/// The rows of `sql`, two columns each.
pub async fn pairs<A, B>(client: &Client, sql: &str) -> Vec<(A, B)>
where
    A: for<'a> tokio_postgres::types::FromSql<'a>,
    B: for<'a> tokio_postgres::types::FromSql<'a>,
{
    client.query(sql, &[]).await.unwrap().iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// The rows of `sql`, three columns each.
pub async fn triples<A, B, C>(client: &Client, sql: &str) -> Vec<(A, B, C)>
where
    A: for<'a> tokio_postgres::types::FromSql<'a>,
    B: for<'a> tokio_postgres::types::FromSql<'a>,
    C: for<'a> tokio_postgres::types::FromSql<'a>,
{
    client.query(sql, &[]).await.unwrap().iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect()
}

/// The Sparkplug input of an ingest that publishes no host state.
pub fn sparkplug() -> Input {
    let mut host = HostConfig::new("ingest");
    host.publish_state = false;
    Input::Sparkplug { host }
}

/// Message `i`: one reading of sensor `s{i % 10}` at its own time, or (when
/// `bad`) a payload that is no JSON batch.
pub fn message(i: u64, bad: bool) -> (String, Vec<u8>) {
    let topic = format!("shopfloor/plant1/press/m{}/s{}", i % 3, i % 10);
    if bad {
        return (topic, b"{\"readings\": [{\"metric\": 1".to_vec());
    }
    let b = Batch::new("ignored").with(Reading::new(
        format!("s{}", i % 10),
        Timestamp::from_unix_ms(T0 + i),
        i as f64,
    ));
    (topic, Codec::Json.encode_batch(&b).unwrap())
}

/// Publishes messages `range` at QoS 1 and waits for every PUBACK; calls
/// `midway` once, halfway.
pub async fn publish(
    broker: &Mosquitto,
    range: std::ops::Range<u64>,
    bad_every: u64,
    mut midway: impl FnMut(),
) {
    let mut o =
        MqttOptions::new(format!("publisher-{}", range.start), broker.host(), broker.port());
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(3600));
    let (client, mut events) = AsyncClient::new(o, 100);
    let range_start = range.start;
    let half = range.start + (range.end - range.start) / 2;
    let total = range.end - range.start;
    let c = client.clone();
    let sender = tokio::spawn(async move {
        for i in range {
            let (t, p) = message(i, bad_every > 0 && i % bad_every == 0);
            let props = PublishProperties {
                content_type: Some("application/json".into()),
                ..Default::default()
            };
            c.publish_with_properties(t, QoS::AtLeastOnce, false, p, props).await.unwrap();
        }
    });
    let mut acked = 0;
    let mut called = false;
    let done = timeout(Duration::from_secs(60), async {
        while acked < total {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    acked += 1;
                    if !called && acked >= half - range_start {
                        called = true;
                        midway();
                    }
                }
                Ok(_) => {}
                // The broker restarting: rumqttc resends unacked publishes.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await;
    assert!(done.is_ok(), "only {acked} of {total} publishes acknowledged within 60 s");
    sender.await.unwrap();
}

/// Publishes messages `range` as [`publish`] does, and aborts `ingest`
/// (a crash: nothing flushed, nothing acked) halfway.
pub async fn publish_aborting(broker: &Mosquitto, range: std::ops::Range<u64>, ingest: Ingest) {
    let mut ingest = Some(ingest);
    publish(broker, range, 0, || {
        if let Some(i) = ingest.take() {
            i.abort();
        }
    })
    .await;
}

/// Starts an ingest and waits until the broker confirmed its subscription
/// (a session that does not exist yet holds nothing published before).
pub async fn ingest(config: IngestConfig) -> Ingest {
    let i = Ingest::spawn(config);
    let deadline = Instant::now() + Duration::from_secs(20);
    while i.stats().link.subscribed.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "the ingest did not subscribe within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    i
}

/// Publishes one message at QoS 1 and waits for its PUBACK.
pub async fn publish_one(broker: &Mosquitto, topic: &str, payload: Vec<u8>) {
    let (client, mut events) =
        AsyncClient::new(MqttOptions::new("one-publisher", broker.host(), broker.port()), 10);
    client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
    timeout(Duration::from_secs(20), async {
        while !matches!(events.poll().await, Ok(Event::Incoming(Packet::PubAck(_)))) {}
    })
    .await
    .expect("a PUBACK within 20 s");
}

/// Waits until the readings view holds `n` rows and the dead letters
/// `dead` (at most 60 s), then checks that no metric and time appears
/// twice and that no more rows arrive.
pub async fn expect_rows(pg: &Postgres, n: i64, dead: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut rows, mut letters) = (0, 0);
    while Instant::now() < deadline {
        if let Ok(client) = timeout(Duration::from_secs(2), connect(pg)).await {
            let q = "SELECT (SELECT count(*) FROM shopfloor.readings), (SELECT count(*) FROM shopfloor.dead_letters)";
            if let Ok(row) = client.query_one(q, &[]).await {
                (rows, letters) = (row.get(0), row.get(1));
                if rows == n && letters == dead {
                    let distinct: i64 = value(
                        &client,
                        "SELECT count(DISTINCT (source, metric, time)) FROM shopfloor.readings",
                    )
                    .await;
                    assert_eq!(distinct, n);
                    // And nothing more arrives.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let again: i64 =
                        value(&client, "SELECT count(*) FROM shopfloor.readings").await;
                    assert_eq!(again, n, "rows kept coming");
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{rows} rows and {letters} dead letters, expected {n} and {dead}");
}

/// `server` (`name`) away for 60 s while messages `during` keep coming: nothing
/// commits meanwhile, at most `max_pending` messages are held (the broker
/// keeps the rest), the MQTT connection stays up, and the first commit
/// comes within 10 s of the server's return.
pub async fn outage_of_60_s(
    broker: &Mosquitto,
    ingest: &Ingest,
    server: &mut impl Service,
    name: &str,
    during: std::ops::Range<u64>,
    max_pending: u64,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let down = Instant::now();
    server.stop();
    let committed = ingest.stats().messages.load(Relaxed);
    publish(broker, during, 0, || {}).await;
    let mut most_held = 0;
    while down.elapsed() < Duration::from_secs(60) {
        most_held = most_held.max(ingest.stats().held.load(Relaxed));
        assert_eq!(ingest.stats().messages.load(Relaxed), committed, "nothing commits while down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        most_held > 0 && most_held <= max_pending,
        "held {most_held} messages (max_pending {max_pending})"
    );
    // The event loop kept polling (and pinging) while nothing committed:
    // the broker never dropped the connection.
    assert_eq!(
        ingest.stats().link.connects.load(Relaxed),
        1,
        "no MQTT reconnect during the outage"
    );
    server.start_again().unwrap_or_else(|e| panic!("start {name} again: {e}"));
    let up = Instant::now();
    while ingest.stats().messages.load(Relaxed) == committed {
        assert!(up.elapsed() < Duration::from_secs(10), "no commit within 10 s of {name}'s return");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "{name} down {:.0} s; first commit {:.2} s after it came back (limit 10 s); at most {most_held} messages held",
        up.duration_since(down).as_secs_f64(),
        up.elapsed().as_secs_f64()
    );
}
