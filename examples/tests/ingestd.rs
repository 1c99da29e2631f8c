//! `shopfloor-ingestd` as a process: killed with SIGKILL mid-stream and
//! started again, it loses and duplicates nothing; SIGHUP is logged and
//! stops nothing; SIGTERM stops it cleanly.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use shopfloor_schemas::{Batch, Codec, Reading, Timestamp};
use shopfloor_testkit::{Mosquitto, Postgres};
use tokio_postgres::NoTls;

mod support;

const BIN: &str = env!("CARGO_BIN_EXE_shopfloor-ingestd");
const N: u64 = 3000;

/// The daemon, killed when the test ends however it ends.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A broker that keeps sessions and what they hold across a restart.
fn broker() -> Mosquitto {
    Mosquitto::durable().start().expect("start mosquitto")
}

fn start(config: &Path) -> Daemon {
    start_logging(config, Stdio::inherit())
}

fn start_logging(config: &Path, stderr: impl Into<Stdio>) -> Daemon {
    Daemon(support::spawn_with_config(BIN, config, stderr))
}

async fn rows(pg: &Postgres) -> (i64, i64) {
    let Ok((client, conn)) = tokio_postgres::connect(&pg.connection_string(), NoTls).await else {
        return (0, 0);
    };
    tokio::spawn(conn);
    let q = "SELECT count(*), count(DISTINCT (source, metric, time)) FROM shopfloor.readings";
    client.query_one(q, &[]).await.map(|r| (r.get(0), r.get(1))).unwrap_or((0, 0))
}

/// The readings' row count, asked from a thread of its own (for the
/// helpers that ask synchronously).
fn rows_now(pg: &Postgres) -> i64 {
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(rows(pg)).0
        })
        .join()
        .unwrap()
    })
}

