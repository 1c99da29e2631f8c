//! Register maps: TOML in, checked [`RegisterMap`] out.
//!
//! ```toml
//! [groups]                 # poll groups and their intervals (ms);
//! fast = 500               # "default" is 1000 unless set here
//!
//! [[device]]
//! name = "press-1"         # the Sparkplug device id, and the batch source
//! host = "10.0.4.21"       # Modbus TCP (port 502 by default) …
//! # serial = "/dev/ttyUSB0"  … or RTU: baud, parity, data_bits, stop_bits
//! unit = 1
//! max_registers = 125      # per read (the defaults shown)
//! max_bits = 2000
//! max_gap = 16             # unused registers a merged read may span
//! timeout_ms = 1000
//! pause_ms = 0             # between two requests
//!
//! [[device.tag]]
//! name = "Hydraulics/Pressure"
//! register = "40101"       # Modicon notation: holding register 100 (0-based);
//! # area = "holding"       # … or area and 0-based address
//! # address = 100
//! type = "f32"
//! order = "CDAB"           # word-swapped
//! scale = 0.01
//! unit = "bar"
//! deadband = 0.5
//! group = "fast"
//! ```
//!
//! [`RegisterMap::from_toml`] checks everything a device cannot tell us
//! later: types that fit their area, addresses in range, strings that fit one
//! request, tags that overlap with different types, orders that fit the
//! width. Every error names the file, the device, the tag and the fix.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The four Modbus data areas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Area {
    /// Read-write bits (function codes 1, 5, 15); Modicon 0xxxx.
    Coil,
    /// Read-only bits (function code 2); Modicon 1xxxx.
    DiscreteInput,
    /// Read-only registers (function code 4); Modicon 3xxxx.
    InputRegister,
    /// Read-write registers (function codes 3, 6, 16); Modicon 4xxxx.
    HoldingRegister,
}

impl Area {
    /// Whether the area holds single bits.
    pub const fn is_bits(self) -> bool {
        matches!(self, Self::Coil | Self::DiscreteInput)
    }

    /// Whether a master can write it.
    pub const fn is_writable(self) -> bool {
        matches!(self, Self::Coil | Self::HoldingRegister)
    }

    /// The name used in configuration files.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Coil => "coil",
            Self::DiscreteInput => "discrete_input",
            Self::InputRegister => "input_register",
            Self::HoldingRegister => "holding_register",
        }
    }

    /// The Modicon prefix digit (0, 1, 3, 4).
    pub const fn modicon_digit(self) -> u32 {
        match self {
            Self::Coil => 0,
            Self::DiscreteInput => 1,
            Self::InputRegister => 3,
            Self::HoldingRegister => 4,
        }
    }
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a tag's registers (or bit) hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TagType {
    /// A coil or discrete input.
    Bool,
    /// Bit `n` (0 = least significant) of a register.
    Bit(u8),
    /// The high (first on the wire) or low byte of a register, signed.
    I8 {
        /// The high byte.
        high: bool,
    },
    /// The high or low byte of a register, unsigned.
    U8 {
        /// The high byte.
        high: bool,
    },
    /// One register, signed.
    I16,
    /// One register.
    U16,
    /// Two registers, signed.
    I32,
    /// Two registers.
    U32,
    /// Four registers, signed.
    I64,
    /// Four registers.
    U64,
    /// Two registers, IEEE 754.
    F32,
    /// Four registers, IEEE 754.
    F64,
    /// `n` registers of text, two bytes each; trailing NULs and spaces trimmed.
    String(u16),
}

impl TagType {
    /// Registers (or bits) the tag occupies.
    pub const fn width(self) -> u16 {
        match self {
            Self::Bool
            | Self::Bit(_)
            | Self::I8 { .. }
            | Self::U8 { .. }
            | Self::I16
            | Self::U16 => 1,
            Self::I32 | Self::U32 | Self::F32 => 2,
            Self::I64 | Self::U64 | Self::F64 => 4,
            Self::String(n) => n,
        }
    }

