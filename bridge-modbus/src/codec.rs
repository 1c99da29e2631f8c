//! Typed values from registers and back: sans-IO, no allocation on the
//! numeric paths.
//!
//! A tag's registers arrive as tokio-modbus gives them (`u16`, most
//! significant byte first on the wire). [`decode`] puts the value's bytes in
//! order (its [`Order`](crate::config::Order)), reads the type, and applies
//! scale and offset; [`encode`] is the inverse for write-back, refusing what
//! the type or the tag's range cannot hold.

use shopfloor_schemas::Value;

use crate::config::{Tag, TagType};

/// The value's bytes, most significant first, from `regs` in wire order.
fn value_bytes<const N: usize>(tag: &Tag, regs: &[u16]) -> [u8; N] {
    let mut out = [0_u8; N];
    let n = N / 2;
    for i in 0..n {
        let reg = if tag.order.swap_words { regs[n - 1 - i] } else { regs[i] };
        let [hi, lo] = reg.to_be_bytes();
        let (a, b) = if tag.order.swap_bytes { (lo, hi) } else { (hi, lo) };
        out[2 * i] = a;
        out[2 * i + 1] = b;
    }
    out
}

/// Registers in wire order for the value's bytes (most significant first).
fn wire_registers(tag: &Tag, bytes: &[u8]) -> Vec<u16> {
    let n = bytes.len() / 2;
    let mut regs = vec![0_u16; n];
    for i in 0..n {
        let (a, b) = (bytes[2 * i], bytes[2 * i + 1]);
        let (hi, lo) = if tag.order.swap_bytes { (b, a) } else { (a, b) };
        let at = if tag.order.swap_words { n - 1 - i } else { i };
        regs[at] = u16::from_be_bytes([hi, lo]);
    }
    regs
}

/// A register after the tag's byte order (for 16-bit and smaller views).
fn register(tag: &Tag, reg: u16) -> u16 {
    if tag.order.swap_bytes { reg.swap_bytes() } else { reg }
}

/// Engineering units; unscaled values pass untouched (even −0.0).
fn scaled(tag: &Tag, raw: f64) -> f64 {
    if tag.is_scaled() { raw * tag.scale + tag.offset } else { raw }
}

/// Why registers could not be read as the tag's type.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The response did not hold the tag's registers or bits.
    #[error("tag {tag:?} needs {want} registers or bits, the response had {got}")]
    Short {
        /// The tag.
        tag: String,
        /// Registers or bits it needs.
        want: usize,
        /// Registers or bits there were.
        got: usize,
    },
    /// Bits for a register tag, or registers for a bit tag.
    #[error("tag {0:?}: the response is of the other kind (bits vs registers)")]
    Kind(String),
}

