//! Alarm rules: TOML in, checked [`RuleSet`] out. Every error names the
//! file, the rule and the key.
//!
//! ```toml
//! [[rule]]
//! name = "press-pressure"          # the alarm's definition id: unique, stable
//! source = "Plant1/*/press-*"      # globs: * any run, ? one character
//! metric = "Hydraulics/Pressure"
//! area = "press-shop"              # for the KPIs and routing (default "plant")
//! class = "process"                # default "process"
//! priority = 500                   # 1–1000; a level's own priority overrides
//! message = "{source} {metric} {level}: {value} {unit}"
//! on_delay_s = 2                   # a breach must last this long (default 0)
//! off_delay_s = 5                  # and be gone this long to clear (default 0)
//! latch = false                    # true: stays active until an operator resets it
//! confirm = false                  # true: an acknowledged alarm also waits for an
//!                                  # operator's confirmation once it has cleared
//! enabled_when = { metric = "Running", is = true }  # suppressed by design while the
//!                                  # press ("{source}", its own source) is stopped
//! max_shelve_h = 8                 # the longest it may be shelved (default 8)
//!
//! [rule.limit]                     # one of: limit, stale, bad_quality, discrete
//! hh = { limit = 180.0, deadband = 2.0, priority = 900 }
//! h = { limit = 160.0, deadband = 2.0 }
//! l = { limit = 40.0 }
//! range = [0.0, 250.0]             # the instrument's calibrated range: a value
//!                                  # outside it is bad input, not a process alarm
//!
//! [[rule]]
//! name = "press-silent"
//! source = "Plant1/*"
//! metric = "*"
//! stale = { interval_s = 1.0, factor = 3 }   # no sample for 3 × 1 s
//!
//! [[rule]]
//! name = "oven-ramp"
//! source = "Plant1/*/oven-*"
//! metric = "Zone1/Temperature"
//! rate = { limit_per_s = 2.0, window_s = 30.0 }    # faster than 2 °C/s either way
//! # deviation = { limit = 15.0, half_life_s = 600.0, warmup = 10 }
//! # flatline = { window_s = 300.0, tolerance = 0.01, min_samples = 10 }
//!
//! [[rule]]
//! name = "door-open"
//! source = "Plant1/*/press-*"
//! metric = "Guard/DoorOpen"
//! discrete = { alarm_when = true }
//! ```

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::limit::{Level, LevelKind, Limits};

/// A rules file that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RulesError {
    /// The file cannot be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, or a key of the wrong type or unknown.
    #[error("{file}: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A rule that does not make sense.
    #[error("{file}: rule {rule:?}: {key}: {message}")]
    Rule {
        /// The file.
        file: String,
        /// The rule's name (or its position when it has none).
        rule: String,
        /// The key at fault.
        key: String,
        /// What is wrong and what to do.
        message: String,
    },
}

/// A glob over `/`-separated names: `*` matches any run of characters
/// (slashes too), `?` one character.
#[derive(Clone)]
pub struct Glob {
    text: String,
    matcher: wildmatch::WildMatch,
}

impl Glob {
    /// A glob from its text.
    pub fn new(text: &str) -> Self {
        Self { text: text.to_owned(), matcher: wildmatch::WildMatch::new(text) }
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        self.matcher.matches(name)
    }

    /// The text it was made from.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.text)
    }
}

impl PartialEq for Glob {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

/// What a rule watches for.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Kind {
    /// Limit levels, and optionally the instrument's calibrated range.
    Limit {
        /// The levels.
        limits: Limits,
        /// Outside `[low, high]` the value is bad input.
        range: Option<(f64, f64)>,
    },
    /// No sample for `factor × interval`.
    Stale {
        /// The expected interval between samples.
        interval: Duration,
        /// How many intervals may pass silently.
        factor: u32,
    },
    /// A sample of bad quality.
    BadQuality,
    /// A boolean signal in its alarm state.
    Discrete {
        /// The alarm state.
        alarm_when: bool,
    },
    /// Changing faster than `limit_per_s` (either way) over `window`, in
    /// event time.
    RateOfChange {
        /// Units per second.
        limit_per_s: f64,
        /// Over how long.
        window: Duration,
    },
    /// Further than `limit` from a time-decayed average (frozen while
    /// the alarm is active).
    Deviation {
        /// How far.
        limit: f64,
        /// The average's half-life.
        half_life: Duration,
        /// Samples before it judges.
        warmup: u32,
    },
    /// A stuck sensor: at least `min_samples` over `window` within
    /// `tolerance` of each other.
    Flatline {
        /// Over how long.
        window: Duration,
        /// The largest spread that counts as flat.
        tolerance: f64,
        /// Samples needed to judge.
        min_samples: u32,
    },
}

