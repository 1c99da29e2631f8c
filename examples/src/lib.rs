//! What the shopfloor binaries share: how they log, stop and exit.

use std::process::ExitCode;

pub mod cli;
pub mod gateway;
pub mod grafana;
pub mod live;
pub mod metrics;
pub mod plant;
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
