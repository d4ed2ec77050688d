//! The MBG-250 gateway as pure state: its register map, the meter list the client
//! programs, the read-out that walks the M-Bus loop, and the readings. Real time is
//! passed in (`now`); the virtual time meters live on comes from its [`SimClock`].

use std::time::Duration;

use tokio::time::Instant;
use tokio_modbus::{ExceptionCode, Request, Response};

use super::bus::MBusLoop;
use super::clock::SimClock;
use super::codes::{id_to_bcd, status};
use super::scenario::{Scenario, ScenarioError};
use super::slot::{self, SlotConfig, SlotReading};
use super::truth::TruthRecord;
use crate::regs::{all_mapped, checked_range, high_word, low_word, read_block};

pub const MODEL: u16 = 0x4D47;
/// Meter slots of an MBG-250.
pub const CAPACITY: u16 = 250;

const MAX_READ: usize = 125;
const MAX_WRITE: usize = 123;
// Holding registers.
const STATE: u16 = 6;
const TRIGGER: u16 = 7;
const CLOCK: u16 = 30;
const SLOTS: u16 = 100;
const SLOT_LEN: u16 = slot::SLOT_LEN as u16;
// Input registers.
const READINGS: u16 = 1000;
const READING_LEN: u16 = slot::READING_LEN as u16;
/// Keeps a read-out's instants far from overflowing.
const MAX_PER_METER: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct MbgConfig {
    pub unit_id: u8,
    /// major × 256 + minor; major 1 reports float32 indexes, anything else i64 raw
    /// indexes with an exponent (firmware 2.x).
    pub firmware: u16,
    /// Meter slots, at most 250.
    pub capacity: u16,
    /// Real time the read-out spends on each active slot (at most a minute).
    pub ms_per_meter: Duration,
    /// The virtual clock meters are read at; share it between gateways to move them
    /// through the night together.
    pub clock: SimClock,
    /// For the ground truth.
    pub name: Option<String>,
}

impl Default for MbgConfig {
    fn default() -> Self {
        MbgConfig {
            unit_id: 1,
            firmware: 0x0201,
            capacity: CAPACITY,
            ms_per_meter: Duration::from_millis(20),
            clock: SimClock::system(),
            name: None,
        }
    }
}

/// A read-out walking the active slots, one every `ms_per_meter`.
#[derive(Debug, Clone)]
struct ReadOut {
    started: Instant,
    slots: Vec<u16>,
    done: usize,
}

#[derive(Debug)]
pub struct Mbg {
    config: MbgConfig,
    slots: Vec<SlotConfig>,
    readings: Vec<SlotReading>,
    /// Fault: the read-out leaves these slots as they are.
    stale: Vec<bool>,
    bus: MBusLoop,
    last_readout: u32,
    readout: Option<ReadOut>,
    /// Gateway clock minus virtual time, set by writing registers 30-31.
    clock_offset: i64,
    capacity_limit: Option<u16>,
    truth: Vec<TruthRecord>,
}

impl Mbg {
    pub fn new(mut config: MbgConfig) -> Mbg {
        config.capacity = config.capacity.clamp(1, CAPACITY);
        config.ms_per_meter = config.ms_per_meter.min(MAX_PER_METER);
        let capacity = usize::from(config.capacity);
        Mbg {
            slots: vec![SlotConfig::default(); capacity],
            readings: vec![SlotReading::default(); capacity],
            stale: vec![false; capacity],
            bus: MBusLoop::new(),
            last_readout: 0,
            readout: None,
            clock_offset: 0,
            capacity_limit: None,
            truth: Vec::new(),
            config,
        }
    }

    pub fn config(&self) -> &MbgConfig {
        &self.config
    }

    /// The firmware line: 1 or 2.
    pub fn firmware_major(&self) -> u8 {
        (self.config.firmware >> 8) as u8
    }

    pub fn clock(&self) -> &SimClock {
        &self.config.clock
    }

    pub fn bus(&self) -> &MBusLoop {
        &self.bus
    }

    pub fn bus_mut(&mut self) -> &mut MBusLoop {
        &mut self.bus
    }

