//! The bridge's server link against a real asyncua server: nodes by
//! namespace URI and by browse path, types, units and ranges learned at
//! connect, unbridgeable nodes reported once, changes as readings, and the
//! recovery matrix (each case prints its time to recover).

mod common;

use std::time::{Duration, Instant};

use common::{Server, birth, config, connect, linked, node, nodes, spawn_link, tuning, until};
use shopfloor_bridge_opcua::client::{MetricInfo, ServerEvent, ServerLink};
use shopfloor_schemas::{Quality, Value};
use shopfloor_sparkplug::DataType;
use shopfloor_testkit::FaultProxy;
use tempfile::TempDir;
use tokio::sync::mpsc;

fn value_of(e: &ServerEvent, metric: &str) -> Option<(Value, Quality)> {
    let b = match e {
        ServerEvent::Online { values, .. } => values,
        ServerEvent::Data(b) => b,
        _ => return None,
    };
    b.readings.iter().rev().find(|r| r.metric == metric).map(|r| (r.value.clone(), r.quality))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_resolved_described_and_bridged() {
    let mut server = Server::start(&[]);
    let pki = tempfile::tempdir().unwrap();
    let (link, mut rx) = connect(&server.endpoint(), pki.path(), &nodes());

    let online = birth(&mut rx, 30, "the birth").await;
    let ServerEvent::Online { server: name, metrics, values } = &online else { unreachable!() };
    assert_eq!(name, "m1");
    let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["temperature", "count", "running", "profile"], "id and missing left out");
    assert_eq!(
        metrics[0],
        MetricInfo {
            name: "temperature".into(),
            datatype: DataType::Double,
            unit: Some("°C".into()),
            range: Some((0.0, 200.0)),
            writable: false
        }
    );
    assert_eq!(
        (metrics[1].datatype, metrics[2].datatype, metrics[3].datatype),
        (DataType::Int32, DataType::Boolean, DataType::String)
    );
    assert_eq!(values.source, "m1");
    assert_eq!(value_of(&online, "temperature"), Some((Value::F64(21.0), Quality::Good)));
    assert_eq!(value_of(&online, "running"), Some((Value::Bool(true), Quality::Good)));
    assert_eq!(
        value_of(&online, "profile"),
        Some((Value::String("[1.0,2.0,3.0]".into()), Quality::Good))
    );
    link.shutdown().await;

    // The two problems were told before the birth, once each.
    let (link, mut rx) = connect(&server.endpoint(), pki.path(), &nodes());
    let mut problems = Vec::new();
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await else {
            if events.iter().any(|e| matches!(e, ServerEvent::Online { .. })) {
                break;
            }
            continue;
        };
        if let ServerEvent::NodeProblem { metric, problem, .. } = &e {
            problems.push((metric.clone(), problem.clone()));
        }
        events.push(e);
    }
    problems.sort();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_eq!(problems[0].0, "id");
    assert!(
        problems[0].1.contains("NodeId") && problems[0].1.contains("no shopfloor value"),
        "{}",
        problems[0].1
    );
    assert_eq!(problems[1].0, "missing");
    assert!(problems[1].1.contains("NoSuchNode"), "{}", problems[1].1);

    // A change is a reading with the source's timestamp; a bad status keeps
    // the last value, marked bad.
    server.command(r#"{"set": "Temperature", "value": 99.5}"#);
    let e = until(&mut rx, 10, "99.5", |e| {
        value_of(e, "temperature").is_some_and(|v| v.0 == Value::F64(99.5))
    })
    .await;
    assert!(matches!(e, ServerEvent::Data(_)));
    server.command(r#"{"set": "Temperature", "value": 99.5, "status": "BadSensorFailure"}"#);
    until(&mut rx, 10, "bad quality", |e| {
        value_of(e, "temperature") == Some((Value::F64(99.5), Quality::Bad))
    })
    .await;
    link.shutdown().await;
}

/// Recovery case 3: the server process killed and started again (a new
/// session, the same nodes). Stale at once, good again after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_and_restarted_server_is_stale_then_good_again() {
    let (mut server, link, mut rx, _pki) = linked(&["--interval", "0.2"]).await;
    until(&mut rx, 10, "counting", |e| matches!(e, ServerEvent::Data(_))).await;

    server.peer.kill();
    let killed = Instant::now();
    until(&mut rx, 15, "offline", |e| matches!(e, ServerEvent::Offline { .. })).await;
    let noticed = killed.elapsed();
    // Nothing good while it is gone.
    let restarted_at = {
        let quiet = Instant::now() + Duration::from_secs(2);
        while let Ok(Some(e)) = tokio::time::timeout_at(quiet.into(), rx.recv()).await {
            assert!(
                !matches!(e, ServerEvent::Data(_) | ServerEvent::Online { .. }),
                "{e:?} while the server is dead"
            );
        }
        server.restart();
        Instant::now()
    };
    let online = until(&mut rx, 60, "the birth after the restart", |e| {
        matches!(e, ServerEvent::Online { .. })
    })
    .await;
    let recovered = restarted_at.elapsed();
    assert_eq!(value_of(&online, "temperature"), Some((Value::F64(21.0), Quality::Good)));
    until(&mut rx, 10, "counting again", |e| value_of(e, "count").is_some()).await;
    println!(
        "server killed: offline after {:.2} s; data again {:.2} s after the restart (sessions {})",
        noticed.as_secs_f64(),
        recovered.as_secs_f64(),
        link.stats().sessions.load(std::sync::atomic::Ordering::Relaxed)
    );
    link.shutdown().await;
}

