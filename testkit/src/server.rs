//! What every server testkit starts on loopback ports has in common: one
//! process and its log, a start that takes fresh ports when another process
//! took one first (or, on a restart, waits for the same ones), and a stop
//! with the server's own signal that reaps it.
//!
//! Each server's module says how to run one start attempt (the command for
//! a set of ports) and when it serves; [`server_handle!`] gives its handle
//! the methods every handle has.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::Error;
use crate::process::{self, PORT_ATTEMPTS, Proc, RunAs, START_TIMEOUT, STOP_GRACE};

/// One server process on `N` loopback ports, and its log. Dropping it stops
/// the process; the handle holding it declares it before its folder, so the
/// server stops before the folder goes.
#[derive(Debug)]
pub(crate) struct Server<const N: usize> {
    /// As [`Error::Start`] names it.
    name: &'static str,
    /// Its stdout and stderr, across restarts.
    log_path: PathBuf,
    /// The polite signal [`Server::stop`] sends before SIGKILL.
    stop_signal: libc::c_int,
    /// The OS user it runs as (none: this process's).
    pub(crate) run_as: Option<RunAs>,
    /// It forks workers that must be killed with it (see [`Proc::spawn`]).
    pub(crate) tree: bool,
    /// The ports of the last start (0 before the first).
    pub(crate) ports: [u16; N],
    process: Option<Proc>,
}

/// One start attempt, for a server's readiness check.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attempt<'a> {
    /// The process id.
    pub(crate) pid: u32,
    log_path: &'a Path,
    offset: u64,
}

impl Attempt<'_> {
    /// What the server has logged since this attempt began.
    pub(crate) fn log(&self) -> String {
        process::log_since(self.log_path, self.offset)
    }
}

/// `127.0.0.1:port`.
pub(crate) fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Whether `GET path` on `127.0.0.1:port` answers with `status`.
pub(crate) fn answers(port: u16, path: &str, status: u16) -> bool {
    crate::http_get(loopback(port), path).is_ok_and(|(s, _)| s == status)
}

/// `GET path` on `127.0.0.1:port`: the body of a `200 OK`, else
/// [`Error::Usage`] saying `refused`.
pub(crate) fn get(port: u16, path: &str, refused: &'static str) -> Result<String, Error> {
    let (status, body) =
        crate::http_get(loopback(port), path).map_err(Error::io(format!("GET {path}")))?;
    if status != 200 {
        return Err(Error::Usage(refused));
    }
    Ok(body)
}

impl<const N: usize> Server<N> {
    /// A server not started yet, logging to `log_path`, stopped with
    /// `stop_signal`.
    pub(crate) fn new(name: &'static str, log_path: PathBuf, stop_signal: libc::c_int) -> Self {
        Self {
            name,
            log_path,
            stop_signal,
            run_as: None,
            tree: false,
            ports: [0; N],
            process: None,
        }
    }

    /// Starts it: fresh ports when `fresh`, else those of the last start
    /// (a restart). Each attempt runs `command(ports)` with its output
    /// appended to the log and polls `ready(ports, attempt)` until it says
    /// the server serves. When the server exits saying its address is in
    /// use, it tries again, up to [`PORT_ATTEMPTS`] times: on fresh ports,
    /// or on a restart on the same ones after a pause growing by 100 ms,
    /// while the old process's port is released. Otherwise an
    /// [`Error::Start`] with the tail of this attempt's log.
    pub(crate) fn launch(
        &mut self,
        fresh: bool,
        mut command: impl FnMut(&[u16; N]) -> Result<Command, Error>,
        ready: impl Fn(&[u16; N], Attempt<'_>) -> bool,
    ) -> Result<(), Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            if fresh {
                self.ports = process::free_ports::<N>()?;
            }
            let offset = process::log_len(&self.log_path);
            let (stdout, stderr) = process::open_log(&self.log_path)?;
            let mut cmd = command(&self.ports)?;
            cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
            let program = cmd.get_program().to_string_lossy().into_owned();
            let mut proc = Proc::spawn(cmd, self.run_as, self.tree)
                .map_err(Error::io(format!("spawning {program}")))?;
            let this = Attempt { pid: proc.pid(), log_path: &self.log_path, offset };
            let outcome = process::poll_until(START_TIMEOUT, || match proc.poll_exit() {
                Some(status) => Some(Err(status)),
                None => ready(&self.ports, this).then_some(Ok(())),
            });
            let fail = |reason: String| Error::Start {
                server: self.name,
                reason,
                log_tail: process::tail(&this.log(), 20),
                log: self.log_path.clone(),
            };
            match outcome {
                Some(Ok(())) => {
                    self.process = Some(proc);
                    return Ok(());
                }
                Some(Err(_))
                    if attempt < PORT_ATTEMPTS
                        && this.log().to_ascii_lowercase().contains("address already in use") =>
                {
                    if !fresh {
                        std::thread::sleep(Duration::from_millis(100 * attempt as u64));
                    }
                }
                Some(Err(status)) => return Err(fail(format!("it exited ({status})"))),
                None => {
                    let error = fail(format!("not ready after {START_TIMEOUT:?}"));
                    proc.kill();
                    return Err(error);
                }
            }
        }
    }

    /// Its process id while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Proc::pid)
    }

    /// Whether its process is alive (it may have exited on its own).
    pub(crate) fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(|p| p.poll_exit().is_none())
    }

    /// Sends the stop signal, SIGKILL after [`STOP_GRACE`], and reaps it.
    pub(crate) fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop(self.stop_signal, STOP_GRACE);
        }
    }

    /// SIGKILLs it (with its workers) and reaps it.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Its log file.
    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The whole log so far.
    pub(crate) fn log(&self) -> String {
        process::log_since(&self.log_path, 0)
    }
}

