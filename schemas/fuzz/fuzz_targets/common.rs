//! The check every decoder target makes.

use shopfloor_schemas::Codec;

#[path = "../../tests/support/mod.rs"]
mod support;

/// Any bytes into `codec`'s decoder: no panic, and whatever decodes
/// re-encodes and decodes to the same batch.
pub fn decode_reencode(codec: Codec, data: &[u8]) {
    let Ok(batch) = codec.decode_batch(data) else { return };
    let bytes = codec.encode_batch(&batch).expect("a decoded batch encodes");
    let again = codec.decode_batch(&bytes).expect("an encoded batch decodes");
    assert!(support::same(&batch, &again), "{batch:?} != {again:?}");
}
