//! The consuming side of a deployment as processes, for the tests that
//! feed it through a real broker: `shopfloor-ingestd`, `shopfloor-alertd`
//! and `shopfloor-live`, each with its config in a temporary folder and its
//! HTTP endpoint answering before [`Stack::start`] returns.

#![allow(dead_code, unreachable_pub)] // Each test file uses a part.

use std::net::SocketAddr;
use std::time::Duration;

use shopfloor_examples::process::Daemon;
use shopfloor_testkit::Mosquitto;

/// Starts `shopfloor-live` with `config` (its log beside it) and waits
/// until its page answers on `port`, at most 20 s.
pub fn start_live(config: &std::path::Path, port: u16) -> (Daemon, SocketAddr) {
    let mut live = Daemon::spawn(
        "live",
        env!("CARGO_BIN_EXE_shopfloor-live"),
        ["--config".to_owned(), config.display().to_string()],
        config.with_file_name("live.log"),
    )
    .unwrap();
    live.wait_until(Duration::from_secs(20), |_| answers(port, "/snapshot"))
        .unwrap_or_else(|e| panic!("{e:#}"));
    (live, addr(port))
}

/// The three daemons and where they answer.
pub struct Stack {
    pub ingestd: Daemon,
    pub alertd: Daemon,
    pub live: Daemon,
    pub ingest_port: u16,
    pub alert_port: u16,
    pub live_port: u16,
    _dir: tempfile::TempDir,
}

/// What differs between tests: each daemon's own sections (after `[mqtt]`
/// with the broker), and the alarm rules.
pub struct Configs<'a> {
    /// `client_id = …`, `[postgres]`, `[ingest]`.
    pub ingest: &'a str,
    /// `[alerting]` (its rules are in `rules.toml`), `[journal]`.
    pub alertd: &'a str,
    pub rules: &'a str,
    /// `client_id = …`.
    pub live: &'a str,
    /// Subscriptions ingestd must have confirmed before the test publishes.
    pub ingest_subscriptions: u32,
}

pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `GET path` answers 200.
pub fn answers(port: u16, path: &str) -> bool {
    shopfloor_testkit::http_get(addr(port), path).is_ok_and(|(status, _)| status == 200)
}

impl Stack {
    pub fn start(broker: &Mosquitto, c: &Configs<'_>) -> Self {
        Self::start_at(broker.host(), broker.port(), c)
    }

    /// On the broker at `host:port` (any broker, not only Mosquitto).
    pub fn start_at(host: &str, port: u16, c: &Configs<'_>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let [ingest_port, alert_port, live_port] =
            std::array::from_fn(|_| shopfloor_testkit::free_port().unwrap());
        let mqtt = format!("[mqtt]\nhost = \"{host}\"\nport = {port}\n");
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let metrics = |port: u16| format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
        let ingest = write("ingest.toml", format!("{mqtt}{}{}", c.ingest, metrics(ingest_port)));
        write("rules.toml", c.rules.to_owned());
        let alert = write("alertd.toml", format!("{mqtt}{}{}", c.alertd, metrics(alert_port)));
        let live = write(
            "live.toml",
            format!("{mqtt}{}\n[live]\nlisten = \"127.0.0.1:{live_port}\"\n", c.live),
        );
        let spawn = |name: &str, bin: &str, config: &str| {
            Daemon::spawn(
                name,
                bin,
                ["--config".to_owned(), config.to_owned()],
                dir.path().join(format!("{name}.log")),
            )
            .unwrap()
        };
        let mut s = Self {
            ingestd: spawn("ingestd", env!("CARGO_BIN_EXE_shopfloor-ingestd"), &ingest),
            alertd: spawn("alertd", env!("CARGO_BIN_EXE_shopfloor-alertd"), &alert),
            live: spawn("live", env!("CARGO_BIN_EXE_shopfloor-live"), &live),
            ingest_port,
            alert_port,
            live_port,
            _dir: dir,
        };
        for (d, port, path) in [
            (&mut s.ingestd, ingest_port, "/metrics"),
            (&mut s.alertd, alert_port, "/metrics"),
            (&mut s.live, live_port, "/snapshot"),
        ] {
            d.wait_until(Duration::from_secs(30), |_| answers(port, path))
                .unwrap_or_else(|e| panic!("{e:#}"));
        }
        let want = f64::from(c.ingest_subscriptions);
        shopfloor_testkit::scrape_until(addr(ingest_port), Duration::from_secs(20), |p| {
            p.lines().any(|l| {
                l.strip_prefix("shopfloor_ingest_subscriptions_total ")
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .is_some_and(|v| v >= want)
            })
        });
        s
    }