    /// The configuration name.
    pub fn name(self) -> String {
        match self {
            Self::Bool => "bool".into(),
            Self::Bit(n) => format!("bit {n}"),
            Self::I8 { high } => format!("i8 ({} byte)", if high { "high" } else { "low" }),
            Self::U8 { high } => format!("u8 ({} byte)", if high { "high" } else { "low" }),
            Self::I16 => "i16".into(),
            Self::U16 => "u16".into(),
            Self::I32 => "i32".into(),
            Self::U32 => "u32".into(),
            Self::I64 => "i64".into(),
            Self::U64 => "u64".into(),
            Self::F32 => "f32".into(),
            Self::F64 => "f64".into(),
            Self::String(n) => format!("string of {n} registers"),
        }
    }
}

/// Byte and word order of a multi-byte value, named by where the value's
/// bytes (A most significant) appear on the wire: `ABCD` is big-endian
/// Modbus standard, `CDAB` word-swapped, `BADC` byte-swapped, `DCBA` both.
/// The 8-byte names (`ABCDEFGH`, `GHEFCDAB`, `BADCFEHG`, `HGFEDCBA`) say
/// the same for 64-bit values; the 4-letter names apply to them too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Order {
    /// The two bytes of each register are swapped.
    pub swap_bytes: bool,
    /// The registers come least significant first.
    pub swap_words: bool,
}

impl Order {
    /// `ABCD`: Modbus' own big-endian order.
    pub const BIG_ENDIAN: Self = Self { swap_bytes: false, swap_words: false };

    fn parse(s: &str) -> Option<Self> {
        let (swap_bytes, swap_words) = match s.to_ascii_uppercase().as_str() {
            "AB" | "ABCD" | "ABCDEFGH" => (false, false),
            "CDAB" | "GHEFCDAB" => (false, true),
            "BA" | "BADC" | "BADCFEHG" => (true, false),
            "DCBA" | "HGFEDCBA" => (true, true),
            _ => return None,
        };
        Some(Self { swap_bytes, swap_words })
    }

    /// The 4-letter name.
    pub const fn name(self) -> &'static str {
        match (self.swap_bytes, self.swap_words) {
            (false, false) => "ABCD",
            (false, true) => "CDAB",
            (true, false) => "BADC",
            (true, true) => "DCBA",
        }
    }
}

/// When a changed value is worth publishing: the same rule as a Sparkplug
/// edge node's (every change, or beyond an absolute or percent deadband).
pub use shopfloor_sparkplug::edge::Deadband;

/// How to reach a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Modbus TCP.
    Tcp {
        /// Host name or address.
        host: String,
        /// Port (502).
        port: u16,
    },
    /// Modbus RTU on a serial line.
    Rtu {
        /// The serial device.
        path: PathBuf,
        /// Baud rate (19200).
        baud: u32,
        /// Parity (`"none"`, `"even"`, `"odd"`; even by default as the
        /// Modbus specification says).
        parity: Parity,
        /// Data bits (8).
        data_bits: u8,
        /// Stop bits (1).
        stop_bits: u8,
    },
}

/// Serial parity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    /// No parity bit.
    None,
    /// Even.
    Even,
    /// Odd.
    Odd,
}

/// A checked tag.
#[derive(Clone, Debug, PartialEq)]
pub struct Tag {
    /// The metric name.
    pub name: String,
    /// The data area.
    pub area: Area,
    /// 0-based address of its first register or bit.
    pub address: u16,
    /// What the registers hold.
    pub kind: TagType,
    /// Byte and word order.
    pub order: Order,
    /// Engineering value = raw × scale + offset.
    pub scale: f64,
    /// See `scale`.
    pub offset: f64,
    /// Engineering unit, for births and dashboards.
    pub unit: Option<String>,
    /// Report-by-exception threshold.
    pub deadband: Deadband,
    /// The poll group.
    pub group: String,
    /// Whether commands may write it.
    pub writable: bool,
    /// Engineering range: writes outside it are refused.
    pub min: Option<f64>,
    /// See `min`.
    pub max: Option<f64>,
}

