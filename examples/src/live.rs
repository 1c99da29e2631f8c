//! The live plant page: values per machine with sparkline trends and
//! their quality, and the active alarms with acknowledge and shelve
//! buttons, pushed to the browser over server-sent events. Nothing to
//! install: one HTML file embedded in the binary, no external script or
//! font, no build step.
//!
//! It reads what an operator may read on the broker (`spBv1.0/#`, decoded
//! by a Sparkplug host application, and the alarms' retained state on
//! `shopfloor/alarms/state/#`) and sends the alerting daemon's operator
//! commands on `shopfloor/alarms/command`.
//!
//! HTTP: `GET /` the page, `GET /events` the event stream (a snapshot a
//! second), `GET /snapshot` one snapshot as JSON, `POST /command` an
//! operator command (`{"command": "acknowledge", "rule", "source",
//! "metric"}`; the page adds `"user": "live-page"`).
//!
//! Past [`DETAIL_LIMIT`] signals the snapshot is aggregated per machine
//! (counts, worst quality, alarms), so a car plant does not drown the
//! browser, and no sparkline history is kept.
//!
//! `POST /command` wants `Content-Type: application/json` and, when the
//! browser names one, the page's own origin: another site's page open in
//! the operator's browser cannot send commands (cross-site request
//! forgery). There is no login: keep the page on loopback or behind a
//! proxy that authenticates.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value as Json, json};
use shopfloor_mqtt::consumer::{ClientHandle, LinkCounters, Outgoing};
use shopfloor_mqtt::{
    Broker, Consumer, ConsumerConfig, ConsumerEvent, Decoded, Input, Inputs, Protocol,
};
use shopfloor_schemas::{Quality, Value};
use shopfloor_sparkplug::edge::Now;
use shopfloor_sparkplug::host::HostConfig;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// The page.
const INDEX: &str = include_str!("live.html");
/// Points kept per signal for its sparkline.
pub const HISTORY: usize = 60;
/// Above this many signals, snapshots are per machine only.
pub const DETAIL_LIMIT: usize = 5_000;
/// Where alertd keeps each alarm's state (retained).
const ALARM_STATE: &str = "shopfloor/alarms/state/";

/// Where to read from and listen.
#[derive(Clone)]
pub struct LiveConfig {
    /// The broker, with TLS and credentials if it wants them (the shipped
    /// broker's people listener).
    pub broker: Broker,
    /// Brokers tried in turn when a connection fails.
    pub fallback: Vec<Broker>,
    /// MQTT 5 or 3.1.1.
    pub protocol: Protocol,
    /// The HTTP address (port 0: any free one).
    pub listen: SocketAddr,
    /// The MQTT client id (`None`: `live-page-<pid>`).
    pub client_id: Option<String>,
}

#[derive(Default)]
struct Signal {
    last: Option<f64>,
    text: Option<String>,
    quality: &'static str,
    points: VecDeque<f64>,
}

/// What the page shows, kept up to date from MQTT.
#[derive(Default)]
pub struct Board {
    machines: BTreeMap<String, BTreeMap<String, Signal>>,
    alarms: BTreeMap<String, Json>,
    messages: u64,
    /// Signals in `machines`.
    signals: usize,
}

fn quality(q: Quality) -> &'static str {
    match q {
        Quality::Good => "good",
        Quality::Uncertain => "uncertain",
        Quality::Bad => "bad",
        _ => "stale",
    }
}

