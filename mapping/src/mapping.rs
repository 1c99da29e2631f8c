//! A compiled mapping and what it makes of a payload.

use std::borrow::Cow;
use std::collections::HashSet;
use std::path::Path;

use bumpalo::Bump;
use compact_str::CompactString;
use shopfloor_schemas::{Batch, Quality, Reading, Timestamp, Value, ValueType};

use crate::error::{MappingError, SpecError};
use crate::node::{Found, Node};
use crate::path::{Part, Pointer, Template, TopicPattern};
use crate::spec::{Format, MappingSpec, QualityCodes};
use crate::time::TimeFormat;

/// How the payload is parsed.
#[derive(Clone, Debug)]
enum Parser {
    Json,
    Cbor,
    Text,
    Csv {
        delimiter: u8,
        columns: Option<Vec<String>>,
    },
    #[cfg(feature = "protobuf")]
    Protobuf(prost_reflect::MessageDescriptor),
}

/// Which parts of a record are readings.
#[derive(Clone, Debug)]
enum Select {
    /// One reading, its value here.
    One(Pointer),
    /// A reading per entry: its name and where its value is.
    Values(Vec<(String, Pointer)>),
    /// A reading per member of the object here, named by its key; the
    /// value at `value` within each member.
    Fields { at: Pointer, value: Pointer, skip: Vec<String> },
}

#[derive(Clone, Debug)]
enum Unit {
    Fixed(String),
    Field(Pointer),
}

/// A checked, ready mapping (see [`MappingSpec`] for what each part means).
#[derive(Clone, Debug)]
pub struct Mapping {
    name: String,
    topic: TopicPattern,
    parser: Parser,
    each: Option<Pointer>,
    /// `None`: the topic itself.
    source: Option<Template>,
    metric: Template,
    select: Select,
    timestamp: Option<(Pointer, TimeFormat)>,
    quality: Option<Pointer>,
    quality_map: Vec<(String, Quality)>,
    quality_codes: Option<QualityCodes>,
    value_type: Option<ValueType>,
    linear: Option<(f64, f64)>,
    unit: Option<Unit>,
}

/// The metric unit a payload gave, for the metrics catalogue.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct MetricUnit {
    /// The readings' source.
    pub source: String,
    /// The metric.
    pub metric: String,
    /// Its engineering unit.
    pub unit: String,
}

/// What a mapping made of one message.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Mapped {
    /// The readings, a batch per source (in payload order).
    pub batches: Vec<Batch>,
    /// The units the payload or the mapping gave, once per metric.
    pub units: Vec<MetricUnit>,
    /// What could not be read. The rest was: a bad field costs its
    /// reading (a bad record, time or source its record), never the
    /// message.
    pub failures: Vec<MappingError>,
    /// Readings that took the receive time because the record had no time
    /// at the mapping's `timestamp` path (they are marked `uncertain`).
    pub receive_time: usize,
}

impl Mapped {
    /// How many readings.
    pub fn len(&self) -> usize {
        self.batches.iter().map(|b| b.readings.len()).sum()
    }

    /// No readings.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn pointer(spec: &MappingSpec, key: &str, text: &str) -> Result<Pointer, SpecError> {
    Pointer::parse(text).map_err(|e| SpecError::new(&spec.name, format!("{key}: {e}")))
}

fn opt_pointer(
    spec: &MappingSpec,
    key: &str,
    text: Option<&String>,
) -> Result<Option<Pointer>, SpecError> {
    text.map(|t| pointer(spec, key, t)).transpose()
}

