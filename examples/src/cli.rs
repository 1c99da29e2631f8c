//! The command line every binary shares: `-c/--config` with a default in
//! `/etc/shopfloor/`, `--check-config`, `--log-format`, `--version`, the
//! `completions` and `man` subcommands, and the exit statuses (0; 1 for a
//! failure while running; 2 for a usage error, from clap; 78, sysexits'
//! `EX_CONFIG`, for a configuration that cannot work).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Command, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

/// The exit status of a configuration error (sysexits.h `EX_CONFIG`): a
/// service manager should not restart a process that exits with it
/// (`RestartPreventExitStatus=78`).
pub const EX_CONFIG: u8 = 78;

/// Marks an error as the configuration's: [`exit`] gives [`EX_CONFIG`].
#[derive(Debug, thiserror::Error)]
#[error("configuration error")]
pub struct BadConfig;

/// Marks the error of a configuration step (see [`BadConfig`]).
pub trait ConfigContext<T> {
    /// The error, marked as the configuration's.
    fn bad_config(self) -> anyhow::Result<T>;
}

impl<T, E: Into<anyhow::Error>> ConfigContext<T> for Result<T, E> {
    fn bad_config(self) -> anyhow::Result<T> {
        self.map_err(|e| e.into().context(BadConfig))
    }
}

/// `main`'s exit: 0; after `error: …` (with its causes) on stderr, 78 for
/// a configuration error and 1 for anything else.
pub fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The marker is the outermost context: not said, but exit 78.
            let config = e.downcast_ref::<BadConfig>().is_some();
            let causes: Vec<String> =
                e.chain().skip(usize::from(config)).map(ToString::to_string).collect();
            eprintln!("error: {}", causes.join(": "));
            if config { ExitCode::from(EX_CONFIG) } else { ExitCode::FAILURE }
        }
    }
}

/// How logs are written (to stderr).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line of text an event (colour on a terminal).
    #[default]
    Text,
    /// One JSON object an event, for a log shipper.
    Json,
}

/// The options of a daemon that reads one configuration file.
#[derive(Debug, Args)]
pub struct ConfigOpts {
    /// The configuration file (TOML) [default: /etc/shopfloor/NAME.toml]
    #[arg(short, long, value_name = "FILE", env = "SHOPFLOOR_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Check the file, print what would run, and exit (0: valid, 78: not)
    #[arg(long, global = true)]
    pub check_config: bool,
    /// How logs are written to stderr (filtered by RUST_LOG, default info)
    #[arg(long, value_enum, default_value_t, env = "SHOPFLOOR_LOG_FORMAT", global = true)]
    pub log_format: LogFormat,
}

impl ConfigOpts {
    /// The file: `--config`, else `/etc/shopfloor/<name>.toml`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.config.clone().unwrap_or_else(|| PathBuf::from(format!("/etc/shopfloor/{name}.toml")))
    }

    /// What a daemon with the command line `C` is asked to do: `None`
    /// when a `completions` or `man` subcommand was printed; else whether
    /// only to check the file (`--check-config` or `check`).
    pub fn mode<C: CommandFactory>(
        &self,
        command: Option<&Generate>,
    ) -> anyhow::Result<Option<bool>> {
        match command {
            Some(g) if g.print::<C>()? => Ok(None),
            Some(_) => Ok(Some(true)),
            None => Ok(Some(self.check_config)),
        }
    }
}

/// The subcommands every binary has.
#[derive(Debug, Subcommand)]
pub enum Generate {
    /// Check the configuration file and exit (as --check-config)
    Check,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `… man > /usr/share/man/man1/NAME.1`
    Man,
}

impl Generate {
    /// Prints what `completions` or `man` make for the command line `C`;
    /// `false` for `check`, which the binary runs itself.
    pub fn print<C: CommandFactory>(&self) -> anyhow::Result<bool> {
        self.print_for(C::command())
    }

    /// [`print`](Self::print) for the command line `cmd`.
    pub fn print_for(&self, mut cmd: Command) -> anyhow::Result<bool> {
        let name = cmd.get_name().to_owned();
        match self {
            Self::Check => Ok(false),
            Self::Completions { shell } => {
                clap_complete::generate(*shell, &mut cmd, name, &mut std::io::stdout());
                Ok(true)
            }
            Self::Man => {
                clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
                Ok(true)
            }
        }
    }
}

