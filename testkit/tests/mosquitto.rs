//! Tests of `Mosquitto` against the real broker.

use std::path::Path;
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{ConnAck, Packet, PubAckReason, Publish};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions};
use rumqttc::{TlsConfiguration, Transport};
use shopfloor_testkit::{Error, Mosquitto, Pki};
use support::{assert_not_installed, assert_server_dies_with_test_process};
use tokio::time::timeout;

mod support;

const WAIT: Duration = Duration::from_secs(10);

fn options(id: &str, port: u16) -> MqttOptions {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    options
}

/// Connects and returns the CONNACK, or the connection error.
async fn connect(
    options: MqttOptions,
) -> Result<(AsyncClient, EventLoop, ConnAck), ConnectionError> {
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    loop {
        let event = timeout(WAIT, eventloop.poll()).await.expect("no MQTT event within 10 s")?;
        if let Event::Incoming(Packet::ConnAck(ack)) = event {
            return Ok((client, eventloop, ack));
        }
    }
}

/// Polls until an incoming packet matches `pick`.
async fn next<T>(eventloop: &mut EventLoop, mut pick: impl FnMut(Packet) -> Option<T>) -> T {
    loop {
        let event = timeout(WAIT, eventloop.poll()).await.expect("no MQTT event within 10 s");
        if let Event::Incoming(packet) = event.expect("connection failed")
            && let Some(found) = pick(packet)
        {
            return found;
        }
    }
}

/// Polls until a PUBLISH arrives.
async fn next_publish(eventloop: &mut EventLoop) -> Publish {
    next(eventloop, |p| match p {
        Packet::Publish(publish) => Some(publish),
        _ => None,
    })
    .await
}

fn tls_options(id: &str, port: u16, config: std::sync::Arc<rustls::ClientConfig>) -> MqttOptions {
    let mut options = options(id, port);
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
    options
}

/// Whether a process exists (zombies included: they are not reaped yet).
fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn drop_stops_and_reaps_the_broker() {
    let broker = Mosquitto::start().expect("start mosquitto");
    let pid = broker.pid().expect("a running broker has a pid");
    assert!(process_exists(pid));
    let addr = broker.addr();
    drop(broker);
    assert!(!process_exists(pid), "broker {pid} still exists (or is an unreaped zombie)");
    assert!(std::net::TcpStream::connect(addr).is_err(), "port still accepts connections");
}

#[test]
fn two_brokers_get_different_ports() {
    let a = Mosquitto::start().expect("start mosquitto a");
    let b = Mosquitto::start().expect("start mosquitto b");
    assert_ne!(a.port(), b.port());
    assert_ne!(a.pid(), b.pid());
    assert_eq!(a.host(), "127.0.0.1");
}

#[tokio::test]
async fn publish_and_receive_over_plain_mqtt() {
    let broker = Mosquitto::start().expect("start mosquitto");
    let (client, mut eventloop, _) =
        connect(options("round-trip", broker.port())).await.expect("connect");
    client.subscribe("testkit/echo", QoS::AtLeastOnce).await.unwrap();
    next(&mut eventloop, |p| matches!(p, Packet::SubAck(_)).then_some(())).await;
    client.publish("testkit/echo", QoS::AtLeastOnce, false, "hello").await.unwrap();
    let publish = next_publish(&mut eventloop).await;
    assert_eq!(&publish.payload[..], b"hello");
}

#[tokio::test]
async fn tls_connects_with_the_generated_ca_and_fails_with_another() {
    let broker = Mosquitto::builder().tls(true).start().expect("start mosquitto with TLS");
    let port = broker.tls_port().expect("TLS port");
    assert_ne!(port, broker.port());
    for path in [broker.ca_cert_path(), broker.client_cert_path(), broker.client_key_path()] {
        assert!(path.expect("TLS file path").is_file());
    }

    let trusted = broker.tls_client_config().unwrap();
    let (_, _, ack) = connect(tls_options("tls-ok", port, trusted)).await.expect("TLS connect");
    assert!(!ack.session_present);

    let stranger = Pki::generate().unwrap().client_config().unwrap();
    let refused = connect(tls_options("tls-bad", port, stranger)).await;
    assert!(matches!(refused, Err(ConnectionError::Tls(_))), "{:?}", refused.err());
}

#[tokio::test]
async fn require_certificate_demands_the_client_certificate() {
    let broker = Mosquitto::builder().require_certificate(true).start().expect("start mosquitto");
    let port = broker.tls_port().expect("TLS port");
    let with_cert = broker.tls_client_config_with_cert().unwrap();
    connect(tls_options("with-cert", port, with_cert)).await.expect("connect with client cert");
    let without = broker.tls_client_config().unwrap();
    let refused = connect(tls_options("without-cert", port, without)).await;
    assert!(refused.is_err(), "connected without a client certificate");
}

#[tokio::test]
async fn password_file_accepts_right_and_refuses_wrong_credentials() {
    let broker = Mosquitto::builder()
        .user("alice", "s3cret")
        .user("bob", "hunter2")
        .start()
        .expect("start mosquitto");
    for (user, password) in [("alice", "s3cret"), ("bob", "hunter2")] {
        let mut opts = options(user, broker.port());
        opts.set_credentials(user, password);
        connect(opts).await.expect("right credentials");
    }
    let mut wrong = options("mallory", broker.port());
    wrong.set_credentials("alice", "wrong");
    let refused = connect(wrong).await;
    assert!(matches!(refused, Err(ConnectionError::ConnectionRefused(_))), "{:?}", refused.err());
    let anonymous = connect(options("anonymous", broker.port())).await;
    assert!(
        matches!(anonymous, Err(ConnectionError::ConnectionRefused(_))),
        "{:?}",
        anonymous.err()
    );
}

