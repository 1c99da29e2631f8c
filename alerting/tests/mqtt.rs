//! The engine on MQTT against a real Mosquitto: a breach published as a
//! plain reading comes back as an event within milliseconds, the alarm's
//! retained state reaches a late joiner, and an acknowledgement command is
//! answered on its response topic and journaled as an event.

mod common;

use common::{
    Plant, RULES, broker, command, event, gateway, next, operator, plant, reading, send, sparkplug,
    spawn,
};
use rumqttc::v5::mqttbytes::QoS;
use shopfloor_sparkplug::{EncodeOptions, Metric, MetricValue, Payload};
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breach_becomes_an_event_state_and_an_acknowledgement() {
    let Plant { broker, driver, op, mut op_events, feed } = plant(RULES, "alertd", "gateway").await;

    // A breach: raised HH, as an event and as retained state.
    send(&feed, "shopfloor/plant1/press/m1/pressure", reading(100.0)).await;
    let sent = Instant::now();
    send(&feed, "shopfloor/plant1/press/m1/pressure", reading(185.0)).await;
    let raised = event(&mut op_events, |v| v["event"] == "raised").await;
    println!("publish → alarm event received: {:.1} ms", sent.elapsed().as_secs_f64() * 1000.0);
    assert_eq!(raised["rule"], "press-pressure");
    assert_eq!(raised["source"], "plant1/press/m1");
    assert_eq!(raised["metric"], "pressure");
    assert_eq!(
        (raised["condition"].as_str(), raised["priority"].as_u64()),
        (Some("HH"), Some(900))
    );
    assert_eq!(raised["value"], 185.0);
    assert_eq!(raised["annunciate"], true);

    // A late joiner sees the state.
    let (late, mut late_events) = common::client(&broker, "late-display");
    late.subscribe("shopfloor/alarms/state/#", QoS::AtLeastOnce).await.unwrap();
    let (topic, state) =
        next(&mut late_events, |t, _| t.starts_with("shopfloor/alarms/state/")).await;
    assert_eq!(topic, "shopfloor/alarms/state/press-pressure/plant1/press/m1/pressure");
    assert_eq!(
        (state["active"].as_str(), state["unacknowledged"].as_bool()),
        (Some("HH"), Some(true))
    );

    // Acknowledged by command, with a reply and an event.
    let ack = r#"{"command":"acknowledge","rule":"press-pressure","source":"plant1/press/m1","metric":"pressure","user":"jane","comment":"valve closed"}"#;
    command(&op, ack).await;
    let (_, reply) = next(&mut op_events, |t, _| t == "operator/reply").await;
    assert_eq!(reply, serde_json::json!({"ok": true}));
    let acked = event(&mut op_events, |v| v["event"] == "acknowledged").await;
    assert_eq!(
        (acked["user"].as_str(), acked["comment"].as_str()),
        (Some("jane"), Some("valve closed"))
    );
    assert_eq!(acked["instance"], raised["instance"]);
    // Twice: refused, with the reason.
    command(&op, ack).await;
    let (_, refused) = next(&mut op_events, |t, _| t == "operator/reply").await;
    assert_eq!(refused["ok"], false);
    assert!(refused["error"].as_str().unwrap().contains("not unacknowledged"), "{refused}");

    let engine = driver.shutdown().await.expect("the engine back");
    assert_eq!(engine.persisted().len(), 1, "the acknowledged alarm, still active");
}

const SILENCE_AND_FLOOD: &str = r#"
[[rule]]
name = "temp-silent"
source = "plant1/oven/*"
metric = "temp"
stale = { interval_s = 0.3, factor = 3 }

