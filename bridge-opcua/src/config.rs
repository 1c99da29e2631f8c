//! The bridge's configuration: TOML in, checked [`BridgeConfig`] out.
//!
//! ```toml
//! [[server]]
//! name = "press-line"                    # Sparkplug device id and batch source
//! endpoint = "opc.tcp://plc-1:4840/"
//! security_policy = "Basic256Sha256"     # None (default), Basic256Sha256,
//!                                        # Aes128_Sha256_RsaOaep, Aes256_Sha256_RsaPss
//! security_mode = "SignAndEncrypt"       # None (default with None), Sign, SignAndEncrypt
//! user = "bridge"                        # identity: anonymous unless user or certificate
//! password_env = "PRESS_LINE_PASSWORD"   # or password = "…" (prefer the environment)
//! # allow_password_without_security = true   # needed for a password with policy None
//! # user_certificate = "pki/user/cert.der"
//! # user_private_key = "pki/user/key.pem"
//! pki_dir = "pki"                        # own/, trusted/, rejected/ (made if absent)
//! publishing_interval_ms = 1000          # default for the nodes below
//! sampling_interval_ms = 500             # default for the nodes below
//! queue_size = 10                        # default for the nodes below
//!
//! [[server.node]]
//! metric = "Hydraulics/Pressure"
//! node_id = "nsu=urn:press-line:plc;s=Press1.Pressure"   # namespace by URI …
//! # node_id = "ns=2;s=Press1.Pressure"                   # … or by index
//! sampling_interval_ms = 100
//! deadband = { absolute = 0.5 }          # or { percent = 2.0 } (of the EURange)
//!
//! [[server.node]]
//! metric = "Hydraulics/Setpoint"
//! browse_path = "Objects/Press1/Setpoint"   # names in `namespace`; "0:Name" for ns 0
//! namespace = "urn:press-line:plc"
//! writable = true                        # on the write allow-list
//! ```
//!
//! Everything a server cannot tell us later is checked at load: known
//! policies and modes that fit together, one identity, node ids and browse
//! paths that parse, unique metric names, intervals and queue sizes in
//! range. Every error names the file, the server, the node and the fix.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A configuration that cannot be used, with where and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{where_}: {problem}{}", file.as_ref().map(|f| format!("{}: ", f.display())).unwrap_or_default(), fix.as_ref().map(|f| format!("; {f}")).unwrap_or_default())]
pub struct ConfigError {
    /// The file, when it came from one.
    pub file: Option<PathBuf>,
    /// Where: `line 12`, `server "press-line"`, `server "press-line", node "temp"`.
    pub where_: String,
    /// What is wrong.
    pub problem: String,
    /// What to change.
    pub fix: Option<String>,
}

/// A message security policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SecurityPolicy {
    /// No security.
    None,
    /// `Basic256Sha256`.
    Basic256Sha256,
    /// `Aes128_Sha256_RsaOaep`.
    Aes128Sha256RsaOaep,
    /// `Aes256_Sha256_RsaPss`.
    Aes256Sha256RsaPss,
}

impl SecurityPolicy {
    /// The name the configuration uses.
    pub const fn name(self) -> &'static str {
        match self {
            Self::None => "None",
            Self::Basic256Sha256 => "Basic256Sha256",
            Self::Aes128Sha256RsaOaep => "Aes128_Sha256_RsaOaep",
            Self::Aes256Sha256RsaPss => "Aes256_Sha256_RsaPss",
        }
    }

    /// The policy's URI.
    pub const fn uri(self) -> &'static str {
        match self {
            Self::None => "http://opcfoundation.org/UA/SecurityPolicy#None",
            Self::Basic256Sha256 => "http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256",
            Self::Aes128Sha256RsaOaep => {
                "http://opcfoundation.org/UA/SecurityPolicy#Aes128_Sha256_RsaOaep"
            }
            Self::Aes256Sha256RsaPss => {
                "http://opcfoundation.org/UA/SecurityPolicy#Aes256_Sha256_RsaPss"
            }
        }
    }

    /// Every policy, for messages and tests.
    pub const ALL: [Self; 4] =
        [Self::None, Self::Basic256Sha256, Self::Aes128Sha256RsaOaep, Self::Aes256Sha256RsaPss];

    fn parse(s: &str) -> Option<Self> {
        // Peers spell them with underscores, hyphens, or as URIs.
        let short = s.rsplit('#').next().unwrap_or(s).replace('-', "_");
        Self::ALL.into_iter().find(|p| p.name().eq_ignore_ascii_case(&short))
    }
}

