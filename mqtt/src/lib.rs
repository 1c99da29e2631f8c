#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
//!
//! # The drivers
//!
//! tokio + rumqttc drivers for [`EdgeNode`] and [`HostApplication`].
//!
//! Each driver owns a task that runs the sans-IO core: it connects (MQTT 5
//! with clean start and session expiry 0, or MQTT 3.1.1 with a clean
//! session, as Sparkplug requires), registers the core's Will, subscribes,
//! feeds every received message and deadline to the core and sends what the
//! core transmits. rumqttc's event loop is polled in a task of its own,
//! because awaiting a publish in the task that polls it deadlocks once the
//! request channel is full; and the driver drains that task's events while
//! it waits on a request, so the two channels never wait on each other.
//!
//! A lost connection is retried after a jittered backoff that doubles up to
//! a cap; the next broker of the list is tried after a failure, and after
//! the edge node's primary host went offline (the specification's
//! multi-server rule).
//!
//! ## Store and forward
//! While disconnected (or waiting for its primary host) the edge driver
//! keeps taking batches: the node stores them in its spool. After the next
//! birth it replays them as historical DATA, one message per turn of its
//! loop whenever no live data, command or broker event is waiting. DATA is
//! QoS 0, so every [`BARRIER_EVERY`] replayed messages (and at the end) the
//! driver subscribes to its NCMD topic again and, on the SUBACK, commits
//! what went before: the broker answers only after it has read everything
//! sent before on the connection (and NCMD is never retained, so the
//! repeated subscription delivers nothing). What is unconfirmed
//! when the connection drops is replayed again. A file spool is synced
//! every [`SYNC_EVERY`]. Dropped readings and store failures are logged
//! (`tracing`, target `shopfloor_mqtt`) and surface as events.
//!
//! Queues are bounded. Batches: [`EdgeDriver::publish`] waits while the
//! queue is full (back-pressure to the application). Events: when the
//! application does not read them fast enough, new ones are dropped and
//! counted ([`EdgeDriver::dropped_events`]).

mod backoff;
mod barrier;
pub mod bdseq;
mod connection;
pub mod consumer;
mod failure;
pub mod gateway;
pub mod input;
mod link;
pub mod plain;
mod retry;
pub mod section;
mod task;
mod tls;
pub mod writes;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use shopfloor_schemas::Batch;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

pub use backoff::Backoff;
use barrier::ReplayBarrier;
pub use connection::Connection;
pub use consumer::{Consumer, ConsumerConfig, ConsumerEvent, Received, Session};
pub use input::{Decoded, Input, InputCount, Inputs};
use link::{Inbound, Link};
use retry::{Heard, Retry};
pub use section::MqttSection;
/// Payload mappings ([`Input::Mapped`]): the `shopfloor-mapping` crate.
pub use shopfloor_mapping as mapping;
use shopfloor_sparkplug::edge::{EdgeEvent, EdgeNode, Now, ReplayMark};
use shopfloor_sparkplug::host::{HostApplication, HostConfig, HostEvent};
pub use task::AbortOnDrop;
pub use tls::{TlsError, tls_client_config, tls_unverified_config};

/// Replayed messages between two broker round trips that confirm them.
pub const BARRIER_EVERY: usize = 16;
/// How often the edge driver makes its spool durable.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// The MQTT protocol version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protocol {
    /// MQTT 3.1.1 (clean session).
    V311,
    /// MQTT 5 (clean start, session expiry 0).
    #[default]
    V5,
}

/// One MQTT server.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Broker {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS client configuration (rustls with the ring provider); `None` for
    /// plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// User name and password.
    pub credentials: Option<(String, String)>,
}

