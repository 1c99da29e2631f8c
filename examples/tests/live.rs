//! The live plant page against the whole reference deployment, logged in
//! with its own certificate under the shipped ACL's `live` role, in a real
//! headless Chromium: the page is one file with nothing fetched from
//! elsewhere; it draws every machine with values that change and
//! sparklines; the simulator's over-temperature appears as an
//! unacknowledged alarm; clicking Acknowledge, then Shelve, changes the
//! alarm's state on the page and in the journal. Screenshots of each step
//! are saved under `artifacts/live-page/` (`$SHOPFLOOR_ARTIFACTS`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shopfloor_testkit::{Chromium, artifacts_dir};
use tokio_postgres::NoTls;

mod support;

/// One HTTP exchange: (status, body).
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    http_with(addr, method, path, "Content-Type: application/json\r\n", body)
}

/// One HTTP exchange with the given extra header lines.
fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String) {
    let headers = format!("Host: {addr}\r\n{headers}");
    let a = shopfloor_testkit::http_request(addr, method, path, &headers, body).unwrap();
    (a.status, a.body)
}

/// What the page shows, for a failure message.
fn page_text(browser: &mut Chromium) -> String {
    browser.eval("document.body.innerText").map(|t| t.to_string()).unwrap_or_else(|e| e.to_string())
}

