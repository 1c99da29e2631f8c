//! Register maps: TOML in, checked [`RegisterMap`] out.
//!
//! ```toml
//! [groups]                 # poll groups and their intervals (ms);
//! fast = 500               # "default" is 1000 unless set here
//!
//! [[device]]
//! name = "press-1"         # the Sparkplug device id, and the batch source
//! host = "10.0.4.21"       # Modbus TCP (port 502 by default) …
//! # framing = "rtu"        # … RTU frames over TCP (a serial-to-Ethernet converter) …
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

mod check;
mod modicon;

use check::*;
pub use modicon::{ModiconError, parse_modicon};

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
#[non_exhaustive]
pub enum Transport {
    /// Modbus TCP.
    Tcp {
        /// Host name or address.
        host: String,
        /// Port (502).
        port: u16,
    },
    /// Modbus RTU frames over a TCP connection: a serial-to-Ethernet
    /// converter in transparent mode (devices behind one converter share
    /// its connection, as they share a serial line).
    RtuOverTcp {
        /// Host name or address of the converter.
        host: String,
        /// Its port.
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
#[non_exhaustive]
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
#[non_exhaustive]
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

impl Device {
    /// `name` at `transport`, unit 1, with the register map's defaults
    /// (reads of at most 125 registers or 2000 bits, gaps of up to 16
    /// merged, a 1 s timeout, no pause) and no tags.
    pub fn new(name: impl Into<String>, transport: Transport) -> Self {
        Self {
            name: name.into(),
            transport,
            unit: one(),
            max_registers: d_max_registers(),
            max_bits: d_max_bits(),
            max_gap: d_max_gap(),
            timeout: Duration::from_millis(d_timeout()),
            pause: Duration::ZERO,
            tags: Vec::new(),
        }
    }
}

/// A checked register map.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
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
