//! ClickHouse rows as TabSeparated, sans-IO: a [`Submission`]'s parts in,
//! request bodies out, each row remembering what it came from.
//!
//! [`Submission`]: crate::Submission

use base64::Engine as _;
use shopfloor_schemas::{Batch, Timestamp};

use super::Schema;
use crate::copy::{RowError, Stored, quality_code, stored};
use crate::http::{BirthsError, Lines, Origin};
use crate::writer::{DeadLetter, MetricInfo};

/// The first Unix ms a legacy `DateTime` cannot hold (2106-01-01: its
/// seconds are a `UInt32`).
pub const LEGACY_END_MS: u64 = 4_291_747_200_000;

/// The first Unix ms not written to a `DateTime64(3)` (2262-04-12: every
/// ClickHouse release since DateTime64 holds the years before it).
pub const CURRENT_END_MS: u64 = 9_223_372_800_000;

/// A field as TabSeparated text: `\`, tab, line breaks, NUL, backspace and
/// form feed escaped; any other byte as it is.
pub fn escape(out: &mut Vec<u8>, s: &[u8]) {
    for &b in s {
        let e = match b {
            b'\\' => b'\\',
            b'\t' => b't',
            b'\n' => b'n',
            b'\r' => b'r',
            0 => b'0',
            8 => b'b',
            12 => b'f',
            _ => {
                out.push(b);
                continue;
            }
        };
        out.push(b'\\');
        out.push(e);
    }
}

fn null(out: &mut Vec<u8>) {
    out.extend_from_slice(b"\\N");
}

fn opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => escape(out, s.as_bytes()),
        None => null(out),
    }
}

/// `YYYY-MM-DD hh:mm:ss` (UTC) of a Unix ms time, and its milliseconds.
pub fn date_time(ms: u64) -> (String, u64) {
    let (y, m, d) = Timestamp::from_unix_ms(ms).utc_date();
    let s = (ms / 1000) % 86_400;
    (format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60), ms % 1000)
}

fn float(out: &mut Vec<u8>, x: f64) {
    // ClickHouse reads nan, inf and -inf as Float64.
    if x.is_nan() {
        out.extend_from_slice(b"nan");
    } else if x.is_infinite() {
        out.extend_from_slice(if x > 0.0 { b"inf" } else { b"-inf" });
    } else {
        out.extend_from_slice(x.to_string().as_bytes());
    }
}

/// Why a reading cannot be a row of `schema`, if it cannot.
pub fn time_error(schema: Schema, ms: u64) -> Option<RowError> {
    let (end, what) = match schema {
        Schema::Legacy => (LEGACY_END_MS, "2106-01-01, where a DateTime of this server ends"),
        Schema::Current => (CURRENT_END_MS, "2262-04-12, past what is written to a DateTime64"),
    };
    (ms >= end).then(|| RowError::Refused {
        store: "ClickHouse",
        reason: format!("timestamp {ms} ms is at or after {what}"),
    })
}

/// Rows of `readings` (`source, metric, time[, ms], value, value_text,
/// quality`) for `batches`; the readings refused, by (batch, reading).
pub fn encode_readings(
    lines: &mut Lines,
    schema: Schema,
    batches: &[Batch],
    death: bool,
) -> Vec<(usize, usize, RowError)> {
    lines.write_readings(batches, death, |out, b, r| {
        let ms = r.timestamp.unix_ms();
        let value = stored(&r.value)?;
        if let Some(e) = time_error(schema, ms) {
            return Err(e);
        }
        escape(out, b.source.as_bytes());
        out.push(b'\t');
        escape(out, r.metric.as_bytes());
        out.push(b'\t');
        let (time, milli) = date_time(ms);
        out.extend_from_slice(time.as_bytes());
        match schema {
            Schema::Current => out.extend_from_slice(format!(".{milli:03}").as_bytes()),
            Schema::Legacy => out.extend_from_slice(format!("\t{milli}").as_bytes()),
        }
        out.push(b'\t');
        match &value {
            Stored::Number(x) => {
                float(out, *x);
                out.push(b'\t');
                null(out);
            }
            Stored::Integer { approx, exact } => {
                float(out, *approx);
                out.push(b'\t');
                escape(out, exact.as_bytes());
            }
            Stored::Text(t) => {
                null(out);
                out.push(b'\t');
                escape(out, t.as_bytes());
            }
        }
        out.push(b'\t');
        out.extend_from_slice(quality_code(r.quality).to_string().as_bytes());
        Ok(())
    })
}

