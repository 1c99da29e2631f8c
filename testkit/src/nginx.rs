//! nginx from the system's binary (Debian's `nginx`) as a reverse proxy on
//! a free loopback port: the test gives the `server { … }` block's inside
//! (locations), testkit the rest (its own folder for temporary files and
//! logs, no daemon, no master's pid file in /run).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::Error;
use crate::process::{self, PORT_ATTEMPTS, Proc, STOP_GRACE};

const INSTALL: &str = "apt-get install -y nginx";

/// A running nginx. Dropping it stops it and removes its folder.
#[derive(Debug)]
pub struct Nginx {
    port: u16,
    log_path: PathBuf,
    process: Option<Proc>,
    // Last: the process stops before its folder goes.
    dir: TempDir,
}

impl Nginx {
    /// Starts `/usr/sbin/nginx` with `locations` inside its one `server`
    /// block; `{dir}` in them is replaced by nginx's folder.
    pub fn start(locations: &str) -> Result<Self, Error> {
        Self::start_with_files(locations, &[])
    }

    /// [`Nginx::start`], writing `files` (name, contents) into nginx's
    /// folder first (an htpasswd file, say; `{dir}/NAME` in `locations`).
    pub fn start_with_files(locations: &str, files: &[(&str, &str)]) -> Result<Self, Error> {
        let binary = Path::new("/usr/sbin/nginx");
        if !binary.is_file() {
            return Err(Error::NotInstalled {
                name: "nginx",
                path: binary.to_owned(),
                install: INSTALL,
            });
        }
        let dir = process::instance_dir("nginx-")?;
        let d = dir.path().display().to_string();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text)
                .map_err(Error::io("writing an nginx file"))?;
        }
        let log_path = dir.path().join("error.log");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let [port] = process::free_ports::<1>()?;
            // SAFETY: geteuid has no preconditions.
            let user = if unsafe { libc::geteuid() } == 0 { "user root;\n" } else { "" };
            let config = format!(
                "# Written by shopfloor-testkit.\n{user}daemon off;\nmaster_process off;\n\
                 pid {d}/nginx.pid;\nerror_log {d}/error.log info;\nevents {{ worker_connections 256; }}\n\
                 http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  \
                 proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
                 uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
                 server {{\n    listen 127.0.0.1:{port};\n{}\n  }}\n}}\n",
                locations.replace("{dir}", &d)
            );
            let path = dir.path().join("nginx.conf");
            std::fs::write(&path, config).map_err(Error::io("writing nginx.conf"))?;
            let mut cmd = Command::new(binary);
            cmd.arg("-c").arg(&path).arg("-p").arg(dir.path()).arg("-e").arg(&log_path);
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let ready = || std::net::TcpStream::connect(addr).is_ok();
            let retry = attempt < PORT_ATTEMPTS;
            let started = process::start_server(
                "nginx",
                cmd,
                &log_path,
                ready,
                "Address already in use",
                retry,
            )?;
            if let Some(p) = started {
                return Ok(Self { port, log_path, process: Some(p), dir });
            }
        }
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The error log so far.
    pub fn log(&self) -> String {
        process::log_since(&self.log_path, 0)
    }

    /// Its folder (configuration, logs, temporary files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop(libc::SIGTERM, STOP_GRACE);
        }
    }
}
