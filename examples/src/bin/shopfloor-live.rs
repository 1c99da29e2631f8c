//! The live plant page on its own, for any deployment. See `--help`.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;
use serde::Deserialize;
use shopfloor_examples::cli::{ConfigContext as _, Daemon, Generate};
use shopfloor_examples::live::{LiveConfig, start};
use shopfloor_mqtt::MqttSection;

const HELP: &str = "\
THE FILE:
    [mqtt]
    host = \"127.0.0.1\"
    port = 1883
    client_id = \"live\"              # default: live-page-<pid>
    # protocol = \"5\"                # or \"3.1.1\" for a broker that speaks only that
    username = \"live\"               # optional; the password from
    password_file = \"/etc/shopfloor/mqtt.pass\"   # a file, or SHOPFLOOR_MQTT_PASSWORD
    # TLS (port 8883 of examples/deploy's broker, role `live` of its ACL):
    # ca_file = \"/etc/shopfloor/pki/ca.crt\"
    # cert_file = \"/etc/shopfloor/pki/live.crt\"
    # key_file = \"/etc/shopfloor/pki/live.key\"

    [live]
    listen = \"127.0.0.1:8088\"      # the page: http://127.0.0.1:8088/

    [metrics]                       # optional: Prometheus GET /metrics here
    listen = \"127.0.0.1:9107\"

The command endpoint (POST /command) has no login of its own: anyone who
reaches the page can acknowledge and shelve. Keep it on 127.0.0.1 or behind
a reverse proxy that authenticates. It takes only JSON from the page's own
origin, so other web sites open in the operator's browser cannot use it.

EXAMPLES:
    shopfloor-live --config live.toml --check-config
    shopfloor-live --config live.toml
";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Live {
    listen: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    mqtt: Option<MqttSection>,
    live: Option<Live>,
    /// Read by `shopfloor_examples::metrics`.
    #[allow(dead_code)]
    metrics: Option<toml::Value>,
}

fn config(path: &Path) -> anyhow::Result<LiveConfig> {
    let where_ = path.display();
    let file: File = shopfloor_examples::read_toml(path)?;
    let mqtt =
        file.mqtt.with_context(|| format!("{where_}: no [mqtt] section; add host and port"))?;
    let listen = file.live.and_then(|l| l.listen).unwrap_or_else(|| "127.0.0.1:8088".into());
    let listen: SocketAddr = listen.parse().with_context(|| {
        format!(
            "{where_}: live.listen = {listen:?}: give an address and port, like \"127.0.0.1:8088\""
        )
    })?;
    Ok(LiveConfig {
        broker: mqtt.broker(path)?,
        fallback: mqtt.fallbacks(path)?,
        protocol: mqtt.protocol,
        listen,
        client_id: mqtt.client_id,
    })
}

const ABOUT: &str = "The live plant page: every machine's values with sparklines and quality, and the active alarms with Acknowledge and Shelve buttons, pushed to the browser once a second (server-sent events)\n\nIt reads Sparkplug B (spBv1.0/#) and shopfloor-alertd's alarm states, and sends alertd's operator commands. One page embedded in the binary: nothing to install, nothing fetched from the internet.";

fn main() -> std::process::ExitCode {
    shopfloor_examples::exit(real_main())
}

fn real_main() -> anyhow::Result<()> {
    let Some(cli) = Daemon::<Generate>::parse_as("shopfloor-live", ABOUT, HELP)? else {
        return Ok(());
    };
    let check = cli.check_only();
    let path = cli.opts.path("live");
    let c = config(&path).bad_config()?;
    shopfloor_examples::metrics::listen_address(&path).bad_config()?;
    if check {
        println!(
            "{}: valid: {} {}:{}{}, page on http://{}/",
            path.display(),
            c.protocol,
            c.broker.host,
            c.broker.port,
            if c.broker.tls.is_some() { " (TLS)" } else { "" },
            c.listen
        );
        return Ok(());
    }
    shopfloor_examples::init_logging(cli.opts.log_format);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        let live = start(c).await?;
        // The address on stdout, for scripts that asked for port 0.
        println!("live page on http://{}/", live.addr);
        // The page's own process figures on [metrics] listen, if set.
        let live = shopfloor_examples::metrics::serve_until_stop(&path, live, |_, _| {}).await?;
        drop(live);
        Ok(())
    })
}
