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
                // async-opcua warns about an empty endpoint list in its own
                // config, which the OPC UA gateway never uses; its server
                // (the simulator's) logs every endpoint at info.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new(
                        "info,opcua_client::config=error,opcua_server=warn,opcua_crypto=warn",
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
