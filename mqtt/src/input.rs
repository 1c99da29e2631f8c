//! Readings in: plain topics and Sparkplug B, decoded the one way that
//! ingest, alerting and the live page share (sans-IO: messages and the
//! time in, readings, dead letters and messages to publish out).
//!
//! - A plain topic matches a [`TopicTemplate`]; its payload is a
//!   [`Batch`] in the codec the MQTT 5 content type names, else the
//!   input's. The source is the topic's placeholders but `{sensor}`,
//!   joined by `/`.
//! - Sparkplug goes through a [`HostApplication`]: births name metrics and
//!   give their types, deaths make every metric of the node or device
//!   stale, a `seq` gap that stays open past the host's reorder timeout
//!   ends in a rebirth request, and so does DATA before any birth. The
//!   owner drives the timer: [`Inputs::poll_timeout`] and
//!   [`Inputs::handle_timeout`].
//!
//! - A mapped topic matches a [`Mapping`]'s filter: the payload is read
//!   the way the mapping says (devices' own JSON, CBOR, Protobuf, CSV,
//!   bare values). Mappings are tried in order, before plain topics.
//!
//! A message that yields nothing usable is [`Decoded::Dead`] with the
//! reason, for a dead-letter table or a counter; never silently dropped.
//! One that yields some readings and not others carries the reason in
//! [`Readings::refused`].

use std::sync::Arc;
use std::time::Instant;

use shopfloor_mapping::{Mapping, MetricUnit};

use shopfloor_schemas::{Batch, Codec, Timestamp, TopicTemplate};
use shopfloor_sparkplug::edge::{Message, Now, Publish};
use shopfloor_sparkplug::host::{HostApplication, HostConfig, HostEvent};

/// What to read.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Input {
    /// Plain readings: each message a [`Batch`] on a topic of `template`.
    Plain {
        /// The topic template.
        template: TopicTemplate,
        /// The codec when a message carries no MQTT 5 content type.
        codec: Codec,
    },
    /// Sparkplug B, decoded by a [`HostApplication`] with this
    /// configuration (`publish_state` only on a primary host).
    Sparkplug {
        /// The host's configuration.
        host: HostConfig,
    },
    /// A payload mapping: the topics of its filter, read as it says.
    Mapped(Arc<Mapping>),
}

impl Input {
    /// A plain input.
    pub fn plain(template: TopicTemplate, codec: Codec) -> Self {
        Self::Plain { template, codec }
    }

    /// A Sparkplug input.
    pub fn sparkplug(host: HostConfig) -> Self {
        Self::Sparkplug { host }
    }

    /// A mapped input.
    pub fn mapped(mapping: Mapping) -> Self {
        Self::Mapped(Arc::new(mapping))
    }

    /// Its name in metrics: `plain`, `sparkplug` or `mapping NAME`.
    pub fn name(&self) -> String {
        match self {
            Self::Plain { .. } => "plain".to_owned(),
            Self::Sparkplug { .. } => "sparkplug".to_owned(),
            Self::Mapped(m) => format!("mapping {}", m.name()),
        }
    }
}

/// What a Sparkplug message was, when it was one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// A plain message, or Sparkplug DATA.
    Data,
    /// NBIRTH or DBIRTH.
    Birth,
    /// NDEATH or DDEATH: the readings are the stale values it implies.
    Death,
    /// Anything else that decoded (STATE, commands).
    Other,
}

/// The readings of one message.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Readings {
    /// Live readings (DATA, a birth's values, a death's stale values).
    pub live: Vec<Batch>,
    /// Sparkplug `is_historical` readings: what an edge node stored while
    /// offline and replays after its birth.
    pub historical: Vec<Batch>,
    /// Units a mapped payload gave for its metrics.
    pub units: Vec<MetricUnit>,
    /// Why some parts of the message gave no reading (a mapped payload's
    /// failures: which mapping, the path, what was found there); the
    /// message is otherwise used.
    pub refused: Option<String>,
}

impl Readings {
    /// How many readings.
    pub fn len(&self) -> usize {
        self.live.iter().chain(&self.historical).map(|b| b.readings.len()).sum()
    }

    /// No readings.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every batch, live then historical.
    pub fn into_batches(self) -> Vec<Batch> {
        let mut all = self.live;
        all.extend(self.historical);
        all
    }
}

