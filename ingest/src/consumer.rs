//! MQTT in, committed rows out: the ingest process.
//!
//! The delivery contract (see the crate README):
//! - a stable client id and a persistent session (MQTT 5: `clean_start =
//!   false` with a session expiry; MQTT 3.1.1: `clean_session = false`),
//!   manual acks: a message is acknowledged only after the transaction
//!   holding its rows has committed, in arrival order;
//! - every received message carries the number of the connection it came
//!   on; after a reconnect, acks for messages of an older connection are
//!   dropped (the broker redelivers them, the idempotent write absorbs them);
//! - what cannot be used goes to `shopfloor.dead_letters` and is acked;
//! - PostgreSQL down: the batch is retried with a capped backoff, nothing
//!   more is read (a bounded queue; the broker holds the rest).
//!
//! The connection is a [`shopfloor_mqtt::Consumer`]: its event loop is
//! polled in a task of its own and hands messages over a bounded channel.
//! Acks go out with `try_ack`, with a retry queue that keeps their order,
//! so nothing here can wait on the event loop while the event loop waits
//! on it. The readings come from [`shopfloor_mqtt::Inputs`], whose
//! Sparkplug hosts' `seq`-gap timer this loop drives.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shopfloor_mqtt::consumer::{AckToken, Acked, ClientHandle, LinkCounters, Outgoing};
use shopfloor_mqtt::input::{Kind, Readings};
use shopfloor_mqtt::mapping::MetricUnit;
use shopfloor_mqtt::{
    Broker, Connection, Consumer, ConsumerConfig, ConsumerEvent, Inputs, Session,
};
use shopfloor_schemas::{Batch, Now};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::check::TimeWindow;
use crate::clickhouse::ClickHouseSink;
use crate::error::IngestError;
use crate::gate::{Gate, GateConfig};
use crate::influx::InfluxSink;
use crate::maintain::{Maintenance, Retention};
use crate::pipeline::{Database, Pipeline, Ticket, db_backoff};
use crate::sink::{Sink, Store};
use crate::writer::{DeadLetter, MetricInfo, Submission};
use shopfloor_mqtt::AbortOnDrop;

/// What the ingest subscribes to: plain topics (the source is the topic's
/// placeholders but `{sensor}`, joined by `/`; the codec from the MQTT 5
/// content type, else the input's) or Sparkplug B, decoded by a host
/// application (births define names and types, deaths write `stale`,
/// gaps ask for rebirths).
pub use shopfloor_mqtt::Input;

/// How an ingest process runs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct IngestConfig {
    /// The broker list, protocol, keep-alive and client id. The client id
    /// must be stable across restarts, so that the broker keeps the
    /// session and redelivers what was not acked.
    pub mqtt: Connection,
    /// How long the broker keeps the session while ingest is away (MQTT
    /// 5; with 3.1.1 the broker's own setting decides).
    pub session_expiry: Duration,
    /// What to subscribe to.
    pub inputs: Vec<Input>,
    /// Share the inputs with other ingest processes through a shared
    /// subscription (`$share/<name>/<filter>`): the broker gives each
    /// message to one of them. For Sparkplug, DATA is shared (unless the
    /// host's own `HostConfig::share` names another group) while births
    /// and deaths go to every process: each names the DATA it gets, marks
    /// a dead node stale, and loads from the store a birth it missed.
    pub share: Option<String>,
    /// PostgreSQL connection string (for [`Store::Postgres`]); its
    /// `sslmode` decides TLS (see [`Database::tls`]).
    pub database: String,
    /// The PostgreSQL password, when not in `database`.
    pub database_password: Option<String>,
    /// PostgreSQL TLS settings (see [`Database::tls`]; `None`: encrypt
    /// without checking the server's certificate).
    pub database_tls: Option<Arc<rustls::ClientConfig>>,
    /// Where readings go: PostgreSQL/TimescaleDB at `database` (the
    /// default), InfluxDB or ClickHouse. The storage options below (`timescaledb`,
    /// `retention`, `maintain_every`, `max_catalogue_metrics`) are
    /// PostgreSQL's.
    pub store: Store,
    /// Flush when this many readings are waiting…
    pub batch_readings: usize,
    /// …or when the oldest has waited this long.
    pub batch_age: Duration,
    /// Messages received and not yet committed, at most (memory bound).
    pub max_pending: usize,
    /// COPY connections writing in turn (1 or 2; 2 overlaps one batch's
    /// COPY with the commit of the one before).
    pub connections: usize,
    /// Use TimescaleDB when a new schema is made on a server that has it.
    pub timescaledb: bool,
    /// Retention, chunking and compression of the samples.
    pub retention: Retention,
    /// How often the rollups are brought up to date (native storage) and
    /// partitions made ahead.
    pub maintain_every: Duration,
    /// Readings more than this far ahead of the clock are dead letters (so
    /// are readings older than `retention.samples`, when set).
    pub max_ahead: Duration,
    /// A message with more readings than this is a dead letter (a bound on
    /// what one message can cost).
    pub max_readings_per_message: usize,
    /// Readings older than this are dead letters when `retention.samples`
    /// is not set (with it, the retention is the horizon). Native storage
    /// makes a partition per day written: this bounds them too.
    pub max_age: Duration,
    /// A dead letter keeps at most this much of its payload (the reason
    /// says how long it was).
    pub dead_letter_payload: usize,
    /// Metrics (source and name) the catalogue may hold: readings of a new
    /// metric past it are dead letters, so remote names cannot grow it
    /// without bound.
    pub max_catalogue_metrics: u64,
}

