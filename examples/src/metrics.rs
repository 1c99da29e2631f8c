//! The Prometheus endpoint of every binary: `GET /metrics` in the text
//! exposition format, on the address of the deployment file's
//! `[metrics] listen` (no endpoint without it).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use serde::Deserialize;
use tokio::task::JoinHandle;

/// `[metrics]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    listen: SocketAddr,
}

#[derive(Deserialize)]
struct File {
    metrics: Option<Section>,
    #[serde(flatten)]
    _others: std::collections::BTreeMap<String, toml::Value>,
}

/// The `[metrics] listen` address of a deployment file, if it has one.
pub fn listen_address(path: &Path) -> anyhow::Result<Option<SocketAddr>> {
    let file: File = crate::read_toml(path)?;
    Ok(file.metrics.map(|m| m.listen))
}

/// A label value as the text format wants it (backslash, quote, newline
/// escaped).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// What a labelled family is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Goes up and down.
    Gauge,
    /// Only ever grows.
    Counter,
}

/// Metrics in the text exposition format, built line by line.
#[derive(Debug, Default)]
pub struct Exposition(String);

impl Exposition {
    /// An empty page.
    pub fn new() -> Self {
        Self::default()
    }

    fn metric(&mut self, kind: &str, name: &str, help: &str, value: f64) -> &mut Self {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        self
    }

    /// A counter (only ever grows; `rate()` makes it a rate).
    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> &mut Self {
        // Counters stay exact in f64 up to 2^53.
        self.metric("counter", name, help, value as f64)
    }

    /// A gauge (goes up and down).
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) -> &mut Self {
        self.metric("gauge", name, help, value)
    }

    /// A gauge with labels (`name{k="v",…} value`; values escaped as the
    /// format asks).
    pub fn labelled(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) -> &mut Self {
        let labels: Vec<String> =
            labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
        let _ = writeln!(
            self.0,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{}}} {value}",
            labels.join(",")
        );
        self
    }

    /// One series per value of `label` (`name{label="…"} value`), under
    /// one `# HELP` and `# TYPE`; nothing when `series` is empty.
    pub fn family(
        &mut self,
        kind: Kind,
        name: &str,
        help: &str,
        label: &str,
        series: &[(String, f64)],
    ) -> &mut Self {
        if series.is_empty() {
            return self;
        }
        let kind = match kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (value_of_label, value) in series {
            let _ = writeln!(self.0, "{name}{{{label}=\"{}\"}} {value}", escape(value_of_label));
        }
        self
    }

    /// What every page starts with: `shopfloor_build_info` (the binary and
    /// its version as labels, value 1) and the process's CPU time, memory
    /// and open files (`process_*`, as Prometheus' client libraries name
    /// them), read from `/proc/self`.
    pub fn process(&mut self) -> &mut Self {
        let binary = std::env::args()
            .next()
            .and_then(|a| Path::new(&a).file_name().map(|f| f.to_string_lossy().into_owned()))
            .unwrap_or_default();
        self.labelled(
            "shopfloor_build_info",
            "The binary and its version (always 1).",
            &[("binary", &binary), ("version", env!("CARGO_PKG_VERSION"))],
            1.0,
        );
        // SAFETY: sysconf with a valid name only reads a constant.
        let (tick, page) =
            unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // The fields after the command name, which is in parentheses.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
        // utime and stime: fields 14 and 15 of stat, 12 and 13 after `)`.
        if tick > 0 {
            self.metric(
                "counter",
                "process_cpu_seconds_total",
                "User and system CPU time, seconds.",
                (ticks(11) + ticks(12)) / tick as f64,
            );
        }
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        if let Some(rss) = statm.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()) {
            self.gauge(
                "process_resident_memory_bytes",
                "Resident memory, bytes.",
                rss * page as f64,
            );
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.gauge("process_open_fds", "Open file descriptors.", fds.count() as f64);
        }
        self
    }

    /// The page.
    pub fn finish(self) -> String {
        self.0
    }
}

pub use crate::http::{Ready, Render};

/// Serves `GET /metrics`, `/healthz` and `/ready` (always ready) on
/// `listen` until the task is aborted; returns the task and the address
/// bound (port 0 picks a free one).
pub async fn serve(
    listen: SocketAddr,
    render: Render,
) -> anyhow::Result<(JoinHandle<()>, SocketAddr)> {
    serve_with(listen, render, Arc::new(|| Ok(()))).await
}

