//! The KL-8 controller as pure state: a card table written record by record, kept in
//! RAM until the `save` coil copies it to flash. Time is passed in (`now`).

use std::time::Duration;

use tokio::time::Instant;
use tokio_modbus::{ExceptionCode, Request, Response};

use crate::access::{check_door, AccessResult, PresentError};
use crate::regs::{all_mapped, checked_range, high_word, low_word, read_block};
use crate::uid::Uid;

pub const MODEL: u16 = 0x4B38;
pub const DOORS: u8 = 8;

const MAX_REGISTERS: usize = 100;
/// The Modbus limit for FC01; the coil map itself is only 9 coils long.
const MAX_COILS: usize = 2000;
const RECORDS: u16 = 100;
const RECORD_LEN: u16 = 4;
const STATE: u16 = 3;
const MAX_CAPACITY: u16 = (0xFFFF - RECORDS) / RECORD_LEN;
const SAVE_COIL: u16 = 0;

#[derive(Debug, Clone)]
pub struct Kl8Config {
    pub unit_id: u8,
    /// Number of records (at most 16358, what fits in the address space).
    pub capacity: u16,
    /// major × 256 + minor.
    pub firmware: u16,
    /// How long the copy to flash takes.
    pub save_time: Duration,
}

impl Default for Kl8Config {
    fn default() -> Self {
        Kl8Config {
            unit_id: 17,
            capacity: 1000,
            firmware: 0x0104,
            save_time: Duration::from_millis(200),
        }
    }
}

/// One record of the card table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Record {
    pub card: u32,
    pub door_mask: u16,
    /// 0 empty, 1 active.
    pub state: u16,
}

impl Record {
    pub fn active(card: u32, door_mask: u16) -> Record {
        Record {
            card,
            door_mask,
            state: 1,
        }
    }

    pub fn is_active(&self) -> bool {
        self.state == 1
    }

    /// card (low word first), door_mask, state.
    fn registers(&self) -> [u16; RECORD_LEN as usize] {
        [
            low_word(self.card),
            high_word(self.card),
            self.door_mask,
            self.state,
        ]
    }
}

/// A copy to flash in progress.
#[derive(Debug, Clone)]
struct Save {
    snapshot: Vec<Record>,
    done_at: Instant,
}

#[derive(Debug)]
pub struct Kl8 {
    config: Kl8Config,
    ram: Vec<Record>,
    flash: Vec<Record>,
    change_counter: u16,
    save: Option<Save>,
    capacity_limit: Option<u16>,
    door_pulses: [u32; DOORS as usize],
}

impl Kl8 {
    pub fn new(mut config: Kl8Config) -> Kl8 {
        config.capacity = config.capacity.min(MAX_CAPACITY);
        let empty = vec![Record::default(); usize::from(config.capacity)];
        Kl8 {
            ram: empty.clone(),
            flash: empty,
            change_counter: 0,
            save: None,
            capacity_limit: None,
            door_pulses: [0; DOORS as usize],
            config,
        }
    }

