//! Meter gateways (MBG-250 and any model described the same way): a list of M-Bus
//! meters the client programs slot by slot, a read-out the client triggers, and one
//! reading per slot read back in as few requests as the read limit allows.
//!
//! The firmware line is read from the device and picks the profile: lines differ in
//! how an index is encoded (a word-swapped float or an integer with an exponent).

use std::time::Duration;

use tokio::time::Instant;

use crate::error::{DriverError, Result};
use crate::link::{Endpoint, Link};
use crate::profile::{DeviceProfile, DeviceRole, GatewayLayout, Layout, Registry};
use crate::registers::{Block, Field, Number};

/// A meter as a gateway's list names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SlotMeter {
    /// M-Bus identification number, 0 to 99 999 999.
    pub id: u32,
    /// Three capital letters, e.g. "KAM".
    pub manufacturer: String,
    pub version: u8,
    /// M-Bus medium code (0x07 water, 0x04 heat…).
    pub medium: u8,
}

/// The gateway as its control registers describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayStatus {
    /// The profile its firmware line resolved to.
    pub profile_id: String,
    pub firmware: (u8, u8),
    pub capacity: u16,
    /// Active slots.
    pub configured: u16,
    /// End of the last read-out (Unix time, UTC); `None` if none yet.
    pub last_readout: Option<u32>,
    pub running: bool,
}

/// What one slot holds after a read-out, decoded but not judged: the service decides
/// what a status bit or a stale id means.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotReading {
    pub slot: u16,
    /// Bit 0 no answer, 1 leak, 2 burst, 3 reverse flow, 4 tamper, 5 battery low,
    /// 6 meter error.
    pub status: u16,
    /// The index in the unit of `unit_code`, or why it could not be decoded.
    pub value: std::result::Result<f64, String>,
    /// 1 m³, 2 kWh, 3 HCA units, 4 MWh; anything else as the device sent it.
    pub unit_code: u16,
    /// Unix time of this meter's reading; `None` if never read.
    pub time: Option<u32>,
    /// The id of the meter that answered; `None` if the registers are not BCD.
    pub id_echo: Option<u32>,
}

pub mod status_bits {
    pub const NO_ANSWER: u16 = 1 << 0;
    pub const LEAK: u16 = 1 << 1;
    pub const BURST: u16 = 1 << 2;
    pub const REVERSE_FLOW: u16 = 1 << 3;
    pub const TAMPER: u16 = 1 << 4;
    pub const BATTERY_LOW: u16 = 1 << 5;
    pub const METER_ERROR: u16 = 1 << 6;
}

pub struct MeterGateway {
    link: Link,
    profile: DeviceProfile,
    layout: GatewayLayout,
}

impl MeterGateway {
    /// Connects to a gateway of `model`, reads its model and firmware line and picks
    /// the matching profile from `registry`. A device of another model, or of a
    /// firmware line no profile describes, is refused as `WrongDevice`.
    pub async fn connect(
        registry: &Registry,
        model: &str,
        endpoint: &Endpoint,
        unit: Option<u8>,
    ) -> Result<(MeterGateway, GatewayStatus)> {
        let any = registry
            .for_model(DeviceRole::MeterGateway, model, None)
            .ok_or_else(|| {
                DriverError::Unsupported(format!(
                    "no meter gateway profile for model {model:?} (known: {})",
                    registry.models(DeviceRole::MeterGateway).join(", ")
                ))
            })?;
        let modbus = any.modbus_settings()?;
        let unit = unit.unwrap_or(modbus.default_unit);
        let mut link = Link::connect(endpoint, unit, modbus).await?;
        let (start, count) = control_span(any)?;
        let block = Block {
            base: start,
            words: link.read_holding(start, count).await?,
        };
        let identity = any.identity_map()?;
        let code = crate::identity::required(&block, &identity.model, "model")?;
        let firmware = crate::identity::required(&block, &identity.firmware, "firmware")?;
        let major = (firmware >> 8) as u8;
        let profile = registry
            .for_model(DeviceRole::MeterGateway, model, Some(major))
            .filter(|p| p.model_code.map(u64::from) == Some(code))
            .ok_or_else(|| {
                DriverError::WrongDevice(format!(
                    "expected a {model} (model code {:#06x}, firmware {}), found model code {code:#06x} with firmware {major}.{}",
                    any.model_code.unwrap_or_default(),
                    firmware_lines(registry, model),
                    firmware & 0xFF
                ))
            })?
            .clone();
        let Layout::MeterGateway(layout) = profile.layout.clone() else {
            return Err(DriverError::Unsupported(format!(
                "profile {} is not a meter gateway",
                profile.id
            )));
        };
        let mut gateway = MeterGateway {
            link,
            profile,
            layout,
        };
        // The lines share the control registers today; a line that moved them is read again.
        let status = if control_span(&gateway.profile)? == (start, count) {
            gateway.decode_status(&block)?
        } else {
            gateway.status().await?
        };
        Ok((gateway, status))
    }

