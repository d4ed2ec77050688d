//! The MBG-250's encodings: BCD meter ids, packed M-Bus manufacturer codes, medium
//! codes, units and status bits.

use serde::{Deserialize, Serialize};

/// The largest 8-digit meter id.
pub const MAX_ID: u32 = 99_999_999;

/// "12345678" → [0x1234, 0x5678]; `None` past 8 digits.
pub fn id_to_bcd(id: u32) -> Option<[u16; 2]> {
    if id > MAX_ID {
        return None;
    }
    let mut bcd = 0u32;
    let mut rest = id;
    for nibble in 0..8 {
        bcd |= (rest % 10) << (4 * nibble);
        rest /= 10;
    }
    Some([(bcd >> 16) as u16, bcd as u16])
}

/// [0x1234, 0x5678] → 12345678; `None` if a nibble is not a decimal digit.
pub fn bcd_to_id(high: u16, low: u16) -> Option<u32> {
    let bcd = u32::from(high) << 16 | u32::from(low);
    (0..8).rev().try_fold(0u32, |id, nibble| {
        let digit = (bcd >> (4 * nibble)) & 0xF;
        (digit <= 9).then_some(id * 10 + digit)
    })
}

/// A meter id as people write it: 8 digits, leading zeros kept.
pub fn format_id(id: u32) -> String {
    format!("{id:08}")
}

/// Exactly 8 ASCII digits.
pub fn parse_id(text: &str) -> Option<u32> {
    (text.len() == 8 && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// "KAM" → 0x2C2D: three letters A-Z, 5 bits each.
pub fn pack_manufacturer(code: &str) -> Option<u16> {
    let bytes = code.as_bytes();
    if bytes.len() != 3 || !bytes.iter().all(u8::is_ascii_uppercase) {
        return None;
    }
    Some(
        bytes
            .iter()
            .fold(0u16, |packed, &c| packed << 5 | u16::from(c - 64)),
    )
}

/// 0x2C2D → "KAM"; `None` if a letter is out of A-Z.
pub fn unpack_manufacturer(packed: u16) -> Option<String> {
    if packed & 0x8000 != 0 {
        return None;
    }
    [10, 5, 0]
        .iter()
        .map(|shift| {
            let letter = ((packed >> shift) & 0x1F) as u8;
            (1..=26)
                .contains(&letter)
                .then_some(char::from(letter + 64))
        })
        .collect()
}

/// M-Bus medium codes (register 4, low byte).
pub mod medium {
    pub const ELECTRICITY: u8 = 0x02;
    pub const GAS: u8 = 0x03;
    pub const HEAT: u8 = 0x04;
    pub const WARM_WATER: u8 = 0x06;
    pub const WATER: u8 = 0x07;
    pub const HEAT_COST_ALLOCATOR: u8 = 0x08;
    pub const COLD_WATER: u8 = 0x16;

    /// The code of a medium named in a configuration file.
    pub fn by_name(name: &str) -> Option<u8> {
        Some(match name {
            "electricity" => ELECTRICITY,
            "gas" => GAS,
            "heat" => HEAT,
            "warm_water" | "hot_water" => WARM_WATER,
            "water" => WATER,
            "hca" | "heat_cost_allocator" => HEAT_COST_ALLOCATOR,
            "cold_water" => COLD_WATER,
            _ => return None,
        })
    }
}

/// Status bits of a reading (input register 0 of a slot).
pub mod status {
    pub const NO_ANSWER: u16 = 1 << 0;
    pub const LEAK: u16 = 1 << 1;
    pub const BURST: u16 = 1 << 2;
    pub const REVERSE_FLOW: u16 = 1 << 3;
    pub const TAMPER: u16 = 1 << 4;
    pub const BATTERY_LOW: u16 = 1 << 5;
    pub const METER_ERROR: u16 = 1 << 6;
    /// The bits a meter itself reports (all but "no answer", which is the gateway's).
    pub const METER_FLAGS: u16 = LEAK | BURST | REVERSE_FLOW | TAMPER | BATTERY_LOW | METER_ERROR;

    /// The bit of a flag named in a command or configuration file.
    pub fn by_name(name: &str) -> Option<u16> {
        Some(match name {
            "leak" => LEAK,
            "burst" => BURST,
            "reverse_flow" => REVERSE_FLOW,
            "tamper" | "magnet" => TAMPER,
            "battery_low" => BATTERY_LOW,
            "meter_error" => METER_ERROR,
            _ => return None,
        })
    }
}

/// The unit of an index (input register 6 of a slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Unit {
    #[serde(rename = "m3")]
    CubicMetres,
    #[serde(rename = "kWh", alias = "kwh")]
    KilowattHours,
    /// Heat cost allocator units, dimensionless.
    #[serde(rename = "HCA", alias = "hca")]
    Hca,
    #[serde(rename = "MWh", alias = "mwh")]
    MegawattHours,
}

impl Unit {
    pub fn code(self) -> u16 {
        match self {
            Unit::CubicMetres => 1,
            Unit::KilowattHours => 2,
            Unit::Hca => 3,
            Unit::MegawattHours => 4,
        }
    }

    pub fn from_code(code: u16) -> Option<Unit> {
        Some(match code {
            1 => Unit::CubicMetres,
            2 => Unit::KilowattHours,
            3 => Unit::Hca,
            4 => Unit::MegawattHours,
            _ => return None,
        })
    }

    pub fn symbol(self) -> &'static str {
        match self {
            Unit::CubicMetres => "m3",
            Unit::KilowattHours => "kWh",
            Unit::Hca => "HCA",
            Unit::MegawattHours => "MWh",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcd() {
        assert_eq!(id_to_bcd(12_345_678), Some([0x1234, 0x5678]));
        assert_eq!(id_to_bcd(42), Some([0x0000, 0x0042]));
        assert_eq!(id_to_bcd(100_000_000), None);
        assert_eq!(bcd_to_id(0x1234, 0x5678), Some(12_345_678));
        assert_eq!(bcd_to_id(0x1234, 0x567A), None);
        assert_eq!(format_id(42), "00000042");
        assert_eq!(parse_id("00000042"), Some(42));
        assert_eq!(parse_id("42"), None);
        assert_eq!(parse_id("1234567a"), None);
    }

    #[test]
    fn manufacturer() {
        assert_eq!(pack_manufacturer("KAM"), Some(0x2C2D));
        assert_eq!(unpack_manufacturer(0x2C2D).as_deref(), Some("KAM"));
        assert_eq!(pack_manufacturer("kam"), None);
        assert_eq!(pack_manufacturer("KAMS"), None);
        assert_eq!(unpack_manufacturer(0), None);
    }

    #[test]
    fn units() {
        for code in 1..=4 {
            assert_eq!(Unit::from_code(code).map(Unit::code), Some(code));
        }
        assert_eq!(Unit::from_code(0), None);
    }
}
