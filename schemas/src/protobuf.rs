//! The Protobuf codec: message `shopfloor.v1.Batch` of `proto/shopfloor.proto`.
//!
//! Both directions use prost's wire primitives straight on the model: decoding
//! builds the [`Batch`] in one pass with no intermediate messages, and encoding
//! writes, from the borrowed [`Batch`], exactly the bytes prost's derived
//! messages would. The derived messages ([`pb`], written by hand, no `protoc`)
//! are the reference both are tested against.

use bytes::Bytes;
use compact_str::CompactString;
#[cfg(test)]
use prost::Message as _;
use prost::encoding::{self, DecodeContext, WireType};

use crate::error::{DecodeError, FieldPath, InvalidField, Problem};
use crate::model::{Batch, Quality, Reading, Timestamp, Value};

/// The messages of `proto/shopfloor.proto` as prost derives them: the
/// reference that the direct decoder and encoder are tested against.
#[cfg(test)]
pub(crate) mod pb {
    use bytes::Bytes;

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Batch {
        #[prost(string, tag = "1")]
        pub(crate) source: String,
        #[prost(message, repeated, tag = "2")]
        pub(crate) readings: Vec<Reading>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Reading {
        #[prost(string, tag = "1")]
        pub(crate) metric: String,
        #[prost(fixed64, tag = "2")]
        pub(crate) timestamp: u64,
        #[prost(oneof = "Value", tags = "3, 4, 5, 6, 7, 8")]
        pub(crate) value: Option<Value>,
        #[prost(int32, tag = "9")]
        pub(crate) quality: i32,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    #[allow(clippy::enum_variant_names, reason = "named after the proto's oneof members")]
    pub(crate) enum Value {
        #[prost(bool, tag = "3")]
        BoolValue(bool),
        #[prost(sint64, tag = "4")]
        IntValue(i64),
        #[prost(uint64, tag = "5")]
        UintValue(u64),
        #[prost(double, tag = "6")]
        DoubleValue(f64),
        #[prost(string, tag = "7")]
        StringValue(String),
        #[prost(bytes = "bytes", tag = "8")]
        BytesValue(Bytes),
    }
}

/// The reference decoder: the derived messages, then conversion. Tests hold
/// [`decode`] to it.
#[cfg(test)]
fn decode_with_prost(payload: &[u8]) -> Option<Batch> {
    let pb = pb::Batch::decode(payload).ok()?;
    let readings = pb
        .readings
        .into_iter()
        .map(|r| {
            let value = match r.value? {
                pb::Value::BoolValue(v) => Value::Bool(v),
                pb::Value::IntValue(v) => Value::I64(v),
                pb::Value::UintValue(v) => Value::U64(v),
                pb::Value::DoubleValue(v) => Value::F64(v),
                pb::Value::StringValue(v) => Value::String(v),
                pb::Value::BytesValue(v) => Value::Bytes(v),
            };
            let quality = quality_from_pb(r.quality)?;
            Some(Reading {
                metric: r.metric.into(),
                timestamp: Timestamp::from_unix_ms(r.timestamp),
                value,
                quality,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Batch { source: pb.source.into(), readings })
}

const fn quality_to_pb(q: Quality) -> i32 {
    match q {
        Quality::Good => 0,
        Quality::Uncertain => 1,
        Quality::Bad => 2,
        Quality::Stale => 3,
    }
}

const fn quality_from_pb(n: i32) -> Option<Quality> {
    Some(match n {
        0 => Quality::Good,
        1 => Quality::Uncertain,
        2 => Quality::Bad,
        3 => Quality::Stale,
        _ => return None,
    })
}

/// Decodes `shopfloor.v1.Batch` straight into a [`Batch`]: no intermediate
/// messages, one allocation per string. Semantics are proto3's as prost
/// implements them (unknown fields skipped, the last of a repeated scalar or
/// oneof wins), which a proptest checks against the derived [`pb`] messages.
pub(crate) fn decode(payload: &[u8]) -> Result<Batch, DecodeError> {
    let mut buf = payload;
    // A reading takes at least 8 bytes on the wire; guess 32 so that a
    // typical batch grows its vector once or not at all.
    let mut batch = Batch {
        source: CompactString::default(),
        readings: Vec::with_capacity(payload.len() / 32),
    };
    while !buf.is_empty() {
        let at = payload.len() - buf.len();
        let (tag, wire) = decode_key(&mut buf).map_err(|e| prost_error(at, "Batch", &e))?;
        match tag {
            1 => {
                expect_wire(wire, WireType::LengthDelimited, at, || "Batch.source".into())?;
                let pos = payload.len() - buf.len();
                batch.source =
                    CompactString::from(take_str(&mut buf, pos, || "Batch.source".into())?);
            }
            2 => {
                let i = batch.readings.len();
                let field = || format!("Batch.readings[{i}]");
                expect_wire(wire, WireType::LengthDelimited, at, field)?;
                let pos = payload.len() - buf.len();
                let body = take_len(&mut buf, pos, field)?;
                let base = payload.len() - buf.len() - body.len();
                batch.readings.push(decode_reading(body, base, i)?);
            }
            _ => encoding::skip_field(wire, tag, &mut buf, DecodeContext::default())
                .map_err(|e| prost_error(at, "Batch", &e))?,
        }
    }
    Ok(batch)
}

/// Decodes one `Reading` message; `base` is the offset of `body` in the payload.
fn decode_reading(body: &[u8], base: usize, i: usize) -> Result<Reading, DecodeError> {
    use WireType::{LengthDelimited as Len, SixtyFourBit as I64, Varint};

    let mut buf = body;
    let mut metric = CompactString::default();
    let mut timestamp = 0;
    let mut value = None;
    let mut quality = 0_i32;
    while !buf.is_empty() {
        let at = base + body.len() - buf.len();
        let (tag, wire) =
            decode_key(&mut buf).map_err(|e| prost_error(at, &reading_field(i, 0), &e))?;
        // Errors are built only on the error path: naming a field allocates.
        let field = || reading_field(i, tag);
        let pos = base + body.len() - buf.len();
        let varint =
            |buf: &mut &[u8]| decode_varint(buf).map_err(|e| prost_error(at, &field(), &e));
        match (tag, wire) {
            (1, Len) => metric = CompactString::from(take_str(&mut buf, pos, field)?),
            (2, I64) => {
                let Some((bytes, rest)) = buf.split_first_chunk::<8>() else {
                    return Err(malformed(at, field(), "a fixed64 needs 8 bytes; the input ended"));
                };
                timestamp = u64::from_le_bytes(*bytes);
                buf = rest;
            }
            (3, Varint) => value = Some(Value::Bool(varint(&mut buf)? != 0)),
            (4, Varint) => {
                let v = varint(&mut buf)?;
                value = Some(Value::I64(((v >> 1) as i64) ^ -((v & 1) as i64)));
            }
            (5, Varint) => value = Some(Value::U64(varint(&mut buf)?)),
            (6, I64) => {
                let Some((bytes, rest)) = buf.split_first_chunk::<8>() else {
                    return Err(malformed(at, field(), "a double needs 8 bytes; the input ended"));
                };
                value = Some(Value::F64(f64::from_le_bytes(*bytes)));
                buf = rest;
            }
            (7, Len) => value = Some(Value::String(take_str(&mut buf, pos, field)?.to_owned())),
            (8, Len) => {
                value = Some(Value::Bytes(Bytes::copy_from_slice(take_len(&mut buf, pos, field)?)))
            }
            // Proto3 open enum, read as prost reads int32: truncated.
            (9, Varint) => quality = varint(&mut buf)? as i32,
            (1..=9, _) => {
                let expected = match tag {
                    3..=5 | 9 => Varint,
                    2 | 6 => I64,
                    _ => Len,
                };
                return Err(malformed(
                    at,
                    field(),
                    format!("wire type {wire:?}, expected {expected:?}"),
                ));
            }
            _ => encoding::skip_field(wire, tag, &mut buf, DecodeContext::default())
                .map_err(|e| prost_error(at, &field(), &e))?,
        }
    }
    let value = value.ok_or_else(|| InvalidField::new(FieldPath::Value(i), Problem::Missing))?;
    let quality = quality_from_pb(quality).ok_or_else(|| {
        InvalidField::new(FieldPath::Quality(i), Problem::UnknownQuality(quality))
    })?;
    Ok(Reading { metric, timestamp: Timestamp::from_unix_ms(timestamp), value, quality })
}

/// `Batch.readings[i].<name>` for the field with `tag` (0: the key itself).
#[cold]
fn reading_field(i: usize, tag: u32) -> String {
    let name = match tag {
        0 => "<key>",
        1 => "metric",
        2 => "timestamp",
        3..=8 => "value",
        9 => "quality",
        _ => "<unknown>",
    };
    format!("Batch.readings[{i}].{name}")
}

/// prost's `decode_varint` with the one-byte case inline: keys, lengths of
/// short strings and small values are one byte, and the call was a fifth of
/// decode time.
#[inline(always)]
fn decode_varint(buf: &mut &[u8]) -> Result<u64, prost::DecodeError> {
    match buf.split_first() {
        Some((&b, rest)) if b < 0x80 => {
            *buf = rest;
            Ok(u64::from(b))
        }
        _ => encoding::decode_varint(buf),
    }
}

/// prost's `decode_key` over the inlined [`decode_varint`].
#[inline(always)]
fn decode_key(buf: &mut &[u8]) -> Result<(u32, WireType), prost::DecodeError> {
    match buf.split_first() {
        // One byte, tag ≥ 1, wire type 0..=5: the common case.
        Some((&b, rest)) if (0x08..0x80).contains(&b) && b & 0x07 <= 5 => {
            *buf = rest;
            let wire = match b & 0x07 {
                0 => WireType::Varint,
                1 => WireType::SixtyFourBit,
                2 => WireType::LengthDelimited,
                3 => WireType::StartGroup,
                4 => WireType::EndGroup,
                _ => WireType::ThirtyTwoBit,
            };
            Ok((u32::from(b >> 3), wire))
        }
        _ => encoding::decode_key(buf),
    }
}

fn malformed(offset: usize, field: String, detail: impl Into<String>) -> DecodeError {
    DecodeError::Protobuf { offset, field, detail: detail.into() }
}

fn prost_error(offset: usize, field: &str, e: &prost::DecodeError) -> DecodeError {
    let text = e.to_string();
    let detail = text.strip_prefix("failed to decode Protobuf message: ").unwrap_or(&text);
    malformed(offset, field.to_owned(), detail)
}

fn expect_wire(
    found: WireType,
    expected: WireType,
    at: usize,
    field: impl FnOnce() -> String,
) -> Result<(), DecodeError> {
    if found == expected {
        Ok(())
    } else {
        Err(malformed(at, field(), format!("wire type {found:?}, expected {expected:?}")))
    }
}

/// Reads a length prefix and returns that many bytes.
fn take_len<'a>(
    buf: &mut &'a [u8],
    at: usize,
    field: impl Fn() -> String,
) -> Result<&'a [u8], DecodeError> {
    let len = decode_varint(buf).map_err(|e| prost_error(at, &field(), &e))?;
    match usize::try_from(len).ok().filter(|&n| n <= buf.len()) {
        Some(n) => {
            let (body, rest) = buf.split_at(n);
            *buf = rest;
            Ok(body)
        }
        None => Err(malformed(
            at,
            field(),
            format!("length {len} runs past the end of the input ({} bytes left)", buf.len()),
        )),
    }
}

/// Reads a length-prefixed UTF-8 string; `at` is the offset of `buf`'s start.
fn take_str<'a>(
    buf: &mut &'a [u8],
    at: usize,
    field: impl Fn() -> String,
) -> Result<&'a str, DecodeError> {
    let before = buf.len();
    let bytes = take_len(buf, at, &field)?;
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s),
        Err(e) => {
            let start = at + (before - buf.len() - bytes.len());
            Err(malformed(start + e.valid_up_to(), field(), "invalid UTF-8"))
        }
    }
}

