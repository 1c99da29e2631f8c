//! Helpers shared by the OPC UA bridge's integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use shopfloor_bridge_opcua::client::{ClientTuning, ServerEvent, ServerLink};
use shopfloor_bridge_opcua::{BridgeConfig, ServerConfig};
use shopfloor_testkit::{PythonPeer, free_port, shared_script};
use tokio::sync::mpsc;

/// The asyncua test server (testkit/python/opcua_server.py) on a free port.
pub(crate) struct Server {
    pub(crate) peer: PythonPeer,
    pub(crate) port: u16,
    args: Vec<String>,
}

impl Server {
    pub(crate) fn start(args: &[&str]) -> Self {
        let port = free_port().expect("a free port");
        Self::start_on(port, args)
    }

    pub(crate) fn start_on(port: u16, args: &[&str]) -> Self {
        let mut all = vec![port.to_string()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let peer = PythonPeer::spawn(shared_script("opcua_server.py"), &refs)
            .expect("start the asyncua server (scripts/test makes the .venv with asyncua)");
        peer.until(Duration::from_secs(30), |l| l == "ready")
            .unwrap_or_else(|seen| panic!("the asyncua server did not start: {seen:?}"));
        Self { peer, port, args: args.iter().map(|a| (*a).to_owned()).collect() }
    }

    /// Kills it (SIGKILL) and starts it again on the same port.
    pub(crate) fn restart(&mut self) {
        self.peer.kill();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        *self = Self::start_on(self.port, &args);
    }

    /// Sends a command and waits for its answer.
    pub(crate) fn command(&mut self, json: &str) -> String {
        self.peer.send(json).expect("the server's stdin");
        self.peer.line(Duration::from_secs(10)).expect("an answer from the asyncua server")
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("opc.tcp://localhost:{}/", self.port)
    }
}

/// A configuration of one server, `name` at `endpoint` (its keypair in
/// `pki`), with these lines: its settings, then its `[[server.node]]`
/// tables.
pub(crate) fn one_server(name: &str, endpoint: &str, pki: &Path, lines: &str) -> BridgeConfig {
    let text = format!(
        "[[server]]\nname = \"{name}\"\nendpoint = \"{endpoint}\"\npki_dir = \"{}\"\n{lines}",
        pki.display()
    );
    BridgeConfig::from_toml(&text).expect("a valid test config")
}

/// Server `m1` at `endpoint`, fast, with these node lines.
pub(crate) fn config(endpoint: &str, pki: &Path, nodes: &str) -> ServerConfig {
    let lines = format!(
        "publishing_interval_ms = 100\nsampling_interval_ms = 50\nkeep_alive_count = 5\n{nodes}"
    );
    one_server("m1", endpoint, pki, &lines).servers.remove(0)
}

/// A `[[server.node]]` table: the test server's variable `Machine1.{name}`
/// as `metric`, then `more` lines (`writable = true\n`).
pub(crate) fn node(metric: &str, name: &str, more: &str) -> String {
    format!(
        "[[server.node]]\nmetric = \"{metric}\"\nnode_id = \"nsu=urn:shopfloor:test;s=Machine1.{name}\"\n{more}"
    )
}

/// The test server's `Machine1.Running` by its browse path, as `metric`.
pub(crate) fn running(metric: &str) -> String {
    format!(
        "[[server.node]]\nmetric = \"{metric}\"\n\
         browse_path = \"Objects/Machine1/Running\"\nnamespace = \"urn:shopfloor:test\"\n"
    )
}

/// Every kind of node the test server has, by NodeId and by browse path;
/// `id` (a NodeId-typed value) cannot be bridged and `missing` does not
/// exist.
pub(crate) fn nodes() -> String {
    [
        node("temperature", "Temperature", ""),
        node("count", "Count", ""),
        running("running"),
        node("profile", "Profile", ""),
        node("id", "Id", ""),
        node("missing", "NoSuchNode", ""),
    ]
    .concat()
}

/// Fast timeouts for tests.
pub(crate) fn tuning() -> ClientTuning {
    ClientTuning {
        keep_alive_interval: Duration::from_secs(1),
        request_timeout: Duration::from_secs(2),
        retry_initial: Duration::from_millis(200),
        retry_max: Duration::from_secs(1),
        node_check: Duration::from_secs(1),
    }
}

/// What [`until`] waits on: a link's events, a watcher's messages.
pub(crate) trait Inbox {
    /// What comes in.
    type Item;

