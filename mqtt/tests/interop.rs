//! Interop with independent Sparkplug implementations through a real
//! Mosquitto: pysparkplug as an edge node in front of our host, and our edge
//! node in front of two Python decoders (Google's protobuf runtime with the
//! official schema, and pysparkplug's typed decoding).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value as Json;
use shopfloor_mqtt::EdgeDriver;
use shopfloor_schemas::{Batch, Quality, Reading, Timestamp, Value};
use shopfloor_sparkplug::edge::MetricSpec;
use shopfloor_sparkplug::host::RebirthReason;
use shopfloor_sparkplug::{DataType, EdgeNode, EdgeNodeConfig, HostEvent, SignedEncoding};
use shopfloor_testkit::{Mosquitto, PythonPeer};
use tokio::time::timeout;

mod support;
use support::{WAIT, config, host_event, scada};

fn peer_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers").join(name)
}

/// A broker, and the Python decoders subscribed to all its Sparkplug traffic.
fn broker_with_decoders() -> (Mosquitto, PythonPeer) {
    let broker = Mosquitto::start().expect("start mosquitto");
    let decoder = PythonPeer::spawn(
        shopfloor_testkit::shared_script("sparkplug_decode.py"),
        &[broker.host(), &broker.port().to_string()],
    )
    .expect("start the Python decoders");
    decoder.until(WAIT, |l| l == "subscribed").expect("the decoder subscribed");
    (broker, decoder)
}

/// The next message the decoders print whose line holds `topic`, as JSON.
fn decoded(decoder: &PythonPeer, topic: &str, what: &str) -> Json {
    decoder
        .until(WAIT, |l| l.contains(topic))
        .map(|l| serde_json::from_str(&l).unwrap())
        .unwrap_or_else(|seen| panic!("no {what}: {seen:#?}"))
}

/// Our edge node `Interop/{node}`, no metrics of its own, starting at `bd_seq`.
fn bare_edge(node: &str, bd_seq: u8, broker: &Mosquitto) -> EdgeDriver {
    let mut c = EdgeNodeConfig::new("Interop", node);
    c.bd_seq = bd_seq;
    EdgeDriver::spawn(EdgeNode::new(c).unwrap(), config(node, broker))
}