impl Board {
    fn apply(&mut self, batch: &shopfloor_schemas::Batch) {
        let keep_history = self.signals <= DETAIL_LIMIT;
        let machine = self.machines.entry(batch.source.to_string()).or_default();
        for r in &batch.readings {
            let s = match machine.get_mut(r.metric.as_str()) {
                Some(s) => s,
                None => {
                    self.signals += 1;
                    machine.entry(r.metric.to_string()).or_default()
                }
            };
            s.quality = quality(r.quality);
            let number = match &r.value {
                Value::F64(x) => Some(*x),
                Value::I64(i) => Some(*i as f64),
                Value::U64(u) => Some(*u as f64),
                Value::Bool(b) => Some(f64::from(u8::from(*b))),
                Value::String(t) => {
                    s.text = Some(t.clone());
                    None
                }
                _ => None,
            };
            if let Some(x) = number.filter(|x| x.is_finite()) {
                s.last = Some(x);
                if !keep_history {
                    // The aggregated view draws no sparkline: free it.
                    if s.points.capacity() > 0 {
                        s.points = VecDeque::new();
                    }
                } else {
                    if s.points.len() == HISTORY {
                        s.points.pop_front();
                    }
                    s.points.push_back(x);
                }
            }
        }
    }

    /// The snapshot the page draws: machines with their signals (or, past
    /// [`DETAIL_LIMIT`] signals, per-machine counts), and active alarms.
    pub fn snapshot(&self) -> Json {
        let signals = self.signals;
        let detailed = signals <= DETAIL_LIMIT;
        let rank = |q: &str| match q {
            "good" => 0,
            "uncertain" => 1,
            "stale" => 2,
            _ => 3,
        };
        let machines: Vec<Json> = self
            .machines
            .iter()
            .map(|(source, sigs)| {
                let worst = sigs.values().map(|s| s.quality).max_by_key(|q| rank(q)).unwrap_or("good");
                let mut m = json!({"source": source, "signals": sigs.len(), "quality": worst});
                if detailed {
                    m["metrics"] = sigs
                        .iter()
                        .map(|(name, s)| {
                            json!({"metric": name, "value": s.last, "text": s.text, "quality": s.quality,
                                   "points": s.points.iter().collect::<Vec<_>>()})
                        })
                        .collect();
                }
                m
            })
            .collect();
        let alarms: Vec<&Json> = self
            .alarms
            .values()
            .filter(|a| !a["active"].is_null() || a["unacknowledged"] == true)
            .collect();
        json!({"detailed": detailed, "signals": signals, "messages": self.messages,
               "machines": machines, "alarms": alarms})
    }
}