/// [`serve`], with `/ready` answered by `ready`.
pub async fn serve_with(
    listen: SocketAddr,
    render: Render,
    ready: Ready,
) -> anyhow::Result<(JoinHandle<()>, SocketAddr)> {
    let listener = crate::http::Listener::bind(listen, "metrics")
        .await
        .with_context(|| format!("[metrics] listen = {listen}: cannot bind it"))?;
    let bound = axum::serve::Listener::local_addr(&listener)?;
    tracing::info!("metrics on http://{bound}/metrics (and /healthz, /ready)");
    Ok((crate::http::spawn(listener, crate::http::metrics_router(render, ready)), bound))
}

/// Serves `render` and `ready` on the `[metrics]` address of the
/// deployment file at `path`, if it names one.
pub async fn serve_configured(
    path: &Path,
    render: Render,
    ready: Ready,
) -> anyhow::Result<Option<JoinHandle<()>>> {
    match listen_address(path)? {
        Some(listen) => Ok(Some(serve_with(listen, render, ready).await?.0)),
        None => {
            tracing::info!("no [metrics] listen in {}: no metrics endpoint", path.display());
            Ok(None)
        }
    }
}

/// Runs a binary's main phase: serves `/metrics`, rendered from `target`
/// by `page`, and `/ready`, answered by `ready`, as the deployment file at
/// `path` asks, until Ctrl-C or SIGTERM; then stops serving and hands
/// `target` back for its shutdown.
pub async fn serve_until_stop<T: Send + 'static>(
    path: &Path,
    target: T,
    page: fn(&T, &mut Exposition),
    ready: fn(&T) -> Result<(), String>,
) -> anyhow::Result<T> {
    let slot = Arc::new(std::sync::Mutex::new(Some(target)));
    let shared = Arc::clone(&slot);
    let render: Render = Arc::new(move || {
        let mut p = Exposition::new();
        p.process();
        if let Ok(guard) = shared.lock()
            && let Some(t) = guard.as_ref()
        {
            page(t, &mut p);
        }
        p.finish()
    });
    let shared = Arc::clone(&slot);
    let ready: Ready = Arc::new(move || match shared.lock() {
        Ok(guard) => guard.as_ref().map_or_else(|| Err("stopping".to_owned()), ready),
        Err(_) => Err("a thread panicked".to_owned()),
    });
    let server = serve_configured(path, render, ready).await?;
    crate::wait_for_stop().await?;
    if let Some(s) = server {
        s.abort();
    }
    // Only this function takes it out, once.
    let target = slot.lock().ok().and_then(|mut g| g.take());
    target.context("the metrics page still held the state to stop")
}

/// What each input (`plain`, `sparkplug`, `mapping NAME`) took:
/// `PREFIX_input_messages_total{input}` and `PREFIX_input_dead_total{input}`.
pub fn inputs(page: &mut Exposition, prefix: &str, counts: &[shopfloor_mqtt::InputCount]) {
    use std::sync::atomic::Ordering::Relaxed;
    let series = |f: fn(&shopfloor_mqtt::InputCount) -> u64| -> Vec<(String, f64)> {
        counts.iter().map(|c| (c.name.clone(), f(c) as f64)).collect()
    };
    page.family(
        Kind::Counter,
        &format!("{prefix}_input_messages_total"),
        "Messages each input decoded.",
        "input",
        &series(|c| c.messages.load(Relaxed)),
    )
    .family(
        Kind::Counter,
        &format!("{prefix}_input_dead_total"),
        "Messages each input took and could not use.",
        "input",
        &series(|c| c.dead.load(Relaxed)),
    );
}

/// Each device of a gateway (a Modbus device, an OPC UA server): 1 while
/// it is online (born, answering), 0 while dead.
pub fn devices(page: &mut Exposition, devices: &[(String, bool)]) {
    let series: Vec<(String, f64)> =
        devices.iter().map(|(d, up)| (d.clone(), if *up { 1.0 } else { 0.0 })).collect();
    page.family(
        Kind::Gauge,
        "shopfloor_edge_device_online",
        "1 while the device (a Modbus device, an OPC UA server) is born and answers, 0 while dead.",
        "device",
        &series,
    );
}