/// Encodes exactly what `pb::Batch::encode` would for the same data (proto3:
/// default scalars are left out, a oneof member is always written).
pub(crate) fn encode(batch: &Batch, out: &mut Vec<u8>) {
    let len: usize = source_len(&batch.source)
        + batch
            .readings
            .iter()
            .map(|r| {
                let n = reading_len(r);
                encoding::key_len(2) + encoding::encoded_len_varint(n as u64) + n
            })
            .sum::<usize>();
    out.reserve(len);
    if !batch.source.is_empty() {
        encode_str(1, &batch.source, out);
    }
    for r in &batch.readings {
        encoding::encode_key(2, WireType::LengthDelimited, out);
        encoding::encode_varint(reading_len(r) as u64, out);
        encode_reading(r, out);
    }
}

/// The encoded length of a string field (prost's `string::encoded_len`, for `&str`).
fn str_len(tag: u32, s: &str) -> usize {
    encoding::key_len(tag) + encoding::encoded_len_varint(s.len() as u64) + s.len()
}

/// Writes a string field (prost's `string::encode`, for `&str`).
fn encode_str(tag: u32, s: &str, out: &mut Vec<u8>) {
    encoding::encode_key(tag, WireType::LengthDelimited, out);
    encoding::encode_varint(s.len() as u64, out);
    out.extend_from_slice(s.as_bytes());
}

