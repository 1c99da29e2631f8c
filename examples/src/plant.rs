//! The whole reference deployment on one machine, in one folder: the
//! shipped Mosquitto configuration (TLS, client certificates, ACL) with
//! certificates from `examples/deploy/make-certs`, PostgreSQL and
//! Alertmanager (with the shipped route) from the system's binaries, the
//! simulator, both gateways, ingest and alerting, each a process of its
//! own with its log in `logs/`. `shopfloor-demo` runs it for people; the
//! end-to-end tests run it to kill parts of it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};
use shopfloor_testkit::{Alertmanager, ClickHouse, InfluxDb, Postgres, free_port};

use crate::sim::scenario::Scenario;

/// The shipped broker configuration.
pub const MOSQUITTO_CONF: &str = include_str!("../deploy/mosquitto/mosquitto.conf");
/// The shipped broker ACL.
pub const MOSQUITTO_ACL: &str = include_str!("../deploy/mosquitto/mosquitto.acl");
/// The shipped Alertmanager configuration.
pub const ALERTMANAGER_YML: &str = include_str!("../deploy/alertmanager/alertmanager.yml");
/// The shipped certificate script.
pub const MAKE_CERTS: &str = include_str!("../deploy/make-certs");

/// The Sparkplug group of the plant.
pub const GROUP: &str = "Plant1";
/// How long a part may take to start.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The shipped broker configuration with its paths moved under `dir`,
/// its machine listener (TLS, client certificates) on `machines` and its
/// people listener (TLS, passwords) on `people`, both on 127.0.0.1.
pub fn broker_config(dir: &Path, machines: u16, people: u16) -> anyhow::Result<String> {
    for needle in ["listener 8883\n", "listener 8884\n", "/etc/shopfloor", "/var/lib/mosquitto/"] {
        if !MOSQUITTO_CONF.contains(needle) {
            bail!("the shipped mosquitto.conf no longer has {needle:?}: update plant.rs");
        }
    }
    let mut conf = MOSQUITTO_CONF
        .replace("listener 8883\n", &format!("listener {machines} 127.0.0.1\n"))
        .replace("listener 8884\n", &format!("listener {people} 127.0.0.1\n"))
        .replace("/etc/shopfloor", &dir.display().to_string())
        .replace("/var/lib/mosquitto/", &format!("{}/", dir.join("data").display()));
    let _ = writeln!(conf, "log_dest file {}", dir.join("logs/mosquitto.log").display());
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // Mosquitto drops to user "mosquitto" otherwise, and cannot read
        // root's files.
        conf.push_str("user root\n");
    }
    Ok(conf)
}

pub use crate::process::Daemon;

/// What to start.
#[derive(Clone, Debug)]
pub struct Options {
    /// The folder for everything (made if absent; an earlier run's
    /// contents are replaced).
    pub dir: PathBuf,
    /// Where the shopfloor binaries are.
    pub bins: PathBuf,
    /// The simulator's scenario (default: the seed's plant).
    pub scenario: Option<PathBuf>,
    /// Where ingest writes the readings.
    pub store: StoreKind,
}

impl Options {
    /// The seed's plant in `dir`, with the binaries in `bins`, into
    /// PostgreSQL.
    pub fn new(dir: impl Into<PathBuf>, bins: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into(), bins: bins.into(), scenario: None, store: StoreKind::Postgres }
    }
}

/// The store the plant's ingest writes to (PostgreSQL runs in every case:
/// alerting keeps its journal there).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StoreKind {
    /// PostgreSQL (TimescaleDB where the server has it).
    #[default]
    Postgres,
    /// InfluxDB 1.x (Debian's `influxdb`).
    InfluxDb,
    /// ClickHouse (Debian's `clickhouse-server`).
    ClickHouse,
}

