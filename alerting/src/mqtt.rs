//! The engine on MQTT (feature `mqtt`): readings in straight from the
//! broker (plain topics with a schemas codec, or Sparkplug B through the
//! sparkplug crate's host), so an alarm never waits on a database batch;
//! events and state out; operator commands in, with a reply.
//!
//! Topics (the prefix is `shopfloor/alarms` by default):
//!
//! | topic | what | retained |
//! |---|---|---|
//! | `<prefix>/events` | every transition and operator action, JSON | no |
//! | `<prefix>/state/<rule>/<source>/<metric>` | each alarm's current state, JSON | yes: late joiners see it |
//! | `<prefix>/command` | operator commands, JSON | no |
//! | the command's MQTT 5 response topic, else `<prefix>/reply` | the reply, with the command's correlation data | no |
//!
//! An event:
//!
//! ```json
//! {"rule": "press-pressure", "source": "Plant1/Gw-7/press-1", "metric": "Hydraulics/Pressure",
//!  "area": "press-shop", "instance": 7, "time": 1795737600123, "event": "raised", "condition": "HH",
//!  "priority": 900, "value": 185.2, "annunciate": true}
//! ```
//!
//! `event` is one of `raised`, `changed`, `returned_to_normal`,
//! `acknowledged`, `confirmed`, `bad_input`, `input_restored`, `shelved`,
//! `unshelved`, `latch_reset`, `out_of_service`, `in_service`,
//! `suppressed`, `unsuppressed`, `late` (replayed history, with `sampled`:
//! the sample's own time; never annunciated); `user`, `comment`, `reason`,
//! `until`, `closed` appear where they apply. A command:
//!
//! ```json
//! {"command": "acknowledge", "rule": "press-pressure", "source": "Plant1/Gw-7/press-1",
//!  "metric": "Hydraulics/Pressure", "user": "jane", "comment": "valve closed"}
//! ```
//!
//! with `command` one of `acknowledge`, `confirm`, `shelve` (with
//! `duration_s`, or none for one-shot), `unshelve`, `reset_latch`,
//! `out_of_service`, `in_service`. The reply is `{"ok": true}` or `{"ok": false, "error": …}`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use shopfloor_mqtt::consumer::{LinkCounters, Outgoing, Received};
use shopfloor_mqtt::{Broker, Connection, Consumer, ConsumerConfig, ConsumerEvent, Inputs};
use shopfloor_schemas::Now;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::RuleSet;
use crate::engine::{AlarmKey, AlarmState, Command, Condition, Engine};
pub use crate::json::event_json;

/// What the driver subscribes to: plain readings on a topic template
/// (the source is the topic's placeholders but `{sensor}`, joined by `/`)
/// or Sparkplug B, through a host application that never publishes STATE.
pub use shopfloor_mqtt::Input;

/// How the driver connects and where it publishes.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AlertConfig {
    /// The broker list, protocol, keep-alive and client id. With MQTT
    /// 3.1.1, command replies go to `<prefix>/reply`, without correlation
    /// data.
    pub mqtt: Connection,
    /// The inputs.
    pub inputs: Vec<Input>,
    /// Topic prefix for events, state and commands.
    pub prefix: String,
    /// The alarm journal's PostgreSQL connection string: every event is
    /// recorded, and the state saved there is restored at start, before
    /// any reading. Needs the feature `postgres` (without it, a journal
    /// given here is a logged error and no journal).
    pub journal: Option<String>,
    /// The journal's password, when not in `journal`.
    pub journal_password: Option<String>,
    /// The journal's TLS settings (see `Journal::connect_with`; `None`:
    /// encrypt without checking the server's certificate).
    pub journal_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// Alertmanager base URLs (an HA list gets every alert):
    /// `http://127.0.0.1:9093`. Needs the feature `alertmanager` (without
    /// it, URLs given here are a logged error and nothing is posted).
    pub alertmanagers: Vec<String>,
    /// How often firing alerts are sent again (with `endsAt` 4 × later).
    pub resend: Duration,
}

