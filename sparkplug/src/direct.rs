//! A direct decoder for the common payload shape, the hot path of a host:
//! DATA with a dozen scalar metrics, many times a second per edge node.
//!
//! prost's derived decoder builds a `Vec<proto::Metric>` through its generic
//! merge machinery before the typed layer sees anything; this scan builds each
//! raw metric on the stack and types it at once with the same
//! `metric_from_raw`. It handles the shape well-behaved peers send and
//! declines everything else (`None`): a singular field or value member that
//! appears twice (prost merges those), a wrong wire type, malformed bytes, a
//! compressed envelope, any typing error. [`Payload::decode`] then takes
//! prost's path, whose result and error messages are authoritative. A
//! proptest holds the two paths equal wherever this one answers.
//!
//! Nested messages (metadata, properties, datasets, templates) are decoded by
//! prost from their own bytes, so their recursion limit counts from there
//! rather than from the payload: a difference only a template nested about a
//! hundred levels deep could see.

use bytes::Bytes;
use prost::Message as _;
use prost::encoding::{self, DecodeContext, WireType};

use std::sync::Arc;

use crate::datatype::DataType;
use crate::error::DecodeError;
use crate::payload::{BirthTypes, Metric, Payload, metric_from_raw};
use crate::proto;
use crate::value::{MetricValue, Scalar, array_from_bytes, basic_from_wire};

/// prost's varint decoder with the one-byte case inline.
#[inline(always)]
fn varint(buf: &mut &[u8]) -> Option<u64> {
    match buf.split_first() {
        Some((&b, rest)) if b < 0x80 => {
            *buf = rest;
            Some(u64::from(b))
        }
        _ => encoding::decode_varint(buf).ok(),
    }
}

#[inline(always)]
fn key(buf: &mut &[u8]) -> Option<(u32, WireType)> {
    // As prost: the whole key must fit in 32 bits, then tag ≥ 1.
    let k = u32::try_from(varint(buf)?).ok()?;
    let wire = WireType::try_from(u64::from(k & 7)).ok()?;
    Some((k >> 3, wire)).filter(|(tag, _)| *tag >= 1)
}

fn take<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(varint(buf)?).ok()?;
    if len > buf.len() {
        return None;
    }
    let (body, rest) = buf.split_at(len);
    *buf = rest;
    Some(body)
}

fn fixed<const N: usize>(buf: &mut &[u8]) -> Option<[u8; N]> {
    let (bytes, rest) = buf.split_first_chunk::<N>()?;
    *buf = rest;
    Some(*bytes)
}

fn string(buf: &mut &[u8]) -> Option<String> {
    std::str::from_utf8(take(buf)?).ok().map(str::to_owned)
}

/// Sets an empty slot, or declines a second occurrence.
fn once<T>(slot: &mut Option<T>, value: Option<T>) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value?);
    Some(())
}

/// `Some(result)` when the payload has the common shape; `None` to use prost.
pub(crate) fn decode(bytes: &[u8], types: &BirthTypes) -> Option<Result<Payload, DecodeError>> {
    let mut buf = bytes;
    let mut p = Payload { metrics: Vec::with_capacity(bytes.len() / 16), ..Payload::default() };
    while !buf.is_empty() {
        match key(&mut buf)? {
            (1, WireType::Varint) => once(&mut p.timestamp, varint(&mut buf))?,
            (2, WireType::LengthDelimited) => {
                let i = p.metrics.len();
                let body = take(&mut buf)?;
                let m = match typed_metric(body, types) {
                    Some(m) => m,
                    // Nested messages, or anything typed_metric declines:
                    // the raw metric and the shared typing.
                    None => {
                        metric_from_raw(metric(body)?, types, &|| format!("metrics[{i}]")).ok()?
                    }
                };
                p.metrics.push(m);
            }
            (3, WireType::Varint) => once(&mut p.seq, varint(&mut buf))?,
            (4, WireType::LengthDelimited) => once(&mut p.uuid, string(&mut buf))?,
            (5, WireType::LengthDelimited) => {
                once(&mut p.body, take(&mut buf).map(Bytes::copy_from_slice))?
            }
            (1..=5, _) => return None,
            (tag, wire) => {
                encoding::skip_field(wire, tag, &mut buf, DecodeContext::default()).ok()?
            }
        }
    }
    // Compressed envelopes take the full path, which unwraps them.
    if p.uuid.as_deref() == Some("SPBV1.0_COMPRESSED") {
        return None;
    }
    Some(Ok(p))
}

