//! The sections both gateway binaries read: `[mqtt]`, and the output,
//! `[sparkplug]` or `[plain]`; and how they become a broker, a driver and
//! an edge node.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;
use shopfloor_mqtt::DriverConfig;
use shopfloor_mqtt::plain::PlainConfig;
use shopfloor_sparkplug::spool::FileSpool;
use shopfloor_sparkplug::{EdgeNode, EdgeNodeConfig};

/// `[mqtt]`: the broker and how to log in.
pub use shopfloor_mqtt::MqttSection as Mqtt;

/// `[sparkplug]`: the edge node.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sparkplug {
    /// The group id.
    pub group_id: String,
    /// The edge node id.
    pub edge_node_id: String,
    /// Birth only while this host application is online.
    pub primary_host_id: Option<String>,
    /// Store and forward on disk, here.
    pub spool_dir: Option<PathBuf>,
    /// Where the node keeps its `bdSeq` across restarts (default: the
    /// spool folder).
    pub state_dir: Option<PathBuf>,
    /// Send each metric's datatype in DATA too (for hosts that need it,
    /// such as Eclipse Tahu's JavaScript decoder).
    #[serde(default)]
    pub datatypes_in_data: bool,
    /// The spool's size in MiB.
    #[serde(default = "spool_mb")]
    pub spool_mb: u64,
}

const fn spool_mb() -> u64 {
    1024
}

/// `[plain]`: one topic per value instead of Sparkplug.
#[derive(Debug, Deserialize)]
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

/// The start of a gateway binary's `--help` text, for `concat!` in its
/// `HELP`: the sections both gateways read, `[mqtt]`, `[metrics]` (on
/// `127.0.0.1:$port`), [`Sparkplug`] and `[plain]`. `$name` (`"modbus"`)
/// names its client, edge node and folders, `$item` what one plain topic
/// carries (`"tag"`), `$levels` the topic's levels after the area
/// (`"{machine}/{sensor}"`), `$pad` the spaces that line up the comment
/// after the client id with the others.
#[macro_export]
macro_rules! help_gateway {
    ($name:literal, $port:literal, $item:literal, $levels:literal, $pad:literal) => {
        concat!(
            "\
THE FILE:
    [mqtt]
    host = \"127.0.0.1\"            # the broker
    port = 1883
    client_id = \"",
            $name,
            "-gw\"",
            $pad,
            "# default: the edge node id
    protocol = \"5\"                # or \"3.1.1\"
    username = \"gateway\"          # optional; the password from
",
            $crate::help_mqtt_login!(),
            "\n",
            $crate::help_metrics!($port),
            "
    [sparkplug]                   # Sparkplug B output; or [plain] below
    group_id = \"Plant1\"
    edge_node_id = \"",
            $name,
            "-gw\"
    primary_host_id = \"scada\"     # optional: birth only while that host is online
    spool_dir = \"/var/lib/shopfloor/",
            $name,
            "-spool\"   # optional: store and forward on disk
    # state_dir = \"/var/lib/shopfloor/",
            $name,
            "-state\"  # bdSeq across restarts (default: spool_dir)
    # datatypes_in_data = true     # datatype in DATA too (Tahu JS sparkplug-payload needs it)
                                   # (a relative path: from this file's folder)
    spool_mb = 1024

    # [plain]                     # instead of [sparkplug]: one topic per ",
            $item,
            ",
    # site = \"plant1\"             # shopfloor/{site}/{area}/",
            $levels,
            ",
    # area = \"press-shop\"         # writes on that topic + /set
    # codec = \"json\"              # or \"protobuf\", \"cbor\"
"
        )
    };
}

/// Where a gateway's readings go.
#[derive(Debug)]
pub enum Output {
    /// A Sparkplug edge node.
    Sparkplug(Sparkplug),
    /// Plain topics.
    Plain(PlainConfig),
}

impl Output {
    /// What it is, for `--check-config` and the log.
    pub fn describe(&self) -> String {
        match self {
            Self::Sparkplug(sp) => format!("edge node {}/{}", sp.group_id, sp.edge_node_id),
            Self::Plain(p) => {
                format!("plain topics {} ({})", p.template.as_str(), p.codec.as_str())
            }
        }
    }
}

#[derive(Deserialize)]
struct Deployment {
    mqtt: Option<Mqtt>,
    sparkplug: Option<Sparkplug>,
    plain: Option<Plain>,
    #[serde(flatten)]
    others: std::collections::BTreeMap<String, toml::Value>,
}

