//! A hostile publisher through the real broker into `shopfloor-ingestd`,
//! `shopfloor-alertd` and `shopfloor-live` at once: over 1 000 bad messages
//! of every kind (testkit's `Hostile`) mixed with good ones, on Sparkplug
//! and plain topics. Every good reading is stored within 5 s of its
//! publish, every bad message is one dead letter (counted exactly), and all
//! three daemons are still running and answering at the end.

use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use shopfloor_testkit::{Hostile, Mosquitto, Postgres};
use support::{Configs, Stack, answers, limit_rule};

mod support;

/// Messages published; half of them bad.
const MESSAGES: u64 = 2_400;
/// Published over about this long.
const SPREAD: Duration = Duration::from_secs(12);
/// The promise: a good reading is in the table this soon after its publish.
const FRESH: Duration = Duration::from_secs(5);

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.map(|r| r.get(0)).unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_publisher_stalls_nothing_and_every_bad_message_is_a_dead_letter() {
    let broker = Mosquitto::builder()
        .persistence(true)
        .max_queued_messages(100_000)
        .start()
        .expect("start mosquitto (apt-get install -y mosquitto)");
    let pg = Postgres::start().expect("start postgresql (apt-get install -y postgresql)");
    let pg_url = pg.connection_string();
    let ingest = format!(
        "client_id = \"ingest-h\"\n[postgres]\nconnection = \"{pg_url}\"\n\
         [ingest]\nplain = true\nsparkplug = true\nbatch_ms = 100\nmax_readings_per_message = 10000\n"
    );
    let alertd = format!(
        "[alerting]\nrules = \"rules.toml\"\nplain = true\nsparkplug = true\n\
         [journal]\nconnection = \"{pg_url}\"\n"
    );
    let mut stack = Stack::start(
        &broker,
        &Configs {
            ingest: &ingest,
            alertd: &alertd,
            rules: &limit_rule("hostile-pressure", "hostile/a/*", "pressure", (180.0, 160.0)),
            live: "client_id = \"live-h\"",
            // The plain filter, and Sparkplug's two (its namespace and STATE).
            ingest_subscriptions: 3,
        },
    );
    let db = support::pg_client(&pg.connection_string()).await;
    const GOOD: &str = "SELECT count(*) FROM shopfloor.readings WHERE source LIKE 'hostile/%' OR source = 'H/good'";

    let mut o = MqttOptions::new("hostile", broker.host(), broker.port());
    o.set_max_packet_size(Some(16 << 20));
    let (client, mut events) = AsyncClient::new(o, 1000);
    let acks = tokio::spawn(async move {
        let mut n = 0_u64;
        while n < MESSAGES {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => n += 1,
                Ok(_) => {}
                Err(e) => panic!("the publisher lost the broker: {e}"),
            }
        }
    });
    let mut hostile = Hostile::new("H", 0x5eed);
    // (when published, good readings published so far)
    let mut published: Vec<(Instant, i64)> = Vec::new();
    let (mut good, mut bad) = (0_i64, 0_i64);
    let start = Instant::now();
    let mut worst = Duration::ZERO;
    for k in 0..MESSAGES {
        let m = hostile.next(now_ms());
        good += m.good.len() as i64;
        bad += i64::from(m.bad.is_some());
        client.publish(m.topic, QoS::AtLeastOnce, false, m.payload).await.unwrap();
        published.push((Instant::now(), good));
        // Paced, and checking freshness as it goes.
        let due = start + SPREAD.mul_f64(k as f64 / MESSAGES as f64);
        if k % 100 == 0 {
            let stored = count(&db, GOOD).await;
            let owed =
                published.iter().take_while(|(t, _)| t.elapsed() > FRESH).last().map_or(0, |p| p.1);
            assert!(
                stored >= owed,
                "{stored} good readings stored, {owed} were published over 5 s ago"
            );
        }
        tokio::time::sleep_until(due.into()).await;
    }
    assert!(bad >= 1_000, "{bad} bad messages: the mix must hold at least 1 000");
    tokio::time::timeout(Duration::from_secs(30), acks)
        .await
        .expect("every publish acknowledged")
        .unwrap();
    let last = Instant::now();
    loop {
        let (stored, dead) = (
            count(&db, GOOD).await,
            count(&db, "SELECT count(*) FROM shopfloor.dead_letters").await,
        );
        if stored == good && dead == bad {
            worst = worst.max(last.elapsed());
            break;
        }
        assert!(
            last.elapsed() < FRESH,
            "{stored} of {good} good readings and {dead} of {bad} dead letters within 5 s of the last publish"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "{good} good readings stored, {bad} bad messages dead-lettered; the last stored {worst:?} after its publish"
    );
    // Exactly: nothing more arrives.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(&db, "SELECT count(*) FROM shopfloor.dead_letters").await, bad);
    assert_eq!(count(&db, GOOD).await, good);
    let distinct =
        count(&db, "SELECT count(DISTINCT (source, metric, time)) FROM shopfloor.readings").await;
    assert_eq!(distinct, count(&db, "SELECT count(*) FROM shopfloor.readings").await);

    // All three alive and answering, and alertd still raises alarms.
    stack.assert_running();
    assert!(
        answers(stack.ingest_port, "/metrics")
            && answers(stack.alert_port, "/metrics")
            && answers(stack.live_port, "/snapshot")
    );
    let (c, mut ev) =
        AsyncClient::new(MqttOptions::new("watcher", broker.host(), broker.port()), 100);
    c.subscribe("shopfloor/alarms/events", QoS::AtLeastOnce).await.unwrap();
    let breach = format!(
        r#"{{"readings": [{{"metric": "pressure", "timestamp": {}, "value": 185.0}}]}}"#,
        now_ms()
    );
    let e = support::event_after(
        &mut ev,
        (Duration::from_secs(20), Duration::from_millis(500)),
        async || {
            let topic = "shopfloor/hostile/a/m1/pressure";
            c.publish(topic, QoS::AtLeastOnce, false, breach.clone()).await.unwrap();
        },
        |_| true,
        || {
            format!(
                "alertd raised nothing within 20 s after the flood:\n{}",
                stack.alertd.log_tail(30)
            )
        },
    )
    .await;
    assert_eq!(e["event"], "raised");
    stack.stop();
}
