//! End to end: an asyncua server → the gateway → a real Mosquitto → two
//! independent Python Sparkplug decoders (pysparkplug and Google's
//! protobuf runtime). DBIRTH with types, units and ranges; DDATA with the
//! server's values; DDEATH the moment the server dies and DBIRTH when it
//! is back; a DCMD written to the OPC UA node with its type.
#![cfg(feature = "mqtt")]

mod common;

use std::time::Duration;

use common::{Server, node, one_server, running, tuning, until, watch};
use serde_json::json;
use shopfloor_bridge_opcua::BridgeConfig;
use shopfloor_bridge_opcua::gateway::Gateway;
use shopfloor_mqtt::{Broker, DriverConfig};
use shopfloor_schemas::WriteResult;
use shopfloor_sparkplug::{EdgeNode, EdgeNodeConfig, EncodeOptions, Metric, MetricValue, Payload};
use shopfloor_testkit::Mosquitto;
use shopfloor_testkit::decoders::{SparkplugDecoders, pb_metric, psp_value};
use shopfloor_testkit::publish::publish;

const WAIT: Duration = Duration::from_secs(30);

/// The test server as `press-1`, publishing every 100 ms, with these node
/// lines.
fn press(server: &Server, pki: &std::path::Path, nodes: &str) -> BridgeConfig {
    let lines = format!("publishing_interval_ms = 100\nkeep_alive_count = 5\n{nodes}");
    one_server("press-1", &server.endpoint(), pki, &lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opcua_values_reach_sparkplug_decoders_and_dcmd_writes_back() {
    let broker = Mosquitto::start().expect("start mosquitto (apt-get install -y mosquitto)");
    let decoder = SparkplugDecoders::start(broker.host(), broker.port(), WAIT);
    let mut server = Server::start(&[]);
    let pki = tempfile::tempdir().unwrap();
    let config = press(
        &server,
        pki.path(),
        &[
            node("Temperature", "Temperature", ""),
            running("Running"),
            node("Setpoint", "Setpoint", "writable = true\n"),
            // On the allow-list here, read-only on the server.
            node("Count", "Count", "writable = true\n"),
        ]
        .concat(),
    );
    let node = EdgeNode::new(EdgeNodeConfig::new("Plant1", "opcua-gw")).unwrap();
    let mut driver = DriverConfig::new("opcua-gw", Broker::new(broker.host(), broker.port()));
    driver.backoff_min = Duration::from_millis(50);
    let gateway = Gateway::spawn(&config, node, driver, tuning());

    let topic = |kind: &str| format!("spBv1.0/Plant1/{kind}/opcua-gw/press-1");
    let birth = decoder.message(&topic("DBIRTH"), "DBIRTH", |_| true);
    let temperature = pb_metric(&birth, "Temperature");
    assert_eq!(temperature["datatype"], 10, "Double: {birth}");
    assert_eq!(
        temperature["properties"]["keys"],
        json!(["engUnit", "engLow", "engHigh"]),
        "{birth}"
    );
    let running = pb_metric(&birth, "Running");
    assert_eq!(running["datatype"], 11, "Boolean: {birth}");
    assert_eq!(psp_value(&birth, "Temperature"), Some(json!(21.0)), "{birth}");
    assert_eq!(psp_value(&birth, "Setpoint"), Some(json!(50.0)), "{birth}");

    server.command(r#"{"set": "Temperature", "value": 77.5}"#);
    decoder.message(&topic("DDATA"), "the new temperature", |j| {
        psp_value(j, "Temperature") == Some(json!(77.5))
    });

    // A DCMD writes the setpoint (an Int64 into a Double node); its
    // outcome is published, and the new value comes back as data.
    let mut results = watch(broker.host(), broker.port(), "shopfloor/writes/#").await;
    let dcmd = |metric: &str, value| Payload {
        timestamp: Some(1),
        metrics: vec![Metric::new(metric, 1, value)],
        ..Payload::default()
    };
    let results_topic = "shopfloor/writes/Plant1/opcua-gw";
    let result = |m: &common::Msg| WriteResult::from_json(&m.payload).expect("a write result");
    publish(
        &broker,
        &topic("DCMD"),
        dcmd("Setpoint", MetricValue::Int64(64)).encode(EncodeOptions::default()),
    )
    .expect("the broker took the message");
    decoder.message(&topic("DDATA"), "the written setpoint", |j| {
        psp_value(j, "Setpoint") == Some(json!(64.0))
    });
    assert_eq!(server.command(r#"{"get": "Setpoint"}"#), r#"{"value": 64.0}"#);
    let ok = result(
        &until(&mut results, 10, "the setpoint's write result", |m| m.topic == results_topic).await,
    );
    assert_eq!(
        (ok.device.as_str(), ok.metric.as_str(), ok.ok, ok.status.as_str()),
        ("press-1", "Setpoint", true, "Good")
    );

    // Not on the allow-list: refused by the gateway, with the fix.
    publish(
        &broker,
        &topic("DCMD"),
        dcmd("Temperature", MetricValue::Double(1.0)).encode(EncodeOptions::default()),
    )
    .expect("the broker took the message");
    let refused =
        result(&until(&mut results, 10, "the refusal", |m| m.topic == results_topic).await);
    assert_eq!(
        (refused.metric.as_str(), refused.ok, refused.status.as_str()),
        ("Temperature", false, "Refused")
    );
    assert!(refused.message.contains("writable = true"), "{refused:?}");
    // Allowed here, read-only on the server: the server's status code comes back.
    publish(
        &broker,
        &topic("DCMD"),
        dcmd("Count", MetricValue::Int64(3)).encode(EncodeOptions::default()),
    )
    .expect("the broker took the message");
    let denied = result(
        &until(&mut results, 10, "the server's refusal", |m| m.topic == results_topic).await,
    );
    assert_eq!((denied.metric.as_str(), denied.ok), ("Count", false), "{denied:?}");
    assert!(denied.status.starts_with("Bad"), "the OPC UA status code name: {denied:?}");
    println!("a DCMD to a read-only node: {}", denied.status);

    // The server dies: DDEATH at once; back: DBIRTH with fresh values.
    server.peer.kill();
    decoder.message(&topic("DDEATH"), "DDEATH", |_| true);
    server.restart();
    let again = decoder.message(&topic("DBIRTH"), "DBIRTH again", |_| true);
    assert_eq!(
        psp_value(&again, "Temperature"),
        Some(json!(21.0)),
        "the restarted server's value: {again}"
    );
    gateway.shutdown().await;
}

/// Plain topics: each value a one-reading JSON batch on
/// `shopfloor/{site}/{area}/{server}/{metric}`; every last value published
/// again as stale the moment the server dies, fresh ones when it is back;
/// a write on the reading's topic plus `/set`, its outcome on
/// `shopfloor/writes/…`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_topics_carry_values_stale_on_loss_and_take_writes() {
    use shopfloor_bridge_opcua::gateway::plain::{self, PlainConfig, PlainGateway};
    use shopfloor_schemas::{Batch, Codec, Quality, Reading, Timestamp, Value};

    let broker = Mosquitto::start().expect("start mosquitto (apt-get install -y mosquitto)");
    let mut server = Server::start(&[]);
    let pki = tempfile::tempdir().unwrap();
    let config = press(
        &server,
        pki.path(),
        &(node("temperature", "Temperature", "")
            + &node("setpoint", "Setpoint", "writable = true\n")),
    );
    let out = PlainConfig::new("plant1", "presses");
    plain::check(&out, &config).unwrap();
    let mut bad = config.clone();
    bad.servers[0].nodes[0].metric = "Temp/Top".into();
    assert!(plain::check(&out, &bad).unwrap_err().to_string().contains("one topic level"));

    let mut seen = watch(broker.host(), broker.port(), "shopfloor/#").await;
    let gateway = PlainGateway::spawn(
        &config,
        out,
        &Broker::new(broker.host(), broker.port()),
        "plain-opcua",
        tuning(),
    );
    let reading = |m: &common::Msg| {
        let b = Codec::Json.decode_batch(&m.payload).expect("a JSON batch");
        assert_eq!(b.source, "press-1");
        b.readings[0].clone()
    };
    let temperature = "shopfloor/plant1/presses/press-1/temperature";
    let first = until(&mut seen, 30, "the first temperature", |m| m.topic == temperature).await;
    assert_eq!((reading(&first).value, reading(&first).quality), (Value::F64(21.0), Quality::Good));

    // A write on the setpoint's topic plus /set.
    let cmd = Batch::new("operator").with(Reading::new("setpoint", Timestamp::now(), 61_i64));
    publish(
        &broker,
        "shopfloor/plant1/presses/press-1/setpoint/set",
        Codec::Json.encode_batch(&cmd).unwrap(),
    )
    .expect("the broker took the message");
    let results = "shopfloor/writes/plant1/presses";
    let r = until(&mut seen, 10, "the write result", |m| m.topic == results).await;
    let r = WriteResult::from_json(&r.payload).unwrap();
    assert_eq!((r.metric.as_str(), r.ok, r.status.as_str()), ("setpoint", true, "Good"), "{r:?}");
    until(&mut seen, 10, "the new setpoint", |m| {
        m.topic.ends_with("/setpoint") && reading(m).value == Value::F64(61.0)
    })
    .await;
    assert_eq!(server.command(r#"{"get": "Setpoint"}"#), r#"{"value": 61.0}"#);
    // A malformed command is answered, not dropped silently.
    publish(&broker, "shopfloor/plant1/presses/press-1/setpoint/set", b"{not json")
        .expect("the broker took the message");
    let r = until(&mut seen, 10, "the refusal", |m| m.topic == results).await;
    let r = WriteResult::from_json(&r.payload).unwrap();
    assert_eq!((r.ok, r.status.as_str()), (false, "Refused"), "{r:?}");

    // The server dies: its last values again, stale, at once.
    server.peer.kill();
    let stale = until(&mut seen, 10, "a stale temperature", |m| m.topic == temperature).await;
    assert_eq!(reading(&stale).quality, Quality::Stale);
    server.restart();
    let back = until(&mut seen, 30, "a good temperature again", |m| m.topic == temperature).await;
    assert_eq!(reading(&back).quality, Quality::Good);
    gateway.shutdown().await;
}

/// Publishes one QoS 1 message with a plain MQTT client.
/// 200 DCMDs to one node, 5 ms apart, to a server whose answers take
/// 0–20 ms: the server takes every write in the order the host sent it,
/// and each gets its write result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcmd_writes_reach_the_server_in_the_order_sent() {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, MqttOptions};
    const N: i64 = 200;
    let broker = Mosquitto::start().expect("start mosquitto (apt-get install -y mosquitto)");
    let mut server = Server::start(&[]);
    let pki = tempfile::tempdir().unwrap();
    let config = press(&server, pki.path(), &node("Setpoint", "Setpoint", "writable = true\n"));
    let mut watched = watch(broker.host(), broker.port(), "#").await;
    let node = EdgeNode::new(EdgeNodeConfig::new("Plant1", "opcua-gw")).unwrap();
    let driver = DriverConfig::new("opcua-gw", Broker::new(broker.host(), broker.port()));
    let gateway = Gateway::spawn(&config, node, driver, tuning());
    until(&mut watched, 30, "the DBIRTH", |m| m.topic == "spBv1.0/Plant1/DBIRTH/opcua-gw/press-1")
        .await;
    // A server whose answers take 0–20 ms: writes in flight together
    // would land in any order.
    assert_eq!(server.command(r#"{"jitter": 0.02}"#), "ok");
    let (host, mut events) =
        AsyncClient::new(MqttOptions::new("order-host", broker.host(), broker.port()), 1000);
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    for k in 0..N {
        tick.tick().await;
        let dcmd = Payload {
            timestamp: Some(1),
            metrics: vec![Metric::new("Setpoint", 1, MetricValue::Double(k as f64))],
            ..Payload::default()
        };
        let payload = dcmd.encode(EncodeOptions::default());
        host.publish("spBv1.0/Plant1/DCMD/opcua-gw/press-1", QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }
    let (mut done, mut refused) = (Vec::new(), 0);
    while done.len() + refused < N as usize {
        let m = until(&mut watched, 60, "every write result", |m| {
            m.topic.starts_with("shopfloor/writes/")
        })
        .await;
        let r = WriteResult::from_json(&m.payload).unwrap();
        if r.ok {
            done.push(r.value.parse::<f64>().unwrap());
        } else {
            assert_eq!(r.status, "Refused", "{r:?}");
            refused += 1;
        }
    }
    let applied: Vec<f64> =
        serde_json::from_str(&server.command(r#"{"writes": "Setpoint"}"#)).unwrap();
    assert_eq!(applied.len(), done.len(), "one server write per done result");
    let overtaken = applied.windows(2).filter(|w| w[0] > w[1]).count();
    assert_eq!(overtaken, 0, "writes overtook earlier ones: {applied:?}");
    assert_eq!(applied.last(), Some(&((N - 1) as f64)));
    drop(host);
    gateway.shutdown().await;
}

/// A server whose values change every 200 ms, restarted, and a host
/// asking for rebirths: per metric, the timestamps the gateway publishes never go
/// back (a birth reads current values, and the subscription's first
/// notifications, sampled earlier, came after it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_timestamps_never_go_back() {
    use shopfloor_mqtt::HostDriver;
    use shopfloor_sparkplug::{HostApplication, HostConfig, HostEvent};
    use std::collections::HashMap;
    let broker = Mosquitto::start().expect("start mosquitto (apt-get install -y mosquitto)");
    let mut server = Server::start(&["--items", "4", "--interval", "0.2"]);
    let pki = tempfile::tempdir().unwrap();
    let item = |i| node(&format!("Item{i}"), &format!("Item{i}"), "sampling_interval_ms = 100\n");
    let nodes: String = (0..4).map(item).collect();
    let config = press(&server, pki.path(), &nodes);
    let mut host = HostDriver::spawn(
        HostApplication::new(HostConfig::new("scada")),
        DriverConfig::new("scada", Broker::new(broker.host(), broker.port())),
    );
    let node = EdgeNode::new(EdgeNodeConfig::new("Plant1", "opcua-gw")).unwrap();
    let driver = DriverConfig::new("opcua-gw", Broker::new(broker.host(), broker.port()));
    let gateway = Gateway::spawn(&config, node, driver, tuning());
    let rebirth = Payload {
        timestamp: Some(1),
        metrics: vec![Metric::new("Node Control/Rebirth", 1, MetricValue::Boolean(true))],
        ..Payload::default()
    };
    let mut last: HashMap<String, u64> = HashMap::new();
    let (mut births, mut readings, mut back) = (0, 0, Vec::new());
    for _ in 0..4 {
        let until = tokio::time::Instant::now() + Duration::from_millis(1500);
        while let Ok(Some(e)) = tokio::time::timeout_at(until, host.next_event()).await {
            match e {
                HostEvent::DeviceOnline { .. } => births += 1,
                HostEvent::Data(b) if b.source == "Plant1/opcua-gw/press-1" => {
                    for r in &b.readings {
                        readings += 1;
                        let t = r.timestamp.unix_ms();
                        let prev = last.insert(r.metric.to_string(), t);
                        if prev.is_some_and(|p| t < p) {
                            back.push((r.metric.to_string(), prev, t));
                        }
                    }
                }
                _ => {}
            }
        }
        // A rebirth from the host (the values the node holds), and a
        // server restart (a Read of its values, then the subscription's).
        publish(&broker, "spBv1.0/Plant1/NCMD/opcua-gw", rebirth.encode(EncodeOptions::default()))
            .expect("the broker took the message");
        server.restart();
    }
    assert!(births >= 6 && readings >= 40, "{births} births, {readings} readings");
    assert!(back.is_empty(), "timestamps went back ({} times): {back:?}", back.len());
    host.shutdown().await;
    gateway.shutdown().await;
}