impl Mapping {
    #[cfg_attr(not(feature = "protobuf"), allow(unused_variables))]
    pub(crate) fn compile(spec: &MappingSpec, base: &Path) -> Result<Self, SpecError> {
        let err = |p: String| SpecError::new(&spec.name, p);
        if spec.name.is_empty() {
            return Err(err(
                "name is empty; give every mapping a name (dead letters carry it)".into()
            ));
        }
        let topic = TopicPattern::parse(&spec.topic).map_err(err)?;
        let levels = topic.names();
        let parser = match spec.format {
            Format::Json => Parser::Json,
            Format::Cbor => Parser::Cbor,
            Format::Text => Parser::Text,
            Format::Csv => {
                let d = spec.delimiter.unwrap_or(',');
                let delimiter = u8::try_from(d)
                    .ok()
                    .filter(|b| b.is_ascii() && !matches!(b, b'"' | b'\n' | b'\r'))
                    .ok_or_else(|| {
                        err(format!(
                            "delimiter = {d:?}: one ASCII character, not a quote or line break"
                        ))
                    })?;
                Parser::Csv { delimiter, columns: spec.columns.clone() }
            }
            #[cfg(feature = "protobuf")]
            Format::Protobuf => {
                let (Some(file), Some(message)) = (&spec.proto_file, &spec.message) else {
                    return Err(err("format = \"protobuf\" needs proto_file (the .proto) and message (its full name)".into()));
                };
                let includes: Vec<_> = spec.proto_includes.iter().map(|p| base.join(p)).collect();
                Parser::Protobuf(
                    crate::protobuf::descriptor(&base.join(file), &includes, message)
                        .map_err(err)?,
                )
            }
            #[cfg(not(feature = "protobuf"))]
            Format::Protobuf => {
                return Err(err(
                    "format = \"protobuf\" needs shopfloor-mapping's `protobuf` feature".into(),
                ));
            }
        };
        if spec.format != Format::Protobuf && (spec.proto_file.is_some() || spec.message.is_some())
        {
            return Err(err("proto_file and message are for format = \"protobuf\"".into()));
        }
        if spec.format != Format::Csv && (spec.columns.is_some() || spec.delimiter.is_some()) {
            return Err(err("columns and delimiter are for format = \"csv\"".into()));
        }
        let each = match (&spec.each, spec.format) {
            (Some(e), _) => Some(pointer(spec, "each", e)?),
            (None, Format::Csv) => Some(Pointer::parse("").expect("the empty pointer")),
            (None, _) => None,
        };
        let value = opt_pointer(spec, "value", spec.value.as_ref())?;
        let select = match (value, &spec.values, &spec.fields) {
            (value, None, None) => {
                Select::One(value.unwrap_or_else(|| Pointer::parse("").expect("empty")))
            }
            (None, Some(values), None) => {
                if values.is_empty() {
                    return Err(err(
                        "values is empty: name at least one metric and its path".into()
                    ));
                }
                let mut out = Vec::new();
                for (name, path) in values {
                    out.push((name.clone(), pointer(spec, &format!("values.{name}"), path)?));
                }
                Select::Values(out)
            }
            (value, None, Some(fields)) => Select::Fields {
                at: pointer(spec, "fields", fields)?,
                value: value.unwrap_or_else(|| Pointer::parse("").expect("empty")),
                skip: spec.skip.clone(),
            },
            _ => {
                return Err(err(
                    "give one of value (one reading a record), values (named paths) or fields (every member of an object); values cannot be combined with the others".into(),
                ));
            }
        };
        if !spec.skip.is_empty() && !matches!(select, Select::Fields { .. }) {
            return Err(err("skip applies to fields".into()));
        }
        let keyed = !matches!(select, Select::One(_));
        let metric_text = match (&spec.metric, keyed) {
            (Some(m), _) => m.clone(),
            (None, true) => "{key}".into(),
            (None, false) if levels.iter().any(|l| l == "metric") => "{metric}".into(),
            (None, false) => {
                return Err(err(
                    "metric is not given: name it (\"temperature\", \"{/id}\" from the payload, \"{level}\" from the topic), or name a topic level {metric}".into(),
                ));
            }
        };
        let metric = Template::parse(&metric_text, levels, keyed)
            .map_err(|e| err(format!("metric: {e}")))?;
        if keyed && !metric.uses_key() {
            return Err(err(format!(
                "metric = {metric_text:?} does not use {{key}}: every reading of a record would have the same name"
            )));
        }
        let source = match &spec.source {
            Some(s) => {
                Some(Template::parse(s, levels, keyed).map_err(|e| err(format!("source: {e}")))?)
            }
            None => {
                let used: Vec<usize> = metric
                    .parts
                    .iter()
                    .filter_map(|p| match p {
                        Part::Level(i) => Some(*i),
                        _ => None,
                    })
                    .collect();
                let mut parts = Vec::new();
                for i in (0..levels.len()).filter(|i| !used.contains(i)) {
                    if !parts.is_empty() {
                        parts.push(Part::Text("/".into()));
                    }
                    parts.push(Part::Level(i));
                }
                (!parts.is_empty()).then(|| Template { text: String::new(), parts })
            }
        };
        let timestamp = match &spec.timestamp {
            Some(t) => Some((
                pointer(spec, "timestamp", t)?,
                TimeFormat::parse(spec.time_format.as_deref(), spec.time_zone.as_deref())
                    .map_err(err)?,
            )),
            None if spec.time_format.is_some() || spec.time_zone.is_some() => {
                return Err(err(
                    "time_format and time_zone need timestamp, the path to the time".into()
                ));
            }
            None => None,
        };
        let quality = opt_pointer(spec, "quality", spec.quality.as_ref())?;
        if quality.is_none() && (!spec.quality_map.is_empty() || spec.quality_codes.is_some()) {
            return Err(err(
                "quality_map and quality_codes need quality, the path to the quality".into()
            ));
        }
        let linear = match (spec.scale, spec.offset) {
            (None, None) => None,
            (scale, offset) => {
                let (s, o) = (scale.unwrap_or(1.0), offset.unwrap_or(0.0));
                if !s.is_finite() || !o.is_finite() {
                    return Err(err("scale and offset must be finite numbers".into()));
                }
                if spec.value_type.is_some_and(|t| t != ValueType::F64) {
                    return Err(err(
                        "scale and offset make an f64: type must be f64 (or not given)".into(),
                    ));
                }
                Some((s, o))
            }
        };
        let unit = match (&spec.unit, &spec.unit_field) {
            (Some(_), Some(_)) => {
                return Err(err("give unit (fixed) or unit_field (a path), not both".into()));
            }
            (Some(u), None) => Some(Unit::Fixed(u.clone())),
            (None, Some(p)) => Some(Unit::Field(pointer(spec, "unit_field", p)?)),
            (None, None) => None,
        };
        Ok(Self {
            name: spec.name.clone(),
            topic,
            parser,
            each,
            source,
            metric,
            select,
            timestamp,
            quality,
            quality_map: spec.quality_map.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            quality_codes: spec.quality_codes,
            value_type: spec.value_type,
            linear,
            unit,
        })
    }

