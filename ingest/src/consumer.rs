//! MQTT in, committed rows out: the ingest process.
//!
//! The delivery contract (see the crate README):
//! - MQTT 5, a stable client id, `clean_start = false` with a session expiry,
//!   manual acks: a message is acknowledged only after the transaction
//!   holding its rows has committed, in arrival order;
//! - every received message carries the number of the connection it came
//!   on; after a reconnect, acks for messages of an older connection are
//!   dropped (the broker redelivers them, the idempotent write absorbs them);
//! - what cannot be used goes to `shopfloor.dead_letters` and is acked;
//! - PostgreSQL down: the batch is retried with a capped backoff, nothing
//!   more is read (a bounded queue; the broker holds the rest).
//!
//! The MQTT event loop is polled in a plain loop of its own (never raced in
//! `select!`); it hands messages over a bounded channel and never waits on
//! the ingest loop otherwise. Acks go out with `try_ack`, with a retry queue
//! that keeps their order, so nothing here can wait on the event loop while
//! the event loop waits on it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use shopfloor_schemas::{Batch, Codec, TopicTemplate};
use shopfloor_sparkplug::edge::{Message, Now};
use shopfloor_sparkplug::host::{HostApplication, HostConfig, HostEvent};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::check::TimeWindow;
use crate::error::IngestError;
use crate::maintain::{Maintenance, Retention};
use crate::pipeline::{Database, Pipeline, Ticket, db_backoff};
use crate::writer::{DeadLetter, MetricInfo, Submission, Writer};

/// What the ingest subscribes to.
#[derive(Clone, Debug)]
pub enum Input {
    /// Plain readings: each message a [`Batch`] on a topic of `template`.
    /// The source is the topic's placeholders but `{sensor}`, joined by `/`;
    /// the metric is each reading's own. The codec comes from the MQTT 5
    /// content type, else `codec`.
    Plain {
        /// The topic template.
        template: TopicTemplate,
        /// The codec when a message carries no content type.
        codec: Codec,
    },
    /// Sparkplug B, decoded by a [`HostApplication`] (births define names
    /// and types, deaths write `stale`, gaps ask for rebirths).
    Sparkplug {
        /// The host's configuration (`publish_state` only on the primary).
        host: HostConfig,
    },
}

/// How an ingest process runs.
#[derive(Clone, Debug)]
pub struct IngestConfig {
    /// MQTT broker host.
    pub host: String,
    /// MQTT broker port.
    pub port: u16,
    /// The MQTT client id: stable across restarts, so the broker keeps the
    /// session and redelivers what was not acked.
    pub client_id: String,
    /// User name and password.
    pub credentials: Option<(String, String)>,
    /// TLS settings (rustls, ring provider), for instance from
    /// `shopfloor_mqtt::tls_client_config` with a client
    /// certificate; `None`: plain TCP.
    pub tls: Option<Arc<rumqttc::tokio_rustls::rustls::ClientConfig>>,
    /// How long the broker keeps the session while ingest is away.
    pub session_expiry: Duration,
    /// What to subscribe to.
    pub inputs: Vec<Input>,
    /// Share the plain inputs with other ingest processes through an MQTT 5
    /// shared subscription (`$share/<name>/<filter>`): the broker gives each
    /// message to one of them. Sparkplug inputs are never shared (a host
    /// must see a node's whole session): split those by `HostConfig::groups`.
    pub share: Option<String>,
    /// PostgreSQL connection string.
    pub database: String,
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
}

impl IngestConfig {
    /// Defaults: session expiry 1 h, flush at 10 000 readings or 200 ms,
    /// at most 20 000 messages pending, 2 COPY connections, TimescaleDB
    /// where available, everything kept, rollups every 2 s, readings at
    /// most 1 day ahead of the clock and 10 years back, at most 100 000
    /// readings a message, dead letters keeping 64 KiB of their payload.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        client_id: impl Into<String>,
        database: impl Into<String>,
    ) -> Self {
        Self {
            host: host.into(),
            port,
            client_id: client_id.into(),
            credentials: None,
            tls: None,
            session_expiry: Duration::from_secs(3600),
            inputs: Vec::new(),
            share: None,
            database: database.into(),
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
        }
    }
}