/// Reads `[mqtt]` and the output section of a deployment file; `own` are
/// the other sections this binary reads (any further section is an error
/// when `strict`).
pub fn sections(path: &Path, own: &[&str], strict: bool) -> anyhow::Result<(Mqtt, Output)> {
    let doc: Deployment = crate::read_toml(path)?;
    if strict && let Some(k) = doc.others.keys().find(|k| !own.contains(&k.as_str())) {
        let mut known: Vec<String> =
            ["mqtt", "sparkplug", "plain"].iter().map(|s| format!("[{s}]")).collect();
        known.extend(own.iter().map(|s| format!("[{s}]")));
        bail!("{}: unknown section [{k}]; this file has {}", path.display(), known.join(", "));
    }
    let mqtt = doc.mqtt.with_context(|| {
        format!("{}: no [mqtt] section; add [mqtt] with host and port", path.display())
    })?;
    let output = match (doc.sparkplug, doc.plain) {
        (Some(s), None) => {
            EdgeNode::new(EdgeNodeConfig::new(s.group_id.clone(), s.edge_node_id.clone()))
                .map_err(|e| anyhow::anyhow!("{}: sparkplug: {e}", path.display()))?;
            Output::Sparkplug(s)
        }
        (None, Some(p)) => {
            let mut p = plain(p, path)?;
            p.protocol = mqtt.protocol;
            Output::Plain(p)
        }
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

fn plain(p: Plain, path: &Path) -> anyhow::Result<PlainConfig> {
    let mut c = PlainConfig::new(p.site, p.area);
    c.codec = crate::codec(&p.codec, "plain.codec", path)?;
    if let Some(t) = p.template {
        c.template = shopfloor_schemas::TopicTemplate::parse(&t)
            .map_err(|e| anyhow::anyhow!("{}: plain.template: {e}", path.display()))?;
    }
    Ok(c)
}

/// The Sparkplug driver's settings: the `[mqtt]` section's connection
/// ([`Mqtt::connection`]; the client id defaults to the edge node id,
/// `[mqtt] fallback` brokers follow the broker in its list) and the
/// node's `bdSeq` file.
pub fn driver(mqtt: &Mqtt, sp: &Sparkplug, path: &Path) -> anyhow::Result<DriverConfig> {
    // The state folder before the connection: its error comes before a
    // bad `fallback` entry's, as it always did.
    let bd_seq_file = state_dir(sp, path)?.map(|d| d.join(shopfloor_mqtt::bdseq::FILE_NAME));
    let mut driver = DriverConfig::from_connection(mqtt.connection(path, &sp.edge_node_id)?);
    driver.bd_seq_file = bd_seq_file;
    Ok(driver)
}

/// The folder that keeps the node's state (`bdSeq`): `state_dir`, else
/// `spool_dir`, relative to the configuration file; made if missing.
/// `None` (with a warning) when neither is set.
fn state_dir(sp: &Sparkplug, path: &Path) -> anyhow::Result<Option<PathBuf>> {
    let Some(dir) = sp.state_dir.as_ref().or(sp.spool_dir.as_ref()) else {
        return Ok(None);
    };
    let dir = path.parent().unwrap_or_else(|| Path::new(".")).join(dir);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("{}: sparkplug.state_dir {}", path.display(), dir.display()))?;
    Ok(Some(dir))
}

/// The edge node of `config` with the primary host and spool of `sp`,
/// its `bdSeq` continuing from the last session's.
pub fn edge_node(
    mut config: EdgeNodeConfig,
    sp: &Sparkplug,
    path: &Path,
) -> anyhow::Result<EdgeNode> {
    config.primary_host_id = sp.primary_host_id.clone();
    config.datatypes_in_data = sp.datatypes_in_data;
    match state_dir(sp, path)? {
        Some(dir) => config.bd_seq = shopfloor_mqtt::bdseq::next(&dir),
        None => tracing::info!(
            "{}: no sparkplug.spool_dir or state_dir: bdSeq starts again at 0 after a restart \
             (Sparkplug hosts match deaths to births by it)",
            path.display()
        ),
    }
    Ok(match &sp.spool_dir {
        Some(dir) => {
            // Relative to the configuration file, not to wherever the
            // process was started.
            let dir = path.parent().unwrap_or_else(|| Path::new(".")).join(dir);
            let (spool, report) = FileSpool::open(&dir, sp.spool_mb << 20)
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
    })
}

/// A running Sparkplug gateway (Modbus or OPC UA), as the binaries serve
/// and stop it.
pub trait EdgeGateway: Send + 'static {
    /// The edge driver's counters now.
    fn stats(&self) -> shopfloor_mqtt::EdgeStats;
    /// Each device and whether it is online now.
    fn devices(&self) -> Vec<(String, bool)>;
    /// Stops it: NDEATH, disconnect.
    fn shutdown(self) -> impl Future<Output = ()> + Send;
}

/// Both bridges' gateways have the same methods: the trait forwards to them.
macro_rules! edge_gateway {
    ($gateway:ty) => {
        impl EdgeGateway for $gateway {
            fn stats(&self) -> shopfloor_mqtt::EdgeStats {
                self.stats()
            }
            fn devices(&self) -> Vec<(String, bool)> {
                self.devices()
            }
            fn shutdown(self) -> impl Future<Output = ()> + Send {
                self.shutdown()
            }
        }
    };
}
edge_gateway!(shopfloor_bridge_modbus::gateway::Gateway);
edge_gateway!(shopfloor_bridge_opcua::gateway::Gateway);

/// Runs a Sparkplug gateway until Ctrl-C or SIGTERM: `/metrics` with the
/// edge node's counters and each device, `/ready` while it is born, as the
/// file at `path` asks; then its stop (NDEATH, disconnect) within
/// [`crate::STOP_TIMEOUT`].
pub async fn run_until_stop<G: EdgeGateway>(path: &Path, gateway: G) -> anyhow::Result<()> {
    fn page<G: EdgeGateway>(g: &G, page: &mut crate::metrics::Exposition) {
        crate::metrics::edge(page, &g.stats());
        crate::metrics::devices(page, &g.devices());
    }
    fn ready<G: EdgeGateway>(g: &G) -> Result<(), String> {
        crate::metrics::edge_ready(&g.stats())
    }
    let gateway = crate::metrics::serve_until_stop(path, gateway, page::<G>, ready::<G>).await?;
    crate::stop_within("the edge node's death and disconnect", gateway.shutdown()).await
}