    pub fn profile(&self) -> &DeviceProfile {
        &self.profile
    }

    /// Modbus transactions sent so far on this connection.
    pub fn transactions(&self) -> u64 {
        self.link.transactions()
    }

    /// Reads the control registers: configured slots, last read-out, running or not.
    pub async fn status(&mut self) -> Result<GatewayStatus> {
        let (start, count) = control_span(&self.profile)?;
        let block = Block {
            base: start,
            words: self.link.read_holding(start, count).await?,
        };
        self.decode_status(&block)
    }

    fn decode_status(&self, block: &Block) -> Result<GatewayStatus> {
        use crate::identity::required;
        let identity = self.profile.identity_map()?;
        let firmware = required(block, &identity.firmware, "firmware")?;
        let configured = match &identity.used {
            Some(field) => required(block, field, "configured")?,
            None => 0,
        };
        let state_field = Field {
            address: self.layout.readout_state,
            data_type: crate::registers::DataType::U16,
            word_order: Default::default(),
        };
        let state = required(block, &state_field, "read-out state")?;
        let last = required(block, &self.layout.last_readout, "last read-out")?;
        Ok(GatewayStatus {
            profile_id: self.profile.id.clone(),
            firmware: ((firmware >> 8) as u8, firmware as u8),
            capacity: required(block, &identity.capacity, "capacity")? as u16,
            configured: configured as u16,
            last_readout: (last != 0).then_some(last as u32),
            running: state == 1,
        })
    }

    /// The active slots of the meter list, in slot order.
    pub async fn read_slots(&mut self, capacity: u16) -> Result<Vec<(u16, SlotMeter)>> {
        let stride = self.layout.slot_stride;
        let total = capacity
            .checked_mul(stride)
            .ok_or_else(|| DriverError::Protocol(format!("capacity {capacity} too large")))?;
        let words = self
            .link
            .read_holding(self.layout.slots_base, total)
            .await?;
        let mut slots = Vec::new();
        for (slot, record) in words.chunks(usize::from(stride)).enumerate() {
            let slot = slot as u16;
            match record.first() {
                Some(0) => continue,
                Some(1) => {}
                other => {
                    return Err(DriverError::Protocol(format!(
                        "slot {slot}: active flag {other:?}, expected 0 or 1"
                    )))
                }
            }
            let id =
                bcd_decode(u32::from(record[1]) << 16 | u32::from(record[2])).ok_or_else(|| {
                    DriverError::Protocol(format!(
                        "slot {slot}: id {:#06x}{:04x} is not 8 BCD digits",
                        record[1], record[2]
                    ))
                })?;
            let manufacturer = unpack_manufacturer(record[3]).ok_or_else(|| {
                DriverError::Protocol(format!(
                    "slot {slot}: manufacturer code {:#06x} is not three letters",
                    record[3]
                ))
            })?;
            slots.push((
                slot,
                SlotMeter {
                    id,
                    manufacturer,
                    version: (record[4] >> 8) as u8,
                    medium: record[4] as u8,
                },
            ));
        }
        Ok(slots)
    }

    /// Programs `slot` with `meter`, or empties it, with one write of the whole slot.
    pub async fn write_slot(&mut self, slot: u16, meter: Option<&SlotMeter>) -> Result<()> {
        let mut words = vec![0u16; usize::from(self.layout.slot_stride)];
        if let Some(meter) = meter {
            let id = bcd_encode(meter.id).ok_or_else(|| {
                DriverError::Unsupported(format!("meter id {} has more than 8 digits", meter.id))
            })?;
            let manufacturer = pack_manufacturer(&meter.manufacturer).ok_or_else(|| {
                DriverError::Unsupported(format!(
                    "manufacturer {:?} is not three capital letters",
                    meter.manufacturer
                ))
            })?;
            words[..5].copy_from_slice(&[
                1,
                (id >> 16) as u16,
                id as u16,
                manufacturer,
                u16::from(meter.version) << 8 | u16::from(meter.medium),
            ]);
        }
        let address = self.slot_address(slot, self.layout.slots_base, self.layout.slot_stride)?;
        self.link.write_registers(address, &words).await
    }

    /// Starts a read-out of every active slot.
    pub async fn start_readout(&mut self) -> Result<()> {
        self.link.write_register(self.layout.trigger, 1).await
    }

