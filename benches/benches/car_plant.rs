//! The car plant (issue 8): 100 000 sensors at 1 Hz on this 2-core box.
//!
//! A load generator in this process plays 50 Sparkplug edge nodes (real
//! `EdgeDriver`s: births, aliases, one MQTT connection each) of 20 devices
//! with 100 metrics each, every device publishing one DDATA a second on an
//! open-loop schedule → Mosquitto → `shopfloor-ingestd` → PostgreSQL, and
//! `shopfloor-alertd` (one limit rule over every signal) → MQTT events,
//! both release builds in processes of their own. Ten breaches a second on
//! signals of their own measure the alarm latency.
//!
//! Figures, each beside its in-run reference:
//! - readings/s committed, beside the 100 000/s offered and the table's
//!   own ceiling (a server-side `INSERT … SELECT` of 1 M rows into
//!   `shopfloor.samples`: no client, no network, no parsing);
//! - the generator's messages, beside the broker's ceiling for the same
//!   messages (a publisher flooding a null subscriber, measured first);
//! - lag at the end (readings published but not committed) and the time
//!   to drain it;
//! - freshness p50/p99: a probe sensor's newest reading, from its
//!   timestamp to visible in `shopfloor.readings` (polled every 50 ms);
//! - alarm latency p50/p99: a breach's timestamp to its `raised` event
//!   received on MQTT;
//! - CPU % of a core per process, and the store's CPU per reading.
//!
//! The run repeats for each store ingestd can write: PostgreSQL on native
//! partitions, PostgreSQL with TimescaleDB, InfluxDB and ClickHouse (each
//! where its server is installed), a fresh broker and store each time, and
//! ends with one table of all of them.
//!
//! `cargo bench -p shopfloor-benches --bench car_plant` (builds the release
//! binaries first; about 3 minutes a store). `SHOPFLOOR_CAR_SECS` (default
//! 60) sets the measured window; `SHOPFLOOR_CAR_SENSORS` (default 100000, a
//! multiple of 2000) the plant's size; `SHOPFLOOR_CAR_STORES` (default
//! `native,timescaledb,influxdb,clickhouse`) the stores.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use shopfloor_benches::{is_measuring, pg_ticks, runtime, ticks};
use shopfloor_examples::plant::{Daemon, metric};
use shopfloor_ingest::clickhouse::Schema as ClickHouseSchema;
use shopfloor_mqtt::{Broker, DriverConfig, EdgeDriver};
use shopfloor_schemas::{Batch, Reading, Timestamp};
use shopfloor_sparkplug::edge::MetricSpec;
use shopfloor_sparkplug::{DataType, EdgeNode, EdgeNodeConfig};
use shopfloor_testkit::{ClickHouse, InfluxDb, Mosquitto, Postgres, free_port};

