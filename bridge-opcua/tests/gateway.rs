//! End to end: an asyncua server → the gateway → a real Mosquitto → two
//! independent Python Sparkplug decoders (pysparkplug and Google's
//! protobuf runtime). DBIRTH with types, units and ranges; DDATA with the
//! server's values; DDEATH the moment the server dies and DBIRTH when it
//! is back; a DCMD written to the OPC UA node with its type.
#![cfg(feature = "mqtt")]

mod common;

use std::time::Duration;

use common::{Server, tuning};
use serde_json::{Value as Json, json};
use shopfloor_bridge_opcua::BridgeConfig;
use shopfloor_bridge_opcua::gateway::Gateway;
use shopfloor_sparkplug::mqtt::{Broker, DriverConfig};
use shopfloor_sparkplug::{EdgeNode, EdgeNodeConfig, EncodeOptions, Metric, MetricValue, Payload};
use shopfloor_testkit::{Mosquitto, PythonPeer, shared_script};

const WAIT: Duration = Duration::from_secs(30);

fn message(decoder: &PythonPeer, topic: &str, what: &str, want: impl Fn(&Json) -> bool) -> Json {
    let line = decoder.until(WAIT, |l| {
        serde_json::from_str::<Json>(l).is_ok_and(|j| j["topic"] == topic && want(&j))
    });
    let line =
        line.unwrap_or_else(|seen| panic!("no {what} on {topic} within 30 s; saw {seen:#?}"));
    serde_json::from_str(&line).unwrap()
}

fn psp_value(msg: &Json, name: &str) -> Option<Json> {
    msg["psp"].get(name).map(|m| m["value"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opcua_values_reach_sparkplug_decoders_and_dcmd_writes_back() {
    let broker = Mosquitto::start().expect("start mosquitto (apt-get install -y mosquitto)");
    let decoder = PythonPeer::spawn(
        shared_script("sparkplug_decode.py"),
        &[broker.host(), &broker.port().to_string()],
    )
    .expect("start the Python decoders");
    decoder.until(WAIT, |l| l == "subscribed").expect("the decoder subscribed");
    let mut server = Server::start(&[]);
    let pki = tempfile::tempdir().unwrap();
    let config = BridgeConfig::from_toml(&format!(
        r#"
[[server]]
name = "press-1"
endpoint = "{}"
pki_dir = "{}"
publishing_interval_ms = 100
keep_alive_count = 5

[[server.node]]
metric = "Temperature"
node_id = "nsu=urn:shopfloor:test;s=Machine1.Temperature"

[[server.node]]
metric = "Running"
browse_path = "Objects/Machine1/Running"
namespace = "urn:shopfloor:test"

[[server.node]]
metric = "Setpoint"
node_id = "nsu=urn:shopfloor:test;s=Machine1.Setpoint"
writable = true
"#,
        server.endpoint(),
        pki.path().display()
    ))
    .unwrap();
    let node = EdgeNode::new(EdgeNodeConfig::new("Plant1", "opcua-gw")).unwrap();
    let mut driver = DriverConfig::new("opcua-gw", Broker::new(broker.host(), broker.port()));
    driver.backoff_min = Duration::from_millis(50);
    let gateway = Gateway::spawn(&config, node, driver, tuning());

    let topic = |kind: &str| format!("spBv1.0/Plant1/{kind}/opcua-gw/press-1");
    let birth = message(&decoder, &topic("DBIRTH"), "DBIRTH", |_| true);
    let metrics = birth["pb"]["metrics"].as_array().unwrap();
    let temperature = metrics.iter().find(|m| m["name"] == "Temperature").unwrap();
    assert_eq!(temperature["datatype"], 10, "Double: {birth}");
    assert_eq!(
        temperature["properties"]["keys"],
        json!(["engUnit", "engLow", "engHigh"]),
        "{birth}"
    );
    let running = metrics.iter().find(|m| m["name"] == "Running").unwrap();
    assert_eq!(running["datatype"], 11, "Boolean: {birth}");
    assert_eq!(psp_value(&birth, "Temperature"), Some(json!(21.0)), "{birth}");
    assert_eq!(psp_value(&birth, "Setpoint"), Some(json!(50.0)), "{birth}");

    server.command(r#"{"set": "Temperature", "value": 77.5}"#);
    message(&decoder, &topic("DDATA"), "the new temperature", |j| {
        psp_value(j, "Temperature") == Some(json!(77.5))
    });

    // A DCMD writes the setpoint (an Int64 into a Double node).
    let dcmd = Payload {
        timestamp: Some(1),
        metrics: vec![Metric::new("Setpoint", 1, MetricValue::Int64(64))],
        ..Payload::default()
    };
    publish(&broker, &topic("DCMD"), dcmd.encode(EncodeOptions::default())).await;
    message(&decoder, &topic("DDATA"), "the written setpoint", |j| {
        psp_value(j, "Setpoint") == Some(json!(64.0))
    });
    assert_eq!(server.command(r#"{"get": "Setpoint"}"#), r#"{"value": 64.0}"#);

    // The server dies: DDEATH at once; back: DBIRTH with fresh values.
    server.peer.kill();
    message(&decoder, &topic("DDEATH"), "DDEATH", |_| true);
    server.restart();
    let again = message(&decoder, &topic("DBIRTH"), "DBIRTH again", |_| true);
    assert_eq!(
        psp_value(&again, "Temperature"),
        Some(json!(21.0)),
        "the restarted server's value: {again}"
    );
    gateway.shutdown().await;
}

/// Publishes one QoS 1 message with a plain MQTT client.
async fn publish(broker: &Mosquitto, topic: &str, payload: Vec<u8>) {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let (client, mut eventloop) =
        AsyncClient::new(MqttOptions::new("test-host", broker.host(), broker.port()), 10);
    client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await.unwrap() {
                return;
            }
        }
    })
    .await
    .expect("the broker acknowledged the DCMD");
}
