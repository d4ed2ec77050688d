//! The PX-2 controller as pure state: its badge table, command mailbox, event ring and
//! register map. Time is passed in (`now`), so tests drive it without waiting; the
//! device handle in [`crate::device`] supplies the real clock and the locking.

use std::ops::RangeInclusive;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tokio_modbus::{ExceptionCode, Request, Response};

use crate::access::{check_door, AccessResult, PresentError};
use crate::regs::{all_mapped, checked_range, high_word, low_word, read_block};
use crate::uid::Uid;

pub const MODEL: u16 = 0x5032;
pub const RING_SIZE: u16 = 500;
/// Sentinel of the `slot` result register: no slot was written or cleared.
pub const NO_SLOT: u16 = 0xFFFF;

const MAX_READ: usize = 125;
const MAX_WRITE: usize = 123;

// Holding registers.
const MAILBOX: u16 = 10;
const MAILBOX_LEN: usize = 10;
const RESULT: u16 = 20;
const CLOCK: u16 = 30;
const DOORS: u16 = 40;
const SLOTS: u16 = 1000;
const SLOT_LEN: u16 = 8;
/// Slots that fit below the top of the address space.
const MAX_CAPACITY: u16 = (0xFFFF - SLOTS) / SLOT_LEN;

// Input registers.
const EVENTS: u16 = 100;
const EVENT_LEN: u16 = 10;

/// Mailbox command codes (register 11).
pub mod command {
    pub const ADD: u16 = 1;
    pub const DELETE_UID: u16 = 2;
    pub const CLEAR_ALL: u16 = 3;
    pub const OPEN_DOOR: u16 = 4;
    pub const SET_DOORS: u16 = 5;
}

/// Command result codes (register 21).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandResult {
    Ok = 0,
    TableFull = 1,
    AlreadyPresent = 2,
    NotFound = 3,
    BadRequest = 4,
}

#[derive(Debug, Clone)]
pub struct Px2Config {
    pub unit_id: u8,
    /// Number of slots (at most 8067, what fits in the address space).
    pub capacity: u16,
    /// Doors fitted, 1 to 16.
    pub doors: u8,
    /// major × 256 + minor.
    pub firmware: u16,
    /// How long a mailbox command executes, drawn at random in this range. The manual
    /// promises at most 50 ms; a longer range simulates a slow device.
    pub exec_time: RangeInclusive<Duration>,
    /// Clock value at start (Unix seconds); `None` takes the system time.
    pub clock: Option<u32>,
    /// Seed for the execution-time draws; `None` seeds from the OS.
    pub seed: Option<u64>,
}

impl Default for Px2Config {
    fn default() -> Self {
        Px2Config {
            unit_id: 1,
            capacity: 2000,
            doors: 4,
            firmware: 0x0203,
            exec_time: Duration::from_millis(5)..=Duration::from_millis(20),
            clock: None,
            seed: None,
        }
    }
}

/// One badge in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub uid: Uid,
    pub door_mask: u16,
}

impl Entry {
    /// The 8 slot registers: flags, uid_len, uid (5), door_mask.
    pub fn registers(&self) -> [u16; 8] {
        let uid = self.uid.to_registers();
        [
            1,
            u16::from(self.uid.len()),
            uid[0],
            uid[1],
            uid[2],
            uid[3],
            uid[4],
            self.door_mask,
        ]
    }

    /// CRC-32 (ISO-HDLC) of slot registers 1 to 7, high byte first.
    pub fn crc(&self) -> u32 {
        let bytes: Vec<u8> = self.registers()[1..]
            .iter()
            .flat_map(|r| r.to_be_bytes())
            .collect();
        crc32fast::hash(&bytes)
    }
}

/// The table digest: XOR of the entries' CRCs, 0 for an empty table.
pub fn digest<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> u32 {
    entries.into_iter().fold(0, |acc, e| acc ^ e.crc())
}

/// One access event of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub time: u32,
    pub uid: Uid,
    pub door: u8,
    pub result: AccessResult,
}

