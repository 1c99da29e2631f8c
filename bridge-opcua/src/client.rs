//! One OPC UA server, kept alive: the tokio shell around the
//! [`Watchdog`]. [`ServerLink::spawn`] connects
//! (retrying forever), resolves the configured nodes, subscribes to them
//! grouped by publishing interval, and sends [`ServerEvent`]s: a birth
//! with every value when data flows, readings as they change, `Offline`
//! at once when the server is lost or falls silent, and each node it
//! cannot bridge, once.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use opcua::client::{
    ClientBuilder, IdentityToken, Session, SessionPollResult, SubscriptionActivity,
    SubscriptionCallbacks,
};
use opcua::crypto::SecurityPolicy as UaPolicy;
use opcua::types::{
    AttributeId, BrowseDescription, BrowseDirection, BrowsePath, BrowseResultMask,
    DataChangeFilter, DataChangeTrigger, DataValue, DeadbandType, EUInformation,
    EndpointDescription, ExtensionObject, MessageSecurityMode, MonitoredItemCreateRequest,
    MonitoringMode, MonitoringParameters, NodeId, QualifiedName, Range, ReadValueId,
    ReferenceTypeId, RelativePath, RelativePathElement, StatusCode, TimestampsToReturn, VariableId,
    Variant, WriteValue,
};
use shopfloor_schemas::{Batch, Quality, Reading, Timestamp, Value};
use shopfloor_sparkplug::DataType;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{
    Deadband, Identity, Namespace, NodeConfig, NodeRef, SecurityMode, SecurityPolicy, ServerConfig,
};
use crate::convert;
use crate::watchdog::{Action, Timing, Watchdog};

/// What a metric is, learned from the server at connect.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricInfo {
    /// The metric name.
    pub name: String,
    /// Its Sparkplug type.
    pub datatype: DataType,
    /// Its engineering unit (EUInformation's display name), if the server has one.
    pub unit: Option<String>,
    /// Its EURange, if the server has one.
    pub range: Option<(f64, f64)>,
    /// On the write allow-list.
    pub writable: bool,
}

/// What a server link tells the application.
#[derive(Clone, Debug, PartialEq)]
pub enum ServerEvent {
    /// Data flows (first time, or after an outage): every bridged metric
    /// and its current value, read just now. Publish a birth with them.
    Online {
        /// The server's name.
        server: String,
        /// The metrics, in config order (nodes that could not be bridged left out).
        metrics: Vec<MetricInfo>,
        /// Their current values (source = the server's name).
        values: Batch,
    },
    /// Readings that changed (source = the server's name).
    Data(Batch),
    /// The server is unreachable or its subscriptions are silent: every
    /// metric is stale from now (publish a death).
    Offline {
        /// The server's name.
        server: String,
        /// Why, for the log.
        reason: String,
    },
    /// The server cannot be reached or refuses the bridge, with what to do
    /// about it (an untrusted certificate and which file to move where, a
    /// wrong password, a missing endpoint). Told once per distinct
    /// problem; the link keeps trying.
    Problem {
        /// The server's name.
        server: String,
        /// What is wrong and what to do.
        problem: String,
    },
    /// A node that cannot be bridged now, once per problem: an unknown
    /// NodeId, a browse path that leads nowhere, a type with no shopfloor
    /// value. It is tried again at each reconnect.
    NodeProblem {
        /// The server's name.
        server: String,
        /// The metric.
        metric: String,
        /// What is wrong.
        problem: String,
    },
}

/// Why a write was not done.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The metric is not configured on this server.
    #[error("{0:?} is not a metric of this server")]
    Unknown(String),
    /// The metric is not on the write allow-list.
    #[error("{0:?} is not writable: set writable = true on its node to allow writes")]
    NotAllowed(String),
    /// The node is not bridged now (unresolved, or the server is away).
    #[error("{0:?} cannot be written now: its server is not connected or the node is not resolved")]
    NotConnected(String),
    /// The value does not convert to the node's type.
    #[error("{value} does not fit {metric:?}, a {datatype:?}")]
    Convert {
        /// The metric.
        metric: String,
        /// Its type.
        datatype: DataType,
        /// The value offered.
        value: String,
    },
    /// The server refused it with this status.
    #[error("the server refused the write: {0}")]
    Refused(StatusCode),
    /// The request failed (timeout, connection).
    #[error("the write failed: {0}")]
    Failed(String),
}

impl WriteError {
    /// The status a [`WriteResult`](shopfloor_schemas::WriteResult) carries:
    /// the server's status code name (`BadUserAccessDenied`), `Unreachable`
    /// when the request got no answer, or `Refused` when nothing was sent.
    pub fn status(&self) -> String {
        match self {
            Self::Refused(code) => code.sub_code().to_string(),
            Self::Failed(_) => "Unreachable".into(),
            _ => shopfloor_schemas::WriteResult::REFUSED.into(),
        }
    }
}