    /// Waits for the read-out started after `before` (the status read before the
    /// trigger) to end. Looks first when the bus should be done (`configured` meters
    /// at the profile's time per meter), then every tenth of that; gives up after
    /// three times the expected duration plus `grace`.
    pub async fn wait_readout(
        &mut self,
        before: &GatewayStatus,
        grace: Duration,
    ) -> Result<GatewayStatus> {
        let expected =
            Duration::from_millis(self.layout.ms_per_meter * u64::from(before.configured.max(1)));
        let deadline = Instant::now() + expected * 3 + grace;
        let step = (expected / 10).clamp(Duration::from_millis(20), Duration::from_secs(2));
        tokio::time::sleep(expected).await;
        let mut seen_running = false;
        loop {
            let status = self.status().await?;
            seen_running |= status.running;
            let ended = status.last_readout.is_some() && status.last_readout != before.last_readout;
            // Idle before the trigger and idle now: the read-out we started has ended
            // (a fast bus may finish before the first look, in the same clock second).
            if !status.running && (ended || seen_running || !before.running) {
                return Ok(status);
            }
            if Instant::now() + step > deadline {
                return Err(DriverError::Timeout {
                    operation: "meter read-out",
                    after: expected * 3 + grace,
                });
            }
            tokio::time::sleep(step).await;
        }
    }

    /// The readings of `slots` (any order), reading several slots per request: the
    /// fields of consecutive slots are read together as long as they fit the limit.
    pub async fn read_readings(&mut self, slots: &[u16]) -> Result<Vec<SlotReading>> {
        let mut slots = slots.to_vec();
        slots.sort_unstable();
        slots.dedup();
        let (base, stride) = (self.layout.readings_base, self.layout.reading_stride);
        let span = self.layout.reading.span();
        let max_read = self.profile.modbus_settings()?.max_read;
        let mut readings = Vec::with_capacity(slots.len());
        let mut rest = slots.as_slice();
        while let Some(&first) = rest.first() {
            // Slots whose fields end within one read starting at `first`.
            let fits = rest
                .iter()
                .take_while(|&&slot| {
                    u32::from(slot - first) * u32::from(stride) + u32::from(span)
                        <= u32::from(max_read)
                })
                .count();
            let (batch, remaining) = rest.split_at(fits.max(1));
            rest = remaining;
            let last = batch[batch.len() - 1];
            let start = self.slot_address(first, base, stride)?;
            let count = (last - first) * stride + span;
            let words = self.link.read_input(start, count).await?;
            for &slot in batch {
                let offset = usize::from((slot - first) * stride);
                let record = words
                    .get(offset..offset + usize::from(span))
                    .ok_or_else(|| {
                        DriverError::Protocol(format!("reading of slot {slot} cut short"))
                    })?;
                readings.push(self.decode_reading(slot, record)?);
            }
        }
        Ok(readings)
    }

    fn decode_reading(&self, slot: u16, record: &[u16]) -> Result<SlotReading> {
        let map = &self.layout.reading;
        let block = Block {
            base: 0,
            words: record.to_vec(),
        };
        let field = |field: &Field, name: &str| {
            block.unsigned(field).ok_or_else(|| {
                DriverError::Protocol(format!("slot {slot}: reading field {name} missing"))
            })
        };
        let status = field(&map.status, "status")? as u16;
        let unit_code = field(&map.unit, "unit")? as u16;
        let time = field(&map.time, "time")? as u32;
        let id_echo = bcd_decode(field(&map.id_echo, "id echo")? as u32);
        Ok(SlotReading {
            slot,
            status,
            value: self.decode_index(&block),
            unit_code,
            time: (time != 0).then_some(time),
            id_echo,
        })
    }

    /// The index as a number in the meter's unit, or why not.
    fn decode_index(&self, block: &Block) -> std::result::Result<f64, String> {
        let map = &self.layout.reading;
        let raw = block
            .slice(&map.index)
            .and_then(|words| map.index.decode(words))
            .ok_or("index registers missing")?;
        let raw = match raw {
            Number::Float(value) => return finite(value),
            Number::Signed(raw) => raw as f64,
            Number::Unsigned(raw) => raw as f64,
        };
        let exponent = map
            .exponent
            .as_ref()
            .and_then(|field| field.decode(block.slice(field)?))
            .ok_or("exponent register missing")?;
        let exponent = match exponent {
            Number::Signed(e) => e,
            Number::Unsigned(e) => e as i64,
            Number::Float(_) => return Err("exponent is not an integer".into()),
        };
        if !(-12..=12).contains(&exponent) {
            return Err(format!("exponent {exponent} outside -12..=12"));
        }
        finite(raw * 10f64.powi(exponent as i32))
    }

