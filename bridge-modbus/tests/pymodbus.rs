//! The poller against a real, independent Modbus device: pymodbus from the
//! test venv (`testkit/python/modbus_device.py`), which encodes the values itself
//! with Python's `struct`, over TCP and over RTU on a socat pseudo-terminal
//! pair. Every type and byte order, a refused merged read, a device killed
//! and back, a slow device, write-back, a wrong unit id and a server that
//! answers garbage.

use std::collections::HashMap;
use std::time::Duration;

use shopfloor_bridge_modbus::session::Output;
use shopfloor_bridge_modbus::{Poller, RegisterMap, WriteFailure};
use shopfloor_schemas::{Quality, Value};
use tokio::time::timeout;

mod common;
use common::{Device, one_device};

/// Every type in every order, with the value pymodbus stores and the value
/// the bridge must read: (tag lines, area, address, type, order, value).
struct Case {
    name: String,
    address: u16,
    kind: &'static str,
    order: &'static str,
    py_value: String,
    expect: Value,
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut add =
        |kind: &'static str, order: &'static str, width: u16, py: String, expect: Value| {
            out.push(Case {
                name: format!("{kind}-{order}"),
                address: at,
                kind,
                order,
                py_value: py,
                expect,
            });
            at += width;
        };
    for order in ["AB", "BA"] {
        add("u16", order, 1, "65000".into(), Value::I64(65_000));
        add("i16", order, 1, "-12345".into(), Value::I64(-12_345));
    }
    for order in ["ABCD", "CDAB", "BADC", "DCBA"] {
        add("u32", order, 2, "4000000000".into(), Value::I64(4_000_000_000));
        add("i32", order, 2, "-123456789".into(), Value::I64(-123_456_789));
        add("u64", order, 4, "18000000000000000000".into(), Value::U64(18_000_000_000_000_000_000));
        add("i64", order, 4, "-9000000000000000000".into(), Value::I64(-9_000_000_000_000_000_000));
        add("f32", order, 2, "-1.5".into(), Value::F64(-1.5));
        add("f64", order, 4, "3.141592653589793".into(), Value::F64(std::f64::consts::PI));
    }
    out
}

fn tag_lines(cases: &[Case]) -> String {
    let mut s = String::new();
    for c in cases {
        s.push_str(&format!(
            "[[device.tag]]\nname = \"{}\"\narea = \"holding_register\"\naddress = {}\ntype = \"{}\"\norder = \"{}\"\n",
            c.name, c.address, c.kind, c.order
        ));
    }
    s
}

/// The tags besides the numbers: a string, a bit and the bytes of a
/// register, a coil, a discrete input, a scaled input register, a writable
/// setpoint.
const OTHER_TAGS: &str = include_str!("fixtures/other_tags.toml");

fn map(link: &str, timeout_ms: u64, extra: &str, tags: &str) -> RegisterMap {
    one_device("plc", link, &format!("unit = 1\ntimeout_ms = {timeout_ms}\n{extra}\n{tags}"))
}

/// Latest value and quality per tag, from outputs until `done` holds (or
/// 20 s pass). Returns the outputs seen, too.
async fn collect(
    poller: &mut Poller,
    what: &str,
    latest: &mut HashMap<String, (Value, Quality)>,
    mut done: impl FnMut(&HashMap<String, (Value, Quality)>, &Output) -> bool,
) -> Vec<Output> {
    let mut seen = Vec::new();
    let found = timeout(Duration::from_secs(20), async {
        loop {
            let (_, out) = poller.next().await.expect("the poller runs");
            if let Output::Readings(b) = &out {
                for r in &b.readings {
                    latest.insert(r.metric.to_string(), (r.value.clone(), r.quality));
                }
            }
            let stop = done(latest, &out);
            seen.push(out);
            if stop {
                return;
            }
        }
    })
    .await;
    if found.is_err() {
        panic!("{what}: not within 20 s; seen {seen:#?}\nlatest {latest:#?}");
    }
    seen
}