/// A write asked of the link.
type WriteRequest = (String, Value, tokio::sync::oneshot::Sender<Result<(), WriteError>>);

/// Counters of one link, shared with its task.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Values delivered.
    pub values: AtomicU64,
    /// Outages noticed (silence or connection loss after data flowed).
    pub outages: AtomicU64,
    /// Sessions connected (the first included).
    pub sessions: AtomicU64,
    /// The last recovery time in ms (noticed → data again), 0 before any.
    pub last_recovery_ms: AtomicU64,
}

/// Settings of the client below the configuration file: timeouts and
/// retry pacing. The defaults suit a plant network; tests shorten them.
#[derive(Clone, Debug)]
pub struct ClientTuning {
    /// How often the session checks the server (a Read of its state).
    pub keep_alive_interval: Duration,
    /// How long a request may take.
    pub request_timeout: Duration,
    /// First pause between reconnect attempts of the library.
    pub retry_initial: Duration,
    /// Longest pause between reconnect attempts of the library.
    pub retry_max: Duration,
    /// How often the nodes are checked: deleted ones go bad, missing ones
    /// are tried again (many servers tell a subscription nothing when its
    /// node is deleted).
    pub node_check: Duration,
}

impl Default for ClientTuning {
    fn default() -> Self {
        Self {
            keep_alive_interval: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(10),
            node_check: Duration::from_secs(10),
        }
    }
}

/// A running link to one server.
#[derive(Debug)]
pub struct ServerLink {
    task: JoinHandle<()>,
    writes: mpsc::Sender<WriteRequest>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    stats: Arc<LinkStats>,
}

impl ServerLink {
    /// Starts the link; events go to `events`.
    pub fn spawn(
        config: ServerConfig,
        tuning: ClientTuning,
        events: mpsc::Sender<ServerEvent>,
    ) -> Self {
        let stats = Arc::new(LinkStats::default());
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (writes, write_rx) = mpsc::channel(64);
        let task = tokio::spawn(run(config, tuning, events, stats.clone(), stopped, write_rx));
        Self { task, writes, stop: Some(stop), stats }
    }

    /// Writes `value` to the node of `metric`, converted to the node's
    /// type: only metrics on the allow-list (`writable = true`), only
    /// values that fit. `Ok` once the server answered Good.
    pub async fn write(&self, metric: &str, value: Value) -> Result<(), WriteError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.writes
            .send((metric.to_owned(), value, tx))
            .await
            .map_err(|_| WriteError::Failed("the link has stopped".into()))?;
        rx.await.map_err(|_| WriteError::Failed("the link has stopped".into()))?
    }

    /// Its counters.
    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

    /// Stops the link and closes its session.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for ServerLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the event loop and the callbacks tell the supervisor.
enum Signal {
    /// A publish response (data or keep-alive).
    Activity,
    /// A data change of metric `index`.
    Data(usize, DataValue),
    /// The connection is gone; the library reconnects.
    Lost(StatusCode),
    /// (Re)connected: a session is active.
    Session,
    /// A reconnect attempt failed.
    ReconnectFailed(StatusCode),
    /// A subscription's status changed (timed out on the server, say).
    SubscriptionStatus(StatusCode),
    /// The event loop ended.
    Ended(StatusCode),
}

/// The monitored state of one configured node.
struct Item {
    config: NodeConfig,
    node_id: Option<NodeId>,
    /// Its subscription and monitored item ids, while monitored.
    monitored: Option<(u32, u32)>,
    info: Option<MetricInfo>,
    last: Option<Value>,
    problem: Option<String>,
}

