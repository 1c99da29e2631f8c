//! A consuming connection: what ingest, alerting and the live page read
//! through, on MQTT 3.1.1 or 5.
//!
//! rumqttc's event loop is polled in a plain loop of a task of its own
//! (never raced in a `select!`, never awaiting a request): it forwards
//! what the application needs over a bounded channel, and subscribes again
//! after every CONNACK from a task of its own. The application reads
//! [`Consumer::recv`] and publishes and acks through a [`ClientHandle`].
//!
//! Every message carries the number of the connection it came on. With
//! manual acks, an ack for a message of an older connection is dropped
//! ([`Acked::Stale`]): after a reconnect the broker redelivers it, and the
//! packet id it had may belong to another message by then.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::failure::{Failure, FailureLog};
use crate::task::AbortOnDrop;
use crate::{Backoff, Broker, Connection, Protocol};

/// What the broker keeps of the session between connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Session {
    /// Nothing: a clean start (3.1.1: clean session).
    Clean,
    /// Subscriptions and QoS 1 messages, while the client is away for at
    /// most `expiry` (MQTT 5; with 3.1.1 the broker's own setting decides).
    Persistent {
        /// The session expiry interval.
        expiry: Duration,
    },
}

/// How a consumer connects and what it subscribes to.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConsumerConfig {
    /// Where and how it connects: the client id, the broker and its
    /// fallbacks (how a consumer moves along them:
    /// [`Connection::fallback`]), the protocol and the keep-alive.
    pub connection: Connection,
    /// Clean by default.
    pub session: Session,
    /// The topic filters, subscribed at QoS 1 after every CONNACK.
    pub filters: Vec<String>,
    /// Acks are sent by the application ([`ClientHandle::try_ack`]), not
    /// on receipt.
    pub manual_acks: bool,
    /// MQTT 5: at most this many unacked QoS 1 messages from the broker
    /// (with 3.1.1 the broker's own in-flight limit applies).
    pub receive_maximum: Option<u16>,
    /// Capacity of the channel to the application (and of rumqttc's
    /// request channel).
    pub queue: usize,
    /// First retry delay after a failure.
    pub backoff_min: Duration,
    /// Largest retry delay.
    pub backoff_max: Duration,
}

impl ConsumerConfig {
    /// `connection.broker`, then the fallbacks ([`Connection::brokers`]).
    pub fn brokers(&self) -> impl Iterator<Item = &Broker> {
        self.connection.brokers()
    }

    /// MQTT 5, clean start, 10 s keep-alive, automatic acks, queues of
    /// 1 000, retries from 100 ms up to 5 s.
    pub fn new(client_id: impl Into<String>, broker: Broker) -> Self {
        Self::from_connection(Connection::new(client_id, broker))
    }

    /// [`ConsumerConfig::new`] for `connection`: its id, brokers, protocol
    /// and keep-alive; everything else at its default.
    pub fn from_connection(connection: Connection) -> Self {
        Self {
            connection,
            session: Session::Clean,
            filters: Vec::new(),
            manual_acks: false,
            receive_maximum: None,
            queue: 1000,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// What a consumer's connection says, in order.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConsumerEvent {
    /// A CONNACK: connection number `connection` is up (1 for the first).
    Connected {
        /// Its number.
        connection: u64,
        /// The broker had kept the session.
        session_present: bool,
    },
    /// A message.
    Message(Received),
}

/// A message from the broker.
#[derive(Debug)]
#[non_exhaustive]
pub struct Received {
    /// The topic.
    pub topic: String,
    /// The payload.
    pub payload: Bytes,
    /// The MQTT 5 content type.
    pub content_type: Option<String>,
    /// The MQTT 5 response topic.
    pub response_topic: Option<String>,
    /// The MQTT 5 correlation data.
    pub correlation_data: Option<Bytes>,
    /// It was a retained message.
    pub retain: bool,
    /// The connection it came on.
    pub connection: u64,
    ack: Option<AckToken>,
}

impl Received {
    /// What acks it (manual acks, QoS 1); `None` when nothing must.
    /// Holds no topic or payload.
    pub fn take_ack(&mut self) -> Option<AckToken> {
        self.ack.take()
    }
}

/// Acks one message ([`ClientHandle::try_ack`]).
#[derive(Debug)]
pub struct AckToken {
    connection: u64,
    packet: AckPacket,
}

#[derive(Debug)]
enum AckPacket {
    V5(Box<rumqttc::v5::mqttbytes::v5::Publish>),
    V311(Box<rumqttc::Publish>),
}

impl AckToken {
    /// The connection the message came on.
    pub fn connection(&self) -> u64 {
        self.connection
    }
}

/// What [`ClientHandle::try_ack`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acked {
    /// Queued for the broker.
    Sent,
    /// Dropped: the message came on an older connection (the broker
    /// redelivers it).
    Stale,
}

/// rumqttc's request queue is full, or the connection task has stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the MQTT client cannot take the request now")]
pub struct Busy;

/// A message to publish.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Outgoing {
    /// The topic.
    pub topic: String,
    /// The payload.
    pub payload: Bytes,
    /// 0 or 1.
    pub qos: u8,
    /// Retained.
    pub retain: bool,
    /// MQTT 5 content type (not sent on 3.1.1).
    pub content_type: Option<String>,
    /// MQTT 5 correlation data (not sent on 3.1.1).
    pub correlation_data: Option<Bytes>,
}

