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
//! HTTP (axum): `GET /` the page, `GET /events` the event stream (a
//! snapshot a second), `GET /snapshot` one snapshot as JSON, `POST
//! /command` an operator command (`{"command": "acknowledge", "rule",
//! "source", "metric"}`). Every URL in the page is relative, so it works
//! behind a reverse proxy on a sub-path (`/plant/`).
//!
//! Safe to open ([`Security`]):
//! - **Hosts.** A request must name the page by an IP address, `localhost`
//!   or a name of `allowed_hosts`: a web site that rebinds its own name to
//!   this address (DNS rebinding) is refused.
//! - **Logins.** [`Auth`]: none (loopback only, by default), built-in users
//!   (HTTP Basic, Argon2id hashes in a file), or a trusted reverse proxy
//!   that names the user in `X-Forwarded-User`. The `user` of a command is
//!   set by the server from that identity, never taken from the browser.
//! - **Forgery and framing.** `POST /command` wants `Content-Type:
//!   application/json` and, when the browser names one, an origin the page
//!   answers to; every response forbids framing (`frame-ancestors 'none'`).
//! - **Streams.** At most `max_streams` event streams at once (503 past
//!   it); a client that reads nothing for 10 s is dropped.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::Extension;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use serde_json::{Value as Json, json};
use shopfloor_mqtt::consumer::{ClientHandle, LinkCounters, Outgoing};
use shopfloor_mqtt::{Connection, Consumer, ConsumerConfig, ConsumerEvent, Decoded, Input, Inputs};
use shopfloor_schemas::{Quality, Value};
use shopfloor_sparkplug::edge::Now;
use shopfloor_sparkplug::host::HostConfig;

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
    /// The page's MQTT connection: the broker with TLS and credentials if
    /// it wants them (the shipped broker's people listener), fallbacks,
    /// protocol, keep-alive, and a client id of its own
    /// ([`default_client_id`]).
    pub mqtt: Connection,
    /// The HTTP address (port 0: any free one).
    pub listen: SocketAddr,
    /// The names it answers to, who may use it, how many streams.
    pub security: Security,
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

/// Who may use the page.
#[derive(Clone, Debug, Default)]
pub enum Auth {
    /// No login: whoever reaches the page. Commands are journaled as
    /// `live-page`.
    #[default]
    None,
    /// Built-in logins over HTTP Basic, checked against Argon2id hashes.
    Users(Arc<Users>),
    /// A reverse proxy authenticates and names the user in `header`;
    /// requests from any address but `proxies` are refused.
    Proxy {
        /// The proxies' addresses.
        proxies: Vec<std::net::IpAddr>,
        /// The header naming the user (`X-Forwarded-User`).
        header: String,
    },
}

/// The built-in logins: names and their Argon2 password hashes (PHC
/// strings, `$argon2id$…`, as `shopfloor-live hash-password` prints them).
#[derive(Debug, Default)]
pub struct Users {
    hashes: BTreeMap<String, String>,
    /// `Authorization` values already verified (the hash is slow on
    /// purpose: the page's requests would pay it each time), bounded.
    verified: Mutex<BTreeMap<String, String>>,
}

/// Verified `Authorization` values kept, at most.
const VERIFIED_CACHE: usize = 256;

