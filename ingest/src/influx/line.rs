//! InfluxDB line protocol, sans-IO: a [`Submission`](crate::Submission) in, request bodies
//! out, each line remembering what it came from so that a line the server
//! refuses can be dead-lettered alone.
//!
//! The schema (one measurement of readings, tags for what identifies a
//! series, fields for what varies):
//!
//! ```text
//! readings,source=plant1/press-3,metric=temp value=21.5,quality=0i 1765100000123
//! readings,source=plant1/press-3,metric=mode value_text="auto",quality=0i 1765100000123
//! metrics,source=plant1/press-3,metric=temp datatype="Double",unit="°C" 0
//! sparkplug_births,topic=spBv1.0/G/NBIRTH/E,part=0 payload="CAES…",parts=1i,received=1765100000000i 0
//! dead_letters topic="shopfloor/x",payload="eyJ…",error="…" 1765100000123000001
//! ```
//!
//! `value` is always a float (numbers, booleans as 0 and 1, integers
//! beyond 2^53 as the nearest double with the exact decimal in
//! `value_text`), so a series never meets InfluxDB's field type conflict;
//! `quality` is `shopfloor.samples`' code (0 good, 1 uncertain, 2 bad,
//! 3 stale).

use base64::Engine as _;
use shopfloor_schemas::{Batch, Reading};

use crate::copy::{RowError, Stored, quality_code, stored};
pub use crate::http::{Lines, Origin};
use crate::writer::{DeadLetter, MetricInfo};

/// Longest string field sent: InfluxDB 1.8 and later refuse longer ones.
pub const MAX_STRING: usize = 64 * 1024;

/// The latest Unix ms InfluxDB's nanosecond timestamps hold
/// (2262-04-11T23:47:16.854Z).
pub const MAX_MS: u64 = 9_223_372_036_854;

/// Raw payload bytes a dead letter keeps: its base64 fits [`MAX_STRING`].
pub const DEAD_LETTER_PAYLOAD: usize = MAX_STRING / 4 * 3;

/// Why a name cannot be a tag value, if it cannot.
pub fn tag_error(what: &'static str, name: &str) -> Option<RowError> {
    let refuse = |reason: &str| {
        Some(RowError::Refused {
            store: "InfluxDB",
            reason: format!("the {what} name {reason}, which a line protocol tag cannot hold"),
        })
    };
    if name.is_empty() {
        return refuse("is empty");
    }
    if let Some(at) = name.find(['\n', '\r', '\0']) {
        return refuse(&format!("holds a line break or NUL at byte {at}"));
    }
    // A tag's last backslash would escape the separator after it.
    if name.ends_with('\\') {
        return refuse("ends with a backslash");
    }
    None
}

/// Why a reading cannot be a line, if it cannot.
pub fn reading_error(source: &str, r: &Reading) -> Option<RowError> {
    if let Some(e) = tag_error("source", source).or_else(|| tag_error("metric", &r.metric)) {
        return Some(e);
    }
    let ms = r.timestamp.unix_ms();
    if ms > MAX_MS {
        return Some(RowError::Refused {
            store: "InfluxDB",
            reason: format!("timestamp {ms} ms is past 2262-04-11, the last InfluxDB can store"),
        });
    }
    match stored(&r.value) {
        Err(e) => Some(e),
        Ok(Stored::Number(x)) if !x.is_finite() => Some(RowError::Refused {
            store: "InfluxDB",
            reason: format!("{x} is not a number InfluxDB can store (NaN and infinities are not)"),
        }),
        Ok(Stored::Text(t)) if t.len() > MAX_STRING => Some(RowError::Refused {
            store: "InfluxDB",
            reason: format!(
                "a text of {} bytes, more than the {MAX_STRING} a field holds",
                t.len()
            ),
        }),
        Ok(_) => None,
    }
}

