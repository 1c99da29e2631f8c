//! InfluxDB 1.x from the system's binary (Debian's `influxdb`, 1.6.7), as
//! root from a configuration file of its own: its data, WAL and meta
//! folders in a temporary folder, HTTP and its RPC port on free loopback
//! ports, usage reporting, the UDP listener and self-monitoring off.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::Error;
use crate::process;
use crate::server::{self, Server, answers, server_handle};

const INSTALL: &str = "apt-get install -y influxdb";

/// A running InfluxDB (stopped with SIGTERM; after a SIGKILL the next start
/// replays its WAL); [`port`](Self::port) is its HTTP port. Dropping it
/// stops it and removes its folder.
#[derive(Debug)]
pub struct InfluxDb {
    binary: PathBuf,
    /// HTTP, RPC.
    server: Server<2>,
    // Last: the process stops before its folder goes.
    dir: TempDir,
}

server_handle!(InfluxDb);

impl InfluxDb {
    /// Starts one from `/usr/bin/influxd`.
    pub fn start() -> Result<Self, Error> {
        Self::start_with(Path::new("/usr/bin/influxd"))
    }

    /// Starts one from `binary`.
    pub fn start_with(binary: &Path) -> Result<Self, Error> {
        process::installed("influxdb", binary, INSTALL)?;
        let dir = process::instance_dir("influxdb-")?;
        let server = Server::new("influxdb", dir.path().join("influxd.log"), libc::SIGTERM);
        let mut s = Self { binary: binary.to_owned(), server, dir };
        s.launch(true)?;
        Ok(s)
    }

    fn launch(&mut self, fresh: bool) -> Result<(), Error> {
        let (binary, dir) = (&self.binary, self.dir.path());
        let command = |&[http, rpc]: &[u16; 2]| {
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
                d = dir.display(),
            );
            let config = dir.join("influxdb.conf");
            std::fs::write(&config, text).map_err(Error::io("writing influxdb.conf"))?;
            let mut cmd = Command::new(binary);
            cmd.arg("-config").arg(&config);
            Ok(cmd)
        };
        self.server.launch(fresh, command, |&[http, _], _| answers(http, "/ping", 204))
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// Runs an InfluxQL query on `database` (`GET /query`, times as Unix
    /// ms); the JSON answer as text.
    pub fn query(&self, database: &str, q: &str) -> Result<String, Error> {
        let path =
            format!("/query?epoch=ms&db={}&q={}", crate::percent(database), crate::percent(q));
        server::get(self.port(), &path, "InfluxDB answered GET /query with an error")
    }
}
