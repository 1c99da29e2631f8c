//! A hostile publisher's messages: bad input of every kind a pipeline
//! meets (random bytes, truncated protobuf, NUL in names and strings,
//! absurd timestamps, huge metric counts, unknown aliases, wrong
//! datatypes), mixed with good readings, on Sparkplug B and plain
//! shopfloor topics.
//!
//! Sans-IO and deterministic (a seeded generator): [`Hostile::next`] gives
//! the next message and what a correct ingest makes of it, so a test can
//! count exactly. The Sparkplug payloads are encoded here, by hand, from
//! the official `sparkplug_b.proto` field numbers: an implementation
//! independent of the crate under test.
//!
//! One good edge node, `{group}/good`, births once (metrics `m0`…`m9`,
//! Double, aliases 1–10, and `label`, String, alias 11) and then sends
//! DATA; bad Sparkplug messages either go to that node with a payload the
//! ingest must refuse, or come from nodes that never birthed. Plain
//! messages use `shopfloor/hostile/{area}/{machine}/{sensor}`.

/// A message to publish, and what becomes of it.
#[derive(Clone, Debug)]
pub struct HostileMessage {
    /// The MQTT topic.
    pub topic: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// The readings it carries that a correct ingest stores: (source,
    /// metric, Unix ms). Empty for a bad message.
    pub good: Vec<(String, String, u64)>,
    /// The kind of bad input; `None`: a good message.
    pub bad: Option<BadKind>,
}

/// The kinds of bad input [`Hostile`] sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BadKind {
    /// Random bytes, on a Sparkplug DATA topic of a node never born.
    RandomSparkplug,
    /// Random bytes on a plain topic.
    RandomPlain,
    /// A good node's DATA cut short mid-field.
    TruncatedProtobuf,
    /// A birth of a new node whose only metric's name holds a NUL.
    NulInName,
    /// A good node's String metric with a NUL in its value.
    NulInString,
    /// A good node's DATA sampled in the year 294 277.
    AbsurdTimestamp,
    /// A plain reading in the year 294 277.
    AbsurdTimestampPlain,
    /// A plain reading whose metric name holds a NUL.
    NulInNamePlain,
    /// A good node's DATA with more metrics than the ingest takes.
    HugeMetricCount,
    /// A good node's DATA naming an alias no birth declared.
    UnknownAlias,
    /// A good node's DATA with a string where the birth said Double.
    WrongDatatype,
}

impl BadKind {
    const ALL: [Self; 11] = [
        Self::RandomSparkplug,
        Self::RandomPlain,
        Self::TruncatedProtobuf,
        Self::NulInName,
        Self::NulInString,
        Self::AbsurdTimestamp,
        Self::AbsurdTimestampPlain,
        Self::NulInNamePlain,
        Self::HugeMetricCount,
        Self::UnknownAlias,
        Self::WrongDatatype,
    ];
}

/// The year 294 277, in Unix ms: past what PostgreSQL's `timestamptz` holds.
pub const ABSURD_MS: u64 = 9_224_318_100_000_000;

/// The generator. See the [module](self) documentation.
#[derive(Debug)]
pub struct Hostile {
    group: String,
    rng: u64,
    seq: u64,
    born: bool,
    sent: u64,
    /// The last time given to a good reading (each gets a later one).
    last_ms: u64,
    /// Metrics in a [`BadKind::HugeMetricCount`] message.
    pub huge_metrics: usize,
    /// One message in this many is bad (2: half of them).
    pub bad_every: u64,
}

impl Hostile {
    /// Messages for Sparkplug group `group`, from `seed`; half of them bad,
    /// huge messages of 20 000 metrics.
    pub fn new(group: impl Into<String>, seed: u64) -> Self {
        Self {
            group: group.into(),
            rng: seed | 1,
            seq: 0,
            born: false,
            sent: 0,
            last_ms: 0,
            huge_metrics: 20_000,
            bad_every: 2,
        }
    }

