//! A private Mosquitto broker.

use std::fmt::Write as _;
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use tempfile::TempDir;

use crate::process;
use crate::server::{Server, loopback, server_handle};
use crate::{Error, Pki};

const INSTALL: &str = "apt-get install -y mosquitto";

/// Options for a [`Mosquitto`] broker; made by [`Mosquitto::builder`].
///
/// Every setting is global (`per_listener_settings false`), so it applies to
/// the plain listener and the TLS listener alike.
#[derive(Debug, Clone)]
#[must_use = "call .start() to start the broker"]
pub struct MosquittoBuilder {
    binary: PathBuf,
    passwd_binary: PathBuf,
    tls: bool,
    require_certificate: bool,
    users: Vec<(String, String)>,
    allow_anonymous: Option<bool>,
    acl: Option<String>,
    persistence: bool,
    autosave_interval: Option<u32>,
    max_inflight_messages: Option<u16>,
    max_queued_messages: Option<u32>,
    message_size_limit: Option<u32>,
    max_packet_size: Option<u32>,
    extra: Vec<String>,
}

impl Default for MosquittoBuilder {
    fn default() -> Self {
        Self {
            binary: PathBuf::from("/usr/sbin/mosquitto"),
            passwd_binary: PathBuf::from("/usr/bin/mosquitto_passwd"),
            tls: false,
            require_certificate: false,
            users: Vec::new(),
            allow_anonymous: None,
            acl: None,
            persistence: false,
            autosave_interval: None,
            max_inflight_messages: None,
            max_queued_messages: None,
            message_size_limit: None,
            max_packet_size: None,
            extra: Vec::new(),
        }
    }
}

impl MosquittoBuilder {
    /// The broker binary; default `/usr/sbin/mosquitto`.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = path.into();
        self
    }

    /// The password tool; default `/usr/bin/mosquitto_passwd` (package `mosquitto`).
    pub fn passwd_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.passwd_binary = path.into();
        self
    }

    /// Adds a TLS listener (TLS 1.2 minimum) on a second port, with a
    /// certificate chain generated for this broker (see [`Mosquitto::pki`]).
    pub fn tls(mut self, enabled: bool) -> Self {
        self.tls = enabled;
        self
    }

    /// Makes the TLS listener demand a client certificate signed by the
    /// generated CA. Implies [`tls(true)`](Self::tls).
    pub fn require_certificate(mut self, required: bool) -> Self {
        self.require_certificate = required;
        self.tls |= required;
        self
    }

    /// Adds a user to the password file (written with `mosquitto_passwd -b`).
    /// Once a user exists, anonymous clients are refused unless
    /// [`allow_anonymous(true)`](Self::allow_anonymous) says otherwise.
    pub fn user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.users.push((name.into(), password.into()));
        self
    }

    /// Whether clients without a user name may connect. Default: yes when no
    /// [`user`](Self::user) is added, no otherwise.
    pub fn allow_anonymous(mut self, allow: bool) -> Self {
        self.allow_anonymous = Some(allow);
        self
    }

    /// An ACL file's text (`user NAME`, `topic read|write|readwrite TOPIC`,
    /// `pattern …`). Lines before the first `user` line apply to anonymous
    /// clients; anything not granted is denied.
    pub fn acl(mut self, text: impl Into<String>) -> Self {
        self.acl = Some(text.into());
        self
    }

    /// Keeps retained messages, subscriptions and queued messages of persistent
    /// sessions in `mosquitto.db` in the instance folder, written at a clean
    /// stop and every [`autosave_interval`](Self::autosave_interval). It
    /// survives [`Mosquitto::restart`]; after [`Mosquitto::kill9`] only what
    /// the last autosave wrote survives.
    pub fn persistence(mut self, enabled: bool) -> Self {
        self.persistence = enabled;
        self
    }

    /// Seconds between persistence autosaves (Mosquitto's default: 1800).
    pub fn autosave_interval(mut self, seconds: u32) -> Self {
        self.autosave_interval = Some(seconds);
        self
    }

    /// `max_inflight_messages`: QoS 1 and 2 messages in flight per client;
    /// MQTT 5 clients see it as the CONNACK's receive maximum.
    pub fn max_inflight_messages(mut self, count: u16) -> Self {
        self.max_inflight_messages = Some(count);
        self
    }

    /// `max_queued_messages`: messages queued per client beyond those in flight.
    pub fn max_queued_messages(mut self, count: u32) -> Self {
        self.max_queued_messages = Some(count);
        self
    }

    /// `message_size_limit`: the largest payload the broker accepts, in bytes
    /// (Mosquitto 2 logs that `max_packet_size` is preferred).
    pub fn message_size_limit(mut self, bytes: u32) -> Self {
        self.message_size_limit = Some(bytes);
        self
    }

    /// `max_packet_size`: the largest MQTT packet the broker accepts, in bytes;
    /// MQTT 5 clients see it in the CONNACK.
    pub fn max_packet_size(mut self, bytes: u32) -> Self {
        self.max_packet_size = Some(bytes);
        self
    }

    /// Appends a raw line to `mosquitto.conf`. Lines come after the listeners,
    /// so listener options (`use_identity_as_username true`) apply to the last
    /// listener: the TLS one when TLS is on.
    pub fn config_line(mut self, line: impl Into<String>) -> Self {
        self.extra.push(line.into());
        self
    }

    /// Writes the configuration into a new temporary folder, starts the broker
    /// on free loopback ports and waits until it accepts connections.
    ///
    /// Blocks for the start (typically 20 ms, more with many users to hash).
    /// Fails with [`Error::NotInstalled`] naming `apt-get install -y mosquitto`
    /// when a binary is missing, and with [`Error::Start`] carrying the log's
    /// tail when the broker exits or is not ready within 20 s.
    pub fn start(self) -> Result<Mosquitto, Error> {
        process::installed("mosquitto", &self.binary, INSTALL)?;
        if !self.users.is_empty() {
            process::installed("mosquitto_passwd", &self.passwd_binary, INSTALL)?;
        }
        let dir = process::instance_dir("mosquitto-")?;
        let path = |name: &str| dir.path().join(name);
        let pki = if self.tls {
            let pki = Pki::generate()?;
            for (file, pem) in [
                ("ca.pem", pki.ca_cert_pem()),
                ("server.pem", pki.server_cert_pem()),
                ("server.key", pki.server_key_pem()),
                ("client.pem", pki.client_cert_pem()),
                ("client.key", pki.client_key_pem()),
            ] {
                write(&path(file), pem)?;
            }
            Some(pki)
        } else {
            None
        };
        if !self.users.is_empty() {
            self.write_password_file(&path("passwd"))?;
        }
        if let Some(acl) = &self.acl {
            write(&path("acl"), acl)?;
        }
        if self.persistence {
            fs::create_dir(path("data")).map_err(Error::io("creating the persistence folder"))?;
        }
        let mut broker = Mosquitto {
            config_path: path("mosquitto.conf"),
            server: Server::new("mosquitto", path("mosquitto.log"), libc::SIGTERM),
            pki,
            options: self,
            dir,
        };
        broker.launch(true)?;
        Ok(broker)
    }

    fn write_password_file(&self, file: &Path) -> Result<(), Error> {
        for (i, (user, password)) in self.users.iter().enumerate() {
            let mut cmd = Command::new(&self.passwd_binary);
            if i == 0 {
                cmd.arg("-c");
            }
            cmd.arg("-b").arg(file).arg(user).arg(password);
            let output = cmd.output().map_err(Error::io(format!(
                "running {} for user {user:?}",
                self.passwd_binary.display()
            )))?;
            if !output.status.success() {
                return Err(Error::Command {
                    command: format!("mosquitto_passwd -b {} {user} ***", file.display()),
                    status: output.status,
                    output: format!(
                        "{}{}",
                        String::from_utf8_lossy(&output.stdout),
                        String::from_utf8_lossy(&output.stderr)
                    ),
                });
            }
        }
        Ok(())
    }
}

