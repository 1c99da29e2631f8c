//! The ingest daemon: MQTT → PostgreSQL, acknowledging only what is
//! committed. See `--help`.

use shopfloor_examples::cli::{ConfigContext as _, Daemon, Generate};
use shopfloor_examples::metrics;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use shopfloor_ingest::{ClickHouseConfig, InfluxApi, InfluxConfig, Ingest, IngestConfig, Store};
use shopfloor_mqtt::MqttSection;
use shopfloor_mqtt::mapping::MappingSpec;
use shopfloor_sparkplug::HostConfig;

const HELP: &str = concat!(
    "\
THE FILE:
    [mqtt]
    host = \"127.0.0.1\"
    port = 1883
    client_id = \"ingest-1\"        # stable: the broker keeps its session
    # protocol = \"5\"              # or \"3.1.1\" for a broker that speaks only that
    session_expiry_s = 3600       # MQTT 5; with 3.1.1 the broker decides
    username = \"ingest\"           # optional; the password from
",
    shopfloor_examples::help_mqtt_login!(),
    "\n",
    shopfloor_examples::help_metrics!("9103"),
    "
    [postgres]
    connection = \"host=127.0.0.1 user=shopfloor dbname=shopfloor\"
    # sslmode=require in it: TLS always (prefer, the default: when offered)
    # password_file = \"pg.pass\"    # or SHOPFLOOR_PG_PASSWORD
    # ca_file = \"/etc/shopfloor/pki/pg-ca.crt\"   # check the server's
    #                             # certificate and name (else: encrypt only)

    # …or, instead of [postgres], InfluxDB (line protocol over HTTP):
    # [influxdb]
    # url = \"http://127.0.0.1:8086\"
    # database = \"shopfloor\"      # the 1.x /write API (2.x and 3.x keep it);
    # retention_policy = \"autogen\" # made at start if missing
    # username = \"ingest\"         # optional; the password from
    # password_file = \"influx.pass\"  # a file, or SHOPFLOOR_INFLUX_PASSWORD
    # org = \"plant\"               # …or the 2.x /api/v2/write API: org,
    # bucket = \"shopfloor\"        # bucket and a token from token_file
    # token_file = \"influx.token\" # or SHOPFLOOR_INFLUX_TOKEN
    # measurement = \"readings\"

    # …or ClickHouse (its HTTP interface; the schema is made at start):
    # [clickhouse]
    # url = \"http://127.0.0.1:8123\"
    # database = \"shopfloor\"
    # username = \"ingest\"         # optional; the password from
    # password_file = \"ch.pass\"   # a file, or SHOPFLOOR_CLICKHOUSE_PASSWORD

    [ingest]
    plain = true                  # shopfloor/{site}/{area}/{machine}/{sensor}
    # template = \"shopfloor/{site}/{area}/{machine}/{sensor}\"
    # codec = \"json\"              # when a message has no content type
    sparkplug = true              # spBv1.0/#
    # sparkplug_groups = [\"Hall1\"]  # only these Sparkplug groups (default: all)
    # primary_host_id = \"scada\"   # only on the primary host: publishes STATE
    batch_readings = 10000
    batch_ms = 200
    # share = \"ingest\"            # several ingestd share the load ($share/ingest/...):
    #                             # plain topics, mappings and Sparkplug DATA
    # max_ahead_hours = 24        # readings further ahead of the clock are dead letters
    # max_readings_per_message = 100000   # a message with more is a dead letter

    [[mapping]]                   # optional, any number: devices' own payloads
    name = \"kepware\"              # (JSON, CBOR, Protobuf, CSV, bare values);
    topic = \"iotgateway/{agent}\"  # tried in order, before plain topics. The
    each = \"/values\"              # keys: the shopfloor-mapping crate's README
    source = \"kepware/{agent}\"
    metric = \"{/id}\"
    value = \"/v\"
    timestamp = \"/t\"
    time_format = \"unix_ms\"
    quality = \"/q\"

    [storage]                     # optional
    timescaledb = true            # use TimescaleDB when the server has it
    # retention_days = 90         # drop older samples (rollups are kept)
    # max_age_days = 3650         # without a retention: older readings are dead letters
    # dead_letter_days = 30       # dead letters kept this long (0: for ever)
    # dead_letters_max = 1000000  # and at most this many, the oldest going first
    # max_catalogue_metrics = 1000000   # metrics (source and name) at most; readings
    #                             # of a new one past it are dead letters
    compress_after_days = 7       # TimescaleDB only
    chunk_hours = 24              # TimescaleDB only

EXAMPLES:
    shopfloor-ingestd --config ingest.toml --check-config
    shopfloor-ingestd --config ingest.toml mapping test --topic iotgateway/a1 --payload sample.json
    RUST_LOG=debug shopfloor-ingestd --config ingest.toml
"
);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Influx {
    url: String,
    database: Option<String>,
    retention_policy: Option<String>,
    username: Option<String>,
    password_file: Option<std::path::PathBuf>,
    org: Option<String>,
    bucket: Option<String>,
    token_file: Option<std::path::PathBuf>,
    measurement: Option<String>,
}