    /// Answers one Modbus request.
    pub fn handle(
        &mut self,
        request: &Request<'_>,
        now: Instant,
    ) -> Result<Response, ExceptionCode> {
        self.settle(now);
        match request {
            Request::ReadHoldingRegisters(addr, qty) => {
                read_block(*addr, *qty, MAX_READ, |a| self.holding(a, now))
                    .map(Response::ReadHoldingRegisters)
            }
            Request::ReadInputRegisters(addr, qty) => {
                read_block(*addr, *qty, MAX_READ, |a| self.input(a))
                    .map(Response::ReadInputRegisters)
            }
            Request::WriteSingleRegister(addr, value) => self.write_single(*addr, *value, now),
            Request::WriteMultipleRegisters(addr, words) => self.write(*addr, words, now),
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }

    /// Reads the slots whose turn has come, and ends the read-out after the last one.
    pub fn settle(&mut self, now: Instant) {
        let Some(mut readout) = self.readout.take() else {
            return;
        };
        let step = self.config.ms_per_meter;
        while let Some(&slot) = readout.slots.get(readout.done) {
            let at = readout.started + step * (readout.done as u32 + 1);
            if at > now {
                self.readout = Some(readout);
                return;
            }
            self.read_slot(slot, at);
            readout.done += 1;
        }
        let end = readout.started + step * readout.slots.len() as u32;
        self.last_readout = self.gateway_clock(end);
    }

    /// Starts a read-out of the active slots, as writing 1 to register 7 does; false if
    /// one is already running (the write is then ignored).
    pub fn trigger(&mut self, now: Instant) -> bool {
        self.settle(now);
        if self.readout.is_some() {
            return false;
        }
        let slots = (0..self.config.capacity)
            .filter(|&i| self.slots[usize::from(i)].active)
            .collect();
        self.readout = Some(ReadOut {
            started: now,
            slots,
            done: 0,
        });
        self.settle(now);
        true
    }

    pub fn is_running(&self) -> bool {
        self.readout.is_some()
    }

    /// Virtual time at `now`, what the meters live on.
    pub fn virtual_time(&self, now: Instant) -> i64 {
        self.config.clock.at(now)
    }

    /// The gateway's clock register: virtual time plus what the client set.
    pub fn gateway_clock(&self, now: Instant) -> u32 {
        unix_u32(self.virtual_time(now) + self.clock_offset)
    }

    pub fn last_readout(&self) -> u32 {
        self.last_readout
    }

    /// Active slots (register 3).
    pub fn configured(&self) -> u16 {
        self.slots.iter().filter(|s| s.active).count() as u16
    }

    pub fn slots(&self) -> &[SlotConfig] {
        &self.slots
    }

    pub fn readings(&self) -> &[SlotReading] {
        &self.readings
    }

    /// Writes a slot directly, as if programmed earlier; false past the list.
    pub fn program(&mut self, slot: u16, config: SlotConfig) -> bool {
        match self.slots.get_mut(usize::from(slot)) {
            Some(s) if id_to_bcd(config.id).is_some() => {
                *s = config;
                true
            }
            _ => false,
        }
    }

    /// Fault: read-outs skip this slot, leaving its reading and id echo as they are.
    pub fn set_stale(&mut self, slot: u16, stale: bool) -> bool {
        match self.stale.get_mut(usize::from(slot)) {
            Some(s) => {
                *s = stale;
                true
            }
            None => false,
        }
    }

    /// Applies a scenario to this gateway's loop and keeps its record.
    pub fn apply(&mut self, scenario: &Scenario) -> Result<TruthRecord, ScenarioError> {
        let mut record = self.bus.apply(scenario)?;
        record.gateway.clone_from(&self.config.name);
        record.unit_id = Some(self.config.unit_id);
        self.truth.push(record.clone());
        Ok(record)
    }

    /// The records of the scenarios applied here.
    pub fn truth(&self) -> &[TruthRecord] {
        &self.truth
    }

    /// Power cycle: the meter list is in flash and survives; the readings and the
    /// time of the last read-out are in RAM and are lost, and so is a running
    /// read-out. The clock has a battery and keeps its setting.
    pub fn power_cycle(&mut self) {
        self.readout = None;
        self.readings.fill(SlotReading::default());
        self.last_readout = 0;
    }

    /// Factory reset: a power cycle that also empties the meter list and forgets the
    /// clock setting.
    pub fn factory_reset(&mut self) {
        self.power_cycle();
        self.slots.fill(SlotConfig::default());
        self.clock_offset = 0;
    }

    /// Caps the slots the client may write (and the capacity register), to simulate a
    /// smaller gateway.
    pub fn set_capacity_limit(&mut self, limit: Option<u16>) {
        self.capacity_limit = limit;
    }

    fn effective_capacity(&self) -> u16 {
        self.capacity_limit
            .map_or(self.config.capacity, |l| l.min(self.config.capacity))
    }

    /// One slot's turn in the read-out, at real instant `at`. A meter that does not
    /// answer leaves the previous reading in place, with bit 0 added.
    fn read_slot(&mut self, slot: u16, at: Instant) {
        let index = usize::from(slot);
        if self.stale[index] {
            return;
        }
        let id = self.slots[index].id;
        let t = self.virtual_time(at);
        let time = unix_u32(t + self.clock_offset);
        let reading = &mut self.readings[index];
        match self.bus.read(id, t) {
            Some(answer) => {
                *reading = SlotReading {
                    status: answer.status,
                    value: Some(answer.value),
                    time,
                    id_echo: Some(answer.id),
                }
            }
            None => reading.status |= status::NO_ANSWER,
        }
    }

    /// Slot and offset of a meter-list register, within `capacity` slots.
    fn slot_of(addr: u16, capacity: u16) -> Option<(u16, u16)> {
        let offset = addr.checked_sub(SLOTS)?;
        let slot = offset / SLOT_LEN;
        (slot < capacity).then_some((slot, offset % SLOT_LEN))
    }

    fn holding(&self, addr: u16, now: Instant) -> Option<u16> {
        let value = match addr {
            0 => MODEL,
            1 => self.config.firmware,
            2 => self.effective_capacity(),
            3 => self.configured(),
            4 => high_word(self.last_readout),
            5 => low_word(self.last_readout),
            STATE => u16::from(self.readout.is_some()),
            TRIGGER => 0,
            CLOCK => high_word(self.gateway_clock(now)),
            31 => low_word(self.gateway_clock(now)),
            _ => {
                let (slot, offset) = Mbg::slot_of(addr, self.config.capacity)?;
                self.slots[usize::from(slot)].registers()[usize::from(offset)]
            }
        };
        Some(value)
    }

    fn input(&self, addr: u16) -> Option<u16> {
        let offset = addr.checked_sub(READINGS)?;
        let reading = self.readings.get(usize::from(offset / READING_LEN))?;
        Some(reading.registers(self.firmware_major())[usize::from(offset % READING_LEN)])
    }

    /// The map as a write sees it: slots past a capacity limit are unreachable.
    fn writable(&self, addr: u16) -> bool {
        match addr {
            0..=TRIGGER | CLOCK | 31 => true,
            _ => Mbg::slot_of(addr, self.effective_capacity()).is_some(),
        }
    }

    fn write_single(
        &mut self,
        addr: u16,
        value: u16,
        now: Instant,
    ) -> Result<Response, ExceptionCode> {
        if !self.writable(addr) {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        match addr {
            TRIGGER => self.write_trigger(value, now)?,
            // Identification is read-only, the clock and a slot are written whole.
            _ => return Err(ExceptionCode::IllegalDataValue),
        }
        Ok(Response::WriteSingleRegister(addr, value))
    }

    fn write(&mut self, addr: u16, words: &[u16], now: Instant) -> Result<Response, ExceptionCode> {
        let range = checked_range(addr, words.len(), MAX_WRITE)?;
        if !all_mapped(range, |a| self.writable(a)) {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        match (addr, words) {
            (TRIGGER, &[value]) => self.write_trigger(value, now)?,
            (CLOCK, &[high, low]) => {
                let set = i64::from(u32::from(high) << 16 | u32::from(low));
                self.clock_offset = set - self.virtual_time(now);
            }
            _ => match Mbg::slot_of(addr, self.config.capacity) {
                Some((slot, 0)) if words.len() == usize::from(SLOT_LEN) => {
                    // The read-out walks the list: it is not rewritten under its feet.
                    if self.readout.is_some() {
                        return Err(ExceptionCode::ServerDeviceBusy);
                    }
                    let config =
                        SlotConfig::from_registers(words).ok_or(ExceptionCode::IllegalDataValue)?;
                    self.slots[usize::from(slot)] = config;
                }
                _ => return Err(ExceptionCode::IllegalDataValue),
            },
        }
        Ok(Response::WriteMultipleRegisters(addr, words.len() as u16))
    }

    /// 1 starts a read-out (ignored while one runs); any other value is 03.
    fn write_trigger(&mut self, value: u16, now: Instant) -> Result<(), ExceptionCode> {
        if value != 1 {
            return Err(ExceptionCode::IllegalDataValue);
        }
        self.trigger(now);
        Ok(())
    }
}

/// Unix seconds as the u32 registers hold them (clamped, not wrapped).
fn unix_u32(unix: i64) -> u32 {
    unix.clamp(0, i64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mbg::codes::Unit;
    use crate::mbg::meter::BusMeter;
    use crate::mbg::population::population;
    use crate::mbg::profile::date;

    const T0: i64 = 1_736_899_200; // 2025-01-15T00:00:00Z

    fn gateway(firmware: u16) -> (Mbg, Vec<BusMeter>, Instant) {
        let mut mbg = Mbg::new(MbgConfig {
            firmware,
            ms_per_meter: Duration::from_millis(10),
            clock: SimClock::frozen(T0),
            ..MbgConfig::default()
        });
        let meters = population(1, 10_000_001, 2, date(2025, 1, 1));
        for m in &meters {
            mbg.bus_mut().add(m.clone()).unwrap();
        }
        (mbg, meters, Instant::now())
    }

    fn holding(
        mbg: &mut Mbg,
        addr: u16,
        qty: u16,
        now: Instant,
    ) -> Result<Vec<u16>, ExceptionCode> {
        match mbg.handle(&Request::ReadHoldingRegisters(addr, qty), now)? {
            Response::ReadHoldingRegisters(words) => Ok(words),
            other => panic!("{other:?}"),
        }
    }

    fn input(mbg: &mut Mbg, addr: u16, qty: u16, now: Instant) -> Result<Vec<u16>, ExceptionCode> {
        match mbg.handle(&Request::ReadInputRegisters(addr, qty), now)? {
            Response::ReadInputRegisters(words) => Ok(words),
            other => panic!("{other:?}"),
        }
    }

    fn write(
        mbg: &mut Mbg,
        addr: u16,
        words: &[u16],
        now: Instant,
    ) -> Result<Response, ExceptionCode> {
        mbg.handle(
            &Request::WriteMultipleRegisters(addr, words.to_vec().into()),
            now,
        )
    }

    #[test]
    fn identity_and_holes() {
        let (mut mbg, _, now) = gateway(0x0201);
        assert_eq!(
            holding(&mut mbg, 0, 8, now),
            Ok(vec![MODEL, 0x0201, 250, 0, 0, 0, 0, 0])
        );
        let clock = holding(&mut mbg, 30, 2, now).unwrap();
        assert_eq!(u32::from(clock[0]) << 16 | u32::from(clock[1]), T0 as u32);
        use ExceptionCode::{IllegalDataAddress as E02, IllegalDataValue as E03};
        for (addr, qty) in [(0, 9), (8, 1), (29, 2), (31, 2), (99, 2), (2099, 2)] {
            assert_eq!(holding(&mut mbg, addr, qty, now), Err(E02), "{addr}+{qty}");
        }
        assert_eq!(holding(&mut mbg, 100, 126, now), Err(E03));
        assert_eq!(holding(&mut mbg, 2092, 8, now).map(|w| w.len()), Ok(8));
        assert_eq!(input(&mut mbg, 999, 2, now), Err(E02));
        assert_eq!(input(&mut mbg, 1000 + 16 * 249, 17, now), Err(E02));
        assert_eq!(input(&mut mbg, 1000, 125, now).map(|w| w.len()), Ok(125));
        let coil = mbg.handle(&Request::ReadCoils(0, 1), now);
        assert_eq!(coil, Err(ExceptionCode::IllegalFunction));
    }

    #[test]
    fn strict_writes() {
        let (mut mbg, meters, now) = gateway(0x0201);
        use ExceptionCode::{IllegalDataAddress as E02, IllegalDataValue as E03};
        let slot = SlotConfig::for_meter(&meters[0]).registers();
        let single = |mbg: &mut Mbg, addr, value| {
            mbg.handle(&Request::WriteSingleRegister(addr, value), now)
        };
        assert_eq!(single(&mut mbg, 0, 1), Err(E03));
        assert_eq!(single(&mut mbg, 8, 1), Err(E02));
        assert_eq!(single(&mut mbg, 7, 2), Err(E03));
        assert_eq!(single(&mut mbg, 30, 1), Err(E03));
        assert_eq!(single(&mut mbg, 100, 1), Err(E03));
        assert_eq!(write(&mut mbg, 30, &[1], now), Err(E03));
        assert_eq!(write(&mut mbg, 6, &[0, 1], now), Err(E03));
        assert_eq!(write(&mut mbg, 7, &[1, 0], now), Err(E02));
        assert_eq!(write(&mut mbg, 100, &slot[..7], now), Err(E03));
        assert_eq!(write(&mut mbg, 101, &slot, now), Err(E03));
        assert_eq!(write(&mut mbg, 100, &[slot, slot].concat(), now), Err(E03));
        assert_eq!(write(&mut mbg, 100, &[0; 124], now), Err(E03));
        assert_eq!(write(&mut mbg, 2100, &slot, now), Err(E02));
        let mut bad = slot;
        bad[2] = 0x567A;
        assert_eq!(write(&mut mbg, 100, &bad, now), Err(E03));
        let mut bad = slot;
        bad[0] = 2;
        assert_eq!(write(&mut mbg, 100, &bad, now), Err(E03));
        let mut bad = slot;
        bad[7] = 1;
        assert_eq!(write(&mut mbg, 100, &bad, now), Err(E03));
        assert_eq!(mbg.configured(), 0);
        assert!(write(&mut mbg, 108, &slot, now).is_ok());
        assert_eq!(holding(&mut mbg, 3, 1, now), Ok(vec![1]));
        assert_eq!(holding(&mut mbg, 108, 8, now), Ok(slot.to_vec()));
        // An inactive slot may be all zeros.
        assert!(write(&mut mbg, 108, &[0; 8], now).is_ok());
        mbg.set_capacity_limit(Some(1));
        assert_eq!(write(&mut mbg, 108, &slot, now), Err(E02));
        assert_eq!(holding(&mut mbg, 2, 1, now), Ok(vec![1]));
        // The clock.
        assert!(write(&mut mbg, 30, &[0x6000, 0], now).is_ok());
        assert_eq!(holding(&mut mbg, 30, 2, now), Ok(vec![0x6000, 0]));
        mbg.clock().advance(5);
        assert_eq!(holding(&mut mbg, 30, 2, now), Ok(vec![0x6000, 5]));
    }

    #[test]
    fn readout_walks_the_bus_slot_by_slot() {
        let (mut mbg, meters, now) = gateway(0x0201);
        for (i, m) in meters.iter().take(3).enumerate() {
            write(
                &mut mbg,
                100 + 8 * i as u16,
                &SlotConfig::for_meter(m).registers(),
                now,
            )
            .unwrap();
        }
        assert!(mbg.handle(&Request::WriteSingleRegister(7, 1), now).is_ok());
        assert_eq!(holding(&mut mbg, 6, 2, now), Ok(vec![1, 0]));
        let ms = Duration::from_millis;
        // The list is not rewritten during a read-out; the trigger is ignored.
        let busy = write(&mut mbg, 100, &[0; 8], now);
        assert_eq!(busy, Err(ExceptionCode::ServerDeviceBusy));
        assert!(!mbg.trigger(now + ms(5)));
        mbg.settle(now + ms(15));
        assert!(mbg.readings()[0].value.is_some() && mbg.readings()[1].value.is_none());
        assert_eq!(holding(&mut mbg, 4, 3, now + ms(29)), Ok(vec![0, 0, 1]));
        assert_eq!(holding(&mut mbg, 6, 1, now + ms(30)), Ok(vec![0]));
        assert_eq!(mbg.last_readout(), T0 as u32);

        let words = input(&mut mbg, 1000 + 16, 16, now + ms(30)).unwrap();
        let expected = mbg.bus_mut().index_at(meters[1].id, T0).unwrap();
        let raw = words[1..5]
            .iter()
            .fold(0u64, |acc, &w| acc << 16 | u64::from(w)) as i64;
        assert_eq!(raw, expected.raw);
        assert_eq!(words[5] as i16, -3);
        assert_eq!(words[6], Unit::CubicMetres.code());
        assert_eq!(
            &words[7..11],
            &[(T0 >> 16) as u16, T0 as u16, 0x1000, 0x0002]
        );
        assert_eq!(&words[11..], &[0; 5]);
    }

    #[test]
    fn firmware_1_reports_float_low_word_first() {
        let (mut mbg, meters, now) = gateway(0x0104);
        mbg.program(0, SlotConfig::for_meter(&meters[2]));
        mbg.trigger(now);
        mbg.settle(now + Duration::from_millis(10));
        let words = input(&mut mbg, 1000, 11, now).unwrap();
        let value = f32::from_bits(u32::from(words[2]) << 16 | u32::from(words[1]));
        let expected = mbg.bus_mut().index_at(meters[2].id, T0).unwrap().value() as f32;
        assert_eq!(value, expected);
        assert_eq!(&words[3..6], &[0, 0, 0]);
    }

    #[test]
    fn silence_stale_slots_and_reboots() {
        let (mut mbg, meters, now) = gateway(0x0201);
        mbg.program(0, SlotConfig::for_meter(&meters[0]));
        mbg.program(1, SlotConfig::for_meter(&meters[1]));
        mbg.bus_mut()
            .force_status(meters[0].id, status::BATTERY_LOW)
            .unwrap();
        mbg.trigger(now);
        let mut later = now + Duration::from_millis(20);
        mbg.settle(later);
        let first = mbg.readings()[0];
        assert_eq!(first.status, status::BATTERY_LOW);

        // Next night, meter 0 is silent and slot 1 stale after being reprogrammed.
        mbg.clock().advance(86_400);
        mbg.bus_mut().set_answering(meters[0].id, false).unwrap();
        mbg.program(1, SlotConfig::for_meter(&meters[3]));
        mbg.set_stale(1, true);
        let before = mbg.readings()[1];
        mbg.trigger(later);
        later += Duration::from_millis(20);
        mbg.settle(later);
        let silent = mbg.readings()[0];
        assert_eq!(silent.status, status::BATTERY_LOW | status::NO_ANSWER);
        assert_eq!((silent.value, silent.time), (first.value, first.time));
        assert_eq!(mbg.readings()[1], before);
        assert_eq!(mbg.readings()[1].id_echo, Some(meters[1].id));
        assert_eq!(mbg.last_readout(), T0 as u32 + 86_400);

        // Power cycle: the list stays, the readings go; factory reset: all goes.
        mbg.trigger(later);
        mbg.power_cycle();
        assert!(!mbg.is_running());
        assert_eq!(mbg.configured(), 2);
        assert_eq!(mbg.readings()[0], SlotReading::default());
        assert_eq!(mbg.last_readout(), 0);
        mbg.factory_reset();
        assert_eq!(mbg.configured(), 0);
    }
}
