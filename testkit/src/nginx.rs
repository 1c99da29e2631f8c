//! nginx from the system's binary (Debian's `nginx`) as a reverse proxy on
//! a free loopback port: the test gives the `server { … }` block's inside
//! (locations), testkit the rest (its own folder for temporary files and
//! logs, no daemon, no master's pid file in /run).

use std::path::Path;
use std::process::Command;

use tempfile::TempDir;

use crate::Error;
use crate::process;
use crate::server::{Server, loopback, server_handle};

const INSTALL: &str = "apt-get install -y nginx";
const BINARY: &str = "/usr/sbin/nginx";

/// A running nginx (stopped with SIGTERM); its log is the error log.
/// Dropping it stops it and removes its folder.
#[derive(Debug)]
pub struct Nginx {
    /// The `server` block's inside, `{dir}` replaced.
    locations: String,
    server: Server<1>,
    // Last: the process stops before its folder goes.
    dir: TempDir,
}

server_handle!(Nginx);

impl Nginx {
    /// Starts `/usr/sbin/nginx` with `locations` inside its one `server`
    /// block; `{dir}` in them is replaced by nginx's folder.
    pub fn start(locations: &str) -> Result<Self, Error> {
        Self::start_with_files(locations, &[])
    }

    /// [`Nginx::start`], writing `files` (name, contents) into nginx's
    /// folder first (an htpasswd file, say; `{dir}/NAME` in `locations`).
    pub fn start_with_files(locations: &str, files: &[(&str, &str)]) -> Result<Self, Error> {
        process::installed("nginx", Path::new(BINARY), INSTALL)?;
        let dir = process::instance_dir("nginx-")?;
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text)
                .map_err(Error::io("writing an nginx file"))?;
        }
        let locations = locations.replace("{dir}", &dir.path().display().to_string());
        let server = Server::new("nginx", dir.path().join("error.log"), libc::SIGTERM);
        let mut s = Self { locations, server, dir };
        s.launch(true)?;
        Ok(s)
    }

    fn launch(&mut self, fresh: bool) -> Result<(), Error> {
        let (locations, dir) = (&self.locations, self.dir.path());
        let log = self.server.log_path().to_owned();
        let command = |&[port]: &[u16; 1]| {
            let d = dir.display();
            let user = if process::is_root() { "user root;\n" } else { "" };
            let config = format!(
                "# Written by shopfloor-testkit.\n{user}daemon off;\nmaster_process off;\n\
                 pid {d}/nginx.pid;\nerror_log {d}/error.log info;\nevents {{ worker_connections 256; }}\n\
                 http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  \
                 proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
                 uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
                 server {{\n    listen 127.0.0.1:{port};\n{locations}\n  }}\n}}\n"
            );
            let path = dir.join("nginx.conf");
            std::fs::write(&path, config).map_err(Error::io("writing nginx.conf"))?;
            let mut cmd = Command::new(BINARY);
            cmd.arg("-c").arg(&path).arg("-p").arg(dir).arg("-e").arg(&log);
            Ok(cmd)
        };
        self.server.launch(fresh, command, |&[port], _| {
            std::net::TcpStream::connect(loopback(port)).is_ok()
        })
    }
}