impl IngestConfig {
    /// Defaults: session expiry 1 h, flush at 10 000 readings or 200 ms,
    /// at most 20 000 messages pending, 2 COPY connections, TimescaleDB
    /// where available, everything kept, rollups every 2 s, readings at
    /// most 1 day ahead of the clock and 10 years back, at most 100 000
    /// readings a message, dead letters keeping 64 KiB of their payload,
    /// a catalogue of at most 1 000 000 metrics.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        client_id: impl Into<String>,
        database: impl Into<String>,
    ) -> Self {
        Self::from_connection(Connection::new(client_id, Broker::new(host, port)), database)
    }

    /// [`IngestConfig::new`] for `mqtt`, a whole connection (a daemon's
    /// [`MqttSection::connection`](shopfloor_mqtt::MqttSection::connection)),
    /// writing to `database`; everything else at its default.
    pub fn from_connection(mqtt: Connection, database: impl Into<String>) -> Self {
        Self {
            mqtt,
            session_expiry: Duration::from_secs(3600),
            inputs: Vec::new(),
            share: None,
            database: database.into(),
            database_password: None,
            database_tls: None,
            store: Store::Postgres,
            batch_readings: 10_000,
            batch_age: Duration::from_millis(200),
            max_pending: 20_000,
            connections: 2,
            timescaledb: true,
            retention: Retention::default(),
            maintain_every: Duration::from_secs(2),
            max_ahead: Duration::from_secs(86_400),
            max_readings_per_message: 100_000,
            max_age: Duration::from_secs(3650 * 86_400),
            dead_letter_payload: 64 << 10,
            max_catalogue_metrics: crate::writer::MAX_CATALOGUE,
        }
    }
}

/// Counters of a running ingest.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Messages committed and acked (or dead-lettered and acked).
    pub messages: AtomicU64,
    /// Rows added.
    pub rows: AtomicU64,
    /// Rows offered that were there already.
    pub duplicates: AtomicU64,
    /// Messages sent to the dead letters.
    pub dead_letters: AtomicU64,
    /// The MQTT connection's counters: connects (more than one means
    /// reconnects), subscriptions confirmed, failures, acks dropped
    /// because their connection had gone.
    pub link: Arc<LinkCounters>,
    /// Rollup passes that found work (native storage).
    pub rollup_passes: AtomicU64,
    /// Messages received and not committed yet (a gauge; at most
    /// `max_pending`).
    pub held: AtomicU64,
    /// Sparkplug metrics that carried no reading (null values, template
    /// members without a name).
    pub skipped_metrics: AtomicU64,
    /// Dead letters deleted by their retention or cap.
    pub dead_letters_deleted: AtomicU64,
    /// Sparkplug readings stored but not remembered for a death's stale
    /// values (the host's `max_tracked_metrics` was reached).
    pub untracked_readings: AtomicU64,
    /// What each input took (messages decoded, dead), by input.
    pub inputs: std::sync::Mutex<Arc<[shopfloor_mqtt::InputCount]>>,
}

