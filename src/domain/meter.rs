//! Meters as the co-ownership knows them: what they measure, in which unit, and how
//! they are named on the M-Bus (8-digit identification number, manufacturer code,
//! version, medium).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::text_enum;
use crate::error::{Error, Result};

text_enum!(
    /// What a meter measures, and whose it is: a unit's (the first four) or a building's.
    MeterKind {
        ColdWater => "cold_water",
        HotWater => "hot_water",
        Heating => "heating",
        HeatCostAllocator => "heat_cost_allocator",
        GeneralWater => "general_water",
        Gas => "gas",
        Electricity => "electricity",
    }
);

impl MeterKind {
    /// A meter of a unit (flat); the others belong to a building.
    pub fn is_individual(self) -> bool {
        matches!(
            self,
            MeterKind::ColdWater
                | MeterKind::HotWater
                | MeterKind::Heating
                | MeterKind::HeatCostAllocator
        )
    }

    /// The M-Bus media that may measure this.
    pub fn accepts_medium(self, medium: u8) -> bool {
        let accepted: &[u8] = match self {
            MeterKind::ColdWater => &[MEDIUM_WATER, MEDIUM_COLD_WATER],
            MeterKind::HotWater => &[MEDIUM_WARM_WATER, MEDIUM_HOT_WATER],
            MeterKind::Heating => &[MEDIUM_HEAT, MEDIUM_HEAT_INLET],
            MeterKind::HeatCostAllocator => &[MEDIUM_HCA],
            MeterKind::GeneralWater => &[MEDIUM_WATER, MEDIUM_COLD_WATER],
            MeterKind::Gas => &[MEDIUM_GAS],
            MeterKind::Electricity => &[MEDIUM_ELECTRICITY],
        };
        accepted.contains(&medium)
    }

    /// The units the meter may count in.
    pub fn accepts_unit(self, unit: MeasureUnit) -> bool {
        match self {
            MeterKind::ColdWater | MeterKind::HotWater | MeterKind::GeneralWater => {
                unit == MeasureUnit::M3
            }
            MeterKind::Gas => matches!(unit, MeasureUnit::M3 | MeasureUnit::Kwh),
            MeterKind::Heating | MeterKind::Electricity => {
                matches!(unit, MeasureUnit::Kwh | MeasureUnit::Mwh)
            }
            MeterKind::HeatCostAllocator => unit == MeasureUnit::Hca,
        }
    }

    pub fn french(self) -> &'static str {
        match self {
            MeterKind::ColdWater => "eau froide",
            MeterKind::HotWater => "eau chaude",
            MeterKind::Heating => "chauffage",
            MeterKind::HeatCostAllocator => "répartiteur de frais de chauffage",
            MeterKind::GeneralWater => "eau générale",
            MeterKind::Gas => "gaz",
            MeterKind::Electricity => "électricité",
        }
    }
}

// M-Bus medium codes (EN 13757-3), those a co-ownership meets.
pub const MEDIUM_ELECTRICITY: u8 = 0x02;
pub const MEDIUM_GAS: u8 = 0x03;
pub const MEDIUM_HEAT: u8 = 0x04;
pub const MEDIUM_WARM_WATER: u8 = 0x06;
pub const MEDIUM_WATER: u8 = 0x07;
pub const MEDIUM_HCA: u8 = 0x08;
pub const MEDIUM_HEAT_INLET: u8 = 0x0C;
pub const MEDIUM_HOT_WATER: u8 = 0x15;
pub const MEDIUM_COLD_WATER: u8 = 0x16;

text_enum!(
    /// The unit a meter counts in.
    MeasureUnit { M3 => "m3", Kwh => "kwh", Mwh => "mwh", Hca => "hca" }
);

impl MeasureUnit {
    /// Converts `value` counted in `from` into this unit; `None` when they measure
    /// different things (m³ and kWh).
    pub fn convert(self, value: f64, from: MeasureUnit) -> Option<f64> {
        use MeasureUnit::*;
        match (from, self) {
            (a, b) if a == b => Some(value),
            (Kwh, Mwh) => Some(value / 1000.0),
            (Mwh, Kwh) => Some(value * 1000.0),
            _ => None,
        }
    }

