//! The payload codec: signed integers in both peer encodings, packed arrays
//! against hand-computed vectors, proto2 presence, decoding DATA with the
//! birth's table, typed errors, and round trips of any value.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message as _;
use shopfloor_sparkplug::payload::{DataSet, Parameter, PropertySet, PropertyValue, Template};
use shopfloor_sparkplug::proto;
use shopfloor_sparkplug::{
    BirthTypes, DataType, DecodeError, EncodeOptions, Metric, MetricValue, Payload, SignedEncoding,
    ValueError,
};

fn raw_metric(datatype: DataType, value: proto::MetricValue) -> proto::Metric {
    proto::Metric {
        name: Some("m".into()),
        datatype: Some(datatype.as_u32()),
        timestamp: Some(1),
        value: Some(value),
        ..Default::default()
    }
}

fn decode_one(metric: proto::Metric) -> Result<MetricValue, DecodeError> {
    let raw = proto::Payload {
        timestamp: Some(1),
        seq: Some(0),
        metrics: vec![metric],
        ..Default::default()
    };
    let p = Payload::decode(&raw.encode_to_vec(), &BirthTypes::new())?;
    Ok(p.metrics[0].value.clone().expect("a value"))
}

fn encode_one(value: MetricValue, signed: SignedEncoding) -> proto::MetricValue {
    let p = Payload { metrics: vec![Metric::new("m", 1, value)], ..Default::default() };
    let raw = p.to_raw(EncodeOptions::DEFAULT.with_signed(signed));
    raw.metrics[0].value.clone().expect("a value")
}

#[test]
fn signed_integers_decode_from_both_peer_encodings() {
    use proto::MetricValue::{Int, Long};
    let cases: &[(DataType, u32, u32, MetricValue)] = &[
        // (type, zero-extended, sign-extended, value)
        (DataType::Int8, 0xFF, 0xFFFF_FFFF, MetricValue::Int8(-1)),
        (DataType::Int8, 0x80, 0xFFFF_FF80, MetricValue::Int8(i8::MIN)),
        (DataType::Int8, 0x7F, 0x7F, MetricValue::Int8(i8::MAX)),
        (DataType::Int16, 0xFFFE, 0xFFFF_FFFE, MetricValue::Int16(-2)),
        (DataType::Int16, 0x8000, 0xFFFF_8000, MetricValue::Int16(i16::MIN)),
        (DataType::Int32, 0xFFFF_FFFD, 0xFFFF_FFFD, MetricValue::Int32(-3)),
    ];
    for (t, zero, sign, want) in cases {
        assert_eq!(
            &decode_one(raw_metric(*t, Int(*zero))).unwrap(),
            want,
            "{t} zero-extended {zero:#x}"
        );
        assert_eq!(
            &decode_one(raw_metric(*t, Int(*sign))).unwrap(),
            want,
            "{t} sign-extended {sign:#x}"
        );
        assert_eq!(encode_one(want.clone(), SignedEncoding::SignExtend), Int(*sign), "{t}");
        assert_eq!(encode_one(want.clone(), SignedEncoding::ZeroExtend), Int(*zero), "{t}");
    }
    // Peers that put small signed values in long_value, sign-extended to 64 bits.
    assert_eq!(
        decode_one(raw_metric(DataType::Int16, Long(u64::MAX))).unwrap(),
        MetricValue::Int16(-1)
    );
    assert_eq!(
        decode_one(raw_metric(DataType::Int64, Long(u64::MAX))).unwrap(),
        MetricValue::Int64(-1)
    );
    assert_eq!(encode_one(MetricValue::Int64(-1), SignedEncoding::SignExtend), Long(u64::MAX));
    assert_eq!(
        decode_one(raw_metric(DataType::UInt32, Int(u32::MAX))).unwrap(),
        MetricValue::UInt32(u32::MAX)
    );
}

#[test]
fn integers_outside_both_readings_are_refused() {
    use proto::MetricValue::Int;
    for (t, raw) in [
        (DataType::Int8, 0x1234),
        (DataType::Int8, 0xFFFF_0000),
        (DataType::Int16, 0x1_0000),
        (DataType::UInt8, 0x100),
        (DataType::UInt16, 0xFFFF_FFFF),
    ] {
        match decode_one(raw_metric(t, Int(raw))) {
            Err(DecodeError::Value { source: ValueError::OutOfRange { datatype, .. }, .. }) => {
                assert_eq!(datatype, t)
            }
            other => panic!("{t} {raw:#x}: {other:?}"),
        }
    }
}

