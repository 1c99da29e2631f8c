//! The ingest write path against the ceiling of binary COPY, on a real
//! PostgreSQL from testkit (issue 6, benchmarks `copy_ceiling` and
//! `writer`):
//!
//! - `copy_ceiling`: N rows pre-encoded, sent by one binary COPY into the
//!   same table and indexes the ingest uses; and `psql \copy` of the same
//!   rows from a CSV file;
//! - `writer`: the ingest's write pipeline (two connections in turn, as the
//!   ingest runs it) fed the same readings as decoded batches of 10 000 (its
//!   default flush), catalogue lookups, encoding and a commit per batch
//!   included → its ratio to the ceiling (goal ≥ 0.85); and one `Writer` on
//!   one connection;
//! - for contrast: tokio-postgres' `BinaryCopyInWriter`, and multi-row
//!   INSERTs of 1000 rows, on the same rows.
//!
//! Run: `cargo bench -p shopfloor-benches --bench ingest_copy` (N = 1 M,
//! about a minute). Under `cargo test` it runs N = 20 000 once.

use std::time::{Duration, Instant};

use shopfloor_benches::is_measuring;
use shopfloor_ingest::copy::{CopyBuffer, Stored, pg_micros};
use shopfloor_ingest::{Database, Pipeline, Ticket, Writer, migrate};
use shopfloor_schemas::{Batch, Reading, Timestamp};
use shopfloor_testkit::Postgres;
use tokio_postgres::Client;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

const METRICS: usize = 100;
const T0: u64 = 1_795_737_600_000;
const COLUMNS: &str = "(time, metric_id, value, value_text, quality)";

/// Reading `i`: metric `i % METRICS`, one second apart per metric.
fn reading(i: usize) -> Reading {
    let t = T0 + (i / METRICS) as u64 * 1000;
    Reading::new(
        format!("m{:03}", i % METRICS),
        Timestamp::from_unix_ms(t),
        (i % 1000) as f64 * 0.5,
    )
}

/// One binary COPY of `data` in one transaction (explicit BEGIN and
/// COMMIT, so two may run at once on shared clients).
async fn copy_all(client: &Client, data: bytes::Bytes) {
    use futures_util::SinkExt as _;
    client.batch_execute("BEGIN").await.unwrap();
    let sink = client
        .copy_in(&format!("COPY shopfloor.samples {COLUMNS} FROM STDIN (FORMAT binary)"))
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(data).await.unwrap();
    sink.finish().await.unwrap();
    client.batch_execute("COMMIT").await.unwrap();
}

async fn truncate(client: &Client) {
    client.batch_execute("TRUNCATE shopfloor.samples").await.unwrap();
}

async fn count(client: &Client) -> i64 {
    client.query_one("SELECT count(*) FROM shopfloor.samples", &[]).await.unwrap().get(0)
}

