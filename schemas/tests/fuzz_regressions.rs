//! What the fuzz targets (`fuzz/fuzz_targets/`) check, and the inputs they
//! once failed on, kept in `tests/fuzz/<target>/` by `scripts/fuzz`: each
//! must pass its target's check now. The fuzz targets include this file,
//! so a target and its regression test cannot drift apart.
#![allow(dead_code)]

#[path = "support/mod.rs"]
mod support;

use shopfloor_schemas::topic::{validate_topic_filter, validate_topic_name};
use shopfloor_schemas::{Codec, TopicTemplate};

/// The fuzz targets, by name.
pub const TARGETS: [&str; 4] = ["decode_json", "decode_protobuf", "decode_cbor", "topic_template"];

/// The check of fuzz target `target` on `data`: panics where the target
/// reports a crash.
pub fn check(target: &str, data: &[u8]) {
    match target {
        "decode_json" => decode_reencode(Codec::Json, data),
        "decode_protobuf" => decode_reencode(Codec::Protobuf, data),
        "decode_cbor" => decode_reencode(Codec::Cbor, data),
        "topic_template" => topic_template(data),
        other => panic!("no fuzz target {other:?}; the targets are {TARGETS:?}"),
    }
}

/// Any bytes into `codec`'s decoder: no panic, and whatever decodes
/// re-encodes and decodes to the same batch.
fn decode_reencode(codec: Codec, data: &[u8]) {
    let Ok(batch) = codec.decode_batch(data) else { return };
    let bytes = codec.encode_batch(&batch).expect("a decoded batch encodes");
    let again = codec.decode_batch(&bytes).expect("an encoded batch decodes");
    assert!(support::same(&batch, &again), "{batch:?} != {again:?}");
}

/// Any text as a topic template and a topic (split at the first newline):
/// no panic, a template's filter is a valid topic filter, and a valid topic
/// that matches renders back to itself.
fn topic_template(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (template, topic) = text.split_once('\n').unwrap_or((text, ""));
    if let Ok(t) = TopicTemplate::parse(template) {
        assert!(validate_topic_filter(&t.filter()).is_ok());
        if let (Some(m), Ok(())) = (t.matches(topic), validate_topic_name(topic)) {
            let pairs: Vec<(&str, &str)> = m.iter().collect();
            assert_eq!(t.render(&pairs).as_deref(), Ok(topic));
        }
    }
}

#[test]
fn kept_fuzz_inputs_pass_their_checks() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let n = shopfloor_testkit::replay_fuzz_inputs(dir, &TARGETS, check);
    assert!(n >= TARGETS.len(), "every target has at least its seed input; found {n}");
}
