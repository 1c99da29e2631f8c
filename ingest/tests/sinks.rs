//! The HTTP sinks against their real servers, started by testkit
//! (Debian's InfluxDB 1.6.7 and ClickHouse 18.16.1) and a real Mosquitto:
//! the delivery tests PostgreSQL passes (exact counts after an ingest crash
//! and redelivery, a server crash, a server down for 60 s, bad input), a
//! refusal by the server isolated to its readings, and the births kept
//! for a restart. Each test runs once per store (`influxdb::…`,
//! `clickhouse::…`).

use std::time::Duration;

use shopfloor_ingest::influx::line::MAX_STRING;
use shopfloor_ingest::{
    ClickHouseConfig, ClickHouseSink, InfluxConfig, InfluxSink, IngestConfig, Input, Sink,
    SinkWriter, Store, Submission, Written,
};
use shopfloor_schemas::{Batch, Codec, Reading, Timestamp, TopicTemplate, Value, topic};
use shopfloor_testkit::{ClickHouse, InfluxDb, Mosquitto, Service};
use tokio::time::Instant;

mod support;
use support::{T0, broker, ingest, publish};

const DB: &str = "shopfloor";
const N: u64 = 2000;

/// A store's server as the tests drive it.
trait Server: Sized + Service {
    fn start() -> Self;
    /// The store in `database`, for `IngestConfig::store`.
    fn store_in(&self, database: &str) -> Store;
    /// Readings (one per key: duplicates merged) and dead letters in
    /// `database`, if the server answers.
    fn counts_in(&self, database: &str) -> Option<(i64, i64)>;
    /// The `value_text` of `metric`'s readings, decoded; the dead letters'
    /// errors as the server answers.
    fn texts(&self, metric: &str) -> Vec<String>;
    fn errors(&self) -> String;
    /// Makes `database` refuse numbers in its readings (another program's
    /// schema): numbers are then refused by the server, text is not.
    fn refuse_numbers(&self, database: &str);
    /// Readings only this store cannot hold, with what their dead letters say.
    fn unstorable(&self) -> Vec<(Reading, &'static str)>;

    fn store(&self) -> Store {
        self.store_in(DB)
    }
    fn counts(&self) -> Option<(i64, i64)> {
        self.counts_in(DB)
    }
}

/// The first number of each line of a TabSeparated answer, or of an
/// InfluxQL `count`.
fn influx_count(body: &str) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let r = &v["results"][0];
    if r.get("error").is_some() {
        return None;
    }
    Some(r["series"][0]["values"][0][1].as_i64().unwrap_or(0))
}

impl Server for InfluxDb {
    fn start() -> Self {
        Self::start().unwrap_or_else(|e| panic!("start InfluxDB: {e}"))
    }
    fn store_in(&self, database: &str) -> Store {
        Store::InfluxDb(InfluxConfig::v1(self.url(), database))
    }
    fn counts_in(&self, database: &str) -> Option<(i64, i64)> {
        let rows =
            influx_count(&self.query(database, "SELECT count(quality) FROM readings").ok()?)?;
        let dead =
            influx_count(&self.query(database, "SELECT count(error) FROM dead_letters").ok()?)?;
        Some((rows, dead))
    }
    fn texts(&self, metric: &str) -> Vec<String> {
        let q = format!("SELECT value_text FROM readings WHERE metric = '{metric}'");
        let body = self.query(DB, &q).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let rows = v["results"][0]["series"][0]["values"].as_array().cloned().unwrap_or_default();
        rows.iter().filter_map(|r| r[1].as_str().map(str::to_owned)).collect()
    }
    fn errors(&self) -> String {
        self.query(DB, "SELECT error FROM dead_letters").unwrap_or_default()
    }
    fn refuse_numbers(&self, database: &str) {
        // Another writer made `value` an integer field first.
        let create = format!("/query?q=CREATE%20DATABASE%20{database}");
        assert_eq!(raw_post(self.port(), &create, ""), 200);
        let line = "readings,source=other,metric=m value=1i 1795737600000\n";
        assert_eq!(raw_post(self.port(), &format!("/write?db={database}&precision=ms"), line), 204);
    }
    fn unstorable(&self) -> Vec<(Reading, &'static str)> {
        let t = Timestamp::from_unix_ms(T0);
        vec![
            (Reading::new("trail\\", t, 2.0), "ends with a backslash"),
            (Reading::new("long", t, "x".repeat(MAX_STRING + 1)), "more than the 65536"),
            (
                Reading::new("far", Timestamp::from_unix_ms(9_300_000_000_000), 3.0),
                "past 2262-04-11",
            ),
        ]
    }
}