impl Broker {
    /// A plain-TCP broker without credentials.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self { host: host.into(), port, tls: None, credentials: None }
    }

    /// `host:port`, for logs.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// How a driver connects.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DriverConfig {
    /// Where and how it connects: the client id, the brokers (`broker`
    /// first, then the fallbacks, tried in order:
    /// [`Connection::fallback`]), the protocol and the keep-alive.
    pub connection: Connection,
    /// First retry delay after a failure.
    pub backoff_min: Duration,
    /// Largest retry delay.
    pub backoff_max: Duration,
    /// Capacity of the batch and event queues.
    pub queue: usize,
    /// An edge node's `bdSeq` is written here before every CONNECT
    /// ([`bdseq::store`]); start the node with [`bdseq::next`] of its
    /// folder so that it keeps incrementing across restarts. `None`: not
    /// kept (it starts again at the node's configured value).
    pub bd_seq_file: Option<std::path::PathBuf>,
}

impl DriverConfig {
    /// One broker, MQTT 5, 10 s keep-alive, retries from 0.5 s up to 30 s,
    /// queues of 1024.
    pub fn new(client_id: impl Into<String>, broker: Broker) -> Self {
        Self::from_connection(Connection::new(client_id, broker))
    }

    /// [`DriverConfig::new`] for `connection`: its id, brokers, protocol
    /// and keep-alive; everything else at its default.
    pub fn from_connection(connection: Connection) -> Self {
        Self {
            connection,
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            queue: 1024,
            bd_seq_file: None,
        }
    }
}

/// The driver's task has stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the Sparkplug driver has stopped")]
pub struct Stopped;

enum Control {
    Shutdown(oneshot::Sender<()>),
}

/// Runs an [`EdgeNode`] over MQTT.
#[derive(Debug)]
pub struct EdgeDriver {
    /// Where write results go (`None`: the ids are no topic levels, which
    /// `EdgeNode::new` refuses, so never in practice).
    results_topic: Option<String>,
    batches: mpsc::Sender<EdgeInput>,
    events: mpsc::Receiver<EdgeEvent>,
    control: mpsc::Sender<Control>,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

/// What an edge driver's task reports as it goes.
#[derive(Debug, Default)]
struct Shared {
    dropped_events: AtomicU64,
    online: AtomicBool,
    stored: AtomicU64,
    stored_bytes: AtomicU64,
    dropped_readings: AtomicU64,
    /// Each device, and whether it is online (the node too, and the
    /// device alive).
    devices: std::sync::Mutex<Vec<(String, bool)>>,
}

impl Shared {
    fn update(&self, node: &EdgeNode) {
        let online = node.is_online();
        {
            let mut devices =
                self.devices.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // Rebuilt only when something changed: this runs every turn.
            let same = devices.len() == node.devices().count()
                && devices
                    .iter()
                    .zip(node.devices())
                    .all(|((a, up), (b, alive))| a == b && *up == (online && alive));
            if !same {
                *devices =
                    node.devices().map(|(d, alive)| (d.to_owned(), online && alive)).collect();
            }
        }
        self.online.store(online, Ordering::Relaxed);
        self.stored.store(node.stored(), Ordering::Relaxed);
        self.stored_bytes.store(node.stored_bytes(), Ordering::Relaxed);
        self.dropped_readings.store(node.dropped(), Ordering::Relaxed);
    }
}

/// Reads an edge driver's counters ([`EdgeDriver::stats_handle`]).
#[derive(Clone, Debug)]
pub struct StatsHandle(Arc<Shared>);

impl StatsHandle {
    /// Each device of the node, and whether it is online (born, the node
    /// online too), as of the driver's last turn.
    pub fn devices(&self) -> Vec<(String, bool)> {
        self.0.devices.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The counters as of the driver's last turn.
    pub fn get(&self) -> EdgeStats {
        let s = &self.0;
        EdgeStats {
            online: s.online.load(Ordering::Relaxed),
            stored: s.stored.load(Ordering::Relaxed),
            stored_bytes: s.stored_bytes.load(Ordering::Relaxed),
            dropped_readings: s.dropped_readings.load(Ordering::Relaxed),
            dropped_events: s.dropped_events.load(Ordering::Relaxed),
        }
    }
}

/// An edge driver's counters, for logs and dashboards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EdgeStats {
    /// The node has birthed and sends live data.
    pub online: bool,
    /// Readings in the store, waiting to be sent or confirmed.
    pub stored: u64,
    /// Bytes the store holds.
    pub stored_bytes: u64,
    /// Readings dropped because the store was full.
    pub dropped_readings: u64,
    /// Events dropped because the application did not read them.
    pub dropped_events: u64,
}

impl EdgeDriver {
    /// Starts the driver on the current tokio runtime.
    pub fn spawn(node: EdgeNode, config: DriverConfig) -> Self {
        let (batch_tx, batch_rx) = mpsc::channel(config.queue.max(1));
        let (event_tx, event_rx) = mpsc::channel(config.queue.max(1));
        let (control_tx, control_rx) = mpsc::channel(1);
        let shared = Arc::new(Shared::default());
        shared.update(&node);
        let results_topic = shopfloor_schemas::TopicTemplate::parse(
            shopfloor_schemas::topic::defaults::WRITE_RESULTS,
        )
        .and_then(|t| t.render(&[("group", node.group_id()), ("edge", node.edge_node_id())]))
        .ok();
        let task =
            tokio::spawn(run_edge(node, config, batch_rx, event_tx, control_rx, shared.clone()));
        Self {
            results_topic,
            batches: batch_tx,
            events: event_rx,
            control: control_tx,
            shared,
            task,
        }
    }