fn value_of(batch: &Batch, metric: &str) -> Value {
    batch
        .readings
        .iter()
        .find(|r| r.metric == metric)
        .unwrap_or_else(|| panic!("{metric} missing in {batch:?}"))
        .value
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pysparkplug_edge_node_to_our_host() {
    let broker = Mosquitto::start().expect("start mosquitto");
    let mut host = scada(config("scada", &broker));
    // The host must be subscribed before the peer births; its STATE is the sign.
    let mut py =
        PythonPeer::spawn(peer_script("py_edge.py"), &[broker.host(), &broker.port().to_string()])
            .expect("start the pysparkplug edge node");
    host_event(&mut host, "NodeOnline", |e| matches!(e, HostEvent::NodeOnline { group, edge_node, .. } if group == "Interop" && edge_node == "py-edge")).await;
    let HostEvent::Data(birth) =
        host_event(&mut host, "birth data", |e| matches!(e, HostEvent::Data(_))).await
    else {
        unreachable!()
    };
    assert_eq!(birth.source, "Interop/py-edge");
    // Every width, negative where signed, as pysparkplug encodes them.
    let expected = [
        ("int8", Value::I64(-5)),
        ("int16", Value::I64(-300)),
        ("int32", Value::I64(-70_000)),
        ("int64", Value::I64(-1)),
        ("uint8", Value::I64(200)),
        ("uint16", Value::I64(60_000)),
        ("uint32", Value::I64(4_000_000_000)),
        ("uint64", Value::U64(1 << 63)),
        ("float", Value::F64(1.5)),
        ("double", Value::F64(-2.25)),
        ("boolean", Value::Bool(true)),
        ("string", Value::String("h\u{e9}".into())),
        ("datetime", Value::U64(1_700_000_000_000)),
    ];
    for (metric, value) in &expected {
        assert_eq!(&value_of(&birth, metric), value, "{metric}");
    }
    py.send("update").unwrap();
    let HostEvent::Data(update) = host_event(&mut host, "NDATA", |e| matches!(e, HostEvent::Data(b) if b.readings.iter().any(|r| r.value == Value::I64(-12_345)))).await else { unreachable!() };
    assert_eq!(value_of(&update, "double"), Value::F64(3.5));
    py.send("disconnect").unwrap();
    host_event(&mut host, "NodeOffline", |e| matches!(e, HostEvent::NodeOffline { .. })).await;
    let HostEvent::Data(stale) = host_event(&mut host, "stale data", |e| matches!(e, HostEvent::Data(b) if b.readings.iter().all(|r| r.quality == Quality::Stale))).await else { unreachable!() };
    assert_eq!(value_of(&stale, "int16"), Value::I64(-12_345), "the last value, now stale");
    host.shutdown().await;
}

/// Our host joins after the Python edge node birthed: its DATA comes from a
/// node the host has no birth for, so the host asks for a rebirth (NCMD
/// `Node Control/Rebirth`), pysparkplug's node honours it, and the host
/// then has every metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebirth_request_is_honoured_by_the_python_edge_node() {
    let broker = Mosquitto::start().expect("start mosquitto");
    let mut py =
        PythonPeer::spawn(peer_script("py_edge.py"), &[broker.host(), &broker.port().to_string()])
            .expect("start the pysparkplug edge node");
    py.until(Duration::from_secs(20), |l| l == "ok connect").expect("the Python node birthed");
    let mut host = scada(config("scada", &broker));
    // NDATA until the host, once subscribed, sees data without a birth.
    let requested = timeout(Duration::from_secs(20), async {
        loop {
            py.send("update").unwrap();
            let wait = timeout(Duration::from_millis(200), async {
                loop {
                    match host.next_event().await.expect("host driver alive") {
                        HostEvent::RebirthRequested { edge_node, reason, .. }
                            if edge_node == "py-edge" =>
                        {
                            return reason;
                        }
                        HostEvent::NodeOnline { .. } => {
                            panic!("the host saw a birth it should have missed")
                        }
                        _ => {}
                    }
                }
            });
            if let Ok(reason) = wait.await {
                return reason;
            }
        }
    });
    let reason = requested.await.expect("a rebirth request within 20 s");
    assert_eq!(reason, RebirthReason::NoBirth);
    py.until(Duration::from_secs(20), |l| l == "ok rebirth").expect("the Python node reborn");
    host_event(
        &mut host,
        "NodeOnline after the rebirth",
        |e| matches!(e, HostEvent::NodeOnline { edge_node, .. } if edge_node == "py-edge"),
    )
    .await;
    let HostEvent::Data(birth) =
        host_event(&mut host, "the birth's data", |e| matches!(e, HostEvent::Data(_))).await
    else {
        unreachable!()
    };
    assert_eq!(
        value_of(&birth, "int16"),
        Value::I64(-12_345),
        "the updated value, from the new birth"
    );
    assert_eq!(value_of(&birth, "uint64"), Value::U64(1 << 63));
    host.shutdown().await;
}

