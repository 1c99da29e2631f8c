//! Register maps: what loads, and what is refused with the file, the place
//! and the fix.

use std::time::Duration;

use shopfloor_bridge_modbus::config::{
    Area, Deadband, Order, Parity, RegisterMap, TagType, Transport, parse_modicon,
};

/// Two devices, TCP and serial, with a tag of most kinds and settings.
const EXAMPLE: &str = include_str!("fixtures/full_map.toml");

#[test]
fn a_full_map_loads_with_defaults_filled_in() {
    let map = RegisterMap::from_toml(EXAMPLE).unwrap();
    assert_eq!(map.groups["fast"], Duration::from_millis(250));
    assert_eq!(map.groups["default"], Duration::from_secs(1));
    let press = map.device("press-1").unwrap();
    assert_eq!(press.transport, Transport::Tcp { host: "10.0.4.21".into(), port: 502 });
    assert_eq!((press.unit, press.max_registers, press.max_bits, press.max_gap), (7, 100, 2000, 8));
    assert_eq!(
        (press.timeout, press.pause),
        (Duration::from_millis(500), Duration::from_millis(20))
    );
    let p = &press.tags[0];
    assert_eq!((p.area, p.address, p.kind), (Area::HoldingRegister, 100, TagType::F32));
    assert_eq!(p.order, Order { swap_bytes: false, swap_words: true });
    assert_eq!((p.scale, p.offset, p.unit.as_deref()), (0.01, 0.0, Some("bar")));
    assert_eq!((p.deadband, p.group.as_str()), (Deadband::Absolute(0.5), "fast"));
    assert_eq!(press.tags[1].kind, TagType::Bit(3));
    assert_eq!(press.tags[2].kind, TagType::U16, "registers default to u16");
    let sp = &press.tags[3];
    assert!(sp.writable);
    assert_eq!((sp.min, sp.max, sp.deadband), (Some(0.0), Some(500.0), Deadband::Percent(2.0)));
    assert_eq!(
        (press.tags[4].area, press.tags[4].address, press.tags[4].kind),
        (Area::DiscreteInput, 4, TagType::Bool)
    );
    assert_eq!(press.tags[5].kind, TagType::String(8));
    let meter = map.device("meter").unwrap();
    assert_eq!(
        meter.transport,
        Transport::Rtu {
            path: "/dev/ttyUSB0".into(),
            baud: 9600,
            parity: Parity::None,
            data_bits: 8,
            stop_bits: 1
        }
    );
    assert_eq!(meter.tags[0].order, Order { swap_bytes: false, swap_words: true });
}

/// A serial-to-Ethernet converter: RTU frames over TCP, on a TCP device
/// only.
#[test]
fn rtu_over_tcp_is_a_framing_of_a_tcp_device() {
    let toml = |link: &str| {
        format!(
            "[[device]]\nname = \"d\"\n{link}\n[[device.tag]]\nname = \"t\"\nregister = \"40001\"\n"
        )
    };
    let map = RegisterMap::from_toml(&toml("host = \"10.0.0.9\"\nport = 4001\nframing = \"rtu\""))
        .unwrap();
    assert_eq!(
        map.devices[0].transport,
        Transport::RtuOverTcp { host: "10.0.0.9".into(), port: 4001 }
    );
    let map = RegisterMap::from_toml(&toml("host = \"10.0.0.9\"\nframing = \"tcp\"")).unwrap();
    assert_eq!(map.devices[0].transport, Transport::Tcp { host: "10.0.0.9".into(), port: 502 });
    let e =
        RegisterMap::from_toml(&toml("serial = \"/dev/ttyUSB0\"\nframing = \"rtu\"")).unwrap_err();
    assert!(e.to_string().contains("framing on a serial device"), "{e}");
    let e = RegisterMap::from_toml(&toml("host = \"h\"\nframing = \"ascii\"")).unwrap_err();
    assert!(e.to_string().contains("ascii"), "{e}");
}

#[test]
fn modicon_numbers_name_area_and_zero_based_address() {
    assert_eq!(parse_modicon("40001"), Ok((Area::HoldingRegister, 0)));
    assert_eq!(parse_modicon("40101"), Ok((Area::HoldingRegister, 100)));
    assert_eq!(parse_modicon("30001"), Ok((Area::InputRegister, 0)));
    assert_eq!(parse_modicon("10010"), Ok((Area::DiscreteInput, 9)));
    assert_eq!(parse_modicon("00001"), Ok((Area::Coil, 0)));
    assert_eq!(parse_modicon("465536"), Ok((Area::HoldingRegister, 65535)));
    for bad in ["20001", "40000", "4000", "4000001", "4x001", "465537", ""] {
        assert!(parse_modicon(bad).is_err(), "{bad:?} accepted");
    }
}