/// A running Mosquitto broker from the system binary, listening on
/// `127.0.0.1` only, with its configuration, certificates, persistence file
/// and log in a private temporary folder.
///
/// Dropping it stops the broker (SIGTERM, SIGKILL after 10 s), reaps it and
/// removes the folder, also when the test panics. If the test process itself
/// is killed, the kernel SIGKILLs the broker (`PR_SET_PDEATHSIG`).
///
/// A clean [`stop`](Self::stop) (SIGTERM) saves persistence; after
/// [`kill9`](Self::kill9) only what the last autosave wrote survives, and
/// clients see their connections reset.
///
/// Methods that start or stop the broker block the calling thread for the
/// few milliseconds that takes; they may be called from async tests.
#[derive(Debug)]
pub struct Mosquitto {
    options: MosquittoBuilder,
    config_path: PathBuf,
    /// The plain listener's port, and the TLS listener's when TLS is on.
    server: Server<2>,
    pki: Option<Pki>,
    // Last, so that the broker stops before its folder is removed.
    dir: TempDir,
}

server_handle!(Mosquitto);

impl Mosquitto {
    /// Options for a new broker: plain listener, anonymous access, no
    /// persistence, Mosquitto's default limits.
    pub fn builder() -> MosquittoBuilder {
        MosquittoBuilder::default()
    }

    /// Starts a broker with the default options.
    pub fn start() -> Result<Self, Error> {
        Self::builder().start()
    }

    /// The host to connect to: `"127.0.0.1"`.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The TLS listener's port, when TLS is enabled.
    pub fn tls_port(&self) -> Option<u16> {
        self.options.tls.then_some(self.server.ports[1])
    }