impl Server for ClickHouse {
    fn start() -> Self {
        Self::start().unwrap_or_else(|e| panic!("start ClickHouse: {e}"))
    }
    fn store_in(&self, database: &str) -> Store {
        Store::ClickHouse(ClickHouseConfig::new(self.url(), database))
    }
    fn counts_in(&self, database: &str) -> Option<(i64, i64)> {
        let n = |q: &str| self.query(q).ok()?.trim().parse::<i64>().ok();
        Some((
            n(&format!("SELECT count() FROM {database}.readings FINAL"))?,
            n(&format!("SELECT count() FROM {database}.dead_letters FINAL"))?,
        ))
    }
    fn texts(&self, metric: &str) -> Vec<String> {
        let q = format!("SELECT value_text FROM {DB}.readings FINAL WHERE metric = '{metric}'");
        let body = self.query(&q).unwrap_or_default();
        body.lines().map(shopfloor_ingest::clickhouse::tsv::unescape).collect()
    }
    fn errors(&self) -> String {
        self.query(&format!("SELECT error FROM {DB}.dead_letters FINAL")).unwrap_or_default()
    }
    fn refuse_numbers(&self, database: &str) {
        // Another program's `readings`, whose value is a small integer:
        // the sink's `CREATE TABLE IF NOT EXISTS` keeps it.
        for q in [
            format!("CREATE DATABASE {database}"),
            format!(
                "CREATE TABLE {database}.readings (source String, metric String, time DateTime, ms UInt16, value Nullable(UInt8), value_text Nullable(String), quality UInt8) ENGINE = ReplacingMergeTree ORDER BY (source, metric, time, ms)"
            ),
        ] {
            assert_eq!(raw_post(self.port(), "/", &q), 200, "{q}");
        }
    }
    fn unstorable(&self) -> Vec<(Reading, &'static str)> {
        // Debian's 18.16 gets the legacy schema: seconds in a UInt32.
        vec![(Reading::new("far", Timestamp::from_unix_ms(4_400_000_000_000), 3.0), "2106-01-01")]
    }
}

/// POSTs `body` to `path` as another program would; the status.
fn raw_post(port: u16, path: &str, body: &str) -> u16 {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    shopfloor_testkit::http_request(addr, "POST", path, "Host: 127.0.0.1\r\n", body).unwrap().status
}

fn config(broker: &Mosquitto, store: Store) -> IngestConfig {
    let mut c = IngestConfig::new(broker.host(), broker.port(), "ingest-http", "");
    c.store = store;
    c.inputs = vec![Input::Plain {
        template: TopicTemplate::parse(topic::defaults::READINGS).unwrap(),
        codec: Codec::Json,
    }];
    c.batch_readings = 200;
    c.batch_age = Duration::from_millis(50);
    c
}