    /// Publishes the outcome of a write command (a DCMD the application
    /// carried out) as JSON on
    /// `shopfloor/writes/{group}/{edge}`
    /// ([`WRITE_RESULTS`](shopfloor_schemas::topic::defaults::WRITE_RESULTS)),
    /// QoS 1, not retained, in order with the batches before it. It is not
    /// Sparkplug, so it is not stored: a result that finds the node offline
    /// is logged and dropped (whoever asked will not hear of it, as with any
    /// command sent to an offline node).
    pub async fn report_write(
        &self,
        result: &shopfloor_schemas::WriteResult,
    ) -> Result<(), Stopped> {
        let Some(topic) = &self.results_topic else { return Ok(()) };
        let p = shopfloor_sparkplug::edge::Publish {
            topic: topic.clone(),
            qos: 1,
            retain: false,
            payload: bytes::Bytes::from(result.to_json()),
        };
        self.batches.send(EdgeInput::Other(p)).await.map_err(|_| Stopped)
    }

    /// Hands a batch to the node (`source`: a device id, or `""` for the
    /// node). Waits while the queue is full.
    pub async fn publish(&self, batch: Batch) -> Result<(), Stopped> {
        self.batches.send(EdgeInput::Batch(batch)).await.map_err(|_| Stopped)
    }

    /// A device stopped answering: DDEATH (see [`EdgeNode::device_death`]),
    /// in order with the batches before it.
    pub async fn device_death(&self, device: impl Into<String>) -> Result<(), Stopped> {
        self.batches.send(EdgeInput::DeviceDeath(device.into())).await.map_err(|_| Stopped)
    }

    /// A device answers again: DBIRTH with its current values (see
    /// [`EdgeNode::device_birth`]), in order with the batches before it.
    pub async fn device_birth(&self, device: impl Into<String>) -> Result<(), Stopped> {
        self.batches.send(EdgeInput::DeviceBirth(device.into())).await.map_err(|_| Stopped)
    }

    /// Defines or redefines a device and births it with `values` (see
    /// [`EdgeNode::define_device`]), in order with the batches before it.
    pub async fn define_device(
        &self,
        device: impl Into<String>,
        specs: Vec<shopfloor_sparkplug::edge::MetricSpec>,
        values: Vec<shopfloor_schemas::Reading>,
    ) -> Result<(), Stopped> {
        self.batches
            .send(EdgeInput::DefineDevice(device.into(), specs, values))
            .await
            .map_err(|_| Stopped)
    }