/// Counters of a running ingest.
#[derive(Debug, Default)]
pub struct Stats {
    /// Messages committed and acked (or dead-lettered and acked).
    pub messages: AtomicU64,
    /// Rows added.
    pub rows: AtomicU64,
    /// Rows offered that were there already.
    pub duplicates: AtomicU64,
    /// Messages sent to the dead letters.
    pub dead_letters: AtomicU64,
    /// Acks dropped because their connection had gone.
    pub stale_acks: AtomicU64,
    /// Subscriptions the broker has confirmed (one per filter per connection).
    pub subscribed: AtomicU64,
    /// Connections made to the broker (CONNACKs); more than one means
    /// reconnects.
    pub connects: AtomicU64,
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

/// Aborts a task when dropped.
struct AbortOnDrop<T = ()>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// From the event loop to the ingest loop.
enum FromBroker {
    Connected { connection: u64 },
    Message { connection: u64, publish: Box<Publish> },
}

/// A message held until its rows are committed.
struct Pending {
    connection: u64,
    publish: Box<Publish>,
}

fn filters(inputs: &[Input], share: Option<&str>) -> Vec<String> {
    inputs
        .iter()
        .flat_map(|i| match i {
            Input::Plain { template, .. } => match share {
                Some(group) => vec![format!("$share/{group}/{}", template.filter())],
                None => vec![template.filter()],
            },
            Input::Sparkplug { host } => HostApplication::new(host.clone()).subscriptions(),
        })
        .collect()
}

fn spawn_event_loop(
    config: &IngestConfig,
    tx: mpsc::Sender<FromBroker>,
    stats: Arc<Stats>,
) -> (AsyncClient, JoinHandle<()>) {
    let mut o = MqttOptions::new(&config.client_id, &config.host, config.port);
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(
        u32::try_from(config.session_expiry.as_secs()).unwrap_or(u32::MAX),
    ));
    o.set_manual_acks(true);
    o.set_keep_alive(Duration::from_secs(10));
    // The broker's send window must be larger than a batch (else a batch
    // waiting to fill never does) and is a memory bound too.
    o.set_receive_maximum(Some(u16::try_from(config.max_pending).unwrap_or(u16::MAX).max(20)));
    o.set_max_packet_size(Some(16 << 20));
    if let Some((u, p)) = &config.credentials {
        o.set_credentials(u, p);
    }
    if let Some(tls) = &config.tls {
        o.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(
            Arc::clone(tls),
        )));
    }
    let cap = config.max_pending.max(16);
    let (client, mut eventloop) = AsyncClient::new(o, cap);
    let filters = filters(&config.inputs, config.share.as_deref());
    let sub = client.clone();
    let task = tokio::spawn(async move {
        let mut connection = 0_u64;
        // Jittered: ingest processes sharing a broker do not come back in
        // lockstep after it restarts.
        let mut backoff =
            shopfloor_mqtt::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connection += 1;
                    stats.connects.fetch_add(1, Ordering::Relaxed);
                    backoff.reset();
                    let (c, f) = (sub.clone(), filters.clone());
                    // Subscribe again on every CONNACK, from a task of its own.
                    tokio::spawn(async move {
                        for filter in f {
                            let _ = c.subscribe(filter, QoS::AtLeastOnce).await;
                        }
                    });
                    if tx.send(FromBroker::Connected { connection }).await.is_err() {
                        return;
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx
                        .send(FromBroker::Message { connection, publish: Box::new(p) })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    stats.subscribed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("MQTT: {e}");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    });
    (client, task)
}

/// What one message decodes to.
enum Decoded {
    /// Readings, and what a birth said about its metrics; `refused`: why
    /// some of its readings cannot be stored (the message is dead-lettered
    /// too, the others are written).
    Batches {
        batches: Vec<Batch>,
        metrics: Vec<MetricInfo>,
        death: bool,
        refused: Option<String>,
    },
    Dead(String),
}

/// A batch being committed, and the messages it holds.
struct InFlight {
    ticket: Ticket,
    messages: Vec<Pending>,
    /// It holds a death: nothing else is written at the same time.
    death: bool,
}

struct Decoder {
    inputs: Vec<(Input, Option<HostApplication>)>,
    window: TimeWindow,
    max_readings: usize,
}

