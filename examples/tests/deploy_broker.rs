//! The shipped broker configuration (`examples/deploy/mosquitto/`) as a
//! plant runs it, with certificates from `examples/deploy/make-certs`:
//! each ACL rule both ways (an allowed publish is acknowledged, a denied one
//! refused; an allowed read is delivered, a denied one withheld), anonymous
//! clients refused, TLS 1.1 refused, a certificate from another CA
//! refused, and a gateway publishing as another edge node refused.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet, PubAckReason, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use rumqttc::{TlsConfiguration, Transport};
use shopfloor_mqtt::tls_client_config;
use shopfloor_testkit::free_port;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");
const WAIT: Duration = Duration::from_secs(10);

/// Mosquitto with the shipped configuration, its paths moved to a
/// temporary folder and its listeners to free loopback ports.
struct Broker {
    child: Child,
    dir: tempfile::TempDir,
    machines: u16,
    people: u16,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Broker {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = |p: &str| dir.path().join(p);
        let make_certs = Path::new(DEPLOY).join("make-certs");
        run(Command::new("bash").arg(&make_certs).arg(path("pki")).args([
            "modbus-gw",
            "opcua-gw",
            "ingest",
            "alerting",
            "live",
        ]));
        // Another CA's client certificate, named like a real gateway.
        run(Command::new("bash").arg(&make_certs).arg(path("other")).arg("modbus-gw"));
        run(Command::new("mosquitto_passwd")
            .args(["-c", "-b"])
            .arg(path("mosquitto.passwd"))
            .args(["operator", "op-secret"]));
        std::fs::copy(Path::new(DEPLOY).join("mosquitto/mosquitto.acl"), path("mosquitto.acl"))
            .unwrap();
        std::fs::create_dir(path("data")).unwrap();
        let (machines, people) = (free_port().unwrap(), free_port().unwrap());
        let shipped =
            std::fs::read_to_string(Path::new(DEPLOY).join("mosquitto/mosquitto.conf")).unwrap();
        for needle in
            ["listener 8883\n", "listener 8884\n", "/etc/shopfloor", "/var/lib/mosquitto/"]
        {
            assert!(shipped.contains(needle), "the shipped config has {needle:?}");
        }
        let mut conf = shipped
            .replace("listener 8883\n", &format!("listener {machines} 127.0.0.1\n"))
            .replace("listener 8884\n", &format!("listener {people} 127.0.0.1\n"))
            .replace("/etc/shopfloor", &dir.path().display().to_string())
            .replace("/var/lib/mosquitto/", &format!("{}/", path("data").display()));
        conf.push_str(&format!("log_dest file {}\n", path("mosquitto.log").display()));
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            conf.push_str("user root\n");
        }
        std::fs::write(path("mosquitto.conf"), conf).unwrap();
        let child = Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(path("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto (apt-get install -y mosquitto)");
        let broker = Self { child, dir, machines, people };
        let deadline = Instant::now() + WAIT;
        for port in [machines, people] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "mosquitto did not listen: {}", broker.log());
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        broker
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    fn pki(&self, file: &str) -> PathBuf {
        self.dir.path().join("pki").join(file)
    }

    /// TLS settings presenting `who`'s certificate (from `pki` or `other`).
    fn machine_tls(&self, ca_dir: &str, who: &str) -> Arc<rustls::ClientConfig> {
        let d = self.dir.path().join(ca_dir);
        tls_client_config(
            &self.pki("ca.crt"),
            Some((&d.join(format!("{who}.crt")), &d.join(format!("{who}.key")))),
        )
        .unwrap()
    }
}

/// (reader, filter, writer, [(topic, delivered)]): see the test.
type ReadCase<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, bool)]);

/// How a connection attempt ended.
#[derive(Debug, PartialEq)]
enum Login {
    Refused(String),
}

struct Client {
    client: AsyncClient,
    events: rumqttc::v5::EventLoop,
}

