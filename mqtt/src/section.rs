//! `[mqtt]`: the broker section every shopfloor binary reads, once.
//!
//! ```toml
//! [mqtt]
//! host = "127.0.0.1"          # default
//! port = 1883                 # default (8883 is usual with TLS)
//! client_id = "ingest-1"      # default: the binary's choice
//! protocol = "5"              # or "3.1.1" for brokers that speak only that
//! username = "ingest"
//! password_file = "mqtt.pass" # or the SHOPFLOOR_MQTT_PASSWORD variable
//! ca_file = "pki/ca.crt"      # TLS: the CA that signed the broker's certificate
//! cert_file = "pki/ingest.crt"  # with key_file: log in with a client certificate
//! key_file = "pki/ingest.key"
//! keep_alive_s = 10           # default
//! session_expiry_s = 3600     # persistent sessions (ingest) only
//! fallback = ["mqtt-b:1883"]  # tried in turn when a connection fails
//! ```
//!
//! Relative paths are taken from the folder of the file the section was
//! read from, not from wherever the process was started.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::{Broker, Protocol, TlsError};

/// The environment variable that gives the MQTT password (it wins over
/// `password_file`; passwords never come from the command line).
pub const PASSWORD_ENV: &str = "SHOPFLOOR_MQTT_PASSWORD";

/// The `[mqtt]` section of a deployment file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct MqttSection {
    /// Host name or address (default `127.0.0.1`).
    #[serde(default = "localhost")]
    pub host: String,
    /// Port (default 1883).
    #[serde(default = "mqtt_port")]
    pub port: u16,
    /// The client id (default: the binary's choice).
    pub client_id: Option<String>,
    /// `"5"` (default) or `"3.1.1"`.
    #[serde(default)]
    pub protocol: Protocol,
    /// The user name.
    pub username: Option<String>,
    /// The password's file: its first line (or [`PASSWORD_ENV`]).
    pub password_file: Option<PathBuf>,
    /// The CA certificate (PEM) that signed the broker's: TLS.
    pub ca_file: Option<PathBuf>,
    /// This client's certificate (PEM), with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// This client's private key (PEM).
    pub key_file: Option<PathBuf>,
    /// MQTT keep-alive in seconds (default 10).
    pub keep_alive_s: Option<u64>,
    /// How long the broker keeps a persistent session while the client is
    /// away, in seconds (MQTT 5; with 3.1.1 the broker's own setting
    /// decides). Only binaries with persistent sessions read it.
    pub session_expiry_s: Option<u64>,
    /// More brokers, `host:port` (or `host`: this section's port), with
    /// the same login and TLS: a failed connection moves to the next.
    #[serde(default)]
    pub fallback: Vec<String>,
}

fn localhost() -> String {
    "127.0.0.1".into()
}

const fn mqtt_port() -> u16 {
    1883
}

impl Default for MqttSection {
    fn default() -> Self {
        Self {
            host: localhost(),
            port: mqtt_port(),
            client_id: None,
            protocol: Protocol::V5,
            username: None,
            password_file: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            keep_alive_s: None,
            session_expiry_s: None,
            fallback: Vec::new(),
        }
    }
}

/// `[mqtt]` cannot be used as it is; each error names the file and the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SectionError {
    /// `password_file` cannot be read.
    #[error("{file}: mqtt.password_file {path}: cannot read it: {source}")]
    Password {
        /// The deployment file.
        file: PathBuf,
        /// The password file, as resolved.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `cert_file` or `key_file` without `ca_file`.
    #[error(
        "{0}: mqtt.cert_file / key_file without mqtt.ca_file; add ca_file (the CA that signed the broker's certificate)"
    )]
    CertWithoutCa(PathBuf),
    /// One of `cert_file` and `key_file` without the other.
    #[error("{0}: mqtt.cert_file and mqtt.key_file go together; give both, or neither")]
    HalfPair(PathBuf),
    /// A `fallback` entry that is no `host:port`.
    #[error("{file}: mqtt.fallback {entry:?}: give host:port, like \"mqtt-b:1883\"")]
    Fallback {
        /// The deployment file.
        file: PathBuf,
        /// The entry.
        entry: String,
    },
    /// The PEM files cannot be used.
    #[error("{file}: [mqtt] TLS: {source}")]
    Tls {
        /// The deployment file.
        file: PathBuf,
        /// Why.
        source: TlsError,
    },
}