/// A wire value of a simple metric.
enum Raw<'a> {
    Scalar(Scalar),
    Bytes(&'a [u8]),
}

/// Types a metric straight from its bytes when it is simple: scalar fields
/// and a scalar, bytes or array value, no metadata, properties, dataset or
/// template. `None` otherwise, or for anything that would be an error: the
/// caller then goes through [`metric_from_raw`], which has the same rules and
/// the error messages. The proptests hold the two equal.
fn typed_metric(mut buf: &[u8], types: &BirthTypes) -> Option<Metric> {
    use WireType::{LengthDelimited as Len, SixtyFourBit, ThirtyTwoBit, Varint};
    let (mut name, mut alias, mut timestamp, mut datatype) =
        (None::<&str>, None, None, None::<u32>);
    let (mut historical, mut transient, mut null) = (None, None, None);
    let mut value: Option<Raw<'_>> = None;
    while !buf.is_empty() {
        match key(&mut buf)? {
            (1, Len) => once(&mut name, std::str::from_utf8(take(&mut buf)?).ok())?,
            (2, Varint) => once(&mut alias, varint(&mut buf))?,
            (3, Varint) => once(&mut timestamp, varint(&mut buf))?,
            (4, Varint) => once(&mut datatype, varint(&mut buf).map(|v| v as u32))?,
            (5, Varint) => once(&mut historical, varint(&mut buf).map(|v| v != 0))?,
            (6, Varint) => once(&mut transient, varint(&mut buf).map(|v| v != 0))?,
            (7, Varint) => once(&mut null, varint(&mut buf).map(|v| v != 0))?,
            (10, Varint) => {
                once(&mut value, varint(&mut buf).map(|v| Raw::Scalar(Scalar::Int(v as u32))))?
            }
            (11, Varint) => {
                once(&mut value, varint(&mut buf).map(|v| Raw::Scalar(Scalar::Long(v))))?
            }
            (12, ThirtyTwoBit) => {
                once(
                    &mut value,
                    fixed::<4>(&mut buf).map(|b| Raw::Scalar(Scalar::Float(f32::from_le_bytes(b)))),
                )?;
            }
            (13, SixtyFourBit) => {
                once(
                    &mut value,
                    fixed::<8>(&mut buf)
                        .map(|b| Raw::Scalar(Scalar::Double(f64::from_le_bytes(b)))),
                )?;
            }
            (14, Varint) => {
                once(&mut value, varint(&mut buf).map(|v| Raw::Scalar(Scalar::Boolean(v != 0))))?
            }
            (15, Len) => {
                once(&mut value, string(&mut buf).map(|s| Raw::Scalar(Scalar::String(s))))?
            }
            (16, Len) => once(&mut value, take(&mut buf).map(Raw::Bytes))?,
            // Metadata, properties, datasets, templates, extensions, wrong
            // wire types: the general path.
            (1..=19, _) => return None,
            (tag, wire) => {
                encoding::skip_field(wire, tag, &mut buf, DecodeContext::default()).ok()?
            }
        }
    }
    // Name and type as metric_from_raw resolves them.
    let mut shared_name: Option<Arc<str>> = name.map(Arc::from);
    let mut from_birth = None;
    if shared_name.is_none() {
        if let Some((n, t)) = types.alias_entry(alias?) {
            shared_name = Some(n.clone());
            from_birth = Some(*t);
        } else if datatype.is_none() {
            return None;
        }
    }
    let datatype = match datatype {
        Some(n) => DataType::from_u32(n)?,
        None => from_birth.or_else(|| shared_name.as_deref().and_then(|n| types.datatype(n)))?,
    };
    let value = match (null, value) {
        (Some(true), _) | (_, None) => None,
        (_, Some(Raw::Scalar(s))) => Some(basic_from_wire(datatype, s).ok()?),
        (_, Some(Raw::Bytes(b))) => Some(match datatype {
            DataType::Bytes => MetricValue::Bytes(Bytes::copy_from_slice(b)),
            DataType::File => MetricValue::File(Bytes::copy_from_slice(b)),
            t if t.is_array() => array_from_bytes(t, b).ok()?,
            _ => return None,
        }),
    };
    Some(Metric {
        name: shared_name,
        alias,
        timestamp,
        datatype,
        is_historical: historical.unwrap_or(false),
        is_transient: transient.unwrap_or(false),
        value,
        properties: None,
        metadata: None,
    })
}

