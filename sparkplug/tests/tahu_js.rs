//! Against Eclipse Tahu's JavaScript codec (`sparkplug-payload` 1.0.3, a
//! Node.js host's decoder): it reads no value from an alias-only DATA
//! metric without a datatype, which the specification allows and our edge
//! node sends by default; with `datatypes_in_data` it reads every value.
//! Births always carry datatypes and decode either way.

use std::time::{Duration, Instant};

use base64::Engine as _;
use shopfloor_schemas::{Batch, Reading, Timestamp};
use shopfloor_sparkplug::DataType;
use shopfloor_sparkplug::edge::{EdgeNode, EdgeNodeConfig, MetricSpec, Now};

fn now(ms: u64) -> Now {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    Now { instant: *BASE.get_or_init(Instant::now) + Duration::from_millis(ms), unix_ms: ms }
}

/// The NBIRTH and one NDATA of a node with a Double and an Int32, as
/// Tahu JS decodes them.
fn decoded(datatypes_in_data: bool) -> (serde_json::Value, serde_json::Value) {
    let mut c = EdgeNodeConfig::new("G", "E");
    c.metrics =
        vec![MetricSpec::new("temp", DataType::Double), MetricSpec::new("count", DataType::Int32)];
    c.datatypes_in_data = datatypes_in_data;
    let mut n = EdgeNode::new(c).unwrap();
    let batch = |ms: u64, temp: f64, count: i64| {
        let t = Timestamp::from_unix_ms(ms);
        Batch::new("").with(Reading::new("temp", t, temp)).with(Reading::new("count", t, count))
    };
    // Values before the connection: the birth carries them.
    n.publish(&batch(5, 20.5, 6), now(5)).unwrap();
    n.handle_connected(now(6));
    let birth = n.poll_transmit().expect("NBIRTH");
    n.publish(&batch(10, 21.5, 7), now(10)).unwrap();
    let data = n.poll_transmit().expect("NDATA");
    assert!(data.topic.ends_with("/NDATA/E"), "{}", data.topic);
    let b64 = |p: &[u8]| base64::engine::general_purpose::STANDARD.encode(p);
    let input = format!("{}\n{}\n", b64(&birth.payload), b64(&data.payload));
    let out = shopfloor_testkit::run_node("sparkplug_payload_decode.js", &input)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut lines = out.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap());
    (lines.next().expect("the birth"), lines.next().expect("the data"))
}

/// The value Tahu JS gives the metric with this alias.
fn value(msg: &serde_json::Value, alias: u64) -> serde_json::Value {
    let metrics = msg["metrics"].as_array().unwrap();
    metrics.iter().find(|m| m["alias"] == alias).unwrap_or_else(|| panic!("{msg}"))["value"].clone()
}

#[test]
fn tahu_js_reads_data_values_only_with_their_datatype() {
    use serde_json::json;
    // The default (the specification's): births decode, DATA gives nothing.
    let (birth, data) = decoded(false);
    assert_eq!((value(&birth, 1), value(&birth, 2)), (json!(20.5), json!(6)), "{birth}");
    assert_eq!((value(&data, 1), value(&data, 2)), (json!(null), json!(null)), "{data}");
    // With datatypes in DATA: every value.
    let (birth, data) = decoded(true);
    assert_eq!((value(&birth, 1), value(&birth, 2)), (json!(20.5), json!(6)), "{birth}");
    assert_eq!((value(&data, 1), value(&data, 2)), (json!(21.5), json!(7)), "{data}");
}
