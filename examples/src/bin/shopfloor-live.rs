//! The live plant page on its own, for any deployment. See `--help`.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;
use serde::Deserialize;
use shopfloor_examples::cli::{ConfigContext as _, Daemon, Generate};
use shopfloor_examples::live::{Auth, LiveConfig, MAX_STREAMS, Security, Users, start};
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
    # allowed_hosts = [\"plant.example.com\"]   # names in the address bar, besides
    #                               # IP addresses and localhost
    auth = \"none\"                  # default on 127.0.0.1/::1 only: no login
    # auth = \"users\"               # logins (HTTP Basic) from users_file:
    # users_file = \"live.users\"     # name:$argon2id$… lines (hash-password)
    # auth = \"proxy\"               # a reverse proxy logs people in and names
    # trusted_proxies = [\"127.0.0.1\"]   # them in user_header; nothing else
    # user_header = \"X-Forwarded-User\" # may reach the page
    # max_streams = 64              # pages open at once

    [metrics]                       # optional: GET /metrics, /healthz, /ready here
    listen = \"127.0.0.1:9107\"

Who acknowledged or shelved is the login (or the proxy's user), set by the
page, never by the browser; with auth = \"none\" it is \"live-page\". Every
URL of the page is relative: behind a proxy, serve it on a sub-path
(location /plant/ { proxy_pass http://127.0.0.1:8088/; }), and do not
buffer /events (the page says X-Accel-Buffering: no). A request naming a
host the page does not answer to (DNS rebinding) is refused; the page
cannot be framed; commands (POST /command) take only JSON from the page's
own origin.

EXAMPLES:
    shopfloor-live --config live.toml --check-config
    shopfloor-live --config live.toml
    shopfloor-live hash-password < password.txt >> live.users   # then prefix \"name:\"
";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Live {
    listen: Option<String>,
    #[serde(default)]
    allowed_hosts: Vec<String>,
    auth: Option<String>,
    users_file: Option<std::path::PathBuf>,
    #[serde(default)]
    trusted_proxies: Vec<std::net::IpAddr>,
    user_header: Option<String>,
    max_streams: Option<usize>,
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
    let live = file.live.unwrap_or(Live {
        listen: None,
        allowed_hosts: Vec::new(),
        auth: None,
        users_file: None,
        trusted_proxies: Vec::new(),
        user_header: None,
        max_streams: None,
    });
    let listen = live.listen.clone().unwrap_or_else(|| "127.0.0.1:8088".into());
    let listen: SocketAddr = listen.parse().with_context(|| {
        format!(
            "{where_}: live.listen = {listen:?}: give an address and port, like \"127.0.0.1:8088\""
        )
    })?;
    let security = security(path, &live, listen)?;
    let mqtt = mqtt.connection(path, &shopfloor_examples::live::default_client_id())?;
    Ok(LiveConfig { mqtt, listen, security })
}

/// `[live]`'s hosts, logins and stream cap.
fn security(path: &Path, live: &Live, listen: SocketAddr) -> anyhow::Result<Security> {
    let where_ = path.display();
    let auth = match live.auth.as_deref() {
        None if !listen.ip().is_loopback() => anyhow::bail!(
            "{where_}: live.listen = \"{listen}\" is reachable from other machines, and the \
             page acknowledges and shelves alarms: set live.auth = \"users\" (with users_file) \
             or \"proxy\" (with trusted_proxies), or auth = \"none\" to let anyone who \
             reaches it do so"
        ),
        None | Some("none") => Auth::None,
        Some("users") => {
            let file = live.users_file.as_ref().with_context(|| {
                format!("{where_}: live.auth = \"users\" needs live.users_file")
            })?;
            let file = shopfloor_mqtt::section::relative_to(path, file);
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("{where_}: live.users_file {}", file.display()))?;
            let users = Users::parse(&text)
                .with_context(|| format!("{where_}: live.users_file {}", file.display()))?;
            Auth::Users(std::sync::Arc::new(users))
        }
        Some("proxy") => {
            anyhow::ensure!(
                !live.trusted_proxies.is_empty(),
                "{where_}: live.auth = \"proxy\" needs live.trusted_proxies (the proxy's addresses)"
            );
            Auth::Proxy {
                proxies: live.trusted_proxies.clone(),
                header: live.user_header.clone().unwrap_or_else(|| "X-Forwarded-User".into()),
            }
        }
        Some(other) => {
            anyhow::bail!("{where_}: live.auth = {other:?}; use \"none\", \"users\" or \"proxy\"")
        }
    };
    if !matches!(auth, Auth::Users(_)) && live.users_file.is_some() {
        anyhow::bail!("{where_}: live.users_file is read with auth = \"users\" only");
    }
    if !matches!(auth, Auth::Proxy { .. }) && !live.trusted_proxies.is_empty() {
        anyhow::bail!("{where_}: live.trusted_proxies is read with auth = \"proxy\" only");
    }
    Ok(Security {
        allowed_hosts: live.allowed_hosts.clone(),
        auth,
        max_streams: live.max_streams.unwrap_or(MAX_STREAMS),
    })
}

const ABOUT: &str = "The live plant page: every machine's values with sparklines and quality, and the active alarms with Acknowledge and Shelve buttons, pushed to the browser once a second (server-sent events)\n\nIt reads Sparkplug B (spBv1.0/#) and shopfloor-alertd's alarm states, and sends alertd's operator commands. One page embedded in the binary: nothing to install, nothing fetched from the internet.";

fn main() -> std::process::ExitCode {
    shopfloor_examples::exit(real_main())
}

#[derive(clap::Subcommand)]
enum Command {
    #[command(flatten)]
    Generate(Generate),
    /// Read a password on stdin (one line) and print its Argon2id hash, for
    /// a line `name:HASH` of live.users_file
    HashPassword,
}

shopfloor_examples::impl_modes!(Command);

fn real_main() -> anyhow::Result<()> {
    let Some(cli) = Daemon::<Command>::parse_as("shopfloor-live", ABOUT, HELP)? else {
        return Ok(());
    };
    if matches!(cli.command, Some(Command::HashPassword)) {
        let mut password = String::new();
        std::io::stdin().read_line(&mut password).context("reading the password")?;
        let password = password.trim_end_matches(['\r', '\n']);
        anyhow::ensure!(!password.is_empty(), "an empty password: give one line on stdin");
        println!("{}", shopfloor_examples::live::hash_password(password)?);
        return Ok(());
    }
    let check = cli.check_only();
    let path = cli.opts.path("live");
    let c = config(&path).bad_config()?;
    shopfloor_examples::metrics::listen_address(&path).bad_config()?;
    if check {
        let who = match &c.security.auth {
            Auth::None => "no login".to_owned(),
            Auth::Users(u) => format!("logins: {}", u.names().collect::<Vec<_>>().join(", ")),
            Auth::Proxy { proxies, header } => {
                format!("users named by {header} from {proxies:?}")
            }
        };
        println!(
            "{}: valid: {} {}:{}{}, page on http://{}/ ({who})",
            path.display(),
            c.mqtt.protocol,
            c.mqtt.broker.host,
            c.mqtt.broker.port,
            if c.mqtt.broker.tls.is_some() { " (TLS)" } else { "" },
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
        let live = shopfloor_examples::metrics::serve_until_stop(
            &path,
            live,
            |_, _| {},
            shopfloor_examples::live::Live::ready,
        )
        .await?;
        drop(live);
        Ok(())
    })
}
