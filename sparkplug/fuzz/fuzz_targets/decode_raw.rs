//! Any bytes into the raw protobuf decoder: no panic, and what decodes
//! re-encodes to bytes that decode to the same message.
#![no_main]

use prost::Message as _;
use shopfloor_sparkplug::proto::Payload;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(p) = Payload::decode(data) else { return };
    let bytes = p.encode_to_vec();
    let again = Payload::decode(&bytes[..]).expect("re-encoded payload decodes");
    assert_eq!(again.encode_to_vec(), bytes);
});