fn rate(n: usize, t: Duration) -> f64 {
    n as f64 / t.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = if is_measuring() { 1_000_000 } else { 20_000 };
    // fsync on, as a deployment runs (testkit turns it off for tests).
    let pg = Postgres::builder()
        .setting("fsync", "on")
        .setting("full_page_writes", "on")
        .start()
        .expect("start postgresql (apt-get install -y postgresql)");
    let mut client = pg.client().await.expect("connect");
    migrate(&mut client).await.unwrap();

    // The writer first: it creates the catalogue and the day's partition.
    let batches: Vec<Batch> = (0..n)
        .collect::<Vec<_>>()
        .chunks(10_000)
        .map(|c| {
            let mut b = Batch::new("bench/source");
            b.readings = c.iter().map(|&i| reading(i)).collect();
            b
        })
        .collect();
    let mut writer = Writer::new(pg.client().await.expect("connect"));
    writer.write(&batches[..1]).await.unwrap();
    // The writers and the ceiling each measured three times, the best kept:
    // one run on this machine wanders by half (checkpoints, neighbours).
    let mut single = Duration::MAX;
    for _ in 0..3 {
        truncate(&client).await;
        let t = Instant::now();
        for b in &batches {
            writer.write(std::slice::from_ref(b)).await.unwrap();
        }
        single = single.min(t.elapsed());
        assert_eq!(count(&client).await, n as i64);
    }
    drop(writer);
    // What the ingest runs: the pipeline on two connections, at most one
    // batch in flight per connection, tickets awaited in order.
    let db = Database { timescaledb: false, ..Database::new(pg.connection_string()) };
    let mut pipeline = Pipeline::connect(&db, 2).await;
    let mut writer_time = Duration::MAX;
    for _ in 0..3 {
        truncate(&client).await;
        // The ingest hands its batches over, it does not copy them.
        let round: Vec<Batch> = batches.clone();
        let t = Instant::now();
        let mut in_flight = std::collections::VecDeque::new();
        for b in round {
            if in_flight.len() == pipeline.connections() {
                let ticket: Ticket = in_flight.pop_front().unwrap();
                ticket.await.unwrap();
            }
            in_flight.push_back(pipeline.submit(vec![b], Vec::new()).await);
        }
        for ticket in in_flight {
            ticket.await.unwrap();
        }
        writer_time = writer_time.min(t.elapsed());
        assert_eq!(count(&client).await, n as i64);
    }
    pipeline.abort();

    // The catalogue ids, for the pre-encoded rows.
    let mut ids = vec![0_i32; METRICS];
    for row in client.query("SELECT id, name FROM shopfloor.metrics", &[]).await.unwrap() {
        let name: String = row.get(1);
        ids[name[1..].parse::<usize>().unwrap()] = row.get(0);
    }
    let row = |i: usize| {
        let r = reading(i);
        (pg_micros(r.timestamp.unix_ms()).unwrap(), ids[i % METRICS], (i % 1000) as f64 * 0.5)
    };

    // copy_ceiling: pre-encoded, one COPY, one transaction.
    let mut buf = CopyBuffer::with_capacity(n * 40);
    for i in 0..n {
        let (t, id, v) = row(i);
        buf.push(t, id, &Stored::Number(v), 0);
    }
    let data = buf.finish();
    let mut ceiling = Duration::MAX;
    for _ in 0..3 {
        truncate(&client).await;
        let t = Instant::now();
        copy_all(&client, data.clone()).await;
        ceiling = ceiling.min(t.elapsed());
        assert_eq!(count(&client).await, n as i64);
    }

    // The same ceiling on two connections at once (each half the rows), as
    // the pipeline uses two.
    let half = |range: std::ops::Range<usize>| {
        let mut buf = CopyBuffer::with_capacity(range.len() * 40);
        for i in range {
            let (t, id, v) = row(i);
            buf.push(t, id, &Stored::Number(v), 0);
        }
        buf.finish()
    };
    let halves = [half(0..n / 2), half(n / 2..n)];
    let second = pg.client().await.expect("connect");
    let mut ceiling2 = Duration::MAX;
    for _ in 0..3 {
        truncate(&client).await;
        let t = Instant::now();
        tokio::join!(copy_all(&client, halves[0].clone()), copy_all(&second, halves[1].clone()));
        ceiling2 = ceiling2.min(t.elapsed());
        assert_eq!(count(&client).await, n as i64);
    }

    // psql \copy of the same rows from CSV.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("rows.csv");
    let mut text = String::with_capacity(n * 48);
    for i in 0..n {
        let r = reading(i);
        let secs = r.timestamp.unix_ms() / 1000;
        text.push_str(&format!("{secs},{},{},,0\n", ids[i % METRICS], (i % 1000) as f64 * 0.5));
    }
    std::fs::write(&csv, text).unwrap();
    truncate(&client).await;
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS public.rows_csv (epoch bigint, metric_id int, value float8, value_text text, quality smallint)")
        .await
        .unwrap();
    let t = Instant::now();
    let status = std::process::Command::new(pg.bin_dir().join("psql"))
        .args(["-q", "-1", "-v", "ON_ERROR_STOP=1", "-h", pg.host(), "-p", &pg.port().to_string()])
        .args(["-U", pg.user(), "-d", pg.dbname(), "-c", "TRUNCATE public.rows_csv", "-c"])
        .arg(format!("\\copy public.rows_csv FROM '{}' (FORMAT csv)", csv.display()))
        .arg("-c")
        .arg(format!(
            "INSERT INTO shopfloor.samples {COLUMNS} SELECT to_timestamp(epoch), metric_id, value, value_text, quality FROM public.rows_csv"
        ))
        .status()
        .expect("psql");
    let psql = t.elapsed();
    let psql_ok = status.success() && count(&client).await == n as i64;

    // Contrast: BinaryCopyInWriter.
    truncate(&client).await;
    let t = Instant::now();
    {
        let tx = client.transaction().await.unwrap();
        let sink = tx
            .copy_in(&format!("COPY shopfloor.samples {COLUMNS} FROM STDIN (FORMAT binary)"))
            .await
            .unwrap();
        let w = BinaryCopyInWriter::new(
            sink,
            &[Type::TIMESTAMPTZ, Type::INT4, Type::FLOAT8, Type::TEXT, Type::INT2],
        );
        futures_util::pin_mut!(w);
        for i in 0..n {
            let r = reading(i);
            let time = std::time::UNIX_EPOCH + Duration::from_millis(r.timestamp.unix_ms());
            let (_, id, v) = row(i);
            w.as_mut().write(&[&time, &id, &v, &None::<String>, &0_i16]).await.unwrap();
        }
        w.finish().await.unwrap();
        tx.commit().await.unwrap();
    }
    let binary_writer = t.elapsed();

    // Contrast: INSERT of 1000 rows a statement.
    truncate(&client).await;
    let t = Instant::now();
    {
        let tx = client.transaction().await.unwrap();
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            let mut sql = format!("INSERT INTO shopfloor.samples {COLUMNS} VALUES ");
            for (k, &i) in chunk.iter().enumerate() {
                let r = reading(i);
                let (_, id, v) = row(i);
                if k > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!(
                    "(to_timestamp({}), {id}, {v}, NULL, 0)",
                    r.timestamp.unix_ms() as f64 / 1000.0
                ));
            }
            tx.batch_execute(&sql).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    let insert = t.elapsed();

    let ratio = rate(n, writer_time) / rate(n, ceiling);
    println!();
    println!(
        "ingest write path: {n} rows into shopfloor.samples (PostgreSQL 15, this machine; ceiling and writer best of 3)"
    );
    println!("  {:<50} {:>12} {:>10}", "", "rows/s", "vs ceiling");
    let show = |name: &str, t: Duration| {
        println!("  {name:<50} {:>12.0} {:>9.2}x", rate(n, t), rate(n, t) / rate(n, ceiling));
    };
    show("copy_ceiling: pre-encoded binary COPY", ceiling);
    if psql_ok {
        show("copy_ceiling: psql \\copy (CSV, then INSERT)", psql);
    } else {
        println!("  psql \\copy: failed ({status})");
    }
    show("copy_ceiling: the same, halves on 2 connections", ceiling2);
    show("writer: ingest pipeline, 2 connections", writer_time);
    show("  (one Writer, one connection)", single);
    show("contrast: BinaryCopyInWriter", binary_writer);
    show("contrast: INSERT, 1000 rows a statement", insert);
    println!(
        "writer / ceiling = {ratio:.2} (goal >= 0.85): {}",
        if ratio >= 0.85 { "met" } else { "NOT met" }
    );
    println!(
        "writer / two-connection ceiling = {:.2} (the stricter comparison)",
        rate(n, writer_time) / rate(n, ceiling2)
    );
}