impl Users {
    /// Reads `name:hash` lines (blank lines and `#` comments skipped).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut hashes = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, hash) = line
                .split_once(':')
                .with_context(|| format!("line {}: want name:$argon2id$…", i + 1))?;
            argon2::PasswordHash::new(hash).map_err(|e| {
                anyhow::anyhow!(
                    "line {}: {name}'s hash: {e} (make one with `shopfloor-live hash-password`)",
                    i + 1
                )
            })?;
            hashes.insert(name.to_owned(), hash.to_owned());
        }
        anyhow::ensure!(!hashes.is_empty(), "no users in it");
        Ok(Self { hashes, verified: Mutex::default() })
    }

    /// The users' names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.hashes.keys().map(String::as_str)
    }

    /// The user an `Authorization: Basic …` value logs in, if it does.
    fn check(&self, authorization: &str) -> Option<String> {
        use argon2::PasswordVerifier as _;
        use base64::Engine as _;
        let lock = || self.verified.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(user) = lock().get(authorization) {
            return Some(user.clone());
        }
        let (scheme, encoded) = authorization.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
        let (name, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
        let hash = self.hashes.get(name)?;
        let hash = argon2::PasswordHash::new(hash).ok()?;
        argon2::Argon2::default().verify_password(password.as_bytes(), &hash).ok()?;
        let mut verified = lock();
        if verified.len() >= VERIFIED_CACHE {
            verified.clear();
        }
        verified.insert(authorization.to_owned(), name.to_owned());
        Some(name.to_owned())
    }
}

/// An Argon2id hash (PHC string) of `password`, with a random salt, for a
/// users file.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    use argon2::PasswordHasher as _;
    let mut salt = [0_u8; 16];
    // SAFETY: getrandom writes at most `salt.len()` bytes into `salt`.
    let n = unsafe { libc::getrandom(salt.as_mut_ptr().cast(), salt.len(), 0) };
    anyhow::ensure!(n == salt.len() as isize, "no random bytes for the salt");
    let salt = argon2::password_hash::SaltString::encode_b64(&salt)
        .map_err(|e| anyhow::anyhow!("the salt: {e}"))?;
    Ok(argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing: {e}"))?
        .to_string())
}

/// What makes the page safe to open: the names it answers to and who may
/// use it.
#[derive(Clone, Debug, Default)]
pub struct Security {
    /// Host names the page answers to besides IP addresses and
    /// `localhost` (the name in the browser's address bar).
    pub allowed_hosts: Vec<String>,
    /// Who may use it.
    pub auth: Auth,
    /// Event streams open at once, at most (0: [`MAX_STREAMS`]).
    pub max_streams: usize,
}

/// Event streams open at once by default.
pub const MAX_STREAMS: usize = 64;

/// The host part of a `Host` header (`name`, `name:port`, `[v6]:port`).
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

impl Security {
    /// Whether `host` (a `Host` header or an origin's host) names the page.
    pub fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host);
        name.parse::<std::net::IpAddr>().is_ok()
            || name.eq_ignore_ascii_case("localhost")
            || self.allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
    }
}

