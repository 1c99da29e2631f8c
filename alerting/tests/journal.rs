//! The alarm journal with real Mosquitto and PostgreSQL: every event is
//! recorded with the operator's identity and comment, and an acknowledged
//! alarm stays acknowledged across a restart of the alerting driver.

mod common;

use common::{RULES, broker, command, event, gateway, next, operator, plain, reading, send, spawn};
use shopfloor_alerting::mqtt::AlertConfig;
use shopfloor_testkit::{Mosquitto, Postgres};

fn config(broker: &Mosquitto, pg: &Postgres) -> AlertConfig {
    let mut c = plain(broker, "alertd");
    c.journal = Some(pg.connection_string());
    c
}

/// event, condition, user, comment.
type JournalRow = (String, Option<String>, Option<String>, Option<String>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_records_events_and_acknowledgements_survive_a_restart() {
    let broker = broker();
    let pg = Postgres::start().expect("start postgresql (apt-get install -y postgresql)");
    let driver = spawn(RULES, config(&broker, &pg));
    let (op, mut op_events) = operator(&broker, "operator").await;
    let feed = gateway(&broker, "gateway");
    let topic = "shopfloor/plant1/press/m1/pressure";
    send(&feed, topic, reading(170.0)).await;
    event(&mut op_events, |v| v["event"] == "raised").await;
    let ack = r#"{"command":"acknowledge","rule":"press-pressure","source":"plant1/press/m1","metric":"pressure","user":"jane","comment":"valve closed"}"#;
    command(&op, ack).await;
    let (_, reply) = next(&mut op_events, |t, _| t == "operator/reply").await;
    assert_eq!(reply["ok"], true);
    // The driver writes what is queued before it hands the engine back.
    driver.shutdown().await.unwrap();

    let (client, conn) =
        tokio_postgres::connect(&pg.connection_string(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let journal: Vec<JournalRow> = client
        .query(
            "SELECT event, condition, user_name, comment FROM shopfloor.alarm_journal ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        journal,
        [
            ("raised".into(), Some("H".into()), None, None),
            ("acknowledged".into(), None, Some("jane".into()), Some("valve closed".into())),
        ]
    );
    // Each event carries its rule's area (the rules here name none: "plant").
    let areas: Vec<Option<String>> = client
        .query("SELECT area FROM shopfloor.alarm_journal ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(areas, [Some("plant".to_owned()), Some("plant".to_owned())]);

    // A new process: the alarm is still active and acknowledged, so the
    // same breach announces nothing, and acknowledging again is refused.
    let driver = spawn(RULES, config(&broker, &pg));
    let (op, mut op_events) = operator(&broker, "operator-2").await;
    send(&feed, topic, reading(171.0)).await;
    command(&op, ack).await;
    let (_, refused) = next(&mut op_events, |t, _| t == "operator/reply").await;
    assert_eq!(refused["ok"], false, "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("not unacknowledged"), "{refused}");
    // Back to normal: the restored instance closes (it was acknowledged).
    send(&feed, topic, reading(100.0)).await;
    let rtn = event(&mut op_events, |v| v["event"] != "acknowledged").await;
    assert_eq!(
        (rtn["event"].as_str(), rtn["closed"].as_bool()),
        (Some("returned_to_normal"), Some(true))
    );
    driver.shutdown().await.unwrap();
}

/// Every field of the saved state comes back as it was saved, the wait
/// for a confirmation and a timed shelve included; a second save replaces
/// the first; a second connect finds the migrations applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saved_state_round_trips() {
    use shopfloor_alerting::engine::{AlarmKey, Condition, Persisted};
    use shopfloor_alerting::journal::Journal;
    let pg = Postgres::start().expect("start postgresql (apt-get install -y postgresql)");
    let mut journal = Journal::connect(&pg.connection_string()).await.unwrap();
    let key = |m: &str| AlarmKey { rule: "r".into(), source: "s".into(), metric: m.into() };
    let a = Persisted {
        key: key("a"),
        instance: 7,
        active: None,
        unacknowledged: false,
        shelved: Some(Some(1_795_000_000_000)),
        out_of_service: false,
        latched: false,
        unconfirmed: true,
    };
    let b = Persisted {
        key: key("b"),
        instance: 9,
        active: Some(Condition::On),
        unacknowledged: true,
        shelved: Some(None),
        out_of_service: true,
        latched: true,
        unconfirmed: false,
    };
    journal.save_state(&[a.clone(), b.clone()]).await.unwrap();
    let mut loaded =
        Journal::connect(&pg.connection_string()).await.unwrap().load_state().await.unwrap();
    loaded.sort_by(|x, y| x.key.cmp(&y.key));
    assert_eq!(loaded, [a.clone(), b]);
    journal.save_state(std::slice::from_ref(&a)).await.unwrap();
    assert_eq!(journal.load_state().await.unwrap(), [a]);
}

/// The journal over TLS: `sslmode=require` with the server's CA checks
/// its certificate and name; a wrong CA is refused, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_connects_over_checked_tls() {
    use shopfloor_alerting::journal::Journal;
    let pg = Postgres::builder().tls().start().expect("start postgresql with TLS");
    let dir = tempfile::tempdir().unwrap();
    let (ca, other) = pg.ca_files(dir.path()).unwrap();
    let checked = shopfloor_mqtt::tls_client_config(&ca, None).unwrap();
    let wrong = shopfloor_mqtt::tls_client_config(&other, None).unwrap();
    let url = format!("{} sslmode=require", pg.connection_string());
    let journal = Journal::connect_with(&url, Some("unused 'quoted'"), Some(&checked))
        .await
        .expect("the journal over checked TLS");
    assert!(journal.load_state().await.unwrap().is_empty());
    let e = Journal::connect_with(&url, None, Some(&wrong)).await.unwrap_err().to_string();
    assert!(e.contains("certificate"), "{e}");
}
