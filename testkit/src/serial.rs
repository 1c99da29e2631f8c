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
        let socat = socat()?;
        let dir = instance_dir("serial-")?;
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let mut cmd = Command::new(&socat);
        cmd.arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let proc = Proc::spawn(cmd, None, false)
            .map_err(Error::io(format!("starting {}", socat.display())))?;
        let pair = Self { proc, dir };
        if poll_until(Duration::from_secs(10), || (a.exists() && b.exists()).then_some(()))
            .is_none()
        {
            return Err(Error::Io {
                what: "waiting for socat's pseudo-terminals".into(),
                source: std::io::Error::other("they did not appear within 10 s"),
            });
        }
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
        let socat = socat()?;
        let port = crate::free_port()?;
        let mut cmd = Command::new(&socat);
        cmd.arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"))
            .arg(format!("FILE:{},raw,echo=0", line.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let proc = Proc::spawn(cmd, None, false)
            .map_err(Error::io(format!("starting {}", socat.display())))?;
        let server = Self { proc, port };
        // Not by connecting: a connection would open the serial line in a
        // forked socat, and its close could take bytes with it.
        let listening = poll_until(Duration::from_secs(10), || listens(port).then_some(()));
        if listening.is_none() {
            return Err(Error::Io {
                what: format!("waiting for socat to listen on 127.0.0.1:{port}"),
                source: std::io::Error::other("timed out after 10 s"),
            });
        }
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