/// A running ingest process.
#[derive(Debug)]
pub struct Ingest {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), IngestError>>,
    stats: Arc<Stats>,
}

impl Ingest {
    /// Starts on the current tokio runtime.
    pub fn spawn(config: IngestConfig) -> Self {
        let stats = Arc::new(Stats::default());
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(config, stopped, Arc::clone(&stats)));
        Self { stop, task, stats }
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Stops at once, like a crash: nothing pending is committed or acked
    /// (the broker redelivers it to the next process with this client id).
    pub fn abort(self) {
        self.task.abort();
    }

    /// Commits what is pending, acks it and stops.
    pub async fn shutdown(self) -> Result<(), IngestError> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or(Ok(()))
    }
}

/// What one message decodes to.
enum Decoded {
    /// Readings, and what a birth said about its metrics; `refused`: why
    /// some of its readings cannot be stored (the message is dead-lettered
    /// too, the others are written).
    Batches {
        batches: Vec<Batch>,
        metrics: Vec<MetricInfo>,
        kind: Kind,
        refused: Option<String>,
    },
    Dead(String),
}

/// The shared reading input, with what ingest checks on top: the time
/// window, the readings a message may hold, what births say of their
/// metrics.
struct Decoder {
    inputs: Inputs,
    window: TimeWindow,
    max_readings: usize,
    /// Units mapped payloads gave that are in the catalogue already
    /// (bounded: past the bound it starts again, and a unit is written
    /// once more).
    units: HashSet<MetricUnit>,
}

/// Units remembered as written, at most.
const MAX_KNOWN_UNITS: usize = 100_000;

impl Decoder {
    fn new(inputs: &[Input], window: TimeWindow, max_readings: usize) -> Self {
        Self { inputs: Inputs::new(inputs), window, max_readings, units: HashSet::new() }
    }

    /// What mapped payloads say of their units, once per metric and unit.
    fn unit_metrics(&mut self, units: Vec<MetricUnit>) -> Vec<MetricInfo> {
        let mut out = Vec::new();
        for u in units {
            if self.units.contains(&u) {
                continue;
            }
            if self.units.len() >= MAX_KNOWN_UNITS {
                self.units.clear();
            }
            out.push(MetricInfo {
                source: u.source.clone(),
                name: u.metric.clone(),
                datatype: None,
                unit: Some(u.unit.clone()),
                properties: None,
            });
            self.units.insert(u);
        }
        out
    }

    fn decode(
        &mut self,
        topic: &str,
        content_type: Option<&str>,
        payload: &bytes::Bytes,
        now: Now,
    ) -> Decoded {
        match self.inputs.decode(topic, content_type, payload, now) {
            shopfloor_mqtt::Decoded::Dead(why) => Decoded::Dead(why),
            shopfloor_mqtt::Decoded::Readings { mut readings, kind } => {
                let mut metrics =
                    if kind == Kind::Birth { birth_metrics(topic, payload) } else { Vec::new() };
                metrics.extend(self.unit_metrics(std::mem::take(&mut readings.units)));
                let mapping_refused = readings.refused.take();
                // Replayed history is stored like live data.
                let batches = Readings::into_batches(readings);
                let mut d =
                    decoded(&self.window, self.max_readings, batches, metrics, kind, now.unix_ms);
                if let Some(why) = mapping_refused {
                    match &mut d {
                        Decoded::Batches { refused: r @ None, .. } => *r = Some(why),
                        Decoded::Batches { refused: Some(r), .. } | Decoded::Dead(r) => {
                            *r = format!("{why}; {r}");
                        }
                    }
                }
                d
            }
            _ => Decoded::Dead("not a message this version can use".into()),
        }
    }
}