/// Waits `secs` and asserts that nothing good arrived meanwhile.
async fn nothing_good_for(rx: &mut mpsc::Receiver<ServerEvent>, secs: u64) {
    let quiet = Instant::now() + Duration::from_secs(secs);
    while let Ok(Some(e)) = tokio::time::timeout_at(quiet.into(), rx.recv()).await {
        if let ServerEvent::Data(b) | ServerEvent::Online { values: b, .. } = &e {
            assert!(
                b.readings.iter().all(|r| r.quality != Quality::Good),
                "{e:?} while the server is unreachable"
            );
        }
    }
}

/// The server's counters: subscriptions created and transferred.
fn server_stats(server: &mut Server) -> (u64, u64) {
    let j: serde_json::Value = serde_json::from_str(&server.command(r#"{"stats": true}"#)).unwrap();
    (j["created"].as_u64().unwrap(), j["transferred"].as_u64().unwrap())
}

/// The server forgets the session (keeping its subscriptions) and drops
/// the connection: the library makes a new session and transfers the
/// subscriptions to it. `fixed`: the server's transfer works (asyncua
/// 2.1.0 patched by the test server's `--fix-transfer`); otherwise the
/// transferred subscription stays silent, and the watchdog must recreate.
/// Returns (subscriptions created, transferred) during the recovery.
async fn lose_the_session(fixed: bool) -> (u64, u64) {
    let args: &[&str] =
        if fixed { &["--interval", "0.2", "--fix-transfer"] } else { &["--interval", "0.2"] };
    let (mut server, link, mut rx, _pki) = linked(args).await;
    until(&mut rx, 10, "counting", |e| value_of(e, "count").is_some()).await;
    let (created, transferred) = server_stats(&mut server);

    let dropped = server.command(r#"{"drop_sessions": true}"#);
    assert_eq!(dropped, r#"{"dropped": 1}"#);
    let lost = Instant::now();
    until(&mut rx, 15, "offline", |e| matches!(e, ServerEvent::Offline { .. })).await;
    until(&mut rx, 30, "the birth on the new session", |e| {
        if let ServerEvent::Data(b) = e {
            assert!(
                b.readings.iter().all(|r| r.quality != Quality::Good),
                "{e:?} before the birth"
            );
        }
        matches!(e, ServerEvent::Online { .. })
    })
    .await;
    let recovered = lost.elapsed();
    // Data flows on: the subscription is alive, not just the birth's read.
    let e = until(&mut rx, 10, "counting", |e| value_of(e, "count").is_some()).await;
    let first = value_of(&e, "count").unwrap().0;
    until(&mut rx, 10, "counting on", |e| value_of(e, "count").is_some_and(|(v, _)| v != first))
        .await;
    let (c, t) = server_stats(&mut server);
    println!(
        "session lost ({} transfer): data again after {:.2} s; {} subscriptions transferred, {} created",
        if fixed { "working" } else { "silent" },
        recovered.as_secs_f64(),
        t - transferred,
        c - created
    );
    assert!(link.stats().sessions.load(std::sync::atomic::Ordering::Relaxed) >= 2);
    link.shutdown().await;
    (c - created, t - transferred)
}

/// The ladder's transfer step: a lost session's subscriptions move to the
/// new one and carry on; nothing is recreated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_session_recovers_by_transferring_its_subscriptions() {
    let (created, transferred) = lose_the_session(true).await;
    assert!(transferred >= 1, "the subscription was transferred");
    assert_eq!(created, 0, "nothing recreated: the transfer carried the data");
}

/// A transfer the server accepts but that stays silent (asyncua 2.1.0's
/// bug) is caught by the watchdog, which recreates the subscriptions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_transfer_is_caught_and_the_subscriptions_recreated() {
    let (created, transferred) = lose_the_session(false).await;
    assert!(transferred >= 1, "the library tried the transfer first");
    assert!(created >= 1, "the watchdog recreated the silent subscription");
}

/// A link through a fault proxy to a server whose values change every
/// 0.2 s, once they flow; the server and the folder with the link's
/// keypair are to keep while it runs.
async fn through_a_proxy() -> (Server, FaultProxy, ServerLink, mpsc::Receiver<ServerEvent>, TempDir)
{
    let server = Server::start(&["--interval", "0.2"]);
    let proxy = FaultProxy::start(([127, 0, 0, 1], server.port).into()).unwrap();
    let pki = tempfile::tempdir().unwrap();
    let endpoint = format!("opc.tcp://127.0.0.1:{}/", proxy.port());
    let (link, mut rx) = connect(&endpoint, pki.path(), &nodes());
    birth(&mut rx, 30, "the birth").await;
    until(&mut rx, 10, "counting", |e| value_of(e, "count").is_some()).await;
    (server, proxy, link, rx, pki)
}

/// Recovery case 1: the network cut for 30 s (connections reset, new ones
/// refused), then back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_cut_of_30_s_is_stale_at_once_and_recovers() {
    let (_server, proxy, link, mut rx, _pki) = through_a_proxy().await;

    proxy.refuse();
    proxy.cut();
    let cut = Instant::now();
    until(&mut rx, 15, "offline", |e| matches!(e, ServerEvent::Offline { .. })).await;
    let noticed = cut.elapsed();
    nothing_good_for(&mut rx, 30_u64.saturating_sub(noticed.as_secs())).await;
    proxy.resume();
    let resumed = Instant::now();
    birth(&mut rx, 60, "the birth after the cut").await;
    let recovered = resumed.elapsed();
    until(&mut rx, 10, "counting again", |e| value_of(e, "count").is_some()).await;
    println!(
        "network cut 30 s: offline after {:.2} s; data again {:.2} s after the network came back",
        noticed.as_secs_f64(),
        recovered.as_secs_f64()
    );
    link.shutdown().await;
}

/// Recovery case 2: the network black-holes (no RST, bytes just stop)
/// until the watchdog notices, then flows again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_hole_is_noticed_by_the_watchdog_and_recovers() {
    let (_server, proxy, link, mut rx, _pki) = through_a_proxy().await;

    proxy.pause();
    let paused = Instant::now();
    until(&mut rx, 15, "offline", |e| matches!(e, ServerEvent::Offline { .. })).await;
    let noticed = paused.elapsed();
    // Publishing interval 100 ms × (5 + 1) + 1 s = 1.6 s window; the
    // session's own keep-alive (1 s, 2 failures) may notice first.
    assert!(noticed < Duration::from_secs(5), "the watchdog took {noticed:?}");
    nothing_good_for(&mut rx, 3).await;
    proxy.resume();
    let resumed = Instant::now();
    until(&mut rx, 60, "the birth after the black hole", |e| {
        matches!(e, ServerEvent::Online { .. })
    })
    .await;
    let recovered = resumed.elapsed();
    until(&mut rx, 10, "counting again", |e| value_of(e, "count").is_some()).await;
    println!(
        "black hole: offline after {:.2} s; data again {:.2} s after the network came back",
        noticed.as_secs_f64(),
        recovered.as_secs_f64()
    );
    link.shutdown().await;
}

