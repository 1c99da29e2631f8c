//! Any bytes into the protobuf decoder: no panic, and whatever decodes re-encodes
//! and decodes to the same batch.
#![no_main]

mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::decode_reencode(shopfloor_schemas::Codec::Protobuf, data));
