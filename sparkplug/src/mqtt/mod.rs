//! tokio + rumqttc drivers for [`EdgeNode`] and [`HostApplication`]
//! (feature `mqtt`).
//!
//! Each driver owns a task that runs the sans-IO core: it connects (MQTT 5,
//! clean start, session expiry 0, as Sparkplug requires), registers the
//! core's Will, subscribes, feeds every received message and deadline to the
//! core and sends what the core transmits. rumqttc's event loop is polled in
//! a task of its own, because awaiting a publish in the task that polls it
//! deadlocks once the request channel is full.
//!
//! A lost connection is retried after a jittered backoff that doubles up to
//! a cap; the next broker of the list is tried after a failure, and after
//! the edge node's primary host went offline (the specification's
//! multi-server rule). While disconnected, the edge driver keeps taking
//! batches: the core stores them and replays them as history after the next
//! birth.
//!
//! Queues are bounded. Batches: [`EdgeDriver::publish`] waits while the
//! queue is full (back-pressure to the application). Events: when the
//! application does not read them fast enough, new ones are dropped and
//! counted ([`EdgeDriver::dropped_events`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, LastWill, Packet};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions};
use rumqttc::{TlsConfiguration, Transport};
use shopfloor_schemas::Batch;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::edge::{EdgeEvent, EdgeNode, Message, Now, Publish};
use crate::host::{HostApplication, HostEvent};

/// One MQTT server.
#[derive(Clone, Debug)]
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
}

/// How a driver connects.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// The MQTT client id.
    pub client_id: String,
    /// The brokers, tried in order (the edge node is connected to one at a time).
    pub brokers: Vec<Broker>,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// First retry delay after a failure.
    pub backoff_min: Duration,
    /// Largest retry delay.
    pub backoff_max: Duration,
    /// Capacity of the batch and event queues.
    pub queue: usize,
}

impl DriverConfig {
    /// One broker, 10 s keep-alive, retries from 0.5 s up to 30 s, queues of 1024.
    pub fn new(client_id: impl Into<String>, broker: Broker) -> Self {
        Self {
            client_id: client_id.into(),
            brokers: vec![broker],
            keep_alive: Duration::from_secs(10),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            queue: 1024,
        }
    }
}

/// The driver's task has stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the Sparkplug driver has stopped")]
pub struct Stopped;

fn options(config: &DriverConfig, broker: &Broker, will: Option<Publish>) -> MqttOptions {
    let mut o = MqttOptions::new(&config.client_id, &broker.host, broker.port);
    o.set_keep_alive(config.keep_alive);
    o.set_clean_start(true);
    o.set_session_expiry_interval(Some(0));
    // Births of large nodes are big; accept what the broker accepts.
    o.set_max_packet_size(Some(16 << 20));
    if let Some(w) = will {
        o.set_last_will(LastWill::new(w.topic, w.payload.to_vec(), qos(w.qos), w.retain, None));
    }
    if let Some((user, password)) = &broker.credentials {
        o.set_credentials(user, password);
    }
    if let Some(tls) = &broker.tls {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls.clone())));
    }
    o
}

const fn qos(q: u8) -> QoS {
    if q == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce }
}

/// Aborts a task when dropped: the poller must not outlive its driver (an
/// aborted or dropped driver would otherwise leave the connection open until
/// the next keep-alive, and the broker would publish the Will only then).
struct AbortOnDrop(JoinHandle<()>);