const DEVICES_PER_NODE: usize = 20;
const METRICS_PER_DEVICE: usize = 100;
const BREACHES_PER_S: u64 = 10;
const WARMUP: Duration = Duration::from_secs(15);

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let measuring = is_measuring();
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|s| s.parse().ok()).unwrap_or(d);
    // `cargo test` runs this once, small and short, in the debug build.
    let (sensors, window, warmup) = if measuring {
        (
            env("SHOPFLOOR_CAR_SENSORS", 100_000) as usize,
            Duration::from_secs(env("SHOPFLOOR_CAR_SECS", 60)),
            WARMUP,
        )
    } else {
        (4_000, Duration::from_secs(3), Duration::from_secs(3))
    };
    let per_node = DEVICES_PER_NODE * METRICS_PER_DEVICE;
    assert!(
        sensors % per_node == 0 && sensors > 0,
        "SHOPFLOOR_CAR_SENSORS: a multiple of {per_node}"
    );
    let nodes = sensors / per_node;

    let exe = std::env::current_exe().expect("the bench's own path");
    let bins = exe.parent().and_then(|d| d.parent()).expect("a target folder").to_owned();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = std::process::Command::new(cargo);
    build.args([
        "build",
        "-q",
        "-p",
        "shopfloor-examples",
        "--bin",
        "shopfloor-ingestd",
        "--bin",
        "shopfloor-alertd",
    ]);
    if measuring {
        build.arg("--release");
    }
    assert!(
        build.status().expect("run cargo build").success(),
        "building ingestd and alertd failed"
    );

    let stores: Vec<Kind> = std::env::var("SHOPFLOOR_CAR_STORES")
        .unwrap_or_else(|_| "native,timescaledb,influxdb,clickhouse".into())
        .split(',')
        .map(|k| Kind::parse(k.trim()).unwrap_or_else(|| panic!("SHOPFLOOR_CAR_STORES: {k:?}?")))
        .collect();
    let rt = runtime();
    let mut summary = Vec::new();
    for kind in stores {
        let Some(store) = Store::start(kind) else {
            println!("\n{}: not installed here, skipped ({})\n", kind.name(), kind.install());
            continue;
        };
        let broker = Mosquitto::builder()
            .persistence(true)
            .max_queued_messages(1_000_000)
            .message_size_limit(16 << 20)
            .config_line("queue_qos0_messages true")
            .start()
            .expect("start mosquitto (apt-get install -y mosquitto)");
        summary.push(rt.block_on(run(&broker, &store, &bins, nodes, window, warmup)));
    }
    let sensors = nodes * DEVICES_PER_NODE * METRICS_PER_DEVICE;
    println!("\nAll stores, {sensors} sensors at 1 Hz offered:\n");
    println!(
        "| store | readings committed/s | of offered | freshness p99 | store CPU (% of a core) | store CPU per reading | alarm p99 |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in &summary {
        println!(
            "| {} | **{:.0}** | {:.3} | **{:.0} ms** | {:.1} | {:.2} µs | {:.0} ms |",
            r.store,
            r.committed,
            r.committed / r.offered.max(1.0),
            r.fresh_p99,
            r.store_cpu,
            r.store_cpu / 100.0 * 1e6 / r.committed.max(1.0),
            r.alarm_p99
        );
    }
}

/// The stores ingestd writes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Native,
    TimescaleDb,
    InfluxDb,
    ClickHouse,
}

impl Kind {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "native" => Self::Native,
            "timescaledb" => Self::TimescaleDb,
            "influxdb" => Self::InfluxDb,
            "clickhouse" => Self::ClickHouse,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Native => "PostgreSQL, native partitions",
            Self::TimescaleDb => "PostgreSQL + TimescaleDB",
            Self::InfluxDb => "InfluxDB 1.x",
            Self::ClickHouse => "ClickHouse",
        }
    }

    fn install(self) -> &'static str {
        match self {
            Self::Native => "apt-get install -y postgresql",
            Self::TimescaleDb => "scripts/test builds TimescaleDB from the vendored source",
            Self::InfluxDb => "apt-get install -y influxdb",
            Self::ClickHouse => "apt-get install -y clickhouse-server",
        }
    }
}

/// A running store.
enum Store {
    Pg(Kind, Postgres),
    Influx(InfluxDb),
    Click(ClickHouse),
}

/// The probe sensor.
const PROBE_SOURCE: &str = "Car/gen-00/dev-00";

impl Store {
    /// Starts `kind`'s server; `None` when it is not installed.
    fn start(kind: Kind) -> Option<Self> {
        Some(match kind {
            Kind::Native => Self::Pg(kind, Postgres::builder().start().ok()?),
            Kind::TimescaleDb => {
                if !shopfloor_testkit::timescaledb_installed() {
                    return None;
                }
                Self::Pg(kind, Postgres::builder().timescaledb().start().ok()?)
            }
            Kind::InfluxDb => Self::Influx(InfluxDb::start().ok()?),
            Kind::ClickHouse => Self::Click(ClickHouse::start().ok()?),
        })
    }

    fn kind(&self) -> Kind {
        match self {
            Self::Pg(k, _) => *k,
            Self::Influx(_) => Kind::InfluxDb,
            Self::Click(_) => Kind::ClickHouse,
        }
    }

