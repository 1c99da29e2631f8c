//! ClickHouse from the system's binary (Debian's `clickhouse-server`,
//! 18.16.1), as root from a small configuration of its own: data, logs and
//! users in a temporary folder, HTTP and native TCP on free loopback
//! ports, the `default` user without a password from 127.0.0.1 only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::Error;
use crate::process::{self, PORT_ATTEMPTS, Proc, STOP_GRACE};

const INSTALL: &str = "apt-get install -y clickhouse-server";

/// A running ClickHouse server. Dropping it stops it and removes its folder.
#[derive(Debug)]
pub struct ClickHouse {
    binary: PathBuf,
    port: u16,
    tcp_port: u16,
    log_path: PathBuf,
    process: Option<Proc>,
    // Last: the process stops before its folder goes.
    dir: TempDir,
}

impl ClickHouse {
    /// Starts one from `/usr/sbin/clickhouse-server`.
    pub fn start() -> Result<Self, Error> {
        Self::start_with(Path::new("/usr/sbin/clickhouse-server"))
    }

    /// Starts one from `binary`.
    pub fn start_with(binary: &Path) -> Result<Self, Error> {
        if !binary.is_file() {
            return Err(Error::NotInstalled {
                name: "clickhouse-server",
                path: binary.to_owned(),
                install: INSTALL,
            });
        }
        let dir = process::instance_dir("clickhouse-")?;
        let log_path = dir.path().join("clickhouse.log");
        let users = "<?xml version=\"1.0\"?>\n<yandex>\n\
             <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>\n\
             <users><default><password></password><networks><ip>127.0.0.1</ip></networks>\
             <profile>default</profile><quota>default</quota></default></users>\n\
             <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>\
             <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>\
             </interval></default></quotas>\n</yandex>\n";
        std::fs::write(dir.path().join("users.xml"), users)
            .map_err(Error::io("writing users.xml"))?;
        let mut s =
            Self { binary: binary.to_owned(), port: 0, tcp_port: 0, log_path, process: None, dir };
        s.launch(true)?;
        Ok(s)
    }

    fn write_config(&self) -> Result<PathBuf, Error> {
        let d = self.dir.path().display();
        let text = format!(
            "<?xml version=\"1.0\"?>\n<!-- Written by shopfloor-testkit. -->\n<yandex>\n\
             <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/server.err.log</errorlog><console>1</console></logger>\n\
             <http_port>{http}</http_port>\n<tcp_port>{tcp}</tcp_port>\n<listen_host>127.0.0.1</listen_host>\n\
             <path>{d}/data/</path>\n<tmp_path>{d}/tmp/</tmp_path>\n<user_files_path>{d}/user_files/</user_files_path>\n\
             <format_schema_path>{d}/format_schemas/</format_schema_path>\n<users_config>{d}/users.xml</users_config>\n\
             <default_profile>default</default_profile>\n<default_database>default</default_database>\n\
             <mark_cache_size>5368709120</mark_cache_size>\n<timezone>UTC</timezone>\n</yandex>\n",
            http = self.port,
            tcp = self.tcp_port,
        );
        let config = self.dir.path().join("config.xml");
        std::fs::write(&config, text).map_err(Error::io("writing config.xml"))?;
        Ok(config)
    }

    fn launch(&mut self, fresh_ports: bool) -> Result<(), Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            if fresh_ports {
                [self.port, self.tcp_port] = process::free_ports::<2>()?;
            }
            let config = self.write_config()?;
            let mut cmd = Command::new(&self.binary);
            cmd.arg(format!("--config-file={}", config.display())).current_dir(self.dir.path());
            let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
            let ready = || matches!(crate::http_get(addr, "/ping"), Ok((200, _)));
            let retry = fresh_ports && attempt < PORT_ATTEMPTS;
            let started = process::start_server(
                "clickhouse",
                cmd,
                &self.log_path,
                ready,
                "Address already in use",
                retry,
            )?;
            if let Some(p) = started {
                self.process = Some(p);
                return Ok(());
            }
        }
    }

    /// `http://127.0.0.1:<port>`, its HTTP interface.
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

    /// Runs `q` (a `SELECT`) through `GET /?query=`; the answer as text
    /// (TabSeparated unless the query says otherwise).
    pub fn query(&self, q: &str) -> Result<String, Error> {
        let path = format!("/?query={}", crate::percent(q));
        let (status, body) = crate::http_get(SocketAddr::from(([127, 0, 0, 1], self.port)), &path)
            .map_err(Error::io("GET /?query="))?;
        if status != 200 {
            return Err(Error::Usage("ClickHouse answered the query with an error"));
        }
        Ok(body)
    }

    /// SIGKILLs it, like a crash.
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

impl Drop for ClickHouse {
    fn drop(&mut self) {
        self.stop();
    }
}
