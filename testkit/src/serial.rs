//! A pair of connected pseudo-terminals from `socat`: a serial line for
//! Modbus RTU tests without hardware. Bytes written to one end come out of
//! the other; the baud rate is ignored. And a serial-to-Ethernet
//! converter, also `socat`: a loopback TCP port whose bytes go to a
//! pseudo-terminal and back (Modbus RTU over TCP).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::Error;
use crate::process::{Proc, instance_dir, poll_until};

const INSTALL: &str = "apt-get install -y socat";

/// Two linked pseudo-terminals, `a` and `b`; socat is stopped on drop.
#[derive(Debug)]
pub struct SerialPair {
    proc: Proc,
    dir: tempfile::TempDir,
}

impl SerialPair {
    /// Starts `socat` with two raw pseudo-terminals and waits until both exist.
    pub fn start() -> Result<Self, Error> {
        let dir = instance_dir("serial-")?;
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let proc = spawn_socat(
            format!("pty,raw,echo=0,link={}", a.display()),
            format!("pty,raw,echo=0,link={}", b.display()),
        )?;
        let pair = Self { proc, dir };
        wait_for("socat's pseudo-terminals".into(), || a.exists() && b.exists())?;
        Ok(pair)
    }

    /// One end (a symlink to its `/dev/pts/N`).
    pub fn a(&self) -> PathBuf {
        self.dir.path().join("a")
    }

    /// The other end.
    pub fn b(&self) -> PathBuf {
        self.dir.path().join("b")
    }

    /// The folder holding the links.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SerialPair {
    fn drop(&mut self) {
        self.proc.kill();
    }
}

fn socat() -> Result<PathBuf, Error> {
    ["/usr/bin/socat", "/bin/socat"].iter().map(PathBuf::from).find(|p| p.is_file()).ok_or(
        Error::NotInstalled { name: "socat", path: "/usr/bin/socat".into(), install: INSTALL },
    )
}

/// Spawns `socat` joining addresses `a` and `b`; its complaints go to the
/// test's stderr.
fn spawn_socat(a: String, b: String) -> Result<Proc, Error> {
    let socat = socat()?;
    let mut cmd = Command::new(&socat);
    cmd.arg(a).arg(b).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit());
    Proc::spawn(cmd, None, false).map_err(Error::io(format!("starting {}", socat.display())))
}

/// Waits up to 10 s until `ready`; otherwise an error naming `what` it
/// waited for.
fn wait_for(what: String, mut ready: impl FnMut() -> bool) -> Result<(), Error> {
    match poll_until(Duration::from_secs(10), || ready().then_some(())) {
        Some(()) => Ok(()),
        None => Err(Error::Io {
            what: format!("waiting for {what}"),
            source: std::io::Error::other("not there within 10 s"),
        }),
    }
}

/// A transparent serial-to-Ethernet converter: a TCP port on 127.0.0.1
/// whose connections are joined to the serial line at `line` (one end of
/// a [`SerialPair`]), byte for byte. socat is stopped on drop.
#[derive(Debug)]
pub struct SerialServer {
    proc: Proc,
    port: u16,
}

impl SerialServer {
    /// Starts it on a free port and waits until the port accepts.
    pub fn start(line: &Path) -> Result<Self, Error> {
        let port = crate::free_port()?;
        let proc = spawn_socat(
            format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"),
            format!("FILE:{},raw,echo=0", line.display()),
        )?;
        let server = Self { proc, port };
        // Not by connecting: a connection would open the serial line in a
        // forked socat, and its close could take bytes with it.
        wait_for(format!("socat to listen on 127.0.0.1:{port}"), || listens(port))?;
        Ok(server)
    }

    /// Its TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Whether something listens on 127.0.0.1:`port` (`/proc/net/tcp`, state
/// 0A).
fn listens(port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp").is_ok_and(|t| {
        t.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&want.as_str()) && f.get(3) == Some(&"0A")
        })
    })
}

impl Drop for SerialServer {
    fn drop(&mut self) {
        self.proc.kill();
    }
}