#[test]
fn arrays_match_hand_computed_vectors() {
    let cases: Vec<(MetricValue, Vec<u8>)> = vec![
        (MetricValue::Int8Array(vec![-23, 123]), vec![0xE9, 0x7B]),
        (MetricValue::Int16Array(vec![-30_000, 30_000]), vec![0xD0, 0x8A, 0x30, 0x75]),
        (
            MetricValue::Int32Array(vec![-1, 256]),
            vec![0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x01, 0x00, 0x00],
        ),
        (MetricValue::UInt16Array(vec![0x1234]), vec![0x34, 0x12]),
        (MetricValue::FloatArray(vec![1.0]), vec![0x00, 0x00, 0x80, 0x3F]),
        (MetricValue::DoubleArray(vec![1.0]), vec![0, 0, 0, 0, 0, 0, 0xF0, 0x3F]),
        (
            MetricValue::DateTimeArray(vec![1_256_102_875_335]),
            1_256_102_875_335_u64.to_le_bytes().to_vec(),
        ),
        // Count 4 (LE), then 1011 packed most significant bit first.
        (MetricValue::BooleanArray(vec![true, false, true, true]), vec![4, 0, 0, 0, 0xB0]),
        (MetricValue::BooleanArray(vec![true; 9]), vec![9, 0, 0, 0, 0xFF, 0x80]),
        (MetricValue::StringArray(vec!["ABC".into(), "hello".into()]), b"ABC\0hello\0".to_vec()),
        (MetricValue::StringArray(vec![]), vec![]),
    ];
    for (value, bytes) in cases {
        let t = value.datatype();
        assert_eq!(
            encode_one(value.clone(), SignedEncoding::default()),
            proto::MetricValue::Bytes(bytes.clone().into()),
            "{t}"
        );
        assert_eq!(
            decode_one(raw_metric(t, proto::MetricValue::Bytes(bytes.into()))).unwrap(),
            value,
            "{t}"
        );
    }
    // A StringArray whose last terminator is missing is forgiven.
    let lenient = decode_one(raw_metric(
        DataType::StringArray,
        proto::MetricValue::Bytes(Bytes::from_static(b"a\0b")),
    ));
    assert_eq!(lenient.unwrap(), MetricValue::StringArray(vec!["a".into(), "b".into()]));
}