impl StoreKind {
    /// `postgres`, `influxdb` or `clickhouse`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "postgres" | "postgresql" => Some(Self::Postgres),
            "influxdb" => Some(Self::InfluxDb),
            "clickhouse" => Some(Self::ClickHouse),
            _ => None,
        }
    }

    /// Its name for people.
    pub fn name(self) -> &'static str {
        match self {
            Self::Postgres => "PostgreSQL",
            Self::InfluxDb => "InfluxDB",
            Self::ClickHouse => "ClickHouse",
        }
    }
}

/// The store server the plant started for its ingest, beside PostgreSQL.
#[derive(Debug)]
pub enum StoreServer {
    /// Ingest writes to the plant's PostgreSQL.
    Postgres,
    /// InfluxDB, database `shopfloor`.
    InfluxDb(InfluxDb),
    /// ClickHouse, database `shopfloor`.
    ClickHouse(ClickHouse),
}

impl StoreServer {
    /// Which store it is.
    pub fn kind(&self) -> StoreKind {
        match self {
            Self::Postgres => StoreKind::Postgres,
            Self::InfluxDb(_) => StoreKind::InfluxDb,
            Self::ClickHouse(_) => StoreKind::ClickHouse,
        }
    }

    /// A command that shows the newest readings (`None` for PostgreSQL).
    pub fn how_to_query(&self) -> Option<String> {
        match self {
            Self::Postgres => None,
            Self::InfluxDb(db) => Some(format!(
                "InfluxDB        curl -G {}/query --data-urlencode db=shopfloor --data-urlencode 'q=SELECT * FROM readings ORDER BY time DESC LIMIT 10'",
                db.url()
            )),
            Self::ClickHouse(ch) => Some(format!(
                "ClickHouse      curl {}/ --data 'SELECT * FROM shopfloor.readings ORDER BY time DESC LIMIT 10'",
                ch.url()
            )),
        }
    }

    /// How old the newest reading of the last minute is, in seconds
    /// (`None` when there is none, or for PostgreSQL: ask it).
    pub fn newest_age_s(&self) -> Option<f64> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        match self {
            Self::Postgres => None,
            Self::InfluxDb(db) => {
                let body = db
                    .query("shopfloor", "SELECT last(value) FROM readings WHERE time > now() - 1m")
                    .ok()?;
                let v: serde_json::Value = serde_json::from_str(&body).ok()?;
                let ms = v.pointer("/results/0/series/0/values/0/0")?.as_u64()?;
                Some(now_ms.saturating_sub(ms) as f64 / 1000.0)
            }
            Self::ClickHouse(ch) => {
                let body = ch
                    .query(
                        "SELECT count(), toUInt32(max(time)) FROM shopfloor.readings WHERE time > now() - 60",
                    )
                    .ok()?;
                let mut cols = body.trim().split('\t');
                let n: u64 = cols.next()?.parse().ok()?;
                let s: u64 = cols.next()?.parse().ok()?;
                (n > 0).then(|| (now_ms / 1000).saturating_sub(s) as f64)
            }
        }
    }
}

/// The running plant. Dropping it stops everything, gateways first.
#[derive(Debug)]
pub struct Plant {
    // Stopped in this order (fields drop top to bottom).
    /// The Modbus gateway.
    pub modbus_gw: Daemon,
    /// The OPC UA gateway.
    pub opcua_gw: Daemon,
    /// The alerting daemon.
    pub alertd: Daemon,
    /// The ingest daemon.
    pub ingestd: Daemon,
    /// The simulator.
    pub sim: Daemon,
    /// Mosquitto with the shipped configuration.
    pub broker: Daemon,
    /// Alertmanager with the shipped route.
    pub alertmanager: Alertmanager,
    /// Where ingest writes (InfluxDB or ClickHouse run here).
    pub store: StoreServer,
    /// PostgreSQL.
    pub postgres: Postgres,
    /// The folder.
    pub dir: PathBuf,
    /// The broker's TLS listener for machines (client certificates).
    pub broker_port: u16,
    /// The broker's TLS listener for people (passwords).
    pub people_port: u16,
    /// The `operator` password on the people listener.
    pub operator_password: String,
    /// Each daemon's `/metrics` address, by name.
    pub metrics: BTreeMap<String, SocketAddr>,
    /// The scenario the simulator runs.
    pub scenario: Scenario,
    /// When the simulator started (Unix ms): faults' `at_s` count from here.
    pub sim_start_ms: u64,
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn port() -> anyhow::Result<u16> {
    free_port().context("no free port on 127.0.0.1")
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("{}: cannot write it", path.display()))
}

