//! What the shopfloor binaries share: how they log, stop and exit.

use std::process::ExitCode;

pub mod gateway;
pub mod grafana;
pub mod live;
pub mod metrics;
pub mod plant;
pub mod sim;

/// Logs to stderr through `tracing`, filtered by `RUST_LOG` (default
/// `info`), in colour only on a terminal.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // async-opcua's client logs every retry, disconnect and
                // fault in its own words (dozens of lines a minute against
                // a refused or faulty server); the OPC UA bridge reports
                // each problem once, in one line of its own. Its server
                // (the simulator's) logs every endpoint at info. RUST_LOG
                // shows everything again.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new(
                        "info,opcua_client=off,opcua_core=off,opcua_crypto=off,opcua_types=off,opcua_server=warn",
                    )
                }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// `main`'s exit: 0, or 1 after `error: …` (with its causes) on stderr.
pub fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Until Ctrl-C or SIGTERM.
pub async fn wait_for_stop() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
    Ok(())
}

/// Reads a deployment file and deserializes it; errors name the file and,
/// for TOML mistakes, the line.
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> anyhow::Result<T> {
    use anyhow::Context as _;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read it", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        let line =
            e.span().map_or(0, |s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        anyhow::anyhow!("{}: line {line}: {}", path.display(), e.message())
    })
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

/// `mapping test --topic T --payload FILE` with `--config FILE`, when the
/// command line asks for it.
#[derive(Debug)]
pub struct MappingTestArgs {
    /// The configuration file with the `[[mapping]]` sections.
    pub config: std::path::PathBuf,
    /// The topic the payload arrives on.
    pub topic: String,
    /// The file holding the payload.
    pub payload: std::path::PathBuf,
}

/// Parses `--config FILE mapping test --topic T --payload FILE` (in any
/// order); `None` when the first words are not `mapping test`.
pub fn mapping_test_args() -> anyhow::Result<Option<MappingTestArgs>> {
    use anyhow::Context as _;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(at) = args.iter().position(|a| a == "mapping") else { return Ok(None) };
    if args.get(at + 1).map(String::as_str) != Some("test") {
        anyhow::bail!("mapping: the subcommand is `mapping test --topic T --payload FILE`");
    }
    let (mut config, mut topic, mut payload) = (None, None, None);
    let mut it = args.iter().enumerate().filter(|(i, _)| *i != at && *i != at + 1).map(|(_, a)| a);
    while let Some(a) = it.next() {
        let mut value =
            |what: &str| it.next().cloned().with_context(|| format!("{a} needs {what}"));
        match a.as_str() {
            "--config" => config = Some(value("a file")?.into()),
            "--topic" => topic = Some(value("a topic")?),
            "--payload" => payload = Some(value("a file")?.into()),
            other => anyhow::bail!("mapping test: unknown argument {other:?}; see --help"),
        }
    }
    Ok(Some(MappingTestArgs {
        config: config.context("mapping test: --config FILE is required")?,
        topic: topic.context("mapping test: --topic T is required")?,
        payload: payload.context("mapping test: --payload FILE is required")?,
    }))
}

/// What `--config FILE [--check-config]` asked for.
#[derive(Debug)]
pub struct ConfigArgs {
    /// The file.
    pub config: std::path::PathBuf,
    /// Check it and exit.
    pub check: bool,
}

/// Parses `--config FILE`, `--check-config` and `--help` (which prints
/// `help` and gives `None`); anything else is an error naming it.
pub fn config_args(help: &str) -> anyhow::Result<Option<ConfigArgs>> {
    use anyhow::Context as _;
    let (mut config, mut check) = (None, false);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" => {
                config = Some(std::path::PathBuf::from(
                    args.next().context("--config needs a file; see --help")?,
                ));
            }
            "--check-config" => check = true,
            "-h" | "--help" => {
                print!("{help}");
                return Ok(None);
            }
            other => anyhow::bail!("unknown argument {other:?}; see --help"),
        }
    }
    let config = config.context("--config FILE is required; see --help")?;
    Ok(Some(ConfigArgs { config, check }))
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
        let password = match std::env::var("SHOPFLOOR_PG_PASSWORD") {
            Ok(p) => Some(p),
            Err(_) => match &self.password_file {
                Some(f) => {
                    Some(shopfloor_mqtt::section::read_secret(file, f).map_err(|(p, e)| {
                        anyhow::anyhow!(
                            "{where_}: [{section}] password_file {}: cannot read it: {e}",
                            p.display()
                        )
                    })?)
                }
                None => None,
            },
        };
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