    /// The TLS listener's address, when TLS is enabled.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_port().map(loopback)
    }

    /// The generated CA and certificates, when TLS is enabled.
    pub fn pki(&self) -> Option<&Pki> {
        self.pki.as_ref()
    }

    /// The CA certificate file (PEM), when TLS is enabled.
    pub fn ca_cert_path(&self) -> Option<PathBuf> {
        self.tls_file("ca.pem")
    }

    /// The client certificate file (PEM), when TLS is enabled.
    pub fn client_cert_path(&self) -> Option<PathBuf> {
        self.tls_file("client.pem")
    }

    /// The client private key file (PKCS#8 PEM), when TLS is enabled.
    pub fn client_key_path(&self) -> Option<PathBuf> {
        self.tls_file("client.key")
    }

    fn tls_file(&self, name: &str) -> Option<PathBuf> {
        self.pki.as_ref().map(|_| self.dir.path().join(name))
    }

    /// A rustls client configuration (ring provider) that trusts the
    /// generated CA, without a client certificate. For rumqttc:
    /// `Transport::tls_with_config(TlsConfiguration::Rustls(config))`, with
    /// host `127.0.0.1` or `localhost` and port [`tls_port`](Self::tls_port).
    pub fn tls_client_config(&self) -> Result<Arc<ClientConfig>, Error> {
        self.pki.as_ref().ok_or(NO_TLS)?.client_config()
    }

    /// Like [`tls_client_config`](Self::tls_client_config), and presents the
    /// generated client certificate.
    pub fn tls_client_config_with_cert(&self) -> Result<Arc<ClientConfig>, Error> {
        self.pki.as_ref().ok_or(NO_TLS)?.client_config_with_cert()
    }

    /// The generated `mosquitto.conf`.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    fn launch(&mut self, fresh: bool) -> Result<(), Error> {
        let (options, dir, config_path) = (&self.options, self.dir.path(), &self.config_path);
        let command = |&[port, tls_port]: &[u16; 2]| {
            write(config_path, &options.config(dir, port, options.tls.then_some(tls_port)))?;
            let mut cmd = Command::new(&options.binary);
            cmd.arg("-c").arg(config_path);
            Ok(cmd)
        };
        // Ready once this start's log says `running` and every listener accepts TCP.
        self.server.launch(fresh, command, |&[port, tls_port], attempt| {
            let mut addrs = [Some(port), options.tls.then_some(tls_port)].into_iter().flatten();
            attempt.log().contains(" running")
                && addrs.all(|p| {
                    TcpStream::connect_timeout(&loopback(p), Duration::from_secs(1)).is_ok()
                })
        })
    }
}

impl MosquittoBuilder {
    /// `mosquitto.conf` for a broker in `dir` listening on `port` (and on
    /// `tls_port` with TLS).
    fn config(&self, dir: &Path, port: u16, tls_port: Option<u16>) -> String {
        let o = self;
        let mut c = String::from("# Written by shopfloor-testkit.\nper_listener_settings false\n");
        if process::is_root() {
            // Mosquitto 2 run as root drops to user `mosquitto`, which cannot read
            // this root-owned folder; stay root (it is a test broker on loopback).
            c.push_str("user root\n");
        }
        let anonymous = o.allow_anonymous.unwrap_or(o.users.is_empty());
        let _ = writeln!(c, "allow_anonymous {anonymous}");
        if !o.users.is_empty() {
            let _ = writeln!(c, "password_file {}", dir.join("passwd").display());
        }
        if o.acl.is_some() {
            let _ = writeln!(c, "acl_file {}", dir.join("acl").display());
        }
        let _ = writeln!(c, "persistence {}", o.persistence);
        if o.persistence {
            // The trailing slash matters: Mosquitto appends the file name as is.
            let _ = writeln!(c, "persistence_location {}/", dir.join("data").display());
        }
        let numbers = [
            ("autosave_interval", o.autosave_interval),
            ("max_inflight_messages", o.max_inflight_messages.map(u32::from)),
            ("max_queued_messages", o.max_queued_messages),
            ("message_size_limit", o.message_size_limit),
            ("max_packet_size", o.max_packet_size),
        ];
        for (key, value) in numbers {
            if let Some(value) = value {
                let _ = writeln!(c, "{key} {value}");
            }
        }
        c.push_str("log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n");
        c.push_str("log_type information\nconnection_messages true\nlog_timestamp true\n");
        let _ = writeln!(c, "\nlistener {port} 127.0.0.1");
        if let Some(tls_port) = tls_port {
            let _ = writeln!(c, "\nlistener {tls_port} 127.0.0.1");
            for (key, file) in
                [("cafile", "ca.pem"), ("certfile", "server.pem"), ("keyfile", "server.key")]
            {
                let _ = writeln!(c, "{key} {}", dir.join(file).display());
            }
            c.push_str("tls_version tlsv1.2\n");
            let _ = writeln!(c, "require_certificate {}", o.require_certificate);
        }
        for line in &o.extra {
            let _ = writeln!(c, "{line}");
        }
        c
    }
}

const NO_TLS: Error =
    Error::Usage("this broker has no TLS listener: use Mosquitto::builder().tls(true)");

fn write(path: &Path, text: &str) -> Result<(), Error> {
    fs::write(path, text).map_err(Error::io(format!("writing {}", path.display())))
}
