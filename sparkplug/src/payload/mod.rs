//! The typed payload layer: [`Payload`], [`Metric`], [`DataSet`],
//! [`Template`], [`PropertySet`], checked against each metric's data type.
//!
//! DATA and CMD metrics usually carry an alias and no datatype, so decoding
//! them needs the birth's table: [`BirthTypes`]. Births carry names, aliases
//! and datatypes and decode with an empty table.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;

use crate::datatype::DataType;
use crate::error::DecodeError;
use crate::proto;
use crate::value::{
    MetricValue, Scalar, SignedEncoding, ValueError, array_from_bytes, array_to_bytes,
    basic_from_wire, basic_to_wire,
};

/// Conversions between [`Scalar`] and each value oneof of the schema: all
/// four share the six scalar members and differ in the rest.
macro_rules! scalar_oneof {
    ($($oneof:path),+) => {$(
        impl From<Scalar> for $oneof {
            fn from(s: Scalar) -> Self {
                match s {
                    Scalar::Int(v) => Self::Int(v),
                    Scalar::Long(v) => Self::Long(v),
                    Scalar::Float(v) => Self::Float(v),
                    Scalar::Double(v) => Self::Double(v),
                    Scalar::Boolean(v) => Self::Boolean(v),
                    Scalar::String(v) => Self::String(v),
                }
            }
        }

        impl $oneof {
            /// The scalar member, or the value back when it is another one.
            fn into_scalar(self) -> Result<Scalar, Self> {
                match self {
                    Self::Int(v) => Ok(Scalar::Int(v)),
                    Self::Long(v) => Ok(Scalar::Long(v)),
                    Self::Float(v) => Ok(Scalar::Float(v)),
                    Self::Double(v) => Ok(Scalar::Double(v)),
                    Self::Boolean(v) => Ok(Scalar::Boolean(v)),
                    Self::String(v) => Ok(Scalar::String(v)),
                    other => Err(other),
                }
            }
        }
    )+};
}

scalar_oneof!(
    proto::MetricValue,
    proto::PropertyValueValue,
    proto::DataSetValueValue,
    proto::ParameterValue
);

mod raw;

pub(crate) use raw::metric_from_raw;
use raw::metric_to_raw;

/// The metadata of a metric (files, multi-part bytes): the raw message.
pub type MetaData = proto::MetaData;

/// A decoded Sparkplug B payload.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Payload {
    /// Time of sending, UTC ms.
    pub timestamp: Option<u64>,
    /// The sequence number, as on the wire (0–255 when valid; absent on
    /// NDEATH, NCMD and DCMD).
    pub seq: Option<u64>,
    /// The payload's `uuid`, if any.
    pub uuid: Option<String>,
    /// The payload's opaque `body`, if any.
    pub body: Option<Bytes>,
    /// The metrics.
    pub metrics: Vec<Metric>,
}

/// A typed metric.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    /// The name. Decoding fills it in from the birth when the wire carried
    /// only an alias (shared with the birth's table: no copy per message).
    pub name: Option<Arc<str>>,
    /// The alias.
    pub alias: Option<u64>,
    /// Time of acquisition, UTC ms.
    pub timestamp: Option<u64>,
    /// The data type, from the wire or, for DATA and CMD, from the birth.
    pub datatype: DataType,
    /// Not a real-time value (store and forward).
    pub is_historical: bool,
    /// Not to be historised.
    pub is_transient: bool,
    /// The value; `None` is a null value (`is_null` on the wire).
    pub value: Option<MetricValue>,
    /// Properties (`Quality`, `engUnit`…).
    pub properties: Option<PropertySet>,
    /// Metadata (files, multi-part bytes).
    pub metadata: Option<Box<MetaData>>,
}

impl Metric {
    /// A named metric with a value and a timestamp, nothing else set.
    pub fn new(name: impl Into<Arc<str>>, timestamp: u64, value: MetricValue) -> Self {
        Self {
            name: Some(name.into()),
            alias: None,
            timestamp: Some(timestamp),
            datatype: value.datatype(),
            is_historical: false,
            is_transient: false,
            value: Some(value),
            properties: None,
            metadata: None,
        }
    }

    /// How the metric is named in errors and logs: its name, else its alias.
    pub fn id(&self) -> String {
        match (&self.name, self.alias) {
            (Some(n), _) => format!("{n:?}"),
            (None, Some(a)) => format!("alias {a}"),
            (None, None) => "an unnamed metric".to_owned(),
        }
    }
}

