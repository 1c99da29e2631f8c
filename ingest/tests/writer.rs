//! The schema and the COPY writer against a real PostgreSQL from testkit:
//! migrations applied once, the public view `shopfloor.readings`, daily
//! partitions made on demand, and writes idempotent on (metric, time).

use shopfloor_ingest::copy::{CopyBuffer, RowError, Stored, pg_micros};
use shopfloor_ingest::maintain::Pass;
use shopfloor_ingest::writer::date;
use shopfloor_ingest::{
    DeadLetter, MIGRATIONS, Maintenance, MetricInfo, Retention, Storage, Submission, Writer,
    migrate,
};
use shopfloor_schemas::{Batch, Quality, Reading, Timestamp};
use shopfloor_testkit::Postgres;
use tokio_postgres::{Client, NoTls};

mod support;
use support::{column, connect, pairs, triples, value};

/// A server for `storage` and a client of its migrated database (checked
/// to use `storage`).
async fn migrated(storage: Storage) -> (Postgres, Client) {
    let pg = support::postgres(storage);
    let mut client = connect(&pg).await;
    migrate(&mut client).await.unwrap();
    support::assert_storage(&client, storage).await;
    (pg, client)
}

/// The rollups brought up to date: by a maintenance pass on native storage
/// (returned), by refreshing the continuous aggregates on TimescaleDB.
async fn roll_up(pg: &Postgres, storage: Storage, client: &Client) -> Option<Pass> {
    if storage == Storage::Native {
        Some(
            Maintenance::new(Retention::default()).run(&mut connect(pg).await, DAY1).await.unwrap(),
        )
    } else {
        // By hand: no policy job refreshing under the comparison.
        refresh_aggregates(client).await;
        None
    }
}