async fn wait_rows(pg: &Postgres, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (all, distinct) = rows(pg).await;
        assert_eq!(all, distinct, "duplicates in the table");
        if all == n {
            return;
        }
        assert!(Instant::now() < deadline, "{all} rows, expected {n}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_then_restart_loses_and_duplicates_nothing() {
    let broker = broker();
    let pg = Postgres::start().expect("start postgresql");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ingest.toml");
    let log = dir.path().join("ingestd.log");
    let metrics_port = shopfloor_testkit::free_port().unwrap();
    std::fs::write(
        &config,
        format!(
            "[mqtt]\nport = {}\nclient_id = \"ingest-k\"\n\n[postgres]\nconnection = \"{}\"\n\n[ingest]\nplain = true\nbatch_readings = 300\nbatch_ms = 50\n\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
            broker.port(),
            pg.connection_string()
        ),
    )
    .unwrap();
    let out =
        Command::new(BIN).arg("--config").arg(&config).arg("--check-config").output().unwrap();
    assert!(out.status.success(), "{out:?}");

    let mut daemon = start(&config);
    let (client, mut events) =
        AsyncClient::new(MqttOptions::new("publisher", broker.host(), broker.port()), 100);
    let publish = |i: u64| {
        let b = Batch::new("x").with(Reading::new(
            format!("s{}", i % 7),
            Timestamp::from_unix_ms(1_795_737_600_000 + i),
            i as f64,
        ));
        let props = PublishProperties {
            content_type: Some("application/json".into()),
            ..Default::default()
        };
        (
            format!("shopfloor/p/a/m{}/s{}", i % 3, i % 7),
            Codec::Json.encode_batch(&b).unwrap(),
            props,
        )
    };
    // A first message, stored: the daemon's session and subscription exist.
    let poller = tokio::spawn(async move {
        let mut acked = 0_u64;
        while acked < N - 1 {
            if let Ok(Event::Incoming(Packet::PubAck(_))) = events.poll().await {
                acked += 1;
            }
        }
    });
    // Until the daemon has subscribed, the broker holds nothing for it:
    // send message 0 (always the same metric and time, so it is stored
    // once) until it is in the table.
    let (warm, mut warm_events) =
        AsyncClient::new(MqttOptions::new("warm-up", broker.host(), broker.port()), 10);
    let warm_poll = tokio::spawn(async move { while warm_events.poll().await.is_ok() {} });
    let deadline = Instant::now() + Duration::from_secs(30);
    while rows(&pg).await.0 == 0 {
        assert!(Instant::now() < deadline, "the daemon stored nothing within 30 s");
        let (t, p, props) = publish(0);
        warm.publish_with_properties(t, QoS::AtLeastOnce, false, p, props).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    warm_poll.abort();
    for i in 1..N {
        if i == N / 2 {
            // SIGKILL: no chance to commit or ack what it holds.
            daemon.0.kill().unwrap();
            daemon.0.wait().unwrap();
            daemon = start_logging(&config, std::fs::File::create(&log).unwrap());
        }
        let (t, p, props) = publish(i);
        client.publish_with_properties(t, QoS::AtLeastOnce, false, p, props).await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(60), poller)
        .await
        .expect("every publish acknowledged")
        .unwrap();
    wait_rows(&pg, N as i64).await;
    // The restarted daemon's /metrics counts what it stored.
    let rows_total = |page: &str| {
        page.lines()
            .find_map(|l| l.strip_prefix("shopfloor_ingest_rows_total "))
            .and_then(|v| v.parse::<f64>().ok())
    };
    let page = shopfloor_testkit::scrape_until(
        ([127, 0, 0, 1], metrics_port).into(),
        Duration::from_secs(5),
        |p| rows_total(p).is_some_and(|n| n > 0.0),
    );
    assert!(rows_total(&page).is_some_and(|n| n <= N as f64), "{page}");
    assert!(page.contains("# TYPE shopfloor_ingest_input_messages_total counter\n"), "{page}");
    assert!(page.contains("shopfloor_ingest_input_messages_total{input=\"plain\"} "), "{page}");
    assert!(!page.contains("shopfloor_ingest_input_messages_total{input=\"plain\"} 0\n"), "{page}");
    assert!(page.contains("shopfloor_ingest_input_dead_total{input=\"plain\"} 0\n"), "{page}");

    // SIGHUP: logged, and nothing stops.
    // SAFETY: our own child, not yet reaped.
    unsafe {
        libc::kill(daemon.0.id() as libc::pid_t, libc::SIGHUP);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("SIGHUP: nothing to reload") {
        assert!(daemon.0.try_wait().unwrap().is_none(), "SIGHUP stopped the daemon");
        assert!(Instant::now() < deadline, "SIGHUP not logged within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // SIGTERM: exits 0 within 10 s.
    let status = support::sigterm(&mut daemon.0, Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");
}

/// A file for `broker` with `store` as its store section.
/// A counter from a daemon's `/metrics` page.
fn counter(page: &str, name: &str) -> Option<f64> {
    page.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Node `G/E`'s Sparkplug payloads, as a peer encodes them.
fn sparkplug(
    seq: Option<u64>,
    ts: u64,
    metrics: Vec<(Option<&str>, u64, f64)>,
    bd_seq: bool,
) -> Vec<u8> {
    use prost::Message as _;
    use shopfloor_sparkplug::proto::{Metric, MetricValue, Payload};
    let mut out: Vec<Metric> = metrics
        .into_iter()
        .map(|(name, alias, value)| Metric {
            name: name.map(Into::into),
            alias: Some(alias),
            timestamp: Some(ts),
            datatype: name.map(|_| 10), // Double, in births
            value: Some(MetricValue::Double(value)),
            ..Default::default()
        })
        .collect();
    if bd_seq {
        out.push(Metric {
            name: Some("bdSeq".into()),
            datatype: Some(4),
            value: Some(MetricValue::Long(0)),
            ..Default::default()
        });
    }
    Payload { timestamp: Some(ts), seq, metrics: out, ..Default::default() }.encode_to_vec()
}

/// Two daemons share Sparkplug (`share = "ingest"`): DATA through
/// `$share/ingest/…`, births and deaths to both. One is killed with
/// SIGKILL mid-stream and started again: every reading is stored exactly
/// once and named (no dead letters), and the death's stale rows carry the
/// latest values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_share_sparkplug_and_one_killed_mid_stream_loses_nothing() {
    let broker = broker();
    let pg = Postgres::start().expect("start postgresql");
    let dir = tempfile::tempdir().unwrap();
    let ports = [shopfloor_testkit::free_port().unwrap(), shopfloor_testkit::free_port().unwrap()];
    let configs: Vec<std::path::PathBuf> = ["a", "b"]
        .iter()
        .zip(&ports)
        .map(|(name, port)| {
            let path = dir.path().join(format!("ingest-{name}.toml"));
            std::fs::write(
                &path,
                format!(
                    "[mqtt]\nport = {}\nclient_id = \"ingest-{name}\"\n\n[postgres]\nconnection = \"{}\"\n\n[ingest]\nsparkplug = true\nshare = \"ingest\"\nbatch_readings = 300\nbatch_ms = 50\n\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
                    broker.port(),
                    pg.connection_string()
                ),
            )
            .unwrap();
            path
        })
        .collect();
    let a = start(&configs[0]);
    let mut b = start(&configs[1]);
    let metrics = |i: usize| std::net::SocketAddr::from(([127, 0, 0, 1], ports[i]));
    for i in 0..2 {
        shopfloor_testkit::scrape_until(metrics(i), Duration::from_secs(30), |p| {
            counter(p, "shopfloor_ingest_subscriptions_total").is_some_and(|n| n > 0.0)
        });
    }

    let (edge, mut events) =
        AsyncClient::new(MqttOptions::new("edge", broker.host(), broker.port()), 100);
    // PUBACKs counted until the test ends.
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = std::sync::Arc::clone(&acked);
    let poller = tokio::spawn(async move {
        loop {
            if let Ok(Event::Incoming(Packet::PubAck(_))) = events.poll().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    let all_acked = |n: u64| {
        let acked = std::sync::Arc::clone(&acked);
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while acked.load(std::sync::atomic::Ordering::Relaxed) < n {
                assert!(Instant::now() < deadline, "{n} publishes not acknowledged within 60 s");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    const T0: u64 = 1_795_737_600_000;
    let names = ["m0", "m1", "m2", "m3"];
    let birth = names.iter().enumerate().map(|(k, n)| (Some(*n), k as u64 + 1, -1.0)).collect();
    edge.publish(
        "spBv1.0/G/NBIRTH/E",
        QoS::AtLeastOnce,
        false,
        sparkplug(Some(0), T0, birth, true),
    )
    .await
    .unwrap();
    wait_rows(&pg, 4).await;
    for i in 0..N {
        if i == N / 2 {
            // SIGKILL: B holds DATA it has neither committed nor acked.
            b.0.kill().unwrap();
            b.0.wait().unwrap();
            b = start(&configs[1]);
        }
        let data =
            sparkplug(Some((1 + i) % 256), T0 + 1 + i, vec![(None, i % 4 + 1, i as f64)], false);
        edge.publish("spBv1.0/G/NDATA/E", QoS::AtLeastOnce, false, data).await.unwrap();
    }
    all_acked(N + 1).await;
    wait_rows(&pg, N as i64 + 4).await;
    let client = support::pg_client(&pg.connection_string()).await;
    let count = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(count("SELECT count(*) FROM shopfloor.dead_letters").await, 0, "unnamed DATA");
    // A took part, and did not take everything.
    let page = shopfloor_testkit::scrape_until(metrics(0), Duration::from_secs(5), |_| true);
    let took = counter(&page, "shopfloor_ingest_messages_total").unwrap_or(0.0);
    assert!(took > 1.0 && took < (N + 1) as f64, "A took {took} of {} messages", N + 1);

    // The death, to both: one stale row a metric, with its latest value.
    let death = sparkplug(None, T0 + N + 10, Vec::new(), true);
    edge.publish("spBv1.0/G/NDEATH/E", QoS::AtLeastOnce, false, death).await.unwrap();
    wait_rows(&pg, N as i64 + 8).await;
    let wrong = count(
        "SELECT count(*) FROM shopfloor.readings s WHERE s.quality = 'stale' AND s.value IS DISTINCT FROM
           (SELECT g.value FROM shopfloor.readings g WHERE g.metric = s.metric AND g.quality = 'good'
            ORDER BY g.time DESC LIMIT 1)",
    )
    .await;
    assert_eq!(wrong, 0, "a stale row without its metric's latest value");
    poller.abort();
    drop((a, b));
}

fn store_file(dir: &Path, name: &str, broker: &Mosquitto, store: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let text = format!(
        "[mqtt]\nport = {}\nclient_id = \"ingest-{name}\"\n\n{store}\n[ingest]\nplain = true\nbatch_ms = 50\n",
        broker.port()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `--check-config` on `path`: whether it passed, and what it printed.
fn check(path: &Path) -> (bool, String) {
    let out = Command::new(BIN).arg("--config").arg(path).arg("--check-config").output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Runs the daemon on `config` (which `--check-config` says goes `into`)
/// and publishes the same ten readings (idempotent) until `count` says all
/// ten are stored: until the daemon has subscribed, nothing reaches it.
async fn daemon_stores_ten(
    broker: &Mosquitto,
    config: &Path,
    into: &str,
    count: impl Fn() -> i64,
) -> Daemon {
    daemon_stores_ten_logging(broker, config, into, count, Stdio::inherit()).await
}

/// [`daemon_stores_ten`] with the daemon's stderr to `log`.
async fn daemon_stores_ten_logging(
    broker: &Mosquitto,
    config: &Path,
    into: &str,
    count: impl Fn() -> i64,
    log: impl Into<Stdio>,
) -> Daemon {
    let (ok, text) = check(config);
    assert!(ok && text.contains(into), "{text}");
    let daemon = start_logging(config, log);
    let (client, mut events) =
        AsyncClient::new(MqttOptions::new("publisher-ten", broker.host(), broker.port()), 100);
    let poll = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let deadline = Instant::now() + Duration::from_secs(30);
    while count() < 10 {
        assert!(Instant::now() < deadline, "{} of 10 readings within 30 s", count());
        for i in 0..10_u64 {
            let b = Batch::new("x").with(Reading::new(
                format!("s{i}"),
                Timestamp::from_unix_ms(1_795_737_600_000 + i),
                i as f64,
            ));
            let topic = format!("shopfloor/p/a/m1/s{i}");
            let payload = Codec::Json.encode_batch(&b).unwrap();
            client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(count(), 10);
    poll.abort();
    daemon
}

/// The daemon pointed at InfluxDB by its file alone: `[influxdb]` instead
/// of `[postgres]`. `--check-config` names the store and refuses what
/// cannot work; the readings of a real run land as points.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_writes_to_influxdb_from_its_config() {
    let broker = Mosquitto::start().expect("start mosquitto");
    let influx = shopfloor_testkit::InfluxDb::start().expect("start influxdb");
    let dir = tempfile::tempdir().unwrap();
    let url = influx.url();
    let refused = [
        (
            format!(
                "[postgres]\nconnection = \"host=x\"\n[influxdb]\nurl = \"{url}\"\ndatabase = \"d\"\n"
            ),
            "more than one of [postgres], [influxdb]",
        ),
        (format!("[influxdb]\nurl = \"{url}\"\norg = \"o\"\nbucket = \"b\"\n"), "token_file"),
        (
            "[influxdb]\nurl = \"https://127.0.0.1:8086\"\ndatabase = \"d\"\n".into(),
            "https is not supported",
        ),
        (format!("[influxdb]\nurl = \"{url}\"\n"), "needs either database"),
        (
            format!(
                "[influxdb]\nurl = \"{url}\"\norg = \"o\"\nbucket = \"b\"\ntoken_file = \"gone.token\"\n"
            ),
            ": influxdb.token_file ",
        ),
        (
            format!(
                "[influxdb]\nurl = \"{url}\"\ndatabase = \"d\"\nusername = \"u\"\npassword_file = \"gone.pass\"\n"
            ),
            ": influxdb.password_file ",
        ),
    ];
    for (k, (section, says)) in refused.iter().enumerate() {
        let (ok, text) = check(&store_file(dir.path(), &format!("bad{k}.toml"), &broker, section));
        assert!(!ok && text.contains(says), "{section}: {text}");
    }
    let config = store_file(
        dir.path(),
        "ingest.toml",
        &broker,
        &format!("[influxdb]\nurl = \"{url}\"\ndatabase = \"plant\"\n"),
    );
    daemon_stores_ten(&broker, &config, &format!("into InfluxDB at {url}"), || {
        let body = influx.query("plant", "SELECT count(value) FROM readings").unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["results"][0]["series"][0]["values"][0][1].as_i64().unwrap_or(0)
    })
    .await;
}

/// The same with `[clickhouse]`: the schema is made at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_writes_to_clickhouse_from_its_config() {
    let broker = Mosquitto::start().expect("start mosquitto");
    let ch = shopfloor_testkit::ClickHouse::start().expect("start clickhouse");
    let dir = tempfile::tempdir().unwrap();
    let url = ch.url();
    let (ok, text) = check(&store_file(
        dir.path(),
        "bad.toml",
        &broker,
        &format!("[clickhouse]\nurl = \"{url}\"\ndatabase = \"a-b\"\n"),
    ));
    assert!(!ok && text.contains("letters, digits and _"), "{text}");
    let config = store_file(
        dir.path(),
        "ingest.toml",
        &broker,
        &format!("[clickhouse]\nurl = \"{url}\"\ndatabase = \"plant\"\n"),
    );
    daemon_stores_ten(&broker, &config, &format!("into ClickHouse at {url}"), || {
        ch.query("SELECT count() FROM plant.readings FINAL")
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    })
    .await;
}

/// `[postgres]` over TLS from the file alone: `sslmode=require` in the
/// string, `ca_file` (relative to the file) to check the server, the
/// password from `password_file`. Every connection of the daemon is
/// encrypted; a CA file that is not there is a configuration error that
/// names the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_writes_to_postgres_over_checked_tls() {
    let broker = broker();
    let pg = Postgres::builder().tls().start().expect("start postgresql with TLS");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pg-ca.crt"), pg.ca_cert_pem().unwrap()).unwrap();
    std::fs::write(dir.path().join("pg.pass"), "it's \\ quoted\n").unwrap();
    let write = |name: &str, ca: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "[mqtt]\nport = {}\nclient_id = \"ingest-tls\"\n\n[postgres]\nconnection = \"host=localhost port={} user=postgres dbname=postgres sslmode=require application_name=ingestd-tls\"\nca_file = \"{ca}\"\npassword_file = \"pg.pass\"\n\n[ingest]\nplain = true\n",
                broker.port(),
                pg.port()
            ),
        )
        .unwrap();
        path
    };
    let (ok, text) = check(&write("missing.toml", "nowhere.crt"));
    assert!(!ok && text.contains("[postgres] ca_file") && text.contains("nowhere.crt"), "{text}");

    let config = write("ingest.toml", "pg-ca.crt");
    let count = || rows_now(&pg);
    let _daemon = daemon_stores_ten(&broker, &config, "into PostgreSQL", count).await;
    let (all, tls) = pg.tls_sessions("ingestd-tls").await.unwrap();
    assert!(all > 0 && tls == all, "{tls} of the daemon's {all} connections over TLS");
}

/// A stop that cannot complete (PostgreSQL gone with a message held):
/// after its 10 s the daemon exits 1 and says what it waited for, so a
/// service manager sees a failed stop instead of a clean one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_that_cannot_commit_exits_1_and_says_what_it_waited_for() {
    let broker = broker();
    let mut pg = Postgres::start().expect("start postgresql");
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = shopfloor_testkit::free_port().unwrap();
    let store = format!(
        "[postgres]\nconnection = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
        pg.connection_string()
    );
    let config = store_file(dir.path(), "ingest.toml", &broker, &store);
    let log = dir.path().join("ingestd.log");
    let count = || rows_now(&pg);
    let stderr = std::fs::File::create(&log).unwrap();
    let mut daemon =
        daemon_stores_ten_logging(&broker, &config, "into PostgreSQL", count, stderr).await;
    pg.stop();
    let b =
        Batch::new("x").with(Reading::new("late", Timestamp::from_unix_ms(1_795_737_700_000), 1.0));
    let (client, mut events) =
        AsyncClient::new(MqttOptions::new("publisher-late", broker.host(), broker.port()), 10);
    let poll = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    client
        .publish(
            "shopfloor/p/a/m1/late",
            QoS::AtLeastOnce,
            false,
            Codec::Json.encode_batch(&b).unwrap(),
        )
        .await
        .unwrap();
    shopfloor_testkit::scrape_until(
        ([127, 0, 0, 1], metrics_port).into(),
        Duration::from_secs(30),
        |p| {
            p.lines()
                .any(|l| l.starts_with("shopfloor_ingest_pending_messages ") && !l.ends_with(" 0"))
        },
    );
    poll.abort();

    let t0 = Instant::now();
    let status = support::sigterm(&mut daemon.0, Duration::from_secs(30)).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(t0.elapsed() >= Duration::from_secs(9), "gave up after {:?}", t0.elapsed());
    assert!(
        text.contains("stopping: the last commit and its acks did not finish within 10 s"),
        "{text}"
    );
}

/// `migrate`: the schema made once and then found up to date, exit 0;
/// against a server that is not there, exit 1 with the driver's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_makes_the_schema_once_and_says_so() {
    let broker = broker();
    let mut pg = Postgres::start().expect("start postgresql");
    let dir = tempfile::tempdir().unwrap();
    let store = format!("[postgres]\nconnection = \"{}\"\n", pg.connection_string());
    let config = store_file(dir.path(), "ingest.toml", &broker, &store);
    let migrate =
        || Command::new(BIN).arg("--config").arg(&config).arg("migrate").output().unwrap();
    let first = migrate();
    let said = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success() && said.contains("migrations [1"), "{first:?}");
    let again = migrate();
    let said = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success() && said.contains("up to date"), "{again:?}");
    let client = support::pg_client(&pg.connection_string()).await;
    let there: bool = client
        .query_one("SELECT to_regclass('shopfloor.readings') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(there, "no shopfloor.readings after migrate");
    drop(client);
    pg.stop();
    let down = migrate();
    let err = String::from_utf8_lossy(&down.stderr);
    assert_eq!(down.status.code(), Some(1), "{err}");
    assert!(err.contains("PostgreSQL") && err.contains("connect"), "{err}");
}

/// The plant demo pointed at InfluxDB, then ClickHouse (`--store`): the
/// whole pipeline, through the shipped TLS broker, lands readings there,
/// and the demo's freshness reading finds them.
#[test]
fn the_plant_demo_writes_to_influxdb_and_clickhouse() {
    use shopfloor_examples::plant::{Options, Plant, StoreKind, StoreServer};
    let bins = Path::new(BIN).parent().unwrap().to_owned();
    for store in [StoreKind::InfluxDb, StoreKind::ClickHouse] {
        let dir = tempfile::tempdir().unwrap();
        let plant = Plant::start(&Options { store, ..Options::new(dir.path(), &bins) }, |_| {})
            .unwrap_or_else(|e| panic!("{}: {e:#}", store.name()));
        assert_eq!(plant.store.kind(), store);
        let count = || -> u64 {
            match &plant.store {
                StoreServer::InfluxDb(db) => db
                    .query("shopfloor", "SELECT count(value) FROM readings")
                    .ok()
                    .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
                    .and_then(|v| v.pointer("/results/0/series/0/values/0/1")?.as_u64())
                    .unwrap_or(0),
                StoreServer::ClickHouse(ch) => ch
                    .query("SELECT count() FROM shopfloor.readings")
                    .ok()
                    .and_then(|b| b.trim().parse().ok())
                    .unwrap_or(0),
                StoreServer::Postgres => unreachable!("not asked for"),
            }
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while count() < 100 {
            assert!(
                Instant::now() < deadline,
                "{}: {} readings within 60 s",
                store.name(),
                count()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let age = plant.store.newest_age_s();
        assert!(age.is_some_and(|a| a < 30.0), "{}: newest reading {age:?} s old", store.name());
        drop(plant);
    }
}