    /// The next event (writes from hosts, rebirths, dropped readings).
    pub async fn next_event(&mut self) -> Option<EdgeEvent> {
        self.events.recv().await
    }

    /// Events dropped because the application did not read them.
    pub fn dropped_events(&self) -> u64 {
        self.shared.dropped_events.load(Ordering::Relaxed)
    }

    /// The counters as of the driver's last turn.
    pub fn stats(&self) -> EdgeStats {
        self.stats_handle().get()
    }

    /// A handle on the counters that can be kept and read from anywhere
    /// (a metrics endpoint, say), for as long as wanted.
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle(Arc::clone(&self.shared))
    }

    /// Takes the batches already handed to [`publish`](Self::publish),
    /// publishes NDEATH, closes the connection (without DISCONNECT, so the
    /// broker publishes the Will too; see `leave`), syncs the store and stops.
    pub async fn shutdown(self) {
        let (tx, rx) = oneshot::channel();
        if self.control.send(Control::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
        let _ = self.task.await;
    }

    /// Stops at once, like a crash: no NDEATH is sent, the broker publishes
    /// the Will when it notices. Queued batches are lost; the store keeps
    /// what it took (a file spool is released once the task is gone).
    pub fn abort(self) {
        self.task.abort();
    }
}

fn emit<T>(tx: &mpsc::Sender<T>, dropped: &AtomicU64, event: T) {
    if tx.try_send(event).is_err() {
        dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// Hands the node's events to the application, logging what an operator
/// must hear about. `true` if the node asked to disconnect.
fn emit_edge(node: &mut EdgeNode, events: &mpsc::Sender<EdgeEvent>, dropped: &AtomicU64) -> bool {
    let mut disconnect = false;
    while let Some(e) = node.poll_event() {
        match &e {
            EdgeEvent::Disconnect => disconnect = true,
            EdgeEvent::Dropped { total } => tracing::warn!(
                total,
                stored = node.stored(),
                "store full: dropped the oldest stored readings"
            ),
            EdgeEvent::StoreFailed { message } => tracing::error!("{message}"),
            EdgeEvent::ReplayStarted { stored, watched: true } => {
                tracing::info!(stored, "replaying stored readings as history");
            }
            EdgeEvent::ReplayStarted { stored, watched: false } => tracing::warn!(
                stored,
                "replaying stored readings as history with no primary host configured: \
                 a host application that is not subscribed yet misses them \
                 (set primary_host_id for store and forward)"
            ),
            EdgeEvent::WriteRefused { device, metric, reason, .. } => {
                tracing::warn!(device, metric, "write refused: {reason}");
            }
            _ => {}
        }
        emit(events, dropped, e);
    }
    disconnect
}

fn sync_store(node: &mut EdgeNode) {
    if let Err(e) = node.sync_store() {
        tracing::error!("{e}");
    }
}

async fn run_edge(
    mut node: EdgeNode,
    config: DriverConfig,
    mut batches: mpsc::Receiver<EdgeInput>,
    events: mpsc::Sender<EdgeEvent>,
    mut control: mpsc::Receiver<Control>,
    shared: Arc<Shared>,
) {
    let dropped = &shared.dropped_events;
    // The node's NCMD filter, subscribed again: its SUBACK is the replay's
    // round trip (allowed by any ACL that lets the node work; NCMD is never
    // retained, so nothing is delivered again).
    let barrier_filter = node.subscriptions().swap_remove(0);
    let mut sync = tokio::time::interval(SYNC_EVERY);
    sync.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut retry = Retry::new(&config);
    let mut done: Option<oneshot::Sender<()>> = None;
    'connections: loop {
        let b = retry.broker();
        // The bdSeq this CONNECT's Will carries, kept before it is used.
        if let Some(path) = &config.bd_seq_file
            && let Err(e) = bdseq::store(path, node.bd_seq())
        {
            tracing::warn!("{}: {e}; bdSeq will start again at 0 after a restart", path.display());
        }
        let mut link = Link::connect(&config, b, Some(node.will()));
        let mut next_broker = false;
        let mut barrier = ReplayBarrier::<ReplayMark>::new(BARRIER_EVERY);
        'session: loop {
            tokio::select! {
                biased;
                e = link.recv() => match retry.inbound(e, &mut link, &mut node).await {
                    Heard::SubAck => {
                        if let Some(m) = barrier.confirmed() {
                            node.commit_replay(m);
                        }
                    }
                    Heard::Publish(msg) => {
                        // A bad command is the host's problem; the session goes on.
                        if let Err(e) = node.handle_message(&msg, Now::now()) {
                            tracing::warn!("ignored: {e}");
                        }
                    }
                    Heard::Nothing => {}
                    Heard::Closed => break,
                },
                c = control.recv() => {
                    if let Some(Control::Shutdown(tx)) = c { done = Some(tx); }
                    take_queued(&mut node, &mut batches);
                    while let Some(p) = node.poll_transmit() {
                        if !link.publish(p).await {
                            break;
                        }
                    }
                    leave(&mut node, &mut link).await;
                    link.abort();
                    break 'connections;
                }
                b = batches.recv() => match b {
                    Some(EdgeInput::Other(p)) if node.is_online() => {
                        if !link.publish(p).await {
                            break;
                        }
                    }
                    Some(b) => take(&mut node, b),
                    None => {
                        leave(&mut node, &mut link).await;
                        sync_store(&mut node);
                        return;
                    }
                },
                _ = sync.tick() => sync_store(&mut node),
                () = std::future::ready(()), if node.replay_pending() => {
                    if let Some(p) = node.poll_replay(Now::now()) {
                        if !link.publish(p).await {
                            break;
                        }
                        barrier.replayed();
                    }
                }
            }
            while let Some(p) = node.poll_transmit() {
                if !link.publish(p).await {
                    break 'session;
                }
            }
            if barrier.due(node.replay_pending())
                && let Some(m) = node.replay_mark()
            {
                if !link.subscribe(vec![barrier_filter.clone()]).await {
                    break;
                }
                barrier.sent(m);
            }
            next_broker |= emit_edge(&mut node, &events, dropped);
            shared.update(&node);
            if next_broker {
                let _ = link.disconnect().await;
                break;
            }
        }
        link.abort();
        node.handle_disconnected();
        let _ = emit_edge(&mut node, &events, dropped);
        shared.update(&node);
        // Wait before the next attempt, still taking batches into the store.
        let until = retry.ended(next_broker);
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => continue 'connections,
                b = batches.recv() => match b {
                    Some(b) => {
                        take(&mut node, b);
                        let _ = emit_edge(&mut node, &events, dropped);
                        shared.update(&node);
                    }
                    None => { sync_store(&mut node); return; }
                },
                _ = sync.tick() => sync_store(&mut node),
                c = control.recv() => {
                    if let Some(Control::Shutdown(tx)) = c { done = Some(tx); }
                    take_queued(&mut node, &mut batches);
                    break 'connections;
                }
            }
        }
    }
    sync_store(&mut node);
    let _ = emit_edge(&mut node, &events, dropped);
    shared.update(&node);
    if let Some(tx) = done {
        let _ = tx.send(());
    }
}