    /// The mapping's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The MQTT topic filter to subscribe to.
    pub fn filter(&self) -> String {
        self.topic.filter()
    }

    /// Whether `topic` is one of this mapping's.
    pub fn matches(&self, topic: &str) -> bool {
        self.topic.matches(topic).is_some()
    }

    /// Reads one message received at `received` (the time of readings
    /// whose payload gives none); `None` when the topic is not this
    /// mapping's.
    pub fn decode(&self, topic: &str, payload: &[u8], received: Timestamp) -> Option<Mapped> {
        let levels = self.topic.matches(topic)?;
        let mut out = Mapped::default();
        // The payload's tree, in an arena of the message's own.
        let bump = Bump::with_capacity(payload.len().saturating_mul(2).min(1 << 20));
        let root = match self.parse(payload, &bump) {
            Ok(root) => root,
            Err(problem) => {
                out.failures.push(self.error("payload".into(), problem));
                return Some(out);
            }
        };
        let mut ctx = Ctx {
            topic,
            levels: &levels,
            root: &root,
            received,
            units: HashSet::new(),
            source: String::new(),
            metric: String::new(),
        };
        match &self.each {
            None => self.record(&mut ctx, &root, None, &mut out),
            Some(each) => match each.find(&root, &root) {
                Some(Node::Array(records)) => {
                    for (i, r) in records.iter().enumerate() {
                        self.record(&mut ctx, r, Some(i), &mut out);
                    }
                }
                found => out.failures.push(self.error(
                    self.at_root(each),
                    format!("each: expected an array of records, found {}", Found(found)),
                )),
            },
        }
        Some(out)
    }