fn good(latest: &HashMap<String, (Value, Quality)>, name: &str, v: &Value) -> bool {
    latest.get(name).is_some_and(|(x, q)| x == v && *q == Quality::Good)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_and_order_reads_what_pymodbus_stored_tcp() {
    every_type_and_order(Device::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_and_order_reads_what_pymodbus_stored_rtu() {
    every_type_and_order(Device::start_rtu()).await;
}

/// Modbus RTU over TCP: the RTU device behind a serial-to-Ethernet
/// converter (socat, transparent), the bridge framing RTU on the TCP
/// connection (`framing = "rtu"`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_and_order_reads_what_pymodbus_stored_rtu_over_tcp() {
    every_type_and_order(Device::start_rtu_over_tcp()).await;
}

async fn every_type_and_order(mut dev: Device) {
    let cases = cases();
    for c in &cases {
        dev.set("h", c.address, c.kind, c.order, &c.py_value);
    }
    dev.set("h", 150, "string", "AB", "\"AB C\"");
    dev.set_registers(160, &[0b10_0000]);
    dev.set_registers(161, &[0xFE_FF]);
    dev.set("c", 3, "bool", "AB", "true");
    dev.set("d", 7, "bool", "AB", "true");
    dev.set("i", 4, "i16", "AB", "-25");
    let m = map(&dev.link(), 1000, "", &format!("{}{OTHER_TAGS}", tag_lines(&cases)));
    let mut poller = Poller::spawn(&m, 64);
    let mut latest = HashMap::new();
    let mut expected: Vec<(String, Value)> =
        cases.iter().map(|c| (c.name.clone(), c.expect.clone())).collect();
    expected.extend([
        ("text".to_owned(), Value::String("AB C".into())),
        ("bit5".to_owned(), Value::Bool(true)),
        ("high".to_owned(), Value::I64(0xFE)),
        ("low".to_owned(), Value::I64(-1)),
        ("coil3".to_owned(), Value::Bool(true)),
        ("input7".to_owned(), Value::Bool(true)),
        ("pressure".to_owned(), Value::F64(-25.0 * 0.1 + 1.0)),
    ]);
    let seen = collect(&mut poller, "every tag's value", &mut latest, |l, _| {
        expected.iter().all(|(n, v)| good(l, n, v))
    })
    .await;
    assert!(matches!(seen[0], Output::Reachable), "{:?}", seen[0]);
    assert!(!seen.iter().any(|o| matches!(o, Output::TagError { .. })), "{seen:#?}");
    poller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_merged_read_is_replanned_and_a_bad_address_named() {
    let mut dev = Device::start();
    dev.set("h", 195, "u16", "AB", "1951");
    dev.set("h", 212, "u16", "AB", "2121");
    // 200..=209 are not mapped: a read of 195..=212 is refused, 205 always.
    let tags = r#"
[[device.tag]]
name = "before"
area = "holding_register"
address = 195
[[device.tag]]
name = "hole"
area = "holding_register"
address = 205
[[device.tag]]
name = "after"
area = "holding_register"
address = 212
"#;
    let mut poller = Poller::spawn(&map(&dev.link(), 1000, "", tags), 64);
    let mut latest = HashMap::new();
    let mut replanned = 0;
    let mut hole_error = None;
    collect(&mut poller, "both neighbours good and the hole named", &mut latest, |l, o| {
        match o {
            Output::Replanned { .. } => replanned += 1,
            Output::TagError { tag, reason } if tag == "hole" => hole_error = Some(reason.clone()),
            _ => {}
        }
        good(l, "before", &Value::I64(1951))
            && good(l, "after", &Value::I64(2121))
            && hole_error.is_some()
    })
    .await;
    assert!(replanned >= 1);
    assert!(hole_error.unwrap().contains("illegal data address"));
    poller.shutdown().await;
}

/// "level", an f32 at 10, and "count", a u32 at 40.
const ONE_TAG: &str = include_str!("fixtures/level_and_count.toml");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_device_goes_stale_and_comes_back_good() {
    let mut dev = Device::start();
    let port = dev.port;
    dev.set("h", 10, "f32", "CDAB", "42.5");
    let mut poller = Poller::spawn(&map(&dev.link(), 300, "", ONE_TAG), 64);
    let mut latest = HashMap::new();
    collect(&mut poller, "first value", &mut latest, |l, _| good(l, "level", &Value::F64(42.5)))
        .await;
    dev.peer.kill();
    let seen = collect(&mut poller, "stale after the kill", &mut latest, |l, _| {
        l.get("level").is_some_and(|(v, q)| *v == Value::F64(42.5) && *q == Quality::Stale)
    })
    .await;
    assert!(seen.iter().any(|o| matches!(o, Output::Unreachable { .. })), "{seen:#?}");
    let mut dev = Device::on(port);
    dev.set("h", 10, "f32", "CDAB", "43.5");
    let seen =
        collect(&mut poller, "good again", &mut latest, |l, _| good(l, "level", &Value::F64(43.5)))
            .await;
    assert!(seen.iter().any(|o| matches!(o, Output::Reachable)), "{seen:#?}");
    poller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_device_times_out_without_mixing_up_answers_tcp() {
    slow_device(Device::start()).await;
}

/// Over RTU there is no transaction id: a late answer taken for the next
/// request's would be wrong data, silently (reference: modbus-client-notes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_device_times_out_without_mixing_up_answers_rtu() {
    slow_device(Device::start_rtu()).await;
}

async fn slow_device(mut dev: Device) {
    dev.set("h", 10, "f32", "CDAB", "1.0");
    dev.set("h", 40, "u32", "ABCD", "1");
    // Far apart: two reads per poll, so a late answer to one could be
    // taken for the other's.
    let m = map(&dev.link(), 200, "max_gap = 0", ONE_TAG);
    let mut poller = Poller::spawn(&m, 64);
    let mut latest = HashMap::new();
    collect(&mut poller, "first values", &mut latest, |l, _| {
        good(l, "level", &Value::F64(1.0)) && good(l, "count", &Value::I64(1))
    })
    .await;
    assert_eq!(dev.cmd(r#"{"delay": 0.5}"#), "ok");
    // Timeouts: the read's tags bad (over RTU the line then waits longer
    // for this device, and its answers come back in time).
    collect(&mut poller, "timeouts when slow", &mut latest, |_, o| {
        matches!(o, Output::TagError { reason, .. } | Output::Unreachable { reason } if reason.starts_with("no answer within"))
    })
    .await;
    dev.set("h", 10, "f32", "CDAB", "2.0");
    dev.set("h", 40, "u32", "ABCD", "2");
    assert_eq!(dev.cmd(r#"{"delay": 0}"#), "ok");
    // From now on every value read must be one the device really holds for
    // that tag: a late answer taken for the other read would show up here.
    let mut wrong = Vec::new();
    collect(&mut poller, "the new values", &mut latest, |l, o| {
        if let Output::Readings(b) = o {
            for r in &b.readings {
                let ok = match r.metric.as_str() {
                    "level" => matches!(r.value, Value::F64(x) if x == 1.0 || x == 2.0),
                    _ => matches!(r.value, Value::I64(1 | 2)),
                };
                if !ok {
                    wrong.push(r.clone());
                }
            }
        }
        good(l, "level", &Value::F64(2.0)) && good(l, "count", &Value::I64(2))
    })
    .await;
    assert!(wrong.is_empty(), "values from the wrong read: {wrong:?}");
    poller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_back_writes_scaled_reads_back_and_refuses_what_it_must() {
    let mut dev = Device::start();
    let m = map(&dev.link(), 1000, "", OTHER_TAGS);
    let mut poller = Poller::spawn(&m, 64);
    let mut latest = HashMap::new();
    collect(&mut poller, "connected", &mut latest, |_, o| matches!(o, Output::Reachable)).await;
    let back = poller.writer().write("plc", "setpoint", Value::F64(-12.3)).await.expect("written");
    assert_eq!(back, Value::F64(-123.0 * 0.1));
    // Big-endian i32 -123 as pymodbus holds it.
    assert_eq!(dev.get("h", 170, 2), [0xFFFF, 0xFF85]);
    collect(&mut poller, "the written value published", &mut latest, |l, _| {
        good(l, "setpoint", &Value::F64(-123.0 * 0.1))
    })
    .await;
    let e = poller.writer().write("plc", "setpoint", Value::F64(5000.0)).await.unwrap_err();
    assert!(
        matches!(e, WriteFailure::Refused(_)) && e.to_string().contains("outside its range"),
        "{e}"
    );
    let e = poller.writer().write("plc", "text", Value::String("x".into())).await.unwrap_err();
    assert!(e.to_string().contains("not writable"), "{e}");
    let e = poller.writer().write("plc", "nope", Value::I64(1)).await.unwrap_err();
    assert!(matches!(e, WriteFailure::UnknownTag { .. }), "{e}");
    // A coil, and a bit of a register written by mask (its neighbours kept).
    assert_eq!(dev.get("c", 3, 1), [0]);
    assert_eq!(
        poller.writer().write("plc", "coil3", Value::Bool(true)).await.unwrap(),
        Value::Bool(true)
    );
    assert_eq!(dev.get("c", 3, 1), [1]);
    dev.set_registers(160, &[0b10_0001]);
    assert_eq!(
        poller.writer().write("plc", "bit5", Value::Bool(false)).await.unwrap(),
        Value::Bool(false)
    );
    assert_eq!(dev.get("h", 160, 1), [0b00_0001]);
    poller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_unit_id_is_an_error_not_a_panic() {
    let dev = Device::start();
    let m = dev.map(
        "ghost",
        "unit = 9\ntimeout_ms = 300\n[[device.tag]]\nname = \"x\"\narea = \"holding_register\"\naddress = 1\n",
    );
    let mut poller = Poller::spawn(&m, 64);
    let mut latest = HashMap::new();
    collect(&mut poller, "an error for unit 9", &mut latest, |_, o| {
        matches!(o, Output::TagError { .. } | Output::Unreachable { .. })
    })
    .await;
    // Still running: a write gets an answer, not "stopped".
    let e = poller.writer().write("ghost", "x", Value::I64(1)).await.unwrap_err();
    assert!(!matches!(e, WriteFailure::Stopped), "{e}");
    poller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_a_server_never_panics() {
    // A TCP server that answers every request with bytes that are no
    // Modbus frame (a short header, a wrong length, random noise).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let garbage: [&[u8]; 4] = [
            b"\x00\x01",
            b"\x00\x01\x00\x00\x00\xff\x01\x03\x02",
            b"\x12\x34\x00\x00\x00\x05\x01\x03\x04\x00\x01\x00\x02\x00\x03",
            b"GET / HTTP/1.1\r\n\r\n",
        ];
        let mut n = 0;
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let g = garbage[n % garbage.len()];
            n += 1;
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0_u8; 260];
                while let Ok(k) = s.read(&mut buf).await {
                    if k == 0 || s.write_all(g).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let m = map(&format!("host = \"127.0.0.1\"\nport = {port}"), 200, "", ONE_TAG);
    let mut poller = Poller::spawn(&m, 64);
    let mut latest = HashMap::new();
    let mut reconnects = 0;
    collect(&mut poller, "unreachable, several times over", &mut latest, |_, o| {
        if let Output::Unreachable { .. } = o {
            reconnects += 1;
        }
        reconnects >= 1
    })
    .await;
    // The line task is alive after every kind of garbage.
    for _ in 0..4 {
        let e = poller.writer().write("plc", "level", Value::F64(1.0)).await.unwrap_err();
        assert!(!matches!(e, WriteFailure::Stopped), "{e}");
    }
    poller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_a_serial_line_never_panics() {
    use std::io::{Read, Write};
    let pair = shopfloor_testkit::SerialPair::start().expect("a socat serial pair");
    // The far end answers every request with bytes that are no RTU frame:
    // a wrong CRC, a wrong function code, a short frame, noise.
    let mut far = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(pair.b())
        .expect("open the far end");
    std::thread::spawn(move || {
        let garbage: [&[u8]; 4] = [
            b"\x01\x03\x04\x00\x01\x00\x02\xff\xff",
            b"\x01\x83",
            b"\x01\x10\x00",
            b"\xde\xad\xbe\xef\x00\x00",
        ];
        let mut buf = [0_u8; 256];
        let mut n = 0;
        while let Ok(k) = far.read(&mut buf) {
            if k == 0 || far.write_all(garbage[n % garbage.len()]).is_err() {
                break;
            }
            n += 1;
        }
    });
    let link = format!("serial = \"{}\"\nbaud = 115200", pair.a().display());
    let mut poller = Poller::spawn(&map(&link, 200, "", ONE_TAG), 64);
    let mut latest = HashMap::new();
    collect(&mut poller, "unreachable", &mut latest, |_, o| {
        matches!(o, Output::Unreachable { .. })
    })
    .await;
    for _ in 0..4 {
        let e = poller.writer().write("plc", "level", Value::F64(1.0)).await.unwrap_err();
        assert!(!matches!(e, WriteFailure::Stopped), "{e}");
    }
    poller.shutdown().await;
}