async fn connect(
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    login: Option<(&str, &str)>,
) -> Result<Client, Login> {
    let id = format!("t{}", free_port().unwrap());
    connect_as(port, tls, login, &id).await.map(|(c, _)| c)
}

/// Connects with client id `id` and a persistent session (an hour), or a
/// clean one that ends with the connection if `id` is empty: the client
/// and whether the broker resumed a session.
async fn connect_as(
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    login: Option<(&str, &str)>,
    id: &str,
) -> Result<(Client, bool), Login> {
    let mut o = MqttOptions::new(id, "localhost", port);
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    if !id.is_empty() {
        o.set_clean_start(false).set_session_expiry_interval(Some(3600));
    }
    if let Some((u, p)) = login {
        o.set_credentials(u, p);
    }
    let (client, mut events) = AsyncClient::new(o, 10);
    let outcome = tokio::time::timeout(WAIT, async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(a))) if a.code == ConnectReturnCode::Success => {
                    return Ok(a.session_present);
                }
                Ok(Event::Incoming(Packet::ConnAck(a))) => {
                    return Err(Login::Refused(format!("{:?}", a.code)));
                }
                Ok(_) => {}
                Err(e) => return Err(Login::Refused(e.to_string())),
            }
        }
    })
    .await
    .expect("an answer to CONNECT within 10 s");
    outcome.map(|resumed| (Client { client, events }, resumed))
}

impl Client {
    /// Publishes at QoS 1: `true` if the broker accepted it.
    async fn publish(&mut self, topic: &str) -> bool {
        self.client.publish(topic, QoS::AtLeastOnce, false, "x").await.unwrap();
        tokio::time::timeout(WAIT, async {
            loop {
                match self.events.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(a))) => {
                        return matches!(
                            a.reason,
                            PubAckReason::Success | PubAckReason::NoMatchingSubscribers
                        );
                    }
                    Ok(_) => {}
                    Err(e) => panic!("publish to {topic}: {e}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no PUBACK for {topic} within 10 s"))
    }