/// Write-back: only allow-listed metrics, only values that fit, the
/// server's status reported; the value written comes back as data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_to_allowed_nodes_with_their_type_and_report_the_status() {
    use shopfloor_bridge_opcua::client::WriteError;
    let mut server = Server::start(&[]);
    let pki = tempfile::tempdir().unwrap();
    let nodes = [
        node("setpoint", "Setpoint", "writable = true\n"),
        node("temperature", "Temperature", ""),
        node("count", "Count", "writable = true\n"),
        node("limited", "Temperature", "writable = true\n"),
    ]
    .concat();
    let (link, mut rx) = connect(&server.endpoint(), pki.path(), &nodes);
    birth(&mut rx, 30, "the birth").await;

    // The keypair the client made: its key readable by its owner only.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&pki.path().join("private")), 0o700);
        assert_eq!(mode(&pki.path().join("private/private.pem")), 0o600);
    }
    link.write("setpoint", Value::I64(65)).await.expect("an allowed write of a fitting value");
    assert_eq!(
        server.command(r#"{"get": "Setpoint"}"#),
        r#"{"value": 65.0}"#,
        "written as a Double"
    );
    until(&mut rx, 10, "the new setpoint as data", |e| {
        value_of(e, "setpoint") == Some((Value::F64(65.0), Quality::Good))
    })
    .await;

    assert_eq!(
        link.write("temperature", Value::F64(1.0)).await,
        Err(WriteError::NotAllowed("temperature".into()))
    );
    assert_eq!(link.write("nope", Value::F64(1.0)).await, Err(WriteError::Unknown("nope".into())));
    let e = link.write("setpoint", Value::String("fast".into())).await.unwrap_err();
    assert!(matches!(e, WriteError::Convert { .. }), "{e}");
    assert!(e.to_string().contains("setpoint") && e.to_string().contains("Double"), "{e}");
    // Allowed here, read-only on the server: its status comes back.
    let e = link.write("count", Value::I64(3)).await.unwrap_err();
    let WriteError::Refused(status) = e else { panic!("{e:?}") };
    assert!(status.is_bad(), "{status}");
    println!("a write to a read-only node: {status}");
    // Outside the node's EURange (0..200): refused before it is sent, and
    // NaN for every type; inside it, sent (and refused by this read-only
    // node, which shows it went out).
    let e = link.write("limited", Value::F64(250.0)).await.unwrap_err();
    assert_eq!(
        e,
        WriteError::OutOfRange { metric: "limited".into(), value: 250.0, low: 0.0, high: 200.0 }
    );
    assert_eq!(e.status(), "Refused");
    let e = link.write("limited", Value::F64(f64::NAN)).await.unwrap_err();
    assert!(matches!(e, WriteError::Convert { .. }), "{e}");
    let e = link.write("limited", Value::I64(150)).await.unwrap_err();
    assert!(matches!(e, WriteError::Refused(_)), "in range, so sent: {e}");
    link.shutdown().await;
}