impl Outgoing {
    /// A message without properties.
    pub fn new(topic: impl Into<String>, payload: impl Into<Bytes>, qos: u8, retain: bool) -> Self {
        Self {
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain,
            content_type: None,
            correlation_data: None,
        }
    }
}

impl From<shopfloor_sparkplug::edge::Publish> for Outgoing {
    fn from(p: shopfloor_sparkplug::edge::Publish) -> Self {
        Self::new(p.topic, p.payload, p.qos, p.retain)
    }
}

/// A consumer's counters.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct LinkCounters {
    /// CONNACKs: more than one means reconnects.
    pub connects: AtomicU64,
    /// SUBACKs (one per filter per connection).
    pub subscribed: AtomicU64,
    /// Failed connections and connection attempts.
    pub failures: AtomicU64,
    /// Acks dropped because their connection had gone.
    pub stale_acks: AtomicU64,
    /// Whether the consumer is connected now (a readiness probe's answer).
    pub connected: std::sync::atomic::AtomicBool,
}

#[derive(Clone, Debug)]
enum Client {
    V5(rumqttc::v5::AsyncClient),
    V311(rumqttc::AsyncClient),
}

/// Publishes and acks on a consumer's connection; cheap to clone.
#[derive(Clone, Debug)]
pub struct ClientHandle {
    client: Client,
    counters: Arc<LinkCounters>,
}

pub(crate) const fn qos5(q: u8) -> rumqttc::v5::mqttbytes::QoS {
    use rumqttc::v5::mqttbytes::QoS;
    if q == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce }
}

pub(crate) const fn qos4(q: u8) -> rumqttc::QoS {
    if q == 0 { rumqttc::QoS::AtMostOnce } else { rumqttc::QoS::AtLeastOnce }
}

fn properties5(p: &Outgoing) -> rumqttc::v5::mqttbytes::v5::PublishProperties {
    rumqttc::v5::mqttbytes::v5::PublishProperties {
        content_type: p.content_type.clone(),
        correlation_data: p.correlation_data.clone(),
        ..Default::default()
    }
}

impl ClientHandle {
    /// Publishes, waiting while rumqttc's request queue is full (never
    /// call it from where the event loop would wait on you; the consumer's
    /// own loop is elsewhere, so the application's loop may).
    pub async fn publish(&self, p: Outgoing) -> Result<(), Busy> {
        let ok = match &self.client {
            Client::V5(c) => {
                let props = properties5(&p);
                c.publish_with_properties(p.topic, qos5(p.qos), p.retain, p.payload, props)
                    .await
                    .is_ok()
            }
            Client::V311(c) => {
                c.publish_bytes(p.topic, qos4(p.qos), p.retain, p.payload).await.is_ok()
            }
        };
        if ok { Ok(()) } else { Err(Busy) }
    }

    /// Publishes if rumqttc's request queue has room.
    pub fn try_publish(&self, p: Outgoing) -> Result<(), Busy> {
        match &self.client {
            Client::V5(c) => {
                let props = properties5(&p);
                c.try_publish_with_properties(p.topic, qos5(p.qos), p.retain, p.payload, props)
                    .map_err(|_| Busy)
            }
            Client::V311(c) => {
                c.try_publish(p.topic, qos4(p.qos), p.retain, p.payload.to_vec()).map_err(|_| Busy)
            }
        }
    }

