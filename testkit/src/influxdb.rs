//! InfluxDB 1.x from the system's binary (Debian's `influxdb`, 1.6.7), as
//! root from a configuration file of its own: its data, WAL and meta
//! folders in a temporary folder, HTTP and its RPC port on free loopback
//! ports, usage reporting, the UDP listener and self-monitoring off.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::Error;
use crate::process::{self, PORT_ATTEMPTS, Proc, STOP_GRACE};

const INSTALL: &str = "apt-get install -y influxdb";

/// A running InfluxDB. Dropping it stops it and removes its folder.
#[derive(Debug)]
pub struct InfluxDb {
    binary: PathBuf,
    port: u16,
    rpc_port: u16,
    log_path: PathBuf,
    process: Option<Proc>,
    // Last: the process stops before its folder goes.
    dir: TempDir,
}

impl InfluxDb {
    /// Starts one from `/usr/bin/influxd`.
    pub fn start() -> Result<Self, Error> {
        Self::start_with(Path::new("/usr/bin/influxd"))
    }

    /// Starts one from `binary`.
    pub fn start_with(binary: &Path) -> Result<Self, Error> {
        if !binary.is_file() {
            return Err(Error::NotInstalled {
                name: "influxdb",
                path: binary.to_owned(),
                install: INSTALL,
            });
        }
        let dir = process::instance_dir("influxdb-")?;
        let log_path = dir.path().join("influxd.log");
        let mut s =
            Self { binary: binary.to_owned(), port: 0, rpc_port: 0, log_path, process: None, dir };
        s.launch(true)?;
        Ok(s)
    }

    fn write_config(&self) -> Result<PathBuf, Error> {
        let d = self.dir.path();
        let text = format!(
            "# Written by shopfloor-testkit.\n\
             reporting-disabled = true\n\
             bind-address = \"127.0.0.1:{rpc}\"\n\
             [meta]\n  dir = \"{d}/meta\"\n  logging-enabled = false\n\
             [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
             [http]\n  bind-address = \"127.0.0.1:{http}\"\n  log-enabled = false\n\
             [monitor]\n  store-enabled = false\n\
             [subscriber]\n  enabled = false\n\
             [[udp]]\n  enabled = false\n",
            rpc = self.rpc_port,
            http = self.port,
            d = d.display(),
        );
        let config = d.join("influxdb.conf");
        std::fs::write(&config, text).map_err(Error::io("writing influxdb.conf"))?;
        Ok(config)
    }

    fn launch(&mut self, fresh_ports: bool) -> Result<(), Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            if fresh_ports {
                [self.port, self.rpc_port] = process::free_ports::<2>()?;
            }
            let config = self.write_config()?;
            let mut cmd = Command::new(&self.binary);
            cmd.arg("-config").arg(&config);
            let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
            let ready = || matches!(crate::http_get(addr, "/ping"), Ok((204, _)));
            let retry = fresh_ports && attempt < PORT_ATTEMPTS;
            let started = process::start_server(
                "influxdb",
                cmd,
                &self.log_path,
                ready,
                "address already in use",
                retry,
            )?;
            if let Some(p) = started {
                self.process = Some(p);
                return Ok(());
            }
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The HTTP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Proc::pid)
    }

    /// Runs an InfluxQL query on `database` (`GET /query`, times as Unix
    /// ms); the JSON answer as text.
    pub fn query(&self, database: &str, q: &str) -> Result<String, Error> {
        let path =
            format!("/query?epoch=ms&db={}&q={}", crate::percent(database), crate::percent(q));
        let (status, body) = crate::http_get(SocketAddr::from(([127, 0, 0, 1], self.port)), &path)
            .map_err(Error::io("GET /query"))?;
        if status != 200 {
            return Err(Error::Usage("InfluxDB answered GET /query with an error"));
        }
        Ok(body)
    }

    /// SIGKILLs it, like a crash. The next start replays its WAL.
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Stops it (SIGTERM) and waits.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop(libc::SIGTERM, STOP_GRACE);
        }
    }

    /// Starts it again after [`stop`](Self::stop) or [`kill9`](Self::kill9),
    /// on the same ports with the same data.
    pub fn start_again(&mut self) -> Result<(), Error> {
        self.stop();
        self.launch(false)
    }

    /// The log so far.
    pub fn log(&self) -> String {
        process::log_since(&self.log_path, 0)
    }
}

impl Drop for InfluxDb {
    fn drop(&mut self) {
        self.stop();
    }
}