/// Recovery case 5: a node deleted while subscribed is reported bad (not
/// silently frozen good), and flows again once it is added back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_node_goes_bad_and_flows_again_when_added_back() {
    let (mut server, link, mut rx, _pki) = linked(&["--interval", "0.2"]).await;

    server.command(r#"{"delete": "Temperature"}"#);
    let deleted = Instant::now();
    let e = until(&mut rx, 30, "temperature bad", |e| {
        value_of(e, "temperature").is_some_and(|(_, q)| q == Quality::Bad)
            || matches!(e, ServerEvent::NodeProblem { metric, .. } if metric == "temperature")
    })
    .await;
    let bad_after = deleted.elapsed();
    if let ServerEvent::Data(b) = &e {
        assert_eq!(b.readings[0].value, Value::F64(21.0), "the last value, marked bad");
    }
    server.command(r#"{"add": "Temperature"}"#);
    let added = Instant::now();
    server.command(r#"{"set": "Temperature", "value": 42.0}"#);
    until(&mut rx, 60, "temperature good again", |e| {
        value_of(e, "temperature") == Some((Value::F64(42.0), Quality::Good))
    })
    .await;
    println!(
        "node deleted and added back: bad after {:.2} s, good again {:.2} s after it was added",
        bad_after.as_secs_f64(),
        added.elapsed().as_secs_f64()
    );
    link.shutdown().await;
}

/// Recovery case 6: an overloaded server. Slow answers (0.3 s each) still
/// deliver good data; answers slower than the request timeout make the
/// metrics stale; a server that recovers is followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_server_is_followed_while_it_answers_and_stale_when_it_does_not() {
    let (mut server, link, mut rx, _pki) = linked(&["--interval", "0.2"]).await;

    server.command(r#"{"delay": 0.3}"#);
    let mut counts = 0;
    let slow = Instant::now() + Duration::from_secs(5);
    while let Ok(Some(e)) = tokio::time::timeout_at(slow.into(), rx.recv()).await {
        assert!(!matches!(e, ServerEvent::Offline { .. }), "slow but answering is not offline");
        if value_of(&e, "count").is_some_and(|(_, q)| q == Quality::Good) {
            counts += 1;
        }
    }
    assert!(counts >= 3, "only {counts} changes in 5 s of slow answers");

    server.command(r#"{"delay": 8}"#);
    let stalled = Instant::now();
    until(&mut rx, 30, "offline", |e| matches!(e, ServerEvent::Offline { .. })).await;
    let noticed = stalled.elapsed();
    server.command(r#"{"delay": 0}"#);
    let eased = Instant::now();
    birth(&mut rx, 60, "the birth after the overload").await;
    until(&mut rx, 10, "counting again", |e| value_of(e, "count").is_some()).await;
    println!(
        "overloaded server (8 s per answer): offline after {:.2} s; data again {:.2} s after it eased",
        noticed.as_secs_f64(),
        eased.elapsed().as_secs_f64()
    );
    link.shutdown().await;
}

/// `browse` walks the server and writes a configuration that loads and
/// bridges: every variable by browse path, NodeIds by namespace URI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_writes_a_config_that_bridges() {
    use shopfloor_bridge_opcua::BridgeConfig;
    use shopfloor_bridge_opcua::browse::{BrowseError, BrowseOptions, browse, config_toml};
    let server = Server::start(&["--items", "30"]);
    let pki = tempfile::tempdir().unwrap();
    let target = config(&server.endpoint(), pki.path(), &nodes());
    let mut levels = Vec::new();
    let walk =
        browse(&target, &tuning(), &BrowseOptions::default(), |n| levels.push(n)).await.unwrap();
    assert!(!walk.truncated);
    let metrics: Vec<&str> = walk.variables.iter().map(|v| v.metric.as_str()).collect();
    for want in ["Machine1/Temperature", "Machine1/Setpoint", "Machine1/Id", "Machine1/Item29"] {
        assert!(metrics.contains(&want), "{want} not in {metrics:?}");
    }
    assert_eq!(walk.variables.len(), 9 + 30, "no properties, nothing of namespace 0: {metrics:?}");
    let t = walk.variables.iter().find(|v| v.metric == "Machine1/Temperature").unwrap();
    assert_eq!(t.node_id, "nsu=urn:shopfloor:test;s=Machine1.Temperature");
    assert!(levels.last() == Some(&39), "progress per level: {levels:?}");

    // A smaller walk from a start node, cut short.
    let mut opts = BrowseOptions::default();
    opts.start = Some("nsu=urn:shopfloor:test;s=Machine1".into());
    opts.max_depth = 3;
    opts.max_variables = 5;
    let short = browse(&target, &tuning(), &opts, |_| {}).await.unwrap();
    assert!(short.truncated && short.variables.len() == 5);
    assert!(
        short.variables[0].metric.starts_with(|c: char| c.is_ascii_uppercase()),
        "paths are below the start: {:?}",
        short.variables[0]
    );

    // The file loads and bridges.
    let text = config_toml(&target, &walk);
    let loaded = BridgeConfig::from_toml(&text).unwrap();
    let (link, mut rx) = spawn_link(loaded.servers[0].clone());
    let online = birth(&mut rx, 30, "the birth").await;
    let ServerEvent::Online { metrics, .. } = online else { unreachable!() };
    assert_eq!(metrics.len(), 38, "all but the NodeId-typed one");
    link.shutdown().await;

    // An unreachable server says so.
    let nowhere = config("opc.tcp://localhost:1/", pki.path(), &nodes());
    let e = browse(&nowhere, &tuning(), &BrowseOptions::default(), |_| {}).await.unwrap_err();
    let BrowseError::Session(why) = &e else { panic!("{e:?}") };
    assert!(why.contains("opc.tcp://localhost:1/"), "{e}");
}
