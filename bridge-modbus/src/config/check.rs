//! From the TOML as written to a checked register map: every error names the file, the line or device and tag, and the fix.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMap {
    #[serde(default)]
    groups: BTreeMap<String, u64>,
    #[serde(default, rename = "device")]
    devices: Vec<RawDevice>,
}

/// How requests are framed on a TCP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Framing {
    /// Modbus TCP (MBAP header), the default.
    Tcp,
    /// RTU frames (address, PDU, CRC), as a serial-to-Ethernet converter
    /// passes them through.
    Rtu,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDevice {
    name: String,
    host: Option<String>,
    port: Option<u16>,
    framing: Option<Framing>,
    serial: Option<PathBuf>,
    baud: Option<u32>,
    parity: Option<Parity>,
    data_bits: Option<u8>,
    stop_bits: Option<u8>,
    #[serde(default = "one")]
    unit: u8,
    #[serde(default = "d_max_registers")]
    max_registers: u16,
    #[serde(default = "d_max_bits")]
    max_bits: u16,
    #[serde(default = "d_max_gap")]
    max_gap: u16,
    #[serde(default = "d_timeout")]
    timeout_ms: u64,
    #[serde(default)]
    pause_ms: u64,
    #[serde(default, rename = "tag")]
    tags: Vec<RawTag>,
}

pub(super) const fn one() -> u8 {
    1
}
pub(super) const fn d_max_registers() -> u16 {
    125
}
pub(super) const fn d_max_bits() -> u16 {
    2000
}
pub(super) const fn d_max_gap() -> u16 {
    16
}
pub(super) const fn d_timeout() -> u64 {
    1000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTag {
    name: String,
    area: Option<Area>,
    address: Option<u32>,
    register: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    bit: Option<u8>,
    byte: Option<String>,
    length: Option<u16>,
    order: Option<String>,
    scale: Option<f64>,
    offset: Option<f64>,
    unit: Option<String>,
    deadband: Option<f64>,
    deadband_percent: Option<f64>,
    group: Option<String>,
    #[serde(default)]
    writable: bool,
    min: Option<f64>,
    max: Option<f64>,
}

/// The protocol's limits: 125 registers, 2000 bits per read.
pub(super) const PROTOCOL_MAX_REGISTERS: u16 = 125;
pub(super) const PROTOCOL_MAX_BITS: u16 = 2000;

/// Reads `path` and parses it with `parse`; errors name the file.
pub(super) fn from_file(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<RegisterMap, ConfigError>,
) -> Result<RegisterMap, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: Some(path.to_owned()),
        where_: "file".into(),
        problem: format!("cannot read it: {e}"),
        fix: None,
    })?;
    parse(&text).map_err(|e| ConfigError { file: Some(path.to_owned()), ..e })
}

/// A TOML error with its line.
pub(super) fn parse_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let line = e.span().map(|s| {
        text.as_bytes()[..s.start.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
    });
    ConfigError {
        file: None,
        where_: line.map_or_else(|| "TOML".into(), |l| format!("line {l}")),
        problem: e.message().to_owned(),
        fix: None,
    }
}

