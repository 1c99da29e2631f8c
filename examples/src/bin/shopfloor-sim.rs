//! The plant simulator: machines served as real Modbus TCP and OPC UA
//! devices, with scripted faults. See `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use shopfloor_examples::cli::{ConfigContext as _, Generate, LogFormat};
use shopfloor_examples::metrics::{self, Exposition};
use shopfloor_examples::sim::model::Protocol;
use shopfloor_examples::sim::scenario::{self, Scenario};
use shopfloor_examples::sim::{self, Sim, configs};
use tokio::net::TcpListener;

const HELP: &str = "\
Prints one line on stdout when every device listens:
    ready start_unix_ms=… machines=30 sensors=120
Faults count their at_s from that start. Logs go to stderr (RUST_LOG).

THE SCENARIO:
    [plant]
    seed = 7                   # noise and phases
    tick_ms = 1000             # how often OPC UA values change

    [serve]
    host = \"127.0.0.1\"
    modbus_base_port = 15020   # machine i of a protocol on base + i; 0 = free ports
    opcua_base_port = 14840

    [[line]]                   # press-01 … press-10
    kind = \"press\"             # press | cnc | oven (4 sensors each)
    count = 10
    protocol = \"modbus\"        # modbus | opcua
    area = \"press-shop\"

    [[fault]]
    machine = \"press-03\"
    kind = \"over-temperature\"  # over-temperature | pressure-spike | frozen | dropout | offline
    at_s = 20                  # after the start
    duration_s = 40
    every_s = 300              # optional: repeats

    Modbus: sensor j at holding register 100 + 20 × j (0-based), floats
    as f32 (presses word-swapped, CDAB), CNC temperatures i16 × 0.1,
    counters u32, states bit 0. OPC UA: nsu=urn:shopfloor:sim;s=MACHINE/METRIC.

EXAMPLES:
    shopfloor-sim --write-configs /tmp/plant
    shopfloor-sim --print-scenario > my-plant.toml && shopfloor-sim --config my-plant.toml
";

/// A factory served as real devices — each machine a Modbus TCP server
/// or an OPC UA server of its own — with realistic signals and scripted
/// faults (over-temperature, pressure spike, frozen sensor, dropout,
/// offline)
///
/// Without --config: the seed's plant, 30 machines and 120 sensors.
#[derive(clap::Parser)]
#[command(name = "shopfloor-sim", version, after_long_help = HELP)]
struct Args {
    /// The scenario (TOML) [default: the built-in plant]
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Once listening, write DIR/modbus-devices.toml, DIR/opcua-servers.toml
    /// (append them to a gateway's deployment file) and DIR/rules.toml
    /// (alerting rules for the plant's limits), with the real ports
    #[arg(long, value_name = "DIR")]
    write_configs: Option<PathBuf>,
    /// The OPC UA servers' certificate [default: a folder in the system's
    /// temporary directory]
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// Prometheus GET /metrics here (or [metrics] listen in FILE)
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Check the scenario, print the plant, and exit (0: valid, 78: not)
    #[arg(long)]
    check_config: bool,
    /// Print the built-in scenario (a start for your own) and exit
    #[arg(long)]
    print_scenario: bool,
    /// With --write-configs: write them for the scenario's fixed ports and
    /// exit, serving nothing (a package's files for the simulated plant)
    #[arg(long, requires = "write_configs")]
    no_serve: bool,
    /// How logs are written to stderr (filtered by RUST_LOG, default info)
    #[arg(long, value_enum, default_value_t, env = "SHOPFLOOR_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Generate>,
}

fn main() -> std::process::ExitCode {
    shopfloor_examples::exit(run())
}

