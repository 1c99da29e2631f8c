//! MQTT topic rules and topic templates such as
//! `shopfloor/{site}/{area}/{machine}/{sensor}`.

use std::fmt;

use crate::error::TopicError;

/// MQTT's limit on a topic's length in bytes (a UTF-8 string with a 16-bit
/// length prefix).
pub const MAX_TOPIC_LEN: usize = 65_535;

/// The default topic patterns, in one place so that gateways, ingest,
/// alerting and the live page agree.
pub mod defaults {
    /// Plain (non-Sparkplug) readings: one topic per sensor.
    pub const READINGS: &str = "shopfloor/{site}/{area}/{machine}/{sensor}";
    /// Alarm events (raised, cleared, acknowledged, shelved…), not retained.
    pub const ALARM_EVENTS: &str = "shopfloor/alarms/events/{alarm}";
    /// The current state of each alarm, retained, so a new subscriber sees
    /// every active alarm at once.
    pub const ALARM_STATES: &str = "shopfloor/alarms/state/{alarm}";
    /// Operator commands to the alarm engine (acknowledge, shelve, reset…).
    pub const ALARM_COMMANDS: &str = "shopfloor/alarms/command/{alarm}";
    /// Write commands to a plain-topic gateway: the reading's topic with
    /// this suffix (`shopfloor/{site}/{area}/{machine}/{sensor}/set`).
    pub const WRITE_COMMAND_SUFFIX: &str = "/set";
    /// The outcome of each write command
    /// ([`WriteResult`](crate::WriteResult) as JSON, which names the device
    /// and metric), not retained. A Sparkplug gateway fills in its group and
    /// edge node id; a plain gateway its site and area. Four levels, so that
    /// a subscription to plain readings (five) never receives them.
    pub const WRITE_RESULTS: &str = "shopfloor/writes/{group}/{edge}";
}

fn check_common(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong { len: topic.len() });
    }
    if let Some(offset) = topic.find('\0') {
        return Err(TopicError::Nul { topic: topic.to_owned(), offset });
    }
    Ok(())
}

/// Checks a topic name one publishes to: not empty, at most 65 535 bytes, no
/// NUL, no `+` or `#` (MQTT 5 §4.7). UTF-8 is guaranteed by `&str`.
pub fn validate_topic_name(topic: &str) -> Result<(), TopicError> {
    check_common(topic)?;
    if let Some(offset) = topic.find(['+', '#']) {
        let wildcard = topic[offset..].chars().next().unwrap_or('+');
        return Err(TopicError::WildcardInName { topic: topic.to_owned(), wildcard, offset });
    }
    Ok(())
}

/// Checks a topic filter one subscribes to: the rules of
/// [`validate_topic_name`], except that `+` may be a whole level and `#` a
/// whole last level.
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    check_common(filter)?;
    let count = filter.split('/').count();
    for (level, text) in filter.split('/').enumerate() {
        let ok = match text {
            "+" => true,
            "#" => level + 1 == count,
            _ => !text.contains(['+', '#']),
        };
        if !ok {
            return Err(TopicError::BadWildcard {
                filter: filter.to_owned(),
                level,
                text: text.to_owned(),
            });
        }
    }
    Ok(())
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Level {
    Literal(String),
    Placeholder(String),
}

/// A topic with named placeholders, each a whole level:
/// `shopfloor/{site}/{area}/{machine}/{sensor}`.
///
/// ```
/// use shopfloor_schemas::TopicTemplate;
///
/// let t = TopicTemplate::parse("shopfloor/{site}/{area}/{machine}/{sensor}")?;
/// let topic = t.render(&[
///     ("site", "plant1"), ("area", "press"), ("machine", "press-3"), ("sensor", "temperature"),
/// ])?;
/// assert_eq!(topic, "shopfloor/plant1/press/press-3/temperature");
/// assert_eq!(t.filter(), "shopfloor/+/+/+/+");
///
/// let m = t.matches(&topic).expect("the rendered topic matches");
/// assert_eq!(m.get("machine"), Some("press-3"));
/// assert!(t.matches("shopfloor/plant1/press").is_none());
/// # Ok::<(), shopfloor_schemas::TopicError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicTemplate {
    text: String,
    levels: Vec<Level>,
}

