//! Prometheus Alertmanager from the system's binary (Debian's
//! `prometheus-alertmanager`), on a free loopback port, clustering off,
//! with a route that groups within about a second (`group_wait 1s`), so a
//! test sees an alert without Alertmanager's default 30 s wait.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::Error;
use crate::process;
use crate::server::{self, Server, answers, server_handle};

const INSTALL: &str = "apt-get install -y prometheus-alertmanager";

/// A running Alertmanager (stopped with SIGTERM). Dropping it stops it and
/// removes its folder.
#[derive(Debug)]
pub struct Alertmanager {
    binary: PathBuf,
    server: Server<1>,
    // Last: the process stops before its folder goes.
    dir: TempDir,
}

server_handle!(Alertmanager);

impl Alertmanager {
    /// Starts one from `/usr/bin/prometheus-alertmanager`.
    pub fn start() -> Result<Self, Error> {
        Self::start_with(Path::new("/usr/bin/prometheus-alertmanager"))
    }

    /// Starts one from `binary`.
    pub fn start_with(binary: &Path) -> Result<Self, Error> {
        Self::start_with_config(
            binary,
            "# Written by shopfloor-testkit.\nroute:\n  receiver: 'null'\n  group_by: ['alertname']\n  \
             group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: 'null'\n",
        )
    }

    /// Starts one from `binary` with `config` as its `alertmanager.yml`
    /// (a deployment's own routes, say).
    pub fn start_with_config(binary: &Path, config: &str) -> Result<Self, Error> {
        process::installed("prometheus-alertmanager", binary, INSTALL)?;
        let dir = process::instance_dir("alertmanager-")?;
        std::fs::write(dir.path().join("alertmanager.yml"), config)
            .map_err(Error::io("writing alertmanager.yml"))?;
        let log_path = dir.path().join("alertmanager.log");
        let server = Server::new("alertmanager", log_path, libc::SIGTERM);
        let mut s = Self { binary: binary.to_owned(), server, dir };
        s.launch(true)?;
        Ok(s)
    }

    fn launch(&mut self, fresh: bool) -> Result<(), Error> {
        let (binary, dir) = (&self.binary, self.dir.path());
        let command = |&[port]: &[u16; 1]| {
            let mut cmd = Command::new(binary);
            cmd.arg(format!("--config.file={}", dir.join("alertmanager.yml").display()))
                .arg(format!("--storage.path={}", dir.join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--cluster.listen-address=");
            Ok(cmd)
        };
        self.server.launch(fresh, command, |&[port], _| answers(port, "/-/ready", 200))
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// The alerts it holds now (`GET /api/v2/alerts`), as JSON text.
    pub fn alerts(&self) -> Result<String, Error> {
        let refused = "Alertmanager answered GET /api/v2/alerts with an error";
        server::get(self.port(), "/api/v2/alerts", refused)
    }
}