    pub fn config(&self) -> &Kl8Config {
        &self.config
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
                read_block(*addr, *qty, MAX_REGISTERS, |a| self.holding(a))
                    .map(Response::ReadHoldingRegisters)
            }
            Request::WriteMultipleRegisters(addr, words) => self.write_record(*addr, words),
            Request::WriteSingleRegister(addr, value) => self.write_single(*addr, *value),
            Request::ReadCoils(addr, qty) => {
                read_block(*addr, *qty, MAX_COILS, |a| self.coil(a)).map(Response::ReadCoils)
            }
            Request::WriteSingleCoil(addr, value) => self.write_coil(*addr, *value, now),
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }

    /// Finishes the copy to flash if its time is over.
    pub fn settle(&mut self, now: Instant) {
        if self.save.as_ref().is_some_and(|save| now >= save.done_at) {
            if let Some(save) = self.save.take() {
                self.flash = save.snapshot;
            }
        }
    }

    /// A card presented at `door`. The first active record with that card number decides.
    pub fn present_card(&self, card: u32, door: u8) -> Result<AccessResult, PresentError> {
        check_door(door, DOORS)?;
        let mask = self
            .ram
            .iter()
            .find(|r| r.is_active() && r.card == card)
            .map(|r| r.door_mask);
        Ok(AccessResult::decide(mask, door))
    }

    /// A badge presented at `door`. Only 4-byte UIDs have a card number; any other
    /// badge is unknown to a KL-8.
    pub fn present(&self, uid: &Uid, door: u8) -> Result<AccessResult, PresentError> {
        match uid.card_number() {
            Some(card) => self.present_card(card, door),
            None => check_door(door, DOORS).map(|()| AccessResult::DeniedUnknown),
        }
    }

    /// Power cut and restart: RAM comes back from flash, unsaved writes are lost.
    pub fn power_cut(&mut self) {
        self.save = None;
        self.ram.clone_from(&self.flash);
        self.change_counter = 0;
    }

    /// Caps the records the client may write (and the capacity register), to simulate
    /// a full table.
    pub fn set_capacity_limit(&mut self, limit: Option<u16>) {
        self.capacity_limit = limit;
    }

    /// Writes a record straight to RAM and flash; for seeding a table.
    pub fn seed_record(&mut self, index: u16, record: Record) -> bool {
        let index = usize::from(index);
        if index >= self.ram.len() {
            return false;
        }
        self.ram[index] = record;
        self.flash[index] = record;
        true
    }

    pub fn records(&self) -> &[Record] {
        &self.ram
    }

    pub fn saved_records(&self) -> &[Record] {
        &self.flash
    }

    pub fn change_counter(&self) -> u16 {
        self.change_counter
    }

    pub fn is_saving(&self) -> bool {
        self.save.is_some()
    }

    /// How many times door `door` (1-based) was pulsed.
    pub fn door_pulses(&self, door: u8) -> u32 {
        match door {
            1..=DOORS => self.door_pulses[usize::from(door - 1)],
            _ => 0,
        }
    }

    fn effective_capacity(&self) -> u16 {
        match self.capacity_limit {
            Some(limit) => limit.min(self.config.capacity),
            None => self.config.capacity,
        }
    }

    /// Record index and offset of a register of the card table.
    fn record_of(&self, addr: u16) -> Option<(usize, u16)> {
        let offset = addr.checked_sub(RECORDS)?;
        let index = offset / RECORD_LEN;
        (index < self.config.capacity).then_some((usize::from(index), offset % RECORD_LEN))
    }

    fn holding(&self, addr: u16) -> Option<u16> {
        let value = match addr {
            0 => MODEL,
            1 => self.config.firmware,
            2 => self.effective_capacity(),
            3 => self.change_counter,
            _ => {
                let (index, offset) = self.record_of(addr)?;
                self.ram[index].registers()[usize::from(offset)]
            }
        };
        Some(value)
    }

    fn coil(&self, addr: u16) -> Option<bool> {
        match addr {
            SAVE_COIL => Some(self.save.is_some()),
            // A pulse is over by the time anyone reads it.
            1..=8 => Some(false),
            _ => None,
        }
    }

    /// The map as a write sees it: records past a capacity limit are as unreachable as
    /// records past the table.
    fn mapped_for_write(&self, addr: u16) -> bool {
        match self.record_of(addr) {
            Some((index, _)) => index < usize::from(self.effective_capacity()),
            None => addr <= 3,
        }
    }

    fn write_record(&mut self, addr: u16, words: &[u16]) -> Result<Response, ExceptionCode> {
        let range = checked_range(addr, words.len(), MAX_REGISTERS)?;
        if !all_mapped(range, |a| self.mapped_for_write(a)) {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        // Only one whole record per write, with a valid state.
        let (index, offset) = self
            .record_of(addr)
            .ok_or(ExceptionCode::IllegalDataValue)?;
        let &[low, high, door_mask, state] = words else {
            return Err(ExceptionCode::IllegalDataValue);
        };
        if offset != 0 || state > 1 {
            return Err(ExceptionCode::IllegalDataValue);
        }
        self.ram[index] = Record {
            card: u32::from(high) << 16 | u32::from(low),
            door_mask,
            state,
        };
        self.change_counter = self.change_counter.wrapping_add(1);
        Ok(Response::WriteMultipleRegisters(addr, words.len() as u16))
    }

    /// FC06 only clears a record, by writing 0 to its `state`. The card number and mask
    /// stay as they were: a client must look at `state` to know a record is empty.
    fn write_single(&mut self, addr: u16, value: u16) -> Result<Response, ExceptionCode> {
        if !self.mapped_for_write(addr) {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        match self.record_of(addr) {
            Some((index, STATE)) if value == 0 => {
                self.ram[index].state = 0;
                self.change_counter = self.change_counter.wrapping_add(1);
                Ok(Response::WriteSingleRegister(addr, value))
            }
            _ => Err(ExceptionCode::IllegalDataValue),
        }
    }

    /// Writing 1 to `save` (again) starts a copy of the table as it is now. Writing 0,
    /// or 0 to a door coil, does nothing.
    fn write_coil(
        &mut self,
        addr: u16,
        value: bool,
        now: Instant,
    ) -> Result<Response, ExceptionCode> {
        match addr {
            SAVE_COIL if value => {
                self.save = Some(Save {
                    snapshot: self.ram.clone(),
                    done_at: now + self.config.save_time,
                });
            }
            1..=8 if value => self.door_pulses[usize::from(addr - 1)] += 1,
            0..=8 => {}
            _ => return Err(ExceptionCode::IllegalDataAddress),
        }
        Ok(Response::WriteSingleCoil(addr, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> (Kl8, Instant) {
        let config = Kl8Config {
            capacity: 4,
            ..Kl8Config::default()
        };
        (Kl8::new(config), Instant::now())
    }

    fn write(
        kl8: &mut Kl8,
        index: u16,
        words: [u16; 4],
        now: Instant,
    ) -> Result<Response, ExceptionCode> {
        let request = Request::WriteMultipleRegisters(RECORDS + 4 * index, words.to_vec().into());
        kl8.handle(&request, now)
    }

    #[test]
    fn records_are_word_swapped() {
        let (mut kl8, now) = device();
        write(&mut kl8, 1, [0xA204, 0x912B, 0b101, 1], now).unwrap();
        assert_eq!(kl8.records()[1], Record::active(0x912B_A204, 0b101));
        let read = kl8.handle(&Request::ReadHoldingRegisters(0, 4), now);
        assert_eq!(
            read,
            Ok(Response::ReadHoldingRegisters(vec![MODEL, 0x0104, 4, 1]))
        );
        let uid = Uid::from_hex("04A22B91").unwrap();
        assert_eq!(kl8.present(&uid, 3), Ok(AccessResult::Granted));
        assert_eq!(kl8.present(&uid, 2), Ok(AccessResult::DeniedDoor));
        assert_eq!(
            kl8.present(&Uid::from_hex("04A22B9100").unwrap(), 1),
            Ok(AccessResult::DeniedUnknown)
        );
        assert!(kl8.present(&uid, 9).is_err());
    }

    #[test]
    fn fc06_clears_state_only() {
        let (mut kl8, now) = device();
        write(&mut kl8, 0, [1, 0, 1, 1], now).unwrap();
        let clear = Request::WriteSingleRegister(RECORDS + STATE, 0);
        assert!(kl8.handle(&clear, now).is_ok());
        assert_eq!(
            kl8.records()[0],
            Record {
                card: 1,
                door_mask: 1,
                state: 0
            }
        );
        assert_eq!(kl8.change_counter(), 2);
        let set = Request::WriteSingleRegister(RECORDS + STATE, 1);
        assert_eq!(kl8.handle(&set, now), Err(ExceptionCode::IllegalDataValue));
        let card = Request::WriteSingleRegister(RECORDS, 1);
        assert_eq!(kl8.handle(&card, now), Err(ExceptionCode::IllegalDataValue));
    }

    #[test]
    fn write_shapes() {
        let (mut kl8, now) = device();
        let at = |addr, words: Vec<u16>| Request::WriteMultipleRegisters(addr, words.into());
        assert_eq!(
            kl8.handle(&at(101, vec![0; 4]), now),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            kl8.handle(&at(100, vec![0; 8]), now),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            kl8.handle(&at(100, vec![0, 0, 0, 2]), now),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            kl8.handle(&at(0, vec![0]), now),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            kl8.handle(&at(116, vec![0; 4]), now),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            kl8.handle(&at(100, vec![0; 101]), now),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(kl8.change_counter(), 0);
        let read = Request::ReadHoldingRegisters(0, 5);
        assert_eq!(
            kl8.handle(&read, now),
            Err(ExceptionCode::IllegalDataAddress)
        );
        let input = Request::ReadInputRegisters(0, 1);
        assert_eq!(kl8.handle(&input, now), Err(ExceptionCode::IllegalFunction));
    }

    #[test]
    fn save_then_power_cut() {
        let (mut kl8, mut now) = device();
        write(&mut kl8, 0, [1, 0, 1, 1], now).unwrap();
        kl8.handle(&Request::WriteSingleCoil(0, true), now).unwrap();
        write(&mut kl8, 1, [2, 0, 1, 1], now).unwrap();
        assert_eq!(
            kl8.handle(&Request::ReadCoils(0, 1), now),
            Ok(Response::ReadCoils(vec![true]))
        );
        now += Duration::from_millis(199);
        kl8.power_cut();
        assert_eq!(kl8.records()[0], Record::default());
        write(&mut kl8, 0, [1, 0, 1, 1], now).unwrap();
        write(&mut kl8, 1, [2, 0, 1, 1], now).unwrap();
        kl8.handle(&Request::WriteSingleCoil(0, true), now).unwrap();
        now += Duration::from_millis(200);
        assert_eq!(
            kl8.handle(&Request::ReadCoils(0, 9), now),
            Ok(Response::ReadCoils(vec![false; 9]))
        );
        write(&mut kl8, 2, [3, 0, 1, 1], now).unwrap();
        assert_eq!(kl8.change_counter(), 3);
        kl8.power_cut();
        assert_eq!(kl8.change_counter(), 0);
        assert!(kl8.records()[1].is_active());
        assert!(!kl8.records()[2].is_active());
    }

    #[test]
    fn coils() {
        let (mut kl8, now) = device();
        kl8.handle(&Request::WriteSingleCoil(3, true), now).unwrap();
        assert_eq!(kl8.door_pulses(3), 1);
        assert_eq!(
            kl8.handle(&Request::WriteSingleCoil(9, true), now),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            kl8.handle(&Request::ReadCoils(0, 10), now),
            Err(ExceptionCode::IllegalDataAddress)
        );
        let many = Request::WriteMultipleCoils(0, vec![true].into());
        assert_eq!(kl8.handle(&many, now), Err(ExceptionCode::IllegalFunction));
    }

    #[test]
    fn first_duplicate_wins_and_capacity_limit() {
        let (mut kl8, now) = device();
        write(&mut kl8, 0, [7, 0, 0b01, 1], now).unwrap();
        write(&mut kl8, 1, [7, 0, 0b10, 1], now).unwrap();
        assert_eq!(kl8.present_card(7, 2), Ok(AccessResult::DeniedDoor));
        kl8.set_capacity_limit(Some(2));
        assert_eq!(
            write(&mut kl8, 2, [8, 0, 1, 1], now),
            Err(ExceptionCode::IllegalDataAddress)
        );
        let read = Request::ReadHoldingRegisters(2, 1);
        assert_eq!(
            kl8.handle(&read, now),
            Ok(Response::ReadHoldingRegisters(vec![2]))
        );
    }
}