impl AlertConfig {
    /// Defaults: prefix `shopfloor/alarms`, no inputs.
    pub fn new(host: impl Into<String>, port: u16, client_id: impl Into<String>) -> Self {
        Self::from_connection(Connection::new(client_id, Broker::new(host, port)))
    }

    /// [`AlertConfig::new`] for `mqtt`, a whole connection (a daemon's
    /// [`MqttSection::connection`](shopfloor_mqtt::MqttSection::connection));
    /// everything else at its default.
    pub fn from_connection(mqtt: Connection) -> Self {
        Self {
            mqtt,
            inputs: Vec::new(),
            prefix: "shopfloor/alarms".into(),
            journal: None,
            journal_password: None,
            journal_tls: None,
            alertmanagers: Vec::new(),
            resend: Duration::from_secs(60),
        }
    }
}

/// A running driver's counters, for logs and a metrics endpoint.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct DriverStats {
    /// Messages taken from the broker (readings and commands).
    pub messages: std::sync::atomic::AtomicU64,
    /// Alarm events published.
    pub events: std::sync::atomic::AtomicU64,
    /// The MQTT connection's counters: connects (more than one means
    /// reconnects), subscriptions confirmed, failures.
    pub link: std::sync::Arc<LinkCounters>,
    /// Messages that carried no usable reading (not a batch, DATA before
    /// any birth, no input for the topic): alerting keeps no dead letters.
    pub unusable: std::sync::atomic::AtomicU64,
    /// Alarms active now (as `Engine::active` lists them), updated after
    /// every burst of events.
    pub active: std::sync::atomic::AtomicU64,
    /// Alert lists not queued for an Alertmanager because its queue was
    /// full (it is slow or away; the next resend carries every active
    /// alert again).
    pub alertmanager_dropped: std::sync::atomic::AtomicU64,
    /// Signals the engine holds with their alarms (a gauge).
    pub signals: std::sync::atomic::AtomicU64,
    /// Signals no rule selects, remembered to skip matching (a gauge, at
    /// most `EngineLimits::max_unselected`).
    pub unselected_signals: std::sync::atomic::AtomicU64,
    /// Readings ignored because their signal would pass
    /// `EngineLimits::max_alarms`.
    pub refused_readings: std::sync::atomic::AtomicU64,
    /// Events the journal never got: more than `JOURNAL_BACKLOG` waited
    /// (the database was away under a flood) and the oldest went.
    pub journal_dropped: std::sync::atomic::AtomicU64,
    /// What each input took (messages decoded, unusable), by input.
    pub inputs: std::sync::Mutex<std::sync::Arc<[shopfloor_mqtt::InputCount]>>,
}

/// A running driver.
#[derive(Debug)]
pub struct AlertDriver {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Engine>,
    stats: std::sync::Arc<DriverStats>,
    reloads: Reloader,
}

/// A reload asked of the driver: the rules, and where the number of
/// alarms carried over goes.
type Reload = (RuleSet, oneshot::Sender<usize>);

/// Gives a running driver new rules (see [`Engine::reload`]); cheap to
/// clone, for a signal handler.
#[derive(Clone, Debug)]
pub struct Reloader(mpsc::Sender<Reload>);

impl Reloader {
    /// Replaces the rules between two messages; the alarms carried over,
    /// or `None` when the driver has stopped.
    pub async fn reload(&self, rules: RuleSet) -> Option<usize> {
        let (done, carried) = oneshot::channel();
        self.0.send((rules, done)).await.ok()?;
        carried.await.ok()
    }
}

impl AlertDriver {
    /// Starts the engine on MQTT, on the current tokio runtime.
    pub fn spawn(engine: Engine, config: AlertConfig) -> Self {
        let (stop, stopped) = oneshot::channel();
        let (reloads, reload_rx) = mpsc::channel(1);
        let stats = std::sync::Arc::new(DriverStats::default());
        let task =
            tokio::spawn(run(engine, config, stopped, reload_rx, std::sync::Arc::clone(&stats)));
        Self { stop, task, stats, reloads: Reloader(reloads) }
    }