/// Waits until the store holds `n` readings and `dead` dead letters (at
/// most 60 s), then checks that nothing more arrives.
async fn expect_counts<S: Server>(db: &S, n: i64, dead: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = db.counts();
    while got != Some((n, dead)) {
        assert!(
            Instant::now() < deadline,
            "{got:?} readings and dead letters, expected {:?}",
            (n, dead)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        got = db.counts();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(db.counts(), Some((n, dead)), "rows kept coming");
}

async fn an_ingest_crash_and_redelivery_store_each_reading_once<S: Server>() {
    let (broker, db) = (broker(), S::start());
    let first = ingest(config(&broker, db.store())).await;
    publish(&broker, 0..10, 0, || {}).await;
    expect_counts(&db, 10, 0).await;
    support::publish_aborting(&broker, 10..N, first).await;
    let second = ingest(config(&broker, db.store())).await;
    expect_counts(&db, N as i64, 0).await;
    second.shutdown().await.unwrap();
}

async fn a_server_crash_mid_stream_loses_nothing<S: Server>() {
    let (broker, mut db) = (broker(), S::start());
    let ingest = ingest(config(&broker, db.store())).await;
    publish(&broker, 0..N, 0, || {
        db.kill9();
        db.start_again().expect("start the server again");
    })
    .await;
    expect_counts(&db, N as i64, 0).await;
    ingest.shutdown().await.unwrap();
}

/// The server away for 60 s while messages keep coming: nothing is acked
/// meanwhile, at most `max_pending` messages are held, and writing starts
/// again within 10 s of its return.
async fn the_server_down_for_60_s_loses_nothing_and_recovers_within_10_s<S: Server>() {
    let (broker, mut db) = (broker(), S::start());
    let mut c = config(&broker, db.store());
    c.max_pending = 300;
    let ingest = ingest(c).await;
    publish(&broker, 0..N / 4, 0, || {}).await;
    expect_counts(&db, (N / 4) as i64, 0).await;
    support::outage_of_60_s(&broker, &ingest, &mut db, "the server", N / 4..N, 300).await;
    expect_counts(&db, N as i64, 0).await;
    ingest.shutdown().await.unwrap();
}

/// Malformed messages and readings the store cannot hold are dead letters
/// with a reason; every other reading of the same messages is stored,
/// text with tabs, line breaks, quotes and backslashes exactly.
async fn bad_input_goes_to_dead_letters_and_the_rest_is_stored<S: Server>() {
    let (broker, db) = (broker(), S::start());
    let mut c = config(&broker, db.store());
    // Far enough that the store's own limit is the one that refuses.
    c.max_ahead = Duration::from_secs(400 * 365 * 86_400);
    let ingest = ingest(c).await;
    // 1 % malformed.
    publish(&broker, 0..N, 100, || {}).await;
    let (good, bad) = ((N - N / 100) as i64, (N / 100) as i64);
    expect_counts(&db, good, bad).await;
    let t = Timestamp::from_unix_ms(T0);
    let odd = "tab\there, line\nbreak, \"quotes\", back\\slash, \\N, é✓";
    let mut hostile = Batch::new("x")
        .with(Reading::new("good", t, 1.0))
        .with(Reading::new("odd text", t, odd))
        .with(Reading::new("exact", t, Value::I64(i64::MAX)));
    let unstorable = db.unstorable();
    hostile.readings.extend(unstorable.iter().map(|(r, _)| r.clone()));
    let topic = "shopfloor/plant1/press/m9/x";
    support::publish_one(&broker, topic, Codec::Json.encode_batch(&hostile).unwrap()).await;
    expect_counts(&db, good + 3, bad + unstorable.len() as i64).await;
    let errors = db.errors();
    for (_, what) in &unstorable {
        assert!(errors.contains(what), "no dead letter saying {what:?}: {errors}");
    }
    assert_eq!(db.texts("odd text"), [odd]);
    assert_eq!(db.texts("exact"), [i64::MAX.to_string()]);
    ingest.shutdown().await.unwrap();
}

/// What the server refuses (numbers, into another program's schema) is
/// found row by row: those readings are dead letters with the server's
/// message, their neighbours are stored.
async fn a_server_refusal_is_isolated_to_its_readings<S: Server>() {
    let db = S::start();
    db.refuse_numbers("other");
    let t = |ms| Timestamp::from_unix_ms(T0 + ms);
    let batch = Batch::new("s")
        .with(Reading::new("a", t(1), 1.5))
        .with(Reading::new("mode", t(2), "auto"))
        .with(Reading::new("b", t(3), 3.5));
    let mut work = Submission::default();
    work.batches = vec![batch];
    let written = submit(&db.store_in("other"), &work).await;
    assert_eq!(
        (written.rows, written.rejected.len(), written.dead_letters),
        (1, 2, 2),
        "{written:?}"
    );
    let metrics: Vec<&str> = written.rejected.iter().map(|r| r.metric.as_str()).collect();
    assert_eq!(metrics, ["a", "b"]);
    assert_eq!(db.counts_in("other").map(|c| c.1), Some(2));
    // In the sink's own schema all three are stored.
    let written = submit(&db.store(), &work).await;
    assert_eq!((written.rows, written.rejected.len()), (3, 0));
    assert_eq!(db.counts(), Some((3, 0)));
}

/// Connects a sink for `store` and writes `work` once.
async fn submit(store: &Store, work: &Submission) -> Written {
    match store {
        Store::InfluxDb(c) => {
            InfluxSink::new(c.clone()).connect().await.unwrap().submit(work).await
        }
        Store::ClickHouse(c) => {
            ClickHouseSink::new(c.clone()).connect().await.unwrap().submit(work).await
        }
        other => panic!("not an HTTP store: {other:?}"),
    }
    .unwrap()
}

/// Two messages can be dead letters equal in every byte (the same
/// malformed payload on the same topic): each is kept, also when one
/// writer writes both, one after the other.
async fn equal_dead_letters_are_each_kept<S: Server>() {
    async fn twice<K: Sink>(sink: K, work: &Submission) {
        let mut w = sink.connect().await.unwrap();
        assert_eq!(w.submit(work).await.unwrap().dead_letters, 1);
        assert_eq!(w.submit(work).await.unwrap().dead_letters, 1);
    }
    let db = S::start();
    let mut work = Submission::default();
    work.dead = vec![shopfloor_ingest::DeadLetter::new(
        "shopfloor/p/a/m/s",
        b"{\"readings\": [".to_vec(),
        "EOF while parsing",
    )];
    match db.store() {
        Store::InfluxDb(c) => twice(InfluxSink::new(c), &work).await,
        Store::ClickHouse(c) => twice(ClickHouseSink::new(c), &work).await,
        other => panic!("not an HTTP store: {other:?}"),
    }
    assert_eq!(db.counts(), Some((0, 2)));
}

/// Births are kept, whole (a large one too) and in replay order, and a
/// newer birth of the same topic replaces the older.
async fn sparkplug_births_are_kept_for_a_restart<S: Server>() {
    let db = S::start();
    let big: Vec<u8> = (0..200_000_u32).map(|i| (i % 251) as u8).collect();
    let mut work = Submission::default();
    work.births = vec![
        ("spBv1.0/G/DBIRTH/E/d1".into(), b"device".to_vec()),
        ("spBv1.0/G/NBIRTH/E".into(), big.clone()),
    ];
    submit(&db.store(), &work).await;
    // A later birth of the same topic (a millisecond on at least).
    tokio::time::sleep(Duration::from_millis(5)).await;
    work.births = vec![("spBv1.0/G/DBIRTH/E/d1".into(), b"device, born again".to_vec())];
    submit(&db.store(), &work).await;
    let births = match db.store() {
        Store::InfluxDb(c) => InfluxSink::new(c).births().await,
        Store::ClickHouse(c) => ClickHouseSink::new(c).births().await,
        _ => unreachable!(),
    }
    .unwrap();
    assert_eq!(
        births,
        [
            ("spBv1.0/G/NBIRTH/E".to_owned(), big),
            ("spBv1.0/G/DBIRTH/E/d1".to_owned(), b"device, born again".to_vec()),
        ]
    );
}

macro_rules! for_each_store {
    ($($name:ident),* $(,)?) => {
        mod influxdb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name::<shopfloor_testkit::InfluxDb>().await
                }
            )*
        }
        mod clickhouse {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name::<shopfloor_testkit::ClickHouse>().await
                }
            )*
        }
    };
}