/// What an NBIRTH or DBIRTH says about its metrics: datatype, `engUnit`,
/// the other simple properties as JSON. Nothing for other messages. A
/// template instance is described member by member (`Instance/Member`, as
/// its readings are named); template definitions are not metrics.
fn birth_metrics(topic: &str, payload: &[u8]) -> Vec<MetricInfo> {
    use shopfloor_sparkplug::{BirthTypes, Payload};
    let parts: Vec<&str> = topic.split('/').collect();
    let source = match parts[..] {
        [_, group, "NBIRTH", edge] => format!("{group}/{edge}"),
        [_, group, "DBIRTH", edge, device] => format!("{group}/{edge}/{device}"),
        _ => return Vec::new(),
    };
    // The host has decoded it already; a failure here was reported there.
    let Ok(p) = Payload::decode(payload, &BirthTypes::new()) else { return Vec::new() };
    let mut out = Vec::new();
    for m in &p.metrics {
        if let Some(name) = m.name.as_deref() {
            describe(&source, name, m, &mut out);
        }
    }
    out.retain(|i| !i.name.contains('\0'));
    out
}

fn describe(source: &str, name: &str, m: &shopfloor_sparkplug::Metric, out: &mut Vec<MetricInfo>) {
    use shopfloor_sparkplug::MetricValue;
    use shopfloor_sparkplug::payload::PropertyValue;
    if let Some(MetricValue::Template(t)) = &m.value {
        if !t.is_definition {
            for member in &t.metrics {
                if let Some(n) = member.name.as_deref() {
                    describe(source, &format!("{name}/{n}"), member, out);
                }
            }
        }
        return;
    }
    let mut unit = None;
    let mut props = serde_json::Map::new();
    for (key, v) in m.properties.iter().flat_map(|p| p.0.iter()) {
        let PropertyValue::Value(v) = v else { continue };
        match (key.as_str(), v) {
            ("engUnit", MetricValue::String(u)) => unit = Some(u.clone()),
            _ => {
                let json = match v.to_value() {
                    Some(shopfloor_schemas::Value::Bool(b)) => serde_json::Value::from(b),
                    Some(shopfloor_schemas::Value::I64(x)) => serde_json::Value::from(x),
                    Some(shopfloor_schemas::Value::U64(x)) => serde_json::Value::from(x),
                    Some(shopfloor_schemas::Value::F64(x)) if x.is_finite() => {
                        serde_json::Value::from(x)
                    }
                    Some(shopfloor_schemas::Value::String(s)) if !s.contains('\0') => {
                        serde_json::Value::from(s)
                    }
                    _ => continue,
                };
                props.insert(key.clone(), json);
            }
        }
    }
    out.push(MetricInfo {
        source: source.to_owned(),
        name: name.to_owned(),
        datatype: Some(m.datatype.name().to_owned()),
        unit: unit.filter(|u| !u.contains('\0')),
        properties: (!props.is_empty()).then(|| serde_json::Value::Object(props).to_string()),
    });
}

/// The readings that can be stored; a message none of whose readings can
/// is dead.
fn decoded(
    window: &TimeWindow,
    max_readings: usize,
    batches: Vec<Batch>,
    metrics: Vec<MetricInfo>,
    kind: Kind,
    now_ms: u64,
) -> Decoded {
    let n: usize = batches.iter().map(|b| b.readings.len()).sum();
    if n > max_readings {
        return Decoded::Dead(format!(
            "{n} readings in one message, more than the {max_readings} allowed (max_readings_per_message)"
        ));
    }
    let had = !batches.is_empty();
    let (batches, refused) = crate::check::split(batches, window, now_ms);
    match refused {
        Some(why) if had && batches.is_empty() && metrics.is_empty() => Decoded::Dead(why),
        refused => Decoded::Batches { batches, metrics, kind, refused },
    }
}

/// Gives the Sparkplug hosts the births kept before a restart, so that
/// DATA queued for this session while ingest was away can be named. Their
/// values are stored already; only what they say about aliases and types
/// is wanted. A newer birth in the queue replaces them as it arrives.
async fn replay_births<S: Sink>(sink: &S, decoder: &mut Decoder) {
    let births = crate::sink::births(sink).await;
    let n = births.len();
    for (topic, payload) in births {
        let _ = decoder.decode(&topic, None, &payload.into(), Now::now());
    }
    // The queued DATA continues sequences these births know nothing of.
    decoder.inputs.resync_seq();
    // Nothing to send for them: they are history.
    let _ = decoder.inputs.transmits();
    if n > 0 {
        tracing::info!(births = n, "Sparkplug births from before the restart replayed");
    }
}