/// One device around the given tag lines, with `extra` device settings.
fn map_with(extra: &str, tags: &str) -> String {
    format!("[[device]]\nname = \"d\"\nhost = \"h\"\n{extra}\n{tags}")
}

fn tag(body: &str) -> String {
    format!("[[device.tag]]\nname = \"t\"\n{body}\n")
}

#[test]
fn every_mistake_names_the_place_and_the_fix() {
    let overlap = format!(
        "{}[[device.tag]]\nname = \"u\"\narea = \"holding_register\"\naddress = 11\ntype = \"u16\"\n",
        tag("area = \"holding_register\"\naddress = 10\ntype = \"f32\"")
    );
    let cases: Vec<(String, &[&str])> = vec![
        (map_with("", &tag("address = 1")), &["tag \"t\"", "no area", "register = \"40101\""]),
        (map_with("", &tag("area = \"coil\"")), &["no address"]),
        (
            map_with("", &tag("register = \"40001\"\naddress = 3")),
            &["register together with area or address", "not both"],
        ),
        (map_with("", &tag("register = \"20001\"")), &["starts with 2", "4 (holding register)"]),
        (
            map_with("", &tag("register = \"40001\"\ntype = \"bool\"")),
            &["type bool in a holding_register", "bit = n"],
        ),
        (
            map_with("", &tag("register = \"00001\"\ntype = \"u16\"")),
            &["coils and discrete inputs are type bool"],
        ),
        (map_with("", &tag("register = \"40001\"\ntype = \"bit\"")), &["type bit without bit = n"]),
        (
            map_with("", &tag("register = \"40001\"\ntype = \"bit\"\nbit = 16")),
            &["bit = 16", "0 (least significant) to 15"],
        ),
        (
            map_with("", &tag("register = \"40001\"\ntype = \"i8\"")),
            &["byte = \"high\" or \"low\""],
        ),
        (
            map_with("", &tag("register = \"40001\"\ntype = \"string\"")),
            &["a string without length"],
        ),
        (map_with("", &tag("register = \"40001\"\ntype = \"float\"")), &["type \"float\"", "f32"]),
        (
            map_with("", &tag("register = \"40001\"\ntype = \"f32\"\norder = \"ABDC\"")),
            &["order \"ABDC\"", "CDAB"],
        ),
        (
            map_with("", &tag("register = \"40001\"\ntype = \"f32\"\norder = \"BA\"")),
            &["order \"BA\" for f32", "32-bit ABCD"],
        ),
        (
            map_with("", &tag("register = \"40001\"\ntype = \"u16\"\norder = \"CDAB\"")),
            &["order \"CDAB\" for u16"],
        ),
        (map_with("", &overlap), &["tag \"u\"", "overlaps tag \"t\"", "f32 at 10"]),
        (
            map_with(
                "max_registers = 10",
                &tag("register = \"40001\"\ntype = \"string\"\nlength = 20"),
            ),
            &["takes 20 registers, more than max_registers = 10"],
        ),
        (
            map_with("", &tag("area = \"holding_register\"\naddress = 65535\ntype = \"f32\"")),
            &["runs past address 65535"],
        ),
        (
            map_with("", &tag("area = \"holding_register\"\naddress = 70000")),
            &["address 70000", "0 to 65535"],
        ),
        (
            map_with("", &tag("register = \"30001\"\nwritable = true")),
            &["writable in a input_register", "coils and holding registers"],
        ),
        (
            map_with("", &tag("register = \"40001\"\ngroup = \"fast\"")),
            &["poll group \"fast\" is not defined", "[groups]", "default"],
        ),
        (
            map_with(
                "",
                &format!("{}{}", tag("register = \"40001\""), tag("register = \"40002\"")),
            ),
            &["a second tag with this name"],
        ),
        (map_with("", &tag("register = \"40001\"\nmin = 5\nmax = 1")), &["min 5 > max 1"]),
        (map_with("", &tag("register = \"40001\"\ndeadband = -1")), &["a negative deadband"]),
        (
            map_with("", &tag("register = \"00001\"\nscale = 2")),
            &["scale, offset or deadband on bool"],
        ),
        (map_with("", &tag("register = \"40001\"\nscale = 0")), &["scale 0", "non-zero"]),
        (map_with("max_registers = 126", ""), &["max_registers = 126", "1 to 125"]),
        (map_with("baud = 9600", ""), &["serial settings on a TCP device"]),
        (map_with("timeout_ms = 0", ""), &["timeout_ms = 0"]),
        (
            "[[device]]\nname = \"d\"\n".into(),
            &["no host and no serial port", "serial = \"/dev/ttyUSB0\""],
        ),
        (
            "[[device]]\nname = \"d\"\nhost = \"h\"\nserial = \"/dev/x\"\n".into(),
            &["both host and serial"],
        ),
        ("[[device]]\nname = \"a/b\"\nhost = \"h\"\n".into(), &["device \"a/b\"", "'/'"]),
        (
            "[[device]]\nname = \"d\"\nhost = \"h\"\n[[device]]\nname = \"d\"\nhost = \"h\"\n"
                .into(),
            &["used by devices 0 and 1"],
        ),
        ("".into(), &["no devices"]),
        (
            "[groups]\nfast = 0\n[[device]]\nname = \"d\"\nhost = \"h\"\n".into(),
            &["groups.fast", "an interval of 0 ms"],
        ),
        (
            "[[device]]\nname = \"d\"\nhost = \"h\"\nspeed = 3\n".into(),
            &["line 4", "unknown field `speed`"],
        ),
    ];
    for (text, wants) in cases {
        let e = RegisterMap::from_toml(&text).expect_err(&text).to_string();
        for want in wants {
            assert!(e.contains(want), "{text}\n→ {e}\nshould contain {want:?}");
        }
    }
}