/// Our edge node, configured with `signed`, stores two readings while the
/// primary host is away, then births and replays them; both Python decoders
/// report what they saw. Returns the decoded messages.
async fn our_edge_through_python_decoders(signed: SignedEncoding) -> Vec<Json> {
    let (broker, decoder) = broker_with_decoders();

    let mut c = EdgeNodeConfig::new("Interop", "rust-edge");
    c.primary_host_id = Some("scada".into());
    c.signed = signed;
    c.metrics = [
        ("i8", DataType::Int8),
        ("i16", DataType::Int16),
        ("i32", DataType::Int32),
        ("i64", DataType::Int64),
        ("u8", DataType::UInt8),
        ("u16", DataType::UInt16),
        ("u32", DataType::UInt32),
        ("u64", DataType::UInt64),
        ("f32", DataType::Float),
        ("f64", DataType::Double),
        ("on", DataType::Boolean),
        ("name", DataType::String),
    ]
    .into_iter()
    .map(|(n, t)| MetricSpec::new(n, t))
    .collect();
    let edge = EdgeDriver::spawn(EdgeNode::new(c).unwrap(), config("rust-edge", &broker));
    let t = |ms: u64| Timestamp::from_unix_ms(ms);
    let mut first = Batch::new("");
    for (name, v) in [
        ("i8", -5_i64),
        ("i16", -300),
        ("i32", -70_000),
        ("i64", -1),
        ("u8", 200),
        ("u16", 60_000),
        ("u32", 4_000_000_000),
    ] {
        first.readings.push(Reading::new(name, t(1_000), v));
    }
    first.readings.push(Reading::new("u64", t(1_000), u64::MAX));
    first.readings.push(Reading::new("f32", t(1_000), 1.5));
    first.readings.push(Reading::new("f64", t(1_000), -2.25));
    first.readings.push(Reading::new("on", t(1_000), true));
    first.readings.push(Reading::new("name", t(1_000), "h\u{e9}"));
    edge.publish(first).await.unwrap();
    edge.publish(Batch::new("").with(Reading::new("i16", t(2_000), -2_i64))).await.unwrap();
    // The primary host arrives: the edge births, then replays the two stored batches.
    let host = scada(config("scada", &broker));
    let mut messages = Vec::new();
    let historical = |m: &Json| {
        m["topic"] == "spBv1.0/Interop/NDATA/rust-edge"
            && m["pb"]["metrics"]
                .as_array()
                .is_some_and(|ms| ms.iter().any(|x| x["timestamp"] == "2000"))
    };
    decoder
        .until(WAIT, |l| {
            let Ok(m) = serde_json::from_str::<Json>(l) else { return false };
            let done = historical(&m);
            if m["topic"].as_str().is_some_and(|t| t.contains("/rust-edge")) {
                messages.push(m);
            }
            done
        })
        .unwrap_or_else(|seen| panic!("no replayed NDATA; the decoder printed {seen:#?}"));
    edge.shutdown().await;
    host.shutdown().await;
    messages
}