async fn run(
    config: ServerConfig,
    tuning: ClientTuning,
    events: mpsc::Sender<ServerEvent>,
    stats: Arc<LinkStats>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
    mut writes: mpsc::Receiver<WriteRequest>,
) {
    let longest =
        config.nodes.iter().map(|n| n.publishing_interval).max().unwrap_or(Duration::from_secs(1));
    let timing = Timing::for_subscriptions(longest, config.keep_alive_count);
    let mut items: Vec<Item> = config
        .nodes
        .iter()
        .map(|n| Item {
            config: n.clone(),
            node_id: None,
            monitored: None,
            info: None,
            last: None,
            problem: None,
        })
        .collect();
    let mut watchdog = Watchdog::new(timing, Instant::now());
    let mut attempt = 0_u32;
    // The last problem told, so that each is told once.
    let mut told: Option<String> = None;
    let mut problems_reported: HashMap<String, String> = HashMap::new();
    let mut online = false;
    loop {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let session = match connect(&config, &tuning, tx.clone()).await {
            Ok(s) => s,
            Err(e) => {
                attempt += 1;
                if told.as_deref() != Some(e.as_str()) {
                    tracing::warn!(server = %config.name, "{e} (retrying)");
                    let _ = events
                        .send(ServerEvent::Problem {
                            server: config.name.clone(),
                            problem: e.clone(),
                        })
                        .await;
                    told = Some(e);
                }
                let pause = (tuning.retry_initial * attempt.min(20)).min(tuning.retry_max);
                let until = tokio::time::Instant::now() + pause;
                loop {
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => break,
                        _ = &mut stopped => return,
                        Some((metric, _, reply)) = writes.recv() => {
                            let _ = reply.send(Err(WriteError::NotConnected(metric)));
                        }
                    }
                }
                continue;
            }
        };
        attempt = 0;
        let mut subscriptions = Subscriptions::new();
        let mut check_at = tokio::time::Instant::now() + tuning.node_check;
        let mut reconnect = false;
        while !reconnect {
            let deadline =
                watchdog.next_deadline().unwrap_or_else(|| Instant::now() + timing.window);
            let signal = tokio::select! {
                s = rx.recv() => s,
                () = tokio::time::sleep_until(deadline.into()) => {
                    watchdog.on_timeout(Instant::now());
                    None
                }
                _ = &mut stopped => {
                    // A session that never activated may never answer.
                    let _ = tokio::time::timeout(tuning.request_timeout, session.disconnect()).await;
                    return;
                }
                Some((metric, value, reply)) = writes.recv() => {
                    start_write(&session, &items, &metric, value, reply, online);
                    continue;
                }
                () = tokio::time::sleep_until(check_at) => {
                    check_at = tokio::time::Instant::now() + tuning.node_check;
                    if online && !subscriptions.is_empty() {
                        // Never past the watchdog's deadline: a black hole
                        // must not hold the loop in a Read.
                        let check = check_nodes(&session, &mut items, &mut subscriptions, &config, &tx);
                        match tokio::time::timeout_at(deadline.into(), check).await.unwrap_or_else(|_| Err("timed out".into())) {
                            Ok(gone) if !gone.is_empty() => {
                                let mut batch = Batch::new(config.name.as_str());
                                batch.readings = gone;
                                let _ = events.send(ServerEvent::Data(batch)).await;
                            }
                            Ok(_) => {}
                            Err(e) => tracing::debug!(server = %config.name, "node check: {e}"),
                        }
                    }
                    None
                }
            };
            let now = Instant::now();
            let mut data = Vec::new();
            let mut problems: Vec<String> = Vec::new();
            let mut handle =
                |s: Signal, data: &mut Vec<(usize, DataValue)>, w: &mut Watchdog| match s {
                    Signal::Activity => w.on_activity(now),
                    Signal::Data(i, dv) => {
                        w.on_activity(now);
                        data.push((i, dv));
                    }
                    Signal::Lost(status) => {
                        tracing::warn!(server = %config.name, "connection lost: {status}");
                        w.on_lost(now);
                    }
                    Signal::Session => {
                        stats.sessions.fetch_add(1, Relaxed);
                        w.on_session(now);
                    }
                    Signal::ReconnectFailed(status) => problems.push(explain(status, &config)),
                    Signal::SubscriptionStatus(status) => {
                        tracing::warn!(server = %config.name, "subscription status: {status}");
                    }
                    Signal::Ended(status) => {
                        tracing::warn!(server = %config.name, "session ended: {status}");
                        w.on_lost(now);
                    }
                };
            let mut ended = false;
            if let Some(s) = signal {
                ended |= matches!(s, Signal::Ended(_));
                handle(s, &mut data, &mut watchdog);
            }
            while let Ok(s) = rx.try_recv() {
                ended |= matches!(s, Signal::Ended(_));
                handle(s, &mut data, &mut watchdog);
            }
            for p in problems {
                if told.as_deref() != Some(p.as_str()) {
                    tracing::warn!(server = %config.name, "{p}");
                    let _ = events
                        .send(ServerEvent::Problem {
                            server: config.name.clone(),
                            problem: p.clone(),
                        })
                        .await;
                    told = Some(p);
                }
            }
            while let Some(action) = watchdog.poll_action() {
                match action {
                    Action::Stale => {
                        online = false;
                        stats.outages.fetch_add(1, Relaxed);
                        let reason = "the server is unreachable or its subscriptions are silent";
                        let _ = events
                            .send(ServerEvent::Offline {
                                server: config.name.clone(),
                                reason: reason.into(),
                            })
                            .await;
                    }
                    Action::Republish => {
                        if subscriptions.is_empty() {
                            match subscribe(&session, &mut items, &config, &tx).await {
                                Ok(subs) => subscriptions = subs,
                                Err(e) => tracing::warn!(server = %config.name, "subscribing: {e}"),
                            }
                            watchdog.on_step_done(Instant::now());
                        }
                        session.trigger_publish_now();
                    }
                    Action::Recreate => {
                        tracing::info!(server = %config.name, "no publish response in time: recreating the subscriptions");
                        if !subscriptions.is_empty() {
                            let ids: Vec<u32> = subscriptions.values().copied().collect();
                            let _ = tokio::time::timeout(
                                tuning.request_timeout,
                                session.delete_subscriptions(&ids),
                            )
                            .await;
                        }
                        subscriptions = match subscribe(&session, &mut items, &config, &tx).await {
                            Ok(subs) => subs,
                            Err(e) => {
                                tracing::warn!(server = %config.name, "recreating subscriptions: {e}");
                                Subscriptions::new()
                            }
                        };
                        watchdog.on_step_done(Instant::now());
                        session.trigger_publish_now();
                    }
                    Action::Reconnect => {
                        tracing::info!(server = %config.name, "still silent: a new session");
                        reconnect = true;
                    }
                    Action::Resync => {
                        if let Some(ms) = watchdog.last_recovery() {
                            stats.last_recovery_ms.store(ms.as_millis() as u64, Relaxed);
                        }
                        match resync(&session, &mut items, &config.name).await {
                            Ok((metrics, values)) => {
                                online = true;
                                told = None;
                                stats.values.fetch_add(values.readings.len() as u64, Relaxed);
                                let _ = events
                                    .send(ServerEvent::Online {
                                        server: config.name.clone(),
                                        metrics,
                                        values,
                                    })
                                    .await;
                            }
                            Err(e) => {
                                // Not really up: let the ladder go on.
                                tracing::warn!(server = %config.name, "reading the current values: {e}");
                                watchdog.on_lost(Instant::now());
                            }
                        }
                    }
                }
            }
            for item in &items {
                if let Some(p) = &item.problem
                    && problems_reported.get(&item.config.metric) != Some(p)
                {
                    problems_reported.insert(item.config.metric.clone(), p.clone());
                    let _ = events
                        .send(ServerEvent::NodeProblem {
                            server: config.name.clone(),
                            metric: item.config.metric.clone(),
                            problem: p.clone(),
                        })
                        .await;
                }
            }
            if online && !data.is_empty() {
                let mut batch = Batch::new(config.name.as_str());
                let now_ts = Timestamp::now();
                for (i, dv) in data {
                    let Some(item) = items.get_mut(i) else { continue };
                    if let Some(r) = reading(item, &dv, now_ts) {
                        batch.readings.push(r);
                    }
                }
                if !batch.readings.is_empty() {
                    stats.values.fetch_add(batch.readings.len() as u64, Relaxed);
                    let _ = events.send(ServerEvent::Data(batch)).await;
                }
            }
            if ended {
                reconnect = true;
            }
        }
        let _ = tokio::time::timeout(tuning.request_timeout, session.disconnect()).await;
        for item in &mut items {
            item.node_id = None;
        }
    }
}

