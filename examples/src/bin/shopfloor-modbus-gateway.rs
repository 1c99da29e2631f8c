//! The Modbus → Sparkplug gateway: polls the devices of a register map and
//! publishes them as Sparkplug devices of one edge node. See `--help`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use shopfloor_bridge_modbus::gateway::{Gateway, edge_node_config};
use shopfloor_bridge_modbus::{RegisterMap, explain};
use shopfloor_sparkplug::EdgeNode;
use shopfloor_sparkplug::mqtt::{Broker, DriverConfig, Protocol};
use shopfloor_sparkplug::spool::FileSpool;

const HELP: &str = "\
shopfloor-modbus-gateway: Modbus TCP/RTU devices → Sparkplug B over MQTT

USAGE:
    shopfloor-modbus-gateway --config FILE                 run until Ctrl-C / SIGTERM
    shopfloor-modbus-gateway --config FILE --check-config  check the file and exit
    shopfloor-modbus-gateway explain --config FILE         print the read plan and exit

OPTIONS:
    --config FILE     the deployment file (TOML): [mqtt], [sparkplug], [modbus]
    --check-config    check every section, print what would run, exit (0 = valid)
    -h, --help        this text

Logs go to stderr, filtered by RUST_LOG (default: info).

THE FILE:
    [mqtt]
    host = \"127.0.0.1\"            # the broker
    port = 1883
    client_id = \"modbus-gw\"       # default: the edge node id
    protocol = \"5\"                # or \"3.1.1\"
    username = \"gateway\"          # optional; the password from
    password_file = \"/etc/shopfloor/mqtt.pass\"   # a file, or SHOPFLOOR_MQTT_PASSWORD

    [sparkplug]                   # Sparkplug B output; or [plain] below
    group_id = \"Plant1\"
    edge_node_id = \"modbus-gw\"
    primary_host_id = \"scada\"     # optional: birth only while that host is online
    spool_dir = \"/var/lib/shopfloor/modbus-spool\"   # optional: store and forward on disk
    spool_mb = 1024

    # [plain]                     # instead of [sparkplug]: one topic per tag,
    # site = \"plant1\"             # shopfloor/{site}/{area}/{machine}/{sensor},
    # area = \"press-shop\"         # writes on that topic + /set
    # codec = \"json\"              # or \"protobuf\", \"cbor\"

    [modbus.groups]
    fast = 250                    # poll groups, ms (\"default\" is 1000)

    [[modbus.device]]
    name = \"press-1\"
    host = \"10.0.4.21\"
    [[modbus.device.tag]]
    name = \"Hydraulics/Pressure\"
    register = \"40101\"
    type = \"f32\"
    order = \"CDAB\"
    unit = \"bar\"
    group = \"fast\"

    (every register-map key: the shopfloor-bridge-modbus README)

EXAMPLES:
    shopfloor-modbus-gateway explain --config plant.toml
    RUST_LOG=debug shopfloor-modbus-gateway --config plant.toml
";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Mqtt {
    #[serde(default = "shopfloor_examples::localhost")]
    host: String,
    #[serde(default = "shopfloor_examples::mqtt_port")]
    port: u16,
    client_id: Option<String>,
    #[serde(default = "v5")]
    protocol: String,
    username: Option<String>,
    password_file: Option<PathBuf>,
}

fn v5() -> String {
    "5".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Sparkplug {
    group_id: String,
    edge_node_id: String,
    primary_host_id: Option<String>,
    spool_dir: Option<PathBuf>,
    #[serde(default = "spool_mb")]
    spool_mb: u64,
}

const fn spool_mb() -> u64 {
    1024
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Plain {
    site: String,
    area: String,
    #[serde(default = "json")]
    codec: String,
    template: Option<String>,
}

fn json() -> String {
    "json".into()
}

/// Where the readings go.
enum Output {
    Sparkplug(Sparkplug),
    Plain(shopfloor_bridge_modbus::gateway::plain::PlainConfig),
}

#[derive(Deserialize)]
struct Deployment {
    mqtt: Option<Mqtt>,
    sparkplug: Option<Sparkplug>,
    plain: Option<Plain>,
    #[serde(flatten)]
    _others: std::collections::BTreeMap<String, toml::Value>,
}

struct Args {
    config: PathBuf,
    check: bool,
    explain: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let (mut config, mut check, mut explain) = (None, false, false);
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--config" => {
                config =
                    Some(PathBuf::from(it.next().context("--config needs a file; see --help")?))
            }
            "--check-config" => check = true,
            "explain" => explain = true,
            "-h" | "--help" => {
                print!("{HELP}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; see --help"),
        }
    }
    let config = config.context("--config FILE is required; see --help")?;
    Ok(Args { config, check, explain })
}