fn escape_measurement(out: &mut Vec<u8>, s: &str) {
    for b in s.bytes() {
        if matches!(b, b',' | b' ') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

fn escape_tag(out: &mut Vec<u8>, s: &str) {
    for b in s.bytes() {
        if matches!(b, b',' | b'=' | b' ') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

/// A string field's value, quoted, cut to [`MAX_STRING`] bytes (at a
/// character boundary).
fn string_field(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(MAX_STRING);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.push(b'"');
    for b in s[..end].bytes() {
        if matches!(b, b'"' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

fn float(out: &mut Vec<u8>, x: f64) {
    // Display never uses an exponent and always parses back exactly; a
    // float field needs no suffix (`1` is 1.0).
    out.extend_from_slice(x.to_string().as_bytes());
}

fn integer(out: &mut Vec<u8>, x: i64) {
    out.extend_from_slice(x.to_string().as_bytes());
    out.push(b'i');
}

/// Encodes `measurement`'s readings of `batches` (Unix ms times), skipping
/// and returning those [`reading_error`] refuses.
pub fn encode_readings(
    lines: &mut Lines,
    measurement: &str,
    batches: &[Batch],
    death: bool,
) -> Vec<(usize, usize, RowError)> {
    lines.write_readings(batches, death, |out, b, r| {
        if let Some(e) = reading_error(&b.source, r) {
            return Err(e);
        }
        // Checked above.
        let value = stored(&r.value)?;
        escape_measurement(out, measurement);
        out.extend_from_slice(b",source=");
        escape_tag(out, &b.source);
        out.extend_from_slice(b",metric=");
        escape_tag(out, &r.metric);
        out.push(b' ');
        match &value {
            Stored::Number(x) => {
                out.extend_from_slice(b"value=");
                float(out, *x);
            }
            Stored::Integer { approx, exact } => {
                out.extend_from_slice(b"value=");
                float(out, *approx);
                out.extend_from_slice(b",value_text=");
                string_field(out, exact);
            }
            Stored::Text(t) => {
                out.extend_from_slice(b"value_text=");
                string_field(out, t);
            }
        }
        out.extend_from_slice(b",quality=");
        integer(out, quality_code(r.quality).into());
        out.push(b' ');
        out.extend_from_slice(r.timestamp.unix_ms().to_string().as_bytes());
        Ok(())
    })
}

/// Encodes catalogue entries (time 0: each (source, metric) is one point,
/// whose fields a later description updates, the others kept). Entries
/// with nothing to say, or names no tag holds, are left out.
pub fn encode_metrics(lines: &mut Lines, infos: &[MetricInfo]) {
    for i in infos {
        let fields = [("datatype", &i.datatype), ("unit", &i.unit), ("properties", &i.properties)];
        if fields.iter().all(|(_, v)| v.is_none())
            || tag_error("source", &i.source).is_some()
            || tag_error("metric", &i.name).is_some()
        {
            continue;
        }
        let out = &mut lines.buf;
        out.extend_from_slice(b"metrics,source=");
        escape_tag(out, &i.source);
        out.extend_from_slice(b",metric=");
        escape_tag(out, &i.name);
        let mut sep = b' ';
        for (key, v) in fields {
            if let Some(v) = v {
                out.push(sep);
                out.extend_from_slice(key.as_bytes());
                out.push(b'=');
                string_field(out, v);
                sep = b',';
            }
        }
        out.extend_from_slice(b" 0");
        lines.end(Origin::Metric);
    }
}

/// Encodes Sparkplug births, each the latest of its topic: time 0, the
/// base64 payload in parts of at most [`MAX_STRING`], `received` the
/// Unix ms they came at.
pub fn encode_births(lines: &mut Lines, births: &[(String, Vec<u8>)], received_ms: u64) {
    for (topic, payload) in births {
        if tag_error("topic", topic).is_some() {
            continue;
        }
        let b64 = base64::engine::general_purpose::STANDARD.encode(payload);
        // Base64 is ASCII: any cut is a character boundary.
        let parts: Vec<&str> = if b64.is_empty() {
            vec![""]
        } else {
            b64.as_bytes()
                .chunks(MAX_STRING)
                .map(|c| std::str::from_utf8(c).unwrap_or(""))
                .collect()
        };
        for (k, part) in parts.iter().enumerate() {
            let out = &mut lines.buf;
            out.extend_from_slice(b"sparkplug_births,topic=");
            escape_tag(out, topic);
            out.extend_from_slice(format!(",part={k} payload=").as_bytes());
            string_field(out, part);
            out.extend_from_slice(b",parts=");
            integer(out, parts.len() as i64);
            out.extend_from_slice(b",received=");
            integer(out, i64::try_from(received_ms).unwrap_or(i64::MAX));
            out.extend_from_slice(b" 0");
            lines.end(Origin::Birth);
        }
    }
}

/// Encodes dead letters at nanosecond times `first_ns`, `first_ns + 1`…
/// (distinct, so none overwrites another); the payload as base64, at most
/// [`DEAD_LETTER_PAYLOAD`] bytes of it.
pub fn encode_dead_letters(lines: &mut Lines, dead: &[DeadLetter], first_ns: u64) {
    for (k, d) in dead.iter().enumerate() {
        let keep = d.payload.len().min(DEAD_LETTER_PAYLOAD);
        let mut error = d.error.clone();
        if keep < d.payload.len() {
            error.push_str(&format!(
                " (InfluxDB keeps the first {keep} of its {} bytes)",
                d.payload.len()
            ));
        }
        let out = &mut lines.buf;
        out.extend_from_slice(b"dead_letters topic=");
        string_field(out, &d.topic);
        out.extend_from_slice(b",payload=");
        string_field(out, &base64::engine::general_purpose::STANDARD.encode(&d.payload[..keep]));
        out.extend_from_slice(b",error=");
        string_field(out, &error);
        out.push(b' ');
        out.extend_from_slice(first_ns.saturating_add(k as u64).to_string().as_bytes());
        lines.end(Origin::DeadLetter);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shopfloor_schemas::{Quality, Timestamp, Value};

    fn line_of(source: &str, r: Reading) -> String {
        let mut l = Lines::default();
        let refused = encode_readings(&mut l, "readings", &[Batch::new(source).with(r)], false);
        assert!(refused.is_empty(), "{refused:?}");
        String::from_utf8(l.body(0..1).to_vec()).unwrap()
    }

    #[test]
    fn values_become_fields_of_one_type_each() {
        let t = Timestamp::from_unix_ms(1_765_100_000_123);
        assert_eq!(
            line_of("plant1/press 3", Reading::new("temp,C", t, 21.5)),
            "readings,source=plant1/press\\ 3,metric=temp\\,C value=21.5,quality=0i 1765100000123\n"
        );
        assert_eq!(
            line_of("s", Reading::new("on", t, true).with_quality(Quality::Stale)),
            "readings,source=s,metric=on value=1,quality=3i 1765100000123\n"
        );
        assert_eq!(
            line_of("s", Reading::new("mode", t, "a \"b\" \\c\nd")),
            "readings,source=s,metric=mode value_text=\"a \\\"b\\\" \\\\c\nd\",quality=0i 1765100000123\n"
        );
        assert_eq!(
            line_of("s", Reading::new("n", t, Value::I64(i64::MAX))),
            "readings,source=s,metric=n value=9223372036854776000,value_text=\"9223372036854775807\",quality=0i 1765100000123\n"
        );
        assert_eq!(
            line_of("a=b", Reading::new("x", t, Value::U64(7))),
            "readings,source=a\\=b,metric=x value=7,quality=0i 1765100000123\n"
        );
    }

    #[test]
    fn what_influxdb_cannot_hold_is_refused_alone() {
        let t = Timestamp::from_unix_ms(1);
        let b = Batch::new("s")
            .with(Reading::new("ok", t, 1.0))
            .with(Reading::new("nan", t, f64::NAN))
            .with(Reading::new("inf", t, f64::INFINITY))
            .with(Reading::new("late", Timestamp::from_unix_ms(MAX_MS + 1), 1.0))
            .with(Reading::new("trail\\", t, 1.0))
            .with(Reading::new("", t, 1.0))
            .with(Reading::new("two\nlines", t, 1.0))
            .with(Reading::new("long", t, "x".repeat(MAX_STRING + 1)))
            .with(Reading::new("edge", Timestamp::from_unix_ms(MAX_MS), "x".repeat(MAX_STRING)));
        let mut l = Lines::default();
        let refused = encode_readings(&mut l, "readings", &[b], false);
        let at: Vec<usize> = refused.iter().map(|r| r.1).collect();
        assert_eq!(at, [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(l.len(), 2);
        assert_eq!(l.origin(1), Origin::Reading { batch: 0, reading: 8, death: false });
        assert!(refused[0].2.to_string().contains("NaN"), "{}", refused[0].2);
    }

    #[test]
    fn bodies_slice_by_line() {
        let t = Timestamp::from_unix_ms(5);
        let b = Batch::new("s").with(Reading::new("a", t, 1.0)).with(Reading::new("b", t, 2.0));
        let mut l = Lines::default();
        encode_readings(&mut l, "m", &[b], true);
        encode_dead_letters(
            &mut l,
            &[DeadLetter { topic: "t \"q\"".into(), payload: vec![0xff, 0], error: "bad".into() }],
            1_000_000_007,
        );
        assert_eq!(l.len(), 3);
        assert_eq!(l.body(1..2), b"m,source=s,metric=b value=2,quality=0i 5\n");
        assert_eq!(
            l.body(2..3),
            b"dead_letters topic=\"t \\\"q\\\"\",payload=\"/wA=\",error=\"bad\" 1000000007\n"
        );
        assert_eq!(l.body(0..3).len(), l.body(0..1).len() + l.body(1..3).len());
        assert_eq!(l.body(1..1), b"");
        assert_eq!(l.readings(), 2);
    }

    #[test]
    fn births_split_into_parts_and_metrics_say_only_what_they_know() {
        let mut l = Lines::default();
        let big = vec![7_u8; MAX_STRING]; // base64: 4/3 of it, two parts
        encode_births(&mut l, &[("spBv1.0/G/NBIRTH/E".into(), big)], 42);
        assert_eq!(l.len(), 2);
        let first = String::from_utf8(l.body(0..1).to_vec()).unwrap();
        assert!(first.starts_with("sparkplug_births,topic=spBv1.0/G/NBIRTH/E,part=0 payload=\""));
        assert!(first.ends_with("\",parts=2i,received=42i 0\n"), "{first}");
        let mut l = Lines::default();
        encode_metrics(
            &mut l,
            &[
                MetricInfo {
                    source: "s".into(),
                    name: "t".into(),
                    unit: Some("°C".into()),
                    ..Default::default()
                },
                MetricInfo { source: "s".into(), name: "none".into(), ..Default::default() },
            ],
        );
        assert_eq!(l.body(0..l.len()), "metrics,source=s,metric=t unit=\"°C\" 0\n".as_bytes());
    }

    #[test]
    fn a_long_dead_letter_keeps_what_a_field_holds() {
        let mut l = Lines::default();
        let d = DeadLetter { topic: "t".into(), payload: vec![1; 200_000], error: "e".into() };
        encode_dead_letters(&mut l, &[d], 1);
        let line = String::from_utf8(l.body(0..1).to_vec()).unwrap();
        let payload = line.split("payload=\"").nth(1).unwrap().split('"').next().unwrap();
        assert!(payload.len() <= MAX_STRING);
        assert!(
            line.contains("keeps the first 49152 of its 200000 bytes"),
            "{}",
            &line[line.len() - 100..]
        );
    }

    proptest::proptest! {
        /// Any name and text either is refused with a reason or makes
        /// exactly one line, with no unescaped line break outside a string.
        #[test]
        fn any_reading_is_one_line_or_refused(source in "[\\s\\S]{0,12}", metric in "[\\s\\S]{0,12}", text in "[\\s\\S]{0,40}", ms in 0_u64..u64::MAX) {
            let b = Batch::new(source).with(Reading::new(metric, Timestamp::from_unix_ms(ms), text));
            let mut l = Lines::default();
            let refused = encode_readings(&mut l, "readings", std::slice::from_ref(&b), false);
            proptest::prop_assert_eq!(refused.len() + l.len(), 1);
            if l.len() == 1 {
                let body = l.body(0..1);
                let head_end = body.iter().position(|&c| c == b'"').unwrap();
                proptest::prop_assert!(!body[..head_end].contains(&b'\n'));
                proptest::prop_assert!(body.ends_with(b"\n"));
            }
        }
    }
}