/// `[mqtt]` of a machine logging in with its certificate.
fn mqtt_section(client_id: &str, cert: &str, port: u16) -> String {
    format!(
        "[mqtt]\nhost = \"localhost\"\nport = {port}\nclient_id = \"{client_id}\"\nca_file = \"pki/ca.crt\"\ncert_file = \"pki/{cert}.crt\"\nkey_file = \"pki/{cert}.key\"\n\n"
    )
}

/// Whether `GET /metrics` answers at `addr`.
pub fn metrics_up(addr: SocketAddr) -> bool {
    matches!(shopfloor_testkit::http_get(addr, "/metrics"), Ok((200, _)))
}

impl Plant {
    /// Starts everything, saying what it does through `say`; fails with
    /// the failing part's log.
    pub fn start(opts: &Options, mut say: impl FnMut(&str)) -> anyhow::Result<Self> {
        let dir = &opts.dir;
        let scenario = match &opts.scenario {
            Some(p) => Scenario::from_file(p)?,
            None => Scenario::default_plant(),
        };
        for sub in ["logs", "data", "spool", "sim"] {
            let p = dir.join(sub);
            if p.exists() {
                std::fs::remove_dir_all(&p)
                    .with_context(|| format!("{}: cannot clear it", p.display()))?;
            }
            std::fs::create_dir_all(&p)
                .with_context(|| format!("{}: cannot make it", p.display()))?;
        }
        let bin = |name: &str| opts.bins.join(name);
        for name in [
            "shopfloor-sim",
            "shopfloor-modbus-gateway",
            "shopfloor-opcua-gateway",
            "shopfloor-ingestd",
            "shopfloor-alertd",
        ] {
            if !bin(name).is_file() {
                bail!(
                    "{} is missing: cargo build -p shopfloor-examples --bins",
                    bin(name).display()
                );
            }
        }

        say("certificates (examples/deploy/make-certs)");
        write(&dir.join("make-certs"), MAKE_CERTS)?;
        run(Command::new("bash").arg(dir.join("make-certs")).arg(dir.join("pki")).args([
            "modbus-gw",
            "opcua-gw",
            "ingest",
            "alerting",
            "live",
        ]))?;
        let operator_password = format!("op-{:x}", std::process::id() ^ 0x5eed);
        run(Command::new("mosquitto_passwd")
            .args(["-c", "-b"])
            .arg(dir.join("mosquitto.passwd"))
            .args(["operator", &operator_password]))
        .context("mosquitto_passwd is part of Mosquitto: apt-get install -y mosquitto")?;
        write(&dir.join("mosquitto.acl"), MOSQUITTO_ACL)?;

        say("PostgreSQL");
        let postgres = Postgres::start().context("PostgreSQL: apt-get install -y postgresql")?;
        let store = match opts.store {
            StoreKind::Postgres => StoreServer::Postgres,
            StoreKind::InfluxDb => {
                say("InfluxDB");
                StoreServer::InfluxDb(
                    InfluxDb::start().context("InfluxDB: apt-get install -y influxdb")?,
                )
            }
            StoreKind::ClickHouse => {
                say("ClickHouse");
                StoreServer::ClickHouse(
                    ClickHouse::start()
                        .context("ClickHouse: apt-get install -y clickhouse-server")?,
                )
            }
        };
        say("Alertmanager (shipped route)");
        let alertmanager = Alertmanager::start_with_config(
            Path::new("/usr/bin/prometheus-alertmanager"),
            ALERTMANAGER_YML,
        )
        .context("Alertmanager: apt-get install -y prometheus-alertmanager")?;

        say("Mosquitto (shipped TLS + ACL configuration)");
        let (broker_port, people_port) = (port()?, port()?);
        write(&dir.join("mosquitto.conf"), &broker_config(dir, broker_port, people_port)?)?;
        let mut broker = Daemon::spawn(
            "mosquitto",
            "/usr/sbin/mosquitto",
            [OsString::from("-c"), dir.join("mosquitto.conf").into()],
            dir.join("logs/mosquitto.out"),
        )
        .context("Mosquitto: apt-get install -y mosquitto")?;
        broker
            .wait_until(START_TIMEOUT, |_| {
                std::net::TcpStream::connect(("127.0.0.1", broker_port)).is_ok()
            })
            .map_err(|e| {
                e.context(
                    std::fs::read_to_string(dir.join("logs/mosquitto.log")).unwrap_or_default(),
                )
            })?;

        say("simulator");
        let mut metrics = BTreeMap::new();
        let mut listen = |name: &str| -> anyhow::Result<SocketAddr> {
            let a = SocketAddr::from(([127, 0, 0, 1], port()?));
            metrics.insert(name.to_string(), a);
            Ok(a)
        };
        let mut sim_args: Vec<OsString> = vec![
            "--write-configs".into(),
            dir.join("sim").into(),
            "--state".into(),
            dir.join("sim-state").into(),
            "--metrics".into(),
            listen("sim")?.to_string().into(),
        ];
        if let Some(p) = &opts.scenario {
            sim_args.extend(["--config".into(), p.into()]);
        }
        let mut sim =
            Daemon::spawn("sim", bin("shopfloor-sim"), sim_args, dir.join("logs/sim.log"))?;
        let mut sim_start_ms = 0;
        sim.wait_until(START_TIMEOUT, |d| {
            let text = d.log_text();
            let ready = text.lines().find_map(|l| l.strip_prefix("ready start_unix_ms="));
            ready
                .and_then(|r| r.split_whitespace().next()?.parse().ok())
                .map(|ms| sim_start_ms = ms)
                .is_some()
        })?;

        let fragment = |f: &str| {
            std::fs::read_to_string(dir.join("sim").join(f))
                .with_context(|| format!("the simulator did not write {f}"))
        };
        let gateway = |id: &str, metrics_at: SocketAddr, devices: &str| {
            format!(
                "# Written by shopfloor-demo.\n{}[metrics]\nlisten = \"{metrics_at}\"\n\n[sparkplug]\ngroup_id = \"{GROUP}\"\nedge_node_id = \"{id}\"\nspool_dir = \"spool/{id}\"\n\n{devices}",
                mqtt_section(id, id, broker_port)
            )
        };
        write(
            &dir.join("modbus-gw.toml"),
            &gateway("modbus-gw", listen("modbus-gw")?, &fragment("modbus-devices.toml")?),
        )?;
        write(
            &dir.join("opcua-gw.toml"),
            &gateway("opcua-gw", listen("opcua-gw")?, &fragment("opcua-servers.toml")?),
        )?;
        let pg = postgres.connection_string();
        let store_section = match &store {
            StoreServer::Postgres => format!("[postgres]\nconnection = \"{pg}\"\n"),
            StoreServer::InfluxDb(db) => {
                format!("[influxdb]\nurl = \"{}\"\ndatabase = \"shopfloor\"\n", db.url())
            }
            StoreServer::ClickHouse(ch) => {
                format!("[clickhouse]\nurl = \"{}\"\ndatabase = \"shopfloor\"\n", ch.url())
            }
        };
        write(
            &dir.join("ingestd.toml"),
            &format!(
                "# Written by shopfloor-demo.\n{}[metrics]\nlisten = \"{}\"\n\n{store_section}\n[ingest]\nplain = false\nsparkplug = true\nbatch_ms = 200\n",
                mqtt_section("ingest-1", "ingest", broker_port),
                listen("ingestd")?
            ),
        )?;
        write(
            &dir.join("alertd.toml"),
            &format!(
                "# Written by shopfloor-demo.\n{}[metrics]\nlisten = \"{}\"\n\n[alerting]\nrules = \"sim/rules.toml\"\nplain = false\nsparkplug = true\n\n[journal]\nconnection = \"{pg}\"\n\n[alertmanager]\nurls = [\"{}\"]\nresend_s = 60\n",
                mqtt_section("alertd", "alerting", broker_port),
                listen("alertd")?,
                alertmanager.url()
            ),
        )?;

        say("ingest and alerting");
        let daemon = |name: &str, program: &str, config: &str| {
            Daemon::spawn(
                name,
                bin(program),
                [OsString::from("--config"), dir.join(config).into()],
                dir.join(format!("logs/{name}.log")),
            )
        };
        let mut ingestd = daemon("ingestd", "shopfloor-ingestd", "ingestd.toml")?;
        let mut alertd = daemon("alertd", "shopfloor-alertd", "alertd.toml")?;
        say("gateways");
        let mut modbus_gw = daemon("modbus-gw", "shopfloor-modbus-gateway", "modbus-gw.toml")?;
        let mut opcua_gw = daemon("opcua-gw", "shopfloor-opcua-gateway", "opcua-gw.toml")?;
        for d in [&mut ingestd, &mut alertd, &mut modbus_gw, &mut opcua_gw] {
            let at = metrics[&d.name];
            d.wait_until(START_TIMEOUT, |_| metrics_up(at))?;
        }
        let sim_metrics = metrics["sim"];
        sim.wait_until(START_TIMEOUT, |_| metrics_up(sim_metrics))?;
        Ok(Self {
            modbus_gw,
            opcua_gw,
            alertd,
            ingestd,
            sim,
            broker,
            alertmanager,
            store,
            postgres,
            dir: dir.clone(),
            broker_port,
            people_port,
            operator_password,
            metrics,
            scenario,
            sim_start_ms,
        })
    }