impl fmt::Display for SecurityPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A message security mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SecurityMode {
    /// Neither signed nor encrypted (only with policy `None`).
    None,
    /// Signed.
    Sign,
    /// Signed and encrypted.
    SignAndEncrypt,
}

impl SecurityMode {
    /// The name the configuration uses.
    pub const fn name(self) -> &'static str {
        match self {
            Self::None => "None",
            Self::Sign => "Sign",
            Self::SignAndEncrypt => "SignAndEncrypt",
        }
    }
}

/// Who the bridge is to the server.
#[derive(Clone, PartialEq, Eq)]
pub enum Identity {
    /// Anonymous.
    Anonymous,
    /// User name and password.
    UserName {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
    /// An X.509 user certificate (DER) and its private key (PEM).
    Certificate {
        /// The certificate file.
        certificate: PathBuf,
        /// The private key file.
        private_key: PathBuf,
    },
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Anonymous => f.write_str("Anonymous"),
            Self::UserName { user, .. } => write!(f, "UserName {{ user: {user:?}, .. }}"),
            Self::Certificate { certificate, .. } => {
                write!(f, "Certificate {{ certificate: {certificate:?}, .. }}")
            }
        }
    }
}

/// A namespace, by URI (survives renumbering) or by index.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Namespace {
    /// By URI, looked up in the server's namespace array at connect.
    Uri(String),
    /// By index.
    Index(u16),
}

/// What a node config points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeRef {
    /// A NodeId: its namespace and its identifier in the standard string
    /// form (`s=Press1.Pressure`, `i=2258`, `g=…`, `b=…`).
    Id {
        /// The namespace.
        namespace: Namespace,
        /// `s=…`, `i=…`, `g=…` or `b=…`.
        identifier: String,
    },
    /// A browse path from the Objects folder, resolved at connect with
    /// TranslateBrowsePathsToNodeIds.
    BrowsePath {
        /// The names after `Objects`, each with its namespace.
        elements: Vec<(Namespace, String)>,
    },
}

impl fmt::Display for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = |n: &Namespace| match n {
            Namespace::Uri(u) => format!("nsu={u};"),
            Namespace::Index(0) => String::new(),
            Namespace::Index(i) => format!("ns={i};"),
        };
        match self {
            Self::Id { namespace, identifier } => write!(f, "{}{identifier}", ns(namespace)),
            Self::BrowsePath { elements } => {
                f.write_str("Objects")?;
                for (n, name) in elements {
                    match n {
                        Namespace::Index(i) => write!(f, "/{i}:{name}")?,
                        Namespace::Uri(u) => write!(f, "/{{{u}}}{name}")?,
                    }
                }
                Ok(())
            }
        }
    }
}

/// A data-change deadband.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Deadband {
    /// Every change.
    None,
    /// Changes larger than this, in the value's units.
    Absolute(f64),
    /// Changes larger than this percentage of the node's EURange.
    Percent(f64),
}

/// One monitored node.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct NodeConfig {
    /// The metric name it is published under.
    pub metric: String,
    /// The node.
    pub node: NodeRef,
    /// How often the server samples it.
    pub sampling_interval: Duration,
    /// How many changes the server queues between publishes.
    pub queue_size: u32,
    /// The subscription (publishing interval) it belongs to.
    pub publishing_interval: Duration,
    /// The data-change filter.
    pub deadband: Deadband,
    /// On the write allow-list.
    pub writable: bool,
}