for_each_store!(
    an_ingest_crash_and_redelivery_store_each_reading_once,
    a_server_crash_mid_stream_loses_nothing,
    the_server_down_for_60_s_loses_nothing_and_recovers_within_10_s,
    bad_input_goes_to_dead_letters_and_the_rest_is_stored,
    a_server_refusal_is_isolated_to_its_readings,
    equal_dead_letters_are_each_kept,
    sparkplug_births_are_kept_for_a_restart,
);

/// ClickHouse's rollups keep distinct (time, value) pairs: a batch written
/// twice (a redelivery) counts once in `readings_1m` and `readings_1h`,
/// and the figures are the ones computed by hand. Only good numbers go in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_rollups_count_a_redelivered_reading_once() {
    let db = <ClickHouse as Server>::start();
    let minute = T0 + 3_600_000; // 2026-11-27 01:00 UTC
    let t = |s: u64| Timestamp::from_unix_ms(minute + s * 1000);
    let batch = Batch::new("press-1")
        .with(Reading::new("temp", t(0), 10.0))
        .with(Reading::new("temp", t(20), 20.0))
        .with(Reading::new("temp", t(40), 60.0))
        .with(Reading::new("temp", t(61), 5.0)) // the next minute
        .with(Reading::new("temp", t(50), 1000.0).with_quality(shopfloor_schemas::Quality::Bad))
        .with(Reading::new("mode", t(10), "auto"));
    let mut work = Submission::default();
    work.batches = vec![batch];
    submit(&db.store(), &work).await;
    submit(&db.store(), &work).await;
    let rollup = |table: &str| {
        db.query(&format!(
            "SELECT toString(bucket), length(s), arrayReduce('avg', arrayMap(x -> x.3, s)), low, high FROM \
             (SELECT bucket, groupUniqArrayMerge(samples) AS s, minMerge(low) AS low, maxMerge(high) AS high \
              FROM {DB}.{table} WHERE source = 'press-1' AND metric = 'temp' GROUP BY bucket) ORDER BY bucket"
        ))
        .unwrap()
    };
    assert_eq!(
        rollup("readings_1m"),
        "2026-11-27 01:00:00\t3\t30\t10\t60\n2026-11-27 01:01:00\t1\t5\t5\t5\n"
    );
    assert_eq!(rollup("readings_1h"), "2026-11-27 01:00:00\t4\t23.75\t5\t60\n");
    assert_eq!(db.counts(), Some((6, 0)), "readings FINAL: one row per key");
}