    /// ingestd's store section.
    fn section(&self) -> String {
        match self {
            Self::Pg(k, pg) => format!(
                "[postgres]\nconnection = \"{}\"\n[storage]\ntimescaledb = {}\n",
                pg.connection_string(),
                *k == Kind::TimescaleDb
            ),
            Self::Influx(db) => {
                format!("[influxdb]\nurl = \"{}\"\ndatabase = \"shopfloor\"\n", db.url())
            }
            Self::Click(db) => {
                format!("[clickhouse]\nurl = \"{}\"\ndatabase = \"shopfloor\"\n", db.url())
            }
        }
    }

    /// CPU ticks of the server's processes so far.
    fn ticks(&self) -> Option<u64> {
        match self {
            Self::Pg(_, pg) => pg.pid().map(pg_ticks),
            Self::Influx(db) => db.pid().map(|p| ticks(p, true)),
            Self::Click(db) => db.pid().map(|p| ticks(p, true)),
        }
    }

    /// A probe of the probe sensor's newest reading in this store.
    async fn probe(&self) -> Probe {
        match self {
            Self::Pg(_, pg) => Probe::Pg(pg.client().await.unwrap()),
            Self::Influx(db) => Probe::Influx(db.port()),
            Self::Click(db) => {
                let version = db.query("SELECT version()").unwrap_or_default();
                Probe::Click(db.port(), ClickHouseSchema::for_version(&version))
            }
        }
    }

    /// Rows/s the store takes from itself: 1 M rows inserted by a
    /// server-side query (no client, no network, no parsing). InfluxDB has
    /// no such query: `None`.
    async fn ceiling(&self) -> Option<f64> {
        let start = Instant::now();
        match self {
            Self::Pg(_, pg) => {
                let db = pg.client().await.ok()?;
                db.execute(
                    "WITH m AS (INSERT INTO shopfloor.metrics (source, name) VALUES ('bench/ceiling', 'x') RETURNING id)
                     INSERT INTO shopfloor.samples (metric_id, time, value, quality)
                     SELECT m.id, now() + g * interval '1 microsecond', g, 0 FROM m, generate_series(1, 1000000) g",
                    &[],
                )
                .await
                .expect("the server-side insert");
            }
            Self::Influx(_) => return None,
            Self::Click(db) => {
                let version = db.query("SELECT version()").ok()?;
                let q = match ClickHouseSchema::for_version(&version) {
                    ClickHouseSchema::Legacy => {
                        "INSERT INTO shopfloor.readings SELECT 'bench/ceiling', 'x', now(), number % 1000, toFloat64(number), NULL, 0 FROM system.numbers LIMIT 1000000"
                    }
                    _ => {
                        "INSERT INTO shopfloor.readings SELECT 'bench/ceiling', 'x', now64(3), toFloat64(number), NULL, 0 FROM system.numbers LIMIT 1000000"
                    }
                };
                post_query(db.port(), q)?;
            }
        }
        Some(1e6 / start.elapsed().as_secs_f64())
    }
}

/// Where the freshness probe looks.
enum Probe {
    Pg(tokio_postgres::Client),
    Influx(u16),
    Click(u16, ClickHouseSchema),
}

impl Probe {
    /// The newest time (Unix ms) of the probe sensor's readings in the
    /// last 30 s, as a query sees it.
    async fn newest_ms(&self) -> Option<f64> {
        let get = |port: u16, path: String| async move {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            tokio::task::spawn_blocking(move || shopfloor_testkit::http_get(addr, &path))
                .await
                .ok()?
                .ok()
                .filter(|(status, _)| *status == 200)
                .map(|(_, body)| body)
        };
        match self {
            Self::Pg(db) => db
                .query_one(
                    "SELECT (extract(epoch FROM max(time)) * 1000)::float8 FROM shopfloor.readings
                     WHERE source = $1 AND metric = 'm00' AND time > now() - interval '30 s'",
                    &[&PROBE_SOURCE],
                )
                .await
                .ok()?
                .get::<_, Option<f64>>(0),
            Self::Influx(port) => {
                let q = format!(
                    "SELECT last(value) FROM readings WHERE source = '{PROBE_SOURCE}' AND metric = 'm00' AND time > now() - 30s"
                );
                let path =
                    format!("/query?db=shopfloor&epoch=ms&q={}", shopfloor_testkit::percent(&q));
                let v: serde_json::Value = serde_json::from_str(&get(*port, path).await?).ok()?;
                v["results"][0]["series"][0]["values"][0][0].as_f64()
            }
            Self::Click(port, schema) => {
                let newest = match schema {
                    ClickHouseSchema::Legacy => "max(toUInt64(time) * 1000 + ms)",
                    _ => "toUnixTimestamp64Milli(max(time))",
                };
                let q = format!(
                    "SELECT {newest} FROM shopfloor.readings WHERE source = '{PROBE_SOURCE}' AND metric = 'm00' AND time > now() - 30"
                );
                let path = format!("/?query={}", shopfloor_testkit::percent(&q));
                get(*port, path).await?.trim().parse::<f64>().ok().filter(|t| *t > 0.0)
            }
        }
    }
}