/// The inputs, with Sparkplug hosts sharing their DATA through `share`
/// (a host that names its own share group keeps it).
fn shared_inputs(inputs: &[Input], share: Option<&str>) -> Vec<Input> {
    let mut inputs = inputs.to_vec();
    if let Some(share) = share {
        for i in &mut inputs {
            if let Input::Sparkplug { host } = i {
                host.share.get_or_insert_with(|| share.to_owned());
            }
        }
    }
    inputs
}

/// How often at most the store is asked for births this process missed.
const BIRTH_LOOKUP_EVERY: Duration = Duration::from_secs(1);

/// DATA is shared with other ingest processes and came from a node whose
/// birth this one never saw (it was away, the broker dropped the birth):
/// loads the births of such nodes that another process kept. Their values
/// are stored already; only their aliases and types are wanted.
async fn load_missed_births<S: Sink>(sink: &S, decoder: &mut Decoder) {
    let births = match sink.births().await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(
                "{e}: Sparkplug DATA of a node whose birth this process missed cannot be named"
            );
            return;
        }
    };
    // The nodes missed, before any of their births is replayed (a node's
    // DBIRTHs follow its NBIRTH).
    let node = |topic: &str| match shopfloor_sparkplug::Topic::parse(topic) {
        Ok(shopfloor_sparkplug::Topic::Edge { group_id, edge_node_id, .. }) => {
            Some((group_id, edge_node_id))
        }
        _ => None,
    };
    let missed: HashSet<(String, String)> = births
        .iter()
        .filter_map(|(t, _)| node(t))
        .filter(|(g, e)| decoder.inputs.missed_birth(&format!("spBv1.0/{g}/NDATA/{e}")))
        .collect();
    let mut n = 0;
    for (topic, payload) in births {
        if node(&topic).is_some_and(|k| missed.contains(&k)) {
            let _ = decoder.decode(&topic, None, &payload.into(), Now::now());
            n += 1;
        }
    }
    // Nothing to send for them: they are history.
    let _ = decoder.inputs.transmits();
    if n > 0 {
        tracing::info!(births = n, "Sparkplug births this process missed loaded from the store");
    }
}

/// Keeps the storage up: a connection of its own, a pass every `every`.
async fn maintain(db: Database, retention: Retention, every: Duration, stats: Arc<Stats>) {
    let mut upkeep = Maintenance::new(retention);
    let mut client = crate::pipeline::connect(&db).await;
    let mut failures = 0;
    loop {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        match upkeep.run(&mut client, now_ms).await {
            Ok(pass) => {
                failures = 0;
                if pass.deltas > 0 {
                    stats.rollup_passes.fetch_add(1, Ordering::Relaxed);
                }
                stats.dead_letters_deleted.fetch_add(pass.dead_letters_deleted, Ordering::Relaxed);
                tokio::time::sleep(every).await;
            }
            Err(e) => {
                failures += 1;
                tracing::warn!("storage upkeep: {e}; retrying");
                tokio::time::sleep(db_backoff(failures).max(every)).await;
                if client.is_closed() {
                    client = crate::pipeline::connect(&db).await;
                }
            }
        }
    }
}

/// Sleeps until `at`; never wakes for `None`.
async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The consumer ingest reads through: a persistent session with manual
/// acks.
fn consumer(config: &IngestConfig, filters: Vec<String>, counters: Arc<LinkCounters>) -> Consumer {
    let mut c = ConsumerConfig::from_connection(config.mqtt.clone());
    c.session = Session::Persistent { expiry: config.session_expiry };
    c.filters = filters;
    c.manual_acks = true;
    // The broker's send window must be larger than a batch (else a batch
    // waiting to fill never does) and is a memory bound too. (MQTT 3.1.1
    // has none: the broker's in-flight limit applies, and a batch is
    // flushed by its age.)
    c.receive_maximum = Some(u16::try_from(config.max_pending).unwrap_or(u16::MAX).max(20));
    // The event loop must never wait on this channel for long: while it
    // waits it sends no PINGREQ, and after 1.5 keep-alives the broker drops
    // the connection and redelivers everything in flight. The broker sends
    // at most `max_pending` unacked messages (the receive maximum; Mosquitto
    // 2.0.11 overruns it once acks flow), so four times that is room enough
    // and still a bound.
    c.queue = config.max_pending.max(16).saturating_mul(4);
    // Jittered: ingest processes sharing a broker do not come back in
    // lockstep after it restarts.
    c.backoff_min = Duration::from_millis(100);
    c.backoff_max = Duration::from_secs(5);
    Consumer::connect(c, counters)
}