/// Checks a write and sends it on its own task (the loop must go on).
fn start_write(
    session: &Arc<Session>,
    items: &[Item],
    metric: &str,
    value: Value,
    reply: tokio::sync::oneshot::Sender<Result<(), WriteError>>,
    online: bool,
) {
    let Some(item) = items.iter().find(|i| i.config.metric == metric) else {
        let _ = reply.send(Err(WriteError::Unknown(metric.to_owned())));
        return;
    };
    if !item.config.writable {
        let _ = reply.send(Err(WriteError::NotAllowed(metric.to_owned())));
        return;
    }
    let (Some(node_id), Some(info), true) = (item.node_id.clone(), item.info.as_ref(), online)
    else {
        let _ = reply.send(Err(WriteError::NotConnected(metric.to_owned())));
        return;
    };
    let Some(variant) = convert::to_variant(info.datatype, &value) else {
        let _ = reply.send(Err(WriteError::Convert {
            metric: metric.to_owned(),
            datatype: info.datatype,
            value: format!("{value:?}"),
        }));
        return;
    };
    let session = Arc::clone(session);
    tokio::spawn(async move {
        let write = WriteValue {
            node_id,
            attribute_id: AttributeId::Value as u32,
            index_range: Default::default(),
            value: DataValue::value_only(variant),
        };
        let result = match session.write(&[write]).await {
            Ok(r) => match r.first() {
                Some(s) if s.is_good() => Ok(()),
                Some(s) => Err(WriteError::Refused(*s)),
                None => Err(WriteError::Failed("no result".into())),
            },
            Err(e) => Err(WriteError::Failed(e.to_string())),
        };
        let _ = reply.send(result);
    });
}

/// A data change as a reading; a bad status with no value repeats the
/// last value with the bad quality (a reading needs a value).
fn reading(item: &mut Item, dv: &DataValue, now: Timestamp) -> Option<Reading> {
    let s = convert::sample(dv, now);
    if let Some(u) = s.unsupported {
        item.problem = Some(u.to_string());
    }
    let value = match s.value {
        Some(v) => {
            item.last = Some(v.clone());
            v
        }
        None => item.last.clone()?,
    };
    Some(Reading {
        metric: item.config.metric.as_str().into(),
        timestamp: s.timestamp,
        value,
        quality: s.quality,
    })
}

/// What to tell the user about a connect error.
fn explain(status: StatusCode, config: &ServerConfig) -> String {
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
fn newest_file(dir: &std::path::Path) -> Option<String> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.file_name())))
        .max()
        .map(|(_, name)| name.to_string_lossy().into_owned())
}