/// One OPC UA server.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Its name: the Sparkplug device id and the batch source.
    pub name: String,
    /// `opc.tcp://host:port/path`.
    pub endpoint: String,
    /// The message security policy.
    pub security_policy: SecurityPolicy,
    /// The message security mode.
    pub security_mode: SecurityMode,
    /// Who the bridge is.
    pub identity: Identity,
    /// The bridge's PKI directory: `own/` (its certificate and key, made
    /// on first run), `trusted/` and `rejected/` (server certificates).
    pub pki_dir: PathBuf,
    /// Server keep-alives per publishing interval (the watchdog expects a
    /// publish response at least this often).
    pub keep_alive_count: u32,
    /// The nodes.
    pub nodes: Vec<NodeConfig>,
}

/// The whole configuration.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct BridgeConfig {
    /// The servers.
    pub servers: Vec<ServerConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDe {
    #[serde(default)]
    server: Vec<ServerDe>,
}

/// A deployment file: `[[server]]` beside other programs' sections.
#[derive(Deserialize)]
struct DeploymentDe {
    #[serde(default)]
    server: Vec<ServerDe>,
    #[serde(flatten)]
    _others: std::collections::BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerDe {
    name: Option<String>,
    endpoint: Option<String>,
    security_policy: Option<String>,
    security_mode: Option<String>,
    user: Option<String>,
    password: Option<String>,
    password_env: Option<String>,
    user_certificate: Option<PathBuf>,
    user_private_key: Option<PathBuf>,
    #[serde(default)]
    allow_password_without_security: bool,
    pki_dir: Option<PathBuf>,
    publishing_interval_ms: Option<u64>,
    sampling_interval_ms: Option<u64>,
    queue_size: Option<u32>,
    keep_alive_count: Option<u32>,
    #[serde(default)]
    node: Vec<NodeDe>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeDe {
    metric: Option<String>,
    node_id: Option<String>,
    browse_path: Option<String>,
    namespace: Option<String>,
    sampling_interval_ms: Option<u64>,
    publishing_interval_ms: Option<u64>,
    queue_size: Option<u32>,
    deadband: Option<DeadbandDe>,
    #[serde(default)]
    writable: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadbandDe {
    absolute: Option<f64>,
    percent: Option<f64>,
}

/// Why a NodeId string is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeIdError {
    /// `nsu=` or `ns=` without the `;` before the identifier.
    #[error("{text:?}: {prefix}=<namespace> must be followed by ;")]
    NoSemicolon {
        /// The NodeId as given.
        text: String,
        /// `nsu` or `ns`.
        prefix: &'static str,
    },
    /// `nsu=;…`.
    #[error("{0:?}: the namespace URI is empty")]
    EmptyUri(String),
    /// `ns=` with no number from 0 to 65535.
    #[error("{text:?}: namespace index {index:?} is not 0–65535")]
    Index {
        /// The NodeId as given.
        text: String,
        /// The index as given.
        index: String,
    },
    /// No `i=`, `s=`, `g=` or `b=` identifier.
    #[error(
        "{0:?} is not a NodeId: want i=<number>, s=<string>, g=<guid> or b=<base64>, \
         after an optional nsu=<namespace URI>; or ns=<index>;"
    )]
    Identifier(String),
}

