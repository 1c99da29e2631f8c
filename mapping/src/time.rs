//! Timestamps as devices send them.

use std::fmt;

use jiff::tz::TimeZone;
use shopfloor_schemas::Timestamp;

use crate::node::Node;

/// How a timestamp field is written.
#[derive(Clone, Debug)]
pub(crate) enum TimeFormat {
    /// Text in RFC 3339, a number in Unix milliseconds.
    Auto,
    /// RFC 3339 / ISO 8601 with an offset: `2026-12-07T10:00:00Z`.
    Rfc3339,
    /// A Unix time in this many parts of a second (1, 1e3, 1e6, 1e9); a
    /// number, or text holding one; fractions allowed.
    Unix(u32),
    /// A strftime-like format (`%d.%m.%Y %H:%M:%S`), read in `zone`
    /// unless the format has an offset (`%z`).
    Pattern { format: String, zone: TimeZone },
}

impl TimeFormat {
    /// From its name in configuration: `auto`, `rfc3339`, `unix_s`,
    /// `unix_ms`, `unix_us`, `unix_ns`, or a format with `%`; `zone`: an
    /// IANA time zone name for a format without an offset (default UTC).
    pub(crate) fn parse(name: Option<&str>, zone: Option<&str>) -> Result<Self, String> {
        let format = match name.unwrap_or("auto") {
            "auto" => Self::Auto,
            "rfc3339" | "iso8601" => Self::Rfc3339,
            "unix_s" | "unix" => Self::Unix(1),
            "unix_ms" => Self::Unix(1_000),
            "unix_us" => Self::Unix(1_000_000),
            "unix_ns" => Self::Unix(1_000_000_000),
            f if f.contains('%') => {
                let zone = match zone {
                    None | Some("UTC") => TimeZone::UTC,
                    Some(z) => TimeZone::get(z).map_err(|e| {
                        format!("time_zone = {z:?}: {e} (an IANA name such as \"Europe/Berlin\", from the system's tz database)")
                    })?,
                };
                return Ok(Self::Pattern { format: f.to_owned(), zone });
            }
            other => {
                return Err(format!(
                    "time_format = {other:?}: use auto, rfc3339, unix_s, unix_ms, unix_us, unix_ns, or a strftime-like format such as \"%d.%m.%Y %H:%M:%S\""
                ));
            }
        };
        if zone.is_some() {
            return Err(
                "time_zone applies only to a strftime-like time_format (one with %): the other formats carry their offset or are UTC".into(),
            );
        }
        Ok(format)
    }

    /// The time in `node`.
    pub(crate) fn read(&self, node: &Node<'_>) -> Result<Timestamp, String> {
        let ms = match (self, node) {
            (Self::Auto, Node::I64(_) | Node::U64(_) | Node::F64(_)) => unix(node, 1_000)?,
            (Self::Auto | Self::Rfc3339, Node::Str(s)) => s
                .trim()
                .parse::<jiff::Timestamp>()
                .map_err(|e| format!("not an RFC 3339 time with an offset: {e}"))?
                .as_millisecond(),
            (Self::Unix(per_s), _) => unix(node, *per_s)?,
            (Self::Pattern { format, zone }, Node::Str(s)) => {
                let parsed = jiff::fmt::strtime::parse(format, s.trim())
                    .map_err(|e| format!("does not match time_format {format:?}: {e}"))?;
                let t = if parsed.offset().is_some() {
                    parsed.to_timestamp()
                } else {
                    parsed.to_datetime().and_then(|dt| zone.to_timestamp(dt))
                };
                t.map_err(|e| format!("not a time in format {format:?}: {e}"))?.as_millisecond()
            }
            _ => return Err(format!("expected a time ({self})")),
        };
        u64::try_from(ms).map(Timestamp::from_unix_ms).map_err(|_| "a time before 1970".to_owned())
    }
}

impl fmt::Display for TimeFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("RFC 3339 text or Unix milliseconds"),
            Self::Rfc3339 => f.write_str("RFC 3339 text"),
            Self::Unix(1) => f.write_str("Unix seconds"),
            Self::Unix(1_000) => f.write_str("Unix milliseconds"),
            Self::Unix(1_000_000) => f.write_str("Unix microseconds"),
            Self::Unix(_) => f.write_str("Unix nanoseconds"),
            Self::Pattern { format, .. } => write!(f, "text in the format {format:?}"),
        }
    }
}

