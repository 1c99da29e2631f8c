//! Every payload shape of `fixtures/` becomes exactly the readings
//! `fixtures/expected.toml` lists; what cannot be read says which mapping,
//! where and what was found; no input panics.

use std::path::PathBuf;

use proptest::prelude::*;
use serde::Deserialize;
use shopfloor_mapping::{Mapping, MappingSpec, compile_all};
use shopfloor_schemas::{Quality, Timestamp, Value};

fn fixtures() -> PathBuf {
    shopfloor_testkit::mapping_fixtures()
}

#[derive(Deserialize)]
struct Specs {
    mapping: Vec<MappingSpec>,
}

fn mappings() -> Vec<Mapping> {
    let text = std::fs::read_to_string(fixtures().join("mappings.toml")).unwrap();
    let specs: Specs = toml::from_str(&text).unwrap();
    compile_all(&specs.mapping, &fixtures()).unwrap()
}

fn mapping(toml_text: &str) -> Mapping {
    let spec: MappingSpec = toml::from_str(toml_text).unwrap();
    spec.compile(&fixtures()).unwrap()
}

const RECEIVED: Timestamp = Timestamp::from_unix_ms(1_800_000_000_000);

#[test]
fn every_fixture_becomes_the_expected_readings() {
    let mappings = mappings();
    let shapes = shopfloor_testkit::mapping_shapes();
    assert_eq!(shapes.len(), mappings.len(), "a shape per mapping");
    for shape in &shapes {
        let payload = std::fs::read(fixtures().join(&shape.payload)).unwrap();
        // The first mapping whose topic matches reads it, as ingest does.
        let m = mappings.iter().find(|m| m.matches(&shape.topic)).unwrap();
        assert_eq!(m.name(), shape.mapping, "{} is read by its own mapping", shape.topic);
        let mapped = m.decode(&shape.topic, &payload, RECEIVED).unwrap();
        assert!(mapped.failures.is_empty(), "{}: {:?}", shape.mapping, mapped.failures);
        let got: Vec<(String, String, String, f64, &str)> = mapped
            .batches
            .iter()
            .flat_map(|b| {
                b.readings.iter().map(|r| {
                    let time = if r.timestamp == RECEIVED {
                        "received".into()
                    } else {
                        r.timestamp.to_rfc3339()
                    };
                    (
                        b.source.to_string(),
                        r.metric.to_string(),
                        time,
                        r.value.as_f64().unwrap(),
                        r.quality.as_str(),
                    )
                })
            })
            .collect();
        let want: Vec<_> = shape
            .readings
            .iter()
            .map(|r| {
                (r.source.clone(), r.metric.clone(), r.time.clone(), r.value, r.quality.as_str())
            })
            .collect();
        assert_eq!(got, want, "{}", shape.mapping);
        let units: Vec<[String; 3]> = mapped
            .units
            .iter()
            .map(|u| [u.source.clone(), u.metric.clone(), u.unit.clone()])
            .collect();
        assert_eq!(units, shape.units, "{}", shape.mapping);
    }
}

#[test]
fn values_keep_their_type_unless_told() {
    let m = mapping("name = \"t\"\ntopic = \"t/{metric}\"");
    let read = |p: &str| {
        m.decode("t/x", p.as_bytes(), RECEIVED).unwrap().batches[0].readings[0].value.clone()
    };
    assert_eq!(read("7"), Value::I64(7));
    assert_eq!(read("18446744073709551615"), Value::U64(u64::MAX));
    assert_eq!(read("\"open\""), Value::String("open".into()));
    assert_eq!(read("false"), Value::Bool(false));
    let m = mapping("name = \"t\"\ntopic = \"t/{metric}\"\ntype = \"i64\"");
    let v = m.decode("t/x", b"\"12\"", RECEIVED).unwrap();
    assert_eq!(v.batches[0].readings[0].value, Value::I64(12), "text is parsed");
    let m = mapping("name = \"t\"\ntopic = \"t/{metric}\"\nscale = 0.1\noffset = -40");
    let v = m.decode("t/x", b"650", RECEIVED).unwrap();
    assert!(matches!(v.batches[0].readings[0].value, Value::F64(x) if (x - 25.0).abs() < 1e-9));
    let m = mapping("name = \"t\"\ntopic = \"t/{metric}\"\ntype = \"bool\"\nformat = \"text\"");
    assert_eq!(
        m.decode("t/x", b"ON", RECEIVED).unwrap().batches[0].readings[0].value,
        Value::Bool(true)
    );
}