/// The running page: its address and the shared board.
pub struct Live {
    /// Where the page is.
    pub addr: SocketAddr,
    /// What it shows.
    pub board: Arc<Mutex<Board>>,
    link: Arc<LinkCounters>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Live {
    /// Ready (for `/ready`) while connected to the broker.
    pub fn ready(&self) -> Result<(), String> {
        crate::metrics::mqtt_ready(&self.link)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What every request handler shares.
#[derive(Clone)]
struct App {
    board: Arc<Mutex<Board>>,
    client: ClientHandle,
    security: Arc<Security>,
    streams: Arc<tokio::sync::Semaphore>,
}

impl App {
    fn snapshot(&self) -> String {
        self.board.lock().unwrap_or_else(std::sync::PoisonError::into_inner).snapshot().to_string()
    }
}

/// The identity a request was let in with.
#[derive(Clone)]
struct User(String);

/// The page's client id when its `[mqtt]` section names none:
/// `live-page-<pid>`, so that two pages never take each other's session.
pub fn default_client_id() -> String {
    format!("live-page-{}", std::process::id())
}

/// Starts the page: an MQTT reader and the HTTP server.
pub async fn start(config: LiveConfig) -> anyhow::Result<Live> {
    let listener = crate::http::Listener::bind(config.listen, "live page").await?;
    let addr = axum::serve::Listener::local_addr(&listener)?;
    let board = Arc::new(Mutex::new(Board::default()));
    let mut host_config = HostConfig::new("shopfloor-live");
    host_config.publish_state = false;
    let mut inputs = Inputs::new(&[Input::sparkplug(host_config)]);
    let mut c = ConsumerConfig::from_connection(config.mqtt.clone());
    c.filters = inputs.filters(None);
    c.filters.push(format!("{ALARM_STATE}#"));
    let link = Arc::new(LinkCounters::default());
    let mut consumer = Consumer::connect(c, Arc::clone(&link));
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
    let max_streams =
        if config.security.max_streams == 0 { MAX_STREAMS } else { config.security.max_streams };
    let app = App {
        board: Arc::clone(&board),
        client,
        security: Arc::new(config.security),
        streams: Arc::new(tokio::sync::Semaphore::new(max_streams)),
    };
    let server = crate::http::spawn(listener, router(app));
    tracing::info!("live page on http://{addr}/");
    Ok(Live { addr, board, link, tasks: vec![reader, server] })
}

fn router(app: App) -> axum::Router {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/", get(|| async { axum::response::Html(INDEX) }))
        .route("/snapshot", get(snapshot))
        .route("/events", get(events))
        .route("/command", post(command))
        .fallback(|| async { (StatusCode::NOT_FOUND, "try /\n") })
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

fn text(status: StatusCode, body: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body.to_owned()).into_response()
}

/// Every request: the host it names, who it is from, and the headers
/// that keep the page out of frames and caches.
async fn guard(
    State(app): State<App>,
    ConnectInfo(crate::http::Peer(peer)): ConnectInfo<crate::http::Peer>,
    mut request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let from_proxy = match &app.security.auth {
        Auth::Proxy { proxies, .. } => proxies.contains(&peer.ip()),
        _ => false,
    };
    // A trusted proxy checked the name the browser used.
    if !from_proxy && let Some(host) = value("host").filter(|h| !app.security.host_allowed(h)) {
        tracing::warn!(peer = %peer, host, "live page: refused a request naming an unknown host");
        return text(
            StatusCode::MISDIRECTED_REQUEST,
            &format!(
                "this page does not answer to {host:?}: add its name to [live] allowed_hosts\n"
            ),
        );
    }
    let user = match &app.security.auth {
        Auth::None => "live-page".to_owned(),
        Auth::Users(users) => match value("authorization").and_then(|a| users.check(a)) {
            Some(user) => user,
            None => {
                let mut r = text(StatusCode::UNAUTHORIZED, "log in, please\n");
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"shopfloor live\", charset=\"UTF-8\""),
                );
                return r;
            }
        },
        Auth::Proxy { header, .. } => {
            if !from_proxy {
                return text(
                    StatusCode::FORBIDDEN,
                    "this page is reached through its proxy only\n",
                );
            }
            match value(header).map(str::trim).filter(|u| !u.is_empty()) {
                Some(user) => user.to_owned(),
                None => {
                    return text(
                        StatusCode::UNAUTHORIZED,
                        &format!("the proxy named no user ({header})\n"),
                    );
                }
            }
        }
    };
    request.extensions_mut().insert(User(user));
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn snapshot(State(app): State<App>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], app.snapshot()).into_response()
}

/// The event stream: a snapshot a second, while a place is free.
async fn events(State(app): State<App>) -> Response {
    use axum::response::sse::{Event, Sse};
    let Ok(permit) = Arc::clone(&app.streams).try_acquire_owned() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live pages open: close one, or raise [live] max_streams\n",
        );
    };
    let tick = tokio::time::interval(Duration::from_secs(1));
    let stream =
        futures_util::stream::unfold((app, permit, tick), |(app, permit, mut tick)| async move {
            tick.tick().await;
            let event = Event::default().data(app.snapshot());
            Some((Ok::<_, std::convert::Infallible>(event), (app, permit, tick)))
        });
    // nginx and others: pass each event on, do not buffer the stream.
    ([(HeaderName::from_static("x-accel-buffering"), "no")], Sse::new(stream)).into_response()
}