[[rule]]
name = "level-high"
source = "plant1/tank/*"
metric = "level"
limit = { h = { limit = 90.0 } }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_sensor_raises_stale_in_time_and_stays_raised() {
    let Plant { broker: _broker, driver: d, op: _op, mut op_events, feed } =
        plant(SILENCE_AND_FLOOD, "alertd-stale", "oven").await;
    let last = Instant::now();
    send(&feed, "shopfloor/plant1/oven/o1/temp", common::reading_of("temp", 210.0)).await;
    let stale =
        event(&mut op_events, |v| v["rule"] == "temp-silent" && v["event"] == "raised").await;
    let after = last.elapsed();
    println!(
        "stale raised {:.2} s after the last sample (limit 3 × 0.3 s + 1 s)",
        after.as_secs_f64()
    );
    assert!(after <= std::time::Duration::from_millis(1900), "{after:?}");
    assert_eq!(stale["source"], "plant1/oven/o1");
    // Silence is never a return to normal: nothing more for this alarm
    // until a sample comes.
    let more = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        event(&mut op_events, |v| v["rule"] == "temp-silent"),
    )
    .await;
    assert!(more.is_err(), "an event while silent: {more:?}");
    send(&feed, "shopfloor/plant1/oven/o1/temp", common::reading_of("temp", 211.0)).await;
    let back = event(&mut op_events, |v| v["rule"] == "temp-silent").await;
    assert_eq!(back["event"], "returned_to_normal");
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_raises_the_meta_alarm() {
    let Plant { broker: _broker, driver: d, op: _op, mut op_events, feed } =
        plant(SILENCE_AND_FLOOD, "alertd-flood", "tanks").await;
    // Eleven tanks overflow: more than 10 activations in 10 min.
    for tank in 0..11 {
        send(
            &feed,
            format!("shopfloor/plant1/tank/t{tank}/level"),
            common::reading_of("level", 95.0),
        )
        .await;
    }
    let flood = event(&mut op_events, |v| v["rule"] == "alarm-flood").await;
    assert_eq!(
        (flood["event"].as_str(), flood["source"].as_str()),
        (Some("raised"), Some("plant"))
    );
    assert_eq!(flood["value"], 11.0);
    d.shutdown().await.unwrap();
}

/// Sparkplug history replayed after an outage (`is_historical`) is
/// journaled as `late`, never raised; the live value beside it decides.
/// Confirmation, where the rule asks for it, closes the instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparkplug_history_is_late_not_live_and_confirm_closes() {
    let broker = broker();
    let rules = r#"