    /// Acks a message, unless it came on an older connection than the one
    /// up now (then it is dropped and counted).
    pub fn try_ack(&self, token: &AckToken) -> Result<Acked, Busy> {
        if token.connection != self.counters.connects.load(Ordering::Acquire) {
            self.counters.stale_acks.fetch_add(1, Ordering::Relaxed);
            return Ok(Acked::Stale);
        }
        match (&self.client, &token.packet) {
            (Client::V5(c), AckPacket::V5(p)) => c.try_ack(p).map_err(|_| Busy)?,
            (Client::V311(c), AckPacket::V311(p)) => c.try_ack(p).map_err(|_| Busy)?,
            // A token of another consumer: nothing this connection can ack.
            _ => return Ok(Acked::Stale),
        }
        Ok(Acked::Sent)
    }

    /// Sends DISCONNECT (a clean goodbye: no Will); the connection task
    /// stops once it is out, and [`Consumer::recv`] then gives `None`.
    pub async fn disconnect(&self) {
        match &self.client {
            Client::V5(c) => drop(c.disconnect().await),
            Client::V311(c) => drop(c.disconnect().await),
        }
    }

    /// The connection up now (0 before the first CONNACK).
    pub fn connection(&self) -> u64 {
        self.counters.connects.load(Ordering::Acquire)
    }

    /// The counters.
    pub fn counters(&self) -> &LinkCounters {
        &self.counters
    }
}

/// A consuming connection; dropping it closes the connection.
#[derive(Debug)]
pub struct Consumer {
    events: mpsc::Receiver<ConsumerEvent>,
    client: ClientHandle,
    _poller: AbortOnDrop,
}

/// The event loop's task for either protocol version (its `Event`,
/// `Packet` and client type in scope; `$options` builds a broker's options,
/// `$field` is where the event loop keeps them): forwards CONNACKs and messages,
/// counts SUBACKs, subscribes after every CONNACK from a task of its own,
/// and on an error logs why and waits a jittered backoff (rumqttc
/// reconnects on the next poll).
macro_rules! poll_loop {
    ($config:ident, $options:ident, $field:ident, $cap:expr, $tx:ident, $counters:ident,
     $failure:expr, $message:expr, $qos:expr) => {{
        let all = $config.brokers().map(|b| (b.address(), $options(b))).collect::<Vec<_>>();
        let (client, mut eventloop) = AsyncClient::new(all[0].1.clone(), $cap);
        let sub = client.clone();
        let counters = Arc::clone(&$counters);
        let task = tokio::spawn(async move {
            let mut at = 0;
            let mut broker = all[0].0.clone();
            let mut backoff = Backoff::new($config.backoff_min, $config.backoff_max);
            let mut log = FailureLog::default();
            let mut connected = false;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        connected = true;
                        counters.connected.store(true, Ordering::Release);
                        backoff.reset();
                        log.connected();
                        let connection = counters.connects.fetch_add(1, Ordering::AcqRel) + 1;
                        tracing::info!(broker, protocol = %$config.connection.protocol, connection, "MQTT connected");
                        let (c, filters) = (sub.clone(), $config.filters.clone());
                        tokio::spawn(async move {
                            for f in filters {
                                if c.subscribe(f, $qos(1)).await.is_err() {
                                    return;
                                }
                            }
                        });
                        let e = ConsumerEvent::Connected {
                            connection,
                            session_present: ack.session_present,
                        };
                        if $tx.send(e).await.is_err() {
                            return;
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        counters.subscribed.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let connection = counters.connects.load(Ordering::Acquire);
                        let m = ($message)(p, connection, $config.manual_acks);
                        if $tx.send(ConsumerEvent::Message(m)).await.is_err() {
                            return;
                        }
                    }
                    // Our DISCONNECT went out: the end, not a failure.
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    Err(e) => {
                        counters.failures.fetch_add(1, Ordering::Relaxed);
                        counters.connected.store(false, Ordering::Release);
                        log.log(&broker, ($failure)(&e, connected));
                        connected = false;
                        if all.len() > 1 {
                            // The next broker of the list, for the next attempt.
                            at = (at + 1) % all.len();
                            eventloop.$field = all[at].1.clone();
                            broker = all[at].0.clone();
                            tracing::info!(broker, "MQTT: trying the next broker of the list");
                        }
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
        });
        (client, task)
    }};
}

/// The broker's credentials and TLS on either version's `MqttOptions`.
macro_rules! login {
    ($options:ident, $broker:expr) => {
        if let Some((user, password)) = &$broker.credentials {
            $options.set_credentials(user, password);
        }
        if let Some(t) = $crate::consumer::transport(&$broker) {
            $options.set_transport(t);
        }
    };
}
pub(crate) use login;

pub(crate) fn transport(broker: &Broker) -> Option<rumqttc::Transport> {
    broker.tls.as_ref().map(|tls| {
        rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(Arc::clone(tls)))
    })
}