/// Acks in arrival order; what the client cannot take now waits.
fn send_acks(client: &ClientHandle, acks: &mut VecDeque<AckToken>) {
    while let Some(t) = acks.front() {
        match client.try_ack(t) {
            Ok(Acked::Sent | Acked::Stale) => {
                acks.pop_front();
            }
            Err(_) => break,
        }
    }
}

async fn run(
    config: IngestConfig,
    stop: oneshot::Receiver<()>,
    stats: Arc<Stats>,
) -> Result<(), IngestError> {
    match config.store.clone() {
        Store::Postgres => {
            let db = Database {
                url: config.database.clone(),
                password: config.database_password.clone(),
                tls: config.database_tls.clone(),
                timescaledb: config.timescaledb,
                max_catalogue: config.max_catalogue_metrics,
            };
            let upkeep = maintain(
                db.clone(),
                config.retention.clone(),
                config.maintain_every,
                Arc::clone(&stats),
            );
            run_with(config, db, Some(upkeep), stop, stats).await
        }
        Store::InfluxDb(c) => {
            run_with(config, InfluxSink::new(c), None::<std::future::Pending<()>>, stop, stats)
                .await
        }
        Store::ClickHouse(c) => {
            let sink = ClickHouseSink::new(c);
            run_with(config, sink, None::<std::future::Pending<()>>, stop, stats).await
        }
    }
}

