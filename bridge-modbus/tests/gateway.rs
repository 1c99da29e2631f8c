//! End to end: a pymodbus device → the gateway → a real Mosquitto → two
//! independent Python Sparkplug decoders (pysparkplug and Google's protobuf
//! runtime). DBIRTH with types and units, DDATA with the values pymodbus
//! holds, DDEATH when the device dies and DBIRTH when it is back, and a DCMD
//! written to the device.
#![cfg(feature = "mqtt")]

use std::time::Duration;

use shopfloor_bridge_modbus::RegisterMap;
use shopfloor_bridge_modbus::gateway::{Gateway, edge_node_config};
use shopfloor_mqtt::{Broker, DriverConfig};
use shopfloor_schemas::WriteResult;
use shopfloor_sparkplug::{EdgeNode, EncodeOptions, Metric, MetricValue, Payload};
use shopfloor_testkit::Mosquitto;
use shopfloor_testkit::decoders::{SparkplugDecoders, pb_metric, psp_value};
use shopfloor_testkit::publish::publish;

mod common;
use common::Device;

const WAIT: Duration = Duration::from_secs(20);

/// The setpoint the DCMD tests write: a writable `i16` at register 30.
const SETPOINT: &str = "[[device.tag]]\nname = \"Setpoint\"\narea = \"holding_register\"\naddress = 30\ntype = \"i16\"\nwritable = true\n";

/// A tank's level (f32, with unit and range), its pump's running coil and
/// its speed (scaled i16, writable).
fn tags() -> &'static str {
    include_str!("fixtures/tank_tags.toml")
}

/// The Sparkplug gateway for `map`, edge node Plant1/modbus-gw on `broker`.
fn spawn_gateway(map: &RegisterMap, broker: &Mosquitto) -> Gateway {
    let node = EdgeNode::new(edge_node_config(map, "Plant1", "modbus-gw")).unwrap();
    Gateway::spawn(
        map,
        node,
        DriverConfig::new("modbus-gw", Broker::new(broker.host(), broker.port())),
    )
}

/// A DCMD that sets the "Setpoint" of [`SETPOINT`] to `v`.
fn setpoint_dcmd(v: i16) -> Vec<u8> {
    Payload {
        timestamp: Some(1),
        metrics: vec![Metric::new("Setpoint", 1, MetricValue::Int16(v))],
        ..Payload::default()
    }
    .encode(EncodeOptions::default())
}