async fn command(
    State(app): State<App>,
    Extension(User(user)): Extension<User>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    // Cross-site request forgery: another site's page may POST here from
    // the operator's browser. A form can send text/plain but not
    // application/json (that needs CORS, which is never granted), and a
    // browser names the page's origin.
    let json = value("content-type")
        .is_some_and(|t| t.to_ascii_lowercase().starts_with("application/json"));
    if !json {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type: application/json, please\n",
        );
    }
    if let Some(origin) = value("origin") {
        let origin_host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .unwrap_or("\u{0}");
        let same = |h: Option<&str>| h.is_some_and(|h| h.eq_ignore_ascii_case(origin_host));
        let proxied = matches!(app.security.auth, Auth::Proxy { .. });
        let ok = same(value("host"))
            || (proxied && same(value("x-forwarded-host")))
            || app.security.host_allowed(origin_host);
        if !ok {
            return text(StatusCode::FORBIDDEN, "commands come from this page only\n");
        }
    }
    if body.len() > 16 << 10 {
        return text(StatusCode::PAYLOAD_TOO_LARGE, "at most 16 KiB\n");
    }
    let mut command: Json = match serde_json::from_slice(&body) {
        Ok(c @ Json::Object(_)) => c,
        _ => return text(StatusCode::BAD_REQUEST, "a JSON object, please\n"),
    };
    let allowed = ["acknowledge", "shelve", "unshelve"];
    if !command["command"].as_str().is_some_and(|c| allowed.contains(&c)) {
        return text(StatusCode::BAD_REQUEST, "command: acknowledge, shelve or unshelve\n");
    }
    // Who did it is who logged in, whatever the browser says.
    command["user"] = Json::String(user);
    match app
        .client
        .publish(Outgoing::new("shopfloor/alarms/command", command.to_string(), 1, false))
        .await
    {
        Ok(()) => {
            (StatusCode::ACCEPTED, [(header::CONTENT_TYPE, "application/json")], "{\"sent\": true}")
                .into_response()
        }
        Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, &format!("{e}\n")),
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
    fn hosts_the_page_answers_to() {
        let s = Security { allowed_hosts: vec!["Plant.Example".into()], ..Security::default() };
        for ok in [
            "127.0.0.1:8088",
            "127.0.0.1",
            "[::1]:8088",
            "localhost:8088",
            "LOCALHOST",
            "plant.example",
            "plant.example:443",
            "10.0.0.5:80",
        ] {
            assert!(s.host_allowed(ok), "{ok}");
        }
        for refused in [
            "evil.example:8088",
            "evil.example",
            "127.0.0.1.evil.example",
            "plant.example.evil",
            "",
            "localhost.evil:8088",
        ] {
            assert!(!s.host_allowed(refused), "{refused}");
        }
    }

    #[test]
    fn users_files_and_basic_logins() {
        use base64::Engine as _;
        let hash = hash_password("s3cret").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        let users = Users::parse(&format!("# operators\nalice:{hash}\n\n")).unwrap();
        assert_eq!(users.names().collect::<Vec<_>>(), ["alice"]);
        let basic = |u: &str, p: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        };
        assert_eq!(users.check(&basic("alice", "s3cret")).as_deref(), Some("alice"));
        // Again, from the cache.
        assert_eq!(users.check(&basic("alice", "s3cret")).as_deref(), Some("alice"));
        assert_eq!(users.check(&basic("alice", "guess")), None);
        assert_eq!(users.check(&basic("bob", "s3cret")), None);
        assert_eq!(users.check("Bearer x"), None);
        assert_eq!(users.check("Basic !!!"), None);
        for bad in ["alice", "alice:plain-text", ""] {
            assert!(Users::parse(bad).is_err(), "{bad:?}");
        }
    }
}
