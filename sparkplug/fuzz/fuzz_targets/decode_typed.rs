//! Any bytes into the typed decoder, without and with a birth table: no
//! panic, and what decodes re-encodes (both signed encodings) to bytes that
//! decode and encode to the same bytes again. Bytes, not values, are
//! compared so that NaN payloads count as equal to themselves.
#![no_main]

use shopfloor_sparkplug::{BirthTypes, DataType, EncodeOptions, Payload, SignedEncoding};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut birth = BirthTypes::new();
    for (alias, t) in DataType::ALL.iter().enumerate() {
        birth.insert(&format!("m{alias}"), Some(alias as u64), *t);
    }
    for types in [BirthTypes::new(), birth] {
        let Ok(p) = Payload::decode(data, &types) else { continue };
        for signed in [SignedEncoding::SignExtend, SignedEncoding::ZeroExtend] {
            let options = EncodeOptions { signed, datatypes: true };
            let bytes = p.encode(options);
            let again = Payload::decode(&bytes, &BirthTypes::new()).expect("re-encoded payload decodes");
            assert_eq!(again.encode(options), bytes);
        }
    }
});
