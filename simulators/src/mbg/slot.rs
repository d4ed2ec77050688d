//! The register layouts of one meter slot: its entry in the meter list (holding
//! registers 100 + 8·i) and its readings (input registers 1000 + 16·i).

use super::codes::{bcd_to_id, id_to_bcd, pack_manufacturer};
use super::meter::{BusMeter, MeterValue};
use crate::regs::{high_word, low_word};

pub const SLOT_LEN: usize = 8;
pub const READING_LEN: usize = 16;

/// One slot of the meter list (holding registers 100 + 8·i).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotConfig {
    pub active: bool,
    pub id: u32,
    /// Packed M-Bus code.
    pub manufacturer: u16,
    pub version: u8,
    pub medium: u8,
}

impl SlotConfig {
    /// An active slot for this meter, as a client that knows it would write it.
    pub fn for_meter(meter: &BusMeter) -> SlotConfig {
        SlotConfig {
            active: true,
            id: meter.id,
            manufacturer: pack_manufacturer(&meter.manufacturer).unwrap_or(0),
            version: meter.version,
            medium: meter.medium,
        }
    }

    /// active, id (BCD, 2 registers), manufacturer, version ≪ 8 | medium, 3 reserved.
    pub fn registers(&self) -> [u16; SLOT_LEN] {
        let [high, low] = id_to_bcd(self.id).unwrap_or([0, 0]);
        [
            u16::from(self.active),
            high,
            low,
            self.manufacturer,
            u16::from(self.version) << 8 | u16::from(self.medium),
            0,
            0,
            0,
        ]
    }

    /// The strict reading of a slot write: active 0 or 1, a BCD id, reserved 0.
    pub fn from_registers(words: &[u16]) -> Option<SlotConfig> {
        let &[active, high, low, manufacturer, version_medium, 0, 0, 0] = words else {
            return None;
        };
        if active > 1 {
            return None;
        }
        Some(SlotConfig {
            active: active == 1,
            id: bcd_to_id(high, low)?,
            manufacturer,
            version: (version_medium >> 8) as u8,
            medium: version_medium as u8,
        })
    }
}

/// What the last read-outs left in a slot (input registers 1000 + 16·i).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotReading {
    pub status: u16,
    /// The last index read; `None` if no meter ever answered in this slot.
    pub value: Option<MeterValue>,
    /// Gateway clock when it was read; 0 if never.
    pub time: u32,
    /// The id of the meter that answered; `None` if none ever did.
    pub id_echo: Option<u32>,
}

impl SlotReading {
    /// The 16 input registers, encoded for firmware line `major`.
    pub fn registers(&self, major: u8) -> [u16; READING_LEN] {
        let mut words = [0u16; READING_LEN];
        words[0] = self.status;
        if let Some(value) = self.value {
            if major == 1 {
                // Float32 in the meter's unit, low word first; 3-4 and the exponent 0.
                let bits = (value.value() as f32).to_bits();
                words[1] = low_word(bits);
                words[2] = high_word(bits);
            } else {
                let raw = value.raw as u64;
                for (i, word) in words[1..5].iter_mut().enumerate() {
                    *word = (raw >> (48 - 16 * i)) as u16;
                }
                words[5] = i16::from(value.exponent) as u16;
            }
            words[6] = value.unit.code();
        }
        words[7] = high_word(self.time);
        words[8] = low_word(self.time);
        if let Some([high, low]) = self.id_echo.and_then(id_to_bcd) {
            words[9] = high;
            words[10] = low;
        }
        words
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mbg::codes::Unit;

    #[test]
    fn layouts() {
        let slot = SlotConfig {
            active: true,
            id: 12_345_678,
            manufacturer: 0x2C2D,
            version: 2,
            medium: 0x16,
        };
        let words = slot.registers();
        assert_eq!(words, [1, 0x1234, 0x5678, 0x2C2D, 0x0216, 0, 0, 0]);
        assert_eq!(SlotConfig::from_registers(&words), Some(slot));
        assert_eq!(SlotConfig::from_registers(&words[..7]), None);

        let reading = SlotReading {
            status: 0,
            value: Some(MeterValue {
                raw: -2,
                exponent: -3,
                unit: Unit::CubicMetres,
            }),
            time: 0x6790_1234,
            id_echo: Some(42),
        };
        let v2 = reading.registers(2);
        assert_eq!(
            &v2[..11],
            &[0, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE, 0xFFFD, 1, 0x6790, 0x1234, 0, 0x42]
        );
        let v1 = reading.registers(1);
        let bits = (-0.002f32).to_bits();
        assert_eq!(&v1[1..6], &[bits as u16, (bits >> 16) as u16, 0, 0, 0]);
        assert_eq!(SlotReading::default().registers(2), [0; READING_LEN]);
    }
}
