//! Helpers shared by the tests and the fuzz targets (`fuzz/fuzz_targets`).

use shopfloor_schemas::{Batch, Value};

/// Equality where NaN equals NaN and -0.0 differs from 0.0: what a lossless
/// codec must preserve.
pub(crate) fn same(a: &Batch, b: &Batch) -> bool {
    a.source == b.source
        && a.readings.len() == b.readings.len()
        && a.readings.iter().zip(&b.readings).all(|(x, y)| {
            x.metric == y.metric
                && x.timestamp == y.timestamp
                && x.quality == y.quality
                && match (&x.value, &y.value) {
                    (Value::F64(p), Value::F64(q)) => {
                        (p.is_nan() && q.is_nan()) || p.to_bits() == q.to_bits()
                    }
                    (p, q) => p == q,
                }
        })
}
