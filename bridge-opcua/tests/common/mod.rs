//! Helpers shared by the OPC UA bridge's integration tests.
#![allow(dead_code)]

use std::time::Duration;

use shopfloor_bridge_opcua::client::{ClientTuning, ServerEvent};
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

/// A one-server configuration for `endpoint` with these node lines.
pub(crate) fn config(endpoint: &str, pki: &std::path::Path, nodes: &str) -> ServerConfig {
    let text = format!(
        "[[server]]\nname = \"m1\"\nendpoint = \"{endpoint}\"\npki_dir = \"{}\"\n\
         publishing_interval_ms = 100\nsampling_interval_ms = 50\nkeep_alive_count = 5\n{nodes}",
        pki.display()
    );
    BridgeConfig::from_toml(&text).expect("a valid test config").servers.remove(0)
}

pub(crate) const NODES: &str = r#"
[[server.node]]
metric = "temperature"
node_id = "nsu=urn:shopfloor:test;s=Machine1.Temperature"
[[server.node]]
metric = "count"
node_id = "nsu=urn:shopfloor:test;s=Machine1.Count"
[[server.node]]
metric = "running"
browse_path = "Objects/Machine1/Running"
namespace = "urn:shopfloor:test"
[[server.node]]
metric = "profile"
node_id = "nsu=urn:shopfloor:test;s=Machine1.Profile"
[[server.node]]
metric = "id"
node_id = "nsu=urn:shopfloor:test;s=Machine1.Id"
[[server.node]]
metric = "missing"
node_id = "nsu=urn:shopfloor:test;s=Machine1.NoSuchNode"
"#;

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

/// The next event matching `pred` within `secs`, passing over others.
pub(crate) async fn until(
    rx: &mut mpsc::Receiver<ServerEvent>,
    secs: u64,
    what: &str,
    mut pred: impl FnMut(&ServerEvent) -> bool,
) -> ServerEvent {
    tokio::time::timeout(Duration::from_secs(secs), async {
        loop {
            let e = rx.recv().await.expect("the link is running");
            if pred(&e) {
                return e;
            }
            // Shown when the test fails.
            if !matches!(e, ServerEvent::Data(_)) {
                eprintln!("(passed over while waiting for {what}: {e:?})");
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {what} within {secs} s"))
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

/// The next message matching `pred` within `secs`, passing over others.
pub(crate) async fn next_msg(
    rx: &mut mpsc::UnboundedReceiver<Msg>,
    secs: u64,
    what: &str,
    mut pred: impl FnMut(&Msg) -> bool,
) -> Msg {
    tokio::time::timeout(Duration::from_secs(secs), async {
        loop {
            let m = rx.recv().await.expect("the watcher is running");
            if pred(&m) {
                return m;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {what} within {secs} s"))
}
