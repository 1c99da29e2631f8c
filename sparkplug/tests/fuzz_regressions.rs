//! What the fuzz targets (`fuzz/fuzz_targets/`) check, and the inputs they
//! once failed on, kept in `tests/fuzz/<target>/` by `scripts/fuzz`: each
//! must pass its target's check now. The fuzz targets include this file,
//! so a target and its regression test cannot drift apart.
#![allow(dead_code)]

use prost::Message as _;
use shopfloor_sparkplug::{BirthTypes, DataType, EncodeOptions, Payload, SignedEncoding};

/// The fuzz targets, by name.
pub const TARGETS: [&str; 2] = ["decode_raw", "decode_typed"];

/// The check of fuzz target `target` on `data`: panics where the target
/// reports a crash.
pub fn check(target: &str, data: &[u8]) {
    match target {
        "decode_raw" => decode_raw(data),
        "decode_typed" => decode_typed(data),
        other => panic!("no fuzz target {other:?}; the targets are {TARGETS:?}"),
    }
}

/// Any bytes into the raw protobuf decoder: no panic, and what decodes
/// re-encodes to bytes that decode to the same message.
fn decode_raw(data: &[u8]) {
    let Ok(p) = shopfloor_sparkplug::proto::Payload::decode(data) else { return };
    let bytes = p.encode_to_vec();
    let again = shopfloor_sparkplug::proto::Payload::decode(&bytes[..])
        .expect("re-encoded payload decodes");
    assert_eq!(again.encode_to_vec(), bytes);
}

/// Any bytes into the typed decoder, without and with a birth table: no
/// panic, and what decodes re-encodes (both signed encodings) to bytes that
/// decode and encode to the same bytes again. Bytes, not values, are
/// compared so that NaN payloads count as equal to themselves.
fn decode_typed(data: &[u8]) {
    let mut birth = BirthTypes::new();
    for (alias, t) in DataType::ALL.iter().enumerate() {
        birth.insert(&format!("m{alias}"), Some(alias as u64), *t);
    }
    for types in [BirthTypes::new(), birth] {
        let Ok(p) = Payload::decode(data, &types) else { continue };
        for signed in [SignedEncoding::SignExtend, SignedEncoding::ZeroExtend] {
            let options = EncodeOptions::DEFAULT.with_signed(signed);
            let bytes = p.encode(options);
            let again =
                Payload::decode(&bytes, &BirthTypes::new()).expect("re-encoded payload decodes");
            assert_eq!(again.encode(options), bytes);
        }
    }
}

#[test]
fn kept_fuzz_inputs_pass_their_checks() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let n = shopfloor_testkit::replay_fuzz_inputs(dir, &TARGETS, check);
    assert!(n >= TARGETS.len(), "every target has at least its seed input; found {n}");
}