/// Parses a NodeId string: `nsu=<uri>;s=…`, `ns=<index>;i=…`, or an
/// identifier alone (namespace 0).
pub fn parse_node_id(s: &str) -> Result<NodeRef, NodeIdError> {
    let s = s.trim();
    let (namespace, rest) = if let Some(rest) = s.strip_prefix("nsu=") {
        let (uri, id) = rest
            .split_once(';')
            .ok_or_else(|| NodeIdError::NoSemicolon { text: s.to_owned(), prefix: "nsu" })?;
        if uri.is_empty() {
            return Err(NodeIdError::EmptyUri(s.to_owned()));
        }
        (Namespace::Uri(uri.to_owned()), id)
    } else if let Some(rest) = s.strip_prefix("ns=") {
        let (index, id) = rest
            .split_once(';')
            .ok_or_else(|| NodeIdError::NoSemicolon { text: s.to_owned(), prefix: "ns" })?;
        let index = index
            .parse()
            .map_err(|_| NodeIdError::Index { text: s.to_owned(), index: index.to_owned() })?;
        (Namespace::Index(index), id)
    } else {
        (Namespace::Index(0), s)
    };
    let ok = match rest.split_once('=') {
        Some(("i", n)) => n.parse::<u32>().is_ok(),
        Some(("s", t)) => !t.is_empty(),
        Some(("g", g)) => g.len() == 36 && g.chars().filter(|&c| c == '-').count() == 4,
        Some(("b", b)) => !b.is_empty(),
        _ => false,
    };
    if !ok {
        return Err(NodeIdError::Identifier(s.to_owned()));
    }
    Ok(NodeRef::Id { namespace, identifier: rest.to_owned() })
}

/// Why a browse path is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BrowsePathError {
    /// No name below `Objects`, or an empty one between two `/`.
    #[error("{0:?}: a browse path is names separated by /, below Objects")]
    EmptyName(String),
    /// An `<index>:` prefix above 65535.
    #[error("{text:?}: namespace index {index} is too large")]
    Index {
        /// The browse path as given.
        text: String,
        /// The index as given.
        index: String,
    },
}

/// Parses a browse path below Objects: `Objects/Press1/Pressure` (the
/// leading `Objects` is optional); each name in `namespace` unless it has
/// an `<index>:` prefix.
pub fn parse_browse_path(s: &str, namespace: Option<&str>) -> Result<NodeRef, BrowsePathError> {
    let mut parts: Vec<&str> = s.trim().trim_matches('/').split('/').collect();
    if parts.first().is_some_and(|p| *p == "Objects" || *p == "0:Objects") {
        parts.remove(0);
    }
    if parts.is_empty() || parts.iter().any(|p| p.is_empty()) {
        return Err(BrowsePathError::EmptyName(s.to_owned()));
    }
    let default = match namespace {
        Some(u) if u.parse::<u16>().is_ok() => Namespace::Index(u.parse().unwrap_or(0)),
        Some(u) => Namespace::Uri(u.to_owned()),
        None => Namespace::Index(0),
    };
    let elements = parts
        .into_iter()
        .map(|p| match p.split_once(':') {
            Some((i, name)) if !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()) => {
                let i = i.parse().map_err(|_| BrowsePathError::Index {
                    text: s.to_owned(),
                    index: i.to_owned(),
                })?;
                Ok((Namespace::Index(i), name.to_owned()))
            }
            _ => Ok((default.clone(), p.to_owned())),
        })
        .collect::<Result<_, BrowsePathError>>()?;
    Ok(NodeRef::BrowsePath { elements })
}

/// Where the `i`th (from 0) entry of a list is, for messages: by its
/// `name`, or by its number when it has none.
fn place(kind: &str, i: usize, name: &str) -> String {
    if name.is_empty() { format!("{kind} #{}", i + 1) } else { format!("{kind} {name:?}") }
}

/// The problem and the fix of a [`ConfigError`].
type Fault<'a> = (&'a str, Option<&'a str>);

/// Checks a name that must be given, hold none of `forbidden` and be new
/// among the names `seen` so far (it joins them): `invalid` or `twice`
/// where it is not.
fn check_name<'a>(
    name: &str,
    forbidden: &[char],
    seen: &mut HashSet<String>,
    invalid: Fault<'a>,
    twice: Fault<'a>,
) -> Result<(), Fault<'a>> {
    if name.is_empty() || name.contains(forbidden) {
        Err(invalid)
    } else if !seen.insert(name.to_owned()) {
        Err(twice)
    } else {
        Ok(())
    }
}