impl Tag {
    /// A tag read as it is: big-endian, unscaled, no unit, no deadband, in
    /// the `default` poll group, not writable.
    pub fn new(name: impl Into<String>, area: Area, address: u16, kind: TagType) -> Self {
        Self {
            name: name.into(),
            area,
            address,
            kind,
            order: Order::BIG_ENDIAN,
            scale: 1.0,
            offset: 0.0,
            unit: None,
            deadband: Deadband::None,
            group: "default".into(),
            writable: false,
            min: None,
            max: None,
        }
    }

    /// Whether scale or offset turn the raw value into a float.
    pub fn is_scaled(&self) -> bool {
        self.scale != 1.0 || self.offset != 0.0
    }

    /// The last address it occupies.
    pub fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.kind.width()) - 1
    }
}

/// A checked device.
#[derive(Clone, Debug, PartialEq)]
pub struct Device {
    /// The name: Sparkplug device id and batch source.
    pub name: String,
    /// How to reach it.
    pub transport: Transport,
    /// Modbus unit (slave) id.
    pub unit: u8,
    /// Most registers in one read (125, the protocol's limit).
    pub max_registers: u16,
    /// Most bits in one read (2000).
    pub max_bits: u16,
    /// Unused registers (or bits) a merged read may span to save a request.
    pub max_gap: u16,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Pause between two requests (slow serial devices and gateways).
    pub pause: Duration,
    /// The tags.
    pub tags: Vec<Tag>,
}

/// A checked register map.
#[derive(Clone, Debug, PartialEq)]
pub struct RegisterMap {
    /// Poll groups and their intervals.
    pub groups: BTreeMap<String, Duration>,
    /// The devices.
    pub devices: Vec<Device>,
}

/// A register map that cannot be used. The message names the file, where in
/// it, what is wrong and what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{where_}: {problem}{}", file.as_ref().map(|f| format!("{}: ", f.display())).unwrap_or_default(), fix.as_ref().map(|f| format!("; {f}")).unwrap_or_default())]
pub struct ConfigError {
    /// The file, when it came from one.
    pub file: Option<PathBuf>,
    /// Where: `line 12`, `device "press-1"`, `device "press-1", tag "temp"`.
    pub where_: String,
    /// What is wrong.
    pub problem: String,
    /// What to change.
    pub fix: Option<String>,
}

/// Why a Modicon register number is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModiconError {
    /// Not 5 or 6 digits.
    #[error("{0:?} is not a Modicon register number (5 or 6 digits like 40001 or 400001)")]
    NotANumber(String),
    /// An area digit that is not 0, 1, 3 or 4.
    #[error(
        "{text:?} starts with {digit}: Modicon areas are 0 (coil), 1 (discrete input), 3 (input register), 4 (holding register)"
    )]
    Area {
        /// The number as given.
        text: String,
        /// Its first digit.
        digit: char,
    },
    /// 0, or past 65536.
    #[error("{0:?}: Modicon numbers count from 1 to 65536")]
    Range(String),
}

