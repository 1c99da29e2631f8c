//! The `[[mapping]]` section as written in a configuration file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use shopfloor_schemas::{Quality, ValueType};

use crate::error::SpecError;
use crate::mapping::Mapping;

/// A payload's format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Format {
    /// JSON (RFC 8259); a bare number, `true`, `false` or string is JSON too.
    #[default]
    Json,
    /// CBOR (RFC 8949); integer map keys are named by their decimal text.
    Cbor,
    /// Protobuf, described by `proto_file` and `message`.
    #[serde(alias = "proto")]
    Protobuf,
    /// CSV lines: a record per line (fields by index, or by `columns`).
    Csv,
    /// A bare value as text: a number, `true`/`false`, or else the text.
    Text,
}

/// How numeric quality codes are read when `quality_map` does not name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum QualityCodes {
    /// OPC UA status codes (0 good, severity bits 31..30).
    Opcua,
    /// Sparkplug / OPC DA codes (192 good, 500 stale, 0 bad).
    Sparkplug,
}

/// One mapping: for the topics that match `topic`, how a payload becomes
/// readings. See the crate documentation for each key, with examples.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct MappingSpec {
    /// Names the mapping in dead letters and logs.
    pub name: String,
    /// The topic filter; a level may be a named `{placeholder}`, used in
    /// `source` and `metric`.
    pub topic: String,
    /// The payload format (default JSON).
    #[serde(default)]
    pub format: Format,
    /// A path to an array: each element is a record (default: the payload
    /// is one record; CSV: each line is one).
    pub each: Option<String>,
    /// The source of the readings (a template; default: the named topic
    /// levels but the metric's, joined by `/`, or the topic).
    pub source: Option<String>,
    /// The metric name (a template; default `{key}` with `fields` or
    /// `values`, `{metric}` when the topic names a level so).
    pub metric: Option<String>,
    /// The path to the value: from the record, or with `fields` from each
    /// member (default: the record or member itself).
    pub value: Option<String>,
    /// Several readings per record: metric name → path to its value.
    pub values: Option<BTreeMap<String, String>>,
    /// A path to an object: each of its members is a reading named by its
    /// key (but those in `skip` and those read as time, quality or unit).
    pub fields: Option<String>,
    /// Member keys `fields` leaves out.
    #[serde(default)]
    pub skip: Vec<String>,
    /// The path to the sample time (default: none, the receive time).
    pub timestamp: Option<String>,
    /// How the time is written: `auto` (RFC 3339 text or Unix ms),
    /// `rfc3339`, `unix_s`, `unix_ms`, `unix_us`, `unix_ns`, or a
    /// strftime-like format such as `%d.%m.%Y %H:%M:%S`.
    pub time_format: Option<String>,
    /// The IANA time zone of a strftime-like `time_format` without `%z`
    /// (default UTC).
    pub time_zone: Option<String>,
    /// The path to the quality (default: none, `good`).
    pub quality: Option<String>,
    /// Quality values as found (as text: `"true"`, `"192"`, `"OK"`) to what
    /// they mean.
    #[serde(default)]
    pub quality_map: BTreeMap<String, Quality>,
    /// How numbers in the quality field are read when `quality_map` does
    /// not name them.
    pub quality_codes: Option<QualityCodes>,
    /// The value's type (default: as found). Text is parsed for numbers
    /// and booleans.
    #[serde(rename = "type")]
    pub value_type: Option<ValueType>,
    /// Multiplies a numeric value (the result is `f64`).
    pub scale: Option<f64>,
    /// Added after `scale`.
    pub offset: Option<f64>,
    /// The engineering unit of every reading, for the metrics catalogue.
    pub unit: Option<String>,
    /// The path to the unit, like `value`.
    pub unit_field: Option<String>,
    /// CSV: the names of the columns (default: fields by index, `/0`, `/1`).
    pub columns: Option<Vec<String>>,
    /// CSV: the field delimiter (default `,`).
    pub delimiter: Option<char>,
    /// Protobuf: the `.proto` file (relative to the configuration file).
    pub proto_file: Option<PathBuf>,
    /// Protobuf: the message's full name, package included.
    pub message: Option<String>,
    /// Protobuf: folders searched for imports, besides the file's own.
    #[serde(default)]
    pub proto_includes: Vec<PathBuf>,
}

impl MappingSpec {
    /// A JSON mapping of `topic`, to be filled in.
    pub fn new(name: impl Into<String>, topic: impl Into<String>) -> Self {
        Self { name: name.into(), topic: topic.into(), ..Self::default() }
    }

    /// Checks the mapping and prepares it; relative paths (`proto_file`,
    /// `proto_includes`) are read from `base`, the configuration file's
    /// folder.
    pub fn compile(&self, base: &Path) -> Result<Mapping, SpecError> {
        Mapping::compile(self, base)
    }
}

/// Compiles a file's mappings, checking that their names differ.
pub fn compile_all(specs: &[MappingSpec], base: &Path) -> Result<Vec<Mapping>, SpecError> {
    let mut out: Vec<Mapping> = Vec::with_capacity(specs.len());
    for s in specs {
        if out.iter().any(|m| m.name() == s.name) {
            return Err(SpecError::new(&s.name, "two mappings have this name; names must differ"));
        }
        out.push(s.compile(base)?);
    }
    Ok(out)
}
