//! The alarm daemon: readings from MQTT, alarms to MQTT and the journal.
//! See `--help`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use shopfloor_alerting::mqtt::{AlertConfig, AlertDriver};
use shopfloor_alerting::{Engine, EngineLimits, RuleSet};
use shopfloor_examples::cli::{ConfigContext as _, Daemon, Generate};
use shopfloor_mqtt::MqttSection;
use shopfloor_mqtt::mapping::MappingSpec;
use shopfloor_sparkplug::HostConfig;

const HELP: &str = concat!(
    "\
THE FILE:
    [mqtt]
    host = \"127.0.0.1\"
    port = 1883
    client_id = \"alertd\"           # default
    # protocol = \"5\"              # or \"3.1.1\" for a broker that speaks only that
    username = \"alertd\"            # optional; the password from
",
    shopfloor_examples::help_mqtt_login!(),
    "\n",
    shopfloor_examples::help_metrics!("9104"),
    "
    [alerting]
    rules = \"rules.toml\"           # relative to this file; the format: the
                                   # shopfloor-alerting crate's `rules` module
    prefix = \"shopfloor/alarms\"    # events, state/…, command, reply
    plain = true                   # shopfloor/{site}/{area}/{machine}/{sensor}
    # template = \"shopfloor/{site}/{area}/{machine}/{sensor}\"
    # codec = \"json\"               # when a message has no content type
    sparkplug = true               # spBv1.0/#
    # sparkplug_groups = [\"Hall1\"]  # only these Sparkplug groups (default: all)
    # max_alarms = 1000000         # new signals past it are refused (and counted)

    [[mapping]]                    # optional, any number: devices' own payloads,
    name = \"flat\"                  # as ingestd reads them (the keys: the
    topic = \"acme/{machine}/json\"  # shopfloor-mapping crate's README)
    fields = \"\"
    timestamp = \"/ts\"

    [journal]                      # optional: every event, and the state
    connection = \"host=127.0.0.1 user=shopfloor dbname=shopfloor\"   # kept over restarts
    # password_file = \"pg.pass\"     # or SHOPFLOOR_PG_PASSWORD; sslmode in the
    # ca_file = \"pg-ca.crt\"         # string, ca_file to check the server's name

    [alertmanager]                 # optional: firing alarms as alerts (API v2)
    urls = [\"http://127.0.0.1:9093\"]   # an HA list gets every alert
    resend_s = 60                  # endsAt = now + 4 × this; a Watchdog always fires

EXAMPLES:
    shopfloor-alertd --config alertd.toml --check-config
    RUST_LOG=debug shopfloor-alertd --config alertd.toml
"
);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Alerting {
    rules: PathBuf,
    prefix: Option<String>,
    max_alarms: Option<usize>,
    #[serde(flatten)]
    inputs: shopfloor_examples::InputKeys,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Alertmanager {
    urls: Vec<String>,
    resend_s: Option<u64>,
}

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    mapping: Vec<MappingSpec>,
    mqtt: Option<MqttSection>,
    alerting: Option<Alerting>,
    journal: Option<shopfloor_examples::PgSection>,
    alertmanager: Option<Alertmanager>,
    #[serde(flatten)]
    _others: std::collections::BTreeMap<String, toml::Value>,
}

fn config(path: &Path) -> anyhow::Result<(RuleSet, AlertConfig, EngineLimits)> {
    let where_ = path.display();
    let file: File = shopfloor_examples::read_toml(path)?;
    let mqtt =
        file.mqtt.with_context(|| format!("{where_}: no [mqtt] section; add host and port"))?;
    let a = file.alerting.with_context(|| {
        format!("{where_}: no [alerting] section; add rules = \"rules.toml\" and plain or sparkplug = true")
    })?;
    let rules_path = path.parent().unwrap_or_else(|| Path::new(".")).join(&a.rules);
    let rules = RuleSet::load(&rules_path)?;
    if rules.rules.is_empty() {
        bail!("{}: no [[rule]]: nothing to watch", rules_path.display());
    }
    let mut c = AlertConfig::from_connection(mqtt.connection(path, "alertd")?);
    if let Some(p) = a.prefix {
        if p.is_empty() || p.contains(['+', '#']) || p.ends_with('/') {
            bail!("{where_}: alerting.prefix = {p:?}: a topic prefix without + # or a trailing /");
        }
        c.prefix = p;
    }
    let mut host = HostConfig::new("shopfloor-alertd");
    host.publish_state = false;
    c.inputs = a.inputs.inputs(path, &file.mapping, "alerting", host, "read")?;
    if let Some(j) = file.journal {
        let (url, password, tls) = j.resolve(path, "journal")?;
        c.journal = Some(url);
        c.journal_password = password;
        c.journal_tls = tls;
    }
    if let Some(am) = file.alertmanager {
        for url in &am.urls {
            if !url.starts_with("http://") {
                bail!(
                    "{where_}: alertmanager.urls: {url:?}: give http://host:port (TLS is not supported yet)"
                );
            }
        }
        c.alertmanagers = am.urls;
        c.resend = Duration::from_secs(am.resend_s.unwrap_or(60).max(1));
    }
    let mut limits = EngineLimits::default();
    if let Some(n) = a.max_alarms {
        limits.max_alarms = n;
    }
    Ok((rules, c, limits))
}

const ABOUT: &str = "Alarms from MQTT readings (plain topics and Sparkplug B), with the ISA-18.2 lifecycle, to MQTT and an alarm journal in PostgreSQL";

fn main() -> std::process::ExitCode {
    shopfloor_examples::exit(real_main())
}

fn real_main() -> anyhow::Result<()> {
    let Some(cli) = Daemon::<Generate>::parse_as("shopfloor-alertd", ABOUT, HELP)? else {
        return Ok(());
    };
    let check = cli.check_only();
    let path = cli.opts.path("alertd");
    let (rules, c, limits) = config(&path).bad_config()?;
    shopfloor_examples::metrics::listen_address(&path).bad_config()?;
    if check {
        println!(
            "{}: valid: {} rules, {} inputs, {} {}:{}, journal {}",
            path.display(),
            rules.rules.len(),
            c.inputs.len(),
            c.mqtt.protocol,
            c.mqtt.broker.host,
            c.mqtt.broker.port,
            if c.journal.is_some() { "on" } else { "off" }
        );
        return Ok(());
    }
    shopfloor_examples::init_logging(cli.opts.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        tracing::info!(rules = rules.rules.len(), "alerting starting");
        let mut engine = Engine::new(rules);
        engine.set_limits(limits);
        let driver = AlertDriver::spawn(engine, c);
        // SIGHUP: the rules again from the file; a file that does not
        // load changes nothing.
        let reloader = driver.reloader();
        let file = path.clone();
        shopfloor_examples::on_hangup(move || {
            let (reloader, file) = (reloader.clone(), file.clone());
            tokio::spawn(async move {
                match config(&file) {
                    Ok((rules, ..)) => {
                        let n = rules.rules.len();
                        match reloader.reload(rules).await {
                            Some(carried) => tracing::info!(
                                rules = n,
                                carried,
                                "SIGHUP: rules reloaded (other changes of the file apply at the next restart)"
                            ),
                            None => tracing::warn!("SIGHUP: the driver has stopped"),
                        }
                    }
                    Err(e) => tracing::error!("SIGHUP: {e:#}; the rules in use stay"),
                }
            });
        });
        let driver = shopfloor_examples::metrics::serve_until_stop(
            &path,
            driver,
            |d, page| shopfloor_examples::metrics::alerting(page, d.stats()),
            |d| shopfloor_examples::metrics::mqtt_ready(&d.stats().link),
        )
        .await?;
        shopfloor_examples::stop_within("the alarm driver (its last events to MQTT and the journal)", driver.shutdown())
            .await?;
        Ok(())
    })
}