    /// The next item (there is one: the sender runs as long as the test).
    async fn next(&mut self) -> Self::Item;

    /// Tells of an item passed over while waiting for `what`.
    fn passed(_item: &Self::Item, _what: &str) {}
}

impl Inbox for mpsc::Receiver<ServerEvent> {
    type Item = ServerEvent;

    async fn next(&mut self) -> ServerEvent {
        self.recv().await.expect("the link is running")
    }

    fn passed(e: &ServerEvent, what: &str) {
        // Shown when the test fails.
        if !matches!(e, ServerEvent::Data(_)) {
            eprintln!("(passed over while waiting for {what}: {e:?})");
        }
    }
}

impl Inbox for mpsc::UnboundedReceiver<Msg> {
    type Item = Msg;

    async fn next(&mut self) -> Msg {
        self.recv().await.expect("the watcher is running")
    }
}

/// The next item matching `pred` within `secs`, passing over others.
pub(crate) async fn until<I: Inbox>(
    inbox: &mut I,
    secs: u64,
    what: &str,
    mut pred: impl FnMut(&I::Item) -> bool,
) -> I::Item {
    tokio::time::timeout(Duration::from_secs(secs), async {
        loop {
            let x = inbox.next().await;
            if pred(&x) {
                return x;
            }
            I::passed(&x, what);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {what} within {secs} s"))
}

/// The next birth (`Online`) within `secs`.
pub(crate) async fn birth(
    rx: &mut mpsc::Receiver<ServerEvent>,
    secs: u64,
    what: &str,
) -> ServerEvent {
    until(rx, secs, what, |e| matches!(e, ServerEvent::Online { .. })).await
}

/// A link for `config` with the tests' [`tuning`], and its events.
pub(crate) fn spawn_link(config: ServerConfig) -> (ServerLink, mpsc::Receiver<ServerEvent>) {
    let (tx, rx) = mpsc::channel(10_000);
    (ServerLink::spawn(config, tuning(), tx), rx)
}

/// A server started with `args` and a link to it for [`nodes`], its
/// events, and the folder with the link's keypair (keep it while the link
/// runs); returns once the server's birth is in.
pub(crate) async fn linked(
    args: &[&str],
) -> (Server, ServerLink, mpsc::Receiver<ServerEvent>, tempfile::TempDir) {
    let server = Server::start(args);
    let pki = tempfile::tempdir().expect("a temporary folder");
    let (link, mut rx) = connect(&server.endpoint(), pki.path(), &nodes());
    birth(&mut rx, 30, "the birth").await;
    (server, link, rx, pki)
}

/// A link to the server at `endpoint` for these node lines (its keypair
/// in `pki`), and its events.
pub(crate) fn connect(
    endpoint: &str,
    pki: &Path,
    nodes: &str,
) -> (ServerLink, mpsc::Receiver<ServerEvent>) {
    spawn_link(config(endpoint, pki, nodes))
}

/// A message a [`watch`] subscriber received.
#[derive(Debug)]
pub(crate) struct Msg {
    pub(crate) topic: String,
    pub(crate) payload: Vec<u8>,
}

/// Subscribes to `filter` on the broker at `host:port` and hands every
/// message over; returns once the broker confirmed the subscription.
pub(crate) async fn watch(host: &str, port: u16, filter: &str) -> mpsc::UnboundedReceiver<Msg> {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let mut o = MqttOptions::new(format!("watch-{}", free_port().unwrap_or(0)), host, port);
    o.set_max_packet_size(Some(16 << 20));
    let (client, mut eventloop) = AsyncClient::new(o, 100);
    client.subscribe(filter, QoS::AtLeastOnce).await.expect("subscribe");
    let (tx, rx) = mpsc::unbounded_channel();
    let (subscribed, acked) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _client = client;
        let mut subscribed = Some(subscribed);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(s) = subscribed.take() {
                        let _ = s.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    if tx.send(Msg { topic, payload: p.payload.to_vec() }).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("the watcher lost the broker: {e}"),
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), acked)
        .await
        .expect("the broker confirmed the subscription in 10 s")
        .expect("the watcher runs");
    rx
}
