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
