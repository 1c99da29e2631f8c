//! Any batch → bytes → an equal batch, for every codec.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use shopfloor_schemas::{Batch, Codec, Quality, Reading, Timestamp, Value};
use support::same;

mod support;

fn text(min: usize) -> impl Strategy<Value = String> {
    // Any Unicode except NUL, which no codec accepts.
    vec(any::<char>().prop_filter("no NUL", |c| *c != '\0'), min..12)
        .prop_map(|cs| cs.into_iter().collect())
}

fn value(finite_only: bool) -> impl Strategy<Value = Value> {
    let float = if finite_only {
        any::<f64>().prop_filter("finite", |f| f.is_finite()).boxed()
    } else {
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(-0.0)
        ]
        .boxed()
    };
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::I64),
        prop_oneof![any::<u64>(), 0..10_u64, Just(u64::MAX)].prop_map(Value::U64),
        float.prop_map(Value::F64),
        text(0).prop_map(Value::String),
        vec(any::<u8>(), 0..16).prop_map(|b| Value::Bytes(Bytes::from(b))),
    ]
}

fn batch(finite_only: bool) -> impl Strategy<Value = Batch> {
    let reading =
        (text(1), any::<u64>(), value(finite_only), prop::sample::select(Quality::ALL.to_vec()))
            .prop_map(|(metric, ts, value, quality)| Reading {
                metric: metric.into(),
                timestamp: Timestamp::from_unix_ms(ts),
                value,
                quality,
            });
    (text(0), vec(reading, 0..12))
        .prop_map(|(source, readings)| Batch { source: source.into(), readings })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn json_round_trip(b in batch(true)) {
        let bytes = Codec::Json.encode_batch(&b).unwrap();
        let back = Codec::Json.decode_batch(&bytes).unwrap();
        prop_assert!(same(&b, &back), "{b:?}\n{}\n{back:?}", String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn protobuf_round_trip(b in batch(false)) {
        let bytes = Codec::Protobuf.encode_batch(&b).unwrap();
        let back = Codec::Protobuf.decode_batch(&bytes).unwrap();
        prop_assert!(same(&b, &back), "{b:?}\n{back:?}");
    }

    #[test]
    fn cbor_round_trip(b in batch(false)) {
        let bytes = Codec::Cbor.encode_batch(&b).unwrap();
        let back = Codec::Cbor.decode_batch(&bytes).unwrap();
        prop_assert!(same(&b, &back), "{b:?}\n{back:?}");
    }

    /// `encode_batch_into` appends, so one buffer serves many batches.
    #[test]
    fn encode_into_appends(b in batch(true), prefix in vec(any::<u8>(), 0..8)) {
        for codec in Codec::ALL {
            let mut buf = prefix.clone();
            codec.encode_batch_into(&b, &mut buf).unwrap();
            prop_assert_eq!(&buf[..prefix.len()], &prefix[..]);
            prop_assert_eq!(&buf[prefix.len()..], &codec.encode_batch(&b).unwrap()[..]);
        }
    }

    /// Arbitrary bytes never panic any decoder.
    #[test]
    fn decoders_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        for codec in Codec::ALL {
            let _ = codec.decode_batch(&bytes);
        }
    }

    /// Mutated valid payloads (the interesting malformed inputs) never panic.
    #[test]
    fn mutated_payloads_never_panic(b in batch(true), flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6), cut in any::<prop::sample::Index>()) {
        for codec in Codec::ALL {
            let mut bytes = codec.encode_batch(&b).unwrap();
            if bytes.is_empty() { continue; }
            for (at, byte) in &flips {
                let i = at.index(bytes.len());
                bytes[i] ^= byte;
            }
            let _ = codec.decode_batch(&bytes);
            let _ = codec.decode_batch(&bytes[..cut.index(bytes.len())]);
        }
    }
}