impl TopicTemplate {
    /// Parses a template. Every level is either plain text or one whole
    /// `{name}` placeholder (names: letters, digits, `_`, `-`); no level is
    /// empty; no placeholder appears twice; the text obeys the rules of a
    /// publish topic ([`validate_topic_name`]).
    pub fn parse(template: &str) -> Result<Self, TopicError> {
        validate_topic_name(template)?;
        let mut levels = Vec::new();
        for (level, text) in template.split('/').enumerate() {
            if text.is_empty() {
                return Err(TopicError::EmptyLevel { template: template.to_owned(), level });
            }
            let bad = || TopicError::BadPlaceholder {
                template: template.to_owned(),
                level,
                text: text.to_owned(),
            };
            if let Some(inner) = text.strip_prefix('{') {
                let name = inner.strip_suffix('}').ok_or_else(bad)?;
                let valid = !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !valid {
                    return Err(bad());
                }
                if levels.contains(&Level::Placeholder(name.to_owned())) {
                    return Err(TopicError::DuplicatePlaceholder {
                        template: template.to_owned(),
                        name: name.to_owned(),
                    });
                }
                levels.push(Level::Placeholder(name.to_owned()));
            } else if text.contains(['{', '}']) {
                return Err(bad());
            } else {
                levels.push(Level::Literal(text.to_owned()));
            }
        }
        Ok(Self { text: template.to_owned(), levels })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The placeholders' names, in order.
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.levels.iter().filter_map(|l| match l {
            Level::Placeholder(n) => Some(n.as_str()),
            Level::Literal(_) => None,
        })
    }

    /// The subscription filter that every rendering matches: each placeholder
    /// becomes `+`.
    pub fn filter(&self) -> String {
        let parts: Vec<&str> = self
            .levels
            .iter()
            .map(|l| match l {
                Level::Literal(s) => s.as_str(),
                Level::Placeholder(_) => "+",
            })
            .collect();
        parts.join("/")
    }

    /// Renders a topic from `(placeholder, value)` pairs. Extra pairs are
    /// ignored. A value must be a valid, non-empty topic level: no `/`, `+`,
    /// `#` or NUL.
    pub fn render(&self, values: &[(&str, &str)]) -> Result<String, TopicError> {
        let mut out = String::with_capacity(self.text.len() + 32);
        for (i, level) in self.levels.iter().enumerate() {
            if i > 0 {
                out.push('/');
            }
            match level {
                Level::Literal(s) => out.push_str(s),
                Level::Placeholder(name) => {
                    let value =
                        values.iter().find(|(n, _)| n == name).map(|(_, v)| *v).ok_or_else(
                            || TopicError::MissingValue {
                                template: self.text.clone(),
                                name: name.clone(),
                            },
                        )?;
                    let reason = if value.is_empty() {
                        Some("it is empty")
                    } else if value.contains('/') {
                        Some("it contains '/', which would add a level")
                    } else if value.contains(['+', '#']) {
                        Some("it contains an MQTT wildcard ('+' or '#')")
                    } else if value.contains('\0') {
                        Some("it contains NUL")
                    } else {
                        None
                    };
                    if let Some(reason) = reason {
                        return Err(TopicError::BadValue {
                            template: self.text.clone(),
                            name: name.clone(),
                            value: value.to_owned(),
                            reason,
                        });
                    }
                    out.push_str(value);
                }
            }
        }
        if out.len() > MAX_TOPIC_LEN {
            return Err(TopicError::TooLong { len: out.len() });
        }
        Ok(out)
    }

    /// Matches a received topic: the same number of levels, equal literals,
    /// and a non-empty level for each placeholder. Returns the captured
    /// values, or `None` if the topic does not fit.
    pub fn matches<'t>(&self, topic: &'t str) -> Option<Captures<'_, 't>> {
        let mut values = Vec::with_capacity(self.levels.len());
        let mut parts = topic.split('/');
        for level in &self.levels {
            let part = parts.next()?;
            match level {
                Level::Literal(s) if s == part => {}
                Level::Literal(_) => return None,
                Level::Placeholder(_) if part.is_empty() => return None,
                Level::Placeholder(_) => values.push(part),
            }
        }
        if parts.next().is_some() {
            return None;
        }
        Some(Captures { template: self, values })
    }
}

impl fmt::Display for TopicTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for TopicTemplate {
    type Err = TopicError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The values a topic gave a template's placeholders.
#[derive(Clone, Debug)]
pub struct Captures<'a, 't> {
    template: &'a TopicTemplate,
    values: Vec<&'t str>,
}

impl<'t> Captures<'_, 't> {
    /// The value of the named placeholder.
    pub fn get(&self, name: &str) -> Option<&'t str> {
        self.template
            .placeholders()
            .position(|n| n == name)
            .and_then(|i| self.values.get(i).copied())
    }

    /// `(placeholder, value)` pairs in template order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &'t str)> {
        self.template.placeholders().zip(self.values.iter().copied())
    }
}
