//! The schema and the COPY writer against a real PostgreSQL from testkit:
//! migrations applied once, the public view `shopfloor.readings`, daily
//! partitions made on demand, and writes idempotent on (metric, time).

use shopfloor_ingest::copy::{CopyBuffer, RowError, Stored, pg_micros};
use shopfloor_ingest::writer::date;
use shopfloor_ingest::{MIGRATIONS, Maintenance, MetricInfo, Retention, Writer, migrate};
use shopfloor_schemas::{Batch, Quality, Reading, Timestamp};
use shopfloor_testkit::Postgres;
use tokio_postgres::{Client, NoTls};

async fn connect(pg: &Postgres) -> Client {
    let (client, conn) =
        tokio_postgres::connect(&pg.connection_string(), NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

/// 2026-11-27 00:00 UTC and a day later.
const DAY1: u64 = 1_795_737_600_000;
const DAY2: u64 = DAY1 + 86_400_000;

fn batch(source: &str, from: u64, n: u64) -> Batch {
    let mut b = Batch::new(source);
    for i in 0..n {
        b.readings.push(Reading::new(
            "temp",
            Timestamp::from_unix_ms(from + i * 1000),
            20.0 + i as f64,
        ));
    }
    b
}

async fn count(client: &Client) -> i64 {
    client.query_one("SELECT count(*) FROM shopfloor.readings", &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_once() {
    let pg = Postgres::start().expect("start postgresql");
    let mut client = connect(&pg).await;
    let all: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(migrate(&mut client).await.unwrap(), all);
    assert_eq!(migrate(&mut client).await.unwrap(), Vec::<i32>::new(), "nothing twice");
    // Two processes starting together: each migration applied once.
    let pg2 = Postgres::start().expect("start postgresql");
    let (mut a, mut b) = (connect(&pg2).await, connect(&pg2).await);
    let (ra, rb) = tokio::join!(migrate(&mut a), migrate(&mut b));
    let mut both = ra.unwrap();
    both.extend(rb.unwrap());
    // Either may apply either migration; together each exactly once.
    both.sort_unstable();
    assert_eq!(both, all);
}

/// The public views have exactly the columns and types the README
/// documents (dashboards and alerting are written against them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_contract_has_its_documented_columns() {
    let pg = Postgres::start().expect("start postgresql");
    let mut client = connect(&pg).await;
    migrate(&mut client).await.unwrap();
    let columns = |view: &'static str| {
        let client = &client;
        async move {
            client
                .query(
                    "SELECT column_name::text, data_type::text FROM information_schema.columns
                     WHERE table_schema = 'shopfloor' AND table_name = $1 ORDER BY ordinal_position",
                    &[&view],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| format!("{} {}", r.get::<_, String>(0), r.get::<_, String>(1)))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        columns("readings").await,
        [
            "time timestamp with time zone",
            "source text",
            "metric text",
            "value double precision",
            "value_text text",
            "quality text"
        ]
    );
    let rollup = [
        "bucket timestamp with time zone",
        "source text",
        "metric text",
        "min double precision",
        "max double precision",
        "avg double precision",
        "last double precision",
    ];
    assert_eq!(columns("readings_1m").await, rollup);
    assert_eq!(columns("readings_1h").await, rollup);
    // The catalogue: the datatype of the first value seen, and what a
    // source says about a metric (the latest saying wins, nothing is
    // forgotten that it does not repeat).
    let mut w = Writer::new(client);
    let mut plain = batch("line/c", DAY1, 1);
    plain.readings.push(Reading::new("state", Timestamp::from_unix_ms(DAY1), "run"));
    w.write(&[plain]).await.unwrap();
    let info = |unit: Option<&str>, props: Option<&str>| MetricInfo {
        source: "line/c".into(),
        name: "temp".into(),
        datatype: Some("Float".into()),
        unit: unit.map(Into::into),
        properties: props.map(Into::into),
    };
    // Two births in one flush: the later wins.
    w.describe(&[info(Some("degF"), None), info(Some("degC"), Some(r#"{"engLow": -20}"#))])
        .await
        .unwrap();
    // A rebirth that gives only a new unit keeps the range.
    w.describe(&[info(Some("K"), None)]).await.unwrap();
    let catalogue: Vec<(String, Option<String>, Option<String>)> = w
        .client()
        .query(
            "SELECT name, datatype || coalesce(' ' || unit, ''), properties::text
             FROM shopfloor.metrics WHERE source = 'line/c' ORDER BY name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        catalogue,
        [
            ("state".into(), Some("String".into()), None),
            ("temp".into(), Some("Float K".into()), Some(r#"{"engLow": -20}"#.into())),
        ]
    );
    // Quality is one of four words.
    let mut b = batch("q", DAY1, 0);
    for (i, q) in
        [Quality::Good, Quality::Uncertain, Quality::Bad, Quality::Stale].into_iter().enumerate()
    {
        b.readings
            .push(Reading::new("m", Timestamp::from_unix_ms(DAY1 + i as u64), 1.0).with_quality(q));
    }
    w.write(&[b]).await.unwrap();
    let q: Vec<String> = w
        .client()
        .query("SELECT quality FROM shopfloor.readings WHERE source = 'q' ORDER BY time", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(q, ["good", "uncertain", "bad", "stale"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_land_in_the_readings_view_and_redeliveries_add_nothing() {
    let pg = Postgres::start().expect("start postgresql");
    let mut client = connect(&pg).await;
    migrate(&mut client).await.unwrap();
    let mut w = Writer::new(client);
    // Two sources, two days (two partitions), every kind of value and quality.
    let mut b = batch("Plant1/edge-1/press-1", DAY1 + 86_000_000, 500);
    b.readings.push(
        Reading::new("state", Timestamp::from_unix_ms(DAY2 + 5), "running")
            .with_quality(Quality::Uncertain),
    );
    b.readings.push(
        Reading::new("door", Timestamp::from_unix_ms(DAY2 + 5), true).with_quality(Quality::Stale),
    );
    b.readings.push(
        Reading::new("count", Timestamp::from_unix_ms(DAY2 + 5), -7_i64).with_quality(Quality::Bad),
    );
    let other = batch("Plant1/edge-2", DAY1, 10);
    let written = w.write(&[b.clone(), other.clone()]).await.unwrap();
    assert_eq!((written.rows, written.duplicates, written.rejected.len()), (513, 0, 0));
    assert_eq!(count(w.client()).await, 513);

    let rows = w
        .client()
        .query(
            "SELECT time, source, metric, value, value_text, quality FROM shopfloor.readings
             WHERE source = 'Plant1/edge-1/press-1' AND metric <> 'temp' ORDER BY metric",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, Option<f64>, Option<String>, String)> =
        rows.iter().map(|r| (r.get(2), r.get(3), r.get(4), r.get(5))).collect();
    assert_eq!(
        got,
        [
            ("count".into(), Some(-7.0), None, "bad".into()),
            ("door".into(), Some(1.0), None, "stale".into()),
            ("state".into(), None, Some("running".into()), "uncertain".into()),
        ]
    );
    let partitions: i64 = w
        .client()
        .query_one(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'shopfloor.samples'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(partitions, 2, "one per day");

    // The same batches again (a redelivery), and one overlapping new rows.
    let again = w.write(&[b.clone(), other]).await.unwrap();
    assert_eq!((again.rows, again.duplicates), (0, 513));
    let overlap =
        w.write(&[batch("Plant1/edge-1/press-1", DAY1 + 86_000_000 + 490_000, 20)]).await.unwrap();
    assert_eq!((overlap.rows, overlap.duplicates), (10, 10));
    assert_eq!(count(w.client()).await, 523);

    // The minute view (after a rollup pass): min, max, avg and the last
    // value by time.
    let mut upkeep = Maintenance::new(Retention::default());
    let pass = upkeep.run(&mut connect(&pg).await, DAY1).await.unwrap();
    assert!(pass.deltas > 0 && pass.buckets_1m > 0 && pass.buckets_1h > 0, "{pass:?}");
    // Redeliveries (the ON CONFLICT path) counted once.
    assert_eq!(rollup_mismatches(w.client(), "minute").await, 0);
    assert_eq!(rollup_mismatches(w.client(), "hour").await, 0);
    let m = w
        .client()
        .query_one(
            "SELECT count(*), min(min), max(max) FROM shopfloor.readings_1m WHERE source = 'Plant1/edge-2' AND metric = 'temp'",
            &[],
        )
        .await
        .unwrap();
    let (buckets, lo, hi): (i64, f64, f64) = (m.get(0), m.get(1), m.get(2));
    assert_eq!((buckets, lo, hi), (1, 20.0, 29.0), "ten readings a second apart: one minute");
    let last: f64 = w
        .client()
        .query_one("SELECT last FROM shopfloor.readings_1m WHERE source = 'Plant1/edge-2'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(last, 29.0);

    // A batch holding one reading twice: stored once.
    let mut twice = batch("Plant1/edge-3", DAY1, 1);
    twice.readings.push(twice.readings[0].clone());
    let r = w.write(&[twice]).await.unwrap();
    assert_eq!((r.rows, r.duplicates), (1, 1));
}

/// Every bucket of `rollup` (1m or 1h) against the same aggregate computed
/// straight from the samples.
async fn rollup_mismatches(client: &Client, unit: &str) -> i64 {
    let sql = format!(
        "WITH direct AS (
           SELECT date_trunc('{unit}', time, 'UTC') AS bucket, source, metric,
                  min(value) AS min, max(value) AS max, avg(value) AS avg,
                  (array_agg(value ORDER BY time DESC))[1] AS last
           FROM shopfloor.readings WHERE value IS NOT NULL GROUP BY 1, 2, 3)
         SELECT count(*) FROM direct d FULL JOIN shopfloor.readings_1{} r
           USING (bucket, source, metric)
         WHERE d.min IS DISTINCT FROM r.min OR d.max IS DISTINCT FROM r.max
            OR abs(d.avg - r.avg) > 1e-9 OR d.avg IS NULL OR r.avg IS NULL
            OR d.last IS DISTINCT FROM r.last",
        &unit[..1]
    );
    client.query_one(&sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_follow_live_and_late_rows_and_partitions_come_and_go() {
    let pg = Postgres::start().expect("start postgresql");
    let mut client = connect(&pg).await;
    migrate(&mut client).await.unwrap();
    let mut w = Writer::new(connect(&pg).await);
    let mut upkeep = Maintenance::new(Retention {
        samples: Some(std::time::Duration::from_secs(3 * 86_400)),
        ..Retention::default()
    });
    // Partitions ahead of the clock: today and the two days after.
    let now = DAY1 + 3_600_000;
    upkeep.run(&mut client, now).await.unwrap();
    let parts = |rows: Vec<tokio_postgres::Row>| -> Vec<String> {
        let mut v: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        v.sort();
        v
    };
    let list = "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = 'shopfloor.samples'::regclass";
    assert_eq!(
        parts(client.query(list, &[]).await.unwrap()),
        ["samples_20261127", "samples_20261128", "samples_20261129"]
    );

    // Live rows in several writes, two sources, text among numbers.
    for k in 0..5 {
        let mut b = batch("line/a", DAY1 + k * 50_000, 50);
        b.readings.push(Reading::new("state", Timestamp::from_unix_ms(DAY1 + k * 50_000), "run"));
        w.write(&[b, batch("line/b", DAY1 + 7_000 + k * 50_000, 30)]).await.unwrap();
    }
    let pass = upkeep.run(&mut client, now).await.unwrap();
    // Per write, one delta per source, metric and minute it touched.
    assert!(pass.deltas >= 10, "{pass:?}");
    assert_eq!(rollup_mismatches(&client, "minute").await, 0);
    assert_eq!(rollup_mismatches(&client, "hour").await, 0);
    let buckets: i64 =
        client.query_one("SELECT count(*) FROM shopfloor.readings_1m", &[]).await.unwrap().get(0);
    // line/a: seconds 0–249, minutes 0–4; line/b: seconds 7–236, minutes 0–3.
    assert_eq!(buckets, 9);
    assert_eq!(upkeep.run(&mut client, now).await.unwrap().deltas, 0, "nothing twice");

    // Late rows (a replay after an outage) into buckets already rolled up,
    // and into an hour two days back: both counted.
    w.write(&[batch("line/a", DAY1 + 30_500, 3), batch("line/a", DAY1 - 2 * 86_400_000, 120)])
        .await
        .unwrap();
    let pass = upkeep.run(&mut client, now).await.unwrap();
    assert_eq!(pass.deltas, 3, "one write, three minutes touched (one live, two late)");
    // A redelivery, partly new: only the new rows count.
    let r = w.write(&[batch("line/b", DAY1 + 7_000, 40)]).await.unwrap();
    assert_eq!((r.rows, r.duplicates), (10, 30));
    upkeep.run(&mut client, now).await.unwrap();
    assert_eq!(rollup_mismatches(&client, "minute").await, 0);
    assert_eq!(rollup_mismatches(&client, "hour").await, 0);

    // The retention (3 days) drops whole days older than that, and only them.
    let pass = upkeep.run(&mut client, DAY1 + 86_400_000 + 1).await.unwrap();
    assert_eq!(pass.dropped, Vec::<String>::new(), "the day two days back is within 3 days");
    let pass = upkeep.run(&mut client, DAY1 + 2 * 86_400_000 + 1).await.unwrap();
    assert_eq!(pass.dropped, ["samples_20261125"]);
    let old: i64 = client
        .query_one("SELECT count(*) FROM shopfloor.readings WHERE time < '2026-11-26'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(old, 0);
    // The rollups of dropped days stay.
    let kept: i64 = client
        .query_one("SELECT count(*) FROM shopfloor.readings_1h WHERE bucket < '2026-11-26'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_be_stored_is_rejected_and_its_neighbours_written() {
    let pg = Postgres::start().expect("start postgresql");
    let mut client = connect(&pg).await;
    migrate(&mut client).await.unwrap();
    let mut w = Writer::new(client);
    let mut b = batch("s", DAY1, 3);
    b.readings.insert(1, Reading::new("label", Timestamp::from_unix_ms(DAY1), "a\0b"));
    b.readings.push(Reading::new("late", Timestamp::from_unix_ms(u64::MAX), 1.0));
    let r = w.write(&[b]).await.unwrap();
    assert_eq!(r.rows, 3);
    let errors: Vec<(&str, &RowError)> =
        r.rejected.iter().map(|x| (x.metric.as_str(), &x.error)).collect();
    assert_eq!(errors, [("label", &RowError::Nul(1)), ("late", &RowError::Time(u64::MAX))]);
}

#[test]
fn copy_rows_are_the_documented_bytes() {
    let mut c = CopyBuffer::with_capacity(0);
    c.push(1, 7, &Stored::Number(1.5), 0);
    c.push(2, 8, &Stored::Text("ab".into()), 3);
    let b = c.finish();
    let mut want: Vec<u8> = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0".to_vec();
    // Row 1: 5 fields; time, id, value, NULL text, quality.
    want.extend([0, 5, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 7, 0, 0, 0, 8]);
    want.extend(1.5_f64.to_be_bytes());
    want.extend([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 2, 0, 0]);
    // Row 2: NULL value, text "ab", quality 3.
    want.extend([0, 5, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 8]);
    want.extend([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 2, b'a', b'b', 0, 0, 0, 2, 0, 3]);
    want.extend([0xff, 0xff]);
    assert_eq!(&b[..], &want[..]);
    assert_eq!(pg_micros(946_684_800_001), Ok(1000));
}

#[test]
fn dates_of_days_since_the_epoch() {
    assert_eq!(date(0), "1970-01-01");
    assert_eq!(date(DAY1 / 86_400_000), "2026-11-27");
    assert_eq!(date(11_016), "2000-02-29");
    assert_eq!(date(2_932_896), "9999-12-31");
}