[[rule]]
name = "tank-level"
source = "Plant1/*"
metric = "level"
confirm = true
limit = { hh = { limit = 95.0 }, h = { limit = 90.0 } }
"#;
    let driver = spawn(rules, sparkplug(&broker, "alertd-sp"));
    let (op, mut op_events) = operator(&broker, "operator-sp").await;

    let now = shopfloor_schemas::Timestamp::now().unix_ms();
    let encode = |seq: u64, metrics: Vec<Metric>| -> Vec<u8> {
        let p = Payload { timestamp: Some(now), seq: Some(seq), metrics, ..Default::default() };
        p.encode(EncodeOptions::default()).to_vec()
    };
    let edge = gateway(&broker, "edge-sp");
    let birth = encode(
        0,
        vec![
            Metric::new("bdSeq", now, MetricValue::Int64(0)),
            Metric::new("level", now, MetricValue::Double(50.0)),
        ],
    );
    send(&edge, "spBv1.0/Plant1/NBIRTH/tank-1", birth).await;
    // Stored while offline: HH an hour ago, then normal; live: still normal.
    let mut old = Metric::new("level", now - 3_600_000, MetricValue::Double(97.0));
    old.is_historical = true;
    let mut back = Metric::new("level", now - 3_500_000, MetricValue::Double(60.0));
    back.is_historical = true;
    let data = encode(1, vec![old, back, Metric::new("level", now, MetricValue::Double(55.0))]);
    send(&edge, "spBv1.0/Plant1/NDATA/tank-1", data).await;
    let late = event(&mut op_events, |v| v["event"] != "returned_to_normal").await;
    assert_eq!(late["event"], "late", "history first, and never raised: {late}");
    assert_eq!(
        (late["condition"].as_str(), late["annunciate"].as_bool()),
        (Some("HH"), Some(false))
    );
    assert_eq!(late["sampled"], now - 3_600_000);
    assert_eq!(late["source"], "Plant1/tank-1");
    let normal = event(&mut op_events, |_| true).await;
    assert_eq!((normal["event"].as_str(), normal["condition"].as_str()), (Some("late"), None));

    // A live breach is raised; acknowledged, it still waits for confirmation.
    let live = encode(2, vec![Metric::new("level", now + 1, MetricValue::Double(92.0))]);
    send(&edge, "spBv1.0/Plant1/NDATA/tank-1", live).await;
    let raised = event(&mut op_events, |_| true).await;
    assert_eq!(
        (raised["event"].as_str(), raised["condition"].as_str()),
        (Some("raised"), Some("H"))
    );
    let alarm = r#""rule":"tank-level","source":"Plant1/tank-1","metric":"level","user":"jane""#;
    command(&op, &format!(r#"{{"command":"acknowledge",{alarm}}}"#)).await;
    let acked = event(&mut op_events, |v| v["event"] == "acknowledged").await;
    assert_eq!(acked["closed"], false);
    let (_, state) = next(&mut op_events, |t, v| {
        t.starts_with("shopfloor/alarms/state/") && v["unacknowledged"] == false
    })
    .await;
    assert_eq!(state["unconfirmed"], true);
    let normal = encode(3, vec![Metric::new("level", now + 2, MetricValue::Double(50.0))]);
    send(&edge, "spBv1.0/Plant1/NDATA/tank-1", normal).await;
    let rtn = event(&mut op_events, |v| v["event"] == "returned_to_normal").await;
    assert_eq!(rtn["closed"], false, "not confirmed yet");
    command(&op, &format!(r#"{{"command":"confirm",{alarm},"comment":"pump reset"}}"#)).await;
    let confirmed = event(&mut op_events, |v| v["event"] == "confirmed").await;
    assert_eq!(
        (confirmed["closed"].as_bool(), confirmed["comment"].as_str()),
        (Some(true), Some("pump reset"))
    );
    assert_eq!(confirmed["instance"], raised["instance"]);
    let engine = driver.shutdown().await.expect("the engine back");
    assert!(engine.persisted().is_empty(), "the instance is closed");
}

/// An alerting daemon started after an edge node's births cannot name the
/// node's DATA (aliases only): it asks for a rebirth, and the edge node's
/// answer lets it raise the breach. Before, it stayed blind until the edge
/// node happened to reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_after_the_births_it_asks_for_a_rebirth_and_raises() {
    use shopfloor_mqtt::{Broker, DriverConfig, EdgeDriver};
    use shopfloor_sparkplug::edge::MetricSpec;
    use shopfloor_sparkplug::{DataType, EdgeNode, EdgeNodeConfig};
    let broker = broker();
    let mut node = EdgeNodeConfig::new("Plant1", "gw-early");
    node.devices = vec![("tank-1".into(), vec![MetricSpec::new("level", DataType::Double)])];
    let edge = EdgeDriver::spawn(
        EdgeNode::new(node).unwrap(),
        DriverConfig::new("gw-early", Broker::new(broker.host(), broker.port())),
    );
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while !edge.stats().online {
        assert!(Instant::now() < deadline, "the edge node did not come online in 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let rules = "[[rule]]\nname = \"tank-level\"\nsource = \"Plant1/*\"\nmetric = \"level\"\nlimit = { h = { limit = 90.0 } }\n";
    let driver = spawn(rules, sparkplug(&broker, "alertd-late"));
    let (_op, mut op_events) = operator(&broker, "operator-late").await;
    // Breaches keep coming; only a rebirth makes them readable.
    let publisher = tokio::spawn(async move {
        loop {
            let b = shopfloor_schemas::Batch::new("tank-1").with(shopfloor_schemas::Reading::new(
                "level",
                shopfloor_schemas::Timestamp::now(),
                97.0,
            ));
            if edge.publish(b).await.is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
    let raised = event(&mut op_events, |v| v["event"] == "raised").await;
    assert_eq!(raised["source"], "Plant1/gw-early/tank-1");
    publisher.abort();
    driver.shutdown().await.expect("the engine back");
}