#[test]
fn two_views_of_one_status_word_are_fine() {
    let text = map_with(
        "",
        &format!(
            "{}[[device.tag]]\nname = \"bit0\"\nregister = \"40001\"\ntype = \"bit\"\nbit = 0\n\
             [[device.tag]]\nname = \"hi\"\nregister = \"40001\"\ntype = \"u8\"\nbyte = \"high\"\n\
             [[device.tag]]\nname = \"again\"\nregister = \"40001\"\ntype = \"u16\"\n",
            tag("register = \"40001\"\ntype = \"u16\"")
        ),
    );
    assert_eq!(RegisterMap::from_toml(&text).unwrap().devices[0].tags.len(), 4);
}

#[test]
fn a_file_error_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plant.toml");
    std::fs::write(&path, "[[device]]\nname = \"d\"\n").unwrap();
    let e = RegisterMap::load(&path).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}: device \"d\"", path.display())), "{e}");
    let e = RegisterMap::load(dir.path().join("missing.toml")).unwrap_err().to_string();
    assert!(e.contains("missing.toml: file: cannot read it"), "{e}");
}

proptest::proptest! {
    /// Any text, valid TOML or not, is a map or an error, never a panic.
    #[test]
    fn any_text_is_a_map_or_an_error(text in "\\PC{0,200}") {
        let _ = RegisterMap::from_toml(&text);
    }

    /// Any values in a well-formed tag are checked, never a panic.
    #[test]
    fn any_tag_values_are_checked(
        address in 0_u32..70_000,
        kind in proptest::sample::select(vec!["bool", "bit", "i8", "u8", "i16", "u16", "i32", "u32", "i64", "u64", "f32", "f64", "string", "x"]),
        area in proptest::sample::select(vec!["coil", "discrete_input", "input_register", "holding_register"]),
        order in proptest::sample::select(vec!["AB", "BA", "ABCD", "CDAB", "BADC", "DCBA", "ABCDEFGH", "HGFEDCBA", "Q"]),
        bit in 0_u8..20,
        length in 0_u16..200,
    ) {
        let text = map_with("", &tag(&format!(
            "area = \"{area}\"\naddress = {address}\ntype = \"{kind}\"\norder = \"{order}\"\nbit = {bit}\nlength = {length}\nbyte = \"high\""
        )));
        let _ = RegisterMap::from_toml(&text);
    }
}

#[test]
fn a_deployment_file_keeps_the_map_under_modbus() {
    let text = "[mqtt]\nhost = \"broker\"\n\n[modbus.groups]\nfast = 100\n\n[[modbus.device]]\nname = \"d\"\nhost = \"h\"\n\n[[modbus.device.tag]]\nname = \"t\"\nregister = \"40001\"\ngroup = \"fast\"\n";
    let map = RegisterMap::from_deployment_toml(text).unwrap();
    assert_eq!(map.devices[0].tags[0].group, "fast");
    let e = RegisterMap::from_deployment_toml("[mqtt]\nhost = \"b\"\n").unwrap_err().to_string();
    assert!(e.contains("no [modbus] section"), "{e}");
    let e = RegisterMap::from_deployment_toml("[[modbus.device]]\nname = \"d\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("modbus: device \"d\": no host and no serial port"), "{e}");
    let e = RegisterMap::from_deployment_toml("[modbus]\nx = 1\n").unwrap_err().to_string();
    assert!(e.starts_with("line 2: unknown field `x`"), "{e}");
}

#[test]
fn modicon_numbers_round_trip() {
    use shopfloor_bridge_modbus::plan::modicon;
    for (area, address) in [
        (Area::HoldingRegister, 0),
        (Area::Coil, 41),
        (Area::InputRegister, 9998),
        (Area::DiscreteInput, 9999),
        (Area::HoldingRegister, 65535),
    ] {
        let n = modicon(area, u32::from(address));
        assert_eq!(parse_modicon(&n), Ok((area, address)), "{n}");
    }
    assert_eq!(modicon(Area::HoldingRegister, 100), "40101");
}