    /// TLS settings with the live page's service certificate (CN `live`)
    /// for the machine listener ([`Self::broker_port`]).
    pub fn live_tls(&self) -> anyhow::Result<std::sync::Arc<rustls::ClientConfig>> {
        let pki = self.dir.join("pki");
        shopfloor_mqtt::tls_client_config(
            &pki.join("ca.crt"),
            Some((&pki.join("live.crt"), &pki.join("live.key"))),
        )
        .map_err(|e| anyhow::anyhow!("the live page's certificate: {e}"))
    }

    /// The text of a daemon's `/metrics`, or empty when it does not answer.
    pub fn scrape(&self, name: &str) -> String {
        self.metrics
            .get(name)
            .and_then(|a| shopfloor_testkit::http_get(*a, "/metrics").ok())
            .filter(|(s, _)| *s == 200)
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// The Sparkplug source of a machine: `Plant1/modbus-gw/press-01`.
    pub fn source(&self, machine: &str) -> Option<String> {
        let m = self.scenario.plant.machines.iter().find(|m| m.name == machine)?;
        let edge = match m.protocol {
            crate::sim::model::Protocol::Modbus => "modbus-gw",
            crate::sim::model::Protocol::Opcua => "opcua-gw",
        };
        Some(format!("{GROUP}/{edge}/{machine}"))
    }
}

/// One sample from a Prometheus text page: the value of the first line
/// starting with `name` (with or without labels).
pub fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with([' ', '{'])))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}