/// A daemon's command line: the shared options and the subcommands `C`
/// (which flatten [`Generate`]; [`Generate`] alone for a daemon with no
/// modes of its own).
#[derive(Debug, Parser)]
#[command(version)]
pub struct Daemon<C: Subcommand> {
    /// The shared options.
    #[command(flatten)]
    pub opts: ConfigOpts,
    /// The subcommand, if any.
    #[command(subcommand)]
    pub command: Option<C>,
}

/// A daemon's subcommands: the shared ones, or its own modes.
pub trait Modes: Subcommand {
    /// The shared subcommand, when that is what was given.
    fn generate(&self) -> Option<&Generate>;
}

impl Modes for Generate {
    fn generate(&self) -> Option<&Generate> {
        Some(self)
    }
}

/// Implements [`Modes`] for a binary's subcommand enum whose shared
/// subcommands are the flattened variant `Generate(Generate)`.
#[macro_export]
macro_rules! impl_modes {
    ($command:ty) => {
        impl $crate::cli::Modes for $command {
            fn generate(&self) -> Option<&$crate::cli::Generate> {
                if let Self::Generate(g) = self { Some(g) } else { None }
            }
        }
    };
}

/// The `--help` lines of the `[mqtt]` keys every daemon logs in with
/// besides `username` (the password, and TLS on examples/deploy's broker),
/// for `concat!` in a binary's `HELP`.
#[macro_export]
macro_rules! help_mqtt_login {
    () => {
        "    password_file = \"/etc/shopfloor/mqtt.pass\"   # a file, or SHOPFLOOR_MQTT_PASSWORD
    # TLS (port 8883 of examples/deploy's broker): the CA, and this
    # machine's certificate, whose CN is its user name there
    # ca_file = \"/etc/shopfloor/pki/ca.crt\"
    # cert_file = \"/etc/shopfloor/pki/NAME.crt\"
    # key_file = \"/etc/shopfloor/pki/NAME.key\"
"
    };
}

/// The `--help` lines of `[metrics]` (see [`metrics`](crate::metrics)),
/// listening on `127.0.0.1:$port`, for `concat!` in a binary's `HELP`.
#[macro_export]
macro_rules! help_metrics {
    ($port:literal) => {
        concat!(
            "    [metrics]                     # optional: Prometheus GET /metrics here
    listen = \"127.0.0.1:",
            $port,
            "\"\n"
        )
    };
}

impl<C: Modes> Daemon<C> {
    /// Parses the process's arguments as `name` (`shopfloor-…`), described
    /// by `about` (first line: `-h`; all: `--help`) with `help` (the
    /// file's reference and examples) after `--help`. Exits 2 with clap's
    /// message on a usage error. `None` when `completions` or `man` was
    /// printed.
    pub fn parse_as(
        name: &'static str,
        about: &'static str,
        help: &'static str,
    ) -> anyhow::Result<Option<Self>> {
        let cmd = || {
            Self::command()
                .name(name)
                .bin_name(name)
                .about(about.lines().next().unwrap_or(about))
                .long_about(about)
                .after_long_help(help)
        };
        let cli = Self::from_arg_matches(&cmd().get_matches()).unwrap_or_else(|e| e.exit());
        ignore_hangup();
        match cli.command.as_ref().and_then(Modes::generate) {
            Some(g) if g.print_for(cmd())? => Ok(None),
            _ => Ok(Some(cli)),
        }
    }

    /// Whether only to check the file (`--check-config` or `check`).
    pub fn check_only(&self) -> bool {
        self.opts.check_config
            || matches!(self.command.as_ref().and_then(Modes::generate), Some(Generate::Check))
    }
}

/// SIGHUP's default is to end the process: until a daemon waits for its
/// signals (`wait_for_stop`, which handles SIGHUP), one is ignored.
pub fn ignore_hangup() {
    // SAFETY: SIG_IGN is a valid disposition; no handler code runs.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
}
