//! What the shopfloor binaries share: how they log, stop and exit.

use std::process::ExitCode;

pub mod cli;
pub mod gateway;
pub mod grafana;
pub mod http;
pub mod live;
pub mod metrics;
#[cfg(feature = "demo")]
pub mod plant;
pub mod process;
pub mod sim;

/// Logs to stderr through `tracing`, filtered by `RUST_LOG` (default
/// `info`): text (in colour only on a terminal) or one JSON object a line.
pub fn init_logging(format: cli::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // async-opcua's client logs every retry, disconnect and fault in
        // its own words (dozens of lines a minute against a refused or
        // faulty server); the OPC UA bridge reports each problem once, in
        // one line of its own. Its server (the simulator's) logs every
        // endpoint at info. RUST_LOG shows everything again.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(
                "info,opcua_client=off,opcua_core=off,opcua_crypto=off,opcua_types=off,opcua_server=warn",
            )
        });
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        cli::LogFormat::Json => builder.json().init(),
        cli::LogFormat::Text => {
            builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
        }
    }
}

/// `main`'s exit (see [`cli::exit`]): 0; 78 after a configuration error;
/// 1 after any other.
pub fn exit(result: anyhow::Result<()>) -> ExitCode {
    cli::exit(result)
}

/// What SIGHUP does in this process (see [`on_hangup`]).
static HANGUP: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>> = std::sync::OnceLock::new();

/// Makes SIGHUP call `reload` (from [`wait_for_stop`]'s task) instead of
/// logging that there is nothing to reload. Once per process.
pub fn on_hangup(reload: impl Fn() + Send + Sync + 'static) {
    let _ = HANGUP.set(Box::new(reload));
}

/// Until Ctrl-C or SIGTERM. SIGHUP (a service manager's reload) stops
/// nothing: it runs what [`on_hangup`] set, else logs that a changed file
/// applies at the next restart.
pub async fn wait_for_stop() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hangup.recv() => match HANGUP.get() {
                Some(reload) => reload(),
                None => tracing::info!(
                    "SIGHUP: nothing to reload; a changed configuration applies at the next restart"
                ),
            },
        }
    }
    tracing::info!("stopping");
    Ok(())
}

/// How long a daemon's stop (after SIGTERM) may take.
pub const STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits for `stop` at most [`STOP_TIMEOUT`]; when it takes longer, an
/// error naming `what` it waited for, so the process exits 1 and a
/// service manager sees a stop that did not complete.
pub async fn stop_within<T>(what: &str, stop: impl Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(STOP_TIMEOUT, stop).await.map_err(|_| {
        anyhow::anyhow!(
            "stopping: {what} did not finish within {} s; exiting without it",
            STOP_TIMEOUT.as_secs()
        )
    })
}

/// Reads a deployment file and deserializes it; errors name the file and,
/// for TOML mistakes, the line. Environment variables
/// `SHOPFLOOR_<SECTION>__<KEY>` override keys of the file first (see
/// [`env_overrides`]).
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> anyhow::Result<T> {
    use anyhow::Context as _;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read it", path.display()))?;
    let syntax = |e: toml::de::Error| {
        let line = e.span().map_or(0, |s| error_line(&text, s.start, e.message()));
        anyhow::anyhow!("{}: line {line}: {}", path.display(), e.message())
    };
    let overrides = env_overrides(std::env::vars_os());
    if overrides.is_empty() {
        return toml::from_str(&text).map_err(syntax);
    }
    let mut table: toml::Table = toml::from_str(&text).map_err(syntax)?;
    let names = apply_overrides(&mut table, &overrides)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| {
        anyhow::anyhow!("{}: {} (with {names} from the environment)", path.display(), e.message())
    })
}

/// The line of a TOML error that starts at byte `start`. An unknown key
/// of a section that holds a flattened struct ([`InputKeys`]) is reported
/// at the section's header: then the line of the key itself, if it is
/// found in that section.
fn error_line(text: &str, start: usize, message: &str) -> usize {
    let start = start.min(text.len());
    let key = message.strip_prefix("unknown field `").and_then(|m| m.split('`').next());
    let at = key
        .and_then(|key| {
            let mut offset = start;
            for (i, line) in text[start..].split_inclusive('\n').enumerate() {
                let trimmed = line.trim_start();
                if i > 0 && trimmed.starts_with('[') {
                    return None;
                }
                let rest = trimmed.strip_prefix(key).map(str::trim_start);
                if rest.is_some_and(|r| r.starts_with('=')) {
                    return Some(offset);
                }
                offset += line.len();
            }
            None
        })
        .unwrap_or(start);
    text[..at].matches('\n').count() + 1
}

