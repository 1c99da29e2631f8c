//! The consumer against real Mosquittos: a broker list with fail-over.

use std::sync::Arc;
use std::time::Duration;

use shopfloor_mqtt::consumer::{LinkCounters, Outgoing};
use shopfloor_mqtt::{Broker, Consumer, ConsumerConfig, ConsumerEvent};
use shopfloor_testkit::Mosquitto;
use tokio::time::timeout;

fn mosquitto() -> Mosquitto {
    Mosquitto::start().expect("start mosquitto (apt-get install -y mosquitto)")
}

/// The next event, at most 20 s away.
async fn next(c: &mut Consumer) -> ConsumerEvent {
    timeout(Duration::from_secs(20), c.recv()).await.expect("an event within 20 s").expect("open")
}

/// Waits for a CONNACK, skipping anything else; its connection number.
async fn connected(c: &mut Consumer) -> u64 {
    loop {
        if let ConsumerEvent::Connected { connection, .. } = next(c).await {
            return connection;
        }
    }
}

/// Publishes `payload` on `t/x` through the consumer's own connection
/// (the broker echoes it back to the subscription) until it comes back.
async fn round_trip(c: &mut Consumer, payload: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        // Resent until the subscription is in place (SUBACK may follow).
        let _ = c.client().try_publish(Outgoing::new("t/x", payload.to_owned(), 1, false));
        let got = timeout(Duration::from_millis(300), c.recv()).await;
        if let Ok(Some(ConsumerEvent::Message(m))) = got
            && m.payload == payload.as_bytes()
        {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{payload:?} never came back");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_primary_fails_over_to_the_next_broker_and_back_round_the_list() {
    let mut a = mosquitto();
    let b = mosquitto();
    let mut config = ConsumerConfig::new("failover", Broker::new(a.host(), a.port()));
    config.connection.fallback = vec![Broker::new(b.host(), b.port())];
    config.filters = vec!["t/#".into()];
    config.backoff_min = Duration::from_millis(50);
    config.backoff_max = Duration::from_millis(200);
    let counters = Arc::new(LinkCounters::default());
    let mut c = Consumer::connect(config, Arc::clone(&counters));
    assert_eq!(connected(&mut c).await, 1);
    round_trip(&mut c, "on a").await;
    // The primary dies: the next connection is to the fallback.
    a.kill9();
    assert_eq!(connected(&mut c).await, 2);
    round_trip(&mut c, "on b").await;
    // Round the list: the primary again once the fallback fails too.
    a.start_again().unwrap();
    drop(b);
    assert_eq!(connected(&mut c).await, 3);
    round_trip(&mut c, "on a again").await;
    assert!(counters.failures.load(std::sync::atomic::Ordering::Relaxed) >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_at_the_first_address_is_no_obstacle() {
    let b = mosquitto();
    // A port nothing listens on.
    let dead = shopfloor_testkit::free_port().unwrap();
    let mut config = ConsumerConfig::new("second-best", Broker::new("127.0.0.1", dead));
    config.connection.fallback = vec![Broker::new(b.host(), b.port())];
    config.filters = vec!["t/#".into()];
    config.backoff_min = Duration::from_millis(50);
    let mut c = Consumer::connect(config, Arc::new(LinkCounters::default()));
    assert_eq!(connected(&mut c).await, 1);
    round_trip(&mut c, "via the fallback").await;
}