/// What the application hands an edge driver, in order.
#[derive(Debug)]
enum EdgeInput {
    Batch(Batch),
    DeviceDeath(String),
    DeviceBirth(String),
    DefineDevice(
        String,
        Vec<shopfloor_sparkplug::edge::MetricSpec>,
        Vec<shopfloor_schemas::Reading>,
    ),
    /// Not Sparkplug: sent when online, dropped otherwise.
    Other(shopfloor_sparkplug::edge::Publish),
}

fn take(node: &mut EdgeNode, input: EdgeInput) {
    let result = match &input {
        EdgeInput::Batch(b) => node.publish(b, Now::now()),
        EdgeInput::DeviceDeath(d) => node.device_death(d, Now::now()),
        EdgeInput::DeviceBirth(d) => node.device_birth(d, Now::now()),
        EdgeInput::DefineDevice(d, specs, values) => {
            if let Err(e) = node.define_device(d, specs.clone(), values, Now::now()) {
                tracing::warn!("device {d} refused: {e}");
            }
            Ok(())
        }
        EdgeInput::Other(p) => {
            tracing::warn!(topic = %p.topic, "not published: the node is offline");
            Ok(())
        }
    };
    if let Err(e) = result {
        tracing::warn!("refused: {e}");
    }
}

/// Takes the batches queued before a shutdown: sent if online, else stored.
fn take_queued(node: &mut EdgeNode, batches: &mut mpsc::Receiver<EdgeInput>) {
    while let Ok(b) = batches.try_recv() {
        take(node, b);
    }
}