fn run() -> anyhow::Result<()> {
    let mut args = <Args as clap::Parser>::parse();
    if args.print_scenario {
        print!("{}", scenario::DEFAULT.trim_start());
        return Ok(());
    }
    match &args.command {
        Some(g) if g.print::<Args>()? => return Ok(()),
        Some(_) => args.check_config = true,
        None => {}
    }
    let scenario = match &args.config {
        Some(path) => Scenario::from_file(path).bad_config()?,
        None => Scenario::default_plant(),
    };
    if args.check_config {
        let p = &scenario.plant;
        let by = |proto| p.machines.iter().filter(|m| m.protocol == proto).count();
        println!(
            "ok: {} machines ({} Modbus, {} OPC UA), {} sensors, {} scripted faults",
            p.machines.len(),
            by(Protocol::Modbus),
            by(Protocol::Opcua),
            p.sensor_count(),
            p.faults.len()
        );
        for f in &p.faults {
            let every = f.every_s.map(|e| format!(", every {e} s")).unwrap_or_default();
            println!("  {} at {} s for {} s{every}", p.describe(f), f.at_s, f.duration_s);
        }
        return Ok(());
    }
    if args.no_serve
        && let Some(dir) = &args.write_configs
    {
        let addrs = fixed_addresses(&scenario)?;
        configs::write_all(
            &scenario.plant,
            &addrs,
            dir,
            &pki_dir(args.state).with_file_name("gateway-pki"),
        )?;
        println!("wrote the gateways' devices and the rules to {}", dir.display());
        return Ok(());
    }
    shopfloor_examples::init_logging(args.log_format);
    let listen = match (args.metrics, &args.config) {
        (Some(a), _) => Some(a),
        (None, Some(path)) => metrics::listen_address(path)?,
        (None, None) => None,
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(serve(scenario, args.write_configs, args.state, listen))
}

/// Where the OPC UA servers keep their certificate (`--state`, or a folder
/// in the system's temporary directory), `pki` in it.
fn pki_dir(state: Option<PathBuf>) -> PathBuf {
    state.unwrap_or_else(|| std::env::temp_dir().join("shopfloor-sim")).join("pki")
}

/// Each machine's address when the scenario's base ports are fixed (not 0).
fn fixed_addresses(scenario: &Scenario) -> anyhow::Result<Vec<SocketAddr>> {
    let ip: std::net::IpAddr = scenario.host.parse().with_context(|| {
        format!("serve.host = {:?}: --no-serve needs an IP address", scenario.host)
    })?;
    let (mut modbus, mut opcua) = (0_u16, 0_u16);
    scenario
        .plant
        .machines
        .iter()
        .map(|m| {
            let (base, n) = match m.protocol {
                Protocol::Modbus => (scenario.modbus_base_port, &mut modbus),
                Protocol::Opcua => (scenario.opcua_base_port, &mut opcua),
            };
            anyhow::ensure!(base != 0, "--no-serve needs fixed base ports (0: any free one)");
            let port = base.checked_add(*n).context("port beyond 65535")?;
            *n += 1;
            Ok(SocketAddr::new(ip, port))
        })
        .collect()
}

async fn bind(host: &str, base: u16, i: usize) -> anyhow::Result<TcpListener> {
    let port =
        if base == 0 { 0 } else { base.checked_add(i as u16).context("port beyond 65535")? };
    TcpListener::bind((host, port))
        .await
        .with_context(|| format!("cannot listen on {host}:{port}; is another simulator running? (--check-config shows the plan)"))
}

async fn serve(
    scenario: Scenario,
    write_configs: Option<PathBuf>,
    state: Option<PathBuf>,
    listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let pki = pki_dir(state);
    let sim = Sim::start(scenario.plant.clone());
    let (stopper, stop) = sim::stop_channel();
    let mut tasks = tokio::task::JoinSet::new();
    let mut addrs = Vec::new();
    let (mut n_modbus, mut n_opcua) = (0, 0);
    for (i, m) in sim.plant.machines.iter().enumerate() {
        let listener = match m.protocol {
            Protocol::Modbus => {
                n_modbus += 1;
                bind(&scenario.host, scenario.modbus_base_port, n_modbus - 1).await?
            }
            Protocol::Opcua => {
                n_opcua += 1;
                bind(&scenario.host, scenario.opcua_base_port, n_opcua - 1).await?
            }
        };
        addrs.push(listener.local_addr()?);
        let (sim, stop) = (sim.clone(), stop.clone());
        match m.protocol {
            Protocol::Modbus => {
                tasks.spawn(sim::modbus::serve(sim, i, listener, stop));
            }
            Protocol::Opcua => {
                // The first server makes the certificate; the rest reuse it.
                if n_opcua == 1 {
                    std::fs::create_dir_all(&pki)
                        .with_context(|| format!("{}: cannot make it", pki.display()))?;
                    sim::opcua::prepare_pki(&pki)?;
                }
                tasks.spawn(sim::opcua::serve(sim, i, listener, pki.clone(), scenario.tick, stop));
            }
        }
    }
    if let Some(dir) = &write_configs {
        configs::write_all(&sim.plant, &addrs, dir, &pki.with_file_name("gateway-pki"))?;
        tracing::info!("gateway devices and alerting rules written to {}", dir.display());
    }
    let metrics_task = match listen {
        Some(l) => {
            let s = sim.clone();
            Some(metrics::serve(l, Arc::new(move || page(&s))).await?.0)
        }
        None => None,
    };
    println!(
        "ready start_unix_ms={} machines={} sensors={}",
        (sim.start_s * 1000.0) as u64,
        sim.plant.machines.len(),
        sim.plant.sensor_count()
    );
    for (m, a) in sim.plant.machines.iter().zip(&addrs) {
        tracing::debug!(machine = %m.name, "{:?} on {a}", m.protocol);
    }
    tracing::info!(
        "{} machines, {} sensors: {n_modbus} Modbus TCP servers, {n_opcua} OPC UA servers on {}",
        sim.plant.machines.len(),
        sim.plant.sensor_count(),
        scenario.host
    );
    let status = status_loop(sim.clone());
    let result = tokio::select! {
        r = shopfloor_examples::wait_for_stop() => r,
        Some(r) = tasks.join_next() => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(anyhow::anyhow!("a device task failed: {e}")),
        },
        () = status => Ok(()),
    };
    stopper.stop();
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("some devices took over 10 s to stop");
    }
    if let Some(t) = metrics_task {
        t.abort();
    }
    result
}