#[test]
fn malformed_arrays_are_typed_errors() {
    for (t, bytes, needle) in [
        (
            DataType::Int32Array,
            vec![1, 2, 3, 4, 5],
            "5 bytes is not a whole number of 4-byte elements",
        ),
        (DataType::DoubleArray, vec![0; 7], "7 bytes"),
        (DataType::BooleanArray, vec![1, 0], "cannot hold the 4-byte count"),
        // A count of 4 billion with one byte of bits: refused, nothing allocated.
        (DataType::BooleanArray, vec![0xFF, 0xFF, 0xFF, 0xFF, 0x01], "4294967295 booleans need"),
        (DataType::StringArray, vec![b'a', 0, 0xFF, 0], "not UTF-8"),
    ] {
        let err = decode_one(raw_metric(t, proto::MetricValue::Bytes(bytes.into()))).unwrap_err();
        assert!(
            matches!(err, DecodeError::Value { source: ValueError::BadArray { .. }, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains(needle), "{t}: {err}");
    }
}

#[test]
fn seq_presence_survives_both_ways() {
    for seq in [None, Some(0), Some(255)] {
        let p = Payload { timestamp: Some(5), seq, ..Default::default() };
        let bytes = p.encode(EncodeOptions::default());
        assert_eq!(proto::Payload::decode(&bytes[..]).unwrap().seq, seq);
        assert_eq!(Payload::decode(&bytes, &BirthTypes::new()).unwrap().seq, seq);
    }
    // Absent is no bytes at all for field 3; zero is present.
    let absent = Payload { seq: None, ..Default::default() }.encode(EncodeOptions::default());
    let zero = Payload { seq: Some(0), ..Default::default() }.encode(EncodeOptions::default());
    assert_eq!(absent, Vec::<u8>::new());
    assert_eq!(zero, vec![0x18, 0x00]);
}

fn birth() -> Payload {
    let mut temp = Metric::new("Inputs/Temperature", 10, MetricValue::Float(20.5));
    temp.alias = Some(1);
    let mut count = Metric::new("Inputs/Count", 10, MetricValue::Int16(-5));
    count.alias = Some(2);
    Payload { timestamp: Some(10), seq: Some(0), metrics: vec![temp, count], ..Default::default() }
}

#[test]
fn data_decodes_with_the_births_aliases_and_types() {
    let birth_bytes = birth().encode(EncodeOptions::default());
    let birth = Payload::decode(&birth_bytes, &BirthTypes::new()).unwrap();
    let types = BirthTypes::from_birth(&birth);
    // DATA as the spec wants it: alias only, no name, no datatype.
    let data = proto::Payload {
        timestamp: Some(11),
        seq: Some(1),
        metrics: vec![
            proto::Metric {
                alias: Some(2),
                timestamp: Some(11),
                value: Some(proto::MetricValue::Int(0xFFFF_FFF9)),
                ..Default::default()
            },
            proto::Metric {
                alias: Some(1),
                timestamp: Some(11),
                value: Some(proto::MetricValue::Float(21.0)),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let p = Payload::decode(&data.encode_to_vec(), &types).unwrap();
    assert_eq!(p.metrics[0].name.as_deref(), Some("Inputs/Count"));
    assert_eq!(p.metrics[0].value, Some(MetricValue::Int16(-7)));
    assert_eq!(p.metrics[1].name.as_deref(), Some("Inputs/Temperature"));
    assert_eq!(p.metrics[1].datatype, DataType::Float);
    // Without the birth, the same DATA is an unknown alias.
    let err = Payload::decode(&data.encode_to_vec(), &BirthTypes::new()).unwrap_err();
    assert!(matches!(err, DecodeError::UnknownAlias { alias: 2, .. }), "{err:?}");
    assert!(err.to_string().contains("request a rebirth"), "{err}");
    // DATA encoded without datatypes (as the spec advises) decodes the same.
    let out = Payload { metrics: p.metrics.clone(), ..p.clone() }
        .encode(EncodeOptions::DEFAULT.with_datatypes(false));
    assert!(proto::Payload::decode(&out[..]).unwrap().metrics.iter().all(|m| m.datatype.is_none()));
    assert_eq!(Payload::decode(&out, &types).unwrap(), p);
}

#[test]
fn typed_errors_name_the_metric() {
    let p = |metrics: Vec<proto::Metric>| {
        proto::Payload { timestamp: Some(1), metrics, ..Default::default() }.encode_to_vec()
    };
    let named = |name: &str| proto::Metric { name: Some(name.into()), ..Default::default() };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![0x12, 0x05, 0x0A], "not a Sparkplug B payload"),
        (vec![0xFF], "not a Sparkplug B payload"),
        (
            p(vec![proto::Metric { datatype: Some(99), ..named("a") }]),
            "metric \"a\": unknown datatype 99",
        ),
        (
            p(vec![named("b")]),
            "metric \"b\": no datatype in the payload and none known from a birth",
        ),
        (
            p(vec![proto::Metric { timestamp: Some(1), ..Default::default() }]),
            "metrics[0]: a metric needs a name or an alias",
        ),
        (
            p(vec![raw_metric(DataType::Int32, proto::MetricValue::String("x".into()))]),
            "metric \"m\": datatype Int32 (3) but the value is in string_value",
        ),
        (
            p(vec![raw_metric(DataType::Boolean, proto::MetricValue::Bytes(Bytes::new()))]),
            "datatype Boolean (11) but the value is in bytes_value",
        ),
        (
            p(vec![raw_metric(
                DataType::DataSet,
                proto::MetricValue::DataSet(Box::new(proto::DataSet {
                    columns: vec!["a".into()],
                    types: vec![],
                    ..Default::default()
                })),
            )]),
            "1 column names but 0 types",
        ),
        (
            p(vec![raw_metric(
                DataType::DataSet,
                proto::MetricValue::DataSet(Box::new(proto::DataSet {
                    columns: vec!["a".into()],
                    types: vec![16],
                    ..Default::default()
                })),
            )]),
            "column type 16 is not a basic type",
        ),
        (
            p(vec![proto::Metric {
                properties: Some(proto::PropertySet {
                    keys: vec!["Quality".into()],
                    values: vec![],
                }),
                ..raw_metric(DataType::Int32, proto::MetricValue::Int(1))
            }]),
            "1 keys but 0 values",
        ),
        (
            p(vec![raw_metric(DataType::PropertySet, proto::MetricValue::Int(1))]),
            "not allowed here",
        ),
    ];
    for (bytes, needle) in cases {
        let err = Payload::decode(&bytes, &BirthTypes::new()).unwrap_err();
        assert!(err.to_string().contains(needle), "{err} lacks {needle:?}");
    }
}

#[test]
fn datasets_templates_and_properties_round_trip() {
    let mut props = PropertySet::default();
    props.set("Quality", PropertyValue::Value(MetricValue::Int32(192)));
    props.set("engUnit", PropertyValue::Value(MetricValue::String("°C".into())));
    props.set("note", PropertyValue::Null(DataType::String));
    let mut nested = PropertySet::default();
    nested.set("x", PropertyValue::Value(MetricValue::Boolean(true)));
    props.set("nested", PropertyValue::PropertySet(nested.clone()));
    props.set("list", PropertyValue::PropertySetList(vec![nested.clone(), nested]));

    let dataset = DataSet {
        columns: vec![
            ("a".into(), DataType::Int8),
            ("b".into(), DataType::String),
            ("c".into(), DataType::Double),
        ],
        rows: vec![
            vec![Some(MetricValue::Int8(-1)), Some(MetricValue::String("x".into())), None],
            vec![Some(MetricValue::Int8(2)), None, Some(MetricValue::Double(2.5))],
        ],
    };
    let template = Template {
        version: Some("1.0".into()),
        template_ref: Some("Motor".into()),
        is_definition: false,
        metrics: vec![Metric::new("rpm", 3, MetricValue::UInt32(1500))],
        parameters: vec![Parameter {
            name: "size".into(),
            datatype: DataType::Int16,
            value: Some(MetricValue::Int16(-4)),
        }],
    };
    let mut with_props = Metric::new("temp", 2, MetricValue::Double(20.0));
    with_props.properties = Some(props);
    let mut null = Metric::new("unset", 2, MetricValue::Int32(0));
    null.value = None;
    let p = Payload {
        timestamp: Some(2),
        seq: Some(0),
        uuid: Some("u".into()),
        body: Some(Bytes::from_static(b"raw")),
        metrics: vec![
            with_props,
            null,
            Metric::new("table", 2, MetricValue::DataSet(Box::new(dataset))),
            Metric::new("motor", 2, MetricValue::Template(Box::new(template))),
            Metric::new("file", 2, MetricValue::File(Bytes::from_static(b"\x00\x01"))),
        ],
    };
    for signed in [SignedEncoding::SignExtend, SignedEncoding::ZeroExtend] {
        let bytes = p.encode(EncodeOptions::DEFAULT.with_signed(signed));
        assert_eq!(Payload::decode(&bytes, &BirthTypes::new()).unwrap(), p, "{signed:?}");
    }
}

fn basic_value() -> impl Strategy<Value = MetricValue> {
    prop_oneof![
        any::<i8>().prop_map(MetricValue::Int8),
        any::<i16>().prop_map(MetricValue::Int16),
        any::<i32>().prop_map(MetricValue::Int32),
        any::<i64>().prop_map(MetricValue::Int64),
        any::<u8>().prop_map(MetricValue::UInt8),
        any::<u16>().prop_map(MetricValue::UInt16),
        any::<u32>().prop_map(MetricValue::UInt32),
        any::<u64>().prop_map(MetricValue::UInt64),
        any::<f32>().prop_filter("not NaN", |f| !f.is_nan()).prop_map(MetricValue::Float),
        any::<f64>().prop_filter("not NaN", |f| !f.is_nan()).prop_map(MetricValue::Double),
        any::<bool>().prop_map(MetricValue::Boolean),
        ".{0,8}".prop_map(MetricValue::String),
        any::<u64>().prop_map(MetricValue::DateTime),
        ".{0,8}".prop_map(MetricValue::Text),
        ".{0,8}".prop_map(MetricValue::Uuid),
    ]
}

fn any_value() -> impl Strategy<Value = MetricValue> {
    prop_oneof![
        basic_value(),
        vec(any::<u8>(), 0..16).prop_map(|b| MetricValue::Bytes(b.into())),
        vec(any::<i8>(), 0..8).prop_map(MetricValue::Int8Array),
        vec(any::<i16>(), 0..8).prop_map(MetricValue::Int16Array),
        vec(any::<i32>(), 0..8).prop_map(MetricValue::Int32Array),
        vec(any::<i64>(), 0..8).prop_map(MetricValue::Int64Array),
        vec(any::<u8>(), 0..8).prop_map(MetricValue::UInt8Array),
        vec(any::<u16>(), 0..8).prop_map(MetricValue::UInt16Array),
        vec(any::<u32>(), 0..8).prop_map(MetricValue::UInt32Array),
        vec(any::<u64>(), 0..8).prop_map(MetricValue::UInt64Array),
        vec(any::<f32>().prop_filter("not NaN", |f| !f.is_nan()), 0..8)
            .prop_map(MetricValue::FloatArray),
        vec(any::<f64>().prop_filter("not NaN", |f| !f.is_nan()), 0..8)
            .prop_map(MetricValue::DoubleArray),
        vec(any::<bool>(), 0..20).prop_map(MetricValue::BooleanArray),
        vec("[^\u{0}]{0,6}", 0..5).prop_map(MetricValue::StringArray),
        vec(any::<u64>(), 0..8).prop_map(MetricValue::DateTimeArray),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every value type survives encode → decode, with either signed encoding.
    #[test]
    fn any_value_round_trips(values in vec(any_value(), 1..6), zero_extend in any::<bool>(), historical in any::<bool>()) {
        let metrics = values
            .into_iter()
            .enumerate()
            .map(|(i, v)| Metric { alias: Some(i as u64), is_historical: historical, ..Metric::new(format!("m{i}"), i as u64, v) })
            .collect();
        let p = Payload { timestamp: Some(1), seq: Some(3), metrics, ..Default::default() };
        let signed = if zero_extend { SignedEncoding::ZeroExtend } else { SignedEncoding::SignExtend };
        let bytes = p.encode(EncodeOptions::DEFAULT.with_signed(signed));
        prop_assert_eq!(Payload::decode(&bytes, &BirthTypes::new()).unwrap(), p);
    }

    /// Arbitrary bytes never panic the decoder, with or without a birth table.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..256)) {
        let _ = Payload::decode(&bytes, &BirthTypes::new());
        let _ = Payload::decode(&bytes, &BirthTypes::from_birth(&birth()));
    }

    /// Neither do arbitrary well-formed raw metrics: any datatype number with
    /// any value member.
    #[test]
    fn any_datatype_with_any_value_never_panics(datatype in 0_u32..40, raw in any::<u64>(), bytes in vec(any::<u8>(), 0..24)) {
        for value in [
            proto::MetricValue::Int(raw as u32),
            proto::MetricValue::Long(raw),
            proto::MetricValue::Float(raw as f32),
            proto::MetricValue::Double(raw as f64),
            proto::MetricValue::Boolean(raw & 1 == 1),
            proto::MetricValue::String(format!("{raw}")),
            proto::MetricValue::Bytes(bytes.clone().into()),
        ] {
            let m = proto::Metric { name: Some("m".into()), datatype: Some(datatype), value: Some(value), ..Default::default() };
            let _ = decode_one(m);
        }
    }
}

proptest! {
    /// The alias table answers as a plain map would, whether aliases are
    /// dense (1, 2, 3, …), sparse (2^40) or re-used by a later birth.
    #[test]
    fn birth_types_answer_as_a_map(
        inserts in vec((prop_oneof![0_u64..64, any::<u64>()], 0_usize..5), 0..80),
        probes in vec(prop_oneof![0_u64..64, any::<u64>()], 0..40),
    ) {
        let mut types = BirthTypes::new();
        let mut model = std::collections::HashMap::new();
        for (i, (alias, t)) in inserts.iter().enumerate() {
            let datatype = [DataType::Int8, DataType::Double, DataType::String, DataType::Boolean, DataType::Int64][*t];
            let name = format!("m{i}");
            types.insert(&name, Some(*alias), datatype);
            model.insert(*alias, (name, datatype));
        }
        for alias in probes.iter().chain(inserts.iter().map(|(a, _)| a)) {
            let want = model.get(alias).map(|(n, t)| (n.as_str(), *t));
            prop_assert_eq!(types.alias(*alias), want, "alias {}", alias);
        }
    }
}
