//! A physical meter on the M-Bus loop, as installed: identity, register format and
//! consumption profile. Its index over time is computed in the `physics` module.

use serde::{Deserialize, Serialize};

use super::codes::{pack_manufacturer, Unit, MAX_ID};
use super::profile::Profile;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BusMeter {
    /// Identification number, 8 decimal digits.
    pub id: u32,
    /// Three letters, e.g. "KAM".
    pub manufacturer: String,
    pub version: u8,
    /// M-Bus medium code (see [`super::codes::medium`]).
    pub medium: u8,
    pub unit: Unit,
    /// Resolution: the index counts steps of 10^exponent units (-3 for litres on an m³
    /// water meter). Firmware 2.x reports it as the exponent.
    pub exponent: i8,
    /// Integer digits of the counter: the index wraps modulo 10^digits units.
    pub digits: u8,
    /// Index at `start`, in units.
    pub initial: f64,
    /// Unix time at which the index reads `initial`; consumption counts from there.
    pub start: i64,
    pub profile: Profile,
    /// Seed of this meter's hour-to-hour noise.
    pub seed: u64,
}

/// An index as a meter reports it: `raw` steps of 10^exponent units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MeterValue {
    pub raw: i64,
    pub exponent: i8,
    pub unit: Unit,
}

impl MeterValue {
    /// The index in units.
    pub fn value(&self) -> f64 {
        scale(self.raw, self.exponent)
    }
}

/// `raw × 10^exponent`, dividing for negative exponents so that 123456 × 10^-3 prints
/// as 123.456.
pub(crate) fn scale(raw: i64, exponent: i8) -> f64 {
    let factor = 10f64.powi(i32::from(exponent.unsigned_abs()));
    if exponent < 0 {
        raw as f64 / factor
    } else {
        raw as f64 * factor
    }
}

impl BusMeter {
    /// Why this meter cannot be put on a loop, if it cannot.
    pub fn problem(&self) -> Option<String> {
        let problem = if self.id > MAX_ID {
            "the id has more than 8 digits"
        } else if pack_manufacturer(&self.manufacturer).is_none() {
            "the manufacturer is three capital letters"
        } else if !(-6..=3).contains(&self.exponent) {
            "the exponent is -6 to 3"
        } else if !(1..=12).contains(&self.digits)
            || i32::from(self.digits) <= i32::from(self.exponent)
        {
            "the digits are 1 to 12, more than the exponent"
        } else if !self.initial.is_finite() || self.initial < 0.0 {
            "the initial index is a number of units, 0 or more"
        } else if self.initial >= scale(self.modulus(), self.exponent) {
            "the initial index does not fit the digits"
        } else if !self.profile.annual.is_finite() || self.profile.annual < 0.0 {
            "the annual consumption is a number, 0 or more"
        } else {
            return None;
        };
        Some(problem.to_owned())
    }

    /// Where the raw index wraps: 10^(digits - exponent) steps.
    pub fn modulus(&self) -> i64 {
        10i64.pow((i32::from(self.digits) - i32::from(self.exponent)).clamp(0, 18) as u32)
    }

    /// A value in units as a whole number of steps.
    pub fn to_raw(&self, value: f64) -> i64 {
        let steps = 10f64.powi(i32::from(self.exponent.unsigned_abs()));
        if self.exponent < 0 {
            (value * steps).round() as i64
        } else {
            (value / steps).round() as i64
        }
    }

    pub fn value(&self, raw: i64) -> MeterValue {
        MeterValue {
            raw,
            exponent: self.exponent,
            unit: self.unit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mbg::profile::Usage;

    #[test]
    fn checks_and_scales() {
        let mut meter = BusMeter {
            id: 12_345_678,
            manufacturer: "KAM".into(),
            version: 1,
            medium: 0x16,
            unit: Unit::CubicMetres,
            exponent: -3,
            digits: 5,
            initial: 123.456,
            start: 0,
            profile: Profile::water(Usage::ColdWater, 2.0, 120.0, 1),
            seed: 1,
        };
        assert_eq!(meter.problem(), None);
        assert_eq!(meter.modulus(), 100_000_000);
        assert_eq!(meter.to_raw(123.456), 123_456);
        assert_eq!(meter.value(123_456).value(), 123.456);
        meter.initial = 100_000.0;
        assert!(meter.problem().is_some());
        meter.initial = 1.0;
        meter.manufacturer = "Kam".into();
        assert!(meter.problem().is_some());
        assert_eq!(scale(12, 2), 1200.0);
    }
}
