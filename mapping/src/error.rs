//! What can go wrong: a mapping that cannot be used (at start-up), and a
//! payload a mapping cannot read (a dead letter).

use thiserror::Error;

/// A `[[mapping]]` that cannot be used: a bad path, template, time format,
/// `.proto` file, or keys that contradict each other.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("mapping {mapping:?}: {problem}")]
#[non_exhaustive]
pub struct SpecError {
    /// The mapping's name.
    pub mapping: String,
    /// What is wrong and how to put it right.
    pub problem: String,
}

impl SpecError {
    pub(crate) fn new(mapping: &str, problem: impl Into<String>) -> Self {
        Self { mapping: mapping.to_owned(), problem: problem.into() }
    }
}

/// A payload, or a part of one, that a mapping cannot read: which mapping,
/// where in the payload, what was found there.
///
/// `mapping "kepware": /values/3/v: expected a number, found "n/a"`
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("mapping {mapping:?}: {path}: {problem}")]
#[non_exhaustive]
pub struct MappingError {
    /// The mapping's name.
    pub mapping: String,
    /// Where: a JSON Pointer into the payload (`$` its root), or `payload`
    /// when it could not be parsed at all.
    pub path: String,
    /// What was expected and what was found.
    pub problem: String,
}