/// Unix time in `per_s` parts of a second, to milliseconds.
fn unix(node: &Node<'_>, per_s: u32) -> Result<i64, String> {
    let per_ms = f64::from(per_s) / 1_000.0;
    let ms = match node {
        Node::I64(v) if per_s >= 1_000 => return Ok(v / i64::from(per_s / 1_000)),
        Node::U64(v) if per_s >= 1_000 => {
            return i64::try_from(v / u64::from(per_s / 1_000)).map_err(|_| "out of range".into());
        }
        Node::I64(v) => *v as f64 / per_ms,
        Node::U64(v) => *v as f64 / per_ms,
        Node::F64(v) => v / per_ms,
        Node::Str(s) => match crate::node::scalar(s) {
            n @ (Node::I64(_) | Node::U64(_) | Node::F64(_)) => return unix(&n, per_s),
            _ => return Err(format!("expected a number of {}", TimeFormat::Unix(per_s))),
        },
        _ => return Err(format!("expected {}", TimeFormat::Unix(per_s))),
    };
    // About ±292 million years either way.
    if !ms.is_finite() || ms.abs() >= 9.2e18 {
        return Err("out of range".into());
    }
    Ok(ms.floor() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(format: &str, zone: Option<&str>, node: Node<'_>) -> Result<u64, String> {
        TimeFormat::parse(Some(format), zone)?.read(&node).map(Timestamp::unix_ms)
    }

    #[test]
    fn every_format_reads_the_same_instant() {
        let ms = 1_796_637_600_250; // 2026-12-07T10:00:00.250Z
        assert_eq!(read("auto", None, Node::Str("2026-12-07T10:00:00.25Z")), Ok(ms));
        assert_eq!(read("rfc3339", None, Node::Str("2026-12-07T11:00:00.25+01:00")), Ok(ms));
        assert_eq!(read("auto", None, Node::I64(ms as i64)), Ok(ms));
        assert_eq!(read("unix_s", None, Node::F64(1_796_637_600.25)), Ok(ms));
        assert_eq!(read("unix_s", None, Node::Str("1796637600.25")), Ok(ms));
        assert_eq!(read("unix_ms", None, Node::U64(ms)), Ok(ms));
        assert_eq!(read("unix_us", None, Node::I64(ms as i64 * 1_000 + 999)), Ok(ms));
        assert_eq!(read("unix_ns", None, Node::Str("1796637600250000000")), Ok(ms));
        assert_eq!(
            read(
                "%d.%m.%Y %H:%M:%S%.f",
                Some("Europe/Berlin"),
                Node::Str("07.12.2026 11:00:00.25")
            ),
            Ok(ms)
        );
        assert_eq!(
            read(
                "%Y-%m-%d %H:%M:%S%.f %z",
                Some("Asia/Tokyo"),
                Node::Str("2026-12-07 10:00:00.25 +0000")
            ),
            Ok(ms),
            "an offset in the text wins over the zone"
        );
    }

    #[test]
    fn bad_times_say_what_was_expected() {
        assert!(
            read("auto", None, Node::Str("2026-12-07T10:00:00")).unwrap_err().contains("offset")
        );
        assert!(read("rfc3339", None, Node::I64(5)).unwrap_err().contains("RFC 3339"));
        assert!(read("unix_ms", None, Node::I64(-5)).unwrap_err().contains("1970"));
        assert!(read("unix_s", None, Node::F64(f64::NAN)).is_err());
        assert!(read("unix_s", None, Node::F64(1e300)).is_err());
        assert!(read("unix_ms", None, Node::Bool(true)).is_err());
        assert!(read("%H:%M", None, Node::Str("10:00")).is_err(), "no date");
        assert!(TimeFormat::parse(Some("%H"), Some("Mars/Olympus")).unwrap_err().contains("IANA"));
        assert!(TimeFormat::parse(Some("unix_ms"), Some("UTC")).is_err());
        assert!(TimeFormat::parse(Some("epoch"), None).is_err());
    }
}