/// Rows of `metrics` (`source, metric, datatype, unit, properties,
/// updated_ms`): the latest description of a metric wins.
pub fn encode_metrics(lines: &mut Lines, infos: &[MetricInfo], now_ms: u64) {
    for i in infos {
        let out = &mut lines.buf;
        escape(out, i.source.as_bytes());
        out.push(b'\t');
        escape(out, i.name.as_bytes());
        for v in [&i.datatype, &i.unit, &i.properties] {
            out.push(b'\t');
            opt(out, v.as_deref());
        }
        out.extend_from_slice(format!("\t{now_ms}").as_bytes());
        lines.end(Origin::Metric);
    }
}

/// Rows of `sparkplug_births` (`topic, payload` as base64, `received_ms`).
pub fn encode_births(lines: &mut Lines, births: &[(String, Vec<u8>)], now_ms: u64) {
    for (topic, payload) in births {
        let out = &mut lines.buf;
        escape(out, topic.as_bytes());
        out.push(b'\t');
        out.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(payload).as_bytes());
        out.extend_from_slice(format!("\t{now_ms}").as_bytes());
        lines.end(Origin::Birth);
    }
}

/// Rows of `dead_letters` (`received, ns, topic, payload, error`), at
/// nanosecond stamps `first_ns`, `first_ns + 1`…
pub fn encode_dead_letters(lines: &mut Lines, dead: &[DeadLetter], first_ns: u64) {
    let (received, _) = date_time(first_ns / 1_000_000);
    for (k, d) in dead.iter().enumerate() {
        let out = &mut lines.buf;
        out.extend_from_slice(received.as_bytes());
        out.extend_from_slice(format!("\t{}\t", first_ns.saturating_add(k as u64)).as_bytes());
        escape(out, d.topic.as_bytes());
        out.push(b'\t');
        escape(out, &d.payload);
        out.push(b'\t');
        escape(out, d.error.as_bytes());
        lines.end(Origin::DeadLetter);
    }
}

/// The rows of [`BIRTHS_QUERY`](super::BIRTHS_QUERY)'s TabSeparated answer
/// (`topic`, `payload` as base64, `received_ms`), edge nodes' before
/// devices', oldest first.
pub fn parse_births(body: &str) -> Result<Vec<(String, Vec<u8>)>, BirthsError> {
    let mut out = Vec::new();
    for line in body.lines().filter(|l| !l.is_empty()) {
        let mut f = line.split('\t');
        let (Some(topic), Some(payload), Some(received)) = (f.next(), f.next(), f.next()) else {
            return Err(BirthsError::Row(line.to_owned()));
        };
        let topic = unescape(topic);
        let payload = base64::engine::general_purpose::STANDARD
            .decode(payload)
            .map_err(|e| BirthsError::Payload { topic: topic.clone(), why: e.to_string() })?;
        let received: u64 = received
            .parse()
            .map_err(|source| BirthsError::Received { topic: topic.clone(), source })?;
        out.push((topic.split('/').nth(2) == Some("DBIRTH"), received, topic, payload));
    }
    out.sort_by(|a, b| (a.0, a.1, &a.2).cmp(&(b.0, b.1, &b.2)));
    Ok(out.into_iter().map(|(_, _, t, p)| (t, p)).collect())
}