    /// All three still running (with the log tail of one that is not).
    pub fn assert_running(&mut self) {
        for d in [&mut self.ingestd, &mut self.alertd, &mut self.live] {
            assert!(d.is_running(), "{} died:\n{}", d.name, d.log_tail(30));
        }
    }

    pub fn stop(mut self) {
        for d in [&mut self.ingestd, &mut self.alertd, &mut self.live] {
            d.terminate(Duration::from_secs(10));
        }
    }
}

/// A `rules.toml` rule named `name`: HH and H alarms at `(hh, h)` on
/// `metric` of the sources matching `source`.
pub fn limit_rule(name: &str, source: &str, metric: &str, (hh, h): (f64, f64)) -> String {
    format!(
        "\n[[rule]]\nname = \"{name}\"\nsource = \"{source}\"\nmetric = \"{metric}\"\n\
         limit = {{ hh = {{ limit = {hh:?} }}, h = {{ limit = {h:?} }} }}\n"
    )
}

/// An alarm rule on the member `Motor1/Speed` of the template instance
/// that `testkit/python/sparkplug_rich.py` (edge node `Rich/ign`) sends.
pub fn motor_rules() -> String {
    limit_rule("motor-speed", "Rich/ign", "Motor1/Speed", (1700.0, 1650.0))
}

/// Polls `sql` (one text column, or NULL) until it gives `want`, 30 s at most.
pub async fn wait_text(db: &tokio_postgres::Client, sql: &str, want: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got: Option<String> =
            db.query_opt(sql, &[]).await.ok().flatten().and_then(|r| r.get(0));
        if got.as_deref() == Some(want) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{sql}: {got:?}, expected {want:?} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends a command to a Python peer and waits (20 s at most) for its
/// `ok <command>`.
pub fn send(peer: &mut shopfloor_testkit::PythonPeer, command: &str) {
    peer.send(command).unwrap();
    let word = command.split_whitespace().next().unwrap();
    let want = format!("ok {word}");
    assert!(
        peer.until(Duration::from_secs(20), |l| l == want).is_ok(),
        "the Python edge did not confirm {command:?}"
    );
}

/// Sends SIGTERM to `child` (ours, not yet reaped) and waits for its exit,
/// at most `within`, without blocking the runtime; its status.
pub async fn sigterm(
    child: &mut std::process::Child,
    within: Duration,
) -> std::process::ExitStatus {
    // SAFETY: a plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(std::time::Instant::now() < deadline, "no exit within {within:?} of SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The first alarm event on `events` that `wanted` takes, with `publish`
/// called again every `each` until one arrives (alertd may not have
/// subscribed yet), at most `within`; else fails saying `failure()`.
pub async fn event_after(
    events: &mut rumqttc::v5::EventLoop,
    (within, each): (Duration, Duration),
    mut publish: impl AsyncFnMut(),
    mut wanted: impl FnMut(&serde_json::Value) -> bool,
    failure: impl Fn() -> String,
) -> serde_json::Value {
    use rumqttc::v5::Event;
    use rumqttc::v5::mqttbytes::v5::Packet;
    let deadline = std::time::Instant::now() + within;
    loop {
        publish().await;
        let got = tokio::time::timeout(each, async {
            loop {
                if let Ok(Event::Incoming(Packet::Publish(p))) = events.poll().await {
                    let ev: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                    if wanted(&ev) {
                        return ev;
                    }
                }
            }
        })
        .await;
        if let Ok(ev) = got {
            return ev;
        }
        assert!(std::time::Instant::now() < deadline, "{}", failure());
    }
}

/// A client of the PostgreSQL at `connection`, its connection driven by a
/// task of its own.
pub async fn pg_client(connection: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(connection, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

/// The whole plant with the seed's scenario, in `dir`/plant, from the
/// package's binaries.
#[cfg(feature = "demo")]
pub fn start_plant(dir: &std::path::Path) -> shopfloor_examples::plant::Plant {
    use shopfloor_examples::plant::{Options, Plant};
    let bins = std::path::Path::new(env!("CARGO_BIN_EXE_shopfloor-sim")).parent().unwrap();
    Plant::start(&Options::new(dir.join("plant"), bins), |_| {}).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Starts `bin --config config`, with no stdin and its stderr to `stderr`
/// (inherited, or a log file).
pub fn spawn_with_config(
    bin: &str,
    config: &std::path::Path,
    stderr: impl Into<std::process::Stdio>,
) -> std::process::Child {
    std::process::Command::new(bin)
        .arg("--config")
        .arg(config)
        .stdin(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("start {bin}: {e}"))
}