impl AbortOnDrop {
    fn abort(&self) {
        self.0.abort();
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Polls rumqttc's event loop in a task of its own and forwards what it says.
fn spawn_poller(
    mut eventloop: EventLoop,
) -> (mpsc::Receiver<Result<Event, ConnectionError>>, AbortOnDrop) {
    let (tx, rx) = mpsc::channel(256);
    let task = tokio::spawn(async move {
        loop {
            let e = eventloop.poll().await;
            let failed = e.is_err();
            if tx.send(e).await.is_err() || failed {
                break;
            }
        }
    });
    (rx, AbortOnDrop(task))
}

/// The retry delay after `failures` consecutive failures: doubling from
/// `min`, capped at `max`, with ±25 % jitter so that a plant's gateways do
/// not reconnect in lockstep after a broker restart.
fn backoff(config: &DriverConfig, failures: u32) -> Duration {
    let base = config.backoff_min.saturating_mul(1_u32 << failures.min(16)).min(config.backoff_max);
    // Jitter from the clock's nanoseconds: no RNG needed for this.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let factor = 0.75 + f64::from(nanos % 1000) / 2000.0;
    base.mul_f64(factor)
}

async fn send_all(client: &AsyncClient, publishes: impl IntoIterator<Item = Publish>) -> bool {
    for p in publishes {
        if client.publish(p.topic, qos(p.qos), p.retain, p.payload).await.is_err() {
            return false;
        }
    }
    true
}

enum Control {
    Shutdown(oneshot::Sender<()>),
}

/// Runs an [`EdgeNode`] over MQTT.
#[derive(Debug)]
pub struct EdgeDriver {
    batches: mpsc::Sender<Batch>,
    events: mpsc::Receiver<EdgeEvent>,
    control: mpsc::Sender<Control>,
    dropped: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl EdgeDriver {
    /// Starts the driver on the current tokio runtime.
    pub fn spawn(node: EdgeNode, config: DriverConfig) -> Self {
        let (batch_tx, batch_rx) = mpsc::channel(config.queue.max(1));
        let (event_tx, event_rx) = mpsc::channel(config.queue.max(1));
        let (control_tx, control_rx) = mpsc::channel(1);
        let dropped = Arc::new(AtomicU64::new(0));
        let task =
            tokio::spawn(run_edge(node, config, batch_rx, event_tx, control_rx, dropped.clone()));
        Self { batches: batch_tx, events: event_rx, control: control_tx, dropped, task }
    }

    /// Hands a batch to the node (`source`: a device id, or `""` for the
    /// node). Waits while the queue is full.
    pub async fn publish(&self, batch: Batch) -> Result<(), Stopped> {
        self.batches.send(batch).await.map_err(|_| Stopped)
    }

    /// The next event (writes from hosts, rebirths, dropped readings).
    pub async fn next_event(&mut self) -> Option<EdgeEvent> {
        self.events.recv().await
    }

    /// Events dropped because the application did not read them.
    pub fn dropped_events(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Publishes NDEATH, closes the connection (without DISCONNECT, so the
    /// broker publishes the Will too; see `leave`) and stops.
    pub async fn shutdown(self) {
        let (tx, rx) = oneshot::channel();
        if self.control.send(Control::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
        let _ = self.task.await;
    }

    /// Stops at once, like a crash: no NDEATH is sent, the broker publishes
    /// the Will when it notices.
    pub fn abort(self) {
        self.task.abort();
    }
}

fn emit<T>(tx: &mpsc::Sender<T>, dropped: &AtomicU64, event: T) {
    if tx.try_send(event).is_err() {
        dropped.fetch_add(1, Ordering::Relaxed);
    }
}

async fn run_edge(
    mut node: EdgeNode,
    config: DriverConfig,
    mut batches: mpsc::Receiver<Batch>,
    events: mpsc::Sender<EdgeEvent>,
    mut control: mpsc::Receiver<Control>,
    dropped: Arc<AtomicU64>,
) {
    let mut broker = 0;
    let mut failures: u32 = 0;
    let mut done: Option<oneshot::Sender<()>> = None;
    'connections: loop {
        let Some(b) = config.brokers.get(broker % config.brokers.len().max(1)) else { return };
        let (client, eventloop) =
            AsyncClient::new(options(&config, b, Some(node.will())), config.queue.max(10));
        let (mut incoming, poller) = spawn_poller(eventloop);
        let mut acked = false;
        let mut next_broker = false;
        loop {
            tokio::select! {
                e = incoming.recv() => match e {
                    Some(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                        let filters = node.subscriptions().into_iter().map(|f| Filter::new(f, QoS::AtLeastOnce));
                        let c = client.clone();
                        let filters: Vec<Filter> = filters.collect();
                        tokio::spawn(async move { c.subscribe_many(filters).await });
                    }
                    Some(Ok(Event::Incoming(Packet::SubAck(_)))) if !acked => {
                        acked = true;
                        failures = 0;
                        node.handle_connected(Now::now());
                    }
                    Some(Ok(Event::Incoming(Packet::Publish(p)))) => {
                        let msg = Message { topic: String::from_utf8_lossy(&p.topic).into_owned(), payload: p.payload };
                        // A bad command is the host's problem; the session goes on.
                        let _ = node.handle_message(&msg, Now::now());
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                },
                b = batches.recv() => match b {
                    Some(b) => { let _ = node.publish(&b, Now::now()); }
                    None => {
                        leave(&mut node, &client, &mut incoming).await;
                        return;
                    }
                },
                c = control.recv() => {
                    if let Some(Control::Shutdown(tx)) = c { done = Some(tx); }
                    leave(&mut node, &client, &mut incoming).await;
                    poller.abort();
                    break 'connections;
                }
            }
            let out: Vec<Publish> = std::iter::from_fn(|| node.poll_transmit()).collect();
            if !send_all(&client, out).await {
                break;
            }
            while let Some(e) = node.poll_event() {
                next_broker |= e == EdgeEvent::Disconnect;
                emit(&events, &dropped, e);
            }
            if next_broker {
                let _ = client.disconnect().await;
                break;
            }
        }
        poller.abort();
        node.handle_disconnected();
        while let Some(e) = node.poll_event() {
            emit(&events, &dropped, e);
        }
        if !acked || next_broker {
            broker += 1;
            failures += 1;
        }
        // Wait before the next attempt, still taking batches into the store.
        let until = Instant::now() + backoff(&config, failures.saturating_sub(1));
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => continue 'connections,
                b = batches.recv() => match b {
                    Some(b) => { let _ = node.publish(&b, Now::now()); while let Some(e) = node.poll_event() { emit(&events, &dropped, e); } }
                    None => return,
                },
                c = control.recv() => { if let Some(Control::Shutdown(tx)) = c { done = Some(tx); } break 'connections; }
            }
        }
    }
    if let Some(tx) = done {
        let _ = tx.send(());
    }
}

/// An edge node's intentional disconnect: NDEATH first, acknowledged by the
/// broker, then the socket is closed *without* a DISCONNECT packet.
///
/// MQTT 5 wants DISCONNECT to carry reason 0x04 ("with Will Message") if an
/// edge node sends one (tck-id-payloads-ndeath-will-message-publisher-
/// disconnect-mqtt50), and rumqttc 0.25 can only send 0x00, which would
/// make the broker discard the Will. The packet itself is optional
/// (tck-id-operational-behavior-edge-node-intentional-disconnect-packet);
/// closing the socket makes the broker publish the Will, which is what 0x04
/// asks for. Hosts see the NDEATH twice with the same bdSeq and ignore the
/// second.
async fn leave(
    node: &mut EdgeNode,
    client: &AsyncClient,
    incoming: &mut mpsc::Receiver<Result<Event, ConnectionError>>,
) {
    node.disconnect();
    let out: Vec<Publish> = std::iter::from_fn(|| node.poll_transmit()).collect();
    let sent = out.len();
    if !send_all(client, out).await || sent == 0 {
        return;
    }
    // NDEATH goes out at QoS 1: wait for its PUBACK, at most 2 s.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(e)) = incoming.recv().await {
            if matches!(e, Event::Incoming(Packet::PubAck(_))) {
                break;
            }
        }
    })
    .await;
}

/// Runs a [`HostApplication`] over MQTT.
#[derive(Debug)]
pub struct HostDriver {
    events: mpsc::Receiver<HostEvent>,
    control: mpsc::Sender<Control>,
    dropped: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl HostDriver {
    /// Starts the driver on the current tokio runtime.
    pub fn spawn(host: HostApplication, config: DriverConfig) -> Self {
        let (event_tx, event_rx) = mpsc::channel(config.queue.max(1));
        let (control_tx, control_rx) = mpsc::channel(1);
        let dropped = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(run_host(host, config, event_tx, control_rx, dropped.clone()));
        Self { events: event_rx, control: control_tx, dropped, task }
    }

    /// The next event: batches and lifecycle.
    pub async fn next_event(&mut self) -> Option<HostEvent> {
        self.events.recv().await
    }

    /// Events dropped because the application did not read them.
    pub fn dropped_events(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Publishes STATE offline, disconnects and stops.
    pub async fn shutdown(self) {
        let (tx, rx) = oneshot::channel();
        if self.control.send(Control::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
        let _ = self.task.await;
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
    let mut broker = 0;
    let mut failures: u32 = 0;
    let mut done: Option<oneshot::Sender<()>> = None;
    'connections: loop {
        let Some(b) = config.brokers.get(broker % config.brokers.len().max(1)) else { return };
        let will = host.will(Now::now());
        let (client, eventloop) = AsyncClient::new(options(&config, b, will), config.queue.max(10));
        let (mut incoming, poller) = spawn_poller(eventloop);
        let mut acked = false;
        loop {
            tokio::select! {
                e = incoming.recv() => match e {
                    Some(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                        let filters: Vec<Filter> = host.subscriptions().into_iter().map(|f| Filter::new(f, QoS::AtLeastOnce)).collect();
                        let c = client.clone();
                        tokio::spawn(async move { c.subscribe_many(filters).await });
                    }
                    Some(Ok(Event::Incoming(Packet::SubAck(_)))) if !acked => {
                        acked = true;
                        failures = 0;
                        host.handle_connected(Now::now());
                    }
                    Some(Ok(Event::Incoming(Packet::Publish(p)))) => {
                        let msg = Message { topic: String::from_utf8_lossy(&p.topic).into_owned(), payload: p.payload };
                        let _ = host.handle_message(&msg, Now::now());
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                },
                () = sleep_until_opt(host.poll_timeout()) => host.handle_timeout(Now::now()),
                c = control.recv() => {
                    if let Some(Control::Shutdown(tx)) = c { done = Some(tx); }
                    host.disconnect(Now::now());
                    let _ = send_all(&client, std::iter::from_fn(|| host.poll_transmit())).await;
                    let _ = client.disconnect().await;
                    let _ = tokio::time::timeout(Duration::from_secs(2), async { while incoming.recv().await.is_some() {} }).await;
                    poller.abort();
                    break 'connections;
                }
            }
            let out: Vec<Publish> = std::iter::from_fn(|| host.poll_transmit()).collect();
            if !send_all(&client, out).await {
                break;
            }
            while let Some(e) = host.poll_event() {
                emit(&events, &dropped, e);
            }
        }
        poller.abort();
        host.handle_disconnected(Now::now());
        while let Some(e) = host.poll_event() {
            emit(&events, &dropped, e);
        }
        if !acked {
            broker += 1;
            failures += 1;
        }
        let until = Instant::now() + backoff(&config, failures.saturating_sub(1));
        tokio::select! {
            () = tokio::time::sleep_until(until) => {}
            c = control.recv() => { if let Some(Control::Shutdown(tx)) = c { done = Some(tx); } break 'connections; }
        }
    }
    if let Some(tx) = done {
        let _ = tx.send(());
    }
}