/// Ready when the edge node is born and sends live data.
pub fn edge_ready(s: &shopfloor_mqtt::EdgeStats) -> Result<(), String> {
    if s.online {
        Ok(())
    } else {
        Err("the edge node is not online (no broker, or its primary host is away): storing"
            .to_owned())
    }
}

/// Ready when an MQTT consumer with these counters is connected.
pub fn mqtt_ready(link: &shopfloor_mqtt::consumer::LinkCounters) -> Result<(), String> {
    if link.connected.load(std::sync::atomic::Ordering::Acquire) {
        Ok(())
    } else {
        Err("not connected to the MQTT broker".to_owned())
    }
}

/// A Sparkplug edge node's counters (the gateways).
pub fn edge(page: &mut Exposition, s: &shopfloor_mqtt::EdgeStats) {
    page.gauge(
        "shopfloor_edge_online",
        "1 while the edge node is born and sends live data, 0 while it stores.",
        if s.online { 1.0 } else { 0.0 },
    )
    .gauge(
        "shopfloor_edge_stored_readings",
        "Readings in the store, waiting to be sent.",
        s.stored as f64,
    )
    .gauge("shopfloor_edge_stored_bytes", "Bytes the store holds.", s.stored_bytes as f64)
    .counter(
        "shopfloor_edge_dropped_readings_total",
        "Readings dropped because the store was full.",
        s.dropped_readings,
    )
    .counter(
        "shopfloor_edge_dropped_events_total",
        "Driver events dropped because the gateway did not read them in time.",
        s.dropped_events,
    );
}

/// An MQTT consumer's connections (ingest, alerting):
/// `PREFIX_connects_total` and `PREFIX_connection_failures_total`.
fn link(page: &mut Exposition, prefix: &str, link: &shopfloor_mqtt::consumer::LinkCounters) {
    use std::sync::atomic::Ordering::Relaxed;
    page.counter(
        &format!("{prefix}_connects_total"),
        "Connections to the broker; more than one means reconnects.",
        link.connects.load(Relaxed),
    )
    .counter(
        &format!("{prefix}_connection_failures_total"),
        "Failed connections and connection attempts to the broker.",
        link.failures.load(Relaxed),
    );
}

/// The ingest's counters.
pub fn ingest(page: &mut Exposition, s: &shopfloor_ingest::consumer::Stats) {
    use std::sync::atomic::Ordering::Relaxed;
    page.counter(
        "shopfloor_ingest_messages_total",
        "Messages committed and acknowledged.",
        s.messages.load(Relaxed),
    )
    .counter(
        "shopfloor_ingest_rows_total",
        "Rows added to shopfloor.readings.",
        s.rows.load(Relaxed),
    )
    .counter(
        "shopfloor_ingest_duplicate_rows_total",
        "Rows offered that were stored already (redeliveries).",
        s.duplicates.load(Relaxed),
    )
    .counter(
        "shopfloor_ingest_dead_letters_total",
        "Messages that could not be stored, kept in the dead letters.",
        s.dead_letters.load(Relaxed),
    )
    .counter(
        "shopfloor_ingest_untracked_readings_total",
        "Sparkplug readings not remembered for a death's stale values (max_tracked_metrics reached).",
        s.untracked_readings.load(Relaxed),
    )
    .counter(
        "shopfloor_ingest_dead_letters_deleted_total",
        "Dead letters deleted by their retention or cap.",
        s.dead_letters_deleted.load(Relaxed),
    );
    link(page, "shopfloor_ingest", &s.link);
    page.counter(
        "shopfloor_ingest_stale_acks_total",
        "Acks dropped because their connection had gone (the broker redelivers those messages).",
        s.link.stale_acks.load(Relaxed),
    )
    .counter(
        "shopfloor_ingest_subscriptions_total",
        "Subscriptions the broker confirmed (one per topic filter per connection).",
        s.link.subscribed.load(Relaxed),
    )
    .counter(
        "shopfloor_ingest_skipped_metrics_total",
        "Sparkplug metrics that carried no reading (null values, nameless template members).",
        s.skipped_metrics.load(Relaxed),
    )
    .gauge(
        "shopfloor_ingest_pending_messages",
        "Messages received and not committed yet (the queue).",
        s.held.load(Relaxed) as f64,
    );
    let counts = s.inputs.lock().map(|c| Arc::clone(&c)).unwrap_or_default();
    inputs(page, "shopfloor_ingest", &counts)
}

