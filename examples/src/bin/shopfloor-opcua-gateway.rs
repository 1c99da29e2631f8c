//! The OPC UA → Sparkplug gateway: subscribes to the nodes of its servers
//! and publishes each server as a Sparkplug device of one edge node; its
//! `browse` command writes a deployment file from a server's address
//! space. See `--help`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use shopfloor_bridge_opcua::BridgeConfig;
use shopfloor_bridge_opcua::browse::{BrowseOptions, browse, config_toml};
use shopfloor_bridge_opcua::client::ClientTuning;
use shopfloor_bridge_opcua::config::{ServerConfig, parse_node_id};
use shopfloor_bridge_opcua::gateway::Gateway;
use shopfloor_bridge_opcua::gateway::plain::{self, PlainGateway};
use shopfloor_examples::cli::{ConfigContext as _, Daemon, Generate, LogFormat};
use shopfloor_examples::gateway::{self as gw, Mqtt, Output};
use shopfloor_examples::metrics;
use shopfloor_sparkplug::EdgeNodeConfig;

const HELP: &str = concat!(
    shopfloor_examples::help_gateway!("opcua", "9102", "node", "{server}/{metric}", "        "),
    "
    Write outcomes (the server's status code) go to
    shopfloor/writes/{group}/{edge} (plain: shopfloor/writes/{site}/{area}).

    [[server]]                    # one Sparkplug device per server
    name = \"press-line\"
    endpoint = \"opc.tcp://plc-1:4840/\"
    security_policy = \"Basic256Sha256\"
    security_mode = \"SignAndEncrypt\"
    user = \"bridge\"
    password_env = \"PRESS_LINE_PASSWORD\"
    [[server.node]]
    metric = \"Hydraulics/Pressure\"
    node_id = \"nsu=urn:press-line:plc;s=Press1.Pressure\"
    deadband = { absolute = 0.5 }

    (every server and node key: the shopfloor-bridge-opcua README)

FIRST CONNECT TO A SECURED SERVER:
    The server's certificate lands in <pki_dir>/rejected/ and the log says
    which file to move to <pki_dir>/trusted/; the gateway retries by itself.
    The server must trust the gateway's own certificate, <pki_dir>/own/cert.der.

EXAMPLES:
    shopfloor-opcua-gateway browse opc.tcp://localhost:4840/ --out plant.toml
    shopfloor-opcua-gateway --config plant.toml --check-config
    RUST_LOG=debug shopfloor-opcua-gateway --config plant.toml
"
);

const ABOUT: &str = "OPC UA servers → Sparkplug B (or plain topics) over MQTT";

#[derive(clap::Subcommand)]
enum Command {
    #[command(flatten)]
    Generate(Generate),
    /// Write a deployment file from a server's variables
    Browse(Box<BrowseArgs>),
}

shopfloor_examples::impl_modes!(Command);

#[derive(clap::Args)]
struct BrowseArgs {
    /// The server's endpoint, opc.tcp://host:port/
    endpoint: String,
    /// Write there (default: standard output)
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// The server's name in the file
    #[arg(long, default_value = "opcua-1")]
    name: String,
    /// Start below this node (nsu=URI;s=… or ns=2;i=…) [default: the
    /// Objects folder, without namespace 0]
    #[arg(long, value_name = "NODEID")]
    start: Option<String>,
    /// Levels below the start
    #[arg(long, value_name = "N", default_value_t = 10)]
    max_depth: usize,
    /// Stop after N variables
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    max_variables: usize,
    /// Security policy: Basic256Sha256, Aes128_Sha256_RsaOaep,
    /// Aes256_Sha256_RsaPss [default: None]
    #[arg(long, value_name = "P")]
    policy: Option<String>,
    /// Security mode: Sign or SignAndEncrypt
    #[arg(long, value_name = "M")]
    mode: Option<String>,
    /// User name; the password from OPCUA_PASSWORD
    #[arg(long)]
    user: Option<String>,
    /// Send the password with policy None (a trusted network)
    #[arg(long)]
    allow_password_without_security: bool,
    /// The bridge's certificates
    #[arg(long, value_name = "DIR", default_value = "pki")]
    pki: PathBuf,
}

fn main() -> std::process::ExitCode {
    shopfloor_examples::exit(real_main())
}

fn real_main() -> anyhow::Result<()> {
    let Some(cli) = Daemon::<Command>::parse_as("shopfloor-opcua-gateway", ABOUT, HELP)? else {
        return Ok(());
    };
    if let Some(Command::Browse(b)) = &cli.command {
        return browse_command(b, cli.opts.log_format);
    }
    let check = cli.check_only();
    let path = cli.opts.path("opcua-gateway");
    let bridge = BridgeConfig::from_deployment(&path).bad_config()?;
    let (mqtt, output) = gw::sections(&path, &["server", "metrics"], true).bad_config()?;
    metrics::listen_address(&path).bad_config()?;
    if let Output::Plain(p) = &output {
        plain::check(p, &bridge)
            .map_err(|e| anyhow::anyhow!("{}: plain: {e}", path.display()))
            .bad_config()?;
    }
    let nodes: usize = bridge.servers.iter().map(|s| s.nodes.len()).sum();
    if check {
        println!(
            "{}: valid: {} servers, {nodes} nodes, {} on {}:{}",
            path.display(),
            bridge.servers.len(),
            output.describe(),
            mqtt.host,
            mqtt.port
        );
        return Ok(());
    }
    shopfloor_examples::init_logging(cli.opts.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(path, bridge, mqtt, output))
}

async fn run(
    path: PathBuf,
    bridge: BridgeConfig,
    mqtt: Mqtt,
    output: Output,
) -> anyhow::Result<()> {
    let broker = mqtt.broker(&path)?;
    tracing::info!(
        servers = bridge.servers.len(),
        broker = %format!("{}:{}", mqtt.host, mqtt.port),
        "gateway to {} starting",
        output.describe()
    );
    match output {
        Output::Plain(config) => {
            let client_id = mqtt.client_id.clone().unwrap_or_else(|| "shopfloor-opcua".into());
            let gateway =
                PlainGateway::spawn(&bridge, config, &broker, &client_id, ClientTuning::default());
            // No edge node counters in plain mode: the process's own; and
            // no connection state to be ready on: ready once running.
            let gateway = metrics::serve_until_stop(&path, gateway, |_, _| {}, |_| Ok(())).await?;
            shopfloor_examples::stop_within("the gateway's disconnect", gateway.shutdown()).await?;
        }
        Output::Sparkplug(sp) => {
            let driver = gw::driver(&mqtt, &sp, &path)?;
            let config = EdgeNodeConfig::new(sp.group_id.clone(), sp.edge_node_id.clone());
            let node = gw::edge_node(config, &sp, &path)?;
            let gateway = Gateway::spawn(&bridge, node, driver, ClientTuning::default());
            gw::run_until_stop(&path, gateway).await?;
        }
    }
    Ok(())
}

fn browse_command(b: &BrowseArgs, log_format: LogFormat) -> anyhow::Result<()> {
    let (endpoint, name, pki) = (&b.endpoint, &b.name, &b.pki);
    let (policy, mode, user, plain_password) =
        (&b.policy, &b.mode, &b.user, b.allow_password_without_security);
    if !endpoint.starts_with("opc.tcp://") {
        bail!("browse {endpoint:?}: give the server's endpoint, opc.tcp://host:port/");
    }
    if let Some(s) = &b.start {
        parse_node_id(s).map_err(|e| anyhow::anyhow!("--start: {e}"))?;
    }
    let (start, depth, max, out) = (b.start.clone(), b.max_depth, b.max_variables, b.out.clone());
    // The same checks as a file gets: build one and parse it.
    let mut text = format!(
        "[[server]]\nname = {name:?}\nendpoint = {endpoint:?}\npki_dir = {:?}\n",
        pki.display().to_string()
    );
    if let Some(p) = &policy {
        text.push_str(&format!("security_policy = {p:?}\n"));
    }
    if let Some(m) = &mode {
        text.push_str(&format!("security_mode = {m:?}\n"));
    }
    if let Some(u) = &user {
        text.push_str(&format!("user = {u:?}\npassword_env = \"OPCUA_PASSWORD\"\n"));
        if plain_password {
            text.push_str("allow_password_without_security = true\n");
        }
    }
    text.push_str("[[server.node]]\nmetric = \"x\"\nnode_id = \"i=2258\"\n");
    let server: ServerConfig = BridgeConfig::from_toml(&text)
        .map_err(|e| {
            let e = e.to_string().replace("server ", "browse: server ");
            anyhow::anyhow!(
                "{}",
                e.replace(
                    "set allow_password_without_security = true",
                    "pass --allow-password-without-security"
                )
            )
        })?
        .servers
        .remove(0);
    shopfloor_examples::init_logging(log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut options = BrowseOptions::default();
    (options.start, options.max_depth, options.max_variables) = (start, depth, max);
    let walk = runtime.block_on(browse(&server, &ClientTuning::default(), &options, |n| {
        eprintln!("browse: {n} variables so far");
    }));
    let walk = walk.map_err(|e| anyhow::anyhow!("browse {endpoint}: {e}"))?;
    let mut file = String::from(
        "# A deployment for shopfloor-opcua-gateway. Check the [mqtt] and [sparkplug]\n\
         # sections, rename metrics as you like, delete what you do not want.\n\n\
         [mqtt]\nhost = \"127.0.0.1\"\nport = 1883\n\n[sparkplug]\ngroup_id = \"Plant1\"\nedge_node_id = \"opcua-gw\"\n\n",
    );
    file.push_str(&config_toml(&server, &walk));
    eprintln!(
        "browse: {} variables{}",
        walk.variables.len(),
        if walk.truncated {
            " (stopped early: raise --max-depth or --max-variables for more)"
        } else {
            ""
        }
    );
    match out {
        Some(path) => {
            std::fs::write(&path, file).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("browse: wrote {}", path.display());
        }
        None => print!("{file}"),
    }
    Ok(())
}