fn influx(path: &Path, i: Influx) -> anyhow::Result<InfluxConfig> {
    let where_ = path.display();
    let mut c = match (&i.database, &i.org, &i.bucket) {
        (Some(db), None, None) => {
            let mut c = InfluxConfig::v1(&i.url, db);
            let password = shopfloor_examples::secret(
                path,
                "SHOPFLOOR_INFLUX_PASSWORD",
                i.password_file.as_deref(),
                "influxdb.password_file",
            )?;
            if let InfluxApi::V1 { retention_policy, credentials, .. } = &mut c.api {
                retention_policy.clone_from(&i.retention_policy);
                *credentials = match (i.username, password) {
                    (Some(u), Some(p)) => Some((u, p)),
                    (Some(u), None) => bail!(
                        "{where_}: influxdb.username = {u:?} needs password_file (or SHOPFLOOR_INFLUX_PASSWORD)"
                    ),
                    (None, _) => None,
                };
            }
            c
        }
        (None, Some(org), Some(bucket)) => {
            let token = shopfloor_examples::secret(path, "SHOPFLOOR_INFLUX_TOKEN", i.token_file.as_deref(), "influxdb.token_file")?
                .with_context(|| format!("{where_}: influxdb: the v2 API (org, bucket) needs token_file or SHOPFLOOR_INFLUX_TOKEN"))?;
            InfluxConfig::v2(&i.url, org, bucket, token)
        }
        _ => bail!(
            "{where_}: [influxdb] needs either database = \"…\" (the 1.x /write API) or org and bucket (the 2.x API), not both"
        ),
    };
    if let Some(m) = i.measurement {
        c.measurement = m;
    }
    c.check().map_err(|e| anyhow::anyhow!("{where_}: influxdb.{e}"))?;
    Ok(c)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClickHouse {
    url: String,
    database: Option<String>,
    username: Option<String>,
    password_file: Option<std::path::PathBuf>,
}

fn clickhouse(path: &Path, ch: ClickHouse) -> anyhow::Result<ClickHouseConfig> {
    let where_ = path.display();
    let mut c = ClickHouseConfig::new(ch.url, ch.database.unwrap_or_else(|| "shopfloor".into()));
    let password = shopfloor_examples::secret(
        path,
        "SHOPFLOOR_CLICKHOUSE_PASSWORD",
        ch.password_file.as_deref(),
        "clickhouse.password_file",
    )?;
    c.credentials = match (ch.username, password) {
        (Some(u), p) => Some((u, p.unwrap_or_default())),
        (None, Some(_)) => bail!("{where_}: clickhouse: a password without username"),
        (None, None) => None,
    };
    c.check().map_err(|e| anyhow::anyhow!("{where_}: clickhouse.{e}"))?;
    Ok(c)
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IngestSection {
    #[serde(flatten)]
    inputs: shopfloor_examples::InputKeys,
    primary_host_id: Option<String>,
    batch_readings: Option<usize>,
    batch_ms: Option<u64>,
    share: Option<String>,
    max_ahead_hours: Option<u64>,
    max_readings_per_message: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StorageSection {
    #[serde(default = "yes")]
    timescaledb: bool,
    retention_days: Option<u64>,
    max_age_days: Option<u64>,
    dead_letter_days: Option<u64>,
    dead_letters_max: Option<u64>,
    max_catalogue_metrics: Option<u64>,
    compress_after_days: Option<u64>,
    chunk_hours: Option<u64>,
}

const fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    mapping: Vec<MappingSpec>,
    mqtt: Option<MqttSection>,
    postgres: Option<shopfloor_examples::PgSection>,
    influxdb: Option<Influx>,
    clickhouse: Option<ClickHouse>,
    ingest: Option<IngestSection>,
    storage: Option<StorageSection>,
    #[serde(flatten)]
    _others: std::collections::BTreeMap<String, toml::Value>,
}

fn config(path: &Path) -> anyhow::Result<IngestConfig> {
    let where_ = path.display();
    let file: File = shopfloor_examples::read_toml(path)?;
    let mqtt = file
        .mqtt
        .with_context(|| format!("{where_}: no [mqtt] section; add host, port and client_id"))?;
    let stores = [file.postgres.is_some(), file.influxdb.is_some(), file.clickhouse.is_some()];
    if stores.iter().filter(|s| **s).count() > 1 {
        bail!(
            "{where_}: more than one of [postgres], [influxdb] and [clickhouse]: one ingest writes to one store (run one ingestd per store)"
        );
    }
    let (pg, store) = match (file.postgres, file.influxdb, file.clickhouse) {
        (Some(pg), ..) => (Some(pg), Store::Postgres),
        (_, Some(i), _) => (None, Store::InfluxDb(influx(path, i)?)),
        (.., Some(c)) => (None, Store::ClickHouse(clickhouse(path, c)?)),
        _ => bail!(
            "{where_}: no store: add [postgres] with connection = \"host=… dbname=…\" (or [influxdb], or [clickhouse])"
        ),
    };
    // With mappings alone, [ingest] may be left out (its defaults).
    let ing = match file.ingest {
        Some(i) => i,
        None if !file.mapping.is_empty() => IngestSection::default(),
        None => bail!(
            "{where_}: no [ingest] section; add plain = true and/or sparkplug = true, or a [[mapping]]"
        ),
    };
    let (database, database_password, database_tls) = match pg {
        Some(pg) => pg.resolve(path, "postgres")?,
        None => (String::new(), None, None),
    };
    let client_id = mqtt.client_id.clone().with_context(|| {
        format!("{where_}: [mqtt] has no client_id; give one that stays the same across restarts (the broker keeps the session by it)")
    })?;
    let mut c = IngestConfig::from_connection(mqtt.connection(path, &client_id)?, database);
    c.database_password = database_password;
    c.database_tls = database_tls;
    c.store = store;
    c.session_expiry = Duration::from_secs(mqtt.session_expiry_s.unwrap_or(3600));
    // Only the primary host publishes STATE.
    let mut host =
        HostConfig::new(ing.primary_host_id.clone().unwrap_or_else(|| "shopfloor-ingest".into()));
    host.publish_state = ing.primary_host_id.is_some();
    c.inputs = ing.inputs.inputs(path, &file.mapping, "ingest", host, "ingest")?;
    if let Some(n) = ing.batch_readings {
        c.batch_readings = n.max(1);
    }
    if let Some(ms) = ing.batch_ms {
        c.batch_age = Duration::from_millis(ms.max(1));
    }
    if let Some(h) = ing.max_ahead_hours {
        c.max_ahead = Duration::from_secs(h * 3600);
    }
    if let Some(n) = ing.max_readings_per_message {
        c.max_readings_per_message = n.max(1);
    }
    if let Some(share) = ing.share {
        if share.is_empty() || share.contains(['/', '+', '#']) {
            bail!(
                "{where_}: ingest.share = {share:?}: a share name is one topic level, without / + #"
            );
        }
        c.share = Some(share);
    }
    if let Some(st) = file.storage {
        const DAY: u64 = 86_400;
        c.timescaledb = st.timescaledb;
        if let Some(d) = st.retention_days {
            if d == 0 {
                bail!(
                    "{where_}: storage.retention_days = 0 would drop every sample; leave it out to keep everything"
                );
            }
            c.retention.samples = Some(Duration::from_secs(d * DAY));
        }
        if let Some(d) = st.max_age_days {
            c.max_age = Duration::from_secs(d.max(1) * DAY);
        }
        if let Some(d) = st.dead_letter_days {
            c.retention.dead_letters = (d > 0).then(|| Duration::from_secs(d * DAY));
        }
        if let Some(n) = st.dead_letters_max {
            c.retention.dead_letters_max = n;
        }
        if let Some(n) = st.max_catalogue_metrics {
            c.max_catalogue_metrics = n;
        }
        if let Some(d) = st.compress_after_days {
            c.retention.compress_after = (d > 0).then(|| Duration::from_secs(d * DAY));
        }
        if let Some(h) = st.chunk_hours {
            c.retention.chunk_interval = Duration::from_secs(h.max(1) * 3600);
        }
    }
    Ok(c)
}

const ABOUT: &str = "MQTT (plain topics, payload mappings and Sparkplug B) → PostgreSQL, InfluxDB or ClickHouse, acknowledging only what is stored";

#[derive(clap::Subcommand)]
enum Command {
    #[command(flatten)]
    Generate(Generate),
    /// The file's payload mappings
    #[command(subcommand)]
    Mapping(MappingCommand),
    /// Make or update the store's schema (PostgreSQL: apply the
    /// migrations; InfluxDB: the retention policy; ClickHouse: the
    /// tables), say what was done, and exit
    Migrate,
}

shopfloor_examples::impl_modes!(Command);

#[derive(clap::Subcommand)]
enum MappingCommand {
    /// Print the readings the file's payload mappings make of a payload, its
    /// units and what could not be read (no broker, no database)
    Test {
        /// The topic the payload arrives on
        #[arg(long)]
        topic: String,
        /// The file holding the payload
        #[arg(long, value_name = "FILE")]
        payload: std::path::PathBuf,
    },
}

/// `migrate`: the store's schema made or brought up to date, once.
async fn migrate(c: &IngestConfig) -> anyhow::Result<()> {
    use shopfloor_ingest::Sink as _;
    match &c.store {
        Store::InfluxDb(i) => {
            shopfloor_ingest::InfluxSink::new(i.clone()).connect().await?;
            println!("InfluxDB at {}: ready", i.url);
        }
        Store::ClickHouse(ch) => {
            shopfloor_ingest::ClickHouseSink::new(ch.clone()).connect().await?;
            println!("ClickHouse at {}: the shopfloor tables are ready", ch.url);
        }
        _ => {
            let mut client = shopfloor_ingest::pipeline::open(
                &c.database,
                c.database_password.as_deref(),
                c.database_tls.as_ref(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("PostgreSQL: {}", shopfloor_ingest::pg_message(&e)))?;
            let applied = shopfloor_ingest::migrate_with(&mut client, c.timescaledb).await?;
            match applied.as_slice() {
                [] => println!("PostgreSQL: the schema is up to date"),
                done => println!("PostgreSQL: migrations {done:?} applied"),
            }
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    shopfloor_examples::exit(real_main())
}

fn real_main() -> anyhow::Result<()> {
    let Some(cli) = Daemon::<Command>::parse_as("shopfloor-ingestd", ABOUT, HELP)? else {
        return Ok(());
    };
    let path = cli.opts.path("ingestd");
    if let Some(Command::Mapping(MappingCommand::Test { topic, payload })) = &cli.command {
        let file: File = shopfloor_examples::read_toml(&path).bad_config()?;
        return shopfloor_examples::mapping_test(&file.mapping, &path, topic, payload);
    }
    let check = cli.check_only();
    if let Some(Command::Migrate) = &cli.command {
        let c = config(&path).bad_config()?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        return runtime.block_on(migrate(&c));
    }
    let c = config(&path).bad_config()?;
    metrics::listen_address(&path).bad_config()?;
    if check {
        let store = match &c.store {
            Store::InfluxDb(i) => format!("InfluxDB at {}", i.url),
            Store::ClickHouse(c) => format!("ClickHouse at {}", c.url),
            _ if c.database_tls.is_some() => "PostgreSQL (TLS, the server checked)".to_owned(),
            _ => "PostgreSQL".to_owned(),
        };
        println!(
            "{}: valid: {} inputs, {} {}:{} as {}, into {store}",
            path.display(),
            c.inputs.len(),
            c.mqtt.protocol,
            c.mqtt.broker.host,
            c.mqtt.broker.port,
            c.mqtt.client_id
        );
        return Ok(());
    }
    shopfloor_examples::init_logging(cli.opts.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        tracing::info!(client_id = c.mqtt.client_id, "ingest starting");
        let ingest = Ingest::spawn(c);
        let ingest = metrics::serve_until_stop(
            &path,
            ingest,
            |i, page| metrics::ingest(page, i.stats()),
            |i| metrics::mqtt_ready(&i.stats().link),
        )
        .await?;
        tracing::info!("stopping: committing what is pending");
        shopfloor_examples::stop_within("the last commit and its acks", ingest.shutdown())
            .await??;
        Ok(())
    })
}