/// One checked rule.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Rule {
    /// Unique, stable: the alarm definition's id.
    pub name: String,
    /// Which sources.
    pub source: Glob,
    /// Which metrics.
    pub metric: Glob,
    /// What it watches for.
    pub kind: Kind,
    /// 1–1000, larger is more urgent.
    pub priority: u16,
    /// The alarm class (`process`, `equipment`, `safety`…).
    pub class: String,
    /// The plant area, for KPIs and routing.
    pub area: String,
    /// The message template: `{source}`, `{metric}`, `{level}`, `{value}`,
    /// `{unit}` are filled in.
    pub message: String,
    /// A breach must hold this long to activate.
    pub on_delay: Duration,
    /// A return must hold this long to clear.
    pub off_delay: Duration,
    /// Latched: once raised, the alarm stays active after the condition
    /// returns to normal until an operator resets it.
    pub latch: bool,
    /// Whether an acknowledged instance also waits for an operator's
    /// confirmation (OPC UA Part 9 `ConfirmedState`) before it closes.
    pub confirm: bool,
    /// The longest an operator may shelve it for (default 8 h).
    pub max_shelve: Duration,
    /// Suppressed by design while another signal is not in this state
    /// (a machine that is stopped raises no process alarms).
    pub enabled_when: Option<EnabledWhen>,
}

/// The signal and state that enable an alarm (suppression by design).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EnabledWhen {
    /// The signal's source; `{source}` stands for the alarm's own source.
    pub source: String,
    /// The signal's metric.
    pub metric: String,
    /// The state that enables the alarm (numbers: non-zero is `true`).
    pub is: bool,
}

impl Rule {
    /// Whether the rule watches this signal.
    pub fn selects(&self, source: &str, metric: &str) -> bool {
        self.source.matches(source) && self.metric.matches(metric)
    }
}