    /// Its counters.
    pub fn stats(&self) -> &DriverStats {
        &self.stats
    }

    /// What gives it new rules while it runs.
    pub fn reloader(&self) -> Reloader {
        self.reloads.clone()
    }

    /// Stops and gives the engine back (to persist its state).
    pub async fn shutdown(self) -> Option<Engine> {
        let _ = self.stop.send(());
        self.task.await.ok()
    }
}

#[derive(Deserialize)]
struct CommandDe {
    command: String,
    rule: String,
    source: String,
    metric: String,
    user: String,
    #[serde(default)]
    comment: String,
    duration_s: Option<f64>,
}

/// Why an operator command's JSON is refused (the reply's `error`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// Not the JSON of a command.
    #[error("not a command: {0}")]
    Json(#[from] serde_json::Error),
    /// No `user`.
    #[error("a command needs the operator's user name")]
    NoUser,
    /// `duration_s` is no positive number of seconds.
    #[error("duration_s {0} is not a number of seconds above 0")]
    Duration(f64),
    /// A `command` this engine does not know.
    #[error("unknown command {0:?}")]
    Unknown(String),
}

/// A command from its JSON.
pub fn parse_command(payload: &[u8]) -> Result<Command, CommandError> {
    let c: CommandDe = serde_json::from_slice(payload)?;
    if c.user.trim().is_empty() {
        return Err(CommandError::NoUser);
    }
    let key = AlarmKey { rule: c.rule, source: c.source, metric: c.metric };
    let user = c.user;
    Ok(match c.command.as_str() {
        "acknowledge" => Command::Acknowledge { key, user, comment: c.comment },
        "confirm" => Command::Confirm { key, user, comment: c.comment },
        "shelve" => {
            let duration = match c.duration_s {
                None => None,
                Some(s) if s.is_finite() && s > 0.0 && s < 1e9 => Some(Duration::from_secs_f64(s)),
                Some(s) => return Err(CommandError::Duration(s)),
            };
            Command::Shelve { key, user, comment: c.comment, duration }
        }
        "unshelve" => Command::Unshelve { key, user },
        "reset_latch" => Command::ResetLatch { key, user },
        "out_of_service" => Command::OutOfService { key, user, comment: c.comment },
        "in_service" => Command::InService { key, user },
        other => return Err(CommandError::Unknown(other.to_owned())),
    })
}

/// Events waiting for the journal, at most: beyond it (the database is
/// away for long under an alarm flood) the oldest are dropped and counted.
#[cfg(feature = "postgres")]
pub const JOURNAL_BACKLOG: usize = 100_000;

/// What waits for the journal writer: events in order and the latest
/// state. The driver never waits on it; the writer takes all of it at
/// once.
#[cfg(feature = "postgres")]
struct JournalBacklog<E, S> {
    events: std::collections::VecDeque<E>,
    state: Option<Vec<S>>,
    closed: bool,
}

#[cfg(feature = "postgres")]
struct JournalTx<E = crate::engine::Event, S = crate::engine::Persisted> {
    backlog: std::sync::Arc<std::sync::Mutex<JournalBacklog<E, S>>>,
    wake: std::sync::Arc<tokio::sync::Notify>,
}

#[cfg(feature = "postgres")]
impl<E, S> Clone for JournalTx<E, S> {
    fn clone(&self) -> Self {
        Self {
            backlog: std::sync::Arc::clone(&self.backlog),
            wake: std::sync::Arc::clone(&self.wake),
        }
    }
}