impl Decoder {
    fn new(inputs: &[Input], window: TimeWindow, max_readings: usize) -> Self {
        Self {
            window,
            max_readings,
            inputs: inputs
                .iter()
                .map(|i| {
                    let host = match i {
                        Input::Sparkplug { host } => Some(HostApplication::new(host.clone())),
                        Input::Plain { .. } => None,
                    };
                    (i.clone(), host)
                })
                .collect(),
        }
    }

    fn decode(
        &mut self,
        topic: &str,
        content_type: Option<&str>,
        payload: &[u8],
        now: Now,
    ) -> Decoded {
        for (input, host) in &mut self.inputs {
            match (input, host) {
                (Input::Plain { template, codec }, _) => {
                    let Some(caps) = template.matches(topic) else { continue };
                    let codec = match content_type.map(Codec::from_content_type) {
                        Some(Ok(c)) => c,
                        Some(Err(e)) => return Decoded::Dead(e.to_string()),
                        None => *codec,
                    };
                    let mut batch = match codec.decode_batch(payload) {
                        Ok(b) => b,
                        Err(e) => return Decoded::Dead(e.to_string()),
                    };
                    let source: Vec<&str> =
                        caps.iter().filter(|(n, _)| *n != "sensor").map(|(_, v)| v).collect();
                    batch.source = source.join("/").into();
                    return decoded(
                        &self.window,
                        self.max_readings,
                        vec![batch],
                        Vec::new(),
                        false,
                        now.unix_ms,
                    );
                }
                (Input::Sparkplug { .. }, Some(host)) => {
                    if !topic.starts_with("spBv1.0/") {
                        continue;
                    }
                    let msg = Message {
                        topic: topic.to_owned(),
                        payload: bytes::Bytes::copy_from_slice(payload),
                    };
                    if let Err(e) = host.handle_message(&msg, now) {
                        return Decoded::Dead(e.to_string());
                    }
                    let mut batches = Vec::new();
                    while let Some(e) = host.poll_event() {
                        // Replayed history is stored like live data.
                        if let HostEvent::Data(b) | HostEvent::Historical(b) = e {
                            batches.push(b);
                        }
                    }
                    // DATA the host could not name (no birth seen from its
                    // node or device) is kept, not silently dropped.
                    let data = matches!(topic.split('/').nth(2), Some("NDATA" | "DDATA"));
                    if data && batches.is_empty() {
                        return Decoded::Dead(
                            "Sparkplug DATA with no birth seen from its edge node or device: \
                             its metrics cannot be named (a rebirth was requested)"
                                .into(),
                        );
                    }
                    let death = matches!(topic.split('/').nth(2), Some("NDEATH" | "DDEATH"));
                    let metrics = birth_metrics(topic, payload);
                    return decoded(
                        &self.window,
                        self.max_readings,
                        batches,
                        metrics,
                        death,
                        now.unix_ms,
                    );
                }
                _ => {}
            }
        }
        Decoded::Dead(format!("no input is configured for topic {topic:?}"))
    }

    /// The hosts' STATE and rebirth requests to publish.
    fn transmits(&mut self) -> Vec<shopfloor_sparkplug::edge::Publish> {
        self.inputs
            .iter_mut()
            .filter_map(|(_, h)| h.as_mut())
            .flat_map(HostApplication::drain_transmits)
            .collect()
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
    death: bool,
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
        refused => Decoded::Batches { batches, metrics, death, refused },
    }
}

/// Whether a Sparkplug topic is a birth (NBIRTH or DBIRTH).
fn is_birth(topic: &str) -> bool {
    topic.starts_with("spBv1.0/") && matches!(topic.split('/').nth(2), Some("NBIRTH" | "DBIRTH"))
}