/// The running page: its address and the shared board.
pub struct Live {
    /// Where the page is.
    pub addr: SocketAddr,
    /// What it shows.
    pub board: Arc<Mutex<Board>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Live {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts the page: an MQTT reader and the HTTP server.
pub async fn start(config: LiveConfig) -> anyhow::Result<Live> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("live page: cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let board = Arc::new(Mutex::new(Board::default()));
    let id =
        config.client_id.clone().unwrap_or_else(|| format!("live-page-{}", std::process::id()));
    let mut host_config = HostConfig::new("shopfloor-live");
    host_config.publish_state = false;
    let mut inputs = Inputs::new(&[Input::sparkplug(host_config)]);
    let mut c = ConsumerConfig::new(id, config.broker.clone());
    c.fallback = config.fallback.clone();
    c.protocol = config.protocol;
    c.filters = inputs.filters(None);
    c.filters.push(format!("{ALARM_STATE}#"));
    let mut consumer = Consumer::connect(c, Arc::new(LinkCounters::default()));
    let client = consumer.client().clone();
    let reader = {
        let (board, client) = (Arc::clone(&board), client.clone());
        tokio::spawn(async move {
            loop {
                let deadline = inputs.poll_timeout().map(tokio::time::Instant::from_std);
                let timer = async {
                    match deadline {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    m = consumer.recv() => match m {
                        None => return,
                        Some(ConsumerEvent::Connected { .. }) => inputs.handle_connected(Now::now()),
                        Some(ConsumerEvent::Message(m)) => {
                            let mut b = board.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                            b.messages += 1;
                            if let Some(key) = m.topic.strip_prefix(ALARM_STATE) {
                                match serde_json::from_slice::<Json>(&m.payload) {
                                    Ok(state) => {
                                        b.alarms.insert(key.to_owned(), state);
                                    }
                                    Err(_) => {
                                        b.alarms.remove(key);
                                    }
                                }
                            } else if let Decoded::Readings { readings, .. } =
                                inputs.decode(&m.topic, None, &m.payload, Now::now())
                            {
                                for batch in readings.into_batches() {
                                    b.apply(&batch);
                                }
                            }
                        }
                        Some(_) => {}
                    },
                    // A seq gap not filled in time: a rebirth request.
                    () = timer => inputs.handle_timeout(Now::now()),
                }
                // Rebirth requests, so a page opened late names every metric.
                for t in inputs.transmits() {
                    let _ = client.try_publish(Outgoing::from(t));
                }
            }
        })
    };
    let server = {
        let board = Arc::clone(&board);
        tokio::spawn(async move {
            loop {
                let socket = match listener.accept().await {
                    Ok((socket, _)) => socket,
                    Err(e) => {
                        // Out of file descriptors (EMFILE), say: retrying
                        // at once would spin a core.
                        tracing::warn!(
                            "live page: cannot accept a connection: {e}; retrying in 100 ms"
                        );
                        tokio::time::sleep(crate::metrics::ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                let (board, client) = (Arc::clone(&board), client.clone());
                tokio::spawn(async move {
                    let _ = handle(socket, board, client).await;
                });
            }
        })
    };
    tracing::info!("live page on http://{addr}/");
    Ok(Live { addr, board, tasks: vec![reader, server] })
}

/// A request header's value, by case-insensitive name.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn respond(
    socket: &mut TcpStream,
    status: &str,
    kind: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await?;
    socket.write_all(body.as_bytes()).await?;
    socket.shutdown().await
}

async fn handle(
    mut socket: TcpStream,
    board: Arc<Mutex<Board>>,
    client: ClientHandle,
) -> std::io::Result<()> {
    // The request head (at most 16 KiB within 5 s), then a body of at most 16 KiB.
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0_u8; 2048];
    let head_end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return Ok(i + 4);
            }
            if buf.len() > 16 << 10 {
                return Err(std::io::Error::other("request head too large"));
            }
            let n = socket.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::other("closed"));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .map_err(|_| std::io::Error::other("timeout"))??;
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut line = head.lines().next().unwrap_or_default().split(' ');
    let (method, path) = (line.next().unwrap_or_default(), line.next().unwrap_or_default());
    let snapshot =
        || board.lock().unwrap_or_else(std::sync::PoisonError::into_inner).snapshot().to_string();
    match (method, path) {
        ("GET", "/") => respond(&mut socket, "200 OK", "text/html; charset=utf-8", INDEX).await,
        ("GET", "/snapshot") => {
            respond(&mut socket, "200 OK", "application/json", &snapshot()).await
        }
        ("GET", "/events") => {
            socket
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nConnection: keep-alive\r\n\r\n")
                .await?;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                socket.write_all(format!("data: {}\n\n", snapshot()).as_bytes()).await?;
            }
        }
        ("POST", "/command") => {
            // Cross-site request forgery: another site's page may POST here
            // from the operator's browser. A form can send text/plain but
            // not application/json (that needs CORS, which is never
            // granted), and a browser names the page's origin.
            let json = header(&head, "content-type")
                .is_some_and(|t| t.to_ascii_lowercase().starts_with("application/json"));
            if !json {
                return respond(
                    &mut socket,
                    "415 Unsupported Media Type",
                    "text/plain",
                    "Content-Type: application/json, please\n",
                )
                .await;
            }
            if let Some(origin) = header(&head, "origin") {
                let host = header(&head, "host").unwrap_or_default();
                let same = origin
                    .strip_prefix("http://")
                    .or_else(|| origin.strip_prefix("https://"))
                    .is_some_and(|o| o.eq_ignore_ascii_case(host));
                if !same {
                    return respond(
                        &mut socket,
                        "403 Forbidden",
                        "text/plain",
                        "commands come from this page only\n",
                    )
                    .await;
                }
            }
            let length: usize =
                header(&head, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            if length > 16 << 10 {
                return respond(
                    &mut socket,
                    "413 Payload Too Large",
                    "text/plain",
                    "at most 16 KiB\n",
                )
                .await;
            }
            let mut body = buf[head_end..].to_vec();
            while body.len() < length {
                let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut chunk))
                    .await
                    .map_err(|_| std::io::Error::other("timeout"))??;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
            let command: Json = match serde_json::from_slice(&body[..length.min(body.len())]) {
                Ok(c @ Json::Object(_)) => c,
                _ => {
                    return respond(
                        &mut socket,
                        "400 Bad Request",
                        "text/plain",
                        "a JSON object, please\n",
                    )
                    .await;
                }
            };
            let allowed = ["acknowledge", "shelve", "unshelve"];
            if !command["command"].as_str().is_some_and(|c| allowed.contains(&c)) {
                return respond(
                    &mut socket,
                    "400 Bad Request",
                    "text/plain",
                    "command: acknowledge, shelve or unshelve\n",
                )
                .await;
            }
            match client
                .publish(Outgoing::new("shopfloor/alarms/command", command.to_string(), 1, false))
                .await
            {
                Ok(()) => {
                    respond(&mut socket, "202 Accepted", "application/json", "{\"sent\": true}")
                        .await
                }
                Err(e) => {
                    respond(&mut socket, "503 Service Unavailable", "text/plain", &format!("{e}\n"))
                        .await
                }
            }
        }
        ("GET", _) => respond(&mut socket, "404 Not Found", "text/plain", "try /\n").await,
        _ => {
            respond(&mut socket, "405 Method Not Allowed", "text/plain", "GET or POST /command\n")
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shopfloor_schemas::{Batch, Reading, Timestamp};

    fn batch(source: &str, metrics: usize, v: f64) -> Batch {
        let mut b = Batch::new(source);
        for m in 0..metrics {
            b.readings.push(Reading::new(format!("m{m}").as_str(), Timestamp::from_unix_ms(1), v));
        }
        b
    }

    fn points(board: &Board) -> usize {
        board.machines.values().flat_map(BTreeMap::values).map(|s| s.points.len()).sum()
    }

    #[test]
    fn sparklines_are_kept_up_to_the_detail_limit_then_dropped() {
        let mut board = Board::default();
        for i in 0..(HISTORY + 5) {
            board.apply(&batch("Plant/gw/m1", 4, i as f64));
        }
        assert_eq!(board.signals, 4);
        assert_eq!(points(&board), 4 * HISTORY, "each sparkline capped at HISTORY");
        let snap = board.snapshot();
        assert_eq!(snap["detailed"], true);
        assert_eq!(snap["machines"][0]["metrics"][0]["points"].as_array().unwrap().len(), HISTORY);

        // Past the limit: aggregated, and the history goes as signals update.
        let machines = DETAIL_LIMIT / 100 + 1;
        for m in 0..machines {
            board.apply(&batch(&format!("Plant/gw/big{m}"), 100, 1.0));
        }
        assert!(board.signals > DETAIL_LIMIT);
        board.apply(&batch("Plant/gw/m1", 4, 2.0));
        for m in 0..machines {
            board.apply(&batch(&format!("Plant/gw/big{m}"), 100, 2.0));
        }
        assert_eq!(points(&board), 0);
        let snap = board.snapshot();
        assert_eq!(snap["detailed"], false);
        assert_eq!(snap["signals"], board.signals);
        assert!(snap["machines"][0].get("metrics").is_none());
    }

    #[test]
    fn headers_by_case_insensitive_name() {
        let head = "POST /command HTTP/1.1\r\nHost: 127.0.0.1:8088\r\ncontent-TYPE:  application/json \r\n\r\n";
        assert_eq!(header(head, "Content-Type"), Some("application/json"));
        assert_eq!(header(head, "host"), Some("127.0.0.1:8088"));
        assert_eq!(header(head, "origin"), None);
        assert_eq!(header("GET /x: y HTTP/1.1\r\n\r\n", "get /x"), None, "not the request line");
    }
}