    /// The gateway clock (Unix time, UTC).
    pub async fn read_clock(&mut self) -> Result<u32> {
        let field = self.clock_field()?;
        let words = self
            .link
            .read_holding(field.address, field.registers())
            .await?;
        field
            .decode_unsigned(&words)
            .map(|value| value as u32)
            .ok_or_else(|| DriverError::Protocol("clock registers missing".into()))
    }

    pub async fn set_clock(&mut self, unix: u32) -> Result<()> {
        let field = self.clock_field()?;
        self.link
            .write_registers(field.address, &field.encode_unsigned(u64::from(unix)))
            .await
    }

    fn clock_field(&self) -> Result<Field> {
        self.profile.identity_map()?.clock.ok_or_else(|| {
            DriverError::Unsupported(format!("a {} has no clock", self.profile.model))
        })
    }

    fn slot_address(&self, slot: u16, base: u16, stride: u16) -> Result<u16> {
        slot.checked_mul(stride)
            .and_then(|offset| base.checked_add(offset))
            .ok_or_else(|| DriverError::Unsupported(format!("slot {slot} beyond the register map")))
    }
}

fn finite(value: f64) -> std::result::Result<f64, String> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(format!("index is not a number ({value})"))
    }
}

/// Start and length of the control registers read in one request: identity, last
/// read-out and read-out state. The clock is read on its own.
fn control_span(profile: &DeviceProfile) -> Result<(u16, u16)> {
    let Layout::MeterGateway(layout) = &profile.layout else {
        return Err(DriverError::Unsupported(format!(
            "profile {} is not a meter gateway",
            profile.id
        )));
    };
    let identity = profile.identity_map()?;
    let fields = [
        Some(identity.model),
        Some(identity.firmware),
        Some(identity.capacity),
        identity.used,
        Some(layout.last_readout),
    ];
    let spans = fields
        .into_iter()
        .flatten()
        .map(|f| (f.address, f.address + f.registers()))
        .chain([(layout.readout_state, layout.readout_state + 1)]);
    let (start, end) = spans.fold((u16::MAX, 0), |(s, e), (a, b)| (s.min(a), e.max(b)));
    Ok((start, end - start))
}

fn firmware_lines(registry: &Registry, model: &str) -> String {
    let lines: Vec<String> = registry
        .all()
        .filter(|p| {
            registry
                .for_model(DeviceRole::MeterGateway, model, Some(p.firmware_major))
                .is_some_and(|found| found.id == p.id)
        })
        .map(|p| format!("{}.x", p.firmware_major))
        .collect();
    lines.join(" or ")
}

/// 8 BCD digits to their number; `None` if a nibble is not a digit.
pub fn bcd_decode(bcd: u32) -> Option<u32> {
    (0..8).rev().try_fold(0u32, |number, i| {
        let digit = (bcd >> (4 * i)) & 0xF;
        (digit <= 9).then_some(number * 10 + digit)
    })
}

/// A number of at most 8 digits as BCD.
pub fn bcd_encode(number: u32) -> Option<u32> {
    if number > 99_999_999 {
        return None;
    }
    Some((0..8).fold(0u32, |bcd, i| {
        bcd | ((number / 10u32.pow(i)) % 10) << (4 * i)
    }))
}

/// M-Bus manufacturer code: three letters, 5 bits each, 'A' = 1.
pub fn pack_manufacturer(code: &str) -> Option<u16> {
    let bytes = code.as_bytes();
    if bytes.len() != 3 || !bytes.iter().all(u8::is_ascii_uppercase) {
        return None;
    }
    Some(
        bytes
            .iter()
            .fold(0u16, |packed, b| packed << 5 | u16::from(b - 64)),
    )
}

pub fn unpack_manufacturer(packed: u16) -> Option<String> {
    if packed >> 15 != 0 {
        return None;
    }
    (0..3)
        .rev()
        .map(|i| {
            let letter = ((packed >> (5 * i)) & 0x1F) as u8;
            (1..=26)
                .contains(&letter)
                .then_some(char::from(letter + 64))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcd_and_manufacturer_codes() {
        assert_eq!(bcd_encode(12_345_678), Some(0x1234_5678));
        assert_eq!(bcd_decode(0x1234_5678), Some(12_345_678));
        assert_eq!(bcd_decode(0x1234_567A), None);
        assert_eq!(bcd_encode(100_000_000), None);
        assert_eq!(pack_manufacturer("KAM"), Some(0x2C2D));
        assert_eq!(unpack_manufacturer(0x2C2D).as_deref(), Some("KAM"));
        assert_eq!(pack_manufacturer("kam"), None);
        assert_eq!(unpack_manufacturer(0), None);
        for n in [0, 1, 9, 10, 99_999_999, 4_242_424] {
            assert_eq!(bcd_encode(n).and_then(bcd_decode), Some(n));
        }
    }
}
