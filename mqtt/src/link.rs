//! One MQTT connection, MQTT 3.1.1 or 5, as the drivers see it.
//!
//! rumqttc's event loop runs in a task of its own and forwards only what the
//! drivers act on. Every request (publish, subscribe, …) is awaited while
//! the link keeps draining that task's events into a backlog: otherwise a
//! full request channel and a full event channel would wait on each other.

use std::collections::VecDeque;

use tokio::sync::mpsc;

use crate::consumer::{qos4, qos5};
use crate::failure::Failure;
use crate::task::AbortOnDrop;
use crate::{Broker, DriverConfig, Protocol};
use shopfloor_sparkplug::edge::{Message, Publish};

/// What the drivers act on from the broker.
#[derive(Debug)]
pub(super) enum Inbound {
    ConnAck,
    SubAck,
    PubAck,
    Publish(Message),
}

/// The connection failed; the failure says why.
pub(super) type Received = Result<Inbound, Failure>;

enum Client {
    V5(rumqttc::v5::AsyncClient),
    V311(rumqttc::AsyncClient),
}

enum Request {
    Publish(Publish),
    Subscribe(Vec<String>),
    Disconnect,
}

/// The event loop's task, for either protocol version (its `Event` and
/// `Packet` in scope where it is used): forwards what the drivers act on,
/// stops after the first error. `topic` turns the version's topic type into
/// a `String`; `failure` classifies an error (`Failure::v5` or `v311`).
macro_rules! forward_events {
    ($eventloop:ident, $tx:ident, $topic:expr, $failure:expr) => {
        tokio::spawn(async move {
            let mut connected = false;
            loop {
                let r = match $eventloop.poll().await {
                    Ok(Event::Incoming(p)) => match p {
                        Packet::ConnAck(_) => {
                            connected = true;
                            Ok(Inbound::ConnAck)
                        }
                        Packet::SubAck(_) => Ok(Inbound::SubAck),
                        Packet::PubAck(_) => Ok(Inbound::PubAck),
                        Packet::Publish(p) => Ok(Inbound::Publish(Message {
                            topic: ($topic)(p.topic),
                            payload: p.payload,
                            retain: p.retain,
                        })),
                        _ => continue,
                    },
                    Ok(Event::Outgoing(_)) => continue,
                    Err(e) => Err(($failure)(&e, connected)),
                };
                let failed = r.is_err();
                if $tx.send(r).await.is_err() || failed {
                    break;
                }
            }
        })
    };
}

pub(super) struct Link {
    client: Client,
    incoming: mpsc::Receiver<Received>,
    backlog: VecDeque<Received>,
    poller: AbortOnDrop,
}

impl Link {
    /// Starts connecting; [`Inbound::ConnAck`] says when it is up.
    pub(super) fn connect(config: &DriverConfig, broker: &Broker, will: Option<Publish>) -> Self {
        let cap = config.queue.max(10);
        let (tx, incoming) = mpsc::channel(256);
        let (client, task) = match config.connection.protocol {
            Protocol::V5 => {
                use rumqttc::v5::mqttbytes::v5::{LastWill, Packet};
                use rumqttc::v5::{AsyncClient, Event, MqttOptions};
                let mut o =
                    MqttOptions::new(&config.connection.client_id, &broker.host, broker.port);
                o.set_keep_alive(config.connection.keep_alive);
                o.set_clean_start(true);
                o.set_session_expiry_interval(Some(0));
                // Births of large nodes are big; accept what the broker accepts.
                o.set_max_packet_size(Some(16 << 20));
                if let Some(w) = will {
                    o.set_last_will(LastWill::new(
                        w.topic,
                        w.payload.to_vec(),
                        qos5(w.qos),
                        w.retain,
                        None,
                    ));
                }
                crate::consumer::login!(o, broker);
                let (client, mut eventloop) = AsyncClient::new(o, cap);
                let task = forward_events!(
                    eventloop,
                    tx,
                    |t: bytes::Bytes| String::from_utf8_lossy(&t).into_owned(),
                    Failure::v5
                );
                (Client::V5(client), task)
            }
            Protocol::V311 => {
                use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet};
                let mut o =
                    MqttOptions::new(&config.connection.client_id, &broker.host, broker.port);
                o.set_keep_alive(config.connection.keep_alive);
                o.set_clean_session(true);
                o.set_max_packet_size(16 << 20, 16 << 20);
                if let Some(w) = will {
                    o.set_last_will(LastWill::new(
                        w.topic,
                        w.payload.to_vec(),
                        qos4(w.qos),
                        w.retain,
                    ));
                }
                crate::consumer::login!(o, broker);
                let (client, mut eventloop) = AsyncClient::new(o, cap);
                let task = forward_events!(eventloop, tx, |t: String| t, Failure::v311);
                (Client::V311(client), task)
            }
        };
        Self { client, incoming, backlog: VecDeque::new(), poller: AbortOnDrop(task) }
    }

    /// The next thing the broker said; `None` once the poller has stopped.
    /// Cancel-safe.
    pub(super) async fn recv(&mut self) -> Option<Received> {
        if let Some(r) = self.backlog.pop_front() {
            return Some(r);
        }
        self.incoming.recv().await
    }

    pub(super) async fn publish(&mut self, p: Publish) -> bool {
        self.request(Request::Publish(p)).await
    }

    /// Subscribes at QoS 1.
    pub(super) async fn subscribe(&mut self, filters: Vec<String>) -> bool {
        self.request(Request::Subscribe(filters)).await
    }

    pub(super) async fn disconnect(&mut self) -> bool {
        self.request(Request::Disconnect).await
    }

    /// Stops the poller: the socket closes without DISCONNECT.
    pub(super) fn abort(&self) {
        self.poller.abort();
    }

    /// Sends a request, draining events meanwhile. `false` when the event
    /// loop is gone.
    async fn request(&mut self, r: Request) -> bool {
        let Self { client, incoming, backlog, .. } = self;
        let send = async {
            match (client, r) {
                (Client::V5(c), Request::Publish(p)) => {
                    c.publish(p.topic, qos5(p.qos), p.retain, p.payload).await.is_ok()
                }
                (Client::V311(c), Request::Publish(p)) => {
                    c.publish_bytes(p.topic, qos4(p.qos), p.retain, p.payload).await.is_ok()
                }
                (Client::V5(c), Request::Subscribe(f)) => {
                    use rumqttc::v5::mqttbytes::v5::Filter;
                    let filters = f.into_iter().map(|f| Filter::new(f, qos5(1)));
                    c.subscribe_many(filters).await.is_ok()
                }
                (Client::V311(c), Request::Subscribe(f)) => {
                    let filters = f.into_iter().map(|f| rumqttc::SubscribeFilter::new(f, qos4(1)));
                    c.subscribe_many(filters).await.is_ok()
                }
                (Client::V5(c), Request::Disconnect) => c.disconnect().await.is_ok(),
                (Client::V311(c), Request::Disconnect) => c.disconnect().await.is_ok(),
            }
        };
        tokio::pin!(send);
        let mut open = true;
        loop {
            tokio::select! {
                ok = &mut send => return ok,
                e = incoming.recv(), if open => match e {
                    Some(e) => backlog.push_back(e),
                    None => open = false,
                },
            }
        }
    }
}
