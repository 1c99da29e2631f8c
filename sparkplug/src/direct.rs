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

use crate::error::DecodeError;
use crate::payload::{BirthTypes, Payload, metric_from_raw};
use crate::proto;

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
                let raw = metric(take(&mut buf)?)?;
                p.metrics.push(metric_from_raw(raw, types, &|| format!("metrics[{i}]")).ok()?);
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
