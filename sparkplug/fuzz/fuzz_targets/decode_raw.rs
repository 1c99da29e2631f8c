//! Fuzz target decode_raw: the check is `tests/fuzz_regressions.rs`'s, where
//! the inputs it once failed on are kept.
#![no_main]

#[path = "../../tests/fuzz_regressions.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check("decode_raw", data));