fn policy(p: SecurityPolicy) -> UaPolicy {
    match p {
        SecurityPolicy::None => UaPolicy::None,
        SecurityPolicy::Basic256Sha256 => UaPolicy::Basic256Sha256,
        SecurityPolicy::Aes128Sha256RsaOaep => UaPolicy::Aes128Sha256RsaOaep,
        SecurityPolicy::Aes256Sha256RsaPss => UaPolicy::Aes256Sha256RsaPss,
    }
}

fn mode(m: SecurityMode) -> MessageSecurityMode {
    match m {
        SecurityMode::None => MessageSecurityMode::None,
        SecurityMode::Sign => MessageSecurityMode::Sign,
        SecurityMode::SignAndEncrypt => MessageSecurityMode::SignAndEncrypt,
    }
}

/// Finds the endpoint, makes the session and starts its event loop,
/// whose results arrive as [`Signal`]s.
async fn connect(
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

/// A session that is connected, for one-off work (browsing): waits up to
/// `tuning.request_timeout` × 3 for the first activation. The session's
/// event loop stops when the session is dropped and disconnected.
pub(crate) async fn open_session(
    config: &ServerConfig,
    tuning: &ClientTuning,
) -> Result<Arc<Session>, String> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let session = connect(config, tuning, tx).await?;
    let wait = tuning.request_timeout * 3;
    let outcome = tokio::time::timeout(wait, async {
        while let Some(s) = rx.recv().await {
            match s {
                Signal::Session => return Ok(()),
                Signal::ReconnectFailed(status) | Signal::Ended(status) => {
                    return Err(explain(status, config));
                }
                _ => {}
            }
        }
        Err("the session ended".to_owned())
    })
    .await
    .unwrap_or_else(|_| Err(format!("{}: no session within {wait:?}", config.endpoint)));
    if let Err(e) = outcome {
        let _ = tokio::time::timeout(tuning.request_timeout, session.disconnect()).await;
        return Err(e);
    }
    Ok(session)
}

/// The server's namespace URIs, by index.
pub(crate) async fn namespace_array(session: &Session) -> Result<Vec<String>, String> {
    let mut cache = None;
    let _ = namespace(session, &Namespace::Uri(String::new()), &mut cache).await;
    cache.ok_or_else(|| "cannot read the server's namespace array".to_owned())
}

