//! Compressed payloads, the Tahu way (feature `compression`).
#![cfg(feature = "compression")]

use prost::Message as _;
use shopfloor_sparkplug::compression::{
    Algorithm, COMPRESSED_UUID, MAX_INFLATED, compress, decompress,
};
use shopfloor_sparkplug::{BirthTypes, EncodeOptions, Metric, MetricValue, Payload, proto};

fn inner() -> Payload {
    let metrics = (0..50)
        .map(|i| Metric::new(format!("m{i}"), 5, MetricValue::Double(f64::from(i))))
        .collect();
    Payload { timestamp: Some(5), seq: Some(7), metrics, ..Default::default() }
}

#[test]
fn both_algorithms_round_trip_through_decode() {
    let p = inner();
    let plain = p.encode(EncodeOptions::default());
    for algorithm in [Algorithm::Deflate, Algorithm::Gzip] {
        let wrapped = compress(&plain, algorithm, 9);
        assert!(wrapped.len() < plain.len(), "{algorithm:?} did not shrink {} bytes", plain.len());
        let outer = proto::Payload::decode(&wrapped[..]).unwrap();
        assert_eq!(outer.uuid.as_deref(), Some(COMPRESSED_UUID));
        assert_eq!(Payload::decode(&wrapped, &BirthTypes::new()).unwrap(), p, "{algorithm:?}");
    }
}

#[test]
fn deflate_is_the_default_and_zlib_wrapped() {
    let plain = inner().encode(EncodeOptions::default());
    let mut outer = proto::Payload::decode(&compress(&plain, Algorithm::Deflate, 1)[..]).unwrap();
    outer.metrics.clear(); // no algorithm metric: DEFLATE
    let body = outer.body.clone().unwrap();
    assert_eq!(body[0], 0x78, "a zlib header, as Java's Deflater writes");
    assert_eq!(decompress(&outer).unwrap(), plain);
}

#[test]
fn bad_envelopes_are_typed_errors() {
    let outer = |body: Option<Vec<u8>>, algorithm: Option<&str>| proto::Payload {
        uuid: Some(COMPRESSED_UUID.into()),
        body: body.map(Into::into),
        metrics: algorithm
            .map(|a| proto::Metric {
                name: Some("algorithm".into()),
                value: Some(proto::MetricValue::String(a.into())),
                ..Default::default()
            })
            .into_iter()
            .collect(),
        ..Default::default()
    };
    for (p, needle) in [
        (outer(None, None), "without a body"),
        (outer(Some(b"not deflate".to_vec()), None), "DEFLATE body does not inflate"),
        (outer(Some(vec![0x1f, 0x8b, 0]), Some("GZIP")), "GZIP body does not inflate"),
        (outer(Some(vec![]), Some("LZ4")), "unknown algorithm"),
    ] {
        let err = Payload::decode(&p.encode_to_vec(), &BirthTypes::new()).unwrap_err();
        assert!(err.to_string().contains(needle), "{err}");
    }
    // A bomb: 64 MiB of zeros inflate past the limit and are refused.
    let bomb = compress(&vec![0; 4 * MAX_INFLATED], Algorithm::Deflate, 1);
    assert!(bomb.len() < 200_000);
    let err = Payload::decode(&bomb, &BirthTypes::new()).unwrap_err();
    assert!(err.to_string().contains("inflates past"), "{err}");
}