/// What one message decodes to.
#[derive(Debug)]
#[non_exhaustive]
pub enum Decoded {
    /// Readings (maybe none: a STATE message, a birth of a node without
    /// metrics).
    Readings {
        /// The readings.
        readings: Readings,
        /// What the message was.
        kind: Kind,
    },
    /// Nothing usable; why, for a dead letter.
    Dead(String),
}

/// What one input took, by the input's name: for labelled metrics.
#[derive(Debug)]
#[non_exhaustive]
pub struct InputCount {
    /// `plain`, `sparkplug` or `mapping NAME`.
    pub name: String,
    /// Messages it decoded.
    pub messages: std::sync::atomic::AtomicU64,
    /// Messages it took and could not use (dead letters in ingest).
    pub dead: std::sync::atomic::AtomicU64,
}

/// Counts `decoded` against the input that took it.
fn counted(count: &InputCount, decoded: Decoded) -> Decoded {
    use std::sync::atomic::Ordering::Relaxed;
    match &decoded {
        Decoded::Dead(_) => count.dead.fetch_add(1, Relaxed),
        Decoded::Readings { .. } => count.messages.fetch_add(1, Relaxed),
    };
    decoded
}

/// The inputs of one process, with a Sparkplug host per Sparkplug input.
#[derive(Debug)]
pub struct Inputs {
    inputs: Vec<(Input, Option<HostApplication>)>,
    counts: Arc<[InputCount]>,
}

/// The Sparkplug message type of a topic (`NBIRTH`, `DDATA`, …).
fn sparkplug_type(topic: &str) -> Option<&str> {
    topic.strip_prefix("spBv1.0/")?.split('/').nth(1)
}

impl Inputs {
    /// The inputs; a Sparkplug input gets its host application.
    pub fn new(inputs: &[Input]) -> Self {
        let counts = inputs
            .iter()
            .map(|i| InputCount {
                name: i.name(),
                messages: std::sync::atomic::AtomicU64::new(0),
                dead: std::sync::atomic::AtomicU64::new(0),
            })
            .collect();
        Self {
            counts,
            inputs: inputs
                .iter()
                .map(|i| {
                    let host = match i {
                        Input::Sparkplug { host } => Some(HostApplication::new(host.clone())),
                        Input::Plain { .. } | Input::Mapped(_) => None,
                    };
                    (i.clone(), host)
                })
                .collect(),
        }
    }

    /// The topic filters to subscribe to; `share`: plain and mapped inputs through an
    /// MQTT 5 shared subscription of that group. A Sparkplug input shares
    /// its DATA only when its host is set up to (`HostConfig::share`):
    /// births and deaths must reach every host.
    pub fn filters(&self, share: Option<&str>) -> Vec<String> {
        let mut out = Vec::new();
        for (input, host) in &self.inputs {
            match (input, host) {
                (Input::Plain { template, .. }, _) => out.push(match share {
                    Some(group) => format!("$share/{group}/{}", template.filter()),
                    None => template.filter(),
                }),
                (Input::Mapped(m), _) => out.push(match share {
                    Some(group) => format!("$share/{group}/{}", m.filter()),
                    None => m.filter(),
                }),
                (Input::Sparkplug { .. }, Some(h)) => out.extend(h.subscriptions()),
                (Input::Sparkplug { .. }, None) => {}
            }
        }
        out
    }

    /// What each input took so far, in the order given; shared, so a
    /// metrics page reads it while the inputs decode.
    pub fn counts(&self) -> Arc<[InputCount]> {
        Arc::clone(&self.counts)
    }

    /// Whether any input is Sparkplug.
    pub fn has_sparkplug(&self) -> bool {
        self.hosts().next().is_some()
    }

    /// The Sparkplug hosts.
    pub fn hosts(&self) -> impl Iterator<Item = &HostApplication> {
        self.inputs.iter().filter_map(|(_, h)| h.as_ref())
    }

    fn hosts_mut(&mut self) -> impl Iterator<Item = &mut HostApplication> {
        self.inputs.iter_mut().filter_map(|(_, h)| h.as_mut())
    }

    /// The connection is up (again): the hosts publish their STATE.
    pub fn handle_connected(&mut self, now: Now) {
        self.hosts_mut().for_each(|h| h.handle_connected(now));
    }