#[test]
fn a_missing_time_is_the_receive_time_marked_uncertain() {
    let m = mapping("name = \"t\"\ntopic = \"t/{metric}\"\nvalue = \"/v\"\ntimestamp = \"/ts\"");
    let v = m.decode("t/x", br#"{"v": 1}"#, RECEIVED).unwrap();
    let r = &v.batches[0].readings[0];
    assert_eq!((r.timestamp, r.quality), (RECEIVED, Quality::Uncertain));
    assert_eq!(v.receive_time, 1);
    // A quality field can only make it worse, never better.
    let m = mapping(
        "name = \"t\"\ntopic = \"t/{metric}\"\nvalue = \"/v\"\ntimestamp = \"/ts\"\nquality = \"/q\"",
    );
    let v = m.decode("t/x", br#"{"v": 1, "q": "BAD"}"#, RECEIVED).unwrap();
    assert_eq!(v.batches[0].readings[0].quality, Quality::Bad);
    let v = m.decode("t/x", br#"{"v": 1, "q": "good"}"#, RECEIVED).unwrap();
    assert_eq!(v.batches[0].readings[0].quality, Quality::Uncertain);
}

#[test]
fn quality_codes_and_maps() {
    let m = mapping(
        "name = \"q\"\ntopic = \"q/{metric}\"\nvalue = \"/v\"\nquality = \"/q\"\nquality_codes = \"opcua\"\nquality_map = { \"-1\" = \"stale\" }",
    );
    let q =
        |p: &str| m.decode("q/x", p.as_bytes(), RECEIVED).unwrap().batches[0].readings[0].quality;
    assert_eq!(q(r#"{"v":1,"q":0}"#), Quality::Good);
    assert_eq!(q(r#"{"v":1,"q":2150891520}"#), Quality::Bad, "0x80340000 BadNodeIdUnknown");
    assert_eq!(q(r#"{"v":1,"q":-1}"#), Quality::Stale, "the map first");
    let m = mapping("name = \"q\"\ntopic = \"q/{metric}\"\nvalue = \"/v\"\nquality = \"/q\"");
    let v = m.decode("q/x", br#"{"v":1,"q":192}"#, RECEIVED).unwrap();
    assert!(v.batches.is_empty());
    assert!(v.failures[0].to_string().contains("quality_codes"), "{}", v.failures[0]);
}

#[test]
fn failures_name_the_mapping_the_path_and_what_was_there() {
    let kepware = mappings().into_iter().find(|m| m.name() == "kepware").unwrap();
    let payload = br#"{"values":[{"id":"a","v":1,"q":true,"t":5},{"id":"b","v":"n/a","q":true,"t":5},{"id":"c","q":true,"t":5},{"id":"d","v":2,"q":true,"t":"soon"}]}"#;
    let v = kepware.decode("iotgateway/x", payload, RECEIVED).unwrap();
    assert_eq!(v.len(), 1, "the good reading is kept");
    let msgs: Vec<String> = v.failures.iter().map(ToString::to_string).collect();
    assert_eq!(
        msgs,
        [
            "mapping \"kepware\": /values/1/v: expected a number, found \"n/a\"",
            "mapping \"kepware\": /values/2/v: value: nothing (the path is absent)",
            "mapping \"kepware\": /values/3/t: timestamp: expected a number of Unix milliseconds, found \"soon\"",
        ]
    );
    let v = kepware.decode("iotgateway/x", b"{\"values\": 3}", RECEIVED).unwrap();
    assert_eq!(
        v.failures[0].to_string(),
        "mapping \"kepware\": /values: each: expected an array of records, found 3"
    );
    let v = kepware.decode("iotgateway/x", b"{\"values\": [", RECEIVED).unwrap();
    assert_eq!(v.failures[0].path, "payload");
    assert!(v.failures[0].problem.starts_with("not JSON: EOF"), "{}", v.failures[0]);
    let nested = mappings().into_iter().find(|m| m.name() == "nested").unwrap();
    let v = nested
        .decode(
            "acme/nested/x",
            br#"{"device":"d","ts":1,"data":{"a/b":{"value":null}}}"#,
            RECEIVED,
        )
        .unwrap();
    assert_eq!(
        v.failures[0].to_string(),
        "mapping \"nested\": /data/a~1b/value: no value (null), found null"
    );
    let v = nested
        .decode("acme/nested/x", br#"{"device":{"id":1},"ts":1,"data":{}}"#, RECEIVED)
        .unwrap();
    assert_eq!(
        v.failures[0].to_string(),
        "mapping \"nested\": /device: source: expected text or a number, found an object with 1 member (id)"
    );
    assert!(nested.decode("other/topic", b"{}", RECEIVED).is_none(), "not its topic");
}

#[test]
fn bad_mappings_are_refused_with_advice() {
    let refuse = |t: &str| {
        let spec: MappingSpec = toml::from_str(t).unwrap();
        spec.compile(&fixtures()).unwrap_err().to_string()
    };
    for (toml, advice) in [
        ("name = \"a\"\ntopic = \"a/{m}\"", "metric is not given"),
        ("name = \"a\"\ntopic = \"a/{m}\"\nmetric = \"{/x}\"\nvalue = \"v\"", "not a JSON Pointer"),
        (
            "name = \"a\"\ntopic = \"a/{m}\"\nfields = \"\"\nvalues = { x = \"/x\" }",
            "give one of value",
        ),
        ("name = \"a\"\ntopic = \"a/{m}\"\nfields = \"\"\nmetric = \"{m}\"", "does not use {key}"),
        ("name = \"a\"\ntopic = \"a/{m}\"\nmetric = \"{machine}\"", "{m}"),
        ("name = \"a\"\ntopic = \"a/#/b\"\nmetric = \"x\"", "last level"),
        (
            "name = \"a\"\ntopic = \"a\"\nmetric = \"x\"\ntimestamp = \"/t\"\ntime_format = \"%d\"\ntime_zone = \"Nowhere/City\"",
            "IANA",
        ),
        // The message list helps.
        (
            "name = \"a\"\ntopic = \"a\"\nmetric = \"x\"\nformat = \"protobuf\"\nproto_file = \"telemetry.proto\"\nmessage = \"Telemetry\"",
            "acme.v1.Telemetry",
        ),
        (
            "name = \"a\"\ntopic = \"a\"\nmetric = \"x\"\nformat = \"protobuf\"\nproto_file = \"missing.proto\"\nmessage = \"M\"",
            "missing.proto",
        ),
        ("name = \"a\"\ntopic = \"a\"\nmetric = \"x\"\ntype = \"string\"\nscale = 2.0", "scale"),
    ] {
        let e = refuse(toml);
        assert!(e.contains(advice), "{toml}: {e}");
    }
    let e = toml::from_str::<MappingSpec>("name = \"a\"\ntopic = \"a\"\nvalu = \"/v\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `valu`"), "{e}");
    let two: Specs = toml::from_str(
        "[[mapping]]\nname = \"a\"\ntopic = \"a\"\nmetric = \"x\"\n[[mapping]]\nname = \"a\"\ntopic = \"b\"\nmetric = \"x\"",
    )
    .unwrap();
    assert!(
        compile_all(&two.mapping, &fixtures())
            .unwrap_err()
            .to_string()
            .contains("names must differ")
    );
}

fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
        "[a-z0-9/~.\\-:TZ ]{0,24}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("values".to_owned()),
                    Just("v".to_owned()),
                    Just("t".to_owned()),
                    Just("id".to_owned()),
                    Just("data".to_owned()),
                    "[a-z]{1,4}"
                ],
                inner,
                0..8
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any bytes through every mapping: no panic, and every reading or
    /// failure accounted for by what the payload holds.
    #[test]
    fn arbitrary_bytes_never_panic(payload in prop::collection::vec(any::<u8>(), 0..256)) {
        for m in mappings() {
            let topic = m.filter().replace('+', "x").replace('#', "y");
            let v = m.decode(&topic, &payload, RECEIVED).unwrap();
            prop_assert!(v.len() + v.failures.len() <= payload.len() + 1);
        }
    }

    /// Any JSON document through the JSON mappings: readings are valid
    /// batches (named, no NUL), and a failure always names its mapping.
    #[test]
    fn arbitrary_json_gives_valid_batches_or_named_failures(doc in json()) {
        let payload = serde_json::to_vec(&doc).unwrap();
        for m in mappings() {
            let topic = m.filter().replace('+', "x").replace('#', "y");
            let v = m.decode(&topic, &payload, RECEIVED).unwrap();
            for b in &v.batches {
                prop_assert!(b.validate().is_ok(), "{b:?}");
            }
            for f in &v.failures {
                prop_assert_eq!(&f.mapping, m.name());
            }
        }
    }
}