#[tokio::test]
async fn acl_denies_what_it_does_not_grant() {
    let broker = Mosquitto::builder()
        .user("alice", "s3cret")
        .acl("user alice\ntopic readwrite allowed/#\n")
        .start()
        .expect("start mosquitto");
    let mut opts = options("alice", broker.port());
    opts.set_credentials("alice", "s3cret");
    let (client, mut eventloop, _) = connect(opts).await.expect("connect");
    client.subscribe("#", QoS::AtLeastOnce).await.unwrap();
    next(&mut eventloop, |p| matches!(p, Packet::SubAck(_)).then_some(())).await;

    client.publish("denied/x", QoS::AtLeastOnce, false, "no").await.unwrap();
    let reason = next(&mut eventloop, |p| match p {
        Packet::PubAck(ack) => Some(ack.reason),
        _ => None,
    })
    .await;
    assert_eq!(reason, PubAckReason::NotAuthorized);

    // Delivery keeps order: had denied/x been routed, it would arrive first.
    client.publish("allowed/x", QoS::AtLeastOnce, false, "yes").await.unwrap();
    let publish = next_publish(&mut eventloop).await;
    assert_eq!(&publish.topic[..], b"allowed/x");
}

#[tokio::test]
async fn limits_reach_mqtt5_clients() {
    let broker = Mosquitto::builder()
        .max_inflight_messages(7)
        .max_queued_messages(50)
        .max_packet_size(4096)
        .start()
        .expect("start mosquitto");
    let config = std::fs::read_to_string(broker.config_path()).unwrap();
    assert!(config.contains("max_queued_messages 50"), "{config}");
    let (_, _, ack) = connect(options("limits", broker.port())).await.expect("connect");
    let properties = ack.properties.expect("CONNACK properties");
    assert_eq!(properties.receive_max, Some(7));
    assert_eq!(properties.max_packet_size, Some(4096));
}

#[tokio::test]
async fn restart_keeps_the_port_and_persisted_retained_messages() {
    let mut broker =
        Mosquitto::builder().persistence(true).autosave_interval(60).start().expect("start");
    let port = broker.port();
    let (client, mut eventloop, _) = connect(options("writer", port)).await.expect("connect");
    client.publish("testkit/retained", QoS::AtLeastOnce, true, "kept").await.unwrap();
    next(&mut eventloop, |p| matches!(p, Packet::PubAck(_)).then_some(())).await;
    drop((client, eventloop));
    let old_pid = broker.pid();

    broker.restart().expect("restart");
    assert_eq!(broker.port(), port);
    assert_ne!(broker.pid(), old_pid);
    assert!(broker.dir().join("data/mosquitto.db").is_file());

    let (client, mut eventloop, _) = connect(options("reader", port)).await.expect("reconnect");
    client.subscribe("testkit/retained", QoS::AtLeastOnce).await.unwrap();
    let publish = next_publish(&mut eventloop).await;
    assert!(publish.retain);
    assert_eq!(&publish.payload[..], b"kept");
}

#[tokio::test]
async fn kill9_then_start_again_on_the_same_port() {
    let mut broker = Mosquitto::start().expect("start mosquitto");
    let port = broker.port();
    let (_client, mut eventloop, _) = connect(options("victim", port)).await.expect("connect");
    let pid = broker.pid().unwrap();

    broker.kill9();
    assert!(!process_exists(pid));
    assert!(!broker.is_running());
    let lost = timeout(WAIT, eventloop.poll()).await.expect("no event within 10 s");
    assert!(lost.is_err(), "the client did not notice the broker's death: {lost:?}");

    broker.start_again().expect("start again");
    assert_eq!(broker.port(), port);
    assert!(broker.is_running());
    connect(options("survivor", port)).await.expect("connect after start_again");
}

#[test]
fn missing_binary_names_the_install_command() {
    let error = Mosquitto::builder().binary("/nonexistent/mosquitto").start().unwrap_err();
    let message = "mosquitto not found at /nonexistent/mosquitto: install it with `apt-get install -y mosquitto`";
    assert_not_installed(&error, "mosquitto", message);
}

#[test]
fn a_failed_start_reports_the_log_tail() {
    let error = Mosquitto::builder().config_line("no_such_option true").start().unwrap_err();
    let Error::Start { server, log_tail, .. } = &error else { panic!("unexpected error: {error}") };
    assert_eq!(*server, "mosquitto");
    assert!(log_tail.contains("no_such_option"), "{error}");
}

#[test]
fn a_broker_outlives_the_thread_that_started_it() {
    // PR_SET_PDEATHSIG follows the spawning thread; testkit spawns from its own
    // long-lived thread, so a test thread (or tokio worker) may end first.
    let mut broker =
        std::thread::spawn(|| Mosquitto::start().expect("start mosquitto")).join().unwrap();
    // A polled condition, not a sleep: a broker killed at thread exit would
    // be gone within milliseconds; give it a real chance to die.
    let deadline = Instant::now() + Duration::from_millis(200);
    while Instant::now() < deadline {
        assert!(broker.is_running(), "the broker died with its starting thread");
        std::thread::yield_now();
    }
    assert!(std::net::TcpStream::connect(broker.addr()).is_ok());
}

#[test]
fn the_broker_dies_when_the_test_process_is_killed() {
    let test = "the_broker_dies_when_the_test_process_is_killed";
    assert_server_dies_with_test_process(test, "TESTKIT_MOSQUITTO_CHILD", || {
        let broker = Mosquitto::start().expect("start mosquitto");
        let pid = broker.pid().unwrap();
        (broker, pid)
    });
}