/// The minute and hour rollups equal the aggregates of the samples.
async fn assert_rollups_match(client: &Client) {
    assert_eq!(rollup_mismatches(client, "minute").await, 0);
    assert_eq!(rollup_mismatches(client, "hour").await, 0);
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

async fn migrations_apply_once(storage: Storage) {
    let pg = support::postgres(storage);
    let mut client = connect(&pg).await;
    let all: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(migrate(&mut client).await.unwrap(), all);
    assert_eq!(migrate(&mut client).await.unwrap(), Vec::<i32>::new(), "nothing twice");
    support::assert_storage(&client, storage).await;
    // Two processes starting together: each migration applied once.
    let pg2 = support::postgres(storage);
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
async fn the_query_contract_has_its_documented_columns(storage: Storage) {
    let (_pg, client) = migrated(storage).await;
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
        "twa double precision",
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
    let info = |unit: Option<&str>, props: Option<&str>| {
        let mut info = MetricInfo::new("line/c", "temp");
        info.datatype = Some("Float".into());
        info.unit = unit.map(Into::into);
        info.properties = props.map(Into::into);
        info
    };
    // Two births in one flush: the later wins.
    w.describe(&[info(Some("degF"), None), info(Some("degC"), Some(r#"{"engLow": -20}"#))])
        .await
        .unwrap();
    // A rebirth that gives only a new unit keeps the range.
    w.describe(&[info(Some("K"), None)]).await.unwrap();
    let catalogue: Vec<(String, Option<String>, Option<String>)> = triples(
        w.client(),
        "SELECT name, datatype || coalesce(' ' || unit, ''), properties::text
         FROM shopfloor.metrics WHERE source = 'line/c' ORDER BY name",
    )
    .await;
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
    let q: Vec<String> = column(
        w.client(),
        "SELECT quality FROM shopfloor.readings WHERE source = 'q' ORDER BY time",
    )
    .await;
    assert_eq!(q, ["good", "uncertain", "bad", "stale"]);
}

async fn batches_land_in_the_readings_view_and_redeliveries_add_nothing(storage: Storage) {
    let (pg, client) = migrated(storage).await;
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
    let partitions: i64 = value(
        w.client(),
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'shopfloor.samples'::regclass",
    )
    .await;
    // Native partitions, or TimescaleDB's chunks (one day each by default).
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
    if let Some(pass) = roll_up(&pg, storage, w.client()).await {
        assert!(pass.deltas > 0 && pass.buckets_1m > 0 && pass.buckets_1h > 0, "{pass:?}");
    }
    // Redeliveries (the ON CONFLICT path) counted once.
    assert_rollups_match(w.client()).await;
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
    let last: f64 =
        value(w.client(), "SELECT last FROM shopfloor.readings_1m WHERE source = 'Plant1/edge-2'")
            .await;
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
         SELECT bucket::text, source, metric, d.min, r.min, d.max, r.max, d.avg, r.avg, d.last, r.last
         FROM direct d FULL JOIN shopfloor.readings_1{} r
           USING (bucket, source, metric)
         WHERE d.min IS DISTINCT FROM r.min OR d.max IS DISTINCT FROM r.max
            OR abs(d.avg - r.avg) > 1e-9 OR d.avg IS NULL OR r.avg IS NULL
            OR d.last IS DISTINCT FROM r.last",
        &unit[..1]
    );
    let rows = client.query(&sql, &[]).await.unwrap();
    for r in &rows {
        // What differs, for whoever reads a failure.
        let f =
            |i: usize| r.get::<_, Option<f64>>(i).map_or_else(|| "-".to_owned(), |x| x.to_string());
        eprintln!(
            "{unit} {} {} {}: min {}/{} max {}/{} avg {}/{} last {}/{} (samples/rollup)",
            r.get::<_, String>(0),
            r.get::<_, Option<String>>(1).unwrap_or_default(),
            r.get::<_, Option<String>>(2).unwrap_or_default(),
            f(3),
            f(4),
            f(5),
            f(6),
            f(7),
            f(8),
            f(9),
            f(10)
        );
    }
    rows.len() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_follow_live_and_late_rows_and_partitions_come_and_go() {
    let (pg, mut client) = migrated(Storage::Native).await;
    let mut w = Writer::new(connect(&pg).await);
    let mut retention = Retention::default();
    retention.samples = Some(std::time::Duration::from_secs(3 * 86_400));
    let mut upkeep = Maintenance::new(retention);
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
    assert_rollups_match(&client).await;
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
    assert_rollups_match(&client).await;

    // The retention (3 days) drops whole days older than that, and only them.
    let pass = upkeep.run(&mut client, DAY1 + 86_400_000 + 1).await.unwrap();
    assert_eq!(pass.dropped, Vec::<String>::new(), "the day two days back is within 3 days");
    let pass = upkeep.run(&mut client, DAY1 + 2 * 86_400_000 + 1).await.unwrap();
    assert_eq!(pass.dropped, ["samples_20261125"]);
    let old: i64 =
        value(&client, "SELECT count(*) FROM shopfloor.readings WHERE time < '2026-11-26'").await;
    assert_eq!(old, 0);
    // The rollups of dropped days stay.
    let kept: i64 =
        value(&client, "SELECT count(*) FROM shopfloor.readings_1h WHERE bucket < '2026-11-26'")
            .await;
    assert_eq!(kept, 1);
}

async fn what_cannot_be_stored_is_rejected_and_its_neighbours_written(storage: Storage) {
    let (_pg, client) = migrated(storage).await;
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

/// Behind the checks, PostgreSQL may still refuse rows (here a CHECK
/// constraint a DBA added). Such a batch is never retried as it is: its
/// rows are bisected down to those at fault, which become dead letters
/// with PostgreSQL's message; the rest is committed.
async fn data_postgres_refuses_is_isolated_and_the_rest_committed(storage: Storage) {
    let (_pg, client) = migrated(storage).await;
    client
        .batch_execute(
            "ALTER TABLE shopfloor.samples ADD CONSTRAINT no_666 CHECK (value IS DISTINCT FROM 666)",
        )
        .await
        .unwrap();
    let mut w = Writer::new(client);
    let mut b = batch("line/a", DAY1, 100);
    for k in [3, 50, 99] {
        b.readings[k].value = shopfloor_schemas::Value::F64(666.0);
    }
    let mut s = Submission::default();
    s.batches = vec![b, batch("line/b", DAY1, 7)];
    s.dead = vec![DeadLetter::new("t", vec![1], "given")];
    let written = w.submit(&s).await.expect("isolated, not an error");
    assert_eq!((written.rows, written.dead_letters), (104, 4));
    assert_eq!(count(w.client()).await, 104);
    let letters: Vec<(String, String)> =
        pairs(w.client(), "SELECT topic, error FROM shopfloor.dead_letters ORDER BY id").await;
    assert_eq!(letters.len(), 4, "{letters:?}");
    assert_eq!(letters[0], ("t".to_owned(), "given".to_owned()));
    for (topic, error) in &letters[1..] {
        assert_eq!(topic, "line/a");
        // PostgreSQL's own words and SQLSTATE, not "db error".
        assert!(error.contains("no_666") && error.contains("SQLSTATE 23514"), "{error}");
    }
}

/// A database error names what PostgreSQL said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_the_servers_message_and_sqlstate() {
    let pg = Postgres::start().expect("start postgresql");
    let client = connect(&pg).await;
    let e = client.batch_execute("SELECT 1/0").await.unwrap_err();
    assert_eq!(shopfloor_ingest::pg_message(&e), "division by zero (SQLSTATE 22012)");
    let e = client
        .batch_execute("CREATE TABLE t (k int PRIMARY KEY); INSERT INTO t VALUES (1), (1)")
        .await
        .unwrap_err();
    let m = shopfloor_ingest::pg_message(&e);
    assert!(
        m.contains("duplicate key") && m.contains("23505") && m.contains("detail: Key (k)=(1)"),
        "{m}"
    );
    // Not a server's answer: the driver's words and their cause.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let Err(e) =
        tokio_postgres::connect(&format!("host=127.0.0.1 port={port} user=x"), NoTls).await
    else {
        panic!("connected to a closed port")
    };
    assert!(
        shopfloor_ingest::pg_message(&e).contains("refused"),
        "{}",
        shopfloor_ingest::pg_message(&e)
    );
}

/// The deaths of a [`Submission`]: the stale rows land after the metric's
/// latest row whatever the death's time, and a redelivered death adds
/// nothing.
async fn deaths_leave_the_latest_row_stale(storage: Storage) {
    let (pg, client) = migrated(storage).await;
    let mut w = Writer::new(client);
    let stale = |ms: u64, v: f64| {
        Batch::new("e/d")
            .with(Reading::new("x", Timestamp::from_unix_ms(ms), v).with_quality(Quality::Stale))
    };
    let mut s = Submission::default();
    // `x` at DAY1, +1 s, +2 s.
    s.batches = vec![batch("e/d", DAY1, 3)];
    s.batches[0].readings.iter_mut().for_each(|r| r.metric = "x".into());
    // Death in the millisecond of the last reading.
    s.deaths = vec![stale(DAY1 + 2000, 22.0)];
    assert_eq!(w.submit(&s).await.unwrap().rows, 4);
    // The same death again (a redelivery): nothing.
    let mut again = s.clone();
    again.batches.clear();
    assert_eq!(w.submit(&again).await.unwrap().rows, 0);
    // New data, then a death dated before it, then one after it.
    let data_then_death = |ms: u64, v: f64, death_ms: u64| {
        let mut s = Submission::default();
        s.batches = vec![Batch::new("e/d").with(Reading::new("x", Timestamp::from_unix_ms(ms), v))];
        s.deaths = vec![stale(death_ms, v)];
        s
    };
    assert_eq!(w.submit(&data_then_death(DAY1 + 10_000, 5.0, DAY1 + 9_000)).await.unwrap().rows, 2);
    assert_eq!(
        w.submit(&data_then_death(DAY1 + 20_000, 6.0, DAY1 + 30_000)).await.unwrap().rows,
        2
    );
    let rows: Vec<(i64, String)> = pairs(
        w.client(),
        "SELECT (extract(epoch from time) * 1000)::int8, quality FROM shopfloor.readings ORDER BY time",
    )
    .await;
    let d = DAY1 as i64;
    let q = |s: &str| s.to_owned();
    assert_eq!(
        rows,
        [
            (d, q("good")),
            (d + 1000, q("good")),
            (d + 2000, q("good")),
            (d + 2001, q("stale")),
            (d + 10_000, q("good")),
            (d + 10_001, q("stale")),
            (d + 20_000, q("good")),
            (d + 30_000, q("stale")),
        ]
    );
    // The rollups count the stale rows as they count any row.
    roll_up(&pg, storage, w.client()).await;
    assert_eq!(rollup_mismatches(w.client(), "minute").await, 0);
}

/// Readings by exception: the time-weighted average weighs each value by
/// how long it held (a value from before the bucket carried in, a stale
/// row ending what was known), and `locf` carries the last value forward
/// on a grid. Every figure below is computed by hand.
async fn time_weighted_averages_and_locf_match_hand_computed_values(storage: Storage) {
    let (pg, client) = migrated(storage).await;
    let mut w = Writer::new(client);
    let at = |s: i64, v: f64, q: Quality| {
        let ms = (DAY1 as i64 + s * 1000) as u64;
        Reading::new("p", Timestamp::from_unix_ms(ms), v).with_quality(q)
    };
    let g = Quality::Good;
    let mut b = Batch::new("m/1");
    b.readings = vec![
        at(-30, 5.0, g),
        at(0, 10.0, g),
        at(20, 20.0, g),
        at(50, 40.0, g),
        at(55, 40.0, Quality::Stale), // a death: unknown from here
        at(90, 8.0, g),
    ];
    w.write(&[b]).await.unwrap();
    roll_up(&pg, storage, w.client()).await;
    let twa = |view: &'static str| {
        let client = w.client();
        async move {
            client
                .query(
                    &format!(
                        "SELECT (extract(epoch FROM bucket) * 1000)::int8 - {DAY1}, avg, twa
                         FROM shopfloor.{view} WHERE source = 'm/1' AND metric = 'p' ORDER BY bucket"
                    ),
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get::<_, i64>(0) / 1000, r.get::<_, f64>(1), r.get::<_, f64>(2)))
                .collect::<Vec<_>>()
        }
    };
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    let minutes = twa("readings_1m").await;
    assert_eq!(minutes.len(), 3, "{minutes:?}");
    // [-60 s, 0): only 5 from -30 s (nothing before to carry in).
    assert!(minutes[0].0 == -60 && close(minutes[0].2, 5.0), "{minutes:?}");
    // [0, 60): 10 for 20 s, 20 for 30 s, 40 for 5 s, then stale:
    // 1000 / 55. The plain mean of the four rows is 27.5.
    assert!(close(minutes[1].2, 1000.0 / 55.0) && close(minutes[1].1, 27.5), "{minutes:?}");
    // [60, 120): stale carried in until 90 s (not counted), then 8.
    assert!(minutes[2].0 == 60 && close(minutes[2].2, 8.0), "{minutes:?}");
    let hours = twa("readings_1h").await;
    // [0, 1 h): the minute above, then 8 from 90 s to the hour's end.
    let want = (1000.0 + 8.0 * 3510.0) / (55.0 + 3510.0);
    assert!(hours.len() == 2 && close(hours[1].2, want), "{hours:?}, want {want}");
    // The trend every 30 s from -60 s to 120 s.
    let time = |ms: u64| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    let (from, to) = (time(DAY1 - 60_000), time(DAY1 + 120_000));
    let locf: Vec<(Option<f64>, Option<String>)> = w
        .client()
        .query(
            "SELECT value, quality FROM shopfloor.locf('m/1', 'p', $1, $2, INTERVAL '30 seconds')",
            &[&from, &to],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let good = |v: f64| (Some(v), Some("good".to_owned()));
    assert_eq!(
        locf,
        [
            (None, None),
            good(5.0),
            good(10.0),
            good(20.0),
            (Some(40.0), Some("stale".to_owned())),
            good(8.0),
            good(8.0),
        ]
    );
}

/// Stops the continuous aggregates' policy jobs from starting, and waits
/// until none is running (30 s at most).
async fn pause_refresh_jobs(client: &Client) {
    client
        .batch_execute(
            "SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs
             WHERE proc_name = 'policy_refresh_continuous_aggregate'",
        )
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let running: i64 = value(
            client,
            "SELECT count(*) FROM timescaledb_information.job_stats s
             JOIN timescaledb_information.jobs j USING (job_id)
             WHERE j.proc_name = 'policy_refresh_continuous_aggregate'
             AND s.job_status = 'Running'",
        )
        .await;
        if running == 0 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "a refresh job still runs after 30 s");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Rows in the minute rollup's materialization hypertable (what a refresh
/// wrote; the view adds real-time rows above the watermark).
async fn materialized(client: &Client) -> i64 {
    let (schema, table): (String, String) = pairs(
        client,
        "SELECT materialization_hypertable_schema::text, materialization_hypertable_name::text
         FROM timescaledb_information.continuous_aggregates
         WHERE view_schema = 'shopfloor' AND view_name = 'rollup_1m'",
    )
    .await
    .pop()
    .expect("the minute rollup is a continuous aggregate");
    value(client, &format!("SELECT count(*) FROM \"{schema}\".\"{table}\"")).await
}

async fn refresh_aggregates(client: &Client) {
    // One statement each: a refresh cannot run inside a transaction block.
    // The policy's job may be refreshing at the same moment (55P03): wait.
    for view in ["rollup_1m", "rollup_1h"] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let sql = format!("CALL refresh_continuous_aggregate('shopfloor.{view}', NULL, NULL)");
        while let Err(e) = client.batch_execute(&sql).await {
            let busy = e.code().is_some_and(|c| c.code() == "55P03");
            assert!(busy && std::time::Instant::now() < deadline, "refresh {view}: {e:?}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// A server with the TimescaleDB package installed but not preloaded
/// (before: `FATAL: extension "timescaledb" must be preloaded`, the
/// connection dropped, the migration retried forever): native storage, and
/// the ingest says how to preload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timescaledb_installed_but_not_preloaded_falls_back_to_native() {
    assert!(
        shopfloor_testkit::timescaledb_installed(),
        "TimescaleDB is not installed for this PostgreSQL: this test needs it installed \
         (and not preloaded). Install it: SHOPFLOOR_TIMESCALEDB_SRC=/path/to/timescaledb-2.28.3.tar.gz scripts/test"
    );
    let pg = Postgres::start().expect("start postgresql");
    let mut client = connect(&pg).await;
    assert_eq!(
        shopfloor_ingest::timescaledb_status(&client).await.unwrap(),
        shopfloor_ingest::TimescaleDb::NotPreloaded
    );
    migrate(&mut client).await.expect("migrated without TimescaleDB");
    assert_eq!(shopfloor_ingest::storage(&client).await.unwrap(), Storage::Native);
    // The connection survived (no FATAL).
    client.batch_execute("SELECT 1").await.unwrap();
}

/// TimescaleDB: retention, compression and continuous-aggregate policies
/// in place, and `readings_1m`/`readings_1h` equal to the aggregates of the
/// samples, materialized and real-time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timescaledb_policies_and_rollups() {
    let (pg, mut client) = migrated(Storage::TimescaleDb).await;
    // The migration's refresh policies paused before any row is written:
    // a policy runs as soon as it is created, and one that ran between two
    // of the writes below would materialize part of a minute (the rest
    // then counts only from the next refresh). A refresh of the empty
    // table materializes nothing and leaves the watermark alone, so the
    // first comparison reads real-time aggregates of every sample. Paused,
    // too, because a refresh in progress shows a real-time aggregate
    // between two states (TimescaleDB moves the watermark batch by batch).
    pause_refresh_jobs(&client).await;
    let mut w = Writer::new(connect(&pg).await);
    for k in 0..5 {
        w.write(&[
            batch("line/a", DAY1 + k * 50_000, 50),
            batch("line/b", DAY1 + 7_000 + k * 50_000, 30),
        ])
        .await
        .unwrap();
    }
    // The rollups first: real-time (nothing materialized), then
    // materialized.
    assert_eq!(materialized(&client).await, 0, "nothing materialized yet");
    assert_rollups_match(&client).await;
    refresh_aggregates(&client).await;
    assert_rollups_match(&client).await;
    // Late rows into a minute materialized already count from the next
    // refresh (the policy's: every 30 s); until then the minute shows what
    // was materialized.
    w.write(&[batch("line/a", DAY1 + 30_500, 3)]).await.unwrap();
    assert_eq!(
        rollup_mismatches(&client, "minute").await,
        1,
        "the late rows' minute, until the refresh"
    );
    refresh_aggregates(&client).await;
    assert_eq!(rollup_mismatches(&client, "minute").await, 0);
    let buckets: i64 =
        client.query_one("SELECT count(*) FROM shopfloor.readings_1m", &[]).await.unwrap().get(0);
    assert_eq!(buckets, 9);
    // Then the policies.
    let mut retention = Retention::default();
    retention.samples = Some(std::time::Duration::from_secs(30 * 86_400));
    retention.compress_after = Some(std::time::Duration::from_secs(7 * 86_400));
    let mut upkeep = Maintenance::new(retention);
    upkeep.run(&mut client, DAY1).await.unwrap();
    let jobs: Vec<(String, String)> = pairs(
        &client,
        "SELECT proc_name::text, coalesce(hypertable_name::text, '') FROM timescaledb_information.jobs
         WHERE hypertable_schema = 'shopfloor' ORDER BY 1, 2",
    )
    .await;
    let jobs: Vec<(&str, &str)> = jobs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(
        jobs,
        [
            ("policy_compression", "samples"),
            ("policy_refresh_continuous_aggregate", "rollup_1h"),
            ("policy_refresh_continuous_aggregate", "rollup_1m"),
            ("policy_retention", "samples"),
        ]
    );
}

/// Int64 and UInt64 beyond 2^53 do not fit a double exactly: `value` holds
/// the nearest double, `value_text` the exact decimal.
async fn big_integers_are_stored_exactly(storage: Storage) {
    let (_pg, client) = migrated(storage).await;
    let mut w = Writer::new(client);
    let t = Timestamp::from_unix_ms(DAY1);
    let b = Batch::new("big")
        .with(Reading::new("max", t, i64::MAX))
        .with(Reading::new("min", t, i64::MIN))
        .with(Reading::new("u", t, u64::MAX))
        .with(Reading::new("odd", t, (1_i64 << 53) + 1))
        .with(Reading::new("small", t, (1_i64 << 53) - 1));
    assert_eq!(w.write(&[b]).await.unwrap().rows, 5);
    let rows: Vec<(String, Option<f64>, Option<String>)> = triples(
        w.client(),
        "SELECT metric, value, value_text FROM shopfloor.readings ORDER BY metric",
    )
    .await;
    assert_eq!(
        rows,
        [
            ("max".to_owned(), Some(i64::MAX as f64), Some(i64::MAX.to_string())),
            ("min".to_owned(), Some(i64::MIN as f64), None),
            (
                "odd".to_owned(),
                Some(((1_i64 << 53) + 1) as f64),
                Some("9007199254740993".to_owned())
            ),
            ("small".to_owned(), Some(((1_i64 << 53) - 1) as f64), None),
            ("u".to_owned(), Some(u64::MAX as f64), Some(u64::MAX.to_string())),
        ]
    );
    // Exact in SQL: the text as numeric.
    let exact: String = value(
        w.client(),
        "SELECT coalesce(value_text::numeric, value::numeric)::text FROM shopfloor.readings WHERE metric = 'u'",
    )
    .await;
    assert_eq!(exact, "18446744073709551615");
}

/// Dead letters do not pile up: past their retention or their cap, the
/// oldest go.
async fn dead_letters_are_kept_boundedly(storage: Storage) {
    let (_pg, mut client) = migrated(storage).await;
    // 30 from 40 days ago, then 50 of today.
    client
        .batch_execute(
            "INSERT INTO shopfloor.dead_letters (received_at, topic, payload, error)
             SELECT now() - interval '40 days', 'old', 'x'::bytea, 'x' FROM generate_series(1, 30);
             INSERT INTO shopfloor.dead_letters (topic, payload, error)
             SELECT 'new', 'x'::bytea, 'x' FROM generate_series(1, 50);",
        )
        .await
        .unwrap();
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
            as u64;
    let mut retention = Retention::default();
    retention.dead_letters_max = 40;
    let mut upkeep = Maintenance::new(retention);
    let pass = upkeep.run(&mut client, now).await.unwrap();
    assert_eq!(pass.dead_letters_deleted, 40, "30 past 30 days, and 10 more past the cap of 40");
    let left: Vec<(String, i64)> =
        pairs(&client, "SELECT topic, count(*) FROM shopfloor.dead_letters GROUP BY 1").await;
    assert_eq!(left, [("new".to_owned(), 40)]);
    assert_eq!(upkeep.run(&mut client, now).await.unwrap().dead_letters_deleted, 0);
}

/// Hostile names cannot grow a writer's id cache without bound: past its
/// limit it starts again, and the rows are still right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_id_cache_is_bounded() {
    let (_pg, client) = migrated(Storage::Native).await;
    let mut w = Writer::new(client);
    w.set_max_cached_ids(100);
    let mut most = 0;
    for k in 0..10_u64 {
        let mut b = Batch::new("hostile");
        for i in 0..60 {
            b.readings.push(Reading::new(
                format!("m{k}-{i}"),
                Timestamp::from_unix_ms(DAY1 + k),
                1.0,
            ));
        }
        // Half of them known already: the first metric of each batch again.
        b.readings.push(Reading::new("m0-0", Timestamp::from_unix_ms(DAY1 + 100 + k), 2.0));
        assert_eq!(w.write(&[b]).await.unwrap().rows, 61);
        most = most.max(w.cached_ids());
    }
    assert!(most <= 100 + 61, "the cache held {most} ids, its bound 100 plus one write");
    assert_eq!(count(w.client()).await, 610);
    let ids: i64 = value(
        w.client(),
        "SELECT count(DISTINCT metric) FROM shopfloor.readings WHERE metric = 'm0-0'",
    )
    .await;
    assert_eq!(ids, 1, "one catalogue entry, whatever the cache forgot");
}

/// Hostile names cannot grow the catalogue on disk without bound: past
/// `max_catalogue` a new metric's readings are refused with the reason (a
/// dead letter), a birth's description of a new metric is left out, and
/// metrics already there are written and described as ever. A second
/// writer on the same database counts what the first added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalogue_is_bounded() {
    let (pg, client) = migrated(Storage::Native).await;
    let mut w = Writer::new(client);
    w.set_max_catalogue(5);
    let batch = |names: &[&str], t: u64| {
        let mut b = Batch::new("hostile");
        for n in names {
            b.readings.push(Reading::new(*n, Timestamp::from_unix_ms(DAY1 + t), 1.0));
        }
        b
    };
    let out = w.write(&[batch(&["a", "b", "c"], 0)]).await.unwrap();
    assert_eq!((out.rows, out.rejected.len()), (3, 0));
    // A birth describes d (new, room for it) and a (known).
    let info = |name: &str| {
        let mut info = MetricInfo::new("hostile", name);
        info.unit = Some("bar".into());
        info
    };
    w.describe(&[info("d"), info("a")]).await.unwrap();
    // One place left: e gets it, f and g do not; a and d are written.
    let out = w.write(&[batch(&["a", "d", "e", "f", "g"], 1)]).await.unwrap();
    assert_eq!(out.rows, 3);
    let refused: Vec<&str> = out.rejected.iter().map(|r| r.metric.as_str()).collect();
    assert_eq!(refused, ["f", "g"]);
    assert!(out.rejected.iter().all(|r| r.error == RowError::CatalogueFull { limit: 5 }));
    assert!(out.rejected[0].error.to_string().contains("max_catalogue_metrics"));
    // Full: a description of a new metric is left out, a known one updated.
    let mut psi = info("b");
    psi.unit = Some("psi".into());
    w.describe(&[info("h"), psi]).await.unwrap();
    let rows = w
        .client()
        .query("SELECT name, coalesce(unit, '') FROM shopfloor.metrics ORDER BY name", &[])
        .await
        .unwrap();
    let got: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let want = [("a", "bar"), ("b", "psi"), ("c", ""), ("d", "bar"), ("e", "")];
    assert_eq!(got, want.map(|(n, u)| (n.to_owned(), u.to_owned())));
    // Another writer starts from the catalogue as it is.
    let mut other = Writer::new(connect(&pg).await);
    other.set_max_catalogue(5);
    let out = other.write(&[batch(&["x", "a"], 2)]).await.unwrap();
    assert_eq!((out.rows, out.rejected.len()), (1, 1), "x refused, a written");
}

on_both_storages!(
    time_weighted_averages_and_locf_match_hand_computed_values,
    dead_letters_are_kept_boundedly,
    big_integers_are_stored_exactly,
    data_postgres_refuses_is_isolated_and_the_rest_committed,
    deaths_leave_the_latest_row_stale,
    migrations_apply_once,
    the_query_contract_has_its_documented_columns,
    batches_land_in_the_readings_view_and_redeliveries_add_nothing,
    what_cannot_be_stored_is_rejected_and_its_neighbours_written,
);
