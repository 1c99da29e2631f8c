//! The live plant page against the whole reference deployment, logged in
//! with its own certificate under the shipped ACL's `live` role: the page is one file
//! with nothing fetched from elsewhere; the event stream carries every
//! machine with values that change; the simulator's over-temperature
//! appears as an unacknowledged alarm; acknowledging it through the page's
//! command endpoint changes its state on the page and in the journal.
//! (The same in a real browser is the next step of issue 9.)

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use shopfloor_examples::live::{LiveConfig, start};
use shopfloor_examples::plant::{Options, Plant};
use tokio_postgres::NoTls;

/// One HTTP exchange: (status, body).
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

fn snapshot(addr: SocketAddr) -> Value {
    serde_json::from_str(&http(addr, "GET", "/snapshot", "").1).unwrap()
}

/// Waits until `check` finds something in the snapshot.
fn until<T>(
    addr: SocketAddr,
    timeout: Duration,
    what: &str,
    mut check: impl FnMut(&Value) -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let s = snapshot(addr);
        if let Some(v) = check(&s) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {timeout:?}; last snapshot: {}",
            s.to_string().chars().take(2000).collect::<String>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_live_page_shows_the_plant_and_acknowledges_an_alarm() {
    let dir = tempfile::tempdir().unwrap();
    let bins = Path::new(env!("CARGO_BIN_EXE_shopfloor-sim")).parent().unwrap().to_owned();
    let plant =
        Plant::start(&Options { dir: dir.path().join("plant"), bins, scenario: None }, |_| {})
            .unwrap_or_else(|e| panic!("{e:#}"));
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let live = rt
        .block_on(start(LiveConfig {
            host: "localhost".into(),
            port: plant.broker_port,
            tls: Some(plant.live_tls().unwrap()),
            credentials: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        }))
        .unwrap();
    let addr = live.addr;

    // The page: one file, nothing from elsewhere.
    let (status, page) = http(addr, "GET", "/", "");
    assert_eq!(status, 200);
    assert!(page.contains("EventSource(\"/events\")"), "the page listens to the stream");
    for external in ["http://", "https://", "//cdn", "<link", "src=\""] {
        assert!(!page.contains(external), "the page fetches something from elsewhere: {external}");
    }
    assert_eq!(http(addr, "GET", "/nothing", "").0, 404);

    // Every machine, with values.
    let names: Vec<String> = plant.scenario.plant.machines.iter().map(|m| m.name.clone()).collect();
    until(addr, Duration::from_secs(30), "every simulated machine with values", |s| {
        let with_values: Vec<String> = s["machines"]
            .as_array()?
            .iter()
            .filter(|m| {
                m["metrics"].as_array().is_some_and(|ms| ms.iter().any(|g| g["value"].is_number()))
            })
            .filter_map(|m| Some(m["source"].as_str()?.rsplit('/').next()?.to_owned()))
            .collect();
        names.iter().all(|n| with_values.contains(n)).then_some(())
    });
    // The stream: two events a second apart, the values moving.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut lines = BufReader::new(stream).lines();
    let mut events = Vec::new();
    while events.len() < 3 {
        let line = lines.next().expect("the stream ended").unwrap();
        if let Some(data) = line.strip_prefix("data: ") {
            events.push(serde_json::from_str::<Value>(data).unwrap());
        }
    }
    // The longest sparkline of the last event.
    let value_of = |e: &Value| {
        e["machines"].as_array().and_then(|ms| {
            ms.iter()
                .flat_map(|m| m["metrics"].as_array().cloned().unwrap_or_default())
                .map(|g| g["points"].as_array().map_or(0, Vec::len))
                .max()
        })
    };
    assert!(
        events
            .iter()
            .all(|e| e["detailed"] == true && e["machines"].as_array().unwrap().len() >= 30)
    );
    assert_ne!(
        events[0]["machines"][0]["metrics"], events[2]["machines"][0]["metrics"],
        "the values move"
    );
    assert!(value_of(&events[2]).unwrap_or(0) >= 2, "sparklines have points");

    // The over-temperature (10 s into the built-in scenario) as an alarm.
    let alarm = until(addr, Duration::from_secs(60), "press-03's alarm on the page", |s| {
        s["alarms"]
            .as_array()?
            .iter()
            .find(|a| {
                a["source"].as_str().is_some_and(|x| x.ends_with("/press-03"))
                    && a["unacknowledged"] == true
            })
            .cloned()
    });
    let bad = http(addr, "POST", "/command", "{\"command\": \"delete\"}");
    assert_eq!(bad.0, 400, "{bad:?}");
    assert_eq!(http(addr, "POST", "/command", "not json").0, 400);
    let ack = serde_json::json!({"command": "acknowledge", "rule": alarm["rule"], "source": alarm["source"], "metric": alarm["metric"], "user": "live-page"});
    let (status, _) = http(addr, "POST", "/command", &ack.to_string());
    assert_eq!(status, 202);
    until(addr, Duration::from_secs(10), "the alarm acknowledged on the page", |s| {
        s["alarms"]
            .as_array()?
            .iter()
            .any(|a| {
                a["source"] == alarm["source"]
                    && a["metric"] == alarm["metric"]
                    && a["unacknowledged"] == false
            })
            .then_some(())
    });
    rt.block_on(async {
        let (pg, conn) = tokio_postgres::connect(&plant.postgres.connection_string(), NoTls).await.unwrap();
        tokio::spawn(conn);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let n: i64 = pg
                .query_one(
                    "SELECT count(*) FROM shopfloor.alarm_journal WHERE event = 'acknowledged' AND user_name = 'live-page' AND source = $1",
                    &[&alarm["source"].as_str().unwrap()],
                )
                .await
                .unwrap()
                .get(0);
            if n == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "the acknowledgement is not in the journal");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    drop(live);
    drop(plant);
}
