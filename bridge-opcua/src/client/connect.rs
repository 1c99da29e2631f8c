//! Connecting: the endpoint, security, identity, and the namespace table.

use super::*;

/// What to tell the user about a connect error.
pub(super) fn explain(status: StatusCode, config: &ServerConfig) -> String {
    let pki = config.pki_dir.display();
    match status {
        StatusCode::BadCertificateUntrusted | StatusCode::BadSecurityChecksFailed => {
            let newest = newest_file(&config.pki_dir.join("rejected"));
            match newest {
                Some(name) => format!(
                    "{status}: the server's certificate is not trusted. It was saved as \
                     {pki}/rejected/{name}; if it is the server's, move it to {pki}/trusted/ \
                     (mv '{pki}/rejected/{name}' '{pki}/trusted/'): the bridge tries again by itself"
                ),
                None => format!(
                    "{status}: the server's certificate is not trusted; put it in {pki}/trusted/"
                ),
            }
        }
        StatusCode::BadCertificateHostNameInvalid => format!(
            "{status}: the server's certificate does not name the host in {}; use the host name it carries \
             (often its own hostname or localhost), not an IP address",
            config.endpoint
        ),
        StatusCode::BadUserAccessDenied
        | StatusCode::BadIdentityTokenRejected
        | StatusCode::BadIdentityTokenInvalid => {
            format!(
                "{status}: the server refused the user or password; check user and password_env"
            )
        }
        StatusCode::BadSecurityPolicyRejected | StatusCode::BadTcpEndpointUrlInvalid => format!(
            "{status}: the server has no endpoint with security policy {} and mode {}",
            config.security_policy,
            config.security_mode.name()
        ),
        other => format!("{other}"),
    }
}

/// The most recently changed file in `dir`.
pub(super) fn newest_file(dir: &std::path::Path) -> Option<String> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.file_name())))
        .max()
        .map(|(_, name)| name.to_string_lossy().into_owned())
}

pub(super) fn policy(p: SecurityPolicy) -> UaPolicy {
    match p {
        SecurityPolicy::None => UaPolicy::None,
        SecurityPolicy::Basic256Sha256 => UaPolicy::Basic256Sha256,
        SecurityPolicy::Aes128Sha256RsaOaep => UaPolicy::Aes128Sha256RsaOaep,
        SecurityPolicy::Aes256Sha256RsaPss => UaPolicy::Aes256Sha256RsaPss,
    }
}

/// Makes `pki/private` a folder only its owner can enter (0700) and,
/// once `written`, the key in it readable only by its owner (0600); a key
/// left readable by an older version is tightened too.
fn guard_private_key(pki: &std::path::Path, written: bool) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = pki.join("private");
    let fail = |what: &std::path::Path, e: std::io::Error| {
        format!(
            "{}: {e}; the client's private key must be private (check the folder's owner)",
            what.display()
        )
    };
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| fail(&dir, e))?;
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| fail(&dir, e))?;
    let key = dir.join("private.pem");
    if written || key.exists() {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| fail(&key, e))?;
    }
    Ok(())
}

/// One entry of a certificate's SubjectAltName.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum AltName {
    Dns(String),
    Ip(std::net::IpAddr),
    Uri(String),
}

impl std::fmt::Display for AltName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dns(n) => write!(f, "DNS:{n}"),
            Self::Ip(a) => write!(f, "IP:{a}"),
            Self::Uri(u) => write!(f, "URI:{u}"),
        }
    }
}