/// A table: named, typed columns and rows of values.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DataSet {
    /// Column names and types (basic types only).
    pub columns: Vec<(String, DataType)>,
    /// Rows; each has one element per column, `None` for a null element.
    pub rows: Vec<Vec<Option<MetricValue>>>,
}

/// A template definition (NBIRTH only) or instance.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Template {
    /// Version, to catch mismatches.
    pub version: Option<String>,
    /// For an instance: the definition's name.
    pub template_ref: Option<String>,
    /// Whether this is a definition.
    pub is_definition: bool,
    /// Members.
    pub metrics: Vec<Metric>,
    /// Parameters.
    pub parameters: Vec<Parameter>,
}

/// A template parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct Parameter {
    /// Name.
    pub name: String,
    /// Type (basic types only).
    pub datatype: DataType,
    /// Value; `None` when absent.
    pub value: Option<MetricValue>,
}

/// Ordered key–value properties of a metric.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PropertySet(pub Vec<(String, PropertyValue)>);

impl PropertySet {
    /// The property with this key.
    pub fn get(&self, key: &str) -> Option<&PropertyValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Sets a property, replacing one with the same key.
    pub fn set(&mut self, key: impl Into<String>, value: PropertyValue) {
        let key = key.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }
}

/// A property's value.
#[derive(Clone, Debug, PartialEq)]
pub enum PropertyValue {
    /// A basic-type value.
    Value(MetricValue),
    /// A null value of a type.
    Null(DataType),
    /// A nested property set.
    PropertySet(PropertySet),
    /// A list of property sets.
    PropertySetList(Vec<PropertySet>),
}

/// Hashes alias numbers with one multiplication (Fibonacci hashing). SipHash,
/// std's default, was a seventh of DDATA decode time; aliases are small
/// integers that need no protection against crafted collisions (a peer that
/// picks colliding aliases only slows its own decoding).
#[derive(Clone, Copy, Debug, Default)]
struct AliasHasher(u64);

impl std::hash::Hasher for AliasHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type AliasMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<AliasHasher>>;

/// Names and types from births, to decode DATA and CMD metrics that carry
/// only an alias or omit the datatype.
#[derive(Clone, Debug, Default)]
pub struct BirthTypes {
    /// Aliases numbered densely from 0 (as edge nodes number them), by
    /// index: a DATA metric's lookup is one bounds check.
    dense: Vec<Option<(Arc<str>, DataType)>>,
    /// The other aliases.
    by_alias: AliasMap<(Arc<str>, DataType)>,
    by_name: HashMap<String, DataType>,
}

impl BirthTypes {
    /// An empty table (enough for births, which carry their datatypes).
    pub fn new() -> Self {
        Self::default()
    }

    /// Metric names known (template members by their path included).
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether `name` is known.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The table of a decoded birth.
    pub fn from_birth(birth: &Payload) -> Self {
        let mut t = Self::new();
        t.add_birth(birth);
        t
    }

    /// Adds a birth's metrics (a DBIRTH after its NBIRTH: aliases are unique
    /// across an edge node's whole metric set).
    pub fn add_birth(&mut self, birth: &Payload) {
        for m in &birth.metrics {
            if let Some(name) = &m.name {
                self.insert_shared(name.clone(), m.alias, m.datatype);
                self.add_members(name, m);
            }
        }
    }

    /// The members of a template (definition or instance) by path,
    /// `Name/Member` (nested: `Name/Member/Sub`), for DATA that leaves
    /// their datatypes out.
    fn add_members(&mut self, path: &str, m: &Metric) {
        let Some(MetricValue::Template(t)) = &m.value else { return };
        for member in &t.metrics {
            if let Some(name) = &member.name {
                let sub = format!("{path}/{name}");
                self.by_name.insert(sub.clone(), member.datatype);
                self.add_members(&sub, member);
            }
        }
    }

    /// Adds one metric.
    pub fn insert(&mut self, name: &str, alias: Option<u64>, datatype: DataType) {
        self.insert_shared(name.into(), alias, datatype);
    }