#[cfg(feature = "postgres")]
impl<E, S> JournalTx<E, S> {
    fn new() -> Self {
        let backlog = JournalBacklog { events: Default::default(), state: None, closed: false };
        Self {
            backlog: std::sync::Arc::new(std::sync::Mutex::new(backlog)),
            wake: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JournalBacklog<E, S>> {
        self.backlog.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues events and the state after them; gives how many old events
    /// were dropped to stay within [`JOURNAL_BACKLOG`].
    fn send(&self, events: Vec<E>, state: Vec<S>) -> u64 {
        let mut b = self.lock();
        b.events.extend(events);
        let over = b.events.len().saturating_sub(JOURNAL_BACKLOG);
        b.events.drain(..over);
        b.state = Some(state);
        drop(b);
        self.wake.notify_one();
        over as u64
    }

    /// No more events: the writer stops once the backlog is written.
    fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }

    /// Everything waiting; `None` once closed and empty.
    async fn take(&self) -> Option<(Vec<E>, Option<Vec<S>>)> {
        loop {
            {
                let mut b = self.lock();
                if !b.events.is_empty() || b.state.is_some() {
                    return Some((b.events.drain(..).collect(), b.state.take()));
                }
                if b.closed {
                    return None;
                }
            }
            self.wake.notified().await;
        }
    }
}

/// How often the driver looks up the engine's next deadline (on-delays,
/// stale signals, shelving): a deadline set in between fires at most this
/// late.
const TIMER_RECHECK: Duration = Duration::from_millis(100);

/// Connects the journal (retrying), restores the engine from it, and
/// starts the task that writes to it.
#[cfg(feature = "postgres")]
async fn start_journal(config: &AlertConfig, engine: &mut Engine) -> (JournalTx, JoinHandle<()>) {
    use crate::journal::Journal;
    let url = config.journal.as_deref().unwrap_or_default();
    let (password, tls) = (config.journal_password.clone(), config.journal_tls.clone());
    let connect = move |url: String| {
        let (password, tls) = (password.clone(), tls.clone());
        async move {
            let mut failures = 0_u32;
            loop {
                match Journal::connect_with(&url, password.as_deref(), tls.as_ref()).await {
                    Ok(j) => return j,
                    Err(e) => tracing::warn!("alarm journal: {e}; retrying"),
                }
                failures += 1;
                tokio::time::sleep(Duration::from_millis(200 * u64::from(failures.min(10)))).await;
            }
        }
    };
    let mut journal = connect(url.to_owned()).await;
    loop {
        match journal.load_state().await {
            Ok(saved) => {
                let n = engine.restore(&saved);
                tracing::info!(restored = n, "alarm state restored from the journal");
                break;
            }
            Err(e) => {
                tracing::warn!("alarm journal: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                journal = connect(url.to_owned()).await;
            }
        }
    }
    let tx = JournalTx::new();
    let rx = tx.clone();
    let url = url.to_owned();
    let task = tokio::spawn(async move {
        while let Some((events, state)) = rx.take().await {
            loop {
                let result = match journal.record(&events).await {
                    Ok(()) => match &state {
                        Some(state) => journal.save_state(state).await,
                        None => Ok(()),
                    },
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!("alarm journal: {e}; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        if journal.client().is_closed() {
                            journal = connect(url.clone()).await;
                        }
                    }
                }
            }
        }
    });
    (tx, task)
}

/// Alert lists waiting for one Alertmanager, at most (each a full post).
#[cfg(feature = "alertmanager")]
const ALERTMANAGER_QUEUE: usize = 256;

/// The Alertmanagers, each fed by a task of its own: an HA member that is
/// slow or black-holed (a 5 s timeout per post) delays neither the others
/// nor the MQTT events and the journal, which never wait on these queues.
/// A worker posts what waited for it as one list (Alertmanager keeps the
/// latest state of each alert); a full queue drops the new list and
/// counts it (the next resend carries every active alert again).
#[cfg(feature = "alertmanager")]
struct Alertmanagers {
    queues: Vec<mpsc::Sender<Vec<serde_json::Value>>>,
    stats: std::sync::Arc<DriverStats>,
}

#[cfg(feature = "alertmanager")]
impl Alertmanagers {
    fn start(urls: &[String], stats: std::sync::Arc<DriverStats>) -> Self {
        let queues = urls
            .iter()
            .map(|url| {
                let (tx, mut rx) = mpsc::channel::<Vec<serde_json::Value>>(ALERTMANAGER_QUEUE);
                let url = url.clone();
                tokio::spawn(async move {
                    while let Some(mut alerts) = rx.recv().await {
                        while let Ok(more) = rx.try_recv() {
                            alerts.extend(more);
                        }
                        let urls = [url.clone()];
                        let errors = tokio::task::spawn_blocking(move || {
                            crate::alertmanager::post(&urls, &serde_json::Value::Array(alerts))
                        })
                        .await
                        .unwrap_or_default();
                        for e in errors {
                            tracing::warn!("Alertmanager: {e}");
                        }
                    }
                });
                tx
            })
            .collect();
        Self { queues, stats }
    }

    /// Queues `alerts` for every Alertmanager; never waits.
    fn send(&self, alerts: &[serde_json::Value]) {
        for q in &self.queues {
            if q.try_send(alerts.to_vec()).is_err() {
                self.stats.alertmanager_dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

/// `inputs` as alerting runs them: a Sparkplug input never as the primary
/// host (ingest, or nobody, publishes STATE).
fn never_primary(inputs: &[Input]) -> Vec<Input> {
    inputs
        .iter()
        .map(|i| match i {
            Input::Sparkplug { host } => {
                let mut h = host.clone();
                h.publish_state = false;
                Input::sparkplug(h)
            }
            other => other.clone(),
        })
        .collect()
}

/// Runs the command in `m` and says how it went: the reply, on the
/// message's response topic (else `<prefix>/reply`) with its correlation
/// data.
fn command(engine: &mut Engine, m: &Received, prefix: &str, now: Now) -> Outgoing {
    let result = parse_command(&m.payload)
        .map_err(|e| e.to_string())
        .and_then(|c| engine.handle_command(c, now).map_err(|e| e.to_string()));
    let body = match &result {
        Ok(()) => json!({"ok": true}),
        Err(e) => json!({"ok": false, "error": e}),
    };
    let to = m.response_topic.clone().unwrap_or_else(|| format!("{prefix}/reply"));
    let mut reply = Outgoing::new(to, body.to_string(), 1, false);
    reply.correlation_data = m.correlation_data.clone();
    reply
}

/// Feeds the readings of `m` to the engine; `false` when it carried none
/// that alerting can use.
fn readings(engine: &mut Engine, inputs: &mut Inputs, m: &Received, now: Now) -> bool {
    match inputs.decode(&m.topic, m.content_type.as_deref(), &m.payload, now) {
        shopfloor_mqtt::Decoded::Readings { readings, .. } => {
            if let Some(why) = &readings.refused {
                tracing::debug!(topic = %m.topic, "partly ignored: {why}");
            }
            for b in &readings.live {
                engine.handle_batch(b, now);
            }
            for b in &readings.historical {
                engine.handle_historical(b, now);
            }
            true
        }
        shopfloor_mqtt::Decoded::Dead(why) => {
            tracing::debug!(topic = %m.topic, "ignored: {why}");
            false
        }
        _ => true,
    }
}

/// An alarm's state as published, retained, on `<prefix>/state/…`.
fn state_json(key: &AlarmKey, s: &AlarmState) -> serde_json::Value {
    json!({
        "rule": key.rule, "source": key.source, "metric": key.metric,
        "instance": s.instance,
        "active": s.active.map(|c| match c {
            Condition::Level(l) => l.code().to_owned(),
            Condition::On => "ON".to_owned(),
        }),
        "unacknowledged": s.unacknowledged, "bad_input": s.bad_input,
        "shelved": s.shelved.is_some(), "out_of_service": s.out_of_service,
        "latched": s.latched, "suppressed": s.suppressed,
        "unconfirmed": s.unconfirmed,
    })
}

/// Every annunciated alarm as an Alertmanager alert, and the Watchdog: the
/// periodic resend that keeps them firing.
#[cfg(feature = "alertmanager")]
fn every_alert(engine: &Engine, now_ms: u64, resend: Duration) -> Vec<serde_json::Value> {
    let mut alerts: Vec<serde_json::Value> = engine
        .active()
        .iter()
        .filter(|v| v.annunciate)
        .map(|v| crate::alertmanager::alert(v, now_ms, resend))
        .collect();
    alerts.push(crate::alertmanager::watchdog(now_ms, resend));
    alerts
}

async fn run(
    mut engine: Engine,
    config: AlertConfig,
    mut stop: oneshot::Receiver<()>,
    mut reloads: mpsc::Receiver<Reload>,
    stats: std::sync::Arc<DriverStats>,
) -> Engine {
    use std::sync::atomic::Ordering::Relaxed;
    #[cfg(not(feature = "postgres"))]
    if config.journal.is_some() {
        tracing::error!(
            "an alarm journal is configured, but shopfloor-alerting was built without its \
             `postgres` feature: no journal"
        );
    }
    #[cfg(not(feature = "alertmanager"))]
    if !config.alertmanagers.is_empty() {
        tracing::error!(
            "Alertmanagers are configured, but shopfloor-alerting was built without its \
             `alertmanager` feature: nothing is posted"
        );
    }
    #[cfg(feature = "alertmanager")]
    let alertmanager = (!config.alertmanagers.is_empty())
        .then(|| Alertmanagers::start(&config.alertmanagers, std::sync::Arc::clone(&stats)));
    #[cfg(feature = "alertmanager")]
    let mut resend = tokio::time::interval(config.resend.max(Duration::from_secs(1)));
    #[cfg(feature = "postgres")]
    let journal = match &config.journal {
        Some(_) => Some(start_journal(&config, &mut engine).await),
        None => None,
    };
    let mut inputs = Inputs::new(&never_primary(&config.inputs));
    *stats.inputs.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = inputs.counts();
    let command_topic = format!("{}/command", config.prefix);
    let mut filters = inputs.filters(None);
    filters.push(command_topic.clone());
    let mut c = ConsumerConfig::from_connection(config.mqtt.clone());
    c.filters = filters;
    c.queue = 100_000;
    let mut consumer = Consumer::connect(c, std::sync::Arc::clone(&stats.link));
    let client = consumer.client().clone();
    let publish = |topic: String, body: String, retain: bool| {
        let client = client.clone();
        async move {
            let _ = client.publish(Outgoing::new(topic, body, 1, retain)).await;
        }
    };
    let (mut wake, mut wake_checked) = (None::<tokio::time::Instant>, None::<tokio::time::Instant>);
    loop {
        // The engine's next deadline costs a pass over every alarm: with
        // 100 000 signals, looking it up after each message took a core.
        // Looked up every TIMER_RECHECK instead (and after each timeout),
        // a deadline set in between fires at most that much late.
        let now_i = tokio::time::Instant::now();
        if wake_checked.is_none_or(|c| now_i >= c + TIMER_RECHECK) {
            wake = engine.next_timeout().map(|t| {
                let wait = t.saturating_sub(Now::now().unix_ms);
                now_i + Duration::from_millis(wait)
            });
            wake_checked = Some(now_i);
        }
        let recheck = wake_checked.unwrap_or(now_i) + TIMER_RECHECK;
        let due = wake;
        let timer = tokio::time::sleep_until(due.map_or(recheck, |w| w.min(recheck)));
        // A Sparkplug `seq` gap still open at its deadline: a rebirth request.
        let gap_at = inputs.poll_timeout().map(tokio::time::Instant::from_std);
        let gap = async {
            match gap_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        #[cfg(feature = "alertmanager")]
        let resend_tick = async {
            match &alertmanager {
                Some(_) => {
                    resend.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(feature = "alertmanager"))]
        let resend_tick = std::future::pending::<()>();
        tokio::select! {
            _ = &mut stop => break,
            Some((rules, done)) = reloads.recv() => {
                let _ = done.send(engine.reload(rules));
                stats.active.store(engine.active().len() as u64, Relaxed);
                wake_checked = None;
            }
            () = gap => inputs.handle_timeout(Now::now()),
            () = resend_tick => {
                #[cfg(feature = "alertmanager")]
                if let Some(tx) = &alertmanager {
                    tx.send(&every_alert(&engine, Now::now().unix_ms, config.resend));
                }
            }
            () = timer => {
                if due.is_some_and(|w| w <= tokio::time::Instant::now()) {
                    engine.handle_timeout(Now::now());
                }
                // Look the next deadline up again now.
                wake_checked = None;
            }
            m = consumer.recv() => match m {
                None => break,
                Some(ConsumerEvent::Connected { .. }) => inputs.handle_connected(Now::now()),
                Some(ConsumerEvent::Message(m)) => {
                    stats.messages.fetch_add(1, Relaxed);
                    if m.topic == command_topic {
                        let reply = command(&mut engine, &m, &config.prefix, Now::now());
                        let _ = client.publish(reply).await;
                    } else if !readings(&mut engine, &mut inputs, &m, Now::now()) {
                        stats.unusable.fetch_add(1, Relaxed);
                    }
                }
                Some(_) => {}
            },
        }
        // Rebirth requests: without them, an alerting daemon that started
        // after the edge nodes' births could never name their metrics.
        for p in inputs.transmits() {
            if client.try_publish(Outgoing::from(p)).is_err() {
                tracing::warn!("a Sparkplug rebirth request was dropped: the MQTT client is busy");
            }
        }
        #[cfg(feature = "postgres")]
        let mut recorded = Vec::new();
        // The alarms this burst touched: their state (read after the whole
        // burst, so the same for every event of it) is published once each.
        let mut changed: Vec<AlarmKey> = Vec::new();
        while let Some(e) = engine.poll_event() {
            // History changes no state: nothing to republish.
            let late = matches!(e.kind, crate::engine::EventKind::Late { .. });
            if !late && !changed.contains(&e.key) {
                changed.push(e.key.clone());
            }
            publish(format!("{}/events", config.prefix), event_json(&e).to_string(), false).await;
            stats.events.fetch_add(1, Relaxed);
            #[cfg(feature = "postgres")]
            recorded.push(e);
        }
        if !changed.is_empty() {
            stats.active.store(engine.active().len() as u64, Relaxed);
        }
        let (signals, unselected) = engine.signal_counts();
        stats.signals.store(signals as u64, Relaxed);
        stats.unselected_signals.store(unselected as u64, Relaxed);
        stats.refused_readings.store(engine.refused_readings(), Relaxed);
        for key in &changed {
            let Some(s) = engine.state(key) else { continue };
            let state = state_json(key, &s);
            let topic =
                format!("{}/state/{}/{}/{}", config.prefix, key.rule, key.source, key.metric);
            publish(topic, state.to_string(), true).await;
        }
        #[cfg(feature = "alertmanager")]
        if let (Some(tx), false) = (&alertmanager, changed.is_empty()) {
            let now = Now::now().unix_ms;
            let alerts: Vec<serde_json::Value> = changed
                .iter()
                .filter_map(|k| engine.view(k))
                .map(|v| crate::alertmanager::alert(&v, now, config.resend))
                .collect();
            tx.send(&alerts);
        }
        #[cfg(feature = "postgres")]
        if let (Some((tx, _)), false) = (&journal, recorded.is_empty()) {
            let dropped = tx.send(recorded, engine.persisted());
            stats.journal_dropped.fetch_add(dropped, Relaxed);
        }
    }
    drop(consumer);
    #[cfg(feature = "postgres")]
    if let Some((tx, task)) = journal {
        // What is queued is written before the engine is handed back.
        tx.close();
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    engine
}

#[cfg(all(test, feature = "postgres"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_journal_backlog_is_bounded_and_keeps_the_newest() {
        let tx: JournalTx<usize, u8> = JournalTx::new();
        let n = JOURNAL_BACKLOG + 1234;
        let mut dropped = tx.send((0..n / 2).collect(), vec![1]);
        dropped += tx.send((n / 2..n).collect(), vec![2]);
        assert_eq!(dropped, 1234);
        let (events, state) = tx.take().await.unwrap();
        assert_eq!(events.len(), JOURNAL_BACKLOG);
        assert_eq!((events[0], events[JOURNAL_BACKLOG - 1]), (1234, n - 1));
        assert_eq!(state, Some(vec![2]), "only the latest state is kept");
        tx.close();
        assert!(tx.take().await.is_none(), "closed and written: the writer stops");
    }
}