impl MqttSection {
    /// A section for `host:port` with every other setting at its default.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self { host: host.into(), port, ..Self::default() }
    }

    /// The client id, or `default` when the section names none.
    pub fn client_id_or(&self, default: &str) -> String {
        self.client_id.clone().unwrap_or_else(|| default.to_owned())
    }

    /// The keep-alive (default 10 s, at least 1 s).
    pub fn keep_alive(&self) -> Duration {
        Duration::from_secs(self.keep_alive_s.unwrap_or(10).max(1))
    }

    /// The broker, with its credentials and TLS; `file` is the deployment
    /// file the section came from (relative paths start from its folder;
    /// errors name it).
    pub fn broker(&self, file: &Path) -> Result<Broker, SectionError> {
        let mut broker = Broker::new(self.host.clone(), self.port);
        if let Some(user) = &self.username {
            broker.credentials = Some((user.clone(), self.password(file)?.unwrap_or_default()));
        }
        broker.tls = self.tls(file)?;
        Ok(broker)
    }

    /// The `fallback` brokers, each with this section's login and TLS.
    pub fn fallbacks(&self, file: &Path) -> Result<Vec<Broker>, SectionError> {
        if self.fallback.is_empty() {
            return Ok(Vec::new());
        }
        let primary = self.broker(file)?;
        self.fallback
            .iter()
            .map(|entry| {
                let bad = || SectionError::Fallback { file: file.to_owned(), entry: entry.clone() };
                let (host, port) = match entry.rsplit_once(':') {
                    Some((h, p)) => (h, p.parse().map_err(|_| bad())?),
                    None => (entry.as_str(), self.port),
                };
                if host.is_empty() || host.contains(char::is_whitespace) {
                    return Err(bad());
                }
                Ok(Broker { host: host.to_owned(), port, ..primary.clone() })
            })
            .collect()
    }

    /// The password: [`PASSWORD_ENV`], else the first line of
    /// `password_file`, else none.
    pub fn password(&self, file: &Path) -> Result<Option<String>, SectionError> {
        self.password_from(file, std::env::var(PASSWORD_ENV).ok())
    }

    fn password_from(
        &self,
        file: &Path,
        env: Option<String>,
    ) -> Result<Option<String>, SectionError> {
        if let Some(p) = env {
            return Ok(Some(p));
        }
        let Some(f) = &self.password_file else { return Ok(None) };
        read_secret(file, f).map(Some).map_err(|(path, source)| SectionError::Password {
            file: file.to_owned(),
            path,
            source,
        })
    }

    /// TLS settings from `ca_file`, `cert_file` and `key_file`: none
    /// without `ca_file`; with `cert_file` and `key_file`, a client
    /// certificate.
    pub fn tls(&self, file: &Path) -> Result<Option<Arc<rustls::ClientConfig>>, SectionError> {
        let Some(ca) = &self.ca_file else {
            if self.cert_file.is_some() || self.key_file.is_some() {
                return Err(SectionError::CertWithoutCa(file.to_owned()));
            }
            return Ok(None);
        };
        let client = match (&self.cert_file, &self.key_file) {
            (Some(c), Some(k)) => Some((relative_to(file, c), relative_to(file, k))),
            (None, None) => None,
            _ => return Err(SectionError::HalfPair(file.to_owned())),
        };
        crate::tls_client_config(
            &relative_to(file, ca),
            client.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        )
        .map(Some)
        .map_err(|source| SectionError::Tls { file: file.to_owned(), source })
    }
}

/// The first line of the secret file `path` (a password, a token), from
/// the folder of the configuration `file`; on error, the resolved path
/// with the error.
pub fn read_secret(file: &Path, path: &Path) -> Result<String, (PathBuf, std::io::Error)> {
    let path = relative_to(file, path);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text.lines().next().unwrap_or_default().to_owned()),
        Err(e) => Err((path, e)),
    }
}

/// `path` from the folder of `file` (an absolute `path` stays as it is).
pub fn relative_to(file: &Path, path: &Path) -> PathBuf {
    file.parent().unwrap_or_else(|| Path::new(".")).join(path)
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V311 => "MQTT 3.1.1",
            Self::V5 => "MQTT 5",
        })
    }
}