fn metric<'a>(msg: &'a Json, name: &str) -> &'a Json {
    msg["pb"]["metrics"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == name))
        .unwrap_or_else(|| panic!("{name} missing in {msg}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_edge_node_to_python_decoders_zero_extended() {
    let msgs = our_edge_through_python_decoders(SignedEncoding::ZeroExtend).await;
    let topics: Vec<&str> = msgs.iter().map(|m| m["topic"].as_str().unwrap()).collect();
    assert_eq!(
        topics,
        ["spBv1.0/Interop/NBIRTH/rust-edge", "spBv1.0/Interop/NDATA/rust-edge"],
        "{msgs:#?}"
    );
    // seq is continuous from the NBIRTH's 0 (uint64 prints as a string in protobuf JSON).
    let seqs: Vec<&str> = msgs.iter().map(|m| m["pb"]["seq"].as_str().unwrap()).collect();
    assert_eq!(seqs, ["0", "1"]);
    let birth = &msgs[0];
    assert_eq!(metric(birth, "bdSeq")["datatype"], 4);
    assert_eq!(metric(birth, "Node Control/Rebirth")["boolean_value"], false);
    assert!(metric(birth, "i8").get("alias").is_some(), "births carry aliases");
    // The wire, field by field: zero-extended negative Int8/Int16, two's
    // complement Int32/Int64.
    assert_eq!(metric(birth, "i8")["int_value"], 251);
    assert_eq!(metric(birth, "i16")["int_value"], 65_534, "the newest value, -2");
    assert_eq!(metric(birth, "i32")["int_value"], 4_294_897_296_u64);
    assert_eq!(metric(birth, "i64")["long_value"], u64::MAX.to_string());
    assert_eq!(metric(birth, "u64")["long_value"], u64::MAX.to_string());
    assert_eq!(metric(birth, "f32")["float_value"], 1.5);
    assert_eq!(metric(birth, "name")["string_value"], "h\u{e9}");
    // pysparkplug's typed view agrees.
    let psp = &birth["psp"];
    assert!(birth.get("psp_error").is_none(), "{birth}");
    for (name, v) in
        [("i8", -5), ("i16", -2), ("i32", -70_000), ("i64", -1), ("u8", 200), ("u16", 60_000)]
    {
        assert_eq!(psp[name]["value"], v, "{name}: {psp}");
    }
    // The replay is historical, in time order.
    let replay = &msgs[1];
    let stamps: Vec<(&str, bool)> = replay["pb"]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["timestamp"].as_str().unwrap(), m["is_historical"] == true))
        .collect();
    assert!(stamps.iter().all(|(_, h)| *h), "{replay}");
    assert!(stamps.windows(2).all(|w| w[0].0 <= w[1].0), "time order: {stamps:?}");
    assert_eq!(stamps.last().unwrap().0, "2000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_edge_node_sign_extended_is_what_pysparkplug_refuses() {
    let msgs = our_edge_through_python_decoders(SignedEncoding::SignExtend).await;
    let birth = &msgs[0];
    // Tahu Java's form: -5 as Int8 is 0xFFFFFFFB on the wire.
    assert_eq!(metric(birth, "i8")["int_value"], 4_294_967_291_u64);
    assert_eq!(metric(birth, "i16")["int_value"], 4_294_967_294_u64);
    // pysparkplug 0.6 range-checks Int8/Int16 and refuses it (its issue #26):
    // the reason SignedEncoding::ZeroExtend exists.
    let err =
        birth["psp_error"].as_str().unwrap_or_else(|| panic!("pysparkplug decoded it: {birth}"));
    assert!(err.contains("Overflow"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_edge_driver_leaves_its_will_with_the_births_bdseq() {
    let (broker, decoder) = broker_with_decoders();
    let edge = bare_edge("doomed", 41, &broker);
    let birth = decoded(&decoder, "NBIRTH/doomed", "NBIRTH");
    assert_eq!(metric(&birth, "bdSeq")["long_value"], "41");
    // Like kill -9: no NDEATH of our own, the connection just goes away.
    edge.abort();
    let death = decoded(&decoder, "NDEATH/doomed", "Will NDEATH");
    assert_eq!(
        metric(&death, "bdSeq")["long_value"],
        "41",
        "the Will carries the birth's bdSeq: {death}"
    );
    assert!(death["pb"].get("seq").is_none(), "NDEATH carries no seq: {death}");
    assert_eq!(death["psp"]["bdSeq"]["value"], 41, "pysparkplug reads it too: {death}");
}

/// Publishes raw payload bytes with a plain MQTT client (no Sparkplug
/// session), for codec-level interop.
async fn publish_raw(broker: &Mosquitto, messages: Vec<(String, Vec<u8>)>) {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let (client, mut eventloop) =
        AsyncClient::new(MqttOptions::new("raw-publisher", broker.host(), broker.port()), 16);
    let n = messages.len();
    for (topic, payload) in messages {
        client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
    }
    // Done when the broker has acknowledged every publish.
    let mut acked = 0;
    timeout(WAIT, async {
        while acked < n {
            if let Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::PubAck(_)) =
                eventloop.poll().await.expect("connected")
            {
                acked += 1;
            }
        }
    })
    .await
    .expect("the broker acknowledged the publishes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrays_datasets_and_templates_read_the_same_in_python() {
    use shopfloor_sparkplug::payload::{DataSet, Parameter, Template};
    use shopfloor_sparkplug::{EncodeOptions, Metric, MetricValue, Payload};

    let (broker, decoder) = broker_with_decoders();
    let m = |name: &str, v: MetricValue| Metric::new(name, 5, v);
    let arrays = Payload {
        timestamp: Some(5),
        seq: Some(0),
        metrics: vec![
            m("i8a", MetricValue::Int8Array(vec![-23, 123])),
            m("i16a", MetricValue::Int16Array(vec![-30_000, 30_000])),
            m("i32a", MetricValue::Int32Array(vec![-1, 256])),
            m("i64a", MetricValue::Int64Array(vec![i64::MIN, 7])),
            m("u16a", MetricValue::UInt16Array(vec![0x1234, 65_535])),
            m("u64a", MetricValue::UInt64Array(vec![u64::MAX])),
            m("f32a", MetricValue::FloatArray(vec![1.0, -2.5])),
            m("f64a", MetricValue::DoubleArray(vec![1.0, -0.5])),
            m(
                "bools",
                MetricValue::BooleanArray(vec![
                    false, false, true, true, false, true, false, false, true,
                ]),
            ),
            m("strings", MetricValue::StringArray(vec!["ABC".into(), "hello".into()])),
            m("times", MetricValue::DateTimeArray(vec![1_256_102_875_335, 1_656_107_875_000])),
        ],
        ..Payload::default()
    };
    let table = DataSet {
        columns: vec![
            ("id".into(), DataType::Int32),
            ("name".into(), DataType::String),
            ("ok".into(), DataType::Boolean),
        ],
        rows: vec![
            vec![
                Some(MetricValue::Int32(-7)),
                Some(MetricValue::String("a".into())),
                Some(MetricValue::Boolean(true)),
            ],
            vec![Some(MetricValue::Int32(8)), None, Some(MetricValue::Boolean(false))],
        ],
    };
    let motor = Template {
        version: Some("2.1".into()),
        template_ref: None,
        is_definition: true,
        metrics: vec![m("rpm", MetricValue::UInt32(1500)), m("temp", MetricValue::Double(60.5))],
        parameters: vec![Parameter {
            name: "poles".into(),
            datatype: DataType::Int16,
            value: Some(MetricValue::Int16(-4)),
        }],
    };
    let complex = Payload {
        timestamp: Some(5),
        seq: Some(1),
        metrics: vec![
            m("table", MetricValue::DataSet(Box::new(table))),
            m("Motor", MetricValue::Template(Box::new(motor))),
        ],
        ..Payload::default()
    };
    let options = EncodeOptions::DEFAULT.with_signed(SignedEncoding::ZeroExtend);
    publish_raw(
        &broker,
        vec![
            ("spBv1.0/Interop/NBIRTH/arrays".into(), arrays.encode(options)),
            ("spBv1.0/Interop/NBIRTH/complex".into(), complex.encode(options)),
        ],
    )
    .await;
    let line = |topic: &str| decoded(&decoder, topic, topic);

    // Arrays: pysparkplug unpacks each to the same values.
    let a = line("NBIRTH/arrays");
    let psp = &a["psp"];
    assert!(a.get("psp_error").is_none(), "{a}");
    let expect: [(&str, Json); 11] = [
        ("i8a", serde_json::json!([-23, 123])),
        ("i16a", serde_json::json!([-30000, 30000])),
        ("i32a", serde_json::json!([-1, 256])),
        ("i64a", serde_json::json!([i64::MIN, 7])),
        ("u16a", serde_json::json!([4660, 65535])),
        ("u64a", serde_json::json!([u64::MAX])),
        ("f32a", serde_json::json!([1.0, -2.5])),
        ("f64a", serde_json::json!([1.0, -0.5])),
        ("bools", serde_json::json!([false, false, true, true, false, true, false, false, true])),
        ("strings", serde_json::json!(["ABC", "hello"])),
        ("times", serde_json::json!([1_256_102_875_335_u64, 1_656_107_875_000_u64])),
    ];
    for (name, want) in expect {
        assert_eq!(psp[name]["value"], want, "{name}: {}", psp[name]);
    }

    // DataSet and Template: pysparkplug does not support them, so check them
    // field by field with Google's runtime.
    let c = line("NBIRTH/complex");
    let ds = &metric(&c, "table")["dataset_value"];
    assert_eq!(ds["num_of_columns"], "3");
    assert_eq!(ds["columns"], serde_json::json!(["id", "name", "ok"]));
    assert_eq!(ds["types"], serde_json::json!([3, 12, 11]));
    assert_eq!(
        ds["rows"][0]["elements"],
        serde_json::json!([{"int_value": 4_294_967_289_u64}, {"string_value": "a"}, {"boolean_value": true}]),
        "-7 as Int32 is 0xFFFFFFF9 either way: {ds}"
    );
    assert_eq!(ds["rows"][1]["elements"][1], serde_json::json!({}), "a null element has no value");
    let tpl = &metric(&c, "Motor")["template_value"];
    assert_eq!(tpl["version"], "2.1");
    assert_eq!(tpl["is_definition"], true);
    assert_eq!(tpl["metrics"][0]["name"], "rpm");
    assert_eq!(tpl["metrics"][0]["int_value"], 1500);
    assert_eq!(
        tpl["parameters"][0],
        serde_json::json!({"name": "poles", "type": 2, "int_value": 65532})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_sends_ndeath_and_the_broker_still_publishes_the_will() {
    let (broker, decoder) = broker_with_decoders();
    let edge = bare_edge("leaving", 7, &broker);
    decoder.until(WAIT, |l| l.contains("NBIRTH/leaving")).expect("a birth");
    edge.shutdown().await;
    // Ours first, then the Will: the driver sends no DISCONNECT (rumqttc
    // cannot give it MQTT 5's reason 0x04), so the broker publishes the
    // Will, as 0x04 would have it do.
    for which in ["our NDEATH", "the Will"] {
        let death = decoded(&decoder, "NDEATH/leaving", which);
        assert_eq!(metric(&death, "bdSeq")["long_value"], "7", "{which}: {death}");
    }
}