    fn parse<'b>(&self, payload: &'b [u8], bump: &'b Bump) -> Result<Node<'b>, String> {
        let text = || std::str::from_utf8(payload).map_err(|e| format!("not UTF-8 text: {e}"));
        match &self.parser {
            Parser::Json => crate::node::json(payload, bump).map_err(|e| format!("not JSON: {e}")),
            Parser::Cbor => crate::node::cbor(payload, bump),
            Parser::Text => Ok(crate::node::scalar(text()?)),
            Parser::Csv { delimiter, columns } => {
                crate::node::csv(text()?, *delimiter, columns.as_deref(), bump)
            }
            #[cfg(feature = "protobuf")]
            Parser::Protobuf(desc) => crate::protobuf::decode(desc, payload, bump),
        }
    }

    fn error(&self, path: String, problem: String) -> MappingError {
        MappingError { mapping: self.name.clone(), path, problem }
    }

    /// The path of a pointer followed from the root.
    fn at_root(&self, p: &Pointer) -> String {
        let s = p.as_str();
        if s.is_empty() || s == "$" { "$".into() } else { s.into() }
    }

    /// The path of `p` followed from record `index` (and its member `key`).
    fn at(&self, p: &Pointer, index: Option<usize>, member: Option<(&Pointer, &str)>) -> String {
        if p.is_from_root() {
            return self.at_root(p);
        }
        let mut s = String::new();
        if let (Some(each), Some(i)) = (&self.each, index) {
            s.push_str(each.as_str().trim_start_matches('$'));
            s.push('/');
            s.push_str(&i.to_string());
        }
        if let Some((fields, key)) = member {
            s.push_str(fields.as_str().trim_start_matches('$'));
            s.push('/');
            s.push_str(&key.replace('~', "~0").replace('/', "~1"));
        }
        s.push_str(p.as_str());
        if s.is_empty() { "$".into() } else { s }
    }

