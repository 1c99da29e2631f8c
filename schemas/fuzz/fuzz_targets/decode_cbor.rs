//! Fuzz target decode_cbor: the check is `tests/fuzz_regressions.rs`'s, where
//! the inputs it once failed on are kept.
#![no_main]

#[path = "../../tests/fuzz_regressions.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check("decode_cbor", data));