    /// The topics received up to and including `marker` (within 10 s).
    async fn received_until(&mut self, marker: &str) -> Vec<String> {
        let mut got = Vec::new();
        tokio::time::timeout(WAIT, async {
            loop {
                match self.events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let topic = String::from_utf8_lossy(&p.topic).into_owned();
                        let last = topic == marker;
                        got.push(topic);
                        if last {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => panic!("reading: {e}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{marker} did not arrive within 10 s; got {got:?}"));
        got
    }

    /// Subscribes at QoS 1: `true` if the broker granted it.
    async fn subscribe(&mut self, filter: &str) -> bool {
        self.client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        tokio::time::timeout(WAIT, async {
            loop {
                match self.events.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(a))) => {
                        return a
                            .return_codes
                            .iter()
                            .all(|c| matches!(c, SubscribeReasonCode::Success(_)));
                    }
                    Ok(_) => {}
                    Err(e) => panic!("subscribe to {filter}: {e}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no SUBACK for {filter} within 10 s"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_acl_holds_both_ways() {
    let broker = Broker::start();
    // Publishing, (who, topic, allowed): the broker answers each QoS 1
    // PUBLISH with success or "not authorized".
    let matrix: &[(&str, &str, &str, bool)] = &[
        // A gateway: its own Sparkplug topics, in any group…
        ("modbus-gw", "pub", "spBv1.0/Plant1/NBIRTH/modbus-gw", true),
        ("modbus-gw", "pub", "spBv1.0/Plant1/NDATA/modbus-gw", true),
        ("modbus-gw", "pub", "spBv1.0/Plant1/NDEATH/modbus-gw", true),
        ("modbus-gw", "pub", "spBv1.0/Plant1/DBIRTH/modbus-gw/press-1", true),
        ("modbus-gw", "pub", "spBv1.0/Plant1/DDATA/modbus-gw/press-1", true),
        ("modbus-gw", "pub", "spBv1.0/Plant1/DDEATH/modbus-gw/press-1", true),
        ("modbus-gw", "pub", "shopfloor/writes/Plant1/modbus-gw", true),
        // …never another edge node's, nor its commands, nor anything else.
        ("modbus-gw", "pub", "spBv1.0/Plant1/NBIRTH/opcua-gw", false),
        ("modbus-gw", "pub", "spBv1.0/Plant1/DDATA/opcua-gw/press-1", false),
        ("modbus-gw", "pub", "spBv1.0/Plant1/NCMD/opcua-gw", false),
        ("modbus-gw", "pub", "spBv1.0/Plant1/DCMD/modbus-gw/press-1", false),
        ("modbus-gw", "pub", "spBv1.0/STATE/shopfloor-ingest", false),
        ("modbus-gw", "pub", "shopfloor/writes/Plant1/opcua-gw", false),
        ("modbus-gw", "pub", "shopfloor/alarms/state/x", false),
        // The ingest reads what it stores, asks for rebirths, owns its STATE.
        ("ingest", "pub", "spBv1.0/Plant1/NCMD/modbus-gw", true),
        ("ingest", "pub", "spBv1.0/STATE/shopfloor-ingest", true),
        ("ingest", "pub", "spBv1.0/Plant1/NDATA/modbus-gw", false),
        ("ingest", "pub", "spBv1.0/Plant1/DCMD/modbus-gw/press-1", false),
        ("ingest", "pub", "shopfloor/alarms/events/x", false),
        // Alerting reads readings, publishes alarms, takes operator commands.
        ("alerting", "pub", "shopfloor/alarms/events/press-1.temp", true),
        ("alerting", "pub", "shopfloor/alarms/state/press-1.temp", true),
        ("alerting", "pub", "shopfloor/alarms/command/press-1.temp", false),
        ("alerting", "pub", "spBv1.0/Plant1/DDATA/modbus-gw/press-1", false),
        ("alerting", "pub", "spBv1.0/Plant1/DCMD/modbus-gw/press-1", false),
        // The live page: rebirths and alarm commands, nothing else.
        ("live", "pub", "spBv1.0/Plant1/NCMD/modbus-gw", true),
        ("live", "pub", "shopfloor/alarms/command", true),
        ("live", "pub", "spBv1.0/Plant1/DCMD/modbus-gw/press-1", false),
        ("live", "pub", "spBv1.0/Plant1/DDATA/modbus-gw/press-1", false),
        ("live", "pub", "shopfloor/alarms/state/press-1.temp", false),
        // Operators (password): watch, command alarms, write setpoints.
        ("operator", "pub", "shopfloor/alarms/command/press-1.temp", true),
        ("operator", "pub", "spBv1.0/Plant1/DCMD/modbus-gw/press-1", true),
        ("operator", "pub", "shopfloor/alarms/state/press-1.temp", false),
        ("operator", "pub", "spBv1.0/Plant1/NBIRTH/modbus-gw", false),
        ("operator", "pub", "spBv1.0/Plant1/DDATA/modbus-gw/press-1", false),
        // No role is an edge node, not even one named after itself (the
        // gateway patterns apply to every client).
        ("operator", "pub", "spBv1.0/Plant1/NBIRTH/operator", false),
        ("operator", "pub", "spBv1.0/Plant1/DDATA/operator/press-1", false),
        ("operator", "pub", "shopfloor/writes/Plant1/operator", false),
        ("ingest", "pub", "spBv1.0/Plant1/NDATA/ingest", false),
        ("ingest", "pub", "spBv1.0/Plant1/DBIRTH/ingest/press-1", false),
        ("alerting", "pub", "spBv1.0/Plant1/NBIRTH/alerting", false),
        ("alerting", "pub", "spBv1.0/Plant1/DDEATH/alerting/press-1", false),
        ("live", "pub", "spBv1.0/Plant1/NDEATH/live", false),
        ("live", "pub", "shopfloor/writes/Plant1/live", false),
    ];
    let mut wrong = Vec::new();
    for &(who, _, topic, allowed) in matrix {
        let mut c = login(&broker, who).await;
        let done = c.publish(topic).await;
        println!("{who:>9} pub  {topic:<45} {}", if done { "allowed" } else { "refused" });
        if done != allowed {
            wrong.push(format!("{who} publishes {topic}: {done} but should be {allowed}"));
        }
    }

    // Reading: Mosquitto 2.0 grants every SUBSCRIBE and applies the read
    // ACL to each message it delivers. So: `reader` subscribes to `filter`,
    // `writer` publishes the topics in order, the last one a marker the
    // reader may read; once the marker arrives, what came before it shows
    // what the reader was allowed to read (a client's messages reach each
    // subscriber in the order sent).
    // (reader, filter, writer, [(topic, delivered)])
    let reads: &[ReadCase<'_>] = &[
        (
            "modbus-gw",
            "spBv1.0/Plant1/DCMD/+/+",
            "operator",
            &[
                ("spBv1.0/Plant1/DCMD/opcua-gw/press-1", false),
                ("spBv1.0/Plant1/DCMD/modbus-gw/press-1", true),
            ],
        ),
        (
            "modbus-gw",
            "spBv1.0/#",
            "ingest",
            &[
                ("spBv1.0/Plant1/NCMD/opcua-gw", false),
                ("spBv1.0/STATE/shopfloor-ingest", true),
                ("spBv1.0/Plant1/NCMD/modbus-gw", true),
            ],
        ),
        (
            "opcua-gw",
            "spBv1.0/Plant1/DCMD/+/+",
            "operator",
            &[
                ("spBv1.0/Plant1/DCMD/modbus-gw/press-1", false),
                ("spBv1.0/Plant1/DCMD/opcua-gw/press-1", true),
            ],
        ),
        (
            "ingest",
            "#",
            "operator",
            &[
                ("shopfloor/alarms/command/press-1.temp", false),
                ("spBv1.0/Plant1/DCMD/modbus-gw/press-1", true),
            ],
        ),
        (
            "ingest",
            "#",
            "modbus-gw",
            &[
                ("shopfloor/writes/Plant1/modbus-gw", false),
                ("spBv1.0/Plant1/DDATA/modbus-gw/press-1", true),
            ],
        ),
        (
            "alerting",
            "#",
            "operator",
            &[
                ("shopfloor/alarms/command/press-1.temp", true),
                ("spBv1.0/Plant1/DCMD/modbus-gw/press-1", true),
            ],
        ),
        (
            "live",
            "#",
            "alerting",
            &[
                ("shopfloor/alarms/events/press-1.temp", false),
                ("shopfloor/alarms/state/press-1.temp", true),
            ],
        ),
        (
            "live",
            "#",
            "modbus-gw",
            &[
                ("shopfloor/writes/Plant1/modbus-gw", false),
                ("spBv1.0/Plant1/DDATA/modbus-gw/press-1", true),
            ],
        ),
        (
            "operator",
            "#",
            "modbus-gw",
            &[
                ("shopfloor/writes/Plant1/modbus-gw", true),
                ("spBv1.0/Plant1/DDATA/modbus-gw/press-1", true),
            ],
        ),
    ];
    for &(reader, filter, writer, topics) in reads {
        let mut r = login(&broker, reader).await;
        assert!(r.subscribe(filter).await, "{reader} subscribes to {filter}");
        let mut w = login(&broker, writer).await;
        for (topic, _) in topics {
            assert!(w.publish(topic).await, "{writer} may publish {topic}");
        }
        let (marker, _) = topics[topics.len() - 1];
        let got = r.received_until(marker).await;
        for &(topic, delivered) in topics {
            let done = got.iter().any(|t| t == topic);
            println!(
                "{reader:>9} read {topic:<45} {}",
                if done { "delivered" } else { "withheld" }
            );
            if done != delivered {
                wrong.push(format!("{reader} reads {topic}: {done} but should be {delivered}"));
            }
        }
    }
    assert!(wrong.is_empty(), "the ACL does not hold:\n{}", wrong.join("\n"));
}

/// `who` logged in: machines with their certificate, the operator with
/// the password.
async fn login(broker: &Broker, who: &str) -> Client {
    login_as(broker, who, &format!("t{}", free_port().unwrap())).await.0
}

/// `who` logged in asking for client id `id`, with a persistent session;
/// and whether the broker resumed one.
async fn login_as(broker: &Broker, who: &str, id: &str) -> (Client, bool) {
    if who == "operator" {
        let tls = tls_client_config(&broker.pki("ca.crt"), None).unwrap();
        connect_as(broker.people, tls, Some(("operator", "op-secret")), id).await
    } else {
        connect_as(broker.machines, broker.machine_tls("pki", who), None, id).await
    }
    .unwrap_or_else(|e| panic!("{who} could not log in: {e:?}\n{}", broker.log()))
}

/// Client ids are bound to identities (`use_username_as_clientid`): a
/// client that asks for another's id, or for its name, neither closes that
/// client's connection nor resumes its persistent session. Both ways
/// between the listeners (an operator's password onto the ingest's id, the
/// ingest's certificate onto an operator's console) and between machines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_takes_over_another_ones_id() {
    let broker = Broker::start();
    // (victim, the id it asks for, attacker, what the victim reads, who
    // writes it).
    let data = "spBv1.0/Plant1/NDATA/modbus-gw";
    let command = "spBv1.0/Plant1/DCMD/modbus-gw/press-1";
    let cases = [
        ("ingest", "shopfloor-ingest-1", "operator", data, "modbus-gw"),
        ("operator", "op-console", "ingest", data, "modbus-gw"),
        ("ingest", "shopfloor-ingest-1", "opcua-gw", data, "modbus-gw"),
        ("modbus-gw", "modbus-gw", "operator", command, "operator"),
    ];
    for (victim, id, attacker, topic, writer) in cases {
        let (mut v, _) = login_as(&broker, victim, id).await;
        assert!(v.subscribe(topic).await, "{victim} subscribes to {topic}");
        for stolen in [id, victim] {
            // A clean session first: the attacker's own persistent session
            // (from the last round) is gone, so a resumed session can only
            // be the victim's.
            drop(login_as(&broker, attacker, "").await);
            let (_attacker, resumed) = login_as(&broker, attacker, stolen).await;
            assert!(
                !resumed,
                "{attacker} asking for id {stolen:?} resumed {victim}'s session\n{}",
                broker.log()
            );
            // Taken over, the victim's connection would have been closed
            // before the CONNACK above: it reads on, on the same connection
            // (`received_until` fails on a closed one).
            let mut w = login(&broker, writer).await;
            assert!(w.publish(topic).await, "{writer} publishes {topic}");
            let got = v.received_until(topic).await;
            assert_eq!(got.last().map(String::as_str), Some(topic));
            println!("{attacker:>9} as {stolen:<20} {victim} kept its connection and session");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_are_refused() {
    let broker = Broker::start();
    let ca_only = || tls_client_config(&broker.pki("ca.crt"), None).unwrap();
    // No certificate on the machines' listener.
    let e = connect(broker.machines, ca_only(), None).await.err();
    assert!(matches!(e, Some(Login::Refused(_))), "no certificate: {e:?}");
    // A certificate from another CA, with a real gateway's name.
    let e = connect(broker.machines, broker.machine_tls("other", "modbus-gw"), None).await.err();
    assert!(matches!(e, Some(Login::Refused(_))), "another CA: {e:?}");
    // Anonymous and wrong passwords on the people's listener.
    let e = connect(broker.people, ca_only(), None).await.err();
    assert!(matches!(e, Some(Login::Refused(_))), "anonymous: {e:?}");
    let e = connect(broker.people, ca_only(), Some(("operator", "guess"))).await.err();
    assert!(matches!(e, Some(Login::Refused(_))), "a wrong password: {e:?}");
    // The right ones get in (so the refusals above are about the login).
    assert!(connect(broker.people, ca_only(), Some(("operator", "op-secret"))).await.is_ok());
    assert!(connect(broker.machines, broker.machine_tls("pki", "modbus-gw"), None).await.is_ok());

    // TLS 1.1 (and older) is refused on both listeners; 1.2 is taken.
    for port in [broker.machines, broker.people] {
        let hello = |version: &str| {
            let out = Command::new("openssl")
                .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), version])
                .args(["-cipher", "DEFAULT:@SECLEVEL=0", "-CAfile"])
                .arg(broker.pki("ca.crt"))
                .stdin(Stdio::null())
                .output()
                .expect("openssl (apt-get install -y openssl)");
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr)
        };
        let old = hello("-tls1_1");
        assert!(old.contains("Cipher is (NONE)"), "TLS 1.1 on {port} was accepted:\n{old}");
        let ok = hello("-tls1_2");
        assert!(
            ok.contains("Protocol  : TLSv1.2") && !ok.contains("Cipher is (NONE)"),
            "TLS 1.2 on {port}:\n{ok}"
        );
    }
}

/// A gateway and a Sparkplug host set up the way the binaries read their
/// `[mqtt]` section (ca_file, cert_file, key_file), through the shipped
/// configuration: the gateway's readings reach the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machines_log_in_with_their_certificates_and_data_flows() {
    use shopfloor_examples::gateway::{self as gw, Output};
    use shopfloor_mqtt::{Broker as Server, DriverConfig, EdgeDriver, HostDriver};
    use shopfloor_schemas::{Batch, Reading, Timestamp, Value};
    use shopfloor_sparkplug::edge::MetricSpec;
    use shopfloor_sparkplug::{
        DataType, EdgeNode, EdgeNodeConfig, HostApplication, HostConfig, HostEvent,
    };

    let broker = Broker::start();
    let file = broker.dir.path().join("gateway.toml");
    std::fs::write(
        &file,
        format!(
            "[mqtt]\nhost = \"localhost\"\nport = {}\nca_file = \"pki/ca.crt\"\n\
             cert_file = \"pki/modbus-gw.crt\"\nkey_file = \"pki/modbus-gw.key\"\n\
             [sparkplug]\ngroup_id = \"Plant1\"\nedge_node_id = \"modbus-gw\"\n",
            broker.machines
        ),
    )
    .unwrap();
    let (mqtt, output) = gw::sections(&file, &[], true).unwrap();
    let Output::Sparkplug(sp) = output else { panic!("a Sparkplug output") };
    let server = mqtt.broker(&file).unwrap();
    assert!(server.tls.is_some(), "ca_file makes a TLS connection");
    let mut config = EdgeNodeConfig::new("Plant1", "modbus-gw");
    config.devices = vec![("press-1".into(), vec![MetricSpec::new("temp", DataType::Double)])];
    let driver = gw::driver(&mqtt, &sp, &file).unwrap();
    let edge = EdgeDriver::spawn(EdgeNode::new(config).unwrap(), driver);

    let mut ingest = Server::new("localhost", broker.machines);
    ingest.tls = Some(broker.machine_tls("pki", "ingest"));
    let mut host_config = HostConfig::new("shopfloor-ingest");
    host_config.publish_state = false;
    let mut host =
        HostDriver::spawn(HostApplication::new(host_config), DriverConfig::new("ingest", ingest));

    // Sent live once the node is connected, or stored and replayed as
    // history after its birth: either way the host gets it.
    let batch = Batch::new("press-1").with(Reading::new("temp", Timestamp::now(), 71.5));
    edge.publish(batch).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match host.next_event().await {
                Some(HostEvent::Data(b) | HostEvent::Historical(b))
                    if b.source == "Plant1/modbus-gw/press-1"
                        && b.readings.iter().any(|r| r.value == Value::F64(71.5)) =>
                {
                    return;
                }
                Some(_) => {}
                None => panic!("the host driver stopped"),
            }
        }
    })
    .await;
    assert!(seen.is_ok(), "no data from the gateway at the host within 30 s:\n{}", broker.log());
    edge.shutdown().await;
    host.shutdown().await;
}

/// `make-certs` keeps the CA's private key out of the folder that is
/// deployed (in `DIR-ca`, mode 700), reuses the CA for new clients and
/// moves a `ca.key` of the older layout out.
#[test]
fn make_certs_keeps_the_ca_key_apart() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let (pki, ca) = (dir.path().join("pki"), dir.path().join("pki-ca"));
    let make_certs = Path::new(DEPLOY).join("make-certs");
    run(Command::new("bash").arg(&make_certs).arg(&pki).arg("ingest"));
    assert!(!pki.join("ca.key").exists(), "the CA key in the deployed folder");
    assert!(ca.join("ca.key").is_file());
    assert_eq!(std::fs::metadata(&ca).unwrap().permissions().mode() & 0o777, 0o700);
    let ca_crt = std::fs::read(pki.join("ca.crt")).unwrap();
    run(Command::new("bash").arg(&make_certs).arg(&pki).arg("live"));
    assert_eq!(std::fs::read(pki.join("ca.crt")).unwrap(), ca_crt, "the same CA");
    run(Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(pki.join("ca.crt"))
        .arg(pki.join("live.crt")));
    // The older layout: ca.key beside the certificates is moved out.
    std::fs::rename(ca.join("ca.key"), pki.join("ca.key")).unwrap();
    run(Command::new("bash").arg(&make_certs).arg(&pki).arg("opcua-gw"));
    assert!(!pki.join("ca.key").exists() && ca.join("ca.key").is_file());
    assert_eq!(std::fs::read(pki.join("ca.crt")).unwrap(), ca_crt);
}