/// The next write result, within [`WAIT`]; it must come on `topic`.
async fn next_write_result(events: &mut rumqttc::v5::EventLoop, topic: &str) -> WriteResult {
    use rumqttc::v5::Event;
    use rumqttc::v5::mqttbytes::v5::Packet;
    tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = events.poll().await.unwrap()
                && p.topic.starts_with(b"shopfloor/writes/")
            {
                assert_eq!(p.topic, topic);
                return WriteResult::from_json(&p.payload).unwrap();
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no write result on {topic} within 20 s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_values_reach_sparkplug_decoders_and_dcmd_writes_back() {
    let broker = Mosquitto::start().expect("start mosquitto");
    let decoder = SparkplugDecoders::start(broker.host(), broker.port(), WAIT);

    let mut dev = Device::start();
    let port = dev.port;
    dev.set("h", 10, "f32", "CDAB", "7.25");
    dev.set("c", 3, "bool", "AB", "true");
    dev.set("h", 20, "i16", "AB", "3000");
    // A device slower than the broker: its first read completes well after
    // the edge node is connected (a birth at connect would carry nulls).
    assert_eq!(dev.cmd(r#"{"delay": 0.15}"#), "ok");
    let map = dev.map("tank-1", &format!("timeout_ms = 300\n{}", tags()));
    let node = EdgeNode::new(edge_node_config(&map, "Plant1", "modbus-gw")).unwrap();
    let mut driver = DriverConfig::new("modbus-gw", Broker::new(broker.host(), broker.port()));
    driver.backoff_min = Duration::from_millis(50);
    let gateway = Gateway::spawn(&map, node, driver);

    // The DBIRTH names every tag with its type and unit.
    let birth = decoder.message("spBv1.0/Plant1/DBIRTH/modbus-gw/tank-1", "DBIRTH", |_| true);
    let level = pb_metric(&birth, "Tank/Level");
    assert_eq!(level["datatype"], 9, "Float: {birth}");
    assert_eq!(level["properties"]["keys"], serde_json::json!(["engUnit", "engLow", "engHigh"]));
    let speed = pb_metric(&birth, "Pump/Speed");
    assert_eq!(speed["datatype"], 10, "scaled, so Double: {birth}");
    // The birth waited for the first complete read: current values, no nulls.
    assert_eq!(psp_value(&birth, "Tank/Level"), Some(serde_json::json!(7.25)), "{birth}");
    assert_eq!(psp_value(&birth, "Pump/Running"), Some(serde_json::json!(true)), "{birth}");
    assert_eq!(psp_value(&birth, "Pump/Speed"), Some(serde_json::json!(1500.0)), "{birth}");

    assert_eq!(dev.cmd(r#"{"delay": 0}"#), "ok");
    // (The values pymodbus holds were in the birth: nothing changed, so
    // no DDATA follows until something does.)

    // A DCMD from a host writes the pump speed (1000 rpm is raw 2000).
    let dcmd = Payload {
        timestamp: Some(1),
        metrics: vec![Metric::new("Pump/Speed", 1, MetricValue::Double(1000.0))],
        ..Payload::default()
    };
    publish(&broker, "spBv1.0/Plant1/DCMD/modbus-gw/tank-1", dcmd.encode(EncodeOptions::default()))
        .expect("the broker took the message");
    decoder.message("spBv1.0/Plant1/DDATA/modbus-gw/tank-1", "the written speed", |j| {
        psp_value(j, "Pump/Speed") == Some(serde_json::json!(1000.0))
    });
    assert_eq!(dev.get("h", 20, 1), [2000]);

    // The device dies: DDEATH; it comes back: DBIRTH, then its values.
    dev.peer.kill();
    decoder.message("spBv1.0/Plant1/DDEATH/modbus-gw/tank-1", "DDEATH", |_| true);
    let mut dev = Device::on(port);
    dev.set("h", 10, "f32", "CDAB", "8.5");
    // Born again with values read after its return, none null.
    let again = decoder.message("spBv1.0/Plant1/DBIRTH/modbus-gw/tank-1", "DBIRTH again", |_| true);
    for name in ["Tank/Level", "Pump/Running", "Pump/Speed"] {
        assert!(psp_value(&again, name).is_some_and(|v| !v.is_null()), "{name}: {again}");
    }
    // The level set after its return: in that birth, or in DATA after it.
    if psp_value(&again, "Tank/Level") != Some(serde_json::json!(8.5)) {
        decoder.message("spBv1.0/Plant1/DDATA/modbus-gw/tank-1", "the new level", |j| {
            psp_value(j, "Tank/Level") == Some(serde_json::json!(8.5))
        });
    }
    drop(dev);
    gateway.shutdown().await;
}

/// 260 DCMDs to one register, 5 ms apart: the device applies every write
/// in the order the host sent it (a task per command let a few in a few
/// hundred overtake each other), and each gets its write result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcmd_writes_reach_the_device_in_the_order_sent() {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    const N: i32 = 260;
    let broker = Mosquitto::start().expect("start mosquitto");
    let mut dev = Device::start();
    let map = dev.map("press-1", &format!("timeout_ms = 500\n{SETPOINT}"));
    let (host, mut events) =
        AsyncClient::new(MqttOptions::new("order-host", broker.host(), broker.port()), 1000);
    host.subscribe("shopfloor/writes/Plant1/modbus-gw", QoS::AtLeastOnce).await.unwrap();
    let gateway = spawn_gateway(&map, &broker);
    // The device is born (its DBIRTH) before the host writes.
    host.subscribe("spBv1.0/Plant1/DBIRTH/modbus-gw/press-1", QoS::AtLeastOnce).await.unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = events.poll().await.unwrap()
                && p.topic.ends_with(b"DBIRTH/modbus-gw/press-1")
            {
                return;
            }
        }
    })
    .await
    .expect("a DBIRTH");
    let sender = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        for k in 0..N {
            tick.tick().await;
            let dcmd = setpoint_dcmd(k as i16);
            host.publish("spBv1.0/Plant1/DCMD/modbus-gw/press-1", QoS::AtLeastOnce, false, dcmd)
                .await
                .unwrap();
        }
        host
    });
    // Every write answered: done, or refused for a full queue.
    let mut done = Vec::new();
    let mut refused = 0;
    tokio::time::timeout(Duration::from_secs(60), async {
        while done.len() + refused < N as usize {
            let r = next_write_result(&mut events, "shopfloor/writes/Plant1/modbus-gw").await;
            if r.ok {
                done.push(r.value.parse::<i64>().unwrap());
            } else {
                assert_eq!(r.status, "Refused", "{r:?}");
                refused += 1;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} done and {refused} refused of {N} within 60 s", done.len()));
    let _host = sender.await.unwrap();
    let applied: Vec<i64> = serde_json::from_str(&dev.cmd(r#"{"writes": 30}"#)).unwrap();
    assert_eq!(applied.len(), done.len(), "one device write per done result");
    let mut sorted = applied.clone();
    sorted.sort_unstable();
    let overtaken = applied.windows(2).filter(|w| w[0] > w[1]).count();
    assert_eq!(applied, sorted, "{overtaken} writes overtook an earlier one: {applied:?}");
    assert_eq!(applied.last(), Some(&i64::from(N - 1)), "the last setpoint sent is the one held");
    assert_eq!(dev.get("h", 30, 1), [i64::from(N - 1)]);
    gateway.shutdown().await;
}

/// A DCMD left retained on the broker (a host that published with the
/// retain flag, hours ago) reaches the gateway when it subscribes: it is
/// refused with a write result and the register keeps its value; the
/// same command sent live is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_dcmd_is_refused_and_never_written() {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, MqttOptions};
    let broker = Mosquitto::start().expect("start mosquitto");
    let mut dev = Device::start();
    dev.set("h", 30, "i16", "AB", "11");
    let map = dev.map("press-1", SETPOINT);
    let topic = "spBv1.0/Plant1/DCMD/modbus-gw/press-1";
    let (host, mut events) =
        AsyncClient::new(MqttOptions::new("retain-host", broker.host(), broker.port()), 100);
    host.subscribe("shopfloor/writes/#", QoS::AtLeastOnce).await.unwrap();
    host.publish(topic, QoS::AtLeastOnce, true, setpoint_dcmd(77)).await.unwrap();
    let gateway = spawn_gateway(&map, &broker);
    let refused = next_write_result(&mut events, "shopfloor/writes/Plant1/modbus-gw").await;
    assert!(!refused.ok && refused.status == "Refused", "{refused:?}");
    assert!(refused.message.contains("retained"), "{refused:?}");
    assert_eq!(dev.get("h", 30, 1), [11], "the retained setpoint was not written");
    host.publish(topic, QoS::AtLeastOnce, false, setpoint_dcmd(5)).await.unwrap();
    let done = next_write_result(&mut events, "shopfloor/writes/Plant1/modbus-gw").await;
    assert!(done.ok, "{done:?}");
    assert_eq!(dev.get("h", 30, 1), [5]);
    gateway.shutdown().await;
}

/// Plain topics: each reading a one-reading JSON batch on its own topic,
/// with its content type; a write on the topic plus `/set`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_topics_carry_each_reading_and_take_writes() {
    use rumqttc::v5::Event;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
    use shopfloor_bridge_modbus::gateway::plain::{PlainConfig, PlainGateway};
    use shopfloor_schemas::{Batch, Codec, Reading, Timestamp, Value};

    let broker = Mosquitto::start().expect("start mosquitto");
    let mut dev = Device::start();
    dev.set("h", 10, "f32", "CDAB", "3.5");
    let map = dev.map(
        "tank-1",
        "timeout_ms = 300\n\
         [[device.tag]]\nname = \"level\"\narea = \"holding_register\"\naddress = 10\ntype = \"f32\"\norder = \"CDAB\"\n\
         [[device.tag]]\nname = \"speed\"\narea = \"holding_register\"\naddress = 20\ntype = \"u16\"\nwritable = true\n",
    );
    let config = PlainConfig::new("plant1", "tanks");
    shopfloor_bridge_modbus::gateway::plain::check(&config, &map).unwrap();
    let mut bad = map.clone();
    bad.devices[0].tags[0].name = "Tank/Level".into();
    assert!(
        shopfloor_bridge_modbus::gateway::plain::check(&config, &bad)
            .unwrap_err()
            .to_string()
            .contains("one topic level")
    );

    let (client, mut events) = subscribed(&broker, "watcher", "shopfloor/plant1/tanks/#").await;
    // Write results, on their own connection.
    let (_results, mut results_events) = subscribed(&broker, "results", "shopfloor/writes/#").await;
    let props = PublishProperties {
        content_type: Some("application/json".into()),
        ..PublishProperties::default()
    };
    // A retained write command, left on the broker before the gateway
    // starts: refused with a write result, never written.
    let stale = Batch::new("operator").with(Reading::new("speed", Timestamp::now(), 999_i64));
    client
        .publish_with_properties(
            "shopfloor/plant1/tanks/tank-1/speed/set",
            QoS::AtLeastOnce,
            true,
            Codec::Json.encode_batch(&stale).unwrap(),
            props.clone(),
        )
        .await
        .unwrap();
    // Retained at the broker before the gateway subscribes: otherwise it
    // reaches the gateway as a live (not retained) message.
    tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::PubAck(_)) = events.poll().await.unwrap() {
                return;
            }
        }
    })
    .await
    .expect("the broker took the retained command within 20 s");
    let gateway =
        PlainGateway::spawn(&map, config, &Broker::new(broker.host(), broker.port()), "plain-gw");
    next(&mut events, "shopfloor/plant1/tanks/tank-1/level", Value::F64(3.5)).await;
    let refused = next_write_result(&mut results_events, "shopfloor/writes/plant1/tanks").await;
    assert_eq!(
        (refused.metric.as_str(), refused.ok, refused.status.as_str()),
        ("speed", false, WriteResult::REFUSED),
        "{refused:?}"
    );
    assert!(refused.message.contains("retained"), "{refused:?}");
    assert_ne!(dev.get("h", 20, 1), [999], "a retained command is never written");
    let cmd = Batch::new("operator").with(Reading::new("speed", Timestamp::now(), 1234_i64));
    client
        .publish_with_properties(
            "shopfloor/plant1/tanks/tank-1/speed/set",
            QoS::AtLeastOnce,
            false,
            Codec::Json.encode_batch(&cmd).unwrap(),
            props,
        )
        .await
        .unwrap();
    next(&mut events, "shopfloor/plant1/tanks/tank-1/speed", Value::I64(1234)).await;
    assert_eq!(dev.get("h", 20, 1), [1234]);
    let result = next_write_result(&mut results_events, "shopfloor/writes/plant1/tanks").await;
    assert_eq!(
        (result.device.as_str(), result.metric.as_str(), result.ok, result.status.as_str()),
        ("tank-1", "speed", true, "Good"),
        "{result:?}"
    );
    gateway.shutdown().await;
}

/// A client of `broker` named `id`, subscribed to `filter` (its SUBACK in).
async fn subscribed(
    broker: &Mosquitto,
    id: &str,
    filter: &str,
) -> (rumqttc::v5::AsyncClient, rumqttc::v5::EventLoop) {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let (client, mut events) =
        AsyncClient::new(MqttOptions::new(id, broker.host(), broker.port()), 10);
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.unwrap() {
            return (client, events);
        }
    }
}

/// The next plain reading on `topic` whose value is `want`.
async fn next(
    events: &mut rumqttc::v5::EventLoop,
    topic: &'static str,
    want: shopfloor_schemas::Value,
) {
    use rumqttc::v5::Event;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use shopfloor_schemas::Codec;
    tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = events.poll().await.unwrap()
                && p.topic == topic
            {
                let ct = p.properties.as_ref().and_then(|x| x.content_type.as_deref());
                assert_eq!(ct, Some("application/json"));
                let b = Codec::Json.decode_batch(&p.payload).unwrap();
                assert_eq!(b.source, "tank-1");
                if b.readings[0].value == want {
                    return;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {want:?} on {topic} within 20 s"));
}