    fn record<'a>(
        &self,
        ctx: &mut Ctx<'_, 'a>,
        rec: &Node<'a>,
        index: Option<usize>,
        out: &mut Mapped,
    ) {
        let root = ctx.root;
        let fail = |p: &Pointer, problem: String| self.error(self.at(p, index, None), problem);
        let (timestamp, mut quality) = (ctx.received, Quality::Good);
        let mut timestamp = timestamp;
        let mut guessed_time = false;
        if let Some((p, format)) = &self.timestamp {
            match p.find(rec, root) {
                None | Some(Node::Null) => {
                    guessed_time = true;
                    quality = Quality::Uncertain;
                }
                Some(n) => match format.read(n) {
                    Ok(t) => timestamp = t,
                    Err(e) => {
                        return out
                            .failures
                            .push(fail(p, format!("timestamp: {e}, found {}", Found(Some(n)))));
                    }
                },
            }
        }
        if let Some(p) = &self.quality {
            let found = p.find(rec, root);
            // Absent is good: OPC UA's JSON encoding, for one, leaves a
            // Good status code out.
            match found.filter(|n| **n != Node::Null).map(|n| self.quality_of(n)) {
                Some(Ok(q)) => quality = q.max(quality),
                Some(Err(e)) => {
                    return out
                        .failures
                        .push(fail(p, format!("quality: {e}, found {}", Found(found))));
                }
                None => {}
            }
        }
        // The buffers are the message's, reused record after record.
        let mut source = std::mem::take(&mut ctx.source);
        source.clear();
        match &self.source {
            None => source.push_str(ctx.topic),
            Some(t) => {
                if let Err((p, e)) = self.render(t, ctx, rec, None, &mut source) {
                    ctx.source = source;
                    return out.failures.push(fail(&p, format!("source: {e}")));
                }
            }
        }
        if source.contains('\0') {
            ctx.source = source;
            return out.failures.push(self.error(
                self.at(&Pointer::parse("").expect("empty"), index, None),
                "source: contains NUL".into(),
            ));
        }
        let start = out.len();
        let item = Item { index, timestamp, quality, source: &source };
        match &self.select {
            Select::One(p) => self.reading(ctx, rec, rec, p, None, &item, out),
            Select::Values(entries) => {
                for (name, p) in entries {
                    self.reading(ctx, rec, rec, p, Some((name, None)), &item, out);
                }
            }
            Select::Fields { at, value, skip } => match at.find(rec, root) {
                Some(Node::Object(members)) => {
                    for (key, member) in members.iter() {
                        if skip.iter().any(|s| s == key) || self.reads_elsewhere(at, key) {
                            continue;
                        }
                        self.reading(ctx, rec, member, value, Some((key, Some(at))), &item, out);
                    }
                }
                found => out
                    .failures
                    .push(fail(at, format!("fields: expected an object, found {}", Found(found)))),
            },
        }
        if guessed_time {
            out.receive_time += out.len() - start;
        }
        ctx.source = source;
    }

    /// Whether the member `key` of the `fields` object is read as
    /// something else (time, quality, unit, a name).
    fn reads_elsewhere(&self, fields: &Pointer, key: &str) -> bool {
        let mut others = self.timestamp.iter().map(|(p, _)| p).chain(&self.quality);
        let mut names = self.metric.fields().chain(self.source.iter().flat_map(Template::fields));
        others.any(|p| p.is_member_of(fields, key)) || names.any(|p| p.is_member_of(fields, key))
    }

    #[allow(clippy::too_many_arguments)]
    fn reading<'a>(
        &self,
        ctx: &mut Ctx<'_, 'a>,
        rec: &Node<'a>,
        item: &Node<'a>,
        p: &Pointer,
        key: Option<(&str, Option<&Pointer>)>,
        at: &Item<'_>,
        out: &mut Mapped,
    ) {
        let member = key.and_then(|(k, fields)| fields.map(|f| (f, k)));
        let fail = |p: &Pointer, problem: String| self.error(self.at(p, at.index, member), problem);
        let found = p.find(item, ctx.root);
        let value = match found.map(|n| self.value_of(n)) {
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                return out.failures.push(fail(p, format!("{e}, found {}", Found(found))));
            }
            None => return out.failures.push(fail(p, format!("value: {}", Found(None)))),
        };
        if let Value::String(s) = &value
            && s.contains('\0')
        {
            return out.failures.push(fail(p, "the text contains NUL".into()));
        }
        let mut metric = std::mem::take(&mut ctx.metric);
        metric.clear();
        let named = self.render(&self.metric, ctx, rec, key.map(|(k, _)| k), &mut metric);
        let reading = self.finish(ctx, item, &metric, named, p, member, value, at, out);
        ctx.metric = metric;
        if let Some(r) = reading {
            match out.batches.last_mut() {
                Some(b) if b.source == at.source => b.readings.push(r),
                _ => out.batches.push(Batch { source: at.source.into(), readings: vec![r] }),
            }
        }
    }

    /// The reading named `metric`, once the name is checked and its unit
    /// noted.
    #[allow(clippy::too_many_arguments)]
    fn finish<'a>(
        &self,
        ctx: &mut Ctx<'_, 'a>,
        item: &Node<'a>,
        metric: &str,
        named: Result<(), (Pointer, String)>,
        p: &Pointer,
        member: Option<(&Pointer, &str)>,
        value: Value,
        at: &Item<'_>,
        out: &mut Mapped,
    ) -> Option<Reading> {
        let fail = |p: &Pointer, problem: String| self.error(self.at(p, at.index, member), problem);
        if let Err((q, e)) = named {
            out.failures.push(self.error(self.at(&q, at.index, None), format!("metric: {e}")));
            return None;
        }
        if metric.is_empty() || metric.contains('\0') {
            out.failures.push(fail(p, format!("metric name {metric:?} is empty or contains NUL")));
            return None;
        }
        if let Some(unit) = &self.unit {
            let u = match unit {
                Unit::Fixed(u) => Some(Cow::Borrowed(u.as_str())),
                Unit::Field(q) => q.find(item, ctx.root).and_then(Node::as_text),
            };
            if let Some(u) = u.filter(|u| !u.is_empty() && !u.contains('\0'))
                && ctx.units.insert((at.source.to_owned(), metric.to_owned()))
            {
                out.units.push(MetricUnit {
                    source: at.source.to_owned(),
                    metric: metric.to_owned(),
                    unit: u.into_owned(),
                });
            }
        }
        Some(Reading {
            metric: CompactString::from(metric),
            timestamp: at.timestamp,
            value,
            quality: at.quality,
        })
    }

    /// Renders a name template into `buf`; on failure, the path and why.
    fn render<'a>(
        &self,
        t: &Template,
        ctx: &Ctx<'_, 'a>,
        rec: &Node<'a>,
        key: Option<&str>,
        buf: &mut String,
    ) -> Result<(), (Pointer, String)> {
        for part in &t.parts {
            match part {
                Part::Text(s) => buf.push_str(s),
                Part::Level(i) => buf.push_str(ctx.levels[*i]),
                Part::Key => buf.push_str(key.unwrap_or_default()),
                Part::Field(p) => {
                    let found = p.find(rec, ctx.root);
                    match found.and_then(Node::as_text) {
                        Some(s) => buf.push_str(&s),
                        None => {
                            return Err((
                                p.clone(),
                                format!("expected text or a number, found {}", Found(found)),
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn quality_of(&self, n: &Node<'_>) -> Result<Quality, String> {
        if !self.quality_map.is_empty() {
            let text = n.as_text().ok_or("expected text, a number or a boolean")?;
            if let Some((_, q)) = self.quality_map.iter().find(|(k, _)| *k == text) {
                return Ok(*q);
            }
        }
        let number = |n: &Node<'_>| match *n {
            Node::I64(v) => Some(v),
            Node::U64(v) => i64::try_from(v).ok(),
            _ => None,
        };
        match (n, self.quality_codes) {
            (Node::Bool(b), _) => Ok(if *b { Quality::Good } else { Quality::Bad }),
            (Node::Str(s), _) => Quality::ALL
                .into_iter()
                .find(|q| s.eq_ignore_ascii_case(q.as_str()))
                .ok_or_else(|| "not good, uncertain, bad or stale, and not in quality_map".into()),
            (n, Some(QualityCodes::Opcua)) => number(n)
                .and_then(|v| u32::try_from(v).ok())
                .map(Quality::from_opcua_status)
                .ok_or_else(|| "not an OPC UA status code".into()),
            (n, Some(QualityCodes::Sparkplug)) => number(n)
                .and_then(|v| i32::try_from(v).ok())
                .map(Quality::from_sparkplug)
                .ok_or_else(|| "not a Sparkplug quality code".into()),
            (_, None) => Err("a number not in quality_map; name it there, or set quality_codes = \"opcua\" or \"sparkplug\"".into()),
        }
    }

    fn value_of(&self, n: &Node<'_>) -> Result<Value, String> {
        let v = coerce(n, self.value_type)?;
        match self.linear {
            None => Ok(v),
            Some((scale, offset)) => match v.as_f64() {
                Some(x) if !matches!(v, Value::Bool(_)) => Ok(Value::F64(x * scale + offset)),
                _ => Err("scale/offset: expected a number".into()),
            },
        }
    }
}

/// What every reading of a record shares.
struct Item<'s> {
    index: Option<usize>,
    timestamp: Timestamp,
    quality: Quality,
    source: &'s str,
}

/// What one message's records share.
struct Ctx<'t, 'a> {
    topic: &'t str,
    levels: &'t [&'t str],
    root: &'t Node<'a>,
    received: Timestamp,
    /// (source, metric) whose unit is out already.
    units: HashSet<(String, String)>,
    /// Buffers for a record's source and a reading's metric name.
    source: String,
    metric: String,
}

/// A node as a value of type `ty` (as found when `None`).
fn coerce(n: &Node<'_>, ty: Option<ValueType>) -> Result<Value, String> {
    let expected = |t: &str| Err(format!("expected {t}"));
    match (ty, n) {
        (_, Node::Null) => Err("no value (null)".into()),
        (None, Node::Bool(b)) => Ok(Value::Bool(*b)),
        (None, Node::I64(v)) => Ok(Value::I64(*v)),
        (None, Node::U64(v)) => Ok(Value::U64(*v)),
        (None, Node::F64(v)) => Ok(Value::F64(*v)),
        (None, Node::Str(s)) => Ok(Value::String((*s).to_owned())),
        (None | Some(ValueType::Bytes), Node::Bytes(b)) => Ok(Value::Bytes(b.to_vec().into())),
        (_, Node::Array(_) | Node::Object(_)) => {
            expected("a single value (a path to it: value = \"/...\")")
        }
        (Some(ValueType::F64), n) => match number(n) {
            Some(Node::F64(v)) => Ok(Value::F64(v)),
            Some(Node::I64(v)) => Ok(Value::F64(v as f64)),
            Some(Node::U64(v)) => Ok(Value::F64(v as f64)),
            Some(Node::Bool(b)) => Ok(Value::F64(if b { 1.0 } else { 0.0 })),
            _ => expected("a number"),
        },
        (Some(ValueType::I64), n) => match number(n) {
            Some(Node::I64(v)) => Ok(Value::I64(v)),
            Some(Node::F64(v)) if v.fract() == 0.0 && v.abs() < 9.2e18 => Ok(Value::I64(v as i64)),
            Some(Node::Bool(b)) => Ok(Value::I64(i64::from(b))),
            _ => expected("an integer (i64)"),
        },
        (Some(ValueType::U64), n) => match number(n) {
            Some(Node::I64(v)) if v >= 0 => Ok(Value::U64(v as u64)),
            Some(Node::U64(v)) => Ok(Value::U64(v)),
            Some(Node::F64(v)) if v.fract() == 0.0 && (0.0..1.8e19).contains(&v) => {
                Ok(Value::U64(v as u64))
            }
            Some(Node::Bool(b)) => Ok(Value::U64(u64::from(b))),
            _ => expected("an unsigned integer (u64)"),
        },
        (Some(ValueType::Bool), n) => match number(n) {
            Some(Node::Bool(b)) => Ok(Value::Bool(b)),
            Some(Node::I64(0)) => Ok(Value::Bool(false)),
            Some(Node::I64(1)) => Ok(Value::Bool(true)),
            _ => match n {
                Node::Str(s) if ["on", "yes"].iter().any(|t| s.trim().eq_ignore_ascii_case(t)) => {
                    Ok(Value::Bool(true))
                }
                Node::Str(s) if ["off", "no"].iter().any(|t| s.trim().eq_ignore_ascii_case(t)) => {
                    Ok(Value::Bool(false))
                }
                _ => expected("a boolean (true/false, 1/0, on/off)"),
            },
        },
        (Some(ValueType::String), n) => match n.as_text() {
            Some(s) => Ok(Value::String(s.into_owned())),
            None => expected("text"),
        },
        (Some(ValueType::Bytes), _) => expected("bytes"),
        (Some(_), _) => expected("a value of a type this version knows"),
    }
}

/// A scalar node as a number or boolean, text parsed.
fn number(n: &Node<'_>) -> Option<Node<'static>> {
    match n {
        Node::Bool(b) => Some(Node::Bool(*b)),
        Node::I64(v) => Some(Node::I64(*v)),
        Node::U64(v) => Some(Node::U64(*v)),
        Node::F64(v) => Some(Node::F64(*v)),
        Node::Str(s) => match crate::node::scalar(s) {
            Node::Bool(b) => Some(Node::Bool(b)),
            Node::I64(v) => Some(Node::I64(v)),
            Node::U64(v) => Some(Node::U64(v)),
            Node::F64(v) => Some(Node::F64(v)),
            _ => None,
        },
        _ => None,
    }
}