/// One service of `compose.yaml`, read line by line (the file keeps to
/// one layout: two-space indents, flow lists for ports).
#[derive(Default, Debug)]
struct Service {
    name: String,
    image: String,
    command: String,
    ports: Vec<String>,
    env: Vec<(String, String)>,
    mounts: Vec<(String, String)>,
}

fn compose_services() -> Vec<Service> {
    let compose = std::fs::read_to_string(Path::new(DEPLOY).join("compose.yaml")).unwrap();
    let mut services: Vec<Service> = Vec::new();
    let mut in_services = false;
    let mut list = "";
    for line in compose.lines().filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
    {
        let indent = line.len() - line.trim_start().len();
        let text = line.trim();
        if indent == 0 {
            in_services = text == "services:";
            continue;
        }
        if !in_services {
            continue;
        }
        if indent == 2 {
            services
                .push(Service { name: text.trim_end_matches(':').into(), ..Service::default() });
            continue;
        }
        let s = services.last_mut().unwrap();
        if indent == 4 {
            let (key, value) = text.split_once(':').unwrap();
            list = if value.trim().is_empty() { key } else { "" };
            let value = value.trim();
            match key {
                "image" => s.image = value.into(),
                "command" => s.command = value.into(),
                "ports" => {
                    let items = value.trim_matches(['[', ']']).split(',');
                    s.ports = items.map(|p| p.trim().trim_matches('"').to_string()).collect();
                }
                _ => {}
            }
        } else if list == "environment" {
            let (k, v) = text.split_once(':').unwrap();
            s.env.push((k.into(), v.trim().trim_matches(['"', '\'']).into()));
        } else if list == "volumes" {
            let m = text.trim_start_matches("- ");
            let (from, to) = m.split_once(':').unwrap();
            s.mounts.push((from.into(), to.trim_end_matches(":ro").into()));
        }
    }
    services
}