/// Checked rules, in file order.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct RuleSet {
    /// The rules.
    pub rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDe {
    #[serde(default)]
    rule: Vec<RuleDe>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDe {
    name: Option<String>,
    source: Option<String>,
    metric: Option<String>,
    priority: Option<i64>,
    class: Option<String>,
    area: Option<String>,
    message: Option<String>,
    on_delay_s: Option<f64>,
    off_delay_s: Option<f64>,
    #[serde(default)]
    latch: bool,
    #[serde(default)]
    confirm: bool,
    max_shelve_h: Option<f64>,
    enabled_when: Option<EnabledWhenDe>,
    limit: Option<LimitDe>,
    stale: Option<StaleDe>,
    bad_quality: Option<bool>,
    discrete: Option<DiscreteDe>,
    rate: Option<RateDe>,
    deviation: Option<DeviationDe>,
    flatline: Option<FlatlineDe>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnabledWhenDe {
    #[serde(default = "own_source")]
    source: String,
    metric: String,
    #[serde(default = "yes")]
    is: bool,
}

fn own_source() -> String {
    "{source}".into()
}

const fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateDe {
    limit_per_s: f64,
    window_s: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviationDe {
    limit: f64,
    half_life_s: f64,
    #[serde(default = "ten")]
    warmup: u32,
}

const fn ten() -> u32 {
    10
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlatlineDe {
    window_s: f64,
    tolerance: f64,
    #[serde(default = "ten")]
    min_samples: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitDe {
    hh: Option<LevelDe>,
    h: Option<LevelDe>,
    l: Option<LevelDe>,
    ll: Option<LevelDe>,
    range: Option<[f64; 2]>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LevelDe {
    limit: f64,
    #[serde(default)]
    deadband: f64,
    priority: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StaleDe {
    interval_s: f64,
    #[serde(default = "three")]
    factor: u32,
}

const fn three() -> u32 {
    3
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiscreteDe {
    alarm_when: bool,
}

const DEFAULT_MESSAGE: &str = "{source} {metric} {level}: {value} {unit}";

impl RuleSet {
    /// Reads and checks a rules file.
    pub fn load(path: &Path) -> Result<Self, RulesError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| RulesError::Read { file: file.clone(), source })?;
        Self::from_toml(&text, &file)
    }

    /// Checks rules from TOML text; `file` names it in errors.
    pub fn from_toml(text: &str, file: &str) -> Result<Self, RulesError> {
        let de: FileDe = toml::from_str(text)
            .map_err(|e| RulesError::Syntax { file: file.to_owned(), message: e.to_string() })?;
        let mut names = HashSet::new();
        let mut rules = Vec::with_capacity(de.rule.len());
        for (i, r) in de.rule.into_iter().enumerate() {
            let label = r.name.clone().unwrap_or_else(|| format!("#{}", i + 1));
            let err = |key: &str, message: String| RulesError::Rule {
                file: file.to_owned(),
                rule: label.clone(),
                key: key.to_owned(),
                message,
            };
            let name = match r.name {
                Some(n) if !n.trim().is_empty() => n,
                _ => {
                    return Err(err(
                        "name",
                        "every rule needs a name (its alarm's stable id)".into(),
                    ));
                }
            };
            if !names.insert(name.clone()) {
                return Err(err("name", "another rule has this name; names must be unique".into()));
            }
            let source = r.source.ok_or_else(|| {
                err("source", "missing: which sources (a glob, \"*\" for all)".into())
            })?;
            let metric = r.metric.ok_or_else(|| {
                err("metric", "missing: which metrics (a glob, \"*\" for all)".into())
            })?;
            let priority = priority(r.priority.unwrap_or(500)).map_err(|m| err("priority", m))?;
            let delay = |key: &str, v: Option<f64>| -> Result<Duration, RulesError> {
                match v {
                    None => Ok(Duration::ZERO),
                    Some(s) if s.is_finite() && (0.0..=86_400.0).contains(&s) => {
                        Ok(Duration::from_secs_f64(s))
                    }
                    Some(s) => Err(err(key, format!("{s} is not a number of seconds in 0–86400"))),
                }
            };
            let on_delay = delay("on_delay_s", r.on_delay_s)?;
            let off_delay = delay("off_delay_s", r.off_delay_s)?;
            let max_shelve = match r.max_shelve_h {
                None => Duration::from_secs(8 * 3600),
                Some(h) if h.is_finite() && h > 0.0 && h <= 24.0 * 366.0 => {
                    Duration::from_secs_f64(h * 3600.0)
                }
                Some(h) => {
                    return Err(err(
                        "max_shelve_h",
                        format!("{h} is not a number of hours in (0, 8784]"),
                    ));
                }
            };
            let given = [
                r.limit.is_some(),
                r.stale.is_some(),
                r.bad_quality == Some(true),
                r.discrete.is_some(),
                r.rate.is_some(),
                r.deviation.is_some(),
                r.flatline.is_some(),
            ];
            if given.iter().filter(|&&g| g).count() != 1 {
                return Err(err(
                    "kind",
                    "give exactly one of limit, stale, bad_quality = true, discrete, rate, deviation, flatline".into(),
                ));
            }
            let seconds = |key: &str, v: f64| -> Result<Duration, RulesError> {
                if v.is_finite() && v > 0.0 && v <= 86_400.0 * 7.0 {
                    Ok(Duration::from_secs_f64(v))
                } else {
                    Err(err(key, format!("{v} is not a number of seconds in (0, 604800]")))
                }
            };
            let positive = |key: &str, v: f64| -> Result<f64, RulesError> {
                if v.is_finite() && v > 0.0 {
                    Ok(v)
                } else {
                    Err(err(key, format!("{v} must be a number above 0")))
                }
            };
            let kind = if let Some(l) = r.limit {
                let mut levels = Vec::new();
                for (key, kind, level) in [
                    ("limit.hh", LevelKind::HighHigh, l.hh),
                    ("limit.h", LevelKind::High, l.h),
                    ("limit.l", LevelKind::Low, l.l),
                    ("limit.ll", LevelKind::LowLow, l.ll),
                ] {
                    if let Some(lv) = level {
                        let p = match lv.priority {
                            Some(p) => self::priority(p).map_err(|m| err(key, m))?,
                            None => priority,
                        };
                        levels.push(Level {
                            kind,
                            limit: lv.limit,
                            deadband: lv.deadband,
                            priority: p,
                        });
                    }
                }
                let limits = Limits::new(levels).map_err(|e| err("limit", e.to_string()))?;
                let range = match l.range {
                    None => None,
                    Some([lo, hi]) if lo.is_finite() && hi.is_finite() && lo < hi => Some((lo, hi)),
                    Some([lo, hi]) => {
                        return Err(err(
                            "limit.range",
                            format!(
                                "[{lo}, {hi}] is not a range: give [low, high] with low < high"
                            ),
                        ));
                    }
                };
                if let Some((lo, hi)) = range {
                    for lv in limits.levels() {
                        if lv.limit < lo || lv.limit > hi {
                            return Err(err(
                                "limit.range",
                                format!(
                                    "{} ({}) is outside the instrument range [{lo}, {hi}]: it could never be reached",
                                    lv.kind, lv.limit
                                ),
                            ));
                        }
                    }
                }
                Kind::Limit { limits, range }
            } else if let Some(s) = r.stale {
                if !(s.interval_s.is_finite() && s.interval_s > 0.0 && s.interval_s <= 86_400.0) {
                    return Err(err(
                        "stale.interval_s",
                        format!("{} is not a number of seconds in (0, 86400]", s.interval_s),
                    ));
                }
                if s.factor == 0 {
                    return Err(err(
                        "stale.factor",
                        "0 would call every signal stale: use 2 or more".into(),
                    ));
                }
                Kind::Stale { interval: Duration::from_secs_f64(s.interval_s), factor: s.factor }
            } else if let Some(d) = r.discrete {
                Kind::Discrete { alarm_when: d.alarm_when }
            } else if let Some(x) = r.rate {
                Kind::RateOfChange {
                    limit_per_s: positive("rate.limit_per_s", x.limit_per_s)?,
                    window: seconds("rate.window_s", x.window_s)?,
                }
            } else if let Some(x) = r.deviation {
                Kind::Deviation {
                    limit: positive("deviation.limit", x.limit)?,
                    half_life: seconds("deviation.half_life_s", x.half_life_s)?,
                    warmup: x.warmup,
                }
            } else if let Some(x) = r.flatline {
                if !(x.tolerance.is_finite() && x.tolerance >= 0.0) {
                    return Err(err(
                        "flatline.tolerance",
                        format!("{} must be a number ≥ 0", x.tolerance),
                    ));
                }
                if x.min_samples < 2 {
                    return Err(err(
                        "flatline.min_samples",
                        "a spread needs 2 samples or more".into(),
                    ));
                }
                Kind::Flatline {
                    window: seconds("flatline.window_s", x.window_s)?,
                    tolerance: x.tolerance,
                    min_samples: x.min_samples,
                }
            } else {
                Kind::BadQuality
            };
            rules.push(Rule {
                name,
                source: Glob::new(&source),
                metric: Glob::new(&metric),
                kind,
                priority,
                class: r.class.unwrap_or_else(|| "process".into()),
                area: r.area.unwrap_or_else(|| "plant".into()),
                message: r.message.unwrap_or_else(|| DEFAULT_MESSAGE.into()),
                on_delay,
                off_delay,
                latch: r.latch,
                confirm: r.confirm,
                max_shelve,
                enabled_when: match r.enabled_when {
                    None => None,
                    Some(e) if e.metric.is_empty() || e.source.is_empty() => {
                        return Err(err("enabled_when", "give the metric (and source, default \"{source}\") of the enabling signal".into()));
                    }
                    Some(e) if e.source.contains(['*', '?']) || e.metric.contains(['*', '?']) => {
                        return Err(err("enabled_when", "one signal, not a glob: name its source and metric".into()));
                    }
                    Some(e) => Some(EnabledWhen { source: e.source, metric: e.metric, is: e.is }),
                },
            });
        }
        Ok(Self { rules })
    }

    /// The rules that watch this signal, in file order.
    pub fn matching<'a>(
        &'a self,
        source: &'a str,
        metric: &'a str,
    ) -> impl Iterator<Item = &'a Rule> {
        self.rules.iter().filter(move |r| r.selects(source, metric))
    }
}

fn priority(p: i64) -> Result<u16, String> {
    u16::try_from(p)
        .ok()
        .filter(|p| (1..=1000).contains(p))
        .ok_or_else(|| format!("{p} is not a priority in 1–1000"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first ```toml block among `lines`.
    fn toml_block<'a>(lines: impl Iterator<Item = &'a str>) -> String {
        let block: Vec<&str> =
            lines.skip_while(|l| *l != "```toml").skip(1).take_while(|l| *l != "```").collect();
        assert!(!block.is_empty(), "no ```toml block");
        block.join("\n")
    }

    #[test]
    fn the_documented_example_loads() {
        // This module's documentation, as a user would copy it.
        let doc = include_str!("rules.rs").lines().map_while(|l| l.strip_prefix("//!"));
        let example = toml_block(doc.map(|l| l.strip_prefix(' ').unwrap_or(l)));
        let set = RuleSet::from_toml(&example, "rules.toml").unwrap();
        let names: Vec<&str> = set.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["press-pressure", "press-silent", "oven-ramp", "door-open"]);
        let p = &set.rules[0];
        assert_eq!((p.on_delay, p.off_delay), (Duration::from_secs(2), Duration::from_secs(5)));
        let Kind::Limit { limits, range } = &p.kind else { panic!("{:?}", p.kind) };
        assert_eq!(*range, Some((0.0, 250.0)));
        let prio: Vec<(LevelKind, u16)> =
            limits.levels().iter().map(|l| (l.kind, l.priority)).collect();
        assert_eq!(
            prio,
            [(LevelKind::Low, 500), (LevelKind::High, 500), (LevelKind::HighHigh, 900)]
        );
        let when = p.enabled_when.as_ref().unwrap();
        assert_eq!(
            (when.source.as_str(), when.metric.as_str(), when.is),
            ("{source}", "Running", true)
        );
        assert_eq!(set.rules[1].kind, Kind::Stale { interval: Duration::from_secs(1), factor: 3 });
        assert_eq!(
            set.rules[2].kind,
            Kind::RateOfChange { limit_per_s: 2.0, window: Duration::from_secs(30) }
        );
        // Selection by globs.
        let hits = |source: &str, metric: &str| -> Vec<String> {
            set.matching(source, metric).map(|r| r.name.clone()).collect()
        };
        assert_eq!(
            hits("Plant1/Gw-7/press-1", "Hydraulics/Pressure"),
            ["press-pressure", "press-silent"]
        );
        assert_eq!(hits("Plant1/Gw-7/press-1", "Guard/DoorOpen"), ["press-silent", "door-open"]);
        assert!(hits("Plant2/Gw-7/press-1", "Guard/DoorOpen").is_empty());
    }

    #[test]
    fn the_readme_example_loads() {
        let example = toml_block(include_str!("../README.md").lines());
        let set = RuleSet::from_toml(&example, "rules.toml").unwrap();
        let names: Vec<&str> = set.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["press-pressure", "press-silent"]);
        assert!(set.rules[0].confirm);
    }

    #[test]
    fn errors_name_the_file_the_rule_and_the_key() {
        let cases = [
            (
                "[[rule]]\nsource = \"*\"\nmetric = \"*\"\nbad_quality = true",
                "rules.toml: rule \"#1\": name: every rule needs a name",
            ),
            (
                "[[rule]]\nname = \"a\"\nmetric = \"*\"\nbad_quality = true",
                "rule \"a\": source: missing",
            ),
            (
                "[[rule]]\nname = \"a\"\nsource = \"*\"\nmetric = \"*\"",
                "rule \"a\": kind: give exactly one",
            ),
            (
                "[[rule]]\nname = \"a\"\nsource = \"*\"\nmetric = \"*\"\nbad_quality = true\nstale = { interval_s = 1.0 }",
                "give exactly one",
            ),
            (
                "[[rule]]\nname = \"a\"\nsource = \"*\"\nmetric = \"*\"\npriority = 0\nbad_quality = true",
                "rule \"a\": priority: 0 is not a priority in 1–1000",
            ),
            (
                "[[rule]]\nname = \"a\"\nsource = \"*\"\nmetric = \"*\"\non_delay_s = -1\nbad_quality = true",
                "rule \"a\": on_delay_s: -1 is not a number of seconds",
            ),
            (
                "[[rule]]\nname = \"a\"\nsource = \"*\"\nmetric = \"*\"\nlimit = { h = { limit = 5.0 }, hh = { limit = 4.0 } }",
                "rule \"a\": limit: HH (4) must be above H (5)",
            ),
            (
                "[[rule]]\nname = \"a\"\nsource = \"*\"\nmetric = \"*\"\nlimit = { h = { limit = 5.0 }, range = [0.0, 4.0] }",
                "rule \"a\": limit.range: H (5) is outside the instrument range",
            ),
            (
                "[[rule]]\nname = \"a\"\nsource = \"*\"\nmetric = \"*\"\nlimit = { h = { limit = 5.0, priority = 2000 } }",
                "rule \"a\": limit.h: 2000 is not a priority",
            ),
            (
                "[[rule]]\nname = \"a\"\nsource = \"*\"\nmetric = \"*\"\nstale = { interval_s = 1.0, factor = 0 }",
                "rule \"a\": stale.factor: 0 would call",
            ),
            (
                "[[rule]]\nname = \"a\"\nsource = \"*\"\nmetric = \"*\"\nbad_quality = true\n[[rule]]\nname = \"a\"\nsource = \"*\"\nmetric = \"*\"\nbad_quality = true",
                "rule \"a\": name: another rule has this name",
            ),
            (
                "[[rule]]\nname = \"a\"\nsource = \"*\"\nmetric = \"*\"\nbad_quality = true\nenabled_when = { metric = \"Run*\" }",
                "rule \"a\": enabled_when: one signal, not a glob",
            ),
            ("[[rule]]\nname = \"a\"\nsourse = \"*\"", "unknown field `sourse`"),
            ("[[rule]\n", "rules.toml: "),
        ];
        for (text, want) in cases {
            let e = RuleSet::from_toml(text, "rules.toml").unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}\n  gave {e:?}\n  want {want:?}");
            assert!(e.starts_with("rules.toml: "), "{e}");
        }
    }

    #[test]
    fn history_rules() {
        let text = "[[rule]]\nname = \"r\"\nsource = \"*\"\nmetric = \"*\"\nrate = { limit_per_s = 2.0, window_s = 30.0 }\n\
                    [[rule]]\nname = \"d\"\nsource = \"*\"\nmetric = \"*\"\ndeviation = { limit = 15.0, half_life_s = 600.0 }\n\
                    [[rule]]\nname = \"f\"\nsource = \"*\"\nmetric = \"*\"\nflatline = { window_s = 300.0, tolerance = 0.01 }";
        let set = RuleSet::from_toml(text, "h.toml").unwrap();
        assert_eq!(
            set.rules[0].kind,
            Kind::RateOfChange { limit_per_s: 2.0, window: Duration::from_secs(30) }
        );
        assert_eq!(
            set.rules[1].kind,
            Kind::Deviation { limit: 15.0, half_life: Duration::from_secs(600), warmup: 10 }
        );
        assert_eq!(
            set.rules[2].kind,
            Kind::Flatline { window: Duration::from_secs(300), tolerance: 0.01, min_samples: 10 }
        );
        let bad = [
            (
                "rate = { limit_per_s = 0.0, window_s = 30.0 }",
                "rate.limit_per_s: 0 must be a number above 0",
            ),
            (
                "rate = { limit_per_s = 1.0, window_s = 0.0 }",
                "rate.window_s: 0 is not a number of seconds",
            ),
            (
                "flatline = { window_s = 10.0, tolerance = 0.1, min_samples = 1 }",
                "flatline.min_samples: a spread needs 2",
            ),
            ("deviation = { limit = -1.0, half_life_s = 10.0 }", "deviation.limit: -1 must be"),
        ];
        for (kind, want) in bad {
            let text = format!("[[rule]]\nname = \"x\"\nsource = \"*\"\nmetric = \"*\"\n{kind}");
            let e = RuleSet::from_toml(&text, "h.toml").unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn globs() {
        let g = Glob::new("Plant1/*/press-?");
        assert!(g.matches("Plant1/Gw-7/press-1"));
        assert!(g.matches("Plant1/a/b/press-2"), "* crosses slashes");
        assert!(!g.matches("Plant1/Gw-7/press-10"));
        assert!(!g.matches("Plant2/Gw-7/press-1"));
        assert!(Glob::new("*").matches(""));
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_an_error_or_a_rule_set_never_a_panic(text in "\\PC{0,200}") {
            let _ = RuleSet::from_toml(&text, "fuzz.toml");
        }
    }
}
