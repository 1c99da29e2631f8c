//! A breach published to MQTT shows up in a real Alertmanager's
//! `/api/v2/alerts` (Debian's prometheus-alertmanager, group_wait 1 s),
//! with the Watchdog, and a return to normal resolves it there.

mod common;

use std::time::Duration;

use common::{RULES, broker, event, gateway, operator, plain, reading, send, spawn};
use rumqttc::v5::AsyncClient;
use serde_json::Value;
use shopfloor_alerting::mqtt::AlertDriver;
use shopfloor_testkit::{Alertmanager, Mosquitto};
use tokio::time::Instant;

/// The alerts Alertmanager holds, until `pred` holds for them (20 s at most).
async fn alerts_until(am: &Alertmanager, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = am.alerts().expect("GET /api/v2/alerts");
        let alerts: Vec<Value> = serde_json::from_str(&text).expect("a JSON list of alerts");
        if pred(&alerts) {
            return alerts;
        }
        assert!(Instant::now() < deadline, "Alertmanager holds {alerts:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A driver of `RULES` posting to `alertmanagers` (resending every
/// `resend`), once it has raised a breach of press m1: the driver, the
/// gateway that published the breach, and when it did.
async fn breach(
    broker: &Mosquitto,
    id: &str,
    alertmanagers: Vec<String>,
    resend: Duration,
) -> (AlertDriver, AsyncClient, Instant) {
    let mut config = plain(broker, id);
    config.alertmanagers = alertmanagers;
    config.resend = resend;
    let driver = spawn(RULES, config);
    let (_op, mut op_events) = operator(broker, "operator").await;
    let feed = gateway(broker, "gateway");
    let sent = Instant::now();
    send(&feed, M1, reading(185.0)).await;
    event(&mut op_events, |v| v["event"] == "raised").await;
    (driver, feed, sent)
}

/// Press m1's pressure.
const M1: &str = "shopfloor/plant1/press/m1/pressure";

fn named<'a>(alerts: &'a [Value], name: &str) -> Option<&'a Value> {
    alerts.iter().find(|a| a["labels"]["alertname"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breach_reaches_alertmanager_and_its_return_resolves_it() {
    let broker = broker();
    let am = Alertmanager::start()
        .expect("start alertmanager (apt-get install -y prometheus-alertmanager)");
    let (driver, feed, sent) =
        breach(&broker, "alertd", vec![am.url()], Duration::from_secs(2)).await;
    let alerts = alerts_until(&am, |a| {
        named(a, "press-pressure").is_some_and(|x| x["status"]["state"] == "active")
    })
    .await;
    println!("publish → active in Alertmanager: {:.0} ms", sent.elapsed().as_secs_f64() * 1000.0);
    let alert = named(&alerts, "press-pressure").unwrap();
    assert_eq!(alert["labels"]["source"], "plant1/press/m1");
    assert_eq!(alert["labels"]["condition"], "HH");
    assert_eq!(alert["labels"]["priority"], "900");
    assert!(
        alert["annotations"]["summary"].as_str().unwrap().contains("plant1/press/m1 pressure HH")
    );
    // The Watchdog comes with the first resend.
    alerts_until(&am, |a| named(a, "Watchdog").is_some()).await;

    // Back to normal: resolved (gone from the active list).
    send(&feed, M1, reading(100.0)).await;
    alerts_until(&am, |a| named(a, "press-pressure").is_none()).await;
    driver.shutdown().await.unwrap();
}

/// An HA pair where one member is black-holed (it takes connections and
/// never answers: 5 s per post, the client's timeout). The other gets each
/// alert at once, not after the black hole's timeout; the MQTT events are
/// not held up; and a flood of changes does not queue without bound for
/// the black hole (the lists its full queue refuses are counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_alertmanager_delays_nothing_and_queues_boundedly() {
    let broker = broker();
    let am = Alertmanager::start()
        .expect("start alertmanager (apt-get install -y prometheus-alertmanager)");
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let members = vec![format!("http://{}", hole.local_addr().unwrap()), am.url()];
    let (driver, feed, sent) = breach(&broker, "alertd-ha", members, Duration::from_secs(60)).await;
    alerts_until(&am, |a| named(a, "press-pressure").is_some()).await;
    let took = sent.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the live member got the alert after {took:?}: it waited for the black hole's 5 s timeout"
    );
    // A flood of changes on many machines: the events keep coming, the
    // black hole's queue stays bounded.
    for i in 0..600 {
        let t = format!("shopfloor/plant1/press/m{}/pressure", 2 + i % 300);
        let v = if (i / 300) % 2 == 0 { 185.0 } else { 100.0 };
        send(&feed, t, reading(v)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while driver.stats().events.load(std::sync::atomic::Ordering::Relaxed) < 600 {
        assert!(Instant::now() < deadline, "the events stalled behind the black hole");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dropped = driver.stats().alertmanager_dropped.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        dropped > 0,
        "600 changes within the black hole's first timeout must overflow its queue"
    );
    println!("{dropped} alert lists refused by the black hole's full queue");
    driver.shutdown().await.unwrap();
    drop(hole);
}