/// The prefix of the environment variables that override a file's keys.
pub const ENV_PREFIX: &str = "SHOPFLOOR_";

/// One key of a file set from the environment: `SHOPFLOOR_MQTT__HOST=broker`
/// sets `host` in `[mqtt]`.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvOverride {
    /// The variable's name.
    pub var: String,
    /// The section (a top-level table), lower case.
    pub section: String,
    /// The key in it, lower case.
    pub key: String,
    /// The variable's value, as written.
    pub value: String,
}

/// The overrides among `vars`: names `SHOPFLOOR_<SECTION>__<KEY>` (two
/// underscores between section and key, so no other `SHOPFLOOR_` variable
/// is taken for one), section and key of letters, digits and single
/// underscores. What a container needs without a file of its own:
/// `SHOPFLOOR_MQTT__HOST`, `SHOPFLOOR_POSTGRES__CONNECTION`,
/// `SHOPFLOOR_LIVE__LISTEN`, `SHOPFLOOR_METRICS__LISTEN`. Secrets keep
/// their own variables (`SHOPFLOOR_MQTT_PASSWORD`, …), never a key.
pub fn env_overrides(
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Vec<EnvOverride> {
    let word = |w: &str| {
        !w.is_empty()
            && !w.contains("__")
            && w.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    let mut found: Vec<EnvOverride> = vars
        .into_iter()
        .filter_map(|(name, value)| {
            let (name, value) = (name.into_string().ok()?, value.into_string().ok()?);
            let (section, key) = name.strip_prefix(ENV_PREFIX)?.split_once("__")?;
            (word(section) && word(key)).then(|| EnvOverride {
                section: section.to_ascii_lowercase(),
                key: key.to_ascii_lowercase(),
                var: name.clone(),
                value,
            })
        })
        .collect();
    found.sort_by(|a, b| a.var.cmp(&b.var));
    found
}

/// Applies `overrides` to a parsed file: a key the file has as a string
/// stays a string; otherwise the value is read as TOML (`1883`, `true`,
/// `["a", "b"]`) and else taken as a string. A missing section is made.
/// Returns the variables applied, for error messages.
pub fn apply_overrides(
    table: &mut toml::Table,
    overrides: &[EnvOverride],
) -> anyhow::Result<String> {
    for o in overrides {
        let section = table
            .entry(o.section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(section) = section.as_table_mut() else {
            anyhow::bail!("{}: [{}] is not a section of this file", o.var, o.section);
        };
        let value = match section.get(&o.key) {
            Some(toml::Value::String(_)) => toml::Value::String(o.value.clone()),
            _ => toml_value(&o.value).unwrap_or_else(|| toml::Value::String(o.value.clone())),
        };
        section.insert(o.key.clone(), value);
    }
    Ok(overrides.iter().map(|o| o.var.as_str()).collect::<Vec<_>>().join(", "))
}

/// `raw` read as one TOML value, if it is one.
fn toml_value(raw: &str) -> Option<toml::Value> {
    let mut doc: toml::Table = toml::from_str(&format!("v = {raw}")).ok()?;
    (doc.len() == 1).then(|| doc.remove("v")).flatten()
}

/// A payload codec by its configuration name; `key` names the setting in
/// the error.
pub fn codec(
    name: &str,
    key: &str,
    config: &std::path::Path,
) -> anyhow::Result<shopfloor_schemas::Codec> {
    use shopfloor_schemas::Codec;
    Ok(match name {
        "json" => Codec::Json,
        "protobuf" => Codec::Protobuf,
        "cbor" => Codec::Cbor,
        other => anyhow::bail!(
            "{}: {key} = {other:?}; use \"json\", \"protobuf\" or \"cbor\"",
            config.display()
        ),
    })
}

/// The keys of a daemon's section (`[ingest]`, `[alerting]`) that turn
/// its inputs on, and the [`inputs`](InputKeys::inputs) they make. Each
/// daemon's section holds them with `#[serde(flatten)]`: a key that
/// neither the section nor these know is still refused (`unknown field`)
/// when the section denies unknown fields.
#[derive(Debug, Default, serde::Deserialize)]
pub struct InputKeys {
    /// `plain = true`: readings on the topics of `template`.
    #[serde(default)]
    pub plain: bool,
    /// The plain topics (default: the readings' topics,
    /// `shopfloor/{site}/{area}/{machine}/{sensor}`).
    pub template: Option<String>,
    /// The codec of a plain message that has no content type: `json` (the
    /// default), `protobuf` or `cbor`.
    pub codec: Option<String>,
    /// `sparkplug = true`: the Sparkplug B namespace, as a host.
    #[serde(default)]
    pub sparkplug: bool,
    /// Only these Sparkplug groups (default: all).
    pub sparkplug_groups: Option<Vec<String>>,
}

impl InputKeys {
    /// A daemon's inputs: the file's `[[mapping]]`s first (a device's own
    /// topic is more specific than a template), then what its `[section]`
    /// turns on: `plain`, topics of the `template` in the `codec`, and
    /// `sparkplug`, `host` with `sparkplug_groups`. None is an error:
    /// nothing `to` (do).
    pub fn inputs(
        &self,
        path: &std::path::Path,
        mappings: &[shopfloor_mqtt::mapping::MappingSpec],
        section: &str,
        mut host: shopfloor_sparkplug::HostConfig,
        to: &str,
    ) -> anyhow::Result<Vec<shopfloor_mqtt::Input>> {
        let mut inputs = self::mappings(mappings, path)?;
        if self.plain {
            let template =
                self.template.as_deref().unwrap_or(shopfloor_schemas::topic::defaults::READINGS);
            let template = shopfloor_schemas::TopicTemplate::parse(template)
                .map_err(|e| anyhow::anyhow!("{}: {section}.template: {e}", path.display()))?;
            let codec_name = self.codec.as_deref().unwrap_or("json");
            let codec = codec(codec_name, &format!("{section}.codec"), path)?;
            inputs.push(shopfloor_mqtt::Input::plain(template, codec));
        }
        if self.sparkplug {
            host.groups.clone_from(&self.sparkplug_groups);
            inputs.push(shopfloor_mqtt::Input::sparkplug(host));
        }
        if inputs.is_empty() {
            anyhow::bail!(
                "{}: [{section}] has neither plain = true nor sparkplug = true, and there is no [[mapping]]: nothing to {to}",
                path.display()
            );
        }
        Ok(inputs)
    }
}

/// The `[[mapping]]` sections of the file at `path`, compiled (a
/// `proto_file` is read from the file's folder), as inputs.
pub fn mappings(
    specs: &[shopfloor_mqtt::mapping::MappingSpec],
    path: &std::path::Path,
) -> anyhow::Result<Vec<shopfloor_mqtt::Input>> {
    let base = path.parent().unwrap_or_else(|| std::path::Path::new("."));
    let compiled = shopfloor_mqtt::mapping::compile_all(specs, base)
        .map_err(|e| anyhow::anyhow!("{}: [[mapping]]: {e}", path.display()))?;
    Ok(compiled.into_iter().map(shopfloor_mqtt::Input::mapped).collect())
}

/// `mapping test --topic T --payload FILE`: prints what the file's
/// mappings make of a payload, as ingest would store it. Fails when no
/// mapping takes the topic or a part of the payload cannot be read.
pub fn mapping_test(
    specs: &[shopfloor_mqtt::mapping::MappingSpec],
    config: &std::path::Path,
    topic: &str,
    payload: &std::path::Path,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let base = config.parent().unwrap_or_else(|| std::path::Path::new("."));
    let compiled = shopfloor_mqtt::mapping::compile_all(specs, base)
        .map_err(|e| anyhow::anyhow!("{}: [[mapping]]: {e}", config.display()))?;
    let bytes = std::fs::read(payload)
        .with_context(|| format!("{}: cannot read the payload", payload.display()))?;
    let now = shopfloor_schemas::Timestamp::now();
    let Some((m, mapped)) = compiled.iter().find_map(|m| Some((m, m.decode(topic, &bytes, now)?)))
    else {
        let filters: Vec<String> = compiled.iter().map(|m| m.filter()).collect();
        anyhow::bail!(
            "no [[mapping]] in {} takes topic {topic:?} (their filters: {})",
            config.display(),
            if filters.is_empty() { "none".into() } else { filters.join(", ") }
        );
    };
    println!(
        "mapping {:?}: {} readings from {} bytes on {topic}",
        m.name(),
        mapped.len(),
        bytes.len()
    );
    for b in &mapped.batches {
        for r in &b.readings {
            let time = if r.timestamp == now {
                "(receive time)".to_owned()
            } else {
                r.timestamp.to_rfc3339()
            };
            println!(
                "  {}  {}  {time}  {} ({})  {}",
                b.source,
                r.metric,
                r.value,
                r.value.value_type(),
                r.quality
            );
        }
    }
    for u in &mapped.units {
        println!("  unit: {} {} = {}", u.source, u.metric, u.unit);
    }
    if mapped.failures.is_empty() {
        return Ok(());
    }
    for f in &mapped.failures {
        println!("  not read: {f}");
    }
    match mapped.failures.len() {
        1 => anyhow::bail!("a part of the payload could not be read (above)"),
        n => anyhow::bail!("{n} parts of the payload could not be read (above)"),
    }
}

/// A secret: the environment variable `env`, else the first line of
/// `file` (relative to the config file `path`'s folder); `key` names
/// `file` in an error.
pub fn secret(
    path: &std::path::Path,
    env: &str,
    file: Option<&std::path::Path>,
    key: &str,
) -> anyhow::Result<Option<String>> {
    if let Ok(v) = std::env::var(env) {
        return Ok(Some(v));
    }
    let Some(f) = file else { return Ok(None) };
    shopfloor_mqtt::section::read_secret(path, f).map(Some).map_err(|(p, e)| {
        anyhow::anyhow!("{}: {key} {}: cannot read it: {e}", path.display(), p.display())
    })
}

/// A PostgreSQL section (`[postgres]` of ingestd, `[journal]` of alertd):
/// the connection string, and apart from it the password and the TLS
/// check.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgSection {
    /// `host=… user=… dbname=…` or a URL; its `sslmode` (`disable`,
    /// `prefer`, the default, or `require`) decides whether TLS is used.
    pub connection: String,
    /// The password's file (first line; relative to the config file's
    /// folder); `SHOPFLOOR_PG_PASSWORD` wins over it.
    pub password_file: Option<std::path::PathBuf>,
    /// The CA certificate (PEM) that signed the server's: with it the
    /// server's certificate and host name are checked (libpq's
    /// `verify-full`); without, TLS encrypts without that check (libpq's
    /// `sslmode=require`).
    pub ca_file: Option<std::path::PathBuf>,
}

/// What a [`PgSection`] resolves to: the connection string, the password
/// and the TLS settings (`None`: encrypt without a check).
pub type PgTarget = (String, Option<String>, Option<std::sync::Arc<rustls::ClientConfig>>);

impl PgSection {
    /// Resolves the secrets and files, relative to the config `file`;
    /// checks that the connection string parses.
    pub fn resolve(self, file: &std::path::Path, section: &str) -> anyhow::Result<PgTarget> {
        use anyhow::Context as _;
        let where_ = file.display();
        self.connection.parse::<tokio_postgres::Config>().map_err(|e| {
            anyhow::anyhow!("{where_}: [{section}] connection: {e} (give host=… user=… dbname=…, or a postgresql:// URL; sslmode is disable, prefer or require)")
        })?;
        let password = secret(
            file,
            "SHOPFLOOR_PG_PASSWORD",
            self.password_file.as_deref(),
            &format!("[{section}] password_file"),
        )?;
        let tls = match &self.ca_file {
            Some(ca) => Some(
                shopfloor_mqtt::tls_client_config(
                    &shopfloor_mqtt::section::relative_to(file, ca),
                    None,
                )
                .with_context(|| format!("{where_}: [{section}] ca_file"))?,
            ),
            None => None,
        };
        Ok((self.connection, password, tls))
    }
}

#[cfg(test)]
mod env_tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
        pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    #[test]
    fn only_section_double_underscore_key_names_are_overrides() {
        let found = env_overrides(vars(&[
            ("SHOPFLOOR_MQTT__CLIENT_ID", "a"),
            ("SHOPFLOOR_MQTT_PASSWORD", "secret"),
            ("SHOPFLOOR_CONFIG", "/x.toml"),
            ("SHOPFLOOR_LIVE__", "x"),
            ("SHOPFLOOR___X", "x"),
            ("SHOPFLOOR_A__B__C", "x"),
            ("SHOPFLOOR_A-B__C", "x"),
            ("OTHER_MQTT__HOST", "x"),
            ("SHOPFLOOR_METRICS__LISTEN", "0.0.0.0:9100"),
        ]));
        let names: Vec<_> = found.iter().map(|o| (o.section.as_str(), o.key.as_str())).collect();
        assert_eq!(names, [("metrics", "listen"), ("mqtt", "client_id")]);
    }

    #[test]
    fn values_take_the_type_of_the_key_they_replace() {
        let mut table: toml::Table =
            toml::from_str("[mqtt]\nclient_id = \"x\"\nport = 1\n[live]\nlisten = \"a:1\"\n")
                .unwrap();
        let o = |section: &str, key: &str, value: &str| EnvOverride {
            var: format!("SHOPFLOOR_{section}__{key}"),
            section: section.into(),
            key: key.into(),
            value: value.into(),
        };
        apply_overrides(
            &mut table,
            &[
                o("mqtt", "client_id", "1234"),
                o("mqtt", "port", "8883"),
                o("mqtt", "clean", "true"),
                o("mqtt", "host", "broker"),
                o("metrics", "listen", "0.0.0.0:9100"),
                o("ingest", "sparkplug_groups", "[\"A\", \"B\"]"),
            ],
        )
        .unwrap();
        let mqtt = table["mqtt"].as_table().unwrap();
        assert_eq!(mqtt["client_id"].as_str(), Some("1234"));
        assert_eq!(mqtt["port"].as_integer(), Some(8883));
        assert_eq!(mqtt["clean"].as_bool(), Some(true));
        assert_eq!(mqtt["host"].as_str(), Some("broker"));
        assert_eq!(table["metrics"]["listen"].as_str(), Some("0.0.0.0:9100"));
        assert_eq!(table["ingest"]["sparkplug_groups"].as_array().map(Vec::len), Some(2));
        // Not a section: refused, naming the variable.
        let mut t: toml::Table = toml::from_str("mqtt = 1\n").unwrap();
        let e = apply_overrides(&mut t, &[o("mqtt", "host", "x")]).unwrap_err();
        assert!(e.to_string().contains("SHOPFLOOR_mqtt__host"), "{e}");
    }
}

#[cfg(test)]
mod input_tests {
    use super::*;

    /// A daemon's section as ingestd and alertd declare theirs.
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Section {
        rules: String,
        #[serde(flatten)]
        inputs: InputKeys,
    }

    #[derive(Debug, serde::Deserialize)]
    struct File {
        alerting: Section,
    }

    fn read(text: &str) -> anyhow::Result<File> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alertd.toml");
        std::fs::write(&path, text).unwrap();
        read_toml(&path)
    }

    #[test]
    fn the_input_keys_are_the_sections_and_unknown_keys_are_still_refused() {
        let file = read(
            "[alerting]\nrules = \"r.toml\"\nplain = true\ncodec = \"cbor\"\nsparkplug_groups = [\"Hall1\"]\n",
        )
        .unwrap();
        let keys = &file.alerting.inputs;
        assert_eq!(file.alerting.rules, "r.toml");
        assert!(keys.plain && !keys.sparkplug);
        assert_eq!((keys.template.as_deref(), keys.codec.as_deref()), (None, Some("cbor")));
        assert_eq!(keys.sparkplug_groups.as_deref(), Some(&["Hall1".to_owned()][..]));
        let e = read("[alerting]\nrules = \"r.toml\"\nplain = true\nsparkplug_group = [\"A\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `sparkplug_group`"), "{e}");
        assert!(e.contains("line 4:"), "the key's line, not the section's: {e}");
        // The same from a table, as when the environment overrides a key.
        let table: toml::Table =
            toml::from_str("[alerting]\nrules = \"r.toml\"\nsparkplug = true\nshare = \"x\"\n")
                .unwrap();
        let e = toml::Value::Table(table).try_into::<File>().unwrap_err().to_string();
        assert!(e.contains("unknown field `share`"), "{e}");
    }

    #[test]
    fn inputs_are_the_mappings_then_plain_then_sparkplug_and_none_is_an_error() {
        let path = std::path::Path::new("/etc/shopfloor/alertd.toml");
        let new_host = || shopfloor_sparkplug::HostConfig::new("h");
        let keys = InputKeys {
            plain: true,
            sparkplug: true,
            sparkplug_groups: Some(vec!["Hall1".into()]),
            ..InputKeys::default()
        };
        let inputs = keys.inputs(path, &[], "alerting", new_host(), "read").unwrap();
        use shopfloor_mqtt::Input;
        let [Input::Plain { codec, .. }, Input::Sparkplug { host }] = &inputs[..] else {
            panic!("{inputs:?}")
        };
        assert_eq!(*codec, shopfloor_schemas::Codec::Json);
        assert_eq!(
            (host.host_id.as_str(), host.groups.as_deref()),
            ("h", Some(&["Hall1".to_owned()][..]))
        );
        let e = InputKeys::default().inputs(path, &[], "alerting", new_host(), "read").unwrap_err();
        assert!(e.to_string().contains("[alerting] has neither plain = true"), "{e}");
        let bad = InputKeys { plain: true, codec: Some("xml".into()), ..InputKeys::default() };
        let e = bad.inputs(path, &[], "ingest", new_host(), "ingest").unwrap_err();
        assert!(e.to_string().contains("ingest.codec = \"xml\""), "{e}");
    }
}
