//! The all-in-one: the whole reference deployment on this machine, with
//! the shipped secure configuration, and a live status until Ctrl-C. See
//! `--help`; `scripts/demo` builds and runs it.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use shopfloor_examples::cli::Generate;
use shopfloor_examples::plant::{Options, Plant, StoreKind, StoreServer, metric};
use tokio_postgres::NoTls;

const HELP: &str = "\
It starts Mosquitto, PostgreSQL and Alertmanager from the system's binaries
(apt-get install -y mosquitto postgresql prometheus-alertmanager), then
shopfloor-sim, both gateways, shopfloor-ingestd and shopfloor-alertd from
the folder of this binary. Each part's log is in DIR/logs/.

EXAMPLES:
    scripts/demo                                   # builds, then runs this
    shopfloor-demo --state /tmp/plant --duration 60 --plain
    scripts/demo --store clickhouse
";

/// The whole plant on this machine — simulator → gateways → Mosquitto
/// (TLS, client certificates, ACL) → PostgreSQL and alarms →
/// Alertmanager — with a live status until Ctrl-C, then everything stops
#[derive(clap::Parser)]
#[command(name = "shopfloor-demo", version, after_long_help = HELP)]
struct Args {
    /// Where certificates, configurations, data and logs go (replaced on
    /// each start)
    #[arg(long, value_name = "DIR", default_value = "shopfloor-demo")]
    state: PathBuf,
    /// The simulator's scenario [default: the seed's plant, 30 machines,
    /// 120 sensors, a fault of each kind] (shopfloor-sim --print-scenario
    /// shows it)
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// Where ingest writes the readings: postgres, influxdb or clickhouse
    /// (started here too: apt-get install -y influxdb / clickhouse-server);
    /// the alarm journal stays in PostgreSQL
    #[arg(long, value_name = "STORE", default_value = "postgres", value_parser = parse_store)]
    store: StoreKind,
    /// The live plant page [a free port when that one is taken]
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8088")]
    live: std::net::SocketAddr,
    /// Stop after this long [default: until Ctrl-C]; exits non-zero unless
    /// readings reached the store
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    duration: Option<Duration>,
    /// Status as lines, not a redrawn screen
    #[arg(long)]
    plain: bool,
    #[command(subcommand)]
    command: Option<Generate>,
}

fn parse_store(v: &str) -> Result<StoreKind, String> {
    StoreKind::parse(v).ok_or_else(|| "give postgres, influxdb or clickhouse".to_owned())
}

fn parse_secs(v: &str) -> Result<Duration, String> {
    v.parse()
        .ok()
        .filter(|s: &f64| *s > 0.0 && s.is_finite())
        .map(Duration::from_secs_f64)
        .ok_or_else(|| "give a number of seconds, like 60".to_owned())
}

fn parse_args() -> anyhow::Result<Option<Args>> {
    let args = <Args as clap::Parser>::parse();
    if let Some(g) = &args.command
        && g.print::<Args>()?
    {
        return Ok(None);
    }
    Ok(Some(args))
}

fn main() -> std::process::ExitCode {
    shopfloor_examples::exit(run())
}