    pub fn symbol(self) -> &'static str {
        match self {
            MeasureUnit::M3 => "m³",
            MeasureUnit::Kwh => "kWh",
            MeasureUnit::Mwh => "MWh",
            MeasureUnit::Hca => "unités de répartition",
        }
    }
}

/// The 8-digit M-Bus identification number, kept as its digits ("00012345").
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MbusId(String);

pub const MBUS_ID_FORMS: &str = "8 chiffres (numéro d'identification M-Bus, ex. 12345678 ; les zéros de tête peuvent être omis)";

impl MbusId {
    /// Parses up to 8 decimal digits, spaces ignored; shorter numbers get leading zeros.
    pub fn parse(field: &str, text: &str) -> Result<MbusId> {
        let digits: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        if digits.is_empty() || digits.len() > 8 || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(Error::invalid(
                field,
                format!(
                    "« {} » n'est pas un identifiant de compteur : {MBUS_ID_FORMS}",
                    excerpt(text)
                ),
            ));
        }
        Ok(MbusId(format!("{digits:0>8}")))
    }

    /// From the number a gateway reports (its BCD decoded).
    pub fn from_number(number: u32) -> Option<MbusId> {
        (number <= 99_999_999).then(|| MbusId(format!("{number:08}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn number(&self) -> u32 {
        self.0.parse().unwrap_or_default()
    }
}

impl fmt::Display for MbusId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The three-letter M-Bus manufacturer code ("KAM", "ITW").
pub fn manufacturer(field: &str, text: &str) -> Result<String> {
    let code = text.trim().to_ascii_uppercase();
    if code.len() != 3 || !code.chars().all(|c| c.is_ascii_uppercase()) {
        return Err(Error::invalid(
            field,
            format!(
                "« {} » n'est pas un code fabricant M-Bus : 3 lettres attendues (ex. KAM, ITW, SEN)",
                excerpt(text)
            ),
        ));
    }
    Ok(code)
}

/// The largest index a meter with `digits` integer digits shows before it wraps to 0.
pub fn rollover_modulus(digits: i64) -> f64 {
    10f64.powi(digits.clamp(1, 12) as i32)
}

fn excerpt(text: &str) -> String {
    text.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mbus_ids() {
        assert_eq!(
            MbusId::parse("id", "12345678").unwrap().as_str(),
            "12345678"
        );
        assert_eq!(MbusId::parse("id", " 1234 ").unwrap().as_str(), "00001234");
        assert_eq!(
            MbusId::parse("id", "1234 5678").unwrap().number(),
            12_345_678
        );
        for bad in ["", "123456789", "12a45678", "-1"] {
            assert!(MbusId::parse("id", bad).is_err(), "{bad}");
        }
        assert_eq!(MbusId::from_number(42).unwrap().as_str(), "00000042");
        assert!(MbusId::from_number(100_000_000).is_none());
    }

    #[test]
    fn units_and_kinds() {
        assert_eq!(
            MeasureUnit::Mwh.convert(1500.0, MeasureUnit::Kwh),
            Some(1.5)
        );
        assert_eq!(MeasureUnit::M3.convert(1.0, MeasureUnit::Kwh), None);
        assert!(MeterKind::ColdWater.accepts_medium(MEDIUM_COLD_WATER));
        assert!(!MeterKind::ColdWater.accepts_medium(MEDIUM_HEAT));
        assert!(MeterKind::Heating.accepts_unit(MeasureUnit::Mwh));
        assert!(!MeterKind::HotWater.accepts_unit(MeasureUnit::Kwh));
        assert_eq!(manufacturer("m", "kam").unwrap(), "KAM");
        assert!(manufacturer("m", "K4M").is_err());
        assert_eq!(rollover_modulus(5), 100_000.0);
    }
}