impl Event {
    fn registers(&self) -> [u16; EVENT_LEN as usize] {
        let uid = self.uid.to_registers();
        [
            high_word(self.time),
            low_word(self.time),
            u16::from(self.uid.len()),
            uid[0],
            uid[1],
            uid[2],
            uid[3],
            uid[4],
            u16::from(self.door),
            self.result as u16,
        ]
    }
}

/// A clock set once and running with real time since.
#[derive(Debug, Clone, Copy)]
struct Clock {
    set_to: u32,
    set_at: Instant,
}

impl Clock {
    fn read(&self, now: Instant) -> u32 {
        let elapsed = now.saturating_duration_since(self.set_at).as_secs();
        self.set_to.wrapping_add(elapsed as u32)
    }
}

/// A command written to the mailbox and not yet done.
#[derive(Debug, Clone, Copy)]
struct Pending {
    block: [u16; MAILBOX_LEN],
    done_at: Instant,
}

#[derive(Debug)]
pub struct Px2 {
    config: Px2Config,
    slots: Vec<Option<Entry>>,
    used: u16,
    digest: u32,
    capacity_limit: Option<u16>,
    boot_counter: u16,
    clock: Clock,
    mailbox: [u16; MAILBOX_LEN],
    /// Sequence of the last command started; a block repeating it is not a new command.
    last_sequence: u16,
    /// Registers 20-22: done, result, slot.
    outcome: [u16; 3],
    pending: Option<Pending>,
    events: Vec<Option<Event>>,
    /// Events written since power-up (not wrapped: the ring position needs the true count).
    events_written: u64,
    door_openings: [u32; 16],
    rng: StdRng,
}

impl Px2 {
    /// A controller that has just powered up for the first time (boot counter 1).
    pub fn new(mut config: Px2Config, now: Instant) -> Px2 {
        config.capacity = config.capacity.min(MAX_CAPACITY);
        config.doors = config.doors.clamp(1, 16);
        let rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        let clock = Clock {
            set_to: config.clock.unwrap_or_else(system_time),
            set_at: now,
        };
        Px2 {
            slots: vec![None; usize::from(config.capacity)],
            used: 0,
            digest: 0,
            capacity_limit: None,
            boot_counter: 1,
            clock,
            mailbox: [0; MAILBOX_LEN],
            last_sequence: 0,
            outcome: [0, 0, NO_SLOT],
            pending: None,
            events: vec![None; usize::from(RING_SIZE)],
            events_written: 0,
            door_openings: [0; 16],
            rng,
            config,
        }
    }