/// `compose.yaml`: every port on 127.0.0.1 only; the broker gets only its
/// certificate and key and the CA certificate, each shopfloor service the
/// CA certificate and its own certificate and key, nothing the CA's key;
/// and each shopfloor service's variables, applied to the default file the
/// image carries (the Debian package's), pass its `--check-config`.
#[test]
fn compose_publishes_on_loopback_mounts_only_own_keys_and_its_variables_fit_the_files() {
    let services = compose_services();
    let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["mosquitto", "timescaledb", "grafana", "alertmanager", "ingestd", "alertd", "live"]
    );
    for s in &services {
        for p in &s.ports {
            assert!(p.starts_with("127.0.0.1:"), "{}: published beyond loopback: {p}", s.name);
        }
        for (from, _) in &s.mounts {
            assert!(from != "./pki" && !from.starts_with("./pki-ca"), "{}: mounts {from}", s.name);
        }
        let keys: Vec<&str> =
            s.mounts.iter().map(|(f, _)| f.as_str()).filter(|f| f.ends_with(".key")).collect();
        let own = match s.name.as_str() {
            "mosquitto" => vec!["./pki/broker.key"],
            "ingestd" => vec!["./pki/ingest.key"],
            "alertd" => vec!["./pki/alerting.key"],
            "live" => vec!["./pki/live.key"],
            _ => vec![],
        };
        assert_eq!(keys, own, "{}: the private keys it mounts", s.name);
    }

    // The shopfloor services: the image of ./Containerfile, their binary,
    // their variables on the default file.
    let containerfile = std::fs::read_to_string(Path::new(DEPLOY).join("Containerfile")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    run(Command::new("bash")
        .arg(Path::new(DEPLOY).join("make-certs"))
        .arg(&pki)
        .args(["ingest", "alerting", "live"]));
    let bins = [
        ("ingestd", env!("CARGO_BIN_EXE_shopfloor-ingestd")),
        ("alertd", env!("CARGO_BIN_EXE_shopfloor-alertd")),
        ("live", env!("CARGO_BIN_EXE_shopfloor-live")),
    ];
    for (name, bin) in bins {
        let s = services.iter().find(|s| s.name == name).unwrap();
        assert_eq!(s.image, "shopfloor:0.1.0", "{name}");
        assert_eq!(s.command, format!("[\"shopfloor-{name}\"]"), "{name}");
        assert!(containerfile.contains(&format!("shopfloor-{name} ")), "the image lacks {name}");
        let file = Path::new(DEPLOY).join(format!("package/etc/{name}.toml"));
        let mut cmd = Command::new(bin);
        cmd.arg("--config").arg(&file).arg("--check-config");
        for (k, v) in &s.env {
            // The certificates made above stand for the mounted ones.
            let v = v.replace("/etc/shopfloor/pki/", &format!("{}/", pki.display()));
            let v = v.replace("${POSTGRES_PASSWORD}", "secret");
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name} with the compose variables: {text}");
        assert!(text.contains("mosquitto:8883"), "{name}: {text}");
        println!("{name}: {}", text.trim());
    }
}

/// Every account in the shipped ACL that is not a gateway takes back the
/// edge-node rights the gateway patterns give every client: the three
/// `deny` lines with its own name.
#[test]
fn every_role_in_the_acl_denies_itself_the_edge_node_topics() {
    let acl = std::fs::read_to_string(Path::new(DEPLOY).join("mosquitto/mosquitto.acl")).unwrap();
    let mut users = Vec::new();
    let mut blocks: Vec<(String, Vec<String>)> = Vec::new();
    for line in acl.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if let Some(user) = line.strip_prefix("user ") {
            users.push(user.to_string());
            blocks.push((user.to_string(), Vec::new()));
        } else if let Some((_, rules)) = blocks.last_mut() {
            rules.push(line.to_string());
        }
    }
    assert_eq!(users, ["ingest", "alerting", "live", "operator"], "the roles of the shipped ACL");
    for (user, rules) in &blocks {
        for deny in [
            format!("topic deny spBv1.0/+/+/{user}"),
            format!("topic deny spBv1.0/+/+/{user}/+"),
            format!("topic deny shopfloor/writes/+/{user}"),
        ] {
            assert!(rules.contains(&deny), "user {user} lacks {deny:?}");
        }
    }
}
