//! Paths into a payload (JSON Pointer, RFC 6901, with `$` for the message
//! root), name templates (`{site}/{/device/id}`) and topic patterns
//! (`factory/{site}/+/{machine}/#`).

use std::fmt;

use crate::node::Node;

/// A JSON Pointer into a payload: `""` is the thing itself, `/a/0/b` a
/// member `a`, its element 0, that element's member `b` (`~1` is `/`, `~0`
/// is `~` inside a name). A leading `$` starts from the message root
/// instead of the current record: `$/timestamp`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pointer {
    text: String,
    from_root: bool,
    tokens: Vec<(String, Option<usize>)>,
}

impl Pointer {
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let (from_root, rest) = match text.strip_prefix('$') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        if !rest.is_empty() && !rest.starts_with('/') {
            return Err(format!(
                "{text:?} is not a JSON Pointer: it must be empty or start with / (or $/ for the message root), e.g. \"/temp\""
            ));
        }
        let mut tokens = Vec::new();
        for raw in rest.split('/').skip(1) {
            let mut key = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    key.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => key.push('~'),
                    Some('1') => key.push('/'),
                    _ => {
                        return Err(format!(
                            "{text:?}: `~` must be followed by 0 (for ~) or 1 (for /)"
                        ));
                    }
                }
            }
            let index = (key == "0" || (!key.starts_with('0') && !key.is_empty()))
                .then(|| key.parse().ok())
                .flatten();
            tokens.push((key, index));
        }
        Ok(Self { text: text.to_owned(), from_root, tokens })
    }

    /// The node at this path, from `record` (or `root` for a `$` path).
    pub(crate) fn find<'n, 'a>(
        &self,
        record: &'n Node<'a>,
        root: &'n Node<'a>,
    ) -> Option<&'n Node<'a>> {
        let mut at = if self.from_root { root } else { record };
        for (key, index) in &self.tokens {
            at = at.child(key, *index)?;
        }
        Some(at)
    }

    /// Whether this is the path of the member `key` of the object at `parent`.
    pub(crate) fn is_member_of(&self, parent: &Self, key: &str) -> bool {
        self.from_root == parent.from_root
            && self.tokens.len() == parent.tokens.len() + 1
            && self.tokens[..parent.tokens.len()] == parent.tokens[..]
            && self.tokens.last().is_some_and(|(k, _)| k == key)
    }

    pub(crate) fn is_from_root(&self) -> bool {
        self.from_root
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// One piece of a name template.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Part {
    Text(String),
    /// A named topic level, by its index among the captures.
    Level(usize),
    /// A payload field (a scalar, as text).
    Field(Pointer),
    /// The member's key (`fields`) or the entry's name (`values`).
    Key,
}

/// A name built from text, topic levels and payload fields:
/// `{site}/{machine}`, `{/device}`, `line-{$/line}/{key}`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Template {
    pub(crate) text: String,
    pub(crate) parts: Vec<Part>,
}

impl Template {
    /// Parses `text`; `levels` are the topic pattern's named levels,
    /// `key`: whether `{key}` means something here.
    pub(crate) fn parse(text: &str, levels: &[String], key: bool) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let Some(len) = rest[open..].find('}') else {
                return Err(format!("{text:?}: a `{{` is not closed"));
            };
            let name = &rest[open + 1..open + len];
            parts.push(if name.starts_with('/') || name.starts_with('$') {
                Part::Field(Pointer::parse(name)?)
            } else if let Some(i) = levels.iter().position(|l| l == name) {
                Part::Level(i)
            } else if name == "key" && key {
                Part::Key
            } else if name == "key" {
                return Err(format!(
                    "{text:?}: {{key}} names a member of `fields` or an entry of `values`; this mapping has neither"
                ));
            } else {
                return Err(format!(
                    "{text:?}: {{{name}}} is neither a named topic level ({}) nor a payload field (a path starting with /)",
                    if levels.is_empty() {
                        "the topic has none".to_owned()
                    } else {
                        levels.iter().map(|l| format!("{{{l}}}")).collect::<Vec<_>>().join(", ")
                    }
                ));
            });
            rest = &rest[open + len + 1..];
        }
        if rest.contains('}') {
            return Err(format!("{text:?}: a `}}` without its `{{`"));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self { text: text.to_owned(), parts })
    }

    /// The payload fields this template reads.
    pub(crate) fn fields(&self) -> impl Iterator<Item = &Pointer> {
        self.parts.iter().filter_map(|p| match p {
            Part::Field(f) => Some(f),
            _ => None,
        })
    }

    pub(crate) fn uses_key(&self) -> bool {
        self.parts.contains(&Part::Key)
    }
}

/// One level of a topic pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Level {
    Text(String),
    Named(String),
    Any,
    Rest,
}

/// An MQTT topic filter whose levels may be named: `plant/{site}/+/{machine}/#`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TopicPattern {
    text: String,
    levels: Vec<Level>,
    names: Vec<String>,
}