    /// The earliest deadline of the hosts (a `seq` gap's reorder timeout).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.hosts().filter_map(HostApplication::poll_timeout).min()
    }

    /// Runs the deadlines that have passed (each host acts only on its
    /// own expired ones).
    pub fn handle_timeout(&mut self, now: Now) {
        self.hosts_mut().for_each(|h| h.handle_timeout(now));
    }

    /// What the hosts want published (STATE, rebirth requests).
    pub fn transmits(&mut self) -> Vec<Publish> {
        self.hosts_mut().flat_map(HostApplication::drain_transmits).collect()
    }

    /// Whether a Sparkplug host has never seen the birth that DATA on
    /// `topic` needs (see `HostApplication::missed_birth`).
    pub fn missed_birth(&self, topic: &str) -> bool {
        self.hosts().any(|h| h.missed_birth(topic))
    }

    /// Forgets the `seq` each node was at (after replaying births from
    /// before a restart: what follows continues sequences they do not
    /// know).
    pub fn resync_seq(&mut self) {
        self.hosts_mut().for_each(HostApplication::resync_seq);
    }

    /// Sparkplug metrics that carried no reading (null values, template
    /// members without a name), over all hosts.
    pub fn skipped_metrics(&self) -> u64 {
        self.hosts().map(HostApplication::skipped_metrics).sum()
    }

    /// Readings not remembered for a death's stale values (the hosts'
    /// `max_tracked_metrics` was reached), over all hosts.
    pub fn untracked_readings(&self) -> u64 {
        self.hosts().map(HostApplication::untracked_readings).sum()
    }

    /// Decodes one message received at `now`.
    pub fn decode(
        &mut self,
        topic: &str,
        content_type: Option<&str>,
        payload: &bytes::Bytes,
        now: Now,
    ) -> Decoded {
        for (i, (input, host)) in self.inputs.iter_mut().enumerate() {
            let count = &self.counts[i];
            match (input, host) {
                (Input::Mapped(m), _) => {
                    let Some(mapped) =
                        m.decode(topic, payload, Timestamp::from_unix_ms(now.unix_ms))
                    else {
                        continue;
                    };
                    return counted(count, mapped_readings(mapped));
                }
                (Input::Plain { template, codec }, _) => {
                    let Some(caps) = template.matches(topic) else { continue };
                    let codec = match content_type.map(Codec::from_content_type) {
                        Some(Ok(c)) => c,
                        Some(Err(e)) => return counted(count, Decoded::Dead(e.to_string())),
                        None => *codec,
                    };
                    let mut batch = match codec.decode_batch(payload) {
                        Ok(b) => b,
                        Err(e) => return counted(count, Decoded::Dead(e.to_string())),
                    };
                    let source: Vec<&str> =
                        caps.iter().filter(|(n, _)| *n != "sensor").map(|(_, v)| v).collect();
                    batch.source = source.join("/").into();
                    let readings = Readings { live: vec![batch], ..Readings::default() };
                    return counted(count, Decoded::Readings { readings, kind: Kind::Data });
                }
                (Input::Sparkplug { .. }, Some(host)) => {
                    let Some(kind) = sparkplug_type(topic) else { continue };
                    let msg = Message {
                        retain: false,
                        topic: topic.to_owned(),
                        payload: payload.clone(),
                    };
                    if let Err(e) = host.handle_message(&msg, now) {
                        return counted(count, Decoded::Dead(e.to_string()));
                    }
                    let mut readings = Readings::default();
                    while let Some(e) = host.poll_event() {
                        match e {
                            HostEvent::Data(b) => readings.live.push(b),
                            HostEvent::Historical(b) => readings.historical.push(b),
                            _ => {}
                        }
                    }
                    let kind = match kind {
                        "NBIRTH" | "DBIRTH" => Kind::Birth,
                        "NDEATH" | "DDEATH" => Kind::Death,
                        "NDATA" | "DDATA" => Kind::Data,
                        _ => Kind::Other,
                    };
                    // DATA the host could not name (no birth seen from its
                    // node or device) is kept, not silently dropped.
                    if kind == Kind::Data
                        && readings.live.is_empty()
                        && readings.historical.is_empty()
                    {
                        return counted(
                            count,
                            Decoded::Dead(
                                "Sparkplug DATA with no birth seen from its edge node or device: \
                                 its metrics cannot be named (a rebirth was requested)"
                                    .into(),
                            ),
                        );
                    }
                    return counted(count, Decoded::Readings { readings, kind });
                }
                (Input::Sparkplug { .. }, None) => {}
            }
        }
        Decoded::Dead(format!("no input is configured for topic {topic:?}"))
    }
}

