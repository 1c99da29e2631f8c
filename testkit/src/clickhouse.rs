//! ClickHouse from the system's binary (Debian's `clickhouse-server`,
//! 18.16.1), as root from a small configuration of its own: data, logs and
//! users in a temporary folder, HTTP and native TCP on free loopback
//! ports, the `default` user without a password from 127.0.0.1 only.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::Error;
use crate::process;
use crate::server::{self, Server, answers, server_handle};

const INSTALL: &str = "apt-get install -y clickhouse-server";

/// A running ClickHouse server (stopped with SIGTERM); [`port`](Self::port)
/// is its HTTP interface's. Dropping it stops it and removes its folder.
#[derive(Debug)]
pub struct ClickHouse {
    binary: PathBuf,
    /// HTTP, native TCP.
    server: Server<2>,
    // Last: the process stops before its folder goes.
    dir: TempDir,
}

server_handle!(ClickHouse);

impl ClickHouse {
    /// Starts one from `/usr/sbin/clickhouse-server`.
    pub fn start() -> Result<Self, Error> {
        Self::start_with(Path::new("/usr/sbin/clickhouse-server"))
    }

    /// Starts one from `binary`.
    pub fn start_with(binary: &Path) -> Result<Self, Error> {
        process::installed("clickhouse-server", binary, INSTALL)?;
        let dir = process::instance_dir("clickhouse-")?;
        let users = "<?xml version=\"1.0\"?>\n<yandex>\n\
             <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>\n\
             <users><default><password></password><networks><ip>127.0.0.1</ip></networks>\
             <profile>default</profile><quota>default</quota></default></users>\n\
             <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>\
             <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>\
             </interval></default></quotas>\n</yandex>\n";
        std::fs::write(dir.path().join("users.xml"), users)
            .map_err(Error::io("writing users.xml"))?;
        let server = Server::new("clickhouse", dir.path().join("clickhouse.log"), libc::SIGTERM);
        let mut s = Self { binary: binary.to_owned(), server, dir };
        s.launch(true)?;
        Ok(s)
    }

    fn launch(&mut self, fresh: bool) -> Result<(), Error> {
        let (binary, dir) = (&self.binary, self.dir.path());
        let command = |&[http, tcp]: &[u16; 2]| {
            let d = dir.display();
            let text = format!(
                "<?xml version=\"1.0\"?>\n<!-- Written by shopfloor-testkit. -->\n<yandex>\n\
                 <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/server.err.log</errorlog><console>1</console></logger>\n\
                 <http_port>{http}</http_port>\n<tcp_port>{tcp}</tcp_port>\n<listen_host>127.0.0.1</listen_host>\n\
                 <path>{d}/data/</path>\n<tmp_path>{d}/tmp/</tmp_path>\n<user_files_path>{d}/user_files/</user_files_path>\n\
                 <format_schema_path>{d}/format_schemas/</format_schema_path>\n<users_config>{d}/users.xml</users_config>\n\
                 <default_profile>default</default_profile>\n<default_database>default</default_database>\n\
                 <mark_cache_size>5368709120</mark_cache_size>\n<timezone>UTC</timezone>\n</yandex>\n",
            );
            let config = dir.join("config.xml");
            std::fs::write(&config, text).map_err(Error::io("writing config.xml"))?;
            let mut cmd = Command::new(binary);
            cmd.arg(format!("--config-file={}", config.display())).current_dir(dir);
            Ok(cmd)
        };
        self.server.launch(fresh, command, |&[http, _], _| answers(http, "/ping", 200))
    }

    /// `http://127.0.0.1:<port>`, its HTTP interface.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// Runs `q` (a `SELECT`) through `GET /?query=`; the answer as text
    /// (TabSeparated unless the query says otherwise).
    pub fn query(&self, q: &str) -> Result<String, Error> {
        let path = format!("/?query={}", crate::percent(q));
        server::get(self.port(), &path, "ClickHouse answered the query with an error")
    }
}