/// A protocol name that is neither 5 nor 3.1.1.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("MQTT protocol {0:?}: use \"5\" or \"3.1.1\"")]
pub struct UnknownProtocol(pub String);

impl std::str::FromStr for Protocol {
    type Err = UnknownProtocol;

    /// `5` (also `v5`, `5.0`, `mqttv5`) or `3.1.1` (also `v3.1.1`, `311`,
    /// `4`: its protocol level).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        let t = t.trim_start_matches("mqtt").trim_start_matches('v');
        match t {
            "5" | "5.0" => Ok(Self::V5),
            "3.1.1" | "311" | "4" => Ok(Self::V311),
            _ => Err(UnknownProtocol(s.to_owned())),
        }
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Protocol;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"5\" or \"3.1.1\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Protocol, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Protocol, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Protocol, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Protocol, E> {
                self.visit_str(&v.to_string())
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_names() {
        for (s, p) in [
            ("5", Protocol::V5),
            ("v5", Protocol::V5),
            ("MQTTv5", Protocol::V5),
            ("5.0", Protocol::V5),
            ("3.1.1", Protocol::V311),
            ("v3.1.1", Protocol::V311),
            ("311", Protocol::V311),
            ("4", Protocol::V311),
        ] {
            assert_eq!(s.parse::<Protocol>(), Ok(p), "{s}");
        }
        for bad in ["3.1", "6", "", "mqtt"] {
            assert!(bad.parse::<Protocol>().is_err(), "{bad}");
        }
    }

    #[test]
    fn fallbacks_share_the_login_and_name_a_bad_entry() {
        let s = MqttSection {
            port: 8883,
            fallback: vec!["b:1884".into(), "c".into()],
            ..MqttSection::default()
        };
        let f = s.fallbacks(Path::new("x.toml")).unwrap();
        let got: Vec<(String, u16)> = f.iter().map(|b| (b.host.clone(), b.port)).collect();
        assert_eq!(got, [("b".to_owned(), 1884), ("c".to_owned(), 8883)]);
        let s = MqttSection { fallback: vec!["b:port".into()], ..MqttSection::default() };
        let e = s.fallbacks(Path::new("x.toml")).unwrap_err().to_string();
        assert!(e.contains("mqtt.fallback \"b:port\"") && e.contains("host:port"), "{e}");
    }

    #[test]
    fn paths_start_from_the_files_folder() {
        let p = relative_to(Path::new("/etc/shopfloor/ingest.toml"), Path::new("pki/ca.crt"));
        assert_eq!(p, Path::new("/etc/shopfloor/pki/ca.crt"));
        let p = relative_to(Path::new("/etc/shopfloor/ingest.toml"), Path::new("/srv/ca.crt"));
        assert_eq!(p, Path::new("/srv/ca.crt"));
    }

    #[test]
    fn half_a_client_certificate_is_an_error_naming_the_file() {
        let s = MqttSection {
            ca_file: Some("ca.crt".into()),
            cert_file: Some("me.crt".into()),
            ..MqttSection::default()
        };
        let e = s.tls(Path::new("/x/live.toml")).unwrap_err().to_string();
        assert!(e.starts_with("/x/live.toml: ") && e.contains("go together"), "{e}");
        let s = MqttSection { key_file: Some("me.key".into()), ..MqttSection::default() };
        let e = s.tls(Path::new("a.toml")).unwrap_err().to_string();
        assert!(e.contains("without mqtt.ca_file"), "{e}");
    }

    #[test]
    fn a_missing_password_file_names_both_files() {
        let s = MqttSection {
            username: Some("u".into()),
            password_file: Some("nope.pass".into()),
            ..MqttSection::default()
        };
        let e = s.password_from(Path::new("/nowhere/a.toml"), None).unwrap_err().to_string();
        assert!(e.contains("/nowhere/a.toml") && e.contains("/nowhere/nope.pass"), "{e}");
        // The variable wins over the file.
        let p = s.password_from(Path::new("/nowhere/a.toml"), Some("pw".into())).unwrap();
        assert_eq!(p.as_deref(), Some("pw"));
    }
}