fn source_len(source: &str) -> usize {
    if source.is_empty() { 0 } else { str_len(1, source) }
}

fn reading_len(r: &Reading) -> usize {
    let mut n = 0;
    if !r.metric.is_empty() {
        n += str_len(1, &r.metric);
    }
    let ts = r.timestamp.unix_ms();
    if ts != 0 {
        n += encoding::fixed64::encoded_len(2, &ts);
    }
    n += match &r.value {
        Value::Bool(v) => encoding::bool::encoded_len(3, v),
        Value::I64(v) => encoding::sint64::encoded_len(4, v),
        Value::U64(v) => encoding::uint64::encoded_len(5, v),
        Value::F64(v) => encoding::double::encoded_len(6, v),
        Value::String(v) => str_len(7, v),
        Value::Bytes(v) => encoding::bytes::encoded_len(8, v),
    };
    let q = quality_to_pb(r.quality);
    if q != 0 {
        n += encoding::int32::encoded_len(9, &q);
    }
    n
}

fn encode_reading(r: &Reading, out: &mut Vec<u8>) {
    if !r.metric.is_empty() {
        encode_str(1, &r.metric, out);
    }
    let ts = r.timestamp.unix_ms();
    if ts != 0 {
        encoding::fixed64::encode(2, &ts, out);
    }
    match &r.value {
        Value::Bool(v) => encoding::bool::encode(3, v, out),
        Value::I64(v) => encoding::sint64::encode(4, v, out),
        Value::U64(v) => encoding::uint64::encode(5, v, out),
        Value::F64(v) => encoding::double::encode(6, v, out),
        Value::String(v) => encode_str(7, v, out),
        Value::Bytes(v) => encoding::bytes::encode(8, v, out),
    }
    let q = quality_to_pb(r.quality);
    if q != 0 {
        encoding::int32::encode(9, &q, out);
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    fn to_pb(batch: &Batch) -> pb::Batch {
        pb::Batch {
            source: batch.source.to_string(),
            readings: batch
                .readings
                .iter()
                .map(|r| pb::Reading {
                    metric: r.metric.to_string(),
                    timestamp: r.timestamp.unix_ms(),
                    value: Some(match &r.value {
                        Value::Bool(v) => pb::Value::BoolValue(*v),
                        Value::I64(v) => pb::Value::IntValue(*v),
                        Value::U64(v) => pb::Value::UintValue(*v),
                        Value::F64(v) => pb::Value::DoubleValue(*v),
                        Value::String(v) => pb::Value::StringValue(v.clone()),
                        Value::Bytes(v) => pb::Value::BytesValue(v.clone()),
                    }),
                    quality: quality_to_pb(r.quality),
                })
                .collect(),
        }
    }

    #[test]
    fn hand_encoder_writes_what_prost_writes() {
        let batch = Batch::new("plant1/press/press-3")
            .with(Reading::new("t", Timestamp::from_unix_ms(1_700_000_000_123), 71.5))
            .with(
                Reading::new("zero-time", Timestamp::UNIX_EPOCH, -3_i64)
                    .with_quality(Quality::Stale),
            )
            .with(Reading::new("count", Timestamp::from_unix_ms(1), u64::MAX))
            .with(Reading::new("on", Timestamp::from_unix_ms(2), false).with_quality(Quality::Bad))
            .with(Reading::new("name", Timestamp::from_unix_ms(3), ""))
            .with(Reading::new("raw", Timestamp::from_unix_ms(4), Bytes::from_static(b"\x00\xff")));
        let mut ours = Vec::new();
        encode(&batch, &mut ours);
        assert_eq!(ours, to_pb(&batch).encode_to_vec());
        let empty_source = Batch { source: CompactString::default(), ..batch };
        let mut ours = Vec::new();
        encode(&empty_source, &mut ours);
        assert_eq!(ours, to_pb(&empty_source).encode_to_vec());
    }

    /// The hand-written messages and `proto/shopfloor.proto` must not drift.
    #[test]
    fn proto_file_matches_the_messages() {
        let proto = include_str!("../proto/shopfloor.proto");
        for line in [
            "string source = 1;",
            "repeated Reading readings = 2;",
            "string metric = 1;",
            "fixed64 timestamp = 2;",
            "bool bool_value = 3;",
            "sint64 int_value = 4;",
            "uint64 uint_value = 5;",
            "double double_value = 6;",
            "string string_value = 7;",
            "bytes bytes_value = 8;",
            "Quality quality = 9;",
            "QUALITY_GOOD = 0;",
            "QUALITY_UNCERTAIN = 1;",
            "QUALITY_BAD = 2;",
            "QUALITY_STALE = 3;",
        ] {
            assert!(proto.contains(line), "proto/shopfloor.proto lacks {line:?}");
        }
    }

    fn same(a: &Batch, b: &Batch) -> bool {
        // Compare floats by bits: NaN payloads must survive too.
        format!("{a:?}") == format!("{b:?}")
            && a.readings.iter().zip(&b.readings).all(|(x, y)| match (&x.value, &y.value) {
                (Value::F64(p), Value::F64(q)) => p.to_bits() == q.to_bits(),
                _ => true,
            })
    }

    fn sample() -> Vec<u8> {
        let batch = Batch::new("src")
            .with(Reading::new("a", Timestamp::from_unix_ms(5), 1.5))
            .with(Reading::new("b", Timestamp::from_unix_ms(6), -2_i64).with_quality(Quality::Bad))
            .with(Reading::new("c", Timestamp::from_unix_ms(7), "x"))
            .with(Reading::new("d", Timestamp::from_unix_ms(8), Bytes::from_static(b"yz")));
        let mut out = Vec::new();
        encode(&batch, &mut out);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// On any bytes, the direct decoder and prost's derived one agree:
        /// both refuse, or both give the same batch.
        #[test]
        fn direct_decoder_agrees_with_prost_on_any_bytes(bytes in vec(any::<u8>(), 0..64)) {
            let ours = decode(&bytes).ok();
            let theirs = decode_with_prost(&bytes);
            prop_assert_eq!(ours.is_some(), theirs.is_some(), "{:x?}: {:?} vs {:?}", bytes, ours, theirs);
            if let (Some(a), Some(b)) = (ours, theirs) {
                prop_assert!(same(&a, &b));
            }
        }

        /// The same on mutations of a valid payload, which reach deeper.
        #[test]
        fn direct_decoder_agrees_with_prost_on_mutations(
            flips in vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            extra in vec(any::<u8>(), 0..12),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = sample();
            for (at, byte) in &flips {
                let i = at.index(bytes.len());
                bytes[i] ^= byte;
            }
            bytes.extend_from_slice(&extra);
            bytes.truncate(cut.index(bytes.len() + 1));
            let ours = decode(&bytes).ok();
            let theirs = decode_with_prost(&bytes);
            prop_assert_eq!(ours.is_some(), theirs.is_some(), "{:x?}: {:?} vs {:?}", bytes, ours, theirs);
            if let (Some(a), Some(b)) = (ours, theirs) {
                prop_assert!(same(&a, &b));
            }
        }
    }
}