async fn run_with<S: Sink>(
    config: IngestConfig,
    sink: S,
    upkeep: Option<impl Future<Output = ()> + Send + 'static>,
    mut stop: oneshot::Receiver<()>,
    stats: Arc<Stats>,
) -> Result<(), IngestError> {
    // Stopping works in every state, also while the store is refused.
    let mut pipeline = tokio::select! {
        p = Pipeline::connect(&sink, config.connections.clamp(1, 2)) => p,
        _ = &mut stop => return Ok(()),
    };
    let _upkeep = upkeep.map(|u| AbortOnDrop(tokio::spawn(u)));
    let window =
        TimeWindow::new(config.max_ahead, Some(config.retention.samples.unwrap_or(config.max_age)));
    let inputs = shared_inputs(&config.inputs, config.share.as_deref());
    let sharing =
        inputs.iter().any(|i| matches!(i, Input::Sparkplug { host } if host.share.is_some()));
    let mut decoder = Decoder::new(&inputs, window, config.max_readings_per_message);
    *stats.inputs.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
        decoder.inputs.counts();
    let mut last_lookup: Option<Instant> = None;
    let filters = decoder.inputs.filters(config.share.as_deref());
    // The connection ends with this task, however it ends: a crashed
    // ingest must not leave its MQTT session connected (the next process
    // with the same client id would be taken over, and take over back).
    let mut consumer = consumer(&config, filters, Arc::clone(&stats.link));
    let client = consumer.client().clone();
    if decoder.inputs.has_sparkplug() {
        tokio::select! {
            () = replay_births(&sink, &mut decoder) => {}
            _ = &mut stop => return Ok(()),
        }
    }
    // When batches go and messages are acked: the gate's policy.
    let mut gate: Gate<Option<AckToken>> = Gate::new(GateConfig {
        batch_readings: config.batch_readings,
        batch_age: config.batch_age,
        max_pending: config.max_pending,
        connections: pipeline.connections(),
    });
    // What the gathered batch holds, and the tickets of those in flight.
    let mut work = Submission::default();
    let mut tickets: VecDeque<Ticket> = VecDeque::new();
    let mut acks: VecDeque<AckToken> = VecDeque::new();
    loop {
        let due = sleep_until_opt(gate.poll_timeout().map(Instant::from_std));
        let front = async {
            match tickets.front_mut() {
                Some(t) => t.await,
                None => std::future::pending().await,
            }
        };
        // A Sparkplug `seq` gap still open at its deadline: a rebirth request.
        let gap = sleep_until_opt(decoder.inputs.poll_timeout().map(Instant::from_std));
        tokio::select! {
            _ = &mut stop, if !gate.is_stopping() => gate.stop(),
            () = gap => decoder.inputs.handle_timeout(Now::now()),
            m = consumer.recv(), if gate.wants_input() => match m {
                Some(ConsumerEvent::Connected { .. }) => {
                    // Acks waiting from the old connection are stale.
                    send_acks(&client, &mut acks);
                    decoder.inputs.handle_connected(Now::now());
                }
                Some(ConsumerEvent::Message(mut m)) => {
                    if sharing
                        && decoder.inputs.missed_birth(&m.topic)
                        && last_lookup.is_none_or(|t| t.elapsed() >= BIRTH_LOOKUP_EVERY)
                    {
                        last_lookup = Some(Instant::now());
                        load_missed_births(&sink, &mut decoder).await;
                    }
                    let mut readings = 0;
                    let mut death = false;
                    let now = Now::now();
                    let refused = match decoder.decode(&m.topic, m.content_type.as_deref(), &m.payload, now) {
                        Decoded::Batches { batches, metrics, kind, refused } => {
                            readings = batches.iter().map(|x| x.readings.len()).sum::<usize>();
                            death = kind == Kind::Death;
                            if death {
                                work.deaths.extend(batches);
                            } else {
                                work.batches.extend(batches);
                            }
                            work.metrics.extend(metrics);
                            if kind == Kind::Birth {
                                work.births.push((m.topic.clone(), m.payload.to_vec()));
                            }
                            refused
                        }
                        Decoded::Dead(error) => Some(error),
                    };
                    if let Some(mut error) = refused {
                        let n = m.payload.len();
                        let keep = n.min(config.dead_letter_payload);
                        if keep < n {
                            error.push_str(&format!(" (payload of {n} bytes, the first {keep} kept)"));
                        }
                        work.dead.push(DeadLetter {
                            topic: std::mem::take(&mut m.topic),
                            payload: m.payload[..keep].to_vec(),
                            error,
                        });
                    }
                    stats.skipped_metrics.store(decoder.inputs.skipped_metrics(), Ordering::Relaxed);
                    stats.untracked_readings.store(decoder.inputs.untracked_readings(), Ordering::Relaxed);
                    gate.received(m.take_ack(), readings, death, now);
                    stats.held.store(gate.held() as u64, Ordering::Relaxed);
                }
                Some(_) => {}
                None => return Ok(()),
            },
            () = due => {}
            done = front => {
                // This branch only completes when there was a ticket.
                tickets.pop_front();
                let written = match done {
                    Ok(w) => w,
                    // The pipeline only stops with this task.
                    Err(e) => return Err(IngestError::Stopped(e.to_string())),
                };
                stats.rows.fetch_add(written.rows, Ordering::Relaxed);
                stats.duplicates.fetch_add(written.duplicates, Ordering::Relaxed);
                stats.dead_letters.fetch_add(written.dead_letters, Ordering::Relaxed);
                let messages = gate.committed().unwrap_or_default();
                stats.held.store(gate.held() as u64, Ordering::Relaxed);
                stats.messages.fetch_add(messages.len() as u64, Ordering::Relaxed);
                acks.extend(messages.into_iter().flatten());
            }
        }
        for p in decoder.inputs.transmits() {
            if client.try_publish(Outgoing::from(p)).is_err() {
                tracing::warn!("a Sparkplug host message was dropped: the MQTT client is busy");
            }
        }
        if gate.poll_submit(Now::now()) {
            tickets.push_back(pipeline.submit_all(std::mem::take(&mut work)).await);
        }
        send_acks(&client, &mut acks);
        if gate.is_drained() {
            // Let the event loop send the last acks.
            let deadline = Instant::now() + Duration::from_secs(2);
            while !acks.is_empty() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
                send_acks(&client, &mut acks);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            client.disconnect().await;
            drop(consumer);
            return Ok(());
        }
    }
}
