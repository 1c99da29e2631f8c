//! The one error type of testkit.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

/// Why a server, a proxy or a set of certificates could not be set up.
///
/// Every variant names what failed and, where there is one, the fix: a test
/// that calls `.start().expect("…")` or `?` fails with a message that says
/// which package to install.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A server binary is not installed where testkit looks for it.
    #[error("{name} not found at {}: install it with `{install}`", path.display())]
    NotInstalled {
        /// The program, as its package calls it (`mosquitto`, `postgresql`).
        name: &'static str,
        /// Where testkit looked (a glob for PostgreSQL's versioned folders).
        path: PathBuf,
        /// The command that installs it on Debian and Ubuntu.
        install: &'static str,
    },
    /// The unprivileged OS user a server must run as when the tests run as root
    /// does not exist.
    #[error(
        "OS user {user:?} not found: {server} refuses to run as root and testkit runs it as \
         {user:?}; install it with `{install}` (which creates the user) or run the tests as \
         a non-root user"
    )]
    UserNotFound {
        /// The OS user that was looked up.
        user: &'static str,
        /// The server that needs it.
        server: &'static str,
        /// The command that installs the server and creates the user.
        install: &'static str,
    },
    /// A file-system, socket or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What testkit was doing, with the path or address involved.
        what: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A helper program (`initdb`, `mosquitto_passwd`) exited with an error.
    #[error("`{command}` failed ({status}): {output}")]
    Command {
        /// The command line that was run.
        command: String,
        /// How it exited.
        status: ExitStatus,
        /// What it printed on stdout and stderr.
        output: String,
    },
    /// A server was spawned but did not become ready.
    #[error("{server} did not start: {reason}\n--- last lines of {} ---\n{log_tail}", log.display())]
    Start {
        /// `mosquitto` or `postgres`.
        server: &'static str,
        /// What went wrong: it exited, or it was not ready before the deadline.
        reason: String,
        /// The server's log file (kept in the instance's temporary folder).
        log: PathBuf,
        /// The last lines of that log from this start attempt.
        log_tail: String,
    },
    /// A method was called that the instance was not configured for.
    #[error("{0}")]
    Usage(&'static str),
    /// A DevTools call to the test browser failed, or what a test waited
    /// for in the page did not happen in time.
    #[error("chromium: {0}")]
    DevTools(String),
    /// Generating the test certificates failed (rcgen's error).
    #[error("generating test certificates: {0}")]
    Certificate(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Building a rustls configuration from the test certificates failed.
    #[error("building the TLS client configuration: {0}")]
    Tls(#[from] rustls::Error),
}

impl Error {
    /// Wraps an `io::Error` with what was being done.
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}