/// A read response from a tag's first address on.
#[derive(Clone, Copy, Debug)]
pub enum Data<'a> {
    /// Holding or input registers.
    Registers(&'a [u16]),
    /// Coils or discrete inputs.
    Bits(&'a [bool]),
}

/// The value of a tag from the response data starting at its address.
/// Unscaled integers stay integers (`I64`, or `U64` for u64); scaled values
/// and floats are `F64`; strings trim trailing NULs and spaces, stop at an
/// inner NUL and replace invalid UTF-8.
pub fn decode(tag: &Tag, data: Data<'_>) -> Result<Value, DecodeError> {
    let want = usize::from(tag.kind.width());
    let regs = match (data, tag.kind) {
        (Data::Bits(bits), TagType::Bool) => {
            return bits.first().map(|b| Value::Bool(*b)).ok_or_else(|| DecodeError::Short {
                tag: tag.name.clone(),
                want: 1,
                got: 0,
            });
        }
        (Data::Registers(regs), kind) if kind != TagType::Bool => regs,
        _ => return Err(DecodeError::Kind(tag.name.clone())),
    };
    if regs.len() < want {
        return Err(DecodeError::Short { tag: tag.name.clone(), want, got: regs.len() });
    }
    let number =
        |raw: f64, int: Value| if tag.is_scaled() { Value::F64(scaled(tag, raw)) } else { int };
    Ok(match tag.kind {
        TagType::Bool => unreachable!("checked above"),
        TagType::Bit(n) => Value::Bool(register(tag, regs[0]) >> n & 1 == 1),
        TagType::I8 { high } | TagType::U8 { high } => {
            let [hi, lo] = register(tag, regs[0]).to_be_bytes();
            let byte = if high { hi } else { lo };
            if matches!(tag.kind, TagType::I8 { .. }) {
                let v = byte as i8;
                number(f64::from(v), Value::I64(v.into()))
            } else {
                number(f64::from(byte), Value::I64(byte.into()))
            }
        }
        TagType::I16 => {
            let v = register(tag, regs[0]) as i16;
            number(f64::from(v), Value::I64(v.into()))
        }
        TagType::U16 => {
            let v = register(tag, regs[0]);
            number(f64::from(v), Value::I64(v.into()))
        }
        TagType::I32 => {
            let v = i32::from_be_bytes(value_bytes(tag, regs));
            number(f64::from(v), Value::I64(v.into()))
        }
        TagType::U32 => {
            let v = u32::from_be_bytes(value_bytes(tag, regs));
            number(f64::from(v), Value::I64(v.into()))
        }
        TagType::I64 => {
            let v = i64::from_be_bytes(value_bytes(tag, regs));
            number(v as f64, Value::I64(v))
        }
        TagType::U64 => {
            let v = u64::from_be_bytes(value_bytes(tag, regs));
            number(v as f64, Value::U64(v))
        }
        TagType::F32 => {
            let v = f32::from_be_bytes(value_bytes(tag, regs));
            Value::F64(scaled(tag, f64::from(v)))
        }
        TagType::F64 => {
            let v = f64::from_be_bytes(value_bytes(tag, regs));
            Value::F64(scaled(tag, v))
        }
        TagType::String(n) => {
            let mut bytes = Vec::with_capacity(usize::from(n) * 2);
            for &r in &regs[..want] {
                bytes.extend_from_slice(&register(tag, r).to_be_bytes());
            }
            let end = bytes.iter().rposition(|&b| b != 0 && b != b' ').map_or(0, |i| i + 1);
            bytes.truncate(end);
            // NULs inside would not survive every codec; stop at the first.
            if let Some(nul) = bytes.iter().position(|&b| b == 0) {
                bytes.truncate(nul);
            }
            Value::String(String::from_utf8_lossy(&bytes).into_owned())
        }
    })
}

/// What to send to write a tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// Write one coil (function code 5).
    Coil(bool),
    /// Write these registers from the tag's address (function code 6 for
    /// one, 16 for more).
    Registers(Vec<u16>),
    /// Change some bits of one register, keep the others (function code 22,
    /// mask write register): `(current & and) | (or & !and)`.
    Mask {
        /// Bits kept.
        and: u16,
        /// Bits set.
        or: u16,
    },
}

/// Why a value cannot be written to a tag.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The tag is not marked writable (or its area is read-only).
    #[error("tag {0:?} is not writable (set writable = true in the register map to allow it)")]
    NotWritable(String),
    /// The value is not of a kind the tag holds.
    #[error("tag {tag:?} is {kind} and cannot take {value}")]
    Type {
        /// The tag.
        tag: String,
        /// Its type.
        kind: String,
        /// The value offered.
        value: String,
    },
    /// NaN or an infinity: no setpoint, whatever the tag's type.
    #[error("tag {tag:?}: {value} is not a finite number")]
    NotFinite {
        /// The tag.
        tag: String,
        /// The value.
        value: f64,
    },
    /// Outside the tag's engineering range.
    #[error("tag {tag:?}: {value} is outside its range {min}..={max}")]
    OutOfRange {
        /// The tag.
        tag: String,
        /// The value.
        value: f64,
        /// The lowest allowed (−∞ when unset).
        min: f64,
        /// The highest allowed (+∞ when unset).
        max: f64,
    },
    /// After scaling the raw value does not fit the type.
    #[error("tag {tag:?}: {value} is raw {raw}, which a {kind} cannot hold")]
    Overflow {
        /// The tag.
        tag: String,
        /// The value.
        value: f64,
        /// The raw value it scales to.
        raw: f64,
        /// The type.
        kind: String,
    },
}

fn numeric(v: &Value) -> Option<f64> {
    match *v {
        Value::I64(x) => Some(x as f64),
        Value::U64(x) => Some(x as f64),
        Value::F64(x) => Some(x),
        Value::Bool(b) => Some(f64::from(u8::from(b))),
        _ => None,
    }
}