/// A DER certificate's validity (not before, not after) and its
/// SubjectAltName entries in order (other kinds of names left out).
pub(super) fn certificate_names(
    der: &[u8],
) -> Result<((std::time::SystemTime, std::time::SystemTime), Vec<AltName>), String> {
    use x509_cert::der::Decode;
    use x509_cert::ext::pkix::SubjectAltName;
    use x509_cert::ext::pkix::name::GeneralName;
    let cert = x509_cert::Certificate::from_der(der)
        .map_err(|e| format!("the server's certificate cannot be read: {e}"))?;
    let validity = &cert.tbs_certificate.validity;
    let times = (validity.not_before.to_system_time(), validity.not_after.to_system_time());
    let san: Option<(bool, SubjectAltName)> = cert
        .tbs_certificate
        .get()
        .map_err(|e| format!("the server's certificate has an unreadable SubjectAltName: {e}"))?;
    let mut names = Vec::new();
    for n in san.map(|(_, s)| s.0).unwrap_or_default() {
        names.push(match n {
            GeneralName::DnsName(d) => AltName::Dns(d.to_string()),
            GeneralName::UniformResourceIdentifier(u) => AltName::Uri(u.to_string()),
            GeneralName::IpAddress(ip) => match ip.as_bytes() {
                b if b.len() == 4 => {
                    AltName::Ip(std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).into())
                }
                b if b.len() == 16 => {
                    let mut a = [0_u8; 16];
                    a.copy_from_slice(b);
                    AltName::Ip(std::net::Ipv6Addr::from(a).into())
                }
                _ => continue,
            },
            _ => continue,
        });
    }
    Ok((times, names))
}

/// The checks async-opcua is told to skip, done right: the certificate is
/// valid now, names the host of the configured endpoint among all of its
/// alternative names (a DNS name, case-insensitive, or an IP address;
/// no wildcards), and names the server's application URI.
pub(super) fn check_server_certificate(
    endpoint: &EndpointDescription,
    config: &ServerConfig,
    now: std::time::SystemTime,
) -> Result<(), String> {
    let der = endpoint.server_certificate.value.as_deref().unwrap_or_default();
    let ((not_before, not_after), names) = certificate_names(der)?;
    if now < not_before || now > not_after {
        return Err(format!(
            "{}: the server's certificate is not valid now (from {} to {}); the server needs a new one, or this machine's clock is wrong",
            StatusCode::BadCertificateTimeInvalid,
            utc_date(not_before),
            utc_date(not_after)
        ));
    }
    let listed = || names.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    let (host, _) = endpoint_address(config.endpoint.as_str())
        .ok_or_else(|| format!("{}: no host name in the endpoint", config.endpoint))?;
    let named = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => names.contains(&AltName::Ip(ip)),
        Err(_) => {
            names.iter().any(|n| matches!(n, AltName::Dns(d) if d.eq_ignore_ascii_case(&host)))
        }
    };
    if !named {
        return Err(format!(
            "{}: the server's certificate does not name {host}, the host in {}; it names {}: use one of those in the endpoint",
            StatusCode::BadCertificateHostNameInvalid,
            config.endpoint,
            if names.is_empty() { "nothing (no SubjectAltName)".to_owned() } else { listed() }
        ));
    }
    let uri = endpoint.server.application_uri.as_ref();
    if !uri.is_empty() && !names.contains(&AltName::Uri(uri.to_owned())) {
        return Err(format!(
            "{}: the server's certificate does not carry its application URI {uri}; it names {}",
            StatusCode::BadCertificateUriInvalid,
            listed()
        ));
    }
    Ok(())
}

/// Opens (and closes) a TCP connection to the endpoint's address.
async fn probe(config: &ServerConfig, timeout: Duration) -> Result<(), String> {
    let Some((host, port)) = endpoint_address(config.endpoint.as_str()) else { return Ok(()) };
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host.as_str(), port))).await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!(
            "{}: {e} at {host}:{port}; is the server running, and is this its address?",
            config.endpoint
        )),
        Err(_) => Err(format!(
            "{}: no TCP connection to {host}:{port} within {} s (a firewall, or the wrong address)",
            config.endpoint,
            timeout.as_secs()
        )),
    }
}

/// The host (an IPv6 address without its brackets) and port (4840 when
/// none is given) of an `opc.tcp://` endpoint URL, as async-opcua reads it.
fn endpoint_address(url: &str) -> Option<(String, u16)> {
    let (host, port) = opcua::core::comms::url::hostname_port_from_url(url, 4840).ok()?;
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.to_owned(),
        None => host,
    };
    Some((host, port))
}