fn message5(mut p: rumqttc::v5::mqttbytes::v5::Publish, connection: u64, manual: bool) -> Received {
    let topic = String::from_utf8_lossy(&p.topic).into_owned();
    let payload = std::mem::take(&mut p.payload);
    let props = p.properties.take();
    let (content_type, response_topic, correlation_data) = match props {
        Some(pr) => (pr.content_type, pr.response_topic, pr.correlation_data),
        None => (None, None, None),
    };
    let retain = p.retain;
    let ack = (manual && p.qos != rumqttc::v5::mqttbytes::QoS::AtMostOnce).then(|| {
        // Only the packet id and QoS are needed to ack: let go of the
        // rest, which pins rumqttc's read buffer in memory.
        p.topic = Bytes::new();
        AckToken { connection, packet: AckPacket::V5(Box::new(p)) }
    });
    Received {
        topic,
        payload,
        content_type,
        response_topic,
        correlation_data,
        retain,
        connection,
        ack,
    }
}

fn message4(mut p: rumqttc::Publish, connection: u64, manual: bool) -> Received {
    let topic = std::mem::take(&mut p.topic);
    let payload = std::mem::take(&mut p.payload);
    let retain = p.retain;
    let ack = (manual && p.qos != rumqttc::QoS::AtMostOnce)
        .then(|| AckToken { connection, packet: AckPacket::V311(Box::new(p)) });
    Received {
        topic,
        payload,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        retain,
        connection,
        ack,
    }
}

impl Consumer {
    /// Starts connecting on the current tokio runtime; `counters` are
    /// updated as it goes (share them with a metrics endpoint).
    pub fn connect(config: ConsumerConfig, counters: Arc<LinkCounters>) -> Self {
        let (tx, events) = mpsc::channel(config.queue.max(1));
        let cap = config.queue.max(10);
        let (client, task) = match config.connection.protocol {
            Protocol::V5 => {
                use rumqttc::v5::mqttbytes::v5::Packet;
                use rumqttc::v5::{AsyncClient, Event, MqttOptions};
                let options = |b: &Broker| {
                    let mut o = MqttOptions::new(&config.connection.client_id, &b.host, b.port);
                    o.set_keep_alive(config.connection.keep_alive);
                    o.set_max_packet_size(Some(16 << 20));
                    o.set_manual_acks(config.manual_acks);
                    match config.session {
                        Session::Clean => {
                            o.set_clean_start(true);
                            o.set_session_expiry_interval(Some(0));
                        }
                        Session::Persistent { expiry } => {
                            o.set_clean_start(false);
                            let secs = u32::try_from(expiry.as_secs()).unwrap_or(u32::MAX);
                            o.set_session_expiry_interval(Some(secs));
                        }
                    }
                    if let Some(n) = config.receive_maximum {
                        o.set_receive_maximum(Some(n.max(1)));
                    }
                    login!(o, b);
                    o
                };
                let (client, task) = poll_loop!(
                    config,
                    options,
                    options,
                    cap,
                    tx,
                    counters,
                    Failure::v5,
                    message5,
                    qos5
                );
                (Client::V5(client), task)
            }
            Protocol::V311 => {
                use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
                let options = |b: &Broker| {
                    let mut o = MqttOptions::new(&config.connection.client_id, &b.host, b.port);
                    o.set_keep_alive(config.connection.keep_alive);
                    o.set_max_packet_size(16 << 20, 16 << 20);
                    o.set_manual_acks(config.manual_acks);
                    o.set_clean_session(matches!(config.session, Session::Clean));
                    login!(o, b);
                    o
                };
                let (client, task) = poll_loop!(
                    config,
                    options,
                    mqtt_options,
                    cap,
                    tx,
                    counters,
                    Failure::v311,
                    message4,
                    qos4
                );
                (Client::V311(client), task)
            }
        };
        Self { events, client: ClientHandle { client, counters }, _poller: AbortOnDrop(task) }
    }

    /// The next event; `None` once the connection task has stopped.
    /// Cancel-safe.
    pub async fn recv(&mut self) -> Option<ConsumerEvent> {
        self.events.recv().await
    }

    /// Publishes and acks on this connection.
    pub fn client(&self) -> &ClientHandle {
        &self.client
    }
}
