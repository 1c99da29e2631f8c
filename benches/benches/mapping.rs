//! Payload mappings against shopfloor's own codec, ns per reading: the
//! issue's bound is a mapping at most 2× the own JSON codec on a payload of
//! the same size. The fairest such payload is the same bytes: a mapping
//! that reads shopfloor's own JSON `Batch` shape (`each = "/readings"`),
//! beside `Codec::Json` decoding it and `serde_json::Value` parsing it
//! (generic JSON, the reference). The devices' shapes (Kepware's
//! `values[]`, a flat object of numbers, CBOR) are printed for
//! information, with their bytes per reading.
//!
//! Run: `cargo bench -p shopfloor-benches --bench mapping`.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput};
use shopfloor_benches::{criterion_dir, ns_per_iter, plant_batch, run_criterion};
use shopfloor_mqtt::mapping::{Mapping, MappingSpec};
use shopfloor_schemas::{Codec, Quality, Timestamp};

/// Readings a message.
const N: usize = 100;
const T0: u64 = 1_796_637_600_000;

fn mapping(toml: &str) -> Mapping {
    let spec: MappingSpec = toml::from_str(toml).unwrap();
    spec.compile(Path::new(".")).unwrap()
}

/// (name, mapping, topic, payload)
fn shapes() -> Vec<(&'static str, Mapping, &'static str, Vec<u8>)> {
    let b = plant_batch(N);
    let own = Codec::Json.encode_batch(&b).unwrap();
    let own_cbor = Codec::Cbor.encode_batch(&b).unwrap();
    let own_mapping = r#"
        name = "own"
        topic = "own/+"
        each = "/readings"
        source = "{$/source}"
        metric = "{/metric}"
        value = "/value"
        timestamp = "/timestamp"
        quality = "/quality"
    "#;
    let kepware: String = b
        .readings
        .iter()
        .map(|r| {
            format!(
                r#"{{"id":"{}","v":{},"q":{},"t":{}}}"#,
                r.metric,
                r.value,
                r.quality == Quality::Good,
                r.timestamp.unix_ms()
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    let flat: String = b
        .readings
        .iter()
        .map(|r| format!(r#""{}":{}"#, r.metric, r.value))
        .collect::<Vec<_>>()
        .join(",");
    vec![
        ("own shape, JSON", mapping(own_mapping), "own/x", own),
        (
            "own shape, CBOR",
            mapping(
                &own_mapping
                    .replace("own/+", "cbor/+")
                    .replace("\"own\"", "\"cbor\"\nformat = \"cbor\""),
            ),
            "cbor/x",
            own_cbor,
        ),
        (
            "Kepware values[]",
            mapping(
                r#"
                name = "kepware"
                topic = "iotgateway/{agent}"
                each = "/values"
                metric = "{/id}"
                value = "/v"
                timestamp = "/t"
                time_format = "unix_ms"
                quality = "/q"
                "#,
            ),
            "iotgateway/a1",
            format!(r#"{{"timestamp":{T0},"values":[{kepware}]}}"#).into_bytes(),
        ),
        (
            "flat object",
            mapping(
                r#"
                name = "flat"
                topic = "flat/{machine}"
                fields = ""
                timestamp = "/ts"
                "#,
            ),
            "flat/m1",
            format!(r#"{{{flat},"ts":"2026-12-07T10:00:00Z"}}"#).into_bytes(),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("mapping");
    g.throughput(Throughput::Elements(N as u64));
    let shapes = shapes();
    let own = &shapes[0].3;
    g.bench_function("codec_json", |b| {
        b.iter(|| Codec::Json.decode_batch(black_box(own)).unwrap())
    });
    g.bench_function("serde_json_value", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(own)).unwrap());
    });
    let own_cbor = &shapes[1].3;
    g.bench_function("codec_cbor", |b| {
        b.iter(|| Codec::Cbor.decode_batch(black_box(own_cbor)).unwrap())
    });
    for (name, m, topic, payload) in &shapes {
        let received = Timestamp::from_unix_ms(T0);
        let got = m.decode(topic, payload, received).unwrap();
        assert_eq!((got.len(), got.failures.len()), (N, 0), "{name}: every reading, no failure");
        g.bench_function(format!("map {name}"), |b| {
            b.iter(|| m.decode(black_box(topic), black_box(payload), received).unwrap());
        });
    }
    g.finish();
}

fn summary(dir: &Path) {
    println!(
        "\n== payload mappings: ns per reading, median (best sample); {N} readings a message =="
    );
    let per = |id: &str| ns_per_iter(dir, "mapping", id).map(|(m, b)| (m / N as f64, b / N as f64));
    let (Some(json), Some(value), Some(cbor)) =
        (per("codec_json"), per("serde_json_value"), per("codec_cbor"))
    else {
        println!("(no estimates: run `cargo bench`, not `cargo test`)");
        return;
    };
    println!(
        "{:<28} {:>16} {:>10} {:>14}  verdict",
        "decoder", "ns/reading", "bytes/rd", "× codec JSON"
    );
    let shapes = shapes();
    let bytes = |i: usize| shapes[i].3.len() as f64 / N as f64;
    println!(
        "{:<28} {:>16} {:>10.0} {:>14}  the reference",
        "Codec::Json (own shape)",
        format!("{:.1} ({:.1})", json.0, json.1),
        bytes(0),
        "1.00"
    );
    println!(
        "{:<28} {:>16} {:>10.0} {:>14.2}  generic JSON, no readings",
        "serde_json::Value (same)",
        format!("{:.1} ({:.1})", value.0, value.1),
        bytes(0),
        value.0 / json.0
    );
    println!(
        "{:<28} {:>16} {:>10.0} {:>14.2}",
        "Codec::Cbor (own shape)",
        format!("{:.1} ({:.1})", cbor.0, cbor.1),
        bytes(1),
        cbor.0 / json.0
    );
    for (i, (name, ..)) in shapes.iter().enumerate() {
        let Some(m) = per(&format!("map {name}")) else { continue };
        let verdict = match i {
            0 if m.0 <= 2.0 * json.0 => "meets ≤ 2× (same bytes)",
            0 => "MISSES ≤ 2× (same bytes)",
            1 => "beside Codec::Cbor: ×",
            _ => "",
        };
        let extra = if i == 1 { format!("{:.2}", m.0 / cbor.0) } else { String::new() };
        println!(
            "{:<28} {:>16} {:>10.0} {:>14.2}  {verdict}{extra}",
            format!("mapping: {name}"),
            format!("{:.1} ({:.1})", m.0, m.1),
            bytes(i),
            m.0 / json.0
        );
    }
}

fn main() {
    run_criterion(bench, || summary(&criterion_dir()));
}