/// An edge node's intentional disconnect: NDEATH first, acknowledged by the
/// broker, then the socket is closed *without* a DISCONNECT packet.
///
/// MQTT 5 wants DISCONNECT to carry reason 0x04 ("with Will Message") if an
/// edge node sends one (tck-id-payloads-ndeath-will-message-publisher-
/// disconnect-mqtt50), and rumqttc 0.25 can only send 0x00, which would
/// make the broker discard the Will; MQTT 3.1.1's DISCONNECT always
/// discards it. The packet itself is optional
/// (tck-id-operational-behavior-edge-node-intentional-disconnect-packet);
/// closing the socket makes the broker publish the Will, which is what 0x04
/// asks for. Hosts see the NDEATH twice with the same bdSeq and ignore the
/// second.
async fn leave(node: &mut EdgeNode, link: &mut Link) {
    node.disconnect();
    let mut sent = 0;
    while let Some(p) = node.poll_transmit() {
        if !link.publish(p).await {
            return;
        }
        sent += 1;
    }
    if sent == 0 {
        return;
    }
    // NDEATH goes out at QoS 1: wait for its PUBACK, at most 2 s.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(e)) = link.recv().await {
            if matches!(e, Inbound::PubAck) {
                break;
            }
        }
    })
    .await;
}

/// Runs a [`HostApplication`] over MQTT: on one broker at a time, failing
/// over along the list ([`spawn`](Self::spawn)), or on every broker of the
/// list at once ([`spawn_on_every_broker`](Self::spawn_on_every_broker)).
#[derive(Debug)]
pub struct HostDriver {
    events: mpsc::Receiver<HostEvent>,
    sessions: Vec<(mpsc::Sender<Control>, JoinHandle<()>)>,
    dropped: Arc<AtomicU64>,
}