/// What a mapping made of a message: its readings, and its failures as
/// the reason the rest was refused (or the message dead, without any).
fn mapped_readings(mapped: shopfloor_mapping::Mapped) -> Decoded {
    let refused = match mapped.failures.as_slice() {
        [] => None,
        [one] => Some(one.to_string()),
        [first, rest @ ..] => Some(format!("{first} (and {} more)", rest.len())),
    };
    if mapped.is_empty()
        && let Some(why) = refused
    {
        return Decoded::Dead(why);
    }
    let readings =
        Readings { live: mapped.batches, historical: Vec::new(), units: mapped.units, refused };
    Decoded::Readings { readings, kind: Kind::Data }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shopfloor_schemas::{Reading, Timestamp};
    use shopfloor_sparkplug::{EncodeOptions, Metric, MetricValue, Payload};
    use std::time::Duration;

    fn inputs() -> Inputs {
        let mut host = HostConfig::new("h");
        host.publish_state = false;
        Inputs::new(&[
            Input::plain(TopicTemplate::parse("plant/{machine}/{sensor}").unwrap(), Codec::Json),
            Input::sparkplug(host),
        ])
    }

    fn now(ms: u64) -> Now {
        Now::at_unix_ms(ms)
    }

    fn sparkplug(seq: u64, birth: bool, value: f64) -> bytes::Bytes {
        let mut p = Payload { timestamp: Some(1_000), seq: Some(seq), ..Default::default() };
        if birth {
            p.metrics.push(Metric::new("bdSeq", 1_000, MetricValue::Int64(0)));
        }
        p.metrics.push(Metric::new("t", 1_000 + seq, MetricValue::Double(value)));
        p.encode(EncodeOptions::default()).into()
    }

    #[test]
    fn each_input_counts_what_it_took_and_what_it_could_not_use() {
        use std::sync::atomic::Ordering::Relaxed;
        let mut i = inputs();
        let counts = i.counts();
        let b = Batch::new("x").with(Reading::new("t", Timestamp::from_unix_ms(5), 1.5));
        let json: bytes::Bytes = Codec::Json.encode_batch(&b).unwrap().into();
        i.decode("plant/m1/t", None, &json, now(0));
        i.decode("plant/m1/t", None, &bytes::Bytes::from_static(b"{nope"), now(0));
        // DATA before any birth: Sparkplug's, dead.
        i.decode("spBv1.0/G/NDATA/E", None, &sparkplug(1, false, 2.0), now(0));
        i.decode("spBv1.0/G/NBIRTH/E", None, &sparkplug(0, true, 1.0), now(0));
        // No input's topic: counted against none.
        i.decode("elsewhere/t", None, &json, now(0));
        let got: Vec<(&str, u64, u64)> = counts
            .iter()
            .map(|c| (c.name.as_str(), c.messages.load(Relaxed), c.dead.load(Relaxed)))
            .collect();
        assert_eq!(got, [("plain", 1, 1), ("sparkplug", 1, 1)]);
    }

    #[test]
    fn filters_share_plain_topics_only() {
        let f = inputs().filters(Some("g"));
        assert_eq!(f[0], "$share/g/plant/+/+");
        assert!(f[1..].iter().all(|f| !f.starts_with("$share")), "{f:?}");
        assert!(f.iter().any(|f| f == "spBv1.0/+/#"), "{f:?}");
    }

    #[test]
    fn plain_readings_take_their_source_from_the_topic_and_their_codec_from_the_content_type() {
        let mut i = inputs();
        let b = Batch::new("ignored").with(Reading::new("t", Timestamp::from_unix_ms(5), 1.5));
        let json: bytes::Bytes = Codec::Json.encode_batch(&b).unwrap().into();
        let Decoded::Readings { readings, kind } = i.decode("plant/m1/t", None, &json, now(0))
        else {
            panic!("readings")
        };
        assert_eq!(kind, Kind::Data);
        assert_eq!(readings.live[0].source.as_str(), "m1");
        let cbor: bytes::Bytes = Codec::Cbor.encode_batch(&b).unwrap().into();
        let ct = Codec::Cbor.content_type();
        assert!(matches!(
            i.decode("plant/m1/t", Some(ct), &cbor, now(0)),
            Decoded::Readings { .. }
        ));
        // Wrong codec, unknown content type, no input: dead letters with a reason.
        for (topic, ct, payload) in [
            ("plant/m1/t", None, &cbor),
            ("plant/m1/t", Some("text/x-nope"), &json),
            ("elsewhere/t", None, &json),
        ] {
            match i.decode(topic, ct, payload, now(0)) {
                Decoded::Dead(why) => assert!(!why.is_empty()),
                other => panic!("{topic} {ct:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn sparkplug_births_data_deaths_and_data_without_a_birth() {
        let mut i = inputs();
        // DATA before any birth: a dead letter, and a rebirth request.
        let data = sparkplug(1, false, 2.0);
        match i.decode("spBv1.0/G/NDATA/E", None, &data, now(1)) {
            Decoded::Dead(why) => assert!(why.contains("no birth"), "{why}"),
            other => panic!("{other:?}"),
        }
        let sent = i.transmits();
        assert!(sent.iter().any(|p| p.topic == "spBv1.0/G/NCMD/E"), "{sent:?}");
        let birth = sparkplug(0, true, 1.0);
        let Decoded::Readings { readings, kind } =
            i.decode("spBv1.0/G/NBIRTH/E", None, &birth, now(2))
        else {
            panic!("a birth's values")
        };
        assert_eq!((kind, readings.len()), (Kind::Birth, 1));
        let Decoded::Readings { kind, .. } = i.decode("spBv1.0/G/NDATA/E", None, &data, now(3))
        else {
            panic!("named now")
        };
        assert_eq!(kind, Kind::Data);
        let mut death = Payload { timestamp: Some(9_000), ..Default::default() };
        death.metrics.push(Metric::new("bdSeq", 9_000, MetricValue::Int64(0)));
        let death: bytes::Bytes = death.encode(EncodeOptions::default()).into();
        let Decoded::Readings { readings, kind } =
            i.decode("spBv1.0/G/NDEATH/E", None, &death, now(4))
        else {
            panic!("the stale values")
        };
        assert_eq!(kind, Kind::Death);
        assert!(
            readings.live[0].readings.iter().all(|r| r.quality != shopfloor_schemas::Quality::Good)
        );
    }

    #[test]
    fn a_seq_gap_left_open_ends_in_a_rebirth_request_driven_by_the_owner() {
        let mut i = inputs();
        i.decode("spBv1.0/G/NBIRTH/E", None, &sparkplug(0, true, 1.0), now(1));
        let _ = i.transmits();
        assert_eq!(i.poll_timeout(), None);
        // seq 1 and 2 never come.
        i.decode("spBv1.0/G/NDATA/E", None, &sparkplug(3, false, 2.0), now(2));
        let due = i.poll_timeout().expect("a gap opens a deadline");
        // Not yet: nothing sent.
        i.handle_timeout(Now { instant: due - Duration::from_millis(1), unix_ms: 3 });
        assert!(i.transmits().is_empty());
        i.handle_timeout(Now { instant: due, unix_ms: 4 });
        let sent = i.transmits();
        assert!(sent.iter().any(|p| p.topic == "spBv1.0/G/NCMD/E"), "{sent:?}");
        assert_eq!(i.poll_timeout(), None);
    }

    #[test]
    fn mappings_come_first_share_like_plain_topics_and_refuse_only_what_they_cannot_read() {
        let spec: shopfloor_mapping::MappingSpec = serde_json::from_value(serde_json::json!({
            "name": "m", "topic": "plant/{machine}/json", "fields": "", "timestamp": "/ts",
        }))
        .unwrap();
        let mapping = spec.compile(std::path::Path::new(".")).unwrap();
        let mut i = Inputs::new(&[
            Input::mapped(mapping),
            Input::plain(TopicTemplate::parse("plant/{machine}/{sensor}").unwrap(), Codec::Json),
        ]);
        assert_eq!(i.filters(Some("g")), ["$share/g/plant/+/json", "$share/g/plant/+/+"]);
        let payload = bytes::Bytes::from_static(br#"{"a": 1.5, "b": "x\u0000", "ts": 1000}"#);
        let Decoded::Readings { readings, kind } =
            i.decode("plant/m1/json", None, &payload, now(0))
        else {
            panic!("readings")
        };
        assert_eq!(kind, Kind::Data);
        assert_eq!(readings.len(), 1, "the mapping read it, not the plain input");
        assert_eq!(readings.live[0].source, "m1");
        let why = readings.refused.expect("b was refused");
        assert!(why.starts_with("mapping \"m\": /b: the text contains NUL"), "{why}");
        let bad = bytes::Bytes::from_static(b"[1");
        let Decoded::Dead(why) = i.decode("plant/m1/json", None, &bad, now(0)) else {
            panic!("dead")
        };
        assert!(why.starts_with("mapping \"m\": payload: not JSON"), "{why}");
    }
}