/// Gives the Sparkplug hosts the births kept before a restart, so that
/// DATA queued for this session while ingest was away can be named. Their
/// values are stored already; only what they say about aliases and types
/// is wanted. A newer birth in the queue replaces them as it arrives.
async fn replay_births(db: &Database, decoder: &mut Decoder) {
    let client = crate::pipeline::connect(db).await;
    let births = match Writer::births(&client).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!("{e}: DATA queued while ingest was away needs a rebirth to be named");
            return;
        }
    };
    for (topic, payload) in &births {
        let _ = decoder.decode(topic, None, payload, Now::now());
    }
    // The queued DATA continues sequences these births know nothing of.
    for h in decoder.inputs.iter_mut().filter_map(|(_, h)| h.as_mut()) {
        h.resync_seq();
    }
    // Nothing to send for them: they are history.
    let _ = decoder.transmits();
    if !births.is_empty() {
        tracing::info!(births = births.len(), "Sparkplug births from before the restart replayed");
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

/// Whether `work` may go to the pipeline now. A death is committed alone,
/// after everything before it and before anything after it: its stale
/// rows go after the latest row there is.
fn can_submit(work: &Submission, in_flight: &VecDeque<InFlight>, pipeline: &Pipeline) -> bool {
    if work.deaths.is_empty() {
        in_flight.len() < pipeline.connections() && !in_flight.iter().any(|f| f.death)
    } else {
        in_flight.is_empty()
    }
}

/// Sleeps until `at`; never wakes for `None`.
async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn run(
    config: IngestConfig,
    mut stop: oneshot::Receiver<()>,
    stats: Arc<Stats>,
) -> Result<(), IngestError> {
    let db = Database { url: config.database.clone(), timescaledb: config.timescaledb };
    // Stopping works in every state, also while the database is refused.
    let mut pipeline = tokio::select! {
        p = Pipeline::connect(&db, config.connections.clamp(1, 2)) => p,
        _ = &mut stop => return Ok(()),
    };
    let _upkeep = AbortOnDrop(tokio::spawn(maintain(
        db.clone(),
        config.retention.clone(),
        config.maintain_every,
        Arc::clone(&stats),
    )));
    // The event loop must never wait on this channel for long: while it
    // waits it sends no PINGREQ, and after 1.5 keep-alives the broker drops
    // the connection and redelivers everything in flight. The broker sends
    // at most `max_pending` unacked messages (the receive maximum; Mosquitto
    // 2.0.11 overruns it once acks flow), so four times that is room enough
    // and still a bound.
    let (tx, mut rx) = mpsc::channel(config.max_pending.max(16).saturating_mul(4));
    let (client, events) = spawn_event_loop(&config, tx, Arc::clone(&stats));
    // The event loop ends with this task, however it ends: a crashed ingest
    // must not leave its MQTT session connected (the next process with the
    // same client id would be taken over, and take over back).
    let events = AbortOnDrop(events);
    let window =
        TimeWindow::new(config.max_ahead, Some(config.retention.samples.unwrap_or(config.max_age)));
    let mut decoder = Decoder::new(&config.inputs, window, config.max_readings_per_message);
    if decoder.inputs.iter().any(|(_, h)| h.is_some()) {
        tokio::select! {
            () = replay_births(&db, &mut decoder) => {}
            _ = &mut stop => return Ok(()),
        }
    }
    let mut connection = 0_u64;
    let mut pending: Vec<Pending> = Vec::new();
    // What the next commit holds.
    let mut work = Submission::default();
    let mut readings = 0;
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let mut held = 0; // messages in `pending` and `in_flight`
    let mut acks: VecDeque<Box<Publish>> = VecDeque::new();
    let mut oldest: Option<Instant> = None;
    let mut stopping = false;
    loop {
        let has_death = !work.deaths.is_empty();
        let flush_at = oldest.map(|t| t + config.batch_age);
        let due = sleep_until_opt(flush_at.filter(|_| can_submit(&work, &in_flight, &pipeline)));
        let full = readings >= config.batch_readings || held >= config.max_pending || has_death;
        let front = async {
            match in_flight.front_mut() {
                Some(f) => (&mut f.ticket).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut stop, if !stopping => stopping = true,
            m = rx.recv(), if !full && !stopping => match m {
                Some(FromBroker::Connected { connection: c }) => {
                    connection = c;
                    // Acks waiting from the old connection are stale.
                    let stale = acks.len() as u64;
                    acks.clear();
                    stats.stale_acks.fetch_add(stale, Ordering::Relaxed);
                    for (_, host) in &mut decoder.inputs {
                        if let Some(h) = host {
                            h.handle_connected(Now::now());
                        }
                    }
                }
                Some(FromBroker::Message { connection: c, mut publish }) => {
                    {
                        let topic = String::from_utf8_lossy(&publish.topic);
                        let ct = publish.properties.as_ref().and_then(|p| p.content_type.as_deref());
                        let refused = match decoder.decode(&topic, ct, &publish.payload, Now::now()) {
                            Decoded::Batches { batches, metrics, death, refused } => {
                                readings += batches.iter().map(|x| x.readings.len()).sum::<usize>();
                                if death {
                                    work.deaths.extend(batches);
                                } else {
                                    work.batches.extend(batches);
                                }
                                work.metrics.extend(metrics);
                                if is_birth(&topic) {
                                    work.births.push((topic.clone().into_owned(), publish.payload.to_vec()));
                                }
                                refused
                            }
                            Decoded::Dead(error) => Some(error),
                        };
                        if let Some(mut error) = refused {
                            let n = publish.payload.len();
                            let keep = n.min(config.dead_letter_payload);
                            if keep < n {
                                error.push_str(&format!(" (payload of {n} bytes, the first {keep} kept)"));
                            }
                            work.dead.push(DeadLetter {
                                topic: topic.into_owned(),
                                payload: publish.payload[..keep].to_vec(),
                                error,
                            });
                        }
                    }
                    let hosts = || decoder.inputs.iter().filter_map(|(_, h)| h.as_ref());
                    stats.skipped_metrics.store(hosts().map(HostApplication::skipped_metrics).sum(), Ordering::Relaxed);
                    stats.untracked_readings.store(hosts().map(HostApplication::untracked_readings).sum(), Ordering::Relaxed);
                    // Only the packet id and QoS are needed to ack: let go of
                    // the rest, which pins rumqttc's read buffer in memory.
                    publish.topic = bytes::Bytes::new();
                    publish.payload = bytes::Bytes::new();
                    publish.properties = None;
                    oldest.get_or_insert_with(Instant::now);
                    pending.push(Pending { connection: c, publish });
                    held += 1;
                    stats.held.store(held as u64, Ordering::Relaxed);
                }
                None => return Ok(()),
            },
            () = due => {}
            done = front => {
                // This branch only completes when `front` had a ticket.
                let f = in_flight.pop_front().expect("a ticket resolved");
                let written = match done {
                    Ok(w) => w,
                    // The pipeline only stops with this task.
                    Err(e) => return Err(IngestError::Stopped(e.to_string())),
                };
                stats.rows.fetch_add(written.rows, Ordering::Relaxed);
                stats.duplicates.fetch_add(written.duplicates, Ordering::Relaxed);
                stats.dead_letters.fetch_add(written.dead_letters, Ordering::Relaxed);
                held -= f.messages.len();
                stats.held.store(held as u64, Ordering::Relaxed);
                stats.messages.fetch_add(f.messages.len() as u64, Ordering::Relaxed);
                for p in f.messages {
                    if p.connection == connection {
                        acks.push_back(p.publish);
                    } else {
                        stats.stale_acks.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        for p in decoder.transmits() {
            let q = if p.qos == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce };
            if client.try_publish(p.topic, q, p.retain, p.payload).is_err() {
                tracing::warn!("a Sparkplug host message was dropped: the MQTT client is busy");
            }
        }
        let has_death = !work.deaths.is_empty();
        let age_due = flush_at.is_some_and(|at| Instant::now() >= at);
        let full = readings >= config.batch_readings || held >= config.max_pending;
        if !pending.is_empty()
            && can_submit(&work, &in_flight, &pipeline)
            && (full || age_due || stopping || has_death)
        {
            let ticket = pipeline.submit_all(std::mem::take(&mut work)).await;
            in_flight.push_back(InFlight {
                ticket,
                messages: std::mem::take(&mut pending),
                death: has_death,
            });
            readings = 0;
            oldest = None;
        }
        // Acks in arrival order; what the client cannot take now waits.
        while let Some(p) = acks.front() {
            if client.try_ack(p).is_err() {
                break;
            }
            acks.pop_front();
        }
        if stopping && pending.is_empty() && in_flight.is_empty() {
            // Let the event loop send the last acks.
            let deadline = Instant::now() + Duration::from_secs(2);
            while !acks.is_empty() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
                while let Some(p) = acks.front() {
                    if client.try_ack(p).is_err() {
                        break;
                    }
                    acks.pop_front();
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = client.disconnect().await;
            drop(events);
            return Ok(());
        }
    }
}