/// Logs fault starts and ends as they happen, and a status line a minute.
async fn status_loop(sim: Arc<Sim>) {
    let mut active: Vec<String> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut last_status = std::time::Instant::now();
    let mut last_requests = 0;
    loop {
        tick.tick().await;
        let now = sim::now_s();
        let current = sim.plant.active_faults(sim.start_s, now);
        for f in current.iter().filter(|f| !active.contains(f)) {
            tracing::info!("fault started: {f}");
        }
        for f in active.iter().filter(|f| !current.contains(f)) {
            tracing::info!("fault ended: {f}");
        }
        active = current;
        let elapsed = last_status.elapsed();
        if elapsed >= Duration::from_secs(60) {
            let requests = sim.stats.modbus_requests.load(Ordering::Relaxed);
            tracing::info!(
                "{:.0} Modbus requests/s, {} connections so far, {} OPC UA values set, faults active: {}",
                (requests - last_requests) as f64 / elapsed.as_secs_f64(),
                sim.stats.modbus_connections.load(Ordering::Relaxed),
                sim.stats.opcua_updates.load(Ordering::Relaxed),
                if active.is_empty() { "none".to_string() } else { active.join(", ") }
            );
            last_requests = requests;
            last_status = std::time::Instant::now();
        }
    }
}

fn page(sim: &Sim) -> String {
    let s = &sim.stats;
    let c = |x: &std::sync::atomic::AtomicU64| x.load(Ordering::Relaxed);
    let mut p = Exposition::new();
    p.process()
        .counter(
            "shopfloor_sim_modbus_requests_total",
            "Modbus requests answered",
            c(&s.modbus_requests),
        )
        .counter(
            "shopfloor_sim_modbus_exceptions_total",
            "Modbus requests answered with an exception",
            c(&s.modbus_exceptions),
        )
        .counter(
            "shopfloor_sim_modbus_connections_total",
            "Modbus connections accepted",
            c(&s.modbus_connections),
        )
        .counter("shopfloor_sim_opcua_values_total", "OPC UA values set", c(&s.opcua_updates))
        .counter(
            "shopfloor_sim_offline_transitions_total",
            "machines taken offline by scripted faults",
            c(&s.offline_transitions),
        )
        .gauge(
            "shopfloor_sim_faults_active",
            "scripted faults active now",
            sim.plant.active_faults(sim.start_s, sim::now_s()).len() as f64,
        );
    p.finish()
}