    fn insert_shared(&mut self, name: Arc<str>, alias: Option<u64>, datatype: DataType) {
        self.by_name.insert(name.to_string(), datatype);
        let Some(a) = alias else { return };
        // Dense while aliases stay near the count of names: a peer's alias
        // of 2^40 must not make a table of 2^40 slots.
        let limit = 2 * self.by_name.len() + 16;
        match usize::try_from(a) {
            Ok(i) if i < limit => {
                if i >= self.dense.len() {
                    self.dense.resize(i + 1, None);
                }
                self.by_alias.remove(&a);
                self.dense[i] = Some((name, datatype));
            }
            _ => {
                if let Some(slot) = usize::try_from(a).ok().and_then(|i| self.dense.get_mut(i)) {
                    *slot = None;
                }
                self.by_alias.insert(a, (name, datatype));
            }
        }
    }

    /// The shared name and the type of an alias.
    #[inline]
    pub(crate) fn alias_entry(&self, alias: u64) -> Option<&(Arc<str>, DataType)> {
        match usize::try_from(alias).ok().and_then(|i| self.dense.get(i)) {
            Some(Some(entry)) => Some(entry),
            _ => self.by_alias.get(&alias),
        }
    }

    /// Name and type of an alias.
    pub fn alias(&self, alias: u64) -> Option<(&str, DataType)> {
        self.alias_entry(alias).map(|(n, t)| (&**n, *t))
    }

    /// Type of a name.
    pub fn datatype(&self, name: &str) -> Option<DataType> {
        self.by_name.get(name).copied()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// Options for encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EncodeOptions {
    /// How signed 8- to 32-bit integers are written.
    pub signed: SignedEncoding,
    /// Whether metrics carry their datatype: births MUST, DATA and CMD SHOULD
    /// NOT (`tck-id-payloads-metric-datatype-not-req`).
    pub datatypes: bool,
}

impl EncodeOptions {
    /// Sign-extended integers, a datatype on every metric.
    pub const DEFAULT: Self = Self { signed: SignedEncoding::SignExtend, datatypes: true };

    /// These options with `signed` integers.
    pub const fn with_signed(self, signed: SignedEncoding) -> Self {
        Self { signed, ..self }
    }

    /// These options with (or without) datatypes on metrics.
    pub const fn with_datatypes(self, datatypes: bool) -> Self {
        Self { datatypes, ..self }
    }
}

impl Default for EncodeOptions {
    /// [`EncodeOptions::DEFAULT`].
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl Payload {
    /// Decodes a payload. `types` resolves aliases and missing datatypes
    /// (pass [`BirthTypes::new`] for births). With the `compression` feature,
    /// a compressed envelope is unwrapped first.
    pub fn decode(bytes: &[u8], types: &BirthTypes) -> Result<Self, DecodeError> {
        if let Some(result) = crate::direct::decode(bytes, types) {
            return result;
        }
        let raw = proto::Payload::decode(bytes)?;
        #[cfg(feature = "compression")]
        if crate::compression::is_compressed(&raw) {
            let inner = crate::compression::decompress(&raw)?;
            return Self::from_raw(proto::Payload::decode(&inner[..])?, types);
        }
        // Without the feature, the envelope must not pass for a payload
        // (its only metric, `algorithm`, would be taken for a reading).
        #[cfg(not(feature = "compression"))]
        if raw.uuid.as_deref() == Some("SPBV1.0_COMPRESSED") {
            return Err(DecodeError::Compression {
                reason: "a compressed payload (uuid SPBV1.0_COMPRESSED), and this build has no \
                         Sparkplug compression (feature `compression` of shopfloor-sparkplug)"
                    .into(),
            });
        }
        Self::from_raw(raw, types)
    }

    /// Types a raw payload.
    pub fn from_raw(raw: proto::Payload, types: &BirthTypes) -> Result<Self, DecodeError> {
        let metrics = raw
            .metrics
            .into_iter()
            .enumerate()
            .map(|(i, m)| metric_from_raw(m, types, &|| format!("metrics[{i}]")))
            .collect::<Result<_, _>>()?;
        Ok(Self { timestamp: raw.timestamp, seq: raw.seq, uuid: raw.uuid, body: raw.body, metrics })
    }

    /// The raw message.
    pub fn to_raw(&self, options: EncodeOptions) -> proto::Payload {
        proto::Payload {
            timestamp: self.timestamp,
            metrics: self.metrics.iter().map(|m| metric_to_raw(m, options)).collect(),
            seq: self.seq,
            uuid: self.uuid.clone(),
            body: self.body.clone(),
        }
    }

    /// Encodes the payload.
    pub fn encode(&self, options: EncodeOptions) -> Vec<u8> {
        self.to_raw(options).encode_to_vec()
    }
}