/// The namespace index of `ns` on this server now.
async fn namespace(
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

/// Resolves every node not yet resolved: NodeIds by namespace, browse
/// paths by TranslateBrowsePathsToNodeIds.
async fn resolve(session: &Session, items: &mut [Item]) -> Result<(), String> {
    let mut cache = None;
    // The namespace array first: failing to read it is the session's
    // problem, not the nodes'.
    let by_uri = |n: &Namespace| matches!(n, Namespace::Uri(_));
    let needs_uris = items.iter().filter(|i| i.node_id.is_none()).any(|i| match &i.config.node {
        NodeRef::Id { namespace, .. } => by_uri(namespace),
        NodeRef::BrowsePath { elements } => elements.iter().any(|(n, _)| by_uri(n)),
    });
    if needs_uris {
        let _ = namespace(session, &Namespace::Uri(String::new()), &mut cache).await;
        if cache.is_none() {
            return Err("cannot read the server's namespace array".into());
        }
    }
    for item in items.iter_mut().filter(|i| i.node_id.is_none()) {
        let resolved = match &item.config.node {
            NodeRef::Id { namespace: ns, identifier } => {
                match namespace(session, ns, &mut cache).await {
                    Ok(i) => NodeId::from_str(&format!("ns={i};{identifier}"))
                        .map_err(|_| format!("{identifier} is not a NodeId")),
                    Err(e) => Err(e),
                }
            }
            NodeRef::BrowsePath { elements } => {
                let mut path = Vec::new();
                let mut error = None;
                for (ns, name) in elements {
                    match namespace(session, ns, &mut cache).await {
                        Ok(i) => path.push(RelativePathElement {
                            reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
                            is_inverse: false,
                            include_subtypes: true,
                            target_name: QualifiedName::new(i, name.as_str()),
                        }),
                        Err(e) => error = Some(e),
                    }
                }
                match error {
                    Some(e) => Err(e),
                    None => {
                        let bp = BrowsePath {
                            starting_node: opcua::types::ObjectId::ObjectsFolder.into(),
                            relative_path: RelativePath { elements: Some(path) },
                        };
                        match session.translate_browse_paths_to_node_ids(&[bp]).await {
                            Ok(r) => match r.first() {
                                Some(r) if r.status_code.is_good() => r
                                    .targets
                                    .as_ref()
                                    .and_then(|t| t.first())
                                    .map(|t| t.target_id.node_id.clone())
                                    .ok_or_else(|| "the browse path leads nowhere".to_owned()),
                                Some(r) => Err(format!(
                                    "the browse path leads nowhere ({})",
                                    r.status_code
                                )),
                                None => Err("no answer for the browse path".into()),
                            },
                            Err(e) => return Err(format!("translating browse paths: {e}")),
                        }
                    }
                }
            }
        };
        match resolved {
            Ok(id) => {
                item.node_id = Some(id);
                item.problem = None;
            }
            Err(e) => item.problem = Some(format!("{}: {e}", item.config.node)),
        }
    }
    Ok(())
}

/// Reads what each resolved node is (type, unit, range) where not known yet.
async fn describe(session: &Session, items: &mut [Item]) -> Result<(), String> {
    let todo: Vec<usize> = (0..items.len())
        .filter(|&i| items[i].node_id.is_some() && items[i].info.is_none())
        .collect();
    if todo.is_empty() {
        return Ok(());
    }
    let mut reads = Vec::new();
    for &i in &todo {
        let id = items[i].node_id.clone().unwrap_or_default();
        for attribute in [AttributeId::Value, AttributeId::DataType, AttributeId::ValueRank] {
            reads.push(ReadValueId {
                node_id: id.clone(),
                attribute_id: attribute as u32,
                ..Default::default()
            });
        }
    }
    let values = read_chunked(session, &reads).await?;
    // EURange and EngineeringUnits properties, by name in any namespace
    // (the standard puts them in 0; some servers use their own).
    let browse: Vec<BrowseDescription> = todo
        .iter()
        .map(|&i| BrowseDescription {
            node_id: items[i].node_id.clone().unwrap_or_default(),
            browse_direction: BrowseDirection::Forward,
            reference_type_id: ReferenceTypeId::HasProperty.into(),
            include_subtypes: true,
            node_class_mask: 0,
            result_mask: BrowseResultMask::All as u32,
        })
        .collect();
    let mut property_reads = Vec::new();
    let mut property_of = Vec::new();
    for chunk in (0..browse.len()).collect::<Vec<_>>().chunks(500) {
        let descriptions: Vec<BrowseDescription> =
            chunk.iter().map(|&k| browse[k].clone()).collect();
        let Ok(results) = session.browse(&descriptions, 0, None).await else { break };
        for (&k, r) in chunk.iter().zip(&results) {
            for reference in r.references.iter().flatten() {
                let which = match reference.browse_name.name.as_ref() {
                    "EURange" => 0,
                    "EngineeringUnits" => 1,
                    _ => continue,
                };
                property_reads.push(ReadValueId::from(reference.node_id.node_id.clone()));
                property_of.push(2 * k + which);
            }
        }
    }
    let properties = if property_reads.is_empty() {
        Vec::new()
    } else {
        read_chunked(session, &property_reads).await.unwrap_or_default()
    };
    let mut range = HashMap::new();
    let mut unit = HashMap::new();
    for (dv, &k) in properties.iter().zip(&property_of) {
        let (item, which) = (todo[k / 2], k % 2);
        let Some(Variant::ExtensionObject(ext)) = dv.value.as_ref() else { continue };
        if which == 0 {
            if let Some(r) = ext.inner_as::<Range>() {
                range.insert(item, (r.low, r.high));
            }
        } else if let Some(eu) = ext.inner_as::<EUInformation>() {
            let text = eu.display_name.text.as_ref().to_owned();
            if !text.is_empty() {
                unit.insert(item, text);
            }
        }
    }
    for (n, &i) in todo.iter().enumerate() {
        let value = &values[3 * n];
        let data_type = values[3 * n + 1].value.as_ref();
        let rank = match values[3 * n + 2].value {
            Some(Variant::Int32(r)) => r,
            _ => -1,
        };
        let from_value = value.value.as_ref().and_then(convert::datatype);
        let from_type = match data_type {
            Some(Variant::NodeId(id)) if id.namespace == 0 => match id.identifier {
                opcua::types::Identifier::Numeric(n) => convert::datatype_of_type_id(n, rank >= 0),
                _ => None,
            },
            _ => None,
        };
        let item = &mut items[i];
        match from_value.or(from_type) {
            Some(datatype) => {
                item.info = Some(MetricInfo {
                    name: item.config.metric.clone(),
                    datatype,
                    unit: unit.remove(&i),
                    range: range.remove(&i),
                    writable: item.config.writable,
                });
            }
            None if value.status.is_some_and(|s| s == StatusCode::BadNodeIdUnknown) => {
                item.problem = Some(format!("{}: the server has no such node", item.config.node));
                item.node_id = None;
            }
            None => {
                let what = value
                    .value
                    .as_ref()
                    .and_then(|v| convert::value(v).err())
                    .map_or_else(|| "its type is not known".to_owned(), |e| e.to_string());
                item.problem = Some(format!("{}: {what}", item.config.node));
            }
        }
    }
    Ok(())
}

async fn read_chunked(session: &Session, reads: &[ReadValueId]) -> Result<Vec<DataValue>, String> {
    let mut out = Vec::with_capacity(reads.len());
    for chunk in reads.chunks(500) {
        let got = session
            .read(chunk, TimestampsToReturn::Both, 0.0)
            .await
            .map_err(|e| format!("Read: {e}"))?;
        if got.len() != chunk.len() {
            return Err(format!("Read: {} results for {} nodes", got.len(), chunk.len()));
        }
        out.extend(got);
    }
    Ok(out)
}

/// Notifications per publish response: bounded, so that no peer's array
/// or message limit is met by a big server.
const MAX_NOTIFICATIONS: u32 = 1000;

/// The subscriptions of a session, by publishing interval.
type Subscriptions = BTreeMap<Duration, u32>;

/// Creates the subscriptions (one per publishing interval) and their
/// items, in batches; an item the server refuses only loses that item.
async fn subscribe(
    session: &Arc<Session>,
    items: &mut [Item],
    config: &ServerConfig,
    tx: &mpsc::UnboundedSender<Signal>,
) -> Result<Subscriptions, String> {
    for item in items.iter_mut() {
        item.monitored = None;
    }
    resolve(session, items).await?;
    describe(session, items).await?;
    let mut subs = Subscriptions::new();
    let all: Vec<usize> = (0..items.len()).filter(|&i| items[i].info.is_some()).collect();
    monitor(session, items, &mut subs, config, tx, &all).await?;
    Ok(subs)
}

/// Creates monitored items for `which`, making their subscriptions first
/// where needed.
async fn monitor(
    session: &Arc<Session>,
    items: &mut [Item],
    subs: &mut Subscriptions,
    config: &ServerConfig,
    tx: &mpsc::UnboundedSender<Signal>,
    which: &[usize],
) -> Result<(), String> {
    let mut groups: BTreeMap<Duration, Vec<usize>> = BTreeMap::new();
    for &i in which {
        if items[i].info.is_some() && items[i].node_id.is_some() {
            groups.entry(items[i].config.publishing_interval).or_default().push(i);
        }
    }
    for (interval, members) in groups {
        let id = match subs.get(&interval) {
            Some(&id) => id,
            None => {
                let data_tx = tx.clone();
                let status_tx = tx.clone();
                let callbacks = SubscriptionCallbacks::new(
                    move |status| {
                        let _ = status_tx.send(Signal::SubscriptionStatus(status.status));
                    },
                    move |dv, item| {
                        let i = item.client_handle() as usize;
                        let _ = data_tx.send(Signal::Data(i.wrapping_sub(1), dv));
                    },
                    |_, _| {},
                );
                // Lifetime: long enough to outlive an outage the library
                // can bridge by reactivating the session (10 min at 1 s).
                let keep_alive = config.keep_alive_count;
                let lifetime = (600_000 / interval.as_millis().max(1) as u32).max(keep_alive * 3);
                let id = session
                    .create_subscription(
                        interval,
                        lifetime,
                        keep_alive,
                        MAX_NOTIFICATIONS,
                        0,
                        true,
                        callbacks,
                    )
                    .await
                    .map_err(|e| format!("CreateSubscription: {e}"))?;
                subs.insert(interval, id);
                id
            }
        };
        for chunk in members.chunks(500) {
            let requests: Vec<MonitoredItemCreateRequest> = chunk
                .iter()
                .map(|&i| {
                    let c = &items[i].config;
                    let filter = match c.deadband {
                        Deadband::None => ExtensionObject::null(),
                        Deadband::Absolute(v) => ExtensionObject::from_message(DataChangeFilter {
                            trigger: DataChangeTrigger::StatusValue,
                            deadband_type: DeadbandType::Absolute as u32,
                            deadband_value: v,
                        }),
                        Deadband::Percent(v) => ExtensionObject::from_message(DataChangeFilter {
                            trigger: DataChangeTrigger::StatusValue,
                            deadband_type: DeadbandType::Percent as u32,
                            deadband_value: v,
                        }),
                    };
                    MonitoredItemCreateRequest {
                        item_to_monitor: ReadValueId::from(
                            items[i].node_id.clone().unwrap_or_default(),
                        ),
                        monitoring_mode: MonitoringMode::Reporting,
                        requested_parameters: MonitoringParameters {
                            client_handle: i as u32 + 1,
                            sampling_interval: c.sampling_interval.as_secs_f64() * 1000.0,
                            filter,
                            queue_size: c.queue_size,
                            discard_oldest: true,
                        },
                    }
                })
                .collect();
            let results = session
                .create_monitored_items(id, TimestampsToReturn::Both, requests)
                .await
                .map_err(|e| format!("CreateMonitoredItems: {e}"))?;
            for (&i, r) in chunk.iter().zip(&results) {
                let status = r.result.status_code;
                let item = &mut items[i];
                if status.is_good() {
                    item.monitored = Some((id, r.result.monitored_item_id));
                    item.problem = None;
                } else {
                    item.problem = Some(format!(
                        "{}: the server refused to monitor it: {status}",
                        item.config.node
                    ));
                    if status == StatusCode::BadNodeIdUnknown {
                        item.node_id = None;
                    }
                }
            }
        }
    }
    Ok(())
}

/// The periodic node check: monitored nodes the server no longer has
/// (asyncua, like many servers, says nothing to a subscription whose node
/// is deleted) go bad at once and their items are deleted; nodes missing
/// or refused before are tried again, and monitored once they exist.
/// Returns the readings of the nodes that went away (last value, bad).
async fn check_nodes(
    session: &Arc<Session>,
    items: &mut [Item],
    subs: &mut Subscriptions,
    config: &ServerConfig,
    tx: &mpsc::UnboundedSender<Signal>,
) -> Result<Vec<Reading>, String> {
    let watched: Vec<usize> = (0..items.len()).filter(|&i| items[i].monitored.is_some()).collect();
    let reads: Vec<ReadValueId> = watched
        .iter()
        .map(|&i| ReadValueId {
            node_id: items[i].node_id.clone().unwrap_or_default(),
            attribute_id: AttributeId::NodeClass as u32,
            ..Default::default()
        })
        .collect();
    let classes = if reads.is_empty() { Vec::new() } else { read_chunked(session, &reads).await? };
    let now = Timestamp::now();
    let mut gone = Vec::new();
    for (&i, dv) in watched.iter().zip(&classes) {
        let status = dv.status.unwrap_or(StatusCode::Good);
        if status != StatusCode::BadNodeIdUnknown && status != StatusCode::BadNodeIdInvalid {
            continue;
        }
        let item = &mut items[i];
        if let Some((sub, id)) = item.monitored.take() {
            let _ = session.delete_monitored_items(sub, &[id]).await;
        }
        item.problem = Some(format!("{}: the server no longer has this node", item.config.node));
        item.node_id = None;
        if let Some(value) = item.last.clone() {
            gone.push(Reading {
                metric: item.config.metric.as_str().into(),
                timestamp: now,
                value,
                quality: Quality::Bad,
            });
        }
    }
    // Missing ones: resolve, check they exist, describe, monitor.
    let missing: Vec<usize> = (0..items.len()).filter(|&i| items[i].monitored.is_none()).collect();
    if missing.is_empty() {
        return Ok(gone);
    }
    resolve(session, items).await?;
    let reads: Vec<ReadValueId> = missing
        .iter()
        .filter_map(|&i| items[i].node_id.clone())
        .map(|node_id| ReadValueId {
            node_id,
            attribute_id: AttributeId::NodeClass as u32,
            ..Default::default()
        })
        .collect();
    let with_id: Vec<usize> =
        missing.iter().copied().filter(|&i| items[i].node_id.is_some()).collect();
    let classes = if reads.is_empty() { Vec::new() } else { read_chunked(session, &reads).await? };
    let mut back = Vec::new();
    for (&i, dv) in with_id.iter().zip(&classes) {
        if dv.status.is_none_or(|s| s.is_good()) {
            back.push(i);
        } else {
            items[i].node_id = None;
        }
    }
    describe(session, items).await?;
    monitor(session, items, subs, config, tx, &back).await?;
    Ok(gone)
}

/// Reads every bridged node's current value for the birth.
async fn resync(
    session: &Session,
    items: &mut [Item],
    server: &str,
) -> Result<(Vec<MetricInfo>, Batch), String> {
    let live: Vec<usize> = (0..items.len()).filter(|&i| items[i].info.is_some()).collect();
    let reads: Vec<ReadValueId> = live
        .iter()
        .map(|&i| ReadValueId::from(items[i].node_id.clone().unwrap_or_default()))
        .collect();
    let values = if reads.is_empty() { Vec::new() } else { read_chunked(session, &reads).await? };
    let now = Timestamp::now();
    let mut metrics = Vec::new();
    let mut batch = Batch::new(server);
    for (&i, dv) in live.iter().zip(&values) {
        let item = &mut items[i];
        if let Some(info) = &item.info {
            metrics.push(info.clone());
        }
        match reading(item, dv, now) {
            Some(r) => batch.readings.push(r),
            None => {
                // No value yet (bad at the source): a placeholder of the
                // right type, marked bad, so the birth names the metric.
                let value =
                    placeholder(item.info.as_ref().map_or(DataType::Double, |m| m.datatype));
                batch.readings.push(Reading {
                    metric: item.config.metric.as_str().into(),
                    timestamp: now,
                    value,
                    quality: Quality::Bad,
                });
            }
        }
    }
    Ok((metrics, batch))
}

fn placeholder(t: DataType) -> Value {
    match t {
        DataType::Boolean => Value::Bool(false),
        DataType::String | DataType::Text => Value::String(String::new()),
        DataType::Bytes => Value::Bytes(Vec::new().into()),
        DataType::UInt64 => Value::U64(0),
        DataType::Float | DataType::Double => Value::F64(0.0),
        _ => Value::I64(0),
    }
}