fn run() -> anyhow::Result<()> {
    let Some(args) = parse_args()? else { return Ok(()) };
    let bins = std::env::current_exe()?
        .parent()
        .context("cannot tell the folder of this binary")?
        .to_owned();
    std::fs::create_dir_all(&args.state)
        .with_context(|| format!("{}: cannot make it", args.state.display()))?;
    let dir = args.state.canonicalize()?;
    let started = Instant::now();
    let plant = Plant::start(
        &Options { scenario: args.scenario.clone(), store: args.store, ..Options::new(&dir, bins) },
        |step| {
            println!("[{:>5.1} s] starting {step}", started.elapsed().as_secs_f64());
        },
    )?;
    let p = &plant;
    println!(
        "\nThe plant runs ({} machines, {} sensors) in {:.1} s. Everything is in {}:\n\
         \x20 logs            {}/logs/\n\
         \x20 PostgreSQL      psql \"{}\"  (SELECT * FROM shopfloor.readings ORDER BY time DESC LIMIT 10;)\n\
         {}\
         \x20 Alertmanager    {}/#/alerts\n\
         \x20 MQTT (people)   mosquitto_sub -h localhost -p {} --cafile {}/pki/ca.crt -u operator -P {} -t 'shopfloor/alarms/#' -v\n\
         \x20 metrics         {}\n",
        p.scenario.plant.machines.len(),
        p.scenario.plant.sensor_count(),
        started.elapsed().as_secs_f64(),
        dir.display(),
        dir.display(),
        p.postgres.connection_string(),
        p.store.how_to_query().map(|q| format!("  {q}\n")).unwrap_or_default(),
        p.alertmanager.url(),
        p.people_port,
        dir.display(),
        p.operator_password,
        p.metrics
            .iter()
            .map(|(n, a)| format!("{n} http://{a}/metrics"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = rt.block_on(async {
        let live = live_page(&plant, args.live).await?;
        println!("  live page       http://{}/\n", live.addr);
        status(&plant, args.duration, args.plain).await
    });
    let store = match plant.store.kind() {
        StoreKind::Postgres => String::new(),
        other => format!(", {}", other.name()),
    };
    println!(
        "\nstopping: gateways, alerting, ingest, simulator, Mosquitto, Alertmanager{store}, PostgreSQL"
    );
    drop(plant);
    println!("stopped; the logs stay in {}/logs/", dir.display());
    result
}

/// The live plant page, logged in with its own certificate (the ACL's
/// `live` role: reads, asks for rebirths, sends alarm commands).
async fn live_page(
    plant: &Plant,
    listen: std::net::SocketAddr,
) -> anyhow::Result<shopfloor_examples::live::Live> {
    let mut broker = shopfloor_mqtt::Broker::new("localhost", plant.broker_port);
    broker.tls = Some(plant.live_tls()?);
    let config = |listen| shopfloor_examples::live::LiveConfig {
        mqtt: shopfloor_mqtt::Connection::new(
            shopfloor_examples::live::default_client_id(),
            broker.clone(),
        ),
        listen,
        // On loopback, for the person at this machine: no login.
        security: shopfloor_examples::live::Security::default(),
    };
    match shopfloor_examples::live::start(config(listen)).await {
        Ok(live) => Ok(live),
        // Taken (another demo, say): any free port.
        Err(_) => {
            shopfloor_examples::live::start(config(std::net::SocketAddr::from(([127, 0, 0, 1], 0))))
                .await
        }
    }
}

/// What the status line shows, from the daemons' /metrics and the database.
struct Snapshot {
    at: Instant,
    rows: f64,
    messages: f64,
}

async fn status(plant: &Plant, duration: Option<Duration>, plain: bool) -> anyhow::Result<()> {
    let (pg, conn) = tokio_postgres::connect(&plant.postgres.connection_string(), NoTls).await?;
    tokio::spawn(conn);
    let redraw = !plain && std::io::stdout().is_terminal();
    let until = duration.map(|d| Instant::now() + d);
    let mut last: Option<Snapshot> = None;
    let mut drawn = 0;
    let mut total_rows = 0.0;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let store = plant.store.kind().name();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
        if until.is_some_and(|u| Instant::now() >= u) {
            break;
        }
        let ingest = plant.scrape("ingestd");
        let alerts = plant.scrape("alertd");
        let rows = metric(&ingest, "shopfloor_ingest_rows_total").unwrap_or(0.0);
        let messages = metric(&ingest, "shopfloor_ingest_messages_total").unwrap_or(0.0);
        total_rows = rows;
        let now = Instant::now();
        let (row_rate, msg_rate) = match &last {
            Some(l) => {
                let s = now.duration_since(l.at).as_secs_f64().max(0.001);
                ((rows - l.rows) / s, (messages - l.messages) / s)
            }
            None => (0.0, 0.0),
        };
        last = Some(Snapshot { at: now, rows, messages });
        let lag = match &plant.store {
            StoreServer::Postgres => pg
                .query_one(
                    "SELECT extract(epoch FROM now() - max(time))::float8 FROM shopfloor.readings
                 WHERE time > now() - interval '1 minute'",
                    &[],
                )
                .await
                .ok()
                .and_then(|r| r.get::<_, Option<f64>>(0)),
            other => other.newest_age_s(),
        };
        let alarms: Vec<String> = pg
            .query(
                "SELECT source, metric, active FROM shopfloor.alarm_state WHERE active IS NOT NULL ORDER BY source, metric",
                &[],
            )
            .await
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        let source: String = r.get(0);
                        let machine = source.rsplit('/').next().unwrap_or(&source).to_owned();
                        format!("{machine} {} {}", r.get::<_, String>(1), r.get::<_, String>(2))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let edges: Vec<String> = ["modbus-gw", "opcua-gw"]
            .iter()
            .map(|g| {
                let page = plant.scrape(g);
                let online = metric(&page, "shopfloor_edge_online") == Some(1.0);
                let stored = metric(&page, "shopfloor_edge_stored_readings").unwrap_or(0.0);
                match (online, stored) {
                    (true, s) if s > 0.0 => format!("{g} online ({s:.0} stored)"),
                    (true, _) => format!("{g} online"),
                    (false, _) => format!("{g} OFFLINE"),
                }
            })
            .collect();
        let faults = {
            let s = &plant.scenario.plant;
            let now_s = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            s.active_faults(plant.sim_start_ms as f64 / 1000.0, now_s)
        };
        let lines = [
            format!(
                "readings  {row_rate:>6.0}/s into {store} ({msg_rate:.0} MQTT messages/s), {rows:.0} so far, newest {} old",
                lag.map_or_else(|| "—".to_owned(), |l| format!("{l:.1} s"))
            ),
            format!("gateways  {}", edges.join(", ")),
            format!(
                "alarms    {} active{}{}",
                alarms.len(),
                if alarms.is_empty() { "" } else { ": " },
                alarms.join(", ")
            ),
            format!(
                "faults    {}",
                if faults.is_empty() {
                    "none now (the simulator scripts them)".to_owned()
                } else {
                    faults.join(", ")
                }
            ),
            format!(
                "(alertd has published {} alarm events)",
                metric(&alerts, "shopfloor_alerting_events_total").unwrap_or(0.0)
            ),
        ];
        let mut out = std::io::stdout().lock();
        if redraw {
            // Back over the previous block and clear it.
            if drawn > 0 {
                let _ = write!(out, "\x1b[{drawn}A\x1b[J");
            }
            for l in &lines {
                let _ = writeln!(out, "{l}");
            }
            drawn = lines.len();
        } else {
            let _ = writeln!(out, "{}", lines.join(" | "));
        }
        let _ = out.flush();
    }
    if duration.is_some() && total_rows <= 0.0 {
        anyhow::bail!("no reading reached {store}; see the logs in {}/logs/", plant.dir.display());
    }
    Ok(())
}