    pub fn config(&self) -> &Px2Config {
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
                read_block(*addr, *qty, MAX_READ, |a| self.holding(a, now))
                    .map(Response::ReadHoldingRegisters)
            }
            Request::ReadInputRegisters(addr, qty) => {
                read_block(*addr, *qty, MAX_READ, |a| self.input(a))
                    .map(Response::ReadInputRegisters)
            }
            Request::WriteMultipleRegisters(addr, words) => self.write(*addr, words, now),
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }

    /// Completes the pending command if its execution time is over.
    pub fn settle(&mut self, now: Instant) {
        if let Some(pending) = self.pending {
            if now >= pending.done_at {
                self.pending = None;
                let (result, slot) = self.execute(&pending.block);
                self.outcome = [pending.block[0], result as u16, slot];
            }
        }
    }

    /// A badge presented at `door`: decides from the table and logs the event.
    pub fn present(
        &mut self,
        uid: &Uid,
        door: u8,
        now: Instant,
    ) -> Result<AccessResult, PresentError> {
        check_door(door, self.config.doors)?;
        self.settle(now);
        let mask = self.find(uid).map(|slot| self.entry_mask(slot));
        let result = AccessResult::decide(mask, door);
        let event = Event {
            time: self.clock.read(now),
            uid: *uid,
            door,
            result,
        };
        let position = (self.events_written % u64::from(RING_SIZE)) as usize;
        self.events[position] = Some(event);
        self.events_written += 1;
        Ok(result)
    }

    /// Power-up: the table survives, the boot counter counts, volatile state restarts.
    pub fn power_up(&mut self, now: Instant) {
        self.boot_counter = self.boot_counter.wrapping_add(1);
        self.restart(now);
    }

    /// Factory reset: empty table, digest 0, boot counter 0.
    pub fn factory_reset(&mut self, now: Instant) {
        self.slots.fill(None);
        self.used = 0;
        self.digest = 0;
        self.boot_counter = 0;
        self.restart(now);
    }

    /// What a restart loses: the command in progress, the mailbox and the event log.
    /// The clock keeps running (it has its own battery).
    fn restart(&mut self, _now: Instant) {
        self.pending = None;
        self.mailbox = [0; MAILBOX_LEN];
        self.last_sequence = 0;
        self.outcome = [0, 0, NO_SLOT];
        self.events.fill(None);
        self.events_written = 0;
    }

    /// Caps the slots usable by ADD (and the capacity register), to simulate a full table.
    pub fn set_capacity_limit(&mut self, limit: Option<u16>) {
        self.capacity_limit = limit;
    }

    /// Adds an entry as the ADD command would; for seeding a table.
    pub fn insert(&mut self, entry: Entry) -> Result<u16, CommandResult> {
        if self.find(&entry.uid).is_some() {
            return Err(CommandResult::AlreadyPresent);
        }
        let free = self.slots[..usize::from(self.effective_capacity())]
            .iter()
            .position(Option::is_none)
            .ok_or(CommandResult::TableFull)?;
        self.put(free, entry);
        Ok(free as u16)
    }

    /// Active entries with their slot numbers.
    pub fn entries(&self) -> impl Iterator<Item = (u16, &Entry)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(s, e)| e.as_ref().map(|e| (s as u16, e)))
    }

    pub fn used(&self) -> u16 {
        self.used
    }

    pub fn digest(&self) -> u32 {
        self.digest
    }

    pub fn boot_counter(&self) -> u16 {
        self.boot_counter
    }

    pub fn clock(&self, now: Instant) -> u32 {
        self.clock.read(now)
    }

    pub fn events_written(&self) -> u64 {
        self.events_written
    }

    /// Event `n` (0-based since power-up) if the ring still holds it.
    pub fn event(&self, n: u64) -> Option<Event> {
        let kept = u64::from(RING_SIZE);
        if n >= self.events_written || n + kept < self.events_written {
            return None;
        }
        self.events[(n % kept) as usize]
    }

    /// Registers 20-22 as a client would read them: done, result, slot.
    pub fn last_outcome(&self) -> [u16; 3] {
        self.outcome
    }

    pub fn is_busy(&self) -> bool {
        self.pending.is_some()
    }

    /// How many OPEN_DOOR commands door `door` (1-based) received.
    pub fn door_openings(&self, door: u8) -> u32 {
        match door {
            1..=16 => self.door_openings[usize::from(door - 1)],
            _ => 0,
        }
    }

    fn effective_capacity(&self) -> u16 {
        match self.capacity_limit {
            Some(limit) => limit.min(self.config.capacity),
            None => self.config.capacity,
        }
    }

    fn find(&self, uid: &Uid) -> Option<usize> {
        self.slots
            .iter()
            .position(|e| e.as_ref().is_some_and(|e| e.uid == *uid))
    }

    fn entry_mask(&self, slot: usize) -> u16 {
        self.slots[slot].map_or(0, |e| e.door_mask)
    }

    /// Writes `entry` into `slot`, keeping `used` and the digest in step.
    fn put(&mut self, slot: usize, entry: Entry) {
        self.remove(slot);
        self.slots[slot] = Some(entry);
        self.used += 1;
        self.digest ^= entry.crc();
    }

    fn remove(&mut self, slot: usize) {
        if let Some(entry) = self.slots[slot].take() {
            self.used -= 1;
            self.digest ^= entry.crc();
        }
    }

    fn is_holding(&self, addr: u16) -> bool {
        match addr {
            0..=6 | 10..=22 | 30..=31 | DOORS => true,
            SLOTS.. => (addr - SLOTS) / SLOT_LEN < self.config.capacity,
            _ => false,
        }
    }

    fn holding(&self, addr: u16, now: Instant) -> Option<u16> {
        let value = match addr {
            0 => MODEL,
            1 => self.config.firmware,
            2 => self.effective_capacity(),
            3 => self.used,
            4 => high_word(self.digest),
            5 => low_word(self.digest),
            6 => self.boot_counter,
            10..=19 => self.mailbox[usize::from(addr - MAILBOX)],
            20..=22 => self.outcome[usize::from(addr - RESULT)],
            30 => high_word(self.clock.read(now)),
            31 => low_word(self.clock.read(now)),
            DOORS => u16::from(self.config.doors),
            SLOTS.. => {
                let slot = usize::from((addr - SLOTS) / SLOT_LEN);
                let entry = self.slots.get(slot)?;
                let offset = usize::from((addr - SLOTS) % SLOT_LEN);
                entry.map_or(0, |e| e.registers()[offset])
            }
            _ => return None,
        };
        Some(value)
    }

    fn input(&self, addr: u16) -> Option<u16> {
        match addr {
            0 => Some(self.events_written as u16),
            1 => Some(RING_SIZE),
            EVENTS.. if addr < EVENTS + RING_SIZE * EVENT_LEN => {
                let offset = addr - EVENTS;
                let event = self.events[usize::from(offset / EVENT_LEN)];
                Some(event.map_or(0, |e| e.registers()[usize::from(offset % EVENT_LEN)]))
            }
            _ => None,
        }
    }

    fn write(&mut self, addr: u16, words: &[u16], now: Instant) -> Result<Response, ExceptionCode> {
        let range = checked_range(addr, words.len(), MAX_WRITE)?;
        if !all_mapped(range.clone(), |a| self.is_holding(a)) {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        let touches_mailbox =
            range.start < u32::from(MAILBOX) + MAILBOX_LEN as u32 && range.end > u32::from(MAILBOX);
        if touches_mailbox && self.pending.is_some() {
            return Err(ExceptionCode::ServerDeviceBusy);
        }
        match (addr, words) {
            (MAILBOX, block) if block.len() == MAILBOX_LEN => {
                let mut copy = [0; MAILBOX_LEN];
                copy.copy_from_slice(block);
                self.start(copy, now);
            }
            (CLOCK, &[high, low]) => {
                self.clock = Clock {
                    set_to: u32::from(high) << 16 | u32::from(low),
                    set_at: now,
                };
            }
            // Read-only registers, or a write that is not one whole writable block.
            _ => return Err(ExceptionCode::IllegalDataValue),
        }
        Ok(Response::WriteMultipleRegisters(addr, words.len() as u16))
    }

    /// A mailbox block was written. A zero sequence or a repeat of the previous one is
    /// not a new command: the block is stored but nothing runs, so a client that
    /// retries a write whose answer it lost does not run the command twice.
    fn start(&mut self, block: [u16; MAILBOX_LEN], now: Instant) {
        self.mailbox = block;
        let sequence = block[0];
        if sequence == 0 || sequence == self.last_sequence {
            return;
        }
        self.last_sequence = sequence;
        let done_at = now + self.draw_exec_time();
        self.pending = Some(Pending { block, done_at });
    }

    fn draw_exec_time(&mut self) -> Duration {
        let (a, b) = (
            self.config.exec_time.start().as_micros() as u64,
            self.config.exec_time.end().as_micros() as u64,
        );
        Duration::from_micros(self.rng.gen_range(a.min(b)..=a.max(b)))
    }

    /// Runs a mailbox command; returns the result and the slot register.
    fn execute(&mut self, block: &[u16; MAILBOX_LEN]) -> (CommandResult, u16) {
        let [_sequence, cmd, uid_len, u0, u1, u2, u3, u4, argument, reserved] = *block;
        if reserved != 0 {
            return (CommandResult::BadRequest, NO_SLOT);
        }
        let uid = Uid::from_registers(uid_len, &[u0, u1, u2, u3, u4]);
        match (cmd, uid) {
            (command::ADD, Some(uid)) => match self.insert(Entry {
                uid,
                door_mask: argument,
            }) {
                Ok(slot) => (CommandResult::Ok, slot),
                Err(result) => (result, NO_SLOT),
            },
            (command::DELETE_UID, Some(uid)) => match self.find(&uid) {
                Some(slot) => {
                    self.remove(slot);
                    (CommandResult::Ok, slot as u16)
                }
                None => (CommandResult::NotFound, NO_SLOT),
            },
            (command::SET_DOORS, Some(uid)) => match self.find(&uid) {
                Some(slot) => {
                    let door_mask = argument;
                    self.put(slot, Entry { uid, door_mask });
                    (CommandResult::Ok, slot as u16)
                }
                None => (CommandResult::NotFound, NO_SLOT),
            },
            (command::CLEAR_ALL, _) => {
                for slot in 0..self.slots.len() {
                    self.remove(slot);
                }
                (CommandResult::Ok, NO_SLOT)
            }
            // The UID registers mean nothing to OPEN_DOOR, so they are not checked.
            (command::OPEN_DOOR, _) => {
                let door = u8::try_from(argument).unwrap_or(0);
                if check_door(door, self.config.doors).is_err() {
                    return (CommandResult::BadRequest, NO_SLOT);
                }
                self.door_openings[usize::from(door - 1)] += 1;
                (CommandResult::Ok, NO_SLOT)
            }
            _ => (CommandResult::BadRequest, NO_SLOT),
        }
    }
}