fn metric(mut buf: &[u8]) -> Option<proto::Metric> {
    use WireType::{LengthDelimited as Len, SixtyFourBit, ThirtyTwoBit, Varint};
    use proto::MetricValue as V;
    let mut m = proto::Metric::default();
    while !buf.is_empty() {
        let (tag, wire) = key(&mut buf)?;
        match (tag, wire) {
            (1, Len) => once(&mut m.name, string(&mut buf))?,
            (2, Varint) => once(&mut m.alias, varint(&mut buf))?,
            (3, Varint) => once(&mut m.timestamp, varint(&mut buf))?,
            // uint32, truncated as prost reads it.
            (4, Varint) => once(&mut m.datatype, varint(&mut buf).map(|v| v as u32))?,
            (5, Varint) => once(&mut m.is_historical, varint(&mut buf).map(|v| v != 0))?,
            (6, Varint) => once(&mut m.is_transient, varint(&mut buf).map(|v| v != 0))?,
            (7, Varint) => once(&mut m.is_null, varint(&mut buf).map(|v| v != 0))?,
            (8, Len) => {
                once(&mut m.metadata, proto::MetaData::decode(take(&mut buf)?).ok().map(Box::new))?
            }
            (9, Len) => once(&mut m.properties, proto::PropertySet::decode(take(&mut buf)?).ok())?,
            (10, Varint) => once(&mut m.value, varint(&mut buf).map(|v| V::Int(v as u32)))?,
            (11, Varint) => once(&mut m.value, varint(&mut buf).map(V::Long))?,
            (12, ThirtyTwoBit) => {
                once(&mut m.value, fixed::<4>(&mut buf).map(|b| V::Float(f32::from_le_bytes(b))))?
            }
            (13, SixtyFourBit) => {
                once(&mut m.value, fixed::<8>(&mut buf).map(|b| V::Double(f64::from_le_bytes(b))))?
            }
            (14, Varint) => once(&mut m.value, varint(&mut buf).map(|v| V::Boolean(v != 0)))?,
            (15, Len) => once(&mut m.value, string(&mut buf).map(V::String))?,
            (16, Len) => {
                once(&mut m.value, take(&mut buf).map(|b| V::Bytes(Bytes::copy_from_slice(b))))?
            }
            (17, Len) => once(
                &mut m.value,
                proto::DataSet::decode(take(&mut buf)?).ok().map(|d| V::DataSet(Box::new(d))),
            )?,
            (18, Len) => once(
                &mut m.value,
                proto::Template::decode(take(&mut buf)?).ok().map(|t| V::Template(Box::new(t))),
            )?,
            (19, Len) => once(
                &mut m.value,
                proto::Extension::decode(take(&mut buf)?).ok().map(V::Extension),
            )?,
            (1..=19, _) => return None,
            (tag, wire) => {
                encoding::skip_field(wire, tag, &mut buf, DecodeContext::default()).ok()?
            }
        }
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;
    use crate::payload::{EncodeOptions, Metric, PropertySet, PropertyValue};
    use crate::{DataType, MetricValue};

    fn slow(bytes: &[u8], types: &BirthTypes) -> Result<Payload, DecodeError> {
        Payload::from_raw(proto::Payload::decode(bytes)?, types)
    }

    fn sample() -> (Vec<u8>, Vec<u8>, BirthTypes) {
        let mut metrics = Vec::new();
        for (i, v) in [
            MetricValue::Int8(-3),
            MetricValue::UInt64(u64::MAX),
            MetricValue::Float(1.5),
            MetricValue::Double(-2.0),
            MetricValue::Boolean(true),
            MetricValue::String("x".into()),
            MetricValue::Bytes(Bytes::from_static(b"\x00\x01")),
            MetricValue::Int16Array(vec![-1, 2]),
        ]
        .into_iter()
        .enumerate()
        {
            let mut m = Metric::new(format!("m{i}"), 7, v);
            m.alias = Some(i as u64 + 1);
            if i == 2 {
                let mut p = PropertySet::default();
                p.set("Quality", PropertyValue::Value(MetricValue::Int32(500)));
                m.properties = Some(p);
            }
            metrics.push(m);
        }
        let birth = Payload { timestamp: Some(7), seq: Some(0), metrics, ..Payload::default() };
        let types = BirthTypes::from_birth(&birth);
        let mut data = birth.clone();
        data.seq = Some(1);
        for m in &mut data.metrics {
            m.name = None;
        }
        let data = data.encode(EncodeOptions { datatypes: false, ..EncodeOptions::default() });
        (birth.encode(EncodeOptions::default()), data, types)
    }

    #[test]
    fn typical_payloads_take_the_direct_path() {
        let (birth, data, types) = sample();
        let b = decode(&birth, &BirthTypes::new()).expect("birth on the direct path").unwrap();
        assert_eq!(b, slow(&birth, &BirthTypes::new()).unwrap());
        let d = decode(&data, &types).expect("data on the direct path").unwrap();
        assert_eq!(d, slow(&data, &types).unwrap());
        assert_eq!(d.metrics[2].datatype, DataType::Float);
        // What it declines, prost decides: an unknown alias is prost's error.
        assert!(decode(&data, &BirthTypes::new()).is_none());
    }

    fn agree(bytes: &[u8], types: &BirthTypes) -> Result<(), TestCaseError> {
        if let Some(direct) = decode(bytes, types) {
            let direct = direct.expect("the direct path declines instead of failing");
            let slow = slow(bytes, types);
            prop_assert!(slow.is_ok(), "{bytes:x?}: direct accepted, prost said {slow:?}");
            // Debug text, so that NaN values compare equal.
            prop_assert_eq!(format!("{direct:?}"), format!("{:?}", slow.unwrap()));
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn agrees_with_prost_on_any_bytes(bytes in vec(any::<u8>(), 0..96)) {
            let (_, _, types) = sample();
            agree(&bytes, &BirthTypes::new())?;
            agree(&bytes, &types)?;
        }

        #[test]
        fn agrees_with_prost_on_mutations(
            birth in any::<bool>(),
            flips in vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            extra in vec(any::<u8>(), 0..12),
            cut in any::<prop::sample::Index>(),
        ) {
            let (b, d, types) = sample();
            let mut bytes = if birth { b } else { d };
            for (at, byte) in &flips {
                let i = at.index(bytes.len());
                bytes[i] ^= byte;
            }
            bytes.extend_from_slice(&extra);
            bytes.truncate(cut.index(bytes.len() + 1));
            agree(&bytes, &BirthTypes::new())?;
            agree(&bytes, &types)?;
        }
    }
}