/// The alarm engine's counters.
pub fn alerting(page: &mut Exposition, s: &shopfloor_alerting::mqtt::DriverStats) {
    use std::sync::atomic::Ordering::Relaxed;
    page.counter(
        "shopfloor_alerting_messages_total",
        "Messages taken from the broker (readings and commands).",
        s.messages.load(Relaxed),
    )
    .counter(
        "shopfloor_alerting_events_total",
        "Alarm events published.",
        s.events.load(Relaxed),
    );
    link(page, "shopfloor_alerting", &s.link);
    page.counter(
        "shopfloor_alerting_journal_dropped_total",
        "Events the journal never got: its backlog (100 000) was full while the database was away.",
        s.journal_dropped.load(Relaxed),
    )
    .counter(
        "shopfloor_alerting_unusable_messages_total",
        "Messages with no usable reading (not a batch, DATA before any birth, no input for the topic).",
        s.unusable.load(Relaxed),
    )
    .counter(
        "shopfloor_alerting_alertmanager_dropped_total",
        "Alert lists an Alertmanager's full queue refused (it is slow or away).",
        s.alertmanager_dropped.load(Relaxed),
    )
    .gauge(
        "shopfloor_alerting_signals",
        "Signals held with their alarms (selected by a rule, or watched by enabled_when).",
        s.signals.load(Relaxed) as f64,
    )
    .gauge(
        "shopfloor_alerting_unselected_signals",
        "Signals no rule selects, remembered to skip matching (bounded).",
        s.unselected_signals.load(Relaxed) as f64,
    )
    .counter(
        "shopfloor_alerting_refused_readings_total",
        "Readings ignored: their signal would pass the max_alarms limit.",
        s.refused_readings.load(Relaxed),
    )
    .gauge(
        "shopfloor_alerting_active_alarms",
        "Alarms active now.",
        s.active.load(Relaxed) as f64,
    );
    let counts = s.inputs.lock().map(|c| Arc::clone(&c)).unwrap_or_default();
    inputs(page, "shopfloor_alerting", &counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_the_page_and_refuses_the_rest() {
        let mut page = Exposition::new();
        page.counter("shopfloor_test_total", "A test counter.", 42).gauge(
            "shopfloor_test_up",
            "Up.",
            1.0,
        );
        page.family(
            Kind::Gauge,
            "shopfloor_test_device_up",
            "Per device.",
            "device",
            &[("press-1".into(), 1.0), ("a \"quoted\\ name\n".into(), 0.0)],
        );
        let text = page.finish();
        assert!(
            text.contains("# TYPE shopfloor_test_total counter\nshopfloor_test_total 42\n"),
            "{text}"
        );
        assert_eq!(text.matches("# HELP shopfloor_test_device_up ").count(), 1, "{text}");
        assert!(
            text.contains(
                "shopfloor_test_device_up{device=\"press-1\"} 1\n\
                 shopfloor_test_device_up{device=\"a \\\"quoted\\\\ name\\n\"} 0\n"
            ),
            "{text}"
        );
        let (task, addr) =
            serve("127.0.0.1:0".parse().unwrap(), Arc::new(move || text.clone())).await.unwrap();
        let get = |req: &'static str| async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let ok = get("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(
            ok.starts_with("HTTP/1.1 200 OK") && ok.contains("\nshopfloor_test_up 1\n"),
            "{ok}"
        );
        assert!(
            get("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await.starts_with("HTTP/1.1 404")
        );
        assert!(
            get("POST /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 405")
        );
        let health = get("GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n").await;
        assert!(health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"), "{health}");
        let ready = get("GET /ready HTTP/1.1\r\nConnection: close\r\n\r\n").await;
        assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
        // A client that never finishes its request does not stop the others.
        let _idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(get("GET /metrics HTTP/1.0\r\n\r\n").await.contains("shopfloor_test_total 42"));
        task.abort();
    }
}