pub(super) fn err(
    where_: String,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> ConfigError {
    ConfigError { file: None, where_, problem: problem.into(), fix: Some(fix.into()) }
}

pub(super) fn check(raw: RawMap) -> Result<RegisterMap, ConfigError> {
    let mut groups: BTreeMap<String, Duration> =
        [("default".to_owned(), Duration::from_secs(1))].into();
    for (name, ms) in raw.groups {
        if ms == 0 {
            return Err(err(
                format!("groups.{name}"),
                "an interval of 0 ms",
                "give the poll interval in milliseconds, e.g. 1000",
            ));
        }
        groups.insert(name, Duration::from_millis(ms));
    }
    if raw.devices.is_empty() {
        return Err(err("device".into(), "no devices", "add a [[device]] section with its tags"));
    }
    let mut names = HashMap::new();
    let mut devices = Vec::new();
    for (i, d) in raw.devices.into_iter().enumerate() {
        let here = format!("device {:?}", d.name);
        if let Err(e) = shopfloor_sparkplug::topic::check_id("device_id", &d.name) {
            return Err(err(
                here,
                e.to_string(),
                "device names become Sparkplug device ids: no '/', '+' or '#'",
            ));
        }
        if let Some(j) = names.insert(d.name.clone(), i) {
            return Err(err(
                here,
                format!("the name is used by devices {j} and {i}"),
                "give each device its own name",
            ));
        }
        devices.push(check_device(d, &groups)?);
    }
    Ok(RegisterMap { groups, devices })
}

pub(super) fn check_device(
    d: RawDevice,
    groups: &BTreeMap<String, Duration>,
) -> Result<Device, ConfigError> {
    let here = format!("device {:?}", d.name);
    let transport = match (&d.host, &d.serial) {
        (Some(host), None) => {
            if d.baud.is_some()
                || d.parity.is_some()
                || d.data_bits.is_some()
                || d.stop_bits.is_some()
            {
                return Err(err(
                    here,
                    "serial settings on a TCP device",
                    "remove baud/parity/data_bits/stop_bits, or use serial = \"/dev/tty…\" instead of host",
                ));
            }
            let port = d.port.unwrap_or(502);
            match d.framing {
                None | Some(Framing::Tcp) => Transport::Tcp { host: host.clone(), port },
                Some(Framing::Rtu) => Transport::RtuOverTcp { host: host.clone(), port },
            }
        }
        (None, Some(path)) => {
            if d.port.is_some() {
                return Err(err(here, "a port on a serial device", "remove port"));
            }
            if d.framing.is_some() {
                return Err(err(
                    here,
                    "framing on a serial device",
                    "a serial line is always RTU: remove framing (it is for RTU over TCP: host, port, framing = \"rtu\")",
                ));
            }
            let data_bits = d.data_bits.unwrap_or(8);
            let stop_bits = d.stop_bits.unwrap_or(1);
            if !(5..=8).contains(&data_bits) || !(1..=2).contains(&stop_bits) {
                return Err(err(
                    here,
                    format!("{data_bits} data bits, {stop_bits} stop bits"),
                    "data_bits is 5 to 8 (RTU uses 8), stop_bits 1 or 2",
                ));
            }
            Transport::Rtu {
                path: path.clone(),
                baud: d.baud.unwrap_or(19_200),
                parity: d.parity.unwrap_or(Parity::Even),
                data_bits,
                stop_bits,
            }
        }
        (Some(_), Some(_)) => {
            return Err(err(
                here,
                "both host and serial",
                "a device is TCP (host) or RTU (serial)",
            ));
        }
        (None, None) => {
            return Err(err(
                here,
                "no host and no serial port",
                "set host = \"10.0.0.5\" for Modbus TCP or serial = \"/dev/ttyUSB0\" for RTU",
            ));
        }
    };
    if d.max_registers == 0 || d.max_registers > PROTOCOL_MAX_REGISTERS {
        return Err(err(
            here,
            format!("max_registers = {}", d.max_registers),
            "Modbus reads 1 to 125 registers per request",
        ));
    }
    if d.max_bits == 0 || d.max_bits > PROTOCOL_MAX_BITS {
        return Err(err(
            here,
            format!("max_bits = {}", d.max_bits),
            "Modbus reads 1 to 2000 coils or inputs per request",
        ));
    }
    if d.timeout_ms == 0 {
        return Err(err(here, "timeout_ms = 0", "give the per-request timeout, e.g. 1000"));
    }
    let mut tags: Vec<Tag> = Vec::with_capacity(d.tags.len());
    let mut seen = HashMap::new();
    for t in d.tags {
        let tag = check_tag(&d.name, t, groups)?;
        let where_ = format!("device {:?}, tag {:?}", d.name, tag.name);
        if seen.insert(tag.name.clone(), ()).is_some() {
            return Err(err(
                where_,
                "a second tag with this name",
                "tag names are unique per device",
            ));
        }
        let limit = if tag.area.is_bits() { d.max_bits } else { d.max_registers };
        if tag.kind.width() > limit {
            return Err(err(
                where_,
                format!(
                    "{} takes {} registers, more than max_registers = {limit}",
                    tag.kind.name(),
                    tag.kind.width()
                ),
                "shorten the string or raise max_registers (at most 125)",
            ));
        }
        for other in &tags {
            if other.area == tag.area
                && u32::from(other.address) <= tag.end()
                && u32::from(tag.address) <= other.end()
                && !compatible(other, &tag)
            {
                return Err(err(
                    where_,
                    format!(
                        "{} {}..={} overlaps tag {:?} ({} at {}) with another type",
                        tag.area,
                        tag.address,
                        tag.end(),
                        other.name,
                        other.kind.name(),
                        other.address
                    ),
                    "check the addresses; two views of one register are fine only as bits or bytes of a 16-bit register",
                ));
            }
        }
        tags.push(tag);
    }
    Ok(Device {
        name: d.name,
        transport,
        unit: d.unit,
        max_registers: d.max_registers,
        max_bits: d.max_bits,
        max_gap: d.max_gap,
        timeout: Duration::from_millis(d.timeout_ms),
        pause: Duration::from_millis(d.pause_ms),
        tags,
    })
}

/// Two tags over the same registers make sense when both read the same
/// thing the same way, or when they are bits or bytes of one register
/// (status words are read as a u16 and as its bits).
pub(super) fn compatible(a: &Tag, b: &Tag) -> bool {
    let one_register = |t: &Tag| {
        matches!(
            t.kind,
            TagType::Bit(_) | TagType::I8 { .. } | TagType::U8 { .. } | TagType::I16 | TagType::U16
        )
    };
    (a.address == b.address && a.kind == b.kind && a.order == b.order)
        || (a.address == b.address && one_register(a) && one_register(b))
}

pub(super) fn check_tag(
    device: &str,
    t: RawTag,
    groups: &BTreeMap<String, Duration>,
) -> Result<Tag, ConfigError> {
    let here = format!("device {device:?}, tag {:?}", t.name);
    if t.name.is_empty() {
        return Err(err(
            format!("device {device:?}"),
            "a tag without a name",
            "give every tag a name",
        ));
    }
    let (area, address) = match (t.register.as_deref(), t.area, t.address) {
        (Some(r), None, None) => parse_modicon(r).map_err(|p| {
            err(
                here.clone(),
                p.to_string(),
                "use the 40001-style number, or area and a 0-based address",
            )
        })?,
        (None, Some(area), Some(address)) => {
            let address = u16::try_from(address).map_err(|_| {
                err(
                    here.clone(),
                    format!("address {address}"),
                    "addresses are 0 to 65535 (0-based)",
                )
            })?;
            (area, address)
        }
        (Some(_), _, _) => {
            return Err(err(
                here,
                "register together with area or address",
                "use either register = \"40101\" or area and a 0-based address, not both",
            ));
        }
        (None, None, _) => {
            return Err(err(
                here,
                "no area",
                "set area (coil, discrete_input, input_register, holding_register) and a 0-based address, or register = \"40101\"",
            ));
        }
        (None, Some(_), None) => {
            return Err(err(here, "no address", "set the 0-based address"));
        }
    };
    let default_type = if area.is_bits() { "bool" } else { "u16" };
    let type_name = t.kind.as_deref().unwrap_or(default_type);
    let kind = match type_name {
        "bool" => TagType::Bool,
        "bit" => match t.bit {
            Some(b @ 0..=15) => TagType::Bit(b),
            Some(b) => {
                return Err(err(
                    here,
                    format!("bit = {b}"),
                    "a register's bits are 0 (least significant) to 15",
                ));
            }
            None => {
                return Err(err(
                    here,
                    "type bit without bit = n",
                    "say which bit, 0 (least significant) to 15",
                ));
            }
        },
        "i8" | "u8" => {
            let high = match t.byte.as_deref() {
                Some("high") => true,
                Some("low") => false,
                other => {
                    return Err(err(
                        here,
                        format!("byte = {other:?}"),
                        "an 8-bit tag says which byte of the register: byte = \"high\" or \"low\"",
                    ));
                }
            };
            if type_name == "i8" { TagType::I8 { high } } else { TagType::U8 { high } }
        }
        "i16" => TagType::I16,
        "u16" => TagType::U16,
        "i32" => TagType::I32,
        "u32" => TagType::U32,
        "i64" => TagType::I64,
        "u64" => TagType::U64,
        "f32" => TagType::F32,
        "f64" => TagType::F64,
        "string" => match t.length {
            Some(n) if n > 0 => TagType::String(n),
            _ => {
                return Err(err(
                    here,
                    "a string without length",
                    "set length = registers (two characters each)",
                ));
            }
        },
        other => {
            return Err(err(
                here,
                format!("type {other:?}"),
                "use bool, bit, i8, u8, i16, u16, i32, u32, i64, u64, f32, f64 or string",
            ));
        }
    };
    if t.bit.is_some() && kind != TagType::Bit(t.bit.unwrap_or_default()) {
        return Err(err(
            here,
            "bit = n on a tag that is not type bit",
            "remove bit, or set type = \"bit\"",
        ));
    }
    if t.length.is_some() && !matches!(kind, TagType::String(_)) {
        return Err(err(here, "length on a tag that is not a string", "remove length"));
    }
    if area.is_bits() != (kind == TagType::Bool) {
        let fix = if area.is_bits() {
            "coils and discrete inputs are type bool"
        } else {
            "a single bit of a register is type = \"bit\" with bit = n"
        };
        return Err(err(here, format!("type {} in a {area}", kind.name()), fix));
    }
    if u32::from(address) + u32::from(kind.width()) > 65_536 {
        return Err(err(
            here,
            format!("{} at {address} runs past address 65535", kind.name()),
            "check the address",
        ));
    }
    let order = match t.order.as_deref() {
        None => Order::BIG_ENDIAN,
        Some(o) => {
            let order = Order::parse(o).ok_or_else(|| {
                err(here.clone(), format!("order {o:?}"), "use ABCD, CDAB, BADC or DCBA (or ABCDEFGH, GHEFCDAB, BADCFEHG, HGFEDCBA for 64-bit)")
            })?;
            let letters = o.len();
            let fits = match kind.width() {
                1 => letters == 2 || letters == 4 && !order.swap_words,
                2 => letters == 4,
                4 => letters == 4 || letters == 8,
                _ => {
                    matches!(kind, TagType::String(_))
                        && (letters == 2 || letters == 4)
                        && !order.swap_words
                }
            };
            if !fits || kind == TagType::Bool {
                return Err(err(
                    here,
                    format!("order {o:?} for {}", kind.name()),
                    "16-bit values and strings take AB or BA; 32-bit ABCD, CDAB, BADC or DCBA; 64-bit those or their 8-letter forms",
                ));
            }
            order
        }
    };
    let numeric = !matches!(kind, TagType::Bool | TagType::Bit(_) | TagType::String(_));
    let scale = t.scale.unwrap_or(1.0);
    let offset = t.offset.unwrap_or(0.0);
    if !numeric
        && (t.scale.is_some()
            || t.offset.is_some()
            || t.deadband.is_some()
            || t.deadband_percent.is_some())
    {
        return Err(err(
            here,
            format!("scale, offset or deadband on {}", kind.name()),
            "only numbers scale and have deadbands",
        ));
    }
    if !scale.is_finite() || scale == 0.0 || !offset.is_finite() {
        return Err(err(
            here,
            format!("scale {scale}, offset {offset}"),
            "scale is a finite non-zero factor, offset a finite number",
        ));
    }
    let deadband = match (t.deadband, t.deadband_percent) {
        (None, None) => Deadband::None,
        (Some(d), None) if d >= 0.0 && d.is_finite() => Deadband::Absolute(d),
        (None, Some(p)) if p >= 0.0 && p.is_finite() => Deadband::Percent(p),
        (Some(_), Some(_)) => return Err(err(here, "deadband and deadband_percent", "choose one")),
        _ => return Err(err(here, "a negative deadband", "a deadband is 0 or more")),
    };
    let group = t.group.unwrap_or_else(|| "default".into());
    if !groups.contains_key(&group) {
        let known: Vec<&str> = groups.keys().map(String::as_str).collect();
        return Err(err(
            here,
            format!("poll group {group:?} is not defined"),
            format!("define it under [groups] (known: {})", known.join(", ")),
        ));
    }
    if t.writable && !area.is_writable() {
        return Err(err(
            here,
            format!("writable in a {area}"),
            "only coils and holding registers can be written",
        ));
    }
    if let (Some(min), Some(max)) = (t.min, t.max)
        && min > max
    {
        return Err(err(here, format!("min {min} > max {max}"), "swap them"));
    }
    Ok(Tag {
        name: t.name,
        area,
        address,
        kind,
        order,
        scale,
        offset,
        unit: t.unit,
        deadband,
        group,
        writable: t.writable,
        min: t.min,
        max: t.max,
    })
}