/// The sections this binary owns, checked, with the file named in errors.
fn sections(path: &Path) -> anyhow::Result<(Mqtt, Output)> {
    let doc: Deployment = shopfloor_examples::read_toml(path)?;
    let mqtt = doc.mqtt.with_context(|| {
        format!("{}: no [mqtt] section; add [mqtt] with host and port", path.display())
    })?;
    if !["5", "3.1.1"].contains(&mqtt.protocol.as_str()) {
        bail!("{}: mqtt.protocol = {:?}; use \"5\" or \"3.1.1\"", path.display(), mqtt.protocol);
    }
    let output = match (doc.sparkplug, doc.plain) {
        (Some(s), None) => Output::Sparkplug(s),
        (None, Some(p)) => Output::Plain(plain(p, path)?),
        (Some(_), Some(_)) => {
            bail!("{}: both [sparkplug] and [plain]; choose one output", path.display())
        }
        (None, None) => bail!(
            "{}: no [sparkplug] section; add [sparkplug] with group_id and edge_node_id (or [plain] with site and area)",
            path.display()
        ),
    };
    Ok((mqtt, output))
}

fn plain(
    p: Plain,
    path: &Path,
) -> anyhow::Result<shopfloor_bridge_modbus::gateway::plain::PlainConfig> {
    let mut c = shopfloor_bridge_modbus::gateway::plain::PlainConfig::new(p.site, p.area);
    c.codec = shopfloor_examples::codec(&p.codec, "plain.codec", path)?;
    if let Some(t) = p.template {
        c.template = shopfloor_schemas::TopicTemplate::parse(&t)
            .map_err(|e| anyhow::anyhow!("{}: plain.template: {e}", path.display()))?;
    }
    Ok(c)
}

fn main() -> std::process::ExitCode {
    shopfloor_examples::exit(real_main())
}

fn real_main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let map = RegisterMap::load_deployment(&args.config)?;
    if args.explain {
        print!("{}", explain(&map));
        return Ok(());
    }
    let (mqtt, output) = sections(&args.config)?;
    let target = match &output {
        Output::Sparkplug(sp) => {
            Gateway::check(&map, &sp.group_id, &sp.edge_node_id)
                .map_err(|e| anyhow::anyhow!("{}: sparkplug: {e}", args.config.display()))?;
            format!("edge node {}/{}", sp.group_id, sp.edge_node_id)
        }
        Output::Plain(p) => {
            p.check(&map).map_err(|e| anyhow::anyhow!("{}: plain: {e}", args.config.display()))?;
            format!("plain topics {} ({})", p.template.as_str(), p.codec.as_str())
        }
    };
    let tags: usize = map.devices.iter().map(|d| d.tags.len()).sum();
    if args.check {
        println!(
            "{}: valid: {} devices, {tags} tags, {target} on {}:{}",
            args.config.display(),
            map.devices.len(),
            mqtt.host,
            mqtt.port
        );
        return Ok(());
    }
    shopfloor_examples::init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(args.config, map, mqtt, output))
}

async fn run(path: PathBuf, map: RegisterMap, mqtt: Mqtt, output: Output) -> anyhow::Result<()> {
    let mut broker = Broker::new(mqtt.host.clone(), mqtt.port);
    if let Some(user) = &mqtt.username {
        let pass = shopfloor_examples::mqtt_password(mqtt.password_file.as_deref(), &path)?
            .unwrap_or_default();
        broker.credentials = Some((user.clone(), pass));
    }
    let sp = match output {
        Output::Sparkplug(sp) => sp,
        Output::Plain(config) => {
            let client_id = mqtt.client_id.clone().unwrap_or_else(|| "shopfloor-modbus".into());
            tracing::info!(devices = map.devices.len(), "plain gateway starting");
            let gateway = shopfloor_bridge_modbus::gateway::plain::PlainGateway::spawn(
                &map, config, &broker, &client_id,
            );
            shopfloor_examples::wait_for_stop().await?;
            tokio::time::timeout(Duration::from_secs(10), gateway.shutdown()).await.ok();
            return Ok(());
        }
    };
    let client_id = mqtt.client_id.clone().unwrap_or_else(|| sp.edge_node_id.clone());
    let mut driver = DriverConfig::new(client_id, broker);
    if mqtt.protocol == "3.1.1" {
        driver.protocol = Protocol::V311;
    }
    let mut config = edge_node_config(&map, &sp.group_id, &sp.edge_node_id);
    config.primary_host_id = sp.primary_host_id.clone();
    let node = match &sp.spool_dir {
        Some(dir) => {
            let (spool, report) = FileSpool::open(dir, sp.spool_mb << 20)
                .with_context(|| format!("{}: sparkplug.spool_dir", path.display()))?;
            tracing::info!(
                readings = report.readings,
                truncated_bytes = report.truncated_bytes,
                "spool {}",
                dir.display()
            );
            EdgeNode::with_spool(config, Box::new(spool))?
        }
        None => EdgeNode::new(config)?,
    };
    tracing::info!(
        devices = map.devices.len(),
        broker = %format!("{}:{}", mqtt.host, mqtt.port),
        "gateway {}/{} starting",
        sp.group_id,
        sp.edge_node_id
    );
    let gateway = Gateway::spawn(&map, node, driver);
    shopfloor_examples::wait_for_stop().await?;
    tokio::time::timeout(Duration::from_secs(10), gateway.shutdown()).await.ok();
    Ok(())
}
