//! The delivery contract on MQTT 3.1.1, against a broker that speaks only
//! that and is not Mosquitto (amqtt): a persistent session
//! (`clean_session = false`) and acks only after commit, so a crash
//! mid-stream loses nothing and duplicates nothing.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use shopfloor_ingest::{Ingest, IngestConfig, Input, Storage};
use shopfloor_mqtt::Protocol;
use shopfloor_schemas::{Batch, Codec, Reading, Timestamp, TopicTemplate, topic};
use shopfloor_testkit::Amqtt;
use tokio::time::{Instant, timeout};

mod support;

const T0: u64 = 1_795_737_600_000;
const N: u64 = 600;

fn config(broker: &Amqtt, database: String) -> IngestConfig {
    let mut c = IngestConfig::new(broker.host(), broker.port(), "ingest-311", database);
    c.mqtt.protocol = Protocol::V311;
    c.inputs =
        vec![Input::plain(TopicTemplate::parse(topic::defaults::READINGS).unwrap(), Codec::Json)];
    c.batch_readings = 100;
    c.batch_age = Duration::from_millis(50);
    c
}

/// Publishes readings `range` at QoS 1 over MQTT 3.1.1 (no content type:
/// the input's codec applies) and waits for every PUBACK; calls `midway`
/// once, halfway.
async fn publish(broker: &Amqtt, range: std::ops::Range<u64>, mut midway: impl FnMut()) {
    let mut o = MqttOptions::new("publisher-311", broker.host(), broker.port());
    o.set_clean_session(false);
    let (client, mut events) = AsyncClient::new(o, 100);
    let total = range.end - range.start;
    let sender = tokio::spawn(async move {
        for i in range {
            let b = Batch::new("ignored").with(Reading::new(
                format!("s{}", i % 10),
                Timestamp::from_unix_ms(T0 + i),
                i as f64,
            ));
            let topic = format!("shopfloor/plant1/press/m{}/s{}", i % 3, i % 10);
            let payload = Codec::Json.encode_batch(&b).unwrap();
            client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
        }
        client
    });
    let mut acked = 0;
    let done = timeout(Duration::from_secs(60), async {
        while acked < total {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    acked += 1;
                    if acked == total / 2 {
                        midway();
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("the publisher lost amqtt: {e}"),
            }
        }
    })
    .await;
    assert!(done.is_ok(), "only {acked} of {total} publishes acknowledged within 60 s");
    let _ = sender.await.unwrap().disconnect().await;
}

async fn subscribed(i: &Ingest) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while i.stats().link.subscribed.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "the ingest did not subscribe to amqtt within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_crash_on_mqtt_3_1_1_loses_and_duplicates_nothing() {
    let broker = Amqtt::start().unwrap_or_else(|e| panic!("start amqtt: {e}"));
    let pg = support::postgres(Storage::Native);
    let database = pg.connection_string();
    let first = Ingest::spawn(config(&broker, database.clone()));
    subscribed(&first).await;
    publish(&broker, 0..10, || {}).await;
    support::expect_rows(&pg, 10, 0).await;
    // Crash halfway through the stream: what was received and not
    // committed was not acked, and the broker keeps it for the session.
    let mut first = Some(first);
    publish(&broker, 10..N, || {
        if let Some(i) = first.take() {
            i.abort();
        }
    })
    .await;
    let second = Ingest::spawn(config(&broker, database.clone()));
    support::expect_rows(&pg, N as i64, 0).await;
    assert_eq!(
        second.stats().link.connects.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "one connection"
    );
    second.shutdown().await.unwrap();
}