fn system_time() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> (Px2, Instant) {
        let now = Instant::now();
        let config = Px2Config {
            capacity: 3,
            exec_time: Duration::from_millis(10)..=Duration::from_millis(10),
            clock: Some(1_700_000_000),
            seed: Some(7),
            ..Px2Config::default()
        };
        (Px2::new(config, now), now)
    }

    fn block(seq: u16, cmd: u16, uid: &str, argument: u16) -> Vec<u16> {
        let uid = Uid::from_hex(uid).unwrap();
        let r = uid.to_registers();
        vec![
            seq,
            cmd,
            u16::from(uid.len()),
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            argument,
            0,
        ]
    }

    /// Writes a command and lets it complete; returns registers 20-22.
    fn run(px2: &mut Px2, now: &mut Instant, words: Vec<u16>) -> [u16; 3] {
        let request = Request::WriteMultipleRegisters(MAILBOX, words.into());
        px2.handle(&request, *now).unwrap();
        *now += Duration::from_millis(10);
        px2.settle(*now);
        px2.last_outcome()
    }

    fn read(px2: &mut Px2, addr: u16, qty: u16, now: Instant) -> Result<Vec<u16>, ExceptionCode> {
        match px2.handle(&Request::ReadHoldingRegisters(addr, qty), now)? {
            Response::ReadHoldingRegisters(words) => Ok(words),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn commands_and_results() {
        let (mut px2, mut now) = device();
        assert_eq!(
            run(&mut px2, &mut now, block(1, command::ADD, "04A22B91", 0b11)),
            [1, 0, 0]
        );
        assert_eq!(
            run(&mut px2, &mut now, block(2, command::ADD, "04A22B91", 0b1)),
            [2, 2, NO_SLOT]
        );
        assert_eq!(
            run(&mut px2, &mut now, block(3, command::ADD, "01", 1)),
            [3, 0, 1]
        );
        assert_eq!(
            run(&mut px2, &mut now, block(4, command::ADD, "02", 1)),
            [4, 0, 2]
        );
        assert_eq!(
            run(&mut px2, &mut now, block(5, command::ADD, "03", 1)),
            [5, 1, NO_SLOT]
        );
        assert_eq!(
            run(&mut px2, &mut now, block(6, command::DELETE_UID, "01", 0)),
            [6, 0, 1]
        );
        assert_eq!(
            run(&mut px2, &mut now, block(7, command::DELETE_UID, "01", 0)),
            [7, 3, NO_SLOT]
        );
        assert_eq!(
            run(
                &mut px2,
                &mut now,
                block(8, command::SET_DOORS, "04A22B91", 4)
            ),
            [8, 0, 0]
        );
        assert_eq!(
            run(&mut px2, &mut now, block(9, command::SET_DOORS, "01", 4)),
            [9, 3, NO_SLOT]
        );
        assert_eq!(
            run(&mut px2, &mut now, block(10, command::OPEN_DOOR, "01", 2)),
            [10, 0, NO_SLOT]
        );
        assert_eq!(px2.door_openings(2), 1);
        assert_eq!(
            run(&mut px2, &mut now, block(11, command::OPEN_DOOR, "01", 5)),
            [11, 4, NO_SLOT]
        );
        assert_eq!(
            run(&mut px2, &mut now, block(12, 9, "01", 0)),
            [12, 4, NO_SLOT]
        );
        assert_eq!(px2.used(), 2);
        assert_eq!(
            run(&mut px2, &mut now, block(13, command::CLEAR_ALL, "01", 0)),
            [13, 0, NO_SLOT]
        );
        assert_eq!((px2.used(), px2.digest()), (0, 0));
    }

    #[test]
    fn bad_uid_fields_are_bad_requests() {
        let (mut px2, mut now) = device();
        let mut words = block(1, command::ADD, "04A22B91", 1);
        words[2] = 11;
        assert_eq!(run(&mut px2, &mut now, words), [1, 4, NO_SLOT]);
        let mut words = block(2, command::ADD, "04A22B", 1);
        words[4] = 0x2B01; // padding byte past uid_len
        assert_eq!(run(&mut px2, &mut now, words), [2, 4, NO_SLOT]);
        let mut words = block(3, command::ADD, "04", 1);
        words[9] = 1; // reserved
        assert_eq!(run(&mut px2, &mut now, words), [3, 4, NO_SLOT]);
        assert_eq!(px2.used(), 0);
    }

    #[test]
    fn busy_until_done_and_previous_result_visible() {
        let (mut px2, mut now) = device();
        run(&mut px2, &mut now, block(1, command::ADD, "01", 1));
        let write =
            Request::WriteMultipleRegisters(MAILBOX, block(2, command::ADD, "02", 1).into());
        px2.handle(&write, now).unwrap();
        assert_eq!(
            px2.handle(&write, now),
            Err(ExceptionCode::ServerDeviceBusy)
        );
        assert_eq!(read(&mut px2, 20, 3, now), Ok(vec![1, 0, 0]));
        now += Duration::from_millis(9);
        assert_eq!(read(&mut px2, 20, 3, now), Ok(vec![1, 0, 0]));
        now += Duration::from_millis(1);
        assert_eq!(read(&mut px2, 20, 3, now), Ok(vec![2, 0, 1]));
        // The clock stays writable while a command runs.
        px2.handle(&write, now).unwrap();
        let clock = Request::WriteMultipleRegisters(CLOCK, vec![0, 5].into());
        assert!(px2.handle(&clock, now).is_ok());
    }

    #[test]
    fn repeated_or_zero_sequence_runs_nothing() {
        let (mut px2, mut now) = device();
        run(&mut px2, &mut now, block(1, command::ADD, "01", 1));
        assert_eq!(
            run(&mut px2, &mut now, block(1, command::DELETE_UID, "01", 0)),
            [1, 0, 0]
        );
        assert_eq!(
            run(&mut px2, &mut now, block(0, command::DELETE_UID, "01", 0)),
            [1, 0, 0]
        );
        assert_eq!(px2.used(), 1);
        assert!(!px2.is_busy());
    }

    #[test]
    fn digest_is_xor_of_entry_crcs_whatever_the_slot() {
        let (mut px2, mut now) = device();
        run(&mut px2, &mut now, block(1, command::ADD, "01", 1));
        run(&mut px2, &mut now, block(2, command::ADD, "04A22B91", 3));
        run(&mut px2, &mut now, block(3, command::DELETE_UID, "01", 0));
        run(
            &mut px2,
            &mut now,
            block(4, command::ADD, "AABBCCDDEEFF0011", 0x8001),
        );
        let entries: Vec<Entry> = px2.entries().map(|(_, e)| *e).collect();
        assert_eq!(px2.digest(), digest(&entries));
        // Same set, other slots.
        let (mut other, _) = device();
        for e in entries.iter().rev() {
            other.insert(*e).unwrap();
        }
        assert_eq!(other.digest(), px2.digest());
        let words = read(&mut px2, 4, 2, now).unwrap();
        assert_eq!(
            u32::from(words[0]) << 16 | u32::from(words[1]),
            px2.digest()
        );
    }

    #[test]
    fn register_map_exceptions() {
        let (mut px2, now) = device();
        assert_eq!(read(&mut px2, 0, 7, now).unwrap()[..3], [MODEL, 0x0203, 3]);
        assert_eq!(
            read(&mut px2, 0, 8, now),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            read(&mut px2, 0, 126, now),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(read(&mut px2, 1000, 24, now), Ok(vec![0; 24]));
        assert_eq!(
            read(&mut px2, 1000, 25, now),
            Err(ExceptionCode::IllegalDataAddress)
        );
        let write = |addr, words: Vec<u16>| Request::WriteMultipleRegisters(addr, words.into());
        assert_eq!(
            px2.handle(&write(0, vec![1]), now),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            px2.handle(&write(10, vec![1; 9]), now),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            px2.handle(&write(30, vec![1]), now),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            px2.handle(&write(7, vec![1]), now),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            px2.handle(&write(10, vec![1; 124]), now),
            Err(ExceptionCode::IllegalDataValue)
        );
        let single = Request::WriteSingleRegister(30, 1);
        assert_eq!(
            px2.handle(&single, now),
            Err(ExceptionCode::IllegalFunction)
        );
        let input = Request::ReadInputRegisters(2, 1);
        assert_eq!(
            px2.handle(&input, now),
            Err(ExceptionCode::IllegalDataAddress)
        );
    }

    #[test]
    fn clock_runs_from_the_last_set() {
        let (mut px2, mut now) = device();
        now += Duration::from_millis(2500);
        assert_eq!(px2.clock(now), 1_700_000_002);
        let set = Request::WriteMultipleRegisters(CLOCK, vec![0x1234, 0x5678].into());
        px2.handle(&set, now).unwrap();
        now += Duration::from_secs(3);
        assert_eq!(read(&mut px2, 30, 2, now), Ok(vec![0x1234, 0x567B]));
    }

    #[test]
    fn events_fill_the_ring_and_wrap() {
        let (mut px2, now) = device();
        let known = Uid::from_hex("04A22B91").unwrap();
        px2.insert(Entry {
            uid: known,
            door_mask: 0b01,
        })
        .unwrap();
        assert_eq!(px2.present(&known, 1, now), Ok(AccessResult::Granted));
        assert_eq!(px2.present(&known, 2, now), Ok(AccessResult::DeniedDoor));
        let stranger = Uid::from_hex("01").unwrap();
        assert_eq!(
            px2.present(&stranger, 1, now),
            Ok(AccessResult::DeniedUnknown)
        );
        assert!(px2.present(&stranger, 5, now).is_err());
        for _ in 0..600 {
            px2.present(&known, 1, now).unwrap();
        }
        assert_eq!(px2.events_written(), 603);
        assert_eq!(px2.event(102), None);
        assert!(px2.event(103).is_some());
        let input = Request::ReadInputRegisters(0, 2);
        assert_eq!(
            px2.handle(&input, now),
            Ok(Response::ReadInputRegisters(vec![603, 500]))
        );
    }

    #[test]
    fn power_up_keeps_the_table_factory_reset_empties_it() {
        let (mut px2, now) = device();
        px2.insert(Entry {
            uid: Uid::from_hex("01").unwrap(),
            door_mask: 1,
        })
        .unwrap();
        px2.present(&Uid::from_hex("01").unwrap(), 1, now).unwrap();
        px2.power_up(now);
        assert_eq!(
            (px2.used(), px2.boot_counter(), px2.events_written()),
            (1, 2, 0)
        );
        px2.factory_reset(now);
        assert_eq!((px2.used(), px2.digest(), px2.boot_counter()), (0, 0, 0));
    }

    #[test]
    fn capacity_limit_fills_the_table_early() {
        let (mut px2, mut now) = device();
        px2.set_capacity_limit(Some(1));
        assert_eq!(
            run(&mut px2, &mut now, block(1, command::ADD, "01", 1)),
            [1, 0, 0]
        );
        assert_eq!(
            run(&mut px2, &mut now, block(2, command::ADD, "02", 1)),
            [2, 1, NO_SLOT]
        );
        assert_eq!(read(&mut px2, 2, 1, now), Ok(vec![1]));
    }
}