impl HostDriver {
    /// Starts the driver on the current tokio runtime: connected to one
    /// broker at a time, the next of the list after a failure.
    pub fn spawn(host: HostApplication, config: DriverConfig) -> Self {
        let (event_tx, event_rx) = mpsc::channel(config.queue.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let session = Self::session(host, config, event_tx, &dropped);
        Self { events: event_rx, sessions: vec![session], dropped }
    }

    /// Starts a host connected to every broker of `config.connection` (its
    /// `broker` and every fallback) at once, as a Sparkplug infrastructure
    /// with several MQTT servers wants its primary host: each connection
    /// publishes its own STATE birth first and keeps its own STATE timestamp
    /// (tck-id-operational-behavior-primary-application-state-with-multiple-servers-state,
    /// tck-id-operational-behavior-host-application-multi-server-timestamp).
    /// Each connection tracks the edge nodes it sees (an edge node is on
    /// one server at a time) and asks for rebirths there; the events of all
    /// of them arrive on one stream.
    pub fn spawn_on_every_broker(host: &HostConfig, config: DriverConfig) -> Self {
        let (event_tx, event_rx) = mpsc::channel(config.queue.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let sessions = config
            .connection
            .brokers()
            .map(|b| {
                let connection = Connection {
                    broker: b.clone(),
                    fallback: Vec::new(),
                    ..config.connection.clone()
                };
                let one = DriverConfig { connection, ..config.clone() };
                let app = HostApplication::new(host.clone());
                Self::session(app, one, event_tx.clone(), &dropped)
            })
            .collect();
        Self { events: event_rx, sessions, dropped }
    }

    fn session(
        host: HostApplication,
        config: DriverConfig,
        events: mpsc::Sender<HostEvent>,
        dropped: &Arc<AtomicU64>,
    ) -> (mpsc::Sender<Control>, JoinHandle<()>) {
        let (control_tx, control_rx) = mpsc::channel(1);
        let task = tokio::spawn(run_host(host, config, events, control_rx, dropped.clone()));
        (control_tx, task)
    }

    /// The next event: batches and lifecycle.
    pub async fn next_event(&mut self) -> Option<HostEvent> {
        self.events.recv().await
    }

    /// Events dropped because the application did not read them.
    pub fn dropped_events(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Publishes STATE offline, disconnects and stops (every connection).
    pub async fn shutdown(self) {
        for (control, task) in self.sessions {
            let (tx, rx) = oneshot::channel();
            if control.send(Control::Shutdown(tx)).await.is_ok() {
                let _ = rx.await;
            }
            let _ = task.await;
        }
    }
}

async fn sleep_until_opt(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

async fn run_host(
    mut host: HostApplication,
    config: DriverConfig,
    events: mpsc::Sender<HostEvent>,
    mut control: mpsc::Receiver<Control>,
    dropped: Arc<AtomicU64>,
) {
    let mut retry = Retry::new(&config);
    let mut done: Option<oneshot::Sender<()>> = None;
    'connections: loop {
        let b = retry.broker();
        let mut link = Link::connect(&config, b, host.will(Now::now()));
        'session: loop {
            tokio::select! {
                e = link.recv() => match retry.inbound(e, &mut link, &mut host).await {
                    Heard::Publish(msg) => {
                        if let Err(e) = host.handle_message(&msg, Now::now()) {
                            tracing::debug!("ignored: {e}");
                        }
                    }
                    Heard::Nothing | Heard::SubAck => {}
                    Heard::Closed => break,
                },
                () = sleep_until_opt(host.poll_timeout()) => host.handle_timeout(Now::now()),
                c = control.recv() => {
                    if let Some(Control::Shutdown(tx)) = c { done = Some(tx); }
                    host.disconnect(Now::now());
                    while let Some(p) = host.poll_transmit() {
                        if !link.publish(p).await {
                            break;
                        }
                    }
                    let _ = link.disconnect().await;
                    let _ = tokio::time::timeout(Duration::from_secs(2), async { while link.recv().await.is_some() {} }).await;
                    link.abort();
                    break 'connections;
                }
            }
            while let Some(p) = host.poll_transmit() {
                if !link.publish(p).await {
                    break 'session;
                }
            }
            while let Some(e) = host.poll_event() {
                emit(&events, &dropped, e);
            }
        }
        link.abort();
        host.handle_disconnected(Now::now());
        while let Some(e) = host.poll_event() {
            emit(&events, &dropped, e);
        }
        let until = retry.ended(false);
        tokio::select! {
            () = tokio::time::sleep_until(until) => {}
            c = control.recv() => { if let Some(Control::Shutdown(tx)) = c { done = Some(tx); } break 'connections; }
        }
    }
    if let Some(tx) = done {
        let _ = tx.send(());
    }
}