/// A TabSeparated field back to its text.
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('0') => out.push('\0'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shopfloor_schemas::{Quality, Reading, Value};

    fn row(schema: Schema, r: Reading) -> String {
        let mut l = Lines::default();
        let refused = encode_readings(&mut l, schema, &[Batch::new("p1/press\t3").with(r)], false);
        assert!(refused.is_empty(), "{refused:?}");
        String::from_utf8(l.body(0..1).to_vec()).unwrap()
    }

    #[test]
    fn readings_in_both_schemas() {
        let t = Timestamp::from_unix_ms(1_765_101_723_045); // 2025-12-07 10:02:03.045
        assert_eq!(
            row(Schema::Current, Reading::new("temp", t, 21.5)),
            "p1/press\\t3\ttemp\t2025-12-07 10:02:03.045\t21.5\t\\N\t0\n"
        );
        assert_eq!(
            row(Schema::Legacy, Reading::new("temp", t, 21.5)),
            "p1/press\\t3\ttemp\t2025-12-07 10:02:03\t45\t21.5\t\\N\t0\n"
        );
        assert_eq!(
            row(Schema::Current, Reading::new("mode", t, "a\\b\nc").with_quality(Quality::Bad)),
            "p1/press\\t3\tmode\t2025-12-07 10:02:03.045\t\\N\ta\\\\b\\nc\t2\n"
        );
        assert_eq!(
            row(Schema::Current, Reading::new("n", t, Value::U64(u64::MAX))),
            "p1/press\\t3\tn\t2025-12-07 10:02:03.045\t18446744073709552000\t18446744073709551615\t0\n"
        );
        assert_eq!(
            row(Schema::Legacy, Reading::new("x", t, f64::NEG_INFINITY)),
            "p1/press\\t3\tx\t2025-12-07 10:02:03\t45\t-inf\t\\N\t0\n"
        );
    }

    #[test]
    fn times_past_the_schema_are_refused() {
        let b = Batch::new("s")
            .with(Reading::new("a", Timestamp::from_unix_ms(LEGACY_END_MS - 1), 1.0))
            .with(Reading::new("b", Timestamp::from_unix_ms(LEGACY_END_MS), 1.0))
            .with(Reading::new("c", Timestamp::from_unix_ms(CURRENT_END_MS), 1.0));
        let mut l = Lines::default();
        let refused: Vec<usize> =
            encode_readings(&mut l, Schema::Legacy, std::slice::from_ref(&b), false)
                .iter()
                .map(|r| r.1)
                .collect();
        assert_eq!(refused, [1, 2]);
        let mut l = Lines::default();
        let refused: Vec<usize> =
            encode_readings(&mut l, Schema::Current, &[b], false).iter().map(|r| r.1).collect();
        assert_eq!(refused, [2]);
    }

    #[test]
    fn births_round_trip_and_order() {
        let mut l = Lines::default();
        encode_births(
            &mut l,
            &[
                ("spBv1.0/G/DBIRTH/E/d".into(), vec![0, 1, 2]),
                ("spBv1.0/G/NBIRTH/E".into(), vec![9]),
            ],
            5,
        );
        let body = String::from_utf8(l.body(0..2).to_vec()).unwrap();
        let births = parse_births(&body).unwrap();
        assert_eq!(
            births,
            [
                ("spBv1.0/G/NBIRTH/E".to_owned(), vec![9]),
                ("spBv1.0/G/DBIRTH/E/d".to_owned(), vec![0, 1, 2])
            ]
        );
        assert!(parse_births("only one field\n").is_err());
    }

    proptest::proptest! {
        /// Escaping is undone by unescaping, and never leaves a raw tab or
        /// line break.
        #[test]
        fn escape_round_trips(s in "[\\s\\S]{0,40}") {
            let mut out = Vec::new();
            escape(&mut out, s.as_bytes());
            proptest::prop_assert!(!out.contains(&b'\t') && !out.contains(&b'\n'));
            proptest::prop_assert_eq!(unescape(std::str::from_utf8(&out).unwrap()), s);
        }
    }
}