/// A configuration file's text, or an error naming it.
fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: Some(path.to_owned()),
        where_: "file".into(),
        problem: format!("cannot read it: {e}"),
        fix: None,
    })
}

impl BridgeConfig {
    /// Reads and checks a configuration file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = read(path)?;
        Self::from_toml(&text).map_err(|e| ConfigError { file: Some(path.to_owned()), ..e })
    }

    /// Checks a configuration given as TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_toml_with_env(text, |k| std::env::var(k).ok())
    }

    /// Reads the `[[server]]` sections of a deployment file that has
    /// other programs' sections too (`[mqtt]`, `[sparkplug]`…), which are
    /// left to them. Relative paths in it (`pki_dir`, `user_certificate`,
    /// `user_private_key`) are taken from the file's folder, wherever the
    /// program was started.
    pub fn from_deployment(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = read(path)?;
        let mut config = Self::parse(&text, |k| std::env::var(k).ok(), true)
            .map_err(|e| ConfigError { file: Some(path.to_owned()), ..e })?;
        let folder = path.parent().unwrap_or_else(|| Path::new("."));
        for s in &mut config.servers {
            s.pki_dir = folder.join(&s.pki_dir);
            if let Identity::Certificate { certificate, private_key } = &mut s.identity {
                *certificate = folder.join(&*certificate);
                *private_key = folder.join(&*private_key);
            }
        }
        Ok(config)
    }

    /// As [`from_toml`](Self::from_toml), with `env` for `password_env`.
    pub fn from_toml_with_env(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        Self::parse(text, env, false)
    }

    fn parse(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
        deployment: bool,
    ) -> Result<Self, ConfigError> {
        let syntax = |e: toml::de::Error| {
            let line = e
                .span()
                .map(|s| {
                    format!("line {}", text[..s.start.min(text.len())].matches('\n').count() + 1)
                })
                .unwrap_or_else(|| "the file".into());
            ConfigError { file: None, where_: line, problem: e.message().to_owned(), fix: None }
        };
        let servers = if deployment {
            toml::from_str::<DeploymentDe>(text).map_err(syntax)?.server
        } else {
            toml::from_str::<FileDe>(text).map_err(syntax)?.server
        };
        let de = FileDe { server: servers };
        let err = |where_: String, problem: String, fix: Option<&str>| ConfigError {
            file: None,
            where_,
            problem,
            fix: fix.map(str::to_owned),
        };
        if de.server.is_empty() {
            return Err(err(
                "the file".into(),
                "no [[server]]".into(),
                Some("add a [[server]] with a name, an endpoint and its [[server.node]]s"),
            ));
        }
        let mut names = HashSet::new();
        let mut servers = Vec::new();
        for (i, s) in de.server.into_iter().enumerate() {
            let name = s.name.clone().unwrap_or_default();
            let at = place("server", i, &name);
            check_name(
                &name,
                &['/', '+', '#'],
                &mut names,
                (
                    "needs a name without / + #",
                    Some("name = \"press-line\"; it is the Sparkplug device id"),
                ),
                ("the name is used twice", Some("give every server its own name")),
            )
            .map_err(|(problem, fix)| err(at.clone(), problem.into(), fix))?;
            let endpoint = s.endpoint.unwrap_or_default();
            if !endpoint.starts_with("opc.tcp://") || endpoint.len() <= "opc.tcp://".len() {
                return Err(err(
                    at,
                    format!("endpoint {endpoint:?} is not an opc.tcp:// URL"),
                    Some("endpoint = \"opc.tcp://host:4840/\""),
                ));
            }
            let policy = match s.security_policy.as_deref() {
                None => SecurityPolicy::None,
                Some(p) => SecurityPolicy::parse(p).ok_or_else(|| {
                    err(at.clone(), format!("unknown security_policy {p:?}"), Some("one of None, Basic256Sha256, Aes128_Sha256_RsaOaep, Aes256_Sha256_RsaPss"))
                })?,
            };
            let mode = match s.security_mode.as_deref() {
                None if policy == SecurityPolicy::None => SecurityMode::None,
                None => SecurityMode::SignAndEncrypt,
                Some(m) if m.eq_ignore_ascii_case("none") => SecurityMode::None,
                Some(m) if m.eq_ignore_ascii_case("sign") => SecurityMode::Sign,
                Some(m)
                    if m.eq_ignore_ascii_case("signandencrypt")
                        || m.eq_ignore_ascii_case("sign_and_encrypt") =>
                {
                    SecurityMode::SignAndEncrypt
                }
                Some(m) => {
                    return Err(err(
                        at,
                        format!("unknown security_mode {m:?}"),
                        Some("one of None, Sign, SignAndEncrypt"),
                    ));
                }
            };
            if (policy == SecurityPolicy::None) != (mode == SecurityMode::None) {
                return Err(err(
                    at,
                    format!(
                        "security_policy {policy} does not go with security_mode {}",
                        mode.name()
                    ),
                    Some(
                        "policy None goes with mode None; every other policy with Sign or SignAndEncrypt",
                    ),
                ));
            }
            let identity = match (s.user, s.password, s.password_env, s.user_certificate, s.user_private_key) {
                (None, None, None, None, None) => Identity::Anonymous,
                (Some(user), password, password_env, None, None) => {
                    let password = match (password, password_env) {
                        (Some(p), None) => p,
                        (None, Some(var)) => env(&var).ok_or_else(|| {
                            err(at.clone(), format!("password_env names {var:?}, which is not set"), Some("export it before starting the bridge"))
                        })?,
                        _ => return Err(err(at, format!("user {user:?} needs exactly one of password and password_env"), Some("prefer password_env: the password stays out of the file"))),
                    };
                    // With policy None the password can cross the network as
                    // it is (unless the server's token policy encrypts it,
                    // which is the server's choice, not ours).
                    if policy == SecurityPolicy::None && !s.allow_password_without_security {
                        return Err(err(
                            at,
                            format!("user {user:?} with security_policy None: the password could cross the network unencrypted"),
                            Some("use security_policy Basic256Sha256 with security_mode SignAndEncrypt; or, on a network you trust, set allow_password_without_security = true"),
                        ));
                    }
                    Identity::UserName { user, password }
                }
                (None, None, None, Some(certificate), Some(private_key)) => Identity::Certificate { certificate, private_key },
                (None, None, None, Some(_), None) | (None, None, None, None, Some(_)) => {
                    return Err(err(at, "a user certificate needs both user_certificate and user_private_key".into(), None));
                }
                _ => return Err(err(at, "give one identity: user and password, or user_certificate and user_private_key, or neither (anonymous)".into(), None)),
            };
            let ms = |v: Option<u64>,
                      default: u64,
                      key: &str,
                      at: &str|
             -> Result<Duration, ConfigError> {
                match v.unwrap_or(default) {
                    0 if key == "sampling_interval_ms" => Ok(Duration::ZERO),
                    n if n > 0 && n <= 3_600_000 => Ok(Duration::from_millis(n)),
                    n => Err(err(
                        at.to_owned(),
                        format!("{key} = {n} is out of range"),
                        Some(
                            "between 1 and 3600000 ms (sampling_interval_ms may be 0: as fast as the server can)",
                        ),
                    )),
                }
            };
            let publishing = ms(s.publishing_interval_ms, 1000, "publishing_interval_ms", &at)?;
            let sampling = ms(s.sampling_interval_ms, 500, "sampling_interval_ms", &at)?;
            let queue = s.queue_size.unwrap_or(10);
            let keep_alive_count = s.keep_alive_count.unwrap_or(10);
            if !(1..=1000).contains(&keep_alive_count) {
                return Err(err(
                    at,
                    format!("keep_alive_count = {keep_alive_count} is out of range"),
                    Some("between 1 and 1000"),
                ));
            }
            if s.node.is_empty() {
                return Err(err(
                    at,
                    "has no [[server.node]]".into(),
                    Some(
                        "add the nodes to bridge, or run the gateway's browse command to write them",
                    ),
                ));
            }
            let mut metrics = HashSet::new();
            let mut nodes = Vec::new();
            for (j, n) in s.node.into_iter().enumerate() {
                let metric = n.metric.unwrap_or_default();
                let at = format!("{at}, {}", place("node", j, &metric));
                check_name(
                    &metric,
                    &['\0', '+', '#'],
                    &mut metrics,
                    (
                        "needs a metric name without NUL, + or #",
                        Some("metric = \"Hydraulics/Pressure\""),
                    ),
                    ("the metric name is used twice on this server", None),
                )
                .map_err(|(problem, fix)| err(at.clone(), problem.into(), fix))?;
                let node = match (n.node_id, n.browse_path) {
                    (Some(id), None) => {
                        if n.namespace.is_some() {
                            return Err(err(
                                at,
                                "namespace is for browse_path; put nsu=<URI>; in the node_id"
                                    .into(),
                                None,
                            ));
                        }
                        parse_node_id(&id).map_err(|p| err(at.clone(), p.to_string(), None))?
                    }
                    (None, Some(path)) => parse_browse_path(&path, n.namespace.as_deref())
                        .map_err(|p| err(at.clone(), p.to_string(), None))?,
                    _ => {
                        return Err(err(
                            at,
                            "give exactly one of node_id and browse_path".into(),
                            Some(
                                "node_id = \"nsu=urn:…;s=Press1.Pressure\", or browse_path = \"Objects/Press1/Pressure\" with namespace = \"urn:…\"",
                            ),
                        ));
                    }
                };
                let queue_size = n.queue_size.unwrap_or(queue);
                if !(1..=10_000).contains(&queue_size) {
                    return Err(err(
                        at,
                        format!("queue_size = {queue_size} is out of range"),
                        Some(
                            "between 1 and 10000 (2 or more, or values are lost between publishes)",
                        ),
                    ));
                }
                let deadband = match n.deadband {
                    None => Deadband::None,
                    Some(DeadbandDe { absolute: Some(a), percent: None })
                        if a.is_finite() && a >= 0.0 =>
                    {
                        Deadband::Absolute(a)
                    }
                    Some(DeadbandDe { absolute: None, percent: Some(p) })
                        if (0.0..=100.0).contains(&p) =>
                    {
                        Deadband::Percent(p)
                    }
                    Some(_) => {
                        return Err(err(
                            at,
                            "deadband needs one of absolute (≥ 0) or percent (0–100)".into(),
                            Some("deadband = { absolute = 0.5 } or { percent = 2.0 }"),
                        ));
                    }
                };
                nodes.push(NodeConfig {
                    metric,
                    node,
                    sampling_interval: match n.sampling_interval_ms {
                        None => sampling,
                        v => ms(v, 500, "sampling_interval_ms", &at)?,
                    },
                    queue_size,
                    publishing_interval: ms(
                        n.publishing_interval_ms,
                        u64::try_from(publishing.as_millis()).unwrap_or(1000),
                        "publishing_interval_ms",
                        &at,
                    )?,
                    deadband,
                    writable: n.writable,
                });
            }
            servers.push(ServerConfig {
                name,
                endpoint,
                security_policy: policy,
                security_mode: mode,
                identity,
                pki_dir: s.pki_dir.unwrap_or_else(|| PathBuf::from("pki")),
                keep_alive_count,
                nodes,
            });
        }
        Ok(Self { servers })
    }
}