    fn rand(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn next_seq(&mut self) -> u64 {
        let s = self.seq;
        self.seq = (self.seq + 1) % 256;
        s
    }

    /// The next message, sampled at `now_ms` (the good node's birth comes
    /// first).
    pub fn next(&mut self, now_ms: u64) -> HostileMessage {
        let k = self.sent;
        self.sent += 1;
        let node = format!("spBv1.0/{}/NDATA/good", self.group);
        if !self.born {
            self.born = true;
            self.last_ms = now_ms;
            let mut metrics = vec![metric(Some("bdSeq"), None, None, 4, Val::Long(0))];
            for i in 0..10 {
                metrics.push(metric(
                    Some(&format!("m{i}")),
                    Some(i + 1),
                    Some(now_ms),
                    10,
                    Val::Double(i as f64),
                ));
            }
            metrics.push(metric(Some("label"), Some(11), Some(now_ms), 12, Val::Str(b"ok")));
            let seq = self.next_seq();
            let source = format!("{}/good", self.group);
            let mut good: Vec<(String, String, u64)> =
                (0..10).map(|i| (source.clone(), format!("m{i}"), now_ms)).collect();
            good.push((source, "label".into(), now_ms));
            return HostileMessage {
                topic: format!("spBv1.0/{}/NBIRTH/good", self.group),
                payload: payload(now_ms, Some(seq), &metrics),
                good,
                bad: None,
            };
        }
        if !k.is_multiple_of(self.bad_every.max(1)) {
            return self.good(k, now_ms);
        }
        let kind = BadKind::ALL[(self.rand() % BadKind::ALL.len() as u64) as usize];
        let (topic, payload) = match kind {
            BadKind::RandomSparkplug => {
                (format!("spBv1.0/{}/NDATA/stranger-{k}", self.group), self.random_bytes())
            }
            BadKind::RandomPlain => (format!("shopfloor/hostile/a/m{}/junk", k % 7), self.random_bytes()),
            BadKind::TruncatedProtobuf => {
                // No seq, so the metric is last: cut inside its double, and
                // its length runs past the end.
                let p = payload(now_ms, None, &[metric(None, Some(1), Some(now_ms), 0, Val::Double(1.5))]);
                (node, p[..p.len() - 4].to_vec())
            }
            BadKind::NulInName => {
                let metrics = [
                    metric(Some("bdSeq"), None, None, 4, Val::Long(0)),
                    metric(Some("bad\0name"), Some(1), Some(now_ms), 10, Val::Double(1.0)),
                ];
                (format!("spBv1.0/{}/NBIRTH/nul-{k}", self.group), payload(now_ms, Some(0), &metrics))
            }
            BadKind::NulInString => {
                let seq = self.next_seq();
                let m = [metric(None, Some(11), Some(now_ms), 0, Val::Str(b"a\0b"))];
                (node, payload(now_ms, Some(seq), &m))
            }
            BadKind::AbsurdTimestamp => {
                let seq = self.next_seq();
                let m = [metric(None, Some(1), Some(ABSURD_MS), 0, Val::Double(1.0))];
                (node, payload(now_ms, Some(seq), &m))
            }
            BadKind::AbsurdTimestampPlain => (
                format!("shopfloor/hostile/a/m{}/far", k % 7),
                format!(r#"{{"readings": [{{"metric": "far", "timestamp": {ABSURD_MS}, "value": 1.0}}]}}"#)
                    .into_bytes(),
            ),
            BadKind::NulInNamePlain => (
                format!("shopfloor/hostile/a/m{}/nul", k % 7),
                format!(r#"{{"readings": [{{"metric": "a\u0000b", "timestamp": {now_ms}, "value": 1.0}}]}}"#)
                    .into_bytes(),
            ),
            BadKind::HugeMetricCount => {
                let seq = self.next_seq();
                let m: Vec<Vec<u8>> = (0..self.huge_metrics)
                    .map(|i| metric(None, Some(1 + (i as u64 % 10)), Some(now_ms + i as u64), 0, Val::Double(0.0)))
                    .collect();
                (node, payload(now_ms, Some(seq), &m))
            }
            BadKind::UnknownAlias => {
                let seq = self.next_seq();
                let m = [metric(None, Some(999), Some(now_ms), 0, Val::Double(1.0))];
                (node, payload(now_ms, Some(seq), &m))
            }
            BadKind::WrongDatatype => {
                let seq = self.next_seq();
                let m = [metric(None, Some(1), Some(now_ms), 0, Val::Str(b"not a double"))];
                (node, payload(now_ms, Some(seq), &m))
            }
        };
        HostileMessage { topic, payload, good: Vec::new(), bad: Some(kind) }
    }

    /// A good message: every other one Sparkplug DATA of the good node (two
    /// metrics), or a plain JSON reading.
    fn good(&mut self, k: u64, now_ms: u64) -> HostileMessage {
        // Every good reading a time of its own: unique (metric, time).
        let t = now_ms.max(self.last_ms + 1);
        self.last_ms = t;
        if k % 4 == 1 {
            let seq = self.next_seq();
            let (a, b) = (k % 10, (k + 3) % 10);
            let m = [
                metric(None, Some(a + 1), Some(t), 0, Val::Double(k as f64)),
                metric(None, Some(b + 1), Some(t), 0, Val::Double(-(k as f64))),
            ];
            let source = format!("{}/good", self.group);
            HostileMessage {
                topic: format!("spBv1.0/{}/NDATA/good", self.group),
                payload: payload(t, Some(seq), &m),
                good: vec![(source.clone(), format!("m{a}"), t), (source, format!("m{b}"), t)],
                bad: None,
            }
        } else {
            let machine = format!("m{}", k % 7);
            let sensor = format!("s{k}");
            HostileMessage {
                topic: format!("shopfloor/hostile/a/{machine}/{sensor}"),
                payload: format!(
                    r#"{{"readings": [{{"metric": "{sensor}", "timestamp": {t}, "value": {k}.5}}]}}"#
                )
                .into_bytes(),
                good: vec![(format!("hostile/a/{machine}"), sensor, t)],
                bad: None,
            }
        }
    }

    fn random_bytes(&mut self) -> Vec<u8> {
        let n = 1 + (self.rand() % 300) as usize;
        (0..n).map(|_| self.rand() as u8).collect()
    }
}

/// A metric's value, by its `sparkplug_b.proto` field.
enum Val<'a> {
    /// `long_value` (11).
    Long(u64),
    /// `double_value` (13).
    Double(f64),
    /// `string_value` (15), raw bytes (a NUL is allowed on the wire).
    Str(&'a [u8]),
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn bytes_field(out: &mut Vec<u8>, field: u32, data: &[u8]) {
    key(out, field, 2);
    varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// `Payload.Metric`: name (1), alias (2), timestamp (3), datatype (4, 0:
/// left out, as DATA does), and the value.
fn metric(
    name: Option<&str>,
    alias: Option<u64>,
    ts: Option<u64>,
    datatype: u32,
    value: Val<'_>,
) -> Vec<u8> {
    let mut m = Vec::new();
    if let Some(n) = name {
        bytes_field(&mut m, 1, n.as_bytes());
    }
    if let Some(a) = alias {
        key(&mut m, 2, 0);
        varint(&mut m, a);
    }
    if let Some(t) = ts {
        key(&mut m, 3, 0);
        varint(&mut m, t);
    }
    if datatype != 0 {
        key(&mut m, 4, 0);
        varint(&mut m, u64::from(datatype));
    }
    match value {
        Val::Long(v) => {
            key(&mut m, 11, 0);
            varint(&mut m, v);
        }
        Val::Double(v) => {
            key(&mut m, 13, 1);
            m.extend_from_slice(&v.to_le_bytes());
        }
        Val::Str(s) => bytes_field(&mut m, 15, s),
    }
    m
}

/// `Payload`: timestamp (1), metrics (2), seq (3).
fn payload(ts: u64, seq: Option<u64>, metrics: &[Vec<u8>]) -> Vec<u8> {
    let mut p = Vec::new();
    key(&mut p, 1, 0);
    varint(&mut p, ts);
    for m in metrics {
        bytes_field(&mut p, 2, m);
    }
    if let Some(s) = seq {
        key(&mut p, 3, 0);
        varint(&mut p, s);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_is_deterministic_and_holds_every_kind() {
        let (mut a, mut b) = (Hostile::new("H", 7), Hostile::new("H", 7));
        let mut kinds = std::collections::HashSet::new();
        for _ in 0..2000 {
            let (x, y) = (a.next(1_800_000_000_000), b.next(1_800_000_000_000));
            assert_eq!((&x.topic, &x.payload), (&y.topic, &y.payload));
            assert_eq!(x.bad.is_some(), x.good.is_empty());
            kinds.extend(x.bad);
        }
        assert_eq!(kinds.len(), BadKind::ALL.len());
    }

    #[test]
    fn varints_are_protobufs() {
        let mut v = Vec::new();
        varint(&mut v, 300);
        assert_eq!(v, [0xac, 0x02]);
    }
}
