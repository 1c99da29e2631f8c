//! `shopfloor-live` runs its Sparkplug host's timer: a `seq` gap that is
//! not filled within the reorder timeout ends in a rebirth request (before,
//! only alertd ran it, and a gap seen by the page was never answered).

use std::time::{Duration, Instant};

use prost::Message as _;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use shopfloor_sparkplug::proto;
use shopfloor_testkit::Mosquitto;

mod support;

fn payload(seq: u64, ms: u64, metrics: Vec<proto::Metric>) -> Vec<u8> {
    proto::Payload { timestamp: Some(ms), seq: Some(seq), metrics, ..Default::default() }
        .encode_to_vec()
}

fn metric(name: Option<&str>, ms: u64, v: f64) -> proto::Metric {
    proto::Metric {
        name: name.map(Into::into),
        alias: Some(1),
        timestamp: Some(ms),
        datatype: name.map(|_| 10),
        value: Some(proto::MetricValue::Double(v)),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seq_gap_seen_by_the_live_page_asks_for_a_rebirth() {
    let broker = Mosquitto::start().expect("start mosquitto (apt-get install -y mosquitto)");
    let dir = tempfile::tempdir().unwrap();
    let port = shopfloor_testkit::free_port().unwrap();
    let config = dir.path().join("live.toml");
    std::fs::write(
        &config,
        format!(
            "[mqtt]\nhost = \"{}\"\nport = {}\nclient_id = \"live-gap\"\n[live]\nlisten = \"127.0.0.1:{port}\"\n",
            broker.host(),
            broker.port()
        ),
    )
    .unwrap();
    let (mut live, addr) = support::start_live(&config, port);
    let (c, mut events) =
        AsyncClient::new(MqttOptions::new("edge-gap", broker.host(), broker.port()), 100);
    c.subscribe("spBv1.0/G/NCMD/gap", QoS::AtLeastOnce).await.unwrap();
    let now = || {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
            as u64
    };
    let bd = || proto::Metric {
        name: Some("bdSeq".into()),
        datatype: Some(4),
        value: Some(proto::MetricValue::Long(0)),
        ..Default::default()
    };
    // The birth, until the page shows the node (it subscribes as it
    // connects), so that what follows is a gap and not DATA before a birth.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let t = now();
        c.publish(
            "spBv1.0/G/NBIRTH/gap",
            QoS::AtLeastOnce,
            false,
            payload(0, t, vec![bd(), metric(Some("x"), t, 1.0)]),
        )
        .await
        .unwrap();
        let seen = tokio::time::timeout(Duration::from_millis(500), async {
            loop {
                let _ = events.poll().await;
            }
        });
        let _ = seen.await;
        if shopfloor_testkit::http_get(addr, "/snapshot")
            .is_ok_and(|(_, body)| body.contains("G/gap"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed the node:\n{}",
            live.log_tail(20)
        );
    }
    // DATA seq 1, then seq 3: seq 2 never comes.
    let t = now();
    for (seq, ms) in [(1, t + 1), (3, t + 3)] {
        c.publish(
            "spBv1.0/G/NDATA/gap",
            QoS::AtLeastOnce,
            false,
            payload(seq, ms, vec![metric(None, ms, 2.0)]),
        )
        .await
        .unwrap();
    }
    let sent = Instant::now();
    let rebirth = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if let Ok(Event::Incoming(Packet::Publish(p))) = events.poll().await {
                return p;
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!("no rebirth request within 15 s of the gap:\n{}", live.log_tail(20))
    });
    assert!(sent.elapsed() >= Duration::from_millis(1500), "asked before the 2 s reorder timeout");
    let p = proto::Payload::decode(&rebirth.payload[..]).unwrap();
    assert_eq!(p.metrics[0].name.as_deref(), Some("Node Control/Rebirth"));
    live.terminate(Duration::from_secs(10));
}
