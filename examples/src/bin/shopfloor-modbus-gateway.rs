//! The Modbus → Sparkplug gateway: polls the devices of a register map and
//! publishes them as Sparkplug devices of one edge node. See `--help`.

use std::path::PathBuf;

use shopfloor_bridge_modbus::gateway::plain::{self, PlainGateway};
use shopfloor_bridge_modbus::gateway::{Gateway, edge_node_config};
use shopfloor_bridge_modbus::{RegisterMap, explain};
use shopfloor_examples::cli::{ConfigContext as _, Daemon, Generate};
use shopfloor_examples::gateway::{self as gw, Mqtt, Output};
use shopfloor_examples::metrics;

const HELP: &str = concat!(
    shopfloor_examples::help_gateway!("modbus", "9101", "tag", "{machine}/{sensor}", "       "),
    "
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
"
);

struct Args {
    config: PathBuf,
    check: bool,
    explain: bool,
}

const ABOUT: &str = "Modbus TCP/RTU devices → Sparkplug B (or plain topics) over MQTT";

#[derive(clap::Subcommand)]
enum Command {
    #[command(flatten)]
    Generate(Generate),
    /// Print the read plan (which requests poll which registers) and exit
    Explain,
}

shopfloor_examples::impl_modes!(Command);

fn main() -> std::process::ExitCode {
    shopfloor_examples::exit(real_main())
}

fn real_main() -> anyhow::Result<()> {
    let Some(cli) = Daemon::<Command>::parse_as("shopfloor-modbus-gateway", ABOUT, HELP)? else {
        return Ok(());
    };
    let (check, explain_only) = (cli.check_only(), matches!(cli.command, Some(Command::Explain)));
    let args = Args { config: cli.opts.path("modbus-gateway"), check, explain: explain_only };
    let map = RegisterMap::load_deployment(&args.config).bad_config()?;
    if args.explain {
        print!("{}", explain(&map));
        return Ok(());
    }
    let (mqtt, output) = gw::sections(&args.config, &["modbus", "metrics"], false).bad_config()?;
    metrics::listen_address(&args.config).bad_config()?;
    let target = match &output {
        Output::Sparkplug(sp) => {
            Gateway::check(&map, &sp.group_id, &sp.edge_node_id)
                .map_err(|e| anyhow::anyhow!("{}: sparkplug: {e}", args.config.display()))
                .bad_config()?;
            output.describe()
        }
        Output::Plain(p) => {
            plain::check(p, &map)
                .map_err(|e| anyhow::anyhow!("{}: plain: {e}", args.config.display()))
                .bad_config()?;
            output.describe()
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
    shopfloor_examples::init_logging(cli.opts.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(args.config, map, mqtt, output))
}

async fn run(path: PathBuf, map: RegisterMap, mqtt: Mqtt, output: Output) -> anyhow::Result<()> {
    let broker = mqtt.broker(&path)?;
    let gateway = match output {
        Output::Plain(config) => {
            let client_id = mqtt.client_id.clone().unwrap_or_else(|| "shopfloor-modbus".into());
            tracing::info!(devices = map.devices.len(), "plain gateway starting");
            let gateway = PlainGateway::spawn(&map, config, &broker, &client_id);
            // No edge node counters in plain mode: the process's own; and
            // no connection state to be ready on: ready once running.
            let gateway = metrics::serve_until_stop(&path, gateway, |_, _| {}, |_| Ok(())).await?;
            shopfloor_examples::stop_within("the gateway's disconnect", gateway.shutdown()).await?;
            return Ok(());
        }
        Output::Sparkplug(sp) => {
            let driver = gw::driver(&mqtt, &sp, &path)?;
            let node =
                gw::edge_node(edge_node_config(&map, &sp.group_id, &sp.edge_node_id), &sp, &path)?;
            tracing::info!(
                devices = map.devices.len(),
                broker = %format!("{}:{}", mqtt.host, mqtt.port),
                "gateway {}/{} starting",
                sp.group_id,
                sp.edge_node_id
            );
            Gateway::spawn(&map, node, driver)
        }
    };
    gw::run_until_stop(&path, gateway).await
}
