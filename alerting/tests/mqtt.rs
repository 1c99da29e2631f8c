//! The engine on MQTT against a real Mosquitto: a breach published as a
//! plain reading comes back as an event within milliseconds, the alarm's
//! retained state reaches a late joiner, and an acknowledgement command is
//! answered on its response topic and journaled as an event.

use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use serde_json::Value;
use shopfloor_alerting::mqtt::{AlertConfig, AlertDriver, Input};
use shopfloor_alerting::{Engine, RuleSet};
use shopfloor_schemas::{Batch, Codec, Reading, Timestamp, TopicTemplate, topic};
use shopfloor_testkit::Mosquitto;
use tokio::time::{Instant, timeout};

const RULES: &str = r#"
[[rule]]
name = "press-pressure"
source = "plant1/press/*"
metric = "pressure"
[rule.limit]
hh = { limit = 180.0, deadband = 2.0, priority = 900 }
h = { limit = 160.0, deadband = 2.0 }
"#;

fn client(broker: &Mosquitto, id: &str) -> (AsyncClient, EventLoop) {
    AsyncClient::new(MqttOptions::new(id, broker.host(), broker.port()), 100)
}

/// The next publish on `events` matching `pred`, within 10 s.
async fn next(events: &mut EventLoop, pred: impl Fn(&str, &Value) -> bool) -> (String, Value) {
    timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(Event::Incoming(Packet::Publish(p))) = events.poll().await {
                let topic = String::from_utf8_lossy(&p.topic).into_owned();
                let Ok(v) = serde_json::from_slice::<Value>(&p.payload) else { continue };
                if pred(&topic, &v) {
                    return (topic, v);
                }
            }
        }
    })
    .await
    .expect("the expected message within 10 s")
}

fn reading(value: f64) -> Vec<u8> {
    Codec::Json
        .encode_batch(&Batch::new("x").with(Reading::new("pressure", Timestamp::now(), value)))
        .unwrap()
}

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

    let (op, mut op_events) = client(&broker, "operator");
    op.subscribe("shopfloor/alarms/#", QoS::AtLeastOnce).await.unwrap();
    // Ready when a command is answered (the command topic is subscribed
    // last, after the inputs).
    let ping = |op: AsyncClient| async move {
        let props = PublishProperties {
            response_topic: Some("operator/reply".into()),
            correlation_data: Some("ping".into()),
            ..Default::default()
        };
        let body =
            r#"{"command":"unshelve","rule":"none","source":"none","metric":"none","user":"test"}"#;
        op.publish_with_properties(
            "shopfloor/alarms/command",
            QoS::AtLeastOnce,
            false,
            body,
            props,
        )
        .await
        .unwrap();
    };
    op.subscribe("operator/reply", QoS::AtLeastOnce).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        ping(op.clone()).await;
        let got = timeout(Duration::from_millis(300), async {
            loop {
                if let Ok(Event::Incoming(Packet::Publish(p))) = op_events.poll().await
                    && p.topic.as_ref() == b"operator/reply"
                {
                    return serde_json::from_slice::<Value>(&p.payload).unwrap();
                }
            }
        })
        .await;
        if let Ok(reply) = got {
            assert_eq!(reply["ok"], false);
            assert!(reply["error"].as_str().unwrap().contains("no alarm"), "{reply}");
            break;
        }
        assert!(Instant::now() < deadline, "the alerting driver did not answer within 20 s");
    }

    // A breach: raised HH, as an event and as retained state.
    let (feed, mut feed_events) = client(&broker, "gateway");
    tokio::spawn(async move { while feed_events.poll().await.is_ok() {} });
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
    let (late, mut late_events) = client(&broker, "late-display");
    late.subscribe("shopfloor/alarms/state/#", QoS::AtLeastOnce).await.unwrap();
    let (topic, state) =
        next(&mut late_events, |t, _| t.starts_with("shopfloor/alarms/state/")).await;
    assert_eq!(topic, "shopfloor/alarms/state/press-pressure/plant1/press/m1/pressure");
    assert_eq!(
        (state["active"].as_str(), state["unacknowledged"].as_bool()),
        (Some("HH"), Some(true))
    );

    // Acknowledged by command, with a reply and an event.
    let props = PublishProperties {
        response_topic: Some("operator/reply".into()),
        correlation_data: Some("ack-1".into()),
        ..Default::default()
    };
    let ack = r#"{"command":"acknowledge","rule":"press-pressure","source":"plant1/press/m1","metric":"pressure","user":"jane","comment":"valve closed"}"#;
    op.publish_with_properties("shopfloor/alarms/command", QoS::AtLeastOnce, false, ack, props)
        .await
        .unwrap();
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
    op.publish_with_properties(
        "shopfloor/alarms/command",
        QoS::AtLeastOnce,
        false,
        ack,
        PublishProperties { response_topic: Some("operator/reply".into()), ..Default::default() },
    )
    .await
    .unwrap();
    let (_, refused) = next(&mut op_events, |t, _| t == "operator/reply").await;
    assert_eq!(refused["ok"], false);
    assert!(refused["error"].as_str().unwrap().contains("not unacknowledged"), "{refused}");

    let engine = driver.shutdown().await.expect("the engine back");
    assert_eq!(engine.persisted().len(), 1, "the acknowledged alarm, still active");
}
