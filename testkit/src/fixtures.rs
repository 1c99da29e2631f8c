//! The payload-mapping fixtures (`mapping/tests/fixtures/`): each shape's
//! payload file, the topic it is sent on and the readings it must become,
//! read by the mapping crate's tests and by the end-to-end tests alike.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The fixtures' folder.
pub fn mapping_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../mapping/tests/fixtures")
}

/// One payload shape of `expected.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingShape {
    /// The mapping (in `mappings.toml`) that reads it.
    pub mapping: String,
    /// The payload file, in the fixtures' folder.
    pub payload: String,
    /// The topic it is sent on.
    pub topic: String,
    /// The readings it becomes, in order.
    pub readings: Vec<ExpectedReading>,
    /// The units it gives: source, metric, unit.
    #[serde(default)]
    pub units: Vec<[String; 3]>,
}

/// A reading a shape must become.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedReading {
    /// Its source.
    pub source: String,
    /// Its metric.
    pub metric: String,
    /// RFC 3339 with milliseconds, or `received` for the receive time.
    pub time: String,
    /// The value as a number (booleans 1 and 0).
    pub value: f64,
    /// `good` unless given.
    #[serde(default = "good")]
    pub quality: String,
}

fn good() -> String {
    "good".into()
}

#[derive(Deserialize)]
struct Shapes {
    shape: Vec<MappingShape>,
}

/// Every shape of `expected.toml`.
pub fn mapping_shapes() -> Vec<MappingShape> {
    let path = mapping_fixtures().join("expected.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    toml::from_str::<Shapes>(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())).shape
}