impl TopicPattern {
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut levels = Vec::new();
        let mut names = Vec::new();
        let parts: Vec<&str> = text.split('/').collect();
        for (i, level) in parts.iter().enumerate() {
            let l = if let Some(name) = level.strip_prefix('{').and_then(|l| l.strip_suffix('}')) {
                if name.is_empty()
                    || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err(format!(
                        "topic {text:?}: {level:?} is not a level name (letters, digits, _ and -)"
                    ));
                }
                if names.iter().any(|n| n == name) {
                    return Err(format!("topic {text:?}: {{{name}}} appears twice"));
                }
                names.push(name.to_owned());
                Level::Named(name.to_owned())
            } else if *level == "+" {
                Level::Any
            } else if *level == "#" {
                if i + 1 != parts.len() {
                    return Err(format!("topic {text:?}: # must be the last level"));
                }
                Level::Rest
            } else if level.contains(['{', '}', '+', '#']) {
                return Err(format!(
                    "topic {text:?}: {level:?}: a level is text, a whole {{name}}, + or a last #"
                ));
            } else {
                Level::Text((*level).to_owned())
            };
            levels.push(l);
        }
        let this = Self { text: text.to_owned(), levels, names };
        shopfloor_schemas::topic::validate_topic_filter(&this.filter())
            .map_err(|e| format!("topic {text:?}: {e}"))?;
        Ok(this)
    }

    /// The filter to subscribe to.
    pub(crate) fn filter(&self) -> String {
        let levels: Vec<&str> = self
            .levels
            .iter()
            .map(|l| match l {
                Level::Text(t) => t.as_str(),
                Level::Named(_) | Level::Any => "+",
                Level::Rest => "#",
            })
            .collect();
        levels.join("/")
    }

    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }

    /// The named levels of `topic`, in order, when it matches.
    pub(crate) fn matches<'t>(&self, topic: &'t str) -> Option<Vec<&'t str>> {
        let mut got = topic.split('/');
        let mut names = Vec::with_capacity(self.names.len());
        for level in &self.levels {
            match level {
                // `#` also matches the parent level (MQTT 5 §4.7.1.2).
                Level::Rest => return Some(names),
                Level::Text(t) => (got.next()? == t).then_some(())?,
                Level::Any => {
                    got.next()?;
                }
                Level::Named(_) => names.push(got.next()?),
            }
        }
        got.next().is_none().then_some(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_follow_rfc_6901() {
        let bump = bumpalo::Bump::new();
        let doc = crate::node::json(br#"{"a/b":{"m~n":[10,20]},"t":1}"#, &bump).unwrap();
        let p = Pointer::parse("/a~1b/m~0n/1").unwrap();
        assert_eq!(p.find(&doc, &doc), Some(&Node::I64(20)));
        assert_eq!(Pointer::parse("").unwrap().find(&doc, &doc), Some(&doc));
        let inner = doc.child("a/b", None).unwrap();
        assert_eq!(Pointer::parse("$/t").unwrap().find(inner, &doc), Some(&Node::I64(1)));
        assert_eq!(Pointer::parse("/01").unwrap().tokens[0].1, None, "no leading zeros");
        assert!(Pointer::parse("temp").is_err());
        assert!(Pointer::parse("/a~2").is_err());
        assert!(Pointer::parse("/t").unwrap().is_member_of(&Pointer::parse("").unwrap(), "t"));
    }

    #[test]
    fn templates_name_levels_fields_and_keys() {
        let levels = vec!["site".to_owned()];
        let t = Template::parse("{site}/x-{/id}/{key}", &levels, true).unwrap();
        assert_eq!(t.parts.len(), 5);
        assert!(t.uses_key());
        assert!(Template::parse("{nope}", &levels, true).unwrap_err().contains("{site}"));
        assert!(Template::parse("{key}", &levels, false).is_err());
        assert!(Template::parse("{site", &levels, false).is_err());
        assert!(Template::parse("site}", &levels, false).is_err());
    }

    #[test]
    fn topic_patterns_match_and_capture() {
        let p = TopicPattern::parse("f/{site}/+/{m}/#").unwrap();
        assert_eq!(p.filter(), "f/+/+/+/#");
        assert_eq!(p.matches("f/s1/x/m1/a/b"), Some(vec!["s1", "m1"]));
        assert_eq!(p.matches("f/s1/x/m1"), Some(vec!["s1", "m1"]));
        assert_eq!(p.matches("f/s1/x"), None);
        let exact = TopicPattern::parse("a/{b}").unwrap();
        assert_eq!(exact.matches("a/b/c"), None);
        assert!(TopicPattern::parse("a/#/b").is_err());
        assert!(TopicPattern::parse("a/{b}/{b}").is_err());
        assert!(TopicPattern::parse("a/x{b}").is_err());
        assert!(TopicPattern::parse("").is_err());
    }
}
