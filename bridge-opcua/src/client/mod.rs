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
use shopfloor_schemas::{Batch, Reading, Timestamp, Value};
use shopfloor_sparkplug::Now;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{
    Deadband, Identity, Namespace, NodeRef, SecurityMode, SecurityPolicy, ServerConfig,
};
use crate::items::{Described, Items};
use crate::watchdog::{Action, Timing, Watchdog};

mod connect;
mod resolve;
mod subscribe;
mod write;

use connect::*;
use resolve::*;
use subscribe::*;
use write::*;

pub use crate::items::{MetricInfo, ServerEvent, WriteError};

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

/// Logs `problem` (with `note` after it) and sends it as a
/// [`ServerEvent::Problem`], unless it is the problem told last: one line
/// a problem, not one a retry.
async fn tell(items: &mut Items, events: &mpsc::Sender<ServerEvent>, problem: String, note: &str) {
    if let Some(event) = items.server_problem(problem) {
        if let ServerEvent::Problem { server, problem } = &event {
            tracing::warn!(server, "{problem}{note}");
        }
        let _ = events.send(event).await;
    }
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
    let mut items = Items::new(&config.name, &config.nodes);
    let mut watchdog = Watchdog::new(timing, Now::now());
    let mut attempt = 0_u32;
    loop {
        let (tx, mut rx) = mpsc::unbounded_channel();
        // Stopping never waits for a connection attempt (a refused or
        // silent server can hold one for the request timeout).
        let attempt_result = tokio::select! {
            r = connect(&config, &tuning, tx.clone()) => r,
            _ = &mut stopped => return,
        };
        let session = match attempt_result {
            Ok(s) => s,
            Err(e) => {
                attempt += 1;
                tell(&mut items, &events, e, " (retrying)").await;
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
        let monitoring = Monitoring { session: &session, config: &config, tx: &tx };
        let mut subscriptions = Subscriptions::new();
        let mut check_at = tokio::time::Instant::now() + tuning.node_check;
        let mut reconnect = false;
        while !reconnect {
            let deadline =
                watchdog.next_deadline().unwrap_or_else(|| Instant::now() + timing.window);
            let signal = tokio::select! {
                s = rx.recv() => s,
                () = tokio::time::sleep_until(deadline.into()) => {
                    watchdog.on_timeout(Now::now());
                    None
                }
                _ = &mut stopped => {
                    // A session that never activated may never answer:
                    // a polite goodbye, but never more than half a second.
                    let bye = tuning.request_timeout.min(Duration::from_millis(500));
                    let _ = tokio::time::timeout(bye, session.disconnect()).await;
                    return;
                }
                Some((metric, value, reply)) = writes.recv() => {
                    start_write(&session, &items, &metric, value, reply);
                    continue;
                }
                () = tokio::time::sleep_until(check_at) => {
                    check_at = tokio::time::Instant::now() + tuning.node_check;
                    if items.is_online() && !subscriptions.is_empty() {
                        // Never past the watchdog's deadline: a black hole
                        // must not hold the loop in a Read.
                        let check = check_nodes(monitoring, &mut items, &mut subscriptions);
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
            let now = Now::now();
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
                tell(&mut items, &events, p, "").await;
            }
            while let Some(action) = watchdog.poll_action() {
                match action {
                    Action::Stale => {
                        items.offline();
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
                            match subscribe(monitoring, &mut items).await {
                                Ok(subs) => subscriptions = subs,
                                Err(e) => tracing::warn!(server = %config.name, "subscribing: {e}"),
                            }
                            watchdog.on_step_done(Now::now());
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
                        subscriptions = match subscribe(monitoring, &mut items).await {
                            Ok(subs) => subs,
                            Err(e) => {
                                tracing::warn!(server = %config.name, "recreating subscriptions: {e}");
                                Subscriptions::new()
                            }
                        };
                        watchdog.on_step_done(Now::now());
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
                        match resync(&session, &mut items).await {
                            Ok(online) => {
                                if let ServerEvent::Online { values, .. } = &online {
                                    stats.values.fetch_add(values.readings.len() as u64, Relaxed);
                                }
                                let _ = events.send(online).await;
                            }
                            Err(e) => {
                                // Not really up: let the ladder go on.
                                tracing::warn!(server = %config.name, "reading the current values: {e}");
                                watchdog.on_lost(Now::now());
                            }
                        }
                    }
                }
            }
            for problem in items.node_problems() {
                let _ = events.send(problem).await;
            }
            if let Some(batch) = items.changes(data, Now::now()) {
                stats.values.fetch_add(batch.readings.len() as u64, Relaxed);
                let _ = events.send(ServerEvent::Data(batch)).await;
            }
            if ended {
                reconnect = true;
            }
        }
        let _ = tokio::time::timeout(tuning.request_timeout, session.disconnect()).await;
        items.session_closed();
    }
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
