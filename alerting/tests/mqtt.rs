//! The engine on MQTT against a real Mosquitto: a breach published as a
//! plain reading comes back as an event within milliseconds, the alarm's
//! retained state reaches a late joiner, and an acknowledgement command is
//! answered on its response topic and journaled as an event.

mod common;

use common::{RULES, command, gateway, next, operator, reading};
use rumqttc::v5::mqttbytes::QoS;
use shopfloor_alerting::mqtt::{AlertConfig, AlertDriver, Input};
use shopfloor_alerting::{Engine, RuleSet};
use shopfloor_schemas::{Codec, TopicTemplate, topic};
use shopfloor_testkit::Mosquitto;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breach_becomes_an_event_state_and_an_acknowledgement() {
    let broker = Mosquitto::start().expect("start mosquitto (apt-get install -y mosquitto)");
    let mut config = AlertConfig::new(broker.host(), broker.port(), "alertd");
    config.inputs = vec![Input::Plain {
        template: TopicTemplate::parse(topic::defaults::READINGS).unwrap(),
        codec: Codec::Json,
    }];
    let engine = Engine::new(RuleSet::from_toml(RULES, "rules.toml").unwrap());
    let driver = AlertDriver::spawn(engine, config);

    let (op, mut op_events) = operator(&broker, "operator").await;

    // A breach: raised HH, as an event and as retained state.
    let feed = gateway(&broker, "gateway");
    feed.publish("shopfloor/plant1/press/m1/pressure", QoS::AtLeastOnce, false, reading(100.0))
        .await
        .unwrap();
    let sent = Instant::now();
    feed.publish("shopfloor/plant1/press/m1/pressure", QoS::AtLeastOnce, false, reading(185.0))
        .await
        .unwrap();
    let (_, raised) =
        next(&mut op_events, |t, v| t == "shopfloor/alarms/events" && v["event"] == "raised").await;
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
    let (_, acked) =
        next(&mut op_events, |t, v| t == "shopfloor/alarms/events" && v["event"] == "acknowledged")
            .await;
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
