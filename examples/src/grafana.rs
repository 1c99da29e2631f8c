//! Grafana's PostgreSQL query expansion, as Grafana 11 does it, so that
//! the shipped dashboards' queries can be run and checked without
//! Grafana: first the dashboard's template variables (`$machine`,
//! `${machine}`, `$__interval`, `$__interval_ms`), then the SQL macros of
//! the PostgreSQL data source (`$__timeFilter(col)`, `$__timeGroup(col,
//! '1m')`, `$__timeGroupAlias`, `$__time`, `$__timeEpoch`, `$__timeFrom()`,
//! `$__timeTo()`, `$__unixEpochFilter`), matched like Grafana's
//! `\$(\w+)\(([^)]*)\)`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// What a panel's query is expanded with.
#[derive(Clone, Debug)]
pub struct Context {
    /// The dashboard's time range, Unix ms.
    pub from_ms: i64,
    /// See `from_ms`.
    pub to_ms: i64,
    /// The panel's interval, ms (`$__interval`).
    pub interval_ms: i64,
    /// Template variables by name, each with its current value(s).
    pub vars: BTreeMap<String, Vec<String>>,
    /// The data source's TimescaleDB switch (`time_bucket` for groups).
    pub timescaledb: bool,
}

/// RFC 3339 with nanoseconds where there are any, UTC, as Go's
/// `time.RFC3339Nano` prints it.
fn rfc3339(ms: i64) -> String {
    // Before 1970 is no dashboard's range: clamped to the epoch.
    let ms = ms.max(0);
    let secs = ms / 1000;
    let milli = ms % 1000;
    let sod = secs % 86_400;
    let (y, m, d) = shopfloor_schemas::Timestamp::from_unix_ms(ms as u64).utc_date();
    let mut s =
        format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", sod / 3600, sod % 3600 / 60, sod % 60);
    if milli != 0 {
        let frac = format!("{milli:03}");
        let _ = write!(s, ".{}", frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Grafana's interval text for `ms` (`$__interval`): `500ms`, `30s`,
/// `5m`, `1h`, `1d`.
pub fn interval_text(ms: i64) -> String {
    match ms {
        m if m % 86_400_000 == 0 => format!("{}d", m / 86_400_000),
        m if m % 3_600_000 == 0 => format!("{}h", m / 3_600_000),
        m if m % 60_000 == 0 => format!("{}m", m / 60_000),
        m if m % 1000 == 0 => format!("{}s", m / 1000),
        m => format!("{m}ms"),
    }
}

/// A Grafana interval (`'5m'`, `30s`, `1h`, `500ms`, `1d`, `1w`) in seconds.
fn parse_interval(text: &str) -> Result<f64, String> {
    let t = text.trim().trim_matches('\'');
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .ok_or_else(|| format!("interval {text:?} has no unit"))?;
    let (n, unit) = t.split_at(split);
    let n: f64 = n.parse().map_err(|_| format!("interval {text:?}: not a number"))?;
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        "w" => 604_800.0,
        _ => return Err(format!("interval {text:?}: unknown unit {unit:?}")),
    };
    Ok(n * scale)
}

/// A number as Go's `%v` prints a float64 (`300`, `0.5`).
fn go_float(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 { format!("{}", x as i64) } else { format!("{x}") }
}

/// Replaces template variables: `$__interval_ms`, `$__interval`, then the
/// dashboard's own, longest names first (`$machine_id` before `$machine`).
/// Several values join with commas, quoted, as Grafana's SQL data sources
/// format a multi-value variable.
pub fn variables(sql: &str, ctx: &Context) -> Result<String, String> {
    let mut out = sql
        .replace("$__interval_ms", &ctx.interval_ms.to_string())
        .replace("${__interval_ms}", &ctx.interval_ms.to_string())
        .replace("$__interval", &interval_text(ctx.interval_ms))
        .replace("${__interval}", &interval_text(ctx.interval_ms));
    let mut names: Vec<&String> = ctx.vars.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for name in names {
        let values = &ctx.vars[name];
        let text = match values.as_slice() {
            [one] => one.clone(),
            many => many
                .iter()
                .map(|v| format!("'{}'", v.replace('\'', "''")))
                .collect::<Vec<_>>()
                .join(","),
        };
        out = out.replace(&format!("${{{name}}}"), &text).replace(&format!("${name}"), &text);
    }
    // A `$name` left that is no macro call is a variable the dashboard lacks.
    let mut rest = out.as_str();
    while let Some(i) = rest.find('$') {
        let after = &rest[i + 1..];
        let ident: String =
            after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if !ident.is_empty() && !after[ident.len()..].starts_with('(') {
            return Err(format!("unknown template variable ${ident}"));
        }
        rest = &after[ident.len()..];
    }
    Ok(out)
}

/// Expands the PostgreSQL data source's macros.
pub fn macros(sql: &str, ctx: &Context) -> Result<String, String> {
    let mut out = String::with_capacity(sql.len() + 64);
    let mut rest = sql;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let name: String =
            after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let tail = &after[name.len()..];
        let Some(args_end) = tail.strip_prefix('(').and_then(|t| t.find(')')) else {
            out.push('$');
            rest = after;
            continue;
        };
        let args: Vec<&str> = tail[1..=args_end].split(',').map(str::trim).collect();
        let arg = |k: usize| {
            args.get(k)
                .copied()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| format!("${name}: missing argument {}", k + 1))
        };
        let from = rfc3339(ctx.from_ms);
        let to = rfc3339(ctx.to_ms);
        let group = |col: &str, interval: &str| -> Result<String, String> {
            let secs = parse_interval(interval)?;
            Ok(if ctx.timescaledb {
                format!("time_bucket('{secs:.3}s',{col})")
            } else {
                format!("floor(extract(epoch from {col})/{s})*{s}", s = go_float(secs))
            })
        };
        let expanded = match name.as_str() {
            "__time" => format!("{} AS \"time\"", arg(0)?),
            "__timeEpoch" => format!("extract(epoch from {}) as \"time\"", arg(0)?),
            "__timeFilter" => format!("{} BETWEEN '{from}' AND '{to}'", arg(0)?),
            "__timeFrom" => format!("'{from}'"),
            "__timeTo" => format!("'{to}'"),
            "__timeGroup" => group(arg(0)?, arg(1)?)?,
            "__timeGroupAlias" => format!("{} AS \"time\"", group(arg(0)?, arg(1)?)?),
            "__unixEpochFilter" => {
                let c = arg(0)?;
                format!(
                    "{c} >= {} AND {c} <= {}",
                    ctx.from_ms.div_euclid(1000),
                    ctx.to_ms.div_euclid(1000)
                )
            }
            other => return Err(format!("unknown macro ${other}")),
        };
        out.push_str(&expanded);
        rest = &tail[args_end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Variables, then macros: the SQL Grafana sends to PostgreSQL.
pub fn expand(sql: &str, ctx: &Context) -> Result<String, String> {
    macros(&variables(sql, ctx)?, ctx)
}

/// The page [`preview_page`] fills in.
const PREVIEW: &str = include_str!("grafana_preview.html");

/// A self-contained HTML page that draws `dashboard` from its panels' query
/// results, for a screenshot where Grafana cannot run: the panels at their
/// `gridPos`, time series as lines or bars with their threshold lines, stat
/// tiles coloured by their thresholds, tables, state timelines with their
/// value mappings. `frames[i]` holds panel `i`'s results, one per target,
/// each `{"columns": [{"name", "type"}], "rows": [[…]]}` with `type`
/// `time` (Unix ms), `number`, `string` or `bool`. `note` is printed under
/// the title, to say what the picture is (and is not).
pub fn preview_page(
    dashboard: &serde_json::Value,
    frames: &serde_json::Value,
    ctx: &Context,
    note: &str,
) -> String {
    let vars: BTreeMap<&String, String> = ctx.vars.iter().map(|(k, v)| (k, v.join(","))).collect();
    let data = serde_json::json!({
        "dashboard": dashboard, "frames": frames, "vars": vars,
        "range": [ctx.from_ms, ctx.to_ms], "interval_ms": ctx.interval_ms, "note": note,
    });
    // Inside <script>: no "</" may close it early.
    let data = data.to_string().replace("</", "<\\/");
    PREVIEW.replacen("/*PREVIEW*/null", &data, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            // 2017-04-21T05:01:17Z .. 05:06:17Z, Grafana's own example range.
            from_ms: 1_492_750_877_000,
            to_ms: 1_492_751_177_000,
            interval_ms: 60_000,
            vars: BTreeMap::from([
                ("machine".into(), vec!["Plant1/modbus-gw/press-01".into()]),
                ("machines".into(), vec!["a".into(), "o'b".into()]),
            ]),
            timescaledb: false,
        }
    }

    #[test]
    fn macros_expand_as_grafanas_documentation_shows() {
        let c = ctx();
        for (sql, want) in [
            (
                "WHERE $__timeFilter(time)",
                "WHERE time BETWEEN '2017-04-21T05:01:17Z' AND '2017-04-21T05:06:17Z'",
            ),
            (
                "SELECT $__timeGroupAlias(time, '5m'), avg(value)",
                "SELECT floor(extract(epoch from time)/300)*300 AS \"time\", avg(value)",
            ),
            ("$__timeGroup(t,$__interval)", "floor(extract(epoch from t)/60)*60"),
            ("$__time(t), $__timeEpoch(t)", "t AS \"time\", extract(epoch from t) as \"time\""),
            ("$__timeFrom() $__timeTo()", "'2017-04-21T05:01:17Z' '2017-04-21T05:06:17Z'"),
            ("$__unixEpochFilter(ts)", "ts >= 1492750877 AND ts <= 1492751177"),
        ] {
            assert_eq!(expand(sql, &c).unwrap(), want, "{sql}");
        }
        let ts = Context { timescaledb: true, ..ctx() };
        assert_eq!(expand("$__timeGroup(t, '5m')", &ts).unwrap(), "time_bucket('300.000s',t)");
    }

    #[test]
    fn variables_single_and_multi_and_unknown() {
        let c = ctx();
        assert_eq!(
            expand("source = '$machine' AND x IN (${machines}) AND i = $__interval_ms", &c)
                .unwrap(),
            "source = 'Plant1/modbus-gw/press-01' AND x IN ('a','o''b') AND i = 60000"
        );
        assert!(expand("source = '$nosuch'", &c).unwrap_err().contains("$nosuch"));
        assert!(expand("$__bogus(x)", &c).unwrap_err().contains("unknown macro"));
        assert!(expand("$__timeGroup(t)", &c).unwrap_err().contains("missing argument 2"));
        assert_eq!(interval_text(500), "500ms");
        assert_eq!(interval_text(3_600_000), "1h");
        assert_eq!(rfc3339(1_492_750_877_250), "2017-04-21T05:01:17.25Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
