//! The 40001-style register numbers.

use super::*;

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