/// POSTs a query to ClickHouse's HTTP interface; `Some(())` on 200.
fn post_query(port: u16, q: &str) -> Option<()> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "POST / HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{q}", q.len())
        .ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    answer.starts_with("HTTP/1.0 200").then_some(())
}

/// The broker's own ceiling for messages like the generator's: one
/// publisher at QoS 0 as fast as it can for 3 s, one subscriber counting.
async fn broker_ceiling(broker: &Mosquitto, size: usize) -> f64 {
    let (sub, mut sub_events) =
        AsyncClient::new(MqttOptions::new("ceiling-sub", broker.host(), broker.port()), 1000);
    sub.subscribe("ceiling/#", QoS::AtMostOnce).await.unwrap();
    loop {
        if let Ok(Event::Incoming(Packet::SubAck(_))) = sub_events.poll().await {
            break;
        }
    }
    let got = Arc::new(AtomicU64::new(0));
    let counter = got.clone();
    let reader = tokio::spawn(async move {
        loop {
            match sub_events.poll().await {
                Ok(Event::Incoming(Packet::Publish(_))) => {
                    counter.fetch_add(1, Relaxed);
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    let mut o = MqttOptions::new("ceiling-pub", broker.host(), broker.port());
    o.set_max_packet_size(Some(16 << 20));
    let (publ, mut pub_events) = AsyncClient::new(o, 1000);
    let poller = tokio::spawn(async move { while pub_events.poll().await.is_ok() {} });
    let payload = vec![7u8; size];
    let start = Instant::now();
    let before = got.load(Relaxed);
    while start.elapsed() < Duration::from_secs(3) {
        publ.publish("ceiling/x", QoS::AtMostOnce, false, payload.clone()).await.unwrap();
    }
    // What arrived within the 3 s and the moment after.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let n = got.load(Relaxed) - before;
    reader.abort();
    poller.abort();
    n as f64 / start.elapsed().as_secs_f64()
}

/// One store's figures, for the summary.
struct Figures {
    store: &'static str,
    committed: f64,
    offered: f64,
    fresh_p99: f64,
    store_cpu: f64,
    alarm_p99: f64,
}

async fn run(
    broker: &Mosquitto,
    store: &Store,
    bins: &std::path::Path,
    nodes: usize,
    window: Duration,
    warmup: Duration,
) -> Figures {
    let sensors = nodes * DEVICES_PER_NODE * METRICS_PER_DEVICE;
    println!("\n## {}\n", store.kind().name());
    // A DDATA of 100 doubles with aliases and timestamps is about 1.9 kB.
    let ceiling = broker_ceiling(broker, 1900).await;
    eprintln!("broker ceiling: {ceiling:.0} msg/s of 1.9 kB");

    let dir = tempfile::tempdir().unwrap();
    let (ingest_metrics, alert_metrics) = (free_port().unwrap(), free_port().unwrap());
    let mqtt = format!("[mqtt]\nhost = \"{}\"\nport = {}\n", broker.host(), broker.port());
    std::fs::write(
        dir.path().join("ingestd.toml"),
        format!(
            "{mqtt}client_id = \"ingest-car\"\n[metrics]\nlisten = \"127.0.0.1:{ingest_metrics}\"\n{}[ingest]\nsparkplug = true\nbatch_readings = 20000\nbatch_ms = 200\n",
            store.section()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules.toml"),
        "[[rule]]\nname = \"car-limit\"\nsource = \"Car/*\"\nmetric = \"*\"\nlimit = { h = { limit = 90.0, deadband = 1.0 } }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("alertd.toml"),
        format!(
            "{mqtt}client_id = \"alertd-car\"\n[metrics]\nlisten = \"127.0.0.1:{alert_metrics}\"\n[alerting]\nrules = \"rules.toml\"\nsparkplug = true\n"
        ),
    )
    .unwrap();
    let spawn = |name: &str, bin: &str| {
        Daemon::spawn(
            name,
            bins.join(bin),
            ["--config".to_string(), dir.path().join(format!("{name}.toml")).display().to_string()],
            dir.path().join(format!("{name}.log")),
        )
        .unwrap()
    };
    let mut ingestd = spawn("ingestd", "shopfloor-ingestd");
    let mut alertd = spawn("alertd", "shopfloor-alertd");
    let scrape = |port: u16| {
        shopfloor_testkit::http_get(std::net::SocketAddr::from(([127, 0, 0, 1], port)), "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    };
    for (d, port, connects) in [
        (&mut ingestd, ingest_metrics, "shopfloor_ingest_connects_total"),
        (&mut alertd, alert_metrics, "shopfloor_alerting_connects_total"),
    ] {
        d.wait_until(Duration::from_secs(60), |_| {
            metric(&scrape(port), connects).unwrap_or(0.0) >= 1.0
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    }

    // An operator's view of the alarm events, each with its arrival time.
    let (op, mut op_events) =
        AsyncClient::new(MqttOptions::new("car-operator", broker.host(), broker.port()), 10_000);
    op.subscribe("shopfloor/alarms/events", QoS::AtMostOnce).await.unwrap();
    let latencies: Arc<std::sync::Mutex<Vec<f64>>> = Arc::default();
    let lat = latencies.clone();
    let _op_task = tokio::spawn(async move {
        let _keep = op;
        loop {
            match op_events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let now = unix_ms();
                    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload) else {
                        continue;
                    };
                    // Breach metrics are named b…; their value is the reading's time.
                    if v["event"] == "raised"
                        && let Some(at) = v["value"].as_f64()
                        && v["metric"].as_str().is_some_and(|m| m.starts_with('b'))
                    {
                        lat.lock().unwrap().push(now as f64 - (at - 1e12));
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });

    // The edge nodes: metrics m00..m98 normal, b99 the breach channel.
    eprintln!(
        "{nodes} edge nodes × {DEVICES_PER_NODE} devices × {METRICS_PER_DEVICE} metrics = {sensors} sensors; births…"
    );
    let metric_names: Vec<String> = (0..METRICS_PER_DEVICE)
        .map(|m| if m == METRICS_PER_DEVICE - 1 { format!("b{m}") } else { format!("m{m:02}") })
        .collect();
    let mut edges = Vec::new();
    for n in 0..nodes {
        let mut node = EdgeNodeConfig::new("Car", format!("gen-{n:02}"));
        node.devices = (0..DEVICES_PER_NODE)
            .map(|d| {
                (
                    format!("dev-{d:02}"),
                    metric_names
                        .iter()
                        .map(|m| MetricSpec::new(m.as_str(), DataType::Double))
                        .collect(),
                )
            })
            .collect();
        let mut config =
            DriverConfig::new(format!("gen-{n:02}"), Broker::new(broker.host(), broker.port()));
        config.queue = 4 * DEVICES_PER_NODE;
        edges.push(Arc::new(EdgeDriver::spawn(EdgeNode::new(node).unwrap(), config)));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !edges.iter().all(|e| e.stats().online) {
        assert!(Instant::now() < deadline, "the edge nodes did not come online in 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The generator: every second, every device one DDATA, on schedule;
    // breach channels in turn carry a value of 1e12 + its own time in ms
    // (above the limit, and telling the reading's time to the operator).
    let published = Arc::new(AtomicU64::new(0));
    let late_ms = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let start_ms = unix_ms() + 500;
    DEVICE_COUNT.store((nodes * DEVICES_PER_NODE) as u64, Relaxed);
    let mut tasks = Vec::new();
    for (n, edge) in edges.iter().enumerate() {
        let (edge, published, late_ms, stop, names) =
            (edge.clone(), published.clone(), late_ms.clone(), stop.clone(), metric_names.clone());
        tasks.push(tokio::spawn(async move {
            let mut second = 0u64;
            while !stop.load(Relaxed) {
                for d in 0..DEVICES_PER_NODE {
                    // Devices spread over the second.
                    let due =
                        start_ms + second * 1000 + (d as u64 * 1000) / DEVICES_PER_NODE as u64;
                    let now = unix_ms();
                    if due > now {
                        tokio::time::sleep(Duration::from_millis(due - now)).await;
                    } else {
                        late_ms.fetch_max(now - due, Relaxed);
                    }
                    let ts = unix_ms();
                    let device = (n * DEVICES_PER_NODE + d) as u64;
                    // 10 breaches a second over the whole plant, each on a
                    // device of its own in turn.
                    let breach = (second * BREACHES_PER_S..(second + 1) * BREACHES_PER_S)
                        .any(|k| k.wrapping_mul(7919) % device_count() == device);
                    let mut b = Batch::new(format!("dev-{d:02}"));
                    for (m, name) in names.iter().enumerate() {
                        let v = if m == METRICS_PER_DEVICE - 1 {
                            if breach { 1e12 + ts as f64 } else { 50.0 }
                        } else {
                            50.0 + ((second + m as u64 + device) % 7) as f64
                        };
                        b.readings.push(Reading::new(
                            name.as_str(),
                            Timestamp::from_unix_ms(ts),
                            v,
                        ));
                    }
                    if edge.publish(b).await.is_err() {
                        return;
                    }
                    published.fetch_add(METRICS_PER_DEVICE as u64, Relaxed);
                }
                second += 1;
            }
        }));
    }

    // Freshness probe: Car/gen-00/dev-00 m00's newest row, polled.
    let fresh: Arc<std::sync::Mutex<Vec<f64>>> = Arc::default();
    let probe_of = store.probe().await;
    let (fresh_w, stop_probe) = (fresh.clone(), stop.clone());
    let probe = tokio::spawn(async move {
        let mut newest = 0.0_f64;
        while !stop_probe.load(Relaxed) {
            if let Some(t) = probe_of.newest_ms().await
                && t > newest
            {
                if newest > 0.0 {
                    fresh_w.lock().unwrap().push(unix_ms() as f64 - t);
                }
                newest = t;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });

    eprintln!("warming up {warmup:?}, then measuring {window:?}");
    tokio::time::sleep(warmup).await;
    fresh.lock().unwrap().clear();
    latencies.lock().unwrap().clear();
    late_ms.store(0, Relaxed);
    let rows = |port| metric(&scrape(port), "shopfloor_ingest_rows_total").unwrap_or(0.0);
    let procs = [
        ("load generator (this process)", std::process::id()),
        ("mosquitto", broker.pid().unwrap()),
        ("shopfloor-ingestd", ingestd.pid().unwrap()),
        ("shopfloor-alertd", alertd.pid().unwrap()),
    ];
    let cpu0: Vec<u64> = procs.iter().map(|(_, p)| ticks(*p, false)).collect();
    let store0 = store.ticks();
    let (rows0, pub0, t0) = (rows(ingest_metrics), published.load(Relaxed), Instant::now());
    tokio::time::sleep(window).await;
    let secs = t0.elapsed().as_secs_f64();
    let (rows1, pub1) = (rows(ingest_metrics), published.load(Relaxed));
    let cpu1: Vec<u64> = procs.iter().map(|(_, p)| ticks(*p, false)).collect();
    let store1 = store.ticks();
    let late = late_ms.load(Relaxed);
    stop.store(true, Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    probe.abort();
    // Lag at the end, and the time to drain it: until the row count stops
    // growing for 2 s (at most 5 minutes).
    let rows_at_stop = rows(ingest_metrics);
    let drain_start = Instant::now();
    let (mut last, mut still_since) = (rows_at_stop, Instant::now());
    let drained = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = rows(ingest_metrics);
        if r > last {
            (last, still_since) = (r, Instant::now());
        } else if still_since.elapsed() >= Duration::from_secs(2) {
            break still_since.duration_since(drain_start).as_secs_f64();
        }
        if drain_start.elapsed() > Duration::from_secs(300) {
            break f64::INFINITY;
        }
    };
    // What was published but not committed when the generator stopped:
    // what committed after.
    let lag = last - rows_at_stop;
    let drain_rate = lag / drained.max(0.001);
    // The table's own ceiling: 1 M rows inserted by the server itself.
    let table_ceiling = store.ceiling().await;

    let committed = (rows1 - rows0) / secs;
    let offered = (pub1 - pub0) as f64 / secs;
    let mut f = fresh.lock().unwrap().clone();
    f.sort_by(f64::total_cmp);
    let mut l = latencies.lock().unwrap().clone();
    l.sort_by(f64::total_cmp);
    let pct = |d: u64| d as f64 / 100.0 / secs * 100.0;
    println!(
        "\nThe car plant: {sensors} sensors at 1 Hz, {secs:.0} s window, release builds, every process on the same 2 cores\n"
    );
    println!("| figure | measured | in-run reference | verdict |");
    println!("|---|---|---|---|");
    let table_ceiling = table_ceiling.map_or_else(
        || "no server-side insert to measure its ceiling".to_owned(),
        |c| format!("the table's own ceiling {c:.0} rows/s"),
    );
    println!(
        "| readings committed to {} | **{committed:.0}/s** | offered {offered:.0}/s (schedule {sensors}/s; generator at most {late} ms late); {table_ceiling} | {} |",
        store.kind().name(),
        if committed >= 0.99 * offered { "sustained" } else { "NOT sustained" }
    );
    println!(
        "| MQTT messages (DDATA of 100 metrics) | {:.0}/s | broker ceiling {ceiling:.0} msg/s of 1.9 kB | {:.0} % of the ceiling |",
        offered / METRICS_PER_DEVICE as f64,
        offered / METRICS_PER_DEVICE as f64 / ceiling * 100.0
    );
    println!(
        "| lag when the generator stopped | {lag:.0} readings ({:.2} s of input) | drained in {drained:.1} s at {drain_rate:.0} rows/s | |",
        lag / sensors as f64
    );
    println!(
        "| freshness (timestamp → visible to a query) p50 / p99 / max | {:.0} / **{:.0}** / {:.0} ms ({} samples) | ingest batches every 200 ms | |",
        percentile(&f, 0.5),
        percentile(&f, 0.99),
        f.last().copied().unwrap_or(f64::NAN),
        f.len()
    );
    println!(
        "| alarm latency (breach timestamp → raised event on MQTT) p50 / p99 / max | {:.0} / **{:.0}** / {:.0} ms ({} breaches) | ≤ 5 s (the seed's alarm deadline) | {} |",
        percentile(&l, 0.5),
        percentile(&l, 0.99),
        l.last().copied().unwrap_or(f64::NAN),
        l.len(),
        if percentile(&l, 0.99) <= 5000.0 { "met" } else { "NOT met" }
    );
    println!("\n| process | CPU (% of one core) |\n|---|---|");
    for (((name, _), a), b) in procs.iter().zip(&cpu1).zip(&cpu0) {
        println!("| {name} | {:.1} |", pct(a.saturating_sub(*b)));
    }
    let store_cpu = match (store1, store0) {
        (Some(a), Some(b)) => pct(a.saturating_sub(b)),
        _ => f64::NAN,
    };
    println!("| the store ({}) | {store_cpu:.1} |", store.kind().name());
    for e in edges {
        if let Ok(e) = Arc::try_unwrap(e) {
            e.shutdown().await;
        }
    }
    drop(ingestd);
    drop(alertd);
    Figures {
        store: store.kind().name(),
        committed,
        offered,
        fresh_p99: percentile(&f, 0.99),
        store_cpu,
        alarm_p99: percentile(&l, 0.99),
    }
}

static DEVICE_COUNT: AtomicU64 = AtomicU64::new(1);

fn device_count() -> u64 {
    DEVICE_COUNT.load(Relaxed).max(1)
}
