//! Python protocol peers (pysparkplug, and later pymodbus and asyncua) from
//! the project-local venv that `scripts/test` creates.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::Error;

/// The command that creates the venv, for error messages.
pub const VENV_INSTALL: &str = "scripts/test (or: python3 -m venv .venv && .venv/bin/pip install -r testkit/python/requirements.txt)";

/// The venv's Python interpreter: `<workspace>/.venv/bin/python`.
pub fn python() -> Result<PathBuf, Error> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    crate::process::installed("the Python test peers (.venv)", &path, VENV_INSTALL)?;
    Ok(path)
}

/// A peer script shared by several crates' tests, in `testkit/python/`
/// (`sparkplug_decode.py`: every Sparkplug message on a broker, decoded by
/// pysparkplug and by Google's protobuf runtime, one JSON line each;
/// `modbus_device.py`: a pymodbus device over TCP or RTU, driven by JSON
/// commands on stdin).
pub fn shared_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python").join(name)
}

/// A Python script running as a peer: lines to its stdin, lines from its
/// stdout, killed on drop. Its stderr goes to the test's stderr.
#[derive(Debug)]
pub struct PythonPeer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    script: String,
}

impl PythonPeer {
    /// Starts `python script args…` with the venv's interpreter.
    pub fn spawn(script: impl AsRef<Path>, args: &[&str]) -> Result<Self, Error> {
        let script = script.as_ref();
        let mut child = Command::new(python()?)
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| Error::Io {
                what: format!("starting {}", script.display()),
                source,
            })?;
        let stdout = child.stdout.take().ok_or_else(|| Error::Io {
            what: "taking the peer's stdout".into(),
            source: std::io::Error::other("no stdout"),
        })?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self { stdin: child.stdin.take(), child, lines, script: script.display().to_string() })
    }

    /// Sends one line to the peer's stdin.
    pub fn send(&mut self, line: &str) -> Result<(), Error> {
        let stdin =
            self.stdin.as_mut().ok_or_else(|| Error::Usage("the peer's stdin is closed"))?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .map_err(|source| Error::Io { what: format!("writing to {}", self.script), source })
    }

    /// The next line the peer prints, waiting at most `timeout`; `None` when
    /// the deadline passes or the peer has exited.
    pub fn line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Lines until one satisfies `want` (`Ok` with it) or `timeout` passes
    /// (`Err` with every line passed over, in order, for the failure message).
    pub fn until(
        &self,
        timeout: Duration,
        mut want: impl FnMut(&str) -> bool,
    ) -> Result<String, Vec<String>> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if want(&line) => return Ok(line),
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        Err(seen)
    }
}

impl PythonPeer {
    /// Kills the peer at once (SIGKILL), like a device losing power, and
    /// waits for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PythonPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
