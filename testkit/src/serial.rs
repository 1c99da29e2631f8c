//! A pair of connected pseudo-terminals from `socat`: a serial line for
//! Modbus RTU tests without hardware. Bytes written to one end come out of
//! the other; the baud rate is ignored.

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
        let socat = ["/usr/bin/socat", "/bin/socat"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or(Error::NotInstalled {
                name: "socat",
                path: "/usr/bin/socat".into(),
                install: INSTALL,
            })?;
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