#[test]
fn the_live_page_shows_the_plant_and_acknowledges_an_alarm() {
    let dir = tempfile::tempdir().unwrap();
    let plant = support::start_plant(dir.path());
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // The page as a deployment runs it: shopfloor-live with the `live`
    // certificate of the shipped broker's ACL.
    let pki = dir.path().join("plant/pki");
    let port = shopfloor_testkit::free_port().unwrap();
    let config = dir.path().join("live.toml");
    std::fs::write(
        &config,
        format!(
            "[mqtt]\nhost = \"localhost\"\nport = {}\nclient_id = \"live-test\"\n\
             ca_file = \"{pki}/ca.crt\"\ncert_file = \"{pki}/live.crt\"\nkey_file = \"{pki}/live.key\"\n\
             [live]\nlisten = \"127.0.0.1:{port}\"\n",
            plant.broker_port,
            pki = pki.display()
        ),
    )
    .unwrap();
    let (mut live, addr) = support::start_live(&config, port);

    // The page: one file, nothing from elsewhere.
    let (status, page) = http(addr, "GET", "/", "");
    assert_eq!(status, 200);
    assert!(page.contains("EventSource(\"events\")"), "the page listens to the stream");
    for external in ["http://", "https://", "//cdn", "<link", "src=\""] {
        assert!(!page.contains(external), "the page fetches something from elsewhere: {external}");
    }
    assert_eq!(http(addr, "GET", "/nothing", "").0, 404);

    assert_eq!(http(addr, "POST", "/command", "{\"command\": \"delete\"}").0, 400);
    assert_eq!(http(addr, "POST", "/command", "not json").0, 400);
    // Another site's page in the operator's browser: a text/plain form
    // post, or a request naming a foreign origin, is refused.
    let shelve = r#"{"command": "shelve", "rule": "r", "source": "s", "metric": "m"}"#;
    let form = http_with(addr, "POST", "/command", "Content-Type: text/plain\r\n", shelve);
    assert_eq!(form.0, 415, "{form:?}");
    let foreign = "Content-Type: application/json\r\nOrigin: http://evil.example\r\n";
    assert_eq!(http_with(addr, "POST", "/command", foreign, shelve).0, 403);

    // In the browser: every machine, each with values and sparklines.
    let shots = artifacts_dir("live-page").unwrap();
    let mut browser = Chromium::start().unwrap_or_else(|e| panic!("{e}"));
    browser.navigate(&format!("http://{addr}/")).unwrap();
    let names: Vec<String> = plant.scenario.plant.machines.iter().map(|m| m.name.clone()).collect();
    let names_js = serde_json::to_string(&names).unwrap();
    let drawn = browser.wait_for(
        &format!(
            "(() => {{ const want = {names_js}; \
               const have = [...document.querySelectorAll('section.machine')].filter((m) => \
                 [...m.querySelectorAll('.sig .v')].some((v) => /^-?[0-9]/.test(v.textContent))) \
                 .map((m) => m.dataset.source.split('/').pop()); \
               return want.every((n) => have.includes(n)) && have.length; }})()"
        ),
        Duration::from_secs(30),
    );
    let drawn = drawn.unwrap_or_else(|e| panic!("{e}; page: {}", page_text(&mut browser)));
    assert!(drawn.as_u64().unwrap() >= 30, "{drawn}");
    // A sparkline needs two values; signals reported by exception (counters,
    // run states) may have one, so: every machine has at least one.
    let sparks = "[...document.querySelectorAll('section.machine')].filter((m) => \
                  !m.querySelector('svg.spark polyline')).map((m) => m.dataset.source)";
    if let Err(e) = browser.wait_for(&format!("{sparks}.length === 0"), Duration::from_secs(20)) {
        let _ = browser.screenshot(&shots.join("1-plant.png"));
        panic!("{e}: machines without a sparkline: {}", browser.eval(sparks).unwrap_or_default());
    }
    browser.screenshot(&shots.join("1-plant.png")).unwrap();

    // The values move: the page's numbers now and a few seconds later.
    let values = "[...document.querySelectorAll('.sig .v')].map((v) => v.textContent).join('|')";
    let before = browser.eval(values).unwrap();
    browser
        .wait_for(&format!("{values} !== {before}"), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("the values on the page do not change: {e}"));

    // The over-temperature (10 s into the built-in scenario) as an alarm,
    // once it has ramped past HH: H then HH within 2 s, and the worse
    // condition needs acknowledging again (ISA-18.2), so an acknowledgement
    // at H would be undone a moment later.
    let row = "document.querySelector('#alarms tr[data-alarm*=\"/press-03|\"]')";
    let alarm = browser
        .wait_for(
            &format!(
                "{row}?.querySelector('button.ack:not([hidden])') && \
                 /^(active HH|returned)/.test({row}.querySelector('.state').textContent) && {row}.dataset.alarm"
            ),
            Duration::from_secs(60),
        )
        .unwrap_or_else(|e| panic!("{e}; page: {}", page_text(&mut browser)));
    let (source, metric) = alarm.as_str().unwrap().split_once('|').unwrap();
    let (source, metric) = (source.to_owned(), metric.to_owned());
    assert!(
        browser
            .eval(&format!("{row}.querySelector('.state').textContent"))
            .unwrap()
            .as_str()
            .unwrap()
            .contains("unacknowledged")
    );
    // One look at the DOM: the tile and the signal are marked while the
    // alarm is active.
    let tile = browser
        .eval(&format!(
            "[{row}.querySelector('.state').textContent.startsWith('active'), \
              document.querySelector('section.machine[data-source=\"{source}\"]').classList.contains('alarm'), \
              document.querySelector('section.machine[data-source=\"{source}\"] .sig[data-metric=\"{metric}\"]').classList.contains('alarmed')]"
        ))
        .unwrap();
    assert!(
        tile[0] == tile[1] && tile[1] == tile[2],
        "press-03's tile and signal marked exactly while its alarm is active: {tile}"
    );
    browser.screenshot(&shots.join("2-alarm.png")).unwrap();

    // Acknowledge with the mouse.
    let sel = format!("#alarms tr[data-alarm=\"{source}|{metric}\"] button.ack");
    browser.click(&sel).unwrap();
    let said = browser
        .wait_for("document.getElementById('message').textContent || null", Duration::from_secs(10))
        .unwrap();
    assert!(said.as_str().unwrap().starts_with("acknowledge sent for"), "the page says {said}");
    browser
        .wait_for(
            &format!("{row}.querySelector('.state').textContent.includes(', acknowledged') && {row}.querySelector('button.ack').hidden"),
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("{e}; page: {}", page_text(&mut browser)));
    browser.screenshot(&shots.join("3-acknowledged.png")).unwrap();

    // Shelve, then the page says so.
    browser.click(&format!("#alarms tr[data-alarm=\"{source}|{metric}\"] button.shelve")).unwrap();
    browser
        .wait_for(
            &format!("{row}?.querySelector('.state').textContent.includes('shelved')"),
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("{e}; page: {}", page_text(&mut browser)));
    assert_eq!(
        browser.eval(&format!("{row}.querySelector('button.shelve').textContent")).unwrap(),
        "Unshelve"
    );
    assert!(browser.exceptions().is_empty(), "the page threw: {:?}", browser.exceptions());

    // Both in the journal, by the page's user.
    rt.block_on(async {
        let (pg, conn) = tokio_postgres::connect(&plant.postgres.connection_string(), NoTls).await.unwrap();
        tokio::spawn(conn);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let events: Vec<String> = pg
                .query(
                    "SELECT event FROM shopfloor.alarm_journal WHERE user_name = 'live-page' AND source = $1 AND metric = $2 ORDER BY id",
                    &[&source, &metric],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            if events == ["acknowledged", "shelved"] {
                break;
            }
            assert!(Instant::now() < deadline, "the journal has {events:?} from the page");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let stats = browser.eval("window.liveStats").unwrap();
    println!("live page in the browser: {stats}; screenshots in {}", shots.display());
    assert!(stats["events"].as_u64().unwrap() >= 5, "{stats}");
    drop(browser);
    let status = live.terminate(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "shopfloor-live on SIGTERM: {status:?}\n{}",
        live.log_tail(20)
    );
    drop(plant);
}

#[test]
fn check_config_reports_the_address_and_names_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_shopfloor-live");
    let run = |text: &str| {
        let path = dir.path().join("live.toml");
        std::fs::write(&path, text).unwrap();
        std::process::Command::new(bin)
            .arg("--config")
            .arg(&path)
            .arg("--check-config")
            .output()
            .unwrap()
    };
    let ok = run("[mqtt]\nport = 1884\n[live]\nlisten = \"127.0.0.1:9000\"\n");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(
        out.contains("MQTT 5 127.0.0.1:1884") && out.contains("http://127.0.0.1:9000/"),
        "{out}"
    );
    let v311 = run("[mqtt]\nprotocol = \"3.1.1\"\n");
    let out = String::from_utf8_lossy(&v311.stdout);
    assert!(out.contains("MQTT 3.1.1 127.0.0.1:1883"), "{out}");
    for (text, says) in [
        ("[live]\nlisten = \"127.0.0.1:9000\"\n", "no [mqtt] section"),
        ("[mqtt]\n[live]\nlisten = \"localhost\"\n", "live.listen = \"localhost\""),
        ("[mqtt]\nport = 1883\nhots = \"x\"\n", "hots"),
        ("[mqtt]\ncert_file = \"a.crt\"\n", "without mqtt.ca_file"),
        ("[mqtt]\nprotocol = \"3.1\"\n", "use \"5\" or \"3.1.1\""),
        ("[mqtt\n", "live.toml"),
    ] {
        let out = run(text);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{text}: {err}");
        assert!(err.contains(says), "{text}: {err}");
    }
    let help = std::process::Command::new(bin).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("POST /command"));
}

/// `SHOPFLOOR_<SECTION>__<KEY>` overrides a key of the file (what a
/// container sets instead of writing a file): typed like the key it
/// replaces, a missing section made, a mistake named with the variable.
#[test]
fn environment_variables_override_keys_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.toml");
    std::fs::write(&path, "[mqtt]\nhost = \"127.0.0.1\"\nport = 1884\n").unwrap();
    let check = |vars: &[(&str, &str)]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_shopfloor-live"))
            .arg("--config")
            .arg(&path)
            .arg("--check-config")
            .envs(vars.iter().copied())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    let (code, out) = check(&[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("MQTT 5 127.0.0.1:1884") && out.contains("http://127.0.0.1:8088/"),
        "{out}"
    );
    let (code, out) = check(&[
        ("SHOPFLOOR_MQTT__HOST", "broker.plant"),
        ("SHOPFLOOR_MQTT__PORT", "8883"),
        ("SHOPFLOOR_LIVE__LISTEN", "0.0.0.0:9000"),
        ("SHOPFLOOR_LIVE__AUTH", "none"),
        // Not overrides: one underscore (a secret's or a test's variable).
        ("SHOPFLOOR_LIVE_SECS", "5"),
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("MQTT 5 broker.plant:8883") && out.contains("http://0.0.0.0:9000/"),
        "{out}"
    );
    // A wrong value or key is a configuration error naming the variable.
    for (var, value, says) in [
        ("SHOPFLOOR_MQTT__PORT", "many", "SHOPFLOOR_MQTT__PORT"),
        ("SHOPFLOOR_MQTT__HOTS", "x", "hots"),
        ("SHOPFLOOR_NOPE__X", "1", "SHOPFLOOR_NOPE__X"),
    ] {
        let (code, out) = check(&[(var, value)]);
        assert_eq!(code, Some(78), "{var}={value}: {out}");
        assert!(out.contains(says), "{var}={value}: {out}");
    }
}
