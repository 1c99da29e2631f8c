//! Any bytes into the protobuf decoder: no panic, and whatever decodes re-encodes
//! and decodes to the same batch.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shopfloor_schemas::{Batch, Codec, Value};

fuzz_target!(|data: &[u8]| {
    let Ok(batch) = Codec::Protobuf.decode_batch(data) else { return };
    let bytes = Codec::Protobuf.encode_batch(&batch).expect("a decoded batch encodes");
    let again = Codec::Protobuf.decode_batch(&bytes).expect("an encoded batch decodes");
    assert!(same(&batch, &again), "{batch:?} != {again:?}");
});

fn same(a: &Batch, b: &Batch) -> bool {
    a.source == b.source
        && a.readings.len() == b.readings.len()
        && a.readings.iter().zip(&b.readings).all(|(x, y)| {
            x.metric == y.metric
                && x.timestamp == y.timestamp
                && x.quality == y.quality
                && match (&x.value, &y.value) {
                    (Value::F64(p), Value::F64(q)) => (p.is_nan() && q.is_nan()) || p.to_bits() == q.to_bits(),
                    (p, q) => p == q,
                }
        })
}