/// A time as `YYYY-MM-DD` (UTC) for a message.
fn utc_date(t: std::time::SystemTime) -> String {
    let ms = t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    Timestamp::from_unix_ms(u64::try_from(ms).unwrap_or(u64::MAX)).to_rfc3339()[..10].to_owned()
}

pub(super) fn mode(m: SecurityMode) -> MessageSecurityMode {
    match m {
        SecurityMode::None => MessageSecurityMode::None,
        SecurityMode::Sign => MessageSecurityMode::Sign,
        SecurityMode::SignAndEncrypt => MessageSecurityMode::SignAndEncrypt,
    }
}

/// Finds the endpoint, makes the session and starts its event loop,
/// whose results arrive as [`Signal`]s.
pub(super) async fn connect(
    config: &ServerConfig,
    tuning: &ClientTuning,
    tx: mpsc::UnboundedSender<Signal>,
) -> Result<Arc<Session>, String> {
    // Servers sharing a PKI folder connect at once, and each client would
    // make the keypair if it is missing: all but one failed ("already
    // exists") and ran without a certificate. One at a time, the first
    // makes it and the rest load it.
    static KEYPAIR: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let one_at_a_time = KEYPAIR.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // The library writes the private key with the umask's mode (0644 as a
    // rule): its folder is made 0700 first, so no other user can read the
    // key even for a moment, and the key itself 0600 once it is there.
    guard_private_key(&config.pki_dir, false)?;
    let mut client = ClientBuilder::new()
        .application_name("shopfloor-bridge-opcua")
        .application_uri("urn:shopfloor:bridge-opcua")
        .product_uri("urn:shopfloor:bridge-opcua")
        .pki_dir(&config.pki_dir)
        .create_sample_keypair(true)
        .trust_server_certs(false)
        // Trust (trusted/, rejected/) and key length stay the library's;
        // validity, host name and application URI are checked here:
        // async-opcua 0.19 reads the first alternative name as the
        // application URI and never as a host name, so a certificate that
        // lists its DNS name first (node-opcua's) could never be used.
        .verify_server_certs(false)
        .session_retry_limit(-1)
        .session_retry_initial(tuning.retry_initial)
        .session_retry_max(tuning.retry_max)
        .keep_alive_interval(tuning.keep_alive_interval)
        .max_failed_keep_alive_count(2)
        .request_timeout(tuning.request_timeout)
        .recreate_subscriptions(true)
        // The library's defaults (arrays of 1 000, messages of 320 kB)
        // close the connection on the first publish of a 10 000-item
        // server, or a Read of its values.
        .max_array_length(1 << 20)
        .max_message_size(64 << 20)
        .max_chunk_count(4096)
        .session_timeout(60_000)
        .client()
        .map_err(|e| format!("the client configuration is invalid: {}", e.join("; ")))?;
    guard_private_key(&config.pki_dir, true)?;
    drop(one_at_a_time);
    // A refused or unreachable address, said at once in one line: the
    // library's GetEndpoints would retry it silently until the timeout.
    probe(config, tuning.request_timeout).await?;
    let endpoints = tokio::time::timeout(
        tuning.request_timeout,
        client.get_server_endpoints_from_url(config.endpoint.as_str()),
    )
    .await
    .map_err(|_| format!("{}: no answer to GetEndpoints", config.endpoint))?
    .map_err(|e| format!("{}: {}", config.endpoint, explain(e.status(), config)))?;
    let wanted = policy(config.security_policy);
    let mut endpoint: EndpointDescription = endpoints
        .iter()
        .find(|e| {
            e.security_mode == mode(config.security_mode)
                && UaPolicy::from_uri(e.security_policy_uri.as_ref()) == wanted
        })
        .cloned()
        .ok_or_else(|| {
            let offered: Vec<String> = endpoints
                .iter()
                .map(|e| {
                    format!(
                        "{} {:?}",
                        e.security_policy_uri.as_ref().rsplit('#').next().unwrap_or(""),
                        e.security_mode
                    )
                })
                .collect();
            format!(
                "{} has no endpoint with security policy {} and mode {}; it offers: {}",
                config.endpoint,
                config.security_policy,
                config.security_mode.name(),
                offered.join(", ")
            )
        })?;
    if config.security_policy != SecurityPolicy::None {
        check_server_certificate(&endpoint, config, std::time::SystemTime::now())?;
    }
    // Keep to the configured address: the server may advertise another
    // host or port (NAT, a proxy, a container).
    endpoint.endpoint_url = config.endpoint.as_str().into();
    let identity = match &config.identity {
        Identity::Anonymous => IdentityToken::Anonymous,
        Identity::UserName { user, password } => {
            IdentityToken::new_user_name(user.clone(), password.clone())
        }
        Identity::Certificate { certificate, private_key } => {
            IdentityToken::new_x509_path(certificate, private_key).map_err(|e| {
                format!(
                    "the user certificate {} or key {}: {e}",
                    certificate.display(),
                    private_key.display()
                )
            })?
        }
    };
    let (session, event_loop) = client
        .connect_to_endpoint_directly(endpoint, identity)
        .map_err(|e| format!("{}: {e}", config.endpoint))?;
    let name = config.name.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(event_loop.enter());
        while let Some(r) = stream.next().await {
            let signal = match r {
                Ok(SessionPollResult::Reconnected(_)) => Signal::Session,
                Ok(SessionPollResult::ConnectionLost(s)) => Signal::Lost(s),
                Ok(SessionPollResult::ReconnectFailed(s)) => Signal::ReconnectFailed(s),
                Ok(SessionPollResult::Subscription(SubscriptionActivity::Publish)) => {
                    Signal::Activity
                }
                Ok(_) => continue,
                Err(s) => {
                    let _ = tx.send(Signal::Ended(s));
                    break;
                }
            };
            if tx.send(signal).is_err() {
                break;
            }
        }
        tracing::debug!(server = %name, "session event loop ended");
    });
    Ok(session)
}

