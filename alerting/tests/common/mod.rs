//! Helpers shared by the alerting integration tests.
#![allow(dead_code)]

use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use serde_json::Value;
use shopfloor_alerting::mqtt::{AlertConfig, AlertDriver, Input};
use shopfloor_alerting::{Engine, RuleSet};
use shopfloor_schemas::{Batch, Codec, Reading, Timestamp, TopicTemplate, topic};
use shopfloor_sparkplug::HostConfig;
use shopfloor_testkit::Mosquitto;
use tokio::time::{Instant, timeout};

/// One pressure rule on `plant1/press/*`: HH 180 (priority 900), H 160.
pub(crate) const RULES: &str = include_str!("../fixtures/press-pressure.toml");

pub(crate) fn broker() -> Mosquitto {
    Mosquitto::start().expect("start mosquitto (apt-get install -y mosquitto)")
}

/// Client `id` of `broker`, reading plain JSON readings.
pub(crate) fn plain(broker: &Mosquitto, id: &str) -> AlertConfig {
    let mut config = AlertConfig::new(broker.host(), broker.port(), id);
    config.inputs = vec![Input::Plain {
        template: TopicTemplate::parse(topic::defaults::READINGS).unwrap(),
        codec: Codec::Json,
    }];
    config
}

/// Client `id` of `broker`, reading Sparkplug as host `id`.
pub(crate) fn sparkplug(broker: &Mosquitto, id: &str) -> AlertConfig {
    let mut config = AlertConfig::new(broker.host(), broker.port(), id);
    config.inputs = vec![Input::Sparkplug { host: HostConfig::new(id) }];
    config
}

/// A driver of `rules` with `config`.
pub(crate) fn spawn(rules: &str, config: AlertConfig) -> AlertDriver {
    AlertDriver::spawn(Engine::new(RuleSet::from_toml(rules, "rules.toml").unwrap()), config)
}

/// What most tests drive: a broker, a driver of rules reading plain
/// readings from it, an operator the driver answers, and a gateway.
pub(crate) struct Plant {
    pub(crate) broker: Mosquitto,
    pub(crate) driver: AlertDriver,
    pub(crate) op: AsyncClient,
    pub(crate) op_events: EventLoop,
    pub(crate) feed: AsyncClient,
}

/// A [`Plant`] of `rules`, the driver client `id`, the gateway `feed`.
pub(crate) async fn plant(rules: &str, id: &str, feed: &str) -> Plant {
    let broker = broker();
    let driver = spawn(rules, plain(&broker, id));
    let (op, op_events) = operator(&broker, "operator").await;
    let feed = gateway(&broker, feed);
    Plant { broker, driver, op, op_events, feed }
}

pub(crate) fn client(broker: &Mosquitto, id: &str) -> (AsyncClient, EventLoop) {
    AsyncClient::new(MqttOptions::new(id, broker.host(), broker.port()), 100)
}

/// The next publish on `events` matching `pred`, within 10 s.
pub(crate) async fn next(
    events: &mut EventLoop,
    pred: impl Fn(&str, &Value) -> bool,
) -> (String, Value) {
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

/// The next alarm event on `events` matching `pred`, within 10 s.
pub(crate) async fn event(events: &mut EventLoop, pred: impl Fn(&Value) -> bool) -> Value {
    next(events, |t, v| t == "shopfloor/alarms/events" && pred(v)).await.1
}

/// A JSON batch of one reading of `metric`, timestamped now.
pub(crate) fn reading_of(metric: &str, value: f64) -> Vec<u8> {
    Codec::Json
        .encode_batch(&Batch::new("x").with(Reading::new(metric, Timestamp::now(), value)))
        .unwrap()
}

pub(crate) fn reading(value: f64) -> Vec<u8> {
    reading_of("pressure", value)
}

/// Publishes `payload` on `topic` at QoS 1, not retained.
pub(crate) async fn send(client: &AsyncClient, topic: impl Into<String>, payload: Vec<u8>) {
    client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
}

/// Sends `body` as a command with `operator/reply` as its response topic.
pub(crate) async fn command(op: &AsyncClient, body: &str) {
    let props = PublishProperties {
        response_topic: Some("operator/reply".into()),
        correlation_data: Some("test".into()),
        ..Default::default()
    };
    op.publish_with_properties(
        "shopfloor/alarms/command",
        QoS::AtLeastOnce,
        false,
        body.to_owned(),
        props,
    )
    .await
    .unwrap();
}

/// An operator client subscribed to every alarm topic and its replies,
/// once the driver answers commands (it subscribes to them last).
pub(crate) async fn operator(broker: &Mosquitto, id: &str) -> (AsyncClient, EventLoop) {
    let (op, mut events) = client(broker, id);
    op.subscribe("shopfloor/alarms/#", QoS::AtLeastOnce).await.unwrap();
    op.subscribe("operator/reply", QoS::AtLeastOnce).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        command(
            &op,
            r#"{"command":"unshelve","rule":"none","source":"none","metric":"none","user":"test"}"#,
        )
        .await;
        let got = timeout(Duration::from_millis(300), async {
            loop {
                if let Ok(Event::Incoming(Packet::Publish(p))) = events.poll().await
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
            return (op, events);
        }
        assert!(Instant::now() < deadline, "the alerting driver did not answer within 20 s");
    }
}

/// A publisher of plain readings.
pub(crate) fn gateway(broker: &Mosquitto, id: &str) -> AsyncClient {
    let (feed, mut events) = client(broker, id);
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    feed
}
