//! A table of malformed inputs per decoder: each gives a typed error that says
//! what and where, and none panics. Files in `tests/data/` (fixtures and any
//! fuzzer crash kept as a regression) are decoded too.

use shopfloor_schemas::{Codec, DecodeError, FieldPath, InvalidField, Problem};

/// Decodes `bytes`, expects an error, and checks its message holds `needle`.
fn fails(codec: Codec, bytes: &[u8], needle: &str) -> DecodeError {
    let err = match codec.decode_batch(bytes) {
        Ok(b) => panic!("{codec}: {:?} decoded to {b:?}", String::from_utf8_lossy(bytes)),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(msg.contains(needle), "{codec} {bytes:x?}: message {msg:?} lacks {needle:?}");
    err
}

fn invalid(err: &DecodeError) -> &InvalidField {
    match err {
        DecodeError::Invalid(f) => f,
        other => panic!("expected DecodeError::Invalid, got {other:?}"),
    }
}

#[test]
fn json_malformed_table() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "EOF while parsing"),
        (b"   ", "line 1, column 3"),
        (br#"{"readings": [{"metric": "t", "timestamp": 1"#, "line 1, column 44"),
        (b"{\"readings\":\n 5}", "line 2, column 2"),
        (br#"{"readings": [{"metric": "t", "timestamp": -1, "value": 1}]}"#, "invalid value"),
        (br#"{"readings": [{"metric": "t", "timestamp": 1.5, "value": 1}]}"#, "invalid type"),
        (
            br#"{"readings": [{"metric": "t", "timestamp": 1, "value": null}]}"#,
            "null is not a value",
        ),
        (
            br#"{"readings": [{"metric": "t", "timestamp": 1, "value": [1]}]}"#,
            "invalid type: sequence",
        ),
        (br#"{"readings": [{"metric": "t", "timestamp": 1, "value": {}}]}"#, "invalid type: map"),
        (br#"{"readings": [{"metric": "t", "timestamp": 1}]}"#, "missing field `value`"),
        (br#"{"readings": [{"timestamp": 1, "value": 1}]}"#, "missing field `metric`"),
        (br#"{"source": "s"}"#, "missing field `readings`"),
        (br#"{"source": "a", "source": "b", "readings": []}"#, "duplicate field `source`"),
        (
            br#"{"readings": [{"metric": "t", "timestamp": 1, "timestamp": 2, "value": 1}]}"#,
            "duplicate field `timestamp`",
        ),
        (
            br#"{"readings": [{"metric": "t", "timestamp": 1, "value": 1, "quality": "grand"}]}"#,
            "unknown variant `grand`",
        ),
        (
            br#"{"readings": [{"metric": "t", "timestamp": 1, "value": 1, "type": "decimal"}]}"#,
            "unknown variant `decimal`",
        ),
        (br#"{"readings": [{"metric": "t", "timestamp": 1, "value": NaN}]}"#, "expected value"),
        (
            b"{\"readings\": [{\"metric\": \"\xff\xfe\", \"timestamp\": 1, \"value\": 1}]}",
            "line 1, column 27: invalid UTF-8 at byte 26",
        ),
        (
            b"{\"readings\":\n [{\"metric\": \"a\xc3\"}]}",
            "line 2, column 16: invalid UTF-8 at byte 28",
        ),
        (br#"{"readings": [{"metric": "\ud800", "timestamp": 1, "value": 1}]}"#, "hex escape"),
        (br#"{"readings": []} trailing"#, "trailing characters"),
        (
            br#"{"readings": [{"metric": "t", "timestamp": 18446744073709551616, "value": 1}]}"#,
            "invalid",
        ),
    ];
    for (bytes, needle) in cases {
        let err = fails(Codec::Json, bytes, needle);
        assert!(matches!(err, DecodeError::Json { .. }), "{err:?}");
    }
    // Deep nesting in an unknown key is skipped without recursing (no stack
    // overflow); in a known key it is a type error at the first bracket.
    let deep =
        format!("{{\"x\": {}{}, \"readings\": []}}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(Codec::Json.decode_batch(deep.as_bytes()).unwrap().readings.len(), 0);
    let deep = format!("{{\"readings\": [{{\"value\": {}", "[".repeat(100_000));
    fails(Codec::Json, deep.as_bytes(), "invalid type: sequence");
}

#[test]
fn json_invalid_fields_name_the_reading() {
    let cases: &[(&[u8], FieldPath, &str)] = &[
        (br#"{"readings": [{"metric": "ok", "timestamp": 1, "value": 1}, {"metric": "t\u0000x", "timestamp": 1, "value": 1}]}"#, FieldPath::Metric(1), "readings[1].metric: contains a NUL byte at offset 1"),
        (br#"{"readings": [{"metric": "", "timestamp": 1, "value": 1}]}"#, FieldPath::Metric(0), "readings[0].metric: is empty"),
        (br#"{"source": "a\u0000", "readings": []}"#, FieldPath::Source, "source: contains a NUL byte at offset 1"),
        (br#"{"readings": [{"metric": "t", "timestamp": 1, "value": "x\u0000"}]}"#, FieldPath::Value(0), "readings[0].value: contains a NUL"),
        (br#"{"readings": [{"metric": "t", "timestamp": 1, "value": 3, "type": "bool"}]}"#, FieldPath::Value(0), "declared bool but the value is an integer"),
        (br#"{"readings": [{"metric": "t", "timestamp": 1, "value": -3, "type": "u64"}]}"#, FieldPath::Value(0), "-3 does not fit u64"),
        (br#"{"readings": [{"metric": "t", "timestamp": 1, "value": 18446744073709551615, "type": "i64"}]}"#, FieldPath::Value(0), "does not fit i64"),
        (br#"{"readings": [{"metric": "t", "timestamp": 1, "value": "%%%", "type": "bytes"}]}"#, FieldPath::Value(0), "not valid base64"),
        (br#"{"readings": [{"metric": "t", "timestamp": 1, "value": 1.5, "type": "string"}]}"#, FieldPath::Value(0), "declared string but the value is a float"),
    ];
    for (bytes, field, needle) in cases {
        let err = fails(Codec::Json, bytes, needle);
        assert_eq!(invalid(&err).field, *field);
    }
}

/// Builds protobuf bytes by hand: (tag, wire type) keys and raw bodies.
fn key(tag: u32, wire_type: u8) -> u8 {
    u8::try_from(tag << 3).unwrap() | wire_type
}

fn reading(body: &[u8]) -> Vec<u8> {
    let mut out = vec![key(2, 2), u8::try_from(body.len()).unwrap()];
    out.extend_from_slice(body);
    out
}

#[test]
fn protobuf_malformed_table() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![key(1, 2)], "at byte 1, in Batch.source: invalid varint"),
        (
            vec![key(1, 2), 5, b'a'],
            "at byte 1, in Batch.source: length 5 runs past the end of the input (1 bytes left)",
        ),
        // A length prefix of 2^35 with nothing behind it.
        (
            vec![key(2, 2), 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
            "in Batch.readings[0]: length 34359738368 runs past the end",
        ),
        // An 11-byte varint in an unknown field.
        (
            vec![key(3, 0), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            "at byte 0, in Batch: invalid varint",
        ),
        (
            vec![key(2, 0), 1],
            "at byte 0, in Batch.readings[0]: wire type Varint, expected LengthDelimited",
        ),
        (vec![key(1, 0), 1], "in Batch.source: wire type Varint, expected LengthDelimited"),
        (
            reading(&[key(1, 2), 2, 0xff, 0xfe]),
            "at byte 4, in Batch.readings[0].metric: invalid UTF-8",
        ),
        (
            reading(&[key(1, 2), 1, b'm', key(7, 2), 1, 0xc0]),
            "at byte 7, in Batch.readings[0].value: invalid UTF-8",
        ),
        (vec![0x00], "at byte 0, in Batch: invalid tag value: 0"),
        (vec![key(5, 3)], "in Batch"), // a group start that never ends
        (vec![key(5, 7)], "invalid wire type value: 7"),
        (
            reading(&[key(1, 2), 1, b'm', key(6, 1), 0, 0]),
            "at byte 5, in Batch.readings[0].value: a double needs 8 bytes",
        ),
        (
            reading(&[key(1, 2), 1, b'm', key(2, 2), 0]),
            "in Batch.readings[0].timestamp: wire type LengthDelimited, expected SixtyFourBit",
        ),
        (
            reading(&[key(1, 2), 1, b'm', key(2, 0), 5]),
            "in Batch.readings[0].timestamp: wire type Varint, expected SixtyFourBit",
        ),
        (
            reading(&[key(1, 2), 1, b'm', key(2, 1), 1, 2, 3]),
            "at byte 5, in Batch.readings[0].timestamp: a fixed64 needs 8 bytes",
        ),
        (reading(&[key(1, 2), 1, b'm', key(9, 0)]), "in Batch.readings[0].quality: invalid varint"),
        (
            [reading(&[key(1, 2), 1, b'm', key(3, 0), 1]), vec![key(2, 2), 9, key(1, 2)]].concat(),
            "in Batch.readings[1]: length 9 runs past",
        ),
    ];
    for (bytes, needle) in &cases {
        let err = fails(Codec::Protobuf, bytes, needle);
        assert!(matches!(err, DecodeError::Protobuf { .. }), "{bytes:x?}: {err:?}");
    }
}

#[test]
fn protobuf_invalid_fields_name_the_reading() {
    let m = [key(1, 2), 1, b'm'];
    let cases: Vec<(Vec<u8>, FieldPath, Problem)> = vec![
        (reading(&m), FieldPath::Value(0), Problem::Missing),
        (reading(&[key(3, 0), 1]), FieldPath::Metric(0), Problem::Empty),
        (
            [
                reading(&[&m[..], &[key(3, 0), 1]].concat()),
                reading(&[key(1, 2), 2, b'a', 0, key(3, 0), 1]),
            ]
            .concat(),
            FieldPath::Metric(1),
            Problem::Nul { offset: 1 },
        ),
        (
            reading(&[&m[..], &[key(3, 0), 1, key(9, 0), 7]].concat()),
            FieldPath::Quality(0),
            Problem::UnknownQuality(7),
        ),
        (
            [vec![key(1, 2), 1, 0], reading(&[&m[..], &[key(3, 0), 1]].concat())].concat(),
            FieldPath::Source,
            Problem::Nul { offset: 0 },
        ),
    ];
    for (bytes, field, problem) in cases {
        let err = Codec::Protobuf.decode_batch(&bytes).unwrap_err();
        assert_eq!(*invalid(&err), InvalidField::new(field, problem), "{bytes:x?}");
    }
}

/// CBOR: a map with one key "readings" holding `items`.
fn cbor_batch(readings: &[u8]) -> Vec<u8> {
    [&[0xa1, 0x68][..], b"readings", readings].concat()
}

#[test]
fn cbor_malformed_table() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![], "truncated"),
        (vec![0xa1], "truncated"),
        (cbor_batch(&[0x81, 0xa3]), "truncated"),
        // A text string claiming 2^63 bytes: must fail, not allocate.
        (vec![0xa1, 0x7b, 0x80, 0, 0, 0, 0, 0, 0, 0], "longer than the payload"),
        // An array claiming 2^63 items.
        (cbor_batch(&[0x9b, 0x80, 0, 0, 0, 0, 0, 0, 0]), "truncated"),
        // A byte string value claiming 2^32 bytes.
        (
            cbor_batch(&[
                0x81, 0xa1, 0x65, b'v', b'a', b'l', b'u', b'e', 0x5a, 0xff, 0xff, 0xff, 0xff,
            ]),
            "truncated",
        ),
        // Reserved additional information 28.
        (vec![0x1c], "not well-formed"),
        (vec![0x05], "invalid type: integer"),
        (
            cbor_batch(&[0x81, 0xa1, 0x66, b'm', b'e', b't', b'r', 0xff, 0xfe, 0x00]),
            "at byte 12: not well-formed",
        ),
        (cbor_batch(&[0x81, 0xa1, 0x66, b'm', b'e', b't', b'r', b'i', 0xc3]), "not well-formed"),
        (cbor_batch(&[0x05]), "invalid type: integer"),
    ];
    for (bytes, needle) in &cases {
        let err = fails(Codec::Cbor, bytes, needle);
        assert!(matches!(err, DecodeError::Cbor { .. }), "{bytes:x?}: {err:?}");
    }
    // Deep nesting stops at ciborium's recursion limit.
    let mut deep = cbor_batch(&[]);
    deep.extend(std::iter::repeat_n(0x81, 100_000));
    deep.push(0x00);
    fails(Codec::Cbor, &deep, "");
}

#[test]
fn cbor_values_the_model_cannot_hold_are_refused() {
    use shopfloor_schemas::{Batch, Reading, Timestamp};
    // Encode a valid one-reading batch, then swap its value for other CBOR items.
    let valid = Codec::Cbor
        .encode_batch(&Batch::new("").with(Reading::new("m", Timestamp::from_unix_ms(1), 7_i64)))
        .unwrap();
    let at = valid.windows(6).position(|w| w == b"\x65value").unwrap() + 6;
    let with_value = |item: &[u8]| [&valid[..at], item, &valid[at + 1..]].concat();
    for (item, needle) in [
        (&[0xf6][..], "null is not a value"),
        (&[0xf7][..], "null is not a value"), // undefined
        (&[0x80][..], "invalid type: sequence"),
        (&[0xa0][..], "invalid type: map"),
        // A bignum 2^72 (tag 2) cannot be a 64-bit integer.
        (&[0xc2, 0x49, 1, 0, 0, 0, 0, 0, 0, 0, 0][..], ""),
        // A text string holding invalid UTF-8.
        (&[0x62, 0xff, 0xfe][..], ""),
    ] {
        let err = fails(Codec::Cbor, &with_value(item), needle);
        assert!(matches!(err, DecodeError::Cbor { .. }), "{item:x?}: {err:?}");
    }
    let err = Codec::Cbor.decode_batch(&with_value(&[0x62, b'a', 0])).unwrap_err();
    assert_eq!(invalid(&err).field, FieldPath::Value(0));
}

/// Every file in `tests/data/` named `<codec>-*.bin` is malformed input that
/// must give an error (these are fixtures and fuzzer finds).
#[test]
fn data_fixtures_are_refused() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(codec) = name.split('-').next().and_then(|c| c.parse::<Codec>().ok()) else {
            continue;
        };
        let bytes = std::fs::read(&path).unwrap();
        assert!(codec.decode_batch(&bytes).is_err(), "{name} decoded without error");
        seen += 1;
    }
    assert!(seen >= 3, "expected fixtures in {}", dir.display());
}