#[test]
fn every_codec_round_trips_a_typical_batch() {
    let t = Timestamp::from_unix_ms(1_700_000_000_000);
    let b = Batch::new("plant1/press/press-3")
        .with(Reading::new("temperature", t, 71.5))
        .with(Reading::new("cycles", t, 42_u64))
        .with(Reading::new("delta", t, -7_i64).with_quality(Quality::Uncertain))
        .with(Reading::new("running", t, true).with_quality(Quality::Stale))
        .with(Reading::new("serial", t, "SN-0042").with_quality(Quality::Bad))
        .with(Reading::new("raw", t, Bytes::from_static(&[0, 1, 0xff])));
    for codec in Codec::ALL {
        let bytes = codec.encode_batch(&b).unwrap();
        assert_eq!(codec.decode_batch(&bytes).unwrap(), b, "{codec}");
    }
}

#[test]
fn json_writes_the_documented_shape() {
    let t = Timestamp::from_unix_ms(1_700_000_000_000);
    let b = Batch::new("m1")
        .with(Reading::new("temperature", t, 71.5))
        .with(Reading::new("cycles", t, 42_u64))
        .with(Reading::new("raw", t, Bytes::from_static(&[0, 1, 0xff])).with_quality(Quality::Bad));
    let json = String::from_utf8(Codec::Json.encode_batch(&b).unwrap()).unwrap();
    assert_eq!(
        json,
        r#"{"source":"m1","readings":[{"metric":"temperature","timestamp":1700000000000,"value":71.5,"quality":"good"},{"metric":"cycles","timestamp":1700000000000,"value":42,"type":"u64","quality":"good"},{"metric":"raw","timestamp":1700000000000,"value":"AAH/","type":"bytes","quality":"bad"}]}"#
    );
}

#[test]
fn json_typed_by_a_person_is_read_liberally() {
    let text = br#"{
        "readings": [
            {"metric": "a", "timestamp": 1, "value": 3, "type": "f64"},
            {"metric": "b", "timestamp": 2, "value": 5},
            {"metric": "c", "timestamp": 3, "value": 18446744073709551615},
            {"metric": "d", "timestamp": 4, "value": -1, "quality": "STALE", "unit": "bar"},
            {"metric": "e", "timestamp": 5, "type": "bytes", "value": "AAE"},
            {"metric": "f", "timestamp": 6, "value": 1e3},
            {"metric": "g", "timestamp": 7, "value": 7, "type": "integer"}
        ]
    }"#;
    let b = Codec::Json.decode_batch(text).unwrap();
    let values: Vec<&Value> = b.readings.iter().map(|r| &r.value).collect();
    assert_eq!(
        values,
        [
            &Value::F64(3.0),
            &Value::I64(5),
            &Value::U64(u64::MAX),
            &Value::I64(-1),
            &Value::Bytes(Bytes::from_static(&[0, 1])),
            &Value::F64(1000.0),
            &Value::I64(7),
        ]
    );
    assert_eq!(b.source, "");
    assert_eq!(b.readings[3].quality, Quality::Stale);
}

#[test]
fn content_types_and_names_pick_codecs() {
    for codec in Codec::ALL {
        assert_eq!(Codec::from_content_type(codec.content_type()).unwrap(), codec);
        assert_eq!(codec.as_str().parse::<Codec>().unwrap(), codec);
    }
    for (ct, codec) in [
        ("Application/JSON; charset=utf-8", Codec::Json),
        ("text/json", Codec::Json),
        ("application/vnd.shopfloor.batch+json", Codec::Json),
        ("application/protobuf", Codec::Protobuf),
        ("application/vnd.google.protobuf", Codec::Protobuf),
        ("application/x-protobuf; messageType=shopfloor.v1.Batch", Codec::Protobuf),
        ("application/senml+cbor", Codec::Cbor),
        ("proto", Codec::Protobuf),
    ] {
        assert_eq!(ct.parse::<Codec>().unwrap(), codec, "{ct}");
    }
    let err = Codec::from_content_type("text/plain").unwrap_err();
    assert!(err.to_string().contains("text/plain"), "{err}");
    assert!("xml".parse::<Codec>().is_err());
}