impl<const N: usize> Drop for Server<N> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The methods every server handle has, for a handle type with a
/// `server: Server<N>` field, a `dir: TempDir` field and a
/// `fn launch(&mut self, fresh: bool) -> Result<(), Error>`; its own docs
/// say which signal stops it and what a SIGKILL loses.
macro_rules! server_handle {
    ($handle:ty) => {
        impl $handle {
            /// The port it listens on (127.0.0.1); the first, where it has several.
            pub fn port(&self) -> u16 {
                self.server.ports[0]
            }

            /// `127.0.0.1:<port>`.
            pub fn addr(&self) -> std::net::SocketAddr {
                crate::server::loopback(self.port())
            }

            /// Its process id while it runs.
            pub fn pid(&self) -> Option<u32> {
                self.server.pid()
            }

            /// Whether its process is alive (it may have exited on its own).
            pub fn is_running(&mut self) -> bool {
                self.server.is_running()
            }

            /// Stops it cleanly with its stop signal (SIGKILL after 10 s),
            /// waits for it and reaps it. Does nothing if it is not running.
            pub fn stop(&mut self) {
                self.server.stop();
            }

            /// SIGKILLs it (and every worker it forked) and reaps it, like a
            /// crash: no clean shutdown.
            pub fn kill9(&mut self) {
                self.server.kill9();
            }

            /// Starts it again after [`stop`](Self::stop) or
            /// [`kill9`](Self::kill9), on the same ports with the same
            /// folder. Stops it first if it is still running.
            pub fn start_again(&mut self) -> Result<(), crate::Error> {
                self.stop();
                self.launch(false)
            }

            /// Stops it cleanly and starts it again on the same ports.
            pub fn restart(&mut self) -> Result<(), crate::Error> {
                self.start_again()
            }

            /// Its log (stdout and stderr, across restarts).
            pub fn log_path(&self) -> &std::path::Path {
                self.server.log_path()
            }

            /// The whole log so far.
            pub fn log(&self) -> String {
                self.server.log()
            }

            /// Its instance folder (configuration, data, log).
            pub fn dir(&self) -> &std::path::Path {
                self.dir.path()
            }
        }

        impl crate::Service for $handle {
            fn stop(&mut self) {
                self.stop();
            }

            fn kill9(&mut self) {
                self.kill9();
            }

            fn start_again(&mut self) -> Result<(), crate::Error> {
                self.start_again()
            }
        }
    };
}
pub(crate) use server_handle;

/// A server a test takes away and brings back: every handle testkit
/// starts, so that one outage scenario runs against any of them.
pub trait Service {
    /// Stops it cleanly (SIGKILL after 10 s) and reaps it.
    fn stop(&mut self);
    /// SIGKILLs it, like a crash.
    fn kill9(&mut self);
    /// Starts it again on the same ports with the same folder.
    fn start_again(&mut self) -> Result<(), Error>;
}