/// The 40001-style address notation: an area digit, then a 1-based number
/// (`40001` is holding register 0; six digits, `400001`, reach 65535).
pub fn parse_modicon(s: &str) -> Result<(Area, u16), ModiconError> {
    let digits = s.trim();
    if !(5..=6).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ModiconError::NotANumber(s.to_owned()));
    }
    let area = match digits.as_bytes()[0] {
        b'0' => Area::Coil,
        b'1' => Area::DiscreteInput,
        b'3' => Area::InputRegister,
        b'4' => Area::HoldingRegister,
        d => return Err(ModiconError::Area { text: s.to_owned(), digit: char::from(d) }),
    };
    let number: u32 = digits[1..].parse().map_err(|_| ModiconError::NotANumber(s.to_owned()))?;
    if number == 0 || number > 65_536 {
        return Err(ModiconError::Range(s.to_owned()));
    }
    Ok((area, (number - 1) as u16))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMap {
    #[serde(default)]
    groups: BTreeMap<String, u64>,
    #[serde(default, rename = "device")]
    devices: Vec<RawDevice>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    name: String,
    host: Option<String>,
    port: Option<u16>,
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

const fn one() -> u8 {
    1
}
const fn d_max_registers() -> u16 {
    125
}
const fn d_max_bits() -> u16 {
    2000
}
const fn d_max_gap() -> u16 {
    16
}
const fn d_timeout() -> u64 {
    1000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTag {
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
const PROTOCOL_MAX_REGISTERS: u16 = 125;
const PROTOCOL_MAX_BITS: u16 = 2000;

impl RegisterMap {
    /// Reads and checks a register map file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        from_file(path.as_ref(), Self::from_toml)
    }

    /// Reads the `[modbus]` section of a deployment file
    /// ([`from_deployment_toml`](Self::from_deployment_toml)).
    pub fn load_deployment(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        from_file(path.as_ref(), Self::from_deployment_toml)
    }

    /// Parses and checks a register map.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let raw: RawMap = toml::from_str(text).map_err(|e| parse_error(text, &e))?;
        check(raw)
    }

    /// Parses and checks the `[modbus]` section of a deployment file (one
    /// file, one section per crate: `[mqtt]`, `[sparkplug]`, `[modbus]` …);
    /// the other sections are left to their owners.
    pub fn from_deployment_toml(text: &str) -> Result<Self, ConfigError> {
        #[derive(Deserialize)]
        struct Doc {
            modbus: Option<RawMap>,
            #[serde(flatten)]
            _others: BTreeMap<String, toml::Value>,
        }
        let doc: Doc = toml::from_str(text).map_err(|e| parse_error(text, &e))?;
        let raw = doc.modbus.ok_or_else(|| {
            err(
                "[modbus]".into(),
                "no [modbus] section",
                "add [modbus] with [[modbus.device]] entries",
            )
        })?;
        check(raw).map_err(|e| ConfigError { where_: format!("modbus: {}", e.where_), ..e })
    }

    /// A device by name.
    pub fn device(&self, name: &str) -> Option<&Device> {
        self.devices.iter().find(|d| d.name == name)
    }
}

/// Reads `path` and parses it with `parse`; errors name the file.
fn from_file(
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
fn parse_error(text: &str, e: &toml::de::Error) -> ConfigError {
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

fn err(where_: String, problem: impl Into<String>, fix: impl Into<String>) -> ConfigError {
    ConfigError { file: None, where_, problem: problem.into(), fix: Some(fix.into()) }
}

fn check(raw: RawMap) -> Result<RegisterMap, ConfigError> {
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

fn check_device(d: RawDevice, groups: &BTreeMap<String, Duration>) -> Result<Device, ConfigError> {
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
            Transport::Tcp { host: host.clone(), port: d.port.unwrap_or(502) }
        }
        (None, Some(path)) => {
            if d.port.is_some() {
                return Err(err(here, "a port on a serial device", "remove port"));
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
fn compatible(a: &Tag, b: &Tag) -> bool {
    let one_register = |t: &Tag| {
        matches!(
            t.kind,
            TagType::Bit(_) | TagType::I8 { .. } | TagType::U8 { .. } | TagType::I16 | TagType::U16
        )
    };
    (a.address == b.address && a.kind == b.kind && a.order == b.order)
        || (a.address == b.address && one_register(a) && one_register(b))
}

fn check_tag(
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
