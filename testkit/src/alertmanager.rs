//! Prometheus Alertmanager from the system's binary (Debian's
//! `prometheus-alertmanager`), on a free loopback port, clustering off,
//! with a route that groups within about a second (`group_wait 1s`), so a
//! test sees an alert without Alertmanager's default 30 s wait.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::Error;
use crate::process::{self, PORT_ATTEMPTS, Proc, STOP_GRACE};

const INSTALL: &str = "apt-get install -y prometheus-alertmanager";

/// A running Alertmanager. Dropping it stops it and removes its folder.
#[derive(Debug)]
pub struct Alertmanager {
    port: u16,
    log_path: PathBuf,
    process: Option<Proc>,
    // Last: the process stops before its folder goes.
    dir: TempDir,
}

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
        if !binary.is_file() {
            return Err(Error::NotInstalled {
                name: "prometheus-alertmanager",
                path: binary.to_owned(),
                install: INSTALL,
            });
        }
        let dir = process::instance_dir("alertmanager-")?;
        let text = config;
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(&config, text).map_err(Error::io("writing alertmanager.yml"))?;
        let log_path = dir.path().join("alertmanager.log");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let [port] = process::free_ports::<1>()?;
            let mut cmd = Command::new(binary);
            cmd.arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.path={}", dir.path().join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--cluster.listen-address=");
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let ready = || matches!(crate::http_get(addr, "/-/ready"), Ok((200, _)));
            let retry = attempt < PORT_ATTEMPTS;
            let started = process::start_server(
                "alertmanager",
                cmd,
                &log_path,
                ready,
                "address already in use",
                retry,
            )?;
            if let Some(p) = started {
                return Ok(Self { port, log_path, process: Some(p), dir });
            }
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The alerts it holds now (`GET /api/v2/alerts`), as JSON text.
    pub fn alerts(&self) -> Result<String, Error> {
        let (status, body) =
            crate::http_get(SocketAddr::from(([127, 0, 0, 1], self.port)), "/api/v2/alerts")
                .map_err(Error::io("GET /api/v2/alerts"))?;
        if status != 200 {
            return Err(Error::Usage("Alertmanager answered GET /api/v2/alerts with an error"));
        }
        Ok(body)
    }

    /// The log so far.
    pub fn log(&self) -> String {
        process::log_since(&self.log_path, 0)
    }

    /// The folder holding its configuration, data and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop(libc::SIGTERM, STOP_GRACE);
        }
    }
}