/// The namespace index of `ns` on this server now.
pub(super) async fn namespace(
    session: &Session,
    ns: &Namespace,
    cache: &mut Option<Vec<String>>,
) -> Result<u16, String> {
    match ns {
        Namespace::Index(i) => Ok(*i),
        Namespace::Uri(uri) => {
            if cache.is_none() {
                let node: NodeId = VariableId::Server_NamespaceArray.into();
                let dv = session
                    .read(&[ReadValueId::from(node)], TimestampsToReturn::Neither, 0.0)
                    .await
                    .map_err(|e| format!("reading the namespace array: {e}"))?;
                let uris = match dv.first().and_then(|d| d.value.as_ref()) {
                    Some(Variant::Array(a)) => a
                        .values
                        .iter()
                        .map(|v| match v {
                            Variant::String(s) => s.as_ref().to_owned(),
                            _ => String::new(),
                        })
                        .collect(),
                    _ => return Err("the server's namespace array is unreadable".into()),
                };
                *cache = Some(uris);
            }
            let uris = cache.as_ref().map_or(&[][..], Vec::as_slice);
            uris.iter().position(|u| u == uri).and_then(|i| u16::try_from(i).ok()).ok_or_else(
                || format!("the server has no namespace {uri:?} (it has {})", uris.join(", ")),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::endpoint_address;

    #[test]
    fn endpoint_urls_give_their_host_and_port() {
        let cases = [
            ("opc.tcp://plc-1:4840/", Some(("plc-1", 4840))),
            ("opc.tcp://127.0.0.1:48400", Some(("127.0.0.1", 48400))),
            ("opc.tcp://[::1]:4841/UA/Server", Some(("::1", 4841))),
            ("opc.tcp://plc-2/", Some(("plc-2", 4840))),
            ("opc.tcp://", None),
        ];
        for (url, want) in cases {
            let got = endpoint_address(url);
            assert_eq!(got.as_ref().map(|(h, p)| (h.as_str(), *p)), want, "{url}");
        }
    }
}