/// The write that puts `value` (in engineering units) into `tag`.
pub fn encode(tag: &Tag, value: &Value) -> Result<Write, WriteError> {
    if !tag.writable || !tag.area.is_writable() {
        return Err(WriteError::NotWritable(tag.name.clone()));
    }
    let type_error = || WriteError::Type {
        tag: tag.name.clone(),
        kind: tag.kind.name(),
        value: format!("{value:?}"),
    };
    match tag.kind {
        TagType::Bool => {
            return match value {
                Value::Bool(b) => Ok(Write::Coil(*b)),
                Value::I64(0) | Value::U64(0) => Ok(Write::Coil(false)),
                Value::I64(1) | Value::U64(1) => Ok(Write::Coil(true)),
                _ => Err(type_error()),
            };
        }
        TagType::Bit(n) => {
            let on = match value {
                Value::Bool(b) => *b,
                Value::I64(0) | Value::U64(0) => false,
                Value::I64(1) | Value::U64(1) => true,
                _ => return Err(type_error()),
            };
            // The mask is in wire order; a byte-swapped register moves the bit.
            let bit = register(tag, 1 << n);
            return Ok(Write::Mask { and: !bit, or: if on { bit } else { 0 } });
        }
        TagType::String(n) => {
            let Value::String(s) = value else { return Err(type_error()) };
            let bytes = s.as_bytes();
            if bytes.len() > usize::from(n) * 2 {
                return Err(WriteError::Overflow {
                    tag: tag.name.clone(),
                    value: bytes.len() as f64,
                    raw: bytes.len() as f64,
                    kind: tag.kind.name(),
                });
            }
            let mut padded = bytes.to_vec();
            padded.resize(usize::from(n) * 2, 0);
            let regs =
                padded.chunks(2).map(|c| register(tag, u16::from_be_bytes([c[0], c[1]]))).collect();
            return Ok(Write::Registers(regs));
        }
        _ => {}
    }
    let v = numeric(value).ok_or_else(type_error)?;
    let (min, max) = (tag.min.unwrap_or(f64::NEG_INFINITY), tag.max.unwrap_or(f64::INFINITY));
    // A NaN passes every comparison with min and max: refuse it first.
    if !v.is_finite() {
        return Err(WriteError::NotFinite { tag: tag.name.clone(), value: v });
    }
    if v < min || v > max {
        return Err(WriteError::OutOfRange { tag: tag.name.clone(), value: v, min, max });
    }
    let raw = if tag.is_scaled() { (v - tag.offset) / tag.scale } else { v };
    let overflow =
        || WriteError::Overflow { tag: tag.name.clone(), value: v, raw, kind: tag.kind.name() };
    // Unscaled integers are written exactly, not through a float.
    let exact: Option<i128> = match *value {
        Value::I64(i) if !tag.is_scaled() => Some(i.into()),
        Value::U64(u) if !tag.is_scaled() => Some(u.into()),
        _ => None,
    };
    let int = |lo: i128, hi: i128| -> Result<i128, WriteError> {
        let r = match exact {
            Some(e) => e,
            None => {
                let r = raw.round();
                // Beyond ±2^100 nothing fits; the cast saturates harmlessly.
                if !r.is_finite() || r.abs() > 1e30 {
                    return Err(overflow());
                }
                r as i128
            }
        };
        if r >= lo && r <= hi { Ok(r) } else { Err(overflow()) }
    };
    // A 32- or 64-bit integer: in its type's range, then its bytes in the
    // tag's register order.
    macro_rules! wide {
        ($t:ty) => {{
            let x = int(<$t>::MIN.into(), <$t>::MAX.into())? as $t;
            Write::Registers(wire_registers(tag, &x.to_be_bytes()))
        }};
    }
    Ok(match tag.kind {
        TagType::I8 { high } | TagType::U8 { high } => {
            let byte = if matches!(tag.kind, TagType::I8 { .. }) {
                int(-128, 127)? as i8 as u8
            } else {
                int(0, 255)? as u8
            };
            let (mask, shifted) =
                if high { (0x00ff_u16, u16::from(byte) << 8) } else { (0xff00, u16::from(byte)) };
            Write::Mask { and: register(tag, mask), or: register(tag, shifted) }
        }
        TagType::I16 => Write::Registers(vec![register(tag, int(-32768, 32767)? as i16 as u16)]),
        TagType::U16 => Write::Registers(vec![register(tag, int(0, 65535)? as u16)]),
        TagType::I32 => wide!(i32),
        TagType::U32 => wide!(u32),
        TagType::I64 => wide!(i64),
        TagType::U64 => wide!(u64),
        TagType::F32 => {
            let x = raw as f32;
            if raw.is_finite() && !x.is_finite() {
                return Err(overflow());
            }
            Write::Registers(wire_registers(tag, &x.to_be_bytes()))
        }
        TagType::F64 => Write::Registers(wire_registers(tag, &raw.to_be_bytes())),
        TagType::Bool | TagType::Bit(_) | TagType::String(_) => unreachable!("handled above"),
    })
}
